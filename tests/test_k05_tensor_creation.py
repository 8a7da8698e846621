"""Grader for k05_tensor_creation: torch.Tensor versus torch.tensor, and the factories around them.

Device bugs are caught without a GPU: on the `meta` device, on pretend CUDA tensors (`fake_cuda`) and with a
pretend GPU random generator (`fake_gpu_generator`), below; the `cuda` tests repeat them on a real GPU.
"""

from __future__ import annotations

import copy
import random
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils import _pytree as pytree

from kata_harness import load_kata
from kata_harness.fake_cuda import FakeCudaTensor, fake_cuda, on_fake_cuda
from kata_harness.testing import assert_close, record_torch_calls

kata = load_kata("k05_tensor_creation")


# A pretend GPU random generator. `torch.manual_seed` reseeds every device's generator, so a helper that saves
# and restores only the CPU state around it still reseeds the GPUs: invisible on a machine without one.
# `fake_gpu_generator()` stands one GPU's generator in for torch.cuda's seeding and state functions (the ones
# `torch.manual_seed` and `torch.random.fork_rng` call), so that reseeding it shows, and a fork_rng restore
# puts it back.


class FakeGpuGenerator:
    """The default generator of one pretend GPU: its seed and how far it has advanced."""

    def __init__(self) -> None:
        self.seed, self.offset = 1234, 17  # advanced, so that reseeding with any seed, even 1234, shows

    def manual_seed(self, seed: int) -> None:
        self.seed, self.offset = int(seed), 0

    def seed_randomly(self) -> None:
        self.manual_seed(random.getrandbits(63))

    def get_state(self, device: object = "cuda") -> torch.Tensor:
        return torch.tensor([self.seed, self.offset], dtype=torch.int64).view(torch.uint8)

    def set_state(self, state: torch.Tensor, device: object = "cuda") -> None:
        self.seed, self.offset = state.view(torch.int64).tolist()


@contextmanager
def fake_gpu_generator() -> Iterator[FakeGpuGenerator]:
    gen = FakeGpuGenerator()
    with pytest.MonkeyPatch.context() as patch:
        for name, replacement in {
            "device_count": lambda: 1,
            "manual_seed": gen.manual_seed,
            "manual_seed_all": gen.manual_seed,
            "seed": gen.seed_randomly,
            "seed_all": gen.seed_randomly,
            "initial_seed": lambda: gen.seed,
            "get_rng_state": gen.get_state,
            "set_rng_state": gen.set_state,
            "get_rng_state_all": lambda: [gen.get_state()],
            "set_rng_state_all": lambda states: gen.set_state(states[0]),
        }.items():
            patch.setattr(torch.cuda, name, replacement)
        yield gen


# ---------------------------------------------------------------------------------------------- strategies


def _nested(shape: tuple[int, ...], flat: list) -> list:
    """`flat` (row-major) as a nested Python list of the given shape."""
    if len(shape) == 1:
        return list(flat)
    step = len(flat) // shape[0] if shape[0] else 0
    return [_nested(shape[1:], flat[i * step : (i + 1) * step]) for i in range(shape[0])]


