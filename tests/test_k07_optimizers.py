"""Grader for k07_optimizers: train_step, train, param_groups, warmup_cosine, clip_grad_norm,
accumulated_step and a hand-written MomentumSGD.

Oracles: plain gradient descent written out here with `torch.autograd.grad`; torch's own optimizers
driven by the textbook loop (and, for accumulated_step, on the concatenated big batch, clipped by
`torch.nn.utils.clip_grad_norm_`); the expected group of every parameter of a model built to fool
name- and shape-based rules, and AdamW's own decay; torch's `SequentialLR(LinearLR, CosineAnnealingLR)`
and the float64 schedule formula; float64 norms and `clip_grad_norm_` for clipping; `torch.optim.SGD`
trajectories for MomentumSGD. Tolerances: rtol 1e-5 / atol 1e-6 for float32 runs of a few steps (the same
updates in a different operation order differ by a few float32 ulps per step), rtol 1e-10 for float64
runs, 1e-9 for learning rates (torch's cosine is computed recursively and drifts by a few ulps per step).

What only a GPU can check: `train_step`, `clip_grad_norm` and `accumulated_step` on CUDA (a `.numpy()`
without `.cpu()`, a tensor built on the CPU) run in the `cuda` case of the `device` fixture. On a CPU,
MomentumSGD's state device and clip_grad_norm's device, dtype and "no value read back to the host" are
checked on the `meta` device.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import sys
import types
import warnings

import pytest
import torch
from torch import nn

from kata_harness import load_kata
from kata_harness.testing import assert_close, assert_same_parameters, explain_crash, record_graph_calls

kata = load_kata("k07_optimizers")


def _mse(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((model(x) - y) ** 2).mean()


def _gd_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float) -> float:
    """Reference: one plain gradient-descent step on the MSE; returns the loss before the update."""
    params = list(model.parameters())
    loss = _mse(model, x, y)
    grads = torch.autograd.grad(loss, params)
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            p -= lr * g
    return loss.item()


def _tiny_model() -> nn.Module:
    return nn.Linear(3, 2)


def _batch(n: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, 3).to(device), torch.randn(n, 2).to(device)


# ---------------------------------------------------------------- train_step


def test_train_step_updates_with_mse_gradient(device: torch.device) -> None:
    model = _tiny_model().to(device)
    reference = copy.deepcopy(model)
    x, y = _batch(5, device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    got = explain_crash(
        lambda: kata.train_step(model, opt, x, y),
        f"train_step with the model and batch on {device.type}",
        "a step tied to the CPU: loss.numpy() needs .cpu() first for a CUDA tensor (loss.item() works on "
        "any device), or a tensor created without device=",
    )
    expected = _gd_step(reference, x, y, lr=0.1)
    assert_same_parameters(
        model,
        reference,
        f"parameters after one train_step with SGD(lr=0.1) on {device.type}",
        "the update should follow the gradient of mean((model(x) - y) ** 2) over ALL elements, with "
        "optimizer.step() called once: check for a sum instead of a mean, a missing backward()/step(), or "
        "a step taken twice",
    )
    assert type(got) is float and got == pytest.approx(expected, rel=1e-5), (
        f"train_step on {device.type} should return the loss before the update as a Python float, "
        f"{expected!r}; got {got!r} ({type(got).__name__})"
    )


def _textbook_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> None:
    """Reference train step: torch's own optimizer driven by zero_grad -> forward -> backward -> step."""
    optimizer.zero_grad()
    _mse(model, x, y).backward()
    optimizer.step()


@pytest.mark.parametrize(
    "name, make",
    [
        pytest.param("SGD(lr=0.1)", lambda params: torch.optim.SGD(params, lr=0.1), id="sgd"),
        pytest.param("Adam(lr=0.05)", lambda params: torch.optim.Adam(params, lr=0.05), id="adam"),
    ],
)
def test_train_step_ignores_gradients_left_before_the_call(name: str, make) -> None:
    model = _tiny_model()
    stale_x, stale_y = _batch(4)
    _mse(model, 3 * stale_x, stale_y).backward()  # gradients some earlier code left behind
    reference = copy.deepcopy(model)  # deepcopy keeps the stale .grad too
    opt, reference_opt = make(model.parameters()), make(reference.parameters())
    for x, y in [_batch(4), _batch(5)]:
        kata.train_step(model, opt, x, y)
        _textbook_step(reference, reference_opt, x, y)
    assert_same_parameters(
        model,
        reference,
        f"parameters after two train_step calls with {name}, starting with stale gradients on the parameters",
        "gradients already on the parameters when train_step was called reached the update: clear them "
        "BEFORE loss.backward() (optimizer.zero_grad() first); zeroing after optimizer.step() leaves the "
        "first call exposed to whatever was there",
    )


def test_train_step_leaves_inputs_unchanged() -> None:
    model = _tiny_model()
    x, y = _batch(5)
    x_before, y_before = x.clone(), y.clone()
    kata.train_step(model, torch.optim.SGD(model.parameters(), lr=0.1), x, y)
    for label, tensor, before in (("x", x, x_before), ("y", y, y_before)):
        assert not tensor.requires_grad and tensor.grad_fn is None, (
            f"train_step changed the caller's {label}: requires_grad is now {tensor.requires_grad} "
            f"(grad_fn {tensor.grad_fn}); it was False; likely cause: {label}.requires_grad_() or an "
            f"in-place operation such as {label}.sub_(model(x)) that pulled it into the graph"
        )
        assert torch.equal(tensor, before), (
            f"train_step changed the values of the caller's {label}; likely cause: an in-place operation on "
            f"it ({label}.sub_, -=, ...); compute (model(x) - y) out of place"
        )


def test_train_step_ignores_stale_gradients() -> None:
    model = _tiny_model()
    reference = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [_batch(4) for _ in range(3)]
    for x, y in batches:
        kata.train_step(model, opt, x, y)
        _gd_step(reference, x, y, lr=0.1)
    assert_same_parameters(
        model,
        reference,
        "parameters after three train_step calls with SGD(lr=0.1)",
        "gradients from earlier calls were added into this step's: backward() ACCUMULATES into .grad, "
        "so call optimizer.zero_grad() before loss.backward()",
    )


def test_train_step_returns_loss_before_update() -> None:
    model = _tiny_model()
    x, y = _batch(6)
    with torch.no_grad():
        expected = ((model(x).double() - y.double()) ** 2).mean().item()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    got = kata.train_step(model, opt, x, y)
    with torch.no_grad():
        after = ((model(x).double() - y.double()) ** 2).mean().item()
    assert got == pytest.approx(expected, rel=1e-5), (
        f"train_step should return the MSE measured before the update, {expected:.6f}; got {got!r} "
        f"(the loss after the update is {after:.6f}); likely cause: the loss was recomputed after "
        f"optimizer.step(), or it is not the mean over all elements"
    )


def test_train_step_returns_python_float() -> None:
    model = _tiny_model()
    x, y = _batch(4)
    got = kata.train_step(model, torch.optim.SGD(model.parameters(), lr=0.1), x, y)
    assert type(got) is float, (
        f"train_step should return a Python float, got {type(got).__name__} ({got!r}); likely cause: "
        f"returning the loss tensor. Use loss.item(): keeping tensors in a loss history also keeps their "
        f"whole autograd graphs alive"
    )


# ---------------------------------------------------------------- train


def _uneven_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [_batch(1), _batch(7), _batch(3)]


def test_train_runs_batches_in_order_with_epoch_schedule() -> None:
    model = _tiny_model()
    reference = copy.deepcopy(model)
    batches = _uneven_batches()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    kata.train(model, opt, scheduler, batches, 3)
    for epoch in range(3):
        for x, y in batches:
            _gd_step(reference, x, y, lr=0.2 * 0.5**epoch)
    assert_same_parameters(
        model,
        reference,
        "parameters after train(..., epochs=3) with SGD(lr=0.2) and StepLR(gamma=0.5)",
        "each epoch must visit the batches in list order, all at that epoch's learning rate, and step the "
        "scheduler once per epoch; stepping it per batch shrinks the learning rate len(batches) times "
        "too fast",
    )


def test_train_leaves_batches_unchanged() -> None:
    batches = _uneven_batches()
    pairs_before = list(batches)
    values_before = [(x.clone(), y.clone()) for x, y in batches]
    model = _tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    kata.train(model, opt, scheduler, batches, 3)
    assert len(batches) == len(pairs_before) and all(
        a is b for a, b in zip(batches, pairs_before, strict=True)
    ), (
        "train changed the caller's batches list (its order or its items); likely cause: shuffling or "
        "sorting it in place (random.shuffle(batches)); the batches run in list order, and the list is "
        "the caller's"
    )
    for i, ((x, y), (x0, y0)) in enumerate(zip(batches, values_before, strict=True)):
        assert torch.equal(x, x0) and torch.equal(y, y0), (
            f"train changed the values of batch {i}; likely cause: an in-place operation on x or y"
        )


