"""Grader for k07_optimizers: make_optimizer, train_step, train and a hand-written MomentumSGD.

Oracles: torch's own optimizer classes and their default settings, plain gradient descent written out here
with `torch.autograd.grad`, torch's own optimizers driven by the textbook loop, and `torch.optim.SGD`
trajectories for MomentumSGD. Tolerances: rtol 1e-5 / atol 1e-6 for float32 runs of a few steps (the same
updates in a different operation order differ by a few float32 ulps per step), rtol 1e-10 for float64.

What only a GPU can check: `train_step` on CUDA (a `.numpy()` without `.cpu()`) runs in the `cuda` case of
the `device` fixture. MomentumSGD's state device is checked on CPU machines through the `meta` device.
"""

from __future__ import annotations

import copy
import types

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode, resolve_name

from kata_harness import load_kata
from kata_harness.testing import assert_close

kata = load_kata("k07_optimizers")

NAMES = ("sgd", "adam", "adamw", "rmsprop", "adagrad")


def _expected_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """What make_optimizer(name, params, lr) must be equivalent to, built straight from torch."""
    builders = {
        "sgd": lambda: torch.optim.SGD(params, lr=lr, momentum=0.9),
        "adam": lambda: torch.optim.Adam(params, lr=lr),
        "adamw": lambda: torch.optim.AdamW(params, lr=lr, weight_decay=0.01),
        "rmsprop": lambda: torch.optim.RMSprop(params, lr=lr),
        "adagrad": lambda: torch.optim.Adagrad(params, lr=lr),
    }
    return builders[name]()


def _settings(optimizer: torch.optim.Optimizer) -> list[dict]:
    return [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]


def _mse(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((model(x) - y) ** 2).mean()


def _gd_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float) -> float:
    """Reference: one plain gradient-descent step on the MSE; returns the loss before the update."""
    params = list(model.parameters())
    loss = _mse(model, x, y)
    grads = torch.autograd.grad(loss, params)
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            p -= lr * g
    return loss.item()


def _assert_same_params(actual: nn.Module, expected: nn.Module, what: str, likely_cause: str) -> None:
    for (name, a), b in zip(actual.named_parameters(), expected.parameters(), strict=True):
        assert_close(
            a.detach(),
            b.detach(),
            rtol=1e-5,
            atol=1e-6,
            what=f"{what}, parameter {name!r}",
            likely_cause=likely_cause,
        )


def _tiny_model() -> nn.Module:
    return nn.Linear(3, 2)


def _batch(n: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, 3).to(device), torch.randn(n, 2).to(device)


# ---------------------------------------------------------------- make_optimizer


def test_make_optimizer_exact_classes() -> None:
    expected = {
        "sgd": torch.optim.SGD,
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "rmsprop": torch.optim.RMSprop,
        "adagrad": torch.optim.Adagrad,
    }
    for name, cls in expected.items():
        opt = kata.make_optimizer(name, _tiny_model().parameters(), 0.01)
        assert type(opt) is cls, (
            f"make_optimizer({name!r}, ...) should return exactly torch.optim.{cls.__name__}, got "
            f"{type(opt).__module__}.{type(opt).__qualname__}; likely cause: the wrong class for this name "
            f"(an isinstance check is not enough: AdamW subclasses Adam, so Adam is not AdamW)"
        )


def test_make_optimizer_settings() -> None:
    lr = 0.0123
    for name in NAMES:
        model = _tiny_model()
        opt = kata.make_optimizer(name, model.parameters(), lr)
        reference = _expected_optimizer(name, _tiny_model().parameters(), lr)
        assert len(opt.param_groups) == 1, f"{name!r}: expected one param group, got {len(opt.param_groups)}"
        got, want = _settings(opt), _settings(reference)
        diff = {k: (got[0].get(k), v) for k, v in want[0].items() if got[0].get(k) != v}
        assert not diff, (
            f"make_optimizer({name!r}, params, lr={lr}): settings differ from the spec's (setting: (got, "
            f"expected)) {diff}; likely cause: lr not passed on, SGD without momentum=0.9, AdamW without "
            f"weight_decay=0.01, or an extra setting changed from torch's default"
        )
        held = opt.param_groups[0]["params"]
        given = list(model.parameters())
        assert len(held) == len(given) and all(a is b for a, b in zip(held, given, strict=True)), (
            f"{name!r}: the optimizer should hold exactly the parameters passed in, in order; likely cause: "
            f"the optimizer was built over different tensors (copies, or another model's parameters)"
        )


