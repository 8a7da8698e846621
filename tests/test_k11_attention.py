"""Grader for k11_attention: splitting and merging heads, scaled dot-product attention with torch's mask
conventions, multi-head self-attention with padding and causal masks, and grouped-query attention.

Oracles: torch's own `F.scaled_dot_product_attention` (with `enable_gqa=True` for grouped-query attention) and
`nn.MultiheadAttention(batch_first=True)`, run in float64 on the same weights, and the index formulas of the
head layout (`unflatten` + `movedim`). torch 2.13 returns zeros on the CPU, with finite gradients, for a query
whose every key is masked: the contract asks the same, and the grader checks the output and the gradients
there. What only a GPU could add: whether torch's fused CUDA kernels agree on such rows (the contract follows
the CPU, where this grader runs).
Tolerances: float64 results of the same formula in another order agree to ~1e-15 relative; rtol=1e-10,
atol=1e-12 leaves room for that and rejects every real bug (wrong scale, dim, mask or head order gives O(1e-2)
and more). float32 results are compared with the float64 oracle at rtol=1e-4, atol=1e-5 (a few float32 ulps
through two matmuls and a softmax). The causal property is checked directly (perturbing future tokens changes
no earlier output, and their gradients are zero) with hypothesis over batch, heads, length and head size.

"Enforced, not trusted": the learner's attention runs under a recorder of torch calls and of aten kernels;
any of torch's attention implementations fails the test. Device handling is checked on the `meta` device, so
it runs on any machine; nothing in this kata needs a GPU.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from kata_harness import load_kata
from kata_harness.testing import assert_close, record_torch_calls

kata = load_kata("k11_attention")

RTOL, ATOL = 1e-10, 1e-12  # float64 against float64: rounding only
RTOL32, ATOL32 = 1e-4, 1e-5  # float32 against the float64 oracle
F64 = torch.float64

# The first operation on the meta device loads torch's meta kernels (a second or more on a busy machine): pay
# for it once here, at import, instead of inside the 10-second budget of whichever meta test runs first.
_ = torch.empty(0, device="meta") + 0


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=dtype)


# ---------------------------------------------------------------- forbidden shortcuts

FORBIDDEN = ("scaled_dot_product", "multi_head_attention", "multiheadattention", "attention")


class _AtenOps(TorchDispatchMode):
    """Records the aten kernels that run, so torch's attention is caught even through torch.ops.aten."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def _assert_no_torch_attention(run, what: str) -> None:
    aten = _AtenOps()
    with record_torch_calls() as calls, aten:
        run()
    used = sorted({name for name in calls + aten.ops if any(word in name.lower() for word in FORBIDDEN)})
    assert not used, (
        f"{what} called torch's own attention: {used}. Expected: the scores, mask and softmax written out "
        "(q @ k.transpose(-2, -1), masked_fill / addition, torch.softmax, @ v). "
        "F.scaled_dot_product_attention and nn.MultiheadAttention are the oracles here, not allowed in the "
        "kata"
    )


# ---------------------------------------------------------------- split_heads / merge_heads

lead_dims = st.lists(st.integers(1, 3), min_size=0, max_size=2)


@settings(max_examples=10)
@given(lead=lead_dims, length=st.integers(1, 4), heads=st.integers(1, 3), dim=st.integers(1, 3))
def test_split_heads_layout(lead: list[int], length: int, heads: int, dim: int) -> None:
    x = torch.arange(float(torch.Size(lead).numel() * length * heads * dim)).reshape(
        *lead, length, heads * dim
    )
    before = x.clone()
    got = kata.split_heads(x, heads)
    expected = x.unflatten(-1, (heads, dim)).movedim(-2, -3)
    assert isinstance(got, torch.Tensor) and got.shape == expected.shape, (
        f"split_heads(x of shape {tuple(x.shape)}, num_heads={heads}): expected shape "
        f"{tuple(expected.shape)}, got {getattr(got, 'shape', got)!r}; the heads go BEFORE the sequence "
        "dim: (..., L, E) -> (..., h, L, d)"
    )
    assert torch.equal(got, expected), (
        f"split_heads(x of shape {tuple(x.shape)}, num_heads={heads}) has the right shape but not out[..., "
        "h, l, j] == x[..., l, h * d + j] (x holds 0, 1, 2, ... so you can read it):\nexpected "
        f"{expected.flatten().tolist()}\ngot      {got.flatten().tolist()}\nLikely cause: a reshape of "
        "(..., L, E) straight to (..., h, L, d), which mixes positions and features: reshape to (..., L, "
        "h, d) first, then swap the L and h dims"
    )
    assert torch.equal(x, before), "split_heads modified its input x; it must leave it as it was"


