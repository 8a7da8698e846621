"""Grader for k18_speed_and_memory: profiler, benchmark, graph breaks, saved activations, checkpointing.

Oracles, never the reference:
- hottest_op: functions built so that one answer wins by a wide margin (a 384x384 matmul among tiny adds,
  hundreds of adds against one small matmul), with traps for total time (`aten::matmul` wraps `aten::mm`)
  and for non-aten events (a `record_function` range around a 40 ms sleep).
- compare: functions that sleep (a sleep never returns early, so lower bounds are exact and the upper
  bounds leave room for a loaded machine), a function whose first calls are slow, a thread-count probe, and
  a simulated accelerator: `torch.accelerator` / `torch.cuda` stand-ins whose "kernels" finish later than
  they are queued, so a clock that does not wait for the device shows on a CPU.
- positive_mean: the given `positive_mean_with_breaks`, run eagerly, and `torch._dynamo.explain` (two calls,
  Dynamo reset around them).
- saved_bytes: what each op saves for backward, worked out by hand from its derivative (relu saves its
  output, sin its input, linear its input and weight, batch_norm its input, batch statistics and running
  buffers), in bytes of float32 storage.
- checkpointed_forward: the same blocks run without checkpointing from the same RNG state (same float32
  kernels in the same order: relative 1e-6), saved tensors seen by this file's own hook, and the order of
  forward and backward passes through a marker at the start of each block.
Only a GPU can check that `compare` waits for real CUDA kernels: that test carries the `cuda` marker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch._dynamo
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from kata_harness import load_kata
from kata_harness.testing import assert_close

kata = load_kata("k18_speed_and_memory")

torch._logging.set_logs(dynamo=logging.ERROR)  # the given function's graph-break warnings are expected
F32 = 4  # bytes per float32 element


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: on a loaded machine, tiny ops on several threads spend milliseconds in barriers,
    which makes profiles noisy and slow. (The threads test of `compare` sets its own count.)"""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _hooks_installed() -> bool:
    return torch._C._autograd._top_saved_tensors_default_hooks(False) is not None


# ------------------------------------------------------------------------------------------------ hottest_op


def _big_matmul_among_small_adds() -> Callable[[], Any]:
    a, b, s = torch.randn(640, 640), torch.randn(640, 640), torch.randn(4)

    def step() -> Any:
        with torch.profiler.record_function("whole_step"):
            time.sleep(0.08)  # 80 ms inside the range but in no aten op: the range's own (self) time
            out = s
            for _ in range(10):
                out = out + s
            c = a @ b  # aten::matmul, which spends its time in aten::mm (~25 ms on one thread)
            for _ in range(10):
                out = out + s
        return c, out

    return step


def test_hottest_op_is_the_op_with_most_self_time() -> None:
    calls: list[None] = []
    step = _big_matmul_among_small_adds()

    def fn(scale: float) -> Any:
        calls.append(None)
        assert scale == 2.0, f"hottest_op should call fn(*args) with the args it was given, got {scale!r}"
        return step()

    got = kata.hottest_op(fn, 2.0)
    assert type(got) is str, f"hottest_op should return the op's name as a str, got {type(got).__name__}"
    causes = {
        "whole_step": "the record_function range was returned: only events whose name starts with 'aten::' "
        "are operators",
        "aten::matmul": "sorted by TOTAL time (cpu_time_total): aten::matmul's total includes the aten::mm "
        "it calls; use self time (self_cpu_time_total)",
        "aten::add": "sorted by the number of calls (count), not by time",
    }
    other = "the wrong column or a wrong name: return the key exactly as key_averages() has it"
    assert got == "aten::mm", (
        f"one call does a 640x640 matmul among 20 tiny adds, inside a record_function range that sleeps "
        f"80 ms: expected 'aten::mm', got {got!r}; likely cause: "
        f"{causes.get(got, other)}"
    )
    assert 1 <= len(calls) <= 2, (
        f"fn should be called once or twice (warm-up allowed), it was called {len(calls)}"
    )


