"""Independent alternative solution of kata 10 (GPUs and mixed precision)."""

import copy
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


def amp_train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    x: Tensor,
    y: Tensor,
    device_type: str,
) -> float:
    """Clear grads by hand, autocast the forward only, compute the float32 MSE outside autocast."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = None
    for p in model.parameters():
        p.grad = None
    low = torch.float16 if device_type == "cuda" else torch.bfloat16
    with torch.autocast(device_type=device_type, dtype=low):
        out = model(x)
    diff = out.to(torch.float32) - y.to(torch.float32)
    loss = (diff * diff).mean()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach().cpu())


def gpu_summary() -> dict[str, Any] | None:
    """Name, decimal-GB memory and capability of GPU 0 from the `torch.cuda.get_device_*` helpers."""
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return {
        "name": str(torch.cuda.get_device_name(0)),
        "total_memory_gb": float(torch.cuda.get_device_properties(0).total_memory) / 1e9,
        "capability": (int(major), int(minor)),
    }