@st.composite
def nested_lists(draw: st.DrawFn, elements: st.SearchStrategy, min_len: int = 1) -> tuple[list, tuple]:
    """A rectangular nested list (1 to 3 levels) of `elements`, and its shape."""
    shape = tuple(draw(st.lists(st.integers(min_len, 3), min_size=1, max_size=3)))
    flat = draw(st.lists(elements, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    return _nested(shape, flat), shape


small_ints = st.integers(-1000, 1000)
small_floats = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)
small_complex = st.complex_numbers(max_magnitude=1e3, allow_nan=False, allow_infinity=False)
numbers = st.one_of(st.booleans(), small_ints, small_floats)
scalar_kinds = {"bool": st.booleans(), "int": small_ints, "float": small_floats, "complex": small_complex}
DEFAULT_DTYPES = (torch.float32, torch.float64, torch.float16)


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """`torch.set_default_dtype(dtype)` for the block, restored after it."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
        assert torch.get_default_dtype() == dtype, (
            f"the default dtype was {dtype} before the call and is {torch.get_default_dtype()} after it: the "
            "kata changed a torch-wide setting (torch.set_default_dtype) and did not restore it - read the "
            "default dtype, never set it"
        )
    finally:
        torch.set_default_dtype(old)


def _unchanged(data: object, original: object) -> bool:
    """Equal values AND the same Python types (True == 1 == 1.0, so == alone misses a converted element)."""
    leaves, before = pytree.tree_leaves(data), pytree.tree_leaves(original)
    return data == original and [type(x) for x in leaves] == [type(x) for x in before]


# ---------------------------------------------------------------------------------------------- float_tensor


def _call_float_tensor(data: object) -> torch.Tensor:
    """kata.float_tensor(data), with one teaching line when it raises or returns something else."""
    try:
        out = kata.float_tensor(data)
    except NotImplementedError:
        raise
    except (TypeError, RuntimeError, ValueError) as exc:
        pytest.fail(
            f"float_tensor({data!r}) raised {type(exc).__name__}: {exc}. Likely cause: the legacy "
            "constructor `torch.Tensor(data)`, which takes a bare number as a size (`torch.Tensor(3)` is 3 "
            "uninitialised values) and refuses a float (`torch.Tensor(2.5)` is a TypeError) - a factory "
            "that reads its argument as data accepts a bare number too",
            pytrace=False,
        )
    assert isinstance(out, torch.Tensor), (
        f"float_tensor({data!r}) returned {type(out).__name__}, not a Tensor"
    )
    return out


@pytest.mark.parametrize("data", [3, 0, 1, 7, -2, 2.5, True, False], ids=repr)
def test_float_tensor_single_number_is_a_value_not_a_length(data: bool | int | float) -> None:
    out = _call_float_tensor(data)
    assert tuple(out.shape) == (), (
        f"float_tensor({data!r}) has shape {tuple(out.shape)}, expected () (a 0-d tensor holding the value). "
        "Likely cause: `torch.Tensor(n)` / `torch.empty(n)` read an int as a size (n uninitialised values), "
        "or the number was wrapped in a list ([data] gives shape (1,))"
    )
    assert out.dtype == torch.float32, (
        f"float_tensor({data!r}) has dtype {out.dtype}, expected torch.float32 (the default dtype); likely "
        "cause: `torch.tensor(data)` infers int64 for an int and bool for a bool - say which dtype you want"
    )
    assert out.item() == float(data), f"float_tensor({data!r}) holds {out.item()!r}, expected {float(data)!r}"


@given(case=nested_lists(numbers))
def test_float_tensor_values_shape_and_dtype(case: tuple[list, tuple]) -> None:
    data, shape = case
    original = copy.deepcopy(data)
    out = _call_float_tensor(data)
    assert _unchanged(data, original), (
        f"float_tensor changed its argument: {original!r} is now {data!r}; likely cause: converting the "
        "elements in place (data[i] = float(...)) - build the tensor from the list, leave the list alone"
    )
    assert out.dtype == torch.float32, (
        f"float_tensor({data!r}) returned dtype {out.dtype}, expected torch.float32 (the default dtype); "
        "likely cause: `torch.tensor(data)` infers int64/bool from the values - say which dtype you want"
    )
    assert tuple(out.shape) == shape, (
        f"float_tensor({data!r}) has shape {tuple(out.shape)}, expected {shape} (the nesting of the list); "
        "likely cause: the list was flattened, wrapped in another list, or read as sizes"
    )
    assert out.device.type == "cpu" and not out.requires_grad, (
        f"float_tensor({data!r}) returned a tensor on {out.device} with requires_grad={out.requires_grad}; "
        "expected the default device (the CPU here) and no requires_grad"
    )
    # Every element is a bool, an int within +-1000 or a float32-representable float: exact in float32
    # whichever way it is converted, so any correct code matches torch's own conversion bit for bit.
    assert_close(
        out,
        torch.tensor(data, dtype=torch.float32),
        rtol=0,
        atol=0,
        what=f"float_tensor({data!r})",
        likely_cause="values rounded or truncated (e.g. converted through an integer dtype), or an "
        "uninitialised tensor of that size instead of the values",
    )


@pytest.mark.parametrize(
    ("data", "shape"),
    [
        ([3], (1,)),
        ([[5]], (1, 1)),
        ([2.5], (1,)),
        ((1, 2), (2,)),
        (((1, 2), (3, 4)), (2, 2)),
        ([], (0,)),
        ([[]], (1, 0)),
    ],
    ids=repr,
)
def test_float_tensor_short_lists_and_tuples(data: list | tuple, shape: tuple[int, ...]) -> None:
    out = _call_float_tensor(data)
    assert (tuple(out.shape), out.dtype) == (shape, torch.float32), (
        f"float_tensor({data!r}) gave shape {tuple(out.shape)}, dtype {out.dtype}; expected {shape}, "
        "torch.float32. Likely cause: a one-element list read as a size or unwrapped to a 0-d tensor, a "
        "tuple not read as a sequence, or `torch.tensor([])` left without a dtype"
    )
    assert_close(out, torch.tensor(data, dtype=torch.float32), rtol=0, atol=0, what=f"float_tensor({data!r})")


# 0.1 and 1/3 are not float32 numbers: a result routed through float32 is off by ~1e-9 relative in float64.
# For float16, values it holds exactly, so that any correct conversion gives the same bits.
DTYPE_CASES = {
    torch.float64: [[0.1, 2], [True, 1 / 3]],
    torch.float16: [[0.5, 2], [True, -1.25]],
}


@pytest.mark.parametrize("dtype", list(DTYPE_CASES), ids=str)
def test_float_tensor_follows_the_default_dtype(dtype: torch.dtype) -> None:
    for data in (DTYPE_CASES[dtype], 3, [7], []):
        with default_dtype(dtype):
            out = _call_float_tensor(data)
            expected = torch.tensor(data, dtype=dtype)
        assert out.dtype == dtype, (
            f"with torch.set_default_dtype({dtype}), float_tensor({data!r}) has dtype {out.dtype}; expected "
            f"{dtype}. Likely cause: `dtype=torch.float32` or `.float()` hard-codes float32 - the default "
            "dtype is whatever `torch.get_default_dtype()` says when the function is called"
        )
        assert_close(
            out,
            expected,
            rtol=0,
            atol=0,
            what=f"float_tensor({data!r}) with default dtype {dtype}",
            likely_cause="the values went through float32 on the way (e.g. `torch.tensor(data, "
            "dtype=torch.float32).to(torch.get_default_dtype())`): 0.1 and 1/3 lose digits there",
        )


def _set_default_meta() -> Iterator[None]:
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device(None)


DEFAULT_DEVICE_WAYS = {
    "with torch.device('meta')": lambda: torch.device("meta"),
    "torch.set_default_device('meta')": contextmanager(_set_default_meta),
}


@pytest.mark.parametrize("way", list(DEFAULT_DEVICE_WAYS))
def test_float_tensor_follows_the_default_device(way: str) -> None:
    for data, shape in (([1, 2.5], (2,)), (3, ()), ([[1, 2], [3, 4]], (2, 2)), ([], (0,))):
        with DEFAULT_DEVICE_WAYS[way]():
            out = _call_float_tensor(data)
        assert (out.device.type, out.dtype, tuple(out.shape)) == ("meta", torch.float32, shape), (
            f"under {way}, float_tensor({data!r}) gave device {out.device}, dtype {out.dtype}, shape "
            f"{tuple(out.shape)}; expected meta, torch.float32, {shape}. Likely cause: `device='cpu'` "
            "hard-coded, or the legacy constructor `torch.Tensor(...)`, which builds on the CPU whatever the "
            "default device (torch.tensor and the other factories follow it)"
        )


@pytest.mark.cuda
def test_float_tensor_follows_a_cuda_default_device() -> None:
    with torch.device("cuda"):
        out = kata.float_tensor([[1, 2.5], [3, True]])
    assert out.device.type == "cuda" and out.dtype == torch.float32, (
        f"under `with torch.device('cuda')`, float_tensor gave {out.dtype} on {out.device}; expected float32 "
        "on cuda"
    )
    assert_close(
        out.cpu(), torch.tensor([[1.0, 2.5], [3.0, 1.0]]), rtol=0, atol=0, what="float_tensor on cuda"
    )


# -------------------------------------------------------------------------------------------- inferred_dtype

INFERENCE_CAUSE = (
    "looking only at the first element (a mix promotes to the widest kind present), testing "
    "`isinstance(x, int)` before `bool` (bool is a subclass of int), or mapping Python float to float64 / "
    "complex to complex128 (torch uses the default dtype and its complex partner)"
)


def _expected_dtype(data: list | tuple) -> torch.dtype:
    """torch's own answer, under whatever default dtype is set (complex32 warns that it is experimental)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.tensor(data).dtype


def _call_inferred_dtype(data: list | tuple) -> object:
    try:
        return kata.inferred_dtype(data)
    except (NotImplementedError, TypeError):
        raise
    except RecursionError:
        pytest.fail(
            f"inferred_dtype({data!r}) never stopped recursing; likely cause: a str treated as a nested "
            "sequence (a one-character string is a sequence whose only element is itself) - recurse into "
            "lists and tuples only",
            pytrace=False,
        )


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([True, False], torch.bool),
        ([[[True]]], torch.bool),
        ([1, 2, 3], torch.int64),
        ([True, 2], torch.int64),
        ([2, True], torch.int64),
        ([1.0, 2.0], torch.float32),
        ([1, 2.5], torch.float32),
        ([[True], [2.5]], torch.float32),
        ((1, 2.5), torch.float32),
        ([(1, 2), (3, 4)], torch.int64),
        ([1j, 2], torch.complex64),
        ([True, 1j], torch.complex64),
        ([[1.5, 2], [3, 1 + 1j]], torch.complex64),
        ([], torch.float32),
        ([[], []], torch.float32),
        ((), torch.float32),
    ],
    ids=repr,
)
def test_inferred_dtype_examples(data: list, expected: torch.dtype) -> None:
    original = copy.deepcopy(data)
    got = _call_inferred_dtype(data)
    assert isinstance(got, torch.dtype), (
        f"inferred_dtype({data!r}) returned {type(got).__name__} {got!r}, expected the torch.dtype object "
        f"{expected!r}; likely cause: returning str(dtype) or a NumPy dtype instead of the dtype itself"
    )
    assert _unchanged(data, original), (
        f"inferred_dtype changed its argument: {original!r} is now {data!r}; likely cause: flattening or "
        "converting the list in place (pop, sort, data[i] = ...) - read it, do not change it"
    )
    assert got == expected, (
        f"inferred_dtype({data!r}) returned {got!r}, expected {expected!r}; likely cause: "
        + (INFERENCE_CAUSE)
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16], ids=str)
def test_inferred_dtype_follows_the_default_dtype(dtype: torch.dtype) -> None:
    for data in ([1.0, 2], [[True], [0.5]], [1j, 2.0], [True, 1j], [], [[], []], [True], [1, 2]):
        with default_dtype(dtype):
            expected = _expected_dtype(data)
            got = _call_inferred_dtype(data)
        assert got == expected, (
            f"with torch.set_default_dtype({dtype}), inferred_dtype({data!r}) returned {got!r}; torch.tensor "
            f"infers {expected!r}. Likely cause: float32 or complex64 hard-coded - floats take the default "
            "dtype as it is when the function is called (`torch.get_default_dtype()`), complex numbers its "
            "complex partner (complex128 for float64, complex32 for float16), and so does a list with no "
            "numbers in it"
        )