def test_hottest_op_adds_up_all_calls_of_an_op() -> None:
    a, b, y, z = torch.randn(128, 128), torch.randn(128, 128), torch.randn(250_000), torch.randn(250_000)

    def fn() -> None:
        a @ b  # one aten::mm of ~0.3 ms
        for _ in range(400):  # 400 aten::add_ of ~0.1 ms each: about 100 times the mm together
            y.add_(z)

    got = kata.hottest_op(fn)
    assert got == "aten::add_", (
        f"one small matmul and 400 in-place adds of 250,000 elements: the adds together take far more self "
        f"time, expected 'aten::add_', got {got!r}; likely cause: the single longest event was returned "
        f"instead of the sum over all calls of an op (key_averages() groups events by name), or the op with "
        f"the largest total time"
    )


def test_hottest_op_rejects_a_call_without_aten_ops() -> None:
    with pytest.raises(ValueError):
        kata.hottest_op(lambda: sum(range(100)))


# ------------------------------------------------------------------------------------------------ compare


def _sleeper(
    seconds: float, log: list[tuple[str, float]] | None = None, name: str = ""
) -> Callable[[], None]:
    def fn() -> None:
        start = time.perf_counter()
        time.sleep(seconds)
        if log is not None:
            log.append((name, time.perf_counter() - start))

    return fn


def _check_comparison(got: Any) -> None:
    assert isinstance(got, kata.Comparison), (
        f"compare should return a Comparison (the named tuple given in the kata), got {type(got).__name__}"
    )
    for field in ("a", "b", "speedup"):
        value = getattr(got, field)
        assert type(value) is float, (
            f"Comparison.{field} should be a Python float, got {type(value).__name__}"
        )
    assert got.faster in ("a", "b"), f"Comparison.faster should be 'a' or 'b', got {got.faster!r}"


def test_compare_times_seconds_per_call_and_names_the_faster() -> None:
    log: list[tuple[str, float]] = []
    got = kata.compare(_sleeper(0.004, log, "a"), _sleeper(0.001, log, "b"), warmup=2, min_run_time=0.02)
    _check_comparison(got)
    # A sleep never ends early, so 4 ms and 1 ms are lower bounds; the upper bounds allow a loaded machine.
    # Milliseconds instead of seconds, or a block's total instead of per call, miss by 10x or more.
    assert 0.004 <= got.a <= 0.009 and 0.001 <= got.b <= 0.004, (
        f"fn_a sleeps 4 ms a call and fn_b 1 ms: expected a ~0.004 and b ~0.001 seconds per call, got "
        f"a={got.a!r}, b={got.b!r}; likely cause: milliseconds instead of seconds, the time of a whole block "
        f"instead of per call, or the two swapped"
    )
    assert got.faster == "b", f"b sleeps less, so faster should be 'b', got {got.faster!r} ({got})"
    assert got.speedup == pytest.approx(got.a / got.b, rel=1e-9), (
        f"speedup should be the slower time over the faster one, a / b = {got.a / got.b!r}, got "
        f"{got.speedup!r}; likely cause: inverted (faster / slower), or not computed from a and b"
    )
    names = [name for name, _ in log]
    first_b = names.index("b")
    assert "a" not in names[first_b:], "fn_b was called before fn_a was done: measure fn_a completely first"
    for name in ("a", "b"):
        timed = [d for n, d in log if n == name][2:]  # after the 2 warm-up calls
        assert sum(timed) >= 0.02 * 0.99, (
            f"with min_run_time=0.02 the timed calls of fn_{name} should add up to at least 0.02 s of its "
            f"running time, they added up to {sum(timed):.4f} s; likely cause: min_run_time not passed on"
        )


def test_compare_warms_up_before_timing() -> None:
    calls = 0

    def slow_at_first() -> None:  # like torch.compile or cudnn.benchmark: the first calls are slow
        nonlocal calls
        calls += 1
        time.sleep(0.06 if calls <= 3 else 0.001)

    got = kata.compare(slow_at_first, _sleeper(0.003), warmup=3, min_run_time=0.03)
    _check_comparison(got)
    assert got.faster == "a" and 0.001 <= got.a <= 0.0025, (
        f"fn_a's first 3 calls sleep 60 ms, then 1 ms a call; with warmup=3 those are not timed, so expected "
        f"a ~0.001 s and faster 'a' (fn_b sleeps 3 ms), got {got}; likely cause: no warm-up calls before the "
        f"timing (Timer.blocked_autorange's block-size search is no warm-up for several slow calls), or the "
        f"warm-up calls counted in the time"
    )
    assert got.speedup == pytest.approx(got.b / got.a, rel=1e-9), (
        f"speedup should be the slower time over the faster one, b / a = {got.b / got.a!r}, got "
        f"{got.speedup!r}"
    )


