"""Grader for k16_exact_resume: clean_state_dict, rng_state / set_rng_state, train_steps, save_checkpoint
and load_checkpoint.

Oracles: for clean_state_dict, hand-written expected keys (nested wrappers, a submodule called `module`)
and the state dict of a real wrapped module; for the RNG snapshot, the generators' own `getstate` /
`get_state` and the values they draw, after a `torch.save` / `torch.load(weights_only=True)` round trip;
for train_steps, a reference loop written here from the contract (torch's optimizers, GradScaler,
`clip_grad_norm_` and schedulers), the permutations drawn from a copy of the run's generator, and one big
batch for accumulation; for resuming, the same run trained without stopping.

Tolerances: the reference loop and the big batch are compared at rtol 1e-5 / atol 1e-6 (the same update
computed in another operation order differs by a few float32 ulps per step). Everything about resuming is
compared EXACTLY (`torch.equal`, `==`): the same operations on the same state give the same bits on a CPU,
so any difference means some state was lost.

The runs are tiny (a 5-16-3 MLP with dropout, 22 rows, micro-batches of 4, 3 per step) and the resume tests
use a GradScaler at an absurd scale (2**120, doubling every step) on targets scaled by 30, so that its
overflow checks skip some steps: its state then decides which updates happen, even in float32 on a CPU.

What only a GPU can check: CUDA's generators in the RNG snapshot, a resume on CUDA (dropout draws from the
CUDA generator) loaded with `map_location="cuda"` (the generators must still get CPU state tensors), and a
GPU checkpoint loaded on the CPU with `map_location="cpu"`. Those carry the `cuda` marker.
"""

from __future__ import annotations

import copy
import io
import pickle
import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from kata_harness import load_kata
from kata_harness.testing import assert_same_parameters, explain_crash

kata = load_kata("k16_exact_resume")

N_ROWS, MICRO, ACCUM = (
    22,
    4,
    3,
)  # 5 micro-batches per epoch (2 rows left out), 3 per step: steps straddle epochs


# ---------------------------------------------------------------- runs


@dataclass
class _Run:
    """A run as the kata describes it."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    x: torch.Tensor
    y: torch.Tensor
    generator: torch.Generator
    micro_batch_size: int
    accum_steps: int
    max_norm: float | None
    step: int = 0
    order: torch.Tensor | None = None


class _Net(nn.Module):
    def __init__(self, dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class _DataParallelLike(nn.Module):
    """Holds the model as `.module`, as DistributedDataParallel does: every key gains `module.`."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.module = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


class _CompiledLike(nn.Module):
    """Holds the model as `._orig_mod`, as torch.compile's OptimizedModule does: keys gain `_orig_mod.`."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self._orig_mod = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._orig_mod(x)


def _make_run(
    *,
    init_seed: int = 0,
    optimizer: str = "adamw",
    dropout: float = 0.25,
    micro: int = MICRO,
    accum: int = ACCUM,
    max_norm: float | None = 0.5,
    n_rows: int = N_ROWS,
    init_scale: float = 2.0**120,
    growth_interval: int = 1,
    target_scale: float = 30.0,
    wrap: Callable[[nn.Module], nn.Module] | None = None,
    device: str = "cpu",
) -> _Run:
    """A fresh run; `init_seed` picks the initial weights. Builds without touching the global RNGs."""
    data = torch.Generator().manual_seed(123)
    x = torch.randn(n_rows, 5, generator=data)
    x[:, 0] = torch.arange(n_rows, dtype=torch.float32)  # column 0 names the row: the data order is visible
    y = torch.randn(n_rows, 3, generator=data) * target_scale
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        model: nn.Module = _Net(dropout)
    if wrap is not None:
        model = wrap(model)
    model.to(device)
    if optimizer == "adamw":
        opt: torch.optim.Optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    elif optimizer == "sgd_momentum":
        opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
    scheduler = torch.optim.lr_scheduler.SequentialLR(
        opt,
        [
            torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=3),
            torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10, eta_min=1e-3),
        ],
        milestones=[3],
    )
    scaler = torch.amp.GradScaler(device, init_scale=init_scale, growth_interval=growth_interval)
    return _Run(
        model=model,
        optimizer=opt,
        scheduler=scheduler,
        scaler=scaler,
        x=x.to(device),
        y=y.to(device),
        generator=torch.Generator().manual_seed(7),
        micro_batch_size=micro,
        accum_steps=accum,
        max_norm=max_norm,
    )


# An ordinary scaler, which never skips here: for the reference-loop tests that compare at a tolerance.
CALM = {"init_scale": 2.0**16, "growth_interval": 2, "target_scale": 1.0}


def _reference_steps(run: _Run, n_steps: int) -> list[float]:
    """The contract's loop, written out independently."""
    n_rows, b, k = run.x.shape[0], run.micro_batch_size, run.accum_steps
    per_epoch = n_rows // b
    losses = []
    run.model.train()
    for _ in range(n_steps):
        for p in run.model.parameters():
            p.grad = None
        micro_losses = []
        for i in range(k):
            j = run.step * k + i
            if j % per_epoch == 0:
                run.order = torch.randperm(n_rows, generator=run.generator)
            rows = run.order[(j % per_epoch) * b : (j % per_epoch + 1) * b]
            loss = ((run.model(run.x[rows]) - run.y[rows]) ** 2).mean()
            run.scaler.scale(loss / k).backward()
            micro_losses.append(loss.item())
        run.scaler.unscale_(run.optimizer)
        if run.max_norm is not None:
            torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.max_norm)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        run.step += 1
        losses.append(sum(micro_losses) / k)
    return losses


