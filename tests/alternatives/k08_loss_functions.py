"""Independent alternative solution of kata 08 (stable losses and focal loss)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

REDUCTIONS = ("none", "mean", "sum")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulate 16-bit floats in float32; keep wider dtypes as they are."""
    return torch.float32 if torch.finfo(dtype).bits < 32 else dtype


def cross_entropy(
    logits: Tensor,
    targets: Tensor,
    *,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Classes moved to the last dim and flattened to (M, C); detached-max log-sum-exp; one-hot by comparison
    with `arange` (never indexing with a target), class weights picked and summed with matrix-vector products.
    """
    acc = _compute_dtype(logits.dtype)
    n_classes = logits.shape[1]
    z = logits.to(acc).movedim(1, -1).reshape(-1, n_classes)  # (M, C), one row per target position
    y = targets.reshape(-1)
    shift = z.detach().amax(dim=-1, keepdim=True)
    neg_logp = shift + torch.log(torch.exp(z - shift).sum(dim=-1, keepdim=True)) - z  # -log p, (M, C)
    counts = (y != ignore_index).to(acc)  # 1 for targets that count, 0 for ignored ones
    one_hot = (y.unsqueeze(-1) == torch.arange(n_classes, device=y.device)) & (counts.unsqueeze(-1) > 0)
    zero = torch.zeros((), dtype=acc, device=z.device)
    nll = torch.where(one_hot, neg_logp, zero).sum(dim=-1)  # (M,), 0 for ignored targets
    w = torch.ones(n_classes, dtype=acc, device=z.device) if weight is None else weight.to(acc)
    w_target = one_hot.to(acc) @ w  # w[y_k] for targets that count, 0 otherwise
    numerator = (1.0 - label_smoothing) * (w_target * nll).sum()
    if label_smoothing != 0.0:
        uniform = (neg_logp @ w) * counts  # sum_c w[c] * -log p_k[c], only where the target counts
        numerator = numerator + (label_smoothing / n_classes) * uniform.sum()
    return (numerator / w_target.sum()).to(logits.dtype)


def _softplus(x: Tensor) -> Tensor:
    """log(1 + exp(x)) as `torch.logaddexp(0, x)`, exact for large |x| and smooth at 0."""
    return torch.logaddexp(torch.zeros((), dtype=x.dtype, device=x.device), x)


def bce_with_logits(logits: Tensor, targets: Tensor, *, pos_weight: Tensor | None = None) -> Tensor:
    """pos_weight * t * softplus(-x) + (1 - t) * softplus(x): both terms non-negative, so no cancellation."""
    acc = _compute_dtype(logits.dtype)
    x = logits.to(acc)
    t = targets.to(acc)
    positive = t * _softplus(-x)
    if pos_weight is not None:
        positive = pos_weight.to(acc) * positive
    per_element = positive + (1 - t) * _softplus(x)
    return per_element.mean().to(logits.dtype)


def focal_loss(
    logits: Tensor,
    targets: Tensor,
    gamma: float = 2.0,
    alpha: float | None = 0.25,
    reduction: str = "mean",
) -> Tensor:
    """Focal loss with the modulating factor in log space: (1 - p_t)**gamma = exp(-gamma * softplus(z))."""
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    t = targets.to(logits.dtype)
    signed = (2 * t - 1) * logits  # z = x for positives, -x for negatives: p_t = sigmoid(z)
    ce = _softplus(-signed)  # -log p_t
    loss = ce * torch.exp(-gamma * _softplus(signed))  # log(1 - p_t) = -softplus(z)
    if alpha is not None:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


class FocalLoss(nn.Module):
    """Parameter-free module wrapper of `focal_loss`, validating `reduction` eagerly."""

    def __init__(self, gamma: float = 2.0, alpha: float | None = 0.25, reduction: str = "mean") -> None:
        """Store the settings; reject an unknown reduction at once."""
        super().__init__()
        if not isinstance(reduction, str) or reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.gamma = gamma
        self.alpha = alpha
        self.reduction = reduction

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Apply `focal_loss` with the stored settings."""
        return focal_loss(logits, targets, self.gamma, self.alpha, self.reduction)

    def extra_repr(self) -> str:
        """Show the settings in `repr`."""
        return f"gamma={self.gamma}, alpha={self.alpha}, reduction={self.reduction!r}"
