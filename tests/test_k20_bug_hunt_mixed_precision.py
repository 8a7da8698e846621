"""Grader for k20_bug_hunt_mixed_precision: one test per planted bug, each named for the symptom it causes.

Everything runs on a CPU: autocast in bfloat16 (the CPU's default autocast dtype) and a real
`torch.amp.GradScaler("cpu")`, enabled with a known power-of-two scale where the scale matters (scaling and
unscaling by a power of two is exact, so a correct loop gives bit-for-bit the same update with or without
the scaler) and disabled elsewhere. Oracles: float64 cross-entropy and counts for evaluation, torch's own
`StepLR` values for the schedule, BatchNorm buffers compared exactly, gradient norms read in an optimizer
step pre-hook (where `scaler.step` hands the optimizer the gradients it will use), and the autograd graph
still reachable from the training loop's local variables, counted in a forward pre-hook at every batch.
Tolerances: rtol 1e-4 where the program's float32 losses meet a float64 oracle, rtol 1e-3 for a clipped
norm (clip_grad_norm_ divides by norm + 1e-6), exact comparisons elsewhere.

What only a GPU can check: float16 autocast with a scaler whose scaled gradients overflow (on a CPU the
bfloat16 forward never overflows a float32 gradient), and that the tensors the loop creates land on the
batches' device.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kata_harness import load_kata
from kata_harness.testing import assert_close, assert_same_parameters

kata = load_kata("k20_bug_hunt_mixed_precision")

IN, CLASSES = 6, 3


def _batches(sizes: list[int], seed: int, shift: float = 0.0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(n, IN, generator=generator) + shift, torch.randint(CLASSES, (n,), generator=generator))
        for n in sizes
    ]


def _model(seed: int = 0, dropout: float = 0.2) -> nn.Module:
    torch.manual_seed(seed)
    return kata.make_model(IN, CLASSES, hidden=16, dropout=dropout)


def _disabled_scaler() -> torch.amp.GradScaler:
    return torch.amp.GradScaler("cpu", enabled=False)


# ------------------------------------------------------------------------------------------- evaluation


def test_evaluation_builds_no_autograd_graph() -> None:
    model = _model()
    grad_modes: list[bool] = []
    outputs_with_graph: list[str] = []

    def record(module: nn.Module, args: Any, output: torch.Tensor) -> None:
        grad_modes.append(torch.is_grad_enabled())
        if output.grad_fn is not None:
            outputs_with_graph.append(type(output.grad_fn).__name__)

    handle = model.register_forward_hook(record)
    try:
        result = kata.evaluate(model, _batches([5, 3], seed=1))
    finally:
        handle.remove()
    assert grad_modes, "evaluate never called the model's forward"
    assert not any(grad_modes) and not outputs_with_graph, (
        f"during evaluate, grad mode was on for {sum(grad_modes)} of {len(grad_modes)} forward passes and "
        f"the model's outputs carried a grad_fn ({sorted(set(outputs_with_graph))}); expected no autograd "
        f"at all. Likely cause: validation runs under grad, so every batch builds a graph, keeps its "
        f"activations alive for a backward that never comes, and evaluation costs training's memory."
    )
    assert type(result) is tuple and all(type(value) is float for value in result), (
        f"evaluate should return (loss, accuracy) as Python floats; got {result!r}"
    )


def test_evaluation_leaves_batchnorm_statistics_unchanged() -> None:
    model = _model()
    before = {name: buffer.clone() for name, buffer in model.named_buffers()}
    kata.evaluate(model, _batches([6, 4], seed=2, shift=3.0))  # far from the running mean 0, variance 1
    changed = {
        name: (before[name].tolist(), buffer.tolist())
        for name, buffer in model.named_buffers()
        if not torch.equal(buffer, before[name])
    }
    assert not changed, (
        f"evaluate changed the BatchNorm buffers (name: (before, after)): {changed}; expected every buffer "
        f"unchanged. Likely cause: the model was evaluated in training mode, so BatchNorm normalised each "
        f"batch with its own statistics and folded the validation data into its running statistics (and "
        f"Dropout kept dropping): the reported numbers are wrong and the model itself changed."
    )


def test_accuracy_counts_every_sample_once() -> None:
    # nn.Identity: the inputs are the logits, so the oracle is exact (autocast leaves no matmul to round).
    logits = [
        torch.tensor([[2.0, 0.0, 0.0], [2.0, 0.0, 0.0], [2.0, 0.0, 0.0], [2.0, 0.0, 0.0]]),
        torch.tensor([[0.0, 0.0, 3.0]]),
    ]
    labels = [torch.tensor([0, 1, 2, 1]), torch.tensor([2])]
    loss, accuracy = kata.evaluate(nn.Identity(), list(zip(logits, labels, strict=True)))
    all_logits, all_labels = torch.cat(logits).double(), torch.cat(labels)
    expected_accuracy = (all_logits.argmax(dim=1) == all_labels).double().mean().item()  # 2 of 5
    assert type(accuracy) is float and abs(accuracy - expected_accuracy) <= 1e-6, (
        f"evaluate on two batches of 4 and 1 samples (1 of 4 right, then 1 of 1 right) should report the "
        f"fraction of all samples classified right, {expected_accuracy}; got {accuracy!r}. Likely cause: "
        f"accuracy averaged per batch ((0.25 + 1.0) / 2 = 0.625): a small last batch then weighs as much as "
        f"a full one, so the number depends on the batch size."
    )
    expected_loss = F.cross_entropy(all_logits, all_labels).item()
    assert_close(
        torch.tensor(loss, dtype=torch.float64),
        torch.tensor(expected_loss, dtype=torch.float64),
        rtol=1e-4,
        atol=0.0,
        what="the validation loss on batches of 4 and 1 samples",
        likely_cause="the loss should be the cross-entropy averaged over all samples; a mean of per-batch "
        "means weighs the samples of a small batch more.",
    )


# --------------------------------------------------------------------------------------------- training


def test_training_uses_dropout_and_batch_statistics_after_evaluation() -> None:
    model = _model()
    model.eval()  # as evaluate leaves it: evaluation mode
    seen: list[tuple[str, bool]] = []
    handles = [
        module.register_forward_pre_hook(lambda m, args, name=name: seen.append((name, m.training)))
        for name, module in model.named_modules()
        if isinstance(module, (nn.BatchNorm1d, nn.Dropout))
    ]
    try:
        kata.train_epoch(
            model,
            _batches([4, 4], seed=3),
            torch.optim.SGD(model.parameters(), lr=0.1),
            None,
            _disabled_scaler(),
        )
    finally:
        for handle in handles:
            handle.remove()
    in_eval_mode = sorted(
        {f"{name} ({type(model.get_submodule(name)).__name__})" for name, t in seen if not t}
    )
    assert seen and not in_eval_mode, (
        f"train_epoch on a model left in evaluation mode (as it is after an evaluation) ran these layers in "
        f"evaluation mode: {in_eval_mode}; expected every Dropout and BatchNorm in training mode. Likely "
        f"cause: nothing switches the model back to training mode, so from the second epoch on, after the "
        f"first evaluation, training silently runs without dropout and BatchNorm never sees batch "
        f"statistics: the model trains differently from epoch 1 on."
    )


def _graph_size(tensors: Iterator[torch.Tensor]) -> int:
    """How many autograd nodes are reachable from these tensors' grad_fn."""
    seen: set[Any] = set()
    stack = [t.grad_fn for t in tensors if t.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return len(seen)


def _tensors_in_frames(frame: FrameType | None, stop: FrameType) -> Iterator[torch.Tensor]:
    """Tensors held by local variables (and one level into lists, tuples and dicts) of the frames from
    `frame` up to, not including, `stop`: what the code under test keeps alive while it runs."""
    while frame is not None and frame is not stop:
        for value in list(frame.f_locals.values()):
            items = value.values() if isinstance(value, dict) else value
            for item in items if isinstance(value, (list, tuple, dict)) else (value,):
                if isinstance(item, torch.Tensor):
                    yield item
        frame = frame.f_back


def test_memory_stays_flat_over_an_epoch() -> None:
    model = _model()
    batches = _batches([4, 4, 4, 4, 4, 2], seed=4)
    test_frame = sys._getframe()
    graph_sizes: list[int] = []
    outputs: list[torch.Tensor] = []

    def before_forward(module: nn.Module, args: Any) -> None:
        graph_sizes.append(_graph_size(_tensors_in_frames(sys._getframe(1), test_frame)))

    def after_forward(module: nn.Module, args: Any, output: torch.Tensor) -> None:
        outputs.append(output.detach().float())

    handles = [model.register_forward_pre_hook(before_forward), model.register_forward_hook(after_forward)]
    try:
        mean_loss = kata.train_epoch(
            model, batches, torch.optim.SGD(model.parameters(), lr=0.1), None, _disabled_scaler()
        )
    finally:
        for handle in handles:
            handle.remove()
    assert graph_sizes[-1] <= graph_sizes[1], (
        f"the autograd graph reachable from train_epoch's variables had {graph_sizes} nodes at the start "
        f"of each of its {len(batches)} steps; expected it to stay flat (at most one step's graph, left "
        f"over from the step before). Likely cause: the running loss total keeps each step's graph alive, "
        f"so the graph, and on a GPU the memory, grows with every step; accumulate a detached value."
    )
    assert type(mean_loss) is float, (
        f"train_epoch should return the mean loss as a Python float; got {type(mean_loss).__name__} "
        f"{mean_loss!r}"
    )
    losses = [
        F.cross_entropy(out, y, reduction="sum").double()
        for out, (_, y) in zip(outputs, batches, strict=True)
    ]
    expected = (sum(losses) / sum(len(y) for _, y in batches)).item()
    assert_close(
        torch.tensor(mean_loss, dtype=torch.float64),
        torch.tensor(expected, dtype=torch.float64),
        rtol=1e-4,
        atol=0.0,
        what="the mean training loss train_epoch returned (batches of 4, 4, 4, 4, 4 and 2 samples)",
        likely_cause="it should be the mean of every sample's loss, computed on the model's outputs before "
        "each update; a plain mean of batch means weighs the 2 samples of the last batch like 4.",
    )


def test_learning_rate_follows_the_epoch_schedule() -> None:
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    used: list[float] = []
    handle = optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: used.append(opt.param_groups[0]["lr"])
    )
    epochs, per_epoch = 3, 3
    try:
        history = kata.fit(
            model,
            _batches([4] * per_epoch, seed=5),
            _batches([4], seed=6),
            optimizer,
            scheduler,
            _disabled_scaler(),
            epochs,
        )
    finally:
        handle.remove()
    expected = [0.1 * 0.5**epoch for epoch in range(epochs) for _ in range(per_epoch)]
    assert len(used) == len(expected) and all(
        abs(a - b) <= 1e-12 for a, b in zip(used, expected, strict=True)
    ), (
        f"with StepLR(step_size=1, gamma=0.5) from lr 0.1, {epochs} epochs of {per_epoch} batches should "
        f"train at {[round(v, 6) for v in expected]} (one value per optimizer step); got "
        f"{[round(v, 6) for v in used]}. Likely cause: the schedule counts epochs but is stepped once per "
        f"batch, so the learning rate decays {per_epoch} times too fast and training stalls early."
    )
    final = optimizer.param_groups[0]["lr"]
    assert abs(final - 0.1 * 0.5**epochs) <= 1e-12, (
        f"after {epochs} epochs the learning rate should be 0.1 * 0.5**{epochs} = {0.1 * 0.5**epochs}; got "
        f"{final}. Likely cause: the scheduler is stepped a number of times other than once per epoch."
    )
    lrs = [record["lr"] for record in history]
    assert lrs == expected[::per_epoch], (
        f"fit's records should hold the learning rate each epoch trained with, {expected[::per_epoch]}; "
        f"got {lrs}"
    )


