"""Grader for k06_custom_modules: registering parameters, submodules and buffers, and what relies on it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.overrides import TorchFunctionMode

from kata_harness import load_kata
from kata_harness.testing import assert_close

kata = load_kata("k06_custom_modules")

# The first operation on the meta device loads torch's meta kernels (a second or more on a busy machine): pay
# for it once here, at import, instead of inside the 10-second budget of whichever meta test runs first.
_ = torch.empty(0, device="meta") + 0


# ---------------------------------------------------------------------------------------------- CustomNetwork


def _network(input_size: int = 5, hidden: int = 7, output: int = 3, **kwargs: float) -> nn.Module:
    """A CustomNetwork whose BatchNorm has non-trivial affine parameters and running statistics."""
    net = kata.CustomNetwork(input_size, hidden, output, **kwargs)
    with torch.no_grad():
        net.bn1.weight.uniform_(0.5, 1.5)
        net.bn1.bias.uniform_(-0.5, 0.5)
        net.bn1.running_mean.uniform_(-0.3, 0.3)
        net.bn1.running_var.uniform_(0.5, 2.0)
    return net


def _oracle(net: nn.Module, x: torch.Tensor, *, batch_stats: bool) -> torch.Tensor:
    """fc2(relu(bn1(fc1(x)))) in float64 from the network's own weights (dropout is the identity here)."""
    d = {name: t.detach().double() for name, t in net.state_dict().items() if t.is_floating_point()}
    h = x.double() @ d["fc1.weight"].T + d["fc1.bias"]
    if batch_stats:
        mean, var = h.mean(dim=0), h.var(dim=0, unbiased=False)
    else:
        mean, var = d["bn1.running_mean"], d["bn1.running_var"]
    h = (h - mean) / torch.sqrt(var + net.bn1.eps) * d["bn1.weight"] + d["bn1.bias"]
    h = h.clamp_min(0)
    return h @ d["fc2.weight"].T + d["fc2.bias"]


def test_custom_network_children_types_and_sizes() -> None:
    net = kata.CustomNetwork(5, 7, 3, dropout=0.25)
    children = dict(net.named_children())
    expected = {
        "fc1": (nn.Linear, "Linear(5, 7)"),
        "bn1": (nn.BatchNorm1d, "BatchNorm1d(7)"),
        "dropout": (nn.Dropout, "Dropout(0.25)"),
        "fc2": (nn.Linear, "Linear(7, 3)"),
    }
    for name, (kind, text) in expected.items():
        assert isinstance(children.get(name), kind), (
            f"expected a registered submodule `{name}` = {text}, got {children.get(name)!r}; likely cause: a "
            "different attribute name, or the layer assigned before `super().__init__()` / kept in a list"
        )
    fc1, bn1, dropout, fc2 = (children[n] for n in ("fc1", "bn1", "dropout", "fc2"))
    got = (fc1.in_features, fc1.out_features, fc1.bias is not None, bn1.num_features, bn1.affine)
    assert got == (5, 7, True, 7, True), f"fc1/bn1 sizes (in, out, has bias, bn features, affine) are {got}"
    assert bn1.track_running_stats, "bn1 must track running statistics (the nn.BatchNorm1d default)"
    assert (fc2.in_features, fc2.out_features, fc2.bias is not None) == (7, 3, True), f"fc2 is {fc2!r}"
    assert dropout.p == 0.25, (
        f"CustomNetwork(..., dropout=0.25).dropout.p is {dropout.p}; likely cause: `nn.Dropout(0.5)` "
        f"hard-coded instead of using the `dropout` argument"
    )


def test_custom_network_default_dropout_is_half() -> None:
    net = kata.CustomNetwork(4, 6, 2)
    assert isinstance(net.dropout, nn.Dropout) and net.dropout.p == 0.5, (
        f"CustomNetwork(4, 6, 2).dropout is {net.dropout!r}; expected Dropout(p=0.5), the default"
    )