@settings(max_examples=30)
@given(data=st.data())
def test_inferred_dtype_matches_torch_tensor(data: st.DataObject) -> None:
    # First pick which Python types appear, so that every mix is tried, not mostly all-complex lists.
    kinds = data.draw(st.sets(st.sampled_from(sorted(scalar_kinds)), min_size=1), label="kinds")
    elements = st.one_of(*(scalar_kinds[k] for k in sorted(kinds)))
    min_len = data.draw(st.sampled_from([1, 1, 0]), label="min_len")  # sometimes empty rows: [[], []]
    nested, _ = data.draw(nested_lists(elements, min_len=min_len), label="data")
    dtype = data.draw(st.sampled_from(DEFAULT_DTYPES), label="default dtype")
    with default_dtype(dtype):
        expected = _expected_dtype(nested)
        got = _call_inferred_dtype(nested)
    assert got == expected, (
        f"with default dtype {dtype}, inferred_dtype({nested!r}) returned {got!r}, but "
        f"torch.tensor(data).dtype is {expected!r}; likely cause: " + INFERENCE_CAUSE
    )


@contextmanager
def record_numpy_calls() -> Iterator[list[str]]:
    """Record the NumPy functions that build an array or infer a dtype, called inside the block."""
    calls: list[str] = []
    names = (
        "array",
        "asarray",
        "asanyarray",
        "ascontiguousarray",
        "fromiter",
        "result_type",
        "min_scalar_type",
    )
    with pytest.MonkeyPatch.context() as patch:
        for name in names:

            def spy(*args: object, _real: object = getattr(np, name), _name: str = name, **kwargs: object):
                calls.append(f"np.{_name}")
                return _real(*args, **kwargs)  # type: ignore[operator]

            patch.setattr(np, name, spy)
        yield calls


ALLOWED_CALLS = {"torch.promote_types", "torch.can_cast", "torch.get_default_dtype"}


