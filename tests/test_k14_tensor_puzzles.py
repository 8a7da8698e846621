"""Grader for k14_tensor_puzzles: broadcast masks, gather, segment sums, einsum, sliding windows, im2col.

Oracles are written here independently of the reference: Python loops over `tolist()` values (exact for
masks, picks and integer sums; `math.fsum` in double precision for float sums and means), a float64
broadcast-and-sum for the bilinear scores, and torch's own `F.conv2d` run in float64 for the convolution.
Tolerances: float64 results at 1e-10 relative; float32 results at 1e-5 relative (1e-4 for conv2d, whose
terms are sums of up to C * kh * kw products) with an absolute part scaled by the size of the terms, so
any summation order passes.

"No Python loop" is checked by counting the torch calls (`record_torch_calls`) at two or three sizes: the
count must not change. Forbidden one-call shortcuts (`tril`/`triu`, `bincount`/`segment_reduce`, any
`bilinear`, any `pool` or `conv`) are found in the same recordings. Device handling is checked without a
GPU on the `meta` device and on pretend CUDA tensors (`kata_harness.fake_cuda`); the `device` fixture runs
one check per task on a real GPU where there is one (only that sees real device memory).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kata_harness import load_kata
from kata_harness.fake_cuda import FakeCudaTensor, fake_cuda, on_fake_cuda
from kata_harness.testing import assert_close, record_torch_calls

kata = load_kata("k14_tensor_puzzles")


def snapshot(*tensors: torch.Tensor) -> list[tuple]:
    """(shape, strides, dtype, values) of each tensor, to check that a call left its inputs alone."""
    return [(tuple(t.shape), t.stride(), t.dtype, t.tolist()) for t in tensors]


def assert_unchanged(before: list[tuple], tensors: tuple[torch.Tensor, ...], names: str, task: str) -> None:
    for name, was, t in zip(names.split(), before, tensors, strict=True):
        now = snapshot(t)[0]
        assert now == was, (
            f"{task} changed its input {name}: (shape, strides, dtype) was {was[:3]}, is now {now[:3]} (or "
            "its values changed); likely cause: an in-place method (unsqueeze_, squeeze_, add_, index_add_ "
            "or scatter_add_ on an input, masked_fill_) - build a new tensor instead"
        )


def call_counts(task: str, cases: list[tuple[str, object]]) -> dict[str, int]:
    """{label: number of torch calls} for each (label, zero-argument call)."""
    counts = {}
    for label, run in cases:
        with record_torch_calls() as calls:
            run()
        counts[label] = len(calls)
    return counts


def assert_vectorised(task: str, counts: dict[str, int], loop: str) -> None:
    assert len(set(counts.values())) == 1, (
        f"{task}: the number of torch calls changes with the input size: {counts} (size -> calls); "
        f"expected the same count for every size; likely cause: a Python loop over {loop}"
    )


def forbidden_calls(calls: list[str], *fragments: str) -> list[str]:
    return sorted({c for c in calls if any(f in c.lower() for f in fragments)})


# ----------------------------------------------------------------------------------------------------------
# band_mask


def band_oracle(n: int, before: int, after: int) -> list[list[bool]]:
    return [[i - before <= j <= i + after for j in range(n)] for i in range(n)]


@pytest.mark.parametrize(
    ("n", "before", "after", "label"),
    [
        (4, 4, 0, "causal (before=n, after=0)"),
        (5, 1, 0, "a causal window of width 2 (before=1, after=0)"),
        (5, 0, 2, "looking ahead only (before=0, after=2)"),
        (4, 4, -1, "strictly lower triangle (before=n, after=-1)"),
    ],
)
def test_band_mask_known_masks(n: int, before: int, after: int, label: str) -> None:
    got = kata.band_mask(n, before, after)
    assert isinstance(got, torch.Tensor), f"expected a torch.Tensor, got {type(got).__name__}"
    assert got.dtype == torch.bool and tuple(got.shape) == (n, n), (
        f"band_mask({n}, {before}, {after}): expected a ({n}, {n}) torch.bool mask, got {tuple(got.shape)} "
        f"{got.dtype}; likely cause: a cast (.int(), .float()) or multiplying masks instead of combining "
        "them with &"
    )
    want = band_oracle(n, before, after)
    if got.tolist() != want:
        cause = "an off-by-one: < where the band includes its edges (<=)"
        if got.tolist() == [list(r) for r in zip(*want, strict=True)]:
            cause = (
                "rows and columns swapped: row i is the query, column j the key (compare j - i, not i - j)"
            )
        raise AssertionError(
            f"band_mask({n}, {before}, {after}), {label}:\nexpected {torch.tensor(want).int().tolist()}\n"
            f"got      {got.int().tolist()}\nlikely cause: {cause}"
        )


@given(n=st.integers(0, 7), before=st.integers(-3, 8), after=st.integers(-3, 8))
@settings(max_examples=30)
def test_band_mask_matches_definition(n: int, before: int, after: int) -> None:
    got = kata.band_mask(n, before, after)
    assert got.dtype == torch.bool and tuple(got.shape) == (n, n), (
        f"band_mask({n}, {before}, {after}): expected a ({n}, {n}) torch.bool mask, got "
        f"{tuple(got.shape)} {got.dtype}"
    )
    want = band_oracle(n, before, after)
    assert got.tolist() == want, (
        f"band_mask({n}, {before}, {after}): mask[i][j] must be i - before <= j <= i + after;\n"
        f"expected {torch.tensor(want, dtype=torch.bool).reshape(n, n).int().tolist()}\n"
        f"got      {got.int().tolist()}\nlikely cause: negative before/after treated as 0 (clamped, or "
        "abs()), before and after swapped, or an off-by-one at an edge of the band"
    )


def test_band_mask_on_the_requested_device() -> None:
    for device in ("meta", torch.device("meta")):
        got = kata.band_mask(5, 1, 2, device=device)
        assert got.device.type == "meta" and got.dtype == torch.bool and tuple(got.shape) == (5, 5), (
            f"band_mask(5, 1, 2, device={device!r}): expected a (5, 5) bool mask on meta, got "
            f"{tuple(got.shape)} {got.dtype} on {got.device}; likely cause: torch.arange(n) without "
            "device=device, so the mask is built on the CPU"
        )
    with fake_cuda():
        got = kata.band_mask(4, 1, 0, device="cuda")
    assert type(got) is FakeCudaTensor, (
        f"band_mask(4, 1, 0, device='cuda') (a pretend GPU: this check runs without one): expected the mask "
        f"on cuda:0, got it on {'cuda:0' if type(got) is FakeCudaTensor else 'the CPU'}; likely cause: the "
        "aranges built without device=device"
    )
    assert got.as_subclass(torch.Tensor).tolist() == band_oracle(4, 1, 0)
    assert kata.band_mask(3, 0, 0).device.type == "cpu", "device=None must give a CPU tensor"


def test_band_mask_on_a_real_device(device: torch.device) -> None:
    got = kata.band_mask(6, 2, 1, device=device)
    assert got.device.type == device.type, f"expected the mask on {device}, got {got.device}"
    assert got.cpu().tolist() == band_oracle(6, 2, 1), f"band_mask(6, 2, 1) on {device}: wrong values"


def test_band_mask_negative_n_raises() -> None:
    with pytest.raises(ValueError):
        kata.band_mask(-1, 1, 1)


def test_band_mask_broadcasts_without_tril_or_loops() -> None:
    counts = call_counts("band_mask", [(f"n={n}", lambda n=n: kata.band_mask(n, 2, 1)) for n in (3, 11, 40)])
    with record_torch_calls() as calls:
        kata.band_mask(6, 6, 0)
    bad = forbidden_calls(calls, "tril", "triu")
    assert not bad, (
        f"band_mask called {bad}: the task is to build the band by broadcasting two aranges (a column of "
        "row indices against a row of column indices), not with tril/triu"
    )
    assert_vectorised("band_mask", counts, "rows (filling one row of the mask per iteration)")


# ----------------------------------------------------------------------------------------------------------
# pick_targets


def pick_oracle(values: torch.Tensor, targets: torch.Tensor) -> list:
    def walk(v: list | object, t: list | int) -> list | object:
        return v[t] if isinstance(t, int) else [walk(vi, ti) for vi, ti in zip(v, t, strict=True)]

    return walk(values.tolist(), targets.tolist())


@given(
    batch=st.lists(st.integers(0, 3), min_size=0, max_size=3).map(tuple),
    c=st.integers(1, 5),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.int64, torch.int32]),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=30)
def test_pick_targets_matches_definition(
    batch: tuple[int, ...], c: int, dtype: torch.dtype, seed: int
) -> None:
    gen = torch.Generator().manual_seed(seed)
    values = torch.randint(-50, 50, (*batch, c), generator=gen).to(dtype)
    targets = torch.randint(0, c, batch, generator=gen)
    got = kata.pick_targets(values, targets)
    assert isinstance(got, torch.Tensor), f"expected a torch.Tensor, got {type(got).__name__}"
    assert tuple(got.shape) == batch and got.dtype == dtype, (
        f"values {tuple(values.shape)} {dtype}, targets {batch}: expected a result of shape {batch} and "
        f"dtype {dtype}, got {tuple(got.shape)} {got.dtype}; likely cause: a missing or extra squeeze "
        "(gather keeps the indexed dimension, size 1), values[:, targets] (which picks every target for "
        "every row), or a cast"
    )
    want = pick_oracle(values, targets)
    assert got.tolist() == want, (
        f"values {tuple(values.shape)}, targets {batch}: expected {want}, got {got.tolist()}; likely cause: "
        "gathering along the wrong dimension (dim 0 instead of the last), or an index that does not line "
        "up with the batch"
    )


def test_pick_targets_square_table() -> None:
    # (N, C) with N == C: gathering along dim 0 runs without an error and gives the wrong numbers.
    values = torch.arange(16.0).reshape(4, 4)
    targets = torch.tensor([2, 0, 3, 1])
    got = kata.pick_targets(values, targets)
    assert got.tolist() == [2.0, 4.0, 11.0, 13.0], (
        f"values = arange(16).reshape(4, 4), targets = [2, 0, 3, 1]: expected [2, 4, 11, 13] (row i, "
        f"column targets[i]), got {got.tolist()}; likely cause: gather along dim 0 (column i, row "
        "targets[i]), which runs without an error when N == C"
    )


def test_pick_targets_ignores_infinities_elsewhere() -> None:
    log_probs = torch.tensor([[0.0, -math.inf, -2.0], [-math.inf, -0.5, -math.inf], [-1.0, -3.0, -math.inf]])
    targets = torch.tensor([0, 1, 1])
    got = kata.pick_targets(log_probs, targets)
    assert got.tolist() == [0.0, -0.5, -3.0], (
        f"log-probs with -inf in entries that are not targets: expected [0.0, -0.5, -3.0], got "
        f"{got.tolist()}; likely cause: multiplying by a one-hot mask and summing (-inf * 0 is nan) "
        "instead of indexing"
    )


def test_pick_targets_gradient_is_one_hot() -> None:
    values = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([3, 3, 0])
    got = kata.pick_targets(values, targets)
    assert got.requires_grad, (
        "pick_targets on values that require grad returned a result without a graph; likely cause: "
        ".detach(), .tolist() or torch.tensor(...) on the picked values"
    )
    got.sum().backward()
    want = torch.zeros(3, 4, dtype=torch.float64)
    want[0, 3] = want[1, 3] = want[2, 0] = 1.0
    assert values.grad is not None and values.grad.tolist() == want.tolist(), (
        f"the gradient of pick_targets(values, [3, 3, 0]).sum() should be 1 at each picked entry and 0 "
        f"elsewhere: expected {want.tolist()}, got {None if values.grad is None else values.grad.tolist()}"
    )


def test_pick_targets_leaves_inputs_unchanged() -> None:
    values, targets = torch.randn(3, 5), torch.tensor([4, 0, 2])
    before = snapshot(values, targets)
    kata.pick_targets(values, targets)
    assert_unchanged(before, (values, targets), "values targets", "pick_targets")


def test_pick_targets_vectorised() -> None:
    def case(n: int, c: int) -> object:
        values, targets = torch.randn(n, c), torch.randint(0, c, (n,))
        return lambda: kata.pick_targets(values, targets)

    counts = call_counts(
        "pick_targets", [(f"N={n}, C={c}", case(n, c)) for n, c in [(2, 3), (13, 3), (5, 17)]]
    )
    assert_vectorised("pick_targets", counts, "rows (one .item() or index per row)")


def test_pick_targets_on_a_real_device(device: torch.device) -> None:
    values, targets = torch.arange(12.0).reshape(3, 4), torch.tensor([1, 3, 0])
    got = kata.pick_targets(values.to(device), targets.to(device))
    assert got.device.type == device.type, f"expected the result on {device}, got {got.device}"
    assert got.cpu().tolist() == [1.0, 7.0, 8.0], f"wrong picks on {device}: {got.tolist()}"


# ----------------------------------------------------------------------------------------------------------
# segment_sum


def segment_oracle(values: torch.Tensor, ids: torch.Tensor, num: int) -> torch.Tensor:
    """Sums per segment in Python: exact for integers, math.fsum (correctly rounded) for floats."""
    rows = values.double().reshape(values.shape[0], -1).tolist() if values.shape[0] else []
    width = math.prod(values.shape[1:])
    sums = []
    for g in range(num):
        members = [rows[i] for i, s in enumerate(ids.tolist()) if s == g]
        if values.dtype.is_floating_point:
            sums.append([math.fsum(r[k] for r in members) for k in range(width)])
        else:
            sums.append([sum(int(r[k]) for r in members) for k in range(width)])
    return torch.tensor(sums, dtype=torch.float64).reshape(num, *values.shape[1:])


def check_segment_sum(values: torch.Tensor, ids: torch.Tensor, num: int, label: str, cause: str) -> None:
    got = kata.segment_sum(values, ids, num)
    want_shape = (num, *values.shape[1:])
    assert isinstance(got, torch.Tensor), f"expected a torch.Tensor, got {type(got).__name__}"
    assert tuple(got.shape) == want_shape, (
        f"segment_sum {label}: expected shape {want_shape} (num_segments rows, whatever ids occur), got "
        f"{tuple(got.shape)}; likely cause: sizing the output by ids.max() + 1 or by the number of distinct "
        "ids, which drops empty segments"
    )
    assert got.dtype == values.dtype, (
        f"segment_sum {label}: values are {values.dtype}, expected a {values.dtype} result, got {got.dtype}; "
        "likely cause: torch.zeros(...) without dtype=values.dtype, or a float one-hot matrix product"
    )
    want = segment_oracle(values, ids, num)
    if values.dtype.is_floating_point:
        scale = 1.0 + values.double().abs().sum().item()
        rtol, atol = (1e-10, 1e-12 * scale) if values.dtype == torch.float64 else (1e-5, 1e-6 * scale)
        assert_close(
            got, want.to(values.dtype), rtol=rtol, atol=atol, what=f"segment_sum {label}", likely_cause=cause
        )
    else:
        assert got.tolist() == want.long().tolist(), (
            f"segment_sum {label} (integers, exact): expected {want.long().tolist()}, got {got.tolist()}; "
            f"likely cause: {cause}"
        )


@given(
    n=st.integers(0, 8),
    num=st.integers(1, 6),
    features=st.sampled_from([(), (2,), (2, 3)]),
    dtype=st.sampled_from([torch.int64, torch.int32, torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=30)
def test_segment_sum_matches_definition(
    n: int, num: int, features: tuple[int, ...], dtype: torch.dtype, seed: int
) -> None:
    gen = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        values = torch.randn(n, *features, generator=gen, dtype=torch.float64).to(dtype)
    else:
        values = torch.randint(-100, 100, (n, *features), generator=gen).to(dtype)
    ids = torch.randint(0, num, (n,), generator=gen)
    check_segment_sum(
        values,
        ids,
        num,
        f"of {n} rows of shape {features} ({dtype}) into {num} segments, ids {ids.tolist()}",
        "scatter_ (which overwrites repeated ids) instead of scatter_add_/index_add_, or an index that "
        "is not expanded to the shape of the values",
    )


def test_segment_sum_adds_repeated_ids() -> None:
    values = torch.tensor([1, 10, 100, 1000])
    check_segment_sum(
        values,
        torch.tensor([1, 1, 0, 1]),
        2,
        "of [1, 10, 100, 1000] with ids [1, 1, 0, 1] (expected [100, 1011])",
        "scatter_ or index_copy_/index_put_ without accumulate: with a repeated id only one value survives",
    )


def test_segment_sum_keeps_empty_segments() -> None:
    values = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    check_segment_sum(
        values,
        torch.tensor([3, 1, 3]),
        6,
        "of 3 rows with ids [3, 1, 3] into 6 segments (0, 2, 4 and 5 empty: zeros)",
        "an output sized by the ids that occur (torch.unique, ids.max() + 1) rather than num_segments",
    )


def test_segment_sum_of_no_rows() -> None:
    values, ids = torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64)
    try:
        got = kata.segment_sum(values, ids, 4)
    except NotImplementedError:
        raise
    except (RuntimeError, IndexError, ValueError) as exc:
        raise AssertionError(
            f"segment_sum of 0 rows into 4 segments raised {type(exc).__name__}: {exc}; expected a (4, 3) "
            "tensor of zeros; likely cause: ids.max() (or .min()) on an empty tensor"
        ) from exc
    assert tuple(got.shape) == (4, 3) and got.tolist() == [[0.0] * 3] * 4, (
        f"segment_sum of 0 rows into 4 segments: expected a (4, 3) tensor of zeros, got {tuple(got.shape)} "
        f"{got.tolist()}"
    )


def test_segment_sum_sums_every_feature() -> None:
    values = torch.arange(12).reshape(3, 2, 2)
    check_segment_sum(
        values,
        torch.tensor([0, 2, 0]),
        3,
        "of rows of shape (2, 2) with ids [0, 2, 0]",
        "scatter_add_ with an index of shape (N, 1, 1) (not expanded to the values' shape) only adds the "
        "first feature of each row",
    )


def test_segment_sum_leaves_inputs_unchanged() -> None:
    values, ids = torch.randn(5, 2), torch.tensor([0, 2, 2, 1, 0])
    before = snapshot(values, ids)
    kata.segment_sum(values, ids, 3)
    assert_unchanged(before, (values, ids), "values segment_ids", "segment_sum")


def test_segment_sum_vectorised_without_bincount() -> None:
    def case(n: int, num: int) -> object:
        values, ids = torch.randn(n, 3), torch.randint(0, num, (n,))
        return lambda: kata.segment_sum(values, ids, num)

    sizes = [(4, 2), (30, 2), (6, 25)]
    counts = call_counts("segment_sum", [(f"N={n}, num_segments={g}", case(n, g)) for n, g in sizes])
    with record_torch_calls() as calls:
        kata.segment_sum(torch.randn(5), torch.tensor([0, 1, 1, 3, 0]), 4)
    bad = forbidden_calls(calls, "bincount", "segment_reduce")
    assert not bad, (
        f"segment_sum called {bad}; write the segment sum with scatter_add_ or index_add_ into a tensor of "
        "num_segments zeros"
    )
    assert_vectorised("segment_sum", counts, "rows or segments (values[ids == g].sum() per segment)")


def test_segment_sum_on_the_values_device() -> None:
    values, ids = torch.randn(4, 2), torch.tensor([1, 0, 1, 2])
    with fake_cuda():
        try:
            got = kata.segment_sum(on_fake_cuda(values), on_fake_cuda(ids), 3)
        except NotImplementedError:
            raise
        except RuntimeError as exc:
            raise AssertionError(
                f"segment_sum on cuda:0 inputs (pretend ones: this check runs without a GPU) raised: {exc}; "
                "likely cause: the zeros to add into built on the CPU (torch.zeros without device=)"
            ) from exc
    assert type(got) is FakeCudaTensor, (
        "segment_sum on cuda:0 inputs returned a CPU tensor; likely cause: torch.zeros without "
        "device=values.device, or a round trip through .cpu() / NumPy"
    )


def test_segment_sum_on_a_real_device(device: torch.device) -> None:
    values, ids = torch.arange(6.0).reshape(3, 2), torch.tensor([2, 0, 2])
    got = kata.segment_sum(values.to(device), ids.to(device), 3)
    assert got.device.type == device.type, f"expected the result on {device}, got {got.device}"
    assert got.cpu().tolist() == [[2.0, 3.0], [0.0, 0.0], [4.0, 6.0]], (
        f"wrong sums on {device}: {got.tolist()}"
    )


# ----------------------------------------------------------------------------------------------------------
# pairwise_bilinear


def bilinear_oracle(x: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """out[b, k, n, m] = sum_{d, e} x[b, n, d] w[k, d, e] y[b, m, e], broadcast in float64."""
    x, w, y = x.double(), w.double(), y.double()
    terms = x[:, None, :, None, :, None] * w[None, :, None, None, :, :] * y[:, None, None, :, None, :]
    return terms.sum(dim=(-1, -2))


def check_bilinear(x: torch.Tensor, w: torch.Tensor, y: torch.Tensor, label: str, cause: str) -> None:
    got = kata.pairwise_bilinear(x, w, y)
    b, n, _ = x.shape
    k, m = w.shape[0], y.shape[1]
    assert isinstance(got, torch.Tensor), f"expected a torch.Tensor, got {type(got).__name__}"
    assert tuple(got.shape) == (b, k, n, m), (
        f"pairwise_bilinear {label}: expected shape (B, K, N, M) = {(b, k, n, m)}, got {tuple(got.shape)}; "
        "likely cause: the output letters of the einsum in another order (e.g. 'bnmk' or 'bkmn')"
    )
    assert got.dtype == x.dtype, f"pairwise_bilinear {label}: expected dtype {x.dtype}, got {got.dtype}"
    want = bilinear_oracle(x, w, y)
    terms = x.double().abs().amax() * w.double().abs().sum(dim=(1, 2)).amax() * y.double().abs().amax()
    scale = 1.0 + terms.item()
    rtol, atol = (1e-10, 1e-12 * scale) if x.dtype == torch.float64 else (1e-5, 1e-5 * scale)
    assert_close(
        got, want.to(x.dtype), rtol=rtol, atol=atol, what=f"pairwise_bilinear {label}", likely_cause=cause
    )


@given(
    b=st.integers(1, 3),
    k=st.integers(1, 3),
    n=st.integers(1, 4),
    m=st.integers(1, 4),
    d=st.integers(1, 4),
    e=st.integers(1, 4),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=25)
def test_pairwise_bilinear_matches_definition(
    b: int, k: int, n: int, m: int, d: int, e: int, dtype: torch.dtype, seed: int
) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, d, generator=gen, dtype=dtype)
    w = torch.randn(k, d, e, generator=gen, dtype=dtype)
    y = torch.randn(b, m, e, generator=gen, dtype=dtype)
    check_bilinear(
        x,
        w,
        y,
        f"for x {tuple(x.shape)}, weight {tuple(w.shape)}, y {tuple(y.shape)} ({dtype})",
        "a letter of the einsum shared by the wrong operands (weight used as 'ked', or y paired with d), "
        "or the batch letter b missing from y (which sums over batches)",
    )


def test_pairwise_bilinear_square_weight_not_transposed() -> None:
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64)
    w = torch.randn(2, 4, 4, generator=gen, dtype=torch.float64)
    y = torch.randn(2, 5, 4, generator=gen, dtype=torch.float64)
    check_bilinear(
        x,
        w,
        y,
        "with D == E (a square, non-symmetric weight)",
        "weight[k] used transposed (x pairs with weight's first axis d, y with its second axis e), which "
        "runs without an error when D == E",
    )


def test_pairwise_bilinear_no_loops_or_bilinear() -> None:
    def case(b: int, k: int, n: int, m: int) -> object:
        x, w, y = torch.randn(b, n, 3), torch.randn(k, 3, 2), torch.randn(b, m, 2)
        return lambda: kata.pairwise_bilinear(x, w, y)

    sizes = [(2, 2, 2, 2), (5, 2, 2, 3), (2, 6, 6, 7)]
    counts = call_counts("pairwise_bilinear", [(f"B,K,N,M={s}", case(*s)) for s in sizes])
    with record_torch_calls() as calls:
        kata.pairwise_bilinear(torch.randn(2, 3, 4), torch.randn(2, 4, 5), torch.randn(2, 3, 5))
    bad = forbidden_calls(calls, "bilinear")
    assert not bad, f"pairwise_bilinear called {bad}; write the contraction with torch.einsum (or matmuls)"
    assert_vectorised("pairwise_bilinear", counts, "batches or relations (one matmul per b or k)")


def test_pairwise_bilinear_leaves_inputs_unchanged() -> None:
    x, w, y = torch.randn(2, 3, 4), torch.randn(2, 4, 5), torch.randn(2, 6, 5)
    before = snapshot(x, w, y)
    kata.pairwise_bilinear(x, w, y)
    assert_unchanged(before, (x, w, y), "x weight y", "pairwise_bilinear")


def test_pairwise_bilinear_on_a_real_device(device: torch.device) -> None:
    gen = torch.Generator().manual_seed(6)
    x, w, y = (torch.randn(s, generator=gen) for s in [(2, 3, 4), (2, 4, 5), (2, 6, 5)])
    got = kata.pairwise_bilinear(x.to(device), w.to(device), y.to(device))
    assert got.device.type == device.type, f"expected the result on {device}, got {got.device}"
    assert_close(got.cpu(), bilinear_oracle(x, w, y).float(), rtol=1e-4, atol=1e-4, what=f"on {device}")


# ----------------------------------------------------------------------------------------------------------
# moving_average


def moving_oracle(x: torch.Tensor, window: int, stride: int) -> torch.Tensor:
    rows = x.double().reshape(-1, x.shape[-1]).tolist()
    count = (x.shape[-1] - window) // stride + 1
    out = [[math.fsum(r[t * stride : t * stride + window]) / window for t in range(count)] for r in rows]
    return torch.tensor(out, dtype=torch.float64).reshape(*x.shape[:-1], count)


def check_moving(x: torch.Tensor, window: int, stride: int, label: str, cause: str) -> None:
    got = kata.moving_average(x, window, stride)
    count = (x.shape[-1] - window) // stride + 1
    want_shape = (*x.shape[:-1], count)
    assert isinstance(got, torch.Tensor), f"expected a torch.Tensor, got {type(got).__name__}"
    assert tuple(got.shape) == want_shape, (
        f"moving_average {label}: expected shape {want_shape} ((L - window) // stride + 1 = {count} complete "
        f"windows), got {tuple(got.shape)}; likely cause: an off-by-one in the number of windows (a missing "
        "+ 1, or L // stride), padding, or windows taken along another dimension than the last"
    )
    assert got.dtype == x.dtype, f"moving_average {label}: expected dtype {x.dtype}, got {got.dtype}"
    rtol, atol = (1e-10, 1e-12) if x.dtype == torch.float64 else (1e-5, 1e-6)
    scale = 1.0 + x.double().abs().max().item() if x.numel() else 1.0
    assert_close(
        got,
        moving_oracle(x, window, stride).to(x.dtype),
        rtol=rtol,
        atol=atol * scale,
        what=f"moving_average {label}",
        likely_cause=cause,
    )


@given(
    batch=st.sampled_from([(), (2,), (2, 3)]),
    length=st.integers(1, 10),
    data=st.data(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=30)
def test_moving_average_matches_definition(
    batch: tuple[int, ...], length: int, data: st.DataObject, dtype: torch.dtype, seed: int
) -> None:
    window = data.draw(st.integers(1, length), label="window")
    stride = data.draw(st.integers(1, 4), label="stride")
    x = torch.randn(*batch, length, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    check_moving(
        x,
        window,
        stride,
        f"of x {tuple(x.shape)} ({dtype}) with window={window}, stride={stride}",
        "the stride ignored, a sum instead of a mean, or a window that starts at t instead of t * stride",
    )


def test_moving_average_window_count() -> None:
    x = torch.arange(7.0)
    check_moving(
        x,
        3,
        2,
        "of [0, 1, ..., 6] with window=3, stride=2 (expected [1, 3, 5])",
        "windows that start at t instead of t * stride, or a last, incomplete window included",
    )


def test_moving_average_rows_do_not_mix() -> None:
    x = torch.tensor([[0.0, 0.0, 0.0, 9.0], [90.0, 0.0, 0.0, 0.0]])
    check_moving(
        x,
        2,
        1,
        "of two rows [[0, 0, 0, 9], [90, 0, 0, 0]] with window=2 (each row on its own: [[0, 0, 4.5], "
        "[45, 0, 0]])",
        "flattening the batch and sliding over the joined rows, so a window spans two rows, or unfolding "
        "dim 0 instead of the last dimension",
    )


@pytest.mark.parametrize(
    ("window", "stride", "why"),
    [(0, 1, "window=0"), (6, 1, "window=6 is longer than L=5"), (2, 0, "stride=0"), (-1, 1, "window=-1")],
)
def test_moving_average_rejects_bad_windows(window: int, stride: int, why: str) -> None:
    try:
        kata.moving_average(torch.randn(2, 5), window, stride)
    except ValueError:
        return
    except NotImplementedError:
        raise
    except Exception as exc:
        raise AssertionError(
            f"moving_average with {why}: expected ValueError, got {type(exc).__name__}: {exc}; check the "
            "arguments yourself before unfolding"
        ) from exc
    raise AssertionError(f"moving_average with {why}: expected ValueError, nothing was raised")


def test_moving_average_vectorised_without_pooling() -> None:
    def case(shape: tuple[int, ...], window: int, stride: int) -> object:
        x = torch.randn(shape)
        return lambda: kata.moving_average(x, window, stride)

    # The same stride throughout (a special case for stride 1 is not a loop); the window varies, so a sum
    # of `window` shifted slices is caught.
    sizes = [((2, 6), 2, 2), ((3, 40), 2, 2), ((2, 30), 9, 2), ((5, 4, 25), 2, 2)]
    counts = call_counts(
        "moving_average", [(f"x{s}, window={w}, stride={t}", case(s, w, t)) for s, w, t in sizes]
    )
    with record_torch_calls() as calls:
        kata.moving_average(torch.randn(2, 8), 3, 1)
    bad = forbidden_calls(calls, "pool", "conv")
    assert not bad, (
        f"moving_average called {bad}; build the windows with unfold (a strided view), then average them"
    )
    assert_vectorised("moving_average", counts, "windows or window offsets (x[..., t:t + window] per t)")


def test_moving_average_leaves_input_unchanged() -> None:
    x = torch.randn(3, 8)
    before = snapshot(x)
    kata.moving_average(x, 3, 2)
    assert_unchanged(before, (x,), "x", "moving_average")


def test_moving_average_on_a_real_device(device: torch.device) -> None:
    x = torch.arange(14.0).reshape(2, 7)
    got = kata.moving_average(x.to(device), 3, 2)
    assert got.device.type == device.type, f"expected the result on {device}, got {got.device}"
    assert got.cpu().tolist() == [[1.0, 3.0, 5.0], [8.0, 10.0, 12.0]], (
        f"wrong means on {device}: {got.tolist()}"
    )


# ----------------------------------------------------------------------------------------------------------
# conv2d_im2col


def conv_oracle(x, weight, bias=None, **options) -> torch.Tensor:
    """torch's own F.conv2d, in float64."""
    b = None if bias is None else bias.detach().double()
    return F.conv2d(x.detach().double(), weight.detach().double(), b, **options)