@settings(max_examples=15)
@given(batch=st.integers(1, 6), sizes=st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 4)))
def test_custom_network_forward_eval_matches_layers(batch: int, sizes: tuple[int, int, int]) -> None:
    net = _network(*sizes).eval()
    x = torch.randn(batch, sizes[0])
    out = net(x)
    assert_close(
        out.double(),
        _oracle(net, x, batch_stats=False),
        rtol=1e-4,
        atol=1e-5,
        what="CustomNetwork in eval mode vs fc2(relu(bn1(fc1(x)))) with bn1's running statistics",
        likely_cause="layers in another order (ReLU before bn1?), a layer skipped, or functional dropout "
        "(`F.dropout(x, p)` defaults to training=True, so it still drops in eval) instead of `self.dropout`",
    )


def test_custom_network_forward_train_uses_batch_statistics() -> None:
    net = _network(dropout=0.0).train()
    x = torch.randn(8, 5) * 2 + 1
    running_before = net.bn1.running_mean.clone()
    out = net(x)
    assert_close(
        out.double(),
        _oracle(net, x, batch_stats=True),
        rtol=1e-4,
        atol=1e-5,
        what="CustomNetwork in train mode (dropout=0) vs fc2(relu(bn1(fc1(x)))) with batch statistics",
        likely_cause="layers in another order, a layer skipped, or BatchNorm run with its running "
        "statistics in training",
    )
    assert not torch.equal(net.bn1.running_mean, running_before), (
        "a training-mode forward left bn1.running_mean unchanged; likely cause: forward does not call "
        "`self.bn1` (e.g. a functional batch_norm without the running statistics)"
    )


def test_custom_network_dropout_sits_between_relu_and_fc2() -> None:
    net = _network(dropout=1.0).train()  # p = 1 zeroes everything that passes through the dropout layer
    x = torch.randn(6, 5)
    out = net(x)
    expected = net.fc2.bias.detach().expand(6, 3)
    assert_close(
        out,
        expected,
        rtol=0,
        atol=1e-6,
        what="CustomNetwork(dropout=1.0) in train mode: every row should be fc2.bias (fc2 of all zeros)",
        likely_cause="`self.dropout` never called in forward, or called somewhere other than between the "
        "ReLU and fc2",
    )


def test_custom_network_eval_batchnorm_is_per_row() -> None:
    net = _network().eval()
    x = torch.randn(4, 5)
    before = {k: v.clone() for k, v in net.bn1.state_dict().items()}
    full = net(x)
    single = net(x[:1])  # a batch of one: only possible when BatchNorm uses its running statistics
    assert_close(
        single,
        full[:1],
        rtol=1e-5,
        atol=1e-6,
        what="eval-mode output for row 0 alone vs row 0 inside a batch of 4",
        likely_cause="BatchNorm still using batch statistics in eval mode (functional batch_norm with "
        "training=True, or bn1 forced into train mode)",
    )
    for key, value in net.bn1.state_dict().items():
        assert torch.equal(value, before[key]), f"an eval-mode forward changed bn1.{key}; it must not"


