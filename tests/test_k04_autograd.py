"""Grader for k04_autograd: derivatives, parameter gradients, switching recording off, stopping gradients and
a custom autograd Function.

Expected values come from closed forms written here in float64 (Python's math module, the chain rule spelt
out for a small MLP) and from `torch.autograd.gradcheck` - never from the reference.
"""

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import BroadcastableShapes, mutually_broadcastable_shapes
from torch import nn
from torch.autograd.gradcheck import GradcheckError
from torch.overrides import TorchFunctionMode

from kata_harness import load_kata
from kata_harness.testing import assert_close, record_torch_calls

kata = load_kata("k04_autograd")

# The first operation on the meta device loads torch's meta kernels (a second or more on a busy machine): pay
# for it once here, at import, instead of inside the 10-second budget of whichever meta test runs first.
_ = torch.empty(0, device="meta") + 0

# float64 autograd is exact up to a few ulps; the best central finite difference is off by ~1e-11.
RTOL, ATOL = 1e-12, 1e-13

# (label, f on a tensor, f' by hand, f'' by hand, x)
FUNCTIONS: list[tuple[str, Callable, Callable[[float], float], Callable[[float], float], float]] = [
    ("t**3 - 2*t", lambda t: t**3 - 2 * t, lambda x: 3 * x**2 - 2, lambda x: 6 * x, 1.3),
    (
        "sin(t) * exp(t)",
        lambda t: torch.sin(t) * torch.exp(t),
        lambda x: math.exp(x) * (math.sin(x) + math.cos(x)),
        lambda x: 2 * math.exp(x) * math.cos(x),
        0.7,
    ),
    (
        "log(1 + t**2)",
        lambda t: torch.log(1 + t**2),
        lambda x: 2 * x / (1 + x**2),
        lambda x: 2 * (1 - x**2) / (1 + x**2) ** 2,
        -0.4,
    ),
    (
        "tanh(2*t)",
        lambda t: torch.tanh(2 * t),
        lambda x: 2 * (1 - math.tanh(2 * x) ** 2),
        lambda x: -8 * math.tanh(2 * x) * (1 - math.tanh(2 * x) ** 2),
        0.3,
    ),
]
FUNCTION_IDS = [case[0] for case in FUNCTIONS]


def close(got: float, want: float) -> bool:
    return math.isclose(got, want, rel_tol=RTOL, abs_tol=ATOL)


def recording_f(seen: list[tuple[tuple[int, ...], torch.dtype]]) -> Callable[[torch.Tensor], torch.Tensor]:
    """f(t) = t**3 that notes the shape and dtype of every argument it is called with."""

    def f(t: torch.Tensor) -> torch.Tensor:
        seen.append((tuple(t.shape), t.dtype))
        return t**3

    return f


def check_calling_convention(seen: list[tuple[tuple[int, ...], torch.dtype]], name: str) -> None:
    assert seen, f"{name} never called f"
    wrong = [s for s in seen if s != ((), torch.float64)]
    assert not wrong, (
        f"{name} must call f with a 0-dim float64 tensor; it passed (shape, dtype) {wrong}; likely cause: "
        "torch.tensor([x]) (1-D) or torch.tensor(x) without dtype=torch.float64 (float32)"
    )


def on_meta(what: str, call: Callable[[], object]) -> object:
    """Run `call` on meta tensors, turning a device-mismatch error into a message that names the bug."""
    try:
        return call()
    except NotImplementedError:
        raise  # the stub's "not started", or an op without a meta kernel
    except RuntimeError as error:
        raise AssertionError(
            f"{what} failed on the meta device: {error}\nlikely cause: a tensor created on the CPU "
            "(torch.zeros, torch.ones, torch.tensor without device=...) mixed with the inputs' device - "
            "build tensors with *_like(...) or device=x.device"
        ) from error


