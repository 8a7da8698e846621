"""GPUs and mixed precision (AMP)

Interview question: How does PyTorch handle GPU computation?

Difficulty 3/5, about 60 minutes, after katas 3 and 7.

The idea
========
Every tensor lives on exactly one device (`t.device`: cpu, cuda:0, mps, ...) and an operation runs on the
device of its inputs; the inputs of one operation must share a device (a 0-dim CPU tensor is the one
exception). Nothing moves by itself: `t.to(device)` returns a copy on `device` (or `t` itself if it is already
there), while `module.to(device)` moves the module's parameters and buffers in place.

CUDA work is asynchronous. Python queues kernels on a stream and carries on; it waits only when it needs a
value from the GPU on the host, or calls `torch.cuda.synchronize()`. That happens in more places than
`.item()`, `.cpu()` and `print`: `.tolist()`, `torch.nonzero`, boolean-mask indexing `t[mask]` (the result's
size depends on the data) and `if t.any():` (Python needs a bool) all wait for every queued kernel. A
host-to-device copy from ordinary (pageable) memory is staged and blocks the host; from pinned (page-locked)
memory with `non_blocking=True` it is queued and the call returns at once, so the host carries on (say,
preparing the next batch) - that is what `DataLoader(pin_memory=True)` is for. The copy overlaps GPU compute
only when it runs on another CUDA stream than the kernels: on one stream, work runs in order. Freed GPU
memory goes back to PyTorch's caching allocator, not to the driver, so `nvidia-smi` shows more in use than
`torch.cuda.memory_allocated()`.

Timing follows from that. A host clock read around GPU code measures how long Python took to queue the
kernels, not how long they ran: the clock has to start when the device has finished everything queued
before, and stop when it has finished everything the timed code queued. Either wait for the device at both
ends (a synchronisation waits for one device: the current one unless you name it), or let the device take
the timestamps itself, with CUDA events recorded on the stream that runs the work. And leave the first calls
out: they pay once for lazy initialisation, allocator growth, cuDNN's algorithm search or `torch.compile`.

Memory for training, activations aside, has three parts. The parameters; one gradient per parameter that
requires grad, of its shape and dtype (a frozen parameter costs its weights only); and the optimizer's
state, which it creates lazily, on its first `step()`, for each of its parameters that has a gradient, in
that parameter's dtype and shape. SGD without momentum keeps no state at all, SGD with momentum one buffer
per parameter, Adam and AdamW two running averages (first and second moment) and more with options, so
float32 Adam costs about 16 bytes per parameter: 112 GB for a 7-billion-parameter model before a single
activation. Autocast does not shrink that part (the weights stay float32; it saves activation memory and
time), which is why large models shard optimizer state (ZeRO, FSDP) or keep it in 8 bits. You can work the
number out before you own the GPU: a model built on the `meta` device has shapes and dtypes but no storage.

Mixed precision: under `torch.autocast(device_type)` ops that are safe and fast in low precision (matmul,
convolution, linear) run in a 16-bit dtype; the parameters themselves stay float32. Which ops are cast to
float32 instead is a per-device list. CUDA's is long (softmax, log_softmax, exp, log, sum, layer_norm, most
losses); the CPU's is shorter: under CPU bfloat16 autocast, softmax, sum and layer_norm of a bfloat16
activation return bfloat16 (mse_loss and cross_entropy do return float32). Check `out.dtype` rather than
assume. The default low dtype is float16 on CUDA and bfloat16 on CPU; `dtype=` picks either on either
device. bfloat16 keeps float32's 8 exponent bits (same range) but only 8 significant bits, about 2.4 decimal
digits; float16 has 11 significant bits (about 3.3 digits) but 5 exponent bits, so it loses precision below
6.1e-5, rounds values much below 6e-8 to zero, and overflows above 65504. Small gradients therefore vanish
in float16. `GradScaler` multiplies the loss by a large scale S before backward so the gradients are S times
larger and survive; `scaler.step(optimizer)` divides them by S again and skips the update when any is inf or
nan; `scaler.update()` halves S after such a skip and grows it after a run of clean steps. bfloat16 has
float32's range, so it needs no scaler. Anything that reads the gradients between backward and the step -
clipping by norm, logging the norm - sees them S times too large unless they are unscaled first.

TF32, a related switch: on Ampere and newer GPUs, float32 matmuls and convolutions can run on tensor cores
with a 10-bit mantissa. PyTorch leaves it off for matmul (`torch.backends.cuda.matmul.allow_tf32` is False;
`torch.set_float32_matmul_precision("high")` turns it on) but on for cuDNN convolutions
(`torch.backends.cudnn.allow_tf32` is True), so a "float32" convolution is already not quite float32.

What interviewers probe
=======================
- Device placement: a model on cuda fed a CPU batch raises "Expected all tensors to be on the same device".
  `x.to(device)` is not in place (assign the result); `model.to(device)` is, and returns the same module.
- Non-blocking copies: `non_blocking=True` only overlaps a host-to-device copy when the source is in
  pinned memory (`t.pin_memory()`, `DataLoader(pin_memory=True)`); from pageable memory it is an ordinary
  copy. Pinned and non-blocking frees the host; overlapping the copy with GPU compute also needs a second
  CUDA stream.
- Timing GPU code: without a synchronisation (or CUDA events) you measure the kernel launches, not the
  work; without warm-up, one-time costs; with `time.time()` instead of a monotonic clock, jumps of the
  system clock.
- Hidden synchronisations: a loop that calls `.item()` or `.tolist()`, indexes with a boolean mask, or tests
  `if loss.isnan().any():` on every step waits for the GPU each time, and the GPU then idles while Python
  queues the next kernels.
- Memory arithmetic: parameters + gradients + optimizer state (+ activations, which grow with the batch).
  Which optimizer keeps what, that state appears only after the first step, and that frozen parameters
  need no gradient and no state.
- Autocast dtypes per device: float16 on cuda, bfloat16 on cpu - which is what `torch.autocast(device_type)`
  picks when you pass no dtype. Autocast wraps the forward pass and the loss only, not backward, and a loss
  is best computed on outputs cast back to float32.
- Why `GradScaler` exists: float16 gradients underflow to zero (and large ones overflow to inf). Scaling the
  loss keeps them representable; when they overflow anyway, `scaler.step` skips the update, which calling
  `optimizer.step()` yourself would not. With bfloat16 scaling is unnecessary. Gradient clipping with a
  scaler must clip the true gradients, not the scaled ones.
- The old spelling `torch.cuda.amp.autocast()` / `torch.cuda.amp.GradScaler()` is deprecated (it warns) and
  CUDA-only. Use `torch.autocast("cuda")` (also spelled `torch.amp.autocast("cuda")`) and
  `torch.amp.GradScaler("cuda")`; the same API covers "cpu".
- `torch.cuda.empty_cache()` only returns cached, unused blocks to the driver; it never frees memory that live
  tensors (or references kept in a list of losses) still hold.

Your tasks
==========
1. `best_device()` - cuda if available, else mps if available, else cpu.
2. `move_to(obj, device)` - a copy of a nested structure of tensors, every tensor moved to `device`.
3. `amp_train_step(model, optimizer, scaler, x, y, device_type, dtype=..., max_norm=...)` - one autocast
   training step: float16 with a GradScaler or bfloat16 without one, gradient clipping optional.
4. `time_per_call(fn, device, warmup=..., repeats=...)` - how long one call takes, GPU work included.
5. `training_memory_bytes(model, optimizer)` - the bytes of parameters, gradients and optimizer state that
   training will hold, worked out without running a step.

Without a GPU the grader still checks most of this: movement on the `meta` device (which holds no data, so
anything that goes through host memory fails), the AMP step on the CPU (bfloat16 and float16 autocast both
exist there), `best_device` with faked availability, the memory estimate against what `torch.optim` really
allocates (and on `meta` models too big to allocate), and `time_per_call` against a simulated GPU: a
stand-in for `torch.cuda` whose kernels finish later than they are queued. The stand-in provides
`torch.cuda.synchronize(device)`, `torch.cuda.Event(enable_timing=True)` (`record`, `synchronize`, `query`,
`elapsed_time`), `torch.cuda.current_stream(device)` / `default_stream(device)` (`synchronize`) and
`torch.cuda.device(...)` as a context manager. Only a GPU can check that the step really uses `device_type`
(float16 autocast for "cuda", not a hard-coded "cpu"), that tensors reach and come back from the GPU, and
the timing of real kernels; those tests carry the `cuda` marker and are skipped on a machine without one.

Follow-up questions
===================
- Why is bfloat16 training usually done without a GradScaler, and when would you still pick float16?
- How do you clip gradients correctly when the loss is scaled by a GradScaler?
- What is the difference between `torch.cuda.memory_allocated()` and `torch.cuda.memory_reserved()`?
- Your training loop is slow although the GPU is mostly idle. What would you look at first?
- How much GPU memory does fine-tuning a 7-billion-parameter model with Adam take, and how would you make
  it fit on one 80 GB GPU?

Grade this kata: `nox -s check -- 10`. Stuck? `nox -s hint -- 10`.
"""

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def best_device() -> torch.device:
    """Return the best device available to this process, as a `torch.device`.

    Preference order: `torch.device("cuda")` when CUDA is available, else `torch.device("mps")` when an
    Apple GPU is available (`torch.backends.mps.is_available()`), else `torch.device("cpu")`. Availability is
    asked at call time, not remembered from an earlier call.
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


def move_to(obj: Any, device: torch.device | str) -> Any:
    """Return `obj` with every tensor inside it moved to `device`.

    Args:
        obj: a tensor, or any nesting of dicts, lists, tuples and named tuples whose leaves may be tensors or
            anything else (numbers, strings, None, arbitrary objects).
        device: where the tensors go, e.g. `torch.device("cuda")`, `"cuda:0"` or `"meta"`.

    Returns:
        - a tensor: the tensor on `device` (as `tensor.to(device)` gives it);
        - a dict, list or tuple: a NEW container of the same kind (`dict`, `list`, `tuple`) holding the
          converted items, keys and order unchanged; subclasses count (an `OrderedDict` is a dict here, and
          may come back as a plain `dict` or as its own class);
        - a named tuple: a new instance of the same named-tuple class, fields converted;
        - anything else (including strings): `obj` itself, unchanged.

    The input is never modified: its containers keep the very objects they held before the call, and its
    tensors stay where they were. Tensors never pass through host memory on the way (a tensor may already
    be on a GPU, or on `meta`, where it has no data).
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


