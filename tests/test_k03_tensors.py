"""Grader for k03_tensors: tensor metadata, NumPy round trips, flattening and broadcast distances.

Every expected value is computed here independently (Python arithmetic, NumPy, float64 formulas), never
copied from the reference solution. Device bugs are caught without a GPU: on the `meta` device, and on a
pretend CUDA tensor (`fake_cuda`, below); the `cuda` tests repeat them on a real GPU.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kata_harness import load_kata
from kata_harness.fake_cuda import FakeCudaTensor, fake_cuda, on_fake_cuda
from kata_harness.testing import assert_close, record_torch_calls

kata = load_kata("k03_tensors")

INFO_KEYS = {"shape", "dtype", "device", "requires_grad", "ndim", "numel"}

# torch dtype -> the NumPy dtype `.numpy()` gives it (written out by hand: this IS what is being checked).
TORCH_TO_NUMPY = {
    torch.float16: np.float16,
    torch.float32: np.float32,
    torch.float64: np.float64,
    torch.complex64: np.complex64,
    torch.uint8: np.uint8,
    torch.int8: np.int8,
    torch.int32: np.int32,
    torch.int64: np.int64,
    torch.bool: np.bool_,
}
NUMPY_TO_TORCH = {np.dtype(n): t for t, n in TORCH_TO_NUMPY.items()}

# Small shapes: 0 to 4 dims, sizes 0 to 3 (so empty tensors and 0-dim tensors turn up).
any_shape = st.lists(st.integers(0, 3), min_size=0, max_size=4).map(tuple)
# At least one dim and no zero sizes.
batch_shape = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)


def make(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """A deterministic tensor of any dtype with varied values."""
    gen = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=gen).bool()
    if dtype.is_floating_point or dtype.is_complex:
        return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    return torch.randint(0, 100, shape, generator=gen).to(dtype)


def nested_to_rows(values: object, n: int) -> list[list[object]]:
    """Row-major flattening of a nested list (what x.tolist() gives) into n rows, by hand."""

    def walk(v: object) -> list[object]:
        return [y for item in v for y in walk(item)] if isinstance(v, list) else [v]

    rows = values if isinstance(values, list) else [values]
    assert len(rows) == n
    return [walk(row) for row in rows]


def call_explained(func, *args, errors: tuple[type[BaseException], ...], advice: str):
    """func(*args); an exception of one of `errors` becomes a failure that says what probably went wrong.
    NotImplementedError passes through untouched, so an untouched stub reads as "not started"."""
    try:
        return func(*args)
    except NotImplementedError:
        raise
    except errors as exc:
        raise AssertionError(f"{advice}\n(raised {type(exc).__name__}: {exc})") from exc


# ----------------------------------------------------------------------------------------------------------
# tensor_info


def test_tensor_info_keys() -> None:
    info = kata.tensor_info(torch.zeros(2, 3))
    assert isinstance(info, dict), f"expected a dict, got {type(info).__name__}"
    assert set(info) == INFO_KEYS, (
        f"expected exactly the keys {sorted(INFO_KEYS)}, got {sorted(info)}; "
        f"missing {sorted(INFO_KEYS - set(info))}, unexpected {sorted(set(info) - INFO_KEYS)}; "
        "likely cause: a misspelt or forgotten key"
    )


@given(shape=any_shape)
def test_tensor_info_shape(shape: tuple[int, ...]) -> None:
    got = kata.tensor_info(torch.zeros(shape))["shape"]
    assert isinstance(got, tuple), (
        f"expected info['shape'] to be a tuple (torch.Size counts), got {type(got).__name__} {got!r}; "
        "likely cause: list(t.shape), or t.size without the call parentheses"
    )
    assert tuple(got) == shape and all(type(d) is int for d in got), (
        f"expected info['shape'] == {shape} (ints), got {got!r}"
    )


@pytest.mark.parametrize("dtype", list(TORCH_TO_NUMPY), ids=str)
def test_tensor_info_dtype(dtype: torch.dtype) -> None:
    got = kata.tensor_info(make((2, 2), dtype))["dtype"]
    assert isinstance(got, torch.dtype) and got == dtype, (
        f"expected info['dtype'] to be the torch.dtype {dtype}, got {type(got).__name__} {got!r}; "
        "likely cause: str(t.dtype) or a NumPy dtype instead of t.dtype itself"
    )


def test_tensor_info_device(device: torch.device) -> None:
    expected = f"cuda:{torch.cuda.current_device()}" if device.type == "cuda" else "cpu"
    for t, want in [(torch.ones(3, device=device), expected), (torch.ones(3, device="meta"), "meta")]:
        got = kata.tensor_info(t)["device"]
        assert type(got) is str and got == want, (
            f"expected info['device'] == {want!r} (a plain str), got {type(got).__name__} {got!r}; "
            "likely cause: returning the torch.device object, or t.device.type (drops the ':0' index)"
        )


def test_tensor_info_device_keeps_the_gpu_index() -> None:
    t = on_fake_cuda(torch.ones(3))
    with fake_cuda():
        got = kata.tensor_info(t)["device"]
    assert type(got) is str and got == "cuda:0", (
        f"for a tensor on cuda:0 (a pretend one: this check runs without a GPU) expected info['device'] == "
        f"'cuda:0' (a plain str), got {type(got).__name__} {got!r}; likely cause: t.device.type drops the "
        "':0' index - str(t.device) keeps it"
    )


def test_tensor_info_requires_grad() -> None:
    leaf = torch.randn(3, requires_grad=True)
    cases = [
        ("a plain tensor", torch.randn(3), False),
        ("a leaf created with requires_grad=True", leaf, True),
        ("the result of leaf * 2 (a non-leaf)", leaf * 2, True),
        ("leaf.detach()", leaf.detach(), False),
    ]
    for label, t, want in cases:
        got = kata.tensor_info(t)["requires_grad"]
        assert type(got) is bool and got == want, (
            f"for {label}: expected info['requires_grad'] == {want}, got {got!r}; "
            "likely cause: reading t.is_leaf, t.grad or t.grad_fn instead of t.requires_grad"
        )
    assert leaf.requires_grad and cases[2][1].grad_fn is not None, (
        "tensor_info changed the tensor it describes: it no longer requires grad (or lost its grad_fn); "
        "likely cause: t.requires_grad_(...) or t.detach_() - read t.requires_grad, do not set it"
    )


@given(shape=any_shape)
def test_tensor_info_ndim(shape: tuple[int, ...]) -> None:
    got = kata.tensor_info(torch.zeros(shape))["ndim"]
    assert type(got) is int and got == len(shape), (
        f"for shape {shape}: expected info['ndim'] == {len(shape)} (an int), got {got!r}; "
        "likely cause: len(t) (the size of the first dimension, and an error for 0-dim tensors)"
    )


@given(shape=any_shape)
def test_tensor_info_numel(shape: tuple[int, ...]) -> None:
    want = math.prod(shape)
    got = kata.tensor_info(torch.zeros(shape))["numel"]
    assert type(got) is int and got == want, (
        f"for shape {shape}: expected info['numel'] == {want} (an int), got {got!r}; "
        "likely cause: t.size() (in torch that is the shape, not NumPy's element count)"
    )


# ----------------------------------------------------------------------------------------------------------
# to_numpy


@settings(max_examples=25)
@given(shape=any_shape, dtype=st.sampled_from(list(TORCH_TO_NUMPY)))
def test_to_numpy_values_shape_and_dtype(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    t = make(shape, dtype)
    got = kata.to_numpy(t)
    assert isinstance(got, np.ndarray), f"expected a numpy.ndarray, got {type(got).__name__}"
    want_dtype = np.dtype(TORCH_TO_NUMPY[dtype])
    assert got.dtype == want_dtype and got.shape == shape, (
        f"for a {dtype} tensor of shape {shape}: expected dtype {want_dtype} and shape {shape}, got "
        f"{got.dtype} and {got.shape}; likely cause: np.array(t.tolist()) (float32 becomes float64)"
    )
    assert got.tolist() == t.tolist(), f"values differ: expected {t.tolist()}, got {got.tolist()}"


def test_to_numpy_requires_grad_tensor() -> None:
    leaf = torch.tensor([[1.5, -2.0], [0.25, 3.0]], requires_grad=True)
    for label, t, want in [("a leaf", leaf, [[1.5, -2.0], [0.25, 3.0]]), ("leaf * 2", leaf * 2, None)]:
        want = want if want is not None else [[3.0, -4.0], [0.5, 6.0]]
        got = call_explained(
            kata.to_numpy,
            t,
            errors=(RuntimeError,),
            advice=f"to_numpy raised on {label}, which requires grad; likely cause: calling .numpy() "
            "without .detach() first",
        )
        assert isinstance(got, np.ndarray) and got.dtype == np.float32, (
            f"expected a float32 array for {label}, got {type(got).__name__} {getattr(got, 'dtype', '')}"
        )
        assert got.tolist() == want, f"for {label}: expected {want}, got {got.tolist()}"


def test_to_numpy_leaves_input_unchanged() -> None:
    t = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    got = kata.to_numpy(t)
    assert isinstance(got, np.ndarray) and got.tolist() == [1.0, 2.0, 3.0], f"expected [1, 2, 3], got {got!r}"
    assert t.requires_grad and t.tolist() == [1.0, 2.0, 3.0], (
        f"expected the input to still require grad and hold [1, 2, 3] after to_numpy, got requires_grad="
        f"{t.requires_grad}, values {t.tolist()}; likely cause: t.requires_grad_(False) or t.detach_() "
        "changes the caller's tensor - use t.detach(), which makes a new tensor"
    )
    y = t * 2  # a non-leaf: detach_() would cut it out of the caller's graph
    kata.to_numpy(y)
    assert y.requires_grad and y.grad_fn is not None, (
        f"after to_numpy(t * 2) the caller's tensor lost its graph (requires_grad={y.requires_grad}, "
        f"grad_fn={y.grad_fn}); likely cause: t.detach_() detaches the caller's tensor in place - use "
        "t.detach(), which makes a new tensor"
    )


def test_to_numpy_gpu_tensor_without_a_gpu() -> None:
    values = [[0.5, -1.0, 2.0], [4.0, 8.0, -16.0]]
    leaf = on_fake_cuda(torch.tensor(values, requires_grad=True))
    with fake_cuda():
        non_leaf = leaf * 2
    cases = [
        ("a CUDA tensor", on_fake_cuda(torch.tensor(values)), values),
        ("a CUDA leaf that requires grad", leaf, values),
        ("a CUDA non-leaf (leaf * 2)", non_leaf, [[2 * v for v in row] for row in values]),
    ]
    for label, t, want in cases:
        requires_grad = t.requires_grad
        with fake_cuda():
            got = call_explained(
                kata.to_numpy,
                t,
                errors=(TypeError, RuntimeError),
                advice=f"to_numpy raised on {label} (a pretend GPU tensor: this check runs without a GPU); "
                "likely cause: .numpy() reads host memory only - copy the tensor with .cpu() first (after "
                ".detach()); t.detach().cpu().numpy() works on every device",
            )
        assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.tolist() == want, (
            f"for {label}: expected a float32 array {want}, got {got!r}"
        )
        assert type(t) is FakeCudaTensor and t.requires_grad == requires_grad, (
            f"to_numpy changed the caller's {label}: it moved off the GPU or changed requires_grad; use "
            "out-of-place calls (t.detach().cpu()), which leave t alone"
        )


def test_to_numpy_on_device(device: torch.device) -> None:
    values = [[0.5, -1.0, 2.0], [4.0, 8.0, -16.0]]
    for requires_grad in (False, True):
        t = torch.tensor(values, device=device, requires_grad=requires_grad)
        got = call_explained(
            kata.to_numpy,
            t,
            errors=(RuntimeError, TypeError),
            advice=f"to_numpy raised on a {device.type} tensor (requires_grad={requires_grad}); likely "
            "cause: .numpy() only reads CPU memory - move the tensor with .cpu() first (after .detach())",
        )
        assert isinstance(got, np.ndarray) and got.tolist() == values, f"expected {values}, got {got!r}"
        assert t.device.type == device.type, f"the input moved from {device} to {t.device}"


# ----------------------------------------------------------------------------------------------------------
# from_numpy_shared


@settings(max_examples=25)
@given(shape=any_shape, np_dtype=st.sampled_from(list(NUMPY_TO_TORCH)))
def test_from_numpy_shared_values_and_dtype(shape: tuple[int, ...], np_dtype: np.dtype) -> None:
    a = np.arange(math.prod(shape)).reshape(shape).astype(np_dtype)
    t = kata.from_numpy_shared(a)
    want = NUMPY_TO_TORCH[np_dtype]
    assert isinstance(t, torch.Tensor), f"expected a torch.Tensor, got {type(t).__name__}"
    assert t.dtype == want, (
        f"for a {np_dtype} array: expected a {want} tensor, got {t.dtype}; likely cause: torch.Tensor(a), "
        "which casts to the default dtype (float32), or a .float() / dtype= cast"
    )
    assert tuple(t.shape) == shape, (
        f"for an array of shape {shape}: expected a tensor of shape {shape}, got {tuple(t.shape)}; likely "
        "cause: a reshape, or np.ascontiguousarray / np.atleast_1d, which turn a 0-dim array into 1-D"
    )
    assert t.tolist() == a.tolist(), f"values differ: expected {a.tolist()}, got {t.tolist()}"


def test_from_numpy_shared_shares_memory() -> None:
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    t = kata.from_numpy_shared(a)
    a[1, 2] = 100.0
    assert isinstance(t, torch.Tensor) and t[1, 2].item() == 100.0, (
        f"after a[1, 2] = 100 the tensor shows {t[1, 2].item()}; likely cause: torch.tensor(a) copies (so "
        "does torch.Tensor(a) for this float64 array) - torch.from_numpy (or torch.as_tensor) shares memory"
    )
    t[0, 0] = -7.0
    assert a[0, 0] == -7.0, f"after t[0, 0] = -7 the array shows {a[0, 0]}; the tensor does not share memory"


def test_from_numpy_shared_non_contiguous_array() -> None:
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    for label, a in [("a.T", base.T), ("a[:, ::2]", base[:, ::2])]:
        t = kata.from_numpy_shared(a)
        assert tuple(t.shape) == a.shape and t.tolist() == a.tolist(), (
            f"for {label}: expected values {a.tolist()}, got {t.tolist()}"
        )
        a[1, 1] = 1000.0
        assert t[1, 1].item() == a[1, 1], (
            f"for the non-contiguous view {label}: a write to the array is not seen in the tensor; likely "
            "cause: np.ascontiguousarray / .copy() before torch.from_numpy makes a copy"
        )
        t[0, 1] = -3.0
        assert a[0, 1] == -3.0, (
            f"for the non-contiguous view {label}: a write to the tensor is not seen in the array; likely "
            "cause: a copy (torch.tensor, .contiguous(), .clone()) after the conversion"
        )


# ----------------------------------------------------------------------------------------------------------
# flatten_batch


@given(shape=batch_shape)
def test_flatten_batch_shape(shape: tuple[int, ...]) -> None:
    want = (shape[0], math.prod(shape[1:]))
    got = kata.flatten_batch(torch.zeros(shape))
    assert tuple(got.shape) == want, (
        f"for input shape {shape}: expected {want}, got {tuple(got.shape)}; likely cause: flattening "
        "into the last dimension instead of keeping the first (batch) dimension"
    )


@given(shape=batch_shape, seed=st.integers(0, 2**16))
def test_flatten_batch_row_major_values(shape: tuple[int, ...], seed: int) -> None:
    x = make(shape, torch.float32, seed)
    got = kata.flatten_batch(x)
    want = nested_to_rows(x.tolist(), shape[0])
    assert got.tolist() == want, (
        f"for input shape {shape}: rows are not x[i] in row-major order;\nexpected {want}\ngot {got.tolist()}"
        "\nlikely cause: reshaping to the transposed shape and then transposing"
    )


def test_flatten_batch_one_dim_input() -> None:
    x = torch.tensor([3.0, 1.0, 4.0, 1.5])
    got = call_explained(
        kata.flatten_batch,
        x,
        errors=(IndexError, RuntimeError),
        advice="flatten_batch raised on a 1-D input of shape (4,); likely cause: x.flatten(1) needs a dim 1",
    )
    assert got.tolist() == [[3.0], [1.0], [4.0], [1.5]], (
        f"for a 1-D input of shape (4,): expected shape (4, 1) with one value per row, got "
        f"{tuple(got.shape)} {got.tolist()}"
    )


@pytest.mark.parametrize(("shape", "want"), [((0, 3, 4), (0, 12)), ((0,), (0, 1)), ((0, 2, 0), (0, 0))])
def test_flatten_batch_empty_batch(shape: tuple[int, ...], want: tuple[int, int]) -> None:
    got = call_explained(
        kata.flatten_batch,
        torch.zeros(shape),
        errors=(RuntimeError,),
        advice=f"flatten_batch raised on an empty batch of shape {shape}; likely cause: reshape(n, -1) "
        "cannot infer -1 when there are no elements - compute the size explicitly",
    )
    assert tuple(got.shape) == want, f"for input shape {shape}: expected {want}, got {tuple(got.shape)}"


def test_flatten_batch_non_contiguous() -> None:
    cases = [
        ("a transposed matrix", torch.arange(12.0).reshape(3, 4).T),
        ("x.transpose(1, 2)", torch.arange(24.0).reshape(2, 3, 4).transpose(1, 2)),
        ("a permuted 3-D tensor", torch.arange(24.0).reshape(2, 3, 4).permute(2, 1, 0)),
        ("a strided slice", torch.arange(60.0).reshape(3, 4, 5)[:, :, ::2]),
    ]
    for label, x in cases:
        assert not x.is_contiguous()
        want = nested_to_rows(x.tolist(), x.shape[0])
        got = call_explained(
            kata.flatten_batch,
            x,
            errors=(RuntimeError,),
            advice=f"flatten_batch raised on {label} (not contiguous); likely cause: .view needs a "
            "compatible memory layout - use .reshape, or .contiguous() first",
        )
        assert got.tolist() == want, (
            f"for {label} of shape {tuple(x.shape)}: expected rows {want}, got {got.tolist()}; likely cause: "
            "reading the underlying memory in storage order (as_strided) instead of x's logical order"
        )


def test_flatten_batch_leaves_input_unchanged() -> None:
    cases = [
        ("a 1-D tensor", torch.tensor([3.0, 1.0, 4.0])),
        ("a (2, 3, 2) tensor", torch.arange(12.0).reshape(2, 3, 2)),
        ("a transposed matrix", torch.arange(6.0).reshape(2, 3).T),
    ]
    for label, x in cases:
        before = (tuple(x.shape), x.stride(), x.tolist())
        kata.flatten_batch(x)
        after = (tuple(x.shape), x.stride(), x.tolist())
        assert after == before, (
            f"flatten_batch changed its input, {label}: (shape, strides, values) were {before}, are now "
            f"{after}; likely cause: an in-place method (unsqueeze_, resize_, t_, ...) changes the "
            "caller's tensor - use the out-of-place form (unsqueeze, reshape), which returns a new tensor"
        )


def test_flatten_batch_keeps_dtype_and_device(device: torch.device) -> None:
    for dev in (device, torch.device("meta")):
        for dtype in (torch.int64, torch.float16, torch.bool):
            x = torch.zeros((2, 3, 2), dtype=dtype, device=dev)
            got = call_explained(
                kata.flatten_batch,
                x,
                errors=(RuntimeError,),
                advice=f"flatten_batch raised on a {dtype} tensor on {dev}; likely cause: a tensor built on "
                "the CPU (torch.zeros/torch.tensor without device=x.device), or a value read back into "
                "Python (.item(), .tolist()), which the meta device cannot do",
            )
            assert got.dtype == dtype and got.device.type == dev.type, (
                f"for a {dtype} tensor on {dev}: expected the result to keep dtype and device, got "
                f"{got.dtype} on {got.device}; likely cause: a cast (.float()) or building a new tensor "
                "with torch.tensor/torch.zeros without dtype= and device="
            )


# ----------------------------------------------------------------------------------------------------------
# pairwise_sq_dists


def sq_dists_oracle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """out[i][j] = sum_k (a[i][k] - b[j][k])**2 with Python floats (double precision), loop by loop."""
    rows_a, rows_b = a.double().tolist(), b.double().tolist()
    out = [[math.fsum((p - q) ** 2 for p, q in zip(ra, rb, strict=True)) for rb in rows_b] for ra in rows_a]
    return torch.tensor(out, dtype=torch.float64).reshape(len(rows_a), len(rows_b))


def dist_tolerance(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(rtol, atol) for the inputs' dtype. atol scales with |a|^2 + |b|^2, so the |a|^2 + |b|^2 - 2ab
    expansion (correct, but it cancels) passes as well as the direct difference."""
    scale = 1.0 + a.double().pow(2).sum(1).max().item() + b.double().pow(2).sum(1).max().item()
    eps = 1e-5 if a.dtype == torch.float32 else 1e-12
    return eps, eps * scale


