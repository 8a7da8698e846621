"""Autograd and custom backward passes

Interview question: What is Autograd in PyTorch?

Difficulty 3/5, about 50 minutes, after katas 2 and 3.

The idea
========
Autograd is reverse-mode automatic differentiation. While the forward pass runs, every operation on a
tensor that requires grad records a node in a graph (`t.grad_fn`), keeping whatever it will need to
differentiate (its saved tensors). The graph is built anew on every forward pass, so ordinary Python control
flow just works.

A backward pass walks that graph from one output back to the leaves, applying the chain rule as
vector-Jacobian products: each node receives the gradient of the output with respect to its result and
returns the gradient with respect to its inputs. Two entry points start it:

- `loss.backward()` ADDS the gradients into the `.grad` field of every leaf that requires grad (the
  parameters). This is what optimizers read.
- `torch.autograd.grad(outputs, inputs)` RETURNS the gradients with respect to the tensors you name and
  leaves every `.grad` field alone.

By default the graph is freed after one backward pass, and the gradients it produces are plain tensors with no
graph of their own. `create_graph=True` records the backward pass too, so the gradient can be differentiated
again (second derivatives, gradient penalties).

You can stop the recording: `torch.no_grad()` switches it off for a block of code (inference, parameter
updates), and `t.detach()` returns a tensor over the same memory that is cut off from the graph.
A `torch.autograd.Function` subclass lets you write an operation's forward and backward yourself.

What interviewers probe
=======================
- Gradient accumulation: `.backward()` adds into `.grad`; forget `optimizer.zero_grad()` and every step uses
  the sum of all the gradients so far. (Handy on purpose when simulating a bigger batch.)
- `torch.no_grad()` vs `detach()`: `no_grad` stops recording for everything computed in a block (it does
  not change the model: dropout still drops in train mode - that is what `model.eval()` is for); `detach()`
  cuts one tensor off the graph and shares its memory, so an in-place write to it changes the original.
- `create_graph=True` is needed for higher-order gradients; without it the first gradient has no `grad_fn`.
  A linear f has a first derivative that does not depend on the input, and two things can happen. With a
  constant coefficient (`3 * t + 1`) the derivative is a constant with no `grad_fn` even with
  `create_graph=True`. With a coefficient that requires grad (`w * t`) the derivative is `w`: it has a
  `grad_fn` (it depends on `w`), but its graph never reaches `t`, so differentiating it with respect to `t`
  raises unless you pass `allow_unused=True` (which gives `None`). Either way the second derivative is zero.
- `torch.autograd.grad` vs `.backward()`: the first returns gradients and touches no `.grad` field; the
  second accumulates into `.grad` of leaves only (non-leaf tensors need `retain_grad()`). `allow_unused=True`
  gives `None` for an input the output does not depend on (`materialize_grads=True` gives zeros instead).
- A custom `torch.autograd.Function`: static `forward(ctx, ...)` and `backward(ctx, grad_output)`; backward
  returns one gradient per forward input, each already multiplied by `grad_output`; call it through `.apply`,
  never `forward` directly. Verify it with `torch.autograd.gradcheck` in float64.
- Tensors that backward needs go through `ctx.save_for_backward`, not `ctx.x = x` (only non-tensors, like a
  shape or a flag, belong on `ctx` as attributes). Saved tensors are checked when backward reads them: an
  in-place change made after the forward raises instead of giving a silently wrong gradient. They also avoid
  reference cycles that leak memory (saving an output on `ctx`), and they pass through saved-tensor hooks
  (`torch.autograd.graph.saved_tensors_hooks`: offloading, activation checkpointing).
- The other style (PyTorch 2.0 and later): a `forward(x)` without `ctx`, plus a static
  `setup_context(ctx, inputs, output)` that does the saving. Only that style works under the `torch.func`
  transforms (`torch.func.grad`, `jacrev`, `torch.vmap`; vmap also needs `generate_vmap_rule = True` or a
  `vmap` static method). This kata uses the combined `forward(ctx, x)`; the rules for `ctx` are the same.

Your tasks
==========
1. `derivative(f, x)` - df/dx at a point, by autograd, in float64.
2. `second_derivative(f, x)` - d2f/dx2 at a point, by differentiating the derivative.
3. `parameter_grads(model, x, y)` - the MSE gradient of every trainable parameter, leaving `.grad` alone.
4. `predict_no_grad(model, x)` - a forward pass that records no graph.
5. `stop_gradient_sum(a, b)` - `a + b` where only `a` receives gradient.
6. `SiLU` - a custom autograd Function with a hand-written backward.
7. `silu(x)` - apply `SiLU`.

Follow-up questions
===================
- What does `retain_graph=True` do, and when do you get "Trying to backward through the graph a second time"?
- Why does an in-place operation sometimes fail with "one of the variables needed for gradient computation has
  been modified by an inplace operation"?
- How does `torch.inference_mode()` differ from `torch.no_grad()`?
- How would you cut the memory a deep network keeps for its backward pass (hint: activation checkpointing)?

Grade this kata: `nox -s check -- 4`. Stuck? `nox -s hint -- 4`.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def derivative(f: Callable[[Tensor], Tensor], x: float) -> float:
    """df/dx at the point `x`, exact up to float64 rounding (autograd's answer, not a finite difference).

    `f` is a scalar function of one variable: it is called with a 0-dim `torch.float64` tensor holding `x`
    and returns a 0-dim tensor. Returns exactly a Python `float` (not a tensor, an int or a NumPy float),
    within about 1e-12 relative of the true derivative, far tighter than any finite-difference estimate.
    When `f`'s output does not depend on its input (for example `f` returns a constant tensor, which has no
    `grad_fn`, or a value computed only from other tensors, which may require grad), the derivative is
    `0.0`, not an error. No `.grad` field is created or changed on anything `f` uses (a tensor `w` that
    requires grad and appears in `f` still has `w.grad is None` afterwards).
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


