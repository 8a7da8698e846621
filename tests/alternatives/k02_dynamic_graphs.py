"""Independent alternative solution of kata 02 (define-by-run graphs)."""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn


class RepeatNet(nn.Module):
    """One shared linear layer applied `repeats` times with a ReLU after each use."""

    def __init__(self, features: int) -> None:
        """Create the single shared layer."""
        super().__init__()
        self.layer = nn.Linear(features, features)

    def forward(self, x: Tensor, repeats: int) -> Tensor:
        """Fold the layer over `range(repeats)`, starting from `x`."""
        return functools.reduce(lambda h, _: torch.relu(self.layer(h)), range(repeats), x)


class GatedNet(nn.Module):
    """Per-row routing between two layers, selected with `torch.where` over both batched branches."""

    def __init__(self, features: int) -> None:
        """Create the two branch layers."""
        super().__init__()
        self.positive = nn.Linear(features, features)
        self.negative = nn.Linear(features, features)

    def forward(self, x: Tensor) -> Tensor:
        """Run both branches on the whole batch and pick each row's result by the sign of its sum."""
        take_positive = (x.sum(dim=1) > 0).unsqueeze(1)
        return torch.where(take_positive, self.positive(x), self.negative(x))


class ExportableGate(nn.Module):
    """Whole-batch routing by the batch's sum, branch-free: both layers run and `torch.where` selects."""

    def __init__(self, features: int) -> None:
        """Create the two branch layers."""
        super().__init__()
        self.positive = nn.Linear(features, features)
        self.negative = nn.Linear(features, features)

    def forward(self, x: Tensor) -> Tensor:
        """Select between both full-batch results with a 0-dim predicate broadcast by `torch.where`.

        No Python `if` on a tensor value, so `torch.export` records the choice as an op in one graph;
        the unused layer still runs and receives an all-zero gradient.
        """
        use_positive = x.sum() > 0
        return torch.where(use_positive, self.positive(x), self.negative(x))


def record_output_shapes(model: nn.Module, x: Tensor) -> dict[str, tuple[int, ...]]:
    """Leaf-module output shapes, captured by one temporary global forward hook, filtered to `model`."""
    leaf_names: dict[nn.Module, str] = {}
    for name, module in model.named_modules():
        if next(module.children(), None) is None:
            leaf_names.setdefault(module, name)
    shapes: dict[str, tuple[int, ...]] = {}

    def hook(module: nn.Module, inputs: object, output: object) -> None:
        name = leaf_names.get(module)
        if name is None:
            return
        if isinstance(output, Tensor):
            shapes[name] = tuple(int(size) for size in output.shape)
        else:
            shapes.pop(name, None)

    handle = nn.modules.module.register_module_forward_hook(hook)
    try:
        model(x)
    finally:
        handle.remove()
    return shapes