@settings(max_examples=10)
@given(lead=lead_dims, length=st.integers(1, 4), heads=st.integers(1, 3), dim=st.integers(1, 3))
def test_merge_heads_inverts_split_heads(lead: list[int], length: int, heads: int, dim: int) -> None:
    x = torch.arange(float(torch.Size(lead).numel() * heads * length * dim)).reshape(
        *lead, heads, length, dim
    )
    got = kata.merge_heads(x)
    expected = x.movedim(-3, -2).flatten(-2)
    assert isinstance(got, torch.Tensor) and got.shape == expected.shape, (
        f"merge_heads(x of shape {tuple(x.shape)}): expected shape {tuple(expected.shape)}, got "
        f"{getattr(got, 'shape', got)!r}; (..., h, L, d) -> (..., L, h * d)"
    )
    assert torch.equal(got, expected), (
        f"merge_heads(x of shape {tuple(x.shape)}) has the right shape but not out[..., l, h * d + j] == "
        f"x[..., h, l, j]:\nexpected {expected.flatten().tolist()}\ngot      "
        f"{got.flatten().tolist()}\nLikely cause: a reshape without moving the head dim next to the feature "
        "dim first (transpose the h and L dims, then reshape)"
    )
    y = x.movedim(-3, -2).flatten(-2)  # a (..., L, E) tensor
    round_trip = kata.merge_heads(kata.split_heads(y, heads))
    assert torch.equal(round_trip, y), (
        f"merge_heads(split_heads(y, {heads})) should give y back (shape {tuple(y.shape)}), got "
        f"{round_trip.flatten().tolist()} for {y.flatten().tolist()}"
    )


def test_split_heads_keeps_dtype_device_and_gradient() -> None:
    x = _randn(2, 3, 6, seed=1, dtype=torch.float32).requires_grad_()
    out = kata.split_heads(x, 3)
    assert out.dtype == torch.float32 and out.device == x.device, (
        f"split_heads of a float32 CPU tensor should stay float32 on the CPU, got {out.dtype} on {out.device}"
    )
    assert out.requires_grad, "split_heads(x) should be differentiable in x; the result does not require grad"
    meta = kata.split_heads(torch.empty(2, 3, 6, device="meta"), 2)
    assert meta.device.type == "meta" and meta.shape == (2, 2, 3, 3), (
        "split_heads of a (2, 3, 6) meta tensor with 2 heads: expected shape (2, 2, 3, 3) on meta, got "
        f"{tuple(meta.shape)} on {meta.device}"
    )


@pytest.mark.parametrize("num_heads", [4, 0])
def test_split_heads_rejects_heads_that_do_not_divide(num_heads: int) -> None:
    with pytest.raises(ValueError):
        kata.split_heads(torch.zeros(2, 3, 6), num_heads)


# ---------------------------------------------------------------- scaled_dot_product_attention

MASK_KINDS = ["none", "bool", "float", "causal", "bool_broadcast"]


def _mask(kind: str, lead: tuple[int, ...], length: int, keys: int, seed: int):
    """(attn_mask, is_causal) of the given kind; random boolean masks include rows with no key at all."""
    g = _gen(seed)
    if kind == "none":
        return None, False
    if kind == "causal":
        return None, True
    if kind == "bool":
        return torch.rand(*lead, length, keys, generator=g) < 0.6, False
    if kind == "bool_broadcast":  # one mask shared by every leading index
        return torch.rand(length, keys, generator=g) < 0.6, False
    bias = torch.randn(*lead, length, keys, generator=g, dtype=F64)
    return bias.masked_fill(torch.rand(*lead, length, keys, generator=g) < 0.3, float("-inf")), False


@settings(max_examples=20)
@given(
    batch=st.integers(1, 2),
    heads=st.integers(1, 3),
    length=st.integers(1, 5),
    keys=st.integers(1, 5),
    dim=st.integers(1, 4),
    value_dim=st.integers(1, 4),
    kind=st.sampled_from(MASK_KINDS),
    seed=st.integers(0, 2**16),
)
def test_sdpa_matches_torch(batch, heads, length, keys, dim, value_dim, kind, seed) -> None:
    q = _randn(batch, heads, length, dim, seed=seed)
    k = _randn(batch, heads, keys, dim, seed=seed + 1)
    v = _randn(batch, heads, keys, value_dim, seed=seed + 2)
    mask, causal = _mask(kind, (batch, heads), length, keys, seed + 3)
    got = kata.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    assert_close(
        got,
        expected,
        rtol=RTOL,
        atol=ATOL,
        what=f"scaled_dot_product_attention(q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, "
        f"mask kind {kind!r}) vs F.scaled_dot_product_attention in float64",
        likely_cause="scale 1/d instead of 1/sqrt(d) (or sqrt of v's size), the softmax over dim -2 (the "
        "queries) instead of -1 (the keys), a boolean mask read the wrong way round (True means ATTEND in "
        "SDPA), a float mask not added, the causal diagonal off by one (a position attends to itself), or "
        "NaN for a row whose keys are all masked (it must be zeros)",
    )


def test_sdpa_scale_argument() -> None:
    q, k, v = _randn(2, 3, 4, seed=2), _randn(2, 5, 4, seed=3), _randn(2, 5, 2, seed=4)
    for scale in (0.3, 1.0):
        assert_close(
            kata.scaled_dot_product_attention(q, k, v, scale=scale),
            F.scaled_dot_product_attention(q, k, v, scale=scale),
            rtol=RTOL,
            atol=ATOL,
            what=f"scaled_dot_product_attention(..., scale={scale}) vs F.scaled_dot_product_attention",
            likely_cause="`scale` ignored: when given, it replaces 1/sqrt(E) as the factor on q @ k^T",
        )


