"""Grader for k09_train_vs_eval: eval-mode prediction, restoring every mode flag, and Monte-Carlo dropout.

Device bugs (an output moved to, or built on, the CPU) are caught on the `meta` device, which has no data:
anything that goes through host memory fails there. The tests taking the `device` fixture repeat the
numeric checks on a real GPU when there is one.
"""

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from kata_harness import load_kata
from kata_harness.testing import assert_close

kata = load_kata("k09_train_vs_eval")


class Recorder(nn.Module):
    """Identity layer that keeps a copy of everything that flows through it."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return x


def make_net() -> nn.Sequential:
    """Linear -> BatchNorm -> ReLU -> Dropout -> Linear, with BatchNorm statistics far from their defaults."""
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))
    bn = net[1]
    with torch.no_grad():
        bn.running_mean.uniform_(-1.0, 1.0)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    bn.num_batches_tracked.fill_(10)
    return net


def eval_output_float64(net: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """What `make_net()` computes in eval mode, written out in float64."""
    lin1, bn, _, _, lin2 = net
    h = x.double() @ lin1.weight.double().T + lin1.bias.double()
    h = (h - bn.running_mean.double()) / torch.sqrt(bn.running_var.double() + bn.eps)
    h = (h * bn.weight.double() + bn.bias.double()).clamp_min(0.0)
    return h @ lin2.weight.double().T + lin2.bias.double()


def make_nested_net() -> nn.Sequential:
    """A model with grandchildren, so flags can differ below the root's children."""
    return nn.Sequential(
        nn.Linear(4, 8),
        nn.Sequential(nn.BatchNorm1d(8), nn.Dropout(0.2)),
        nn.ReLU(),
        nn.Sequential(nn.Dropout(0.3), nn.Linear(8, 3)),
    )


def set_pattern(net: nn.Sequential, pattern: str) -> None:
    """Put the nested net's submodules in one of several train/eval mixes."""
    if pattern == "all train":
        net.train()
    elif pattern == "all eval":
        net.eval()
    elif pattern == "training, frozen batchnorm":
        net.train()
        net[1][0].eval()
    elif pattern == "eval, one dropout training":
        net.eval()
        net[3][0].train()
    else:  # pragma: no cover - a typo in a parametrize list
        raise ValueError(pattern)


PATTERNS = ["all train", "all eval", "training, frozen batchnorm", "eval, one dropout training"]


def flags(net: nn.Module) -> dict[str, bool]:
    return {name or "<root>": module.training for name, module in net.named_modules()}


def batchnorm_state(bn: nn.BatchNorm1d) -> dict[str, torch.Tensor]:
    return {name: buffer.clone() for name, buffer in bn.named_buffers()}


def assert_batchnorm_unchanged(before: dict[str, torch.Tensor], bn: nn.BatchNorm1d, who: str) -> None:
    for name, new in batchnorm_state(bn).items():
        old = before[name]
        assert torch.equal(old, new), (
            f"BatchNorm's {name} changed during {who}: {old.tolist()} -> {new.tolist()}; likely cause: "
            f"BatchNorm ran in train mode (only eval mode stops it updating its running statistics)."
        )


