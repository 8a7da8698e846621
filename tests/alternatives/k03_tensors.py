"""Independent alternative solution of kata 03 (tensors: shape, dtype, device and memory)."""

import numpy as np
import torch
from torch import Tensor


def tensor_info(t: Tensor) -> dict:
    """Shape, dtype, device, requires_grad, ndim and numel, read from the tensor's metadata only."""
    return {
        "shape": tuple(int(size) for size in t.size()),
        "dtype": t.dtype,
        "device": str(t.device),
        "requires_grad": bool(t.requires_grad),
        "ndim": int(t.dim()),
        "numel": int(t.nelement()),
    }


def to_numpy(t: Tensor) -> np.ndarray:
    """Convert with `Tensor.numpy(force=True)`, which detaches, moves to CPU, resolves conj/neg."""
    return t.numpy(force=True)


def from_numpy_shared(a: np.ndarray) -> Tensor:
    """Wrap `a` with `torch.asarray(..., copy=False)`, which raises rather than silently copying."""
    return torch.asarray(a, copy=False, device="cpu")


def flatten_batch(x: Tensor) -> Tensor:
    """Append a trailing size-1 axis, then flatten everything after the batch axis."""
    return x.unsqueeze(-1).flatten(start_dim=1)


def pairwise_sq_dists(a: Tensor, b: Tensor) -> Tensor:
    """Broadcast the `(N, M, D)` differences and contract them with themselves via `einsum`."""
    diff = a.unsqueeze(1) - b.unsqueeze(0)
    return torch.einsum("nmd,nmd->nm", diff, diff)
