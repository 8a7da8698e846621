"""Grader for k08_loss_functions: torch's cross-entropy (layout, class weights, ignore_index, label smoothing)
and BCE with pos_weight written stably from logits, and focal loss.

Oracles: torch's own F.cross_entropy and F.binary_cross_entropy_with_logits evaluated in float64, the loss
formulas evaluated here in float64 (with the max subtracted before exponentiating, and log(1 + e^x) as
torch.logaddexp, which has no kink for autograd to mis-differentiate at x = 0), a focal loss written out from
Lin et al.'s formula, and gradients in closed form. A wrong cross-entropy or pos_weight value is matched
against the plausible wrong versions (divided by the count instead of the weights, s / (C - 1) smoothing,
classes on the last dim, ...) so that the message names the bug. Gradients are tested at logits of exactly 0
(what a zero-initialised head produces), where spellings of max(x, 0) with the same values differ in
autograd. "Enforced, not trusted": the hand-written losses are run under a recorder of torch calls. Device
handling is checked on the `meta` device, so it runs on any machine.
"""

from __future__ import annotations

import pytest
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


def _log1p_exp(v: torch.Tensor) -> torch.Tensor:
    """log(1 + e^v) = logaddexp(0, v): exact for any v, and its autograd derivative is sigmoid(v) at every v.

    (max(v, 0) + log1p(exp(-|v|)) has the same values, but spelled with where/clamp/relu its autograd
    derivative at v = 0 is 0 or 1 instead of 1/2.)"""
    return torch.logaddexp(torch.zeros_like(v), v)


