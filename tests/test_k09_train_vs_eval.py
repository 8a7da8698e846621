"""Grader for k09_train_vs_eval: eval-mode prediction, restoring every mode flag, Monte-Carlo dropout, and
BatchNorm written by hand (MyBatchNorm1d, graded against torch's nn.BatchNorm1d run in float64).

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
from kata_harness.testing import assert_close, record_torch_calls

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


# -------------------------------------------------------------------------------------------- MyBatchNorm1d
#
# The oracle is torch's own nn.BatchNorm1d, run in float64 on the same state. Tolerances for float64
# comparisons: rtol=1e-6, atol=1e-9. Any correct float64 implementation agrees with torch to ~1e-13 (sums in
# another order, rsqrt vs sqrt); 1e-6 also admits a momentum=None factor computed as a float32 tensor
# (1/3 in float32 is 3e-8 off). Every bug below moves a value by more than 1e-4 of itself: the channels'
# variances run from 1e-4 to 9, so even eps outside the square root (eps=1e-5) changes an output by 5%.

RTOL64, ATOL64 = 1e-6, 1e-9
F64 = torch.float64
FORBIDDEN_NORMS = ("batch_norm", "instance_norm", "layer_norm", "group_norm")
BN_SHAPES = [(8, 4), (5, 4, 3), (3, 4, 4)]  # (N, C), (N, C, L), and (N, C, L) with L == C
BN_SHAPE_IDS = ["(N,C)", "(N,C,L)", "(N,C,L=C)"]


def make_batch(shape: tuple[int, ...], dtype: torch.dtype = F64, device: Any = "cpu") -> torch.Tensor:
    """A batch whose channels (dim 1) have very different means and spreads (std from 0.01 to 3)."""
    c = shape[1]
    view = (1, c) + (1,) * (len(shape) - 2)
    scale = torch.logspace(-2, 0.5, c, dtype=F64).view(view)
    shift = torch.linspace(-2.0, 3.0, c, dtype=F64).view(view)
    return (torch.randn(shape, dtype=F64) * scale + shift).to(device=device, dtype=dtype)


def load_state(target: nn.Module, source: nn.Module, who: str) -> None:
    try:
        target.load_state_dict(source.state_dict())
    except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
        pytest.fail(
            f"{who}.load_state_dict(...) refused the other module's state dict: {exc}; likely cause: the "
            f"parameters and buffers are not named, shaped or registered as nn.BatchNorm1d's are "
            f"(weight, bias, running_mean, running_var, num_batches_tracked).",
            pytrace=False,
        )


def bn_pair(
    num_features: int = 4, *, randomise: bool = True, device: Any = "cpu", **kwargs: Any
) -> tuple[nn.Module, nn.BatchNorm1d]:
    """(mine, torch's), float64, in the same state: torch's randomised away from the defaults, then loaded."""
    kwargs.setdefault("dtype", F64)
    ref = nn.BatchNorm1d(num_features, device=device, **kwargs)
    if randomise:
        with torch.no_grad():
            if ref.affine:
                ref.weight.uniform_(0.5, 1.5)
                ref.bias.uniform_(-0.5, 0.5)
            if ref.track_running_stats:
                ref.running_mean.uniform_(-1.0, 1.0)
                ref.running_var.uniform_(0.5, 2.0)
                ref.num_batches_tracked.fill_(3)
    mine = kata.MyBatchNorm1d(num_features, device=device, **kwargs)
    load_state(mine, ref, "MyBatchNorm1d")
    return mine, ref


def stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Per-channel (mean, biased variance, unbiased variance, values per channel) of x, in float64."""
    x = x.detach().double()
    dims = (0,) if x.dim() == 2 else (0, 2)
    n = x.numel() // x.shape[1]
    mean = x.mean(dim=dims)
    biased = ((x - mean.view((1, -1) + (1,) * (x.dim() - 2))) ** 2).sum(dim=dims) / n
    return mean, biased, biased * n / (n - 1), n


def normalise(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, bn: nn.BatchNorm1d) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) * weight + bias in float64, the vectors broadcast along dim 1."""
    view = (1, -1) + (1,) * (x.dim() - 2)
    out = (x.detach().double() - mean.view(view)) / torch.sqrt(var.view(view) + bn.eps)
    if bn.affine:
        out = out * bn.weight.detach().double().view(view) + bn.bias.detach().double().view(view)
    return out


def matching(got: torch.Tensor, candidates: dict[str, torch.Tensor]) -> str:
    """The description of the first wrong candidate that `got` equals, or a generic line."""
    for why, candidate in candidates.items():
        if candidate.shape == got.shape and torch.allclose(
            got.detach().double().cpu(), candidate.cpu(), rtol=1e-6, atol=1e-9
        ):
            return f"it equals what you get when {why}"
    return "it matches none of the usual mistakes; compare your computation with the module docstring"


def run_both(mine: nn.Module, ref: nn.BatchNorm1d, x: torch.Tensor) -> tuple[Any, torch.Tensor]:
    """(mine(x), ref(x)), torch's module run first: a kata that changes x in place cannot skew the oracle."""
    expected = ref(x)
    return mine(x), expected


