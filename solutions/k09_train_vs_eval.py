"""train() vs eval()

Interview question: What is the difference between model.train() and model.eval()?

Difficulty 2/5, about 30 minutes, after katas 4 and 6.

The idea
========
Every `nn.Module` owns one boolean, `training`. `module.train(mode=True)` writes it on the module and on
every submodule below it; `module.eval()` is just `module.train(False)`. The flag does nothing by itself: a
layer reads `self.training` inside its own `forward`, and only a few layers care.

- Dropout: in training it zeroes each activation with probability p and scales the survivors by 1/(1-p); in
  eval it is the identity, so the expected activation is the same in both modes.
- BatchNorm: in training it normalises with the current batch's mean and variance and folds them into its
  running estimates; in eval it normalises with the running estimates and changes nothing. The update is
  `running = (1 - momentum) * running + momentum * batch_statistic`, so the default `momentum=0.1` is the
  weight of the NEW batch: the opposite convention to an optimizer's momentum, where 0.9 is the weight of the
  past. Two variances are in play: the batch is normalised with its biased variance (divided by n), while
  the running variance is fed the unbiased one (divided by n - 1).
- Linear, Conv, activations and most other layers compute the same thing in both modes.

The mode and autograd are independent switches. `eval()` does not stop autograd: outputs still carry a
`grad_fn` and keep activations alive for a backward pass. `torch.no_grad()` (or `torch.inference_mode()`)
stops the recording and changes no layer's behaviour. Inference wants both; fine-tuning with frozen BatchNorm
statistics wants eval-mode BatchNorm with gradients on.

Since every module has its own flag, "the model's mode" is really a set of flags that may differ: a common
recipe keeps pretrained BatchNorm layers in eval while the rest trains. `model.training` only reports the
root's flag. Code that borrows a model for a while (an evaluation loop, a prediction helper) should record
each submodule's flag and put each one back, rather than call `model.train()` when it is done.

What interviewers probe
=======================
- `eval()` does not turn off autograd: an eval-mode forward pass still builds a graph (and holds its
  activations in memory). Wrap inference in `torch.no_grad()` or `torch.inference_mode()` as well.
- `train()`/`eval()` never touch `requires_grad`. Freezing parameters is `requires_grad_(False)`, a separate
  switch; a "frozen" BatchNorm in train mode still overwrites its running statistics on every forward pass.
- Forgetting `eval()` at inference: Dropout makes predictions random, and BatchNorm normalises with the test
  batch's own statistics while overwriting the running statistics that training learned. In training mode
  BatchNorm needs more than one value per channel: a batch of one `(1, C)` vector into `BatchNorm1d` raises
  an error, while a single `(1, C, L)` sequence or `(1, C, H, W)` image (L or H*W above 1) goes through
  silently, normalised with its own statistics.
- Restoring modes: calling `model.train()` after evaluation flips every submodule to train mode, including
  layers that were deliberately left in eval. Save every submodule's own `training` flag and restore each one,
  in a `finally` so that an exception does not leave the model stuck in eval mode.
- Monte-Carlo dropout: keep dropout active at inference and average several stochastic passes; their
  spread is a cheap uncertainty estimate. Switch on only the dropout modules: `model.train()` would also put
  BatchNorm in training mode, so each sample would use batch statistics and change the running ones.

Your tasks
==========
1. `predict(model, x)` - the eval-mode output, without a graph; every submodule's flag restored afterwards.
2. `evaluating(model)` - a context manager: eval mode inside, each submodule's own flag restored on exit.
3. `mc_dropout_predict(model, x, samples)` - mean and std over passes with only dropout active.

Follow-up questions
===================
- Why does `BatchNorm1d` raise an error for a `(1, C)` batch in training mode but not in eval mode, and why
  does a single `(1, C, H, W)` image not raise in `BatchNorm2d`?
- How would you fine-tune a pretrained network while keeping its BatchNorm statistics fixed?
- Dropout scales the surviving activations by 1/(1-p) during training. Why there, and not at inference?
- What can you not do with a tensor created under `torch.inference_mode()` that you can do after `no_grad()`?

Grade this kata: `nox -s check -- 9`. Stuck? `nox -s hint -- 9`.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

# The module types that `mc_dropout_predict` switches on (subclasses count too).
DROPOUT_TYPES: tuple[type[nn.Module], ...] = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
)


def _training_flags(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    return [(module, module.training) for module in model.modules()]


def _restore(flags: list[tuple[nn.Module, bool]]) -> None:
    # Set each flag directly: module.train(flag) also overwrites the module's children, which is only safe
    # parent-first (the order of model.modules()).
    for module, flag in flags:
        module.training = flag


def predict(model: nn.Module, x: Tensor) -> Tensor:
    """Return `model(x)` computed in evaluation mode, without recording an autograd graph.

    Args:
        model: any module; its submodules may be in any mix of train and eval mode when it is passed in.
        x: the input batch, on the model's device.

    Returns:
        The model's output with every submodule in eval mode: Dropout is the identity and BatchNorm
        normalises with its running statistics (which are left unchanged). The output stays on the model's
        device. No autograd graph is recorded, not even for an `x` that requires grad: the output has
        `requires_grad == False` and no `grad_fn`.

    After the call, every submodule's `training` flag (the root's included) is exactly what it was before,
    even where the submodules' flags differed from each other, and also when `model(x)` raised (the
    exception propagates unchanged). Grad mode is left as it was. `x` and the model's parameters are not
    modified: neither their values nor their `requires_grad`.
    """
    with evaluating(model), torch.no_grad():
        return model(x)


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Context manager that puts the whole `model` in eval mode for the duration of a `with` block.

    Usage: `with evaluating(model) as m: ...`, where `m` is `model` itself.

    Inside the block every submodule (the root included) has `training == False`. On exit, whether the
    block finished normally or raised, every submodule's own `training` flag is restored to its value on
    entry, even where submodules differed (e.g. a BatchNorm kept in eval inside a model that trains).
    An exception raised in the block propagates unchanged: it is not swallowed.

    It changes modes only: autograd is untouched, so gradients still flow inside the block (eval() is not
    no_grad()).
    """
    flags = _training_flags(model)
    model.eval()
    try:
        yield model
    finally:
        _restore(flags)


