"""Grader for k08_loss_functions: stable cross-entropy and BCE from logits, focal loss, and loss_for.

Oracles: the loss formulas evaluated here in float64 (with the max subtracted before exponentiating),
torch's built-in losses, and a focal loss written out from Lin et al.'s formula. "Enforced, not trusted":
the hand-written losses are run under a recorder of torch calls.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from kata_harness import load_kata
from kata_harness.testing import assert_close, record_torch_calls

kata = load_kata("k08_loss_functions")

# ---------------------------------------------------------------- float64 oracles


def _ce_reference(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean of logsumexp(z) - z_y, in float64 with the log-sum-exp trick written out."""
    z = logits.detach().double()
    m = z.max(dim=1, keepdim=True).values
    lse = m.squeeze(1) + torch.log(torch.exp(z - m).sum(dim=1))
    return (lse - z[torch.arange(z.shape[0]), targets]).mean()


def _bce_elementwise(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-(t log p + (1 - t) log(1 - p)) with log p = -log(1 + e^-x), log(1 - p) = -log(1 + e^x), in float64."""
    x, t = logits.double(), targets.double()

    def log1p_exp(v: torch.Tensor) -> torch.Tensor:  # log(1 + e^v) = max(v, 0) + log(1 + e^-|v|)
        return torch.where(v > 0, v, torch.zeros_like(v)) + torch.log1p(torch.exp(-v.abs()))

    return t * log1p_exp(-x) + (1 - t) * log1p_exp(x)


def _focal_reference(logits, targets, gamma: float, alpha: float | None, reduction: str) -> torch.Tensor:
    """Lin et al. (2017), term by term, in float64; differentiable when `logits` requires grad."""
    x, t = logits.double(), targets.double()
    p = torch.sigmoid(x)
    p_t = p * t + (1 - p) * (1 - t)
    loss = _bce_elementwise(x, t) * (1 - p_t) ** gamma
    if alpha is not None:
        loss = loss * (alpha * t + (1 - alpha) * (1 - t))
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


def _forbidden(calls: list[str]) -> list[str]:
    """The recorded calls that the rule for cross_entropy / bce_with_logits forbids."""
    banned = ("softmax", "loss", "cross_entropy", "nll", "kl_div")
    return sorted({c for c in calls if c.startswith("torch.nn.functional.") or any(b in c for b in banned)})


def _logits_and_classes(n: int, c: int, scale: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=gen) * scale, torch.randint(0, c, (n,), generator=gen)


def _binary_batch(shape: tuple[int, ...], scale: float, seed: int, soft: bool):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=gen) * scale
    targets = torch.rand(shape, generator=gen) if soft else torch.randint(0, 2, shape, generator=gen).float()
    return logits, targets


# Rows mixing huge, large and ordinary logits; the true class is sometimes the largest, sometimes not.
HUGE_LOGITS = [
    [1e4, -1e4, 0.0],
    [-1e4, 1e4, 1e4],
    [0.0, 0.0, 1e4],
    [100.0, -100.0, 3.0],
    [-100.0, -100.0, -100.0],
    [1e4, 1e4 - 1.0, -1e4],
]
HUGE_TARGETS = [1, 0, 2, 1, 0, 1]
EXTREME_BINARY = [1e4, -1e4, 100.0, -100.0, 1e4, -1e4, 100.0, -100.0, 30.0, -30.0]
EXTREME_TARGETS = [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.25, 0.75]

# ---------------------------------------------------------------- cross_entropy


@settings(max_examples=25)
@given(
    n=st.integers(1, 5),
    c=st.integers(1, 6),
    scale=st.sampled_from([0.1, 1.0, 5.0]),
    seed=st.integers(0, 2**16),
)
def test_cross_entropy_matches_reference(n: int, c: int, scale: float, seed: int) -> None:
    logits, targets = _logits_and_classes(n, c, scale, seed)
    got = kata.cross_entropy(logits, targets)
    cause = (
        "per row the loss is logsumexp(logits[i]) - logits[i, targets[i]] (the logsumexp runs over the "
        "classes, dim=1), and the result is the MEAN over rows, not the sum"
    )
    assert_close(
        got,
        _ce_reference(logits, targets).float(),
        rtol=1e-5,
        atol=1e-6,
        what=f"cross_entropy on ({n}, {c}) logits",
        likely_cause=cause,
    )
    assert_close(
        got,
        F.cross_entropy(logits, targets),
        rtol=1e-5,
        atol=1e-6,
        what=f"cross_entropy vs nn.CrossEntropyLoss on ({n}, {c}) logits",
        likely_cause=cause,
    )


def test_cross_entropy_large_logits(device: torch.device) -> None:
    logits = torch.tensor(HUGE_LOGITS, device=device)
    targets = torch.tensor(HUGE_TARGETS, device=device)
    got = kata.cross_entropy(logits, targets)
    assert torch.isfinite(got).all(), (
        f"cross_entropy returned {got.item()} for logits up to +-1e4; likely cause: exp(1e4) overflows "
        f"to inf (softmax then log, or log(sum(exp(z)))). Subtract the row max first (the log-sum-exp "
        f"trick), or use torch.logsumexp"
    )
    assert_close(
        got.cpu(),
        _ce_reference(logits.cpu(), targets.cpu()).float(),
        rtol=1e-6,
        atol=1e-3,
        what="cross_entropy with logits up to +-1e4 (a ~1e4 loss must come out as ~1e4)",
        likely_cause="the probability was formed before the log, so an underflowed 0 got clamped; "
        "stay in log space: logsumexp(z) - z_y",
    )


def test_cross_entropy_returns_scalar_like_logits() -> None:
    for dtype in (torch.float32, torch.float64):
        logits, targets = _logits_and_classes(4, 3, 1.0, 0)
        got = kata.cross_entropy(logits.to(dtype), targets)
        assert isinstance(got, torch.Tensor) and got.shape == () and got.dtype == dtype, (
            f"cross_entropy on {dtype} logits should return a 0-dim {dtype} tensor, got "
            f"{type(got).__name__} {getattr(got, 'shape', '')} {getattr(got, 'dtype', '')}; likely cause: a "
            f"missing .mean(), a Python float (.item()), or a tensor built with a fixed dtype"
        )


def test_cross_entropy_gradient() -> None:
    logits, targets = _logits_and_classes(5, 4, 2.0, 3)
    logits.requires_grad_()
    loss = kata.cross_entropy(logits, targets)
    assert isinstance(loss, torch.Tensor) and loss.requires_grad, (
        "cross_entropy's result should be differentiable w.r.t. logits (requires_grad True), got "
        f"{loss!r}; likely cause: .item(), .detach(), torch.tensor(...) or NumPy somewhere in the computation"
    )
    loss.backward()
    z = logits.detach().double()
    expected = (torch.softmax(z, dim=1) - F.one_hot(targets, 4).double()) / 5
    assert_close(
        logits.grad,
        expected.float(),
        rtol=1e-5,
        atol=1e-6,
        what="d cross_entropy / d logits, which should be (softmax(logits) - one_hot(targets)) / N",
        likely_cause="part of the computation was detached from the graph (e.g. logits.detach() in "
        "the logsumexp term); subtracting a DETACHED max is fine, detaching logits is not",
    )


def test_cross_entropy_avoids_builtin_softmax_and_losses() -> None:
    logits, targets = _logits_and_classes(6, 5, 3.0, 1)
    with record_torch_calls() as calls:
        got = kata.cross_entropy(logits, targets)
    assert_close(
        got,
        _ce_reference(logits, targets).float(),
        rtol=1e-5,
        atol=1e-6,
        what="cross_entropy",
        likely_cause="see test_cross_entropy_matches_reference",
    )
    bad = _forbidden(calls)
    assert not bad, (
        f"cross_entropy called {bad}; the point of this task is to write the stable computation yourself. "
        f"Allowed: elementary ops (max, exp, log, sum, gather, indexing, mean) and torch.logsumexp; not "
        f"allowed: torch.nn.functional, softmax / log_softmax in any spelling, torch's loss functions"
    )


# ---------------------------------------------------------------- bce_with_logits


@settings(max_examples=25)
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple),
    scale=st.sampled_from([0.1, 1.0, 8.0]),
    soft=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_bce_with_logits_matches_reference(
    shape: tuple[int, ...], scale: float, soft: bool, seed: int
) -> None:
    logits, targets = _binary_batch(shape, scale, seed, soft)
    got = kata.bce_with_logits(logits, targets)
    cause = (
        "each element is max(x, 0) - x*t + log(1 + exp(-|x|)), i.e. -(t log p + (1-t) log(1-p)); check "
        "the sign, which of t and 1-t goes with which term, and that the mean runs over ALL elements"
    )
    assert_close(
        got,
        _bce_elementwise(logits, targets).mean().float(),
        rtol=1e-5,
        atol=1e-6,
        what=f"bce_with_logits on shape {shape}",
        likely_cause=cause,
    )
    assert_close(
        got,
        F.binary_cross_entropy_with_logits(logits, targets),
        rtol=1e-5,
        atol=1e-6,
        what=f"bce_with_logits vs nn.BCEWithLogitsLoss on shape {shape}",
        likely_cause=cause,
    )


def test_bce_with_logits_large_logits(device: torch.device) -> None:
    logits = torch.tensor(EXTREME_BINARY, device=device)
    targets = torch.tensor(EXTREME_TARGETS, device=device)
    got = kata.bce_with_logits(logits, targets)
    assert torch.isfinite(got).all(), (
        f"bce_with_logits returned {got.item()} for logits up to +-1e4; likely cause: sigmoid then log "
        f"(sigmoid(1e4) is exactly 1.0, log(1 - 1.0) = -inf) or log(1 + exp(x)) with exp(1e4) = inf. Use "
        f"max(x, 0) - x*t + log1p(exp(-|x|)), whose exponent is never positive"
    )
    assert_close(
        got.cpu(),
        _bce_elementwise(logits.cpu(), targets.cpu()).mean().float(),
        rtol=1e-6,
        atol=1e-3,
        what="bce_with_logits with logits up to +-1e4 (a confidently wrong 1e4 logit "
        "costs ~1e4, not log(1/eps))",
        likely_cause="probabilities were clamped to [eps, 1 - eps] before the log, which caps each "
        "element's loss; compute from the logit instead",
    )


def test_bce_with_logits_returns_scalar_like_logits() -> None:
    for dtype in (torch.float32, torch.float64):
        logits, targets = _binary_batch((3, 2), 1.0, 0, soft=True)
        got = kata.bce_with_logits(logits.to(dtype), targets.to(dtype))
        assert isinstance(got, torch.Tensor) and got.shape == () and got.dtype == dtype, (
            f"bce_with_logits on {dtype} inputs should return a 0-dim {dtype} tensor, got "
            f"{type(got).__name__} {getattr(got, 'shape', '')} {getattr(got, 'dtype', '')}; likely cause: a "
            f"missing .mean(), or a Python float (.item())"
        )


def test_bce_with_logits_gradient() -> None:
    logits = torch.tensor([*EXTREME_BINARY, 0.5, -2.0, 3.0, -0.01])
    targets = torch.tensor([*EXTREME_TARGETS, 1.0, 0.0, 0.3, 1.0])
    logits.requires_grad_()
    loss = kata.bce_with_logits(logits, targets)
    assert isinstance(loss, torch.Tensor) and loss.requires_grad, (
        f"bce_with_logits's result should be differentiable w.r.t. logits, got {loss!r}; likely cause: "
        f".item(), .detach() or torch.tensor(...) in the computation"
    )
    loss.backward()
    assert torch.isfinite(logits.grad).all(), (
        f"the gradient of bce_with_logits is not finite at logits +-1e4: {logits.grad.tolist()}; likely "
        f"cause: torch.where picking between a safe and an overflowing branch. where() drops the unused "
        f"branch's VALUE, but backward still multiplies 0 by its inf gradient, giving nan"
    )
    expected = (torch.sigmoid(logits.detach().double()) - targets.double()) / logits.numel()
    assert_close(
        logits.grad,
        expected.float(),
        rtol=1e-5,
        atol=1e-7,
        what="d bce_with_logits / d logits, which should be (sigmoid(x) - t) / numel",
        likely_cause="part of the computation is detached, or the loss is not the mean",
    )


def test_bce_with_logits_avoids_functional_and_losses() -> None:
    logits, targets = _binary_batch((4, 3), 3.0, 2, soft=True)
    with record_torch_calls() as calls:
        got = kata.bce_with_logits(logits, targets)
    assert_close(
        got,
        _bce_elementwise(logits, targets).mean().float(),
        rtol=1e-5,
        atol=1e-6,
        what="bce_with_logits",
        likely_cause="see test_bce_with_logits_matches_reference",
    )
    bad = _forbidden(calls)
    assert not bad, (
        f"bce_with_logits called {bad}; write the stable formula yourself from elementary ops (clamp or "
        f"maximum, abs, exp, log1p, mean). torch.nn.functional (softplus, logsigmoid, ...) and torch's loss "
        f"functions are off limits here"
    )


# ---------------------------------------------------------------- focal_loss


@settings(max_examples=30)
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=2).map(tuple),
    gamma=st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0]),
    alpha=st.sampled_from([None, 0.0, 0.25, 0.9]),
    seed=st.integers(0, 2**16),
)
def test_focal_loss_matches_reference(shape, gamma: float, alpha: float | None, seed: int) -> None:
    logits, targets = _binary_batch(shape, 3.0, seed, soft=False)
    got = kata.focal_loss(logits, targets, gamma=gamma, alpha=alpha, reduction="none")
    assert_close(
        got,
        _focal_reference(logits, targets, gamma, alpha, "none").float(),
        rtol=1e-5,
        atol=1e-6,
        what=f"focal_loss(gamma={gamma}, alpha={alpha}, reduction='none') on shape {shape}",
        likely_cause="loss = alpha_t * (1 - p_t)**gamma * ce, with p_t = p*t + (1-p)*(1-t) and "
        "alpha_t = alpha*t + (1-alpha)*(1-t); see the more specific focal tests for which part",
    )


def test_focal_loss_modulating_factor_uses_p_t() -> None:
    logits = torch.tensor([3.0, -3.0, 0.5, -0.5, 2.0, -2.0])
    targets = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])  # easy, easy, fairly easy x2, hard, hard
    got = kata.focal_loss(logits, targets, gamma=2.0, alpha=None, reduction="none")
    assert_close(
        got,
        _focal_reference(logits, targets, 2.0, None, "none").float(),
        rtol=1e-5,
        atol=1e-6,
        what="focal_loss(gamma=2, alpha=None, reduction='none'); targets 1 and 0, easy and hard",
        likely_cause="the factor is (1 - p_t)**gamma where p_t is the probability of the TRUE label "
        "(p when t = 1, 1 - p when t = 0); (1 - p)**gamma only works for positives, and p_t**gamma "
        "would up-weight the easy examples",
    )


def test_focal_loss_alpha_weights_positives_and_negatives() -> None:
    logits = torch.tensor([1.5, -0.5, 0.3, -2.0])
    targets = torch.tensor([1.0, 1.0, 0.0, 0.0])
    for alpha in (0.25, 0.8, 0.0):
        got = kata.focal_loss(logits, targets, gamma=0.0, alpha=alpha, reduction="none")
        assert_close(
            got,
            _focal_reference(logits, targets, 0.0, alpha, "none").float(),
            rtol=1e-5,
            atol=1e-6,
            what=f"focal_loss(gamma=0, alpha={alpha}, reduction='none'), targets [1, 1, 0, 0]",
            likely_cause="positives (t = 1) are weighted by alpha and negatives by 1 - alpha, not "
            "the other way round and not alpha for all; alpha = 0.0 is a real weight (test "
            "`alpha is None`, not `if alpha:`)",
        )


def test_focal_loss_gamma_zero_alpha_none_is_bce() -> None:
    logits, targets = _binary_batch((3, 4), 2.0, 5, soft=False)
    for reduction in ("none", "mean", "sum"):
        got = kata.focal_loss(logits, targets, gamma=0.0, alpha=None, reduction=reduction)
        expected = F.binary_cross_entropy_with_logits(logits, targets, reduction=reduction)
        oracle = _focal_reference(logits, targets, 0.0, None, reduction).float()
        assert torch.allclose(oracle, expected, rtol=1e-6, atol=1e-6), (
            "grader bug: the focal oracle is not BCE"
        )
        assert_close(
            got,
            expected,
            rtol=1e-5,
            atol=1e-6,
            what=f"focal_loss(gamma=0, alpha=None, reduction={reduction!r}) vs nn.BCEWithLogitsLoss",
            likely_cause="with gamma = 0 the modulating factor is 1 and alpha=None means no class "
            "weighting at all, so focal loss must reduce to plain BCE",
        )


def test_focal_loss_reductions() -> None:
    logits, targets = _binary_batch((2, 5), 2.0, 7, soft=False)
    for dtype in (torch.float32, torch.float64):
        x, t = logits.to(dtype), targets.to(dtype)
        for reduction in ("none", "mean", "sum"):
            got = kata.focal_loss(x, t, gamma=2.0, alpha=0.25, reduction=reduction)
            expected = _focal_reference(x, t, 2.0, 0.25, reduction).to(dtype)
            assert isinstance(got, torch.Tensor) and got.shape == expected.shape and got.dtype == dtype, (
                f"focal_loss(reduction={reduction!r}) on {dtype} inputs of shape (2, 5) should return a "
                f"{dtype} tensor of shape {tuple(expected.shape)}, got {type(got).__name__} "
                f"{getattr(got, 'shape', '')} {getattr(got, 'dtype', '')}"
            )
            assert_close(
                got,
                expected,
                rtol=1e-5,
                atol=1e-6,
                what=f"focal_loss(reduction={reduction!r})",
                likely_cause="'none' keeps every element, 'mean' averages them, 'sum' adds them; "
                "check that each reduction goes to its own branch",
            )


def test_focal_loss_rejects_unknown_reduction() -> None:
    logits, targets = _binary_batch((4,), 1.0, 0, soft=False)
    got = kata.focal_loss(logits, targets, reduction="sum")
    assert_close(
        got,
        _focal_reference(logits, targets, 2.0, 0.25, "sum").float(),
        rtol=1e-5,
        atol=1e-6,
        what="focal_loss(reduction='sum') with the default gamma=2, alpha=0.25",
    )
    for bad in ("avg", "elementwise_mean", "", "batchmean"):
        try:
            result = kata.focal_loss(logits, targets, reduction=bad)
        except ValueError:
            continue
        except NotImplementedError:
            raise
        except Exception as exc:
            raise AssertionError(
                f"focal_loss(reduction={bad!r}) raised {type(exc).__name__}({exc}); expected ValueError. "
                f"Likely cause: looking the reduction up in a dict without checking it first"
            ) from exc
        raise AssertionError(
            f"focal_loss(reduction={bad!r}) returned {result!r}; expected ValueError. Likely cause: an "
            f"`else` branch that quietly treats unknown reductions as one of the valid ones"
        )


def test_focal_loss_extreme_logits_finite(device: torch.device) -> None:
    logits = torch.tensor([100.0, -100.0, 100.0, -100.0, 60.0, -60.0], device=device)
    targets = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 1.0], device=device)
    for gamma in (0.0, 2.0):
        got = kata.focal_loss(logits, targets, gamma=gamma, alpha=0.25, reduction="none")
        assert torch.isfinite(got).all(), (
            f"focal_loss(gamma={gamma}) at logits +-100 gave {got.tolist()}; likely cause: ce computed as "
            f"-log(sigmoid(x)) or -log(1 - sigmoid(x)), which is log(0) there; use the stable "
            f"max(x, 0) - x*t + log1p(exp(-|x|)) form (or F.binary_cross_entropy_with_logits)"
        )
        assert_close(
            got.cpu(),
            _focal_reference(logits.cpu(), targets.cpu(), gamma, 0.25, "none").float(),
            rtol=1e-5,
            atol=1e-6,
            what=f"focal_loss(gamma={gamma}, alpha=0.25) at logits +-100",
            likely_cause="a confidently wrong logit of 100 has ce = 100: probabilities clamped to "
            "[eps, 1 - eps] before the log cap it",
        )


def test_focal_loss_extreme_logits_gradients_finite() -> None:
    targets = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    for gamma in (1.0, 2.0, 3.5):
        logits = torch.tensor([100.0, -100.0, 100.0, -100.0, 0.7, -1.3], requires_grad=True)
        kata.focal_loss(logits, targets, gamma=gamma, alpha=0.25, reduction="sum").backward()
        assert logits.grad is not None and torch.isfinite(logits.grad).all(), (
            f"focal_loss(gamma={gamma}) at logits +-100 has gradient "
            f"{None if logits.grad is None else logits.grad.tolist()}; it must be finite for gamma >= 1. "
            f"Likely cause: a hand-written sigmoid 1 / (1 + exp(-x)) (exp(100) = inf gives 0 * inf = nan in "
            f"backward), or torch.where choosing between an overflowing and a safe branch. Use torch.sigmoid"
        )
        reference = torch.tensor(logits.detach().tolist(), dtype=torch.float64, requires_grad=True)
        _focal_reference(reference, targets, gamma, 0.25, "sum").backward()
        assert_close(
            logits.grad,
            reference.grad.float(),
            rtol=1e-4,
            atol=1e-6,
            what=f"d focal_loss(gamma={gamma}, alpha=0.25, reduction='sum') / d logits",
            likely_cause="part of the computation is detached (for example p_t computed under "
            "no_grad or from .detach()), so its gradient contribution is missing",
        )


# ---------------------------------------------------------------- FocalLoss


def _call_module(make, logits, targets):
    """make()(logits, targets); an AttributeError from nn.Module's internals is explained."""
    try:
        module = make()
        return module, module(logits, targets)
    except AttributeError as exc:
        raise AssertionError(
            f"building or calling FocalLoss raised AttributeError: {exc}; likely cause: __init__ does not "
            f"call super().__init__() before storing its settings, so nn.Module's machinery is missing"
        ) from exc


def test_focal_loss_module_forward_uses_settings() -> None:
    logits, targets = _binary_batch((3, 3), 2.0, 11, soft=False)
    for gamma, alpha, reduction in [(1.5, 0.6, "sum"), (0.0, None, "none"), (3.0, 0.1, "mean")]:
        module, got = _call_module(
            lambda g=gamma, a=alpha, r=reduction: kata.FocalLoss(gamma=g, alpha=a, reduction=r),
            logits,
            targets,
        )
        assert isinstance(module, nn.Module), f"FocalLoss should be an nn.Module, got {type(module).__mro__}"
        assert_close(
            got,
            _focal_reference(logits, targets, gamma, alpha, reduction).float(),
            rtol=1e-5,
            atol=1e-6,
            what=f"FocalLoss(gamma={gamma}, alpha={alpha}, reduction={reduction!r})",
            likely_cause="forward should call focal_loss with the settings stored in __init__, "
            "not with focal_loss's defaults",
        )


def test_focal_loss_module_defaults() -> None:
    logits, targets = _binary_batch((6,), 2.0, 13, soft=False)
    _, got = _call_module(lambda: kata.FocalLoss(), logits, targets)
    assert_close(
        got,
        _focal_reference(logits, targets, 2.0, 0.25, "mean").float(),
        rtol=1e-5,
        atol=1e-6,
        what="FocalLoss() with its defaults gamma=2.0, alpha=0.25, reduction='mean'",
        likely_cause="a default in FocalLoss.__init__'s signature differs from the contract",
    )


def test_focal_loss_module_rejects_unknown_reduction() -> None:
    logits, targets = _binary_batch((5,), 1.0, 17, soft=False)
    got = kata.FocalLoss(reduction="none")(logits, targets)
    assert isinstance(got, torch.Tensor) and got.shape == (5,), (
        f"FocalLoss(reduction='none') should return one loss per element, shape (5,), got {got!r}"
    )
    try:
        module = kata.FocalLoss(reduction="avg")
    except ValueError:
        return  # rejected in __init__: the earliest and friendliest place
    try:
        result = module(logits, targets)
    except ValueError:
        return
    except NotImplementedError:
        raise
    except Exception as exc:
        raise AssertionError(
            f"FocalLoss(reduction='avg')(logits, targets) raised {type(exc).__name__}({exc}), expected "
            f"ValueError (in __init__, or at the latest on the first call)"
        ) from exc
    raise AssertionError(
        f"FocalLoss(reduction='avg') neither raised ValueError when built nor when called (it returned "
        f"{result!r}); likely cause: forward ignores self.reduction, or an `else` branch accepts anything"
    )


# ---------------------------------------------------------------- loss_for


def test_loss_for_returns_standard_modules() -> None:
    expected = {
        "multiclass": nn.CrossEntropyLoss,
        "binary": nn.BCEWithLogitsLoss,
        "regression": nn.MSELoss,
        "robust_regression": nn.L1Loss,
    }
    for task, cls in expected.items():
        got = kata.loss_for(task)
        assert type(got) is cls, (
            f"loss_for({task!r}) should return nn.{cls.__name__}, got {type(got).__name__}; likely cause: "
            + (
                "nn.BCELoss expects probabilities; a model emitting logits needs BCEWithLogitsLoss"
                if task == "binary"
                else "the wrong loss for this task (robust regression is L1, which grows linearly with "
                "the error and so is less swayed by outliers than MSE)"
            )
        )
        assert kata.loss_for(task) is not got, (
            f"loss_for({task!r}) returned the same object twice; it should build a new module per call"
        )


def test_loss_for_default_settings() -> None:
    x, classes = _logits_and_classes(5, 3, 2.0, 19)
    binary_targets = torch.randint(0, 2, (5, 3)).float()
    real_targets = torch.randn(5, 3)
    checks = [
        ("multiclass", nn.CrossEntropyLoss(), classes),
        ("binary", nn.BCEWithLogitsLoss(), binary_targets),
        ("regression", nn.MSELoss(), real_targets),
        ("robust_regression", nn.L1Loss(), real_targets),
    ]
    for task, reference, targets in checks:
        got = kata.loss_for(task)
        assert_close(
            got(x, targets),
            reference(x, targets),
            rtol=1e-6,
            atol=1e-6,
            what=f"loss_for({task!r}) applied to a batch vs nn.{type(reference).__name__}()",
            likely_cause="a setting changed from torch's default (reduction, weight, pos_weight, "
            "label_smoothing, ...): the contract asks for default settings",
        )


def test_loss_for_unknown_task_raises() -> None:
    assert type(kata.loss_for("regression")) is nn.MSELoss, "loss_for('regression') should return nn.MSELoss"
    for bad in ("classification", "Binary", "MULTICLASS", "mse", ""):
        try:
            result = kata.loss_for(bad)
        except ValueError:
            continue
        except NotImplementedError:
            raise
        except Exception as exc:
            raise AssertionError(
                f"loss_for({bad!r}) raised {type(exc).__name__}({exc}), expected ValueError; likely cause: a "
                f"dict lookup whose KeyError escapes"
            ) from exc
        raise AssertionError(
            f"loss_for({bad!r}) returned {result!r}; expected ValueError (task names are exact and "
            f"lower-case); likely cause: falling through without raising, or lower-casing the name"
        )
