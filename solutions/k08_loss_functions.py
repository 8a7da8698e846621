"""Stable losses and focal loss

Interview question: Explain loss functions in PyTorch.

Difficulty 3/5, about 60 minutes, after katas 3 and 4.

The idea
========
A loss turns a batch of predictions and targets into one scalar that backward() differentiates. Which one
you pick encodes what the model's outputs mean: regression losses compare values (MSE punishes large
errors quadratically, L1 linearly, so it shrugs off outliers), classification losses compare a predicted
distribution with the true class and are the negative log-likelihood of that class.

Classification heads output LOGITS: unbounded real scores, not probabilities. `nn.CrossEntropyLoss`
applies log-softmax itself and `nn.BCEWithLogitsLoss` applies log-sigmoid itself, so feeding them
probabilities applies the squashing twice. Working in log space is the point: `softmax` then `log`
underflows to log(0) = -inf for confident wrong answers, while the fused form stays exact.

The log-sum-exp trick makes that possible: log(sum_j exp(z_j)) = m + log(sum_j exp(z_j - m)) with
m = max_j z_j. Every exponent is then <= 0, so nothing overflows, and the largest term is exp(0) = 1, so
the sum never underflows to 0. Cross-entropy for the true class y is logsumexp(z) - z_y. The binary
case is the same trick with the two logits (0, x): log(1 + e^x) = max(x, 0) + log1p(exp(-|x|)), which is
also `torch.logaddexp(0, x)`; -log(sigmoid(x)) = log(1 + e^-x) and -log(1 - sigmoid(x)) = log(1 + e^x).

Equal formulas can differ in autograd at a kink. Autograd differentiates the expression you wrote, not
the function it computes, and where an op has a kink it picks one subgradient of its own. max(x, 0)
spelled `x.clamp(min=0)` (or `torch.where(x >= 0, x, 0)`) gets slope 1 at x = 0, spelled `torch.relu(x)`
(or `torch.where(x > 0, x, 0)`) slope 0, spelled `torch.maximum(x, zero)` slope 1/2, because maximum
splits the gradient of a tie evenly; |x| gets slope 0. All of them give the same VALUES everywhere. The
BCE of a logit, max(x, 0) - x*t + log1p(exp(-|x|)), has the true derivative sigmoid(0) - t = 1/2 - t at
x = 0, but the clamp spelling yields 1 - t and the relu spelling -t: the loss is exact and its gradient
is wrong, at exactly the logits a zero-initialised output layer produces on its first step (focal loss,
built on this BCE, is then ~40% off). Smooth spellings avoid the question: `torch.logaddexp(0, x)` has
the derivative sigmoid(x) at every x, 0 included. Whatever you write, test it at exactly the kink.

Losses reduce per-element values with a mean by default (reduction="mean"); "sum" and "none" exist for
weighting, masking and custom reductions. Focal loss is such a custom loss: BCE reshaped so that the
many easy examples stop drowning out the few hard ones.

What torch's cross-entropy really computes
==========================================
`F.cross_entropy(logits, y, weight=w, ignore_index=i, label_smoothing=s)` (and `nn.CrossEntropyLoss` with
the same arguments) does more than average logsumexp(z) - z_y. With l_k = logsumexp(z_k) - z_k[y_k] for
each target k:

- Layout: logits are `(N, C)` or `(N, C, d1, ..., dk)`, the classes always in dim 1, targets `(N,)` or
  `(N, d1, ..., dk)`. Every (n, d1, ..., dk) position is one target (a token, a pixel) and the mean runs
  over all of them. A sequence model's `(N, L, C)` must be permuted to `(N, C, L)`; reshaping it is not
  the same thing.
- `weight=w`, one non-negative weight per class: "mean" becomes a WEIGHTED mean,
  sum_k w[y_k] * l_k / sum_k w[y_k]. Scaling w by a constant changes nothing; dividing by the number of
  targets instead would rescale every batch's loss (and so the step size) by that batch's average
  weight.
- `ignore_index=i` (default -100): targets equal to i count in neither sum. It marks padding tokens or
  "void" pixels (255 in many segmentation sets), so it need not be a class at all: never index with it.
  A batch whose every target is ignored is 0/0, and torch returns nan.
- `label_smoothing=s`: the target distribution becomes (1 - s) * one_hot(y) + s / C (every class gets
  s / C, the true one included), so each target costs (1 - s) * l_k + (s / C) * sum_c -log p_k[c]. With
  class weights the second term is weighted per class, sum_c w[c] * -log p_k[c], and both terms share
  the denominator sum_k w[y_k] of the targets that count.

Binary heads have their own imbalance knob: `BCEWithLogitsLoss(pos_weight=p)` multiplies only the
positive term, -(p * t * log(sigmoid(x)) + (1 - t) * log(1 - sigmoid(x))), with p broadcast against the
logits (one weight per label along the last dim, typically n_negative / n_positive). Its mean stays a plain
mean over all elements: unlike class weights, pos_weight changes the loss's scale.

What interviewers probe
=======================
- Logits vs probabilities: CrossEntropyLoss and BCEWithLogitsLoss take raw logits; a softmax or sigmoid
  in the model's last layer is a bug. nn.BCELoss takes probabilities and NLLLoss takes log-probabilities.
  For regression, MSELoss (quadratic in the error) vs L1Loss or SmoothL1Loss / HuberLoss (linear for
  large errors, so outliers pull less).
- CrossEntropyLoss's targets: class indices (int64, shape (N,)) or, since PyTorch 1.10, class
  probabilities of the input's shape (floating: soft labels, mixup, distillation). The real traps: a
  one-hot tensor left as int64 has the input's shape, so it is taken for probabilities and rejected
  ("Expected floating point type for target with class probabilities"; cast it to float, or pass the
  indices); and the class dimension is dim 1: sequence logits (N, L, C) must be permuted to (N, C, L)
  against targets (N, L), and when L == C the wrong layout raises nothing and computes another loss.
- Why BCEWithLogitsLoss is more stable than sigmoid + BCELoss: sigmoid(20.0) is exactly 1.0 in float32,
  so for t = 0 log(1 - p) = -inf; BCELoss clamps the log at -100, so it reports 100 instead of ~20 and
  the saturated sigmoid passes back a zero gradient. From the logit, the loss is
  max(x, 0) - x*t + log1p(exp(-|x|)): exact, finite, and its gradient is sigmoid(x) - t, provided the
  max is spelled so that autograd gets x = 0 right (torch.maximum, or torch.logaddexp(0, x) instead).
- The log-sum-exp trick: subtract the max before exponentiating; exp(1000.0) is inf, exp(0) is not.
- Class weights are a weighted mean, pos_weight is not: the denominator of the first is sum_k w[y_k].
  Masking padding by multiplying the per-token loss by a 0/1 mask and calling .mean() divides by the
  padded length, the bug ignore_index avoids.
- Why focal loss down-weights easy examples: the factor (1 - p_t)**gamma is ~0 when the model is already
  confident and right (p_t near 1), and ~1 when it is wrong, so the summed loss is dominated by hard
  examples instead of thousands of easy background ones (the dense-detection problem it was made for).
  alpha_t then re-balances positives against negatives.

Your tasks
==========
1. `cross_entropy(logits, targets, *, weight, ignore_index, label_smoothing)` - torch's cross-entropy for
   class-index targets, written by hand: stable for huge logits, any `(N, C, d1, ...)` layout, class
   weights, ignored targets and label smoothing.
2. `bce_with_logits(logits, targets, *, pos_weight)` - mean binary cross-entropy from logits, stable for
   huge logits, with a weight for the positive term.
3. `focal_loss(logits, targets, gamma, alpha, reduction)` - binary focal loss with three reductions.
4. `FocalLoss` - the same loss as an `nn.Module` that remembers its settings.

Every loss works on the device of its inputs. The grader checks that on PyTorch's `meta` device (tensors
with a shape, a dtype and a device but no data), which catches a tensor built on the CPU for a CUDA input
on any machine, and code that reads values back to the host (`.item()`, `if tensor:`, `x[mask]`), which
on a GPU would stall for a sync; only the `cuda` variants of the large-logit tests, run where a GPU is
present, check the numbers on a GPU.

Follow-up questions
===================
- What does `label_smoothing` in CrossEntropyLoss change, and why can it help calibration?
- How would you handle a 1:1000 class imbalance: pos_weight, class weights, focal loss or resampling?
- Why is the first-iteration loss of a C-class classifier close to log(C), and what does it tell you?
- When would you use reduction="none", and what must you then do before calling backward()?
- Why does CrossEntropyLoss with class weights divide by the sum of the targets' weights rather than by
  the number of targets, and what goes wrong with padded sequences if you mask the loss yourself?

Grade this kata: `nox -s check -- 8`. Stuck? `nox -s hint -- 8`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

REDUCTIONS = ("none", "mean", "sum")


def cross_entropy(
    logits: Tensor,
    targets: Tensor,
    *,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Cross-entropy of class-index targets under the softmax of `logits`, reduced the way torch reduces it.

    Equals `F.cross_entropy(logits, targets, weight=weight, ignore_index=ignore_index,
    label_smoothing=label_smoothing)` (reduction "mean") for every input described here; with the
    defaults that is `nn.CrossEntropyLoss()(logits, targets)`.

    - `logits`: `(N, C)` or `(N, C, d1, ..., dk)`, any floating dtype, finite values; classes are dim 1.
    - `targets`: int64, the shape of `logits` without dim 1 (`(N,)` or `(N, d1, ..., dk)`); each value is
      a class in `[0, C)` or equals `ignore_index`.
    - `weight`: None (every class weighs 1) or a 1-D tensor of C non-negative class weights with the
      dtype and device of `logits`. The result is a weighted mean over the targets that count, so
      multiplying `weight` by a positive constant does not change it.
    - `ignore_index`: targets equal to it do not count at all; it need not be a valid class (-100, 255).
      When no target counts the result is nan, as torch's is.
    - `label_smoothing`: a float in [0, 1]; 0 is plain cross-entropy.

    Returns a 0-dim tensor with the dtype and device of `logits`, differentiable with respect to
    `logits`. It must be finite and correct for logits as large as +-1e4. `logits`, `targets` and
    `weight` are left unchanged (values, `requires_grad` and `.grad`). It works on any device, the `meta`
    device included: tensors without data, so nothing may need their values on the host (`.item()`,
    `if tensor:`, reading `x[mask]`).

    Allowed: elementary tensor operations and `torch.logsumexp` (function or method). Not allowed (the
    grader checks): anything from `torch.nn.functional`, torch's softmax / log-softmax in any spelling
    (`torch.softmax`, `Tensor.log_softmax`, `torch.special.log_softmax`, ...) and torch's loss functions.
    """
    n_classes = logits.shape[1]
    log_probs = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    counts = targets != ignore_index
    # An ignored target may be -100 or 255: point it at class 0 before indexing, then drop it by weight.
    safe_targets = torch.where(counts, targets, torch.zeros_like(targets))
    nll = -log_probs.gather(1, safe_targets.unsqueeze(1)).squeeze(1)
    if weight is None:
        weight = torch.ones(n_classes, dtype=logits.dtype, device=logits.device)
    target_weight = weight[safe_targets] * counts
    class_weight = weight.reshape(n_classes, *([1] * (logits.dim() - 2)))  # broadcasts along dim 1
    smoothing_term = -(log_probs * class_weight).sum(dim=1) * counts
    total = (1 - label_smoothing) * target_weight * nll + (label_smoothing / n_classes) * smoothing_term
    return total.sum() / target_weight.sum()


