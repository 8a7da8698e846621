"""train() vs eval()

Interview question: What is the difference between model.train() and model.eval()?

Difficulty 3/5, about 70 minutes, after katas 4 and 6.

The idea
========
Every `nn.Module` owns one boolean, `training`. `module.train(mode=True)` writes it on the module and on
every submodule below it; `module.eval()` is just `module.train(False)`. The flag does nothing by itself: a
layer reads `self.training` inside its own `forward`, and only a few layers care.

- Dropout: in training it zeroes each activation with probability p and scales the survivors by 1/(1-p); in
  eval it is the identity, so the expected activation is the same in both modes.
- BatchNorm: per channel, it subtracts a mean, divides by a standard deviation, then applies a learned
  scale gamma (`weight`) and shift beta (`bias`): `y = (x - mean) / sqrt(var + eps) * gamma + beta`. The
  statistics are taken over every axis except the channel axis, dim 1: over N for an `(N, C)` input, over
  N and L for `(N, C, L)`, over N, H and W for images. In training they are the current batch's, and they
  are folded into running estimates kept as buffers (saved in the `state_dict`, moved by `.to()`, never
  trained): `running = (1 - momentum) * running + momentum * batch_statistic`, so the default
  `momentum=0.1` is the weight of the NEW batch: the opposite convention to an optimizer's momentum, where
  0.9 is the weight of the past. Two variances are in play: the batch is normalised with its biased
  variance (divided by n, the variance of exactly these values), while the running variance is fed the
  unbiased one (divided by n - 1, an estimate of the variance of the whole population that inference will
  see). `momentum=None` swaps the exponential average for a cumulative one, in which every batch seen so
  far weighs the same; the buffer `num_batches_tracked` counts the training batches, which is what that
  average needs. In eval mode BatchNorm normalises with the running estimates and changes nothing.
  `track_running_stats=False` keeps no estimates at all: batch statistics in both modes.
- Linear, Conv, activations and most other layers compute the same thing in both modes.

The mode and autograd are independent switches. `eval()` does not stop autograd: outputs still carry a
`grad_fn` and keep activations alive for a backward pass. `torch.no_grad()` (or `torch.inference_mode()`)
stops the recording and changes no layer's behaviour. Inference wants both; fine-tuning with frozen BatchNorm
statistics wants eval-mode BatchNorm with gradients on. In training mode BatchNorm's gradient also flows
through the batch mean and variance, since every output depends on every value in its channel: that is
what couples the samples of a batch, and what makes the backward pass more than a per-element scale.

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
- BatchNorm's numbers: which variance goes where, what `momentum` weighs, what `momentum=None` means, and
  that a running statistic is state updated inside `forward`: it is data, not part of the autograd graph
  (a buffer that kept the graph would keep every earlier batch's activations alive).
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
4. `MyBatchNorm1d` - BatchNorm written by hand, train and eval mode and running statistics included, equal
   to `nn.BatchNorm1d`.

Follow-up questions
===================
- Why does `BatchNorm1d` raise an error for a `(1, C)` batch in training mode but not in eval mode, and why
  does a single `(1, C, H, W)` image not raise in `BatchNorm2d`?
- How would you fine-tune a pretrained network while keeping its BatchNorm statistics fixed?
- Dropout scales the surviving activations by 1/(1-p) during training. Why there, and not at inference?
- What can you not do with a tensor created under `torch.inference_mode()` that you can do after `no_grad()`?
- Why can BatchNorm's running statistics be stale at the end of training, or after averaging the weights of
  several checkpoints, and how do you recompute them?

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


def predict(model: nn.Module, x: Tensor) -> Tensor:
    """The output `model` gives for `x` in evaluation mode, with no autograd graph recorded.

    Args:
        model: any module; its submodules may be in any mix of train and eval mode when it is passed in.
        x: the input batch, on the model's device.

    Returns:
        The output of the forward pass with every submodule (the root included) in eval mode: Dropout is
        the identity and BatchNorm normalises with its running statistics, which are left unchanged. The
        output stays on the model's device. No autograd graph is recorded at any point, not even for an
        `x` that requires grad: the output has `requires_grad == False` and no `grad_fn`, and no
        intermediate result requires grad either (detaching the output afterwards does not count).

    After the call, every submodule's `training` flag (the root's included) is exactly what it was before,
    even where the submodules' flags differed from each other, and also when the forward pass raised (the
    exception propagates unchanged). Grad mode is left as it was. `x` and the model's parameters are not
    modified: neither their values nor their `requires_grad`.
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Context manager: the whole `model` is in eval mode for the duration of a `with` block.

    Usage: `with evaluating(model) as m: ...`, where `m` is `model` itself.

    Inside the block every submodule (the root included) has `training == False`. On exit, whether the
    block finished normally or raised, every submodule's own `training` flag is back to its value on
    entry, even where submodules differed (e.g. a BatchNorm kept in eval inside a model that trains) and
    even where the block itself changed some flags. An exception raised in the block propagates
    unchanged: it is not swallowed.

    It changes modes only: grad mode is untouched, so autograd records and gradients flow inside the block
    as they would outside it.
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