def _bce_elementwise(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-(t log p + (1 - t) log(1 - p)) with log p = -log(1 + e^-x), log(1 - p) = -log(1 + e^x), in float64."""
    x, t = logits.double(), targets.double()
    return t * _log1p_exp(-x) + (1 - t) * _log1p_exp(x)


def _focal_reference(logits, targets, gamma: float, alpha: float | None, reduction: str) -> torch.Tensor:
    """Lin et al. (2017), term by term, in float64; differentiable when `logits` requires grad."""
    x, t = logits.double(), targets.double()
    p = torch.sigmoid(x)
    p_t = p * t + (1 - p) * (1 - t)
    loss = _bce_elementwise(x, t) * (1 - p_t) ** gamma
    if alpha is not None:
        loss = loss * (alpha * t + (1 - alpha) * (1 - t))
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


def _focal_grad_reference(logits, targets, gamma: float, alpha: float | None, reduction: str) -> torch.Tensor:
    """d focal_loss / d logits in closed form, float64, for targets 0 or 1 and reduction "sum" or "mean".

    With s = 2t - 1, z = s*x, p_t = sigmoid(z), q = 1 - p_t = sigmoid(-z) and ce = log(1 + e^-z):
    d/dz [alpha_t * q**gamma * ce] = -alpha_t * (gamma * p_t * q**gamma * ce + q**(gamma + 1)), and dx = s dz.
    """
    x, t = logits.detach().double(), targets.detach().double()
    s = 2 * t - 1
    z = s * x
    p_t, q = torch.sigmoid(z), torch.sigmoid(-z)
    alpha_t = 1.0 if alpha is None else alpha * t + (1 - alpha) * (1 - t)
    grad = -s * alpha_t * (gamma * p_t * q**gamma * _log1p_exp(-z) + q ** (gamma + 1))
    return {"sum": grad, "mean": grad / x.numel()}[reduction]


KINK_CAUSE = (
    "the gradient is wrong only at logits of exactly 0, where max(x, 0) has a kink. The loss VALUES are "
    "right, but autograd differentiates the expression you wrote: x.clamp(min=0) and torch.where(x >= 0, "
    "...) take slope 1 at 0, torch.relu and torch.where(x > 0, ...) slope 0, while the derivative of the "
    "loss there is sigmoid(0) - t = 1/2 - t. Spell max(x, 0) as torch.maximum(x, zero) (a tie passes half "
    "the gradient to each side), or log(1 + e^x) as torch.logaddexp(zero, x), which is smooth"
)


def _gradient_cause(got, expected: torch.Tensor, logits: torch.Tensor, otherwise: str) -> str:
    """KINK_CAUSE when `got` differs from `expected` only where the logit is exactly 0, else `otherwise`."""
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return otherwise
    bad = ~torch.isclose(got.detach().double(), expected.double(), rtol=1e-4, atol=1e-7)
    if bool(bad.any()) and bool((logits.detach()[bad] == 0).all()):
        return KINK_CAUSE
    return otherwise


def _zero_head(n_in: int, n_out: int, batch: int, seed: int) -> tuple[nn.Linear, torch.Tensor]:
    """A freshly initialised output layer set to zero (its first logits are all exactly 0) and a batch."""
    head = nn.Linear(n_in, n_out)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head, torch.randn(batch, n_in, generator=torch.Generator().manual_seed(seed))


def _assert_head_grads(head: nn.Linear, features, d_logits: torch.Tensor, logits, what: str, cause: str):
    """head.weight.grad and head.bias.grad against those implied by d loss / d logits (float64)."""
    for name, got, expected in [
        ("bias", head.bias.grad, d_logits.sum(0)),
        ("weight", head.weight.grad, d_logits.T @ features.double()),
    ]:
        assert got is not None, (
            f"{what}: the head's {name}.grad is None after backward(); likely cause: the loss was "
            f"computed from detached logits or under torch.no_grad(), so no gradient reached the head"
        )
        assert_close(
            got,
            expected.float(),
            rtol=1e-5,
            atol=1e-7,
            what=f"{what}: the zero-initialised head's {name}.grad after one backward()",
            likely_cause=_gradient_cause(logits.grad, d_logits, logits, cause),
        )


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


def test_cross_entropy_zero_initialised_head() -> None:
    head, features = _zero_head(5, 4, 6, seed=23)
    targets = torch.tensor([0, 3, 1, 1, 2, 3])
    logits = head(features)  # every logit exactly 0: all classes tie
    logits.retain_grad()
    loss = kata.cross_entropy(logits, targets)
    assert_close(
        loss,
        torch.tensor(4.0).log(),
        rtol=1e-6,
        atol=1e-6,
        what="cross_entropy of a zero-initialised head over 4 classes (uniform softmax: the loss is log 4)",
        likely_cause="with all logits equal every class gets probability 1/C, so each row costs log C; "
        "check the logsumexp and the mean",
    )
    loss.backward()
    d_logits = (torch.full((6, 4), 0.25, dtype=torch.float64) - F.one_hot(targets, 4).double()) / 6
    _assert_head_grads(
        head,
        features,
        d_logits,
        logits,
        "cross_entropy on a zero-initialised head",
        "d loss / d logits is (softmax - one_hot) / N = (1/C - one_hot) / N here; with every logit tied, a "
        "max that is not detached must still cancel out (m + logsumexp(z - m) does not depend on m)",
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


# ------------------------------------------ cross_entropy: layout, weight, ignore_index, label_smoothing


def _ce_torch64(logits, targets, weight=None, ignore_index=-100, label_smoothing=0.0, grad=False):
    """torch's own F.cross_entropy in float64: the value (and, with grad=True, d loss / d logits)."""
    z = logits.detach().double().requires_grad_(grad)
    w = None if weight is None else weight.detach().double()
    value = F.cross_entropy(z, targets, weight=w, ignore_index=ignore_index, label_smoothing=label_smoothing)
    if not grad:
        return value.detach()
    value.backward()
    return value.detach(), z.grad


def _ce_variants(logits, targets, weight=None, ignore_index=-100, label_smoothing=0.0):
    """(description of a learner bug, float64 value of cross-entropy as that bug computes it), lazily.

    Written out from the definition in the kata's docstring (log p = z - logsumexp(z) over dim 1), so that a
    wrong result can be matched to a named bug; the right answer is `_ce_torch64`. A variant that does not
    apply to these inputs raises, and the caller skips it."""
    z = logits.detach().double()
    c = z.shape[1]
    w = torch.ones(c, dtype=torch.float64) if weight is None else weight.detach().double()
    s = label_smoothing
    counts = targets != ignore_index
    safe = torch.where(counts, targets, torch.zeros_like(targets))
    log_p = z - torch.logsumexp(z, dim=1, keepdim=True)
    nll = -log_p.gather(1, safe.unsqueeze(1)).squeeze(1)
    w_y = w[safe] * counts
    class_w = w.reshape(c, *([1] * (z.dim() - 2)))
    smooth = -(log_p * class_w).sum(dim=1) * counts
    right = (1 - s) * w_y * nll + s / c * smooth
    yield (
        "the weighted sum is divided by the number of targets that count instead of by the sum of their "
        "class weights sum_k w[y_k]",
        lambda: right.sum() / counts.sum(),
    )
    yield (
        "the weighted sum is divided by weight.sum() (a sum over classes) instead of by the sum of the "
        "targets' weights sum_k w[y_k]",
        lambda: right.sum() / w.sum(),
    )
    yield (
        "ignored targets still count in the denominator: they drop out of the sum but not out of the count "
        "(a 0/1 mask multiplied in, then .mean())",
        lambda: right.sum() / (w[safe].sum() if weight is not None else counts.numel()),
    )
    yield (
        "the class weights are not used at all",
        lambda: ((1 - s) * nll + s / c * -log_p.sum(dim=1))[counts].mean(),
    )
    yield (
        "ignore_index is not honoured: only -100 (or negative targets) is ignored, whatever "
        "ignore_index says",
        lambda: F.cross_entropy(z, targets, weight=w, label_smoothing=s),
    )
    yield (
        "label smoothing puts s / (C - 1) on the other classes and 1 - s on the true one; torch puts s / C "
        "on every class, the true one included",
        lambda: ((1 - s) * w_y * nll + s / (c - 1) * (smooth - w_y * nll)).sum() / w_y.sum(),
    )
    yield (
        "the smoothing term is weighted by the target's weight w[y] instead of class by class "
        "(sum_c w[c] * -log p[c])",
        lambda: ((1 - s) * w_y * nll + s / c * w_y * -log_p.sum(dim=1)).sum() / w_y.sum(),
    )
    yield (
        "the smoothing term is not weighted by the class weights",
        lambda: ((1 - s) * w_y * nll + s / c * -log_p.sum(dim=1) * counts).sum() / w_y.sum(),
    )
    yield (
        "the smoothing term still counts the ignored targets",
        lambda: ((1 - s) * w_y * nll + s / c * -(log_p * class_w).sum(dim=1)).sum() / w_y.sum(),
    )
    yield (
        "the true-class term is not multiplied by (1 - s)",
        lambda: (w_y * nll + s / c * smooth).sum() / w_y.sum(),
    )
    yield (
        "(N, C, L) logits were reshaped to (-1, C) without moving the class dim last first, which mixes "
        "classes and positions: move dim 1 last (movedim, permute) before reshaping, or work along dim 1",
        lambda: F.cross_entropy(
            z.reshape(-1, c), targets.reshape(-1), weight=w, ignore_index=ignore_index, label_smoothing=s
        ),
    )
    yield (
        "the classes were taken from the LAST dim (logsumexp or gather over dim=-1); torch's class dim is "
        "dim 1, and when L == C the wrong layout raises nothing",
        lambda: F.cross_entropy(
            z.transpose(1, 2), targets, weight=w, ignore_index=ignore_index, label_smoothing=s
        ),
    )


def _ce_cause(got, expected: torch.Tensor, variants, otherwise: str) -> str:
    """The bug whose value `got` matches (and the right answer does not), else `otherwise`."""
    if not isinstance(got, torch.Tensor) or got.shape != ():
        return otherwise
    value = got.detach().double()
    try:
        for bug, compute in variants:
            try:
                wrong = compute().double()
            except Exception:
                continue  # this bug cannot happen with these inputs
            close = torch.isclose(value, wrong, rtol=1e-4, atol=1e-6)
            if (
                wrong.shape == ()
                and bool(close)
                and not bool(torch.isclose(wrong, expected, rtol=1e-4, atol=1e-6))
            ):
                return bug
    except Exception:
        pass  # the variants' own set-up does not apply to these inputs
    return otherwise


def _call(what: str, fn, cause: str):
    """fn(); an exception from the learner's code becomes a failure that says what was called and why."""
    try:
        return fn()
    except (NotImplementedError, AssertionError):
        raise
    except Exception as exc:
        raise AssertionError(f"{what} raised {type(exc).__name__}: {exc}\nLikely cause: {cause}") from exc


OPTIONS_CAUSE = (
    "cross_entropy should accept the keyword-only arguments weight=None, ignore_index=-100 and "
    "label_smoothing=0.0 (the contract's signature), and logits of any (N, C, d1, ..., dk) layout"
)
INDEX_CAUSE = (
    "an ignored target (-100, 255, ...) is not a class, so indexing or gathering with it fails. Point the "
    "ignored targets at any valid class first (torch.where(targets != ignore_index, targets, 0)) and give "
    "them weight 0, or mask them some other way that never uses them as an index"
)


def _check_ce(got, logits, targets, what: str, otherwise: str, **options) -> None:
    """got against torch's float64 cross-entropy with `options`, naming the wrong version it matches."""
    expected = _ce_torch64(logits, targets, **options)
    assert isinstance(got, torch.Tensor) and got.shape == () and got.dtype == logits.dtype, (
        f"{what} should return a 0-dim {logits.dtype} tensor, got {type(got).__name__} "
        f"{tuple(getattr(got, 'shape', ()))} {getattr(got, 'dtype', '')}; likely cause: the result was not "
        f"reduced to one number (a sum over dim 0 only, or a per-position loss left as it is)"
    )
    # float32 logits of size ~10 against a float64 oracle: a handful of roundings of relative size 6e-8
    # per target, so 1e-5 relative (plus 1e-6 absolute for losses near 0) is generous and still tight.
    rtol, atol = 1e-5, 1e-6
    if torch.allclose(got.detach().double(), expected, rtol=rtol, atol=atol):
        return
    assert_close(
        got.detach().double(),
        expected,
        rtol=rtol,
        atol=atol,
        what=what,
        likely_cause=_ce_cause(got, expected, _ce_variants(logits, targets, **options), otherwise),
    )


@pytest.mark.parametrize(
    "shape",
    [(3, 4, 5), (2, 3, 3), (2, 3, 2, 4)],
    ids=["N,C,L", "N,C,L with L == C", "N,C,H,W"],
)
def test_cross_entropy_class_dim_is_dim_1(shape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(53)
    logits = torch.randn(shape, generator=gen) * 2
    targets = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=gen)
    what = f"cross_entropy on {shape} logits (classes in dim 1) and {tuple(targets.shape)} targets"
    got = _call(
        what,
        lambda: kata.cross_entropy(logits, targets),
        "the code assumes (N, C) logits; with (N, C, d1, ...) logits the classes are still dim 1 and every "
        "(n, d1, ...) position is one target: reduce over dim 1 and gather with targets.unsqueeze(1)",
    )
    _check_ce(
        got,
        logits,
        targets,
        what,
        "the class dim is dim 1 and the mean runs over every (n, d1, ..., dk) position, not only over N",
    )


def test_cross_entropy_class_weights_are_a_weighted_mean() -> None:
    logits, _ = _logits_and_classes(8, 4, 2.0, 59)
    targets = torch.tensor([0, 1, 2, 3, 2, 2, 1, 3])
    for weight in (torch.tensor([0.2, 1.0, 3.0, 0.5]), torch.tensor([0.0, 2.0, 1.0, 1.0])):
        what = f"cross_entropy(weight={weight.tolist()}) on (8, 4) logits"
        got = _call(what, lambda w=weight: kata.cross_entropy(logits, targets, weight=w), OPTIONS_CAUSE)
        _check_ce(
            got,
            logits,
            targets,
            what,
            "each target's loss is weighted by the weight of ITS class, w[targets[k]], and the mean is "
            "sum_k w[y_k] * loss_k / sum_k w[y_k]",
            weight=weight,
        )
    weight = torch.tensor([0.2, 1.0, 3.0, 0.5])
    once = kata.cross_entropy(logits, targets, weight=weight)
    scaled = kata.cross_entropy(logits, targets, weight=weight * 10)
    assert_close(
        scaled,
        once,
        rtol=1e-5,
        atol=1e-6,
        what="cross_entropy(weight=10 * w) against cross_entropy(weight=w): a weighted mean does not "
        "change when every weight is multiplied by the same constant",
        likely_cause="the weighted sum is divided by something other than the sum of the targets' weights "
        "(the number of targets, say), so the loss scales with the weights",
    )


@pytest.mark.parametrize(
    "shape, ignore_index",
    [((6, 4), -100), ((2, 3, 2, 3), 255), ((7, 3), 0)],
    ids=["default -100", "255 on (N, C, H, W)", "0, a real class"],
)
def test_cross_entropy_ignore_index(shape: tuple[int, ...], ignore_index: int) -> None:
    gen = torch.Generator().manual_seed(61)
    logits = torch.randn(shape, generator=gen) * 2
    targets = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=gen)
    flat = targets.view(-1)
    flat[::3] = ignore_index  # every third target is padding / void
    flat[1] = 1  # and at least one counts
    options = {} if ignore_index == -100 else {"ignore_index": ignore_index}
    what = f"cross_entropy({', '.join(f'{k}={v}' for k, v in options.items())}) on {shape} logits, with " + (
        f"every third target equal to {ignore_index}"
    )
    got = _call(what, lambda: kata.cross_entropy(logits, targets, **options), INDEX_CAUSE)
    _check_ce(
        got,
        logits,
        targets,
        what,
        "targets equal to ignore_index must count in neither the sum nor the denominator; compare with "
        "ignore_index, not with `< 0`",
        ignore_index=ignore_index,
    )


