"""Independent alternative solution of kata 10 (GPUs and mixed precision)."""

import copy
import math
import time
from collections.abc import Callable
from functools import singledispatch
from typing import Any

import torch
from torch import Tensor, nn


def best_device() -> torch.device:
    """Ask CUDA, then MPS, at call time; fall back to the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@singledispatch
def _move(obj: Any, device: torch.device | str) -> Any:
    """Leaves that are not tensors or containers come back unchanged."""
    return obj


@_move.register
def _(obj: Tensor, device: torch.device | str) -> Any:
    return obj.to(device)


@_move.register
def _(obj: dict, device: torch.device | str) -> Any:
    out = copy.copy(obj)  # a new container of the same class, same key order
    for key in out:
        out[key] = _move(out[key], device)
    return out


@_move.register
def _(obj: list, device: torch.device | str) -> Any:
    out = copy.copy(obj)
    out[:] = [_move(item, device) for item in obj]
    return out


@_move.register
def _(obj: tuple, device: torch.device | str) -> Any:
    items = [_move(item, device) for item in obj]
    if type(obj) is tuple:
        return tuple(items)
    if hasattr(type(obj), "_fields"):
        return type(obj)(*items)
    return type(obj)(items)


def move_to(obj: Any, device: torch.device | str) -> Any:
    """Rebuild nested dicts/lists/tuples/named tuples with `functools.singledispatch`, moving every tensor."""
    return _move(obj, device)


_LOW_DTYPES = (torch.float16, torch.bfloat16)


def _clip_total_norm_(params: list[nn.Parameter], max_norm: float) -> None:
    """Scale the gradients in place so that their joint 2-norm is at most `max_norm` (no clip_grad_norm_)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    # The norm of the per-tensor norms is the norm of everything concatenated.
    per_tensor = torch.stack([torch.linalg.vector_norm(g.detach(), 2).to(torch.float32) for g in grads])
    total = torch.linalg.vector_norm(per_tensor, 2)
    factor = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    with torch.no_grad():
        for g in grads:
            g.mul_(factor.to(device=g.device, dtype=g.dtype))


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
    """Validate first, autocast only the forward, hand-written float32 MSE and gradient clipping."""
    low = dtype
    if low is None:
        low = torch.float16 if device_type == "cuda" else torch.bfloat16
    if low not in _LOW_DTYPES:
        raise ValueError(f"autocast dtype must be float16 or bfloat16, got {low}")
    if scaler is None and low is torch.float16:
        raise ValueError("float16 autocast needs a GradScaler: its gradients underflow without loss scaling")

    params = list(model.parameters())
    for p in params:  # drop stale gradients by hand instead of optimizer.zero_grad()
        p.grad = None
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = None

    with torch.autocast(device_type=device_type, dtype=low):
        out = model(x)
    diff = out.to(torch.float32) - y.to(torch.float32)
    loss = (diff * diff).mean()

    if scaler is None:
        loss.backward()
        if max_norm is not None:
            _clip_total_norm_(params, max_norm)
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        if max_norm is not None:
            scaler.unscale_(optimizer)  # clip the true gradients; the scaler remembers any inf it saw
            _clip_total_norm_(params, max_norm)
        scaler.step(optimizer)
        scaler.update()
    return loss.detach().cpu().item()


def time_per_call(
    fn: Callable[[], object], device: torch.device | str, *, warmup: int = 3, repeats: int = 10
) -> float:
    """Synchronise the whole device at both ends around a `perf_counter_ns` window (no CUDA events)."""
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    dev = torch.device(device)
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"time_per_call supports cpu and cuda devices, got {dev}")
    on_gpu = dev.type == "cuda"

    for _ in range(warmup):
        fn()
    if on_gpu:
        torch.cuda.synchronize(dev)  # warm-up and earlier work must be finished before the clock starts
    start = time.perf_counter_ns()
    for _ in range(repeats):
        fn()
    if on_gpu:
        torch.cuda.synchronize(dev)
    elapsed_ns = time.perf_counter_ns() - start
    return elapsed_ns / 1e9 / repeats


def _nbytes(p: Tensor) -> int:
    """Bytes of a tensor from its shape and dtype only (works on `meta`)."""
    return math.prod(p.shape) * p.dtype.itemsize


def training_memory_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Dedupe parameters by identity, then count per-group optimizer state from shapes and dtypes."""
    if isinstance(optimizer, torch.optim.SGD):
        kind = "sgd"
    elif isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        kind = "adam"
    else:
        raise TypeError(f"expected SGD, Adam or AdamW, got {type(optimizer).__name__}")

    unique: dict[int, Tensor] = {}
    for module in model.modules():
        for p in module._parameters.values():
            if p is not None:
                unique.setdefault(id(p), p)

    param_bytes = sum(_nbytes(p) for p in unique.values())
    grad_bytes = sum(_nbytes(p) for p in unique.values() if p.requires_grad)

    # Adam's "step" is a 0-dim tensor: float64 under a float64 default dtype, float32 otherwise.
    scalar_step = 8 if torch.get_default_dtype() == torch.float64 else 4
    state_bytes = 0
    for group in optimizer.param_groups:
        for p in group["params"]:
            if not p.requires_grad:
                continue  # never gets a gradient, so the optimizer never creates state for it
            if kind == "sgd":
                if group["momentum"] != 0:
                    state_bytes += _nbytes(p)
            else:
                copies = 3 if group.get("amsgrad", False) else 2
                state_bytes += copies * _nbytes(p) + scalar_step

    return {
        "parameters": param_bytes,
        "gradients": grad_bytes,
        "optimizer_state": state_bytes,
        "total": param_bytes + grad_bytes + state_bytes,
    }