def bce_with_logits(logits: Tensor, targets: Tensor, *, pos_weight: Tensor | None = None) -> Tensor:
    """Mean binary cross-entropy of `targets` under `sigmoid(logits)`, computed from the logits.

    Equals `F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)`, i.e.
    `nn.BCEWithLogitsLoss(pos_weight=pos_weight)(logits, targets)`.

    - `logits` and `targets` have the same shape (any shape, any floating dtype); targets lie in [0, 1]
      (soft labels allowed).
    - `pos_weight`: None (weight 1) or a tensor of non-negative weights for the positive term,
      broadcastable to the shape of `logits` (for `(N, C)` logits typically `(C,)`: one per label), with
      the dtype and device of `logits`. With `p = sigmoid(x)` each element costs
      `-(pos_weight * t * log(p) + (1 - t) * log(1 - p))`, and the result is the plain mean of that over
      every element.

    Returns a 0-dim tensor with the dtype and device of `logits`, differentiable with respect to `logits`:
    its gradient is the derivative of that mean at every logit, a logit of exactly 0 included (without
    `pos_weight`: `(sigmoid(x) - t) / numel`, which is `(1/2 - t) / numel` at 0). Value and gradient must
    be finite and correct for logits as large as +-1e4. `logits`, `targets` and `pos_weight` are left
    unchanged (values, `requires_grad` and `.grad`). It works on any device, the `meta` device included:
    tensors without data, so nothing may need their values on the host (`.item()`, `if tensor:`,
    reading `x[mask]`).

    Same rule as `cross_entropy` (the grader checks): nothing from `torch.nn.functional` (no
    `softplus`, no `logsigmoid`), no torch loss functions.
    """
    zero = torch.zeros((), dtype=logits.dtype, device=logits.device)
    # log(1 + e^x) = -log(1 - p). maximum, not clamp/relu/where: at a tie it passes half the gradient to
    # each side, so the gradient at x = 0 is sigmoid(0) like everywhere else (|x| contributes 0 there).
    log1p_exp = torch.maximum(logits, zero) + torch.log1p(torch.exp(-logits.abs()))
    if pos_weight is None:
        per_element = log1p_exp - logits * targets
    else:  # -log(p) = log(1 + e^-x) = log(1 + e^x) - x
        per_element = pos_weight * targets * (log1p_exp - logits) + (1 - targets) * log1p_exp
    return per_element.mean()