def _assert_equal_params(actual: _Run, expected: _Run, what: str, likely_cause: str) -> None:
    for (name, a), b in zip(actual.model.named_parameters(), expected.model.parameters(), strict=True):
        if not torch.equal(a.detach().cpu(), b.detach().cpu()):
            diff = (a.detach().cpu() - b.detach().cpu()).abs().max().item()
            raise AssertionError(
                f"{what}: parameter {name!r} is not bit-identical to the uninterrupted run's (largest "
                f"difference {diff:.3g}); likely cause: {likely_cause}"
            )


# ---------------------------------------------------------------- global generators, the test's own way


def _global_states() -> tuple[torch.Tensor, Any, Any]:
    return torch.get_rng_state(), random.getstate(), np.random.get_state()


def _restore_global_states(states: tuple[torch.Tensor, Any, Any]) -> None:
    torch.set_rng_state(states[0])
    random.setstate(states[1])
    np.random.set_state(states[2])


def _draws() -> dict[str, Any]:
    """One value from each generator; the gaussians come first, so a cached second normal is used."""
    return {
        "random.gauss": random.gauss(0.0, 1.0),
        "random.random": random.random(),
        "np.random.standard_normal": float(np.random.standard_normal()),
        "np.random.rand": float(np.random.rand()),
        "torch.rand": torch.rand(3).tolist(),
    }


def _cache_gaussians() -> None:
    """Leave a cached second normal in both random.gauss and numpy's legacy generator."""
    random.gauss(0.0, 1.0)
    np.random.standard_normal()


def _disturb_globals() -> None:
    """A new process: its generators are anywhere."""
    torch.manual_seed(2024)
    random.seed(2024)
    np.random.seed(2024)
    random.gauss(0.0, 1.0)
    np.random.standard_normal()
    torch.rand(11)


DRAW_CAUSES = {
    "torch.rand": "torch's CPU generator was not restored (torch.set_rng_state from the checkpoint)",
    "random.random": "Python's random module was not restored (random.setstate)",
    "random.gauss": "random.gauss keeps a cached second normal (the third item of random.getstate()): "
    "restore the whole tuple, not only its integers",
    "np.random.rand": "numpy's global generator was not restored (np.random.set_state)",
    "np.random.standard_normal": "numpy's legacy generator caches a second normal: restore has_gauss and "
    "cached_gaussian (the 4th and 5th items of np.random.get_state()) too",
}


def _assert_same_draws(got: dict[str, Any], expected: dict[str, Any], when: str) -> None:
    for name in (
        "torch.rand",
        "random.random",
        "random.gauss",
        "np.random.rand",
        "np.random.standard_normal",
    ):
        assert got[name] == expected[name], (
            f"{when}, {name}() drew {got[name]!r}; expected {expected[name]!r} (what it drew when the "
            f"snapshot was taken); likely cause: {DRAW_CAUSES[name]}"
        )


# ---------------------------------------------------------------- clean_state_dict


def _tensors(*keys: str) -> OrderedDict[str, torch.Tensor]:
    return OrderedDict((key, torch.full((2,), float(i))) for i, key in enumerate(keys))


def test_clean_state_dict_strips_ddp_prefix_keeping_tensors_and_order() -> None:
    sd = _tensors("module.body.0.weight", "module.body.0.bias", "module.body.3.weight")
    before = list(sd.items())
    got = kata.clean_state_dict(sd)
    assert list(got) == ["body.0.weight", "body.0.bias", "body.3.weight"], (
        f"a DDP state dict (every key starts with 'module.') should lose that prefix, keys in order; got "
        f"{list(got)}"
    )
    assert all(a is b for a, (_, b) in zip(got.values(), before, strict=True)), (
        "clean_state_dict should return the very tensor objects of the input (no copies: a checkpoint's "
        "tensors can be gigabytes); likely cause: .clone() or copy.deepcopy"
    )
    assert got is not sd and list(sd.items()) == before, (
        "clean_state_dict should return a new dict and leave the input as it was (keys and values); likely "
        "cause: keys renamed in place (pop / assign) on the caller's dict"
    )


@pytest.mark.parametrize(
    "keys, expected",
    [
        (["_orig_mod.body.0.weight", "_orig_mod.body.3.bias"], ["body.0.weight", "body.3.bias"]),
        (["module._orig_mod.body.0.weight", "module._orig_mod.w"], ["body.0.weight", "w"]),
        (["_orig_mod.module.body.0.weight", "_orig_mod.module.w"], ["body.0.weight", "w"]),
        (["module.module.w", "module.module.b"], ["w", "b"]),
    ],
    ids=["compile", "ddp_of_compiled", "compiled_ddp", "ddp_twice"],
)
def test_clean_state_dict_strips_nested_wrappers(keys: list[str], expected: list[str]) -> None:
    got = list(kata.clean_state_dict(_tensors(*keys)))
    assert got == expected, (
        f"clean_state_dict({keys}) should strip every wrapper prefix every key shares, nested ones "
        f"included, giving {expected}; got {got}; likely cause: only one prefix, or only one pass, stripped"
    )