def amp_train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    x: Tensor,
    y: Tensor,
    device_type: str,
    *,
    dtype: torch.dtype | None = None,
    max_norm: float | None = None,
) -> float:
    """One mixed-precision training step of `model` on the batch `(x, y)` with a mean-squared-error loss.

    Args:
        model: a module whose parameters (float32) are on the same device as `x` and `y`; they stay float32.
        optimizer: an optimizer over the model's parameters.
        scaler: a `torch.amp.GradScaler` for `device_type`, enabled or not; or None for no loss scaling,
            which bfloat16 allows and float16 does not.
        x: the input batch; y: the float32 target, shaped like the model's output.
        device_type: `"cuda"` or `"cpu"`, the device the step runs on.
        dtype: the autocast dtype, `torch.float16` or `torch.bfloat16`; None means autocast's default for
            the device: float16 on "cuda", bfloat16 on "cpu".
        max_norm: when given, the gradients are clipped so that their total 2-norm, over all parameters of
            the model together, is at most `max_norm`.

    Graded:
        - The loss is the mean squared error between `y` and the output of `model(x)` run under autocast for
          `device_type` in `dtype`, the output cast to float32 and the loss computed in float32. The
          (unscaled) loss is returned as a Python float.
        - The parameters change exactly as one `optimizer.step()` on the true gradients of that loss would
          change them: gradients left over from earlier steps play no part, and with `max_norm` the true
          gradients are clipped as `torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)` clips
          them. The loss scale never leaks into the update, with or without clipping.
        - With a scaler, the scaler drives the step: backward runs on the loss it scaled, its `step` makes
          the update and it is updated once per call. So when the scaled gradients overflow (inf or nan),
          the parameters do not change on this step and the scaler lowers its scale - with `max_norm` too,
          without an error.
        - Autocast covers the forward pass and the loss only: backward and the update run with autocast
          off, and no autocast is left enabled after the call.
        - The parameters stay float32; `x` and `y` are not modified (values, dtype or `requires_grad`).

    Raises:
        ValueError: for a `dtype` other than float16 or bfloat16, or for float16 with `scaler=None` (float16
            gradients underflow without loss scaling); raised before anything changes.
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


def time_per_call(
    fn: Callable[[], object], device: torch.device | str, *, warmup: int = 3, repeats: int = 10
) -> float:
    """The average time, in seconds, that one call of `fn()` takes on `device`, its device work included.

    Args:
        fn: a function of no arguments; on a CUDA device it may only queue kernels and return at once.
        device: a CPU or CUDA device (`"cpu"`, `"cuda"`, `"cuda:1"`, a `torch.device`); a CUDA device
            without an index means the current CUDA device.
        warmup: untimed calls made first (first calls pay one-time costs); `warmup >= 0`.
        repeats: timed calls; `repeats >= 1`.

    Returns:
        A Python float: the time from the start of the first timed call until all of their work is done,
        divided by `repeats`. `fn` is called exactly `warmup + repeats` times. On a CUDA device the time
        covers the work the timed calls queued on `device`, until it has finished: work queued there
        before (by the caller or by the warm-up calls) is not counted. On the CPU it is wall-clock time
        from a monotonic clock, and no CUDA function is called (it works on a machine without CUDA).
        The current CUDA device is the same after the call as before.

    Raises:
        ValueError: for `warmup < 0`, `repeats < 1` or a device that is neither cpu nor cuda, before `fn`
            is called.
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