@pytest.mark.parametrize("length, keys", [(2, 5), (5, 3)])
def test_sdpa_causal_is_aligned_top_left(length: int, keys: int) -> None:
    q, k, v = _randn(1, length, 3, seed=5), _randn(1, keys, 3, seed=6), _randn(1, keys, 2, seed=7)
    assert_close(
        kata.scaled_dot_product_attention(q, k, v, is_causal=True),
        F.scaled_dot_product_attention(q, k, v, is_causal=True),
        rtol=RTOL,
        atol=ATOL,
        what=f"scaled_dot_product_attention(is_causal=True) with L={length} queries and S={keys} keys vs "
        "torch",
        likely_cause="the causal mask built for a square L x L matrix, or aligned at the bottom-right "
        "(tril(diagonal=S - L)); torch's is_causal is tril(ones(L, S)): query i sees keys 0..i",
    )


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_sdpa_fully_masked_row_gives_zeros_and_finite_gradients(kind: str) -> None:
    q = _randn(2, 4, 3, seed=8).requires_grad_()
    k = _randn(2, 5, 3, seed=9).requires_grad_()
    v = _randn(2, 5, 3, seed=10).requires_grad_()
    allowed = torch.rand(2, 4, 5, generator=_gen(11)) < 0.7
    allowed[:, 0] = True
    allowed[0, 1] = False  # query 1 of batch 0 may attend to no key
    allowed[1, 3] = False  # nor query 3 of batch 1
    mask = allowed if kind == "bool" else torch.zeros(2, 4, 5, dtype=F64).masked_fill(~allowed, float("-inf"))
    got = kata.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert not torch.isnan(got).any(), (
        f"scaled_dot_product_attention with a {kind} mask that leaves query 1 (batch 0) and query 3 (batch "
        f"1) no key: expected zeros in those rows, got NaN at {torch.isnan(got).nonzero().tolist()}. Likely "
        "cause: softmax of a row of -inf is 0/0; give such rows finite scores before the softmax and zero "
        "their weights after it"
    )
    for b, row in ((0, 1), (1, 3)):
        assert torch.equal(got[b, row].detach(), torch.zeros(3, dtype=F64)), (
            f"a query with no key to attend to (batch {b}, query {row}) should give a row of zeros, as "
            f"torch does; got {got[b, row].tolist()}. Likely cause: a large finite negative instead of "
            "-inf turns the row into a uniform average of all values"
        )
    weight = _randn(2, 4, 3, seed=12)
    (got * weight).sum().backward()
    ours = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    (F.scaled_dot_product_attention(q, k, v, attn_mask=mask) * weight).sum().backward()
    for name, g, t in zip("qkv", ours, (q, k, v), strict=True):
        assert torch.isfinite(g).all(), (
            f"the gradient of {name} through a fully masked row is not finite ({g.isnan().sum()} NaN): the "
            "output was zeroed AFTER the softmax (torch.where / masked_fill / nan_to_num on the weights), "
            "but autograd still runs the softmax's backward through the NaN row and 0 * NaN = NaN. Keep "
            "the NaN from forming: replace the scores of fully masked rows by a finite value before the "
            "softmax"
        )
        assert_close(
            g,
            t.grad,
            rtol=RTOL,
            atol=ATOL,
            what=f"gradient of {name} with a {kind} mask that leaves two queries no key, vs torch",
            likely_cause="a fully masked row must contribute ZERO gradient to q, k and v",
        )


@settings(max_examples=8)
@given(
    batch=st.integers(1, 2),
    heads=st.integers(1, 2),
    length=st.integers(2, 6),
    dim=st.integers(1, 4),
    data=st.data(),
)
def test_sdpa_causal_future_does_not_leak(batch, heads, length, dim, data) -> None:
    t = data.draw(st.integers(1, length - 1), label="first perturbed position")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    q, k, v = (_randn(batch, heads, length, dim, seed=seed + i) for i in range(3))
    k2, v2 = k.clone(), v.clone()
    k2[..., t:, :] += _randn(batch, heads, length - t, dim, seed=seed + 3)
    v2[..., t:, :] += _randn(batch, heads, length - t, dim, seed=seed + 4)
    out = kata.scaled_dot_product_attention(q, k, v, is_causal=True)
    out2 = kata.scaled_dot_product_attention(q, k2, v2, is_causal=True)
    assert_close(
        out2[..., :t, :],
        out[..., :t, :],
        rtol=RTOL,
        atol=ATOL,
        what=f"causal attention outputs at positions < {t} after changing the keys and values at positions "
        f">= {t} (length {length})",
        likely_cause="the causal mask lets a query see later keys: tril with diagonal=1, triu, or the mask "
        "transposed",
    )
    k, v = k.requires_grad_(), v.requires_grad_()
    kata.scaled_dot_product_attention(q, k, v, is_causal=True)[..., :t, :].sum().backward()
    for name, tensor in (("k", k), ("v", v)):
        leak = tensor.grad[..., t:, :].abs().max().item()
        assert leak <= 1e-12, (
            f"the gradient of the causal outputs at positions < {t} with respect to {name} at positions >= "
            f"{t} should be 0, got max |grad| {leak}; likely cause: the causal mask lets a query see later "
            "keys, or masked scores get a finite penalty instead of -inf"
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_sdpa_keeps_dtype(dtype: torch.dtype) -> None:
    q, k, v = (_randn(2, 3, 4, 5, seed=20 + i) for i in range(3))
    mask = torch.rand(2, 3, 4, 4, generator=_gen(23)) < 0.7
    for kind, kwargs in (("causal", {"is_causal": True}), ("bool mask", {"attn_mask": mask})):
        got = kata.scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype), **kwargs)
        assert got.dtype == dtype, (
            f"scaled_dot_product_attention of {dtype} inputs ({kind}) should return {dtype}, got "
            f"{got.dtype}; likely cause: a mask or bias built in another dtype (torch.zeros(L, S) is "
            "float32, a float64 constant tensor promotes) or a .double()/.float() cast"
        )
        assert_close(
            got.double(),
            F.scaled_dot_product_attention(q, k, v, **kwargs),
            rtol=RTOL32 if dtype == torch.float32 else RTOL,
            atol=ATOL32 if dtype == torch.float32 else ATOL,
            what=f"scaled_dot_product_attention in {dtype} ({kind}) vs the float64 oracle",
            likely_cause="see test_sdpa_matches_torch",
        )