def check_conv(x, weight, bias, label: str, cause: str, **options) -> torch.Tensor:
    got = kata.conv2d_im2col(x, weight, bias, **options)
    want = conv_oracle(x, weight, bias, **options)
    assert isinstance(got, torch.Tensor), f"expected a torch.Tensor, got {type(got).__name__}"
    assert tuple(got.shape) == tuple(want.shape), (
        f"conv2d_im2col {label}: expected shape {tuple(want.shape)}, got {tuple(got.shape)}; likely cause: "
        "the output size formula (H + 2 * padding - dilation * (kh - 1) - 1) // stride + 1, or the height "
        "and width values of a (height, width) pair swapped"
    )
    assert got.dtype == x.dtype, f"conv2d_im2col {label}: expected dtype {x.dtype}, got {got.dtype}"
    k = weight.shape[1] * weight.shape[2] * weight.shape[3]
    scale = 1.0 + k * x.detach().double().abs().max().item() * weight.detach().double().abs().max().item()
    if bias is not None:
        scale += bias.detach().double().abs().max().item()
    rtol, atol = (1e-10, 1e-13 * scale) if x.dtype == torch.float64 else (1e-4, 1e-6 * scale)
    assert_close(
        got, want.to(x.dtype), rtol=rtol, atol=atol, what=f"conv2d_im2col {label}", likely_cause=cause
    )
    return got