def check_output(got: Any, expected: torch.Tensor, candidates: dict[str, torch.Tensor], what: str) -> None:
    assert isinstance(got, torch.Tensor), f"{what}: expected a tensor, got {type(got).__name__}"
    assert got.shape == expected.shape and got.dtype == expected.dtype, (
        f"{what}: expected shape {tuple(expected.shape)} and dtype {expected.dtype}, got "
        f"{tuple(got.shape)} {got.dtype}; the output has the input's shape and dtype"
    )
    assert got.device == expected.device, (
        f"{what}: the output is on {got.device}, the input on {expected.device}"
    )
    assert_close(
        got.detach(),
        expected.detach(),
        rtol=RTOL64,
        atol=ATOL64,
        what=what,
        likely_cause=matching(got, candidates),
    )


def train_output_mistakes(x: torch.Tensor, bn: nn.BatchNorm1d) -> dict[str, torch.Tensor]:
    """Outputs of the usual wrong train-mode passes, from torch's module state *before* it ran."""
    mean, biased, unbiased, _ = stats(x)
    found = {
        "the batch is normalised with its UNBIASED variance (divided by n - 1, the default of `Tensor.var`); "
        "normalisation uses the biased one (divided by n)": normalise(x, mean, unbiased, bn),
        "eps is added outside the square root: it belongs inside, sqrt(var + eps)": normalise(
            x, mean, (biased.sqrt() + bn.eps) ** 2 - bn.eps, bn
        ),
    }
    if bn.track_running_stats:
        found["train mode normalises with the running statistics: it uses the batch's own"] = normalise(
            x, bn.running_mean.double(), bn.running_var.double(), bn
        )
    if x.dim() == 3:
        xd = x.detach().double()
        per_position = (xd - xd.mean(dim=0)) / torch.sqrt(xd.var(dim=0, correction=0) + bn.eps)
        if bn.affine:
            per_position = per_position * bn.weight.detach().double().view(
                1, -1, 1
            ) + bn.bias.detach().double().view(1, -1, 1)
        found[
            "the statistics are taken over N only, per (channel, position); for (N, C, L) they are taken "
            "over N and L together"
        ] = per_position
    if bn.affine:
        plain = (x.detach().double() - mean.view((1, -1) + (1,) * (x.dim() - 2))) / torch.sqrt(
            biased.view((1, -1) + (1,) * (x.dim() - 2)) + bn.eps
        )
        found["weight and bias are not applied"] = plain
        if x.dim() == 3 and x.shape[2] == x.shape[1]:  # silently wrong only when L == C; else shapes refuse
            weight, bias = bn.weight.detach().double(), bn.bias.detach().double()
            found[
                "weight and bias are broadcast along the last dimension (L) instead of the channel dimension "
                "(dim 1): reshape them to (1, C, 1)"
            ] = plain * weight + bias
    return found


