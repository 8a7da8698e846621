"""torch.Tensor vs torch.tensor and friends

Interview question: What is the difference between torch.Tensor and torch.tensor?

Difficulty 2/5, about 30 minutes, after kata 3.

The idea
========
`torch.Tensor` is the tensor *class*. Calling it directly is the legacy constructor, and it overloads two
very different meanings on its arguments: a sequence is read as *data*, but bare integers are read as a
*shape*. Data (a list, or a numpy array) is converted to the default floating dtype,
`torch.get_default_dtype()` (float32 unless someone called `torch.set_default_dtype`), so integers and bools
are silently converted.
Handed an existing tensor it converts nothing and copies nothing: it returns an alias of that tensor, with
the tensor's own dtype whatever it is (an int64 tensor gives an int64 alias). Handed a numpy array that
already has the default dtype, it shares the array's memory; any other array is copied and converted.

`torch.tensor` is a *factory function*: its argument is always data, it always copies, and it infers the dtype
from the Python values (bool -> torch.bool, int -> torch.int64, float -> the default dtype (float32 by
default), complex -> the default dtype's complex partner (complex64 by default); a mix promotes to the
widest kind present). Pass `dtype=` and `device=` to say exactly what you want.

The rest of the family follows one pattern: a factory says what to build, plus `dtype`, `device` and
(for random numbers) `generator`. `torch.zeros/ones/full/empty/arange/randn` build from a shape;
`torch.zeros_like/full_like/...` build "a tensor like t" (same shape, dtype, device). `torch.from_numpy` and
`torch.as_tensor` share memory with a numpy array where they can; `torch.tensor` never does.

Randomness: `torch.manual_seed` reseeds the *global* generators, which every other caller shares: the
CPU's and every GPU's (CUDA, MPS, XPU, ...), all at once. Saving `torch.get_rng_state()` and restoring it
afterwards undoes the CPU part only; the GPUs stay reseeded. A local `torch.Generator` gives a reproducible
stream without touching anyone else's.

What interviewers probe
=======================
- `torch.Tensor(3)` is an uninitialised tensor of length 3 (whatever bytes were in memory), not `[3.]`;
  `torch.Tensor([3])` is `[3.]`. One pair of brackets changes data into a shape.
- `torch.Tensor([1, 2])` is float32 `[1., 2.]`; `torch.tensor([1, 2])` is int64. Integer labels built with the
  legacy constructor become floats and then break `cross_entropy` or indexing.
- Sharing surprises: `torch.Tensor(t)` for a tensor `t` of any dtype returns an alias with `t`'s dtype
  (writing one writes the other; an int64 `t` stays int64); `torch.Tensor(a)` shares memory with a numpy
  array of the default dtype (float32) but silently copies (and converts) any other, a float64 one say.
  `torch.tensor(...)` always copies; `torch.from_numpy(a)` always shares.
- dtype inference: Python floats are doubles, yet `torch.tensor([1.0])` is float32 (the default dtype;
  after `torch.set_default_dtype(torch.float64)` it is float64); `bool` is a subclass of `int`, yet
  `[True]` infers torch.bool; `[1, 2.5]` promotes to float32, `[1, 2j]` to complex64; an empty list gives
  the default dtype. A numpy float64 array keeps float64.
- Reproducibility without side effects: `torch.manual_seed` inside a helper changes the random numbers
  of every caller after it, on every device. Use `torch.Generator().manual_seed(seed)` and pass
  `generator=`.
- "Like" factories keep dtype and device; plain factories do not: `torch.full(t.shape, v)` takes its
  dtype from `v` (int64 for `3`, the default float dtype for `3.0`, bool for `True`), not from `t`, and
  lands on the default device (the CPU) whatever `t`'s device.

Your tasks
==========
1. `legacy_equivalent(data)` - the tensor `torch.Tensor(data)` gives for a list of numbers.
2. `inferred_dtype(data)` - the dtype `torch.tensor(data)` infers.
3. `copy_and_share(a)` - one tensor that copies a numpy array, one that shares its memory.
4. `seeded_normal(shape, seed)` - reproducible standard-normal numbers that leave the global RNG alone.
5. `one_hot(labels, num_classes)` - float32 one-hot rows on the labels' device, with range checks.
6. `constant_like(t, value)` - a tensor like `t` filled with `value`.

Follow-up questions
===================
- Why might `torch.as_tensor(a)` copy even though it "shares when it can"? Name two cases.
- What does `torch.tensor(t)` do when `t` is already a tensor, and what does PyTorch recommend instead?
- How would you make data loading reproducible across several DataLoader worker processes?
- When is `torch.empty` the right choice, and what goes wrong if you read from it first?

Grading without a GPU
=====================
Device bugs pass on a machine without a GPU unless the grader looks for them. It does: `one_hot` also gets
pretend CUDA labels (they report `cuda:0` and refuse to mix with CPU tensors as real ones do), `seeded_normal`
also runs with a pretend GPU generator (so reseeding the GPUs shows), and `constant_like` also runs on the
`meta` device. The tests marked `cuda` repeat the checks on a real GPU: only they see real device memory and
real GPU generators.

Grade this kata: `nox -s check -- 5`. Stuck? `nox -s hint -- 5`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def legacy_equivalent(data: list) -> Tensor:
    """Return what the legacy constructor `torch.Tensor(data)` returns for a (nested) list of numbers.

    Args:
        data: a list, possibly nested (rectangular), of Python bools, ints and floats, e.g. `[1, 2]`,
            `[[1, 2.5], [3, 4]]`, `[3]` or `[]`.

    Returns:
        A new float32 CPU tensor (float32 being the default dtype, which the grader leaves in place) that
        does not require grad, holding those values, with the shape of the nesting: `[1, 2]` gives
        float32 `[1., 2.]` of shape `(2,)`, `[3]` gives `[3.]` of shape `(1,)` (a value, not a length),
        `[]` gives an empty tensor of shape `(0,)`. Integers and bools become floats (True -> 1.0).
        `data` is not modified.
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


