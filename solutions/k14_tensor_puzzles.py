"""Tensor puzzles: broadcasting, gather/scatter, einsum and unfold

Interview question: How do broadcasting, gather/scatter, einsum and unfold replace Python loops?

Difficulty 3/5, about 70 minutes, after kata 3.

The idea
========
A Python loop over rows launches one small operation per row: on a GPU each is a kernel launch of a few
microseconds plus the interpreter's overhead, so a loop over 10_000 rows costs tens of milliseconds for
work one kernel does in microseconds. The cure is to phrase the whole computation as a handful of tensor
operations whose number does not depend on the data size. Four tools cover almost every puzzle:

Broadcasting builds an "outer" operation from two aranges. `i = arange(n)[:, None]` (a column) and
`j = arange(n)[None, :]` (a row) broadcast to an (n, n) grid, so `j <= i` is a causal mask and
`(i - j).abs() <= w` a band, built without allocating either index grid and without `tril`. Shapes align
from the right; a size-1 dimension is stretched without a copy (its stride is 0).

gather and scatter are indexing along one dimension. `out = src.gather(dim, idx)` reads
`out[i][j] = src[i][idx[i][j]]` for dim=1: `idx` has the output's shape (same number of dimensions as
`src`), which is why picking one entry per row needs `idx.unsqueeze(-1)` and a `squeeze(-1)` after. It is
how you take the log-probability of each target from an (N, C) table. The mirror image writes:
`out.scatter_(dim, idx, src)` puts `src[i][j]` at `out[i][idx[i][j]]`, and when two entries go to the same
place one of them wins (which one is undefined), while `scatter_add_` and `index_add_` ADD them. A sum
per group id ("segment sum", the heart of graph neural networks and of `torch.bincount` with weights)
is `zeros(num_groups, ...).index_add_(0, ids, values)`: rows whose id never occurs stay 0, and the
output has `num_groups` rows however many ids actually occur. On a GPU both accumulate with atomic adds,
so float sums can differ in the last bits from run to run; `torch.use_deterministic_algorithms(True)`
switches `scatter_add_` and `index_add_` on CUDA to a deterministic (slower) kernel.

einsum names every axis once and states the result: `einsum("bnd,kde,bme->bknm", x, W, y)` is a bilinear
score for every batch, relation and pair of items, with no transposes or reshapes to get wrong. Letters
missing from the output are summed. With three or more operands torch contracts from left to right
unless the `opt_einsum` package is installed, in which case it picks a cheaper order.

unfold turns sliding windows into an extra dimension without copying: `x.unfold(dim, size, step)` is a
strided VIEW with `(L - size) // step + 1` windows (the last incomplete window is dropped), so a moving
average is a `mean` over the new last dimension. `F.unfold(x, kernel_size, dilation, padding, stride)`
is the 2-D version for images ("im2col"): from (N, C, H, W) it builds (N, C * kh * kw, L), one column
per output position, where L = H_out * W_out and

    H_out = (H + 2 * padding - dilation * (kh - 1) - 1) // stride + 1      (and the same for W).

Its rows run over channels first, then kernel rows, then kernel columns: the order of
`weight.reshape(O, C * kh * kw)`. A convolution is then one matrix product between the flattened kernels
and the columns, and with `groups` each group of C / groups input channels meets only its own O / groups
kernels. torch's "convolution" is cross-correlation: the kernel is NOT flipped. The columns copy every
input pixel about kh * kw times (for stride 1), which is why fast libraries prefer implicit GEMM,
Winograd or FFT kernels, but im2col is still the clearest way to see what a convolution computes.

What interviewers probe
=======================
- gather's index must have the same number of dimensions as the source: `src.gather(1, idx[:, None])`,
  and gathering along the wrong dim of a square (N, N) tensor runs and gives wrong numbers.
- `scatter_` vs `scatter_add_`: with repeated ids the first keeps one value, the second sums; and a segment
  sum must return `num_groups` rows even when the last groups are empty (not `ids.max() + 1`).
- `log_probs * one_hot(targets)` then `.sum(-1)` is NOT the same as gathering: `-inf * 0` is nan.
- Broadcast masks: `arange(n)[:, None] >= arange(n)[None, :]` is lower-triangular (row = query, column =
  key); swapping the two gives the transposed, "future-looking" mask.
- Windows: `(L - size) // step + 1` of them, and unfolding a flattened batch mixes neighbouring rows.
- im2col channel order (C outer, then kh, then kw), the output-size formula, which padding/stride/
  dilation goes with height and which with width, kernel not flipped, bias added per output channel.
- The cost of the vectorised form: a broadcast or an unfold view is free, but `(N, 1, D) - (1, M, D)` or
  the im2col columns materialise a tensor kh * kw (or D) times bigger than the inputs.

Your tasks
==========
1. `band_mask(n, before, after, device)` - an (n, n) boolean band mask (causal, sliding window).
2. `pick_targets(values, targets)` - one entry per row along the last dimension (the log-prob of each target).
3. `segment_sum(values, segment_ids, num_segments)` - sums per group id, empty groups included.
4. `pairwise_bilinear(x, weight, y)` - a bilinear score for every batch, relation and pair, with einsum.
5. `moving_average(x, window, stride)` - means over sliding windows of the last dimension.
6. `conv2d_im2col(x, weight, bias, stride, padding, dilation, groups)` - `F.conv2d` rebuilt from unfold.

Follow-up questions
===================
- Why is a Python loop over rows slow on a GPU even when every iteration is a single tensor operation, and
  how would you prove the vectorised version is faster?
- What is the difference between `scatter_`, `scatter_add_`, `index_add_` and `index_put_(...,
  accumulate=True)`, and are they deterministic on a GPU?
- How much memory does im2col need compared with the input, and what do cuDNN and other fast convolution
  libraries do instead?
- PyTorch's `conv2d` computes a cross-correlation. Does that matter for a network that learns its kernels,
  and when does it matter?
- How would you compute the gradient of conv2d with respect to its input using `unfold` and `fold`?
- When is `torch.einsum` slower than an explicit `matmul`/`bmm`, and how does torch order a contraction of
  three operands?

Grade this kata: `nox -s check -- 14`. Stuck? `nox -s hint -- 14`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def band_mask(n: int, before: int, after: int, device: torch.device | str | None = None) -> Tensor:
    """An `(n, n)` boolean band mask: row i (a query position) may see column j (a key position) when
    `i - before <= j <= i + after`.

    Returns a `torch.bool` tensor of shape `(n, n)` on `device` (the CPU when None; any device, the `meta`
    device included) with `mask[i, j] == (i - before <= j <= i + after)`. `before` and `after` are any
    Python ints, negative ones included: `band_mask(n, n, 0)` is the causal mask (lower triangle with the
    diagonal), `band_mask(n, n, -1)` the strictly lower triangle, `band_mask(n, w - 1, 0)` a causal sliding
    window of width w, and a band with `-before > after` is all False. `n = 0` gives a `(0, 0)` tensor;
    raises `ValueError` for a negative `n`.

    Built by broadcasting: `torch.tril`, `torch.triu`, `torch.tril_indices`, `torch.triu_indices` and their
    Tensor-method and in-place forms may not be called, and the number of torch calls made must not grow
    with `n` (no Python loop over rows).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    pos = torch.arange(n, device=device)
    offset = pos[None, :] - pos[:, None]  # offset[i, j] = j - i
    return (offset >= -before) & (offset <= after)


