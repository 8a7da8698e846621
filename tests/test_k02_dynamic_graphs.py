"""Grader for k02_dynamic_graphs: RepeatNet, GatedNet, record_output_shapes."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

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


def test_gated_net_gradients_flow_to_the_branch_each_row_used() -> None:
    net = kata.GatedNet(3)
    x = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -2.0], [2.0, 0.5, -1.0]])
    net(x).pow(2).sum().backward()
    oracle_net = kata.GatedNet(3)
    oracle_net.load_state_dict(net.state_dict())
    gated_oracle(oracle_net, x).pow(2).sum().backward()
    for name in ("positive", "negative"):
        got = getattr(net, name).weight.grad
        expected = getattr(oracle_net, name).weight.grad
        assert got is not None, f"net.{name}.weight got no gradient although a row went through it"
        assert_close(
            got.double(),
            expected.double(),
            rtol=1e-4,
            atol=1e-6,
            what=f"gradient of net.{name}.weight",
            likely_cause="a branch's output detached, or both branches added instead of selected",
        )


def test_gated_net_unused_branch_gets_no_gradient() -> None:
    net = kata.GatedNet(3)
    net(torch.ones(4, 3)).sum().backward()
    grad = net.negative.weight.grad
    assert grad is None or torch.count_nonzero(grad) == 0, (
        "every row had a positive sum, yet net.negative.weight got a non-zero gradient; likely cause: "
        "the branches mixed (e.g. added or blended) instead of one chosen per row"
    )


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


def hooks_of(model: nn.Module) -> dict[str, list[int]]:
    return {name: list(module._forward_hooks) for name, module in model.named_modules()}


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
