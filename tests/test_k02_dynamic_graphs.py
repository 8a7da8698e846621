"""Grader for k02_dynamic_graphs: RepeatNet, GatedNet, ExportableGate, record_output_shapes."""

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
import torch._dynamo  # imported while collecting: no test's time limit pays for it
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as module_globals

from kata_harness import load_kata
from kata_harness.testing import assert_close

kata = load_kata("k02_dynamic_graphs")

FEATURES = 5


def unrolled(layer: nn.Linear, x: torch.Tensor, repeats: int) -> torch.Tensor:
    """The oracle: relu(layer(.)) applied `repeats` times, in float64 with the layer's own weights."""
    weight, bias = layer.weight.double(), layer.bias.double()
    out = x.double()
    for _ in range(repeats):
        out = torch.relu(F.linear(out, weight, bias))
    return out


def test_repeat_net_holds_one_shared_layer() -> None:
    net = kata.RepeatNet(FEATURES)
    assert isinstance(net.layer, nn.Linear), f"expected net.layer to be nn.Linear, got {type(net.layer)}"
    assert (net.layer.in_features, net.layer.out_features) == (FEATURES, FEATURES), (
        f"expected Linear({FEATURES}, {FEATURES}), got {net.layer}"
    )
    n_params = sum(p.numel() for p in net.parameters())
    assert n_params == FEATURES * FEATURES + FEATURES, (
        f"expected only the one layer's {FEATURES * FEATURES + FEATURES} parameters, found {n_params}; "
        "likely cause: a separate layer per repeat instead of reusing self.layer"
    )


def test_repeat_net_zero_repeats_returns_the_input() -> None:
    net = kata.RepeatNet(FEATURES)
    x = torch.randn(3, FEATURES)
    out = net(x, 0)
    assert torch.equal(out, x), (
        "repeats=0 must return x unchanged; likely cause: the layer applied once before checking repeats"
    )


@pytest.mark.parametrize("repeats", [1, 2, 4])
def test_repeat_net_applies_relu_layer_repeatedly(repeats: int) -> None:
    net = kata.RepeatNet(FEATURES)
    x = torch.randn(3, FEATURES)
    assert_close(
        net(x, repeats).double(),
        unrolled(net.layer, x, repeats),
        rtol=1e-5,
        atol=1e-6,
        what=f"RepeatNet(x, repeats={repeats})",
        likely_cause="an off-by-one in the loop, ReLU applied once at the end instead of after every "
        "layer, or the input not fed back into the next round",
    )


def test_repeat_net_repeats_may_change_between_calls() -> None:
    net = kata.RepeatNet(FEATURES)
    x = torch.randn(2, FEATURES)
    for repeats in (3, 1, 0, 2):
        assert_close(
            net(x, repeats).double(),
            unrolled(net.layer, x, repeats),
            rtol=1e-5,
            atol=1e-6,
            what=f"the call with repeats={repeats} after calls with other counts",
            likely_cause="repeats remembered from an earlier call (stored on self) instead of read per call",
        )


def test_repeat_net_gradient_sums_over_every_use_of_the_layer() -> None:
    net = kata.RepeatNet(FEATURES)
    x = torch.rand(4, FEATURES) + 0.5
    net(x, 3).sum().backward()
    weight = net.layer.weight.detach().double().requires_grad_()
    bias = net.layer.bias.detach().double().requires_grad_()
    out = x.double()
    for _ in range(3):
        out = torch.relu(F.linear(out, weight, bias))
    expected = torch.autograd.grad(out.sum(), weight)[0]
    assert net.layer.weight.grad is not None, "the layer's weight got no gradient; is the output detached?"
    assert_close(
        net.layer.weight.grad.double(),
        expected,
        rtol=1e-4,
        atol=1e-6,
        what="gradient of sum(RepeatNet(x, 3)) with respect to layer.weight",
        likely_cause="an intermediate result detached (or computed under no_grad), so only the last use "
        "of the shared layer contributes",
    )