def test_train_steps_scheduler_once_per_epoch_after_batches() -> None:
    events: list[str] = []
    model = _tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer_step = opt.step

    def record_optimizer_step(self, *args, **kwargs):
        events.append("optimizer.step")
        return optimizer_step(*args, **kwargs)

    # Bound to opt before the scheduler is built, since the scheduler wraps opt.step in turn.
    opt.step = types.MethodType(record_optimizer_step, opt)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.9**epoch)
    scheduler_step = scheduler.step

    def record_scheduler_step(*args, **kwargs):
        events.append("scheduler.step")
        return scheduler_step(*args, **kwargs)

    scheduler.step = record_scheduler_step
    batches = _uneven_batches()
    history = kata.train(model, opt, scheduler, batches, 2)
    expected = (["optimizer.step"] * len(batches) + ["scheduler.step"]) * 2
    assert events == expected, (
        f"with 3 batches and 2 epochs the calls should be {expected}, got {events}; likely cause: "
        f"scheduler.step() called per batch or before the epoch's batches; it belongs after them, once"
    )
    assert isinstance(history, list) and len(history) == 2, f"expected a list of 2 losses, got {history!r}"
    events.clear()
    history = kata.train(model, opt, scheduler, batches, 0)
    assert history == [] and events == [], (
        f"train(..., epochs=0) should do nothing and return [], got {history!r} with calls {events}"
    )


def test_train_returns_mean_batch_loss_per_epoch() -> None:
    model = _tiny_model()
    reference = copy.deepcopy(model)
    batches = _uneven_batches()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=1.0)
    history = kata.train(model, opt, scheduler, batches, 3)
    expected = []
    for _ in range(3):
        losses = [_gd_step(reference, x, y, lr=0.1) for x, y in batches]
        expected.append(sum(losses) / len(losses))
    assert isinstance(history, list) and all(type(v) is float for v in history), (
        f"train should return a list of Python floats, got {history!r}"
    )
    assert history == pytest.approx(expected, rel=1e-5), (
        f"expected each epoch's plain mean of its batch losses {expected}, got {history}; likely cause: "
        f"weighting by batch size, summing instead of averaging, keeping only the last batch's loss, or "
        f"averaging over all epochs so far (the batches here have 1, 7 and 3 rows)"
    )


# ---------------------------------------------------------------- param_groups


class _ScaledLayerNorm(nn.LayerNorm):
    """A LayerNorm subclass: still a norm layer."""


class _Tower(nn.Module):
    """Every kind of parameter param_groups must place, under names chosen to fool name-based rules."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)  # a 2-D table: decays
        self.norm_proj = nn.Linear(4, 4)  # "norm" in its name, but a Linear: its weight decays
        self.final = _ScaledLayerNorm(4)  # a norm layer (a subclass) under a name without "norm"
        self.body = nn.Sequential(
            nn.Conv1d(4, 4, 3, padding=1),  # a 3-D kernel: decays; its bias does not
            nn.BatchNorm1d(4),
            nn.GroupNorm(2, 4),
            nn.InstanceNorm1d(4, affine=True),
        )
        self.rms = nn.RMSNorm(4)  # one weight, no bias
        self.scale = nn.Parameter(torch.ones(4))  # a custom 1-D parameter of a plain module: decays
        self.temperature = nn.Parameter(torch.tensor(1.0))  # a custom 0-D parameter: decays
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight  # tied: one parameter registered on two modules
        self.frozen = nn.Linear(4, 4)  # frozen: in no group
        self.frozen.requires_grad_(False)
        self.half_frozen = nn.LayerNorm(4)
        self.half_frozen.weight.requires_grad_(False)  # a frozen gain (in no group); its bias trains


# For every trainable parameter of _Tower (named as named_parameters() lists it): decayed or not, and why.
TOWER_EXPECTED = {
    "embed.weight": (True, "an embedding table (tied with head.weight): decayed like any weight"),
    "norm_proj.weight": (True, "the weight of a Linear that merely has 'norm' in its name"),
    "norm_proj.bias": (False, "a bias"),
    "final.weight": (False, "the gain of a LayerNorm subclass stored as `final`"),
    "final.bias": (False, "a bias (of a LayerNorm subclass)"),
    "body.0.weight": (True, "a Conv1d kernel"),
    "body.0.bias": (False, "a bias"),
    "body.1.weight": (False, "a BatchNorm1d gain"),
    "body.1.bias": (False, "a bias (of a BatchNorm1d)"),
    "body.2.weight": (False, "a GroupNorm gain"),
    "body.2.bias": (False, "a bias (of a GroupNorm)"),
    "body.3.weight": (False, "an InstanceNorm1d gain"),
    "body.3.bias": (False, "a bias (of an InstanceNorm1d)"),
    "rms.weight": (False, "an RMSNorm gain"),
    "scale": (True, "a custom 1-D parameter of a plain module"),
    "temperature": (True, "a custom 0-D parameter of a plain module"),
    "half_frozen.bias": (False, "a bias (of a LayerNorm whose gain is frozen)"),
}


def _call_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    groups = explain_crash(
        lambda: kata.param_groups(model, weight_decay),
        f"param_groups({type(model).__name__}(...), {weight_decay})",
        "a module or parameter the code did not expect: a frozen parameter, a tied weight, a norm layer "
        "without bias, or a 0-D parameter",
    )
    assert isinstance(groups, list) and all(isinstance(g, dict) for g in groups), (
        f"param_groups should return a list of dicts, got {type(groups).__name__}: {groups!r:.200}"
    )
    for i, group in enumerate(groups):
        assert set(group) == {"params", "weight_decay"}, (
            f"param_groups: group {i} has the keys {sorted(group)}; each group must have exactly 'params' "
            f"and 'weight_decay' (a group without its own 'weight_decay' silently takes the optimizer's "
            f"default, 0.01 for AdamW; any other key, such as 'lr', overrides what the caller passes)"
        )
        assert isinstance(group["params"], list) and all(
            isinstance(p, torch.Tensor) for p in group["params"]
        ), (
            f"param_groups: group {i}'s 'params' should be a list of tensors, got "
            f"{type(group['params']).__name__}; likely cause: a generator or filter object, which is used "
            f"up the first time anything iterates over it"
        )
        assert type(group["weight_decay"]) is float, (
            f"param_groups: group {i}'s 'weight_decay' should be a float, got "
            f"{type(group['weight_decay']).__name__} ({group['weight_decay']!r})"
        )
    return groups


def _placement(model: nn.Module, groups: list[dict]) -> dict[str, list[float]]:
    """For each named parameter, the weight decays of the groups it appears in (by identity)."""
    where: dict[int, list[float]] = {}
    for group in groups:
        for p in group["params"]:
            where.setdefault(id(p), []).append(group["weight_decay"])
    return {name: where.pop(id(p), []) for name, p in model.named_parameters()} | (
        {"<tensors that are not the model's parameters>": [0.0] * len(where)} if where else {}
    )


def test_param_groups_are_groups_adamw_accepts() -> None:
    model = _Tower()
    groups = _call_param_groups(model, 0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns about a parameter listed twice in one group
        try:
            optimizer = torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.777)
        except (ValueError, TypeError, UserWarning) as exc:
            raise AssertionError(
                f"torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3) refused the groups: "
                f"{type(exc).__name__}: {exc}; likely cause: a parameter in two groups or twice in one (a "
                f"tied weight listed once per module), or a frozen parameter's copy"
            ) from None
    decays = sorted({group["weight_decay"] for group in optimizer.param_groups if group["params"]})
    assert decays == [0.0, 0.1], (
        f"the non-empty groups should carry weight decays 0.0 and 0.1 (param_groups(model, 0.1)), got "
        f"{decays}; 0.777 means a group fell back to the optimizer's default"
    )


def test_param_groups_hold_every_trainable_parameter_once() -> None:
    model = _Tower()
    placement = _placement(model, _call_param_groups(model, 0.1))
    strays = placement.pop("<tensors that are not the model's parameters>", None)
    assert not strays, (
        f"param_groups returned {len(strays)} tensor(s) that are not the model's parameters; likely cause: "
        f"copies (p.detach(), p.clone(), p.data): the optimizer would update the copies and the model would "
        f"never change. Put the parameter objects themselves in the groups"
    )
    twice = {name: d for name, d in placement.items() if len(d) > 1}
    assert not twice, (
        f"param_groups listed these parameters more than once (weight decays of their groups): {twice}; "
        f"likely cause: head.weight is embed.weight (tied), so walking every module's own parameters meets "
        f"it twice; count parameters by identity, or use model.parameters(), which lists each once"
    )
    frozen = sorted(name for name, p in model.named_parameters() if not p.requires_grad and placement[name])
    assert not frozen, (
        f"param_groups put frozen parameters (requires_grad=False) in a group: {frozen}; only trainable "
        f"parameters belong to the optimizer"
    )
    missing = sorted(name for name, p in model.named_parameters() if p.requires_grad and not placement[name])
    assert not missing, (
        f"param_groups left these trainable parameters out of every group: {missing}; they would never "
        f"train, and nothing would say so; likely cause: a rule that covers only some kinds of module"
    )


def test_param_groups_exempt_biases_and_norm_layers_only() -> None:
    model = _Tower()
    placement = _placement(model, _call_param_groups(model, 0.1))
    wrong = []
    for name, (decayed, what) in TOWER_EXPECTED.items():
        got = placement[name][0] if placement[name] else None
        if got != (0.1 if decayed else 0.0):
            wrong.append(f"{name} ({what}): weight decay {got}, expected {0.1 if decayed else 0.0}")
    hints = []
    if placement["norm_proj.weight"] == [0.0]:
        hints.append("a rule by name ('norm' in the name) exempts a Linear called norm_proj")
    if placement["final.weight"] == [0.1]:
        hints.append(
            "final is a subclass of nn.LayerNorm under a name without 'norm': test the module with "
            "isinstance(module, NORM_LAYERS), not its name or type(module) in NORM_LAYERS"
        )
    if placement["scale"] == [0.0] or placement["temperature"] == [0.0]:
        hints.append(
            "the shortcut p.ndim < 2 exempts every 1-D and 0-D parameter; the rule here is by layer type "
            "and the name 'bias', so a custom scale or temperature is decayed"
        )
    if placement["body.1.weight"] == [0.1] and placement["final.weight"] == [0.0]:
        hints.append(
            "the norm layers nested in `body` (a Sequential) were missed: walk every module, "
            "model.modules(), not only model.children()"
        )
    if placement["body.0.weight"] == [0.0] or placement["embed.weight"] == [0.0]:
        hints.append("weights of Conv and Embedding layers are decayed like a Linear's")
    assert not wrong, (
        "param_groups(model, 0.1) put these parameters in the wrong group:\n  "
        + "\n  ".join(wrong)
        + ("\nLikely cause: " + "; ".join(hints) if hints else "")
    )


def test_param_groups_on_single_layers() -> None:
    cases = [
        (nn.Linear(3, 2), {"weight": 0.1, "bias": 0.0}),
        (nn.Linear(3, 2, bias=False), {"weight": 0.1}),
        (_ScaledLayerNorm(3), {"weight": 0.0, "bias": 0.0}),
        (nn.Conv2d(2, 2, 3), {"weight": 0.1, "bias": 0.0}),
    ]
    for model, expected in cases:
        placement = _placement(model, _call_param_groups(model, 0.1))
        got = {name: decays[0] if len(decays) == 1 else decays for name, decays in placement.items()}
        assert got == expected, (
            f"param_groups({model}, 0.1): expected the weight decays {expected}, got {got}; likely cause: "
            f"the model's own parameters (those of the module passed in, not of a submodule) missed, e.g. "
            f"by walking named_children() instead of modules(), or a norm layer checked by exact type"
        )


def test_param_groups_keep_model_order() -> None:
    model = _Tower()
    groups = _call_param_groups(model, 0.1)
    rank = {id(p): i for i, p in enumerate(model.parameters())}
    for i, group in enumerate(groups):
        order = [rank.get(id(p), -1) for p in group["params"]]
        assert order == sorted(order), (
            f"param_groups: group {i} lists the parameters out of the order of model.parameters() (ranks "
            f"{order}); keep that order: an optimizer's state_dict matches its state to parameters by "
            f"position, so a checkpoint only loads into groups built in the same order"
        )


def test_param_groups_leave_model_unchanged() -> None:
    model = _Tower()
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.full_like(p, 0.5)
    before = {name: (p.detach().clone(), p.requires_grad, p.grad) for name, p in model.named_parameters()}
    _call_param_groups(model, 0.1)
    for name, p in model.named_parameters():
        value, requires_grad, grad = before[name]
        assert p.requires_grad == requires_grad, (
            f"param_groups changed {name}.requires_grad from {requires_grad} to {p.requires_grad}; "
            f"likely cause: requires_grad_() called to 'unfreeze' or 'freeze' while sorting"
        )
        assert torch.equal(p.detach(), value) and p.grad is grad, (
            f"param_groups changed {name}'s value or .grad; it should only sort the parameters"
        )


def test_param_groups_make_adamw_decay_only_the_decayed() -> None:
    model = _Tower()
    groups = _call_param_groups(model, 0.1)
    optimizer = torch.optim.AdamW(groups, lr=0.5)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)  # Adam's own step is then 0: only the decay moves a weight
    optimizer.step()
    for name, (decayed, what) in TOWER_EXPECTED.items():
        p = dict(model.named_parameters())[name]
        expected = before[name] * (1 - 0.5 * 0.1) if decayed else before[name]
        assert_close(
            p.detach(),
            expected,
            rtol=1e-6,
            atol=1e-7,
            what=f"{name} ({what}) after one AdamW(lr=0.5) step with zero gradients",
            likely_cause="decayed weights shrink by (1 - lr * weight_decay), exempt ones do not move; "
            "see test_param_groups_exempt_biases_and_norm_layers_only",
        )


# ---------------------------------------------------------------- warmup_cosine


def _factor(t: int, warmup: int, total: int, start: float, floor: float) -> float:
    """The float64 schedule factor: linear warm-up from `start`, cosine to `floor`, flat after `total`."""
    if t < warmup:
        return start + (1 - start) * t / warmup
    progress = min(t, total) - warmup
    return floor + (1 - floor) * (1 + math.cos(math.pi * progress / (total - warmup))) / 2


def _lrs(optimizer: torch.optim.Optimizer, scheduler, steps: int) -> list[list[float]]:
    """Each group's lr at t = 0 .. steps, stepping the (parameter-less) optimizer before the scheduler."""
    history = [[group["lr"] for group in optimizer.param_groups]]
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        history.append([group["lr"] for group in optimizer.param_groups])
    return history