def test_clean_state_dict_keeps_prefix_text_inside_keys() -> None:
    keys = ["module.encoder.module.weight", "module.head._orig_mod.bias", "module.head.module_scale"]
    expected = ["encoder.module.weight", "head._orig_mod.bias", "head.module_scale"]
    got = list(kata.clean_state_dict(_tensors(*keys)))
    assert got == expected, (
        f"only the START of each key is a wrapper prefix: {keys} should become {expected}; got {got}; likely "
        f"cause: key.replace('module.', '') also removes a submodule that is called `module`; use "
        f"key.removeprefix(...)"
    )


@pytest.mark.parametrize(
    "keys",
    [
        ["module.weight", "head.weight"],  # an unwrapped model with a child called `module`
        ["module.w", "_orig_mod.w"],  # no prefix that EVERY key shares
        ["body.0.weight", "body.0.bias"],
        [],
    ],
    ids=["child_called_module", "mixed", "plain", "empty"],
)
def test_clean_state_dict_leaves_unwrapped_keys(keys: list[str]) -> None:
    got = list(kata.clean_state_dict(_tensors(*keys)))
    assert got == keys, (
        f"a state dict whose keys do not ALL share a wrapper prefix is not wrapped: {keys} should stay as "
        f"it is; got {got}; likely cause: a prefix stripped from the keys that have it rather than only "
        f"when every key has it"
    )


def test_clean_state_dict_loads_a_wrapped_models_weights_strictly() -> None:
    inner = _Net(0.0)
    wrapped = _DataParallelLike(_CompiledLike(inner))
    target = _Net(0.0)
    target.load_state_dict(
        explain_crash(
            lambda: kata.clean_state_dict(wrapped.state_dict()),
            "clean_state_dict(a real module's state_dict())",
            "the state dict is an OrderedDict with a _metadata attribute; iterate its items",
        )
    )
    for (name, a), b in zip(target.named_parameters(), inner.parameters(), strict=True):
        assert torch.equal(a, b), f"parameter {name} did not load from the cleaned state dict"


# ---------------------------------------------------------------- rng_state / set_rng_state


def _round_trip(obj: Any) -> Any:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _numpy_inside(obj: Any, where: str = "snapshot") -> list[str]:
    if isinstance(obj, np.ndarray | np.generic):
        return [f"{where} ({type(obj).__name__})"]
    if isinstance(obj, dict):
        return [hit for key, value in obj.items() for hit in _numpy_inside(value, f"{where}[{key!r}]")]
    if isinstance(obj, list | tuple):
        return [hit for i, value in enumerate(obj) for hit in _numpy_inside(value, f"{where}[{i}]")]
    return []


def test_rng_state_survives_weights_only_round_trip() -> None:
    _cache_gaussians()
    snapshot = kata.rng_state()
    numpy_values = _numpy_inside(snapshot)
    assert not numpy_values, (
        f"rng_state() should hold only tensors and plain Python values; found numpy objects at "
        f"{numpy_values}; likely cause: np.random.get_state() kept as it is: convert its array to a tensor "
        f"(or a list) and its numbers to int / float"
    )
    loaded = explain_crash(
        lambda: _round_trip(snapshot),
        "torch.load(..., weights_only=True) of torch.save(rng_state())",
        "a value weights_only refuses (a numpy array or scalar, a custom object): keep tensors, ints, "
        "floats, strings, None, tuples, lists and dicts",
    )
    expected = _draws()
    _disturb_globals()
    explain_crash(
        lambda: kata.set_rng_state(loaded),
        "set_rng_state(a snapshot after torch.save / torch.load(weights_only=True))",
        "the snapshot changed form on the round trip: rebuild numpy's state tuple (its key as a uint32 "
        "array) from what you saved",
    )
    _assert_same_draws(_draws(), expected, "after set_rng_state of a saved and reloaded snapshot")


def test_rng_state_draws_nothing() -> None:
    _cache_gaussians()
    before = _global_states()
    kata.rng_state()
    after = _global_states()
    assert torch.equal(before[0], after[0]), (
        "rng_state() advanced torch's CPU generator; taking a snapshot must draw nothing "
        "(torch.get_rng_state)"
    )
    assert before[1] == after[1], "rng_state() advanced Python's random module; it must draw nothing"
    assert all(np.array_equal(a, b) for a, b in zip(before[2], after[2], strict=True)), (
        "rng_state() advanced numpy's global generator; it must draw nothing"
    )


def test_set_rng_state_restores_a_snapshot_many_times() -> None:
    _cache_gaussians()
    snapshot = kata.rng_state()
    expected = _draws()
    for attempt in (1, 2):
        _disturb_globals()
        _draws()  # later draws must not reach the snapshot: it is a copy
        kata.set_rng_state(snapshot)
        _assert_same_draws(
            _draws(),
            expected,
            f"after set_rng_state(snapshot), restore number {attempt} of the same snapshot",
        )


@pytest.mark.cuda
def test_rng_state_covers_every_cuda_device() -> None:
    snapshot = kata.rng_state()
    expected = [torch.rand(4, device=f"cuda:{i}").tolist() for i in range(torch.cuda.device_count())]
    loaded = _round_trip(snapshot)
    for i in range(torch.cuda.device_count()):
        torch.cuda.manual_seed_all(99)
        torch.rand(5, device=f"cuda:{i}")
    kata.set_rng_state(loaded)
    got = [torch.rand(4, device=f"cuda:{i}").tolist() for i in range(torch.cuda.device_count())]
    assert got == expected, (
        f"after set_rng_state, the CUDA generators drew {got}; expected {expected}; likely cause: CUDA's "
        f"generators left out of the snapshot (torch.cuda.get_rng_state_all / set_rng_state_all)"
    )