def inferred_dtype(data: list) -> torch.dtype:
    """Return the dtype that `torch.tensor(data)` infers for a (nested) list of Python scalars.

    With torch's default dtype left at float32 (as the grader leaves it):

    - only bools -> `torch.bool`;
    - ints (and possibly bools) -> `torch.int64`;
    - any float, none complex -> `torch.float32` (the default dtype);
    - any complex -> `torch.complex64` (the default dtype's complex partner);
    - the empty list `[]` -> `torch.float32` (the default dtype).

    Args:
        data: a list, possibly nested (rectangular), of Python bools, ints, floats and complex numbers.
            It is not modified.

    Returns:
        A `torch.dtype` object (not its name as a string), one of the four above.
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


def copy_and_share(a: np.ndarray) -> tuple[Tensor, Tensor]:
    """Return `(copy, shared)`, two CPU tensors made from the numpy array `a`.

    Both have `a`'s shape, dtype (float64 stays float64, int32 stays int32) and values.
    `copy` owns its own memory: writing to `a` afterwards does not change it, and writing to it does not
    change `a`. `shared` shares `a`'s memory: a write through either one is seen by the other.

    Args:
        a: a writable, C-contiguous numpy array whose dtype torch supports (e.g. float32, float64, int32,
            int64, uint8).

    Returns:
        The tuple `(copy, shared)`. `a` itself is not modified.
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


def seeded_normal(shape: tuple[int, ...], seed: int) -> Tensor:
    """Return standard-normal (mean 0, std 1) float32 random numbers on the CPU, reproducible by `seed`.

    - The result has exactly `shape` (`()` gives a 0-d tensor; a 0 in the shape gives an empty tensor).
    - The same `(shape, seed)` always gives the same numbers, whatever happened to the global RNG before.
    - Different seeds give different numbers.
    - The global CPU random state (`torch.get_rng_state()`) is the same after the call as before it: the
      numbers the caller's next `torch.randn` draws do not depend on whether this function was called.
    - Every GPU's global generator is left alone as well (on a CUDA machine, `torch.cuda.get_rng_state_all()`
      is the same after the call as before it).

    Args:
        shape: the shape of the result.
        seed: a non-negative integer below 2**63.

    Returns:
        A float32 CPU tensor of the given shape.
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


def one_hot(labels: Tensor, num_classes: int) -> Tensor:
    """Encode integer class labels as one-hot float32 rows.

    Row `i` of the result is all zeros except for a 1.0 in column `labels[i]`.

    Args:
        labels: int64 tensor of shape `(N,)`, on any device; `N` may be 0.
        num_classes: the number of columns, at least 1. Labels need not cover every class.

    Returns:
        A new float32 tensor of shape `(N, num_classes)` on the same device as `labels`. `labels` is not
        modified.

    Raises:
        ValueError: if any label is negative or `>= num_classes` (nothing is returned in that case).
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


def constant_like(t: Tensor, value: float) -> Tensor:
    """Return a new tensor like `t` (same shape, dtype and device) with every element equal to `value`.

    The values of `t` are never read: NaN or inf in `t` do not reach the result. `t` is not modified.
    `value` is converted to `t`'s dtype the way `torch.full_like` converts it, so for an integer or bool `t`
    pass a value that dtype can hold (e.g. `3.0`, or `0.0` / `1.0` for bool).

    Args:
        t: any tensor, on any device (the `meta` device included).
        value: the fill value.

    Returns:
        A new tensor with `t.shape`, `t.dtype` and `t.device`. It shares no memory with `t` (writing into it
        leaves `t` as it was) and does not require grad, even when `t` does: it is a constant, not a
        function of `t`.
    """
    raise NotImplementedError  # TODO: replace this line with your implementation