def test_sdpa_rejects_attn_mask_with_is_causal() -> None:
    q = _randn(2, 3, 4, seed=30)
    with pytest.raises(ValueError):
        kata.scaled_dot_product_attention(
            q, q, q, attn_mask=torch.ones(3, 3, dtype=torch.bool), is_causal=True
        )


@pytest.mark.parametrize("lead", [(), (2, 1, 3)], ids=["no leading dims", "three leading dims"])
def test_sdpa_any_leading_dims(lead: tuple[int, ...]) -> None:
    q, k, v = _randn(*lead, 3, 4, seed=31), _randn(*lead, 5, 4, seed=32), _randn(*lead, 5, 2, seed=33)
    mask = torch.rand(3, 5, generator=_gen(34)) < 0.7
    for kwargs in ({}, {"attn_mask": mask}, {"is_causal": True}):
        assert_close(
            kata.scaled_dot_product_attention(q, k, v, **kwargs),
            F.scaled_dot_product_attention(q, k, v, **kwargs),
            rtol=RTOL,
            atol=ATOL,
            what=f"scaled_dot_product_attention with q of shape {tuple(q.shape)} and {kwargs or 'no mask'}",
            likely_cause="shapes assumed to be (B, h, L, E): use dims counted from the end (-2, -1) and "
            "k.transpose(-2, -1), never k.T or fixed leading dims",
        )


def test_sdpa_leaves_inputs_unchanged() -> None:
    q, k, v = (_randn(2, 4, 3, seed=40 + i) for i in range(3))
    bool_mask = torch.rand(2, 4, 4, generator=_gen(43)) < 0.6
    float_mask = torch.zeros(2, 4, 4, dtype=F64).masked_fill(~bool_mask, float("-inf"))
    for kwargs in ({"attn_mask": bool_mask}, {"attn_mask": float_mask}, {"is_causal": True}, {"scale": 0.5}):
        before = [t.clone() for t in (q, k, v, bool_mask, float_mask)]
        kata.scaled_dot_product_attention(q, k, v, **kwargs)
        for name, t, b in zip(
            ("q", "k", "v", "bool mask", "float mask"), (q, k, v, bool_mask, float_mask), before, strict=True
        ):
            assert torch.equal(t, b) and not t.requires_grad, (
                f"scaled_dot_product_attention(..., {list(kwargs)}) modified its input {name} (values or "
                "requires_grad); likely cause: an in-place op on it (q.mul_(scale), mask.logical_not_(), "
                "attn_mask.masked_fill_(...)); use the out-of-place forms"
            )


def test_sdpa_on_the_meta_device() -> None:
    # On the meta device a mask built on the CPU (torch.ones(L, S) without device=) fails even without a GPU,
    # and so does a Python `if` on a tensor (it needs the values).
    q, k, v = (torch.empty(2, 3, 4, 5, dtype=F64, device="meta") for _ in range(3))
    mask = torch.empty(2, 3, 4, 4, dtype=torch.bool, device="meta")
    for kwargs in ({"is_causal": True}, {"attn_mask": mask}):
        try:
            got = kata.scaled_dot_product_attention(q, k, v, **kwargs)
        except NotImplementedError:
            raise
        except Exception as exc:
            pytest.fail(
                f"scaled_dot_product_attention on meta tensors ({list(kwargs)}) raised "
                f"{type(exc).__name__}: {exc}. Likely cause: a tensor built without device=q.device (the "
                "causal mask), which lands on the CPU and fails on a GPU too, or a Python `if` / .item() "
                "on a tensor (a host sync)"
            )
        assert got.device.type == "meta" and got.shape == (2, 3, 4, 5), (
            f"on meta inputs the result should be a (2, 3, 4, 5) meta tensor, got {tuple(got.shape)} on "
            f"{got.device}"
        )


def test_sdpa_does_not_call_torch_attention() -> None:
    q, k, v = (_randn(2, 4, 3, seed=50 + i, dtype=torch.float32) for i in range(3))
    mask = torch.rand(2, 4, 4, generator=_gen(53)) < 0.6
    _assert_no_torch_attention(
        lambda: kata.scaled_dot_product_attention(q, k, v), "scaled_dot_product_attention"
    )
    _assert_no_torch_attention(
        lambda: kata.scaled_dot_product_attention(q, k, v, attn_mask=mask),
        "scaled_dot_product_attention(mask)",
    )
    _assert_no_torch_attention(
        lambda: kata.scaled_dot_product_attention(q, k, v, is_causal=True),
        "scaled_dot_product_attention(causal)",
    )


