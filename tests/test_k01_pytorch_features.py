"""Grader for k01_pytorch_features: build_mlp, capture_graphs, fit_line."""

import pytest
import torch
import torch._dynamo  # imported while collecting: no test's time limit pays for it
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


# Capture tests: the first torch.compile in a process costs a few seconds on a busy CPU (Dynamo warms up
# its caches), far more than the harness's default per-test limit allows for; later captures of these
# tiny functions take a fraction of a second.
compiling = pytest.mark.timeout(60)

COMPILE_SETTINGS = torch._dynamo.config.get_config_copy()  # compile's settings as torch ships them


def changed_compile_settings() -> dict[str, tuple[object, object]]:
    """{setting: (shipped value, current value)} for every torch._dynamo.config setting changed since then."""
    now = torch._dynamo.config.get_config_copy()
    return {key: (value, now[key]) for key, value in COMPILE_SETTINGS.items() if now.get(key) != value}


@pytest.fixture(autouse=True)
def shipped_compile_settings() -> None:
    """Every test (and its explain oracle) starts from compile's shipped settings: a setting that kata code
    leaked fails the test that checks for leaks, and changes no other test's oracle."""
    for key, (shipped, _) in changed_compile_settings().items():
        setattr(torch._dynamo.config, key, shipped)


def op_name(node: torch.fx.Node) -> str:
    if node.op == "placeholder":
        return "input"  # a placeholder's name depends on how fn was wrapped; how many there are does not
    if node.op == "output":
        return "output"
    target = node.target
    return target if isinstance(target, str) else getattr(target, "__name__", repr(target))


def ops(graphs: list) -> list[list[str]]:
    """Each graph as the names of its nodes, in order: ['input', 'sin', 'mul', ..., 'output']."""
    return [[op_name(node) for node in graph.graph.nodes] for graph in graphs]


def identity(graphs: list) -> list[list[tuple[str, object]]]:
    """Each graph as (op, target) per node, placeholders by kind only: what must match exactly."""
    return [
        [(node.op, None if node.op == "placeholder" else node.target) for node in graph.graph.nodes]
        for graph in graphs
    ]


def explained(fn: object, *args: object) -> list:
    """The oracle: the graphs torch._dynamo.explain reports (it resets Dynamo's caches before and after)."""
    return torch._dynamo.explain(fn)(*args).graphs


def captured(fn: object, *args: object) -> tuple[object, list]:
    """kata.capture_graphs(fn, *args), with its promised types checked first."""
    got = kata.capture_graphs(fn, *args)
    assert isinstance(got, tuple) and len(got) == 2, (
        f"expected a (result, graphs) tuple, got {type(got).__name__}: {got!r:.200}"
    )
    result, graphs = got
    assert isinstance(graphs, list), (
        f"expected the graphs as a list, got {type(graphs).__name__}; likely cause: a tuple or a generator "
        "instead of the list the backend filled"
    )
    kinds = [type(graph).__name__ for graph in graphs if not isinstance(graph, torch.fx.GraphModule)]
    assert not kinds, (
        f"expected every graph to be a torch.fx.GraphModule, got {kinds}; likely cause: keeping "
        "graph_module.graph (a torch.fx.Graph) or the example inputs instead of the GraphModule itself"
    )
    return result, graphs


def assert_same_graphs(got: list, expected: list, what: str) -> None:
    assert len(got) == len(expected), (
        f"{what}: expected {len(expected)} graph(s) {ops(expected)}, got {len(got)}: {ops(got)}; likely "
        "cause: graphs kept from an earlier call (a list or backend outside the function), only the "
        "first graph kept, a cached compile that handed the backend nothing this time, or a capture "
        "setting changed (capture_scalar_outputs=True keeps .item() in the graph)"
    )
    assert identity(got) == identity(expected), (
        f"{what}: expected the graphs {ops(expected)}, got {ops(got)}; likely cause: dynamic=True (extra "
        "size inputs), a capture setting changed, graphs in another order, or a function other than fn "
        "compiled"
    )


def straight(x: torch.Tensor) -> torch.Tensor:
    """Traces whole: one graph."""
    return torch.relu(torch.sin(x) * 2 + 1).sum(dim=0)


def branchy(x: torch.Tensor) -> torch.Tensor:
    """A Python `if` on a tensor's value: a graph break, and the second graph depends on the branch."""
    y = torch.sin(x) * 2
    if y.sum() > 0:  # noqa: SIM108 - the statement form is the point: an `if` on a tensor's value
        y = y - 1
    else:
        y = torch.cos(y)
    return torch.relu(y)


def chatty(x: torch.Tensor, log: list) -> torch.Tensor:
    """A print and an .item(): graph breaks with Python side effects in between."""
    log.append("start")
    y = torch.tanh(x) + 1
    print("chatty ran")
    scale = y.max().item()
    log.append("end")
    return y / scale