def on_meta(what: str, call: Callable[[], Any]) -> Any:
    """Run `call` on meta tensors; a failure there is a device bug, reported in one line."""
    try:
        return call()
    except NotImplementedError:
        raise
    except Exception as error:
        pytest.fail(
            f"{what} on the meta device (tensors with a shape but no data) raised "
            f"{type(error).__name__}: {error}. Likely cause: a tensor built on the CPU (torch.zeros(...) "
            "without device=x.device), or a copy to the CPU/NumPy (.cpu(), .numpy(), .item(), "
            ".tolist()) where only shapes or device-agnostic ops are needed - the same code breaks "
            "or silently moves data on a GPU",
            pytrace=False,
        )


def test_repeat_net_keeps_float64() -> None:
    net = kata.RepeatNet(FEATURES).double()
    x = torch.randn(3, FEATURES, dtype=torch.float64)
    out = net(x, 3)
    assert out.dtype == torch.float64, (
        f"with a float64 module and input expected a float64 output, got {out.dtype}; likely cause: "
        "a cast (.float()) or a buffer created in the default dtype"
    )
    assert_close(
        out,
        unrolled(net.layer, x, 3),
        rtol=1e-10,
        atol=1e-12,
        what="RepeatNet(x, 3) in float64",
        likely_cause="a round trip through float32 somewhere in the loop",
    )


def test_repeat_net_stays_on_the_input_device() -> None:
    net = kata.RepeatNet(FEATURES).to("meta")
    x = torch.empty(3, FEATURES, device="meta")
    out = on_meta("RepeatNet(x, 2)", lambda: net(x, 2))
    assert out.device.type == "meta" and tuple(out.shape) == (3, FEATURES), (
        f"with the module and x on meta expected a (3, {FEATURES}) output on meta, got "
        f"{tuple(out.shape)} on {out.device}; likely cause: a result built on the CPU or moved there"
    )


def test_repeat_net_relu_gradient_at_exactly_zero() -> None:
    net = kata.RepeatNet(FEATURES)
    with torch.no_grad():
        net.layer.weight.zero_()
        net.layer.bias.zero_()
    net(torch.rand(2, FEATURES) + 0.5, 2).sum().backward()
    for name in ("weight", "bias"):
        grad = getattr(net.layer, name).grad
        assert grad is None or torch.count_nonzero(grad) == 0, (
            f"with a zero-initialised layer every pre-activation is exactly 0, where relu's gradient "
            f"is 0, so layer.{name}.grad must be zero; got {grad}. Likely cause: clamp(min=0) "
            "(gradient 1 at 0) or torch.maximum(x, 0) (0.5 at 0): equal values, different autograd "
            "at the kink - use torch.relu"
        )


def test_repeat_net_leaves_x_and_existing_grads_alone() -> None:
    net = kata.RepeatNet(FEATURES)
    x = torch.rand(4, FEATURES) - 0.5
    x_before = x.clone()
    stale = torch.full_like(net.layer.weight, 0.25)
    net.layer.weight.grad = stale.clone()
    out = net(x, 2)
    assert torch.equal(x, x_before) and not x.requires_grad, (
        f"RepeatNet changed the caller's x (values changed: {not torch.equal(x, x_before)}, "
        f"requires_grad now {x.requires_grad}); likely cause: an in-place op (relu_, clamp_, +=) on x"
    )
    assert net.layer.weight.grad is not None and torch.equal(net.layer.weight.grad, stale), (
        "forward changed layer.weight.grad, which held a gradient from before; likely cause: "
        "zero_grad() (or .grad = None) inside forward - clearing gradients is the training loop's job"
    )
    out.sum().backward()
    weight = net.layer.weight.detach().double().requires_grad_()
    bias = net.layer.bias.detach().double()
    oracle = x.double()
    for _ in range(2):
        oracle = torch.relu(F.linear(oracle, weight, bias))
    expected = stale.double() + torch.autograd.grad(oracle.sum(), weight)[0]
    assert_close(
        net.layer.weight.grad.double(),
        expected,
        rtol=1e-4,
        atol=1e-6,
        what="layer.weight.grad after backward on top of an existing gradient of 0.25",
        likely_cause="the existing .grad replaced instead of accumulated into",
    )


