"""Define-by-run graphs

Interview question: What is the difference between PyTorch and TensorFlow?

Difficulty 3/5, about 50 minutes, after kata 1.

The idea
========
The deepest difference is *when the graph exists*. TensorFlow 1 was define-and-run: you first
described a static graph, then fed data through it in a session. PyTorch is define-by-run: the
graph autograd differentiates is recorded while your `forward` executes, one operation at a time,
and thrown away after `backward`. So each call may take a different path: loop a data-dependent
number of times, branch per sample, call a submodule twice to share its weights.

Today both run eagerly by default (TensorFlow 2 made eager the default), and both recover a graph
when asked. The real difference is what happens to Python control flow that depends on a tensor's
value (`if x.sum() > 0`, `while loss > tol`) during capture:
- TensorFlow's `tf.function` runs AutoGraph, which rewrites such `if`/`while` statements in your
  source into graph ops (`tf.cond`, `tf.while_loop`), so one graph holds both paths.
- `torch.compile` does not rewrite your code: at a data-dependent branch it makes a *graph break*,
  runs that bit in ordinary Python and compiles the pieces around it - always correct, less fused.
  A branch on a plain Python value (an int argument, a shape) is specialised instead: the compiler
  follows the path taken, guards on the value and recompiles when it changes.
- `torch.export` wants one whole graph with no Python left, so a data-dependent branch is an
  error there (`GuardOnDataDependentSymNode`: it cannot guard on a value it does not know) until
  you write it as `torch.cond(pred, true_fn, false_fn, operands)`.

`torch.cond` is the `if` that capture can keep: `pred` is a one-element boolean tensor, and both
branches take the same operands and return tensors of the same shapes and dtypes. Run eagerly it
calls one branch; captured, it records both branches as subgraphs and the choice between them as
one graph op, so the exported program decides at run time - what AutoGraph's `tf.cond` gives
TensorFlow. The other way out is to have no branch at all: compute both sides and select with
`torch.where`, paying for both every time.

The rest of the comparison is ecosystem, and it moves. JAX (functional, traced and compiled with
`jax.jit`; branches written as `lax.cond`) is the third framework to name. Keras 3 is no longer
TensorFlow-only: it runs on TensorFlow, JAX or PyTorch. TensorFlow Lite is now LiteRT, which also
runs models converted from PyTorch and JAX. On the PyTorch side, TorchServe is in limited
maintenance (no planned updates); deployment goes through `torch.export` to ExecuTorch (devices),
AOTInductor (servers) or ONNX, and TorchScript is deprecated in favour of `torch.export`.

Because the model is plain Python, you can inspect it with plain Python too. Forward hooks
(`module.register_forward_hook(fn)`) run `fn(module, inputs, output)` after a module's forward,
and return a handle whose `.remove()` detaches the hook again.

What interviewers probe
=======================
- Weight sharing is just calling the same module again; autograd sums the gradients of every use.
- Data-dependent control flow (`if x.sum() > 0`) just works in eager mode; capture is where it
  costs: a graph break in `torch.compile`, an error in `torch.export` (use `torch.cond`), and the
  deprecated `torch.jit.trace` records only the path the example input took (with a
  `TracerWarning` that is easy to miss).
- A branch that no sample took contributes no gradient: its parameters' `.grad` stays None (or
  zero if you computed it and masked the result).
- Hooks are side effects on a module: always remove them, also when forward raises
  (`try`/`finally`), or they keep firing, and keep references alive, forever. A *global* hook
  (`torch.nn.modules.module.register_module_forward_hook`) fires for every module of every model
  in the process: one left behind keeps firing for everything that runs after you.

Your tasks
==========
1. `RepeatNet` - apply one shared layer a caller-chosen number of times.
2. `GatedNet` - route every row through one of two layers, decided by the data.
3. `ExportableGate` - route the whole batch by its data, in a form `torch.export` captures with
   both branches in the graph. Its eager, define-by-run version is a plain Python `if`:

       if x.sum() > 0:                  # eager: fine; torch.compile: a graph break;
           return self.positive(x)      # torch.export: an error
       return self.negative(x)

4. `record_output_shapes(model, x)` - use forward hooks to see what each leaf module produced.

Devices: the grader checks `RepeatNet` and `record_output_shapes` on the `meta` device (tensors
with a shape but no data), which catches results built on the wrong device on any machine.
`GatedNet` and `ExportableGate` read values to route, which meta tensors do not have, so keeping
their routing on the input's device (a mask built on the CPU for a CUDA input, say) is checked
only on a CUDA machine (the `cuda` tests).

Follow-up questions
===================
- What does `torch.compile` do with `RepeatNet`'s loop when `repeats=3`, and what happens on the
  next call with `repeats=4`? What would `torch.export` give you for `repeats=3`?
- How would you batch `GatedNet` so that each branch runs once per call, not once per row? Which
  version of it can `torch.export` capture without `torch.cond`?
- When would you write `ExportableGate` with `torch.cond`, and when with `torch.where`? What does
  each cost, and what does each do to the gradients of the layer that was not used?
- Where does TensorFlow 2's `tf.function` (with AutoGraph) stand between define-by-run and
  define-and-run?
- Why do hooks return a handle instead of offering `module.unregister_hook(fn)`?

Grade this kata: `nox -s check -- 2`. Stuck? `nox -s hint -- 2`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RepeatNet(nn.Module):
    """One `nn.Linear(features, features)` applied a caller-chosen number of times, sharing its weights."""

    def __init__(self, features: int) -> None:
        """Hold one layer, `self.layer = nn.Linear(features, features)`, and nothing else trainable."""
        super().__init__()
        self.layer = nn.Linear(features, features)

    def forward(self, x: Tensor, repeats: int) -> Tensor:
        """Apply `relu(self.layer(x))` `repeats` times, feeding each result into the next.

        The same `self.layer` (the same weights) is used every time; `repeats` may differ on every
        call; `repeats == 0` returns `x` unchanged.
        - The output has `x`'s dtype and device (those of the layer, once the module is moved there
          with `.to(...)`, the `meta` device included).
        - Gradients are those of `torch.relu`: 0 where the layer's output is exactly 0.
        - Leaves `x` (values and `requires_grad`) and the parameters' existing `.grad` alone:
          `backward` accumulates into `.grad` as usual.
        """
        for _ in range(repeats):
            x = torch.relu(self.layer(x))
        return x


class GatedNet(nn.Module):
    """Routes each row through one of two layers, chosen by the sign of the row's sum."""

    def __init__(self, features: int) -> None:
        """Hold `self.positive` and `self.negative`, each `nn.Linear(features, features)`."""
        super().__init__()
        self.positive = nn.Linear(features, features)
        self.negative = nn.Linear(features, features)

    def forward(self, x: Tensor) -> Tensor:
        """Map `x` of shape `(batch, features)` to `(batch, features)`.

        Row `i` of the output is `self.positive(x[i])` when `x[i].sum() > 0`, else
        `self.negative(x[i])` (a sum of exactly 0 goes to `negative`). Whether the branch a row did
        not take is also computed is up to you; a branch no row used may end with a zero gradient or
        none.
        - The output has `x`'s dtype and device (those of the layers, once the module is moved
          there with `.to(...)`).
        - Gradients reach `x` (when it requires grad) through the branch each row took.
        - Leaves `x` (values and `requires_grad`) and the parameters' existing `.grad` alone.
        """
        goes_positive = x.sum(dim=1, keepdim=True) > 0
        return torch.where(goes_positive, self.positive(x), self.negative(x))