# ---------------------------------------------------------------- train_steps


def test_train_steps_matches_reference_loop() -> None:
    run, reference = (
        _make_run(optimizer="sgd_momentum", max_norm=None, **CALM),
        _make_run(optimizer="sgd_momentum", max_norm=None, **CALM),
    )
    torch.manual_seed(5)
    losses = kata.train_steps(run, 4)
    torch.manual_seed(5)
    expected = _reference_steps(reference, 4)
    assert_same_parameters(
        run.model,
        reference.model,
        "parameters after train_steps(run, 4) with SGD(momentum=0.9), 3 micro-batches of 4 rows per step",
        "each micro-batch's loss is its mean squared error divided by accum_steps (so the step's gradient is "
        "the big batch's), the data follows the contract's permutations, and dropout draws from torch's "
        "global generator in the model's forward only",
    )
    assert isinstance(losses, list) and all(type(v) is float for v in losses), (
        f"train_steps should return a list of Python floats, got {losses!r}"
    )
    assert losses == pytest.approx(expected, rel=1e-5), (
        f"train_steps should return each step's big-batch loss (the mean of its micro-batch losses, "
        f"unscaled) {expected}; got {losses}; likely cause: the scaled loss, the loss divided by "
        "accum_steps, or a sum over micro-batches"
    )


def test_train_steps_accumulation_equals_one_big_batch() -> None:
    # 24 rows: 6 micro-batches of 4 or 2 batches of 12 per epoch, drawn from the same permutations.
    small = _make_run(optimizer="sgd", dropout=0.0, n_rows=24, micro=4, accum=3, max_norm=None, **CALM)
    big = _make_run(optimizer="sgd", dropout=0.0, n_rows=24, micro=12, accum=1, max_norm=None, **CALM)
    small_losses = kata.train_steps(small, 4)
    big_losses = kata.train_steps(big, 4)
    assert_same_parameters(
        small.model,
        big.model,
        "parameters after 4 steps of 3 accumulated micro-batches of 4 rows vs 4 steps of one 12-row batch",
        "gradient accumulation must give the big batch's gradient: divide each micro-batch's mean loss by "
        "accum_steps (not by the rows, not at all), and step once per accum_steps micro-batches",
    )
    assert small_losses == pytest.approx(big_losses, rel=1e-5), (
        f"the losses of accumulated steps should be the big batch's, {big_losses}; got {small_losses}"
    )


def test_train_steps_clips_the_unscaled_gradient() -> None:
    settings = {"optimizer": "sgd", "max_norm": 0.05, "init_scale": 2.0**16, "growth_interval": 2}
    run, reference = _make_run(**settings), _make_run(**settings)
    torch.manual_seed(6)
    kata.train_steps(run, 3)
    torch.manual_seed(6)
    _reference_steps(reference, 3)
    assert_same_parameters(
        run.model,
        reference.model,
        "parameters after 3 steps with max_norm=0.05 and a GradScaler at 2**16",
        "clip the TRUE gradient: scaler.unscale_(optimizer) first, then clip_grad_norm_(..., max_norm) "
        "over all the parameters at once, once per step (after the last micro-batch's backward); clipping "
        "the scaled gradient shrinks it 65536 times too much",
    )


def test_train_steps_skips_overflowing_steps_with_the_scaler() -> None:
    # A scale of 2**120, doubling after every clean step: steps 3, 4 and 6 overflow and are skipped.
    run, reference = _make_run(), _make_run()
    torch.manual_seed(7)
    explain_crash(
        lambda: kata.train_steps(run, 8),
        "train_steps(run, 8) with a GradScaler whose scaled gradients overflow on some steps",
        "inf/nan gradients reached code that cannot take them; let scaler.step(optimizer) decide",
    )
    torch.manual_seed(7)
    updates: list[int] = []
    reference.optimizer.register_step_post_hook(lambda optimizer, args, kwargs: updates.append(1))
    _reference_steps(reference, 8)
    assert len(updates) == 5, f"grader set-up: the reference should skip 3 of 8 steps, it made {len(updates)}"
    assert all(torch.isfinite(p).all() for p in run.model.parameters()), (
        "after 8 steps whose gradients overflowed twice, some parameters are inf or nan; likely cause: "
        "optimizer.step() called directly: scaler.step(optimizer) skips the update when a gradient is inf/nan"
    )
    assert run.scaler.get_scale() == reference.scaler.get_scale(), (
        f"the scaler's scale should be {reference.scaler.get_scale()} after these 8 steps, got "
        f"{run.scaler.get_scale()}; likely cause: scaler.update() not called once per step"
    )
    assert_same_parameters(
        run.model,
        reference.model,
        "parameters after 8 steps with a GradScaler that overflows on some steps",
        "scale the loss with run.scaler, unscale_ before clipping, scaler.step(optimizer), scaler.update(), "
        "then scheduler.step() every step, skipped or not",
    )


