"""Pictures that teach better than words, drawn for `explain` with matplotlib where it is installed.

Each picture is computed with plain Python (no torch), so it draws in whatever interpreter runs nox.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kata_harness.source import REPO_ROOT

PICTURES = REPO_ROOT / ".katas-pictures"
INSTALL_HINT = "python -m pip install matplotlib"


def _focal_vs_cross_entropy(plt: Any) -> None:
    p_t = [i / 400 for i in range(4, 401)]
    for gamma in (0, 0.5, 1, 2, 5):
        loss = [-((1 - p) ** gamma) * math.log(p) for p in p_t]
        label = "cross-entropy (gamma = 0)" if gamma == 0 else f"focal, gamma = {gamma}"
        plt.plot(p_t, loss, label=label)
    plt.xlabel("p_t: the probability the model gives the true class")
    plt.ylabel("loss")
    plt.title("Focal loss quiets the easy examples (p_t near 1), keeps the hard ones")
    plt.ylim(0, 5)


def _warmup_then_cosine(plt: Any) -> None:
    # As kata 7's warmup_cosine: LinearLR from start_factor to 1 over the warm-up, then CosineAnnealingLR.
    steps, warmup, start, floor = 1000, 100, 0.1, 0.1

    def factor(step: int) -> float:
        if step < warmup:
            return start + (1 - start) * step / warmup
        progress = min(1.0, (step - warmup) / (steps - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    plt.plot(range(steps + 100), [factor(step) for step in range(steps + 100)])
    plt.axvline(warmup, linestyle=":", color="grey")
    plt.xlabel("optimizer step")
    plt.ylabel("learning rate / peak learning rate")
    plt.title("Linear warm-up from 10% for 100 steps, cosine decay to 10%, then flat")


def _grad_scaler_scale(plt: Any) -> None:
    # torch.amp.GradScaler's defaults: init_scale 2**16, growth_factor 2, backoff_factor 0.5, growth_interval
    # 2000. The first steps overflow while the scale is too large for the gradients; later, rare spikes do.
    rng = random.Random(0)
    scale, clean_steps, scales, overflows = 2.0**16, 0, [], []
    for step in range(12_000):
        overflow = scale > 2.0**13 or rng.random() < 0.0007
        if overflow:
            scale, clean_steps = scale * 0.5, 0  # the step is skipped, the scale halves
            overflows.append(step)
        else:
            clean_steps += 1
            if clean_steps == 2000:
                scale, clean_steps = scale * 2, 0
        scales.append(math.log2(scale))
    plt.plot(scales, label="log2(scale)")
    skipped = [scales[step] for step in overflows]
    plt.scatter(overflows, skipped, color="red", s=12, label="inf/NaN: step skipped")
    plt.xlabel("optimizer step")
    plt.ylabel("log2(loss scale)")
    plt.title("GradScaler: halve on overflow and skip the step; double after 2000 clean steps")


def _batchnorm_running_mean(plt: Any) -> None:
    rng = random.Random(0)
    true_mean = 3.0
    batch_means = [true_mean + rng.gauss(0, 0.5) for _ in range(200)]
    plt.plot(batch_means, ".", color="lightgrey", label="mean of each batch")
    for momentum in (0.1, 0.01):
        running, trace = 0.0, []
        for batch_mean in batch_means:
            running = (1 - momentum) * running + momentum * batch_mean  # momentum weighs the NEW batch
            trace.append(running)
        plt.plot(trace, label=f"running_mean, momentum = {momentum}")
    plt.axhline(true_mean, linestyle=":", color="grey")
    plt.xlabel("training step (batch)")
    plt.ylabel("value")
    plt.title("BatchNorm's running mean starts at 0 and converges; eval() uses it")


DRAWINGS: dict[str, Callable[[Any], None]] = {
    "k07_optimizers": _warmup_then_cosine,
    "k08_loss_functions": _focal_vs_cross_entropy,
    "k09_train_vs_eval": _batchnorm_running_mean,
    "k10_gpu_and_amp": _grad_scaler_scale,
}


def draw(kata: str, folder: Path = PICTURES) -> Path | None:
    """Draw the kata's picture into `folder` and return its path; None when the kata has no picture.
    Raises ModuleNotFoundError when matplotlib is not installed."""
    drawing = DRAWINGS.get(kata)
    if drawing is None:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only: no window, no display needed
    import matplotlib.pyplot as plt

    plt.figure(figsize=(8, 5))
    drawing(plt)
    plt.legend()
    plt.grid(alpha=0.3)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{kata}.png"
    plt.savefig(path, dpi=100, bbox_inches="tight")
    plt.close()
    return path
