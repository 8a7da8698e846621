"""Independent alternative solution of kata 07 (optimizers, momentum and LR schedules)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

OPTIMIZER_NAMES = ("sgd", "adam", "adamw", "rmsprop", "adagrad")


def make_optimizer(name: str, params: Iterable[Tensor] | Iterable[dict], lr: float) -> torch.optim.Optimizer:
    """Dispatch on the lower-cased name with a `match` statement."""
    key = name.lower() if isinstance(name, str) else None
    match key:
        case "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=0.9)
        case "adam":
            return torch.optim.Adam(params, lr=lr)
        case "adamw":
            return torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
        case "rmsprop":
            return torch.optim.RMSprop(params, lr=lr)
        case "adagrad":
            return torch.optim.Adagrad(params, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZER_NAMES)}")


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
