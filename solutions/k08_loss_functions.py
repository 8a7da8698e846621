"""Stable losses and focal loss

Interview question: Explain loss functions in PyTorch.

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
also `torch.logaddexp(0, x)`.

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

What interviewers probe
=======================
- Logits vs probabilities: CrossEntropyLoss and BCEWithLogitsLoss take raw logits; a softmax or sigmoid
  in the model's last layer is a bug. nn.BCELoss takes probabilities and NLLLoss takes log-probabilities.
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
- Why focal loss down-weights easy examples: the factor (1 - p_t)**gamma is ~0 when the model is already
  confident and right (p_t near 1), and ~1 when it is wrong, so the summed loss is dominated by hard
  examples instead of thousands of easy background ones (the dense-detection problem it was made for).
  alpha_t then re-balances positives against negatives.

Your tasks
==========
1. `cross_entropy(logits, targets)` - mean multi-class cross-entropy from logits, stable for huge logits.
2. `bce_with_logits(logits, targets)` - mean binary cross-entropy from logits, stable for huge logits.
3. `focal_loss(logits, targets, gamma, alpha, reduction)` - binary focal loss with three reductions.
4. `FocalLoss` - the same loss as an `nn.Module` that remembers its settings.
5. `loss_for(task)` - pick the standard torch loss module for a kind of task.

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

Grade this kata: `nox -s check -- 8`. Stuck? `nox -s hint -- 8`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

REDUCTIONS = ("none", "mean", "sum")
LOSS_TASKS = ("multiclass", "binary", "regression", "robust_regression")


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy of integer class targets under the softmax of `logits`.

    `logits` is `(N, C)` (any floating dtype), `targets` is int64 `(N,)` with values in `[0, C)`. For row i
    the loss is `-log softmax(logits[i])[targets[i]] = logsumexp(logits[i]) - logits[i, targets[i]]`;
    the result is the mean over the N rows, equal to `nn.CrossEntropyLoss()(logits, targets)`.

    Returns a 0-dim tensor with the dtype and device of `logits`, differentiable with respect to
    `logits`. It must be finite and correct for logits as large as +-1e4 (use the log-sum-exp trick).
    `logits` and `targets` are left unchanged (values, `requires_grad` and `.grad`). It works on any
    device, the `meta` device included: tensors without data, so nothing may need their values on the
    host (`.item()`, `if tensor:`, reading `x[mask]`).

    Allowed: elementary tensor operations and `torch.logsumexp` (function or method). Not allowed (the
    grader checks): anything from `torch.nn.functional`, torch's softmax / log-softmax in any spelling
    (`torch.softmax`, `Tensor.log_softmax`, `torch.special.log_softmax`, ...) and torch's loss functions.
    """
    log_normaliser = torch.logsumexp(logits, dim=1)
    true_class_logit = logits.gather(1, targets.unsqueeze(1)).squeeze(1)
    return (log_normaliser - true_class_logit).mean()


def bce_with_logits(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean binary cross-entropy computed from logits, without ever forming `log(sigmoid(x))`.

    `logits` and `targets` have the same shape (any shape, any floating dtype); targets lie in [0, 1]
    (soft labels allowed). With `p = sigmoid(x)`, each element's loss is `-(t*log(p) + (1-t)*log(1-p))`,
    which equals `max(x, 0) - x*t + log(1 + exp(-|x|))`; the result is the mean over all elements, equal to
    `nn.BCEWithLogitsLoss()(logits, targets)`.

    Returns a 0-dim tensor with the dtype and device of `logits`, differentiable with respect to `logits`:
    its gradient is `(sigmoid(x) - t) / numel` at every logit, a logit of exactly 0 included (there it is
    `(1/2 - t) / numel`). Value and gradient must be finite and correct for logits as large as +-1e4.
    `logits` and `targets` are left unchanged (values, `requires_grad` and `.grad`). It works on any
    device, the `meta` device included: tensors without data, so nothing may need their values on the
    host (`.item()`, `if tensor:`, reading `x[mask]`).

    Same rule as `cross_entropy` (the grader checks): nothing from `torch.nn.functional` (no
    `softplus`, no `logsigmoid`), no torch loss functions.
    """
    zero = torch.zeros((), dtype=logits.dtype, device=logits.device)
    # maximum, not clamp/relu/where: at a tie it passes half the gradient to each side, so the gradient
    # at x = 0 is sigmoid(0) - t like everywhere else (|x| contributes 0 there, and so it should).
    per_element = torch.maximum(logits, zero) - logits * targets + torch.log1p(torch.exp(-logits.abs()))
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
        loss    = ce * (1 - p_t) ** gamma
        alpha_t = alpha * t + (1 - alpha) * (1 - t)  # alpha weighs positives, 1 - alpha negatives
        loss    = alpha_t * loss                     # skipped when alpha is None (alpha=0.0 is NOT None)

    `gamma=0` with `alpha=None` is plain binary cross-entropy.

    `reduction` must be exactly "none" (a tensor like `logits`), "mean" or "sum" (0-dim tensors);
    any other value raises `ValueError`. The result has the dtype and device of `logits`.

    Differentiable with respect to `logits`: its gradient is the derivative of the formula above at every
    logit, a logit of exactly 0 included. The loss must be finite for logits as large as +-100, and so
    must its gradient when `gamma >= 1`: compute `ce` in the stable form. `torch.nn.functional` may be
    used here. `logits` and `targets` are left unchanged (values, `requires_grad` and `.grad`). It works
    on any device, the `meta` device included: tensors without data, so nothing may need their values on
    the host (`.item()`, `if tensor:`, reading `x[mask]`).
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


def loss_for(task: str) -> nn.Module:
    """A new instance of torch's standard loss module for `task`, with default settings.

    - "multiclass"        -> `nn.CrossEntropyLoss()`  (logits `(N, C)`; class indices or probabilities)
    - "binary"            -> `nn.BCEWithLogitsLoss()` (logits, not probabilities: not `nn.BCELoss`)
    - "regression"        -> `nn.MSELoss()`
    - "robust_regression" -> `nn.L1Loss()`            (less sensitive to outliers than MSE)

    The names are exact and lower-case; any other `task` raises `ValueError`.
    """
    if task == "multiclass":
        return nn.CrossEntropyLoss()
    if task == "binary":
        return nn.BCEWithLogitsLoss()
    if task == "regression":
        return nn.MSELoss()
    if task == "robust_regression":
        return nn.L1Loss()
    raise ValueError(f"unknown task {task!r}; expected one of {LOSS_TASKS}")
