"""PyTorch at a glance

Interview question: What is PyTorch and what are its main features?

Difficulty 1/5, about 25 minutes.

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
2. `runtime_info()` - what this PyTorch install can do: version, CUDA, device count, best device.
3. `fit_line(xs, ys, steps, lr)` - fit `y = w*x + b` by gradient descent with autograd.

Devices: the grader checks `build_mlp` on the `meta` device (tensors with a shape but no data),
which catches a hard-coded `device="cpu"` on any machine. `fit_line` needs real values, so where
`w` and `b` live when `xs` is on a GPU is checked only on a CUDA machine (the `cuda` tests).

Follow-up questions
===================
- When `xs` is on a GPU, where should `w` and `b` live, and what does `.item()` copy back (and
  wait for)?
- Why does `nn.Sequential` need its children to be `nn.Module`s rather than plain functions?
- When would you reach for `torch.compile`, and what does it cost you on the first call?
- Why would `torch.compile` speed up `relu(x * w + b)` on a large tensor, although each op is
  already a fast kernel?
- How does `torch.optim.SGD` know which tensors to update?

Grade this kata: `nox -s check -- 1`. Stuck? `nox -s hint -- 1`.
"""

from __future__ import annotations

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


def runtime_info() -> dict:
    """Describe this PyTorch installation.

    Returns a dict with exactly these keys:
    - "torch_version": `torch.__version__` as a plain `str` (exactly `str`, not a subclass);
    - "cuda_available": bool, whether CUDA can be used now;
    - "device_count": int, the number of CUDA devices; 0 whenever CUDA is not available, even if
      `torch.cuda.device_count()` reports devices;
    - "device": the plain `str` "cuda" when CUDA is available, else "cpu".
    The answers reflect `torch.cuda` at the time of the call (nothing is cached).
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


def fit_line(xs: Tensor, ys: Tensor, steps: int = 500, lr: float = 0.1) -> tuple[float, float]:
    """Fit `y = w * x + b` to the points `(xs[i], ys[i])` by gradient descent.

    - `xs` and `ys` are 1-D tensors of the same length.
    - Start from `w = b = 0`; on each of `steps` steps compute the mean squared error, get its
      gradients with autograd (`backward`), and move `w` and `b` against them by `lr` times the
      gradient. `steps == 0` returns `(0.0, 0.0)`.
    - Returns `(w, b)` as Python floats.
    - With the defaults it recovers `w` and `b` within 1e-2 on noiseless data from a line with
      |w|, |b| <= 3 and at least 8 xs spread evenly over [-1, 1] (both ends included).
    - Every call starts afresh: nothing carries over from an earlier call.
    - `xs` and `ys` may live on any device (both on the same one, e.g. a CUDA GPU); the result is
      the same as on the CPU, up to rounding.
    - Must not modify `xs` or `ys`: neither their values nor their `requires_grad` flags.
    """
    raise NotImplementedError  # TODO: replace this line with your implementation
