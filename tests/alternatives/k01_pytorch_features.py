"""Independent alternative solution of kata 01 (PyTorch at a glance)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn


def build_mlp(in_features: int, hidden_features: int, out_features: int) -> nn.Sequential:
    """Linear -> ReLU -> Linear, assembled by appending to an empty `nn.Sequential`."""
    mlp = nn.Sequential()
    for layer in (
        nn.Linear(in_features, hidden_features, bias=True),
        nn.ReLU(),
        nn.Linear(hidden_features, out_features, bias=True),
    ):
        mlp.append(layer)
    return mlp


class _GraphRecorder:
    """A compile backend object that keeps every FX graph handed to it and runs each one as captured.

    A new instance per capture: compile's cache entries are tied to the backend that made them, so an
    unseen backend object misses every cached entry (of `fn` and of its resume functions) and captures
    afresh, while entries made for other backends stay where they are.
    """

    def __init__(self) -> None:
        self.graphs: list[torch.fx.GraphModule] = []

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
        self.graphs.append(gm)
        return gm.forward


def capture_graphs(fn: Callable[..., Any], *args: Any) -> tuple[Any, list[torch.fx.GraphModule]]:
    """Run `fn(*args)` once under `torch.compile` with a fresh recording backend; return result and graphs."""
    recorder = _GraphRecorder()
    result = torch.compile(fn, backend=recorder)(*args)
    return result, list(recorder.graphs)


def fit_line(xs: Tensor, ys: Tensor, steps: int = 500, lr: float = 0.1) -> tuple[float, float]:
    """Least squares line fit: one parameter vector `[w, b]`, a design matrix and `torch.optim.SGD`."""
    device = xs.device
    # At least float32 (integer data works too), float64 when the data is float64; no float64 forced on
    # devices that lack it.
    dtype = torch.promote_types(torch.promote_types(xs.dtype, ys.dtype), torch.float32)
    x = xs.detach().to(device=device, dtype=dtype)
    y = ys.detach().to(device=device, dtype=dtype)
    design = torch.stack([x, torch.ones_like(x)], dim=1)  # (n, 2): columns x and 1
    theta = torch.zeros(2, dtype=dtype, device=device, requires_grad=True)
    optimizer = torch.optim.SGD([theta], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        residual = design @ theta - y
        loss = (residual * residual).mean()
        loss.backward()
        optimizer.step()
    w, b = theta.detach().cpu().tolist()
    return float(w), float(b)
