"""GPUs and mixed precision (AMP)

Interview question: How does PyTorch handle GPU computation?

Difficulty 3/5, about 35 minutes, after katas 3 and 7.

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

Mixed precision: under `torch.autocast(device_type)` ops that are safe and fast in low precision (matmul,
convolution, linear) run in a 16-bit dtype; the parameters themselves stay float32. Which ops are cast to
float32 instead is a per-device list. CUDA's is long (softmax, log_softmax, exp, log, sum, layer_norm, most
losses); the CPU's is shorter: under CPU bfloat16 autocast, softmax, sum and layer_norm of a bfloat16
activation return bfloat16 (mse_loss and cross_entropy do return float32). Check `out.dtype` rather than
assume. The default low dtype is float16 on CUDA and bfloat16 on CPU. bfloat16 keeps float32's 8 exponent bits
(same range) but only 8 significant bits, about 2.4 decimal digits; float16 has 11 significant bits (about 3.3
digits) but 5 exponent bits, so it loses precision below 6.1e-5, rounds values much below 6e-8 to zero, and
overflows above 65504. Small gradients therefore vanish in float16. `GradScaler` multiplies the loss by a
large scale S before backward so the gradients are S times larger and survive; `scaler.step(optimizer)`
divides them by S again and skips the update when any is inf or nan; `scaler.update()` halves S after such a
skip and grows it after a run of clean steps.

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
  CUDA stream. Timing GPU code needs `torch.cuda.synchronize()`, or you measure the kernel launch, not the
  work.
- Hidden synchronisations: a loop that calls `.item()` or `.tolist()`, indexes with a boolean mask, or tests
  `if loss.isnan().any():` on every step waits for the GPU each time, and the GPU then idles while Python
  queues the next kernels.
- Autocast dtypes per device: float16 on cuda, bfloat16 on cpu - which is what `torch.autocast(device_type)`
  picks when you pass no dtype. Autocast wraps the forward pass and the loss only, not backward, and a loss
  is best computed on outputs cast back to float32.
- Why `GradScaler` exists: float16 gradients underflow to zero (and large ones overflow to inf). Scaling the
  loss keeps them representable; when they overflow anyway, `scaler.step` skips the update, which calling
  `optimizer.step()` yourself would not. With bfloat16 scaling is usually unnecessary.
- The old spelling `torch.cuda.amp.autocast()` / `torch.cuda.amp.GradScaler()` is deprecated (it warns) and
  CUDA-only. Use `torch.autocast("cuda")` (also spelled `torch.amp.autocast("cuda")`) and
  `torch.amp.GradScaler("cuda")`; the same API covers "cpu".
- `torch.cuda.empty_cache()` only returns cached, unused blocks to the driver; it never frees memory that live
  tensors (or references kept in a list of losses) still hold.

Your tasks
==========
1. `best_device()` - cuda if available, else mps if available, else cpu.
2. `move_to(obj, device)` - a copy of a nested structure of tensors, every tensor moved to `device`.
3. `amp_train_step(model, optimizer, scaler, x, y, device_type)` - one autocast + GradScaler training step.
4. `gpu_summary()` - name, total memory and compute capability of GPU 0, or None without CUDA.

Without a GPU the grader still checks most of this: movement on the `meta` device (which holds no data, so
anything that goes through host memory fails), the AMP step on the CPU with bfloat16, and `best_device` and
`gpu_summary` with faked availability. Only a GPU can check that the step really uses `device_type` (float16
autocast for "cuda", not a hard-coded "cpu") and that tensors reach and come back from the GPU; those tests
carry the `cuda` marker and are skipped on a machine without one.

Follow-up questions
===================
- Why is bfloat16 training usually done without a GradScaler, and when would you still pick float16?
- How do you clip gradients correctly when the loss is scaled by a GradScaler?
- What is the difference between `torch.cuda.memory_allocated()` and `torch.cuda.memory_reserved()`?
- Your training loop is slow although the GPU is mostly idle. What would you look at first?

Grade this kata: `nox -s check -- 10`. Stuck? `nox -s hint -- 10`.
"""

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def best_device() -> torch.device:
    """Return the best device available to this process, as a `torch.device`.

    Preference order: `torch.device("cuda")` when `torch.cuda.is_available()`, else `torch.device("mps")` when
    `torch.backends.mps.is_available()` (Apple GPUs), else `torch.device("cpu")`. Ask those two functions, at
    call time, in that order.
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
    tensors stay where they were.
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


def amp_train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    x: Tensor,
    y: Tensor,
    device_type: str,
) -> float:
    """One mixed-precision training step of `model` on the batch `(x, y)` with a mean-squared-error loss.

    Args:
        model: a module whose parameters (float32) are on the same device as `x` and `y`; they stay float32.
        optimizer: an optimizer over the model's parameters.
        scaler: a `torch.amp.GradScaler` for `device_type`, enabled or not.
        x: the input batch; y: the float32 target, shaped like the model's output.
        device_type: `"cuda"` or `"cpu"`, the device the step runs on.

    The step, in order:
        1. Gradients left over from earlier steps play no part (clear them first).
        2. The forward pass `model(x)` runs under `torch.autocast(device_type)` with dtype float16 on
           "cuda" and bfloat16 on "cpu".
        3. The loss is the mean squared error between the output cast to float32 and `y`, computed in
           float32 (inside the autocast block or after it).
        4. Backward through `scaler.scale(loss)`, then `scaler.step(optimizer)` and `scaler.update()`, all
           three after the autocast block has closed: autocast covers the forward pass and the loss only.

    No autocast is left enabled after the call; `x` and `y` are not modified (values, dtype or
    `requires_grad`).

    Returns:
        The (unscaled) loss as a Python float.

    With an enabled scaler, when the scaled gradients overflow (inf or nan), the parameters do not change on
    this step and the scaler lowers its scale. Use the device-generic `torch.amp`/`torch.autocast` API, not
    the deprecated `torch.cuda.amp` one.
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


def gpu_summary() -> dict[str, Any] | None:
    """Describe CUDA device 0, or return None when `torch.cuda.is_available()` is False.

    Returns:
        None without CUDA; otherwise a dict with (at least) these keys, read from
        `torch.cuda.get_device_properties(0)` (or the `torch.cuda.get_device_*` helpers built on it):

        - `"name"`: the device name, a str (e.g. "NVIDIA H100 80GB HBM3");
        - `"total_memory_gb"`: total memory in decimal gigabytes, `total_memory / 1e9`, as a float;
        - `"capability"`: the compute capability `(major, minor)`, a tuple of two ints (e.g. `(9, 0)`).
    """
    raise NotImplementedError  # TODO: replace this line with your implementation
