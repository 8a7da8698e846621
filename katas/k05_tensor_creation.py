"""torch.Tensor vs torch.tensor and friends

Interview question: What is the difference between torch.Tensor and torch.tensor?

Difficulty 3/5, about 50 minutes, after katas 3 and 4.

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
It is also older than the default device: it builds on the CPU whatever `torch.set_default_device` says.

`torch.tensor` is a *factory function*: its argument is always data, it always copies, and it infers the
dtype from the Python values. Each value has a kind, and the kinds are ordered

    bool  <  int (int64)  <  float (the default dtype)  <  complex (the default dtype's complex partner)

The whole (nested) list gets the widest kind present: `[True, 2]` is int64, `[1, 2.5]` float32,
`[1, 2j]` complex64. Python floats are doubles, yet they become the *default* dtype (float32; float64 after
`torch.set_default_dtype(torch.float64)`), and complex numbers its partner (complex64; complex128). `bool`
is a subclass of `int` in Python, yet it is its own, lowest kind. A list holding no number at all (`[]`,
`[[], []]`) gets the default dtype. A value that brings its own dtype, a numpy scalar or a 0-d tensor,
takes part with that dtype (`torch.tensor([np.float64(0.5), 1.0])` is float64). Pass `dtype=` and `device=`
to say exactly what you want.

Handed a tensor `t`, `torch.tensor(t)` copies its data into a new leaf, outside any graph (no `grad_fn`,
`requires_grad=False` unless asked), and warns: PyTorch wants the two things that happen spelled out as
two steps. Each step alone is half of it: `t.detach()` leaves the graph but copies nothing (it shares `t`'s
memory, so writing into one writes into the other), and `t.clone()` copies but stays in the graph (it is
differentiable: gradients flow through the clone back into `t`). A copy that learns on its own, such as
a parameter initialised from another one, is a new leaf that requires grad.

Defaults: factories called without `dtype=` use `torch.get_default_dtype()` for floating results, and without
`device=` they build on the default device: the CPU, unless `torch.set_default_device(d)` moved it, or a
`with torch.device(d):` block is open (the `meta` device builds shapes and dtypes without any memory).
A hard-coded `dtype=torch.float32` or `device="cpu"` overrides whatever the caller chose.

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
  `torch.Tensor([3])` is `[3.]`, and `torch.Tensor(3.0)` is a TypeError. One pair of brackets changes data
  into a shape. `torch.tensor(3)` is the 0-d int64 tensor `3`.
- `torch.Tensor([1, 2])` is float32 `[1., 2.]`; `torch.tensor([1, 2])` is int64. Integer labels built with the
  legacy constructor become floats and then break `cross_entropy` or indexing.
- Sharing surprises: `torch.Tensor(t)` for a tensor `t` of any dtype returns an alias with `t`'s dtype
  (writing one writes the other; an int64 `t` stays int64); `torch.Tensor(a)` shares memory with a numpy
  array of the default dtype (float32) but silently copies (and converts) any other, a float64 one say.
  `torch.tensor(...)` always copies; `torch.from_numpy(a)` always shares.
- dtype inference: Python floats are doubles, yet `torch.tensor([1.0])` is float32 (the default dtype;
  after `torch.set_default_dtype(torch.float64)` it is float64); `bool` is a subclass of `int`, yet
  `[True]` infers torch.bool; `[1, 2.5]` promotes to float32, `[1, 2j]` to complex64; an empty list gives
  the default dtype. A numpy float64 array, or a list holding one numpy float64 scalar, gives float64.
- Copying a tensor: `t.detach()` shares memory, `t.clone()` stays in the graph, `torch.tensor(t)` works
  but warns (read the warning: it names the spelling PyTorch wants).
- Defaults: `torch.set_default_dtype` changes what floats and complex numbers become;
  `torch.set_default_device` and `with torch.device(...)` change where factories build, except the legacy
  constructor and the factories that share memory (`torch.from_numpy`).
- Reproducibility without side effects: `torch.manual_seed` inside a helper changes the random numbers
  of every caller after it, on every device. Use `torch.Generator().manual_seed(seed)` and pass
  `generator=`.
- "Like" factories keep dtype and device; plain factories do not: `torch.full(t.shape, v)` takes its
  dtype from `v` (int64 for `3`, the default float dtype for `3.0`, bool for `True`), not from `t`, and
  lands on the default device (the CPU) whatever `t`'s device.

Your tasks
==========
1. `float_tensor(data)` - a floating tensor from data that may be a single number: always a value, never a
   length; the caller's default dtype and device.
2. `inferred_dtype(data)` - the dtype `torch.tensor(data)` infers, worked out by hand from the values.
3. `detached_copy(t, requires_grad=False)` - a copy of a tensor that shares nothing with it: no memory, no
   graph, and no warning.
4. `copy_and_share(a)` - one tensor that copies a numpy array, one that shares its memory.
5. `seeded_normal(shape, seed)` - reproducible standard-normal numbers that leave the global RNG alone.
6. `one_hot(labels, num_classes)` - float32 one-hot rows on the labels' device, with range checks.
7. `constant_like(t, value)` - a tensor like `t` filled with `value`.

Follow-up questions
===================
- Why might `torch.as_tensor(a)` copy even though it "shares when it can"? Name two cases.
- `t.clone()`, `t.detach()` and `t.detach().clone()`: what does each share with `t`, and when do you want
  each?
- What dtype does `torch.tensor([np.float64(0.5), 1.0])` get, and what goes wrong when it meets a float32
  model?
- What does `torch.set_default_device("cuda")` change, what does it leave alone, and what does it cost?
- How would you make data loading reproducible across several DataLoader worker processes?
- When is `torch.empty` the right choice, and what goes wrong if you read from it first?

Grading without a GPU
=====================
Device bugs pass on a machine without a GPU unless the grader looks for them. It does: `float_tensor` also
runs with the `meta` device as the default device, `detached_copy` and `constant_like` also run on `meta`
tensors, `detached_copy` and `one_hot` also get pretend CUDA tensors (they report `cuda:0` and refuse to mix
with CPU tensors as real ones do), and `seeded_normal` also runs with a pretend GPU generator (so reseeding
the GPUs shows). The tests marked `cuda` repeat the checks on a real GPU: only they see real device memory
and real GPU generators.

Grade this kata: `nox -s check -- 5`. Stuck? `nox -s hint -- 5`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def float_tensor(data: bool | int | float | list | tuple) -> Tensor:
    """Return a new floating tensor holding `data`: a number is always a value, never a size.

    Args:
        data: a Python bool, int or float, or a (nested, rectangular) list or tuple of them, possibly empty:
            `3`, `2.5`, `[3]`, `[1, 2.5]`, `[[1, 2], [3, 4]]`, `[]`. `data` is not modified.

    Returns:
        A new tensor with dtype `torch.get_default_dtype()` (as it is when called: float32 unless the caller
        changed it) on the default device (the CPU, unless the caller used `torch.set_default_device(d)` or
        a `with torch.device(d):` block; the grader uses `meta`), that does not require grad. It holds the
        values (True -> 1.0, False -> 0.0) in the shape of the nesting: a bare number gives a 0-d tensor
        (`3` -> `tensor(3.)`), `[3]` gives shape `(1,)`, `[[1, 2], [3, 4]]` shape `(2, 2)`, `[]` shape
        `(0,)`. Each value holds what `torch.tensor(value, dtype=torch.get_default_dtype())` holds: with a
        float64 default, exactly the Python float (never through float32 on the way).
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


