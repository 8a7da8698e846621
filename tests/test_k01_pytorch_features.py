"""Grader for k01_pytorch_features: build_mlp, runtime_info, fit_line."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from kata_harness import load_kata
from kata_harness.testing import assert_close

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


def test_build_mlp_computes_linear_relu_linear() -> None:
    model = kata.build_mlp(3, 6, 2)
    first, _, last = model
    x = torch.randn(5, 3)
    hidden = torch.relu(x.double() @ first.weight.double().T + first.bias.double())
    expected = hidden @ last.weight.double().T + last.bias.double()
    assert_close(
        model(x).double(),
        expected,
        rtol=1e-5,
        atol=1e-6,
        what="build_mlp(3, 6, 2)(x) against a float64 Linear -> ReLU -> Linear",
        likely_cause="an nn.Sequential subclass with its own forward, or the children in another order",
    )


def test_build_mlp_follows_the_default_dtype() -> None:
    torch.set_default_dtype(torch.float64)
    try:
        model = kata.build_mlp(3, 4, 2)
    finally:
        torch.set_default_dtype(torch.float32)
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert set(dtypes.values()) == {torch.float64}, (
        f"with the default dtype set to float64 expected every parameter in float64, got {dtypes}; "
        "likely cause: a hard-coded dtype=torch.float32 (or a .float()) on a layer"
    )


def test_build_mlp_follows_the_default_device() -> None:
    with torch.device("meta"):
        model = kata.build_mlp(3, 4, 2)
    devices = {name: str(p.device) for name, p in model.named_parameters()}
    assert set(devices.values()) == {"meta"}, (
        f'inside `with torch.device("meta"):` expected every parameter on meta, got {devices}; likely '
        'cause: a hard-coded device="cpu" (or a .cpu()) on a layer, which would also ignore a GPU default'
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
    assert type(version) is str, (
        f"expected a plain str, got {type(version).__module__}.{type(version).__qualname__} "
        f"({version!r}); likely cause: torch.__version__ returned as is - it is a TorchVersion, a str "
        "subclass that compares differently (TorchVersion('2.10') > '2.9'); wrap it in str()"
    )
    assert version == torch.__version__, (
        f"expected torch.__version__ ({torch.__version__!r}), got {version!r}; likely cause: "
        "torch.version.cuda, or a hard-coded version string"
    )


PLAIN_TYPES = {"cuda_available": bool, "device_count": int, "device": str}


def assert_plain_types(info: dict) -> None:
    """Exact types: a torch.device is not a str, and a bool is an int but not the promised count."""
    got = {key: type(info[key]) for key in PLAIN_TYPES}
    assert got == PLAIN_TYPES, (
        f"expected the types { {k: t.__name__ for k, t in PLAIN_TYPES.items()} }, got "
        f"{ {k: t.__name__ for k, t in got.items()} }; likely cause: a torch.device instead of the "
        'string "cuda"/"cpu", or a tensor or numpy value instead of a Python bool/int'
    )


def test_runtime_info_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    info = kata.runtime_info()
    got = (info["cuda_available"], info["device_count"], info["device"])
    assert_plain_types(info)
    assert got == (False, 0, "cpu"), (
        f"with CUDA unavailable expected (cuda_available, device_count, device) == (False, 0, 'cpu'), "
        f"got {got}; likely cause: a hard-coded value instead of asking torch.cuda"
    )


def test_runtime_info_counts_no_devices_when_cuda_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    count = kata.runtime_info()["device_count"]
    assert count == 0, (
        "with torch.cuda.is_available() False but torch.cuda.device_count() reporting 1 (a GPU the "
        f"driver sees but CUDA cannot use) expected device_count 0, got {count!r}; likely cause: "
        "device_count taken without checking availability first"
    )


def test_runtime_info_with_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    info = kata.runtime_info()
    got = (info["cuda_available"], info["device_count"], info["device"])
    assert_plain_types(info)
    assert got == (True, 2, "cuda"), (
        f"with 2 CUDA devices expected (True, 2, 'cuda'), got {got}; likely cause: 'cuda:0' instead of "
        "'cuda', or the device count not taken from torch.cuda.device_count()"
    )


@pytest.mark.cuda
def test_runtime_info_on_a_real_gpu() -> None:
    info = kata.runtime_info()
    expected = (True, torch.cuda.device_count(), "cuda")
    got = (info["cuda_available"], info["device_count"], info["device"])
    assert_plain_types(info)
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
    xs, ys = torch.linspace(0, 2, 8), torch.linspace(0, 3, 8) ** 2
    xs_before, ys_before = xs.clone(), ys.clone()
    kata.fit_line(xs, ys, steps=5)
    assert not xs.requires_grad and not ys.requires_grad, (
        f"fit_line turned on requires_grad of the caller's tensors (xs: {xs.requires_grad}, ys: "
        f"{ys.requires_grad}); likely cause: xs.requires_grad_() - only w and b are parameters"
    )
    assert xs.grad_fn is None and ys.grad_fn is None, (
        "the caller's xs or ys now has a grad_fn: they were written in place with a result that "
        "requires grad; likely cause: an in-place operation (+=, sub_) on an input"
    )
    assert torch.equal(xs, xs_before) and torch.equal(ys, ys_before), (
        "fit_line changed the values of xs or ys; likely cause: an in-place operation (+=, sub_, "
        "centring xs in place) on an input"
    )


def test_fit_line_starts_afresh_on_every_call() -> None:
    xs = torch.linspace(-1, 1, 9)
    kata.fit_line(xs, 3 * xs + 2, steps=20)
    ys = -xs + 0.5
    got = kata.fit_line(xs, ys, steps=3)
    expected = reference_descent(xs, ys, 3, 0.1)
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-5), (
        f"a second call (3 steps on y = -x + 0.5) expected {expected}, got {got}: the first call's "
        "fit leaked into it; likely cause: w and b (or an optimizer) kept at module level or as "
        "default arguments instead of created inside fit_line"
    )


@pytest.mark.cuda
def test_fit_line_on_a_gpu() -> None:
    xs = torch.linspace(-1, 1, 9)
    ys = 2.5 * xs - 1.25 + torch.linspace(0, 0.3, 9) ** 2
    got = kata.fit_line(xs.cuda(), ys.cuda(), steps=5, lr=0.05)
    expected = reference_descent(xs, ys, 5, 0.05)
    assert all(type(v) is float for v in got), (
        f"expected Python floats, got {[type(v).__name__ for v in got]}"
    )
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-5), (
        f"with xs and ys on the GPU expected {expected} (as on the CPU), got {got}; likely cause: w "
        "and b created on the CPU with a shape other than () (only 0-dim CPU tensors mix with CUDA "
        "ones) - create them on xs.device"
    )