def test_make_optimizer_accepts_param_group_dicts() -> None:
    lr = 0.02
    for name in NAMES:
        w, b = _tiny_model().parameters()
        groups = [{"params": [w], "lr": 0.5}, {"params": [b]}]
        try:
            opt = kata.make_optimizer(name, groups, lr)
        except NotImplementedError:
            raise
        except Exception as exc:
            raise AssertionError(
                f"make_optimizer({name!r}, [{{'params': [w], 'lr': 0.5}}, {{'params': [b]}}], lr={lr}) "
                f"raised {type(exc).__name__}: {exc}; params may be a list of param-group dicts and must be "
                f"handed to the optimizer as is; likely cause: params filtered or unpacked as tensors "
                f"(p.requires_grad on a dict) or wrapped into a group of its own"
            ) from None
        reference = _expected_optimizer(name, [{"params": [w], "lr": 0.5}, {"params": [b]}], lr)
        got, want = _settings(opt), _settings(reference)
        assert got == want, (
            f"make_optimizer({name!r}, two param-group dicts, lr={lr}): expected the groups' settings "
            f"{want}, got {got}; likely cause: params not handed over as is (a group's own lr=0.5 must "
            f"survive, the other group takes lr={lr})"
        )
        held = [group["params"] for group in opt.param_groups]
        assert len(held) == 2 and held[0][0] is w and held[1][0] is b, (
            f"make_optimizer({name!r}, two param-group dicts, ...) should keep the two groups, [w] then [b]; "
            f"likely cause: the groups were merged or rebuilt from copies"
        )


def test_make_optimizer_case_insensitive() -> None:
    for spelled, cls in [
        ("SGD", torch.optim.SGD),
        ("Adam", torch.optim.Adam),
        ("AdamW", torch.optim.AdamW),
        ("RMSprop", torch.optim.RMSprop),
        ("ADAGRAD", torch.optim.Adagrad),
    ]:
        try:
            opt = kata.make_optimizer(spelled, _tiny_model().parameters(), 0.01)
        except ValueError as exc:
            raise AssertionError(
                f"make_optimizer({spelled!r}, ...) raised ValueError({exc}); names are case-insensitive, "
                f"so it should return torch.optim.{cls.__name__}; likely cause: the name is compared "
                f"without .lower()"
            ) from None
        assert type(opt) is cls, (
            f"make_optimizer({spelled!r}, ...) should return torch.optim.{cls.__name__}, "
            f"got {type(opt).__name__}"
        )


def test_make_optimizer_unknown_name_raises() -> None:
    opt = kata.make_optimizer("adam", _tiny_model().parameters(), 0.01)
    assert type(opt) is torch.optim.Adam, f"make_optimizer('adam', ...) should build Adam, got {type(opt)}"
    for bad in ("adamax", "lbfgs", "sgd_momentum", ""):
        with pytest.raises(ValueError) as info:
            kata.make_optimizer(bad, _tiny_model().parameters(), 0.01)
        message = str(info.value).lower()
        missing = [n for n in NAMES if n not in message]
        assert not missing, (
            f"make_optimizer({bad!r}, ...) raised ValueError({str(info.value)!r}), but the message should "
            f"list all five allowed names; missing {missing}. A good error tells the caller what would "
            f"have worked."
        )


# ---------------------------------------------------------------- train_step