def test_train_steps_ignores_gradients_left_before_the_call() -> None:
    run, reference = (
        _make_run(optimizer="sgd", max_norm=None, **CALM),
        _make_run(optimizer="sgd", max_norm=None, **CALM),
    )
    for p in run.model.parameters():
        p.grad = torch.full_like(p, 3.0)  # left by some earlier code
    torch.manual_seed(8)
    kata.train_steps(run, 2)
    torch.manual_seed(8)
    _reference_steps(reference, 2)
    assert_same_parameters(
        run.model,
        reference.model,
        "parameters after train_steps(run, 2), starting with stale gradients on the parameters",
        "gradients already on the parameters reached the first update: clear them (optimizer.zero_grad()) "
        "at the START of each step, before the first backward",
    )


def _expected_stream(
    generator: torch.Generator, micro_batches: int, n_rows: int = N_ROWS
) -> tuple[list[list[int]], torch.Tensor, torch.Tensor]:
    """The rows of each micro-batch, the last permutation and the generator state after them."""
    g = torch.Generator()
    g.set_state(generator.get_state())
    per_epoch = n_rows // MICRO
    rows, order = [], torch.empty(0)
    for j in range(micro_batches):
        if j % per_epoch == 0:
            order = torch.randperm(n_rows, generator=g)
        rows.append(order[(j % per_epoch) * MICRO : (j % per_epoch + 1) * MICRO].tolist())
    return rows, order, g.get_state()


def test_train_steps_data_order_continues_across_calls() -> None:
    run = _make_run(**CALM)
    expected_rows, expected_order, expected_state = _expected_stream(run.generator, 5 * ACCUM)
    seen: list[list[int]] = []
    run.model.register_forward_pre_hook(lambda module, args: seen.append(args[0][:, 0].long().tolist()))
    for n in (2, 0, 3):
        kata.train_steps(run, n)
    assert seen == expected_rows, (
        f"train_steps(run, 2), (run, 0), then (run, 3) should feed the model these micro-batches (row "
        f"numbers) {expected_rows}; got {seen}; likely cause: the position in the epoch counted from the "
        f"start of each call instead of from run.step (the epoch restarts), a new permutation drawn per call "
        f"or per step, or micro-batches not cut as order[p * b:(p + 1) * b]"
    )
    assert type(run.step) is int and run.step == 5, (
        f"run.step should be the int 5 after 5 steps, got {run.step!r}"
    )
    assert run.order is not None and torch.equal(run.order, expected_order), (
        f"run.order should hold the permutation of the epoch in progress, {expected_order.tolist()}; got "
        f"{None if run.order is None else run.order.tolist()}"
    )
    assert torch.equal(run.generator.get_state(), expected_state), (
        "run.generator is not where the contract puts it after 15 micro-batches (3 permutations drawn); "
        "likely cause: the next epoch's permutation drawn before its first micro-batch is needed, or other "
        "draws from run.generator"
    )


def test_train_steps_in_pieces_is_bit_identical_to_one_call() -> None:
    whole, pieces = _make_run(), _make_run()
    torch.manual_seed(9)
    whole_losses = kata.train_steps(whole, 7)
    torch.manual_seed(9)
    piece_losses = kata.train_steps(pieces, 3) + kata.train_steps(pieces, 0) + kata.train_steps(pieces, 4)
    _assert_equal_params(
        pieces,
        whole,
        "train_steps(run, 3) then (run, 4) vs train_steps(run, 7)",
        "train_steps keeps state outside the run (a position or permutation of its own that restarts with "
        "each call), or run.step is off by one",
    )
    assert piece_losses == whole_losses, (
        f"the losses should be the same in pieces, {whole_losses}; got {piece_losses}"
    )


def test_train_steps_forward_backward_order_and_train_mode() -> None:
    run = _make_run(**CALM)
    run.model.eval()  # left in eval mode by some evaluation
    events: list[str] = []
    run.model.register_forward_pre_hook(
        lambda module, args: events.append("forward" if module.training else "eval")
    )

    def on_output(module: nn.Module, args: Any, out: torch.Tensor) -> None:
        out.register_hook(lambda grad: events.append("backward"))

    run.model.register_forward_hook(on_output)
    run.optimizer.register_step_post_hook(lambda optimizer, args, kwargs: events.append("step"))
    kata.train_steps(run, 2)
    expected = (["forward", "backward"] * ACCUM + ["step"]) * 2
    assert events == expected, (
        f"two steps of {ACCUM} micro-batches should run {expected}; got {events}; likely cause: the model "
        "left in eval mode (call run.model.train(): dropout is part of training), all the micro-batch losses "
        f"summed before one backward (every graph alive at once), or the model run on the whole batch"
    )


def test_train_steps_lr_follows_scheduler_and_on_step_sees_complete_steps() -> None:
    run, reference = _make_run(**CALM), _make_run(**CALM)
    used: list[float] = []
    run.optimizer.register_step_pre_hook(lambda opt, args, kwargs: used.append(opt.param_groups[0]["lr"]))
    expected_used = []
    for _ in range(5):
        expected_used.append(reference.optimizer.param_groups[0]["lr"])
        reference.optimizer.step()
        reference.scheduler.step()
    seen: list[tuple[int, int]] = []
    kata.train_steps(run, 5, on_step=lambda r: seen.append((r.step, r.scheduler.last_epoch)))
    assert used == pytest.approx(expected_used, rel=1e-12), (
        f"the 5 optimizer steps should use the learning rates {expected_used} (warm-up, then cosine); "
        f"they used {used}; likely cause: scheduler.step() called per micro-batch, before "
        f"optimizer.step(), or not at all"
    )
    expected_seen = [(s, s) for s in range(1, 6)]
    assert seen == expected_seen, (
        f"on_step should be called once per step, after the step is complete: (run.step, "
        f"scheduler.last_epoch) should be {expected_seen}; got {seen}; likely cause: on_step called before "
        f"scheduler.step() or before run.step += 1 (a checkpoint saved there is one step behind the weights)"
    )


