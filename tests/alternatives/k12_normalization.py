"""Independent alternative solution of kata 12 (LayerNorm, RMSNorm and initialisation from scratch)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

NONLINEARITIES: tuple[str, ...] = (
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "selu",
)

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _as_shape(normalized_shape: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(normalized_shape, int):
        return (int(normalized_shape),)
    return tuple(int(size) for size in normalized_shape)


def _flatten_trailing(x: Tensor, shape: tuple[int, ...]) -> Tensor:
    """View `x` as (*leading, prod(shape)) after checking that it ends with `shape`."""
    k = len(shape)
    if x.dim() < k or tuple(x.shape[x.dim() - k :]) != shape:
        raise ValueError(
            f"expected an input of shape (*, {', '.join(map(str, shape))}), got {tuple(x.shape)}"
        )
    return x.reshape(*x.shape[: x.dim() - k], math.prod(shape))


def _sum_of_squares(v: Tensor) -> Tensor:
    """Row-wise dot product of the last dim with itself, keeping that dim as size 1."""
    return torch.einsum("...i,...i->...", v, v).unsqueeze(-1)


class LayerNorm(nn.Module):
    """Hand-written LayerNorm: flatten the normalised dims, centre, divide by sqrt(einsum-based var + eps)."""

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
    ) -> None:
        """Store the settings; create `weight` (ones) and `bias` (zeros) or register them as None."""
        super().__init__()
        self.normalized_shape = _as_shape(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(self.normalized_shape, dtype=torch.float32))
            if bias:
                self.bias = nn.Parameter(torch.zeros(self.normalized_shape, dtype=torch.float32))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        """Normalise over the trailing dims; half precision is computed in float32 and rounded once."""
        flat = _flatten_trailing(x, self.normalized_shape)
        compute = torch.float32 if x.dtype in _LOW_PRECISION else x.dtype
        flat = flat.to(compute)
        n = flat.shape[-1]
        centred = flat - flat.sum(dim=-1, keepdim=True) / n
        variance = _sum_of_squares(centred) / n
        out = centred * torch.rsqrt(variance + self.eps)
        if self.weight is not None:
            out = out * self.weight.reshape(-1).to(compute)
        if self.bias is not None:
            out = out + self.bias.reshape(-1).to(compute)
        return out.reshape(x.shape).to(x.dtype)


class RMSNorm(nn.Module):
    """Hand-written RMSNorm: divide by sqrt(einsum-based mean square + eps), eps defaulting to finfo."""

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float | None = None,
        elementwise_affine: bool = True,
    ) -> None:
        """Store the settings; create `weight` (ones) or register it as None."""
        super().__init__()
        self.normalized_shape = _as_shape(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(self.normalized_shape, dtype=torch.float32))
        else:
            self.register_parameter("weight", None)

    def forward(self, x: Tensor) -> Tensor:
        """Rescale by the root mean square over the trailing dims."""
        flat = _flatten_trailing(x, self.normalized_shape)
        compute = torch.float32 if x.dtype in _LOW_PRECISION else x.dtype
        flat = flat.to(compute)
        eps = torch.finfo(compute).eps if self.eps is None else self.eps
        mean_square = _sum_of_squares(flat) / flat.shape[-1]
        out = flat * torch.rsqrt(mean_square + eps)
        if self.weight is not None:
            out = out * self.weight.reshape(-1).to(compute)
        return out.reshape(x.shape).to(x.dtype)


def fan_in_and_fan_out(tensor: Tensor) -> tuple[int, int]:
    """Read the fans from `tensor.size()` alone."""
    size = tensor.size()
    if len(size) < 2:
        raise ValueError(f"fan in and fan out need a tensor of at least 2 dims, got {len(size)}")
    receptive_field = math.prod(size[2:])
    return int(size[1]) * receptive_field, int(size[0]) * receptive_field


def _gain(nonlinearity: str, param: float) -> float:
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"unknown nonlinearity {nonlinearity!r}")
    special = {
        "tanh": 5.0 / 3.0,
        "relu": math.sqrt(2.0),
        "leaky_relu": math.sqrt(2.0 / (1.0 + float(param) ** 2)),
        "selu": 0.75,
    }
    return special.get(nonlinearity, 1.0)  # linear, sigmoid and every conv variant: 1


def _uniform_like(tensor: Tensor, generator: torch.Generator | None) -> Tensor:
    """U[0, 1) draws shaped like `tensor`, in float32 (float64 for float64 tensors)."""
    dtype = torch.float64 if tensor.dtype == torch.float64 else torch.float32
    return torch.rand(tensor.shape, generator=generator, dtype=dtype, device=tensor.device)


def kaiming_normal_(
    tensor: Tensor,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """He normal init drawn by the Box-Muller transform from two uniform draws, copied in place."""
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    gain = _gain(nonlinearity, a)
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    if tensor.numel() == 0:
        return tensor
    std = gain / math.sqrt(fan_in if mode == "fan_in" else fan_out)
    with torch.no_grad():
        u1 = _uniform_like(tensor, generator)
        u2 = _uniform_like(tensor, generator)
        radius = torch.sqrt(-2.0 * torch.log1p(-u1))  # 1 - u1 lies in (0, 1]: the log is finite
        normal = radius * torch.cos((2.0 * math.pi) * u2)
        tensor.copy_(normal * std)
    return tensor


def xavier_uniform_(tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Glorot uniform init: an affine map of U[0, 1) draws onto [-b, b), copied in place."""
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    if tensor.numel() == 0:
        return tensor
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        u = _uniform_like(tensor, generator)
        tensor.copy_((2.0 * u - 1.0) * bound)
    return tensor


class PreNormBlock(nn.Module):
    """Pre-norm residual MLP block whose output projection starts at zero."""

    def __init__(self, dim: int, hidden: int) -> None:
        """Build `norm`, `fc1` (default random init) and `fc2` (zeroed in place)."""
        super().__init__()
        self.norm = LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        with torch.no_grad():
            self.fc2.weight.fill_(0.0)
            self.fc2.bias.fill_(0.0)

    def forward(self, x: Tensor) -> Tensor:
        """Residual sum of `x` and the MLP branch applied to the normalised `x`."""
        branch = self.fc2(torch.clamp_min(self.fc1(self.norm(x)), 0.0))
        return torch.add(x, branch)


def deep_relu_mlp(in_features: int, width: int, depth: int) -> nn.Sequential:
    """Stack Linear/ReLU pairs; He-normal weights from this module's Box-Muller sampler, zero biases."""
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    layers: list[nn.Module] = []
    for index in range(depth):
        linear = nn.Linear(in_features if index == 0 else width, width)
        kaiming_normal_(linear.weight, nonlinearity="relu")
        with torch.no_grad():
            linear.bias.fill_(0.0)
        layers += [linear, nn.ReLU()]
    return nn.Sequential(*layers)