def _on_meta(what: str, call: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Run `call` on meta tensors, turning a device-mismatch error into a message that names the bug."""
    try:
        return call()
    except NotImplementedError:
        raise  # the stub's "not started", or an op without a meta kernel
    except RuntimeError as error:
        raise AssertionError(
            f"{what} failed on the meta device: {error}\nlikely cause: a tensor created on the CPU inside "
            "forward (torch.zeros, torch.ones, torch.tensor without device=...) mixed with the input's "
            "device - build it with *_like(...) or device=x.device"
        ) from error


def _spy_on(layer: nn.Module, name: str, calls: list[str]) -> None:
    """Make `layer` (the same object, still registered) an instance of a recording subclass of its type."""
    base = type(layer)

    def forward(self: nn.Module, *args: object, **kwargs: object) -> object:
        calls.append(name)
        return base.forward(self, *args, **kwargs)

    layer.__class__ = type(f"Recording{base.__name__}", (base,), {"forward": forward})


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_custom_network_calls_its_layers_in_order(training: bool) -> None:
    net = _network(dropout=0.0).train(training)
    calls: list[str] = []
    for name in ("fc1", "bn1", "dropout", "fc2"):
        _spy_on(getattr(net, name), name, calls)
    x = torch.randn(6, 5)
    out = net(x)
    assert calls == ["fc1", "bn1", "dropout", "fc2"], (
        f"forward called the layers stored on the network in the order {calls}; expected each of fc1, bn1, "
        "dropout, fc2 once, in that order. Likely cause: functional dropout (F.dropout / torch.dropout) "
        "instead of self.dropout, layers captured somewhere other than these attributes, or another order"
    )
    assert_close(
        out.double(),
        _oracle(net, x, batch_stats=training),
        rtol=1e-4,
        atol=1e-5,
        what="CustomNetwork whose layers are subclasses of the original layer types",
        likely_cause="a check on the exact layer type (type(m) is nn.Dropout) - subclasses must work too",
    )


def test_custom_network_on_meta_device() -> None:
    # The meta device has shapes, dtypes and devices but no data: a tensor that forward builds on the CPU
    # (a dropout mask, a constant) shows up here on any machine.
    net = kata.CustomNetwork(5, 7, 3).to("meta")
    for training in (True, False):
        net.train(training)
        out = _on_meta("CustomNetwork.forward", lambda: net(torch.empty(4, 5, device="meta")))
        assert (out.device.type, tuple(out.shape)) == ("meta", (4, 3)), (
            f"CustomNetwork on the meta device ({'train' if training else 'eval'} mode) returned shape "
            f"{tuple(out.shape)} on {out.device}; likely cause: a tensor created without the input's device"
        )


# ------------------------------------------------------------------------------------------- count_parameters


def test_count_parameters_counts_scalars_in_submodules() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 2, bias=False)))
    expected = (3 * 4 + 4) + 4 * 2
    got = kata.count_parameters(model)
    assert got == expected and type(got) is int, (
        f"count_parameters(Linear(3, 4), ReLU, [Linear(4, 2, bias=False)]) returned {got!r} "
        f"({type(got).__name__}); expected the int {expected}. Likely cause: counting parameter tensors "
        "(`len(list(...))`) instead of their elements (`numel()`), or skipping nested submodules"
    )


def test_count_parameters_ignores_buffers() -> None:
    model = nn.Sequential(nn.Linear(2, 5), nn.BatchNorm1d(5))
    expected = (2 * 5 + 5) + (
        5 + 5
    )  # BatchNorm: weight and bias; running_mean/var/num_batches_tracked are buffers
    got = kata.count_parameters(model)
    assert got == expected, (
        f"count_parameters(Linear(2, 5), BatchNorm1d(5)) returned {got}, expected {expected}; likely cause: "
        "counting `state_dict()` entries, which include BatchNorm's buffers (11 values) as well as "
        "parameters"
    )


def test_count_parameters_counts_shared_parameters_once() -> None:
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.Tanh(), shared)
    got = kata.count_parameters(model)
    assert got == 12, (
        f"a Sequential using one Linear(3, 3) twice has 12 distinct parameter values; got {got}. Likely "
        f"cause: counting through `state_dict()` or `named_parameters(remove_duplicate=False)`, which list "
        "the shared weights under both names"
    )


def test_count_parameters_trainable_only() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    for p in model[0].parameters():
        p.requires_grad_(False)
    all_count, trainable = kata.count_parameters(model), kata.count_parameters(model, trainable_only=True)
    assert (all_count, trainable) == (26, 10), (
        f"with Linear(3, 4) frozen and Linear(4, 2) trainable: count_parameters gave {all_count} (expected "
        f"26) and trainable_only=True gave {trainable} (expected 10); likely cause: `trainable_only` ignored "
        f"or inverted, or frozen parameters dropped from the full count"
    )
    flags = [p.requires_grad for p in model.parameters()]
    assert flags == [False, False, True, True], (
        f"count_parameters changed the parameters' requires_grad flags to {flags}; it must only count"
    )


class _Gain(nn.Module):
    """A custom module holding its own parameter (not inside a built-in layer) and an integer buffer."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(n))
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain


class _MyLinear(nn.Linear):
    """A subclass of a built-in layer: it must count (and freeze) like the layer it extends."""


class _Model(nn.Module):
    """Parameters in every place a module can hold them, the model itself included."""

    def __init__(self) -> None:
        super().__init__()
        self.temperature = nn.Parameter(torch.tensor(1.0))  # 1, directly on the model
        self.body = nn.Sequential(_MyLinear(3, 5), _Gain(5))  # 3*5 + 5 = 20, and 5
        self.table = nn.ModuleDict({"emb": nn.Embedding(7, 2)})  # 14
        self.extra = nn.ParameterList(
            [nn.Parameter(torch.zeros(2, 2)), nn.Parameter(torch.zeros(3))]
        )  # 4 + 3


MODEL_SIZE = 1 + 20 + 5 + 14 + 4 + 3


def test_count_parameters_any_module_type() -> None:
    model = _Model()
    got = kata.count_parameters(model)
    assert got == MODEL_SIZE and type(got) is int, (
        f"a model with a parameter of its own (1), a subclass of nn.Linear(3, 5) (20), a custom module "
        f"with an nn.Parameter (5), an Embedding(7, 2) in a ModuleDict (14) and a ParameterList (4 + 3) has "
        f"{MODEL_SIZE} parameter values; got {got!r}. Likely cause: counting only known layer types "
        "(type(m) is nn.Linear, which also rejects subclasses) or only the children's parameters, instead of "
        "every parameter model.parameters() yields"
    )
    model.body[0].bias.requires_grad_(False)
    model.temperature.requires_grad_(False)
    got = kata.count_parameters(model, trainable_only=True)
    assert got == MODEL_SIZE - 5 - 1, (
        f"with the subclassed layer's bias (5) and the model's own parameter (1) frozen, trainable_only=True "
        f"should give {MODEL_SIZE - 6}; got {got!r}"
    )
    empty = kata.count_parameters(nn.ReLU())
    assert empty == 0 and type(empty) is int, (
        f"count_parameters(nn.ReLU()) should be the int 0, got {empty!r}"
    )


@settings(max_examples=20)
@given(
    layers=st.lists(st.tuples(st.integers(1, 6), st.booleans(), st.booleans()), min_size=1, max_size=4),
    first=st.integers(1, 6),
    trainable_only=st.booleans(),
)
def test_count_parameters_matches_formula(
    layers: list[tuple[int, bool, bool]], first: int, trainable_only: bool
) -> None:
    modules, expected, width = [], 0, first
    for out, bias, frozen in layers:
        layer = nn.Linear(width, out, bias=bias)
        layer.requires_grad_(not frozen)
        modules.append(layer)
        if not (trainable_only and frozen):
            expected += width * out + (out if bias else 0)
        width = out
    got = kata.count_parameters(nn.Sequential(*modules), trainable_only=trainable_only)
    assert got == expected, (
        f"count_parameters(Linear stack {[(m.in_features, m.out_features) for m in modules]}, biases "
        f"{[b for _, b, _ in layers]}, frozen {[f for _, _, f in layers]}, trainable_only={trainable_only}) "
        f"returned {got}, expected {expected}"
    )


# --------------------------------------------------------------------------------------------------- Ensemble


def _members(n: int, d_in: int = 4, d_out: int = 2) -> list[nn.Module]:
    return [nn.Linear(d_in, d_out) for _ in range(n)]


@settings(max_examples=15)
@given(n=st.integers(1, 4), batch=st.integers(1, 5))
def test_ensemble_forward_is_mean_of_members(n: int, batch: int) -> None:
    members = _members(n)
    x = torch.randn(batch, 4)
    expected = sum(x.double() @ m.weight.detach().double().T + m.bias.detach().double() for m in members) / n
    out = kata.Ensemble(members)(x)
    assert tuple(out.shape) == (batch, 2), (
        f"Ensemble of {n} Linear(4, 2) on a ({batch}, 4) input returned shape {tuple(out.shape)}, expected "
        f"{(batch, 2)}; likely cause: stacking/concatenating the outputs along the wrong dimension"
    )
    assert_close(
        out.double(),
        expected,
        rtol=1e-5,
        atol=1e-6,
        what=f"Ensemble of {n} members vs the mean of their outputs",
        likely_cause="summing instead of averaging, averaging over the batch, or using only some members",
    )


def test_ensemble_parameters_include_every_member() -> None:
    members = _members(3)
    ens = kata.Ensemble(members)
    got = {id(p) for p in ens.parameters()}
    expected = {id(p) for m in members for p in m.parameters()}
    assert expected <= got, (
        f"Ensemble.parameters() yields {len(got)} tensors but misses {len(expected - got)} of the members' "
        f"{len(expected)}; likely cause: members kept in a plain Python list (or copies of them) - wrap them "
        f"in `nn.ModuleList` so the optimizer sees them"
    )


def test_ensemble_state_dict_round_trips_every_member() -> None:
    members = _members(3)
    source, target = kata.Ensemble(members), kata.Ensemble(_members(3))
    state = source.state_dict()
    saved = {t.data_ptr() for t in state.values()}
    missing = [
        f"member {i}: {name}"
        for i, member in enumerate(members)
        for name, p in member.named_parameters()
        if p.data_ptr() not in saved
    ]
    assert not missing, (
        f"Ensemble.state_dict() has keys {sorted(state)} and lacks {missing}; likely cause: members kept in "
        "a plain Python list are never saved - use `nn.ModuleList`"
    )
    target.load_state_dict(state)
    for a, b in zip(source.parameters(), target.parameters(), strict=True):
        assert torch.equal(a, b), "load_state_dict did not copy a member's weights into the other ensemble"


def test_ensemble_to_reaches_every_member() -> None:
    members = _members(2)
    kata.Ensemble(members).to(torch.float64)
    dtypes = [p.dtype for m in members for p in m.parameters()]
    assert all(d == torch.float64 for d in dtypes), (
        f"after Ensemble(members).to(torch.float64) the members' parameters have dtypes {dtypes}; likely "
        f"cause: members not registered as submodules (plain list), so `.to()` never reaches them"
    )
    members = _members(2)
    ens = kata.Ensemble(members).to("meta")
    devices = {p.device.type for m in [ens, *members] for p in m.parameters()}
    assert devices == {"meta"}, (
        f"after .to('meta') the members' parameters are on {devices}; every one must move"
    )


def test_ensemble_eval_reaches_every_member() -> None:
    members = [nn.Sequential(nn.Linear(4, 2), nn.Dropout(0.5)) for _ in range(2)]
    kata.Ensemble(members).eval()
    modes = [m.training for member in members for m in member.modules()]
    assert not any(modes), (
        f"after Ensemble(...).eval() the members' `training` flags are {modes}; likely cause: members kept "
        f"in a plain list, so `.eval()` (which walks registered children) never reaches them and their "
        "Dropout stays on"
    )


def test_ensemble_uses_the_given_members() -> None:
    members = _members(2)
    ens = kata.Ensemble(members)
    x = torch.randn(3, 4)
    before = ens(x).detach()
    with torch.no_grad():
        members[0].bias.add_(1.0)  # shifts member 0's output by 1, so the mean by 1/2
    after = ens(x).detach()
    assert_close(
        after - before,
        torch.full((3, 2), 0.5),
        rtol=0,
        atol=1e-5,
        what="change in the ensemble output after adding 1 to member 0's bias",
        likely_cause="the ensemble stores copies (`copy.deepcopy`) of the members, not the modules given",
    )


def test_ensemble_on_device(device: torch.device) -> None:
    members = _members(2)
    x = torch.randn(3, 4)
    expected = sum(m(x) for m in members).detach() / 2
    ens = kata.Ensemble(members).to(device)
    out = ens(x.to(device))
    assert out.device.type == device.type, (
        f"Ensemble(...).to({device}) then a forward on {device} gave an output on {out.device}"
    )
    assert_close(out.detach().cpu(), expected, rtol=1e-4, atol=1e-5, what=f"Ensemble output on {device}")


def test_ensemble_forward_on_meta_device() -> None:
    ens = kata.Ensemble(_members(3)).to("meta")
    out = _on_meta("Ensemble.forward", lambda: ens(torch.empty(5, 4, device="meta")))
    assert (out.device.type, tuple(out.shape)) == ("meta", (5, 2)), (
        f"an Ensemble moved to the meta device returned shape {tuple(out.shape)} on {out.device}; likely "
        "cause: accumulating the outputs into a tensor built on the CPU (torch.zeros(...) without the "
        "input's device), or .cpu() inside forward"
    )


# ------------------------------------------------------------------------------------------------ RunningMean


def test_running_mean_initial_buffers() -> None:
    rm = kata.RunningMean(3)
    buffers = dict(rm.named_buffers())
    assert set(buffers) >= {"mean", "count"}, (
        f"RunningMean(3) has buffers {sorted(buffers)}; expected `mean` and `count`. Likely cause: tensors "
        f"stored as plain attributes or as nn.Parameter - use `self.register_buffer(name, tensor)`"
    )
    mean, count = buffers["mean"], buffers["count"]
    assert (mean.dtype, tuple(mean.shape)) == (torch.float32, (3,)) and torch.equal(mean, torch.zeros(3)), (
        f"`mean` should start as float32 zeros of shape (3,), got {mean!r}"
    )
    assert (count.dtype, tuple(count.shape), count.item()) == (torch.int64, (), 0), (
        f"`count` should start as an int64 scalar tensor (shape ()) holding 0, got {count!r}; likely cause: "
        "`torch.zeros(1)` (shape (1,), float32) or `torch.tensor(0.0)`"
    )


def test_running_mean_buffers_are_not_parameters() -> None:
    rm = kata.RunningMean(4)
    params = [name for name, _ in rm.named_parameters()]
    assert not {"mean", "count"} & set(params), (
        f"RunningMean has parameters {params}; statistics are buffers, not nn.Parameters (an optimizer would "
        "update them, and they would get gradients)"
    )
    state = rm.state_dict()
    assert {"mean", "count"} <= set(state), (
        f"state_dict() keys are {sorted(state)}; `mean` and `count` are missing"
    )


def test_running_mean_buffers_move_with_to() -> None:
    rm = kata.RunningMean(4).to("meta")
    devices = {name: t.device.type for name, t in (("mean", rm.mean), ("count", rm.count))}
    assert devices == {"mean": "meta", "count": "meta"}, (
        f"after .to('meta') the statistics are on {devices}; likely cause: plain tensor attributes, which "
        "`.to()` does not see - register them as buffers"
    )


@settings(max_examples=20)
@given(sizes=st.lists(st.integers(1, 9), min_size=1, max_size=5), features=st.integers(1, 4))
def test_running_mean_train_tracks_mean_of_all_rows(sizes: list[int], features: int) -> None:
    rm = kata.RunningMean(features).train()
    batches = [torch.randn(n, features) * 3 + 2 for n in sizes]
    for batch in batches:
        rm(batch)
    expected = torch.cat(batches).double().mean(dim=0)
    assert_close(
        rm.mean.double(),
        expected,
        rtol=1e-5,
        atol=1e-5,
        what=f"running mean after batches of sizes {sizes} vs the mean of all their rows",
        likely_cause="averaging the batch means (wrong when batch sizes differ), an exponential moving "
        "average, or `count` incremented by 1 per batch instead of by the batch size",
    )
    assert rm.mean.dtype == torch.float32, f"`mean` changed dtype to {rm.mean.dtype}"
    assert rm.count.dtype == torch.int64 and rm.count.item() == sum(sizes), (
        f"after batches of sizes {sizes}, count is {rm.count!r}; expected the int64 scalar {sum(sizes)}"
    )


def test_running_mean_returns_x_minus_updated_mean() -> None:
    rm = kata.RunningMean(3).train()
    rm(torch.randn(4, 3))
    x = torch.randn(5, 3) + 4
    out = rm(x)
    assert_close(
        out,
        x - rm.mean,
        rtol=1e-6,
        atol=1e-6,
        what="RunningMean(x) in training vs x - mean (the mean after this batch was folded in)",
        likely_cause="subtracting the mean from before the update, or returning x unchanged",
    )


def test_running_mean_eval_changes_nothing() -> None:
    rm = kata.RunningMean(3).train()
    rm(torch.randn(6, 3) + 1)
    rm.eval()
    mean, count = rm.mean.clone(), rm.count.clone()
    x = torch.randn(4, 3) * 5
    out = rm(x)
    assert torch.equal(rm.mean, mean) and torch.equal(rm.count, count), (
        f"an eval-mode forward changed the statistics (mean {mean.tolist()} -> {rm.mean.tolist()}, count "
        f"{count.item()} -> {rm.count.item()}); likely cause: not checking `self.training` before updating"
    )
    assert_close(out, x - mean, rtol=1e-6, atol=1e-6, what="RunningMean(x) in eval mode vs x - mean")


def test_running_mean_buffers_never_require_grad() -> None:
    rm = kata.RunningMean(3).train()
    x = torch.randn(4, 3, requires_grad=True)
    out = rm(x)
    assert not rm.mean.requires_grad and rm.mean.grad_fn is None, (
        "after a training forward on an input that requires grad, `mean` requires grad / has a grad_fn; "
        "likely cause: the update ran under autograd - wrap it in `torch.no_grad()` (or use detached values)"
    )
    out.sum().backward()  # the returned tensor is still differentiable with respect to x
    assert x.grad is not None, "no gradient reached x through RunningMean's output"


class _GraphRecorder(TorchFunctionMode):
    """Notes every torch call in the block whose result is a tensor with a grad_fn: a recorded graph node."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: list[tuple[str, object]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        result = func(*args, **(kwargs or {}))
        for t in result if isinstance(result, tuple | list) else (result,):
            if isinstance(t, torch.Tensor) and t.grad_fn is not None:
                self.nodes.append((getattr(func, "__qualname__", repr(func)), t.grad_fn))
        return result


def _graph_of(t: torch.Tensor) -> list[object]:
    """Every autograd node the tensor's graph reaches (the nodes its gradient would pass through)."""
    seen: list[object] = []
    stack = [t.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or any(node is s for s in seen):
            continue
        seen.append(node)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return seen


def test_running_mean_update_records_no_graph() -> None:
    rm = kata.RunningMean(3).train()
    x = torch.randn(4, 3, requires_grad=True)
    with _GraphRecorder() as recorder:
        out = rm(x)
    used = _graph_of(out)
    stray = [name for name, node in recorder.nodes if not any(node is u for u in used)]
    assert not stray, (
        f"a training forward on an x that requires grad built autograd nodes that the output does not use: "
        f"{stray}; the statistics update must not be recorded at all. Likely cause: the update computed "
        "with grad mode on and .detach()-ed afterwards - put it under torch.no_grad() (or compute it from "
        "x.detach())"
    )


def test_running_mean_does_not_modify_its_input() -> None:
    rm = kata.RunningMean(3).train()
    rm(torch.randn(5, 3))
    for training in (True, False):
        rm.train(training)
        x = torch.randn(4, 3) + 2
        before = x.clone()
        out = rm(x)
        assert torch.equal(x, before), (
            f"RunningMean changed its input in {'train' if training else 'eval'} mode; likely cause: "
            "subtracting the mean in place (x -= self.mean, x.sub_(...)) - return x - self.mean, a new tensor"
        )
        assert out.data_ptr() != x.data_ptr(), "RunningMean returned its input tensor itself"


def test_running_mean_after_double_keeps_int64_count() -> None:
    rm = kata.RunningMean(2).double().train()
    assert (rm.mean.dtype, rm.count.dtype) == (torch.float64, torch.int64), (
        f"after .double(): mean is {rm.mean.dtype}, count is {rm.count.dtype}; a dtype cast converts only "
        "floating-point buffers, so count must be registered as an int64 tensor"
    )
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(n, 2, generator=gen, dtype=torch.float64) * 1e3 + 1e4 for n in (3, 5, 2)]
    for batch in batches:
        out = rm(batch)
    expected = torch.cat(batches).mean(dim=0)
    assert (rm.mean.dtype, rm.count.dtype, out.dtype) == (torch.float64, torch.int64, torch.float64), (
        f"after float64 batches: mean {rm.mean.dtype}, count {rm.count.dtype}, output {out.dtype}; expected "
        "float64, int64, float64"
    )
    assert rm.count.item() == 10, f"count should be 10 after batches of 3, 5 and 2 rows, got {rm.count!r}"
    # The contract promises the mean up to float32 rounding whatever the dtype: 1e-6 relative is float32's.
    assert_close(
        rm.mean,
        expected,
        rtol=1e-6,
        atol=0,
        what="the running mean of float64 batches after .double()",
        likely_cause="count incremented by 1 per batch, or the batches averaged instead of the rows",
    )


def test_running_mean_on_meta_device() -> None:
    rm = kata.RunningMean(2).to("meta").train()
    out = _on_meta("RunningMean.forward", lambda: rm(torch.empty(4, 2, device="meta")))
    devices = {"mean": rm.mean.device.type, "count": rm.count.device.type, "output": out.device.type}
    assert devices == {"mean": "meta", "count": "meta", "output": "meta"}, (
        f"a training forward on the meta device left {devices}; likely cause: a tensor built on the CPU "
        "inside forward (torch.zeros(features), torch.tensor(batch)) - use the input's or the buffers' device"
    )


def test_running_mean_on_device(device: torch.device) -> None:
    rm = kata.RunningMean(2).to(device).train()
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0]], device=device)
    out = rm(x)
    assert rm.mean.device.type == device.type and out.device.type == device.type, (
        f"on {device}: mean on {rm.mean.device}, output on {out.device}"
    )
    assert_close(rm.mean.cpu(), torch.tensor([2.0, 4.0]), rtol=1e-6, atol=1e-6, what=f"mean on {device}")