def running_mistakes(
    old: torch.Tensor,
    batch_unbiased: torch.Tensor,
    batch_biased: torch.Tensor | None,
    factor: float,
    nbt_before: int | None = None,
    momentum: float | None = 0.1,
) -> dict[str, torch.Tensor]:
    """Running statistics after the usual wrong updates (`batch_biased` only for the variance)."""
    found = {}
    if momentum is not None:
        found[
            "momentum weighs the OLD estimate (running = momentum * running + (1 - momentum) * batch); "
            "BatchNorm's momentum is the weight of the NEW batch, the opposite of an optimizer's"
        ] = momentum * old + (1 - momentum) * batch_unbiased
    if batch_biased is not None:
        found[
            "the running variance is fed the BIASED batch variance; it takes the unbiased one (divided by "
            "n - 1)"
        ] = (1 - factor) * old + factor * batch_biased
    if momentum is None:
        found[
            "momentum=None is treated as the default 0.1; None means a cumulative average, factor 1 / count"
        ] = 0.9 * old + 0.1 * batch_unbiased
        if nbt_before:
            found[
                "the cumulative average's factor uses the count before this batch (1 / num_batches_tracked "
                "read before adding 1)"
            ] = (1 - 1 / nbt_before) * old + batch_unbiased / nbt_before
        found["momentum=None is treated as 0 (no update); None means a cumulative average"] = old
    found["the running statistic was replaced by the batch's"] = batch_unbiased
    found["the running statistic was not updated in train mode"] = old
    return found


def buffers(bn: nn.Module) -> dict[str, torch.Tensor]:
    return {name: b.detach().clone() for name, b in bn.named_buffers()}


# --------------------------------------------------------------------------- MyBatchNorm1d: its state


AFFINE_TRACK = [(True, True), (False, True), (True, False), (False, False)]
AFFINE_TRACK_IDS = ["affine", "no-affine", "no-running-stats", "neither"]


def describe(named: Any) -> list[tuple[str, tuple[int, ...], torch.dtype, str, bool]]:
    return [(n, tuple(t.shape), t.dtype, t.device.type, t.requires_grad) for n, t in named]


@pytest.mark.parametrize(("affine", "track"), AFFINE_TRACK, ids=AFFINE_TRACK_IDS)
@pytest.mark.parametrize(("device", "dtype"), [(None, None), ("meta", F64)], ids=["defaults", "meta-float64"])
def test_batchnorm_has_torchs_parameters_and_buffers(
    affine: bool, track: bool, device: Any, dtype: Any
) -> None:
    kwargs = dict(affine=affine, track_running_stats=track, device=device, dtype=dtype)
    mine = kata.MyBatchNorm1d(5, **kwargs)
    ref = nn.BatchNorm1d(5, **kwargs)
    assert isinstance(mine, nn.Module), f"MyBatchNorm1d should be an nn.Module, got {type(mine).__mro__}"
    assert not list(mine.children()), (
        f"MyBatchNorm1d has submodules {[type(m).__name__ for m in mine.children()]}; it holds its own "
        f"parameters and buffers instead of wrapping a module (nn.BatchNorm1d is what you are writing)"
    )
    got, expected = describe(mine.named_parameters()), describe(ref.named_parameters())
    assert got == expected, (
        f"MyBatchNorm1d(5, {kwargs}) parameters (name, shape, dtype, device, requires_grad): expected "
        f"{expected}, got {got}; likely cause: a tensor that is not an nn.Parameter is not trained, "
        f"affine=False has no parameters, and device=/dtype= go to every tensor the module creates."
    )
    got, expected = describe(mine.named_buffers()), describe(ref.named_buffers())
    assert got == expected, (
        f"MyBatchNorm1d(5, {kwargs}) buffers (name, shape, dtype, device, requires_grad): expected "
        f"{expected}, got {got}; likely cause: a plain tensor attribute is not a buffer (it is neither "
        f"saved in the state dict nor moved by .to()); num_batches_tracked is a 0-dim int64 tensor whatever "
        f"`dtype` says; track_running_stats=False keeps no buffers."
    )
    assert list(mine.state_dict()) == list(ref.state_dict()), (
        f"state_dict keys: expected {list(ref.state_dict())}, got {list(mine.state_dict())}"
    )
    for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        if getattr(ref, name) is None:
            assert getattr(mine, name, "missing") is None, (
                f"with affine={affine}, track_running_stats={track}, nn.BatchNorm1d's `{name}` is None; "
                f"MyBatchNorm1d's is {getattr(mine, name, 'missing')!r}"
            )
    if device is None:
        for name, value in ref.state_dict().items():
            assert torch.equal(mine.state_dict()[name], value), (
                f"a new module's {name} should start as {value.tolist()}, "
                f"got {mine.state_dict()[name].tolist()}"
            )