def test_inferred_dtype_is_worked_out_by_hand() -> None:
    cases = ([True, 2], [[1, 2.5], [3, 4]], [1j, True], [], [[True], [False]])
    with record_torch_calls() as calls, record_numpy_calls() as np_calls:
        got = [_call_inferred_dtype(data) for data in cases]
    expected = [_expected_dtype(data) for data in cases]
    bad = sorted(set(np_calls) | {c for c in calls if c not in ALLOWED_CALLS})
    assert not bad, (
        f"inferred_dtype called {bad}; the task is to work the dtype out from the Python values yourself. "
        "Building a tensor or an array (torch.tensor, torch.as_tensor, torch.asarray, torch.full, np.array, "
        "...) or asking torch.result_type hands the inference to the library. Allowed: isinstance and "
        f"friends, `torch.get_default_dtype()`, {sorted(ALLOWED_CALLS - {'torch.get_default_dtype'})} and "
        "dtype methods"
    )
    assert got == expected, f"inferred_dtype gave {got} for {list(cases)}, expected {expected}"


@pytest.mark.parametrize(
    "data",
    [[None], [1, "a"], [[1.0], ["xy"]], [1, {}], ((1, 2), (3, None)), [[[b"raw"]]]],
    ids=repr,
)
def test_inferred_dtype_rejects_what_is_not_a_number(data: list | tuple) -> None:
    ok = _call_inferred_dtype([1, 2.5])  # the happy path must work before the error path counts
    assert ok == torch.float32, f"inferred_dtype([1, 2.5]) returned {ok!r}, expected torch.float32"
    try:
        got = _call_inferred_dtype(data)
    except TypeError:
        return
    pytest.fail(
        f"inferred_dtype({data!r}) returned {got!r}; expected TypeError (torch.tensor refuses it too). "
        "Likely cause: a fallback that treats anything unknown as a float (or as the default dtype) - "
        "accept bool, int, float and complex, recurse into lists and tuples, raise TypeError for the rest",
        pytrace=False,
    )


# --------------------------------------------------------------------------------------------- detached_copy


def _detached_copy(t: torch.Tensor, **kwargs: bool) -> torch.Tensor:
    """_detached_copy(t, ...) with its warnings silenced: test_detached_copy_warns_nothing judges those."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return kata.detached_copy(t, **kwargs)


copy_dtypes = st.sampled_from(
    [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.complex64, torch.int64, torch.int32,
     torch.uint8, torch.bool]
)  # fmt: skip


def _source(dtype: torch.dtype, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Distinct, nonzero values of `dtype` (a NaN among floating ones), so that a write of 0 shows."""
    n = int(np.prod(shape))
    values = (torch.randperm(max(n, 1), generator=torch.Generator().manual_seed(seed))[:n] % 100 + 1).reshape(
        shape
    )
    t = values.to(dtype)
    if dtype.is_floating_point and n > 1:
        t.view(-1)[-1] = float("nan")
    return t


def _check_same(out: object, t: torch.Tensor, what: str) -> None:
    """out has t's type, shape, dtype and values (NaN where t has NaN)."""
    assert isinstance(out, torch.Tensor), f"{what} returned {type(out).__name__}, not a Tensor"
    assert (tuple(out.shape), out.dtype, out.device) == (tuple(t.shape), t.dtype, t.device), (
        f"{what} gave shape {tuple(out.shape)}, dtype {out.dtype}, device {out.device}; expected "
        f"{tuple(t.shape)}, {t.dtype}, {t.device}. Likely cause: a round trip through Python lists or NumPy "
        "(which re-infers the dtype, has no bfloat16 and lives on the CPU), or a conversion such as .float()"
    )
    torch.testing.assert_close(
        out.detach(),
        t.detach(),
        rtol=0,
        atol=0,
        equal_nan=True,
        msg=lambda generated: f"{what}: the values differ from t's.\n{generated}",
    )


@given(dtype=copy_dtypes, shape=st.lists(st.integers(0, 4), max_size=3).map(tuple), seed=st.integers(0, 99))
def test_detached_copy_same_shape_dtype_and_values(dtype: torch.dtype, shape: tuple, seed: int) -> None:
    t = _source(dtype, shape, seed)
    before = t.clone()
    out = _detached_copy(t)
    _check_same(out, before, f"detached_copy(a {dtype} tensor of shape {shape})")
    _check_same(t, before, "t after detached_copy(t) (it must not change)")
    assert not out.requires_grad, "detached_copy(t) requires grad; by default the copy must not"


@pytest.mark.parametrize("kind", ["leaf requiring grad", "result of a computation", "plain tensor"])
def test_detached_copy_owns_its_memory(kind: str) -> None:
    w = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=kind != "plain tensor")
    t = w * 2 if kind == "result of a computation" else w
    out = _detached_copy(t)
    _check_same(out, t, f"detached_copy of a {kind}")
    with torch.no_grad():
        out[0] = -100.0
    assert t[0].item() != -100.0, (
        f"writing into detached_copy(t) changed t ({kind}): they share memory. Likely cause: `t.detach()` "
        "(or `t.data`, `t.view(...)`, `t.detach().contiguous()`) leaves the graph but copies nothing - a "
        "copy needs new memory"
    )
    with torch.no_grad():
        t[1] = -200.0
    assert out[1].item() != -200.0, f"writing into t ({kind}) changed the copy: they share memory"


def test_detached_copy_is_a_leaf_outside_the_graph() -> None:
    w = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    for kind, t in (("a leaf that requires grad", w), ("the result w * 2 of a computation", w * 2)):
        grad_fn = t.grad_fn
        out = _detached_copy(t)
        assert out.grad_fn is None and not out.requires_grad and out.is_leaf, (
            f"detached_copy of {kind} returned a tensor with requires_grad={out.requires_grad}, grad_fn="
            f"{out.grad_fn}: it is still in t's graph. Likely cause: `t.clone()` (or `torch.empty_like(t)"
            ".copy_(t)`, `copy.deepcopy(t)`) copies the memory but keeps the graph - gradients would flow "
            "back through the copy into t"
        )
        assert t.requires_grad and t.grad_fn is grad_fn and (not t.is_leaf or t.grad is None), (
            f"detached_copy changed t ({kind}): requires_grad={t.requires_grad}, grad_fn={t.grad_fn}, "
            f"grad={t.grad}. Likely cause: `t.detach_()` or `t.requires_grad_(False)` work on the caller's "
            "tensor in place - leave t alone"
        )