def sigmoid64(x: float) -> float:
    """A sigmoid in Python floats that does not overflow for large |x|."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def silu_grad_oracle(x: torch.Tensor) -> torch.Tensor:
    """d/dx [x * sigmoid(x)] = s * (1 + x * (1 - s)), element by element in Python floats."""
    values = [sigmoid64(v) * (1 + v * (1 - sigmoid64(v))) for v in x.double().flatten().tolist()]
    return torch.tensor(values, dtype=torch.float64).reshape(x.shape)


# ----------------------------------------------------------------------------------------------------------
# derivative


@pytest.mark.parametrize(("label", "f", "df", "d2f", "x"), FUNCTIONS, ids=FUNCTION_IDS)
def test_derivative_matches_closed_form(
    label: str, f: Callable, df: Callable, d2f: Callable, x: float
) -> None:
    got = kata.derivative(f, x)
    want = df(x)
    assert close(float(got), want), (
        f"d/dx {label} at x={x}: expected {want!r}, got {got!r} (needs float64 accuracy, rel {RTOL}); "
        "likely cause: a float32 tensor (torch.tensor(x) without dtype=torch.float64) or a finite difference "
        "instead of autograd"
    )


def test_derivative_calls_f_with_0dim_float64() -> None:
    seen: list = []
    got = kata.derivative(recording_f(seen), 2.0)
    check_calling_convention(seen, "derivative")
    assert close(float(got), 12.0), f"d/dx t**3 at 2: expected 12.0, got {got!r}"


def check_python_float(got: object, name: str) -> None:
    """The contract promises a Python float: exactly `float`, not a tensor, an int or a NumPy float64 (a float
    subclass that prints like one)."""
    assert type(got) is float, (
        f"{name} must return a Python float; got {type(got).__module__}.{type(got).__qualname__} {got!r}; "
        "likely cause: returning the gradient tensor, a NumPy scalar (.numpy() gives numpy.float64, a float "
        "subclass) or the int 0 - use float(...) or .item(), and 0.0 for the zero case"
    )


def test_derivative_returns_python_float() -> None:
    got = kata.derivative(lambda t: t * t, 1.5)
    check_python_float(got, "derivative")
    assert close(got, 3.0), f"d/dx t*t at 1.5: expected 3.0, got {got!r}"


def constant_f() -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda t: torch.tensor(2.5, dtype=torch.float64)


def other_tensor_f() -> Callable[[torch.Tensor], torch.Tensor]:
    w = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    return lambda t: w * 2


@pytest.mark.parametrize(
    ("label", "make_f"),
    [("a constant tensor", constant_f), ("w * 2, w a tensor that requires grad", other_tensor_f)],
    ids=["constant", "depends_on_another_tensor"],
)
def test_derivative_constant_function_is_zero(label: str, make_f: Callable) -> None:
    got = kata.derivative(make_f(), 0.5)
    check_python_float(got, f"derivative of {label}")
    assert got == 0.0, (
        f"f returns {label}, which does not depend on its input, so df/dx is 0.0; got {got!r}; likely "
        "cause: torch.autograd.grad raises when the output has no grad_fn (check output.requires_grad) or "
        "when the input was not used (pass allow_unused=True and treat None as 0.0)"
    )


def test_derivative_leaves_no_grad_behind() -> None:
    w = torch.tensor(1.75, dtype=torch.float64, requires_grad=True)
    got = kata.derivative(lambda t: w * t**2, 2.0)
    assert close(float(got), 2 * 1.75 * 2.0), f"d/dx w*t**2 at 2 with w=1.75: expected 7.0, got {got!r}"
    assert w.grad is None, (
        f"f used a tensor w that requires grad, and after derivative w.grad is {w.grad!r} instead of None; "
        "likely cause: .backward() accumulates into the .grad of every leaf it reaches - "
        "torch.autograd.grad(y, t) returns the gradient without touching any .grad"
    )


# ----------------------------------------------------------------------------------------------------------
# second_derivative


@pytest.mark.parametrize(("label", "f", "df", "d2f", "x"), FUNCTIONS, ids=FUNCTION_IDS)
def test_second_derivative_matches_closed_form(
    label: str, f: Callable, df: Callable, d2f: Callable, x: float
) -> None:
    got = kata.second_derivative(f, x)
    want = d2f(x)
    assert close(float(got), want), (
        f"d2/dx2 {label} at x={x}: expected {want!r}, got {got!r} (f'(x) is {df(x)!r}); likely cause: "
        "calling .backward() twice adds the second derivative onto the first in t.grad - use "
        "torch.autograd.grad(..., create_graph=True), then differentiate its result; or float32"
    )


def test_second_derivative_calls_f_with_0dim_float64() -> None:
    seen: list = []
    got = kata.second_derivative(recording_f(seen), 2.0)
    check_calling_convention(seen, "second_derivative")
    assert close(float(got), 12.0), f"d2/dx2 t**3 at 2: expected 12.0, got {got!r}"


def test_second_derivative_returns_python_float() -> None:
    got = kata.second_derivative(lambda t: t**3, 0.5)
    check_python_float(got, "second_derivative")
    assert close(got, 3.0), f"d2/dx2 t**3 at 0.5: expected 3.0, got {got!r}"


def linear_f() -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda t: 3 * t + 1


def scaled_by_tensor_f() -> Callable[[torch.Tensor], torch.Tensor]:
    w = torch.tensor(-0.75, dtype=torch.float64, requires_grad=True)
    return lambda t: w * t


@pytest.mark.parametrize(
    ("label", "make_f"),
    [
        ("3*t + 1", linear_f),
        ("a constant", constant_f),
        ("w * t, w a tensor that requires grad", scaled_by_tensor_f),
    ],
    ids=["linear", "constant", "linear_with_tensor_coefficient"],
)
def test_second_derivative_linear_function_is_zero(label: str, make_f: Callable) -> None:
    got = kata.second_derivative(make_f(), 0.25)
    check_python_float(got, f"second_derivative of {label}")
    assert got == 0.0, (
        f"f(t) = {label} has second derivative 0.0; got {got!r}; likely cause: the first derivative of a "
        "linear function does not depend on t - it may have no grad_fn at all (check .requires_grad) or a "
        "graph that never reaches t (pass allow_unused=True and treat None as 0.0)"
    )


def test_second_derivative_leaves_no_grad_behind() -> None:
    w = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    got = kata.second_derivative(lambda t: w * t**3, 2.0)
    assert close(float(got), 6 * 0.5 * 2.0), f"d2/dx2 w*t**3 at 2 with w=0.5: expected 6.0, got {got!r}"
    assert w.grad is None, (
        f"f used a tensor w that requires grad, and after second_derivative w.grad is {w.grad!r} instead of "
        "None; likely cause: .backward() accumulates into every leaf's .grad - use torch.autograd.grad"
    )


# ----------------------------------------------------------------------------------------------------------
# parameter_grads


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


def mlp_grads(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """d mean((model(x) - y)**2) / d params for Linear-Tanh-Linear: the chain rule written out, float64."""
    with torch.no_grad():
        w1, b1, w2, b2 = (
            p.double() for p in (model[0].weight, model[0].bias, model[2].weight, model[2].bias)
        )
        x, y = x.double(), y.double()
        h = torch.tanh(x @ w1.T + b1)
        r = h @ w2.T + b2 - y
        d_out = 2 * r / r.numel()
        d_pre = (d_out @ w2) * (1 - h**2)
        return {
            "0.weight": d_pre.T @ x,
            "0.bias": d_pre.sum(0),
            "2.weight": d_out.T @ h,
            "2.bias": d_out.sum(0),
        }


def linear_grads(layer: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """d mean((x W^T + b - y)**2) / d (W, b) in closed form: (2/n) r^T x and (2/n) sum_rows r."""
    with torch.no_grad():
        r = x @ layer.weight.T + layer.bias - y
        return {"weight": 2 / r.numel() * r.T @ x, "bias": 2 / r.numel() * r.sum(0)}


def test_parameter_grads_match_formula() -> None:
    # A single Linear layer: closed form. pred = x W^T + b, r = pred - y, loss = mean(r**2) over N*O entries.
    model = nn.Linear(3, 2).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    y = torch.randn(5, 2, dtype=torch.float64)
    want = linear_grads(model, x, y)
    got = kata.parameter_grads(model, x, y)
    assert isinstance(got, dict) and set(got) == set(want), f"expected keys {sorted(want)}, got {got!r}"
    for name in want:
        assert_close(
            got[name],
            want[name],
            rtol=1e-10,
            atol=1e-12,
            what=f"gradient of the MSE with respect to {name}",
            likely_cause="a sum instead of the mean over ALL elements (mse_loss's default), or a mean "
            "over the batch only",
        )
    # A small MLP, against the chain rule written out by hand.
    model, y = mlp(), torch.randn(5, 2, dtype=torch.float64)
    got = kata.parameter_grads(model, x, y)
    want = mlp_grads(model, x, y)
    for name in want:
        assert_close(got[name], want[name], rtol=1e-10, atol=1e-12, what=f"MLP gradient for {name!r}")


def test_parameter_grads_keys() -> None:
    model = mlp()
    got = kata.parameter_grads(
        model, torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    )
    want = [name for name, _ in model.named_parameters()]
    assert isinstance(got, dict) and sorted(got) == sorted(want), (
        f"expected one key per parameter, named as model.named_parameters() names them: {want}; got "
        f"{sorted(got) if isinstance(got, dict) else got!r}; likely cause: keys by position or by the last "
        "part of the name only"
    )
    for name, p in model.named_parameters():
        assert isinstance(got[name], torch.Tensor) and got[name].shape == p.shape, (
            f"expected got[{name!r}] to be a tensor of shape {tuple(p.shape)}, got {got[name]!r}"
        )


def test_parameter_grads_frozen_excluded() -> None:
    model = mlp()
    model[0].requires_grad_(False)
    x, y = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    got = kata.parameter_grads(model, x, y)
    assert isinstance(got, dict) and sorted(got) == ["2.bias", "2.weight"], (
        f"layer 0 is frozen (requires_grad=False): expected only the keys ['2.bias', '2.weight'], got "
        f"{sorted(got) if isinstance(got, dict) else got!r}; likely cause: not filtering on p.requires_grad"
    )
    want = mlp_grads(model, x, y)
    for name in ["2.weight", "2.bias"]:
        assert_close(got[name], want[name], rtol=1e-10, atol=1e-12, what=f"gradient for {name!r}")
    assert model[0].weight.grad is None and model[0].bias.grad is None, "a frozen parameter was given a .grad"


class WithUnused(nn.Module):
    """A Linear layer plus a parameter that forward never touches."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 2)
        self.unused = nn.Parameter(torch.ones(4, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def test_parameter_grads_unused_parameter_gets_zeros(device: torch.device) -> None:
    model = WithUnused().double().to(device)
    x = torch.randn(6, 3, dtype=torch.float64, device=device)
    y = torch.randn(6, 2, dtype=torch.float64, device=device)
    got = kata.parameter_grads(model, x, y)
    zero = got.get("unused") if isinstance(got, dict) else None
    assert isinstance(zero, torch.Tensor), (
        f"the loss does not depend on 'unused', so expected a tensor of zeros for it, got {zero!r}; likely "
        "cause: allow_unused=True gives None for such a parameter - replace it with torch.zeros_like(p)"
    )
    assert zero.shape == (4, 5) and zero.dtype == torch.float64 and zero.device.type == device.type, (
        f"expected zeros like the parameter (shape (4, 5), float64, on {device}), got shape "
        f"{tuple(zero.shape)}, {zero.dtype} on {zero.device}; likely cause: torch.zeros(p.shape) without "
        "dtype and device - torch.zeros_like(p) keeps all three"
    )
    assert not zero.any(), f"expected all zeros for 'unused', got {zero}"
    want = linear_grads(model.layer, x, y)
    for name in want:
        assert_close(
            got[f"layer.{name}"],
            want[name],
            rtol=1e-10,
            atol=1e-12,
            what=f"gradient for layer.{name} on {device}",
        )


def test_parameter_grads_leaves_none_grads_untouched() -> None:
    model = mlp()
    kata.parameter_grads(
        model, torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    )
    filled = [name for name, p in model.named_parameters() if p.grad is not None]
    assert not filled, (
        f"every .grad was None before the call; afterwards {filled} have one; likely cause: loss.backward() "
        "writes .grad - torch.autograd.grad(loss, params) returns the gradients and leaves .grad alone"
    )


def test_parameter_grads_leaves_existing_grads_untouched() -> None:
    model = mlp()
    x, y = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    before = {}
    for name, p in model.named_parameters():
        p.grad = torch.randn_like(p)
        before[name] = p.grad.clone()
    got = kata.parameter_grads(model, x, y)
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.equal(p.grad, before[name]), (
            f"{name}.grad held a gradient before the call and must keep exactly those values; "
            f"{'it is now None' if p.grad is None else 'its values changed'}; likely cause: zero_grad() "
            "resets it, and .backward() adds into it"
        )
    want = mlp_grads(model, x, y)
    for name in want:
        assert_close(
            got[name],
            want[name],
            rtol=1e-10,
            atol=1e-12,
            what=f"gradient for {name!r} when .grad was already filled",
            likely_cause="reading p.grad after .backward() returns the old gradient plus the new one",
        )


def test_parameter_grads_share_no_memory_with_grad() -> None:
    model = mlp()
    x, y = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    for p in model.parameters():
        p.grad = torch.randn_like(p)  # stale gradients left by an earlier step
    want = mlp_grads(model, x, y)
    got = kata.parameter_grads(model, x, y)
    # What a training loop does next: zero the gradients in place, then accumulate a backward pass into them.
    for p in model.parameters():
        p.grad.zero_()
    F.mse_loss(model(x), y).backward()
    for name in want:
        assert_close(
            got[name],
            want[name],
            rtol=1e-10,
            atol=1e-12,
            what=f"the returned gradient for {name!r} after .grad was zeroed in place and accumulated into",
            likely_cause="the returned tensor IS the parameter's .grad (or a view of it), so in-place "
            "zeroing and accumulation into .grad change it too - return gradients that own their memory "
            "(torch.autograd.grad does)",
        )
    # And the other way round: writing into the returned tensors must leave .grad alone.
    grads_now = {name: p.grad.clone() for name, p in model.named_parameters()}
    with torch.no_grad():
        for g in got.values():
            g.add_(100.0)
    for name, p in model.named_parameters():
        assert torch.equal(p.grad, grads_now[name]), (
            f"adding to the returned gradient for {name!r} changed {name}.grad; likely cause: the result "
            "shares memory with .grad"
        )
    # Calling it twice gives the same result, and the second call leaves .grad as it found it.
    again = kata.parameter_grads(model, x, y)
    for name in want:
        assert_close(again[name], want[name], rtol=1e-10, atol=1e-12, what=f"second call, {name!r}")
    for name, p in model.named_parameters():
        assert torch.equal(p.grad, grads_now[name]), f"the second call changed {name}.grad"


def test_parameter_grads_leaves_inputs_unchanged() -> None:
    model = mlp()
    model[2].bias.requires_grad_(False)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(4, 2, dtype=torch.float64)
    before = {name: (p.detach().clone(), p.requires_grad) for name, p in model.named_parameters()}
    x_before, y_before = x.detach().clone(), y.clone()
    got = kata.parameter_grads(model, x, y)
    assert isinstance(got, dict) and sorted(got) == ["0.bias", "0.weight", "2.weight"], (
        f"2.bias is frozen: expected the keys ['0.bias', '0.weight', '2.weight'], got "
        f"{sorted(got) if isinstance(got, dict) else got!r}"
    )
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    assert flags == {name: flag for name, (_, flag) in before.items()}, (
        f"requires_grad flags before the call: { {n: f for n, (_, f) in before.items()} }, after: {flags}; "
        "likely cause: requires_grad_(True) to get a gradient for every parameter, or requires_grad_(False) "
        "after the call - the caller's parameters must keep their flags"
    )
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), before[name][0]), f"parameter_grads changed the values of {name}"
    assert x.requires_grad and torch.equal(x.detach(), x_before) and torch.equal(y, y_before), (
        f"x or y was modified (x.requires_grad is now {x.requires_grad}); likely cause: an in-place "
        "operation or requires_grad_ on the caller's tensors"
    )


