"""LayerNorm, RMSNorm and initialisation from scratch

Interview question: How do LayerNorm and RMSNorm work, why pre-norm, and how do you initialise a deep net?

Difficulty 3/5, about 60 minutes, after katas 4 and 6.

The idea
========
A deep network trains only if the signal keeps its scale on the way forward (activations) and on the way
back (gradients). Two tools keep it: normalisation layers, which rescale the signal at every layer, and
initialisation, which picks the weights' scale so that nothing grows or shrinks before training starts.

LayerNorm normalises each sample over its trailing `normalized_shape` dims (the features of one token,
never the batch), then applies an elementwise affine map:

    y = (x - mean) / sqrt(var + eps) * weight + bias

`mean` and `var` are taken over the last `len(normalized_shape)` dims together, and `var` is the BIASED
variance (divide by n, not n - 1: `var(unbiased=False)`); with n = 4 features the unbiased one is off by
a factor 4/3. `eps` (1e-5 by default) goes INSIDE the square root: outside it, `sqrt(var) + eps`, the
output differs wherever the variance is small. `weight` starts at ones and `bias` at zeros, both shaped
`normalized_shape`. With `normalized_shape=(3, 4)` on an input of shape (N, T, 3, 4), each (3, 4) block is
one group of 12 numbers: normalising over the last dim alone is a different layer. Unlike BatchNorm it
uses no batch statistics, so it behaves the same in train and eval, for any batch size, and per token.

RMSNorm (Zhang and Sennrich, 2019, used by LLaMA and most recent LLMs) drops the centring and the bias:

    y = x / sqrt(mean(x ** 2) + eps) * weight

It only rescales: subtracting the mean is a different layer (LayerNorm without bias). It is cheaper (one
reduction instead of two) and works as well in practice. In torch, `nn.RMSNorm(..., eps=None)` uses
`torch.finfo(x.dtype).eps` (1.19e-7 for float32, 2.2e-16 for float64); for float16/bfloat16 input torch
computes in float32 and uses float32's eps. Both layers return the input's dtype; for half-precision input
torch computes in float32 internally and rounds the result once.

Pre-norm. A transformer block is `x + f(norm(x))` (pre-norm, GPT-2 onwards) rather than the original
`norm(x + f(x))` (post-norm). In pre-norm the residual stream is a pure sum: the gradient reaches every
layer through the identity path unchanged, so deep stacks train without learning-rate warm-up tricks;
post-norm puts a normalisation on the main path after every block, and deep post-norm stacks need
warm-up and careful tuning to train at all. The price of pre-norm: the stream's scale grows with depth,
so a final norm goes before the output head.

Initialisation. A layer `y = W x` with W of shape (fan_out, fan_in) and iid entries of variance s**2
gives `Var(y_i) = fan_in * s**2 * E[x_j ** 2]`. Keep it at 1:
- Xavier/Glorot (2010), for tanh/linear layers, balances forward and backward: `s**2 = 2 / (fan_in +
  fan_out)`, times `gain ** 2`. As a uniform U(-b, b), whose variance is b**2 / 3, that is
  `b = gain * sqrt(6 / (fan_in + fan_out))`: a bound forgetting the sqrt(3) is a std used as a bound.
- Kaiming/He (2015), for ReLU: ReLU zeroes half of a symmetric input, so `E[relu(z) ** 2] = Var(z) / 2`,
  and `s = gain / sqrt(fan)` with `gain = sqrt(2)`. `mode="fan_in"` keeps activations' scale forward,
  `mode="fan_out"` keeps gradients' scale backward. torch's gains (`nn.init.calculate_gain`): 1 for
  linear, conv and sigmoid, 5/3 for tanh, sqrt(2) for relu, sqrt(2 / (1 + a**2)) for leaky_relu with
  negative slope a, 3/4 for selu.
torch's fan convention: dim 0 of a weight is the output features, dim 1 the input features, and every
further dim is the receptive field, which multiplies both: a Linear weight (out, in) has fan_in = in; a
Conv2d weight (out, in / groups, kh, kw) has fan_in = in / groups * kh * kw and fan_out = out * kh * kw.
(A ConvTranspose weight is stored (in, out / groups, ...), so torch's "fan_in" there is really the
output side.) Get the scale wrong by a factor c and a depth-L network multiplies its signal by c ** L:
with 32 ReLU layers, gain 1 instead of sqrt(2) shrinks it by 2 ** 16.

Zero-initialised residual branches. Initialise the LAST layer of each residual branch (weight AND bias)
to zero and every block starts as the identity: the network starts shallow, and the stream's scale does
not grow with depth at init (Goyal et al. 2017 zero the last BatchNorm gamma; Fixup, ReZero, and GPT-2's
scaled init of the residual projections are the same idea). The first layer stays random, or no gradient
would ever reach the branch.

What interviewers probe
=======================
- LayerNorm vs BatchNorm: statistics per sample over features versus per feature over the batch; no
  running statistics, same in train and eval, fine at batch size 1 and with variable sequence lengths.
- The biased variance and eps inside the sqrt; what `normalized_shape=(C, H, W)` normalises over.
- RMSNorm: no centring, no bias, cheaper; its default eps in torch.
- Why pre-norm trains deep stacks without warm-up, and why it needs a final norm.
- fan_in vs fan_out, the ReLU factor 2, the sqrt(3) of a uniform, and why nn.Linear's default init
  (`kaiming_uniform_(a=sqrt(5))`, a std of 1/sqrt(3 * fan_in)) is not He init.
- Init must write in place under `torch.no_grad()`: parameters are leaves that require grad, an in-place
  op on one raises, and replacing the tensor (`w = ...`, `w.data = ...`) leaves the module's parameter
  untouched or swaps its storage behind the optimizer's back.

Your tasks
==========
1. `LayerNorm` - an `nn.LayerNorm` written by hand, affine or not, over any trailing dims.
2. `RMSNorm` - an `nn.RMSNorm` written by hand, with torch's default eps.
3. `fan_in_and_fan_out(tensor)` - torch's fan convention for Linear and Conv weights.
4. `kaiming_normal_(tensor, a, mode, nonlinearity, generator)` - He init, in place.
5. `xavier_uniform_(tensor, gain, generator)` - Glorot init, in place.
6. `PreNormBlock` - a pre-norm residual MLP block that is the identity at init.
7. `deep_relu_mlp(in_features, width, depth)` - a deep ReLU MLP whose activations keep their scale.

Follow-up questions
===================
- Why does BatchNorm work poorly for transformers and small batches, and what does LayerNorm change?
- Post-norm or pre-norm: which did the original Transformer use, and why did GPT-2 and later models move
  the norm?
- When would you pick Xavier over Kaiming, and fan_in over fan_out?
- What does `nn.Linear` use as its default initialisation, and is it He init?
- Why initialise the last layer of a residual branch to zero, and what goes wrong if you zero every
  layer of the branch?
- How do you re-initialise all the Linear layers of an existing model, and why must it run under
  `torch.no_grad()`?

Grade this kata: `nox -s check -- 12`. Stuck? `nox -s hint -- 12`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

# The names `kaiming_normal_` accepts for `nonlinearity`, as `torch.nn.init.calculate_gain` spells them.
NONLINEARITIES: tuple[str, ...] = (
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "selu",
)


def _as_shape(normalized_shape: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(normalized_shape, int):
        return (normalized_shape,)
    return tuple(int(d) for d in normalized_shape)


def _check_trailing(x: Tensor, shape: tuple[int, ...], layer: str) -> tuple[int, ...]:
    if tuple(x.shape[x.dim() - len(shape) :]) != shape or x.dim() < len(shape):
        raise ValueError(f"{layer}: input of shape {tuple(x.shape)} does not end with {shape}")
    return tuple(range(-len(shape), 0))


class LayerNorm(nn.Module):
    """Layer normalisation over the trailing `normalized_shape` dims, written by hand.

    Equivalent to `torch.nn.LayerNorm(normalized_shape, eps, elementwise_affine, bias)`: same attributes,
    same parameters (names, shapes, initial values), and the same forward output and gradients. Its
    forward must not call torch's normalisation functions (`F.layer_norm`, `F.rms_norm`, `F.group_norm`,
    `F.batch_norm`, `F.instance_norm` and their `torch.*` twins, nor a torch norm module): the grader
    records the calls.
    """

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
    ) -> None:
        """Store the settings and create the parameters.

        Attributes afterwards: `normalized_shape`, a tuple of ints (an int `n` becomes `(n,)`; a list or
        `torch.Size` becomes a tuple); `eps`, the float given; `elementwise_affine`, the bool given.
        Parameters: `weight`, an `nn.Parameter` of shape `normalized_shape` filled with ones, and `bias`,
        one of the same shape filled with zeros, both float32. `bias` is None when `bias=False`; both are
        None when `elementwise_affine=False` (then the module has no parameters at all).
        """
        super().__init__()
        self.normalized_shape = _as_shape(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(self.normalized_shape))
            self.bias = nn.Parameter(torch.zeros(self.normalized_shape)) if bias else None
        else:
            self.weight = None
            self.bias = None

    def forward(self, x: Tensor) -> Tensor:
        """Normalise `x` over its trailing dims; the output has `x`'s shape, dtype and device.

        `x` has shape `(*, *normalized_shape)` with any number of leading dims (none included); any other
        shape raises ValueError. Its floating dtype is the module's when the module has parameters (cast
        the module with `.to(dtype)` first). Matches `nn.LayerNorm` with the same settings and
        parameters: to rtol 1e-10 in float64, to rtol/atol 1e-5 in float32, and in float16/bfloat16 to
        4 * finfo(dtype).eps (rtol and atol) of the float64 result on the same input and parameter
        values. Differentiable with respect to `x`, `weight` and `bias` (gradients equal to
        `nn.LayerNorm`'s). `x` is not modified.
        """
        dims = _check_trailing(x, self.normalized_shape, "LayerNorm")
        work = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        mean = work.mean(dim=dims, keepdim=True)
        var = ((work - mean) ** 2).mean(dim=dims, keepdim=True)
        y = ((work - mean) / torch.sqrt(var + self.eps)).to(x.dtype)
        if self.weight is not None:
            y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y


class RMSNorm(nn.Module):
    """Root-mean-square normalisation over the trailing `normalized_shape` dims, written by hand.

    Equivalent to `torch.nn.RMSNorm(normalized_shape, eps, elementwise_affine)`: same attributes, same
    parameter (name, shape, initial value), and the same forward output and gradients. Its forward must
    not call torch's normalisation functions (`F.rms_norm`, `F.layer_norm`, `F.group_norm`,
    `F.batch_norm`, `F.instance_norm` and their `torch.*` twins, nor a torch norm module): the grader
    records the calls.
    """

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float | None = None,
        elementwise_affine: bool = True,
    ) -> None:
        """Store the settings and create the parameter.

        Attributes afterwards: `normalized_shape`, a tuple of ints (from an int, list or `torch.Size`);
        `eps`, the value given (None stays None); `elementwise_affine`, the bool given. Parameter:
        `weight`, an `nn.Parameter` of shape `normalized_shape` filled with ones, float32; None when
        `elementwise_affine=False`. There is no bias.
        """
        super().__init__()
        self.normalized_shape = _as_shape(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self.weight = nn.Parameter(torch.ones(self.normalized_shape)) if elementwise_affine else None

    def forward(self, x: Tensor) -> Tensor:
        """Rescale `x` by its root mean square over its trailing dims; output shaped, typed, placed as `x`.

        Same input rules as `LayerNorm.forward` (any leading dims; ValueError for a shape that does not
        end with `normalized_shape`). With `eps=None` the eps is `torch.finfo(x.dtype).eps` for float32
        and float64 input (so the output for inputs of mean square near 1e-16 differs between the two);
        for float16/bfloat16 input torch uses float32's eps, and either is accepted (the grader feeds half
        precision only inputs whose mean square is far above both). Matches `nn.RMSNorm` with the same
        settings and parameter, at the tolerances of `LayerNorm.forward`, and so do its gradients with
        respect to `x` and `weight`. `x` is not modified.
        """
        dims = _check_trailing(x, self.normalized_shape, "RMSNorm")
        work = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        eps = torch.finfo(work.dtype).eps if self.eps is None else self.eps
        y = (work / torch.sqrt((work * work).mean(dim=dims, keepdim=True) + eps)).to(x.dtype)
        if self.weight is not None:
            y = y * self.weight
        return y


def fan_in_and_fan_out(tensor: Tensor) -> tuple[int, int]:
    """The fan-in and fan-out of a weight tensor, by torch's convention.

    For a tensor of 2 or more dims: dim 1 counts input features, dim 0 output features, and the product
    of the remaining dims (the receptive field, 1 for a matrix) multiplies both. Equal to the private
    `torch.nn.init._calculate_fan_in_and_fan_out(tensor)` for every shape (Linear, Conv1d/2d/3d weights,
    grouped convs). Nothing in `torch.nn.init` may be called (the grader checks). Only the shape is read:
    works on any device (`meta` included) and leaves the tensor unchanged.

    Returns `(fan_in, fan_out)`, exactly two Python ints. Raises ValueError for a tensor with fewer than
    2 dims.
    """
    if tensor.dim() < 2:
        raise ValueError(
            f"fan_in and fan_out need a tensor of 2 or more dims, got shape {tuple(tensor.shape)}"
        )
    receptive_field = math.prod(tensor.shape[2:])
    return int(tensor.shape[1]) * receptive_field, int(tensor.shape[0]) * receptive_field


def _gain(nonlinearity: str, a: float) -> float:
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"unknown nonlinearity {nonlinearity!r}; expected one of {NONLINEARITIES}")
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        return math.sqrt(2.0 / (1 + a**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    return 1.0


def kaiming_normal_(
    tensor: Tensor,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Fill `tensor` in place with He (Kaiming) normal values; return `tensor` itself.

    Same distribution as `torch.nn.init.kaiming_normal_(tensor, a, mode, nonlinearity)`: iid
    N(0, std**2) with `std = gain / sqrt(fan)`, where `fan` is `fan_in_and_fan_out(tensor)`'s fan_in
    (`mode="fan_in"`) or fan_out (`mode="fan_out"`), and `gain` is torch's recommended gain for
    `nonlinearity` (any name in `NONLINEARITIES`; for `"leaky_relu"` the negative slope is `a`, so the
    default call is He init for ReLU). Graded statistically (mean, std, and the share of values within
    one std, over seeds), so any exact sampling routine passes. Nothing in `torch.nn.init` may be called
    (the grader checks).
    - In place: the same tensor object comes back, with its storage, shape, dtype and device; an
      `nn.Parameter` (a leaf that requires grad) works, stays a leaf that requires grad, and no graph is
      recorded (its `grad_fn` stays None, `.grad` is untouched).
    - Randomness: drawn from `generator` when one is given (the global RNG is then left untouched), from
      torch's global RNG otherwise (so `torch.manual_seed` makes it reproducible, and two calls in a row
      give different values).
    Raises ValueError for an unknown `mode` or `nonlinearity`, or a tensor with fewer than 2 dims.
    """
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    std = _gain(nonlinearity, a) / math.sqrt(fan_in if mode == "fan_in" else fan_out)
    with torch.no_grad():
        return tensor.normal_(0.0, std, generator=generator)


