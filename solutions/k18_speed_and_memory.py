"""Speed and memory: profile, benchmark, compile, checkpoint

Interview question: Training is slow and runs out of memory: where do time and memory go, and what do you do?

Difficulty 4/5, about 75 minutes, after katas 4 and 10.

The idea
========
Measure first, then change one thing, then measure again. Three tools answer "where does the time go" and
one idea answers "where does the memory go".

The profiler. `torch.profiler.profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])` records
every operator call; `prof.key_averages()` sums them per operator name. Each row has two times that
interviewers love to confuse: TOTAL time (the op and everything it called) and SELF time (the op alone,
its children subtracted). `aten::matmul` calls `aten::mm`, `aten::linear` calls `aten::addmm`, and a
`record_function("forward")` range contains the whole forward: sorted by total, the wrappers and ranges
win and tell you nothing. Sort by self time (`sort_by="self_cpu_time_total"`, or `self_cuda_time_total`
for the kernels) to find the op that burns the time. Many small ops can beat one big one: the sum over
calls is what counts, which is the case for fusion (torch.compile) or for a bigger batch.

Benchmarking. A host clock around GPU code measures kernel launches, not kernels (CUDA is asynchronous:
kata 10), and the first calls pay one-time costs (allocator growth, cuDNN autotuning, compilation).
`torch.utils.benchmark.Timer(stmt="fn()", globals={"fn": fn})` does the bookkeeping: its default clock
synchronises the accelerator before every reading, `blocked_autorange(min_run_time=...)` picks a block
size so the clock's own overhead is negligible and repeats blocks, and the `Measurement` it returns has
`.median` and `.mean` in seconds per call. Its traps: it runs with ONE thread unless you pass
`num_threads=torch.get_num_threads()` (a CPU matmul looks several times slower than in training), and its
only warm-up is the block-size search, which a function whose first few calls are slow (torch.compile,
`cudnn.benchmark`) outlasts: call the function a few times yourself first. Compare medians, which one
slow outlier does not move.

torch.compile and graph breaks. TorchDynamo reads your Python bytecode and captures the torch operations
into an FX graph that a backend (Inductor) fuses into few kernels. When it meets something it cannot put
into a graph, it ends the graph there, runs that bit in plain Python, and starts a new graph after it: a
graph break. Each break costs a trip back to Python, blocks fusion across it, and often a device sync.
Classic causes: a Python `if` on a tensor's value (`if x.max() > 0:`), `.item()` (unless
`torch._dynamo.config.capture_scalar_outputs` is set), `.tolist()` or `.numpy()`, a `print`,
data-dependent shapes (`x[mask]`, `nonzero`), unsupported library calls. Find them with
`torch._dynamo.explain(fn)(*args)` (graph_count, graph_break_count, break_reasons) or
`TORCH_LOGS=graph_breaks`, and remove them by writing the same computation in tensor ops: `torch.where`
instead of `if`, `clamp` instead of "clamp if needed", reductions instead of Python loops over values.
`torch.compile(fullgraph=True)` turns any break into an error. The rewrite must give the SAME outputs:
a faster wrong answer is a bug.

Where training memory goes. Parameters, gradients and optimizer state (kata 10: about 16 bytes per
parameter with float32 Adam), plus ACTIVATIONS: the tensors autograd saves in the forward pass for the
backward pass. Each op saves what its derivative needs: `linear` saves its input (for the weight's
gradient) and its weight (for the input's gradient, only when the input requires grad); `relu` saves its
OUTPUT; `exp` its output; `sin`, `gelu` and `batch_norm` their input (batch_norm also its batch
statistics and running buffers). Nothing is saved when no input requires grad, or under `torch.no_grad()`.
Activations grow with batch size, sequence length and depth, and usually dominate. You can see them:
`torch.autograd.graph.saved_tensors_hooks(pack, unpack)` calls `pack(t)` on every tensor as it is saved.
Counting bytes right takes care: several saved tensors can share one storage (a tensor saved by two ops,
views of one buffer), a view keeps its WHOLE storage alive, and a saved weight is memory you hold anyway.

Activation checkpointing trades compute for memory: `torch.utils.checkpoint.checkpoint(block, h,
use_reentrant=False)` runs the block without saving its activations, keeps only its input, and
recomputes the block's forward during backward. Checkpoint each block separately (not the whole network
as one segment, which recomputes everything at once and saves nothing at the peak): the saved memory
drops from all activations to one tensor per block, plus one block's activations at a time during
backward, for about one extra forward pass (~30% more compute). Pass `use_reentrant=False`: the legacy
reentrant version gives the parameters no gradient when the block's input does not require grad, and
torch warns when you do not choose. Randomness must replay: with `preserve_rng_state=True` (the default)
the recomputation draws the same dropout masks as the forward; without it the gradients are silently
wrong.

What interviewers probe
=======================
- Self vs total time in a profile, and that `record_function` ranges and wrapper ops top the total column.
- Why a naive `time.time()` around GPU code is wrong (asynchrony), why warm-up, why medians, and Timer's
  single-thread default.
- What a graph break is, how to find one (`torch._dynamo.explain`, `TORCH_LOGS=graph_breaks`,
  `fullgraph=True`) and the usual causes: data-dependent control flow, `.tolist()`, dynamic shapes.
- What autograd saves per op (linear: input and weight; relu: output), so activation memory is
  batch x width x depth, and why `torch.no_grad()` inference uses a fraction of the memory.
- Checkpointing: what it saves, what it recomputes, the ~30% compute price, `use_reentrant=False`, and
  dropout with `preserve_rng_state`.
- The memory toolbox beyond checkpointing: mixed precision, smaller micro-batches with gradient
  accumulation, `zero_grad(set_to_none=True)`, sharded optimizer state (FSDP/ZeRO), offloading.

Your tasks
==========
Given: `Comparison`, the named tuple `compare` returns, and `positive_mean_with_breaks`, the function to fix.
1. `hottest_op(fn, *args)` - the name of the aten op with the most self CPU time in a profile of `fn`.
2. `compare(fn_a, fn_b, ...)` - benchmark two functions properly and say which is faster, by how much.
3. `positive_mean(x, limit)` - `positive_mean_with_breaks` rewritten without graph breaks, same outputs.
4. `saved_bytes(fn, *inputs)` - the bytes of activations autograd saves for backward during `fn`.
5. `checkpointed_forward(blocks, x)` - run blocks with activation checkpointing, one segment per block.

Follow-up questions
===================
- The profiler shows `aten::copy_` and `aten::to` near the top of the self-time column. What does that
  tell you, and what do you change?
- What does `torch.compile` do with a graph break, and why does a break inside a training step cost more
  than the Python it runs?
- How much activation memory does a transformer layer save, and how does that scale with sequence
  length?
- When is activation checkpointing not worth it, and what else would you try to fit a bigger batch?
- Why does `torch.utils.checkpoint` warn unless you pass `use_reentrant`, and what breaks with
  `use_reentrant=True`?
- Your benchmark says the new kernel is 3x faster but training is not faster at all. What went wrong?

Grade this kata: `nox -s check -- 18`. Stuck? `nox -s hint -- 18`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn


def hottest_op(fn: Callable[..., Any], *args: Any) -> str:
    """The name of the aten operator that spends the most SELF CPU time in one call of `fn(*args)`.

    `fn(*args)` is run once under `torch.profiler.profile` recording CPU activity. Among the recorded
    events whose name starts with `"aten::"`, calls of the same operator are added up (as
    `prof.key_averages()` groups them), and the operator with the largest total self CPU time wins: the
    time spent in the op itself, excluding the ops it called. So `aten::matmul`, which spends its time
    calling `aten::mm`, loses to `aten::mm`; a `record_function` range, a Python function or any other
    non-aten event is never the answer, however long it took.

    `fn` may also be called once more, before the profiled call and not profiled (a warm-up); it is
    called at most twice. Its return value is ignored.

    Returns:
        The operator's name exactly as the profiler reports it, as a `str`, e.g. `"aten::mm"`.

    Raises:
        ValueError: when the profiled call ran no aten operator at all.
    """
    from torch.profiler import ProfilerActivity, profile

    fn(*args)  # warm-up: first calls pay one-time costs
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn(*args)
    rows = [row for row in prof.key_averages() if row.key.startswith("aten::")]
    if not rows:
        raise ValueError("the profiled call ran no aten operator")
    return str(max(rows, key=lambda row: row.self_cpu_time_total).key)


class Comparison(NamedTuple):  # stub: keep
    """What `compare` returns: both timings in seconds per call, the faster one, and by how much."""

    a: float
    b: float
    faster: str
    speedup: float


def compare(
    fn_a: Callable[[], object], fn_b: Callable[[], object], *, warmup: int = 3, min_run_time: float = 0.05
) -> Comparison:
    """Benchmark two functions of no arguments and say which one is faster.

    Each function is measured the same way, `fn_a` first:
    - it is called `warmup` times first; those calls are never timed;
    - then timed calls follow, adding up to at least `min_run_time` seconds of its own running time;
    - its time is the MEDIAN over repeated timed blocks of calls, as seconds per call (the median of a
      `torch.utils.benchmark` `Measurement`);
    - with torch using the number of threads it uses at the call (`torch.get_num_threads()`), not fewer;
    - whenever an accelerator is available (`torch.accelerator.is_available()`), every clock reading
      first waits for it (`torch.accelerator.synchronize()`), so work a call queued on the device is
      part of its time.
    `fn_b` is not called until `fn_a` is done.

    Returns:
        `Comparison(a, b, faster, speedup)`: `a` and `b` the seconds per call of `fn_a` and `fn_b` as
        Python floats; `faster` the string `"a"` when `a <= b`, else `"b"`; `speedup` the slower time
        divided by the faster one (a float, at least 1.0).

    Raises:
        ValueError: for `warmup < 0` or `min_run_time <= 0`, before either function is called.
    """
    from torch.utils.benchmark import Timer

    if warmup < 0 or min_run_time <= 0:
        raise ValueError(f"need warmup >= 0 and min_run_time > 0, got {warmup} and {min_run_time}")
    times = []
    for fn in (fn_a, fn_b):
        for _ in range(warmup):
            fn()
        timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
        times.append(float(timer.blocked_autorange(min_run_time=min_run_time).median))
    a, b = times
    faster = "a" if a <= b else "b"
    return Comparison(a, b, faster, max(a, b) / min(a, b))


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
    """`positive_mean_with_breaks(x, limit)`, computed so that torch.compile captures it in one graph.

    Args:
        x: a 2-D float32 or float64 CPU tensor with at least one row and one column, finite values; not
            modified.
        limit: a Python float, `limit > 0`.

    Graded:
        - The result equals `positive_mean_with_breaks(x, limit)`: same shape `(x.shape[0],)`, same dtype,
          same values (up to float rounding of the same arithmetic: relative 1e-6 in float32, 1e-12 in
          float64), for every such `x` and `limit`, rows without a positive entry and values beyond
          `limit` included.
        - `torch._dynamo.explain(fn)(x, limit)` reports exactly one graph (`graph_count == 1`) and no
          graph break (`graph_break_count == 0`), both for `fn = positive_mean` and for a function that
          calls it (say `lambda x, limit: positive_mean(x + 1, limit) * 2`): Dynamo traces it into its
          caller's graph, neither split by Python that reads tensor values nor hidden from Dynamo
          (`torch.compiler.disable` leaves the caller with no graph at all).
    """
    x = x.clamp(-limit, limit)
    positive = x > 0
    total = torch.where(positive, x, 0).sum(dim=-1)
    return total / positive.sum(dim=-1).clamp(min=1).to(x.dtype)


def _exempt_storages(fn: Callable[..., Any]) -> set[int]:
    if not isinstance(fn, nn.Module):
        return set()
    tensors = [*fn.parameters(), *fn.buffers()]
    return {t.untyped_storage().data_ptr() for t in tensors}


def saved_bytes(fn: Callable[..., Any], *inputs: Any) -> int:
    """The bytes of the tensors autograd saves for backward while `fn(*inputs)` runs: activation memory.

    `fn(*inputs)` is called exactly once, with gradient tracking ON even if the caller has it off, and its
    result is dropped. Every tensor that autograd saves for the backward pass during that call counts
    (what `torch.autograd.graph.saved_tensors_hooks` sees packed), by these rules:
    - Storage, not tensor: a saved tensor counts the bytes of its whole underlying storage,
      `t.untyped_storage().nbytes()`, because that is the memory it keeps alive. A saved view (a slice,
      a transpose) keeps its whole base, so counts all of it.
    - Each storage once: saved tensors whose storages have the same `untyped_storage().data_ptr()` are
      one storage, counted once (a tensor saved by two ops, several views of one buffer).
    - Parameters and buffers are not activations: when `fn` is an `nn.Module`, a saved tensor whose
      storage is that of one of its parameters or buffers (its submodules' included) is not counted,
      views of them (`weight.t()`) included. For other callables nothing is left out.
    - Inputs are activations: a saved input counts like any other tensor.
    Ops whose inputs do not require grad save nothing, so such a call counts 0.

    Returns:
        A Python int, the number of bytes.

    Nothing is left behind: the caller's grad mode is as it was, no saved-tensor hooks remain installed
    after the call (also when `fn` raises: the exception propagates), `inputs` are not modified.
    """
    exempt = _exempt_storages(fn)
    sizes: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in exempt:
            sizes[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*inputs)
    return sum(sizes.values())


def checkpointed_forward(blocks: Sequence[nn.Module], x: Tensor) -> Tensor:
    """Apply `blocks` in order to `x`, each block its own activation-checkpoint segment.

    Args:
        blocks: a non-empty sequence of modules, each mapping one tensor to one tensor; they may hold
            dropout (in training mode) or other random operations.
        x: the input; it may or may not require grad.

    Graded (against running `h = block(h)` for each block without checkpointing, from the same global
    RNG state):
        - The output equals the plain output (same values, dtype and shape), and after `backward()` on
          it, every parameter's `.grad` (and `x.grad` when `x` requires grad) equals the plain one, up to
          float rounding (relative 1e-6, absolute 1e-7 in float32). Parameters get gradients also when `x`
          does not require grad.
        - Randomness replays: dropout in a block draws the same mask in the recomputation as in the
          forward (so the gradients match), and the global RNG state after the forward, and again after
          the backward, is the same as after the plain run's.
        - Memory: during the call autograd saves nothing but the blocks' inputs (`x` and each block's
          output that feeds the next block), so `saved_bytes` of the call, with every block's parameters
          and buffers left out, is at most the sum of those inputs' storage bytes. Without checkpointing,
          a block `Linear(d, 4d) -> GELU -> Linear(4d, d)` saves 9 such tensors' worth: its input and two
          4d-wide activations.
        - Recomputation, one block at a time: during backward each block's forward runs again exactly
          once, the last block first, and block `i` is recomputed only after the gradient has flowed back
          through the whole of block `i + 1`.
        - Blocks stay in their train/eval mode; no hooks are left on them.
    """
    from torch.utils.checkpoint import checkpoint

    h = x
    for block in blocks:
        h = checkpoint(block, h, use_reentrant=False, preserve_rng_state=True)
    return h