# ---------------------------------------------------------------- MultiHeadSelfAttention


def _torch_mha(embed_dim: int, num_heads: int, seed: int, bias: bool = True) -> nn.MultiheadAttention:
    """torch's module in float64 with every parameter random (its biases start at zero otherwise)."""
    torch.manual_seed(seed)
    mha = nn.MultiheadAttention(embed_dim, num_heads, bias=bias, batch_first=True, dtype=F64)
    with torch.no_grad():
        for p in mha.parameters():
            p.copy_(torch.randn(p.shape, generator=_gen(seed + p.numel()), dtype=F64) * 0.5)
    return mha.eval()


def _mhsa_like(mha: nn.MultiheadAttention, bias: bool = True) -> nn.Module:
    """The kata's module holding torch's weights, copied by parameter name (buffers, if any, untouched)."""
    ours = kata.MultiHeadSelfAttention(mha.embed_dim, mha.num_heads, bias=bias).double()
    state = {"in_proj.weight": mha.in_proj_weight, "out_proj.weight": mha.out_proj.weight}
    if bias:
        state |= {"in_proj.bias": mha.in_proj_bias, "out_proj.bias": mha.out_proj.bias}
    params = dict(ours.named_parameters())
    shapes = {name: tuple(p.shape) for name, p in params.items()}
    expected = {name: tuple(t.shape) for name, t in state.items()}
    assert shapes == expected, (
        f"MultiHeadSelfAttention({mha.embed_dim}, {mha.num_heads}, bias={bias}) should have exactly the "
        f"parameters {expected} (torch's layout, so its weights can be copied in), got {shapes}"
    )
    with torch.no_grad():
        for name, t in state.items():
            params[name].copy_(t)
    return ours


def _causal_for_torch(length: int) -> torch.Tensor:
    return torch.ones(length, length, dtype=torch.bool).triu(1)  # True = masked, in nn.MultiheadAttention


PADDING = torch.tensor(
    [
        [False, False, False, False, False],
        [False, False, False, True, True],  # right padding
        [True, True, False, False, False],  # left padding: with is_causal, queries 0 and 1 have no key left
    ]
)


def test_mhsa_parameters() -> None:
    for bias in (True, False):
        module = kata.MultiHeadSelfAttention(8, 2, bias=bias)
        shapes = {name: tuple(p.shape) for name, p in module.named_parameters()}
        expected = {"in_proj.weight": (24, 8), "out_proj.weight": (8, 8)}
        if bias:
            expected |= {"in_proj.bias": (24,), "out_proj.bias": (8,)}
        assert shapes == expected, (
            f"MultiHeadSelfAttention(8, 2, bias={bias}) parameters: expected {expected}, got {shapes}; "
            "likely cause: separate q/k/v Linears, or layers kept elsewhere than in_proj and out_proj"
        )
        sizes = tuple(getattr(module, name, None) for name in ("embed_dim", "num_heads", "head_dim"))
        assert sizes == (8, 2, 4), f"embed_dim, num_heads, head_dim should be (8, 2, 4), got {sizes}"
    for heads in (3, 0):
        with pytest.raises(ValueError):
            kata.MultiHeadSelfAttention(8, heads)


