"""Independent alternative solution of kata 05 (torch.Tensor vs torch.tensor and friends)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

_KIND_RANK = {bool: 0, int: 1, float: 2, complex: 3}


def legacy_equivalent(data: list) -> Tensor:
    """Build the float32 CPU tensor with `torch.asarray`, forcing a copy and the legacy dtype."""
    return torch.asarray(data, dtype=torch.float32, device="cpu", copy=True)


def _highest_kind(data: object) -> int:
    """The highest scalar kind (bool < int < float < complex) in a nested list; -1 when it holds none."""
    if isinstance(data, (list, tuple)):
        return max((_highest_kind(item) for item in data), default=-1)
    for kind in (bool, int, float, complex):  # bool first: it is a subclass of int
        if isinstance(data, kind):
            return _KIND_RANK[kind]
    raise TypeError(f"unsupported element {data!r}")


def inferred_dtype(data: list) -> torch.dtype:
    """Walk the list by hand and apply torch's inference rules, without building a tensor."""
    rank = _highest_kind(data)
    default_float = torch.get_default_dtype()
    if rank == 0:
        return torch.bool
    if rank == 1:
        return torch.int64
    if rank == 3:
        return torch.complex128 if default_float == torch.float64 else torch.complex64
    return default_float  # any float, or no elements at all


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