def mc_dropout_predict(model: nn.Module, x: Tensor, samples: int) -> tuple[Tensor, Tensor]:
    """Monte-Carlo dropout: the mean and spread of `samples` stochastic forward passes of `model` on `x`.

    Runs `model(x)` exactly `samples` times with every dropout module (an instance of one of
    `DROPOUT_TYPES`: `nn.Dropout`, `nn.Dropout1d`, `nn.Dropout2d`, `nn.Dropout3d`, `nn.AlphaDropout`) in
    training mode and every other module, the root included, in eval mode, so BatchNorm uses and keeps its
    running statistics. Subclasses of those types are dropout modules too, and the model itself or a
    module nested at any depth may be one. No autograd graph is recorded, not even for an `x` that requires
    grad.

    Args:
        model: any module, with its submodules in any mix of train and eval mode.
        x: the input batch.
        samples: the number of forward passes, at least 2.

    Returns:
        `(mean, std)`: the element-wise mean and standard deviation over the samples, each shaped like one
        output of `model(x)` and on the model's device. The standard deviation is `torch.std`'s default,
        the unbiased estimate (divides by samples - 1). Neither requires grad.

    Raises:
        ValueError: if `samples < 2` (one sample has no spread), before any forward pass.

    After the call every submodule's `training` flag is exactly what it was before, also when a forward
    pass raised (the exception propagates unchanged). Grad mode is left as it was. `x` and the model's
    parameters are not modified: neither their values nor their `requires_grad`.
    """
    if samples < 2:
        raise ValueError(f"samples must be at least 2 to estimate a spread, got {samples}")
    with evaluating(model), torch.no_grad():
        for module in model.modules():
            if isinstance(module, DROPOUT_TYPES):
                module.train()
        outputs = torch.stack([model(x) for _ in range(samples)])
    return outputs.mean(dim=0), outputs.std(dim=0)