def test_compare_uses_the_threads_torch_uses() -> None:
    seen: list[int] = []
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        kata.compare(lambda: seen.append(torch.get_num_threads()), lambda: None, warmup=1, min_run_time=0.005)
    finally:
        torch.set_num_threads(before)
    assert seen and set(seen) == {2}, (
        f"torch was set to 2 threads, so fn_a should run with 2 threads throughout; it saw "
        f"{sorted(set(seen))}; likely cause: torch.utils.benchmark.Timer runs with num_threads=1 unless told "
        f"otherwise: pass num_threads=torch.get_num_threads()"
    )


class _SimulatedAccelerator:
    """Work is queued at once and finishes later; synchronize() blocks until the queue is empty."""

    def __init__(self) -> None:
        self.busy_until = time.perf_counter()
        self.syncs = 0

    def launch(self, seconds: float) -> None:
        self.busy_until = max(self.busy_until, time.perf_counter()) + seconds

    def synchronize(self, *args: Any, **kwargs: Any) -> None:
        self.syncs += 1
        while time.perf_counter() < self.busy_until:
            time.sleep(max(0.0, min(self.busy_until - time.perf_counter(), 0.001)))

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for module in (torch.accelerator, torch.cuda):
            monkeypatch.setattr(module, "is_available", lambda: True)
            monkeypatch.setattr(module, "synchronize", self.synchronize)


def test_compare_waits_for_the_accelerator(monkeypatch: pytest.MonkeyPatch) -> None:
    device = _SimulatedAccelerator()
    device.install(monkeypatch)
    got = kata.compare(lambda: device.launch(0.004), _sleeper(0.001), warmup=2, min_run_time=0.02)
    device.synchronize()
    _check_comparison(got)
    assert got.faster == "b" and 0.0039 <= got.a <= 0.009, (
        f"fn_a queues 4 ms of accelerator work and returns at once, fn_b takes 1 ms on the host: expected "
        f"a ~0.004 s and faster 'b', got {got} ({device.syncs} synchronisations); likely cause: the clock "
        f"was read without waiting for the device (torch.accelerator.synchronize(), which Timer's default "
        f"clock does), so only the time to queue the work was measured"
    )


@pytest.mark.parametrize(("warmup", "min_run_time"), [(-1, 0.01), (1, 0.0)])
def test_compare_rejects_bad_arguments(warmup: int, min_run_time: float) -> None:
    calls: list[None] = []
    with pytest.raises(ValueError):
        kata.compare(
            lambda: calls.append(None), lambda: calls.append(None), warmup=warmup, min_run_time=min_run_time
        )
    assert not calls, f"compare raised ValueError only after calling the functions {len(calls)} times"


@pytest.mark.cuda
def test_compare_times_real_cuda_kernels() -> None:
    # torch.cuda._sleep(cycles) keeps the GPU busy and returns at once: calibrate it to ~3 ms with events.
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(1_000_000)
    torch.cuda.synchronize()
    start.record()
    torch.cuda._sleep(10_000_000)
    end.record()
    end.synchronize()
    cycles = int(10_000_000 * 3 / start.elapsed_time(end))
    got = kata.compare(lambda: torch.cuda._sleep(cycles), _sleeper(0.001), warmup=2, min_run_time=0.03)
    torch.cuda.synchronize()
    assert got.faster == "b" and 0.0015 <= got.a <= 0.01, (
        f"fn_a keeps the GPU busy ~3 ms a call and returns at once, fn_b sleeps 1 ms on the host: expected "
        f"a ~0.003 s and faster 'b', got {got}; likely cause: the clock read without synchronising the GPU, "
        f"which measures kernel launches (microseconds), not kernels"
    )


# ------------------------------------------------------------------------------------------- positive_mean


def _oracle(x: Tensor, limit: float) -> Tensor:
    """positive_mean_with_breaks, spelt out in float64 Python: clip, then mean of the positive entries."""
    means = []
    for row in x.double().tolist():
        positive = [min(v, limit) for v in row if v > 0]
        means.append(sum(positive) / len(positive) if positive else 0.0)
    return torch.tensor(means, dtype=torch.float64).to(x.dtype)