def test_detached_copy_with_requires_grad_is_a_new_leaf() -> None:
    w = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    plain = torch.tensor([0.5, 1.5])
    for kind, t in (("the leaf w", w), ("w * 3", w * 3), ("a tensor that does not require grad", plain)):
        out = _detached_copy(t, requires_grad=True)
        assert out.requires_grad and out.is_leaf and out.grad_fn is None, (
            f"detached_copy({kind}, requires_grad=True) gave requires_grad={out.requires_grad}, is_leaf="
            f"{out.is_leaf}, grad_fn={out.grad_fn}; expected a new leaf that requires grad. Likely cause: "
            "the requires_grad argument ignored, or the copy left in t's graph (`t.clone()`)"
        )
        (out * 2).sum().backward()
        assert out.grad is not None and torch.equal(out.grad, torch.full_like(out, 2.0)), (
            f"backward through 2 * detached_copy({kind}, requires_grad=True) left the copy's .grad at "
            f"{out.grad}; expected all 2s"
        )
        assert w.grad is None, (
            f"backward through detached_copy({kind}, requires_grad=True) reached w (w.grad = {w.grad}); the "
            "copy must start a graph of its own. Likely cause: `t.clone().requires_grad_()` - clone is "
            "differentiable, so the copy is still a function of t"
        )
    out = _detached_copy(w, requires_grad=False)
    assert not out.requires_grad, (
        "detached_copy(w, requires_grad=False) requires grad; likely cause: `.requires_grad_()` without the "
        "argument (its default is True), or `copy.deepcopy(t)`, which keeps t's flag"
    )


def test_detached_copy_warns_nothing(recwarn: pytest.WarningsRecorder) -> None:
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    sources = {"a leaf that requires grad": w, "a computed tensor": w * 2, "a plain tensor": torch.arange(3)}
    for kind, t in sources.items():
        for requires_grad in (False, True) if t.is_floating_point() else (False,):
            recwarn.clear()
            out = kata.detached_copy(t, requires_grad=requires_grad)
            assert not recwarn.list, (
                f"detached_copy({kind}, requires_grad={requires_grad}) warned: "
                f"{recwarn.list[0].category.__name__}: {str(recwarn.list[0].message).rstrip('.')}. Likely "
                "cause: `torch.tensor(t)` (or `t.new_tensor(t)`), which copies correctly but warns every "
                "time - write the copy the way the warning recommends"
            )
            assert out.requires_grad == requires_grad and out.grad_fn is None, (
                f"detached_copy({kind}, requires_grad={requires_grad}) gave requires_grad="
                f"{out.requires_grad}, grad_fn={out.grad_fn}"
            )


def test_detached_copy_keeps_meta_device() -> None:
    t = torch.empty(3, 5, dtype=torch.float64, device="meta", requires_grad=True)
    out = _detached_copy(t)
    assert (out.device.type, out.dtype, tuple(out.shape), out.requires_grad) == (
        "meta",
        torch.float64,
        (3, 5),
        False,
    ), (
        f"detached_copy of a meta float64 (3, 5) tensor that requires grad gave device {out.device}, dtype "
        f"{out.dtype}, shape {tuple(out.shape)}, requires_grad={out.requires_grad}; expected meta, float64, "
        "(3, 5), False. Likely cause: a copy made on the CPU (`.cpu()`, `.tolist()` or `.numpy()` on the "
        "way) - copy on the tensor's own device"
    )


def test_detached_copy_keeps_gpu_device_without_a_gpu() -> None:
    t = on_fake_cuda(torch.tensor([[1.0, -2.0], [3.5, float("nan")]], requires_grad=True))
    with fake_cuda():
        try:
            out = _detached_copy(t)
        except NotImplementedError:
            raise
        except (RuntimeError, TypeError) as exc:
            pytest.fail(
                f"detached_copy raised on a tensor on cuda:0 (a pretend one: this check runs without a GPU): "
                f"{exc}. Likely cause: `.numpy()` or a CPU tensor mixed in - copy on the tensor's own device",
                pytrace=False,
            )
    assert type(out) is FakeCudaTensor, (
        "detached_copy of a tensor on cuda:0 returned a CPU tensor (checked with a pretend CUDA tensor, so "
        "this runs without a GPU); likely cause: `.cpu()`, `.tolist()` or a round trip through NumPy"
    )
    plain = out.as_subclass(torch.Tensor)
    assert not plain.requires_grad and plain.grad_fn is None, "detached_copy of a cuda:0 tensor requires grad"
    _check_same(plain, t.detach().as_subclass(torch.Tensor), "detached_copy on cuda:0 (pretend)")


@pytest.mark.cuda
def test_detached_copy_on_cuda() -> None:
    w = torch.tensor([1.0, 2.0, 3.0], device="cuda", requires_grad=True)
    t = w * 2
    out = _detached_copy(t)
    _check_same(out, t, "detached_copy on cuda")
    assert out.grad_fn is None and not out.requires_grad, (
        "detached_copy of a CUDA tensor is still in the graph"
    )
    with torch.no_grad():
        out[0] = -1.0
    assert t[0].item() == 2.0, "writing into detached_copy(t) changed t on cuda: they share memory"


# -------------------------------------------------------------------------------------------- copy_and_share

array_dtypes = st.sampled_from([np.float32, np.float64, np.int32, np.int64, np.uint8])
array_shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)