def test_train_step_updates_with_mse_gradient(device: torch.device) -> None:
    model = _tiny_model().to(device)
    reference = copy.deepcopy(model)
    x, y = _batch(5, device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    got = _explain_crash(
        lambda: kata.train_step(model, opt, x, y),
        f"train_step with the model and batch on {device.type}",
        "a step tied to the CPU: loss.numpy() needs .cpu() first for a CUDA tensor (loss.item() works on "
        "any device), or a tensor created without device=",
    )
    expected = _gd_step(reference, x, y, lr=0.1)
    _assert_same_params(
        model,
        reference,
        f"parameters after one train_step with SGD(lr=0.1) on {device.type}",
        "the update should follow the gradient of mean((model(x) - y) ** 2) over ALL elements, with "
        "optimizer.step() called once: check for a sum instead of a mean, a missing backward()/step(), or "
        "a step taken twice",
    )
    assert type(got) is float and got == pytest.approx(expected, rel=1e-5), (
        f"train_step on {device.type} should return the loss before the update as a Python float, "
        f"{expected!r}; got {got!r} ({type(got).__name__})"
    )


def _textbook_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> None:
    """Reference train step: torch's own optimizer driven by zero_grad -> forward -> backward -> step."""
    optimizer.zero_grad()
    _mse(model, x, y).backward()
    optimizer.step()


@pytest.mark.parametrize(
    "name, make",
    [
        pytest.param("SGD(lr=0.1)", lambda params: torch.optim.SGD(params, lr=0.1), id="sgd"),
        pytest.param("Adam(lr=0.05)", lambda params: torch.optim.Adam(params, lr=0.05), id="adam"),
    ],
)
def test_train_step_ignores_gradients_left_before_the_call(name: str, make) -> None:
    model = _tiny_model()
    stale_x, stale_y = _batch(4)
    _mse(model, 3 * stale_x, stale_y).backward()  # gradients some earlier code left behind
    reference = copy.deepcopy(model)  # deepcopy keeps the stale .grad too
    opt, reference_opt = make(model.parameters()), make(reference.parameters())
    for x, y in [_batch(4), _batch(5)]:
        kata.train_step(model, opt, x, y)
        _textbook_step(reference, reference_opt, x, y)
    _assert_same_params(
        model,
        reference,
        f"parameters after two train_step calls with {name}, starting with stale gradients on the parameters",
        "gradients already on the parameters when train_step was called reached the update: clear them "
        "BEFORE loss.backward() (optimizer.zero_grad() first); zeroing after optimizer.step() leaves the "
        "first call exposed to whatever was there",
    )


def test_train_step_leaves_inputs_unchanged() -> None:
    model = _tiny_model()
    x, y = _batch(5)
    x_before, y_before = x.clone(), y.clone()
    kata.train_step(model, torch.optim.SGD(model.parameters(), lr=0.1), x, y)
    for label, tensor, before in (("x", x, x_before), ("y", y, y_before)):
        assert not tensor.requires_grad and tensor.grad_fn is None, (
            f"train_step changed the caller's {label}: requires_grad is now {tensor.requires_grad} "
            f"(grad_fn {tensor.grad_fn}); it was False; likely cause: {label}.requires_grad_() or an "
            f"in-place operation such as {label}.sub_(model(x)) that pulled it into the graph"
        )
        assert torch.equal(tensor, before), (
            f"train_step changed the values of the caller's {label}; likely cause: an in-place operation on "
            f"it ({label}.sub_, -=, ...); compute (model(x) - y) out of place"
        )


def test_train_step_ignores_stale_gradients() -> None:
    model = _tiny_model()
    reference = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [_batch(4) for _ in range(3)]
    for x, y in batches:
        kata.train_step(model, opt, x, y)
        _gd_step(reference, x, y, lr=0.1)
    _assert_same_params(
        model,
        reference,
        "parameters after three train_step calls with SGD(lr=0.1)",
        "gradients from earlier calls were added into this step's: backward() ACCUMULATES into .grad, "
        "so call optimizer.zero_grad() before loss.backward()",
    )


def test_train_step_returns_loss_before_update() -> None:
    model = _tiny_model()
    x, y = _batch(6)
    with torch.no_grad():
        expected = ((model(x).double() - y.double()) ** 2).mean().item()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    got = kata.train_step(model, opt, x, y)
    with torch.no_grad():
        after = ((model(x).double() - y.double()) ** 2).mean().item()
    assert got == pytest.approx(expected, rel=1e-5), (
        f"train_step should return the MSE measured before the update, {expected:.6f}; got {got!r} "
        f"(the loss after the update is {after:.6f}); likely cause: the loss was recomputed after "
        f"optimizer.step(), or it is not the mean over all elements"
    )


def test_train_step_returns_python_float() -> None:
    model = _tiny_model()
    x, y = _batch(4)
    got = kata.train_step(model, torch.optim.SGD(model.parameters(), lr=0.1), x, y)
    assert type(got) is float, (
        f"train_step should return a Python float, got {type(got).__name__} ({got!r}); likely cause: "
        f"returning the loss tensor. Use loss.item(): keeping tensors in a loss history also keeps their "
        f"whole autograd graphs alive"
    )


# ---------------------------------------------------------------- train


def _uneven_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [_batch(1), _batch(7), _batch(3)]


def test_train_runs_batches_in_order_with_epoch_schedule() -> None:
    model = _tiny_model()
    reference = copy.deepcopy(model)
    batches = _uneven_batches()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    kata.train(model, opt, scheduler, batches, 3)
    for epoch in range(3):
        for x, y in batches:
            _gd_step(reference, x, y, lr=0.2 * 0.5**epoch)
    _assert_same_params(
        model,
        reference,
        "parameters after train(..., epochs=3) with SGD(lr=0.2) and StepLR(gamma=0.5)",
        "each epoch must visit the batches in list order, all at that epoch's learning rate, and step the "
        "scheduler once per epoch; stepping it per batch shrinks the learning rate len(batches) times "
        "too fast",
    )


def test_train_leaves_batches_unchanged() -> None:
    batches = _uneven_batches()
    pairs_before = list(batches)
    values_before = [(x.clone(), y.clone()) for x, y in batches]
    model = _tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    kata.train(model, opt, scheduler, batches, 3)
    assert len(batches) == len(pairs_before) and all(
        a is b for a, b in zip(batches, pairs_before, strict=True)
    ), (
        "train changed the caller's batches list (its order or its items); likely cause: shuffling or "
        "sorting it in place (random.shuffle(batches)); the batches run in list order, and the list is "
        "the caller's"
    )
    for i, ((x, y), (x0, y0)) in enumerate(zip(batches, values_before, strict=True)):
        assert torch.equal(x, x0) and torch.equal(y, y0), (
            f"train changed the values of batch {i}; likely cause: an in-place operation on x or y"
        )


def test_train_steps_scheduler_once_per_epoch_after_batches() -> None:
    events: list[str] = []
    model = _tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer_step = opt.step

    def record_optimizer_step(self, *args, **kwargs):
        events.append("optimizer.step")
        return optimizer_step(*args, **kwargs)

    # Bound to opt before the scheduler is built, since the scheduler wraps opt.step in turn.
    opt.step = types.MethodType(record_optimizer_step, opt)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.9**epoch)
    scheduler_step = scheduler.step

    def record_scheduler_step(*args, **kwargs):
        events.append("scheduler.step")
        return scheduler_step(*args, **kwargs)

    scheduler.step = record_scheduler_step
    batches = _uneven_batches()
    history = kata.train(model, opt, scheduler, batches, 2)
    expected = (["optimizer.step"] * len(batches) + ["scheduler.step"]) * 2
    assert events == expected, (
        f"with 3 batches and 2 epochs the calls should be {expected}, got {events}; likely cause: "
        f"scheduler.step() called per batch or before the epoch's batches; it belongs after them, once"
    )
    assert isinstance(history, list) and len(history) == 2, f"expected a list of 2 losses, got {history!r}"
    events.clear()
    history = kata.train(model, opt, scheduler, batches, 0)
    assert history == [] and events == [], (
        f"train(..., epochs=0) should do nothing and return [], got {history!r} with calls {events}"
    )