def _check_positive_mean(x: Tensor, limit: float, label: str) -> None:
    before = x.clone()
    got = kata.positive_mean(x, limit)
    expected = _oracle(before, limit)
    assert torch.equal(x, before), f"positive_mean changed its input x ({label})"
    # At most 6 positive terms: a float32 sum and division are within ~4e-7 of the float64 oracle.
    tight = {torch.float32: (1e-6, 1e-7), torch.float64: (1e-12, 1e-14)}[x.dtype]
    assert_close(
        got,
        expected,
        rtol=tight[0],
        atol=tight[1],
        what=f"positive_mean(x, limit={limit}) vs positive_mean_with_breaks, {label}",
        likely_cause="the rewrite changed what is computed: values beyond limit must still be clipped "
        "(clamp unconditionally: it changes nothing inside the limits), a row's count is of its POSITIVE "
        "entries, a row without any gives 0.0 (the count is clamped to at least 1), and the dtype stays x's",
    )


def test_positive_mean_matches_the_given_function() -> None:
    rows = torch.tensor([[3.0, -1.0, 0.5, 9.0], [-2.0, -0.5, 0.0, -7.0], [0.25, 0.0, 1.5, -8.0]])
    _check_positive_mean(rows, 2.0, "a row beyond the limit, a row without positive entries")
    _check_positive_mean(rows * 0.1, 2.0, "all values inside the limit")
    _check_positive_mean(rows.double(), 1.0, "float64")
    _check_positive_mean(torch.tensor([[-1.0]]), 0.5, "a single negative entry")


@settings(max_examples=15)
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(1, 5),
    m=st.integers(1, 6),
    scale=st.sampled_from([0.1, 1.0, 10.0]),
    limit=st.sampled_from([0.5, 2.0, 30.0]),
    double=st.booleans(),
)
def test_positive_mean_matches_on_random_inputs(
    seed: int, n: int, m: int, scale: float, limit: float, double: bool
) -> None:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, m, generator=generator, dtype=torch.float64 if double else torch.float32) * scale
    _check_positive_mean(x, limit, f"x of shape {(n, m)}, {x.dtype}, scale {scale}")


@pytest.fixture
def fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.usefixtures("fresh_dynamo")
def test_positive_mean_has_no_graph_breaks() -> None:
    x = torch.tensor([[3.0, -1.0, 0.5], [-2.0, -0.5, -7.0]])

    positive_mean = kata.positive_mean  # looked up here: Dynamo is to trace the kata's code, not the loader

    def caller(x: Tensor, limit: float) -> Tensor:  # a model calling positive_mean inside its forward
        return positive_mean(x + 1.0, limit) * 2.0

    # explain compiles even a function marked torch.compiler.disable when it is handed one directly; from
    # inside a caller the mark is respected, and splits the caller's graph in two (ops before and after).
    report = torch._dynamo.explain(caller)(x, 2.0)
    reasons = [" ".join(reason.reason.split())[:120] for reason in report.break_reasons]
    assert report.graph_break_count == 0 and report.graph_count == 1, (
        f"torch._dynamo.explain of a function that returns positive_mean(x + 1.0, limit) * 2.0 should "
        f"report 1 graph and 0 graph breaks, got {report.graph_count} graph(s) and "
        f"{report.graph_break_count} break(s), reasons {reasons}; likely cause: "
        + (
            "positive_mean is hidden from Dynamo (torch.compiler.disable / torch._dynamo.disable), which "
            "splits its caller's graph instead of removing the breaks"
            if any("disable" in reason for reason in reasons)
            else "a Python `if` on a tensor's value, .tolist()/.item() used in Python, or a loop over "
            "values: write it with tensor ops only (clamp, torch.where, reductions)"
        )
    )


# ------------------------------------------------------------------------------------------------ saved_bytes


def _saved(fn: Callable[..., Any], *inputs: Any) -> int:
    got = kata.saved_bytes(fn, *inputs)
    assert type(got) is int, f"saved_bytes should return a Python int, got {type(got).__name__} {got!r}"
    return got


def test_saved_bytes_of_single_ops() -> None:
    x = torch.randn(5, 7, requires_grad=True)
    cases = [
        ("torch.relu (saves its output)", torch.relu, 5 * 7 * F32),
        ("torch.sin (saves its input)", torch.sin, 5 * 7 * F32),
        ("x * 3.0 (a scalar factor: saves nothing)", lambda t: t * 3.0, 0),
    ]
    for label, fn, expected in cases:
        got = _saved(fn, x)
        assert got == expected, (
            f"saved_bytes({label}) on a (5, 7) float32 input that requires grad: expected {expected} bytes, "
            f"got {got}; likely cause: counting something else than the tensors packed by "
            f"torch.autograd.graph.saved_tensors_hooks, or element counts instead of bytes"
        )
    assert not _hooks_installed(), "saved_bytes left a saved_tensors_hooks pair installed"