def test_cross_entropy_ignored_targets_get_no_gradient() -> None:
    gen = torch.Generator().manual_seed(67)
    logits = (torch.randn(3, 4, 5, generator=gen) * 2).requires_grad_()
    targets = torch.randint(0, 4, (3, 5), generator=gen)
    targets[0, 1] = targets[2, 4] = targets[1, 0] = -100
    weight = torch.tensor([0.5, 2.0, 1.0, 1.5])
    loss = _call(
        "cross_entropy(weight=w, label_smoothing=0.2) on (3, 4, 5) logits with three ignored targets",
        lambda: kata.cross_entropy(logits, targets, weight=weight, label_smoothing=0.2),
        INDEX_CAUSE,
    )
    assert isinstance(loss, torch.Tensor) and loss.requires_grad, (
        f"cross_entropy's result should be differentiable w.r.t. logits, got {loss!r}; likely cause: "
        f".item(), .detach() or torch.tensor(...) in the computation"
    )
    loss.backward()
    expected_value, expected = _ce_torch64(logits, targets, weight, -100, 0.2, grad=True)
    ignored = (targets == -100).unsqueeze(1).expand_as(logits)
    assert logits.grad is not None and bool((logits.grad[ignored] == 0).all()), (
        "the logits at ignored positions (target -100) got a gradient: "
        f"{None if logits.grad is None else logits.grad[ignored].tolist()}; an ignored target must not "
        "influence the loss at all. Likely cause: the label-smoothing term (or the log-sum-exp) is not "
        "masked at ignored positions"
    )
    assert_close(
        logits.grad,
        expected.float(),
        rtol=1e-5,
        atol=1e-7,
        what="d cross_entropy(weight=w, label_smoothing=0.2) / d logits on (3, 4, 5) logits with ignored "
        "targets, against torch's own F.cross_entropy in float64",
        likely_cause=_ce_cause(
            loss,
            expected_value,
            _ce_variants(logits, targets, weight, -100, 0.2),
            "part of the computation is detached, or the value is already wrong (see the value tests)",
        ),
    )