def pair(draw: st.DrawFn, low: int, high: int) -> int | tuple[int, int]:
    a, b = draw(st.integers(low, high)), draw(st.integers(low, high))
    return a if a == b and draw(st.booleans()) else (a, b)


@st.composite
def conv_cases(draw: st.DrawFn) -> dict:
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    c = groups * draw(st.integers(1, 2))
    o = groups * draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return {
        "n": draw(st.integers(1, 2)),
        "c": c,
        "o": o,
        "h": draw(st.integers(1, 7)),
        "w": draw(st.integers(1, 7)),
        "kh": kh,
        "kw": kw,
        "groups": groups,
        "stride": pair(draw, 1, 3),
        "padding": pair(draw, 0, 2),
        "dilation": pair(draw, 1, 2),
        "bias": draw(st.booleans()),
        "dtype": draw(st.sampled_from([torch.float32, torch.float64])),
        "seed": draw(st.integers(0, 2**16)),
    }


def out_size(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def two(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else v


@given(case=conv_cases())
@settings(max_examples=20)
def test_conv2d_matches_f_conv2d(case: dict) -> None:
    (sh, sw), (ph, pw), (dh, dw) = two(case["stride"]), two(case["padding"]), two(case["dilation"])
    assume(
        out_size(case["h"], case["kh"], sh, ph, dh) >= 1 and out_size(case["w"], case["kw"], sw, pw, dw) >= 1
    )
    gen = torch.Generator().manual_seed(case["seed"])
    dtype = case["dtype"]
    x = torch.randn(case["n"], case["c"], case["h"], case["w"], generator=gen, dtype=dtype)
    weight = torch.randn(
        case["o"], case["c"] // case["groups"], case["kh"], case["kw"], generator=gen, dtype=dtype
    )
    bias = torch.randn(case["o"], generator=gen, dtype=dtype) if case["bias"] else None
    options = {k: case[k] for k in ("stride", "padding", "dilation", "groups")}
    check_conv(
        x,
        weight,
        bias,
        f"for x {tuple(x.shape)}, weight {tuple(weight.shape)}, "
        f"bias {'yes' if bias is not None else 'None'}, {options} ({dtype})",
        "padding, stride or dilation not passed to unfold (or passed for the wrong dimension), the unfolded "
        "rows reshaped in another order than (C, kh, kw), the kernel flipped, or groups mixed up",
        **options,
    )


def test_conv2d_kernel_is_not_flipped() -> None:
    x = torch.arange(16.0, dtype=torch.float64).reshape(1, 1, 4, 4)
    weight = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.float64)
    got = check_conv(
        x,
        weight,
        None,
        "of arange(16) as a 4x4 image with the kernel [[1, 2], [3, 4]]",
        "the kernel flipped: torch's conv2d is a cross-correlation, sum x[i + a, j + b] * w[a, b], "
        "with no flip",
    )
    assert got[0, 0, 0, 0].item() == 0 * 1 + 1 * 2 + 4 * 3 + 5 * 4


def test_conv2d_height_and_width_options_apart() -> None:
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 7, 9, generator=gen, dtype=torch.float64)
    weight = torch.randn(4, 3, 3, 2, generator=gen, dtype=torch.float64)
    check_conv(
        x,
        weight,
        None,
        "with stride=(1, 2), padding=(2, 0), dilation=(2, 1) and a 3x2 kernel",
        "a (height, width) pair read the other way round, or its first value used for both dimensions",
        stride=(1, 2),
        padding=(2, 0),
        dilation=(2, 1),
    )


