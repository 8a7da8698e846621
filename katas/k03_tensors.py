"""Tensors: shape, dtype, device and memory

Interview question: Explain the concept of tensors in PyTorch.

Difficulty 2/5, about 35 minutes, after kata 1.

The idea
========
A tensor is an n-dimensional array of one element type, plus the metadata PyTorch needs to run it fast and
differentiate through it:

- shape (`t.shape`, a `torch.Size`, which is a tuple), `t.ndim` dimensions and `t.numel()` elements;
- dtype (`torch.float32` unless you ask otherwise; `torch.int64` for Python ints);
- device (`cpu`, `cuda:0`, ...): the operands of one operation must share a device (0-dim CPU tensors
  excepted);
- `requires_grad`: whether autograd records the operations that use it.

Under the shape sits a flat block of memory (the storage) and a stride per dimension: how many elements to
skip to move one step along it. Many operations (`t.T`, `t.transpose`, slicing, `expand`, `view`) make a new
tensor over the SAME storage with other strides - no copy. A tensor is "contiguous" when its strides are the
row-major ones for its shape; after a transpose it usually is not. `view` only reinterprets strides, so it
fails when the requested shape cannot be expressed over the existing memory; `reshape` views when it can and
copies when it must.

Broadcasting lines two shapes up from the right; each pair of sizes must be equal, or one of them 1 (a
missing leading dimension counts as 1). Size-1 dimensions are stretched without copying.

NumPy and PyTorch speak to each other cheaply: `torch.from_numpy` and `Tensor.numpy()` share memory on the
CPU, so a write through one is visible through the other.

What interviewers probe
=======================
- `view` vs `reshape`: `view` never copies and raises on a non-contiguous tensor whose layout does not fit
  (e.g. `x.T.view(-1)`); `reshape` copies when it has to, so you cannot rely on it aliasing `x`.
  `.contiguous()` makes a row-major copy (or returns `x` itself when it already is one).
- `reshape(n, -1)` cannot infer `-1` when the tensor has no elements (an empty batch): give the size.
- `torch.from_numpy(a)` shares memory with `a` (so does `Tensor.numpy()`); `torch.tensor(a)` always copies,
  and `torch.Tensor(a)` casts to the default dtype (`torch.get_default_dtype()`, float32 unless someone
  changed it), copying any array that does not have that dtype already.
- `.numpy()` refuses a tensor that requires grad (call `.detach()` first) and a tensor on a GPU (call
  `.cpu()` first); `t.detach().cpu().numpy()` works everywhere (`t.numpy(force=True)` too).
- Broadcasting: shapes are aligned from the RIGHT; `(N, D) - (M, D)` fails when N != M (neither being 1),
  but `(N, 1, D) - (1, M, D)` gives `(N, M, D)`. Broadcasting silently succeeds on shapes you did not
  intend, e.g. `(N,) - (N, 1)` is `(N, N)`.

Your tasks
==========
1. `tensor_info(t)` - the six basic facts about a tensor, as a dict.
2. `to_numpy(t)` - a NumPy array with the values of any tensor (grad-tracking or on a GPU).
3. `from_numpy_shared(a)` - a tensor that shares memory with a NumPy array.
4. `flatten_batch(x)` - `(N, ...)` to `(N, rest)`, also for non-contiguous and empty input.
5. `pairwise_sq_dists(a, b)` - all squared distances between two point sets, by broadcasting.

Follow-up questions
===================
- After `y = x.T`, which of `y.view(-1)`, `y.reshape(-1)`, `y.flatten()` copy memory, and which raise?
- Why does `.numpy()` refuse a tensor that requires grad, and what could go wrong if it did not?
- How much memory does `(N, 1, D) - (1, M, D)` allocate, and how would you compute pairwise distances for
  N = M = 100_000?
- When is a float16 or bfloat16 tensor a good idea, and what changes in the dtype rules when you add one
  to a float32 tensor?

Grading without a GPU
=====================
Device bugs (`.numpy()` without `.cpu()`, `"cuda"` instead of `"cuda:0"`, a result built on the CPU) pass
on a machine without a GPU unless the grader looks for them. It does: `tensor_info`, `to_numpy` and
`pairwise_sq_dists` also get pretend CUDA tensors (they report `cuda:0`, refuse `.numpy()` and refuse to
mix with CPU tensors as real ones do), and `flatten_batch` also runs on the `meta` device (shapes and
dtypes, no memory). The tests marked `cuda` repeat the device checks on a real GPU: only they see real
device memory and transfers.

Grade this kata: `nox -s check -- 3`. Stuck? `nox -s hint -- 3`.
"""