def focal_loss(
    logits: Tensor,
    targets: Tensor,
    gamma: float = 2.0,
    alpha: float | None = 0.25,
    reduction: str = "mean",
) -> Tensor:
    """Binary focal loss (Lin et al., 2017) from logits.

    `logits` and `targets` have the same shape; targets are 0.0 or 1.0. Per element, with
    `p = sigmoid(logits)` and `ce` the binary cross-entropy of that element (as in `bce_with_logits`,
    before the mean):

        p_t     = p * t + (1 - p) * (1 - t)          # the probability given to the true label
        alpha_t = alpha * t + (1 - alpha) * (1 - t)  # alpha weighs positives, 1 - alpha negatives
        loss    = alpha_t * (1 - p_t) ** gamma * ce  # alpha_t left out when alpha is None
                                                     # (alpha=0.0 is NOT None)

    `gamma=0` with `alpha=None` is plain binary cross-entropy.

    `reduction` must be exactly "none" (a tensor like `logits`), "mean" or "sum" (0-dim tensors);
    any other value raises `ValueError`. The result has the dtype and device of `logits`.

    Differentiable with respect to `logits`: its gradient is the derivative of the formula above at every
    logit, a logit of exactly 0 included. The loss must be finite for logits as large as +-100, and so
    must its gradient when `gamma >= 1`. `torch.nn.functional` may be used here. `logits` and `targets`
    are left unchanged (values, `requires_grad` and `.grad`). It works on any device, the `meta` device
    included: tensors without data, so nothing may need their values on the host (`.item()`,
    `if tensor:`, reading `x[mask]`).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    zero = torch.zeros((), dtype=logits.dtype, device=logits.device)
    ce = torch.maximum(logits, zero) - logits * targets + torch.log1p(torch.exp(-logits.abs()))
    p = torch.sigmoid(logits)
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha is not None:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


class FocalLoss(nn.Module):
    """`focal_loss` as a module: `FocalLoss(gamma, alpha, reduction)(logits, targets)`.

    Like torch's own loss modules, it holds no parameters; it only remembers its settings.
    """

    def __init__(self, gamma: float = 2.0, alpha: float | None = 0.25, reduction: str = "mean") -> None:
        """Remember `gamma`, `alpha` and `reduction` (remember to call `super().__init__()` first).

        An invalid `reduction` raises `ValueError` here or, at the latest, on the first call.
        """
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.gamma = gamma
        self.alpha = alpha
        self.reduction = reduction

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Return `focal_loss(logits, targets, gamma, alpha, reduction)` with this module's settings."""
        return focal_loss(logits, targets, gamma=self.gamma, alpha=self.alpha, reduction=self.reduction)
