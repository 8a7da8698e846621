"""Independent fix of the kata 20 bug hunt (written without the reference).

Interview question: This AMP training script reports wrong numbers and leaks memory: find and fix the bugs.

Difficulty 4/5, about 45 minutes, after katas 9 and 10.

The program
===========
A small classifier (an MLP with BatchNorm1d and Dropout) trained with automatic mixed precision: the forward
pass and the loss run under `torch.autocast` (bfloat16 on a CPU, float16 on a GPU), the parameters and their
gradients stay float32, and a `torch.amp.GradScaler` scales the loss so that float16 gradients do not
underflow (on bfloat16 the scaler is usually created disabled, and then every call on it is a no-op; the
program must be right either way). Each epoch trains on a list of batches, with optional gradient clipping
and a learning-rate schedule that counts epochs, then evaluates on held-out batches. `fit` ties the two
together and returns one record per epoch: the learning rate the epoch trained with, the mean training
loss, the validation loss and the validation accuracy. Run the file to train on a synthetic data set.

Every function below does what its docstring says once the bugs are fixed. 7 independent bugs are planted in
this file; each test names one symptom. Fix the code, not the tests.

What interviewers probe
=======================
This round is about how you debug, not only what you spot by reading. Say what you would look at:
- Check the numbers against what they must be: the loss at initialisation is about ln(C) for C balanced
  classes (1.10 for 3); an accuracy is a fraction of samples, whatever the batch sizes; a schedule's
  learning rate after k epochs is a formula you can evaluate.
- Overfit one batch: a correct loop drives the loss of a single small batch towards 0 in a few dozen steps.
  If it cannot, the bug is in the loop, not in the data or the model size.
- Watch modes and autograd state: `model.training` of every submodule during training and evaluation,
  `torch.is_grad_enabled()` in a forward hook, BatchNorm's running buffers before and after evaluation.
- Watch memory across steps: it must be flat after the first step. Anything that keeps a tensor with a
  `grad_fn` alive from one step to the next keeps that step's graph alive with it.
- Watch gradients: log the total gradient norm that clipping returns, and know whether you are looking at
  scaled or true gradients (with a scale of 65536 the difference is not subtle).
- Mixed precision: what runs in bfloat16 or float16 (matmuls, linear layers) and what autocast keeps in
  float32 (reductions, softmax and losses), and why the update itself is always float32.

Follow-up questions: held back, as an interviewer would. Once every bug is fixed,
`nox -s explain -- 20` asks them, with model answers.

Grade this kata: `nox -s check -- 20`. Stuck? `nox -s hint -- 20`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def make_model(in_features: int, num_classes: int, hidden: int = 32, dropout: float = 0.2) -> nn.Module:
    """An MLP classifier: Linear -> BatchNorm1d -> ReLU -> Dropout -> Linear, returning raw logits.

    Input `(N, in_features)` float32, output `(N, num_classes)` logits; float32 parameters on the CPU.
    """
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


def train_epoch(
    model: nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    scaler: torch.amp.GradScaler,
    *,
    device_type: str = "cpu",
    dtype: torch.dtype | None = None,
    max_norm: float | None = None,
) -> float:
    """Train `model` for one epoch: one optimizer step per batch, in list order; return the mean loss.

    Args:
        model: a classifier returning logits; its parameters are float32, on the same device as the batches.
        batches: a non-empty list of `(x, y)`, `y` holding class indices; batch sizes may differ.
        optimizer: an optimizer over the model's parameters.
        scheduler: a schedule that counts EPOCHS (one `scheduler.step()` per call), or None.
        scaler: a `torch.amp.GradScaler` for `device_type`, enabled or not.
        device_type, dtype: where autocast runs and in which dtype (None: bfloat16 on "cpu", float16 on
            "cuda").
        max_norm: when given, the total 2-norm of the TRUE (unscaled) gradients over all parameters is
            clipped to at most `max_norm` before each update, as `torch.nn.utils.clip_grad_norm_` clips.

    The model trains in training mode (dropout on, BatchNorm using and updating batch statistics), whatever
    mode it was left in. Each update uses only its own batch's gradient of the mean cross-entropy, computed
    under autocast; the loss scale never reaches the update. Nothing from one step's autograd graph is kept
    alive into the next step. Returns the mean training loss over all the epoch's samples (each sample
    weighted equally) as a Python float.
    """
    was_training = model.training
    model.train(True)
    total: torch.Tensor | float = 0.0
    seen = 0
    try:
        for x, y in batches:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type, dtype=dtype):
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y)
            scaler.scale(loss).backward()
            if max_norm is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            scaler.step(optimizer)
            scaler.update()
            total = total + loss.detach() * y.numel()
            seen += y.numel()
            del logits, loss
    finally:
        model.train(was_training)
    if scheduler is not None:
        scheduler.step()
    return float(total) / seen


def evaluate(
    model: nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    *,
    device_type: str = "cpu",
    dtype: torch.dtype | None = None,
) -> tuple[float, float]:
    """Evaluate `model` on `batches` under autocast; return `(mean loss, accuracy)` as Python floats.

    Args:
        model: a classifier returning logits, on the same device as the batches.
        batches: a non-empty list of `(x, y)`, `y` holding class indices; batch sizes may differ.
        device_type, dtype: as for `train_epoch`.

    The model runs in evaluation mode (dropout off, BatchNorm using its running statistics), so evaluation
    changes no buffer, and without autograd: no graph is built. The loss is the cross-entropy averaged over
    all samples, and the accuracy the fraction of all samples whose highest logit is their label: each
    sample counts once, whatever the size of its batch. The model is left in evaluation mode.
    """
    model.eval()
    loss_sum: torch.Tensor | float = 0.0
    correct: torch.Tensor | int = 0
    seen = 0
    with torch.inference_mode(), torch.autocast(device_type, dtype=dtype):
        for x, y in batches:
            logits = model(x).float()
            loss_sum = loss_sum + F.cross_entropy(logits, y, reduction="sum")
            correct = correct + logits.argmax(dim=1).eq(y).sum()
            seen += y.numel()
    return float(loss_sum) / seen, int(correct) / seen


def fit(
    model: nn.Module,
    train_batches: list[tuple[torch.Tensor, torch.Tensor]],
    val_batches: list[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    scaler: torch.amp.GradScaler,
    epochs: int,
    *,
    device_type: str = "cpu",
    dtype: torch.dtype | None = None,
    max_norm: float | None = None,
) -> list[dict[str, float]]:
    """Train for `epochs` epochs, evaluating after each; return one record per epoch.

    Each epoch is one `train_epoch` over `train_batches` (the scheduler steps once per epoch) followed by one
    `evaluate` over `val_batches`. Record keys: "lr" (the first parameter group's learning rate the epoch
    trained with), "train_loss", "val_loss" and "val_accuracy", all Python floats.
    """
    history = []
    for _ in range(epochs):
        lr = float(optimizer.param_groups[0]["lr"])
        train_loss = train_epoch(
            model,
            train_batches,
            optimizer,
            scheduler,
            scaler,
            device_type=device_type,
            dtype=dtype,
            max_norm=max_norm,
        )
        val_loss, val_accuracy = evaluate(model, val_batches, device_type=device_type, dtype=dtype)
        history.append(
            {"lr": lr, "train_loss": train_loss, "val_loss": val_loss, "val_accuracy": val_accuracy}
        )
    return history


def synthetic_batches(
    n: int, batch_size: int, in_features: int, num_classes: int, generator: torch.Generator
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`n` samples of `num_classes` Gaussian blobs in `in_features` dimensions, cut into batches of
    `batch_size` (the last one smaller when `batch_size` does not divide `n`)."""
    centres = torch.randn(num_classes, in_features, generator=generator)
    y = torch.randint(num_classes, (n,), generator=generator)
    x = centres[y] + torch.randn(n, in_features, generator=generator)
    return list(zip(x.split(batch_size), y.split(batch_size), strict=True))


def main() -> None:
    """Train on a synthetic 3-class problem for a few epochs and print each epoch's record."""
    torch.manual_seed(0)
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device_type == "cuda" else torch.bfloat16
    generator = torch.Generator().manual_seed(0)
    data = synthetic_batches(600, 64, 8, 3, generator)
    data = [(x.to(device_type), y.to(device_type)) for x, y in data]
    train_batches, val_batches = data[:7], data[7:]
    model = make_model(8, 3).to(device_type)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    scaler = torch.amp.GradScaler(device_type, enabled=dtype == torch.float16)
    history = fit(
        model,
        train_batches,
        val_batches,
        optimizer,
        scheduler,
        scaler,
        epochs=5,
        device_type=device_type,
        dtype=dtype,
        max_norm=1.0,
    )
    for epoch, record in enumerate(history):
        print(
            f"epoch {epoch}: lr {record['lr']:.3f}  train loss {record['train_loss']:.3f}  "
            f"val loss {record['val_loss']:.3f}  val accuracy {record['val_accuracy']:.3f}"
        )


if __name__ == "__main__":
    main()