def _array(dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    return (np.arange(int(np.prod(shape))) % 50 + 1).astype(dtype).reshape(shape)


@settings(max_examples=25)
@given(dtype=array_dtypes, shape=array_shapes)
def test_copy_and_share_both_equal_a(dtype: type, shape: tuple[int, ...]) -> None:
    a = _array(dtype, shape)
    original = a.copy()
    result = kata.copy_and_share(a)
    assert isinstance(result, tuple) and len(result) == 2, f"expected a (copy, shared) tuple, got {result!r}"
    for name, t in zip(("copy", "shared"), result, strict=True):
        expected = torch.from_numpy(original)
        assert isinstance(t, torch.Tensor), f"{name} should be a torch.Tensor, got {type(t).__name__}"
        assert t.dtype == expected.dtype and tuple(t.shape) == shape, (
            f"{name} has dtype {t.dtype} and shape {tuple(t.shape)}; expected {expected.dtype} and {shape} "
            f"(those of a {np.dtype(dtype).name} array); likely cause: `torch.Tensor(a)` or "
            "`dtype=torch.float32` converts everything to float32"
        )
        assert_close(
            t, expected, rtol=0, atol=0, what=f"{name} vs a", likely_cause="values changed on the way"
        )
    assert np.array_equal(a, original), "copy_and_share modified its input array"


@settings(max_examples=25)
@given(dtype=array_dtypes, shape=array_shapes)
def test_copy_and_share_copy_owns_its_memory(dtype: type, shape: tuple[int, ...]) -> None:
    a = _array(dtype, shape)
    copy, _ = kata.copy_and_share(a)
    before = copy.clone()
    a.reshape(-1)[0] = 0  # _array never holds a 0, so this is a real change
    assert torch.equal(copy, before), (
        f"writing to the {np.dtype(dtype).name} array changed `copy`; it shares memory with `a`. Likely "
        "cause: `torch.from_numpy` / `torch.as_tensor` (or `torch.Tensor(a)` for float32) share - "
        "`torch.tensor(a)` copies"
    )
    b = _array(dtype, shape)
    copy, _ = kata.copy_and_share(b)
    copy.reshape(-1)[-1] = 0
    assert b.reshape(-1)[-1] != 0, "writing to `copy` changed the array `a`; `copy` must own its memory"


@settings(max_examples=25)
@given(dtype=array_dtypes, shape=array_shapes)
def test_copy_and_share_shared_sees_writes_both_ways(dtype: type, shape: tuple[int, ...]) -> None:
    a = _array(dtype, shape)
    _, shared = kata.copy_and_share(a)
    a.reshape(-1)[0] = 0
    assert shared.reshape(-1)[0].item() == 0, (
        f"writing a[0] = 0 on a {np.dtype(dtype).name} array did not show in `shared`, so it is a copy. "
        "Likely cause: `torch.tensor(a)` always copies, and `torch.Tensor(a)` copies any array that does "
        "not have the default dtype (float32); "
        "use `torch.from_numpy(a)` (or `torch.as_tensor(a)`)"
    )
    shared.reshape(-1)[-1] = 0
    assert a.reshape(-1)[-1] == 0, "writing to `shared` did not change `a`; they must share one buffer"


# --------------------------------------------------------------------------------------------- seeded_normal

shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)


@given(shape=shapes, seed=st.integers(0, 2**31))
def test_seeded_normal_shape_dtype_device(shape: tuple[int, ...], seed: int) -> None:
    out = kata.seeded_normal(shape, seed)
    assert isinstance(out, torch.Tensor), f"expected a torch.Tensor, got {type(out).__name__}"
    assert (tuple(out.shape), out.dtype, out.device.type) == (shape, torch.float32, "cpu"), (
        f"seeded_normal({shape}, {seed}) gave shape {tuple(out.shape)}, dtype {out.dtype}, device "
        f"{out.device}; expected {shape}, torch.float32, cpu; likely cause: a numpy float64 array not "
        "converted, or the shape unpacked wrongly"
    )


@settings(max_examples=15)
@given(seed=st.integers(0, 2**31))
def test_seeded_normal_same_seed_same_numbers(seed: int) -> None:
    first = kata.seeded_normal((3, 4), seed)
    torch.randn(17)  # the caller uses the global generator in between
    torch.manual_seed(seed + 12345)
    second = kata.seeded_normal((3, 4), seed)
    assert torch.equal(first, second), (
        f"two calls with seed={seed} gave different numbers; likely cause: drawing from the global generator "
        "(plain `torch.randn(shape)`) instead of one seeded with `seed`"
    )


def test_seeded_normal_different_seeds_differ() -> None:
    outs = [kata.seeded_normal((8,), seed) for seed in (0, 1, 2, 1234, 2**31)]
    for i in range(len(outs)):
        for j in range(i):
            assert not torch.equal(outs[i], outs[j]), (
                "two different seeds gave identical numbers; likely cause: the seed is never applied (a "
                "fresh `torch.Generator()` has a fixed default seed - call `.manual_seed(seed)` on it)"
            )


@settings(max_examples=10)
@given(seed=st.integers(0, 2**31), shape=shapes)
def test_seeded_normal_leaves_global_rng_alone(seed: int, shape: tuple[int, ...]) -> None:
    torch.randn(5)  # move the global generator away from any state a learner might "restore" by reseeding
    state = torch.get_rng_state()
    kata.seeded_normal(shape, seed)
    after = torch.get_rng_state()
    assert torch.equal(state, after), (
        f"seeded_normal({shape}, {seed}) changed the global CPU random state; likely cause: "
        "`torch.manual_seed` reseeds the generator every caller shares (and reseeding to 0 afterwards is "
        "not a restore). Use a local `torch.Generator().manual_seed(seed)` and pass `generator=`"
    )


def test_seeded_normal_leaves_gpu_generators_alone() -> None:
    with fake_gpu_generator() as gpu:
        before = gpu.get_state().clone()
        kata.seeded_normal((2, 3), 5)
        after = gpu.get_state()
    assert torch.equal(before, after), (
        f"seeded_normal((2, 3), 5) reseeded the GPU's global generator (seed and offset were "
        f"{before.view(torch.int64).tolist()}, are now {after.view(torch.int64).tolist()}; checked with a "
        "pretend GPU, so this runs without one); likely cause: `torch.manual_seed` reseeds the generator of "
        "every device, and saving and restoring `torch.get_rng_state()` around it puts back the CPU's only. "
        "Use a local `torch.Generator().manual_seed(seed)` and pass `generator=`"
    )


