"""Independent alternative solution of kata 14 (tensor puzzles: broadcasting, scatter, einsum, unfold)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def band_mask(n: int, before: int, after: int, device: torch.device | str | None = None) -> Tensor:
    """Centre/half-width band test `|2 (j - i) - (lo + hi)| <= hi - lo`, lo = -before, hi = after."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    # Offsets j - i lie in [-(n - 1), n - 1]: clamping the bounds to [-n, n] keeps every answer the same
    # (and an empty band stays empty) while keeping arbitrary Python ints inside int64.
    lo = max(-n, min(n, -before))
    hi = max(-n, min(n, after))
    pos = torch.arange(n, device=device if device is not None else "cpu")
    offset = pos.unsqueeze(0) - pos.unsqueeze(1)  # offset[i, j] = j - i
    return (2 * offset - (lo + hi)).abs() <= (hi - lo)


def pick_targets(values: Tensor, targets: Tensor) -> Tensor:
    """Flat linear indices `row * C + target` read with `torch.take` (shaped like `targets`)."""
    num_classes = values.shape[-1]
    rows = torch.arange(targets.numel(), device=values.device, dtype=torch.int64).reshape(targets.shape)
    return torch.take(values, rows * num_classes + targets.to(values.device))


def segment_sum(values: Tensor, segment_ids: Tensor, num_segments: int) -> Tensor:
    """Accumulating `index_put_` into a zero tensor of `num_segments` rows."""
    out = torch.zeros((num_segments, *values.shape[1:]), dtype=values.dtype, device=values.device)
    return out.index_put_((segment_ids,), values, accumulate=True)


def pairwise_bilinear(x: Tensor, weight: Tensor, y: Tensor) -> Tensor:
    """Two broadcast batched matmuls: `(x[:, None] @ weight[None]) @ y[:, None].mT`."""
    left = torch.matmul(x.unsqueeze(1), weight.unsqueeze(0))  # (B, K, N, E)
    return torch.matmul(left, y.unsqueeze(1).transpose(-1, -2))  # (B, K, N, M)


def moving_average(x: Tensor, window: int, stride: int = 1) -> Tensor:
    """Windows as an explicit `as_strided` view of a contiguous copy, then a mean over the window axis."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    length = x.shape[-1]
    if window > length:
        raise ValueError(f"window {window} is longer than the last dimension {length}")
    num_windows = (length - window) // stride + 1
    xc = x.contiguous()
    lead_strides = xc.stride()[:-1]
    last = xc.stride()[-1]
    windows = xc.as_strided(
        (*xc.shape[:-1], num_windows, window),
        (*lead_strides, stride * last, last),
        xc.storage_offset(),
    )
    return windows.mean(dim=-1)


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a pair, got {value!r}")
    return pair[0], pair[1]


def conv2d_im2col(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
) -> Tensor:
    """Pad, take windows with two `Tensor.unfold` calls (dilation by slicing), contract with einsum."""
    if x.dim() != 4 or weight.dim() != 4:
        raise ValueError("x and weight must both be 4-D")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    n, c, h, w = x.shape
    o, c_per_group, kh, kw = weight.shape
    if c != groups * c_per_group:
        raise ValueError(f"x has {c} channels, weight expects {groups} * {c_per_group}")
    if o % groups != 0:
        raise ValueError(f"{o} output channels are not divisible by groups={groups}")
    if bias is not None and tuple(bias.shape) != (o,):
        raise ValueError(f"bias must have shape ({o},), got {tuple(bias.shape)}")
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    dh, dw = _pair(dilation, "dilation")
    span_h = dh * (kh - 1) + 1
    span_w = dw * (kw - 1) + 1
    h_out = (h + 2 * ph - span_h) // sh + 1
    w_out = (w + 2 * pw - span_w) // sw + 1
    if h_out < 1 or w_out < 1:
        raise ValueError(f"output would be {h_out} x {w_out}")

    padded = F.pad(x, (pw, pw, ph, ph)) if (ph or pw) else x
    # (N, C, H_out, W_out, span_h, span_w) -> keep every dilation-th tap: (N, C, H_out, W_out, kh, kw).
    patches = padded.unfold(2, span_h, sh).unfold(3, span_w, sw)[..., ::dh, ::dw]
    patches = patches.reshape(n, groups, c_per_group, h_out, w_out, kh, kw)
    kernels = weight.reshape(groups, o // groups, c_per_group, kh, kw)
    out = torch.einsum("ngcyxij,gocij->ngoyx", patches, kernels).reshape(n, o, h_out, w_out)
    if bias is not None:
        out = out + bias.reshape(1, o, 1, 1)
    return out
