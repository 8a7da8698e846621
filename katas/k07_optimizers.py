"""Optimizers, momentum and LR schedules

Interview question: What are the different optimizers available in PyTorch?

The idea
========
An optimizer owns references to parameters and, on `step()`, turns each parameter's `.grad` into an
update. It never computes gradients itself: `loss.backward()` does, and it ADDS into `.grad`. That is why
a training step is always zero_grad -> forward -> loss -> backward -> step: forget the first and every
step uses the sum of all gradients so far.

The optimizers differ in how they turn a gradient into a step:
- SGD: `p -= lr * g`. With momentum it keeps a per-parameter "velocity" buffer, `buf = momentum * buf + g`,
  and steps along `buf`, which smooths noise and speeds travel along consistent directions.
- RMSprop / Adagrad: divide each coordinate's gradient by the square root of a running record of its
  squared gradients (plus a small eps): an exponential moving average of `g**2` for RMSprop
  (`v = alpha * v + (1 - alpha) * g**2`), a sum of every `g**2` so far for Adagrad, whose effective step
  sizes therefore only ever shrink. Every parameter gets its own effective step size,
  `lr / (sqrt(v) + eps)`.
- Adam: momentum (a first moment, the moving average of `g`) plus RMSprop-style scaling (a second moment,
  the moving average of `g**2`), both bias-corrected.
- AdamW: Adam with DECOUPLED weight decay: it shrinks `p` directly (`p -= lr * wd * p`, torch's default
  `wd` is 0.01) apart from the adaptive step, instead of adding `wd * p` to the gradient.

Per-optimizer state (momentum buffers, moments) lives in `optimizer.state[p]`; hyperparameters live in
`optimizer.param_groups`, a list of dicts, so different parts of a model can have different settings.
A learning-rate scheduler rewrites `group["lr"]` each time its own `step()` is called, so how often you
call it defines what "one step of the schedule" means.

What interviewers probe
=======================
- zero_grad and gradient accumulation: `.grad` is summed into by every `backward()`. Skipping
  `optimizer.zero_grad()` silently trains on stale gradients; skipping it on purpose for k micro-batches
  (and dividing the loss by k) is gradient accumulation, the trick for a large effective batch.
- Where `scheduler.step()` goes: after `optimizer.step()`, and at the granularity the schedule was written
  for. Epoch-based schedules (StepLR, CosineAnnealingLR with T_max in epochs) are stepped once per epoch;
  calling them per batch decays the learning rate len(batches) times too fast. Per-batch schedules
  (OneCycleLR, warm-up) are stepped per batch.
- SGD momentum vs Adam vs AdamW: momentum averages gradients, Adam also rescales per coordinate.
  `Adam(weight_decay=...)` (like SGD's, RMSprop's and Adagrad's `weight_decay`) is L2 regularisation:
  it adds `wd * p`, the gradient of the penalty `wd/2 * ||p||**2`, to the gradient, so the decay is
  COUPLED to the gradient and goes through the moments and the adaptive denominator: coordinates with a
  large gradient history are regularised less. AdamW's decoupled weight decay shrinks every weight by
  the same factor `(1 - lr * wd)` outside the adaptive step. For plain SGD without momentum the two are
  the same update, `p -= lr * (g + wd * p)`; through momentum or an adaptive denominator they differ, and
  for adaptive methods no L2 penalty reproduces AdamW's decay. Recent torch also spells AdamW
  `Adam(..., decoupled_weight_decay=True)`. In torch, SGD's weight decay is added to the gradient BEFORE
  momentum.
- State aliasing: an optimizer's state must be its own memory. A momentum buffer that IS `p.grad` (kept
  without a copy) is wiped by `zero_grad(set_to_none=False)`, which zeroes `.grad` in place, and grows
  with every accumulated `backward()`; with `set_to_none=True` (the default) the bug hides.
- Device: `loss.item()` works wherever the loss lives; `loss.numpy()` fails for a CUDA tensor (it needs
  `.cpu()` first), and a state tensor built with `torch.zeros(p.shape)` lands on the CPU in the default
  dtype whatever `p` is (`torch.zeros_like(p)` or `g.clone()` follow `p`). The grader checks the state's
  device on the `meta` device; a CUDA-only bug such as `.numpy()` is caught only when it runs on a GPU.

Your tasks
==========
1. `make_optimizer(name, params, lr)` - build one of five optimizers by name.
2. `train_step(model, optimizer, x, y)` - one MSE training step; return the loss as a float.
3. `train(model, optimizer, scheduler, batches, epochs)` - the epoch loop; return mean loss per epoch.
4. `MomentumSGD` - write SGD with momentum and weight decay as a `torch.optim.Optimizer` subclass.

Follow-up questions
===================
- How would you accumulate gradients over 4 micro-batches so that the update equals one big batch?
- Why might Adam generalise worse than well-tuned SGD with momentum, and what does AdamW change?
- How do you give the biases and LayerNorm weights no weight decay while the rest of the model has it?
- What must be saved besides the model's `state_dict` to resume training exactly where it stopped?

Grade this kata: `nox -s check -- 7`. Stuck? `nox -s hint -- 7`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

OPTIMIZER_NAMES = ("sgd", "adam", "adamw", "rmsprop", "adagrad")


def make_optimizer(name: str, params: Iterable[Tensor] | Iterable[dict], lr: float) -> torch.optim.Optimizer:
    """Build the optimizer called `name` over `params`, with learning rate `lr`.

    `name` is matched case-insensitively ("SGD", "AdamW" and "adamw" are all fine):
    - "sgd"     -> `torch.optim.SGD` with `momentum=0.9`
    - "adam"    -> `torch.optim.Adam`
    - "adamw"   -> `torch.optim.AdamW` with `weight_decay=0.01`
    - "rmsprop" -> `torch.optim.RMSprop`
    - "adagrad" -> `torch.optim.Adagrad`
    Each gets `lr=lr`; every other setting keeps torch's default. The object returned is exactly that class,
    not a subclass or a look-alike (careful: in torch, `AdamW` is a subclass of `Adam`). `params` is whatever
    the optimizer constructors accept (an iterable of tensors such as `model.parameters()`, or of
    param-group dicts) and is handed over as is.

    Raises `ValueError` for any other name; its message lists the five allowed names.
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor) -> float:
    """One optimisation step of `model` on the batch `(x, y)` with the mean squared error.

    The loss is the mean over ALL elements of `(model(x) - y) ** 2` (what `nn.MSELoss()` computes).
    The step computes the gradients of that loss and calls `optimizer.step()` once. Gradients already on
    the parameters when it is called (left by earlier calls, or by any other `backward()`) play no part in
    this step's update. Works with any `torch.optim.Optimizer` over `model`'s parameters, and with `model`,
    `x` and `y` on any one device (CPU or CUDA). `x` and `y` are left as they were: values and
    `requires_grad` unchanged.

    Returns this step's loss, measured BEFORE the update, as a Python `float` (not a tensor).
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    batches: list[tuple[Tensor, Tensor]],
    epochs: int,
) -> list[float]:
    """Train for `epochs` epochs over `batches`, a list of `(x, y)` pairs, and return the loss history.

    Every epoch runs `train_step(model, optimizer, x, y)` on each batch, in list order, and only then
    calls `scheduler.step()` exactly once (the schedule here counts epochs, not batches). `batches` is
    left as it was: not reordered or shuffled, its tensors unchanged.

    Returns a list of `epochs` Python floats: for each epoch, the plain mean of the losses that its
    `train_step` calls returned (every batch counts once, whatever its size). `epochs=0` returns `[]`.
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