@pytest.mark.cuda
def test_seeded_normal_leaves_real_gpu_generators_alone() -> None:
    torch.cuda.manual_seed_all(1234)
    torch.randn(3, device="cuda")  # advance it, so that reseeding with any seed shows
    before = torch.cuda.get_rng_state_all()
    kata.seeded_normal((2, 3), 1234)
    after = torch.cuda.get_rng_state_all()
    assert all(torch.equal(x, y) for x, y in zip(before, after, strict=True)), (
        "seeded_normal changed a CUDA generator's state; likely cause: `torch.manual_seed` reseeds every "
        "device's generator, and saving and restoring `torch.get_rng_state()` puts back the CPU's only"
    )


def test_seeded_normal_is_standard_normal() -> None:
    out = kata.seeded_normal((200, 100), 7).double()
    mean, std = out.mean().item(), out.std().item()
    within_one = (out.abs() < 1).double().mean().item()
    assert abs(mean) < 0.05 and abs(std - 1) < 0.03 and abs(within_one - 0.6827) < 0.02, (
        f"20000 draws have mean {mean:.3f}, std {std:.3f} and {within_one:.3f} of them within +-1; a "
        "standard normal has 0, 1 and 0.683. Likely cause: `torch.rand` (uniform on [0, 1)) instead of "
        "`torch.randn`, or a scale/shift applied"
    )


# ------------------------------------------------------------------------------------------------- one_hot


@given(n=st.integers(1, 8), num_classes=st.integers(1, 6), data=st.data())
def test_one_hot_values(n: int, num_classes: int, data: st.DataObject) -> None:
    labels_list = data.draw(st.lists(st.integers(0, num_classes - 1), min_size=n, max_size=n))
    labels = torch.tensor(labels_list, dtype=torch.int64)
    out = kata.one_hot(labels, num_classes)
    expected = torch.tensor(
        [[1.0 if j == label else 0.0 for j in range(num_classes)] for label in labels_list],
        dtype=torch.float32,
    )
    assert tuple(out.shape) == (n, num_classes), (
        f"one_hot(labels of length {n}, num_classes={num_classes}) has shape {tuple(out.shape)}, expected "
        f"{(n, num_classes)}; likely cause: the width taken from `labels.max() + 1` instead of "
        "`num_classes`, or rows and columns swapped"
    )
    assert_close(
        out.double(),
        expected.double(),
        rtol=0,
        atol=0,
        what=f"one_hot({labels_list}, {num_classes})",
        likely_cause="the 1.0 placed in the wrong column or row",
    )
    assert labels.shape == (n,) and torch.equal(labels, torch.tensor(labels_list)), (
        f"one_hot modified its `labels` argument: {labels_list} became {labels.tolist()} (shape "
        f"{tuple(labels.shape)}); likely cause: an in-place method on the caller's tensor, such as "
        "labels.unsqueeze_(1) to build a scatter_ index - use labels.unsqueeze(1) or labels[:, None]"
    )


def test_one_hot_is_float32() -> None:
    out = kata.one_hot(torch.tensor([0, 2, 1]), 3)
    assert out.dtype == torch.float32, (
        f"one_hot returned dtype {out.dtype}, expected torch.float32; likely cause: "
        "`torch.nn.functional.one_hot` returns int64 - convert with `.float()`"
    )


def test_one_hot_empty_batch() -> None:
    out = kata.one_hot(torch.zeros(0, dtype=torch.int64), 4)
    assert (tuple(out.shape), out.dtype) == ((0, 4), torch.float32), (
        f"one_hot of 0 labels gave shape {tuple(out.shape)}, dtype {out.dtype}; expected (0, 4) float32. "
        "Likely cause: the range check calls `labels.min()`/`.max()`, which raise on an empty tensor - use "
        "`(labels < 0).any()` or check `numel()` first"
    )


def _expect_value_error(labels: torch.Tensor, num_classes: int) -> None:
    """Fail with a teaching message unless one_hot(labels, num_classes) raises ValueError."""
    try:
        kata.one_hot(labels, num_classes)
    except ValueError:
        return
    except NotImplementedError:
        raise
    except Exception as exc:
        pytest.fail(
            f"one_hot({labels.tolist()}, {num_classes}) raised {type(exc).__name__}: {exc}; expected "
            "ValueError. Likely cause: torch's own error escaped (F.one_hot / indexing raise "
            "RuntimeError/IndexError) - check the range yourself and raise ValueError",
            pytrace=False,
        )
    pytest.fail(
        f"one_hot({labels.tolist()}, {num_classes}) returned without error; expected ValueError. Likely "
        "cause: no range check, an off-by-one (`> num_classes` instead of `>=`), or a -1 silently wrapping "
        "to the last class as `torch.eye(C)[labels]` does",
        pytrace=False,
    )


@pytest.mark.parametrize("bad", [-1, 3, 7], ids=["negative", "equal_to_num_classes", "above"])
def test_one_hot_rejects_out_of_range(bad: int) -> None:
    ok = kata.one_hot(torch.tensor([0, 1, 2]), 3)  # the happy path must work before the error path counts
    assert tuple(ok.shape) == (3, 3), f"one_hot([0, 1, 2], 3) has shape {tuple(ok.shape)}, expected (3, 3)"
    _expect_value_error(torch.tensor([0, bad, 1]), 3)


def test_one_hot_keeps_gpu_device_without_a_gpu() -> None:
    labels = on_fake_cuda(torch.tensor([2, 0, 1, 2]))
    with fake_cuda():
        try:
            out = kata.one_hot(labels, 4)
        except NotImplementedError:  # a RuntimeError too: an untouched stub reads as "not started"
            raise
        except RuntimeError as exc:
            pytest.fail(
                f"one_hot raised on labels on cuda:0 (pretend ones: this check runs without a GPU): {exc}. "
                "Likely cause: a tensor built on the CPU (torch.zeros / torch.eye / torch.arange without "
                "device=labels.device) combined with the labels",
                pytrace=False,
            )
    assert isinstance(out, torch.Tensor), f"expected a torch.Tensor, got {type(out).__name__}"
    assert type(out) is FakeCudaTensor, (
        "one_hot of labels on cuda:0 returned a CPU tensor (checked with pretend CUDA labels, so this runs "
        "without a GPU); likely cause: `torch.zeros(N, C)` without `device=labels.device`, a `.cpu()` call, "
        "or a round trip through NumPy"
    )
    expected = torch.eye(4, dtype=torch.float32)[[2, 0, 1, 2]]
    assert_close(out.as_subclass(torch.Tensor), expected, rtol=0, atol=0, what="one_hot on cuda:0 (pretend)")
    with fake_cuda():
        _expect_value_error(on_fake_cuda(torch.tensor([0, 4])), 4)