def test_conv2d_channel_order_of_the_columns() -> None:
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(1, 3, 4, 4, generator=gen, dtype=torch.float64)
    weight = torch.randn(2, 3, 2, 2, generator=gen, dtype=torch.float64)
    check_conv(
        x,
        weight,
        None,
        "with 3 input channels and a 2x2 kernel",
        "the unfolded rows (channel outermost, then kernel row, then kernel column) reshaped or permuted "
        "into another order than weight.reshape(O, C * kh * kw)",
    )


def test_conv2d_bias_per_output_channel() -> None:
    gen = torch.Generator().manual_seed(9)
    # W_out == O == 3: a bias broadcast along the width instead of the channels runs without an error.
    x = torch.randn(2, 2, 4, 5, generator=gen, dtype=torch.float64)
    weight = torch.randn(3, 2, 2, 3, generator=gen, dtype=torch.float64)
    bias = torch.tensor([1.0, -20.0, 300.0], dtype=torch.float64)
    check_conv(
        x,
        weight,
        bias,
        "with bias [1, -20, 300] (output width 3 == O)",
        "the bias added along the last dimension (out + bias) instead of per output channel "
        "(bias.reshape(1, O, 1, 1)), or not added at all",
    )


@pytest.mark.parametrize(("c", "o", "groups"), [(4, 6, 2), (3, 3, 3), (3, 6, 3)])
def test_conv2d_groups(c: int, o: int, groups: int) -> None:
    gen = torch.Generator().manual_seed(10)
    x = torch.randn(2, c, 5, 5, generator=gen, dtype=torch.float64)
    weight = torch.randn(o, c // groups, 3, 3, generator=gen, dtype=torch.float64)
    bias = torch.randn(o, generator=gen, dtype=torch.float64)
    check_conv(
        x,
        weight,
        bias,
        f"with C={c}, O={o}, groups={groups}" + (" (depthwise)" if groups == c else ""),
        "the unfolded rows split into groups in another order than channels (C outer), each group of "
        "kernels paired with the wrong group of channels, or the output channels of the groups interleaved",
        padding=1,
        groups=groups,
    )


def test_conv2d_empty_batch_and_float32() -> None:
    weight = torch.randn(3, 2, 2, 2)
    got = kata.conv2d_im2col(torch.zeros(0, 2, 4, 4), weight)
    assert tuple(got.shape) == (0, 3, 3, 3) and got.dtype == torch.float32, (
        f"a batch of 0 images (0, 2, 4, 4) with a (3, 2, 2, 2) kernel: expected a (0, 3, 3, 3) float32 "
        f"result, got {tuple(got.shape)} {got.dtype}; likely cause: reshape(n, -1, ...) or other -1 sizes, "
        "which cannot be inferred when the tensor has no elements"
    )
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(2, 2, 5, 5, generator=gen)
    check_conv(
        x, weight, torch.randn(3), "in float32", "a cast to float64 and back, or a float64 result", stride=2
    )


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "bias_shape", "options", "why"),
    [
        ((1, 3, 5, 5), (2, 2, 3, 3), None, {}, "x has 3 channels, weight expects 2"),
        ((1, 4, 5, 5), (3, 2, 3, 3), None, {"groups": 2}, "O=3 is not divisible by groups=2"),
        ((1, 4, 5, 5), (2, 4, 3, 3), None, {"groups": 2}, "groups=2 needs weight.shape[1] == C / 2"),
        ((1, 2, 5, 5), (3, 2, 3, 3), (2,), {}, "bias has shape (2,), O=3"),
        ((1, 2, 2, 5), (3, 2, 3, 3), None, {}, "a 3x3 kernel does not fit a height of 2"),
        ((2, 5, 5), (3, 2, 3, 3), None, {}, "x is 3-D"),
        ((1, 2, 5, 5), (2, 2, 3, 3), None, {"groups": 0}, "groups=0"),
    ],
)
def test_conv2d_rejects_bad_arguments(x_shape, w_shape, bias_shape, options, why) -> None:
    x, weight = torch.randn(x_shape), torch.randn(w_shape)
    bias = None if bias_shape is None else torch.randn(bias_shape)
    try:
        kata.conv2d_im2col(x, weight, bias, **options)
    except ValueError:
        return
    except NotImplementedError:
        raise
    except Exception as exc:
        raise AssertionError(
            f"conv2d_im2col when {why}: expected ValueError, got {type(exc).__name__}: {exc}; check the "
            "shapes yourself before unfolding"
        ) from exc
    raise AssertionError(f"conv2d_im2col when {why}: expected ValueError, nothing was raised")


