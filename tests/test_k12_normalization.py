"""Grader for k12_normalization: LayerNorm and RMSNorm by hand, torch's fan convention, Kaiming and Xavier
init by hand, a zero-initialised pre-norm residual block, and a deep ReLU MLP that keeps its scale.

Oracles: `nn.LayerNorm` / `nn.RMSNorm` with the same parameters, run in float64 (outputs and gradients, at
rtol 1e-10: the same float64 formula in another operation order differs by a few ulps); in float32 at
rtol/atol 1e-5; in float16/bfloat16 the float64 result on the same (rounded) input at 4 * finfo(dtype).eps,
which a half-precision computation meets (torch itself is about 1 ulp off). The fan convention against
`torch.nn.init._calculate_fan_in_and_fan_out`. The pre-norm block against its formula written with torch's
layers.

Statistical tests (init): each case is drawn on three fixed seeds, and each statistic must fall within
5 standard errors (s.e.) of its expected value, derived, not tuned (a false failure is about a 1-in-a-million
event per check, and the seeds make it deterministic):
- the mean of n iid values with std s has s.e. s / sqrt(n);
- the root mean square r of n iid N(0, s**2) values has relative s.e. 1 / sqrt(2n) (the sample variance
  of a normal has relative s.e. sqrt(2 / n), and a square root halves a relative error); for U(-b, b),
  whose fourth moment is 9/5 of the squared variance, Var(r**2) = (9/5 - 1) s**4 / n, so r's relative
  s.e. is sqrt(0.2 / n);
- a share p of n values (within one std for a normal: p = 0.6827; within b / 2 for a uniform: p = 0.5)
  has s.e. sqrt(p (1 - p) / n). That share tells a normal from a uniform with the same std (0.577 and
  0.614 instead).
- the largest |value| of n iid U(-b, b) values is below b (1 - 20 / n) with probability (1 - 20/n)**n,
  about e**-20.
With n >= 16384 the std is checked to within 2.8%: a swapped fan (a factor sqrt(2) or more here), a
missing ReLU gain sqrt(2), the gain of another nonlinearity, or a uniform bound off by sqrt(3) fail by
a wide margin; leaky_relu(0.2) vs relu (2%) is checked on 262144 values (5 s.e. = 0.7%).

The deep MLP: for width w and depth L with He init, log(rms_last / rms_first) is a sum of L - 1 nearly
independent per-layer fluctuations of variance about 1 / w (finite width), so its std is about
sqrt((L - 1) / w) = 0.35 for w = 256, L = 32. Measured over 300 seeds with a batch of 64: std 0.34, mean
-0.12, range [-1.15, 0.90]. A factor 8 band (|log| < 2.08) is 5.8 std from that mean; a gain of 1 instead
of sqrt(2) moves the log by -31 * log(2) / 2 = -10.7, a gain 10% off by 3.0.

Forbidden shortcuts: the norm forwards are recorded (`record_torch_calls`) and must not reach torch's
normalisation functions; the init functions are watched with `sys.setprofile` and must not run any
function of `torch/nn/init.py` (a direct `from torch.nn.init import ...` included).

What only a GPU can check: the `device` fixture's cuda case runs both norms and both inits on the GPU.
"""

from __future__ import annotations

import copy
import math
import sys

import pytest
import torch
from torch import nn

from kata_harness import load_kata
from kata_harness.testing import assert_close, explain_crash, record_torch_calls

kata = load_kata("k12_normalization")

FORBIDDEN_NORMS = ("layer_norm", "rms_norm", "group_norm", "batch_norm", "instance_norm")
SEEDS = (0, 1, 2)


