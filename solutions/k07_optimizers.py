"""Optimizers, momentum and LR schedules

Interview question: What are the different optimizers available in PyTorch?

Difficulty 4/5, about 80 minutes, after katas 4 and 6.

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

Around the optimizer, four tools turn it into a training recipe:

Parameter groups. An optimizer accepts a list of dicts instead of a list of tensors: each dict holds
`"params"` and the settings it overrides, and every key a group leaves out falls back to the
constructor's argument. The classic use: weight decay on weight matrices, conv kernels and embeddings,
none on biases and on the gain and shift of normalisation layers (LayerNorm, BatchNorm, GroupNorm,
RMSNorm). Those are few, set the scale and offset of a signal rather than its features, and a norm's
gain is meant to sit near 1: decay pulls it toward 0. A parameter may sit in only one group (torch
raises ValueError for one in two groups, and warns for one listed twice in a group), and a trainable
parameter left out of every group silently never trains. A popular shortcut exempts every parameter
with fewer than two dimensions (`p.ndim < 2`); it agrees with the rule "biases and norm layers" on
standard layers, and differs for a custom 1-D or 0-D parameter, such as a learned per-channel scale or a
temperature, which the shortcut exempts too. Pick a rule on purpose, and say which.

Warm-up, then cosine decay. A scheduler rewrites every group's `lr` each time its own `step()` is
called, so how often you call it defines what "one step of the schedule" means. The schedule most
transformers train with counts optimizer steps: a linear warm-up over the first W steps, from
`start_factor * lr` to `lr`, then half a cosine period down to `min_lr_ratio * lr` at step T, then flat.
As a factor of each group's initial lr, with s = start_factor and m = min_lr_ratio:

    f(t) = s + (1 - s) * t / W                                   for t < W
    f(t) = m + (1 - m) * (1 + cos(pi * (t - W) / (T - W))) / 2   for W <= t <= T
    f(t) = m                                                     for t > T

torch spells it `SequentialLR(opt, [LinearLR(opt, start_factor=s, total_iters=W),
CosineAnnealingLR(opt, T_max=T - W, eta_min=...)], milestones=[W])`, with two catches: `eta_min` is an
absolute learning rate shared by every group (not a ratio of each group's lr), and past `T_max` the
cosine climbs back up. `LambdaLR(opt, f)` multiplies each group's own initial lr by `f(t)` and has
neither catch. Warm-up exists because the first updates are the least reliable: Adam's second-moment
estimate rests on a handful of gradients, the weights are random, and a full learning rate then can
blow a transformer up. The cosine spends most of the run near the peak and lands softly at the end.

Gradient clipping. `torch.nn.utils.clip_grad_norm_(params, max_norm)` views all the gradients as ONE
vector, computes its 2-norm, and if that exceeds `max_norm` scales every gradient in place by the same
factor `max_norm / (norm + 1e-6)`, which keeps the update's direction (`clip_grad_value_` clamps each
coordinate instead, and changes it). It RETURNS the total norm measured BEFORE clipping, as a tensor:
the number worth logging, since spikes in it announce instabilities. torch computes the factor as a
tensor and clamps it to at most 1 rather than branching with `if norm > max_norm:`, because a Python
`if` on a CUDA tensor waits for the GPU (a host sync). It goes after `backward()` (the last one, when
accumulating; after `scaler.unscale_(optimizer)` under float16 AMP) and before `optimizer.step()`:
earlier there is nothing to clip, later the step has already used the raw gradient.

Gradient accumulation. A batch too big for memory can be split into k micro-batches: zero the
gradients once, run forward and backward on each micro-batch in turn (only one micro-batch's graph is
alive at a time), then clip and step once. Because `backward()` adds into `.grad`, the accumulated
gradient is the sum of the micro-batch gradients, so each micro-batch loss must be scaled so that they
sum to the big batch's loss: a mean over the big batch is `sum_i (n_i / N) * mean_i`, which is `1/k`
per micro-batch only when all have the same size. Without the scaling the gradient is k times too big:
a k-fold learning rate for SGD, and clipping that starts k times too early for every optimizer.

What interviewers probe
=======================
- zero_grad and gradient accumulation: `.grad` is summed into by every `backward()`. Skipping
  `optimizer.zero_grad()` silently trains on stale gradients; skipping it on purpose for k micro-batches
  (and scaling each loss) is gradient accumulation, the trick for a large effective batch. It matches
  the big batch only for models whose output for a row depends on that row alone: BatchNorm normalises
  with each micro-batch's own statistics.
- Where `scheduler.step()` goes: after `optimizer.step()`, and at the granularity the schedule was written
  for. Epoch-based schedules (StepLR, CosineAnnealingLR with T_max in epochs) are stepped once per epoch;
  calling them per batch decays the learning rate len(batches) times too fast. Per-step schedules
  (warm-up + cosine, OneCycleLR) are stepped once per optimizer step, which with accumulation is once
  per k micro-batches.
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
- What `clip_grad_norm_` returns (the norm before clipping, as a tensor) and where it goes (after the
  last backward, before the step); that clipping each parameter, or each micro-batch, separately is
  not clipping the gradient.
- State aliasing: an optimizer's state must be its own memory. A momentum buffer that IS `p.grad` (kept
  without a copy) is wiped by `zero_grad(set_to_none=False)`, which zeroes `.grad` in place, and grows
  with every accumulated `backward()`; with `set_to_none=True` (the default) the bug hides.
- Device: `loss.item()` works wherever the loss lives; `loss.numpy()` fails for a CUDA tensor (it needs
  `.cpu()` first), and a state tensor built with `torch.zeros(p.shape)` lands on the CPU in the default
  dtype whatever `p` is (`torch.zeros_like(p)` or `g.clone()` follow `p`). The grader checks the state's
  device, and that clipping reads nothing back to the host, on the `meta` device (tensors with a shape,
  a dtype and a device but no values); a CUDA-only bug such as `.numpy()` is caught only on a GPU.

Your tasks
==========
1. `train_step(model, optimizer, x, y)` - one MSE training step; return the loss as a float.
2. `train(model, optimizer, scheduler, batches, epochs)` - the epoch loop; return mean loss per epoch.
3. `param_groups(model, weight_decay)` - param groups for AdamW: no decay on biases and norm layers.
4. `warmup_cosine(optimizer, warmup_steps, total_steps, ...)` - a warm-up then cosine schedule.
5. `clip_grad_norm(parameters, max_norm)` - gradient clipping by total norm, written by hand.
6. `accumulated_step(model, optimizer, micro_batches, max_norm)` - one step of the big batch, one
   micro-batch at a time, clipped.
7. `MomentumSGD` - write SGD with momentum and weight decay as a `torch.optim.Optimizer` subclass.

Follow-up questions
===================
- Why might Adam generalise worse than well-tuned SGD with momentum, and what does AdamW change?
- Why exclude biases and normalisation weights from weight decay, and should embeddings be decayed?
- Why does a transformer trained with Adam need a learning-rate warm-up, and what does cosine decay buy
  over a constant learning rate?
- Clipping by norm or by value: which keeps the direction of the update, and where does clipping go
  when training with a float16 GradScaler?
- When does gradient accumulation NOT give the same update as the big batch?
- What must be saved besides the model's `state_dict` to resume training exactly where it stopped?

Grade this kata: `nox -s check -- 7`. Stuck? `nox -s hint -- 7`.
"""

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
    """One optimisation step of `model` on the batch `(x, y)` with the mean squared error.

    The loss is the mean over ALL elements of `(model(x) - y) ** 2` (what `nn.MSELoss()` computes).
    The step computes the gradients of that loss and calls `optimizer.step()` once. Gradients already on
    the parameters when it is called (left by earlier calls, or by any other `backward()`) play no part in
    this step's update. Works with any `torch.optim.Optimizer` over `model`'s parameters, and with `model`,
    `x` and `y` on any one device (CPU or CUDA). `x` and `y` are left as they were: values and
    `requires_grad` unchanged.

    Returns this step's loss, measured BEFORE the update, as a Python `float` (not a tensor).
    """
    optimizer.zero_grad()
    loss = ((model(x) - y) ** 2).mean()
    loss.backward()
    optimizer.step()
    return loss.item()


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
    history = []
    for _ in range(epochs):
        losses = [train_step(model, optimizer, x, y) for x, y in batches]
        scheduler.step()
        history.append(sum(losses) / len(losses))
    return history


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Parameter groups for `torch.optim.AdamW(groups, lr=...)`: decay everywhere but biases and norm layers.

    Which parameters are exempt (weight decay 0.0):
    - every parameter of a normalisation layer: a module that is an instance of one of `NORM_LAYERS`
      (subclasses included), whatever its parameters are called or the module is named;
    - every parameter that a module registers under the name `bias`.
    Every other trainable parameter gets `weight_decay`, whatever its shape: weight matrices, conv
    kernels, embedding tables, and the 1-D or 0-D parameters of custom modules alike.

    Returns a list of dicts that `torch.optim.AdamW` accepts as they are. Each dict has exactly two keys:
    `"params"`, a list of the model's own parameter tensors (the objects themselves, not copies), and
    `"weight_decay"`, a float. Every trainable parameter (`requires_grad=True`) of `model`, its own and
    its submodules', appears exactly once over all the groups, a parameter shared by two modules (tied
    weights) included; frozen parameters appear in none. Within each group, parameters keep the order
    of `model.parameters()`. How many groups (empty ones included) is up to you. `model` is left as it
    was: parameter values, `requires_grad` and `.grad` unchanged.
    """
    exempt: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if isinstance(module, NORM_LAYERS) or name == "bias":
                exempt.add(id(p))
    trainable = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in trainable if id(p) not in exempt], "weight_decay": float(weight_decay)},
        {"params": [p for p in trainable if id(p) in exempt], "weight_decay": 0.0},
    ]


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int,
    total_steps: int,
    start_factor: float = 0.1,
    min_lr_ratio: float = 0.0,
) -> torch.optim.lr_scheduler.LRScheduler:
    """A scheduler over `optimizer`: a linear warm-up for `warmup_steps` steps, then a cosine decay.

    It is meant to be stepped once per optimizer step; t counts the `step()` calls made on it so far
    (t = 0 right after it is built). At every t, the `"lr"` of every param group of `optimizer` is that
    group's initial lr (its `"lr"` when the scheduler is built) times one factor f(t), the same for all
    groups, where f:
    - rises linearly from `start_factor` at t = 0 to 1 at t = `warmup_steps` (no warm-up when
      `warmup_steps` is 0: f(0) = 1);
    - falls from 1 at t = `warmup_steps` to `min_lr_ratio` at t = `total_steps` along half a period of a
      cosine (flat at both ends, steepest halfway);
    - stays at `min_lr_ratio` for every t >= `total_steps`.
    With a single param group, f(t) * lr equals, step for step up to `total_steps`, the lr of torch's
    `SequentialLR(optimizer, [LinearLR(optimizer, start_factor, total_iters=warmup_steps),
    CosineAnnealingLR(optimizer, T_max=total_steps - warmup_steps, eta_min=min_lr_ratio * lr)],
    milestones=[warmup_steps])`. Values are compared at a relative tolerance of 1e-9.

    Returns a `torch.optim.lr_scheduler.LRScheduler` (a subclass). Building it sets every group's lr for
    t = 0 and changes nothing else that matters: the parameters and the optimizer's state are untouched.
    Raises `ValueError` unless `0 <= warmup_steps < total_steps`, `0 < start_factor <= 1` and
    `0 <= min_lr_ratio <= 1`.
    """
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"need 0 <= warmup_steps < total_steps, got {warmup_steps} and {total_steps}")
    if not 0 < start_factor <= 1:
        raise ValueError(f"start_factor must be in (0, 1], got {start_factor}")
    if not 0 <= min_lr_ratio <= 1:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")

    def factor(t: int) -> float:
        if t < warmup_steps:
            return start_factor + (1 - start_factor) * t / warmup_steps
        progress = min(t - warmup_steps, total_steps - warmup_steps) / (total_steps - warmup_steps)
        return min_lr_ratio + (1 - min_lr_ratio) * (1 + math.cos(math.pi * progress)) / 2

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def clip_grad_norm(parameters: Tensor | Iterable[Tensor], max_norm: float) -> Tensor:
    """Clip the gradients of `parameters` to a total 2-norm of at most `max_norm`; return the norm before.

    Equivalent to `torch.nn.utils.clip_grad_norm_(parameters, max_norm)` (the 2-norm), which is the point
    of the task to write: it must not call anything from `torch.nn.utils.clip_grad` (`clip_grad_norm_`,
    `get_total_norm`, `clip_grads_with_norm_`; the grader checks).
    - `parameters` is a tensor, or an iterable of tensors such as `model.parameters()` (a generator,
      which can be iterated only once). Tensors whose `.grad` is None are ignored.
    - The total norm is the 2-norm of all the gradients taken together, as one vector.
    - When it exceeds `max_norm`, every gradient is multiplied by one common factor so that the total
      norm becomes `max_norm` (torch's factor `max_norm / (norm + 1e-6)` is accepted, and so is
      `max_norm / norm`); otherwise every gradient is left exactly as it was.
    - Gradients are changed in place: each `p.grad` stays the same tensor object. Parameters are not.
    - Nothing is read back to the host (no Python number or `bool` from a tensor): it runs on the `meta`
      device, whose tensors have no values, and on a GPU it never waits for one.

    Returns the total norm BEFORE clipping as a 0-dim tensor with the gradients' dtype and device (a
    0-dim tensor equal to 0 when no tensor has a gradient).
    """
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale)
    return total


def accumulated_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: list[tuple[Tensor, Tensor]],
    max_norm: float | None = None,
) -> tuple[float, float]:
    """One optimizer step on the big batch made of `micro_batches`, computed one micro-batch at a time.

    `micro_batches` is a non-empty list of `(x, y)` pairs, of possibly different sizes (rows); the big
    batch is their concatenation along dim 0, and its loss is the mean over ALL its elements of
    `(model(x) - y) ** 2`, as in `train_step`. Graded, for any optimizer and any micro-batch sizes, for a
    model whose output row depends on its input row alone:
    - The parameters afterwards equal, up to float rounding, those after ONE step of the same optimizer
      on the big batch, with the big batch's gradient clipped to a total 2-norm of at most `max_norm`
      first (as `torch.nn.utils.clip_grad_norm_` clips it) when `max_norm` is not None. Gradients already
      on the parameters when it is called play no part.
    - Memory: `model` is called once per micro-batch, on that micro-batch's `x` alone, in list order,
      and each micro-batch's backward pass is done before the next micro-batch's forward pass, so only
      one micro-batch's graph is ever alive. `optimizer.step()` is called exactly once.
    - `micro_batches` and its tensors are left as they were (values and `requires_grad`). Works with
      `model` and the data on any one device (CPU or CUDA).

    Returns `(loss, grad_norm)`, two Python floats: the big batch's loss before the update, and the
    total 2-norm of the big batch's gradient BEFORE clipping (also when `max_norm` is None).
    Raises `ValueError` for an empty `micro_batches`.
    """
    if not micro_batches:
        raise ValueError("micro_batches is empty: there is nothing to step on")
    total_rows = sum(x.shape[0] for x, _ in micro_batches)
    optimizer.zero_grad()
    big_batch_loss = 0.0
    for x, y in micro_batches:
        # Weighted by its share of the rows, so that the micro-batch losses (and gradients) add up to
        # the big batch's mean; detached, so that the running total keeps no graph alive.
        loss = ((model(x) - y) ** 2).mean() * (x.shape[0] / total_rows)
        loss.backward()
        big_batch_loss = big_batch_loss + loss.detach()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = clip_grad_norm(params, math.inf if max_norm is None else max_norm)
    optimizer.step()
    return float(big_batch_loss), grad_norm.item()


class MomentumSGD(torch.optim.Optimizer):
    """Stochastic gradient descent with momentum and (coupled) weight decay, written by hand.

    Its updates match `torch.optim.SGD(params, lr, momentum=momentum, weight_decay=weight_decay)` (no
    dampening, no Nesterov) step for step, up to float rounding, using each param GROUP's own `lr`,
    `momentum` and `weight_decay` as they are at the time of each step (a scheduler may change them).

    State: a momentum buffer per parameter (when momentum is used), kept in `self.state[p]`, with `p`'s
    shape, dtype and device, and its own memory. Parameters whose `.grad` is None are skipped entirely:
    neither they nor their state change, and a parameter's buffer starts on ITS first update. The updates
    match `torch.optim.SGD` however the caller clears gradients between steps: `zero_grad()` with
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
        """Take the parameters (tensors or group dicts) and the defaults `lr`, `momentum`, `weight_decay`.

        Afterwards `self.param_groups` is torch's usual list of group dicts, each with its `"params"` and
        its `"lr"`, `"momentum"` and `"weight_decay"`: a group dict's own value wins, a missing one is
        the constructor's argument.
        """
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Update every parameter that has a gradient once, as described in the class docstring.

        If `closure` is given, it is called once, before the update and with gradient tracking enabled
        (even if `step` itself is called under `torch.no_grad()`); it typically zeroes the gradients,
        recomputes the loss, calls `backward()` and returns the loss, and the update uses the gradients it
        produced. Returns what the closure returned, or None when there is no closure.
        The updates themselves are not recorded by autograd (no operation of `step` outside the closure
        builds a graph; parameters stay leaves), and every `.grad` is left exactly as the step found it.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.no_grad():
            for group in self.param_groups:
                lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    g = p.grad
                    if weight_decay != 0:
                        g = g + weight_decay * p
                    state = self.state[p]
                    if momentum != 0:
                        if "momentum_buffer" not in state:
                            state["momentum_buffer"] = g.clone()
                        else:
                            state["momentum_buffer"].mul_(momentum).add_(g)
                        g = state["momentum_buffer"]
                    p.sub_(lr * g)
        return loss