def test_saved_bytes_is_zero_without_grad_inputs() -> None:
    got = _saved(lambda t: torch.relu(t).exp(), torch.randn(5, 7))
    assert got == 0, (
        f"no input requires grad, so autograd saves nothing: expected 0 bytes, got {got}; likely cause: "
        f"counting every tensor made during the call instead of those saved for backward"
    )


def test_saved_bytes_turns_grad_mode_on() -> None:
    x = torch.randn(5, 7, requires_grad=True)
    with torch.no_grad():
        got = _saved(torch.relu, x)
        still_off = not torch.is_grad_enabled()
    assert got == 5 * 7 * F32, (
        f"saved_bytes(torch.relu) called under torch.no_grad() should still measure training memory, 140 "
        f"bytes, got {got}; likely cause: fn ran in the caller's no_grad mode, where nothing is saved "
        f"(run it under torch.enable_grad())"
    )
    assert still_off, "saved_bytes left grad mode on for a caller that had it off"


def test_saved_bytes_counts_each_storage_once() -> None:
    x = torch.randn(6, 10, requires_grad=True)

    def fn(t: Tensor) -> Tensor:
        h = torch.relu(t)  # saves h
        return h[:2].sin().sum() + h[2:].cos().sum()  # save two views of h's storage

    got = _saved(fn, x)
    assert got == 6 * 10 * F32, (
        f"relu saves its output h (6x10 float32, 240 bytes) and sin/cos save two views of h: one storage, "
        f"expected 240 bytes, got {got}; likely cause: "
        + (
            "each saved tensor counted separately, views included"
            if got > 240
            else "identified by the tensor's data_ptr/size instead of its storage's"
        )
    )


def test_saved_bytes_counts_a_views_whole_storage() -> None:
    x = torch.randn(100, requires_grad=True)
    got = _saved(lambda t: (t * 2.0)[:3].sin(), x)
    assert got == 100 * F32, (
        f"sin saves a 3-element view of a new 100-element float32 tensor, whose whole storage it keeps "
        f"alive: expected 400 bytes, got {got}; likely cause: the view's own size (numel * element_size) "
        f"counted instead of t.untyped_storage().nbytes()"
    )


@pytest.mark.parametrize("input_grad", [False, True], ids=["input without grad", "input with grad"])
def test_saved_bytes_leaves_out_parameters(input_grad: bool) -> None:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    x = torch.randn(5, 8, requires_grad=input_grad)
    got = _saved(mlp, x)
    # linear 1 saves x (5x8); relu saves its output h (5x32); linear 2 saves h again and its weight (a
    # parameter). Linear 1's weight is saved too when x requires grad: a parameter, not counted.
    expected = (5 * 8 + 5 * 32) * F32
    assert got == expected, (
        f"Linear(8, 32) -> ReLU -> Linear(32, 4) on a (5, 8) input ({'requires' if input_grad else 'no'} "
        f"grad) saves its input x (160 bytes) and the hidden activation h once (640 bytes): expected "
        f"{expected}, got {got}; likely cause: "
        + (
            "the parameters were counted: storages of the module's parameters (weight.t() is a view of "
            "one) are not activations"
            if got > expected
            else "the input x was left out (a saved input counts) or h was not counted"
        )
    )
    assert all(p.grad is None for p in mlp.parameters()), "saved_bytes must not run backward"


def test_saved_bytes_leaves_out_buffers() -> None:
    bn = nn.BatchNorm1d(6)
    x = torch.randn(8, 6, requires_grad=True)
    got = _saved(bn, x)
    # batch_norm saves its input (8x6), the running mean and variance (buffers), its weight (a parameter),
    # and the batch mean and inverse std (6 each, new).
    expected = (8 * 6 + 6 + 6) * F32
    assert got == expected, (
        f"BatchNorm1d(6) in training mode on an (8, 6) input saves the input and two per-channel batch "
        f"statistics (240 bytes), plus its weight and running buffers, which are not activations: expected "
        f"{expected}, got {got}; likely cause: "
        + (
            "buffers (running_mean, running_var) or parameters counted"
            if got > expected
            else "too little counted"
        )
    )