def _randomise(*modules: nn.Module, seed: int = 7) -> None:
    """Give every module the same random parameters (modules with the same parameter names and shapes)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        params = [dict(m.named_parameters()) for m in modules]
        for name, p in params[0].items():
            value = torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.7 + 0.3
            for ps in params:
                ps[name].copy_(value)


def _inputs(
    shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0, scale: float = 2.0, shift: float = 0.8
):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale + shift).to(dtype)


# ---------------------------------------------------------------- LayerNorm and RMSNorm: parameters


LN_SETTINGS = [
    pytest.param(4, {}, id="int"),
    pytest.param((3, 4), {}, id="tuple"),
    pytest.param([2, 3], {}, id="list"),
    pytest.param(torch.Size([5]), {"eps": 0.1}, id="size-eps"),
    pytest.param((3, 4), {"bias": False}, id="no-bias"),
    pytest.param((3, 4), {"elementwise_affine": False}, id="no-affine"),
]


@pytest.mark.parametrize("shape, kwargs", LN_SETTINGS)
def test_layer_norm_attributes_and_parameters_match_torch(shape, kwargs) -> None:
    mine = explain_crash(
        lambda: kata.LayerNorm(shape, **kwargs), f"LayerNorm({shape!r}, **{kwargs})", "the constructor"
    )
    torch_ln = nn.LayerNorm(shape, **kwargs)
    assert isinstance(mine, nn.Module), f"LayerNorm should be an nn.Module, got {type(mine).__name__}"
    assert mine.normalized_shape == torch_ln.normalized_shape and type(mine.normalized_shape) is tuple, (
        f"LayerNorm({shape!r}).normalized_shape should be the tuple {torch_ln.normalized_shape}, got "
        f"{mine.normalized_shape!r}; likely cause: an int kept as it is instead of (n,), or a list kept"
    )
    assert mine.eps == torch_ln.eps and mine.elementwise_affine == torch_ln.elementwise_affine, (
        f"LayerNorm attributes: expected eps={torch_ln.eps}, "
        f"elementwise_affine={torch_ln.elementwise_affine}, "
        f"got eps={mine.eps}, elementwise_affine={mine.elementwise_affine}"
    )
    expected = {name: p for name, p in torch_ln.named_parameters()}
    got = dict(mine.named_parameters())
    assert set(got) == set(expected), (
        f"LayerNorm({shape!r}, **{kwargs}) should have the parameters {sorted(expected)}, got {sorted(got)}; "
        f"likely cause: a bias created even with bias=False, parameters created with "
        f"elementwise_affine=False, "
        f"or plain tensors instead of nn.Parameter"
    )
    for name in ("weight", "bias"):
        if name not in expected:
            assert getattr(mine, name, "missing") is None, (
                f"LayerNorm({shape!r}, **{kwargs}).{name} should be None (as nn.LayerNorm's), got "
                f"{getattr(mine, name, 'no such attribute')!r}"
            )
    for name, p in expected.items():
        assert isinstance(got[name], nn.Parameter), f"LayerNorm.{name} should be an nn.Parameter"
        assert_close(
            got[name].detach(),
            p.detach(),
            rtol=0,
            atol=0,
            what=f"LayerNorm({shape!r}, **{kwargs}).{name} at init",
            likely_cause="weight starts at ones and bias at zeros, float32, shaped like normalized_shape "
            "(the whole tuple, not only its last dim)",
        )


RMS_SETTINGS = [
    pytest.param(4, {}, id="int"),
    pytest.param((3, 4), {"eps": 1e-6}, id="tuple-eps"),
    pytest.param([2, 3], {}, id="list"),
    pytest.param((3, 4), {"elementwise_affine": False}, id="no-affine"),
]


@pytest.mark.parametrize("shape, kwargs", RMS_SETTINGS)
def test_rms_norm_attributes_and_parameters_match_torch(shape, kwargs) -> None:
    mine = explain_crash(
        lambda: kata.RMSNorm(shape, **kwargs), f"RMSNorm({shape!r}, **{kwargs})", "the constructor"
    )
    torch_rms = nn.RMSNorm(shape, **kwargs)
    assert isinstance(mine, nn.Module), f"RMSNorm should be an nn.Module, got {type(mine).__name__}"
    assert mine.normalized_shape == torch_rms.normalized_shape and type(mine.normalized_shape) is tuple, (
        f"RMSNorm({shape!r}).normalized_shape should be the tuple {torch_rms.normalized_shape}, got "
        f"{mine.normalized_shape!r}"
    )
    assert mine.eps == torch_rms.eps and mine.elementwise_affine == torch_rms.elementwise_affine, (
        f"RMSNorm attributes: expected eps={torch_rms.eps!r}, "
        f"elementwise_affine={torch_rms.elementwise_affine}, got eps={mine.eps!r}, "
        f"elementwise_affine={mine.elementwise_affine}; likely cause: eps=None replaced "
        f"by a number in __init__ (None means: decide from the input's dtype in forward)"
    )
    expected = dict(torch_rms.named_parameters())
    got = dict(mine.named_parameters())
    assert set(got) == set(expected), (
        f"RMSNorm({shape!r}, **{kwargs}) should have the parameters {sorted(expected)}, got {sorted(got)}; "
        f"likely cause: a bias (RMSNorm has none), or a weight created with elementwise_affine=False"
    )
    if not expected:
        assert getattr(mine, "weight", "missing") is None, (
            "RMSNorm(elementwise_affine=False).weight should be None"
        )
    for name, p in expected.items():
        assert isinstance(got[name], nn.Parameter), f"RMSNorm.{name} should be an nn.Parameter"
        assert_close(
            got[name].detach(),
            p.detach(),
            rtol=0,
            atol=0,
            what=f"RMSNorm({shape!r}).{name} at init",
            likely_cause="weight starts at ones, float32, shaped like the whole normalized_shape",
        )


# ---------------------------------------------------------------- LayerNorm and RMSNorm: forward


def _compare_forward(
    mine: nn.Module, oracle: nn.Module, x: torch.Tensor, label: str, likely: str, tol: float
):
    """Outputs and gradients (wrt x and every parameter) of two modules with the same parameters."""
    xa = x.clone().requires_grad_()
    xb = x.clone().requires_grad_()
    out = explain_crash(lambda: mine(xa), f"{label} forward on shape {tuple(x.shape)}", likely)
    expected = oracle(xb)
    assert_close(
        out,
        expected,
        rtol=tol,
        atol=tol,
        what=f"{label} output for input shape {tuple(x.shape)}",
        likely_cause=likely,
    )
    upstream = torch.randn(expected.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    upstream = upstream.to(expected.dtype)
    assert out.requires_grad, f"{label}'s output does not require grad: the graph was cut (detach or no_grad)"
    out.backward(upstream)
    expected.backward(upstream)
    assert_close(
        xa.grad,
        xb.grad,
        rtol=tol,
        atol=tol,
        what=f"{label}: gradient with respect to x",
        likely_cause=likely + "; or part of the computation detached",
    )
    theirs = dict(oracle.named_parameters())
    for name, p in mine.named_parameters():
        assert p.grad is not None, f"{label}: parameter {name} got no gradient; likely cause: it is not used"
        assert_close(
            p.grad,
            theirs[name].grad,
            rtol=tol,
            atol=tol,
            what=f"{label}: gradient of {name}",
            likely_cause=likely,
        )


LN_CASES = [
    pytest.param(5, {}, (2, 3, 5), id="5-on-2x3x5"),
    pytest.param((3, 4), {}, (2, 5, 3, 4), id="3x4-on-2x5x3x4"),
    pytest.param(4, {}, (4,), id="no-leading-dims"),
    pytest.param(4, {"eps": 0.1}, (6, 4), id="eps-0.1"),
    pytest.param((3, 4), {"bias": False}, (2, 3, 4), id="no-bias"),
    pytest.param((3, 4), {"elementwise_affine": False}, (2, 3, 4), id="no-affine"),
]

LN_LIKELY = (
    "check: the BIASED variance (mean of squared deviations, unbiased=False), eps INSIDE the square root, "
    "mean and variance over ALL the trailing normalized_shape dims together (not only the last), and "
    "weight and bias applied after normalising"
)


@pytest.mark.parametrize("shape, kwargs, input_shape", LN_CASES)
def test_layer_norm_matches_torch_in_float64(shape, kwargs, input_shape) -> None:
    mine = kata.LayerNorm(shape, **kwargs).double()
    oracle = nn.LayerNorm(shape, **kwargs).double()
    _randomise(mine, oracle)
    x = _inputs(input_shape, torch.float64)
    _compare_forward(mine, oracle, x, f"LayerNorm({shape!r}, **{kwargs}) in float64", LN_LIKELY, 1e-10)


def test_layer_norm_matches_torch_in_float32() -> None:
    mine, oracle = kata.LayerNorm((3, 4)), nn.LayerNorm((3, 4))
    _randomise(mine, oracle)
    _compare_forward(
        mine, oracle, _inputs((5, 3, 4), torch.float32), "LayerNorm((3, 4)) in float32", LN_LIKELY, 1e-5
    )


def test_layer_norm_puts_eps_inside_the_square_root() -> None:
    # Rows with std 1e-3: var = 1e-6, so sqrt(var + 1e-5) = 3.3e-3 while sqrt(var) + 1e-5 = 1.01e-3.
    mine, oracle = kata.LayerNorm(8).double(), nn.LayerNorm(8).double()
    x = _inputs((3, 8), torch.float64, scale=1e-3, shift=5.0)
    assert_close(
        mine(x),
        oracle(x),
        rtol=1e-10,
        atol=1e-10,
        what="LayerNorm(8) on rows with std 1e-3",
        likely_cause="eps belongs INSIDE the square root, (x - mean) / sqrt(var + eps); "
        "sqrt(var) + eps differs wherever the variance is small",
    )


def test_layer_norm_uses_the_biased_variance() -> None:
    mine, oracle = kata.LayerNorm(2).double(), nn.LayerNorm(2).double()
    x = torch.tensor([[1.0, 3.0], [-2.0, 0.0]], dtype=torch.float64)
    assert_close(
        mine(x),
        oracle(x),
        rtol=1e-10,
        atol=1e-10,
        what="LayerNorm(2) on [[1, 3], [-2, 0]] (expected [[-1, 1], [-1, 1]] up to eps)",
        likely_cause="the variance must be the BIASED one "
        "(divide by n): with n = 2 the unbiased one (torch.var's default) is twice as big",
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("which", ["LayerNorm", "RMSNorm"])
def test_norms_keep_half_precision(which: str, dtype: torch.dtype) -> None:
    mine = getattr(kata, which)(16).to(dtype)
    oracle = (nn.LayerNorm(16) if which == "LayerNorm" else nn.RMSNorm(16)).double()
    _randomise(mine, oracle)
    with torch.no_grad():  # the oracle uses the very (rounded) half-precision parameters
        for (_, p), (_, q) in zip(mine.named_parameters(), oracle.named_parameters(), strict=True):
            q.copy_(p.double())
    x = _inputs((4, 16), dtype, scale=2.0, shift=0.5)  # mean square about 4: far above any eps
    out = explain_crash(
        lambda: mine(x),
        f"{which}(16).to({dtype}) on a {dtype} input",
        "an operation mixing dtypes, e.g. a float32 tensor created inside forward",
    )
    assert out.dtype == dtype, (
        f"{which} on a {dtype} input (module cast to {dtype}) should return {dtype}, got {out.dtype}; likely "
        f"cause: the result of a float32 computation not cast back with .to(x.dtype), or a float32 tensor "
        f"created inside forward"
    )
    tol = 4 * torch.finfo(dtype).eps
    assert_close(
        out.double(),
        oracle(x.double()).detach(),
        rtol=tol,
        atol=tol,
        what=f"{which} in {dtype} vs the float64 result",
        likely_cause="statistics accumulated in "
        "half precision lose digits: compute them in float32 and round the result once",
    )


def test_norms_keep_float64_precision() -> None:
    # A float32 detour would be off by ~1e-7 relative; float64 agrees to ~1e-15.
    for which, torch_norm in (("LayerNorm", nn.LayerNorm), ("RMSNorm", nn.RMSNorm)):
        mine = getattr(kata, which)(6, elementwise_affine=False)
        oracle = torch_norm(6, elementwise_affine=False)
        x = _inputs((3, 6), torch.float64)
        out = mine(x)
        assert out.dtype == torch.float64, (
            f"{which}(6, elementwise_affine=False) on a float64 input should return float64, "
            f"got {out.dtype}; "
            f"likely cause: .float() inside forward, or a float32 tensor mixed in"
        )
        assert_close(
            out,
            oracle(x),
            rtol=1e-10,
            atol=1e-10,
            what=f"{which} on a float64 input",
            likely_cause="the computation went through float32 (x.float()) for a float64 input",
        )


RMS_LIKELY = (
    "RMSNorm does NOT subtract the mean: y = x / sqrt(mean(x ** 2) + eps) * weight, the mean of squares "
    "over ALL the trailing normalized_shape dims, eps inside the square root, eps=None meaning "
    "torch.finfo(x.dtype).eps"
)


@pytest.mark.parametrize(
    "shape, kwargs, input_shape",
    [
        pytest.param(5, {}, (2, 3, 5), id="5-on-2x3x5"),
        pytest.param((3, 4), {"eps": 1e-3}, (2, 5, 3, 4), id="3x4-eps"),
        pytest.param(4, {"eps": 0.5}, (4,), id="no-leading-dims-eps-0.5"),
        pytest.param((3, 4), {"elementwise_affine": False}, (2, 3, 4), id="no-affine"),
    ],
)
def test_rms_norm_matches_torch_in_float64(shape, kwargs, input_shape) -> None:
    mine = kata.RMSNorm(shape, **kwargs).double()
    oracle = nn.RMSNorm(shape, **kwargs).double()
    _randomise(mine, oracle)
    x = _inputs(input_shape, torch.float64, shift=1.5)  # a mean far from 0: centring shows
    _compare_forward(mine, oracle, x, f"RMSNorm({shape!r}, **{kwargs}) in float64", RMS_LIKELY, 1e-10)


def test_rms_norm_matches_torch_in_float32() -> None:
    mine, oracle = kata.RMSNorm((3, 4)), nn.RMSNorm((3, 4))
    _randomise(mine, oracle)
    _compare_forward(
        mine,
        oracle,
        _inputs((5, 3, 4), torch.float32, shift=1.5),
        "RMSNorm((3, 4)) in float32",
        RMS_LIKELY,
        1e-5,
    )


@pytest.mark.parametrize(
    "dtype, value", [(torch.float32, 1e-4), (torch.float64, 1e-8)], ids=["float32", "float64"]
)
def test_rms_norm_default_eps_follows_the_dtype(dtype: torch.dtype, value: float) -> None:
    # Mean square 1e-8 (float32) or 1e-16 (float64): the same size as finfo(dtype).eps, so eps shows.
    x = torch.full((2, 4), value, dtype=dtype)
    expected = nn.RMSNorm(4, elementwise_affine=False)(x)
    got = kata.RMSNorm(4, elementwise_affine=False)(x)
    assert_close(
        got,
        expected,
        rtol=1e-5,
        atol=0,
        what=f"RMSNorm(4) (eps=None) on a constant {value:g} in {dtype}"
        f" (expected {expected[0, 0].item():.4f})",
        likely_cause=f"eps=None means "
        f"torch.finfo(x.dtype).eps, here {torch.finfo(dtype).eps:.3g}, decided from the input's dtype; "
        f"not a fixed 1e-6 / 1e-5, nor float32's eps for a float64 input",
    )


@pytest.mark.parametrize("which", ["LayerNorm", "RMSNorm"])
def test_norms_reject_a_shape_that_does_not_end_with_normalized_shape(which: str) -> None:
    mine = getattr(kata, which)((3, 4), elementwise_affine=False)
    for shape in [(2, 4, 3), (2, 5, 4), (4,)]:
        with pytest.raises(ValueError):
            mine(torch.randn(shape))
            pytest.fail(
                f"{which}((3, 4)) on an input of shape {shape} should raise ValueError; it returned "
                f"instead. Likely cause: reducing over the last len(normalized_shape) dims without "
                f"checking their sizes"
            )


@pytest.mark.parametrize("which", ["LayerNorm", "RMSNorm"])
def test_norms_do_not_call_torch_normalisation(which: str) -> None:
    calls: list[str] = []
    for kwargs in ({}, {"elementwise_affine": False}):
        mine = getattr(kata, which)((3, 4), **kwargs)
        x = torch.randn(2, 3, 4, requires_grad=True)
        with record_torch_calls() as recorded:
            mine(x).sum().backward()
        calls += recorded
    bad = sorted({name for name in calls if any(norm in name for norm in FORBIDDEN_NORMS)})
    assert not bad, (
        f"{which}'s forward called {bad}; the point of this task is to write the normalisation from "
        f"elementary ops (mean, sqrt or rsqrt, arithmetic): torch's normalisation functions and modules are "
        f"off limits here"
    )


@pytest.mark.parametrize("which", ["LayerNorm", "RMSNorm"])
def test_norms_leave_the_input_unchanged(which: str) -> None:
    mine = getattr(kata, which)(5)
    x = _inputs((3, 5), torch.float32)
    before = x.clone()
    mine(x)
    assert torch.equal(x, before) and not x.requires_grad, (
        f"{which}'s forward changed its input x; likely cause: an in-place operation on it "
        f"(x -= mean, x.div_)"
    )


# ---------------------------------------------------------------- fan_in_and_fan_out


@pytest.mark.parametrize(
    "shape, layer",
    [
        ((7, 3), "Linear(3, 7).weight"),
        ((8, 2, 5), "Conv1d(2, 8, 5).weight"),
        ((6, 4, 3, 2), "Conv2d(4, 6, (3, 2)).weight"),
        ((6, 2, 3, 3), "Conv2d(4, 6, 3, groups=2).weight"),
        ((4, 3, 2, 2, 2), "Conv3d(3, 4, 2).weight"),
        ((5, 9, 1, 1), "Conv2d(9, 5, 1).weight"),
    ],
)
def test_fan_in_and_fan_out_follow_torch(shape: tuple[int, ...], layer: str) -> None:
    t = torch.empty(shape, device="meta")  # only the shape may be read
    expected = nn.init._calculate_fan_in_and_fan_out(t)
    got = explain_crash(lambda: kata.fan_in_and_fan_out(t), f"fan_in_and_fan_out on {layer}", "indexing")
    assert isinstance(got, tuple) and len(got) == 2 and all(type(v) is int for v in got), (
        f"fan_in_and_fan_out should return a tuple of two Python ints, got {got!r}"
    )
    assert got == expected, (
        f"fan_in_and_fan_out of a {layer} (shape {shape}) should be (fan_in, fan_out) = {expected}, "
        f"got {got}; "
        f"likely cause: fan_in and fan_out swapped (dim 0 is the OUTPUT features, dim 1 the input), or the "
        f"receptive field (the product of dims 2 onwards) left out or applied to one side only"
    )


def test_fan_in_and_fan_out_reject_fewer_than_two_dims() -> None:
    for shape in [(5,), ()]:
        with pytest.raises(ValueError):
            kata.fan_in_and_fan_out(torch.empty(shape))
            pytest.fail(f"fan_in_and_fan_out on a tensor of shape {shape} should raise ValueError (no fans)")


# ---------------------------------------------------------------- kaiming_normal_ and xavier_uniform_


def _torch_init_calls(run) -> list[str]:
    """Names of the functions of torch/nn/init.py that run() executes, however it reached them."""
    init_file = torch.nn.init.__file__
    seen: list[str] = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_filename == init_file:
            seen.append(frame.f_code.co_name)

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(previous)
    return seen


def _check_normal(w: torch.Tensor, std: float, what: str, likely: str) -> None:
    v = w.detach().double().flatten()
    n = v.numel()
    mean, rms = v.mean().item(), v.pow(2).mean().sqrt().item()
    assert abs(mean) < 5 * std / math.sqrt(n), (
        f"{what}: the mean of {n} values should be 0 within 5 s.e. ({5 * std / math.sqrt(n):.2g}), got "
        f"{mean:.3g}; likely cause: values not centred at 0"
    )
    assert abs(rms / std - 1) < 5 / math.sqrt(2 * n), (
        f"{what}: the std of {n} values should be {std:.5g} within 5 s.e. "
        f"(relative {5 / math.sqrt(2 * n):.2%}), "
        f"got {rms:.5g} ({rms / std:.4f} times it); likely cause: {likely}"
    )
    share, p = (v.abs() < std).double().mean().item(), 0.6827
    assert abs(share - p) < 5 * math.sqrt(p * (1 - p) / n), (
        f"{what}: {share:.4f} of the values lie within one std; a normal puts {p} there (a uniform with the "
        f"same std 0.577); likely cause: a uniform or other non-normal sampler"
    )


KAIMING_CASES = [
    # shape, kwargs, expected std, what a wrong answer usually is
    (
        (256, 128),
        {},
        math.sqrt(2 / 128),
        "the default (leaky_relu with a=0) is He init for ReLU: gain sqrt(2)",
    ),
    ((256, 128), {"nonlinearity": "relu"}, math.sqrt(2 / 128), "gain sqrt(2) for relu, fan_in = dim 1"),
    (
        (256, 128),
        {"nonlinearity": "relu", "mode": "fan_out"},
        math.sqrt(2 / 256),
        "mode='fan_out' uses dim 0",
    ),
    ((64, 32, 3, 3), {"nonlinearity": "relu"}, math.sqrt(2 / 288), "a conv's fan_in is in * kh * kw"),
    (
        (64, 32, 3, 3),
        {"nonlinearity": "relu", "mode": "fan_out"},
        math.sqrt(2 / 576),
        "fan_out is out * kh * kw",
    ),
    ((512, 512), {"a": 0.2}, math.sqrt(2 / 1.04 / 512), "leaky_relu's gain is sqrt(2 / (1 + a**2))"),
    ((128, 256), {"nonlinearity": "tanh"}, 5 / 3 / math.sqrt(256), "tanh's gain is 5/3"),
    ((128, 256), {"nonlinearity": "linear"}, 1 / math.sqrt(256), "linear's gain is 1"),
    ((128, 256), {"nonlinearity": "conv2d", "mode": "fan_out"}, 1 / math.sqrt(128), "conv2d's gain is 1"),
    ((128, 256), {"nonlinearity": "sigmoid"}, 1 / math.sqrt(256), "sigmoid's gain is 1"),
    ((128, 256), {"nonlinearity": "selu"}, 0.75 / math.sqrt(256), "selu's gain is 3/4"),
]


@pytest.mark.parametrize(
    "shape, kwargs, std, likely",
    KAIMING_CASES,
    ids=[
        "x".join(map(str, c[0])) + "-" + "-".join(f"{k}={v}" for k, v in c[1].items()) for c in KAIMING_CASES
    ],
)
def test_kaiming_normal_has_torchs_distribution(shape, kwargs, std, likely) -> None:
    for seed in SEEDS:
        torch.manual_seed(seed)
        w = torch.empty(shape)
        explain_crash(
            lambda w=w: kata.kaiming_normal_(w, **kwargs),
            f"kaiming_normal_(empty{shape}, **{kwargs})",
            "an unsupported argument",
        )
        _check_normal(
            w,
            std,
            f"kaiming_normal_(empty{shape}, **{kwargs}), seed {seed}",
            f"{likely}; std = gain / sqrt(fan)",
        )


@pytest.mark.parametrize(
    "shape, gain", [((256, 128), 1.0), ((64, 32, 3, 3), math.sqrt(2)), ((200, 300), 5 / 3)]
)
def test_xavier_uniform_has_torchs_distribution(shape, gain) -> None:
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    bound = gain * math.sqrt(6 / (fan_in + fan_out))
    what = f"xavier_uniform_(empty{shape}, gain={gain:.4g}) (fans {fan_in}, {fan_out}; bound {bound:.5g})"
    for seed in SEEDS:
        torch.manual_seed(seed)
        w = torch.empty(shape)
        kata.xavier_uniform_(w, gain=gain)
        v = w.double().flatten()
        n, top = v.numel(), v.abs().max().item()
        assert top <= bound * (1 + 1e-6), (
            f"{what}, seed {seed}: a value of size {top:.5g} lies beyond the bound; likely cause: a bound "
            f"sqrt(3) too big, the fans swapped with a sum that differs, or a normal instead of a uniform"
        )
        assert top >= bound * (1 - 20 / n), (
            f"{what}, seed {seed}: the largest |value| is {top:.5g}, {top / bound:.3f} of the bound; "
            f"{n} uniform draws reach within 20/n of it; likely cause: the std sqrt(2 / (fan_in + fan_out)) "
            f"used as the bound (a U(-b, b) has std b / sqrt(3): b = gain * sqrt(6 / (fan_in + fan_out)))"
        )
        rms, std = v.pow(2).mean().sqrt().item(), bound / math.sqrt(3)
        assert abs(rms / std - 1) < 5 * math.sqrt(0.2 / n), (
            f"{what}, seed {seed}: std {rms:.5g}, expected {std:.5g} within 5 s.e. "
            f"({5 * math.sqrt(0.2 / n):.2%}); likely cause: a gain or fan wrong"
        )
        share = (v.abs() < bound / 2).double().mean().item()
        assert abs(share - 0.5) < 5 * math.sqrt(0.25 / n), (
            f"{what}, seed {seed}: {share:.4f} of the values lie within half the bound; a uniform puts 0.5 "
            f"there; likely cause: a non-uniform sampler"
        )
        assert abs(v.mean().item()) < 5 * std / math.sqrt(n), f"{what}: values are not centred at 0"


INITS = [
    pytest.param(
        lambda t, **kw: kata.kaiming_normal_(t, nonlinearity="relu", **kw), "kaiming_normal_", id="kaiming"
    ),
    pytest.param(lambda t, **kw: kata.xavier_uniform_(t, **kw), "xavier_uniform_", id="xavier"),
]


@pytest.mark.parametrize("init, name", INITS)
def test_init_writes_in_place_into_a_parameter_without_a_graph(init, name) -> None:
    layer = nn.Linear(64, 32).double()
    w = layer.weight
    w.grad = torch.full_like(w, 0.5)
    ptr, grad = w.data_ptr(), w.grad
    out = explain_crash(
        lambda: init(w),
        f"{name} on an nn.Linear's weight (an nn.Parameter, a leaf that requires grad)",
        "an in-place operation on a leaf that requires grad outside torch.no_grad(): write the values "
        "under `with torch.no_grad():`",
    )
    assert out is w, (
        f"{name} should return the very tensor it was given (nn.init style), got "
        f"{'a different tensor' if isinstance(out, torch.Tensor) else repr(out)}"
    )
    assert layer.weight is w and w.data_ptr() == ptr and w.dtype == torch.float64 and w.shape == (32, 64), (
        f"{name} must write into the tensor's own storage, keeping its dtype (float64 here) and shape; "
        f"likely cause: `tensor.data = ...` or a new tensor returned: the module's parameter (and any "
        f"optimizer holding it) would not see the new values"
    )
    assert isinstance(w, nn.Parameter) and w.is_leaf and w.requires_grad and w.grad_fn is None, (
        f"{name} left the parameter with grad_fn={w.grad_fn}, is_leaf={w.is_leaf}, requires_grad="
        f"{w.requires_grad}; likely cause: the write was recorded by autograd: do it under torch.no_grad()"
    )
    assert w.grad is grad and torch.equal(grad, torch.full_like(w, 0.5)), (
        f"{name} changed the parameter's .grad"
    )
    assert w.std().item() > 0, f"{name} left the weight constant"


@pytest.mark.parametrize("init, name", INITS)
def test_init_draws_from_the_global_rng(init, name) -> None:
    def draw() -> torch.Tensor:
        t = torch.empty(16, 8)
        init(t)
        return t

    torch.manual_seed(5)
    state = torch.get_rng_state()
    first, second = draw(), draw()
    torch.manual_seed(5)
    again = draw()
    assert not torch.equal(torch.get_rng_state(), state), (
        f"{name} without a generator left torch's global RNG untouched; likely cause: a private "
        f"torch.Generator() created inside, so every call draws the same values whatever "
        f"torch.manual_seed says"
    )
    assert torch.equal(first, again), (
        f"{name} after the same torch.manual_seed should draw the same values; likely cause: randomness "
        f"from somewhere other than torch's global RNG (numpy, random, a fresh seed)"
    )
    assert not torch.equal(first, second), f"{name}: two calls in a row drew the same values"


@pytest.mark.parametrize("init, name", INITS)
def test_init_draws_from_the_generator_given(init, name) -> None:
    def draw(seed: int) -> torch.Tensor:
        t = torch.empty(16, 8)
        init(t, generator=torch.Generator().manual_seed(seed))
        return t

    torch.manual_seed(0)
    state = torch.get_rng_state()
    a, b, c = draw(11), draw(11), draw(12)
    assert torch.equal(torch.get_rng_state(), state), (
        f"{name}(..., generator=g) consumed torch's global RNG; likely cause: the generator argument "
        f"ignored (pass it to the sampling call)"
    )
    assert torch.equal(a, b) and not torch.equal(a, c), (
        f"{name}: two generators seeded alike should give the same values and different seeds different "
        f"ones; likely cause: the generator argument ignored"
    )


@pytest.mark.parametrize("init, name", INITS)
def test_init_does_not_call_torch_nn_init(init, name) -> None:
    called = _torch_init_calls(
        lambda: (init(torch.empty(8, 4)), kata.fan_in_and_fan_out(torch.empty(3, 2, 2)))
    )
    assert not called, (
        f"{name} (or fan_in_and_fan_out) ran {sorted(set(called))} from torch.nn.init; the point of this "
        f"task "
        f"is to compute the fans, the gain and the std or bound yourself and draw the values with a Tensor "
        f"method (normal_, uniform_)"
    )


def test_kaiming_normal_rejects_bad_arguments() -> None:
    for args, kwargs in [
        ((torch.empty(4, 3),), {"mode": "fan_avg"}),
        ((torch.empty(4, 3),), {"nonlinearity": "gelu"}),
        ((torch.empty(5),), {}),
    ]:
        with pytest.raises(ValueError):
            kata.kaiming_normal_(*args, **kwargs)
            pytest.fail(f"kaiming_normal_(shape {tuple(args[0].shape)}, **{kwargs}) should raise ValueError")
    with pytest.raises(ValueError):
        kata.xavier_uniform_(torch.empty(5))
        pytest.fail("xavier_uniform_ on a 1-D tensor should raise ValueError")


def test_inits_on_device(device: torch.device) -> None:
    w = torch.empty(128, 64, device=device)
    assert kata.kaiming_normal_(w, nonlinearity="relu") is w and w.device == device
    _check_normal(w.cpu(), math.sqrt(2 / 64), f"kaiming_normal_ on {device.type}", "the device path")
    assert kata.xavier_uniform_(w) is w and w.device == device
    for which, oracle in (("LayerNorm", nn.LayerNorm((2, 8))), ("RMSNorm", nn.RMSNorm((2, 8)))):
        mine = getattr(kata, which)((2, 8)).to(device)
        x = torch.randn(3, 2, 8, device=device)
        assert_close(
            mine(x).cpu(),
            oracle(x.cpu()),
            rtol=1e-5,
            atol=1e-5,
            what=f"{which} on {device.type}",
            likely_cause="a tensor built on the CPU inside forward",
        )


# ---------------------------------------------------------------- PreNormBlock


def _block(dim: int = 6, hidden: int = 10) -> nn.Module:
    return explain_crash(lambda: kata.PreNormBlock(dim, hidden), f"PreNormBlock({dim}, {hidden})", "__init__")


def test_pre_norm_block_layers() -> None:
    block = _block()
    modules = dict(block.named_children())
    assert {"norm", "fc1", "fc2"} <= set(modules), (
        f"PreNormBlock needs norm, fc1 and fc2, got {sorted(modules)}"
    )
    assert isinstance(block.norm, kata.LayerNorm) and block.norm.normalized_shape == (6,), (
        f"PreNormBlock(6, 10).norm should be this kata's LayerNorm(6), got {block.norm!r}"
    )
    for name, (i, o) in (("fc1", (6, 10)), ("fc2", (10, 6))):
        layer = getattr(block, name)
        assert isinstance(layer, nn.Linear) and (layer.in_features, layer.out_features) == (i, o), (
            f"PreNormBlock(6, 10).{name} should be nn.Linear({i}, {o}), got {layer!r}"
        )
        assert layer.bias is not None, f"PreNormBlock.{name} should have a bias"
    assert torch.count_nonzero(block.fc2.weight) == 0, "PreNormBlock: fc2.weight should start at zero"
    assert torch.count_nonzero(block.fc2.bias) == 0, (
        "PreNormBlock: fc2.bias should start at zero too: nn.Linear's default bias is random, so a zeroed "
        "weight alone adds a constant to every input and the block is not the identity"
    )
    assert block.fc1.weight.abs().sum() > 0, (
        "PreNormBlock: fc1.weight is zero; with fc1 AND fc2 zero no gradient ever reaches the branch: zero "
        "only the branch's last layer"
    )
    for name, p in block.named_parameters():
        assert p.requires_grad and p.is_leaf, f"PreNormBlock.{name} should be a trainable leaf parameter"


def test_pre_norm_block_is_the_identity_at_init_and_still_learns() -> None:
    block = _block()
    x = _inputs((4, 3, 6), torch.float32).requires_grad_()
    out = block(x)
    assert torch.equal(out.detach(), x.detach()), (
        f"PreNormBlock right after construction should return x exactly; max difference "
        f"{(out - x).abs().max().item():.3g}; likely cause: fc2's bias left random, the residual missing, "
        f"or a post-norm block norm(x + f(x))"
    )
    out.backward(torch.ones_like(out))
    g = block.fc2.weight.grad
    assert g is not None and g.abs().sum() > 0, (
        "PreNormBlock at init: no gradient reaches fc2.weight; likely cause: fc1 zeroed too (or relu of a "
        "zero), so the branch can never start learning"
    )
    assert_close(
        x.grad,
        torch.ones_like(x),
        rtol=0,
        atol=0,
        what="PreNormBlock at init: dL/dx",
        likely_cause="the identity path should pass the gradient unchanged",
    )


def test_pre_norm_block_matches_its_formula() -> None:
    block = _block().double()
    norm = nn.LayerNorm(6).double()
    fc1, fc2 = copy.deepcopy(block.fc1), copy.deepcopy(block.fc2)
    _randomise(block.norm, norm, seed=1)
    _randomise(block.fc2, fc2, seed=2)
    with torch.no_grad():
        fc1.load_state_dict(block.fc1.state_dict())
    x = _inputs((4, 6), torch.float64).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    out = block(x)
    expected = x_ref + fc2(torch.relu(fc1(norm(x_ref))))
    assert_close(
        out,
        expected,
        rtol=1e-10,
        atol=1e-10,
        what="PreNormBlock with random parameters",
        likely_cause="the block is x + fc2(relu(fc1(norm(x)))): the norm BEFORE the branch (pre-norm), "
        "never after the sum (post-norm), and the residual added",
    )
    upstream = torch.randn(expected.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    out.backward(upstream)
    expected.backward(upstream)
    assert_close(
        x.grad,
        x_ref.grad,
        rtol=1e-10,
        atol=1e-10,
        what="PreNormBlock: gradient with respect to x",
        likely_cause="part of the block detached",
    )
    assert_close(
        block.fc1.weight.grad,
        fc1.weight.grad,
        rtol=1e-10,
        atol=1e-10,
        what="PreNormBlock: fc1 gradient",
        likely_cause="part of the block detached",
    )


# ---------------------------------------------------------------- deep_relu_mlp


def test_deep_relu_mlp_structure() -> None:
    torch.manual_seed(0)
    model = explain_crash(lambda: kata.deep_relu_mlp(12, 20, 4), "deep_relu_mlp(12, 20, 4)", "construction")
    assert isinstance(model, nn.Sequential) and len(model) == 8, (
        f"deep_relu_mlp(12, 20, 4) should be an nn.Sequential of 8 modules (Linear, ReLU) x 4, got "
        f"{type(model).__name__} of {len(model) if hasattr(model, '__len__') else '?'}"
    )
    for i, module in enumerate(model):
        if i % 2:
            assert isinstance(module, nn.ReLU), (
                f"module {i} of deep_relu_mlp should be nn.ReLU, got {module!r}"
            )
            continue
        shape = (12 if i == 0 else 20, 20)
        assert isinstance(module, nn.Linear) and (module.in_features, module.out_features) == shape, (
            f"module {i} of deep_relu_mlp(12, 20, 4) should be nn.Linear{shape}, got {module!r}"
        )
        assert module.bias is not None and torch.count_nonzero(module.bias) == 0, (
            f"deep_relu_mlp: layer {i}'s bias should exist and start at zero; likely cause: nn.Linear's "
            f"default (random) bias kept"
        )
    with pytest.raises(ValueError):
        kata.deep_relu_mlp(12, 20, 0)
        pytest.fail("deep_relu_mlp(12, 20, 0) should raise ValueError")


def test_deep_relu_mlp_weights_are_he_normal() -> None:
    torch.manual_seed(1)
    model = kata.deep_relu_mlp(64, 256, 8)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    _check_normal(
        linears[0].weight,
        math.sqrt(2 / 64),
        "deep_relu_mlp(64, 256, 8): the first Linear's weight (fan_in 64)",
        "He init for ReLU uses fan_in (dim 1) and gain sqrt(2): std sqrt(2 / fan_in); "
        "nn.Linear's default init is NOT it",
    )
    # Every later layer, each scaled by its expected std, pooled: 7 * 65536 values.
    pooled = torch.cat([m.weight.detach().flatten() / math.sqrt(2 / 256) for m in linears[1:]])
    _check_normal(
        pooled,
        1.0,
        "deep_relu_mlp(64, 256, 8): the hidden Linears' weights / sqrt(2 / 256)",
        "std sqrt(2 / fan_in) for every layer",
    )
    assert not any(torch.equal(linears[1].weight, m.weight) for m in linears[2:]), (
        "deep_relu_mlp: two layers have the same weight; every layer draws its own"
    )


def test_deep_relu_mlp_keeps_the_activation_scale() -> None:
    torch.manual_seed(2)
    model = kata.deep_relu_mlp(256, 256, 32)
    h = torch.randn(64, 256)
    rms = []
    with torch.no_grad():
        for module in model:
            h = module(h)
            if isinstance(module, nn.ReLU):
                rms.append(h.pow(2).mean().sqrt().item())
    ratio = rms[-1] / rms[0]
    assert 1 / 8 < ratio < 8, (
        f"deep_relu_mlp(256, 256, 32): the root mean square of the last ReLU's output is {ratio:.3g} times "
        f"the first's (rms per layer: {', '.join(f'{r:.3g}' for r in rms[::4])}, ...); with He init it stays "
        f"within a factor 8 (see the docstring of this test file). Likely cause: a gain of 1 (halves the "
        f"mean square every layer: vanishes) or 2 (explodes), or fan_out/fan_in mixed up"
    )


def test_deep_relu_mlp_draws_from_the_global_rng() -> None:
    torch.manual_seed(3)
    a = kata.deep_relu_mlp(8, 8, 2)
    torch.manual_seed(3)
    b = kata.deep_relu_mlp(8, 8, 2)
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), (
            f"deep_relu_mlp after the same torch.manual_seed should build the same {name}; likely cause: "
            f"randomness from somewhere other than torch's global RNG"
        )
