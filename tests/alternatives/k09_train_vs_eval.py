"""Independent alternative solution of kata 09 (train() vs eval())."""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

DROPOUT_TYPES: tuple[type[nn.Module], ...] = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
)


def _snapshot(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    """Every distinct submodule (root included) with its own `training` flag."""
    return [(module, module.training) for module in model.modules()]


def _restore(snapshot: list[tuple[nn.Module, bool]]) -> None:
    """Write each recorded flag back onto its own module only (no recursion through `train()`)."""
    for module, flag in snapshot:
        module.training = flag


def predict(model: nn.Module, x: Tensor) -> Tensor:
    """Eval-mode forward pass under `torch.inference_mode()`, flags restored one by one."""
    snapshot = _snapshot(model)
    try:
        for module, _ in snapshot:
            module.training = False
        with torch.inference_mode():
            return model(x)
    finally:
        _restore(snapshot)


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Yield `model` with every submodule in eval mode; restore each flag on exit, even on error."""
    snapshot = _snapshot(model)
    try:
        model.train(False)
        yield model
    finally:
        _restore(snapshot)


def mc_dropout_predict(model: nn.Module, x: Tensor, samples: int) -> tuple[Tensor, Tensor]:
    """Dropout-only train mode; mean and unbiased std accumulated online with Welford's algorithm."""
    if samples < 2:
        raise ValueError(f"samples must be at least 2, got {samples}")
    snapshot = _snapshot(model)
    try:
        for module, _ in snapshot:
            module.training = isinstance(module, DROPOUT_TYPES)
        with torch.no_grad():
            mean: Tensor | None = None
            m2: Tensor | None = None
            out_dtype = None
            for n in range(1, samples + 1):
                out = model(x)
                out_dtype = out.dtype
                value = out.float() if out.dtype in (torch.float16, torch.bfloat16) else out
                if mean is None or m2 is None:
                    mean = value.clone()
                    m2 = torch.zeros_like(value)
                    continue
                delta = value - mean
                mean = mean + delta / n
                m2 = m2 + delta * (value - mean)
            assert mean is not None and m2 is not None and out_dtype is not None
            std = torch.sqrt(m2 / (samples - 1))
            return mean.to(out_dtype), std.to(out_dtype)
    finally:
        _restore(snapshot)