def _build_warmup_cosine(optimizer, *args, **kwargs):
    return explain_crash(
        lambda: kata.warmup_cosine(optimizer, *args, **kwargs),
        f"warmup_cosine(optimizer, {', '.join(map(repr, args))}"
        f"{''.join(f', {k}={v!r}' for k, v in kwargs.items())})",
        "an edge of the schedule: warmup_steps = 0 (no warm-up, nothing to divide by), or a schedule "
        "torch refuses to build",
    )


def _phase(t: int, warmup: int, total: int) -> str:
    if t < warmup:
        return (
            "in the warm-up: f should rise linearly from start_factor at t = 0 to 1 at t = warmup_steps "
            "(t / warmup_steps starts at 0 instead of start_factor; (t + 1) / warmup_steps peaks a step "
            "early)"
        )
    if t <= total:
        return (
            "in the cosine phase: f should go from 1 at t = warmup_steps to min_lr_ratio at t = total_steps "
            "along half a cosine period, m + (1 - m) * (1 + cos(pi * p)) / 2 with p = (t - warmup_steps) / "
            "(total_steps - warmup_steps) (not t / total_steps, not 1 - cos, not down to 0 when m > 0)"
        )
    return "after total_steps: f should stay at min_lr_ratio (CosineAnnealingLR climbs back up there)"


def _assert_schedule(got: list[list[float]], expected: list[list[float]], what: str, warmup: int, total: int):
    for t, (row, want) in enumerate(zip(got, expected, strict=True)):
        ok = all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) for a, b in zip(row, want, strict=True))
        assert ok, (
            f"{what}: at t = {t} the groups' lr are {row}, expected {want}; the schedule goes wrong "
            f"{_phase(t, warmup, total)}.\nWhole schedule, got:      {[r[0] for r in got]}\n"
            f"                 expected: {[r[0] for r in expected]}"
        )


@pytest.mark.parametrize(
    "warmup, total, start, floor", [(4, 12, 0.1, 0.0), (3, 10, 0.25, 0.2), (1, 5, 0.5, 0.0), (5, 6, 1.0, 0.1)]
)
def test_warmup_cosine_matches_torch_sequential_lr(
    warmup: int, total: int, start: float, floor: float
) -> None:
    lr = 0.3
    ours = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=lr)
    scheduler = _build_warmup_cosine(ours, warmup, total, start_factor=start, min_lr_ratio=floor)
    got = _lrs(ours, scheduler, total)
    theirs = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=lr)
    sched = torch.optim.lr_scheduler
    reference = sched.SequentialLR(
        theirs,
        [
            sched.LinearLR(theirs, start_factor=start, total_iters=warmup),
            sched.CosineAnnealingLR(theirs, T_max=total - warmup, eta_min=floor * lr),
        ],
        milestones=[warmup],
    )
    _assert_schedule(
        got,
        _lrs(theirs, reference, total),
        f"warmup_cosine(SGD(lr={lr}), warmup_steps={warmup}, total_steps={total}, start_factor={start}, "
        f"min_lr_ratio={floor}) vs torch's SequentialLR(LinearLR, CosineAnnealingLR)",
        warmup,
        total,
    )


