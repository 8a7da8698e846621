"""Independent alternative solution of kata 07 (optimizers, momentum and LR schedules)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

# The normalisation layers of `param_groups`: an instance of any of these, or of a subclass, is a norm layer.
NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor) -> float:
    """Compute the gradients with `torch.autograd.grad` and write them over `.grad` (no zero_grad)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    loss = torch.square(model(x) - y).mean()
    trainable = [p for p in params if p.requires_grad]
    grads: tuple[Tensor | None, ...] = ()
    if trainable and loss.requires_grad:
        grads = torch.autograd.grad(loss, trainable, allow_unused=True)
    new_grads = dict(zip(map(id, trainable), grads, strict=False))
    for p in params:
        p.grad = new_grads.get(id(p))
    value = loss.item()
    optimizer.step()
    return float(value)


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    batches: list[tuple[Tensor, Tensor]],
    epochs: int,
) -> list[float]:
    """Epoch loop; each epoch's loss is `math.fsum` of its batch losses over their number."""
    history: list[float] = []
    for _ in range(epochs):
        losses = [train_step(model, optimizer, x, y) for x, y in batches]
        scheduler.step()
        history.append(math.fsum(losses) / len(losses) if losses else math.nan)
    return history


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Classify by dotted names: exempt a `*.bias` name or any name under a norm layer's module path."""
    norm_prefixes = [
        f"{path}." if path else ""
        for path, module in model.named_modules(remove_duplicate=False)
        if isinstance(module, NORM_LAYERS)
    ]
    exempt: set[int] = set()
    # Every registration of every parameter, tied ones under each of their names: exempt if any says so.
    for name, p in model.named_parameters(remove_duplicate=False):
        if name.rsplit(".", 1)[-1] == "bias" or any(name.startswith(prefix) for prefix in norm_prefixes):
            exempt.add(id(p))
    trainable = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in trainable if id(p) not in exempt], "weight_decay": float(weight_decay)},
        {"params": [p for p in trainable if id(p) in exempt], "weight_decay": 0.0},
    ]


class _WarmupCosine(torch.optim.lr_scheduler.LRScheduler):
    """Closed-form warm-up + cosine factor applied to the lrs the groups had when the scheduler was built."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int,
        total_steps: int,
        start_factor: float,
        min_lr_ratio: float,
    ) -> None:
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.start_factor = start_factor
        self.min_lr_ratio = min_lr_ratio
        self.peak_lrs = [group["lr"] for group in optimizer.param_groups]
        super().__init__(optimizer)

    def factor(self, t: int) -> float:
        """The common multiplier f(t) of every group's initial lr."""
        w, total, s, m = self.warmup_steps, self.total_steps, self.start_factor, self.min_lr_ratio
        if t < w:
            return s + (1.0 - s) * t / w
        if t >= total:
            return m
        return m + (1.0 - m) * 0.5 * (1.0 + math.cos(math.pi * (t - w) / (total - w)))

    def get_lr(self) -> list[float | Tensor]:
        """Every group's peak lr times f(last_epoch), computed afresh (never from the previous lr)."""
        f = self.factor(self.last_epoch)
        return [peak * f for peak in self.peak_lrs]

    def _get_closed_form_lr(self) -> list[float | Tensor]:
        return self.get_lr()


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int,
    total_steps: int,
    start_factor: float = 0.1,
    min_lr_ratio: float = 0.0,
) -> torch.optim.lr_scheduler.LRScheduler:
    """A hand-written `LRScheduler` subclass with a closed-form `get_lr` (no LambdaLR, no SequentialLR)."""
    if not 0 <= warmup_steps < total_steps:
        raise ValueError("need 0 <= warmup_steps < total_steps")
    if not 0.0 < start_factor <= 1.0:
        raise ValueError("need 0 < start_factor <= 1")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError("need 0 <= min_lr_ratio <= 1")
    return _WarmupCosine(optimizer, warmup_steps, total_steps, start_factor, min_lr_ratio)


def _grads_of(parameters: Tensor | Iterable[Tensor]) -> list[Tensor]:
    """The existing `.grad` tensors of `parameters` (a tensor or a once-only iterable)."""
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    return [p.grad for p in params if p.grad is not None]


def _total_norm(grads: list[Tensor]) -> Tensor:
    """Fold the per-gradient 2-norms together with `torch.hypot` (no overflow from squaring them)."""
    if not grads:
        return torch.zeros(())
    device = grads[0].device
    total = torch.linalg.vector_norm(grads[0])
    for g in grads[1:]:
        total = torch.hypot(total, torch.linalg.vector_norm(g).to(device))
    return total


def clip_grad_norm(parameters: Tensor | Iterable[Tensor], max_norm: float) -> Tensor:
    """Hypot-folded total norm; the scale is picked with `torch.where` on the device (no host sync)."""
    grads = _grads_of(parameters)
    total = _total_norm(grads)
    if grads:
        scale = torch.where(total > max_norm, max_norm / total, torch.ones_like(total))
        for g in grads:
            g.mul_(scale.to(g.dtype))
    return total


def accumulated_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: list[tuple[Tensor, Tensor]],
    max_norm: float | None = None,
) -> tuple[float, float]:
    """Backpropagate each micro-batch's SUM of squared errors, then divide the gradient sums by the count."""
    if not micro_batches:
        raise ValueError("micro_batches must not be empty")
    params: list[Tensor] = []
    seen: set[int] = set()
    for p in [*model.parameters(), *(q for group in optimizer.param_groups for q in group["params"])]:
        if id(p) not in seen:
            seen.add(id(p))
            params.append(p)
    for p in params:
        p.grad = None
    leaves = [p for p in params if p.requires_grad]
    squared_sum: Tensor | None = None
    count = 0
    for x, y in micro_batches:
        diff = model(x) - y.detach()
        part = diff.square().sum()
        count += diff.numel()
        if part.requires_grad and leaves:
            part.backward(inputs=leaves)  # only the parameters collect gradients, never x or y
        part = part.detach()
        squared_sum = part if squared_sum is None else squared_sum + part
    grads = [p.grad for p in leaves if p.grad is not None]
    for g in grads:
        g.div_(count)
    norm = _total_norm(grads) if max_norm is None else clip_grad_norm(leaves, max_norm)
    optimizer.step()
    assert squared_sum is not None
    return float(squared_sum / count), float(norm)


class MomentumSGD(torch.optim.Optimizer):
    """SGD with heavy-ball momentum and coupled weight decay; updates are computed out of place."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        """Hand the parameters and the three defaults to `torch.optim.Optimizer`."""
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Run the closure with grad enabled, then update each parameter that has a gradient."""
        result = None
        if closure is not None:
            with torch.enable_grad():
                result = closure()
        with torch.no_grad():
            for group in self.param_groups:
                lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    g = p.grad.detach()
                    if wd != 0:
                        g = g + wd * p.detach()
                    state = self.state[p]
                    velocity = state.get("velocity")
                    velocity = g.clone() if velocity is None else velocity * mu + g
                    state["velocity"] = velocity
                    p.copy_(p.detach() - lr * velocity)
        return result