def pick_targets(values: Tensor, targets: Tensor) -> Tensor:
    """For every position of the batch, the entry of `values` that `targets` names along the last dimension.

    `values` has shape `(*B, C)` (at least one dimension; B may be empty and may contain zeros) and any
    dtype; `targets` is an int64 tensor of shape `B` exactly (`values.shape[:-1]`) with entries in
    `[0, C)`. Returns a tensor of shape `B` with `values`' dtype and device and
    `out[b] = values[b][targets[b]]` for every index tuple b: for log-probabilities `(N, C)` and class
    targets `(N,)`, the log-probability of each target. Exact: the result holds copies of entries of
    `values`, so entries that are not picked (`-inf`, `inf` or `nan` included) have no effect on it.

    When `values` requires grad the result is differentiable with respect to it: the gradient of
    `out.sum()` is 1 at every picked entry and 0 elsewhere. The number of torch calls made must not grow
    with the sizes of `values` (no Python loop). `values` and `targets` are not modified (shape, strides,
    values).
    """
    return values.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def segment_sum(values: Tensor, segment_ids: Tensor, num_segments: int) -> Tensor:
    """The sum of the rows of `values` in each segment (group) `0 .. num_segments - 1`.

    `values` has shape `(N, *F)` (N may be 0; F any trailing shape) and a floating or integer dtype (not
    bool); `segment_ids` is an int64 tensor of shape `(N,)`, on `values`' device, with entries in
    `[0, num_segments)`, in any order, repeats included; `num_segments >= 1`. Returns a tensor of shape
    `(num_segments, *F)` with `values`' dtype and device, where `out[g]` is the sum of every `values[i]`
    with `segment_ids[i] == g`, and exactly 0 for a segment no row belongs to (wherever it is: first, in
    the middle, last, or all of them when N is 0). Integer dtypes give exact sums; floating ones are
    compared at float rounding (any summation order).

    The number of torch calls made must not grow with N or `num_segments` (no Python loop over rows or
    segments), and `torch.bincount` and `torch.segment_reduce` may not be called. `values` and
    `segment_ids` are not modified.
    """
    out = torch.zeros((num_segments, *values.shape[1:]), dtype=values.dtype, device=values.device)
    return out.index_add_(0, segment_ids, values)