class ExportableGate(nn.Module):
    """Routes the whole batch through one of two layers, by the sign of the batch's sum."""

    def __init__(self, features: int) -> None:
        """Hold `self.positive` and `self.negative`, each `nn.Linear(features, features)`, nothing else."""
        super().__init__()
        self.positive = nn.Linear(features, features)
        self.negative = nn.Linear(features, features)

    def forward(self, x: Tensor) -> Tensor:
        """Map `x` of shape `(batch, features)` to `self.positive(x)` or `self.negative(x)`.

        One decision for the whole batch: `positive` when `x.sum() > 0`, else `negative` (a sum of
        exactly 0 goes to `negative`).
        - `torch.export.export(gate, (x,))` succeeds for any such example `x`, and the exported
          program (its `.module()`) gives the eager result for every input of the example's shape,
          whichever branch that input takes - not only the branch the example took.
        - The output has `x`'s dtype and device (those of the layers, once the module is moved there
          with `.to(...)`).
        - Gradients reach `x` (when it requires grad) and the parameters of the layer that was used;
          the other layer's parameters end with a zero gradient or none.
        - Leaves `x` (values and `requires_grad`) and the parameters' existing `.grad` alone:
          `backward` accumulates into `.grad` as usual.
        """
        return torch.cond(x.sum() > 0, self.positive, self.negative, (x,))


def record_output_shapes(model: nn.Module, x: Tensor) -> dict[str, tuple[int, ...]]:
    """Run `model(x)` once and report the output shape of every leaf module that ran.

    - Keys: the qualified name of every submodule without children that ran during the call, as
      `model.named_modules()` spells it (e.g. "0", "encoder.fc1"); the model itself is a key
      only when it has no children.
    - Values: the shape of that module's output tensor as a tuple of ints; for a module that runs
      more than once, its last output. Modules whose output is not a tensor are left out.
    - A module's output counts as a tensor when it is an instance of `Tensor`, subclasses such as
      `nn.Parameter` included.
    - The model runs exactly once. Only shapes are read, so it works on any device, the `meta`
      device (shapes without data) included.
    - Afterwards the model's hooks are exactly those it had before, also when the forward pass
      raises (the exception propagates to the caller); no global hook
      (`torch.nn.modules.module.register_module_forward_hook` and friends) is left registered.
    - Leaves the model's training mode (and every submodule's) as it was.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []

    def recorder(name: str):
        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            if isinstance(output, Tensor):
                shapes[name] = tuple(output.shape)

        return hook

    try:
        for name, module in model.named_modules():
            if next(module.children(), None) is None:
                handles.append(module.register_forward_hook(recorder(name)))
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return shapes
