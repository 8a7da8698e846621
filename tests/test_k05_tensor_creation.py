"""Grader for k05_tensor_creation: torch.Tensor versus torch.tensor, and the factories around them.

Device bugs are caught without a GPU: on the `meta` device, on pretend CUDA tensors (`fake_cuda`) and with a
pretend GPU random generator (`fake_gpu_generator`), below; the `cuda` tests repeat them on a real GPU.
"""

from __future__ import annotations

import copy
import random
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
from kata_harness.testing import assert_close

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


# ----------------------------------------------------------------------------------------- legacy_equivalent


@given(case=nested_lists(numbers))
def test_legacy_equivalent_is_float32_for_every_element_type(case: tuple[list, tuple]) -> None:
    data, _ = case
    original = copy.deepcopy(data)
    out = kata.legacy_equivalent(data)
    assert data == original and [type(x) for x in pytree.tree_leaves(data)] == [
        type(x) for x in pytree.tree_leaves(original)
    ], (
        f"legacy_equivalent changed its argument: {original!r} is now {data!r}; likely cause: converting "
        "the elements in place (data[i] = float(...)) - build the tensor from the list, leave the list alone"
    )
    assert isinstance(out, torch.Tensor), f"expected a torch.Tensor, got {type(out).__name__}"
    assert out.dtype == torch.float32, (
        f"legacy_equivalent({data!r}) returned dtype {out.dtype}, expected torch.float32; likely cause: "
        "`torch.tensor(data)` infers int64/bool from the values - the legacy constructor converts data to "
        "the default dtype (float32 here), so say `dtype=torch.float32`"
    )
    assert out.device.type == "cpu" and not out.requires_grad, (
        f"legacy_equivalent({data!r}) returned a tensor on {out.device} with requires_grad="
        f"{out.requires_grad}; `torch.Tensor(data)` gives a CPU tensor that does not require grad"
    )


@given(case=nested_lists(numbers))
def test_legacy_equivalent_values_and_shape(case: tuple[list, tuple]) -> None:
    data, shape = case
    out = kata.legacy_equivalent(data)
    assert tuple(out.shape) == shape, (
        f"legacy_equivalent({data!r}) has shape {tuple(out.shape)}, expected {shape} (the nesting of the "
        "list); likely cause: the list was flattened, transposed, or read as a size"
    )
    expected = torch.tensor(np.array(data, dtype=np.float64))
    assert_close(
        out.double(),
        expected,
        rtol=1e-6,
        atol=1e-6,
        what=f"legacy_equivalent({data!r})",
        likely_cause="values rounded or truncated (e.g. converted through an integer dtype), or the list "
        "read as sizes of an uninitialised tensor",
    )


def test_legacy_equivalent_single_number_is_a_value_not_a_length() -> None:
    for data in ([3], [7.0], [[5]]):
        out = kata.legacy_equivalent(data)
        expected = torch.tensor(data, dtype=torch.float64)
        assert tuple(out.shape) == tuple(expected.shape), (
            f"legacy_equivalent({data!r}) has shape {tuple(out.shape)}, expected {tuple(expected.shape)}; "
            "likely cause: the number was used as a size, as `torch.Tensor(3)` or `torch.empty(3)` do"
        )
        assert_close(
            out.double(),
            expected,
            rtol=0,
            atol=0,
            what=f"legacy_equivalent({data!r})",
            likely_cause="an uninitialised or zero-filled tensor of that size instead of the value itself",
        )


def test_legacy_equivalent_empty_list() -> None:
    out = kata.legacy_equivalent([])
    assert out.dtype == torch.float32 and tuple(out.shape) == (0,), (
        f"legacy_equivalent([]) gave dtype {out.dtype}, shape {tuple(out.shape)}; expected float32 of shape "
        "(0,)"
    )


# -------------------------------------------------------------------------------------------- inferred_dtype


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([True, False], torch.bool),
        ([1, 2, 3], torch.int64),
        ([True, 2], torch.int64),
        ([1.0, 2.0], torch.float32),
        ([1, 2.5], torch.float32),
        ([[True], [2.5]], torch.float32),
        ([1j, 2], torch.complex64),
        ([[1.5, 2], [3, 1 + 1j]], torch.complex64),
        ([], torch.float32),
    ],
)
def test_inferred_dtype_examples(data: list, expected: torch.dtype) -> None:
    original = copy.deepcopy(data)
    got = kata.inferred_dtype(data)
    assert isinstance(got, torch.dtype), (
        f"inferred_dtype({data!r}) returned {type(got).__name__} {got!r}, expected the torch.dtype object "
        f"{expected!r}; likely cause: returning str(dtype) or a NumPy dtype instead of the dtype itself"
    )
    assert data == original, (
        f"inferred_dtype changed its argument: {original!r} is now {data!r}; likely cause: flattening or "
        "converting the list in place (pop, sort, data[i] = ...) - read it, do not change it"
    )
    assert got == expected, (
        f"inferred_dtype({data!r}) returned {got!r}, expected {expected!r}; likely cause: looking only at "
        "the first element (a mix promotes to the widest kind present), testing `isinstance(x, int)` before "
        "`bool` (bool is a subclass of int), or mapping Python float to float64 / complex to complex128 "
        "(torch uses the default dtype, float32, and its complex partner complex64)"
    )


@given(data=st.data())
def test_inferred_dtype_matches_torch_tensor(data: st.DataObject) -> None:
    # First pick which Python types appear, so that every mix is tried, not mostly all-complex lists.
    kinds = data.draw(st.sets(st.sampled_from(sorted(scalar_kinds)), min_size=1), label="kinds")
    nested, _ = data.draw(nested_lists(st.one_of(*(scalar_kinds[k] for k in sorted(kinds)))), label="data")
    expected = torch.tensor(nested).dtype
    got = kata.inferred_dtype(nested)
    assert got == expected, (
        f"inferred_dtype({nested!r}) returned {got!r}, but torch.tensor(data).dtype is {expected!r}; likely "
        "cause: only the first element (or first row) was inspected, or bools were counted as ints"
    )


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
