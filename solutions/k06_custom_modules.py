"""Custom nn.Modules, buffers, state_dict

Interview question: Explain torch.nn.Module and how to create custom modules.

Difficulty 2/5, about 40 minutes, after katas 2 and 4.

The idea
========
An `nn.Module` is a container with bookkeeping. You subclass it, call `super().__init__()` first, create your
pieces in `__init__` and write the computation in `forward`; calling `model(x)` runs `forward` (plus hooks).

The bookkeeping happens in `__setattr__`: assigning an `nn.Parameter` to `self.something` registers a
parameter, assigning an `nn.Module` registers a child, and `self.register_buffer(name, tensor)` registers a
buffer. Everything the framework does for you walks those registries, recursively through the children:

- `parameters()` / `named_parameters()` - what an optimizer updates (each shared parameter once);
- `buffers()` - state that is saved and moved but not trained (BatchNorm's running statistics, counters);
- `state_dict()` / `load_state_dict()` - parameters plus persistent buffers, keyed by attribute path
  (`"fc1.weight"`, `"members.0.bias"`);
- `.to(device_or_dtype)`, `.cuda()`, `.half()` - move or cast every parameter and buffer in place (a dtype
  cast touches only floating-point and complex tensors: an integer buffer, such as BatchNorm's
  `num_batches_tracked`, keeps its dtype and only moves device);
- `.train()` / `.eval()` - set the `training` flag on the module and every child (Dropout and BatchNorm read
  it); `.requires_grad_(False)` - freeze every parameter.

Anything the registries cannot see - a tensor stored as a plain attribute, modules kept in a Python list or
dict - is invisible to all of the above. That is why containers exist: `nn.ModuleList`, `nn.ModuleDict`,
`nn.Sequential`, `nn.ParameterList`.

What interviewers probe
=======================
- Parameter registration happens on attribute assignment, and only after `super().__init__()` (before it
  you get "cannot assign module before Module.__init__() call"). A plain tensor attribute is not a parameter.
- `nn.ModuleList` versus a plain Python list: `self.layers = [nn.Linear(...), ...]` hides the layers from
  `parameters()` (the optimizer never trains them), from `state_dict()` (they are never saved) and from
  `.to()` / `.eval()` (they keep their device, dtype and training mode). `parameters()`, `state_dict()` and
  `.eval()` miss them silently: no error, just a model that does not learn, a checkpoint without those
  weights, Dropout still on in eval. `.to()` shows it: after `model.to("cuda")` or `model.double()` the
  forward pass feeds moved inputs into layers that stayed behind and raises a device or dtype mismatch.
- Buffers versus parameters: running statistics belong in `register_buffer`, so they are saved and moved
  with the model but get no gradient and are not handed to the optimizer. Making them `nn.Parameter`s lets
  weight decay and the optimizer change them; making them plain attributes loses them on save and `.to()`.
- `state_dict()` is an ordered dict of tensors (parameters and persistent buffers, not the code); save
  that rather than the pickled model. Since PyTorch 2.6 `torch.load` defaults to `weights_only=True`: it
  loads tensors and plain containers (a state_dict) but refuses a pickled `nn.Module`, which needs
  `weights_only=False` - unpickling can run arbitrary code, so only for files you trust.
  `load_state_dict` is strict by default about missing/unexpected keys.
- Freezing (`requires_grad = False`) and `eval()` are different things: one stops gradients, the other
  switches Dropout/BatchNorm behaviour. BatchNorm in eval mode uses its running statistics, so each row's
  output no longer depends on the rest of the batch, and a batch of one works.

Your tasks
==========
1. `CustomNetwork` - Linear -> BatchNorm1d -> ReLU -> Dropout -> Linear, as named attributes.
2. `count_parameters(model, trainable_only)` - the number of scalar parameters.
3. `Ensemble` - averages its members' outputs, with every member registered.
4. `RunningMean` - a module with buffers that tracks the mean of every row it has seen in training.
5. `freeze(module)` - stop gradients to every parameter.

Follow-up questions
===================
- How would you load a checkpoint saved from a model wrapped in `nn.DataParallel` (keys start `module.`)?
- When would you register a buffer with `persistent=False`?
- What happens to an optimizer built before you call `model.to("cuda")`, and before you freeze a layer?
- How do forward hooks differ from overriding `forward`, and what are they good for?

Grade this kata: `nox -s check -- 6`. Stuck? `nox -s hint -- 6`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class CustomNetwork(nn.Module):
    """A two-layer classifier head: fc1 -> bn1 -> ReLU -> dropout -> fc2.

    Attributes (registered submodules, with exactly these names):
        fc1: `nn.Linear(input_size, hidden_size)` (with bias).
        bn1: `nn.BatchNorm1d(hidden_size)` (default settings: affine, tracking running statistics).
        dropout: `nn.Dropout(dropout)`.
        fc2: `nn.Linear(hidden_size, output_size)` (with bias).
    Other submodules without parameters (say an `nn.ReLU`) are allowed.
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int, dropout: float = 0.5) -> None:
        """Create the four layers above; `dropout` is the drop probability of `self.dropout`."""
        super().__init__()
        self.fc1 = nn.Linear(input_size, hidden_size)
        self.bn1 = nn.BatchNorm1d(hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden_size, output_size)

    def forward(self, x: Tensor) -> Tensor:
        """Map `x` of shape `(N, input_size)` to `(N, output_size)`.

        The output is `fc2(dropout(relu(bn1(fc1(x)))))`, where each of `fc1`, `bn1`, `dropout` and `fc2`
        is the very layer stored under that name, called once per forward, in that order (replace one with
        an instance of a subclass of its type and that instance runs). So `.train()` / `.eval()` decide the
        behaviour: in training `bn1` normalises with the batch statistics and updates its running
        statistics, and `dropout` drops; in eval `bn1` uses its running statistics and changes nothing (each
        row's output is independent of the rest of the batch, and a batch of one works), and `dropout` is
        the identity. Works on whatever device the network was moved to (`meta` included), output there too.
        """
        x = self.fc1(x)
        x = self.bn1(x)
        x = torch.relu(x)
        x = self.dropout(x)
        return self.fc2(x)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Return the number of scalar parameter values in `model` and all its submodules.

    Every registered parameter counts, whatever module holds it: a built-in layer, a subclass of one, a
    custom module with its own `nn.Parameter` attributes (the model itself included), an `nn.ParameterList`
    or `nn.ModuleDict`. A `Linear(3, 4)` has 3 * 4 + 4 = 16. Buffers (e.g. BatchNorm's running statistics)
    are not parameters and are not counted. A parameter shared by several submodules (the same
    `nn.Parameter` object reached under two names) is counted once. The model is not changed
    (`requires_grad` flags included).

    Args:
        model: any module.
        trainable_only: if True, count only parameters with `requires_grad=True`.

    Returns:
        Exactly a Python `int` (0 for a module without parameters).
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


class Ensemble(nn.Module):
    """Averages the outputs of several modules.

    The ensemble holds the given member modules themselves (not copies), registered as submodules, so that
    every member's parameters and buffers are part of the ensemble: they appear in `parameters()` and
    `state_dict()`, and `.to(...)`, `.train()` and `.eval()` on the ensemble reach every member.
    """

    def __init__(self, members: list[nn.Module]) -> None:
        """Store `members`, a non-empty list of modules that map the same input to same-shaped outputs."""
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        """The element-wise mean of `member(x)` over the members, shaped like one member's output.

        Works on whatever device the ensemble was moved to (`meta` included), with the output there too.
        """
        return torch.stack([member(x) for member in self.members]).mean(dim=0)


class RunningMean(nn.Module):
    """Tracks the mean of every row seen in training, and centres its input with it.

    Buffers (listed by `named_buffers()` under exactly these names; not parameters):
        mean: float32 tensor of shape `(features,)`, initially zeros - the mean of all rows seen so far.
        count: int64 scalar tensor (shape `()`), initially 0 - the number of rows seen so far.
    Being buffers, both are in `state_dict()`, move with `.to(...)`, and are not in `parameters()`. A dtype
    cast such as `.double()` casts `mean` and leaves the integer `count` as int64.
    """

    def __init__(self, features: int) -> None:
        """Register the two buffers above for inputs with `features` columns."""
        super().__init__()
        self.register_buffer("mean", torch.zeros(features, dtype=torch.float32))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))

    def forward(self, x: Tensor) -> Tensor:
        """Update the statistics in training mode, then return `x - mean`.

        Args:
            x: tensor of shape `(batch, features)` with `batch >= 1`, with the dtype and device of `mean`
                (float32 unless the module was cast, e.g. float64 after `.double()`; any device, `meta`
                included). `x` is not modified.

        In training mode (`self.training`), the rows of `x` are folded into the statistics: afterwards
        `mean` is the mean over every row passed in training so far (all batches together, each row weighted
        equally, whatever the batch sizes; exact up to float32 rounding, also after `.double()`) and `count`
        has grown by `batch` (and is still int64). The update is not recorded by autograd: no graph is built
        for it (not even one detached afterwards), and the buffers never require grad, even when `x` does.
        In eval mode nothing is changed.

        Returns:
            `x - mean`, using the mean after any update: a new tensor (never `x` itself) of shape
            `(batch, features)` on `x`'s device, differentiable with respect to `x` when `x` requires grad.
        """
        if self.training:
            with torch.no_grad():
                batch = x.shape[0]
                self.count += batch
                self.mean += (x.sum(dim=0) - batch * self.mean) / self.count
        return x - self.mean


def freeze(module: nn.Module) -> nn.Module:
    """Stop gradients to every parameter of `module`, its submodules included.

    Sets `requires_grad = False` on every parameter registered anywhere in `module`: on `module` itself and
    on submodules of any type (built-in layers, their subclasses, custom modules). Does not change parameter
    values, buffers, or the train/eval mode (freezing is not `eval()`).

    Returns:
        `module` itself (not a copy), so calls can be chained.
    """
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module