def test_train_steps_draws_only_dropout_and_data_order() -> None:
    run = _make_run(dropout=0.0, **CALM)
    _cache_gaussians()
    before = _global_states()
    kata.train_steps(run, 3)
    after = _global_states()
    assert torch.equal(before[0], after[0]), (
        "with a model without dropout, train_steps advanced torch's global generator; the data order must "
        "come from run.generator alone (torch.randperm(N, generator=run.generator))"
    )
    assert before[1] == after[1] and all(
        np.array_equal(a, b) for a, b in zip(before[2], after[2], strict=True)
    ), "train_steps drew from Python's random or numpy; it must draw from run.generator and dropout only"


def test_train_steps_zero_steps_and_negative() -> None:
    run = _make_run()
    before = [p.detach().clone() for p in run.model.parameters()]
    state = run.generator.get_state()
    assert kata.train_steps(run, 0) == [], "train_steps(run, 0) should return []"
    assert run.step == 0 and run.order is None and torch.equal(run.generator.get_state(), state), (
        "train_steps(run, 0) should change nothing: run.step, run.order and the generator as they were"
    )
    assert all(torch.equal(p, q) for p, q in zip(run.model.parameters(), before, strict=True)), (
        "train_steps(run, 0) changed the parameters"
    )
    with pytest.raises(ValueError):
        kata.train_steps(run, -1)


# ---------------------------------------------------------------- save_checkpoint / load_checkpoint


@dataclass
class _Resumed:
    """One interrupted run and its uninterrupted twin."""

    saved: _Run  # trained on without stopping after the save
    resumed: _Run  # a fresh run, loaded from the file, trained on
    expected_losses: list[float]
    resumed_losses: list[float]
    at_save: dict[str, Any]  # the saved run's state right after the save
    at_load: dict[str, Any]  # the fresh run's state right after the load
    expected_draws: dict[str, Any]  # what the generators drew right after the save
    loaded_draws: dict[str, Any]  # what they drew right after the load


def _run_state(run: _Run) -> dict[str, Any]:
    return {
        "optimizer": copy.deepcopy(run.optimizer.state_dict()),
        "lr": [group["lr"] for group in run.optimizer.param_groups],
        "last_epoch": run.scheduler.last_epoch,
        "last_lr": list(run.scheduler.get_last_lr()),
        "scaler": run.scaler.state_dict(),
        "step": run.step,
        "order": None if run.order is None else run.order.clone(),
        "generator": run.generator.get_state(),
    }


def _interrupt(
    tmp_path: Path, n: int = 4, m: int = 5, wrap_saved=None, map_location=None, **settings
) -> _Resumed:
    """Train n steps, save, train m more; then, with disturbed generators, a fresh run loads and trains m."""
    path = tmp_path / "run.pt"
    torch.manual_seed(11)
    saved = _make_run(wrap=wrap_saved, **settings)
    kata.train_steps(saved, n)
    _cache_gaussians()
    kata.save_checkpoint(path, saved)
    at_save = _run_state(saved)
    states = _global_states()
    expected_draws = _draws()
    _restore_global_states(states)
    expected_losses = kata.train_steps(saved, m)

    _disturb_globals()
    resumed = _make_run(init_seed=1, **settings)
    explain_crash(
        lambda: kata.load_checkpoint(path, resumed, map_location=map_location),
        "load_checkpoint into a freshly built run",
        "a state that was not saved, or loaded into the wrong object",
    )
    states = _global_states()
    loaded_draws = _draws()
    _restore_global_states(states)
    at_load = _run_state(resumed)
    resumed_losses = explain_crash(
        lambda: kata.train_steps(resumed, m),
        "train_steps on the loaded run",
        "run.order (the epoch's permutation) or run.step not restored",
    )
    return _Resumed(
        saved, resumed, expected_losses, resumed_losses, at_save, at_load, expected_draws, loaded_draws
    )


def test_checkpoint_loads_with_weights_only(tmp_path: Path) -> None:
    run = _make_run()
    kata.train_steps(run, 2)
    kata.save_checkpoint(tmp_path / "run.pt", run)
    loaded = explain_crash(
        lambda: torch.load(tmp_path / "run.pt", weights_only=True),
        "torch.load(checkpoint, weights_only=True)",
        "the checkpoint holds a value the weights-only unpickler refuses: numpy's RNG state as it is (an "
        "array), a generator object instead of its get_state(), a module or an optimizer object instead of "
        "its state_dict()",
    )
    numpy_values = _numpy_inside(loaded, "checkpoint")
    assert not numpy_values, (
        f"the checkpoint holds numpy objects at {numpy_values}; keep tensors and plain values"
    )


