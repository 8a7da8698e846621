"""Independent alternative solution of kata 18 (speed and memory: profile, benchmark, compile, checkpoint)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.benchmark import Measurement
from torch.utils.benchmark.utils.common import TaskSpec
from torch.utils.checkpoint import checkpoint


def hottest_op(fn: Callable[..., Any], *args: Any) -> str:
    """The aten op with the largest summed self CPU time, aggregated by hand over the raw profiler events."""
    fn(*args)  # warm-up, not profiled
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn(*args)
    self_time: dict[str, float] = {}
    for event in prof.events():
        if event.name.startswith("aten::"):
            self_time[event.name] = self_time.get(event.name, 0.0) + event.self_cpu_time_total
    if not self_time:
        raise ValueError("the profiled call ran no aten operator")
    best_name, best_time = "", float("-inf")
    for name, total in self_time.items():
        if total > best_time:
            best_name, best_time = name, total
    return str(best_name)


class Comparison(NamedTuple):  # stub: keep
    """What `compare` returns: both timings in seconds per call, the faster one, and by how much."""

    a: float
    b: float
    faster: str
    speedup: float


def _read_clock(sync: bool) -> float:
    """One clock reading, after draining the accelerator's queue when there is one."""
    if sync:
        torch.accelerator.synchronize()
    return time.perf_counter()


def _time_block(fn: Callable[[], object], number: int, sync: bool) -> float:
    """Seconds taken by `number` back-to-back calls of `fn`."""
    start = _read_clock(sync)
    for _ in range(number):
        fn()
    return _read_clock(sync) - start


def _measure(fn: Callable[[], object], warmup: int, min_run_time: float, threads: int) -> float:
    """Median seconds per call of `fn`, from a hand-built blocked measurement."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        sync = torch.accelerator.is_available()
        for _ in range(warmup):
            fn()
        if sync:
            torch.accelerator.synchronize()
        # Block size: grow until one block is long enough that the clock's overhead does not matter.
        number = 1
        target = min(min_run_time / 20, 0.02)
        while True:
            taken = _time_block(fn, number, sync)
            if taken >= target or number >= 2**20:
                break
            number *= 2
        raw_times: list[float] = []
        spent = 0.0
        while spent < min_run_time:
            taken = _time_block(fn, number, sync)
            raw_times.append(taken)
            spent += taken
        measurement = Measurement(
            number_per_run=number,
            raw_times=raw_times,
            task_spec=TaskSpec(stmt="fn()", setup="pass", num_threads=threads),
        )
        return float(measurement.median)
    finally:
        torch.set_num_threads(previous_threads)


def compare(
    fn_a: Callable[[], object], fn_b: Callable[[], object], *, warmup: int = 3, min_run_time: float = 0.05
) -> Comparison:
    """Warm up, then time blocks of calls with a synchronising clock; compare medians of a Measurement."""
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if not min_run_time > 0:
        raise ValueError(f"min_run_time must be > 0, got {min_run_time}")
    threads = torch.get_num_threads()
    a = _measure(fn_a, warmup, min_run_time, threads)
    b = _measure(fn_b, warmup, min_run_time, threads)
    faster = "a" if a <= b else "b"
    low, high = min(a, b), max(a, b)
    speedup = 1.0 if high == low else (high / low if low > 0 else float("inf"))
    return Comparison(a=a, b=b, faster=faster, speedup=float(speedup))


def positive_mean_with_breaks(x: Tensor, limit: float) -> Tensor:  # stub: keep
    """Per row of the 2-D `x`, clipped to [-limit, limit]: the mean of its positive entries (0.0 if none).

    Correct, but `torch._dynamo.explain(positive_mean_with_breaks)(x, 2.0)` reports 3 graphs and 2 graph
    breaks: the Python `if` reads a tensor's value, and `.tolist()` hands the values to Python.
    """
    if x.abs().max() > limit:
        x = x.clamp(-limit, limit)
    counts = torch.tensor([sum(v > 0 for v in row) for row in x.tolist()], dtype=x.dtype)
    total = torch.where(x > 0, x, 0).sum(dim=-1)
    return total / counts.clamp(min=1)


def positive_mean(x: Tensor, limit: float) -> Tensor:
    """Break-free rewrite: clamp to [0, limit] gives the clipped positive parts directly; count by sign."""
    positive_parts = torch.clamp(x, min=0.0, max=limit)
    counts = torch.count_nonzero(x > 0, dim=-1).to(x.dtype)
    return positive_parts.sum(dim=-1) / torch.maximum(counts, torch.ones_like(counts))


def saved_bytes(fn: Callable[..., Any], *inputs: Any) -> int:
    """Sum of distinct saved storages seen by a pack hook, minus the module's own parameters and buffers."""
    excluded: set[int] = set()
    if isinstance(fn, nn.Module):
        for tensor in (*fn.parameters(), *fn.buffers()):
            excluded.add(tensor.untyped_storage().data_ptr())
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in excluded:
            seen[ptr] = max(seen.get(ptr, 0), storage.nbytes())
        return t

    def unpack(t: Tensor) -> Tensor:
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        result = fn(*inputs)
    del result
    return int(sum(seen.values()))


def checkpointed_forward(blocks: Sequence[nn.Module], x: Tensor) -> Tensor:
    """Fold the blocks over `x`, each call wrapped in its own non-reentrant, RNG-preserving checkpoint."""
    if len(blocks) == 0:
        raise ValueError("blocks must not be empty")

    def step(h: Tensor, block: nn.Module) -> Tensor:
        return checkpoint(block, h, use_reentrant=False, preserve_rng_state=True)

    return functools.reduce(step, blocks, x)