class MomentumSGD(torch.optim.Optimizer):
    """Stochastic gradient descent with momentum and (coupled) weight decay, written by hand.

    Its updates match `torch.optim.SGD(params, lr, momentum, weight_decay=...)` with dampening 0 and no
    Nesterov, up to float rounding. For each parameter `p` of each param group, with that GROUP's own
    `lr`, `momentum` and `weight_decay`:

        g   = p.grad + weight_decay * p
        buf = g                        on the first step that updates p
        buf = momentum * buf + g       on every later one
        p  -= lr * buf

    `buf` is kept per parameter in `self.state[p]`, with `p`'s shape, dtype and device. Parameters whose
    `.grad` is None are skipped entirely: neither they nor their buffers change. The updates match
    `torch.optim.SGD` however the caller clears gradients between steps: `zero_grad()` with
    `set_to_none=True` or `False` (in place), or not at all (gradients accumulated over several
    `backward()` calls, or carried over from the last step).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        """Store the parameters and the defaults `lr`, `momentum` and `weight_decay`.

        Hand them to `torch.optim.Optimizer.__init__(params, defaults)`, which builds
        `self.param_groups` and fills each group's missing settings from `defaults`; a param group dict
        may override any of them.
        """
        raise NotImplementedError  # TODO: replace this line with your implementation

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Update every parameter that has a gradient once, as described in the class docstring.

        If `closure` is given, call it first, with gradient tracking enabled (it typically zeroes the
        gradients, recomputes the loss, calls `backward()` and returns the loss), then update using the
        gradients it produced. Returns what the closure returned, or None when there is no closure.
        The updates themselves must not be recorded by autograd (no operation of `step` outside the
        closure builds a graph), and every `.grad` is left exactly as the step found it.
        """
        raise NotImplementedError  # TODO: replace this line with your implementation