@pytest.mark.cuda
def test_one_hot_keeps_cuda_device() -> None:
    labels = torch.tensor([2, 0, 1, 2], device="cuda")
    out = kata.one_hot(labels, 4)
    assert out.device == labels.device, (
        f"one_hot of CUDA labels returned a tensor on {out.device}; expected {labels.device}. Likely cause: "
        "`torch.zeros(N, C)` without `device=labels.device`"
    )
    expected = torch.eye(4, dtype=torch.float32)[[2, 0, 1, 2]]
    assert_close(out.cpu(), expected, rtol=0, atol=0, what="one_hot on CUDA")
    _expect_value_error(torch.tensor([0, 4], device="cuda"), 4)


# ------------------------------------------------------------------------------------------- constant_like

like_dtypes = st.sampled_from(
    [torch.float32, torch.float64, torch.float16, torch.int64, torch.int32, torch.uint8, torch.bool]
)


def _value_for(dtype: torch.dtype, draw_value: float) -> float:
    """A fill value the dtype can hold exactly."""
    if dtype == torch.bool:
        return float(draw_value > 0)
    if not dtype.is_floating_point:
        return float(abs(int(draw_value)) % 100)
    return float(np.float16(draw_value))


@given(dtype=like_dtypes, shape=shapes, raw=st.floats(-100, 100))
def test_constant_like_matches_shape_dtype_and_value(dtype: torch.dtype, shape: tuple, raw: float) -> None:
    value = _value_for(dtype, raw)
    t = torch.zeros(shape, dtype=dtype)
    out = kata.constant_like(t, value)
    assert (tuple(out.shape), out.dtype) == (shape, dtype), (
        f"constant_like(t of shape {shape}, dtype {dtype}, {value}) gave shape {tuple(out.shape)}, dtype "
        f"{out.dtype}; likely cause: `torch.full(t.shape, value)` takes its dtype from `value` (a Python "
        "float gives the default dtype, float32), not from `t`, and `torch.ones_like(t) * value` promotes "
        "an integer `t` to float - `torch.full_like` keeps t's dtype"
    )
    expected = torch.full(shape, value, dtype=torch.float64)
    assert_close(out.double(), expected, rtol=0, atol=0, what=f"constant_like(..., {value})")


def test_constant_like_ignores_values_of_t() -> None:
    t = torch.tensor([[float("nan"), float("inf")], [-float("inf"), 2.0]])
    out = kata.constant_like(t, 1.5)
    assert_close(
        out,
        torch.full((2, 2), 1.5),
        rtol=0,
        atol=0,
        what="constant_like of a tensor holding nan/inf",
        likely_cause="computing `t * 0 + value`: nan * 0 and inf * 0 are nan - build from the shape, not "
        "the data",
    )


def test_constant_like_leaves_t_unchanged() -> None:
    t = torch.arange(6.0).reshape(2, 3)
    out = kata.constant_like(t, -2.0)
    assert torch.equal(t, torch.arange(6.0).reshape(2, 3)), (
        "constant_like overwrote its input; likely cause: `t.fill_(value)` (or `t.detach().fill_(value)`: "
        "detach shares t's memory) fills the caller's tensor in place - fill a new tensor"
    )
    assert isinstance(out, torch.Tensor) and out is not t, "constant_like returned `t` itself"
    with torch.no_grad():
        out.add_(100.0)
    assert torch.equal(t, torch.arange(6.0).reshape(2, 3)), (
        "writing into the result of constant_like changed `t`: they share memory; likely cause: a view of "
        "`t` (t.detach(), t.view(...), t[...]) filled in place - build a new tensor"
    )


def test_constant_like_of_a_tensor_that_requires_grad() -> None:
    t = torch.arange(6.0).reshape(2, 3).requires_grad_()
    out = kata.constant_like(t, 0.5)
    assert not out.requires_grad and out.grad_fn is None, (
        f"constant_like of a tensor that requires grad returned one with requires_grad={out.requires_grad}, "
        f"grad_fn={out.grad_fn}: a graph from `t` to a constant; likely cause: `t.clone().fill_(value)` or "
        "arithmetic on `t` - a constant is built from t's shape, dtype and device only (full_like)"
    )
    assert t.requires_grad and t.grad is None, (
        "constant_like changed `t`: it no longer requires grad, or got a .grad; leave the caller's tensor "
        "alone"
    )
    assert_close(out.detach(), torch.full((2, 3), 0.5), rtol=0, atol=0, what="constant_like(t, 0.5)")


def test_constant_like_keeps_meta_device() -> None:
    t = torch.empty(3, 5, dtype=torch.float64, device="meta")
    out = kata.constant_like(t, 2.0)
    assert (out.device.type, out.dtype, tuple(out.shape)) == ("meta", torch.float64, (3, 5)), (
        f"constant_like of a meta float64 (3, 5) tensor gave device {out.device}, dtype {out.dtype}, shape "
        f"{tuple(out.shape)}; likely cause: `torch.full(t.shape, ...)` without `device=t.device` builds on "
        "the CPU"
    )


def test_constant_like_on_device(device: torch.device) -> None:
    t = torch.zeros(2, 3, dtype=torch.int32, device=device)
    out = kata.constant_like(t, 4.0)
    assert (out.device, out.dtype) == (t.device, torch.int32), (
        f"constant_like(int32 tensor on {t.device}) gave {out.dtype} on {out.device}; expected int32 on "
        f"{t.device}"
    )
    assert torch.equal(out.cpu(), torch.full((2, 3), 4, dtype=torch.int32)), f"expected all 4s, got {out}"