def inferred_dtype(data: list | tuple) -> torch.dtype:
    """Return the dtype `torch.tensor(data)` would infer for `data`, worked out from the values themselves.

    Equivalence: `inferred_dtype(data) == torch.tensor(data).dtype` for every `data` below, whatever the
    default dtype is when it is called (the grader sets it to float32, float64 and float16, and restores it).

    Rule: the function creates no tensor and no NumPy array, so it cannot ask torch or NumPy to infer
    anything: no `torch.tensor`, `torch.as_tensor`, `torch.asarray`, `torch.full`, `torch.result_type`,
    `np.array`, ... (the grader records the calls). Working with dtype objects is fine:
    `torch.get_default_dtype()`, `torch.promote_types`, `torch.can_cast` and the methods of a `torch.dtype`.

    Args:
        data: a list or tuple, possibly nested (rectangular) and possibly empty (`[]`, `[[], []]`), whose
            innermost elements are Python bools, ints (within int64), floats and complex numbers (not NumPy
            scalars or tensors, which bring dtypes of their own). It is not modified.

    Returns:
        A `torch.dtype` object (not its name as a string). With the default float32 these are `torch.bool`,
        `torch.int64`, `torch.float32` and `torch.complex64`.

    Raises:
        TypeError: if an innermost element is anything else (`None`, a `str`, a `dict`, ...), however deep.
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


def detached_copy(t: Tensor, requires_grad: bool = False) -> Tensor:
    """Return a copy of `t` that shares nothing with it: neither memory nor autograd graph.

    Equivalence: the tensor `torch.tensor(t, requires_grad=requires_grad)` returns, without the UserWarning
    that call gives (this function warns about nothing: the grader records warnings).

    Args:
        t: any tensor: a leaf or the result of a computation, requiring grad or not, of any dtype, on any
            device (the `meta` device included). `requires_grad=True` only for a floating or complex `t`.
        requires_grad: whether the copy requires grad.

    Returns:
        A new tensor with `t`'s shape, dtype, device and values (NaN where `t` has NaN).
        - It owns its memory: writing into it leaves `t` as it was, and writing into `t` leaves it as it was.
        - It is a leaf of no graph: `grad_fn` is None, and `requires_grad` is exactly `requires_grad`.
          With `requires_grad=True`, backpropagating a function of the copy fills the copy's `.grad` and
          never reaches `t` (nor anything `t` was computed from).
        `t` is not modified: its values, `requires_grad`, `grad_fn` and `.grad` stay as they were.
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