def test_clipping_applies_to_the_true_gradients() -> None:
    scale, max_norm = 1024.0, 1e-3  # the true gradient norms here are about 2, far above max_norm
    batches = _batches([4, 4, 4], seed=7)
    scaled_model = _model(dropout=0.0)  # no dropout: both runs are deterministic
    plain_model = copy.deepcopy(scaled_model)
    norms: list[float] = []

    def record_norm(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        grads = [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([g.double().norm() for g in grads])).item())

    scaled_optimizer = torch.optim.SGD(scaled_model.parameters(), lr=0.1)
    handle = scaled_optimizer.register_step_pre_hook(record_norm)
    try:
        kata.train_epoch(
            scaled_model,
            batches,
            scaled_optimizer,
            None,
            torch.amp.GradScaler("cpu", init_scale=scale),
            max_norm=max_norm,
        )
    finally:
        handle.remove()
    assert norms and all(abs(norm - max_norm) <= 1e-3 * max_norm for norm in norms), (
        f"with a GradScaler at scale {scale:g} and max_norm={max_norm:g}, the gradients each update used "
        f"should have been clipped to a true norm of {max_norm:g}; the optimizer saw norms "
        f"{[f'{n:.3g}' for n in norms]}. Likely cause: the gradients were clipped while still multiplied by "
        f"the loss scale, so the threshold applied to scaled gradients and the update shrank by the scale "
        f"once they were unscaled; with a dynamic scale the effective threshold also drifts as the scale "
        f"changes."
    )
    kata.train_epoch(
        plain_model,
        batches,
        torch.optim.SGD(plain_model.parameters(), lr=0.1),
        None,
        _disabled_scaler(),
        max_norm=max_norm,
    )
    assert_same_parameters(
        scaled_model,
        plain_model,
        f"after an epoch with a scaler at scale {scale:g}, against one without",
        "the loss scale leaked into the update: the scaled gradients were clipped or stepped on, or "
        "gradients from an earlier step were left to mix with this step's.",
        rtol=1e-6,
        atol=1e-9,
    )