def test_train_returns_mean_batch_loss_per_epoch() -> None:
    model = _tiny_model()
    reference = copy.deepcopy(model)
    batches = _uneven_batches()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=1.0)
    history = kata.train(model, opt, scheduler, batches, 3)
    expected = []
    for _ in range(3):
        losses = [_gd_step(reference, x, y, lr=0.1) for x, y in batches]
        expected.append(sum(losses) / len(losses))
    assert isinstance(history, list) and all(type(v) is float for v in history), (
        f"train should return a list of Python floats, got {history!r}"
    )
    assert history == pytest.approx(expected, rel=1e-5), (
        f"expected each epoch's plain mean of its batch losses {expected}, got {history}; likely cause: "
        f"weighting by batch size, summing instead of averaging, keeping only the last batch's loss, or "
        f"averaging over all epochs so far (the batches here have 1, 7 and 3 rows)"
    )


# ---------------------------------------------------------------- MomentumSGD


def _quadratic_params(device: torch.device, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """Two parameters of different shapes; they start equal for every optimizer compared."""
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(3, 2, generator=gen, dtype=dtype).to(device).requires_grad_()
    b = torch.randn(2, generator=gen, dtype=dtype).to(device).requires_grad_()
    return [w, b]


def _loss(params: list[torch.Tensor], step: float) -> torch.Tensor:
    """A smooth, step-dependent loss, so gradients change along the trajectory."""
    w, b = params
    x = torch.linspace(-1.0, 1.0, 12, device=w.device, dtype=w.dtype).reshape(4, 3) * (1 + 0.3 * step)
    return ((torch.tanh(x @ w + b) - 0.5) ** 2).sum() + (w**3).sum() * 0.1


# How a trajectory clears gradients before each step's backward(). Only "none" gives fresh .grad tensors
# every step; the others keep the same .grad tensors, so state that aliases them shows.
ZEROING_WORDS = {
    "none": "zero_grad(set_to_none=True)",
    "in_place": "zero_grad(set_to_none=False) (in place)",
    "accumulate": "zero_grad(set_to_none=False), then two backward() calls accumulating into .grad",
    "carry": "zero_grad(set_to_none=False) on even steps only (odd steps add onto the last step's .grad)",
}


def _trajectory(
    make_optimizer,
    steps: int,
    device: torch.device,
    uses=None,
    zeroing: str = "none",
    dtype: torch.dtype = torch.float32,
) -> list[torch.Tensor]:
    """Run `steps` steps; `uses[step]` ("w" or "both", default both) says which parameters get a gradient;
    `zeroing` is a key of ZEROING_WORDS."""
    params = _quadratic_params(device, dtype)
    opt = make_optimizer(params)
    for step in range(steps):
        if zeroing == "none":
            opt.zero_grad(set_to_none=True)
        elif zeroing != "carry" or step % 2 == 0:
            opt.zero_grad(set_to_none=False)
        if uses is not None and uses[step] == "w":
            (params[0] ** 2).sum().mul(1 + step).backward()  # b takes no part: its .grad stays None
        elif zeroing == "accumulate":
            (_loss(params, step) * 0.5).backward()
            (_loss(params, step + 0.5) * 0.5).backward()
        else:
            _loss(params, step).backward()
        opt.step()
    return [p.detach().clone() for p in params]


def _explain_crash(run, what: str, likely_cause: str):
    """run(); an exception other than NotImplementedError becomes an assertion that explains it."""
    try:
        return run()
    except NotImplementedError:
        raise
    except Exception as exc:
        raise AssertionError(
            f"{what} raised {type(exc).__name__}: {exc}; likely cause: {likely_cause}"
        ) from exc


def _assert_same_trajectory(ours, reference, what: str, likely_cause: str) -> None:
    for name, a, b in zip(("w", "b"), ours, reference, strict=True):
        assert_close(a, b, rtol=1e-5, atol=1e-6, what=f"{what}, parameter {name}", likely_cause=likely_cause)


def test_momentum_sgd_plain_matches_sgd() -> None:
    cpu = torch.device("cpu")
    ours = _trajectory(lambda p: kata.MomentumSGD(p, lr=0.1), 4, cpu)
    reference = _trajectory(lambda p: torch.optim.SGD(p, lr=0.1), 4, cpu)
    _assert_same_trajectory(
        ours,
        reference,
        "MomentumSGD(params, lr=0.1) (defaults momentum=0, weight_decay=0) vs torch.optim.SGD",
        "with the defaults it is plain gradient descent, p -= lr * p.grad: check the sign, the defaults "
        "(momentum=0.0, weight_decay=0.0), and that every parameter is updated exactly once per step",
    )


@pytest.mark.parametrize("lr, momentum", [(0.05, 0.9), (0.1, 0.5)])
def test_momentum_sgd_momentum_matches_sgd(device: torch.device, lr: float, momentum: float) -> None:
    ours = _trajectory(lambda p: kata.MomentumSGD(p, lr=lr, momentum=momentum), 5, device)
    reference = _trajectory(lambda p: torch.optim.SGD(p, lr=lr, momentum=momentum), 5, device)
    _assert_same_trajectory(
        ours,
        reference,
        f"MomentumSGD(lr={lr}, momentum={momentum}) vs torch.optim.SGD after 5 steps",
        "buf must be kept per parameter in self.state[p] across steps, start as the first gradient itself, "
        "and update as buf = momentum * buf + g (no (1 - momentum) factor: that is an average, not SGD's "
        "momentum)",
    )


def test_momentum_sgd_weight_decay_before_momentum() -> None:
    cpu = torch.device("cpu")
    settings = {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1}
    ours = _trajectory(lambda p: kata.MomentumSGD(p, **settings), 5, cpu)
    reference = _trajectory(lambda p: torch.optim.SGD(p, **settings), 5, cpu)
    _assert_same_trajectory(
        ours,
        reference,
        f"MomentumSGD({settings}) vs torch.optim.SGD after 5 steps",
        "weight decay is added to the gradient, g = p.grad + weight_decay * p, BEFORE the momentum buffer "
        "is updated; applying it to p afterwards (decoupled, as AdamW does) gives a different trajectory",
    )


def test_momentum_sgd_skips_params_without_grad() -> None:
    cpu = torch.device("cpu")
    settings = {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1}
    # b gets no gradient on step 0 (its first update comes on step 1), and none again on step 3.
    uses = ["w", "both", "both", "w", "both"]
    ours = _explain_crash(
        lambda: _trajectory(lambda p: kata.MomentumSGD(p, **settings), 5, cpu, uses),
        "MomentumSGD.step() with a parameter whose .grad is None",
        "parameters with p.grad None must be skipped (`if p.grad is None: continue`)",
    )
    reference = _trajectory(lambda p: torch.optim.SGD(p, **settings), 5, cpu, uses)
    _assert_same_trajectory(
        ours,
        reference,
        "MomentumSGD vs torch.optim.SGD when one parameter's grad is None on some steps",
        "a parameter whose .grad is None must be skipped entirely (no weight decay, no momentum move, no "
        "buffer change), and its buffer starts on ITS first update, not on the optimizer's first step",
    )


def test_momentum_sgd_param_groups_use_own_settings() -> None:
    cpu = torch.device("cpu")

    def groups(params):
        w, b = params
        return [{"params": [w], "lr": 0.2}, {"params": [b], "momentum": 0.3}]

    def run(make):
        # The first group's lr is halved after two steps, as a scheduler would do.
        params = _quadratic_params(cpu)
        opt = make(groups(params))
        for step in range(4):
            if step == 2:
                opt.param_groups[0]["lr"] /= 2
            opt.zero_grad()
            _loss(params, step).backward()
            opt.step()
        return [p.detach().clone() for p in params]

    ours = run(lambda g: kata.MomentumSGD(g, lr=0.05, momentum=0.9))
    reference = run(lambda g: torch.optim.SGD(g, lr=0.05, momentum=0.9))
    _assert_same_trajectory(
        ours,
        reference,
        "MomentumSGD vs torch.optim.SGD with two param groups (own lr; own momentum)",
        "read lr, momentum and weight_decay from each group dict at every step (group['lr']), not from "
        "self.defaults or values saved in __init__: param groups and lr schedulers both rely on that",
    )


def test_momentum_sgd_closure_returns_loss() -> None:
    cpu = torch.device("cpu")

    def run(make):
        params = _quadratic_params(cpu)
        opt = make(params)
        returned, results = [], []
        for step in range(3):

            def closure(step=step):
                opt.zero_grad()
                loss = _loss(params, step)
                loss.backward()
                returned.append(loss)
                return loss

            results.append(opt.step(closure))
        return [p.detach().clone() for p in params], returned, results

    ours, returned, results = _explain_crash(
        lambda: run(lambda p: kata.MomentumSGD(p, lr=0.05, momentum=0.9)),
        "MomentumSGD.step(closure) with a closure that calls loss.backward()",
        "the closure ran with gradient tracking off; call it inside `with torch.enable_grad():` (the "
        "updates, not the closure, belong under torch.no_grad())",
    )
    reference, _, _ = run(lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9))
    assert len(returned) == 3, (
        f"step(closure) should call the closure once per step; it was called {len(returned)} times in 3 steps"
    )
    assert all(r is c for r, c in zip(results, returned, strict=True)), (
        f"step(closure) should return what the closure returned ({returned}), got {results}"
    )
    _assert_same_trajectory(
        ours,
        reference,
        "MomentumSGD.step(closure) vs torch.optim.SGD.step(closure)",
        "call the closure FIRST, inside torch.enable_grad() (step's updates run without grad, but the "
        "closure must be able to backward), then update with the gradients it produced",
    )