class _Boom(Exception):
    pass


def test_saved_bytes_removes_its_hooks_when_fn_raises() -> None:
    calls: list[None] = []

    def boom(t: Tensor) -> Tensor:
        calls.append(None)
        torch.relu(t)
        raise _Boom("boom")

    with pytest.raises(_Boom):
        kata.saved_bytes(boom, torch.randn(3, requires_grad=True))
    assert len(calls) == 1, f"saved_bytes should call fn exactly once, it called it {len(calls)} times"
    assert not _hooks_installed(), (
        "after fn raised, saved_bytes left its saved_tensors_hooks installed: every later forward pass in "
        "the process would go through them; use the context manager (a with block), which removes them"
    )


# ------------------------------------------------------------------------------------ checkpointed_forward

D, HIDDEN, BATCH, N_BLOCKS = 8, 32, 6, 3


def _blocks(dropout: float = 0.0, seed: int = 0) -> list[nn.Module]:
    torch.manual_seed(seed)
    blocks = []
    for _ in range(N_BLOCKS):
        layers = [nn.Linear(D, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, D)]
        if dropout:
            layers.insert(2, nn.Dropout(dropout))
        blocks.append(nn.Sequential(*layers))
    return blocks


def _twins(dropout: float = 0.0) -> tuple[list[nn.Module], list[nn.Module]]:
    return _blocks(dropout), _blocks(dropout)


def _plain(blocks: list[nn.Module], x: Tensor) -> Tensor:
    for block in blocks:
        x = block(x)
    return x


def _run(forward: Callable[[list[nn.Module], Tensor], Tensor], blocks: list[nn.Module], x: Tensor) -> dict:
    torch.manual_seed(123)
    out = forward(blocks, x)
    after_forward = torch.get_rng_state()
    out.sum().backward()
    return {"out": out.detach(), "after_forward": after_forward, "after_backward": torch.get_rng_state()}


def _compare_runs(dropout: float, input_grad: bool) -> None:
    ours_blocks, plain_blocks = _twins(dropout)
    x = torch.randn(BATCH, D)
    x_ours, x_plain = x.clone().requires_grad_(input_grad), x.clone().requires_grad_(input_grad)
    ours = _run(kata.checkpointed_forward, ours_blocks, x_ours)
    plain = _run(_plain, plain_blocks, x_plain)
    label = f"{N_BLOCKS} blocks{' with dropout' if dropout else ''}, input "
    label += "with grad" if input_grad else "without grad"
    assert_close(ours["out"], plain["out"], rtol=1e-6, atol=1e-7, what=f"output, {label}",
                 likely_cause="the blocks applied in another order, or different dropout masks")  # fmt: skip
    for i, (block, twin) in enumerate(zip(ours_blocks, plain_blocks, strict=True)):
        for (name, p), q in zip(block.named_parameters(), twin.parameters(), strict=True):
            assert p.grad is not None, (
                f"block {i} parameter {name} got no gradient ({label}); likely cause: use_reentrant=True, "
                f"whose legacy checkpoint gives parameters no gradient when the block's input does not "
                f"require grad: pass use_reentrant=False"
            )
            assert_close(
                p.grad,
                q.grad,
                rtol=1e-6,
                atol=1e-7,
                what=f"gradient of block {i} parameter {name}, {label}",
                likely_cause="the recomputation drew different dropout masks than the forward "
                "(preserve_rng_state=False)"
                if dropout
                else "the recomputation differs from the forward",
            )
    if input_grad:
        assert x_ours.grad is not None, f"x requires grad but got no gradient ({label})"
        assert_close(x_ours.grad, x_plain.grad, rtol=1e-6, atol=1e-7, what=f"x.grad, {label}")
    for when in ("after_forward", "after_backward"):
        assert torch.equal(ours[when], plain[when]), (
            f"the global RNG state {when.replace('_', ' ')} differs from running the blocks without "
            f"checkpointing ({label}); likely cause: the recomputation consumed fresh random numbers "
            f"(preserve_rng_state=False) instead of replaying the forward's"
        )


def test_checkpointed_forward_matches_plain_when_input_has_no_grad() -> None:
    _compare_runs(dropout=0.0, input_grad=False)