def gated_oracle(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    rows = [net.positive(row) if row.sum() > 0 else net.negative(row) for row in x]
    return torch.stack(rows).double()


def test_gated_net_has_two_branches() -> None:
    net = kata.GatedNet(FEATURES)
    for name in ("positive", "negative"):
        layer = getattr(net, name)
        assert isinstance(layer, nn.Linear) and (layer.in_features, layer.out_features) == (
            FEATURES,
            FEATURES,
        ), f"expected net.{name} to be nn.Linear({FEATURES}, {FEATURES}), got {layer}"
    assert net.positive is not net.negative, "positive and negative must be two separate layers"


def test_gated_net_routes_each_row_by_the_sign_of_its_sum() -> None:
    net = kata.GatedNet(3)
    x = torch.tensor(
        [
            [-1.0, 2.0, 0.5],  # sum > 0, first element < 0
            [3.0, -4.0, -1.0],  # sum < 0, first element > 0
            [1.0, -1.0, 0.0],  # sum == 0 goes to negative
            [0.2, 0.2, 0.2],
        ]
    )
    out = net(x)
    assert out.shape == (4, 3), f"expected output shape (4, 3), got {tuple(out.shape)}"
    assert_close(
        out.double(),
        gated_oracle(net, x),
        rtol=1e-5,
        atol=1e-6,
        what="GatedNet output, row by row",
        likely_cause="routing on something other than x[i].sum() > 0 (the first element, the whole "
        "batch's sum, or >= 0 so that a zero sum goes to positive)",
    )


@pytest.mark.parametrize("batch", [1, 7])
def test_gated_net_output_shape(batch: int) -> None:
    out = kata.GatedNet(FEATURES)(torch.randn(batch, FEATURES))
    assert tuple(out.shape) == (batch, FEATURES), (
        f"expected ({batch}, {FEATURES}), got {tuple(out.shape)}; likely cause: rows stacked with an "
        "extra dimension, or one decision made for the whole batch"
    )


GATED_ROWS = [[1.0, 1.0, 1.0], [-1.0, -1.0, -2.0], [2.0, 0.5, -1.0], [1.5, -0.5, -1.0]]  # last: sum 0


def test_gated_net_gradients_flow_to_the_branch_each_row_used() -> None:
    net = kata.GatedNet(3)
    x = torch.tensor(GATED_ROWS)
    stale = torch.full((3, 3), 0.25)
    net.positive.weight.grad = stale.clone()
    net(x).pow(2).sum().backward()
    oracle_net = kata.GatedNet(3)
    oracle_net.load_state_dict(net.state_dict())
    gated_oracle(oracle_net, x).pow(2).sum().backward()
    for name in ("positive", "negative"):
        got = getattr(net, name).weight.grad
        expected = getattr(oracle_net, name).weight.grad
        if name == "positive":
            expected = expected + stale
        assert got is not None, f"net.{name}.weight got no gradient although a row went through it"
        assert_close(
            got.double(),
            expected.double(),
            rtol=1e-4,
            atol=1e-6,
            what=f"gradient of net.{name}.weight (positive.weight held 0.25 from an earlier backward)",
            likely_cause="a branch's output detached, both branches added instead of selected, or "
            "an existing .grad cleared inside forward",
        )


def test_gated_net_gradient_reaches_the_input() -> None:
    net = kata.GatedNet(3)
    x = torch.tensor(GATED_ROWS, requires_grad=True)
    net(x).pow(2).sum().backward()
    oracle_net = copy.deepcopy(net).double()
    x64 = x.detach().double().requires_grad_()
    gated_oracle(oracle_net, x64).pow(2).sum().backward()
    assert x.grad is not None, (
        "x requires grad, yet x.grad is None after backward; likely cause: x detached (or turned into "
        "numbers with .tolist()/.item()) before the layers were applied"
    )
    assert_close(
        x.grad.double(),
        x64.grad,
        rtol=1e-4,
        atol=1e-6,
        what="gradient of sum(GatedNet(x) ** 2) with respect to x",
        likely_cause="rows mixed from both branches, or part of x detached",
    )


def test_gated_net_leaves_x_alone() -> None:
    net = kata.GatedNet(3)
    x = torch.tensor(GATED_ROWS)
    x_before = x.clone()
    net(x)
    assert not x.requires_grad and x.grad_fn is None, (
        f"GatedNet changed the caller's x: requires_grad now {x.requires_grad}, grad_fn "
        f"{x.grad_fn}; likely cause: the routed rows written back into x (x[mask] = ...) instead of "
        "into a new tensor"
    )
    assert torch.equal(x, x_before), (
        f"GatedNet changed the values of the caller's x: before {x_before.tolist()}, after "
        f"{x.tolist()}; likely cause: the routed rows written back into x instead of a new tensor"
    )


def test_gated_net_keeps_float64() -> None:
    net = kata.GatedNet(3).double()
    x = torch.tensor(GATED_ROWS, dtype=torch.float64)
    out = net(x)
    assert out.dtype == torch.float64, (
        f"with a float64 module and input expected a float64 output, got {out.dtype}; likely cause: "
        "the output collected in a buffer created in the default dtype (torch.zeros(x.shape))"
    )
    assert_close(
        out,
        gated_oracle(net, x),
        rtol=1e-10,
        atol=1e-12,
        what="GatedNet(x) in float64",
        likely_cause="a round trip through float32",
    )


@pytest.mark.cuda
def test_dynamic_modules_on_a_gpu() -> None:
    repeat = kata.RepeatNet(FEATURES)
    x = torch.randn(3, FEATURES)
    expected = unrolled(repeat.layer, x, 2)
    out = repeat.cuda()(x.cuda(), 2)
    assert out.device.type == "cuda", f"RepeatNet on a CUDA input returned a tensor on {out.device}"
    assert_close(out.double().cpu(), expected, rtol=1e-4, atol=1e-5, what="RepeatNet on the GPU")
    gated = kata.GatedNet(3)
    rows = torch.tensor(GATED_ROWS)
    expected = gated_oracle(gated, rows)
    out = gated.cuda()(rows.cuda())
    assert out.device.type == "cuda", (
        f"GatedNet on a CUDA input returned a tensor on {out.device}; likely cause: the output or the "
        "routing mask built on the CPU"
    )
    assert_close(
        out.double().cpu(),
        expected,
        rtol=1e-4,
        atol=1e-5,
        what="GatedNet on the GPU",
        likely_cause="a mask or buffer built on the CPU",
    )


def test_gated_net_unused_branch_gets_no_gradient() -> None:
    net = kata.GatedNet(3)
    net(torch.ones(4, 3)).sum().backward()
    grad = net.negative.weight.grad
    assert grad is None or torch.count_nonzero(grad) == 0, (
        "every row had a positive sum, yet net.negative.weight got a non-zero gradient; likely cause: "
        "the branches mixed (e.g. added or blended) instead of one chosen per row"
    )


# ExportableGate: torch.cond runs through Dynamo even eagerly, and export traces the module; the first of
# either in a process costs a few seconds on a busy CPU, more than the harness's default per-test limit.
compiling = pytest.mark.timeout(60)

# Dyadic values: every partial sum is exact in float32, so the sign of each batch's sum is not a rounding
# accident. In each batch one row's own sum has the other sign (routing row by row gives another answer).
GATE_BATCHES = {
    "positive sum": [[2.0, 1.0, 0.5], [-1.0, -0.5, -0.25], [0.5, -0.25, 0.75]],  # rows 3.5, -1.75, 1
    "negative sum": [[-2.0, -1.0, -0.5], [1.0, 0.5, 0.25], [-0.5, 0.25, -0.75]],  # rows -3.5, 1.75, -1
    "zero sum": [[1.0, -0.5, 0.25], [-0.75, 0.5, -0.5], [0.5, -0.25, -0.25]],  # rows 0.75, -0.75, 0
}
GATE_CAUSES = (
    "rows routed one by one (GatedNet's rule) instead of one decision for the whole batch, the "
    "branches swapped, or >= 0 where a sum of exactly 0 must go to negative"
)


def gate_oracle(gate: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The define-by-run version in float64: a Python `if` on the batch's sum."""
    layer = gate.positive if x.sum() > 0 else gate.negative
    return F.linear(x.double(), layer.weight.double(), layer.bias.double())


def test_exportable_gate_holds_two_layers() -> None:
    gate = kata.ExportableGate(FEATURES)
    for name in ("positive", "negative"):
        layer = getattr(gate, name)
        assert isinstance(layer, nn.Linear) and (layer.in_features, layer.out_features) == (
            FEATURES,
            FEATURES,
        ), f"expected gate.{name} to be nn.Linear({FEATURES}, {FEATURES}), got {layer}"
    assert gate.positive is not gate.negative, "positive and negative must be two separate layers"
    n_params = sum(p.numel() for p in gate.parameters())
    assert n_params == 2 * (FEATURES * FEATURES + FEATURES), (
        f"expected only the two layers' {2 * (FEATURES * FEATURES + FEATURES)} parameters, found {n_params}"
    )


@compiling
@pytest.mark.parametrize("batch", list(GATE_BATCHES))
def test_exportable_gate_routes_the_whole_batch(batch: str) -> None:
    gate = kata.ExportableGate(3)
    x = torch.tensor(GATE_BATCHES[batch])
    out = gate(x)
    assert_close(
        out.double(),
        gate_oracle(gate, x),
        rtol=1e-5,
        atol=1e-6,
        what=f"ExportableGate on the {batch} batch (one row's own sum has the other sign)",
        likely_cause=GATE_CAUSES,
    )


@compiling
@pytest.mark.parametrize("example", ["positive sum", "negative sum"])
def test_exportable_gate_exports_both_branches(example: str) -> None:
    gate = kata.ExportableGate(3)
    x = torch.tensor(GATE_BATCHES[example])
    gate(x)  # eagerly first: an unfinished forward says so here, not wrapped in an export error
    try:
        exported = torch.export.export(gate, (x,))
    except Exception as error:
        reason = next((line for line in str(error).splitlines() if line.strip()), "")
        pytest.fail(
            f"torch.export.export(gate, (x,)) raised {type(error).__name__}: {reason[:300]}. Likely cause: "
            "a Python `if` (or bool(), .item(), .tolist()) on a tensor's value - export traces with "
            "symbolic values and cannot decide such a branch; the choice must be a graph op",
            pytrace=False,
        )
    program = exported.module()
    for batch, rows in GATE_BATCHES.items():
        inputs = torch.tensor(rows)
        assert_close(
            program(inputs).double(),
            gate_oracle(gate, inputs),
            rtol=1e-5,
            atol=1e-6,
            what=f"the program exported from the {example} example, run on the {batch} batch",
            likely_cause="the exported graph holds only the branch its example took: the decision was "
            "made in Python while tracing instead of recorded as a graph op; or " + GATE_CAUSES,
        )


@compiling
@pytest.mark.parametrize("batch", ["positive sum", "negative sum"])
def test_exportable_gate_gradients_follow_the_branch_taken(batch: str) -> None:
    gate = kata.ExportableGate(3)
    used, unused = ("positive", "negative") if batch == "positive sum" else ("negative", "positive")
    stale = torch.full((3, 3), 0.25)
    getattr(gate, used).weight.grad = stale.clone()
    x = torch.tensor(GATE_BATCHES[batch], requires_grad=True)
    gate(x).pow(2).sum().backward()
    layer = getattr(gate, used)
    weight = layer.weight.detach().double().requires_grad_()
    bias = layer.bias.detach().double().requires_grad_()
    x64 = x.detach().double().requires_grad_()
    F.linear(x64, weight, bias).pow(2).sum().backward()
    assert x.grad is not None and layer.weight.grad is not None, (
        f"after backward x.grad is {x.grad} and gate.{used}.weight.grad is {layer.weight.grad}; likely "
        "cause: x (or the branch's output) detached before the layer"
    )
    assert_close(
        x.grad.double(),
        x64.grad,
        rtol=1e-4,
        atol=1e-6,
        what=f"gradient of sum(gate(x) ** 2) with respect to x on the {batch} batch",
        likely_cause="part of x detached, or both branches mixed into the output",
    )
    assert_close(
        layer.weight.grad.double(),
        weight.grad + stale.double(),
        rtol=1e-4,
        atol=1e-6,
        what=f"gradient of gate.{used}.weight (it held 0.25 from an earlier backward)",
        likely_cause="an existing .grad cleared inside forward (zero_grad), or the branch's output detached",
    )
    other = getattr(gate, unused).weight.grad
    assert other is None or torch.count_nonzero(other) == 0, (
        f"gate.{unused} was not used for the {batch} batch, yet its weight got a non-zero gradient; "
        "likely cause: the branches blended (added or weighted) instead of one chosen"
    )


@compiling
def test_exportable_gate_keeps_float64() -> None:
    gate = kata.ExportableGate(3).double()
    x = torch.tensor(GATE_BATCHES["negative sum"], dtype=torch.float64)
    out = gate(x)
    assert out.dtype == torch.float64, (
        f"with a float64 module and input expected a float64 output, got {out.dtype}; likely cause: a "
        "cast (.float()) or a buffer created in the default dtype"
    )
    assert_close(out, gate_oracle(gate, x), rtol=1e-10, atol=1e-12, what="ExportableGate(x) in float64")


@compiling
def test_exportable_gate_leaves_x_alone() -> None:
    gate = kata.ExportableGate(3)
    x = torch.tensor(GATE_BATCHES["positive sum"])
    x_before = x.clone()
    gate(x)
    assert not x.requires_grad and x.grad_fn is None and torch.equal(x, x_before), (
        f"ExportableGate changed the caller's x (requires_grad {x.requires_grad}, values "
        f"{x.tolist()} from {x_before.tolist()}); likely cause: an in-place operation on x"
    )


@compiling
@pytest.mark.cuda
def test_exportable_gate_on_a_gpu() -> None:
    gate = kata.ExportableGate(3)
    expected = {batch: gate_oracle(gate, torch.tensor(rows)) for batch, rows in GATE_BATCHES.items()}
    gate = gate.cuda()
    program = torch.export.export(gate, (torch.tensor(GATE_BATCHES["positive sum"], device="cuda"),)).module()
    for batch, rows in GATE_BATCHES.items():
        x = torch.tensor(rows, device="cuda")
        for what, out in (("ExportableGate", gate(x)), ("its exported program", program(x))):
            assert out.device.type == "cuda", (
                f"{what} on a CUDA input ({batch} batch) returned a tensor on {out.device}; likely cause: "
                "the predicate or a buffer built on the CPU"
            )
            assert_close(out.double().cpu(), expected[batch], rtol=1e-4, atol=1e-5, what=f"{what} on the GPU")


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.act = nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x))