# ----------------------------------------------------------------------------------------------------- freeze


def _nested_model() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.Sequential(nn.BatchNorm1d(4), nn.Sequential(nn.Linear(4, 2))))


def test_freeze_returns_the_module() -> None:
    model = _nested_model()
    result = kata.freeze(model)
    assert result is model, (
        f"freeze(model) returned {type(result).__name__ if result is not None else 'None'}, expected the "
        f"same module object; likely cause: a missing `return module`, or freezing a copy"
    )


def test_freeze_every_parameter_nested() -> None:
    model = _nested_model()
    values = [p.detach().clone() for p in model.parameters()]
    kata.freeze(model)
    still = [name for name, p in model.named_parameters() if p.requires_grad]
    assert not still, (
        f"after freeze, these parameters still require grad: {still}; likely cause: setting "
        "`module.requires_grad = False` (a plain attribute, no effect), or only top-level parameters "
        "(`parameters(recurse=False)` / one level of children)"
    )
    for before, p in zip(values, model.parameters(), strict=True):
        assert torch.equal(before, p), "freeze changed a parameter's values"


def test_freeze_any_module_type() -> None:
    model = _Model()
    values = [p.detach().clone() for p in model.parameters()]
    assert kata.freeze(model) is model, "freeze(model) must return the module it was given"
    still = [name for name, p in model.named_parameters() if p.requires_grad]
    assert not still, (
        f"after freeze, these parameters still require grad: {still}; likely cause: freezing only the "
        "children (a parameter registered directly on the model is missed), only known layer types "
        "(type(m) is nn.Linear misses subclasses and custom modules), or one level of submodules - "
        "module.parameters() yields every one"
    )
    for before, p in zip(values, model.parameters(), strict=True):
        assert torch.equal(before, p.detach()), "freeze changed a parameter's values"


def test_freeze_leaves_buffers_unchanged() -> None:
    model = _nested_model().train()
    model(torch.randn(8, 3))  # non-trivial running statistics, num_batches_tracked = 1
    before = {name: b.clone() for name, b in model.named_buffers()}
    kata.freeze(model)
    now = dict(model.named_buffers())
    assert sorted(now) == sorted(before), f"freeze changed the buffers: {sorted(before)} -> {sorted(now)}"
    changed = [n for n in before if now[n].dtype != before[n].dtype or not torch.equal(now[n], before[n])]
    assert not changed, f"freeze changed the values or dtypes of the buffers {changed}; it must leave them"


def test_freeze_keeps_training_mode() -> None:
    model = _nested_model().train()
    kata.freeze(model)
    modes = [m.training for m in model.modules()]
    assert all(modes), (
        "freeze switched (part of) the model to eval mode; freezing stops gradients, it does not change "
        "Dropout/BatchNorm behaviour - don't call `.eval()` in freeze"
    )
    assert not any(p.requires_grad for p in model.parameters()), "freeze left some parameters trainable"