def test_warmup_cosine_stays_at_the_floor_after_total_steps() -> None:
    lr, warmup, total, floor = 0.3, 2, 6, 0.1
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=lr)
    scheduler = _build_warmup_cosine(optimizer, warmup, total, start_factor=0.5, min_lr_ratio=floor)
    got = _lrs(optimizer, scheduler, total + 6)
    expected = [[lr * _factor(t, warmup, total, 0.5, floor)] for t in range(total + 7)]
    _assert_schedule(got, expected, "warmup_cosine(warmup_steps=2, total_steps=6, min_lr_ratio=0.1)", 2, 6)


def test_warmup_cosine_scales_each_group_by_its_own_lr() -> None:
    weights, biases = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([{"params": [weights]}, {"params": [biases], "lr": 0.02}], lr=0.1)
    warmup, total, start, floor = 3, 9, 0.2, 0.25
    scheduler = _build_warmup_cosine(optimizer, warmup, total, start_factor=start, min_lr_ratio=floor)
    got = _lrs(optimizer, scheduler, total + 2)
    expected = [
        [base * _factor(t, warmup, total, start, floor) for base in (0.1, 0.02)] for t in range(total + 3)
    ]
    try:
        _assert_schedule(got, expected, "warmup_cosine over two groups (lr 0.1 and 0.02)", warmup, total)
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\nEach group's lr is ITS OWN initial lr times the same factor f(t); likely cause: a floor "
            f"shared by the groups (CosineAnnealingLR's eta_min is an absolute lr, not a ratio), or one "
            f"group's lr used for all"
        ) from None


def test_warmup_cosine_without_warmup_starts_at_the_peak() -> None:
    lr = 0.3
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=lr)
    scheduler = _build_warmup_cosine(optimizer, 0, 4, start_factor=0.1, min_lr_ratio=0.0)
    got = _lrs(optimizer, scheduler, 6)
    expected = [[lr * _factor(t, 0, 4, 0.1, 0.0)] for t in range(7)]
    _assert_schedule(got, expected, "warmup_cosine(warmup_steps=0, total_steps=4)", 0, 4)


def test_warmup_cosine_defaults() -> None:
    lr = 0.3
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=lr)
    scheduler = _build_warmup_cosine(optimizer, 4, 10)
    got = _lrs(optimizer, scheduler, 12)
    expected = [[lr * _factor(t, 4, 10, 0.1, 0.0)] for t in range(13)]
    _assert_schedule(
        got,
        expected,
        "warmup_cosine(optimizer, 4, 10) with its defaults start_factor=0.1, min_lr_ratio=0.0",
        4,
        10,
    )


def test_warmup_cosine_is_a_scheduler_that_only_sets_lr() -> None:
    model = _tiny_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.3, weight_decay=0.05)
    before = [p.detach().clone() for p in model.parameters()]
    scheduler = _build_warmup_cosine(optimizer, 4, 10, start_factor=0.1, min_lr_ratio=0.0)
    assert isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler), (
        f"warmup_cosine should return a torch.optim.lr_scheduler.LRScheduler (LambdaLR, SequentialLR, or a "
        f"subclass of your own), got {type(scheduler).__name__}"
    )
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.03, rel=1e-9), (
        f"right after warmup_cosine(optimizer(lr=0.3), 4, 10, start_factor=0.1) the lr should be already "
        f"0.3 * f(0) = 0.03, got {optimizer.param_groups[0]['lr']}"
    )
    assert optimizer.param_groups[0]["weight_decay"] == 0.05 and not optimizer.state, (
        "building the scheduler changed the optimizer beyond its lr (its weight decay, or its state)"
    )
    for p, b in zip(model.parameters(), before, strict=True):
        assert torch.equal(p.detach(), b), "building the scheduler changed the model's parameters"


def test_warmup_cosine_rejects_bad_arguments() -> None:
    def make():
        return torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1)

    for args, kwargs, why in [
        ((-1, 10), {}, "warmup_steps < 0"),
        ((10, 10), {}, "warmup_steps == total_steps: no room for the decay"),
        ((11, 10), {}, "warmup_steps > total_steps"),
        ((2, 10), {"start_factor": 0.0}, "start_factor 0: the first step would have lr 0"),
        ((2, 10), {"start_factor": 1.5}, "start_factor > 1: a warm-up that goes down"),
        ((2, 10), {"min_lr_ratio": -0.1}, "min_lr_ratio < 0: a negative learning rate"),
        ((2, 10), {"min_lr_ratio": 1.5}, "min_lr_ratio > 1: a decay that goes up"),
    ]:
        extra = "".join(f", {k}={v}" for k, v in kwargs.items())
        call = f"warmup_cosine(optimizer, {args[0]}, {args[1]}{extra})"
        try:
            kata.warmup_cosine(make(), *args, **kwargs)
        except ValueError:
            continue
        except NotImplementedError:
            raise
        except Exception as exc:
            raise AssertionError(
                f"{call} raised {type(exc).__name__}: {exc}; it should raise ValueError ({why}): check the "
                f"arguments before building anything"
            ) from None
        raise AssertionError(f"{call} returned a scheduler; it should raise ValueError ({why})")
    for args, kwargs in [((0, 1), {"start_factor": 1.0, "min_lr_ratio": 1.0}), ((9, 10), {})]:
        _build_warmup_cosine(make(), *args, **kwargs)  # the edges of the valid range build fine


# ---------------------------------------------------------------- clip_grad_norm


CLIP_GRAD_FILE = os.path.join("torch", "nn", "utils", "clip_grad.py")


@contextlib.contextmanager
def _calls_into_torch_clipping():
    """Record the Python functions of torch/nn/utils/clip_grad.py called inside the block, however
    they were imported (a name bound at import time is caught too)."""
    hits: list[str] = []
    previous = sys.getprofile()

    def profiler(frame, event, arg):  # type: ignore[no-untyped-def]
        if event == "call" and frame.f_code.co_filename.endswith(CLIP_GRAD_FILE):
            hits.append(frame.f_code.co_name)

    sys.setprofile(profiler)
    try:
        yield hits
    finally:
        sys.setprofile(previous)