def test_parameter_grads_on_meta_device() -> None:
    # The meta device has shapes, dtypes and devices but no data: a tensor built on the CPU shows up here
    # on any machine, where a CUDA test needs a GPU.
    model = WithUnused().double().to("meta")
    x = torch.empty(6, 3, dtype=torch.float64, device="meta")
    y = torch.empty(6, 2, dtype=torch.float64, device="meta")
    got = on_meta("parameter_grads", lambda: kata.parameter_grads(model, x, y))
    assert isinstance(got, dict) and sorted(got) == ["layer.bias", "layer.weight", "unused"], (
        f"expected the keys ['layer.bias', 'layer.weight', 'unused'], got {got!r}"
    )
    wrong = {
        name: (str(g.device), g.dtype, tuple(g.shape))
        for name, g in got.items()
        if (g.device.type, g.dtype, g.shape) != ("meta", torch.float64, model.get_parameter(name).shape)
    }
    assert not wrong, (
        f"with the model and data on the meta device, these gradients are not like their parameter "
        f"(meta, float64, same shape): {wrong}; likely cause: torch.zeros(p.shape) or torch.zeros(shape, "
        "dtype=p.dtype) builds the zeros on the CPU - torch.zeros_like(p) keeps the device too"
    )


# ----------------------------------------------------------------------------------------------------------
# predict_no_grad