def test_batchnorm_keeps_its_settings_as_attributes() -> None:
    mine = kata.MyBatchNorm1d(6, eps=1e-3, momentum=None, affine=False, track_running_stats=False)
    got = {
        name: getattr(mine, name, "missing")
        for name in ("num_features", "eps", "momentum", "affine", "track_running_stats")
    }
    expected = {
        "num_features": 6,
        "eps": 1e-3,
        "momentum": None,
        "affine": False,
        "track_running_stats": False,
    }
    assert got == expected, (
        f"attributes: expected {expected}, got {got} (nn.BatchNorm1d keeps them under these names)"
    )
    defaults = kata.MyBatchNorm1d(3)
    got = {
        name: getattr(defaults, name, "missing")
        for name in ("eps", "momentum", "affine", "track_running_stats")
    }
    expected = {"eps": 1e-5, "momentum": 0.1, "affine": True, "track_running_stats": True}
    assert got == expected, f"defaults: expected nn.BatchNorm1d's {expected}, got {got}"


def test_batchnorm_state_dicts_load_both_ways() -> None:
    mine, _ = bn_pair()
    mine.train()
    mine(make_batch((8, 4)))
    again = nn.BatchNorm1d(4, dtype=F64)
    load_state(again, mine, "nn.BatchNorm1d")
    for name, value in mine.state_dict().items():
        assert torch.equal(again.state_dict()[name], value), f"{name} did not survive the round trip"


# --------------------------------------------------------------------------- MyBatchNorm1d: train mode


@pytest.mark.parametrize("shape", BN_SHAPES, ids=BN_SHAPE_IDS)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no-affine"])
def test_batchnorm_train_output_matches_torch(shape: tuple[int, ...], affine: bool) -> None:
    mine, ref = bn_pair(affine=affine)
    mine.train(), ref.train()
    x = make_batch(shape)
    mistakes = train_output_mistakes(x, ref)
    check_output(
        *run_both(mine, ref, x), mistakes, f"MyBatchNorm1d(affine={affine}) in train mode on a {shape} batch"
    )


@pytest.mark.parametrize("shape", BN_SHAPES[:2], ids=BN_SHAPE_IDS[:2])
@pytest.mark.parametrize("momentum", [0.1, 0.3])
def test_batchnorm_train_updates_the_running_statistics(shape: tuple[int, ...], momentum: float) -> None:
    mine, ref = bn_pair(momentum=momentum)
    mine.train(), ref.train()
    x = make_batch(shape)
    mean, biased, unbiased, _ = stats(x)
    old_mean, old_var = ref.running_mean.clone(), ref.running_var.clone()
    ref(x), mine(x)
    check_running(
        mine,
        ref,
        f"one train-mode step with momentum={momentum} on a {shape} batch",
        {
            "running_mean": running_mistakes(old_mean, mean, None, momentum, momentum=momentum),
            "running_var": running_mistakes(old_var, unbiased, biased, momentum, momentum=momentum),
        },
    )


def check_running(
    mine: nn.Module, ref: nn.BatchNorm1d, when: str, mistakes: dict[str, dict[str, torch.Tensor]]
) -> None:
    got_count, expected_count = mine.num_batches_tracked, ref.num_batches_tracked
    assert isinstance(got_count, torch.Tensor) and got_count.dtype == torch.int64 and got_count.dim() == 0, (
        f"after {when}, num_batches_tracked should be a 0-dim int64 tensor, got {got_count!r}"
    )
    assert int(got_count) == int(expected_count), (
        f"after {when}, num_batches_tracked should be {int(expected_count)}, got {int(got_count)}; it counts "
        f"the train-mode forward passes of a module that tracks running statistics, whatever its momentum, "
        f"and eval mode does not count"
    )
    for name in ("running_mean", "running_var"):
        got, expected = getattr(mine, name), getattr(ref, name)
        assert not got.requires_grad and got.grad_fn is None, (
            f"after {when}, {name} carries an autograd graph (requires_grad={got.requires_grad}, "
            f"grad_fn={got.grad_fn}); likely cause: the running statistics were updated from the batch "
            f"statistics with grad mode on. They are data, not part of the graph: every batch's graph would "
            f"stay alive through them. Update them under torch.no_grad() (or from detached statistics)."
        )
        assert_close(
            got.detach(),
            expected,
            rtol=RTOL64,
            atol=ATOL64,
            what=f"{name} after {when}",
            likely_cause=matching(got, mistakes.get(name, {})),
        )