def test_momentum_sgd_step_without_closure_returns_none() -> None:
    params = _quadratic_params(torch.device("cpu"))
    before = [p.detach().clone() for p in params]
    opt = kata.MomentumSGD(params, lr=0.1)
    _loss(params, 0).backward()
    result = opt.step()
    assert result is None, f"step() without a closure should return None, got {result!r}"
    assert any(not torch.equal(p.detach(), q) for p, q in zip(params, before, strict=True)), (
        "step() should still update the parameters that have gradients; nothing changed"
    )


@pytest.mark.parametrize("zeroing", ["in_place", "accumulate", "carry"])
def test_momentum_sgd_state_survives_in_place_zeroing_and_accumulation(zeroing: str) -> None:
    cpu = torch.device("cpu")
    for settings in (
        {"lr": 0.05, "momentum": 0.9},
        {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1},
        {"lr": 0.1, "weight_decay": 0.1},
    ):
        ours = _trajectory(lambda p, s=settings: kata.MomentumSGD(p, **s), 5, cpu, zeroing=zeroing)
        reference = _trajectory(lambda p, s=settings: torch.optim.SGD(p, **s), 5, cpu, zeroing=zeroing)
        _assert_same_trajectory(
            ours,
            reference,
            f"MomentumSGD({settings}) vs torch.optim.SGD after 5 steps, gradients cleared by "
            f"{ZEROING_WORDS[zeroing]}",
            "state aliasing: the momentum buffer shares memory with p.grad (stored as the gradient itself, "
            "without .clone()), so zero_grad(set_to_none=False) wipes it and backward() adds into it; or "
            "p.grad was changed in place (g = p.grad; g.add_(...)), which the next accumulated step sees",
        )