def xavier_uniform_(tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Fill `tensor` in place with Glorot (Xavier) uniform values; return `tensor` itself.

    Same distribution as `torch.nn.init.xavier_uniform_(tensor, gain)`: iid U(-b, b) whose variance is
    `gain**2 * 2 / (fan_in + fan_out)`, with the fans of `fan_in_and_fan_out(tensor)`. Graded on the
    bound (no value beyond b, the largest within a whisker of it), the std, and the share of values
    within b / 2. Nothing in `torch.nn.init` may be called (the grader checks). In place and random as
    `kaiming_normal_` promises (same object back, a Parameter stays a leaf with no graph; `generator` or
    else the global RNG). Raises ValueError for a tensor with fewer than 2 dims.
    """
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        return tensor.uniform_(-bound, bound, generator=generator)


class PreNormBlock(nn.Module):
    """A pre-norm residual MLP block, `x + fc2(relu(fc1(norm(x))))`, that is the identity at init.

    Submodules, registered under exactly these names:
        norm: this kata's `LayerNorm(dim)` (default settings), an instance of the `LayerNorm` above.
        fc1: `nn.Linear(dim, hidden)` with bias, random (as `nn.Linear` initialises it, or any other
            random init: not zero).
        fc2: `nn.Linear(hidden, dim)` with bias, its weight AND bias zero at construction.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        """Create `norm`, `fc1` and `fc2` as above, for inputs with `dim` features."""
        super().__init__()
        self.norm = LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        with torch.no_grad():
            self.fc2.weight.zero_()
            self.fc2.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        """`x + fc2(relu(fc1(norm(x))))` for `x` of shape `(*, dim)`, using the current submodules.

        Right after construction the output equals `x` exactly (a new tensor or `x` itself), yet
        gradients reach `fc2`'s weight. For any parameter values it matches the formula (rtol 1e-5 in
        float32), with gradients to `x` and every parameter. `x` is not modified.
        """
        return x + self.fc2(torch.relu(self.fc1(self.norm(x))))


def deep_relu_mlp(in_features: int, width: int, depth: int) -> nn.Sequential:
    """A `depth`-layer ReLU MLP initialised so that its activations keep their scale.

    Returns an `nn.Sequential` of exactly `2 * depth` modules, alternating `nn.Linear` and `nn.ReLU`:
    `Linear(in_features, width)`, `ReLU()`, then `depth - 1` times `Linear(width, width)`, `ReLU()`. Every
    Linear has a bias. Initialisation, drawn from torch's global RNG: every weight iid N(0, 2 / fan_in)
    (He init for ReLU, as this kata's `kaiming_normal_(w, nonlinearity="relu")` draws it), every bias
    zero, layers drawn independently. So for an input with iid N(0, 1) entries, the root mean square of
    the last ReLU's output stays within a small factor of the first ReLU's at any depth (graded for 32
    layers of width 256). Raises ValueError for `depth < 1`.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    layers: list[nn.Module] = []
    for i in range(depth):
        linear = nn.Linear(in_features if i == 0 else width, width)
        kaiming_normal_(linear.weight, nonlinearity="relu")
        with torch.no_grad():
            linear.bias.zero_()
        layers += [linear, nn.ReLU()]
    return nn.Sequential(*layers)