@pytest.mark.parametrize("shape", BN_SHAPES[:2], ids=BN_SHAPE_IDS[:2])
def test_batchnorm_momentum_none_is_a_cumulative_average(shape: tuple[int, ...]) -> None:
    mine, ref = bn_pair(momentum=None, randomise=False)
    mine.train(), ref.train()
    means, variances = [], []
    for step in range(1, 5):
        x = make_batch(shape)
        mean, biased, unbiased, _ = stats(x)
        old_mean, old_var = ref.running_mean.clone(), ref.running_var.clone()
        means.append(mean)
        variances.append(unbiased)
        ref(x), mine(x)
        check_running(
            mine,
            ref,
            f"train-mode step {step} of a new module with momentum=None",
            {
                "running_mean": running_mistakes(old_mean, mean, None, 1 / step, step - 1, momentum=None),
                "running_var": running_mistakes(old_var, unbiased, biased, 1 / step, step - 1, momentum=None),
            },
        )
    # The point of momentum=None, said without torch: the plain average of every batch's statistics.
    assert_close(
        mine.running_mean.detach(),
        torch.stack(means).mean(dim=0),
        rtol=RTOL64,
        atol=ATOL64,
        what="running_mean after 4 steps with momentum=None vs the average of the 4 batch means",
    )
    assert_close(
        mine.running_var.detach(),
        torch.stack(variances).mean(dim=0),
        rtol=RTOL64,
        atol=ATOL64,
        what="running_var after 4 steps with momentum=None vs the average of the 4 unbiased batch variances",
    )


def test_batchnorm_momentum_none_continues_the_count_it_loaded() -> None:
    mine, ref = bn_pair(momentum=None)  # num_batches_tracked = 3: the next batch weighs 1/4
    mine.train(), ref.train()
    x = make_batch((6, 4))
    mean, biased, unbiased, _ = stats(x)
    old_mean, old_var = ref.running_mean.clone(), ref.running_var.clone()
    ref(x), mine(x)
    check_running(
        mine,
        ref,
        "one train-mode step with momentum=None after loading num_batches_tracked=3",
        {
            "running_mean": running_mistakes(old_mean, mean, None, 0.25, 3, momentum=None),
            "running_var": running_mistakes(old_var, unbiased, biased, 0.25, 3, momentum=None),
        },
    )


def test_batchnorm_reads_momentum_when_it_runs() -> None:
    mine, ref = bn_pair(momentum=0.1)
    mine.train(), ref.train()
    mine.momentum = ref.momentum = 0.5
    ref(x := make_batch((6, 4))), mine(x)
    mine.momentum = ref.momentum = None
    ref(x := make_batch((6, 4))), mine(x)
    check_running(mine, ref, "steps after setting `bn.momentum = 0.5`, then `bn.momentum = None`", {})


def test_batchnorm_counts_train_mode_batches_only() -> None:
    for momentum in (0.1, None):
        mine, ref = bn_pair(momentum=momentum, randomise=False)
        for mode in (True, True, False, True, False):
            mine.train(mode), ref.train(mode)
            ref(x := make_batch((6, 4))), mine(x)
            check_running(mine, ref, f"a sequence of train and eval passes with momentum={momentum}", {})


# --------------------------------------------------------------------------- MyBatchNorm1d: eval mode


@pytest.mark.parametrize("shape", [*BN_SHAPES, (1, 4)], ids=[*BN_SHAPE_IDS, "(1,C)"])
def test_batchnorm_eval_uses_the_running_statistics_and_changes_nothing(shape: tuple[int, ...]) -> None:
    mine, ref = bn_pair()
    mine.eval(), ref.eval()
    before = buffers(ref)
    x = make_batch(shape)
    mean, biased, _, _ = stats(x)
    mistakes = {
        "eval mode normalises with the batch's statistics: it uses running_mean and running_var": normalise(
            x, mean, biased, ref
        )
    }
    rm, rv = ref.running_mean.double(), ref.running_var.double()
    mistakes["eps is added outside the square root: it belongs inside, sqrt(var + eps)"] = normalise(
        x, rm, (rv.sqrt() + ref.eps) ** 2 - ref.eps, ref
    )
    check_output(*run_both(mine, ref, x), mistakes, f"MyBatchNorm1d in eval mode on a {shape} batch")
    for name, value in buffers(mine).items():
        assert torch.equal(value, before[name]), (
            f"eval mode changed {name}: {before[name].tolist()} -> {value.tolist()}; likely cause: the "
            f"running statistics (or the count) are updated whatever the mode. Only train mode updates them."
        )