def test_cross_entropy_all_targets_ignored_is_nan() -> None:
    logits, _ = _logits_and_classes(4, 3, 1.0, 71)
    targets = torch.full((4,), -100)
    assert torch.isnan(F.cross_entropy(logits, targets)), "grader bug: torch's loss is not nan here"
    got = _call(
        "cross_entropy on a batch whose every target is -100",
        lambda: kata.cross_entropy(logits, targets),
        INDEX_CAUSE,
    )
    assert isinstance(got, torch.Tensor) and got.shape == () and bool(torch.isnan(got)), (
        f"cross_entropy on a batch whose every target is ignored returned {got!r}; the contract (like "
        f"torch) says nan: 0 / 0, nothing counts. Likely cause: the denominator was clamped (or a 0 "
        f"returned) so an all-padding batch trains silently on nothing; keep torch's behaviour"
    )


@pytest.mark.parametrize("weighted", [False, True], ids=["no weight", "with weight"])
def test_cross_entropy_label_smoothing(weighted: bool) -> None:
    logits, targets = _logits_and_classes(6, 4, 2.0, 73)
    weight = torch.tensor([0.3, 1.0, 2.5, 0.8]) if weighted else None
    for smoothing in (0.1, 0.35, 1.0):
        what = (
            f"cross_entropy(label_smoothing={smoothing}{', weight=w' if weighted else ''}) on (6, 4) logits"
        )
        got = _call(
            what,
            lambda s=smoothing: kata.cross_entropy(logits, targets, weight=weight, label_smoothing=s),
            OPTIONS_CAUSE,
        )
        _check_ce(
            got,
            logits,
            targets,
            what,
            "with smoothing s the target distribution is (1 - s) * one_hot(y) + s / C on every class; "
            "with class weights each class's -log p is weighted by its own weight, and the result is "
            "divided by sum_k w[y_k] as without smoothing",
            weight=weight,
            label_smoothing=smoothing,
        )