def second_derivative(f: Callable[[Tensor], Tensor], x: float) -> float:
    """d2f/dx2 at the point `x`, exact up to float64 rounding (autograd's answer, not a finite difference).

    Same calling convention, return type and accuracy as `derivative`: `f` is called with a 0-dim
    `torch.float64` tensor holding `x` and returns a 0-dim tensor; the result is exactly a Python `float`.
    When the first derivative does not depend on the input (f constant or linear, e.g. `3 * t + 1`, or
    `w * t` for a tensor `w` that requires grad), the second derivative is `0.0` - no error. No `.grad`
    field is created or changed on anything `f` uses.
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


def parameter_grads(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """The gradient of the mean squared error between `model(x)` and `y`, for every trainable parameter.

    The loss is the mean over ALL elements of `(model(x) - y) ** 2`: it equals
    `torch.nn.functional.mse_loss(model(x), y)` (the default reduction), and `y` has the shape of
    `model(x)`. Returns a dict with one entry per parameter that requires grad, keyed by its name as
    `model.named_parameters()` gives it (e.g. `"0.weight"`); parameters with `requires_grad == False` are
    left out. Each value is a tensor like the parameter (shape, dtype, device, any device including `meta`)
    holding d loss / d parameter, exact up to rounding; a parameter the loss does not depend on gets a
    tensor of zeros (not `None`).

    The `.grad` field of every parameter is exactly as it was before the call: `None` stays `None`, and an
    existing gradient keeps its values (nothing is added to it, nothing is zeroed or reset). The returned
    tensors share no memory with any `.grad` field (zeroing or accumulating into `.grad` later leaves them
    unchanged, and changing them leaves `.grad` unchanged). Calling it twice gives the same result. The
    parameters' values and `requires_grad` flags, `x` and `y` are not modified.
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


def predict_no_grad(model: nn.Module, x: Tensor) -> Tensor:
    """`model(x)`, computed without recording any autograd graph.

    `model`'s forward runs once, with gradient recording off for all of it (`torch.is_grad_enabled()` is
    False inside it), so no graph is built - not built and then thrown away. The result equals `model(x)`
    and has `requires_grad == False` and `grad_fn is None`, even when `x` or the model's parameters require
    grad. Grad mode afterwards is what it was before the call (still off when the caller was already inside
    `torch.no_grad()`), also when the model raises (the exception propagates unchanged). The model's
    train/eval mode is left as it is (this is not `model.eval()`), and `x` and the parameters are not
    modified: their values and `requires_grad` flags are as before.
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


def stop_gradient_sum(a: Tensor, b: Tensor) -> Tensor:
    """`a + b` (with the usual broadcasting) whose gradient flows to `a` but not to `b`.

    The value is `a + b`, a new tensor of the broadcast shape. Backpropagating through the result gives `a`
    (and whatever `a` was computed from) its normal gradient - the result requires grad whenever `a` does -
    and gives `b` (and whatever `b` was computed from) none: no gradient, or a zero one. `a` and `b` are not
    modified: their values stay, `b` still requires grad afterwards if it did, and stays part of its own
    graph for any other use.
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


class SiLU(torch.autograd.Function):
    """SiLU (a.k.a. swish), `x * sigmoid(x)`, as a custom autograd Function with a hand-written backward.

    Applied through autograd, it matches `torch.nn.functional.silu` in value and in gradient, up to
    rounding.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        """Return SiLU of `x`, elementwise: a tensor like `x` (shape, dtype, device; `meta` included).

        `x` itself is not modified (values and `requires_grad`). What `backward` needs is saved on `ctx`:
        at least one tensor (SiLU's derivative depends on `x`), and every saved tensor goes through
        `ctx.save_for_backward(...)`; no tensor is kept as an attribute of `ctx`, directly or inside a list,
        tuple or dict (non-tensors, such as a shape or a flag, may be).
        """
        raise NotImplementedError  # TODO: replace this line with your implementation

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> Tensor:
        """The gradient with respect to forward's input `x`, given `grad_output` (that w.r.t. its result).

        Exact up to rounding: the gradient autograd gives for `torch.nn.functional.silu` (it passes
        `torch.autograd.gradcheck` in float64), shaped like `grad_output`, with its dtype and device (`meta`
        included). Finite for every finite input, including large ones like -1000 or 1000. Written by hand
        from tensor operations: no `torch.autograd.grad`, no `.backward()`, no `torch.func`, no built-in
        silu or its backward (`torch.nn.functional.silu`, `torch.ops.aten.silu_backward`); the grader
        records the calls.
        """
        raise NotImplementedError  # TODO: replace this line with your implementation


def silu(x: Tensor) -> Tensor:
    """SiLU of `x` through the `SiLU` Function above: the value `x * sigmoid(x)`, like `x`, and when `x`
    requires grad the result's `grad_fn` is a `SiLU` node, so its hand-written backward is the one that
    runs."""
    raise NotImplementedError  # TODO: replace this line with your implementation