def test_momentum_sgd_leaves_grad_unchanged() -> None:
    params = _quadratic_params(torch.device("cpu"))
    for settings in ({"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1}, {"lr": 0.1, "weight_decay": 0.1}):
        opt = kata.MomentumSGD(params, **settings)
        for step in range(2):  # the second step updates an existing buffer
            opt.zero_grad()
            _loss(params, step).backward()
            before = [p.grad.clone() for p in params]
            opt.step()
            for name, p, g in zip(("w", "b"), params, before, strict=True):
                assert p.grad is not None and torch.equal(p.grad, g), (
                    f"MomentumSGD({settings}).step() changed {name}.grad (step {step}): .grad belongs to the "
                    f"caller and must be left as step() found it; likely cause: weight decay added in place "
                    f"(g = p.grad; g.add_(weight_decay * p)) or the buffer updated in place while it is "
                    f"p.grad itself; build g = p.grad + weight_decay * p as a new tensor"
                )


class _GraphSpotter(TorchFunctionMode):
    """Records every torch call whose result carries a grad_fn, i.e. that autograd recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.recorded: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for result in out if isinstance(out, tuple | list) else (out,):
            if isinstance(result, torch.Tensor) and result.grad_fn is not None:
                self.recorded.append(resolve_name(func) or getattr(func, "__qualname__", repr(func)))
        return out


def test_momentum_sgd_step_records_no_graph() -> None:
    params = _quadratic_params(torch.device("cpu"))
    opt = kata.MomentumSGD(params, lr=0.05, momentum=0.9, weight_decay=0.1)
    for step in range(2):  # the first step creates the buffers, the second updates them
        opt.zero_grad()
        _loss(params, step).backward()
        spotter = _GraphSpotter()
        with spotter:
            opt.step()
        assert not spotter.recorded, (
            f"MomentumSGD.step() (step {step}, weight_decay=0.1) built an autograd graph: these calls were "
            f"recorded {sorted(set(spotter.recorded))}; the updates must run under torch.no_grad() (a "
            f"decorator or a with block), not with grad on while writing through p.data: the graph links "
            f"every step to the last and keeps them all alive"
        )
    for name, p in zip(("w", "b"), params, strict=True):
        assert p.is_leaf and p.grad_fn is None, (
            f"after MomentumSGD.step(), parameter {name} is no longer a leaf (grad_fn {p.grad_fn}); likely "
            f"cause: it was rebound to the result of an operation instead of updated in place under no_grad"
        )
        kept = [v for v in opt.state[p].values() if isinstance(v, torch.Tensor)]
        assert all(v.grad_fn is None and not v.requires_grad for v in kept), (
            f"MomentumSGD keeps tensors in state[{name}] that are part of an autograd graph "
            f"{[v.grad_fn for v in kept]}; likely cause: the buffer computed with grad enabled"
        )


def test_momentum_sgd_state_follows_param_dtype_and_device() -> None:
    # On the meta device a buffer built on the CPU (torch.zeros(p.shape)) shows even on a CPU-only machine.
    meta = torch.device("meta")
    params = [
        torch.empty(3, 2, dtype=torch.float64, device=meta).requires_grad_(),
        torch.empty(2, dtype=torch.float64, device=meta).requires_grad_(),
    ]
    opt = kata.MomentumSGD(params, lr=0.05, momentum=0.9, weight_decay=0.1)
    try:
        for _ in range(2):
            for p in params:
                p.grad = torch.empty_like(p)
            opt.step()
    except NotImplementedError:
        raise
    except Exception as exc:
        pytest.skip(
            f"MomentumSGD.step() cannot run on the meta device ({type(exc).__name__}: {exc}); its state's "
            f"device is checked only on a GPU run"
        )
    for name, p in zip(("w", "b"), params, strict=True):
        assert p.device == meta and p.dtype == torch.float64, (
            f"after MomentumSGD.step(), parameter {name} is a {p.dtype} tensor on {p.device}; it was float64 "
            f"on {meta}; likely cause: p.data replaced by a tensor built elsewhere; update p in place"
        )
        buffers = [v for v in opt.state[p].values() if isinstance(v, torch.Tensor) and v.shape == p.shape]
        assert buffers, (
            f"with momentum=0.9, MomentumSGD should keep {name}'s buffer (shape {tuple(p.shape)}) in "
            f"self.state[p]; found {dict(opt.state[p])!r}"
        )
        wrong = [(v.dtype, v.device) for v in buffers if v.dtype != p.dtype or v.device != p.device]
        assert not wrong, (
            f"MomentumSGD's buffer for {name} should have the parameter's dtype and device (float64 on "
            f"{meta}); got {wrong}; likely cause: a buffer built with torch.zeros(p.shape), which uses the "
            f"default dtype on the CPU: on a GPU it breaks, in float64 it rounds every step to float32. "
            f"Start it from g.clone() or torch.zeros_like(p)"
        )


def test_momentum_sgd_float64_keeps_float64_precision() -> None:
    cpu = torch.device("cpu")
    settings = {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1}
    ours = _trajectory(lambda p: kata.MomentumSGD(p, **settings), 5, cpu, dtype=torch.float64)
    reference = _trajectory(lambda p: torch.optim.SGD(p, **settings), 5, cpu, dtype=torch.float64)
    for name, a, b in zip(("w", "b"), ours, reference, strict=True):
        assert a.dtype == torch.float64, f"parameter {name} should stay float64, got {a.dtype}"
        # float64 rounding differences between operation orders stay near 1e-16 per step; a float32
        # detour (a buffer in the default dtype) shows at 1e-8.
        assert_close(
            a,
            b,
            rtol=1e-10,
            atol=1e-12,
            what=f"MomentumSGD({settings}) vs torch.optim.SGD in float64 after 5 steps, parameter {name}",
            likely_cause="a float32 detour: the buffer (or a temporary) was created in the default dtype "
            "(torch.zeros(p.shape), torch.tensor(...)) instead of following the parameter's dtype",
        )