def test_checkpointed_forward_matches_plain_when_input_has_grad() -> None:
    _compare_runs(dropout=0.0, input_grad=True)


def test_checkpointed_forward_replays_dropout() -> None:
    _compare_runs(dropout=0.3, input_grad=True)


def _saved_storage_bytes(run: Callable[[], Tensor], exempt: list[nn.Module]) -> tuple[int, Tensor]:
    skip = {t.untyped_storage().data_ptr() for m in exempt for t in [*m.parameters(), *m.buffers()]}
    sizes: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            sizes[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = run()
    return sum(sizes.values()), out


def test_checkpointed_forward_saves_only_block_inputs() -> None:
    blocks = _blocks()
    x = torch.randn(BATCH, D, requires_grad=True)
    ours, out = _saved_storage_bytes(lambda: kata.checkpointed_forward(blocks, x), blocks)
    plain, _ = _saved_storage_bytes(lambda: _plain(blocks, x), blocks)
    inputs = N_BLOCKS * BATCH * D * F32  # x and the outputs of all blocks but the last
    assert plain == 9 * inputs, (
        f"grader check: plain blocks should save 9x their inputs, got {plain} vs {inputs}"
    )
    assert ours <= inputs, (
        f"{N_BLOCKS} blocks Linear({D}, {HIDDEN}) -> GELU -> Linear({HIDDEN}, {D}) on a ({BATCH}, {D}) input "
        f"save {plain} bytes of activations without checkpointing; checkpointed, only the {N_BLOCKS} block "
        f"inputs ({inputs} bytes) may be saved, got {ours} bytes; likely cause: "
        + ("no checkpointing at all" if ours >= plain else "some blocks run without checkpoint")
    )
    out.sum().backward()
    assert all(p.grad is not None for b in blocks for p in b.parameters()), "parameters got no gradient"


class _Marker(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, index: int, events: list) -> Tensor:
        ctx.index, ctx.events = index, events
        events.append(("forward", index))
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        ctx.events.append(("backward", ctx.index))
        return grad, None, None


class _MarkedBlock(nn.Module):
    """Records its forward passes, and the moment the gradient has flowed through the whole block."""

    def __init__(self, index: int, events: list) -> None:
        super().__init__()
        self.index, self.events = index, events
        self.inner = nn.Sequential(nn.Linear(D, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, D))

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(_Marker.apply(x, self.index, self.events))


def test_checkpointed_forward_recomputes_one_block_at_a_time() -> None:
    events: list[tuple[str, int]] = []
    torch.manual_seed(0)
    blocks = [_MarkedBlock(i, events) for i in range(N_BLOCKS)]
    x = torch.randn(BATCH, D, requires_grad=True)
    out = kata.checkpointed_forward(blocks, x)
    forward = list(events)
    events.clear()
    out.sum().backward()
    expected_forward = [("forward", i) for i in range(N_BLOCKS)]
    expected_backward = [e for i in reversed(range(N_BLOCKS)) for e in (("forward", i), ("backward", i))]
    assert forward == expected_forward, f"the forward pass should run each block once in order, saw {forward}"
    assert events == expected_backward, (
        f"during backward each block should be recomputed once, last block first, right before its own "
        f"backward: expected {expected_backward}, saw {events}; likely cause: "
        + (
            "no recomputation: the blocks were not checkpointed"
            if ("forward", 0) not in events
            else "all blocks checkpointed as ONE segment, so all are recomputed at once and their "
            "activations are alive together: checkpoint each block separately"
        )
    )


def test_checkpointed_forward_keeps_modes_and_adds_no_hooks() -> None:
    blocks = _blocks(dropout=0.3)
    blocks[1].eval()
    x = torch.randn(BATCH, D, requires_grad=True)
    kata.checkpointed_forward(blocks, x).sum().backward()
    modes = [m.training for b in blocks for m in b.modules()]
    expected = [i != 1 for i, b in enumerate(blocks) for _ in b.modules()]
    assert modes == expected, (
        f"checkpointed_forward changed the blocks' train/eval modes: {modes} vs {expected}"
    )
    hooked = [
        type(m).__name__
        for b in blocks
        for m in b.modules()
        if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
    ]
    assert not hooked, f"checkpointed_forward left hooks on these modules: {hooked}"
    assert not _hooks_installed(), "checkpointed_forward left saved_tensors_hooks installed"