@settings(max_examples=25)
@given(
    extra=st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple),
    n=st.integers(1, 4),
    c=st.integers(1, 5),
    weighted=st.booleans(),
    ignore_index=st.sampled_from([-100, 0, 255]),
    smoothing=st.sampled_from([0.0, 0.05, 0.3, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_cross_entropy_options_match_torch(
    extra: tuple[int, ...], n: int, c: int, weighted: bool, ignore_index: int, smoothing: float, seed: int
) -> None:
    gen = torch.Generator().manual_seed(seed)
    if c == 1 and ignore_index == 0:
        ignore_index = -100  # with one class, ignoring class 0 would ignore everything
    logits = (torch.randn(n, c, *extra, generator=gen) * 3).requires_grad_()
    targets = torch.randint(0, c, (n, *extra), generator=gen)
    targets = torch.where(torch.rand(targets.shape, generator=gen) < 0.3, ignore_index, targets)
    targets.view(-1)[0] = c - 1 if ignore_index == 0 else 0  # at least one target counts
    weight = torch.rand(c, generator=gen) + 0.1 if weighted else None
    options = {"weight": weight, "ignore_index": ignore_index, "label_smoothing": smoothing}
    what = (
        f"cross_entropy({'weight=w, ' if weighted else ''}ignore_index={ignore_index}, "
        f"label_smoothing={smoothing}) on {tuple(logits.shape)} logits"
    )
    got = _call(what, lambda: kata.cross_entropy(logits, targets, **options), INDEX_CAUSE)
    _check_ce(got, logits.detach(), targets, what, "see the more specific cross_entropy tests", **options)
    assert got.requires_grad, f"{what} is not differentiable w.r.t. logits (requires_grad is False)"
    got.backward()
    _, expected = _ce_torch64(logits, targets, grad=True, **options)
    assert_close(
        logits.grad,
        expected.float(),
        rtol=1e-5,
        atol=1e-7,
        what=f"d {what} / d logits, against torch's own F.cross_entropy in float64",
        likely_cause="part of the computation is detached from logits",
    )


def test_cross_entropy_options_large_logits(device: torch.device) -> None:
    logits = torch.tensor(HUGE_LOGITS, device=device)
    targets = torch.tensor([1, 0, -100, 1, 0, 2], device=device)
    weight = torch.tensor([0.5, 2.0, 1.0], device=device)
    got = kata.cross_entropy(logits, targets, weight=weight, label_smoothing=0.1)
    assert torch.isfinite(got).all(), (
        f"cross_entropy(weight=w, label_smoothing=0.1) returned {got.item()} for logits up to +-1e4; likely "
        f"cause: probabilities formed before the log (softmax, then log) underflow to 0 for the classes the "
        f"smoothing term also charges; take log p = z - logsumexp(z) in log space"
    )
    # The loss is ~1e3 here (smoothing charges 0.1/3 of -log p ~ 2e4 per row): float32 carries it to ~1e-4.
    assert_close(
        got.cpu(),
        _ce_torch64(logits.cpu(), targets.cpu(), weight.cpu(), -100, 0.1).float(),
        rtol=1e-5,
        atol=1e-3,
        what="cross_entropy(weight=w, label_smoothing=0.1) with logits up to +-1e4 and an ignored target",
        likely_cause="stay in log space: log p = z - logsumexp(z), never log(softmax(z))",
    )


def test_cross_entropy_options_avoid_builtin_softmax_and_losses() -> None:
    gen = torch.Generator().manual_seed(79)
    logits = torch.randn(3, 4, 5, generator=gen) * 3
    targets = torch.randint(0, 4, (3, 5), generator=gen)
    targets[1, 2] = 255
    weight = torch.tensor([1.0, 0.5, 2.0, 1.5])
    options = {"weight": weight, "ignore_index": 255, "label_smoothing": 0.15}
    with record_torch_calls() as calls:
        got = _call(
            "cross_entropy(weight=w, ignore_index=255, label_smoothing=0.15)",
            lambda: kata.cross_entropy(logits, targets, **options),
            INDEX_CAUSE,
        )
    _check_ce(
        got, logits, targets, "cross_entropy with every option", "see the more specific tests", **options
    )
    bad = _forbidden(calls)
    assert not bad, (
        f"cross_entropy with weight, ignore_index and label_smoothing called {bad}; write them yourself "
        f"from elementary ops and torch.logsumexp: torch.nn.functional (cross_entropy, nll_loss, one_hot, "
        f"log_softmax, ...) and torch's loss functions are off limits here"
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
    logits = torch.tensor([*EXTREME_BINARY, 0.5, -2.0, 3.0, -0.01, 0.0, 0.0, 0.0])
    targets = torch.tensor([*EXTREME_TARGETS, 1.0, 0.0, 0.3, 1.0, 1.0, 0.0, 0.3])
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
        likely_cause=_gradient_cause(
            logits.grad, expected, logits, "part of the computation is detached, or the loss is not the mean"
        ),
    )


def test_bce_with_logits_gradient_at_zero_logits() -> None:
    targets = torch.tensor([[0.0, 1.0, 0.3], [1.0, 0.0, 0.5]])
    logits = nn.Parameter(torch.zeros(2, 3))  # learnable logits (a Tensor subclass), all exactly 0
    loss = kata.bce_with_logits(logits, targets)
    assert_close(
        loss,
        torch.tensor(2.0).log(),
        rtol=1e-6,
        atol=1e-7,
        what="bce_with_logits at logits 0 (p = 1/2 whatever the target: the loss is log 2)",
    )
    loss.backward()
    expected = (0.5 - targets.double()) / 6
    slope_one, slope_zero = (1 - targets) / 6, -targets / 6
    got = logits.grad
    comparable = isinstance(got, torch.Tensor) and got.shape == targets.shape
    if comparable and torch.allclose(got, slope_one, atol=1e-7):
        cause = "the gradient came out as (1 - t) / numel: slope 1 at the kink; " + KINK_CAUSE
    elif comparable and torch.allclose(got, slope_zero, atol=1e-7):
        cause = "the gradient came out as -t / numel: slope 0 at the kink; " + KINK_CAUSE
    else:
        cause = _gradient_cause(got, expected, logits, "part of the computation is detached")
    assert_close(
        got,
        expected.float(),
        rtol=1e-5,
        atol=1e-7,
        what="d bce_with_logits / d logits at logits exactly 0: (sigmoid(0) - t) / numel = (1/2 - t) / 6",
        likely_cause=cause,
    )


def test_bce_with_logits_zero_initialised_head() -> None:
    head, features = _zero_head(5, 3, 8, seed=29)
    targets = torch.randint(0, 2, (8, 3), generator=torch.Generator().manual_seed(31)).float()
    logits = head(features)  # a zero-initialised head: every first-step logit is exactly 0
    logits.retain_grad()
    kata.bce_with_logits(logits, targets).backward()
    _assert_head_grads(
        head,
        features,
        (0.5 - targets.double()) / logits.numel(),
        logits,
        "bce_with_logits on a zero-initialised head",
        "d loss / d logits should be (sigmoid(0) - t) / numel = (1/2 - t) / numel at the first step",
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
        f"bce_with_logits called {bad}; write the stable formula yourself from elementary ops (maximum, "
        f"abs, exp, log1p, mean, or logaddexp). torch.nn.functional (softplus, logsigmoid, ...) and torch's "
        f"loss functions are off limits here"
    )


# ---------------------------------------------------------------- bce_with_logits: pos_weight


def _bce_pos_weight_elementwise(logits, targets, pos_weight) -> torch.Tensor:
    """-(pw * t * log p + (1 - t) * log(1 - p)) in float64.

    (-log p = log(1 + e^-x) and -log(1 - p) = log(1 + e^x), both as logaddexp.)"""
    x, t, pw = logits.detach().double(), targets.double(), pos_weight.double()
    return pw * t * _log1p_exp(-x) + (1 - t) * _log1p_exp(x)


def _bce_pos_weight_grad(logits, targets, pos_weight) -> torch.Tensor:
    """d mean(...) / d logits in closed form, float64: (sigmoid(x) * (pw * t + 1 - t) - pw * t) / numel."""
    x, t, pw = logits.detach().double(), targets.double(), pos_weight.double()
    return (torch.sigmoid(x) * (pw * t + 1 - t) - pw * t) / x.numel()


def _pos_weight_cause(got, logits, targets, pos_weight) -> str:
    """Which wrong version of the pos_weight loss `got` matches, if any."""
    x, t, pw = logits.detach().double(), targets.double(), pos_weight.double()
    pw = pw.expand(x.shape)
    plain = _bce_elementwise(x, t)
    variants = {
        "pos_weight multiplies the NEGATIVE term (1 - t) * log(1 - p); it weighs the positives, t * log(p)": (
            (1 - t) * pw * _log1p_exp(x) + t * _log1p_exp(-x)
        ).mean(),
        "pos_weight multiplies the whole element's loss (that is BCE's `weight`, not pos_weight)": (
            pw * plain
        ).mean(),
        "the sum is divided by the total weight (a weighted mean, as cross-entropy's class weights are); "
        "BCEWithLogitsLoss with pos_weight takes the plain mean over every element": (
            _bce_pos_weight_elementwise(x, t, pw).sum() / (pw * t + 1 - t).sum()
        ),
        "pos_weight is ignored": plain.mean(),
    }
    if pos_weight.dim() == 1 and x.dim() >= 2 and x.shape[0] == pos_weight.shape[0]:
        variants[
            "pos_weight was applied along dim 0 (one weight per ROW, e.g. pos_weight.view(-1, 1)); it "
            "broadcasts like any tensor, so a (C,) pos_weight weighs the last dim: one weight per label"
        ] = _bce_pos_weight_elementwise(x, t, pos_weight.double().reshape(-1, *([1] * (x.dim() - 1)))).mean()
    expected = _bce_pos_weight_elementwise(x, t, pw).mean()
    return _ce_cause(
        got,
        expected,
        [(bug, lambda v=value: v) for bug, value in variants.items()],
        "each element costs -(pos_weight * t * log p + (1 - t) * log(1 - p)), averaged over every element",
    )


@pytest.mark.parametrize(
    "shape, pw_shape",
    [((5, 3), (3,)), ((4, 4), (4,)), ((2, 3, 4), (4,)), ((2, 3, 4), (3, 1))],
    ids=["(N, C) with (C,)", "square (C, C) with (C,)", "(N, C, L) with (L,)", "(N, C, L) with (C, 1)"],
)
def test_bce_with_logits_pos_weight_matches_torch(shape, pw_shape) -> None:
    logits, targets = _binary_batch(shape, 2.0, 83, soft=True)
    pos_weight = torch.rand(pw_shape, generator=torch.Generator().manual_seed(89)) * 4 + 0.25
    what = f"bce_with_logits(pos_weight of shape {pw_shape}) on {shape} logits"
    got = _call(
        what,
        lambda: kata.bce_with_logits(logits, targets, pos_weight=pos_weight),
        "bce_with_logits should accept a keyword-only pos_weight (default None), a tensor that broadcasts "
        "against the logits like any other tensor",
    )
    expected = _bce_pos_weight_elementwise(logits, targets, pos_weight).mean()
    assert torch.allclose(
        expected.float(),
        F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight),
        rtol=1e-5,
    ), "grader bug: the pos_weight oracle disagrees with torch"
    assert isinstance(got, torch.Tensor) and got.shape == () and got.dtype == logits.dtype, (
        f"{what} should return a 0-dim float32 tensor, got {type(got).__name__} "
        f"{tuple(getattr(got, 'shape', ()))} {getattr(got, 'dtype', '')}"
    )
    # float32 inputs of size ~5 against a float64 oracle: 1e-5 relative covers the roundings of a mean.
    assert_close(
        got.double(),
        expected,
        rtol=1e-5,
        atol=1e-6,
        what=what,
        likely_cause=_pos_weight_cause(got, logits, targets, pos_weight),
    )


def test_bce_with_logits_pos_weight_large_logits(device: torch.device) -> None:
    logits = torch.tensor(EXTREME_BINARY, device=device).reshape(5, 2)
    targets = torch.tensor(EXTREME_TARGETS, device=device).reshape(5, 2)
    pos_weight = torch.tensor([3.0, 0.5], device=device)
    got = kata.bce_with_logits(logits, targets, pos_weight=pos_weight)
    assert torch.isfinite(got).all(), (
        f"bce_with_logits(pos_weight=...) returned {got.item()} for logits up to +-1e4; likely cause: "
        f"log(sigmoid(x)) for the positive term (sigmoid(-1e4) is 0, log(0) = -inf). -log(sigmoid(x)) is "
        f"log(1 + e^-x), which has the same stable form as log(1 + e^x) with x negated"
    )
    assert_close(
        got.cpu().double(),
        _bce_pos_weight_elementwise(logits.cpu(), targets.cpu(), pos_weight.cpu()).mean(),
        rtol=1e-6,
        atol=1e-3,
        what="bce_with_logits(pos_weight=[3, 0.5]) with logits up to +-1e4 (a confidently wrong 1e4 logit "
        "costs ~1e4 times its weight)",
        likely_cause="the positive term's log was formed from a probability, or clamped; compute both "
        "terms from the logit",
    )


def test_bce_with_logits_pos_weight_gradient() -> None:
    logits = torch.tensor([*EXTREME_BINARY, 0.5, -2.0, 0.0, 0.0, 0.0, 0.0]).reshape(4, 4).requires_grad_()
    targets = torch.tensor([*EXTREME_TARGETS, 1.0, 0.0, 1.0, 0.0, 0.3, 1.0]).reshape(4, 4)
    pos_weight = torch.tensor([2.0, 0.5, 5.0, 1.0])
    loss = _call(
        "bce_with_logits(pos_weight=[2, 0.5, 5, 1])",
        lambda: kata.bce_with_logits(logits, targets, pos_weight=pos_weight),
        "bce_with_logits should accept a keyword-only pos_weight (default None)",
    )
    assert isinstance(loss, torch.Tensor) and loss.requires_grad, (
        f"bce_with_logits(pos_weight=...) should be differentiable w.r.t. logits, got {loss!r}"
    )
    loss.backward()
    assert torch.isfinite(logits.grad).all(), (
        f"the gradient of bce_with_logits(pos_weight=...) is not finite at logits +-1e4: "
        f"{logits.grad.tolist()}; likely cause: torch.where between a safe and an overflowing branch (its "
        f"backward multiplies 0 by the other branch's inf gradient)"
    )
    expected = _bce_pos_weight_grad(logits, targets, pos_weight)
    assert_close(
        logits.grad,
        expected.float(),
        rtol=1e-5,
        atol=1e-7,
        what="d bce_with_logits(pos_weight=pw) / d logits, which should be "
        "(sigmoid(x) * (pw * t + 1 - t) - pw * t) / numel, also at logits exactly 0",
        likely_cause=_gradient_cause(
            logits.grad,
            expected,
            logits,
            "part of the computation is detached, or the value is already wrong",
        ),
    )


def test_bce_with_logits_pos_weight_zero_initialised_head() -> None:
    head, features = _zero_head(5, 3, 8, seed=97)
    targets = torch.randint(0, 2, (8, 3), generator=torch.Generator().manual_seed(101)).float()
    pos_weight = torch.tensor([4.0, 1.0, 0.25])
    logits = head(features)  # every first-step logit is exactly 0
    logits.retain_grad()
    _call(
        "bce_with_logits(pos_weight=[4, 1, 0.25]) on a zero-initialised head",
        lambda: kata.bce_with_logits(logits, targets, pos_weight=pos_weight),
        "bce_with_logits should accept a keyword-only pos_weight (default None)",
    ).backward()
    _assert_head_grads(
        head,
        features,
        _bce_pos_weight_grad(logits, targets, pos_weight),
        logits,
        "bce_with_logits(pos_weight=[4, 1, 0.25]) on a zero-initialised head",
        "at logit 0, d loss / d logit is ((pw * t + 1 - t) / 2 - pw * t) / numel",
    )


def test_bce_with_logits_pos_weight_avoids_functional_and_losses() -> None:
    logits, targets = _binary_batch((4, 3), 3.0, 103, soft=True)
    pos_weight = torch.tensor([1.5, 0.2, 3.0])
    with record_torch_calls() as calls:
        got = _call(
            "bce_with_logits(pos_weight=[1.5, 0.2, 3])",
            lambda: kata.bce_with_logits(logits, targets, pos_weight=pos_weight),
            "bce_with_logits should accept a keyword-only pos_weight (default None)",
        )
    assert_close(
        got.double(),
        _bce_pos_weight_elementwise(logits, targets, pos_weight).mean(),
        rtol=1e-5,
        atol=1e-6,
        what="bce_with_logits(pos_weight=[1.5, 0.2, 3])",
        likely_cause=_pos_weight_cause(got, logits, targets, pos_weight),
    )
    bad = _forbidden(calls)
    assert not bad, (
        f"bce_with_logits(pos_weight=...) called {bad}; write the stable formula yourself from elementary "
        f"ops; torch.nn.functional and torch's loss functions are off limits here"
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
    targets = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    for gamma in (1.0, 2.0, 3.5):
        logits = torch.tensor([100.0, -100.0, 100.0, -100.0, 0.7, -1.3, 0.0, 0.0], requires_grad=True)
        kata.focal_loss(logits, targets, gamma=gamma, alpha=0.25, reduction="sum").backward()
        assert logits.grad is not None and torch.isfinite(logits.grad).all(), (
            f"focal_loss(gamma={gamma}) at logits +-100 has gradient "
            f"{None if logits.grad is None else logits.grad.tolist()}; it must be finite for gamma >= 1. "
            f"Likely cause: a hand-written sigmoid 1 / (1 + exp(-x)) (exp(100) = inf gives 0 * inf = nan in "
            f"backward), or torch.where choosing between an overflowing and a safe branch. Use torch.sigmoid"
        )
        expected = _focal_grad_reference(logits, targets, gamma, 0.25, "sum")
        assert_close(
            logits.grad,
            expected.float(),
            rtol=1e-4,
            atol=1e-6,
            what=f"d focal_loss(gamma={gamma}, alpha=0.25, reduction='sum') / d logits",
            likely_cause=_gradient_cause(
                logits.grad,
                expected,
                logits,
                "part of the computation is detached (for example p_t computed under no_grad or from "
                ".detach()), so its gradient contribution is missing",
            ),
        )


def test_focal_loss_gradient_at_zero_logits() -> None:
    targets = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    for gamma, alpha, reduction in [
        (2.0, 0.25, "sum"),
        (0.0, None, "mean"),
        (1.0, 0.9, "mean"),
        (3.0, None, "sum"),
    ]:
        logits = torch.zeros(6, requires_grad=True)  # what a zero-initialised head produces on step one
        expected = _focal_grad_reference(logits, targets, gamma, alpha, reduction)
        oracle = torch.zeros(6, dtype=torch.float64, requires_grad=True)
        _focal_reference(oracle, targets, gamma, alpha, reduction).backward()
        assert torch.allclose(oracle.grad, expected, rtol=1e-12, atol=1e-15), (
            "grader bug: the focal oracle's autograd gradient at 0 disagrees with its closed form"
        )
        kata.focal_loss(logits, targets, gamma=gamma, alpha=alpha, reduction=reduction).backward()
        assert_close(
            logits.grad,
            expected.float(),
            rtol=1e-5,
            atol=1e-7,
            what=f"d focal_loss(gamma={gamma}, alpha={alpha}, reduction={reduction!r}) / d logits at "
            f"logits exactly 0",
            likely_cause=_gradient_cause(
                logits.grad, expected, logits, "part of the computation is detached"
            ),
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


def test_focal_loss_module_holds_no_parameters() -> None:
    module, _ = _call_module(
        lambda: kata.FocalLoss(gamma=1.5, alpha=0.4, reduction="sum"),
        *_binary_batch((3,), 1.0, 37, soft=False),
    )
    params = [name for name, _ in module.named_parameters()]
    assert not params, (
        f"FocalLoss holds parameters {params}; like torch's own loss modules it only remembers its "
        f"settings. Likely cause: gamma or alpha wrapped in nn.Parameter, which an optimizer built from "
        f"the model's and the loss's parameters would then train"
    )


def test_focal_loss_module_zero_initialised_head() -> None:
    head, features = _zero_head(4, 2, 5, seed=41)
    targets = torch.randint(0, 2, (5, 2), generator=torch.Generator().manual_seed(43)).float()
    logits = head(features)
    logits.retain_grad()
    _, loss = _call_module(lambda: kata.FocalLoss(gamma=2.0, alpha=0.25, reduction="mean"), logits, targets)
    assert isinstance(loss, torch.Tensor) and loss.requires_grad, (
        f"FocalLoss()(logits, targets) should be differentiable w.r.t. logits, got {loss!r}; likely cause: "
        f"forward computes under torch.no_grad() or detaches its result"
    )
    loss.backward()
    _assert_head_grads(
        head,
        features,
        _focal_grad_reference(logits, targets, 2.0, 0.25, "mean"),
        logits,
        "FocalLoss(gamma=2, alpha=0.25) on a zero-initialised head",
        "forward should return focal_loss with the stored settings, gradient and all",
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


# ---------------------------------------------------------------- every loss: inputs, .grad, device

# label -> (call(logits, targets, extra), kind of inputs); each loss promises to leave its inputs alone (the
# class weights and pos_weight included) and to follow their device and dtype.
LOSS_CASES = {
    "cross_entropy": (lambda x, t, e: kata.cross_entropy(x, t), "classes"),
    "cross_entropy(weight, ignore_index, label_smoothing) on (N, C, L)": (
        lambda x, t, e: kata.cross_entropy(x, t, weight=e["weight"], ignore_index=-100, label_smoothing=0.1),
        "classes (N, C, L)",
    ),
    "bce_with_logits": (lambda x, t, e: kata.bce_with_logits(x, t), "soft"),
    "bce_with_logits(pos_weight)": (
        lambda x, t, e: kata.bce_with_logits(x, t, pos_weight=e["pos_weight"]),
        "soft",
    ),
    "focal_loss(reduction='none')": (lambda x, t, e: kata.focal_loss(x, t, 2.0, 0.25, "none"), "hard"),
    "focal_loss(reduction='mean')": (lambda x, t, e: kata.focal_loss(x, t, 1.0, None, "mean"), "hard"),
    "focal_loss(reduction='sum')": (lambda x, t, e: kata.focal_loss(x, t, 0.0, 0.75, "sum"), "hard"),
    "FocalLoss()": (lambda x, t, e: kata.FocalLoss()(x, t), "hard"),
}


def _case_inputs(kind: str, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """Logits (one of them exactly 0), targets of the kind a loss takes, and the extra tensors it may take."""
    gen = torch.Generator().manual_seed(47)
    shape = (4, 3, 2) if kind == "classes (N, C, L)" else (4, 3)
    logits = torch.randn(shape, generator=gen) * 3
    logits.view(-1)[0] = 0.0
    if kind == "classes":
        targets = torch.tensor([2, 0, 1, 1])
    elif kind == "classes (N, C, L)":
        targets = torch.tensor([[2, 0], [1, -100], [0, 0], [1, 2]])  # one ignored target
    elif kind == "soft":
        targets = torch.rand(4, 3, generator=gen).to(dtype)
    else:
        targets = torch.randint(0, 2, (4, 3), generator=gen).to(dtype)
    extra = {"weight": torch.tensor([0.5, 2.0, 1.25]), "pos_weight": torch.tensor([3.0, 0.5, 1.5])}
    extra = {name: tensor.to(dtype).to(device) for name, tensor in extra.items()}
    return logits.to(dtype).to(device), targets.to(device), extra


@pytest.mark.parametrize("label", list(LOSS_CASES))
def test_losses_leave_inputs_unchanged(label: str) -> None:
    call, kind = LOSS_CASES[label]
    logits, targets, extra = _case_inputs(kind)
    inputs = {"logits": logits, "targets": targets, **extra}
    before = {name: tensor.clone() for name, tensor in inputs.items()}
    call(logits, targets, extra)
    for name, tensor in inputs.items():
        assert torch.equal(tensor, before[name]), (
            f"{label} changed the caller's {name} in place (now {tensor.tolist()}, was "
            f"{before[name].tolist()}); likely cause: an in-place op on an input (`logits -= "
            f"logits.max(...)`, `weight /= weight.sum()`, `targets[targets == ignore_index] = 0`, `clamp_`, "
            f"`mul_`). Work on new tensors: `logits = logits - m` rebinds the name and leaves the caller's "
            f"tensor alone"
        )
        assert not tensor.requires_grad, (
            f"{label} turned on requires_grad of the caller's {name}; likely cause: "
            f"`{name}.requires_grad_()` to make the result differentiable. The result is differentiable "
            f"whenever the caller's logits require grad; whether they do is the caller's choice"
        )


@pytest.mark.parametrize("label", list(LOSS_CASES))
def test_losses_accumulate_into_existing_grad(label: str) -> None:
    call, kind = LOSS_CASES[label]
    logits, targets, extra = _case_inputs(kind)
    fresh = logits.clone().requires_grad_()
    call(fresh, targets, extra).sum().backward()
    assert fresh.grad is not None, (
        f"{label} gave logits no gradient; likely cause: the result is computed from detached logits or "
        f"under torch.no_grad()"
    )
    leaf = logits.clone().requires_grad_()
    stale = torch.full_like(leaf, 0.125)
    leaf.grad = stale.clone()  # a gradient left over from an earlier backward, as in gradient accumulation
    held = leaf.grad
    out = call(leaf, targets, extra)
    assert leaf.grad is held and torch.equal(leaf.grad, stale), (
        f"calling {label} changed logits.grad before any backward() (now "
        f"{None if leaf.grad is None else leaf.grad.tolist()}); likely cause: the loss zeroes or resets "
        f".grad, or calls backward() itself. Clearing gradients is the training loop's job"
    )
    out.sum().backward()
    assert_close(
        leaf.grad,
        stale + fresh.grad,
        rtol=1e-5,
        atol=1e-7,
        what=f"logits.grad after backward() through {label}, starting from a leftover gradient of 0.125",
        likely_cause="backward() should ADD this loss's gradient to what .grad already holds; something "
        "replaced or cleared the caller's .grad",
    )


@pytest.mark.parametrize("label", list(LOSS_CASES))
def test_losses_follow_the_input_device_and_dtype(label: str) -> None:
    call, kind = LOSS_CASES[label]
    call(*_case_inputs(kind))  # real CPU tensors first: an unfinished loss reports "not started" here
    expected_shape = (4, 3) if "'none'" in label else ()
    for dtype in (torch.float64, torch.bfloat16):
        logits, targets, extra = _case_inputs(kind, dtype, "meta")
        try:
            got = call(logits, targets, extra)
        except Exception as exc:
            raise AssertionError(
                f"{label} on {dtype} tensors on the meta device (shape and dtype, no data) raised "
                f"{type(exc).__name__}: {exc}. Likely cause: a tensor built without device= "
                f"(`torch.zeros(logits.shape)`, `torch.tensor([...])`, `torch.ones(n)` live on the CPU, so a "
                f"CUDA input would fail the same way), or values read back to the host (`.item()`, `.cpu()`, "
                f"`.numpy()`, `if tensor:`, `x[mask]`), which the contract rules out. Build helper tensors "
                f"with device=logits.device (or `*_like`); use torch.where instead of masks"
            ) from exc
        assert isinstance(got, torch.Tensor) and got.device.type == "meta", (
            f"{label} on meta-device inputs returned {got!r}, which is not on their device; likely cause: "
            f"the result was built on the CPU (torch.tensor(...), torch.zeros(...) without device=)"
        )
        assert got.dtype == dtype and tuple(got.shape) == expected_shape, (
            f"{label} on {dtype} inputs should return a {dtype} tensor of shape {expected_shape}, got "
            f"{got.dtype} {tuple(got.shape)}; likely cause: a helper tensor or cast with a fixed dtype "
            f"(torch.zeros(...) is float32 by default; `.float()`) pulled the result to another dtype"
        )