import math

import numpy as np
import torch
from torch import Tensor


def tensor_info(t: Tensor) -> dict:
    """The basic facts about `t`, as a plain dict with exactly these six keys.

    - `"shape"`: the shape as a tuple of ints (a `torch.Size` counts; `()` for a 0-dim tensor);
    - `"dtype"`: the element type as a `torch.dtype` object (not a string, not a NumPy dtype);
    - `"device"`: the device as a plain `str`, spelt as torch prints devices, with the index when there is
      one: `"cpu"`, `"cuda:0"` (never just `"cuda"`), `"meta"`;
    - `"requires_grad"`: a `bool` (exactly), whether autograd tracks `t`: True for a leaf created with
      `requires_grad=True` and for a result computed from one, False for a plain or detached tensor;
    - `"ndim"`: the number of dimensions, a Python `int` (0 for a 0-dim tensor);
    - `"numel"`: the number of elements, a Python `int` (the product of the shape: 1 for a 0-dim tensor, 0
      when any dimension is 0).

    Works for any dtype and any device (`meta` included) and does not change `t`: its values,
    `requires_grad` and `grad_fn` stay as they were.
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


def to_numpy(t: Tensor) -> np.ndarray:
    """`t`'s values as a `numpy.ndarray` with the same shape and the matching NumPy dtype.

    The dtype matches (`torch.float32` -> `numpy.float32`, `torch.int64` -> `numpy.int64`, `torch.bool` ->
    `numpy.bool_`, ...) for every dtype NumPy has (not `bfloat16`). It must also work when `t` requires grad
    (a leaf or the result of an operation) and when `t` lives on a GPU. `t` itself is left as it was: its
    values stay, it still requires grad if it did (and keeps its `grad_fn`), and it stays on its device.
    Whether the array shares memory with a CPU tensor is up to you.
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


def from_numpy_shared(a: np.ndarray) -> Tensor:
    """A CPU tensor over the SAME memory as `a`: same shape, same values, matching dtype.

    Matching dtype: `numpy.float64` gives `torch.float64`, `numpy.int32` gives `torch.int32`, and so on -
    no cast. Sharing: after the call, a write into `a` (e.g. `a[0] = 5`) is seen in the tensor, and an
    in-place write into the tensor is seen in `a`. This holds for non-contiguous arrays too (e.g. `a.T` or
    `a[:, ::2]`); `a` is assumed writable, with non-negative strides and a dtype torch supports.
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


def flatten_batch(x: Tensor) -> Tensor:
    """Keep the first (batch) dimension of `x` and flatten all the others into one.

    `x` has at least one dimension. The result has shape `(x.shape[0], p)` where `p` is the product of
    `x.shape[1:]` (so a 1-D `x` of shape `(N,)` gives `(N, 1)`, and `(0, 3, 4)` gives `(0, 12)`: an empty
    batch works). Row `i` holds the elements of `x[i]` in row-major order (the last index changes fastest).
    It must work on non-contiguous `x` (e.g. a transposed or permuted tensor). The result has `x`'s dtype and
    device (any device, the `meta` device included); whether it shares memory with `x` is up to you. `x`
    itself is not modified: its shape, strides and values stay as they were.
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


def pairwise_sq_dists(a: Tensor, b: Tensor) -> Tensor:
    """All squared Euclidean distances between the rows of `a` and the rows of `b`.

    `a` has shape `(N, D)` and `b` shape `(M, D)`, with the same floating dtype (float32 or float64) and
    device. Returns an `(N, M)` tensor of that dtype on that device with
    `out[i, j] = sum_k (a[i, k] - b[j, k]) ** 2`, i.e. `torch.cdist(a, b) ** 2`, up to rounding at the scale
    of `|a[i]|^2 + |b[j]|^2`. Every entry is `>= 0`: an identical pair of rows gives 0, never a tiny
    negative number from rounding. Vectorised: the number of torch calls made must not grow with N or M
    (no Python loop over rows). Written with tensor arithmetic: `torch.cdist` and `torch.nn.functional`'s
    distance functions may not be called. `a` and `b` are not modified (shape, strides and values).
    """
    raise NotImplementedError  # TODO: replace this line with your implementation