def _grad_params(
    grads: list[list[float]] | list[torch.Tensor],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> list[torch.Tensor]:
    """Leaf parameters of value 1 whose .grad holds the given values."""
    params = []
    for g in grads:
        g = torch.as_tensor(g, dtype=dtype).to(device)
        p = torch.ones_like(g, requires_grad=True)
        p.grad = g.clone()
        params.append(p)
    return params


def _random_grads(scale: float, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    return [torch.randn(shape, generator=gen, dtype=dtype) * scale for shape in ((3, 4), (5,), (2, 2, 2))]


def _norm64(grads) -> float:
    return math.sqrt(sum(float((g.detach().double() ** 2).sum()) for g in grads))


def _clip(parameters, max_norm: float, what: str):
    result = explain_crash(
        lambda: kata.clip_grad_norm(parameters, max_norm),
        what,
        "gradients that are None, a single tensor instead of a list, or a list of one",
    )
    assert isinstance(result, torch.Tensor) and result.shape == (), (
        f"{what} should return the total norm as a 0-dim tensor, got {type(result).__name__} "
        f"{getattr(result, 'shape', '')} ({result!r}); likely cause: .item() or float(...) (a host sync "
        f"torch avoids), or the per-tensor norms instead of their total"
    )
    return result


def test_clip_grad_norm_matches_torch(device: torch.device) -> None:
    grads = _random_grads(2.0)  # total norm about 7
    ours, theirs = _grad_params(grads, device=device), _grad_params(grads, device=device)
    total = _clip(ours, 1.0, f"clip_grad_norm(params on {device.type}, max_norm=1.0)")
    torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    assert total.dtype == torch.float32 and total.device.type == device.type, (
        f"clip_grad_norm should return the norm with the gradients' dtype and device (float32 on "
        f"{device}), got {total.dtype} on {total.device}; likely cause: a tensor built with "
        f"torch.tensor(...) or torch.zeros(()) on the CPU"
    )
    assert_close(
        total.cpu(),
        torch.tensor(_norm64(grads)),
        rtol=1e-5,
        atol=1e-6,
        what="the total norm clip_grad_norm returned",
        likely_cause="the 2-norm of ALL gradients as one vector is sqrt(sum of every squared entry): not "
        "the sum or the mean of the per-tensor norms, and measured BEFORE clipping",
    )
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert_close(
            a.grad,
            b.grad,
            rtol=1e-5,
            atol=1e-7,
            what=f"gradient {i} after clip_grad_norm(..., max_norm=1.0) vs torch.nn.utils.clip_grad_norm_",
            likely_cause="every gradient is multiplied by the same factor max_norm / total_norm when the "
            "total exceeds max_norm",
        )
        assert torch.equal(a.detach(), torch.ones_like(a)), "clip_grad_norm changed a parameter's value"


def test_clip_grad_norm_returns_the_norm_before_clipping() -> None:
    grads = _random_grads(2.0)
    total = _clip(_grad_params(grads), 0.5, "clip_grad_norm(params, max_norm=0.5)")
    before = _norm64(grads)
    assert float(total) == pytest.approx(before, rel=1e-5), (
        f"clip_grad_norm should return the total norm measured BEFORE clipping, {before:.6f}, got "
        f"{float(total):.6f}"
        + (
            "; that is max_norm: the norm was measured after clipping (it is always at most max_norm "
            "then, and useless for spotting gradient spikes)"
            if float(total) == pytest.approx(0.5, rel=1e-3)
            else ""
        )
    )


def test_clip_grad_norm_uses_one_norm_for_all_gradients() -> None:
    # Each gradient alone is below max_norm = 1, together they are above it: only a total norm sees that.
    grads = [[0.6, 0.6], [0.8, 0.0, 0.0]]  # norms 0.849 and 0.8, total 1.166
    params = _grad_params(grads)
    _clip(params, 1.0, "clip_grad_norm(params, max_norm=1.0)")
    factor = 1.0 / _norm64([torch.tensor(g) for g in grads])
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        assert_close(
            p.grad,
            torch.tensor(g) * factor,
            rtol=1e-5,
            atol=1e-7,
            what=f"gradient {i} after clip_grad_norm: per-tensor norms 0.849 and 0.8, total 1.166, "
            f"max_norm 1.0",
            likely_cause="clipping each tensor by its own norm (each is below max_norm, so nothing changes; "
            "and where one is above, the update's direction changes): the norm is that of ALL gradients "
            "together, and one common factor scales them all",
        )


def test_clip_grad_norm_leaves_small_gradients_exactly_as_they_were() -> None:
    grads = _random_grads(0.1)  # total norm about 0.35
    params = _grad_params(grads)
    total = _clip(params, 1.0, "clip_grad_norm(params, max_norm=1.0) with a total norm below 1")
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        assert torch.equal(p.grad, g), (
            f"clip_grad_norm changed gradient {i} although the total norm {_norm64(grads):.4f} is below "
            f"max_norm 1.0; likely cause: scaling by max_norm / norm unconditionally (that scales UP); the "
            f"factor must be at most 1"
        )
    assert float(total) == pytest.approx(_norm64(grads), rel=1e-5), "the norm returned is wrong"


def test_clip_grad_norm_accepts_a_generator_and_a_single_tensor() -> None:
    model = nn.Linear(4, 3)
    (model(torch.randn(8, 4)) * 10).sum().backward()
    norm = _norm64([p.grad for p in model.parameters()])
    assert norm > 2.0, "test set-up: the gradient should be large"
    total = _clip(model.parameters(), 1.0, "clip_grad_norm(model.parameters(), max_norm=1.0)")
    after = _norm64([p.grad for p in model.parameters()])
    assert float(total) == pytest.approx(norm, rel=1e-5) and after == pytest.approx(1.0, rel=1e-4), (
        f"clip_grad_norm(model.parameters(), 1.0) returned {float(total):.5f} (expected {norm:.5f}) and left "
        f"a total norm of {after:.5f} (expected 1.0); likely cause: the generator was iterated twice (once "
        f"for the norm, once to scale): the second pass finds it empty. Make a list of it first"
    )
    single = _grad_params([[3.0, 4.0]])[0]
    total = _clip(single, 1.0, "clip_grad_norm(a single tensor, max_norm=1.0)")
    assert float(total) == pytest.approx(5.0, rel=1e-6), f"expected the norm 5.0 of [3, 4], got {total}"
    assert_close(
        single.grad,
        torch.tensor([0.6, 0.8]),
        rtol=1e-5,
        atol=1e-7,
        what="a single tensor's gradient [3, 4] clipped to norm 1",
        likely_cause="a tensor passed alone counts as a list of one; iterating over it walks its rows",
    )


def test_clip_grad_norm_works_in_place_and_skips_missing_grads() -> None:
    params = _grad_params([[3.0, 0.0], [0.0, 4.0, 0.0]])
    idle = torch.ones(2, requires_grad=True)  # no .grad at all
    kept = [p.grad for p in params]
    total = _clip([params[0], idle, params[1]], 1.0, "clip_grad_norm with a parameter whose .grad is None")
    assert idle.grad is None, f"clip_grad_norm gave a parameter without gradient a .grad: {idle.grad}"
    assert float(total) == pytest.approx(5.0, rel=1e-6), (
        f"expected the total norm 5.0 (gradients [3, 0] and [0, 4, 0]; the None gradient is skipped), got "
        f"{float(total)}"
    )
    for i, (p, g) in enumerate(zip(params, kept, strict=True)):
        assert p.grad is g, (
            f"clip_grad_norm replaced parameter {i}'s .grad by a new tensor (p.grad = p.grad * c); the "
            f"gradients must be scaled in place (mul_), as torch's clip_grad_norm_ does: code that holds "
            f"the .grad tensors (an optimizer's foreach buffers, DDP's buckets) sees only in-place changes"
        )
    assert_close(params[1].grad, torch.tensor([0.0, 0.8, 0.0]), rtol=1e-5, atol=1e-7, what="clipped .grad")


def test_clip_grad_norm_without_any_gradient_returns_zero() -> None:
    params = [torch.ones(3, requires_grad=True), torch.ones(2, requires_grad=True)]
    total = _clip(params, 1.0, "clip_grad_norm over parameters that have no .grad")
    assert float(total) == 0.0, f"with no gradients the total norm is 0, got {float(total)}"
    assert all(p.grad is None for p in params), "clip_grad_norm created gradients that were not there"


def test_clip_grad_norm_keeps_float64() -> None:
    grads = _random_grads(2.0, dtype=torch.float64)
    params = _grad_params(grads, dtype=torch.float64)
    total = _clip(params, 1.0, "clip_grad_norm with float64 gradients")
    assert total.dtype == torch.float64, (
        f"with float64 gradients the norm should be float64, got {total.dtype}; likely cause: an "
        f"accumulator built with torch.zeros(()) or torch.tensor(0.0) in the default dtype"
    )
    # A float32 detour anywhere in the sum shows at 1e-8; float64 orders of summation agree to 1e-15.
    assert float(total) == pytest.approx(_norm64(grads), rel=1e-12), (
        f"float64 norm {float(total)!r} differs from the float64 reference {_norm64(grads)!r} by more than "
        f"float64 rounding; likely cause: a float32 detour"
    )
    after = _norm64([p.grad for p in params])
    assert after == pytest.approx(1.0, rel=2e-6), (
        f"after clipping to 1.0 the float64 total norm is {after!r}; likely cause: a float32 factor"
    )


def test_clip_grad_norm_reads_nothing_back_to_the_host() -> None:
    # meta tensors have a shape, a dtype and a device but no values: code that needs a value on the host
    # (.item(), float(t), `if norm > max_norm:`, min(1, ...)) fails here, as it would stall a GPU.
    params = []
    for shape in ((3, 2), (4,)):
        p = torch.empty(shape, dtype=torch.float64, device="meta", requires_grad=True)
        p.grad = torch.empty_like(p)
        params.append(p)
    kept = [p.grad for p in params]
    total = explain_crash(
        lambda: kata.clip_grad_norm(params, 1.0),
        "clip_grad_norm with gradients on the meta device (tensors without values)",
        "a value read back to the host: `if norm > max_norm:`, min(1.0, max_norm / norm), .item() or "
        "float(); on a GPU each of them waits for the GPU to finish. Compute the factor as a tensor and "
        "clamp it to at most 1 (torch.clamp, torch.minimum or torch.where), then multiply by it "
        "unconditionally",
    )
    assert isinstance(total, torch.Tensor) and total.device.type == "meta" and total.dtype == torch.float64, (
        f"clip_grad_norm on meta float64 gradients should return a meta float64 tensor, got {total!r}"
    )
    assert all(p.grad is g for p, g in zip(params, kept, strict=True)), "the .grad tensors were replaced"


def test_clip_grad_norm_does_not_call_torchs_clipping() -> None:
    params = _grad_params(_random_grads(2.0))
    with _calls_into_torch_clipping() as hits:
        kata.clip_grad_norm(params, 1.0)
    assert not hits, (
        f"clip_grad_norm called torch's own clipping ({sorted(set(hits))} in torch/nn/utils/clip_grad.py); "
        f"the task is to write it: one norm over all gradients, one factor clamped to at most 1, applied "
        f"in place"
    )


# ---------------------------------------------------------------- accumulated_step


def _row_model(dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> nn.Module:
    """A model whose output row depends on its input row alone (no BatchNorm), as the contract needs."""
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).to(device=device, dtype=dtype)


def _micro_batches(
    sizes=(1, 4, 2),
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    scale: float = 1.0,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [
        (
            (torch.randn(n, 3, dtype=dtype) * scale).to(device),
            (torch.randn(n, 2, dtype=dtype) * scale).to(device),
        )
        for n in sizes
    ]


def _big_batch_step(model, optimizer, micro_batches, max_norm) -> tuple[float, float]:
    """Reference: one step of `optimizer` on the concatenated batch, clipped by torch; (loss, norm before)."""
    x = torch.cat([x for x, _ in micro_batches])
    y = torch.cat([y for _, y in micro_batches])
    optimizer.zero_grad()
    loss = _mse(model, x, y)
    loss.backward()
    params = [p for p in model.parameters() if p.grad is not None]
    norm = _norm64([p.grad for p in params])
    if max_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
    optimizer.step()
    return loss.item(), norm


def _accumulate(model, optimizer, micro_batches, max_norm, what: str):
    result = explain_crash(
        lambda: kata.accumulated_step(model, optimizer, micro_batches, max_norm),
        what,
        "a step tied to the CPU (loss.numpy() needs .cpu() first; .item() works anywhere), or micro-batches "
        "of different sizes handled as if equal",
    )
    assert isinstance(result, tuple) and len(result) == 2 and all(type(v) is float for v in result), (
        f"{what} should return (loss, grad_norm), a tuple of two Python floats, got {result!r}; likely "
        f"cause: tensors returned (use .item()), or only one value"
    )
    return result


ACCUMULATION_CAUSES = (
    "each micro-batch's mean loss must be weighted by its share of the rows, n_i / N, before backward() "
    "(1/k is right only for equal sizes, here 1, 4 and 2 rows; no weighting makes the gradient k times too "
    "big); gradients are zeroed once, BEFORE the first backward (not inside the loop: then only the last "
    "micro-batch counts), and optimizer.step() is called once, after the last backward"
)


@pytest.mark.parametrize(
    "name, make, max_norm",
    [
        pytest.param("SGD(lr=0.1)", lambda p: torch.optim.SGD(p, lr=0.1), None, id="sgd"),
        pytest.param(
            "SGD(lr=0.1, momentum=0.9)",
            lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
            None,
            id="momentum",
        ),
        pytest.param("Adam(lr=0.01)", lambda p: torch.optim.Adam(p, lr=0.01), None, id="adam"),
        pytest.param(
            "SGD(lr=0.1), max_norm=100", lambda p: torch.optim.SGD(p, lr=0.1), 100.0, id="loose-clip"
        ),
    ],
)
def test_accumulated_step_equals_one_big_batch_step(name: str, make, max_norm) -> None:
    model = _row_model()
    stale_x, stale_y = _micro_batches((3,))[0]
    _mse(model, stale_x, stale_y).backward()  # gradients some earlier code left behind
    reference = copy.deepcopy(model)  # keeps the stale .grad too
    optimizer, reference_optimizer = make(model.parameters()), make(reference.parameters())
    for step in range(2):  # the second step also starts from the gradients the first one left
        batches = _micro_batches()
        _accumulate(model, optimizer, batches, max_norm, f"accumulated_step with {name}")
        _big_batch_step(reference, reference_optimizer, batches, max_norm)
        for (pname, a), b in zip(model.named_parameters(), reference.parameters(), strict=True):
            # float64: the two ways of summing the gradient agree to ~1e-15.
            assert_close(
                a.detach(),
                b.detach(),
                rtol=1e-10,
                atol=1e-12,
                what=f"parameter {pname!r} after accumulated_step #{step + 1} with {name} over micro-batches "
                f"of 1, 4 and 2 rows vs one step on the 7-row batch",
                likely_cause=ACCUMULATION_CAUSES,
            )


def test_accumulated_step_clips_the_accumulated_gradient() -> None:
    for name, make in [
        ("SGD(lr=0.1)", lambda p: torch.optim.SGD(p, lr=0.1)),
        ("Adam(lr=0.01)", lambda p: torch.optim.Adam(p, lr=0.01)),
    ]:
        model = _row_model()
        reference = copy.deepcopy(model)
        optimizer, reference_optimizer = make(model.parameters()), make(reference.parameters())
        batches = _micro_batches(scale=3.0)
        probe = copy.deepcopy(model)
        _, norm = _big_batch_step(probe, torch.optim.SGD(probe.parameters(), lr=0.0), batches, None)
        max_norm = norm / 4  # well below the gradient's norm: clipping changes the step
        _accumulate(
            model, optimizer, batches, max_norm, f"accumulated_step with {name}, max_norm={max_norm:.4f}"
        )
        _big_batch_step(reference, reference_optimizer, batches, max_norm)
        for (pname, a), b in zip(model.named_parameters(), reference.parameters(), strict=True):
            # rtol 1e-6, not 1e-10: clip_grad_norm_ scales by max_norm / (norm + 1e-6), and the contract also
            # accepts max_norm / norm, a relative 1e-6 / norm apart. Clipping the wrong vector is off by %.
            assert_close(
                a.detach(),
                b.detach(),
                rtol=1e-6,
                atol=1e-12,
                what=f"parameter {pname!r} after accumulated_step with {name} and max_norm = norm / 4 vs one "
                f"clipped step on the big batch",
                likely_cause="clipping goes once, on the ACCUMULATED gradient: after the last backward() and "
                "before optimizer.step(). Clipping each micro-batch's gradient clips the wrong vector, "
                "clipping before the backward passes clips nothing, clipping after the step is too late",
            )


def test_accumulated_step_returns_big_batch_loss_and_norm_before_clipping() -> None:
    for max_norm in (None, 0.05):
        model = _row_model()
        batches = _micro_batches()
        reference = copy.deepcopy(model)
        expected_loss, expected_norm = _big_batch_step(
            reference, torch.optim.SGD(reference.parameters(), lr=0.1), batches, max_norm
        )
        loss, norm = _accumulate(
            model, torch.optim.SGD(model.parameters(), lr=0.1), batches, max_norm, "accumulated_step"
        )
        assert loss == pytest.approx(expected_loss, rel=1e-10), (
            f"accumulated_step (max_norm={max_norm}) should return the 7-row batch's loss before the "
            f"update, {expected_loss:.8f}, got {loss:.8f}; likely cause: the plain mean of the micro-batch "
            f"losses (rows 1, 4, 2: weight each by its rows), the last micro-batch's loss alone, or a loss "
            f"measured after the step"
        )
        hint = (
            "; that is max_norm: the norm was measured after clipping"
            if max_norm is not None and norm == pytest.approx(max_norm, rel=1e-6)
            else ""
        )
        assert norm == pytest.approx(expected_norm, rel=1e-9), (
            f"accumulated_step (max_norm={max_norm}) should return the total norm of the big batch's "
            f"gradient BEFORE clipping, {expected_norm:.8f}, got {norm:.8f}{hint}; likely cause: the norm "
            f"of one micro-batch's gradient, or none computed when max_norm is None"
        )


def test_accumulated_step_runs_one_micro_batch_at_a_time() -> None:
    model = _row_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    events: list[str] = []
    model.register_forward_hook(lambda module, args, out: events.append(f"forward({args[0].shape[0]} rows)"))
    model[0].weight.register_hook(lambda grad: events.append("backward"))
    optimizer_step = optimizer.step

    def record_step(*args, **kwargs):
        events.append("optimizer.step")
        return optimizer_step(*args, **kwargs)

    optimizer.step = record_step
    _accumulate(model, optimizer, _micro_batches(), None, "accumulated_step")
    expected = ["forward(1 rows)", "backward", "forward(4 rows)", "backward", "forward(2 rows)", "backward"]
    expected.append("optimizer.step")
    assert events == expected, (
        f"accumulated_step over micro-batches of 1, 4 and 2 rows should call, in order, {expected}; it "
        f"called {events}. Likely cause: torch.cat into one big batch, or every forward before one backward "
        f"of the summed loss (both keep the whole batch's activations in memory, which is what accumulation "
        f"avoids), or optimizer.step() per micro-batch"
    )


def test_accumulated_step_leaves_micro_batches_unchanged() -> None:
    model = _row_model()
    batches = _micro_batches()
    pairs = list(batches)
    values = [(x.clone(), y.clone()) for x, y in batches]
    _accumulate(model, torch.optim.SGD(model.parameters(), lr=0.1), batches, 1.0, "accumulated_step")
    assert len(batches) == 3 and all(a is b for a, b in zip(batches, pairs, strict=True)), (
        "accumulated_step changed the caller's list of micro-batches (order or items)"
    )
    for i, ((x, y), (x0, y0)) in enumerate(zip(batches, values, strict=True)):
        assert torch.equal(x, x0) and torch.equal(y, y0) and not x.requires_grad and not y.requires_grad, (
            f"accumulated_step changed micro-batch {i} (values or requires_grad); likely cause: an in-place "
            f"operation on x or y (y.sub_, *=), or requires_grad_()"
        )


def test_accumulated_step_rejects_an_empty_list() -> None:
    model = _row_model()
    with pytest.raises(ValueError):
        kata.accumulated_step(model, torch.optim.SGD(model.parameters(), lr=0.1), [], None)


def test_accumulated_step_on_device(device: torch.device) -> None:
    model = _row_model(torch.float32, device)
    reference = copy.deepcopy(model)
    batches = _micro_batches(dtype=torch.float32, device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss, norm = _accumulate(model, optimizer, batches, 0.5, f"accumulated_step on {device.type}")
    expected_loss, expected_norm = _big_batch_step(
        reference, torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9), batches, 0.5
    )
    # float32: summation order differs by a few ulps.
    assert loss == pytest.approx(expected_loss, rel=1e-5) and norm == pytest.approx(
        expected_norm, rel=1e-5
    ), (
        f"accumulated_step on {device.type} returned ({loss}, {norm}), expected ({expected_loss}, "
        f"{expected_norm})"
    )
    assert_same_parameters(
        model, reference, f"parameters after accumulated_step on {device.type}", ACCUMULATION_CAUSES
    )


# ---------------------------------------------------------------- MomentumSGD


def _quadratic_params(device: torch.device, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """Two parameters of different shapes; they start equal for every optimizer compared."""
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(3, 2, generator=gen, dtype=dtype).to(device).requires_grad_()
    b = torch.randn(2, generator=gen, dtype=dtype).to(device).requires_grad_()
    return [w, b]


def _loss(params: list[torch.Tensor], step: float) -> torch.Tensor:
    """A smooth, step-dependent loss, so gradients change along the trajectory."""
    w, b = params
    x = torch.linspace(-1.0, 1.0, 12, device=w.device, dtype=w.dtype).reshape(4, 3) * (1 + 0.3 * step)
    return ((torch.tanh(x @ w + b) - 0.5) ** 2).sum() + (w**3).sum() * 0.1


# How a trajectory clears gradients before each step's backward(). Only "none" gives fresh .grad tensors
# every step; the others keep the same .grad tensors, so state that aliases them shows.
ZEROING_WORDS = {
    "none": "zero_grad(set_to_none=True)",
    "in_place": "zero_grad(set_to_none=False) (in place)",
    "accumulate": "zero_grad(set_to_none=False), then two backward() calls accumulating into .grad",
    "carry": "zero_grad(set_to_none=False) on even steps only (odd steps add onto the last step's .grad)",
}


def _trajectory(
    make_optimizer,
    steps: int,
    device: torch.device,
    uses=None,
    zeroing: str = "none",
    dtype: torch.dtype = torch.float32,
) -> list[torch.Tensor]:
    """Run `steps` steps; `uses[step]` ("w" or "both", default both) says which parameters get a gradient;
    `zeroing` is a key of ZEROING_WORDS."""
    params = _quadratic_params(device, dtype)
    opt = make_optimizer(params)
    for step in range(steps):
        if zeroing == "none":
            opt.zero_grad(set_to_none=True)
        elif zeroing != "carry" or step % 2 == 0:
            opt.zero_grad(set_to_none=False)
        if uses is not None and uses[step] == "w":
            (params[0] ** 2).sum().mul(1 + step).backward()  # b takes no part: its .grad stays None
        elif zeroing == "accumulate":
            (_loss(params, step) * 0.5).backward()
            (_loss(params, step + 0.5) * 0.5).backward()
        else:
            _loss(params, step).backward()
        opt.step()
    return [p.detach().clone() for p in params]


def _assert_same_trajectory(ours, reference, what: str, likely_cause: str) -> None:
    for name, a, b in zip(("w", "b"), ours, reference, strict=True):
        assert_close(a, b, rtol=1e-5, atol=1e-6, what=f"{what}, parameter {name}", likely_cause=likely_cause)


def test_momentum_sgd_plain_matches_sgd() -> None:
    cpu = torch.device("cpu")
    ours = _trajectory(lambda p: kata.MomentumSGD(p, lr=0.1), 4, cpu)
    reference = _trajectory(lambda p: torch.optim.SGD(p, lr=0.1), 4, cpu)
    _assert_same_trajectory(
        ours,
        reference,
        "MomentumSGD(params, lr=0.1) (defaults momentum=0, weight_decay=0) vs torch.optim.SGD",
        "with the defaults it is plain gradient descent, p -= lr * p.grad: check the sign, the defaults "
        "(momentum=0.0, weight_decay=0.0), and that every parameter is updated exactly once per step",
    )


@pytest.mark.parametrize("lr, momentum", [(0.05, 0.9), (0.1, 0.5)])
def test_momentum_sgd_momentum_matches_sgd(device: torch.device, lr: float, momentum: float) -> None:
    ours = _trajectory(lambda p: kata.MomentumSGD(p, lr=lr, momentum=momentum), 5, device)
    reference = _trajectory(lambda p: torch.optim.SGD(p, lr=lr, momentum=momentum), 5, device)
    _assert_same_trajectory(
        ours,
        reference,
        f"MomentumSGD(lr={lr}, momentum={momentum}) vs torch.optim.SGD after 5 steps",
        "buf must be kept per parameter in self.state[p] across steps, start as the first gradient itself, "
        "and update as buf = momentum * buf + g (no (1 - momentum) factor: that is an average, not SGD's "
        "momentum)",
    )


def test_momentum_sgd_weight_decay_before_momentum() -> None:
    cpu = torch.device("cpu")
    settings = {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1}
    ours = _trajectory(lambda p: kata.MomentumSGD(p, **settings), 5, cpu)
    reference = _trajectory(lambda p: torch.optim.SGD(p, **settings), 5, cpu)
    _assert_same_trajectory(
        ours,
        reference,
        f"MomentumSGD({settings}) vs torch.optim.SGD after 5 steps",
        "weight decay is added to the gradient, g = p.grad + weight_decay * p, BEFORE the momentum buffer "
        "is updated; applying it to p afterwards (decoupled, as AdamW does) gives a different trajectory",
    )


def test_momentum_sgd_skips_params_without_grad() -> None:
    cpu = torch.device("cpu")
    settings = {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1}
    # b gets no gradient on step 0 (its first update comes on step 1), and none again on step 3.
    uses = ["w", "both", "both", "w", "both"]
    ours = explain_crash(
        lambda: _trajectory(lambda p: kata.MomentumSGD(p, **settings), 5, cpu, uses),
        "MomentumSGD.step() with a parameter whose .grad is None",
        "parameters with p.grad None must be skipped (`if p.grad is None: continue`)",
    )
    reference = _trajectory(lambda p: torch.optim.SGD(p, **settings), 5, cpu, uses)
    _assert_same_trajectory(
        ours,
        reference,
        "MomentumSGD vs torch.optim.SGD when one parameter's grad is None on some steps",
        "a parameter whose .grad is None must be skipped entirely (no weight decay, no momentum move, no "
        "buffer change), and its buffer starts on ITS first update, not on the optimizer's first step",
    )


def test_momentum_sgd_param_groups_use_own_settings() -> None:
    cpu = torch.device("cpu")

    def groups(params):
        w, b = params
        return [{"params": [w], "lr": 0.2}, {"params": [b], "momentum": 0.3}]

    def run(make):
        # The first group's lr is halved after two steps, as a scheduler would do.
        params = _quadratic_params(cpu)
        opt = make(groups(params))
        for step in range(4):
            if step == 2:
                opt.param_groups[0]["lr"] /= 2
            opt.zero_grad()
            _loss(params, step).backward()
            opt.step()
        return [p.detach().clone() for p in params]

    ours = run(lambda g: kata.MomentumSGD(g, lr=0.05, momentum=0.9))
    reference = run(lambda g: torch.optim.SGD(g, lr=0.05, momentum=0.9))
    _assert_same_trajectory(
        ours,
        reference,
        "MomentumSGD vs torch.optim.SGD with two param groups (own lr; own momentum)",
        "read lr, momentum and weight_decay from each group dict at every step (group['lr']), not from "
        "self.defaults or values saved in __init__: param groups and lr schedulers both rely on that",
    )


def test_momentum_sgd_closure_returns_loss() -> None:
    cpu = torch.device("cpu")

    def run(make):
        params = _quadratic_params(cpu)
        opt = make(params)
        returned, results = [], []
        for step in range(3):

            def closure(step=step):
                opt.zero_grad()
                loss = _loss(params, step)
                loss.backward()
                returned.append(loss)
                return loss

            results.append(opt.step(closure))
        return [p.detach().clone() for p in params], returned, results

    ours, returned, results = explain_crash(
        lambda: run(lambda p: kata.MomentumSGD(p, lr=0.05, momentum=0.9)),
        "MomentumSGD.step(closure) with a closure that calls loss.backward()",
        "the closure ran with gradient tracking off; call it inside `with torch.enable_grad():` (the "
        "updates, not the closure, belong under torch.no_grad())",
    )
    reference, _, _ = run(lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9))
    assert len(returned) == 3, (
        f"step(closure) should call the closure once per step; it was called {len(returned)} times in 3 steps"
    )
    assert all(r is c for r, c in zip(results, returned, strict=True)), (
        f"step(closure) should return what the closure returned ({returned}), got {results}"
    )
    _assert_same_trajectory(
        ours,
        reference,
        "MomentumSGD.step(closure) vs torch.optim.SGD.step(closure)",
        "call the closure FIRST, inside torch.enable_grad() (step's updates run without grad, but the "
        "closure must be able to backward), then update with the gradients it produced",
    )


def test_momentum_sgd_closure_has_grad_even_under_no_grad() -> None:
    params = _quadratic_params(torch.device("cpu"))
    opt = kata.MomentumSGD(params, lr=0.05, momentum=0.9)

    def closure():
        opt.zero_grad()
        loss = _loss(params, 0)
        loss.backward()
        return loss

    with torch.no_grad():  # e.g. a training loop that wraps its step in no_grad
        explain_crash(
            lambda: opt.step(closure),
            "MomentumSGD.step(closure) called inside `with torch.no_grad():`",
            "the closure inherited the caller's no_grad mode, so its backward() has no graph; call it "
            "inside `with torch.enable_grad():`, as torch's optimizers do",
        )


def test_momentum_sgd_step_without_closure_returns_none() -> None:
    params = _quadratic_params(torch.device("cpu"))
    before = [p.detach().clone() for p in params]
    opt = kata.MomentumSGD(params, lr=0.1)
    _loss(params, 0).backward()
    result = opt.step()
    assert result is None, f"step() without a closure should return None, got {result!r}"
    assert any(not torch.equal(p.detach(), q) for p, q in zip(params, before, strict=True)), (
        "step() should still update the parameters that have gradients; nothing changed"
    )


@pytest.mark.parametrize("zeroing", ["in_place", "accumulate", "carry"])
def test_momentum_sgd_state_survives_in_place_zeroing_and_accumulation(zeroing: str) -> None:
    cpu = torch.device("cpu")
    for settings in (
        {"lr": 0.05, "momentum": 0.9},
        {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1},
        {"lr": 0.1, "weight_decay": 0.1},
    ):
        ours = _trajectory(lambda p, s=settings: kata.MomentumSGD(p, **s), 5, cpu, zeroing=zeroing)
        reference = _trajectory(lambda p, s=settings: torch.optim.SGD(p, **s), 5, cpu, zeroing=zeroing)
        _assert_same_trajectory(
            ours,
            reference,
            f"MomentumSGD({settings}) vs torch.optim.SGD after 5 steps, gradients cleared by "
            f"{ZEROING_WORDS[zeroing]}",
            "state aliasing: the momentum buffer shares memory with p.grad (stored as the gradient itself, "
            "without .clone()), so zero_grad(set_to_none=False) wipes it and backward() adds into it; or "
            "p.grad was changed in place (g = p.grad; g.add_(...)), which the next accumulated step sees",
        )


def test_momentum_sgd_leaves_grad_unchanged() -> None:
    params = _quadratic_params(torch.device("cpu"))
    for settings in ({"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1}, {"lr": 0.1, "weight_decay": 0.1}):
        opt = kata.MomentumSGD(params, **settings)
        for step in range(2):  # the second step updates an existing buffer
            opt.zero_grad()
            _loss(params, step).backward()
            before = [p.grad.clone() for p in params]
            opt.step()
            for name, p, g in zip(("w", "b"), params, before, strict=True):
                assert p.grad is not None and torch.equal(p.grad, g), (
                    f"MomentumSGD({settings}).step() changed {name}.grad (step {step}): .grad belongs to the "
                    f"caller and must be left as step() found it; likely cause: weight decay added in place "
                    f"(g = p.grad; g.add_(weight_decay * p)) or the buffer updated in place while it is "
                    f"p.grad itself; build g = p.grad + weight_decay * p as a new tensor"
                )


def test_momentum_sgd_step_records_no_graph() -> None:
    params = _quadratic_params(torch.device("cpu"))
    opt = kata.MomentumSGD(params, lr=0.05, momentum=0.9, weight_decay=0.1)
    for step in range(2):  # the first step creates the buffers, the second updates them
        opt.zero_grad()
        _loss(params, step).backward()
        with record_graph_calls() as recorded:
            opt.step()
        assert not recorded, (
            f"MomentumSGD.step() (step {step}, weight_decay=0.1) built an autograd graph: these calls were "
            f"recorded {sorted(set(recorded))}; the updates must run under torch.no_grad() (a "
            f"decorator or a with block), not with grad on while writing through p.data: the graph links "
            f"every step to the last and keeps them all alive"
        )
    for name, p in zip(("w", "b"), params, strict=True):
        assert p.is_leaf and p.grad_fn is None, (
            f"after MomentumSGD.step(), parameter {name} is no longer a leaf (grad_fn {p.grad_fn}); likely "
            f"cause: it was rebound to the result of an operation instead of updated in place under no_grad"
        )
        kept = [v for v in opt.state[p].values() if isinstance(v, torch.Tensor)]
        assert all(v.grad_fn is None and not v.requires_grad for v in kept), (
            f"MomentumSGD keeps tensors in state[{name}] that are part of an autograd graph "
            f"{[v.grad_fn for v in kept]}; likely cause: the buffer computed with grad enabled"
        )


def test_momentum_sgd_state_follows_param_dtype_and_device() -> None:
    # On the meta device a buffer built on the CPU (torch.zeros(p.shape)) shows even on a CPU-only machine.
    meta = torch.device("meta")
    params = [
        torch.empty(3, 2, dtype=torch.float64, device=meta).requires_grad_(),
        torch.empty(2, dtype=torch.float64, device=meta).requires_grad_(),
    ]
    opt = kata.MomentumSGD(params, lr=0.05, momentum=0.9, weight_decay=0.1)
    try:
        for _ in range(2):
            for p in params:
                p.grad = torch.empty_like(p)
            opt.step()
    except NotImplementedError:
        raise
    except Exception as exc:
        pytest.skip(
            f"MomentumSGD.step() cannot run on the meta device ({type(exc).__name__}: {exc}); its state's "
            f"device is checked only on a GPU run"
        )
    for name, p in zip(("w", "b"), params, strict=True):
        assert p.device == meta and p.dtype == torch.float64, (
            f"after MomentumSGD.step(), parameter {name} is a {p.dtype} tensor on {p.device}; it was float64 "
            f"on {meta}; likely cause: p.data replaced by a tensor built elsewhere; update p in place"
        )
        buffers = [v for v in opt.state[p].values() if isinstance(v, torch.Tensor) and v.shape == p.shape]
        assert buffers, (
            f"with momentum=0.9, MomentumSGD should keep {name}'s buffer (shape {tuple(p.shape)}) in "
            f"self.state[p]; found {dict(opt.state[p])!r}"
        )
        wrong = [(v.dtype, v.device) for v in buffers if v.dtype != p.dtype or v.device != p.device]
        assert not wrong, (
            f"MomentumSGD's buffer for {name} should have the parameter's dtype and device (float64 on "
            f"{meta}); got {wrong}; likely cause: a buffer built with torch.zeros(p.shape), which uses the "
            f"default dtype on the CPU: on a GPU it breaks, in float64 it rounds every step to float32. "
            f"Start it from g.clone() or torch.zeros_like(p)"
        )


def test_momentum_sgd_float64_keeps_float64_precision() -> None:
    cpu = torch.device("cpu")
    settings = {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1}
    ours = _trajectory(lambda p: kata.MomentumSGD(p, **settings), 5, cpu, dtype=torch.float64)
    reference = _trajectory(lambda p: torch.optim.SGD(p, **settings), 5, cpu, dtype=torch.float64)
    for name, a, b in zip(("w", "b"), ours, reference, strict=True):
        assert a.dtype == torch.float64, f"parameter {name} should stay float64, got {a.dtype}"
        # float64 rounding differences between operation orders stay near 1e-16 per step; a float32
        # detour (a buffer in the default dtype) shows at 1e-8.
        assert_close(
            a,
            b,
            rtol=1e-10,
            atol=1e-12,
            what=f"MomentumSGD({settings}) vs torch.optim.SGD in float64 after 5 steps, parameter {name}",
            likely_cause="a float32 detour: the buffer (or a temporary) was created in the default dtype "
            "(torch.zeros(p.shape), torch.tensor(...)) instead of following the parameter's dtype",
        )
