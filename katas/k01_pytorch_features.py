"""PyTorch at a glance

Interview question: What is PyTorch and what are its main features?

Difficulty 2/5, about 40 minutes.

The idea
========
PyTorch is an open-source deep-learning library, started at Meta AI and now governed by the
PyTorch Foundation. Four pieces carry almost everything you will write:

- `torch.Tensor`: an n-dimensional array with a dtype and a device (CPU, CUDA GPU, Apple MPS...).
  Operations run eagerly, the moment Python reaches them, like NumPy.
- autograd: tensors created with `requires_grad=True` record the operations applied to them;
  `loss.backward()` walks that record backwards and fills each leaf's `.grad`.
- `torch.nn`: layers as `nn.Module` objects that own their parameters; containers such as
  `nn.Sequential` compose them, and `model.parameters()` finds every weight for an optimizer.
- `torch.optim`: optimizers that read `.grad` and update parameters in place.

Because the graph is built while your Python runs ("define-by-run"), you debug with print and
pdb, and control flow is ordinary `if`/`for`. When you need speed or a portable artefact, a graph
is recovered from the Python: `torch.compile` for speed, `torch.export` for deployment (to
ExecuTorch on devices, AOTInductor on servers, or ONNX). TorchScript (`torch.jit.script` /
`torch.jit.trace`) is deprecated in favour of `torch.export`: you will meet it in older code only.

How `torch.compile` recovers a graph
====================================
`torch.compile(fn)` returns a wrapper; nothing happens until the first call. Then TorchDynamo
reads `fn`'s Python bytecode as it runs and records every tensor operation into an FX graph (a
`torch.fx.GraphModule`: a list of nodes such as `call_function target=torch.relu`). It hands that
graph to a *backend*, a callable `backend(graph_module, example_inputs)` that returns the callable
to run in the graph's place. The default backend, Inductor, fuses the graph's ops into generated
kernels (Triton on GPUs, C++ on CPUs); `backend="eager"` runs the graph as it was captured, which
is how you test capture without paying for code generation.

Dynamo traces what it can and stops where it cannot: a Python `if` on a tensor's value, `.item()`,
`print`, a call into a C extension Dynamo does not know. There it makes a *graph break*: the
graph so far is compiled, that piece of Python runs eagerly, and a new graph starts after it. The
result is always correct, but one function can become several graphs, and nothing fuses across a
break. A branch on a plain Python value (an `int` argument, a shape) is no break: Dynamo follows
the path taken, bakes it in, and *guards* on the value.

The compiled code is cached on the function's code object, behind those guards (shapes, dtypes,
Python values, and the backend itself). A call that fails a guard recompiles; after
`torch._dynamo.config.recompile_limit` (8) versions the function falls back to eager. To find
breaks: `fullgraph=True` turns the first one into an error, `TORCH_LOGS="graph_breaks,recompiles"`
logs them, and `torch._dynamo.explain(fn)(*args)` lists the graphs and the break reasons, at the
cost of a `torch._dynamo.reset()` that throws away every compiled function's cache in the process.

What interviewers probe
=======================
- "Eager" does not mean slow: each op is a call into optimized C++/CUDA kernels. What eager mode
  cannot do is fuse: a chain like `x * w + b` then `relu` launches one kernel per op, and each
  reads its input from memory and writes its result back. Such element-wise and reduction ops are
  memory-bound (they wait on memory, not arithmetic), so `torch.compile`'s main win is fusing the
  chain into one kernel that reads once and writes once - at any tensor size, not only for many
  tiny ops. Cutting per-op launch and Python overhead (e.g. CUDA graphs with
  `mode="reduce-overhead"`) is a second, smaller win that matters for small ops.
- `torch.cuda.is_available()` can be False on a GPU machine: a CPU-only wheel, a missing driver,
  or a container started without the GPU. Check it, do not assume it.
- A training step is always the same five beats: zero the grads, forward, loss, backward, step.
  Forgetting to zero the grads silently accumulates them.
- `.item()` turns a one-element tensor into a Python number (and synchronises with the GPU).

Your tasks
==========
1. `build_mlp(in_features, hidden_features, out_features)` - a two-layer perceptron with `nn.Sequential`.
2. `capture_graphs(fn, *args)` - run `fn` once through `torch.compile` and hand back every graph it
   captured: the graph breaks, seen for yourself.
3. `fit_line(xs, ys, steps, lr)` - fit `y = w*x + b` by gradient descent, with autograd computing
   the gradients.

Devices: the grader checks `build_mlp` on the `meta` device (tensors with a shape but no data),
which catches a hard-coded `device="cpu"` on any machine. `fit_line` needs real values, so where
`w` and `b` live when `xs` is on a GPU is checked only on a CUDA machine (the `cuda` tests).

Follow-up questions
===================
- When `xs` is on a GPU, where should `w` and `b` live, and what does `.item()` copy back (and
  wait for)?
- Why does `nn.Sequential` need its children to be `nn.Module`s rather than plain functions?
- When would you reach for `torch.compile`, and what does it cost you on the first call?
- Which lines of a function make `torch.compile` break the graph, how do you find the breaks, and
  how do you remove the one a tensor-dependent `if` makes?
- Why would `torch.compile` speed up `relu(x * w + b)` on a large tensor, although each op is
  already a fast kernel?
- How does `torch.optim.SGD` know which tensors to update?

Grade this kata: `nox -s check -- 1`. Stuck? `nox -s hint -- 1`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn


def build_mlp(in_features: int, hidden_features: int, out_features: int) -> nn.Sequential:
    """Build a multi-layer perceptron.

    Returns an `nn.Sequential` with exactly three children, in this order:
    `nn.Linear(in_features, hidden_features)`, `nn.ReLU()`, `nn.Linear(hidden_features, out_features)`
    (both linear layers with a bias). Its parameters have the default dtype and live on the default
    device, as a plain `nn.Linear(...)` creates them (also inside `with torch.device("meta"):`).
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