def test_resume_is_bit_identical(tmp_path: Path) -> None:
    r = _interrupt(tmp_path)
    _assert_equal_params(
        r.resumed,
        r.saved,
        "4 steps, save, a fresh run in a disturbed process loads and trains 5 steps, vs 9 steps without "
        "stopping",
        "some state was not saved or not restored: the optimizer's (Adam's moments), the scheduler's, the "
        "scaler's, the global RNGs (dropout masks), run.step, run.order or run.generator's state",
    )
    assert r.resumed_losses == r.expected_losses, (
        f"the resumed run's losses should be the uninterrupted run's, {r.expected_losses}; got "
        f"{r.resumed_losses}"
    )


def test_resume_restores_optimizer_state(tmp_path: Path) -> None:
    r = _interrupt(tmp_path)
    expected, got = r.at_save["optimizer"]["state"], r.at_load["optimizer"]["state"]
    assert sorted(got) == sorted(expected), (
        f"after loading, the optimizer holds state for parameters {sorted(got)}; expected "
        f"{sorted(expected)}; likely cause: optimizer.load_state_dict not called: AdamW starts its moments "
        f"and bias correction over"
    )
    for index, state in expected.items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(got[index][key]), torch.as_tensor(value)), (
                f"after loading, the optimizer's state[{index}][{key!r}] differs from the saved run's; "
                "likely cause: the optimizer state not saved or not restored (optimizer.state_dict() / "
                "load_state_dict)"
            )


def test_resume_restores_scheduler_and_learning_rate(tmp_path: Path) -> None:
    r = _interrupt(tmp_path)
    got = r.at_load
    assert got["last_epoch"] == r.at_save["last_epoch"] and got["lr"] == r.at_save["lr"], (
        f"after loading, scheduler.last_epoch is {got['last_epoch']} and the lr {got['lr']}; the saved run "
        f"had {r.at_save['last_epoch']} and {r.at_save['lr']}; likely cause: the scheduler's state_dict not "
        "saved or "
        f"not loaded (the warm-up restarts), or the optimizer's param groups (their lr) not restored"
    )
    assert got["last_lr"] == r.at_save["last_lr"], (
        f"after loading, scheduler.get_last_lr() is {got['last_lr']}; expected {r.at_save['last_lr']}"
    )


def test_resume_restores_grad_scaler(tmp_path: Path) -> None:
    r = _interrupt(tmp_path)
    got = r.at_load["scaler"]
    assert got == r.at_save["scaler"], (
        f"after loading, the GradScaler's state is {got}; the saved run's was {r.at_save['scaler']}; likely "
        f"cause: scaler.state_dict() not saved or scaler.load_state_dict not called: a fresh scaler starts "
        f"again at its initial scale, and here that changes which steps overflow and are skipped"
    )


def test_resume_restores_step_and_data_position(tmp_path: Path) -> None:
    r = _interrupt(tmp_path)
    got, expected = r.at_load, r.at_save
    assert type(got["step"]) is int and got["step"] == expected["step"], (
        f"after loading, run.step is {got['step']!r}; expected the int {expected['step']}; likely cause: the "
        f"step counter not saved, or saved as a tensor"
    )
    assert (
        got["order"] is not None and got["order"].dtype == torch.int64 and got["order"].device.type == "cpu"
    ), (
        f"after loading, run.order should be the saved int64 CPU permutation; got {got['order']!r}; likely "
        f"cause: the epoch's permutation not saved, so the resumed run cannot continue the epoch"
    )
    assert torch.equal(got["order"], expected["order"]), (
        f"after loading, run.order is {got['order'].tolist()}; expected {expected['order'].tolist()}"
    )
    assert torch.equal(got["generator"], expected["generator"]), (
        "after loading, run.generator's state differs from the saved run's; likely cause: "
        "run.generator.get_state() not saved or set_state not called: the next epoch is shuffled differently"
    )


def test_resume_restores_global_generators(tmp_path: Path) -> None:
    r = _interrupt(tmp_path)
    _assert_same_draws(r.loaded_draws, r.expected_draws, "right after load_checkpoint in a disturbed process")


def test_resume_loads_in_place(tmp_path: Path) -> None:
    settings: dict[str, Any] = {}
    fresh = _make_run(init_seed=1, **settings)
    objects = (fresh.model, fresh.optimizer, fresh.scheduler, fresh.scaler, fresh.generator)
    saved = _make_run(**settings)
    kata.train_steps(saved, 2)
    kata.save_checkpoint(tmp_path / "run.pt", saved)
    kata.load_checkpoint(tmp_path / "run.pt", fresh)
    now = (fresh.model, fresh.optimizer, fresh.scheduler, fresh.scaler, fresh.generator)
    names = ("model", "optimizer", "scheduler", "scaler", "generator")
    replaced = [name for name, a, b in zip(names, objects, now, strict=True) if a is not b]
    assert not replaced, f"load_checkpoint replaced run.{replaced}; it should load into the run's own objects"
    owned = {id(p) for p in fresh.model.parameters()}
    optimized = [id(p) for group in fresh.optimizer.param_groups for p in group["params"]]
    assert set(optimized) == owned, (
        "after load_checkpoint the optimizer no longer updates run.model's own parameters; likely cause: the "
        "parameters replaced (setattr / new Parameters) instead of loaded with load_state_dict"
    )