@compiling
def test_capture_graphs_of_a_function_that_traces_whole() -> None:
    x = torch.randn(4, 3)
    result, graphs = captured(straight, x)
    assert_same_graphs(graphs, explained(straight, x), "capture_graphs(straight, x)")
    assert_close(
        result,
        straight(x),
        rtol=1e-6,
        atol=1e-7,
        what="the result of capture_graphs(straight, x) against an eager straight(x)",
        likely_cause="the backend's callable does not run the graph it was given (it must return "
        "something that computes the graph, e.g. the graph module's forward)",
    )


@compiling
@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["if-branch", "else-branch"])
def test_capture_graphs_splits_at_a_data_dependent_branch(sign: float) -> None:
    x = sign * (torch.rand(4, 3) + 0.5)
    expected = explained(branchy, x)
    try:
        result, graphs = captured(branchy, x)
    except NotImplementedError:
        raise
    except Exception as error:
        pytest.fail(
            f"capture_graphs(branchy, x) raised {type(error).__name__}: {str(error)[:300]}. branchy has a "
            "Python `if` on a tensor's value, a graph break; likely cause: fullgraph=True, which turns "
            "the first graph break into an error",
            pytrace=False,
        )
    assert_same_graphs(graphs, expected, "capture_graphs(branchy, x) (one graph break at the `if`)")
    assert_close(
        result,
        branchy(x),
        rtol=1e-6,
        atol=1e-7,
        what="the result of capture_graphs(branchy, x) against an eager branchy(x)",
    )


@compiling
def test_capture_graphs_runs_fn_exactly_once(capsys: pytest.CaptureFixture[str]) -> None:
    x = torch.rand(5) + 0.5
    expected = explained(chatty, x, [])
    capsys.readouterr()
    log: list[str] = []
    result, graphs = captured(chatty, x, log)
    printed = capsys.readouterr().out.count("chatty ran")
    assert (log, printed) == (["start", "end"], 1), (
        f"fn ran more than once (or not at all): its log is {log} (expected ['start', 'end']) and it "
        f"printed {printed} time(s) (expected 1); likely cause: fn also called eagerly for the result, "
        "or torch._dynamo.explain called besides the compiled call"
    )
    assert_same_graphs(graphs, expected, "capture_graphs(chatty, x, log) (a print and an .item() break it)")
    assert_close(
        result, chatty(x, []), rtol=1e-6, atol=1e-7, what="the result of capture_graphs(chatty, ...)"
    )


@compiling
def test_capture_graphs_of_a_module() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(6, 3)
    result, graphs = captured(model, x)
    assert_same_graphs(graphs, explained(model, x), "capture_graphs(nn.Sequential(...), x)")
    assert_close(result, model(x), rtol=1e-6, atol=1e-7, what="the result of capture_graphs(model, x)")


def twice(x: torch.Tensor) -> torch.Tensor:
    """Captured twice in a row by one test (a function of its own, so no other test's compiles count)."""
    y = torch.exp(x) - 1
    if y.mean() > 0:
        y = y * 3
    return y


@compiling
def test_capture_graphs_captures_afresh_on_every_call() -> None:
    x = torch.rand(2, 3)
    expected = explained(twice, x)
    _, first = captured(twice, x)
    _, second = captured(twice, x)
    assert second is not first, (
        "the second call returned the very list the first call did; likely cause: one list kept at "
        "module level (or as a default argument) and returned every time"
    )
    assert_same_graphs(first, expected, "the first capture_graphs(twice, x)")
    assert_same_graphs(
        second,
        expected,
        "a second capture_graphs(twice, x) right after the first (compile's cache holds the first "
        "call's code: a backend created on every call does not match it, so the graphs are captured again)",
    )


def elsewhere(x: torch.Tensor) -> torch.Tensor:
    return torch.cos(x) + 1


@compiling
def test_capture_graphs_leaves_other_compiled_functions_alone() -> None:
    compiles: list[int] = []

    def counting_backend(graph: torch.fx.GraphModule, example_inputs: list) -> object:
        compiles.append(1)
        return graph.forward

    compiled = torch.compile(elsewhere, backend=counting_backend)
    x = torch.randn(3)
    compiled(x)
    assert compiles == [1], (
        f"the grader's own compiled function compiled {len(compiles)} times on its first call"
    )
    captured(straight, torch.randn(4, 3))
    compiled(x)
    assert compiles == [1], (
        "a function compiled before capture_graphs ran had to be compiled again after it: its cached "
        "code was thrown away. Likely cause: torch._dynamo.reset() (or torch._dynamo.explain, which "
        "calls it) inside capture_graphs - it resets every compiled function in the process"
    )


@compiling
def test_capture_graphs_leaves_compile_settings_alone() -> None:
    captured(straight, torch.randn(4, 3))
    changed = changed_compile_settings()
    described = ", ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changed.items())
    assert not changed, (
        f"capture_graphs left torch._dynamo.config changed ({described}); these settings are "
        "process-wide: every later torch.compile captures other graphs. Likely cause: a setting such as "
        "capture_scalar_outputs assigned instead of scoped with torch._dynamo.config.patch(...) - and the "
        "contract asks for compile's default capture anyway"
    )


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