def test_pairwise_sq_dists_leaves_inputs_unchanged() -> None:
    gen = torch.Generator().manual_seed(3)
    a, b = torch.randn(4, 3, generator=gen), torch.randn(5, 3, generator=gen)
    before = [(tuple(x.shape), x.stride(), x.tolist()) for x in (a, b)]
    kata.pairwise_sq_dists(a, b)
    after = [(tuple(x.shape), x.stride(), x.tolist()) for x in (a, b)]
    for name, was, now in zip("ab", before, after, strict=True):
        assert now == was, (
            f"pairwise_sq_dists changed its input {name}: shape and strides were {was[:2]}, are now "
            f"{now[:2]} (or its values changed); likely cause: an in-place method such as "
            f"{name}.unsqueeze_(1) or {name}.sub_(...) - use a[:, None, :] / unsqueeze, which make new views"
        )


@given(
    n=st.integers(1, 5),
    m=st.integers(1, 5),
    d=st.integers(1, 4),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_pairwise_sq_dists_matches_formula(n: int, m: int, d: int, dtype: torch.dtype, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=gen, dtype=dtype)
    b = torch.randn(m, d, generator=gen, dtype=dtype)
    got = kata.pairwise_sq_dists(a, b)
    rtol, atol = dist_tolerance(a, b)
    assert_close(
        got,
        sq_dists_oracle(a, b).to(dtype),
        rtol=rtol,
        atol=atol,
        what=f"pairwise_sq_dists for a {tuple(a.shape)}, b {tuple(b.shape)} ({dtype})",
        likely_cause="broadcasting the wrong axes (a[None] - b[:, None] gives (M, N)), summing over the "
        "wrong dimension, or taking a square root",
    )


def test_pairwise_sq_dists_shape() -> None:
    a, b = torch.randn(3, 2), torch.randn(5, 2)
    got = kata.pairwise_sq_dists(a, b)
    assert tuple(got.shape) == (3, 5), (
        f"a is (3, 2) and b is (5, 2): expected an output of shape (3, 5), got {tuple(got.shape)}; likely "
        "cause: the broadcast axes are swapped (a[None, :, :] - b[:, None, :] is (M, N, D))"
    )


def test_pairwise_sq_dists_never_negative() -> None:
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(48, 16, generator=gen) * 10 + 10
    b = torch.cat([a, torch.randn(8, 16, generator=gen)])
    got = kata.pairwise_sq_dists(a, b)
    smallest = got.min().item()
    assert smallest >= 0, (
        f"found a negative squared distance ({smallest}) between identical rows; likely cause: the "
        "|a|^2 + |b|^2 - 2 a.b expansion cancels and rounds below zero - clamp it at 0 or subtract first"
    )


def test_pairwise_sq_dists_is_written_not_looked_up() -> None:
    a, b = torch.randn(4, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    with record_torch_calls() as calls:
        kata.pairwise_sq_dists(a, b)
    looked_up = sorted({c for c in calls if "cdist" in c or "pdist" in c or "pairwise_distance" in c})
    assert not looked_up, (
        f"pairwise_sq_dists called {looked_up}: the task is to write the distance with broadcasting "
        "(a[:, None, :] - b[None, :, :]) or the |a|^2 - 2ab + |b|^2 expansion, not to call torch's own"
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_pairwise_sq_dists_keeps_dtype(dtype: torch.dtype) -> None:
    got = kata.pairwise_sq_dists(torch.randn(4, 3, dtype=dtype), torch.randn(2, 3, dtype=dtype))
    assert got.dtype == dtype, (
        f"inputs are {dtype}: expected a {dtype} result, got {got.dtype}; likely cause: a cast such as "
        ".float(), or a result tensor made with torch.zeros(...) without dtype="
    )


def test_pairwise_sq_dists_vectorised() -> None:
    counts = {}
    for n, m in [(2, 3), (9, 4), (3, 11)]:
        a, b = torch.randn(n, 5), torch.randn(m, 5)
        with record_torch_calls() as calls:
            kata.pairwise_sq_dists(a, b)
        counts[(n, m)] = len(calls)
    assert len(set(counts.values())) == 1, (
        f"the number of torch calls grows with N and M: {counts} (N, M) -> calls; likely cause: a Python "
        "loop over the rows of a or b - broadcast a[:, None, :] against b[None, :, :] instead"
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_pairwise_sq_dists_gpu_inputs_without_a_gpu(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(4)
    a, b = torch.randn(4, 3, generator=gen, dtype=dtype), torch.randn(6, 3, generator=gen, dtype=dtype)
    with fake_cuda():
        got = call_explained(
            kata.pairwise_sq_dists,
            on_fake_cuda(a),
            on_fake_cuda(b),
            errors=(RuntimeError,),
            advice="pairwise_sq_dists raised on inputs on cuda:0 (pretend ones: this check runs without a "
            "GPU); likely cause: a helper tensor built on the CPU (torch.zeros/torch.tensor without "
            "device=a.device) mixed with the inputs",
        )
    assert isinstance(got, torch.Tensor), f"expected a torch.Tensor, got {type(got).__name__}"
    assert type(got) is FakeCudaTensor and got.dtype == dtype and tuple(got.shape) == (4, 6), (
        f"inputs (4, 3) and (6, 3), {dtype} on cuda:0: expected a (4, 6) {dtype} result on cuda:0, got "
        f"{tuple(got.shape)} {got.dtype} {'on cuda:0' if type(got) is FakeCudaTensor else 'on the CPU'}; "
        "likely cause: the result built on the CPU (torch.zeros(N, M) without device=, a .cpu() call, or "
        "a round trip through NumPy), or a cast"
    )
    rtol, atol = dist_tolerance(a, b)
    assert_close(
        got.as_subclass(torch.Tensor),
        sq_dists_oracle(a, b).to(dtype),
        rtol=rtol,
        atol=atol,
        what="pairwise_sq_dists on cuda:0 (pretend)",
    )


def test_pairwise_sq_dists_on_input_device(device: torch.device) -> None:
    gen = torch.Generator().manual_seed(2)
    a, b = torch.randn(4, 3, generator=gen), torch.randn(6, 3, generator=gen)
    got = kata.pairwise_sq_dists(a.to(device), b.to(device))
    assert got.device.type == device.type, f"expected the result on {device}, got {got.device}"
    rtol, atol = dist_tolerance(a, b)
    assert_close(
        got.cpu(),
        sq_dists_oracle(a, b).float(),
        rtol=rtol,
        atol=atol,
        what=f"pairwise_sq_dists on {device}",
        likely_cause="a helper tensor created on the CPU (torch.zeros(...) without device=)",
    )