@pytest.mark.parametrize("shape", BN_SHAPES[:2], ids=BN_SHAPE_IDS[:2])
def test_batchnorm_without_running_statistics_uses_the_batch_in_both_modes(shape: tuple[int, ...]) -> None:
    mine, ref = bn_pair(track_running_stats=False)
    for mode in (True, False):
        mine.train(mode), ref.train(mode)
        x = make_batch(shape)
        mistakes = train_output_mistakes(x, ref)
        check_output(
            *run_both(mine, ref, x),
            mistakes,
            f"MyBatchNorm1d(track_running_stats=False) in {'train' if mode else 'eval'} mode (no running "
            f"statistics: the batch's own are used in both modes)",
        )


# --------------------------------------------------------------------------- MyBatchNorm1d: errors


@pytest.mark.parametrize("shape", [(1, 4), (1, 4, 1)], ids=["(1,C)", "(1,C,1)"])
def test_batchnorm_one_value_per_channel_raises_in_train_mode(shape: tuple[int, ...]) -> None:
    for track, mode in ((True, True), (False, True), (False, False)):
        mine = kata.MyBatchNorm1d(4, track_running_stats=track).train(mode)
        try:
            out = mine(torch.randn(shape))
        except ValueError:
            continue
        pytest.fail(
            f"MyBatchNorm1d(track_running_stats={track}) in {'train' if mode else 'eval'} mode returned "
            f"{type(out).__name__} for a {shape} input instead of raising ValueError: with one value per "
            f"channel the batch variance is 0 (every output would be the bias) and the unbiased one divides "
            f"by 0; nn.BatchNorm1d refuses with ValueError whenever it needs batch statistics",
            pytrace=False,
        )


def test_batchnorm_one_sequence_with_several_positions_is_fine() -> None:
    mine, ref = bn_pair()
    mine.train(), ref.train()
    x = make_batch((1, 4, 3))
    mistakes = train_output_mistakes(x, ref)
    check_output(
        *run_both(mine, ref, x),
        mistakes,
        "MyBatchNorm1d in train mode on one (1, C, 3) sequence (3 values per channel)",
    )


@pytest.mark.parametrize("shape", [(4,), (2, 4, 3, 3)], ids=["1-D", "4-D"])
def test_batchnorm_rejects_inputs_that_are_not_2d_or_3d(shape: tuple[int, ...]) -> None:
    mine = kata.MyBatchNorm1d(4)
    for mode in (True, False):
        mine.train(mode)
        try:
            mine(torch.randn(shape))
        except ValueError:
            continue
        except NotImplementedError:
            raise  # the stub: "not started"
        except Exception as exc:  # any other error breaks the contract
            pytest.fail(
                f"a {len(shape)}-D input raised {type(exc).__name__} ({exc}) instead of ValueError; check "
                f"the number of dimensions first, as nn.BatchNorm1d does (BatchNorm2d is for 4-D input)",
                pytrace=False,
            )
        pytest.fail(f"a {len(shape)}-D input should raise ValueError, it was accepted", pytrace=False)


# --------------------------------------------------------------------------- MyBatchNorm1d: autograd


def grads_after(bn: nn.Module, x: torch.Tensor, upstream: torch.Tensor) -> dict[str, torch.Tensor]:
    x = x.detach().clone().requires_grad_()
    for p in bn.parameters():
        p.grad = None
    (bn(x) * upstream).sum().backward()
    found = {"x": x.grad}
    found.update({name: p.grad for name, p in bn.named_parameters()})
    return found