def training_memory_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """The bytes that training `model` with `optimizer` holds besides activations, worked out without a step.

    Args:
        model: any module on any device, `meta` included (shapes and dtypes, no storage: a model too big to
            allocate). Its parameters may have different dtypes; some may be frozen (`requires_grad=False`),
            and one parameter may be shared by several submodules.
        optimizer: a `torch.optim.SGD`, `torch.optim.Adam` or `torch.optim.AdamW` (subclasses count) over
            some or all of the model's parameters, in one or more parameter groups with their own options,
            created with its defaults for `foreach`, `fused` and `capturable` while the default dtype is
            float32, and not stepped yet.

    Returns:
        A dict of Python ints:
        - `"parameters"`: the bytes of the model's parameters, each counted once however many modules
          share it;
        - `"gradients"`: the bytes of the `.grad` tensors that one backward pass gives the model, one for
          every parameter that requires grad;
        - `"optimizer_state"`: the bytes of every tensor in `optimizer.state` (scalar ones included) after
          its first `optimizer.step()` in which every parameter of the model that requires grad has a
          gradient: exactly what `torch.optim` allocates then;
        - `"total"`: the sum of the three.
        Buffers and activations are not counted.

    Nothing is changed or allocated in proportion to the model: no step is taken, no gradient or optimizer
    state is created, and a model on `meta` is estimated as it is.

    Raises:
        TypeError: for an optimizer that is not an SGD, Adam or AdamW.
    """
    raise NotImplementedError  # TODO: replace this line with your implementation
