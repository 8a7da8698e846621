"""Independent alternative solution of kata 05 (torch.Tensor vs torch.tensor and friends)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

_KIND_RANK = {bool: 0, int: 1, float: 2, complex: 3}


def float_tensor(data: bool | int | float | list | tuple) -> Tensor:
    """`torch.as_tensor` straight to the default dtype on the default device: a bare number is data too."""
    # as_tensor (like torch.tensor, unlike the legacy torch.Tensor) never reads an int as a size, and a
    # list is always converted into a new tensor, never aliased.
    return torch.as_tensor(data, dtype=torch.get_default_dtype())


def _highest_kind(data: object) -> int:
    """The highest scalar kind (bool < int < float < complex) in a nested list; -1 when it holds none."""
    if isinstance(data, (list, tuple)):
        return max((_highest_kind(item) for item in data), default=-1)
    for kind in (bool, int, float, complex):  # bool first: it is a subclass of int
        if isinstance(data, kind):
            return _KIND_RANK[kind]
    raise TypeError(f"unsupported element {data!r}")


def inferred_dtype(data: list | tuple) -> torch.dtype:
    """Walk the nesting by hand and apply torch's inference rules, without building a tensor."""
    rank = _highest_kind(data)
    default_float = torch.get_default_dtype()
    if rank == 0:
        return torch.bool
    if rank == 1:
        return torch.int64
    if rank == 3:
        return default_float.to_complex()
    return default_float  # any float, or no elements at all


def detached_copy(t: Tensor, requires_grad: bool = False) -> Tensor:
    """Allocate with `empty_like` and `copy_` into it with autograd off, then set the grad flag."""
    with torch.no_grad():
        out = torch.empty_like(t, memory_format=torch.contiguous_format)
        out.copy_(t)
    return out.requires_grad_(requires_grad)


def copy_and_share(a: np.ndarray) -> tuple[Tensor, Tensor]:
    """`torch.asarray(copy=True)` for the copy, `torch.as_tensor` for the memory-sharing view."""
    copy = torch.asarray(a, copy=True, device="cpu")
    shared = torch.as_tensor(a, device="cpu")
    return copy, shared


def seeded_normal(shape: tuple[int, ...], seed: int) -> Tensor:
    """Reseed the default CPU generator inside `torch.random.fork_rng`, which restores its state on exit."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return torch.randn(tuple(shape), dtype=torch.float32, device="cpu")


def one_hot(labels: Tensor, num_classes: int) -> Tensor:
    """Compare each label with `arange(num_classes)` by broadcasting, after a range check."""
    if bool(((labels < 0) | (labels >= num_classes)).any()):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    classes = torch.arange(num_classes, device=labels.device, dtype=labels.dtype)
    return (labels.unsqueeze(1) == classes).to(torch.float32)


def constant_like(t: Tensor, value: float) -> Tensor:
    """Allocate with `empty_like` (values never read) and `fill_` with `value`."""
    return torch.empty_like(t).fill_(value)