@pytest.mark.parametrize("shape", BN_SHAPES[:2], ids=BN_SHAPE_IDS[:2])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_batchnorm_gradients_match_torch(shape: tuple[int, ...], mode: str) -> None:
    mine, ref = bn_pair()
    mine.train(mode == "train"), ref.train(mode == "train")
    x, upstream = make_batch(shape), torch.randn(shape, dtype=F64)
    _, biased, _, _ = stats(x)
    view = (1, -1) + (1,) * (len(shape) - 2)
    # The gradient to x when the batch mean and variance are treated as constants (detached).
    as_constants = upstream * (ref.weight.detach() / torch.sqrt(biased + ref.eps)).view(view)
    expected = grads_after(ref, x, upstream)
    got = grads_after(mine, x, upstream)
    for name, want in expected.items():
        have = got.get(name)
        assert have is not None, (
            f"after backward() in {mode} mode, {name}.grad is None; likely cause: the output was computed "
            f"from detached tensors or under torch.no_grad(), so no gradient reaches {name}"
        )
        cause = "the gradient must flow as through nn.BatchNorm1d"
        if name == "x" and mode == "train":
            cause = matching(
                have,
                {
                    "the batch mean and variance are detached (or computed under no_grad): in train mode the "
                    "gradient flows through them too, since every output depends on every value of its "
                    "channel": as_constants,
                },
            )
        assert_close(
            have,
            want,
            rtol=RTOL64,
            atol=ATOL64,
            what=f"gradient w.r.t. {name} in {mode} mode",
            likely_cause=cause,
        )


def test_batchnorm_running_statistics_carry_no_graph() -> None:
    mine, _ = bn_pair()
    mine.train()
    x = make_batch((6, 4)).requires_grad_()
    out = mine(x)
    for name in ("running_mean", "running_var"):
        buffer = getattr(mine, name)
        assert not buffer.requires_grad and buffer.grad_fn is None, (
            f"after a train-mode forward pass on an input that requires grad, {name} has requires_grad="
            f"{buffer.requires_grad}, grad_fn={buffer.grad_fn}; likely cause: the running statistics were "
            f"updated from the batch statistics with grad mode on. A buffer that keeps a graph keeps every "
            f"earlier batch's activations alive, and a later backward through it fails."
        )
    out.sum().backward()
    mine.eval()
    mine(make_batch((6, 4)).requires_grad_()).sum().backward()  # would fail if the buffers kept the old graph


def test_batchnorm_leaves_the_input_alone() -> None:
    mine, _ = bn_pair()
    for mode in (True, False):
        mine.train(mode)
        for requires_grad in (False, True):
            x = make_batch((6, 4, 3)).requires_grad_(requires_grad)
            copy = x.detach().clone()
            mine(x)
            assert torch.equal(x.detach(), copy) and x.requires_grad == requires_grad, (
                f"MyBatchNorm1d in {'train' if mode else 'eval'} mode changed its input (values equal: "
                f"{torch.equal(x.detach(), copy)}, requires_grad {requires_grad} -> {x.requires_grad}); "
                f"likely cause: in-place arithmetic (`x -= mean`, `x.sub_(...)`) on the caller's tensor."
            )


# ------------------------------------------------------------------------- MyBatchNorm1d: over several steps


BN_CONFIGS = [
    dict(shape=(8, 4), affine=True, momentum=0.1),
    dict(shape=(5, 4, 3), affine=True, momentum=None),
    dict(shape=(6, 4), affine=False, momentum=0.3, eps=1e-3),
    dict(shape=(4, 4, 4), affine=True, momentum=0.1, track_running_stats=False),
]
BN_CONFIG_IDS = ["(N,C)-m0.1", "(N,C,L)-cumulative", "no-affine-m0.3-eps1e-3", "(N,C,L=C)-no-running-stats"]


@pytest.mark.parametrize("config", BN_CONFIGS, ids=BN_CONFIG_IDS)
def test_batchnorm_matches_torch_over_several_steps(config: dict[str, Any], device: torch.device) -> None:
    config = dict(config)
    shape = config.pop("shape")
    mine, ref = bn_pair(device=device, **config)
    for step, mode in enumerate(["train", "train", "eval", "train", "eval"], start=1):
        mine.train(mode == "train"), ref.train(mode == "train")
        x = make_batch(shape, device=device)
        upstream = torch.randn(shape, dtype=F64, device=device)
        when = f"step {step} ({mode} mode) of a sequence with {config} on {shape} batches"
        expected, got = grads_after(ref, x, upstream), grads_after(mine, x, upstream)
        with torch.no_grad():
            check_output(
                *run_both(mine, ref, x), {}, f"the output at {when}"
            )  # also advances the running statistics
        if ref.track_running_stats:
            check_running(mine, ref, when, {})
        for name, want in expected.items():
            assert got.get(name) is not None, f"at {when}, {name}.grad is None"
            assert_close(got[name], want, rtol=RTOL64, atol=ATOL64, what=f"gradient w.r.t. {name} at {when}")
        with torch.no_grad():  # the same SGD step on both, so the parameters move away from where they were
            for name, ref_p in ref.named_parameters():
                mine_p = getattr(mine, name)
                mine_p -= 0.1 * mine_p.grad
                ref_p -= 0.1 * ref_p.grad