class GraphWatch:
    """Forward hooks on every submodule of a model (local hooks, removed on exit): each notes whether the
    submodule's output was recorded by autograd, so a `.detach()` after the forward pass cannot hide it."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.recorded: list[str] = []
        self.handles: list[Any] = []

    def __enter__(self) -> "GraphWatch":
        for name, module in self.model.named_modules():

            def hook(module: nn.Module, args: object, out: Any, name: str = name or "<root>") -> None:
                if isinstance(out, torch.Tensor) and (out.requires_grad or out.grad_fn is not None):
                    self.recorded.append(name)

            self.handles.append(module.register_forward_hook(hook))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()

    def check(self, who: str) -> None:
        assert not self.recorded, (
            f"during {who}, autograd recorded a graph: the outputs of these submodules required grad: "
            f"{sorted(set(self.recorded))}; likely cause: the forward pass ran with grad mode on and the "
            f"result was detached afterwards (`.detach()` hides the graph, but it was built, activations and "
            f"all), or parameters were frozen while the input still requires grad. Run the forward passes "
            f"under torch.no_grad() (or torch.inference_mode())."
        )


def snapshot(model: nn.Module, x: torch.Tensor) -> list[tuple[str, torch.Tensor, bool]]:
    return [("x", x.detach().clone(), x.requires_grad)] + [
        (name, p.detach().clone(), p.requires_grad) for name, p in model.named_parameters()
    ]


def assert_unmodified(
    before: list[tuple[str, torch.Tensor, bool]], model: nn.Module, x: torch.Tensor, who: str
) -> None:
    now = dict((name, (t, rg)) for name, t, rg in snapshot(model, x))
    for name, old, old_rg in before:
        new, new_rg = now[name]
        assert new_rg == old_rg, (
            f"{who} changed `requires_grad` of {name} from {old_rg} to {new_rg}; likely cause: "
            f"`requires_grad_(False)` used to avoid a graph. That changes the caller's tensors for good: "
            f"use torch.no_grad(), which changes nothing outside the block."
        )
        assert torch.equal(new, old), (
            f"{who} changed the values of {name}; the caller's tensors must stay as they were"
        )


def call_on_meta(function: Callable[..., Any], *args: Any) -> Any:
    """Call the kata on meta tensors; an operation that needs data (a copy to the host) is a device bug."""
    try:
        return function(*args)
    except NotImplementedError as exc:
        if "meta" not in str(exc):
            raise  # the stub's own NotImplementedError: "not started"
        pytest.fail(
            f"{function.__name__} on a model and input on the `meta` device tried to copy data to the host "
            f"({exc}); likely cause: `.cpu()`, `.tolist()` or `.item()` on a result. Keep the results on "
            f"the input's device - on a GPU that copy would be a silent slow-down or a wrong device.",
            pytrace=False,
        )
    except RuntimeError as exc:
        if "device" not in str(exc):
            raise
        pytest.fail(
            f"{function.__name__} mixed devices for a model and input on the `meta` device: {exc}; likely "
            f"cause: a tensor created without `device=` (it lands on the CPU), e.g. `torch.zeros(shape)` "
            f"instead of `torch.zeros_like(out)`.",
            pytrace=False,
        )


def assert_flags_restored(before: dict[str, bool], after: dict[str, bool], who: str) -> None:
    changed = {name: (before[name], after[name]) for name in before if before[name] != after[name]}
    assert not changed, (
        f"after {who}, these submodules' `training` flags changed (name: (before, after)): {changed}; "
        f"every flag should be back to its value before the call. Likely cause: restoring with "
        f"`model.train()` or `model.train(was_training)`, which overwrites every submodule with one value, "
        f"or not restoring at all. Record `[(m, m.training) for m in model.modules()]` first and set each "
        f"`m.training` back afterwards."
    )


# ---------------------------------------------------------------------------------------------- predict


def test_predict_returns_eval_mode_output(device: torch.device) -> None:
    net = make_net().train()
    x = torch.randn(6, 4)
    expected = eval_output_float64(net, x)
    out = kata.predict(net.to(device), x.to(device))
    assert isinstance(out, torch.Tensor) and out.shape == (6, 3), (
        f"expected a tensor of shape (6, 3), got {type(out).__name__} {getattr(out, 'shape', '')}"
    )
    assert out.device.type == device.type, f"the output should stay on {device.type}, it is on {out.device}"
    assert_close(
        out.double().cpu(),
        expected,
        rtol=1e-5,
        atol=1e-5,
        what="predict(model, x) on a model in train mode",
        likely_cause="the model was not switched to eval mode, so Dropout zeroed activations and BatchNorm "
        "normalised with the batch's own statistics instead of its running ones.",
    )


def test_predict_leaves_batchnorm_running_stats_alone() -> None:
    net = make_net().train()
    before = batchnorm_state(net[1])
    kata.predict(net, torch.randn(6, 4))
    assert_batchnorm_unchanged(before, net[1], "predict")


def test_predict_records_no_graph() -> None:
    net = make_net().train()
    out = kata.predict(net, torch.randn(6, 4))
    assert not out.requires_grad and out.grad_fn is None, (
        f"expected an output without an autograd graph, got requires_grad={out.requires_grad}, "
        f"grad_fn={out.grad_fn}; likely cause: eval() alone does not turn off autograd - run the forward "
        f"pass under torch.no_grad() (or torch.inference_mode())."
    )


def test_predict_builds_no_graph_along_the_way() -> None:
    net = make_net().train()
    x = torch.randn(6, 4, requires_grad=True)
    with GraphWatch(net) as watch:
        out = kata.predict(net, x)
    watch.check("predict")
    assert not out.requires_grad and out.grad_fn is None, (
        f"for an input that requires grad, the output still must not: got requires_grad={out.requires_grad}"
    )


def test_predict_leaves_the_input_and_the_parameters_alone() -> None:
    net = make_net().train()
    for requires_grad in (True, False):
        x = torch.randn(6, 4, requires_grad=requires_grad)
        before = snapshot(net, x)
        kata.predict(net, x)
        assert_unmodified(before, net, x, "predict")


def test_predict_leaves_grad_mode_as_it_was() -> None:
    net = make_net().train()
    with torch.no_grad():
        kata.predict(net, torch.randn(6, 4))
        still_off = not torch.is_grad_enabled()
    assert still_off, (
        "predict was called with grad mode off and switched it on; likely cause: "
        "`torch.set_grad_enabled(False)` ... `torch.set_grad_enabled(True)` instead of a "
        "`with torch.no_grad():` block, which puts back whatever mode it found."
    )
    kata.predict(net, torch.randn(6, 4))
    assert torch.is_grad_enabled(), "predict was called with grad mode on and left it off"


def test_predict_keeps_the_output_on_the_models_device() -> None:
    net = make_net().train().to("meta")
    out = call_on_meta(kata.predict, net, torch.randn(6, 4, device="meta"))
    assert isinstance(out, torch.Tensor) and out.device.type == "meta" and out.shape == (6, 3), (
        f"for a model and input on the `meta` device, expected a (6, 3) output on `meta`, got "
        f"{type(out).__name__} {getattr(out, 'device', '')} {tuple(getattr(out, 'shape', ()))}; likely "
        f"cause: the output is moved to (or built on) the CPU."
    )


class Failing(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise KeyError("raised by the model's forward pass")


def test_predict_restores_flags_when_the_forward_pass_raises() -> None:
    net = make_nested_net()
    net.append(Failing())
    set_pattern(net, "training, frozen batchnorm")
    before = flags(net)
    with pytest.raises(KeyError, match="raised by the model's forward pass"):
        kata.predict(net, torch.randn(5, 4))
    assert_flags_restored(before, flags(net), "predict whose model(x) raised (flags restore in a `finally`)")


@pytest.mark.parametrize("pattern", PATTERNS)
def test_predict_restores_every_training_flag(pattern: str) -> None:
    net = make_nested_net()
    set_pattern(net, pattern)
    before = flags(net)
    kata.predict(net, torch.randn(5, 4))
    assert_flags_restored(before, flags(net), "predict")


# ---------------------------------------------------------------------------------------------- evaluating


@pytest.mark.parametrize("pattern", PATTERNS)
def test_evaluating_puts_every_submodule_in_eval(pattern: str) -> None:
    net = make_nested_net()
    set_pattern(net, pattern)
    with kata.evaluating(net):
        inside = flags(net)
    training = [name for name, flag in inside.items() if flag]
    assert not training, (
        f"inside `with evaluating(model):` these submodules were still in train mode: {training}; "
        f"likely cause: only the root's flag was set (`model.training = False`), or only some layers "
        f"were switched. `model.eval()` sets the flag on every submodule."
    )


def test_evaluating_yields_the_model() -> None:
    net = make_nested_net()
    with kata.evaluating(net) as bound:
        pass
    assert bound is net, (
        f"`with evaluating(model) as m:` should bind m to the model itself, got {bound!r}; "
        f"likely cause: a bare `yield` instead of `yield model`."
    )


@pytest.mark.parametrize("pattern", PATTERNS)
def test_evaluating_restores_every_training_flag(pattern: str) -> None:
    net = make_nested_net()
    set_pattern(net, pattern)
    before = flags(net)
    with kata.evaluating(net):
        pass
    assert_flags_restored(before, flags(net), "leaving `with evaluating(model):`")


def test_evaluating_restores_flags_after_an_exception() -> None:
    net = make_nested_net()
    set_pattern(net, "training, frozen batchnorm")
    before = flags(net)
    try:
        with kata.evaluating(net):
            raise KeyError("raised inside the with block by the test")
    except KeyError:
        pass
    after = flags(net)
    assert after == before, (
        f"after an exception inside `with evaluating(model):` the flags were {after}, expected {before}; "
        f"likely cause: the restoring code runs only when the block finishes normally - put it in a "
        f"`finally:` around the `yield`."
    )


def test_evaluating_restores_flags_changed_inside_the_block() -> None:
    net = make_nested_net()
    set_pattern(net, "eval, one dropout training")
    before = flags(net)
    with kata.evaluating(net):
        net.train()  # the block may change modes, e.g. a training step run inside an evaluation helper
        net[1].eval()
    after = flags(net)
    changed = {name: (before[name], after[name]) for name in before if before[name] != after[name]}
    assert not changed, (
        f"the block changed some flags, and on exit these were not put back (name: (on entry, after)): "
        f"{changed}; likely cause: restoring only the modules that were training (setting `True` back) "
        f"and assuming the rest are still in eval. Set every recorded flag back, whatever its value."
    )


def test_evaluating_lets_exceptions_propagate() -> None:
    net = make_nested_net()
    with pytest.raises(KeyError, match="raised inside the with block"), kata.evaluating(net):
        raise KeyError("raised inside the with block by the test")


def test_evaluating_keeps_autograd_on() -> None:
    net = make_net().train()
    with kata.evaluating(net):
        grad_enabled = torch.is_grad_enabled()
        out = net(torch.randn(6, 4))
    assert grad_enabled and out.grad_fn is not None, (
        f"inside `with evaluating(model):` autograd should stay on (grad enabled={grad_enabled}, "
        f"output grad_fn={out.grad_fn}); likely cause: torch.no_grad() inside the context manager. "
        f"Eval mode and gradient recording are separate switches; this one changes modes only."
    )


# ---------------------------------------------------------------------------------------- mc_dropout_predict


def make_mc_net() -> tuple[nn.Sequential, Recorder]:
    recorder = Recorder()
    net = make_net()
    net.append(recorder)
    return net, recorder


def test_mc_dropout_predict_runs_samples_forward_passes() -> None:
    net, recorder = make_mc_net()
    kata.mc_dropout_predict(net, torch.randn(6, 4), 5)
    assert len(recorder.seen) == 5, (
        f"expected exactly 5 forward passes for samples=5, the model ran {len(recorder.seen)}; "
        f"likely cause: an off-by-one in the sampling loop, or an extra pass (e.g. to find the output shape)."
    )


def test_mc_dropout_predict_mean_of_the_samples(device: torch.device) -> None:
    net, recorder = make_mc_net()
    mean, _ = kata.mc_dropout_predict(net.to(device), torch.randn(6, 4, device=device), 7)
    expected = torch.stack(recorder.seen).double().mean(dim=0)
    assert mean.shape == (6, 3), (
        f"the mean should be shaped like one output (6, 3), got {tuple(mean.shape)}; likely cause: "
        f"averaging over the wrong dimension of the stacked samples."
    )
    assert_close(
        mean.double(),
        expected,
        rtol=1e-5,
        atol=1e-6,
        what="mean returned by mc_dropout_predict vs the mean of the outputs the model produced",
        likely_cause="averaging over the wrong dimension, or returning something other than the mean of "
        "these samples.",
    )


def test_mc_dropout_predict_std_is_unbiased(device: torch.device) -> None:
    net, recorder = make_mc_net()
    _, std = kata.mc_dropout_predict(net.to(device), torch.randn(6, 4, device=device), 4)
    stacked = torch.stack(recorder.seen).double()
    expected = ((stacked - stacked.mean(dim=0)) ** 2).sum(dim=0).div(len(recorder.seen) - 1).sqrt()
    assert std.shape == (6, 3), f"the std should be shaped like one output (6, 3), got {tuple(std.shape)}"
    assert_close(
        std.double(),
        expected,
        rtol=1e-4,
        atol=1e-6,
        what="std returned by mc_dropout_predict vs the unbiased std of the outputs the model produced",
        likely_cause="unbiased=False (or correction=0) divides by n instead of n - 1; the contract asks "
        "for torch.std's default.",
    )


DROPOUT_CASES = [
    (nn.Dropout, (6, 8)),
    (nn.Dropout1d, (6, 4, 5)),
    (nn.Dropout2d, (6, 4, 3, 3)),
    (nn.Dropout3d, (3, 4, 2, 2, 2)),
    (nn.AlphaDropout, (6, 8)),
]


@pytest.mark.parametrize(("dropout", "shape"), DROPOUT_CASES, ids=[c[0].__name__ for c in DROPOUT_CASES])
def test_mc_dropout_predict_switches_dropout_on(dropout: type[nn.Module], shape: tuple[int, ...]) -> None:
    net = nn.Sequential(nn.Identity(), dropout(0.5)).eval()
    x = torch.randn(shape)
    _, std = kata.mc_dropout_predict(net, x, 8)
    varied = bool((std != 0).any())
    assert varied, (
        f"every sample came out the same (std is all zero) for a model with {dropout.__name__}; "
        f"likely cause: the dropout module was left in eval mode. Note that nn.Dropout1d/2d/3d and "
        f"nn.AlphaDropout are not subclasses of nn.Dropout: check against all of DROPOUT_TYPES."
    )


def test_mc_dropout_predict_keeps_other_modules_in_eval() -> None:
    net, _ = make_mc_net()
    net.train()
    seen_training: dict[str, set[bool]] = {}
    for name, module in net.named_modules():

        def hook(module: nn.Module, args: object, name: str = name or "<root>") -> None:
            seen_training.setdefault(name, set()).add(module.training)

        module.register_forward_pre_hook(hook)
    before = batchnorm_state(net[1])
    kata.mc_dropout_predict(net, torch.randn(6, 4), 3)
    wrong = {name: modes for name, modes in seen_training.items() if name != "3" and True in modes}
    assert not wrong, (
        f"during the passes these non-dropout modules ran in train mode: {sorted(wrong)}; likely cause: "
        f"`model.train()` to enable dropout, which switches every layer. Put the model in eval mode and "
        f"switch on the dropout modules only."
    )
    assert seen_training.get("3") == {True}, (
        f"the Dropout layer should run in train mode on every pass, its flags were {seen_training.get('3')}"
    )
    assert_batchnorm_unchanged(before, net[1], "mc_dropout_predict")


def test_mc_dropout_predict_records_no_graph() -> None:
    net, _ = make_mc_net()
    mean, std = kata.mc_dropout_predict(net, torch.randn(6, 4), 3)
    assert not mean.requires_grad and not std.requires_grad, (
        f"expected mean and std without an autograd graph, got requires_grad={mean.requires_grad} and "
        f"{std.requires_grad}; likely cause: the forward passes did not run under torch.no_grad()."
    )


def test_mc_dropout_predict_builds_no_graph_along_the_way() -> None:
    net, _ = make_mc_net()
    with GraphWatch(net) as watch:
        mean, std = kata.mc_dropout_predict(net, torch.randn(6, 4, requires_grad=True), 3)
    watch.check("mc_dropout_predict")
    assert not mean.requires_grad and not std.requires_grad, (
        "for an input that requires grad, mean and std still must not require grad"
    )


def test_mc_dropout_predict_leaves_the_input_and_the_parameters_alone() -> None:
    net, _ = make_mc_net()
    x = torch.randn(6, 4, requires_grad=True)
    before = snapshot(net, x)
    with torch.no_grad():
        kata.mc_dropout_predict(net, x, 3)
        still_off = not torch.is_grad_enabled()
    assert_unmodified(before, net, x, "mc_dropout_predict")
    assert still_off, (
        "mc_dropout_predict was called with grad mode off and switched it on; likely cause: "
        "torch.set_grad_enabled(True) at the end instead of a `with torch.no_grad():` block."
    )


def test_mc_dropout_predict_keeps_the_results_on_the_models_device() -> None:
    net, _ = make_mc_net()
    net.to("meta")
    got = call_on_meta(kata.mc_dropout_predict, net, torch.randn(6, 4, device="meta"), 3)
    devices = [
        (t.device.type, tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__ for t in got
    ]
    assert devices == [("meta", (6, 3)), ("meta", (6, 3))], (
        f"for a model and input on the `meta` device, expected mean and std of shape (6, 3) on `meta`, got "
        f"(device, shape) = {devices}; likely cause: the samples or the results moved to, or were "
        f"accumulated on, the CPU."
    )


class Noise(nn.Dropout):
    """A dropout subclass whose name does not say so."""


class FeatureNoise(nn.Dropout2d):
    pass


class DropoutFree(nn.Module):
    """Not a dropout module, whatever its name says: must stay in eval mode; notes its flag on each pass."""

    def __init__(self) -> None:
        super().__init__()
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return x


@pytest.mark.parametrize(
    ("dropout", "shape"),
    [(Noise, (6, 8)), (FeatureNoise, (6, 4, 3, 3))],
    ids=["Noise(nn.Dropout)", "FeatureNoise(nn.Dropout2d)"],
)
def test_mc_dropout_predict_switches_dropout_subclasses_on(
    dropout: type[nn.Module], shape: tuple[int, ...]
) -> None:
    free = DropoutFree()
    net = nn.Sequential(free, dropout(0.5)).eval()
    _, std = kata.mc_dropout_predict(net, torch.randn(shape), 8)
    assert bool((std != 0).any()), (
        f"every sample came out the same for a model with {dropout.__name__}, a subclass of "
        f"{dropout.__mro__[1].__name__}; likely cause: an exact type test (`type(m) is nn.Dropout`, "
        f"`type(m) in DROPOUT_TYPES`) or a test on the class name. Subclasses count: "
        f"isinstance(m, DROPOUT_TYPES)."
    )
    assert free.modes and not any(free.modes), (
        f"{type(free).__name__} is not a dropout module (it only has 'Dropout' in its name), yet it ran "
        f"in train mode; likely cause: choosing modules by their class name."
    )


@pytest.mark.parametrize("where", ["the model itself", "a grandchild"])
def test_mc_dropout_predict_finds_dropout_at_any_depth(where: str) -> None:
    if where == "the model itself":
        net: nn.Module = nn.Dropout(0.5)
    else:
        net = nn.Sequential(nn.Identity(), nn.Sequential(nn.Identity(), nn.Dropout(0.5)))
    net.eval()
    _, std = kata.mc_dropout_predict(net, torch.randn(6, 8), 8)
    assert bool((std != 0).any()), (
        f"every sample came out the same when the dropout module is {where}; likely cause: looking only "
        f"at `model.children()` (one level, without the model itself). `model.modules()` visits the "
        f"model and every descendant."
    )


def test_mc_dropout_predict_restores_flags_when_a_forward_pass_raises() -> None:
    net = make_nested_net()
    net.append(Failing())
    set_pattern(net, "training, frozen batchnorm")
    before = flags(net)
    with pytest.raises(KeyError, match="raised by the model's forward pass"):
        kata.mc_dropout_predict(net, torch.randn(5, 4), 2)
    assert_flags_restored(
        before, flags(net), "mc_dropout_predict whose model(x) raised (restore in a `finally`)"
    )


@pytest.mark.parametrize("pattern", PATTERNS)
def test_mc_dropout_predict_restores_every_training_flag(pattern: str) -> None:
    net = make_nested_net()
    set_pattern(net, pattern)
    before = flags(net)
    kata.mc_dropout_predict(net, torch.randn(5, 4), 2)
    assert_flags_restored(before, flags(net), "mc_dropout_predict")


def test_mc_dropout_predict_rejects_fewer_than_two_samples() -> None:
    net, recorder = make_mc_net()
    mean, std = kata.mc_dropout_predict(net, torch.randn(6, 4), 2)
    assert mean.shape == std.shape == (6, 3), "samples=2 is allowed and should return outputs of shape (6, 3)"
    for samples in (1, 0):
        recorder.seen.clear()
        try:
            kata.mc_dropout_predict(net, torch.randn(6, 4), samples)
        except ValueError:
            pass
        else:
            pytest.fail(
                f"mc_dropout_predict(model, x, samples={samples}) returned instead of raising ValueError; "
                f"likely cause: no check on `samples` (with one sample the unbiased std is nan)."
            )
        assert not recorder.seen, (
            f"samples={samples} should raise ValueError before any forward pass, but the model ran "
            f"{len(recorder.seen)} time(s)"
        )