def mc_dropout_predict(model: nn.Module, x: Tensor, samples: int) -> tuple[Tensor, Tensor]:
    """Monte-Carlo dropout: the mean and spread of `samples` stochastic forward passes of `model` on `x`.

    The model runs on `x` exactly `samples` times, each pass with fresh dropout masks: every dropout module
    (an instance of one of `DROPOUT_TYPES`: `nn.Dropout`, `nn.Dropout1d`, `nn.Dropout2d`, `nn.Dropout3d`,
    `nn.AlphaDropout`, subclasses included, the model itself or a module nested at any depth) is in
    training mode during the passes, and every other module, the root included, in eval mode, so
    BatchNorm uses and keeps its running statistics. No autograd graph is recorded at any point, not even
    for an `x` that requires grad.

    Args:
        model: any module, with its submodules in any mix of train and eval mode.
        x: the input batch.
        samples: the number of forward passes, at least 2.

    Returns:
        `(mean, std)`: the element-wise mean and the element-wise unbiased standard deviation (divided by
        samples - 1, as `torch.std` computes by default) over the samples, each shaped like one output of
        the model and on the model's device. Neither requires grad.

    Raises:
        ValueError: if `samples < 2` (one sample has no spread), before any forward pass.

    After the call every submodule's `training` flag is exactly what it was before, also when a forward
    pass raised (the exception propagates unchanged). Grad mode is left as it was. `x` and the model's
    parameters are not modified: neither their values nor their `requires_grad`.
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


class MyBatchNorm1d(nn.Module):
    """Batch normalisation over the channels of an `(N, C)` or `(N, C, L)` input, written by hand.

    A drop-in for `nn.BatchNorm1d`: built with the same arguments, holding the same parameters and
    buffers, and in the same state, it returns the same outputs, produces the same gradients and makes the
    same buffer updates as `nn.BatchNorm1d`, forward pass after forward pass, in train and in eval mode.
    It may not call torch's own batch norm (`nn.BatchNorm1d`, `F.batch_norm`, `torch.batch_norm` or any
    other `*batch_norm*` op) nor another normalisation function (`layer_norm`, `instance_norm`,
    `group_norm`): the grader records the torch calls its `forward` makes.

    State: names, shapes, dtypes and devices exactly as `nn.BatchNorm1d`'s, so the two have the same
    `state_dict()` keys and each one's `load_state_dict` accepts the other's state dict:

    - with `affine=True`, the parameters `weight` (all ones) and `bias` (all zeros), shape
      `(num_features,)`; with `affine=False`, no parameters, and the attributes `weight` and `bias` are
      None;
    - with `track_running_stats=True`, the buffers `running_mean` (zeros) and `running_var` (ones), shape
      `(num_features,)`, and `num_batches_tracked`, a 0-dim int64 tensor holding 0; with
      `track_running_stats=False`, no buffers, and those three attributes are None;
    - floating-point parameters and buffers have dtype `dtype` (None: the default dtype), and all of them
      are on `device` (None: the CPU).

    The attributes `num_features`, `eps`, `momentum`, `affine` and `track_running_stats` hold the
    constructor's arguments, and the forward pass reads `eps` and `momentum` from them, so changing
    `bn.momentum` later takes effect, as it does for torch's module.

    The forward pass (`bn(x)`, x of shape `(N, C)` or `(N, C, L)` with C == num_features):

    - returns a tensor of `x`'s shape, dtype and device; `x` itself is not modified;
    - in train mode normalises with the statistics of this batch and, when the module tracks running
      statistics, updates `running_mean`, `running_var` and `num_batches_tracked` as `nn.BatchNorm1d`
      does, for a given `momentum` and for `momentum=None` (a cumulative average);
    - in eval mode normalises with the running statistics and changes no buffer; a module without
      running statistics uses the batch's statistics in eval mode too;
    - gradients reach `x`, `weight` and `bias` as through `nn.BatchNorm1d` (in train mode, through the
      batch statistics too); the buffers never require grad nor carry an autograd graph.

    It raises ValueError, as `nn.BatchNorm1d` does, for an input that is neither 2-D nor 3-D, and when it
    needs batch statistics but each channel has a single value (`(1, C)` or `(1, C, 1)`); what the
    buffers hold after that error is not graded.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """Create the parameters, buffers and attributes described above (call `super().__init__()` first).

        The arguments mean what `nn.BatchNorm1d`'s arguments of the same names mean.
        """
        raise NotImplementedError  # TODO: replace this line with your implementation

    def forward(self, x: Tensor) -> Tensor:
        """Normalise `x`, `(N, C)` or `(N, C, L)`, per channel; see the class docstring for what is graded."""
        raise NotImplementedError  # TODO: replace this line with your implementation