def test_batchnorm_in_float32_stays_float32() -> None:
    mine, ref = kata.MyBatchNorm1d(4), nn.BatchNorm1d(4)
    for mode in (True, False):
        mine.train(mode), ref.train(mode)
        x = make_batch((16, 4, 3), dtype=torch.float32)
        expected, got = ref(x), mine(x)
        assert got.dtype == torch.float32 and mine.running_mean.dtype == torch.float32, (
            f"a float32 module on a float32 input should give a float32 output and keep float32 running "
            f"statistics, got {got.dtype} and {mine.running_mean.dtype}; likely cause: a float64 constant "
            f"tensor, or statistics computed with dtype=torch.float64, promoted the result."
        )
        # float32 against float32: sums in another order differ by a few ulps, and normalising divides
        # that by the channel's std (0.01 for one channel here): up to ~2e-5 apart, torch's own output too.
        assert_close(
            got, expected, rtol=1e-4, atol=1e-4, what=f"float32 output in {'train' if mode else 'eval'} mode"
        )
        for name in ("running_mean", "running_var"):
            assert_close(
                getattr(mine, name), getattr(ref, name), rtol=1e-5, atol=1e-6, what=f"float32 {name}"
            )


def test_batchnorm_keeps_everything_on_the_models_device() -> None:
    mine = kata.MyBatchNorm1d(4, device="meta")  # momentum=0.1: the forward pass needs no value on the host
    for mode in (True, False):
        mine.train(mode)
        try:
            out = mine(torch.randn(6, 4, 3, device="meta"))
        except (NotImplementedError, RuntimeError) as exc:
            if "meta" not in str(exc) and "device" not in str(exc):
                raise  # the stub's own NotImplementedError ("not started"), or an ordinary bug
            pytest.fail(
                f"MyBatchNorm1d (momentum=0.1) in {'train' if mode else 'eval'} mode, with its state and "
                f"input on the `meta` device (shapes, no values), failed: {exc}; likely cause: a value read "
                f"back to the host (`.item()`, `float(tensor)`, `.tolist()`, `.cpu()`: on a GPU each waits "
                f"for the GPU), or a tensor built without `device=`, which lands on the CPU.",
                pytrace=False,
            )
        assert isinstance(out, torch.Tensor) and out.device.type == "meta" and out.shape == (6, 4, 3), (
            f"for a module and input on the `meta` device, expected a (6, 4, 3) output on `meta`, got "
            f"{type(out).__name__} {getattr(out, 'device', '')}; likely cause: a tensor built without "
            f"`device=` (it lands on the CPU)."
        )
        placed = {name: t.device.type for name, t in mine.state_dict().items()}
        assert set(placed.values()) == {"meta"}, (
            f"after a {'train' if mode else 'eval'} pass on `meta`: {placed}"
        )


def test_batchnorm_does_not_call_torchs_normalisation() -> None:
    mine, _ = bn_pair()
    calls: list[str] = []
    for shape in BN_SHAPES[:2]:
        for mode in (True, False):
            mine.train(mode)
            x = make_batch(shape).requires_grad_()
            with record_torch_calls() as recorded:
                mine(x)
            calls += recorded
    bad = sorted({name for name in calls if any(norm in name for norm in FORBIDDEN_NORMS)})
    assert not bad, (
        f"MyBatchNorm1d's forward called {bad}; the point of this task is to compute the normalisation "
        f"yourself from elementary ops (mean, var, sqrt, arithmetic, in-place updates). torch's batch norm, "
        f"and layer/instance/group norm on a reshaped input, are off limits here."
    )