def capture_graphs(fn: Callable[..., Any], *args: Any) -> tuple[Any, list[torch.fx.GraphModule]]:
    """Call `fn(*args)` once through `torch.compile` and return its result and the graphs captured.

    - `fn` is a function or an `nn.Module`; `args` are its positional arguments.
    - Returns `(result, graphs)`. `result` equals what an eager `fn(*args)` returns. `graphs` is a new
      list of the `torch.fx.GraphModule`s that `torch.compile(fn)`, with its default capture settings,
      captures during this call, in the order it captures them: the same graphs, operation for
      operation, as `torch._dynamo.explain(fn)(*args).graphs` - one when `fn` traces whole, more when
      it has graph breaks.
    - `fn` runs exactly once: its Python side effects (a `print`, an append) happen once.
    - Every call captures afresh: a second call with the same `fn` and arguments returns the graphs
      again (they are not lost to compile's cache), and never graphs from an earlier call. (Compile
      keeps at most `torch._dynamo.config.recompile_limit` versions of one function and runs it
      eagerly after that, with nothing to capture; the grader stays well below the limit. Called
      again on the same `fn` with other input shapes, compile may capture a graph with symbolic sizes
      where `explain`, which starts from a reset, gives a static one: the grader compares calls with
      shapes `fn` has not been compiled for.)
    - Leaves compile's process-wide state alone: functions compiled elsewhere keep their compiled
      code (the call clears none of compile's caches, as `torch._dynamo.reset()`, and so
      `torch._dynamo.explain`, would), and every `torch._dynamo.config` setting is as it was.
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


def fit_line(xs: Tensor, ys: Tensor, steps: int = 500, lr: float = 0.1) -> tuple[float, float]:
    """Fit `y = w * x + b` to the points `(xs[i], ys[i])` by gradient descent.

    - `xs` and `ys` are 1-D tensors of the same length.
    - Returns `(w, b)` as Python floats: where plain gradient descent with learning rate `lr` on the
      mean squared error `mean((w * xs + b - ys) ** 2)`, started from `w = b = 0`, stands after
      `steps` steps - the numbers `torch.optim.SGD([w, b], lr=lr)` reaches, up to float32 rounding.
      `steps == 0` returns `(0.0, 0.0)`.
    - With the defaults it recovers `w` and `b` within 1e-2 on noiseless data from a line with
      |w|, |b| <= 3 and at least 8 xs spread evenly over [-1, 1] (both ends included).
    - Every call starts afresh: nothing carries over from an earlier call.
    - `xs` and `ys` may live on any device (both on the same one, e.g. a CUDA GPU); the result is
      the same as on the CPU, up to rounding.
    - Must not modify `xs` or `ys`: neither their values nor their `requires_grad` flags.
    """
    raise NotImplementedError  # TODO: replace this line with your implementation
