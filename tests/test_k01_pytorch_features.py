"""Grader for k01_pytorch_features: build_mlp, runtime_info, fit_line."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from kata_harness import load_kata

kata = load_kata("k01_pytorch_features")

sizes = st.integers(min_value=1, max_value=16)


def test_build_mlp_is_a_sequential_of_three() -> None:
    model = kata.build_mlp(4, 8, 2)
    assert isinstance(model, nn.Sequential), (
        f"expected an nn.Sequential, got {type(model).__name__}; likely cause: a custom nn.Module "
        "subclass instead of nn.Sequential(...)"
    )
    assert len(model) == 3, (
        f"expected exactly three children, got {len(model)}: {list(model)}; likely cause: an extra "
        "activation or dropout, or a missing layer"
    )


def test_build_mlp_children_in_order() -> None:
    kinds = [type(child) for child in kata.build_mlp(4, 8, 2)]
    assert kinds == [nn.Linear, nn.ReLU, nn.Linear], (
        f"expected [Linear, ReLU, Linear], got {[k.__name__ for k in kinds]}; likely cause: another "
        "activation (Sigmoid, Tanh) or the layers in the wrong order"
    )


@given(in_features=sizes, hidden=sizes, out_features=sizes)
@settings(max_examples=15)
def test_build_mlp_layer_sizes(in_features: int, hidden: int, out_features: int) -> None:
    first, _, last = kata.build_mlp(in_features, hidden, out_features)
    got = (first.in_features, first.out_features, last.in_features, last.out_features)
    expected = (in_features, hidden, hidden, out_features)
    assert got == expected, (
        f"build_mlp({in_features}, {hidden}, {out_features}): expected Linear({in_features}, {hidden}) "
        f"then Linear({hidden}, {out_features}), got sizes {got}; likely cause: arguments swapped"
    )


def test_build_mlp_layers_have_bias() -> None:
    first, _, last = kata.build_mlp(3, 5, 1)
    assert first.bias is not None and last.bias is not None, (
        "expected both nn.Linear layers to have a bias (the default); likely cause: bias=False"
    )


RUNTIME_KEYS = {"torch_version", "cuda_available", "device_count", "device"}


def test_runtime_info_has_exactly_the_four_keys() -> None:
    info = kata.runtime_info()
    assert isinstance(info, dict), f"expected a dict, got {type(info).__name__}"
    assert set(info) == RUNTIME_KEYS, (
        f"expected keys {sorted(RUNTIME_KEYS)}, got {sorted(info)}; check the spelling of each key"
    )


def test_runtime_info_torch_version() -> None:
    version = kata.runtime_info()["torch_version"]
    assert isinstance(version, str) and version == torch.__version__, (
        f"expected torch.__version__ ({torch.__version__!r}), got {version!r}; likely cause: "
        "torch.version.cuda, or a hard-coded version string"
    )


def test_runtime_info_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    info = kata.runtime_info()
    got = (info["cuda_available"], info["device_count"], info["device"])
    assert got == (False, 0, "cpu"), (
        f"with CUDA unavailable expected (cuda_available, device_count, device) == (False, 0, 'cpu'), "
        f"got {got}; likely cause: a hard-coded value instead of asking torch.cuda"
    )
    assert type(info["cuda_available"]) is bool and type(info["device_count"]) is int, (
        "expected cuda_available to be a bool and device_count an int"
    )


def test_runtime_info_with_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    info = kata.runtime_info()
    got = (info["cuda_available"], info["device_count"], info["device"])
    assert got == (True, 2, "cuda"), (
        f"with 2 CUDA devices expected (True, 2, 'cuda'), got {got}; likely cause: 'cuda:0' instead of "
        "'cuda', or the device count not taken from torch.cuda.device_count()"
    )


@pytest.mark.cuda
def test_runtime_info_on_a_real_gpu() -> None:
    info = kata.runtime_info()
    expected = (True, torch.cuda.device_count(), "cuda")
    got = (info["cuda_available"], info["device_count"], info["device"])
    assert got == expected, f"on this GPU machine expected {expected}, got {got}"


def reference_descent(xs: torch.Tensor, ys: torch.Tensor, steps: int, lr: float) -> tuple[float, float]:
    """Plain gradient descent on the mean squared error, with the gradients written out in float64."""
    x, y = xs.double(), ys.double()
    w = b = 0.0
    for _ in range(steps):
        residual = w * x + b - y
        w, b = w - lr * float((2 * residual * x).mean()), b - lr * float((2 * residual).mean())
    return w, b


@given(
    w=st.floats(min_value=-3, max_value=3),
    b=st.floats(min_value=-3, max_value=3),
    n=st.integers(min_value=8, max_value=40),
)
@settings(max_examples=10)
def test_fit_line_recovers_a_noiseless_line(w: float, b: float, n: int) -> None:
    xs = torch.linspace(-1, 1, n)
    got = kata.fit_line(xs, w * xs + b)
    assert abs(got[0] - w) <= 1e-2 and abs(got[1] - b) <= 1e-2, (
        f"on y = {w:.3f}*x + {b:.3f} with {n} points expected (w, b) within 1e-2, got {got}; likely "
        "cause: gradients not zeroed between steps, the update's sign, or the default steps/lr"
    )


def test_fit_line_zero_steps_is_the_start() -> None:
    got = kata.fit_line(torch.linspace(-1, 1, 8), torch.ones(8), steps=0)
    assert tuple(got) == (0.0, 0.0), f"steps=0 must return the start (0.0, 0.0), got {got}"


def test_fit_line_returns_python_floats() -> None:
    got = kata.fit_line(torch.linspace(-1, 1, 8), torch.ones(8), steps=3)
    assert isinstance(got, tuple) and len(got) == 2, f"expected a (w, b) tuple, got {got!r}"
    assert all(type(v) is float for v in got), (
        f"expected Python floats, got {[type(v).__name__ for v in got]}; likely cause: returning the "
        "tensors themselves instead of float(w) / w.item()"
    )


@pytest.mark.parametrize(("steps", "lr"), [(1, 0.1), (2, 0.1), (5, 0.05)])
def test_fit_line_takes_plain_gradient_descent_steps(steps: int, lr: float) -> None:
    xs = torch.linspace(-1, 1, 9)
    ys = 2.5 * xs - 1.25 + torch.linspace(0, 0.3, 9) ** 2
    got = kata.fit_line(xs, ys, steps=steps, lr=lr)
    expected = reference_descent(xs, ys, steps, lr)
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-5), (
        f"after {steps} step(s) with lr={lr} expected (w, b) = {expected}, got {got}; likely cause: "
        "gradients accumulating across steps (no zeroing), a sum instead of a mean in the loss, or "
        "lr not used as given"
    )


def test_fit_line_leaves_its_inputs_alone() -> None:
    xs, ys = torch.linspace(-1, 1, 8), torch.linspace(0, 3, 8)
    xs_before, ys_before = xs.clone(), ys.clone()
    kata.fit_line(xs, ys, steps=5)
    assert torch.equal(xs, xs_before) and torch.equal(ys, ys_before), (
        "fit_line changed xs or ys; likely cause: an in-place operation (+=, sub_) on an input"
    )