class Nested(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = Block()
        self.head = nn.Linear(6, 2)
        self.unused = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(x))


def test_record_output_shapes_of_a_sequential() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    got = kata.record_output_shapes(model, torch.randn(3, 4))
    expected = {"0": (3, 8), "1": (3, 8), "2": (3, 2)}
    assert got == expected, (
        f"expected {expected}, got {got}; likely cause: class names instead of qualified names, or the "
        "container itself recorded (it has children)"
    )


def test_record_output_shapes_uses_qualified_names_and_skips_modules_that_did_not_run() -> None:
    got = kata.record_output_shapes(Nested(), torch.randn(5, 4))
    expected = {"block.fc": (5, 6), "block.act": (5, 6), "head": (5, 2)}
    assert got == expected, (
        f"expected {expected}, got {got}; likely cause: named_children() instead of named_modules() "
        "(misses nested leaves), containers recorded, or a leaf that never ran ('unused') included"
    )
    assert all(type(shape) is tuple and all(type(d) is int for d in shape) for shape in got.values()), (
        f"expected shapes as tuples of ints, got {got}"
    )


class Reuse(nn.Module):
    """Calls one leaf twice on inputs of different sizes; its last output is (2, 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.act(x)[:2, :3])


def test_record_output_shapes_keeps_the_last_output_of_a_reused_module() -> None:
    got = kata.record_output_shapes(Reuse(), torch.randn(4, 5))
    assert got == {"act": (2, 3)}, f"expected {{'act': (2, 3)}} (the last call's output), got {got}"


class TupleOut(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x


class WithTupleLeaf(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.split = TupleOut()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, _ = self.split(x)
        return self.fc(a)


def test_record_output_shapes_leaves_out_non_tensor_outputs() -> None:
    got = kata.record_output_shapes(WithTupleLeaf(), torch.randn(3, 4))
    assert got == {"fc": (3, 2)}, (
        f"expected only {{'fc': (3, 2)}}: 'split' returns a tuple, which is left out; got {got}"
    )


def test_record_output_shapes_of_a_model_without_children() -> None:
    got = kata.record_output_shapes(nn.Linear(4, 3), torch.randn(2, 4))
    assert got == {"": (2, 3)}, (
        f"a model without children is itself the only leaf (name ''); expected {{'': (2, 3)}}, got {got}"
    )


HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)


def hooks_of(model: nn.Module) -> dict[str, dict[str, list[int]]]:
    return {
        name: {kind: list(getattr(module, kind)) for kind in HOOK_DICTS if getattr(module, kind, None)}
        for name, module in model.named_modules()
    }


def global_hook_dicts() -> dict[str, dict]:
    """Every process-wide module hook registry (`_global_forward_hooks`, ...) by name."""
    return {
        name: registry
        for name, registry in vars(module_globals).items()
        if name.startswith("_global_") and name.endswith("hooks") and isinstance(registry, dict)
    }


@contextmanager
def watching_global_hooks() -> Iterator[list[str]]:
    """Yield a list that, after the block, names every global module hook registry that grew.

    The hooks added inside the block are removed again, so a leak fails one test, not the next ones.
    """
    before = {name: set(registry) for name, registry in global_hook_dicts().items()}
    leaked: list[str] = []
    try:
        yield leaked
    finally:
        for name, registry in global_hook_dicts().items():
            added = [key for key in list(registry) if key not in before.get(name, set())]
            if added:
                leaked.append(f"{name} (+{len(added)})")
                for key in added:
                    del registry[key]


def assert_no_global_hook_left(leaked: list[str]) -> None:
    assert not leaked, (
        f"record_output_shapes left global module hooks registered: {', '.join(leaked)}. A hook from "
        "torch.nn.modules.module.register_module_forward_hook fires for every module of every model "
        "from now on; keep the handle it returns and call handle.remove() in a `finally` block (or "
        "hook only the model's own modules with module.register_forward_hook)"
    )


def test_record_output_shapes_leaves_no_global_hook() -> None:
    with watching_global_hooks() as leaked:
        got = kata.record_output_shapes(Nested(), torch.randn(2, 4))
    assert_no_global_hook_left(leaked)
    assert got == {"block.fc": (2, 6), "block.act": (2, 6), "head": (2, 2)}, f"unexpected result {got}"


def test_record_output_shapes_leaves_no_global_hook_when_forward_raises() -> None:
    with watching_global_hooks() as leaked, pytest.raises(ValueError, match="boom"):
        kata.record_output_shapes(Explodes(), torch.randn(2, 4))
    assert_no_global_hook_left(leaked)


def test_record_output_shapes_removes_its_hooks_and_keeps_yours() -> None:
    model = Nested()
    calls = []
    model.head.register_forward_hook(lambda module, inputs, output: calls.append(1))
    before = hooks_of(model)
    kata.record_output_shapes(model, torch.randn(2, 4))
    assert hooks_of(model) == before, (
        f"forward hooks before: {before}, after: {hooks_of(model)}; likely cause: handles not removed, "
        "or every hook cleared (yours and the caller's)"
    )
    assert calls == [1], "the caller's own hook must still run during the call"


class Explodes(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.fc(x)
        raise ValueError("boom")


def test_record_output_shapes_removes_hooks_when_forward_raises() -> None:
    model = Explodes()
    before = hooks_of(model)
    with pytest.raises(ValueError, match="boom"):
        kata.record_output_shapes(model, torch.randn(2, 4))
    assert hooks_of(model) == before, (
        "hooks were left registered after forward raised; remove them in a `finally` block"
    )


class Counting(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fc(x)


def test_record_output_shapes_runs_the_model_once() -> None:
    model = Counting()
    got = kata.record_output_shapes(model, torch.randn(2, 4))
    assert model.calls == 1, (
        f"the model ran {model.calls} times; expected exactly once (a forward can have side effects: "
        "BatchNorm statistics, counters, RNG); likely cause: a warm-up call before the hooks are in place"
    )
    assert got == {"fc": (2, 3)}, f"expected {{'fc': (2, 3)}}, got {got}"


def test_record_output_shapes_leaves_training_modes_alone() -> None:
    model = Nested()
    model.train()
    model.block.eval()
    before = {name: module.training for name, module in model.named_modules()}
    kata.record_output_shapes(model, torch.randn(2, 4))
    after = {name: module.training for name, module in model.named_modules()}
    assert after == before, (
        f"training flags before: {before}, after: {after}; likely cause: model.eval() (or a blanket "
        "model.train(...) afterwards) - inspecting a model must not change its mode"
    )


class ParameterLeaf(nn.Module):
    """A leaf whose output is an nn.Parameter: a Tensor subclass, which counts as a tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.zeros(3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table


class WithParameterLeaf(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.lookup = ParameterLeaf()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) @ self.lookup(x)


def test_record_output_shapes_counts_tensor_subclasses() -> None:
    got = kata.record_output_shapes(WithParameterLeaf(), torch.randn(5, 4))
    expected = {"fc": (5, 3), "lookup": (3, 2)}
    assert got == expected, (
        f"expected {expected}, got {got}: 'lookup' returns an nn.Parameter, a Tensor subclass; likely "
        "cause: `type(output) is Tensor` where isinstance(output, Tensor) is meant"
    )


def test_record_output_shapes_on_the_meta_device() -> None:
    model = Nested().to("meta")
    x = torch.empty(5, 4, device="meta")
    got = on_meta("record_output_shapes(model, x)", lambda: kata.record_output_shapes(model, x))
    expected = {"block.fc": (5, 6), "block.act": (5, 6), "head": (5, 2)}
    assert got == expected, (
        f"on the meta device expected {expected}, got {got}; likely cause: an output's shape read "
        "through a copy (.cpu(), .numpy()) instead of output.shape"
    )