class GradModeSpy(nn.Module):
    """A Linear layer that notes whether grad mode was on during each forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 2)
        self.grad_mode_seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.grad_mode_seen.append(torch.is_grad_enabled())
        return self.layer(x)


def test_predict_no_grad_output() -> None:
    model = nn.Linear(3, 2)
    x = torch.randn(5, 3, requires_grad=True)
    out = kata.predict_no_grad(model, x)
    with torch.no_grad():
        want = x @ model.weight.T + model.bias
    assert_close(out, want, rtol=1e-6, atol=1e-6, what="predict_no_grad(model, x) vs model(x)")
    assert not out.requires_grad and out.grad_fn is None, (
        f"x requires grad, yet the result has requires_grad={out.requires_grad}, grad_fn={out.grad_fn}; "
        "likely cause: model(x.detach()) - the parameters still require grad, so a graph is recorded"
    )


class GraphRecorder(TorchFunctionMode):
    """Notes every torch call inside the block whose result is a tensor that requires grad: a graph node."""

    def __init__(self) -> None:
        super().__init__()
        self.recorded: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        result = func(*args, **(kwargs or {}))
        outputs = result if isinstance(result, tuple | list) else (result,)
        if any(isinstance(t, torch.Tensor) and t.requires_grad and t.grad_fn is not None for t in outputs):
            self.recorded.append(getattr(func, "__qualname__", repr(func)))
        return result


def test_predict_no_grad_records_no_graph() -> None:
    model = GradModeSpy()
    x = torch.randn(2, 3, requires_grad=True)
    with GraphRecorder() as recorder:
        out = kata.predict_no_grad(model, x)
    assert model.grad_mode_seen == [False], (
        f"grad mode during the forward pass: expected [False], saw {model.grad_mode_seen}; likely cause: "
        "model(x).detach() builds the graph and throws it away - run the forward pass inside torch.no_grad()"
    )
    assert not recorder.recorded, (
        f"the call built autograd graph nodes ({recorder.recorded}) although it promises to record none; "
        "likely cause: computing with grad mode on and detaching afterwards"
    )
    assert not out.requires_grad and out.grad_fn is None, f"the result has grad_fn={out.grad_fn}"


def test_predict_no_grad_restores_the_previous_grad_mode() -> None:
    model = GradModeSpy()
    with torch.no_grad():
        kata.predict_no_grad(model, torch.randn(2, 3))
        still_off = not torch.is_grad_enabled()
    assert still_off, (
        "called inside torch.no_grad(), predict_no_grad switched grad mode ON on its way out; likely cause: "
        "torch.set_grad_enabled(True) (or a bare set_grad_enabled(False) ... set_grad_enabled(True) pair) "
        "instead of restoring the previous mode - `with torch.no_grad():` restores whatever was there"
    )
    kata.predict_no_grad(model, torch.randn(2, 3))
    assert torch.is_grad_enabled(), "grad mode was on before the call and is off after it"


def test_predict_no_grad_leaves_inputs_unchanged() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    model[2].bias.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    values = [p.detach().clone() for p in model.parameters()]
    x = torch.randn(5, 3, requires_grad=True)
    x_before = x.detach().clone()
    kata.predict_no_grad(model, x)
    assert x.requires_grad and torch.equal(x.detach(), x_before), (
        f"x required grad before the call; afterwards requires_grad={x.requires_grad} (values "
        f"{'unchanged' if torch.equal(x.detach(), x_before) else 'changed'}); likely cause: "
        "x.requires_grad_(False) or x.detach_() on the caller's tensor - torch.no_grad() needs neither"
    )
    now = [p.requires_grad for p in model.parameters()]
    assert now == flags, (
        f"the parameters' requires_grad flags were {flags} and are now {now}; likely cause: "
        "model.requires_grad_(False) to avoid the graph - that freezes the caller's model; use no_grad()"
    )
    for before, p in zip(values, model.parameters(), strict=True):
        assert torch.equal(before, p.detach()), "predict_no_grad changed a parameter's values"


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_predict_no_grad_leaves_training_mode(training: bool) -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5), nn.Linear(3, 1))
    model.train(training)
    out = kata.predict_no_grad(model, torch.randn(4, 3))
    assert tuple(out.shape) == (4, 1), f"expected a (4, 1) output, got {tuple(out.shape)}"
    modes = [m.training for m in model.modules()]
    assert all(mode == training for mode in modes), (
        f"the model was in {'train' if training else 'eval'} mode and must stay so; module modes are now "
        f"{modes}; likely cause: calling model.eval() (or model.train()) - no_grad and eval are independent"
    )


class Exploding(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("boom")


def test_predict_no_grad_restores_grad_mode_on_error() -> None:
    with pytest.raises(ValueError, match="boom"):
        kata.predict_no_grad(Exploding(), torch.randn(2, 3))
    assert torch.is_grad_enabled(), (
        "the model raised, and grad mode is still off afterwards; likely cause: "
        "torch.set_grad_enabled(False) ... set_grad_enabled(True) without a finally - a "
        "`with torch.no_grad():` block restores it for you"
    )


# ----------------------------------------------------------------------------------------------------------
# stop_gradient_sum


@settings(max_examples=20)
@given(shapes=mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3), seed=st.integers(0, 2**16))
def test_stop_gradient_sum_value(shapes: BroadcastableShapes, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    shape_a, shape_b = shapes.input_shapes
    a = torch.randn(shape_a, generator=gen, dtype=torch.float64).requires_grad_()
    b = torch.randn(shape_b, generator=gen, dtype=torch.float64).requires_grad_()
    want = torch.from_numpy(
        np.asarray(a.detach().numpy() + b.detach().numpy())
    )  # NumPy's broadcasting, independently
    got = kata.stop_gradient_sum(a, b)
    assert_close(
        got.detach(),
        want.reshape(shapes.result_shape),
        rtol=1e-12,
        atol=1e-12,
        what=f"stop_gradient_sum for shapes {shape_a} and {shape_b}",
        likely_cause="forcing b to a's shape (view_as / expand_as) instead of letting + broadcast",
    )


def test_stop_gradient_sum_grad_flows_to_a() -> None:
    w = torch.randn(3, 1, requires_grad=True)
    a = w * 2  # a non-leaf: the gradient must reach w through it
    b = torch.randn(1, 4, requires_grad=True)
    out = kata.stop_gradient_sum(a, b)
    assert out.requires_grad, (
        "the result does not require grad, so no gradient can reach a; likely cause: (a + b).detach() or "
        "computing it under torch.no_grad() - detach only b"
    )
    upstream = torch.randn(3, 4)
    (grad_w,) = torch.autograd.grad(out, [w], upstream, allow_unused=True)
    assert grad_w is not None, "no gradient reached a; likely cause: a.detach() + b (the wrong operand)"
    assert_close(grad_w, 2 * upstream.sum(1, keepdim=True), rtol=1e-6, atol=1e-6, what="gradient reaching a")


def test_stop_gradient_sum_no_grad_to_b() -> None:
    a = torch.randn(2, 3, requires_grad=True)
    w = torch.randn(2, 3, requires_grad=True)
    b = w * 3
    out = kata.stop_gradient_sum(a, b)
    assert out.requires_grad, "the result does not require grad even though a does"
    grad_b, grad_w = torch.autograd.grad(out, [b, w], torch.randn(2, 3), allow_unused=True)
    for label, g in (("b", grad_b), ("whatever b was computed from", grad_w)):
        assert g is None or not g.any(), (
            f"a gradient reached {label}: {g}; likely cause: a + b without b.detach()"
        )


def test_stop_gradient_sum_leaves_inputs_unchanged() -> None:
    a = torch.randn(3, requires_grad=True)
    leaf_b = torch.randn(3, requires_grad=True)
    kata.stop_gradient_sum(a, leaf_b)
    assert leaf_b.requires_grad, (
        "b required grad before the call and no longer does; likely cause: b.requires_grad_(False) or "
        "b.detach_() change the caller's tensor - b.detach() makes a new one"
    )
    w = torch.randn(3, requires_grad=True)
    b = w * 2
    kata.stop_gradient_sum(a, b)
    assert b.grad_fn is not None and b.requires_grad, (
        "b (computed from w) was cut out of its own graph by the call; likely cause: b.detach_() detaches in "
        "place - use b.detach()"
    )
    (grad_w,) = torch.autograd.grad(b.sum(), [w])
    assert_close(grad_w, torch.full((3,), 2.0), rtol=0, atol=0, what="b's own gradient after the call")


def test_stop_gradient_sum_leaves_input_values_unchanged() -> None:
    wa, wb = torch.randn(2, 3, requires_grad=True), torch.randn(2, 3, requires_grad=True)
    a, b = wa * 1.5, wb * 2.5  # non-leaves, so an in-place write into them does not raise
    a_before, b_before = a.detach().clone(), b.detach().clone()
    out = kata.stop_gradient_sum(a, b)
    changed = [name for name, t, old in (("a", a, a_before), ("b", b, b_before)) if not torch.equal(t, old)]
    assert not changed, (
        f"stop_gradient_sum changed the values of {changed}; likely cause: an in-place add (a.add_(...), "
        "a += ...) or writing into b.detach(), which shares b's memory - return a new tensor"
    )
    assert_close(out.detach(), a_before + b_before, rtol=1e-6, atol=1e-6, what="stop_gradient_sum(a, b)")


# ----------------------------------------------------------------------------------------------------------
# SiLU and silu


@settings(max_examples=20)
@given(
    shape=st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_silu_forward_values(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> None:
    x = (torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 4).to(dtype)
    want = torch.tensor([v * sigmoid64(v) for v in x.double().flatten().tolist()], dtype=torch.float64)
    got = kata.SiLU.apply(x)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    assert_close(
        got,
        want.reshape(shape).to(dtype),
        rtol=tol,
        atol=tol,
        what=f"SiLU.apply on a {dtype} tensor of shape {shape}",
        likely_cause="returning sigmoid(x) without the factor x, or a cast to another dtype",
    )


def test_silu_backward_exact_derivative() -> None:
    x = torch.linspace(-8, 8, 33, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(kata.SiLU.apply(x).sum(), x)
    assert_close(
        grad,
        silu_grad_oracle(x.detach()),
        rtol=1e-12,
        atol=1e-14,
        what="d/dx SiLU(x) from SiLU.backward (upstream gradient of ones)",
        likely_cause="the product rule: d/dx [x * s] = s + x * s * (1 - s), not s * (1 - s) or s alone",
    )


def test_silu_backward_scales_grad_output(device: torch.device) -> None:
    x = torch.linspace(-5, 5, 12, dtype=torch.float64).reshape(3, 4)
    upstream = torch.randn(3, 4, dtype=torch.float64)
    xd = x.to(device).requires_grad_()
    (grad,) = torch.autograd.grad(kata.SiLU.apply(xd), xd, upstream.to(device))
    assert grad.device.type == device.type, f"expected the gradient on {device}, got {grad.device}"
    assert_close(
        grad.cpu(),
        upstream * silu_grad_oracle(x),
        rtol=1e-12,
        atol=1e-14,
        what=f"SiLU.backward with a random upstream gradient on {device}",
        likely_cause="returning the local derivative without multiplying by grad_output (chain rule)",
    )


def test_silu_backward_large_inputs_finite() -> None:
    x = torch.tensor([-1000.0, -100.0, -30.0, 0.0, 30.0, 100.0, 1000.0], requires_grad=True)
    (grad,) = torch.autograd.grad(kata.SiLU.apply(x).sum(), x)
    assert torch.isfinite(grad).all(), (
        f"SiLU.backward at {x.tolist()} gave {grad.tolist()}; likely cause: a formula in exp(-x) overflows "
        "to inf for large negative x (inf / inf = nan) - write it in terms of torch.sigmoid(x)"
    )
    assert_close(grad.double(), silu_grad_oracle(x.detach()), rtol=1e-6, atol=1e-6, what="SiLU.backward")


def test_silu_gradcheck() -> None:
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    try:
        torch.autograd.gradcheck(kata.SiLU.apply, (x,), eps=1e-6, atol=1e-8, rtol=1e-6)
    except GradcheckError as exc:
        raise AssertionError(
            f"torch.autograd.gradcheck rejects SiLU's backward (its numerical and analytical Jacobians "
            f"differ):\n{exc}\nlikely cause: a wrong derivative formula"
        ) from exc


def holds_tensor(value: object) -> bool:
    """A tensor, or a list / tuple / dict holding one (one level down is where people put them)."""
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, dict):
        value = list(value.values())
    return isinstance(value, list | tuple) and any(isinstance(v, torch.Tensor) for v in value)


def test_silu_saves_tensors_with_save_for_backward() -> None:
    x = torch.randn(4, dtype=torch.float64, requires_grad=True)
    y = kata.SiLU.apply(x)
    ctx = y.grad_fn  # for a custom Function, the graph node is the very ctx that forward received
    assert ctx is not None, "SiLU.apply(x) on an x that requires grad returned a result with no grad_fn"
    on_ctx = sorted(name for name, value in vars(ctx).items() if holds_tensor(value))
    assert not on_ctx, (
        f"SiLU.forward keeps tensors as attributes of ctx: {[f'ctx.{name}' for name in on_ctx]}; the "
        "contract asks for ctx.save_for_backward(...) for every tensor backward needs. Attributes skip the "
        "check that the tensor was not modified in place before backward (a silently wrong gradient), can "
        "leak memory through reference cycles, and bypass saved-tensor hooks"
    )
    saved = ctx.saved_tensors
    assert len(saved) >= 1, (
        "SiLU.forward saved no tensor with ctx.save_for_backward, yet SiLU's derivative depends on x; likely "
        "cause: the input kept some other way (a global, a closure) instead of ctx.save_for_backward(x)"
    )


@pytest.mark.parametrize("requires_grad", [False, True], ids=["plain", "requires_grad"])
def test_silu_does_not_modify_its_input(requires_grad: bool) -> None:
    x = torch.linspace(-3, 3, 7, dtype=torch.float64).requires_grad_(requires_grad)
    before = x.detach().clone()
    out = kata.SiLU.apply(x)
    assert torch.equal(x.detach(), before) and x.requires_grad == requires_grad, (
        f"SiLU.apply changed its input: x was {before.tolist()} (requires_grad={requires_grad}), now "
        f"{x.detach().tolist()} (requires_grad={x.requires_grad}); likely cause: an in-place operation in "
        "forward (x.mul_(...), x *= ...) - forward runs without autograd recording, so nothing stops it"
    )
    assert_close(out.detach(), before * torch.sigmoid(before), rtol=1e-12, atol=1e-14, what="SiLU.apply(x)")


def test_silu_on_meta_device() -> None:
    # No data on the meta device, but shapes, dtypes and devices: a tensor made on the CPU inside forward or
    # backward (torch.ones(shape), torch.tensor(...) of a shape) shows up on any machine.
    x = torch.empty(3, 4, dtype=torch.float64, device="meta", requires_grad=True)
    y = on_meta("SiLU.apply", lambda: kata.SiLU.apply(x))
    assert (y.device.type, y.dtype, tuple(y.shape)) == ("meta", torch.float64, (3, 4)), (
        f"SiLU.apply on a (3, 4) float64 meta tensor gave {y.dtype} {tuple(y.shape)} on {y.device}"
    )
    upstream = torch.empty(3, 4, dtype=torch.float64, device="meta")
    (grad,) = on_meta("SiLU.backward", lambda: torch.autograd.grad(y, x, upstream))
    assert (grad.device.type, grad.dtype, tuple(grad.shape)) == ("meta", torch.float64, (3, 4)), (
        f"SiLU.backward on meta tensors gave a {grad.dtype} {tuple(grad.shape)} gradient on {grad.device}; "
        "likely cause: a tensor built without device=x.device (torch.ones(x.shape)) - use ones_like or "
        "plain Python numbers"
    )


FORBIDDEN_IN_BACKWARD = {
    "grad",
    "backward",
    "torch.autograd.grad",
    "torch.autograd.backward",
    "torch.Tensor.backward",
}


def test_silu_backward_is_hand_written(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(5, dtype=torch.float64, requires_grad=True)
    y = kata.SiLU.apply(x)
    assert y.grad_fn is not None, "SiLU.apply(x) on an x that requires grad returned a result with no grad_fn"
    entered: list[str] = []

    def spy(name: str, real: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            entered.append(name)
            return real(*args, **kwargs)

        return wrapper

    for owner, attr in [
        (torch.autograd, "grad"),
        (torch.autograd, "backward"),
        (torch.autograd, "_engine_run_backward"),
        (torch.autograd.graph, "_engine_run_backward"),
        (torch.Tensor, "backward"),
        (F, "silu"),
    ]:
        monkeypatch.setattr(owner, attr, spy(f"{owner.__name__}.{attr}", getattr(owner, attr)))
    upstream = torch.randn(5, dtype=torch.float64)
    # Run SiLU's backward directly through its autograd node, as the engine would (grad mode off).
    with torch.no_grad(), record_torch_calls() as calls:
        grad = y.grad_fn.apply(upstream)
    monkeypatch.undo()
    grad = grad[0] if isinstance(grad, tuple) else grad
    used = sorted({c for c in calls if c in FORBIDDEN_IN_BACKWARD or "silu" in c.lower()} | set(entered))
    assert not used, (
        f"SiLU.backward must be written by hand from tensor operations, but it called {used}; autograd "
        "(torch.autograd.grad, .backward(), torch.func) and the built-in silu / silu_backward are not "
        "allowed"
    )
    assert_close(grad, upstream * silu_grad_oracle(x.detach()), rtol=1e-12, atol=1e-14, what="SiLU.backward")


def test_silu_applies_function() -> None:
    x = torch.linspace(-3, 3, 7, requires_grad=True)
    out = kata.silu(x)
    want = torch.tensor([v * sigmoid64(v) for v in x.tolist()], dtype=torch.float32)
    assert_close(out.detach(), want, rtol=1e-6, atol=1e-6, what="silu(x)")
    forward_cls = getattr(out.grad_fn, "_forward_cls", None)
    assert forward_cls is kata.SiLU, (
        f"expected the result's grad_fn to come from SiLU, got {type(out.grad_fn).__name__}; likely cause: "
        "computing x * torch.sigmoid(x) (or F.silu) directly instead of SiLU.apply(x)"
    )