@pytest.mark.parametrize("padding", [False, True], ids=["no padding", "padding"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_mhsa_matches_torch(padding: bool, causal: bool) -> None:
    mha = _torch_mha(8, 2, seed=60)
    ours = _mhsa_like(mha)
    x = _randn(3, 5, 8, seed=61)
    kpm = PADDING if padding else None
    got = ours(x, key_padding_mask=kpm, is_causal=causal)
    expected = mha(x, x, x, key_padding_mask=kpm, attn_mask=_causal_for_torch(5) if causal else None,
                   need_weights=False)[0]  # fmt: skip
    assert_close(
        got,
        expected,
        rtol=RTOL,
        atol=ATOL,
        what="MultiHeadSelfAttention(8, 2) vs nn.MultiheadAttention with the same weights, float64, "
        f"key_padding_mask {'(right and left padding)' if padding else 'None'}, is_causal={causal}",
        likely_cause="in_proj's rows read in the wrong order (q is rows [0, E), k [E, 2E), v [2E, 3E)), "
        "heads split with a reshape and no transpose, the padding mask applied to queries instead of keys "
        "or read the wrong way round (True = padding here, unlike SDPA's attn_mask), out_proj missing, or "
        "NaN where left padding and the causal mask leave a query no key",
    )


@pytest.mark.parametrize("heads", [1, 4])
def test_mhsa_without_bias_and_other_head_counts(heads: int) -> None:
    mha = _torch_mha(8, heads, seed=62, bias=False)
    ours = _mhsa_like(mha, bias=False)
    x = _randn(2, 4, 8, seed=63)
    assert_close(
        ours(x, is_causal=True),
        mha(x, x, x, attn_mask=_causal_for_torch(4), need_weights=False)[0],
        rtol=RTOL,
        atol=ATOL,
        what=f"MultiHeadSelfAttention(8, {heads}, bias=False) vs nn.MultiheadAttention, causal",
        likely_cause="head_dim or the number of heads hard-coded, or the scale taken from embed_dim "
        "instead of head_dim (1/sqrt(E / h))",
    )


@settings(max_examples=6)
@given(
    batch=st.integers(1, 2),
    heads=st.integers(1, 3),
    length=st.integers(2, 5),
    head_dim=st.integers(1, 3),
    data=st.data(),
)
def test_mhsa_causal_future_does_not_leak(batch, heads, length, head_dim, data) -> None:
    t = data.draw(st.integers(1, length - 1), label="first perturbed position")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    embed = heads * head_dim
    ours = _mhsa_like(_torch_mha(embed, heads, seed=seed))
    x = _randn(batch, length, embed, seed=seed + 1)
    x2 = x.clone()
    x2[:, t:] += _randn(batch, length - t, embed, seed=seed + 2)
    with torch.no_grad():
        out, out2 = ours(x, is_causal=True), ours(x2, is_causal=True)
    assert_close(
        out2[:, :t],
        out[:, :t],
        rtol=RTOL,
        atol=ATOL,
        what=f"causal MultiHeadSelfAttention outputs at positions < {t} after changing x at positions >= {t}",
        likely_cause="the causal mask lets a position see later ones (diagonal off by one, mask "
        "transposed), or heads split with a reshape and no transpose, which mixes positions",
    )
    x = x.requires_grad_()
    ours(x, is_causal=True)[:, :t].sum().backward()
    leak = x.grad[:, t:].abs().max().item()
    assert leak <= 1e-12, (
        f"the gradient of the causal outputs at positions < {t} with respect to x at positions >= {t} "
        f"should be 0, got max |grad| {leak}; likely cause: a leaky causal mask, or a reshape that mixes "
        "positions"
    )


def test_mhsa_padding_masks_keys_not_queries() -> None:
    ours = _mhsa_like(_torch_mha(8, 2, seed=64))
    x = _randn(3, 5, 8, seed=65)
    x2 = x.clone()
    x2[PADDING] += 10.0  # change only the padding positions
    with torch.no_grad():
        out, out2 = ours(x, key_padding_mask=PADDING), ours(x2, key_padding_mask=PADDING)
    real = ~PADDING
    assert_close(
        out2[real],
        out[real],
        rtol=RTOL,
        atol=ATOL,
        what="MultiHeadSelfAttention outputs at real (non-padding) positions after changing x at the "
        "padding positions",
        likely_cause="the padding mask was applied to the queries (shape (B, 1, L, 1)) instead of the keys "
        "(B, 1, 1, L), or read the wrong way round: True marks padding, which no query may attend to",
    )


def test_mhsa_fully_padded_sequence_gives_bias_and_finite_gradients() -> None:
    ours = _mhsa_like(_torch_mha(8, 2, seed=66))
    x = _randn(2, 4, 8, seed=67).requires_grad_()
    kpm = torch.tensor([[False, False, True, True], [True, True, True, True]])  # sequence 1 is all padding
    for causal in (False, True):
        out = ours(x, key_padding_mask=kpm, is_causal=causal)
        expected = ours.out_proj.bias.detach().expand(4, 8)
        assert torch.isfinite(out).all() and torch.allclose(
            out[1].detach(), expected, rtol=RTOL, atol=ATOL
        ), (
            f"a sequence that is all padding (is_causal={causal}): its queries have no key, so the "
            f"attention gives zeros and the output is out_proj's bias {expected[0].tolist()} in every row; "
            f"got {out[1].tolist()}. Likely cause: NaN from the softmax of a row of -inf"
        )
        x.grad = None
        ours.zero_grad()
        out.square().sum().backward()
        bad = [name for name, p in ours.named_parameters() if not torch.isfinite(p.grad).all()]
        assert torch.isfinite(x.grad).all() and not bad, (
            f"backward through a batch with an all-padding sequence (is_causal={causal}) gave non-finite "
            f"gradients (x: {not torch.isfinite(x.grad).all()}, parameters: {bad}); likely cause: the "
            "output zeroed after a softmax that produced NaN, whose backward still multiplies by NaN"
        )


def test_mhsa_keeps_float32() -> None:
    mha = _torch_mha(8, 2, seed=68)
    ours = _mhsa_like(mha).float()
    x = _randn(2, 5, 8, seed=69)
    got = ours(x.float(), key_padding_mask=PADDING[:2], is_causal=True)
    assert got.dtype == torch.float32, (
        f"a float32 MultiHeadSelfAttention on float32 input should return float32, got {got.dtype}; likely "
        "cause: a mask, bias or constant built in float64, or a cast"
    )
    expected = mha(x, x, x, key_padding_mask=PADDING[:2], attn_mask=_causal_for_torch(5), need_weights=False)[
        0
    ]
    assert_close(
        got.double(),
        expected,
        rtol=RTOL32,
        atol=ATOL32,
        what="float32 MultiHeadSelfAttention vs the float64 nn.MultiheadAttention",
        likely_cause="see test_mhsa_matches_torch",
    )


def test_mhsa_leaves_inputs_unchanged_and_no_dropout() -> None:
    ours = _mhsa_like(_torch_mha(8, 2, seed=70))
    x = _randn(3, 5, 8, seed=71)
    kpm = PADDING.clone()
    ours.train()
    first = ours(x, key_padding_mask=kpm, is_causal=True)
    assert torch.equal(x, _randn(3, 5, 8, seed=71)) and not x.requires_grad and torch.equal(kpm, PADDING), (
        "MultiHeadSelfAttention.forward modified its input x or key_padding_mask (values or "
        "requires_grad); likely cause: an in-place op such as key_padding_mask.logical_not_() or "
        "x.mul_(...)"
    )
    ours.eval()
    second = ours(x, key_padding_mask=kpm, is_causal=True)
    assert torch.equal(first, second), (
        "MultiHeadSelfAttention gave different outputs in train and eval mode on the same input; the "
        "contract has no dropout, so both modes must compute the same function"
    )


def test_mhsa_does_not_call_torch_attention() -> None:
    ours = kata.MultiHeadSelfAttention(8, 2)
    x = _randn(3, 5, 8, seed=72, dtype=torch.float32)
    found = [type(m).__name__ for m in ours.modules() if isinstance(m, nn.MultiheadAttention)]
    assert not found, f"MultiHeadSelfAttention holds {found}: write the attention, don't wrap torch's module"
    _assert_no_torch_attention(
        lambda: ours(x, key_padding_mask=PADDING, is_causal=True), "MultiHeadSelfAttention.forward"
    )


@pytest.mark.parametrize("which", ["MultiHeadSelfAttention", "GroupedQueryAttention"])
def test_modules_on_the_meta_device(which: str) -> None:
    module = (
        kata.MultiHeadSelfAttention(8, 4)
        if which == "MultiHeadSelfAttention"
        else kata.GroupedQueryAttention(8, 4, 2)
    )
    module = module.to("meta")
    x = torch.empty(2, 5, 8, device="meta")
    kpm = torch.empty(2, 5, dtype=torch.bool, device="meta")
    for kwargs in (
        {"is_causal": True},
        {"key_padding_mask": kpm, "is_causal": True},
        {"key_padding_mask": kpm},
    ):
        try:
            got = module(x, **kwargs)
        except NotImplementedError:
            raise
        except Exception as exc:
            pytest.fail(
                f"{which}.forward on the meta device ({list(kwargs)}) raised {type(exc).__name__}: {exc}. "
                "Likely cause: a mask built without device=x.device (it lands on the CPU, and fails on a "
                "GPU too), or a Python `if` / .item() on a tensor"
            )
        assert got.device.type == "meta" and got.shape == (2, 5, 8), (
            f"{which} on meta input (2, 5, 8) should return a (2, 5, 8) meta tensor, got {tuple(got.shape)} "
            f"on {got.device}"
        )


# ---------------------------------------------------------------- GroupedQueryAttention


def _gqa(embed_dim: int, heads: int, kv_heads: int, seed: int, bias: bool = True) -> nn.Module:
    module = kata.GroupedQueryAttention(embed_dim, heads, kv_heads, bias=bias).double()
    with torch.no_grad():
        for i, p in enumerate(module.parameters()):
            p.copy_(torch.randn(p.shape, generator=_gen(seed + i), dtype=F64) * 0.5)
    return module


def _gqa_reference(module: nn.Module, x: torch.Tensor, kpm, causal: bool) -> torch.Tensor:
    """torch's SDPA with enable_gqa=True (query head h uses key/value head h // (h_q / h_kv)), in float64."""
    heads, kv_heads = module.num_heads, module.num_kv_heads
    q = module.q_proj(x).unflatten(-1, (heads, -1)).transpose(1, 2)
    k = module.k_proj(x).unflatten(-1, (kv_heads, -1)).transpose(1, 2)
    v = module.v_proj(x).unflatten(-1, (kv_heads, -1)).transpose(1, 2)
    length = x.shape[1]
    keep = torch.ones(x.shape[0], 1, length, length, dtype=torch.bool)
    if kpm is not None:
        keep = keep & ~kpm[:, None, None, :]
    if causal:
        keep = keep & torch.ones(length, length, dtype=torch.bool).tril()
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, enable_gqa=True)
    return module.out_proj(out.transpose(1, 2).flatten(-2))


def test_gqa_parameters() -> None:
    for heads, kv_heads in ((4, 2), (4, 1), (4, 4)):
        module = kata.GroupedQueryAttention(8, heads, kv_heads)
        shapes = {name: tuple(p.shape) for name, p in module.named_parameters()}
        kv = kv_heads * 8 // heads
        expected = {
            "q_proj.weight": (8, 8), "q_proj.bias": (8,), "k_proj.weight": (kv, 8), "k_proj.bias": (kv,),
            "v_proj.weight": (kv, 8), "v_proj.bias": (kv,), "out_proj.weight": (8, 8), "out_proj.bias": (8,),
        }  # fmt: skip
        assert shapes == expected, (
            f"GroupedQueryAttention(8, {heads}, {kv_heads}) parameters: expected {expected}, got {shapes}; "
            f"the key and value projections have num_kv_heads * head_dim = {kv} outputs, not embed_dim: "
            "that is where GQA saves"
        )
    no_bias = {name for name, _ in kata.GroupedQueryAttention(8, 4, 2, bias=False).named_parameters()}
    assert no_bias == {"q_proj.weight", "k_proj.weight", "v_proj.weight", "out_proj.weight"}, (
        f"GroupedQueryAttention(..., bias=False) should have only the four weights, got {sorted(no_bias)}"
    )
    for heads, kv_heads in ((4, 3), (3, 1), (4, 0)):
        with pytest.raises(ValueError):
            kata.GroupedQueryAttention(8, heads, kv_heads)


@pytest.mark.parametrize("kv_heads", [1, 2, 4], ids=["MQA", "2 groups", "MHA"])
@pytest.mark.parametrize("masks", ["none", "padding+causal"])
def test_gqa_matches_torch_enable_gqa(kv_heads: int, masks: str) -> None:
    module = _gqa(8, 4, kv_heads, seed=80)
    x = _randn(3, 5, 8, seed=81)
    kpm, causal = (PADDING, True) if masks == "padding+causal" else (None, False)
    got = module(x, key_padding_mask=kpm, is_causal=causal)
    with torch.no_grad():
        expected = _gqa_reference(module, x, kpm, causal)
    assert_close(
        got,
        expected,
        rtol=RTOL,
        atol=ATOL,
        what=f"GroupedQueryAttention(8, num_heads=4, num_kv_heads={kv_heads}) with masks {masks!r} vs "
        "F.scaled_dot_product_attention(..., enable_gqa=True), float64",
        likely_cause="key/value heads repeated with .repeat (heads 0, 1, 0, 1) instead of "
        "repeat_interleave (0, 0, 1, 1): query head h uses key/value head h // (num_heads // "
        "num_kv_heads); or the key/value projections split into num_heads instead of num_kv_heads heads",
    )


def test_gqa_with_all_heads_equals_torch_mha() -> None:
    module = _gqa(8, 2, 2, seed=82)
    mha = nn.MultiheadAttention(8, 2, batch_first=True, dtype=F64).eval()
    with torch.no_grad():
        mha.in_proj_weight.copy_(
            torch.cat([module.q_proj.weight, module.k_proj.weight, module.v_proj.weight])
        )
        mha.in_proj_bias.copy_(torch.cat([module.q_proj.bias, module.k_proj.bias, module.v_proj.bias]))
        mha.out_proj.load_state_dict(module.out_proj.state_dict())
    x = _randn(3, 5, 8, seed=83)
    assert_close(
        module(x, key_padding_mask=PADDING, is_causal=True),
        mha(x, x, x, key_padding_mask=PADDING, attn_mask=_causal_for_torch(5), need_weights=False)[0],
        rtol=RTOL,
        atol=ATOL,
        what="GroupedQueryAttention(8, 2, num_kv_heads=2) vs nn.MultiheadAttention with the stacked weights",
        likely_cause="with as many key/value heads as query heads GQA is ordinary multi-head attention: "
        "check the head split, the masks and out_proj",
    )


def test_gqa_causal_future_does_not_leak_and_fully_padded_is_finite() -> None:
    module = _gqa(8, 4, 2, seed=84)
    x = _randn(2, 5, 8, seed=85).requires_grad_()
    module(x, is_causal=True)[:, :2].sum().backward()
    leak = x.grad[:, 2:].abs().max().item()
    assert leak <= 1e-12, (
        "GroupedQueryAttention(is_causal=True): the gradient of outputs at positions < 2 with respect to x "
        f"at positions >= 2 should be 0, got max |grad| {leak}; likely cause: a leaky causal mask"
    )
    x.grad = None
    kpm = torch.tensor([[False, False, False, True, True], [True] * 5])
    out = module(x, key_padding_mask=kpm, is_causal=True)
    out.square().sum().backward()
    expected = module.out_proj.bias.detach().expand(5, 8)
    assert torch.allclose(out[1].detach(), expected, rtol=RTOL, atol=ATOL) and torch.isfinite(x.grad).all(), (
        "GroupedQueryAttention on an all-padding sequence: expected out_proj's bias in every row and "
        f"finite gradients; got rows {out[1].tolist()} and {int((~torch.isfinite(x.grad)).sum())} "
        "non-finite gradient entries. Likely cause: NaN from a softmax over a row of -inf"
    )


def test_gqa_keeps_float32_and_leaves_inputs_unchanged() -> None:
    module = _gqa(8, 4, 2, seed=86)
    x = _randn(3, 5, 8, seed=87)
    expected = _gqa_reference(module, x, PADDING, True).detach()
    module = module.float()
    x32, kpm = x.float(), PADDING.clone()
    got = module(x32, key_padding_mask=kpm, is_causal=True)
    assert got.dtype == torch.float32, f"float32 GroupedQueryAttention should return float32, got {got.dtype}"
    assert_close(
        got.double(),
        expected,
        rtol=RTOL32,
        atol=ATOL32,
        what="float32 GroupedQueryAttention vs the float64 oracle",
        likely_cause="see test_gqa_matches_torch_enable_gqa",
    )
    assert torch.equal(x32, x.float()) and torch.equal(kpm, PADDING) and not x32.requires_grad, (
        "GroupedQueryAttention.forward modified x or key_padding_mask; it must leave its inputs as they were"
    )


def test_gqa_does_not_call_torch_attention() -> None:
    module = kata.GroupedQueryAttention(8, 4, 2)
    x = _randn(3, 5, 8, seed=88, dtype=torch.float32)
    _assert_no_torch_attention(
        lambda: module(x, key_padding_mask=PADDING, is_causal=True), "GroupedQueryAttention.forward"
    )