# The fresh run's first cosine step can follow a step the scaler skipped; torch then warns, harmlessly.
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_resume_from_a_checkpoint_saved_in_on_step(tmp_path: Path) -> None:
    torch.manual_seed(12)
    whole = _make_run()
    path = tmp_path / "step3.pt"
    whole_losses = kata.train_steps(
        whole, 7, on_step=lambda r: kata.save_checkpoint(path, r) if r.step == 3 else None
    )
    _disturb_globals()
    resumed = _make_run(init_seed=1)
    kata.load_checkpoint(path, resumed)
    assert resumed.step == 3, (
        f"a checkpoint saved by on_step when run.step == 3 should load with run.step 3, got {resumed.step!r}"
    )
    losses = kata.train_steps(resumed, 4)
    _assert_equal_params(
        resumed,
        whole,
        "a checkpoint saved in on_step after step 3 of a 7-step call, loaded and trained 4 steps, vs the 7 "
        "steps",
        "on_step called before the step was complete (before scaler.update(), scheduler.step() or run.step "
        "+= 1): "
        "the checkpoint's counter or scheduler is one step behind its weights",
    )
    assert losses == whole_losses[3:], f"the resumed losses should be {whole_losses[3:]}; got {losses}"


def test_load_checkpoint_from_wrapped_model(tmp_path: Path) -> None:
    r = explain_crash(
        lambda: _interrupt(tmp_path, wrap_saved=lambda net: _DataParallelLike(_CompiledLike(net))),
        "loading a checkpoint saved from a DDP(compile(model))-like wrapper into the bare model",
        "the keys start with 'module._orig_mod.': pass the model's state dict through clean_state_dict "
        "before load_state_dict (and keep strict=True: strict=False silently loads nothing)",
    )
    _assert_equal_params(
        r.resumed,
        r.saved,
        "a run saved from a wrapped model, loaded into the bare model and trained on",
        "the wrapped model's weights did not load: strip the wrapper prefixes (clean_state_dict) and load "
        "strictly",
    )


_CANARY_CALLS: list[str] = []


def _canary(note: str) -> str:
    _CANARY_CALLS.append(note)
    return note


class _Payload:
    """An object whose unpickling calls _canary: what a malicious checkpoint does with os.system."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_canary, ("code from the checkpoint ran",))


def test_load_checkpoint_refuses_pickled_code(tmp_path: Path) -> None:
    run = _make_run()
    kata.save_checkpoint(tmp_path / "run.pt", run)
    checkpoint = torch.load(tmp_path / "run.pt", weights_only=True)
    checkpoint["note"] = _Payload()
    torch.save(checkpoint, tmp_path / "evil.pt")
    _CANARY_CALLS.clear()
    with pytest.raises(pickle.UnpicklingError):
        try:
            kata.load_checkpoint(tmp_path / "evil.pt", _make_run(init_seed=1))
        except pickle.UnpicklingError:
            raise
        except NotImplementedError:
            raise
        except Exception as exc:
            raise AssertionError(
                f"loading a checkpoint that holds a pickled object should raise pickle.UnpicklingError (what "
                f"torch.load(..., weights_only=True) raises); got {type(exc).__name__}: {exc}; likely cause: "
                f"weights_only=False"
            ) from exc
    assert not _CANARY_CALLS, (
        "load_checkpoint ran code from the checkpoint file (the object's __reduce__ called a function): "
        "read it "
        "with torch.load(..., weights_only=True); weights_only=False executes whatever the file says"
    )


def test_load_checkpoint_applies_map_location(tmp_path: Path) -> None:
    visited: list[str] = []

    def remap(storage: Any, location: str) -> Any:
        visited.append(location)
        return storage

    r = _interrupt(tmp_path, map_location=remap)
    assert visited, (
        "load_checkpoint(path, run, map_location=f) never called f: pass map_location on to torch.load, "
        "which applies it to every tensor storage in the file"
    )
    _assert_equal_params(r.resumed, r.saved, "a resume loaded with a map_location function", "see above")


# ---------------------------------------------------------------- GPU


@pytest.mark.cuda
def test_resume_on_cuda_with_map_location(tmp_path: Path) -> None:
    r = _interrupt(tmp_path, device="cuda", map_location="cuda")
    _assert_equal_params(
        r.resumed,
        r.saved,
        "a CUDA run resumed from a checkpoint loaded with map_location='cuda'",
        "CUDA's generators (dropout on the GPU) not saved or restored (torch.cuda.get_rng_state_all / "
        "set_rng_state_all), or a state tensor on the wrong device",
    )
    assert r.resumed.order is not None and r.resumed.order.device.type == "cpu", (
        "with map_location='cuda', run.order should still come back as a CPU tensor"
    )


@pytest.mark.cuda
def test_gpu_checkpoint_loads_on_cpu(tmp_path: Path) -> None:
    saved = _make_run(device="cuda")
    kata.train_steps(saved, 2)
    kata.save_checkpoint(tmp_path / "gpu.pt", saved)
    fresh = _make_run(init_seed=1)
    explain_crash(
        lambda: kata.load_checkpoint(tmp_path / "gpu.pt", fresh, map_location="cpu"),
        "load_checkpoint of a GPU run's file into a CPU run with map_location='cpu'",
        "map_location not passed to torch.load",
    )
    for (name, a), b in zip(fresh.model.named_parameters(), saved.model.parameters(), strict=True):
        assert a.device.type == "cpu" and torch.equal(a, b.cpu()), (
            f"parameter {name} did not load onto the CPU"
        )