def test_conv2d_no_conv_no_loops() -> None:
    def case(n: int, c: int, h: int, o: int, k: int, groups: int) -> object:
        x, weight = torch.randn(n, c, h, h + 1), torch.randn(o, c // groups, k, k)
        bias = torch.randn(o)
        return lambda: kata.conv2d_im2col(x, weight, bias, 1, 1, 1, groups)

    with record_torch_calls() as calls:
        kata.conv2d_im2col(torch.randn(1, 2, 5, 5), torch.randn(2, 1, 3, 3), torch.randn(2), 2, 1, 1, 2)
    bad = forbidden_calls(calls, "conv")
    assert not bad, (
        f"conv2d_im2col called {bad}; the task is to build the convolution from F.unfold (im2col) and one "
        "matrix product or einsum"
    )
    # Compared within groups == 1 and within groups > 1 (a fast path for groups == 1 is not a loop), with
    # kernels of at least 2x2 (nor is one for 1x1 kernels).
    ungrouped = [(1, 2, 4, 2, 2, 1), (3, 2, 9, 2, 3, 1), (2, 5, 7, 6, 3, 1)]
    grouped = [(2, 6, 5, 6, 2, 2), (1, 8, 6, 8, 3, 4), (2, 12, 7, 12, 2, 6)]
    for sizes in (ungrouped, grouped):
        counts = call_counts("conv2d_im2col", [(f"(N, C, H, O, k, groups)={s}", case(*s)) for s in sizes])
        assert_vectorised(
            "conv2d_im2col",
            counts,
            "images, output channels, kernel positions or groups (one product per group)",
        )


def test_conv2d_leaves_inputs_unchanged() -> None:
    x, weight, bias = torch.randn(2, 2, 5, 5), torch.randn(3, 2, 3, 3), torch.randn(3)
    before = snapshot(x, weight, bias)
    kata.conv2d_im2col(x, weight, bias, padding=1)
    assert_unchanged(before, (x, weight, bias), "x weight bias", "conv2d_im2col")


def test_conv2d_on_the_inputs_device() -> None:
    gen = torch.Generator().manual_seed(12)
    x, weight, bias = (
        torch.randn(1, 2, 5, 5, generator=gen),
        torch.randn(3, 2, 3, 3, generator=gen),
        torch.randn(3),
    )
    with fake_cuda():
        try:
            got = kata.conv2d_im2col(on_fake_cuda(x), on_fake_cuda(weight), on_fake_cuda(bias), padding=1)
        except NotImplementedError:
            raise
        except RuntimeError as exc:
            raise AssertionError(
                f"conv2d_im2col on cuda:0 inputs (pretend ones: this check runs without a GPU) raised: "
                f"{exc}; likely cause: a helper tensor (zeros, a padded copy) built on the CPU"
            ) from exc
    assert type(got) is FakeCudaTensor, "conv2d_im2col on cuda:0 inputs returned a CPU tensor"
    assert_close(
        got.as_subclass(torch.Tensor),
        conv_oracle(x, weight, bias, padding=1).float(),
        rtol=1e-4,
        atol=1e-4,
        what="conv2d_im2col on cuda:0 (pretend)",
    )


def test_conv2d_on_a_real_device(device: torch.device) -> None:
    gen = torch.Generator().manual_seed(13)
    x, weight = torch.randn(2, 4, 6, 6, generator=gen), torch.randn(4, 2, 3, 3, generator=gen)
    got = kata.conv2d_im2col(x.to(device), weight.to(device), None, 2, 1, 1, 2)
    assert got.device.type == device.type, f"expected the result on {device}, got {got.device}"
    assert_close(
        got.cpu(),
        conv_oracle(x, weight, stride=2, padding=1, groups=2).float(),
        rtol=1e-4,
        atol=1e-4,
        what=f"conv2d_im2col on {device}",
    )
