"""Independent alternative solution of kata 06 (custom nn.Modules, buffers, state_dict)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class CustomNetwork(nn.Module):
    """fc1 -> bn1 -> ReLU -> dropout -> fc2, with the ReLU applied functionally."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int, dropout: float = 0.5) -> None:
        """Register the four layers under their contract names."""
        super().__init__()
        self.add_module("fc1", nn.Linear(input_size, hidden_size, bias=True))
        self.add_module("bn1", nn.BatchNorm1d(hidden_size))
        self.add_module("dropout", nn.Dropout(p=dropout))
        self.add_module("fc2", nn.Linear(hidden_size, output_size, bias=True))

    def forward(self, x: Tensor) -> Tensor:
        """Run the layers in order; ReLU is `torch.clamp_min(., 0)`."""
        h = self.bn1(self.fc1(x))
        h = torch.clamp_min(h, 0.0)
        return self.fc2(self.dropout(h))


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Walk every module's own parameters, de-duplicating shared ones by identity."""
    seen: set[int] = set()
    total = 0
    for module in model.modules():
        for param in module._parameters.values():
            if param is None or id(param) in seen:
                continue
            seen.add(id(param))
            if trainable_only and not param.requires_grad:
                continue
            total += param.numel()
    return int(total)


class Ensemble(nn.Module):
    """Averages its members, each registered by `add_module` under its own name."""

    def __init__(self, members: list[nn.Module]) -> None:
        """Register each member (the object itself) as a child module `member_<i>`."""
        super().__init__()
        members = list(members)
        if not members:
            raise ValueError("Ensemble needs at least one member")
        self._member_names: tuple[str, ...] = tuple(f"member_{i}" for i in range(len(members)))
        for name, member in zip(self._member_names, members, strict=True):
            self.add_module(name, member)

    def forward(self, x: Tensor) -> Tensor:
        """Running sum of the members' outputs divided by their number."""
        total: Tensor | None = None
        for name in self._member_names:
            out = getattr(self, name)(x)
            total = out if total is None else total + out
        assert total is not None
        return total / len(self._member_names)


class RunningMean(nn.Module):
    """Centres its input with the running mean of all rows seen in training (buffers `mean`, `count`)."""

    mean: Tensor
    count: Tensor

    def __init__(self, features: int) -> None:
        """Register a float32 `mean` of zeros and an int64 scalar `count` of 0."""
        super().__init__()
        self.register_buffer("mean", torch.zeros(features, dtype=torch.float32))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))

    def forward(self, x: Tensor) -> Tensor:
        """In training, move `mean` towards the batch mean by lerp with weight batch / new count."""
        if self.training:
            rows = x.detach()
            batch = rows.shape[0]
            new_count = self.count + batch
            weight = (batch / new_count).to(self.mean.dtype)
            self.mean.lerp_(rows.mean(dim=0).to(self.mean.dtype), weight)
            self.count.copy_(new_count)
        return x - self.mean


def freeze(module: nn.Module) -> nn.Module:
    """Switch off `requires_grad` parameter by parameter (shared ones included) and return `module`."""
    for _, param in module.named_parameters(remove_duplicate=False):
        param.requires_grad = False
    return module