def pairwise_bilinear(x: Tensor, weight: Tensor, y: Tensor) -> Tensor:
    """A bilinear score for every batch b, relation k, left item n and right item m.

    `x` has shape `(B, N, D)`, `weight` `(K, D, E)` and `y` `(B, M, E)`, all of one floating dtype
    (float32 or float64) on one device. Returns a tensor of shape `(B, K, N, M)`, with that dtype and
    device, where

        out[b, k, n, m] = sum over d, e of x[b, n, d] * weight[k, d, e] * y[b, m, e],

    i.e. `x[b, n] @ weight[k] @ y[b, m]`. Compared with a float64 computation at a tolerance relative to
    the size of the terms (float32: 1e-5). The number of torch calls made must not grow with B, K, N, M, D
    or E (no Python loop), and no function whose name contains `bilinear` may be called
    (`torch.bilinear`, `F.bilinear`, `nn.Bilinear`). The inputs are not modified.
    """
    return torch.einsum("bnd,kde,bme->bknm", x, weight, y)


def moving_average(x: Tensor, window: int, stride: int = 1) -> Tensor:
    """Means over sliding windows of `x`'s last dimension, for every row of the leading dimensions.

    `x` has shape `(*B, L)` (at least one dimension) and a floating dtype; `window` and `stride` are
    ints. Returns a tensor of shape `(*B, T)` with `x`'s dtype and device, where
    `T = (L - window) // stride + 1` (only complete windows: no padding) and

        out[..., t] = mean of x[..., t * stride : t * stride + window].

    Each row of B is averaged on its own: no window spans two rows. Raises `ValueError` when
    `window < 1`, `stride < 1` or `window > L`. Compared with a float64 mean at float rounding.

    The number of torch calls made must not grow with the shape of `x`, `window` or `stride` (no Python
    loop over windows or window offsets), and no function whose name contains `pool` or `conv` may be
    called (`F.avg_pool1d`, `F.conv1d`, ...). `x` is not modified.
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got window={window}, stride={stride}")
    if window > x.shape[-1]:
        raise ValueError(f"window {window} is longer than the last dimension ({x.shape[-1]})")
    return x.unfold(-1, window, stride).mean(dim=-1)


def conv2d_im2col(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
) -> Tensor:
    """A 2-D convolution equal to `F.conv2d(x, weight, bias, stride, padding, dilation, groups)`.

    - `x` is `(N, C, H, W)` (N may be 0) and `weight` `(O, C // groups, kh, kw)`, both float32 or float64
      with one dtype, on one device; `bias` is None or a tensor of shape `(O,)` of that dtype and device.
    - `stride`, `padding` and `dilation` are each an int (both dimensions) or a pair `(height, width)`;
      stride and dilation >= 1, padding >= 0, zero padding on both sides of each dimension.
    - Returns `(N, O, H_out, W_out)` with `x`'s dtype and device, equal to `F.conv2d` with the same
      arguments: a cross-correlation (the kernel is not flipped), output channel o of group
      `o // (O // groups)` seeing only input channels of that group, `bias[o]` added to every output
      position of channel o. Compared with `F.conv2d` computed in float64 (float32 inputs: rtol 1e-4 and
      an atol relative to the size of the terms).
    - Raises `ValueError` when x or weight is not 4-D, `groups < 1`, `C != groups * weight.shape[1]`,
      O is not divisible by `groups`, `bias` is given with a shape other than `(O,)`, or the output would
      have a height or width below 1.
    - Written with unfold (`F.unfold` / `Tensor.unfold`) and tensor algebra: no function whose name
      contains `conv` may be called (`F.conv2d`, `torch.conv2d`, `F.conv1d`, `F.conv3d`, `nn.Conv2d`,
      `torch.convolution`, the transposed convolutions ...), and the number of torch calls made must not
      grow with N, C, H, W, O, the kernel size or `groups` (no Python loop over images, channels, kernel
      positions or groups).
    - `x`, `weight` and `bias` are not modified.
    """
    if x.dim() != 4 or weight.dim() != 4:
        raise ValueError(f"x and weight must be 4-D, got shapes {tuple(x.shape)} and {tuple(weight.shape)}")
    n, c, h, w = x.shape
    o, c_per_group, kh, kw = weight.shape
    if groups < 1 or c != groups * c_per_group or o % groups != 0:
        raise ValueError(
            f"x has {c} channels and weight is {tuple(weight.shape)}: with groups={groups} need "
            f"C == groups * weight.shape[1] and O divisible by groups"
        )
    if bias is not None and tuple(bias.shape) != (o,):
        raise ValueError(f"bias must have shape ({o},), got {tuple(bias.shape)}")
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    h_out = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    w_out = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if h_out < 1 or w_out < 1:
        raise ValueError(f"the output would be {h_out} x {w_out}: the kernel does not fit the padded input")
    # (N, C * kh * kw, L): channel-major rows, the order of weight.reshape(O, C // groups * kh * kw).
    cols = F.unfold(x, (kh, kw), dilation=(dh, dw), padding=(ph, pw), stride=(sh, sw))
    cols = cols.reshape(n, groups, c_per_group * kh * kw, h_out * w_out)
    kernels = weight.reshape(groups, o // groups, c_per_group * kh * kw)
    out = torch.einsum("gok,ngkl->ngol", kernels, cols).reshape(n, o, h_out, w_out)
    if bias is not None:
        out = out + bias.reshape(1, o, 1, 1)
    return out
