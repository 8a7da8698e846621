"""Define-by-run graphs

Interview question: What is the difference between PyTorch and TensorFlow?

The idea
========
The deepest difference is *when the graph exists*. TensorFlow 1 was define-and-run: you first
described a static graph, then fed data through it in a session. PyTorch is define-by-run: the
graph autograd differentiates is recorded while your `forward` executes, one operation at a time,
and thrown away after `backward`. So each call may take a different path: loop a data-dependent
number of times, branch per sample, call a submodule twice to share its weights. TensorFlow 2
made eager execution the default too, and recovers graphs with `tf.function`; PyTorch recovers
them with `torch.compile` / `torch.export`. Today the honest comparison is ecosystem and
deployment story (Keras, TF Serving and TFLite vs TorchServe, ExecuTorch, ONNX) more than
capability.

Because the model is plain Python, you can inspect it with plain Python too. Forward hooks
(`module.register_forward_hook(fn)`) run `fn(module, inputs, output)` after a module's forward,
and return a handle whose `.remove()` detaches the hook again.

What interviewers probe
=======================
- Weight sharing is just calling the same module again; autograd sums the gradients of every use.
- Data-dependent control flow (`if x.sum() > 0`) works in eager mode but is exactly what graph
  capture (`torch.jit.trace`, `torch.export`) has to special-case: tracing records one path only.
- A branch that no sample took contributes no gradient: its parameters' `.grad` stays None (or
  zero if you computed it and masked the result).
- Hooks are global side effects on a module: always remove them, also when forward raises
  (`try`/`finally`), or they keep firing, and keep references alive, forever.

Your tasks
==========
1. `RepeatNet` - apply one shared layer a caller-chosen number of times.
2. `GatedNet` - route every row through one of two layers, decided by the data.
3. `record_output_shapes(model, x)` - use forward hooks to see what each leaf module produced.

Follow-up questions
===================
- What does `torch.jit.trace` record for `RepeatNet` called with `repeats=3`, and what goes wrong next?
- How would you batch `GatedNet` so that each branch runs once per call, not once per row?
- Where does TensorFlow 2's `tf.function` stand between define-by-run and define-and-run?
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
        """
        goes_positive = x.sum(dim=1, keepdim=True) > 0
        return torch.where(goes_positive, self.positive(x), self.negative(x))


def record_output_shapes(model: nn.Module, x: Tensor) -> dict[str, tuple[int, ...]]:
    """Run `model(x)` once and report the output shape of every leaf module that ran.

    - Keys: the qualified name of every submodule without children that ran during the call, as
      `model.named_modules()` spells it (e.g. "0", "encoder.fc1"); the model itself is a key
      only when it has no children.
    - Values: the shape of that module's output tensor as a tuple of ints; for a module that runs
      more than once, its last output. Modules whose output is not a tensor are left out.
    - Afterwards the model's hooks are exactly those it had before, also when the forward pass
      raises (the exception propagates to the caller).
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
