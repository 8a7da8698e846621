"""Grader for k10_gpu_and_amp: choosing a device, moving nested batches, one AMP step, GPU facts.

Everything runs on CPU (bfloat16 autocast, a CPU GradScaler, the `meta` device for movement, faked device
availability); the tests marked `cuda` repeat the float16 path, movement and the GPU summary on a real GPU.
Only those can catch a step that ignores `device_type` (a hard-coded `torch.autocast("cpu")`): on a machine
without CUDA, `torch.autocast("cuda")` disables itself, so there is no CPU stand-in for it.
"""

import copy
from collections import OrderedDict, namedtuple
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, NamedTuple

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from kata_harness import load_kata
from kata_harness.testing import assert_close

kata = load_kata("k10_gpu_and_amp")

AMP_DTYPE = {"cpu": torch.bfloat16, "cuda": torch.float16}
LR = 0.1


@pytest.fixture(autouse=True)
def close_leaked_autocast() -> Iterator[None]:
    """Autocast left enabled by one test must not reach the next (the test that catches it says so)."""
    yield
    for device_type, dtype in AMP_DTYPE.items():
        if torch.is_autocast_enabled(device_type):
            torch.set_autocast_enabled(device_type, False)
        torch.set_autocast_dtype(device_type, dtype)


# ------------------------------------------------------------------------------------------------ best_device


def fake_availability(monkeypatch: pytest.MonkeyPatch, cuda: bool, mps: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


def check_best_device(expected: str, situation: str, likely_cause: str) -> None:
    got = kata.best_device()
    assert isinstance(got, torch.device), (
        f"best_device() should return a torch.device, got {type(got).__name__} {got!r}; "
        f"wrap the name: torch.device({expected!r})"
    )
    assert got.type == expected, (
        f"with {situation}, expected a device of type {expected!r}, got {got.type!r}; "
        f"likely cause: {likely_cause}"
    )


def test_best_device_prefers_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_availability(monkeypatch, cuda=True, mps=True)
    check_best_device("cuda", "CUDA and MPS both available", "MPS is checked before CUDA.")


def test_best_device_falls_back_to_mps(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_availability(monkeypatch, cuda=False, mps=True)
    check_best_device(
        "mps",
        "only MPS available",
        "torch.backends.mps.is_available() is not consulted (or is_built() is used instead).",
    )


def test_best_device_falls_back_to_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_availability(monkeypatch, cuda=False, mps=False)
    check_best_device(
        "cpu",
        "neither CUDA nor MPS available",
        "a missing call - `if torch.cuda.is_available:` (no parentheses) is always true.",
    )


# ---------------------------------------------------------------------------------------------------- move_to

Pair = namedtuple("Pair", ["features", "label"])


class Batch(NamedTuple):
    inputs: Any
    targets: Any


def make_batch() -> dict[str, Any]:
    return {
        "x": torch.randn(2, 3),
        "pair": Pair(torch.ones(2), [torch.zeros(1), 7]),
        "nested": [(torch.arange(3.0), "label"), {"mask": torch.ones(2, dtype=torch.bool)}],
        "batch": Batch(inputs=(torch.randn(1),), targets=torch.tensor([1])),
        "meta": {"epoch": 3, "name": "train", "none": None},
    }


def skeleton(obj: Any) -> Any:
    """What a structure holds, by identity: equal skeletons mean no container was changed."""
    if isinstance(obj, dict):
        return ("dict", id(obj), [(key, skeleton(value)) for key, value in obj.items()])
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, id(obj), [skeleton(item) for item in obj])
    return ("leaf", id(obj))


def check_moved(original: Any, moved: Any, device_type: str, path: str = "obj") -> None:
    """`moved` mirrors `original`: same container kinds and keys, tensors on `device_type`, the rest as is."""
    if isinstance(original, torch.Tensor):
        assert isinstance(moved, torch.Tensor), f"{path}: expected a tensor, got {type(moved).__name__}"
        assert moved.device.type == device_type, (
            f"{path}: expected a tensor on {device_type!r}, got one on {moved.device}; likely cause: this "
            f"level of nesting is not visited, or the moved tensor is not the one put into the result."
        )
        assert moved.shape == original.shape and moved.dtype == original.dtype, (
            f"{path}: moving should keep shape {tuple(original.shape)} and dtype {original.dtype}, got "
            f"{tuple(moved.shape)} and {moved.dtype}"
        )
        return
    if isinstance(original, (dict, list, tuple)):
        assert type(moved) is type(original), (
            f"{path}: expected a {type(original).__name__}, got a {type(moved).__name__}; likely cause: "
            f"rebuilding every sequence as a list (or every tuple as a plain tuple). Rebuild tuples with "
            f"tuple(...), and a named tuple with its own class: type(obj)(*items)."
        )
        if isinstance(original, (dict, list)):
            assert moved is not original, (
                f"{path}: expected a new {type(original).__name__}, got the input's own container back; "
                f"likely cause: converting in place - the caller's batch must stay as it was."
            )
        if isinstance(original, dict):
            assert list(moved) == list(original), f"{path}: keys {list(original)} became {list(moved)}"
            for key in original:
                check_moved(original[key], moved[key], device_type, f"{path}[{key!r}]")
        else:
            assert len(moved) == len(original), f"{path}: length {len(original)} became {len(moved)}"
            for i, (a, b) in enumerate(zip(original, moved, strict=True)):
                check_moved(a, b, device_type, f"{path}[{i}]")
        return
    assert moved is original, (
        f"{path}: {original!r} is neither a tensor nor a container and should come back as the very same "
        f"object, got {moved!r}"
    )


def test_move_to_moves_a_tensor() -> None:
    t = torch.randn(3, 4, dtype=torch.float64)
    for device in ("meta", torch.device("meta")):
        moved = kata.move_to(t, device)
        check_moved(t, moved, "meta", path=f"move_to(tensor, {device!r})")
    assert t.device.type == "cpu", "the input tensor itself must stay where it was"


def test_move_to_moves_tensors_at_every_depth() -> None:
    batch = make_batch()
    moved = kata.move_to(batch, "meta")
    deep = moved["nested"][0][0]
    assert isinstance(deep, torch.Tensor) and deep.device.type == "meta", (
        f"a tensor three levels down (obj['nested'][0][0]) should be on 'meta', got "
        f"{getattr(deep, 'device', type(deep).__name__)}; likely cause: only the top level is converted - "
        f"call move_to recursively on every item."
    )
    check_moved(batch, moved, "meta")


def test_move_to_keeps_lists_and_tuples_apart() -> None:
    obj = [torch.ones(1), (torch.ones(2), torch.ones(3)), [torch.ones(4)]]
    moved = kata.move_to(obj, "meta")
    kinds = [type(moved).__name__, *(type(item).__name__ for item in moved)]
    assert kinds == ["list", "Tensor", "tuple", "list"], (
        f"expected container kinds ['list', 'Tensor', 'tuple', 'list'], got {kinds}; likely cause: building "
        f"every sequence with a list comprehension, which turns tuples into lists."
    )
    check_moved(obj, moved, "meta")


def test_move_to_keeps_the_named_tuple_class() -> None:
    obj = Pair(features=torch.randn(2, 2), label=torch.tensor(1))
    moved = kata.move_to(obj, "meta")
    assert type(moved) is Pair, (
        f"expected an instance of the named tuple Pair, got {type(moved).__name__}; likely cause: "
        f"tuple(...) drops the class - rebuild with type(obj)(*items) (note the star: a named tuple takes "
        f"its fields as separate arguments)."
    )
    assert moved.features.device.type == "meta" and moved.label.device.type == "meta", (
        "the named tuple's fields should hold tensors on 'meta'"
    )


def test_move_to_leaves_the_input_untouched() -> None:
    batch = make_batch()
    before = skeleton(batch)
    moved = kata.move_to(batch, "meta")
    assert skeleton(batch) == before, (
        "the input structure changed (a container now holds different objects); likely cause: writing the "
        "moved tensors back into the input, e.g. `obj[key] = move_to(value, device)`. Build new containers."
    )
    assert batch["x"].device.type == "cpu", "the input dict's tensor was replaced by a moved one"
    assert moved is not batch, "move_to returned the input dict itself; it should return a new dict"


def test_move_to_counts_dict_and_list_subclasses() -> None:
    class Row(list):  # a list subclass is the point of the test
        pass

    obj = OrderedDict(a=torch.ones(2), rows=Row([torch.zeros(3), "tag"]))
    moved = kata.move_to(obj, "meta")
    assert isinstance(moved, dict) and moved is not obj, (
        f"expected a new dict for an OrderedDict, got {type(moved).__name__}"
        f"{' (the input itself)' if moved is obj else ''}; likely cause: an exact type test "
        f"(`type(obj) is dict`) that skips subclasses - isinstance(obj, dict) counts them."
    )
    rows = moved.get("rows")
    assert isinstance(rows, list) and rows is not obj["rows"], (
        f"expected a new list for a list subclass, got {type(rows).__name__}; likely cause: `type(obj) is "
        f"list` instead of isinstance(obj, list)."
    )
    devices = [moved["a"].device.type, getattr(rows[0], "device", torch.device("cpu")).type]
    assert devices == ["meta", "meta"] and rows[1] == "tag", (
        f"the tensors inside an OrderedDict and a list subclass should be on 'meta', they are on {devices}"
    )


def test_move_to_leaves_the_input_tensors_alone() -> None:
    grad_leaf = torch.randn(3, requires_grad=True)
    plain = torch.arange(4.0)
    batch = {"w": grad_leaf, "xs": [plain]}
    before = [(t.detach().clone(), t.requires_grad) for t in (grad_leaf, plain)]
    kata.move_to(batch, "meta")
    for (old, requires_grad), t, name in zip(before, (grad_leaf, plain), ("w", "xs[0]"), strict=True):
        assert t.device.type == "cpu" and t.requires_grad == requires_grad and torch.equal(t, old), (
            f"the input tensor {name} changed: now on {t.device}, requires_grad={t.requires_grad} (was "
            f"cpu, {requires_grad}); likely cause: moving or detaching the caller's tensor in place "
            f"(`t.data = ...`, `t.requires_grad_(False)`) instead of returning `t.to(device)`."
        )


def test_move_to_never_goes_through_host_memory() -> None:
    # Tensors already on `meta` hold no data: `.numpy()`, `.tolist()` or `torch.tensor(...)` cannot copy them,
    # exactly the code that silently round-trips a GPU tensor through the CPU.
    batch = {"x": torch.empty(2, 3, device="meta"), "pair": Pair(torch.empty(2, device="meta"), 1)}
    try:
        moved = kata.move_to(batch, "meta")
    except (TypeError, RuntimeError, NotImplementedError) as exc:
        if isinstance(exc, NotImplementedError) and "meta" not in str(exc):
            raise  # the stub's own NotImplementedError: "not started"
        pytest.fail(
            f"move_to on tensors that are on the `meta` device failed: {type(exc).__name__}: {exc}; likely "
            f"cause: the tensor goes through host memory (`.numpy()`, `.tolist()`, `torch.tensor(...)`), "
            f"which fails for a GPU tensor too. `tensor.to(device)` moves it from any device.",
            pytrace=False,
        )
    check_moved(batch, moved, "meta")


def test_move_to_returns_other_objects_as_they_are() -> None:
    marker = object()
    for leaf in (3, 2.5, "a string", "", None, marker, b"bytes", range(3)):
        got = kata.move_to(leaf, "meta")
        assert got is leaf, (
            f"move_to({leaf!r}, 'meta') should return that very object, got {got!r}; likely cause: treating "
            f"every iterable (a string, a range) as a container. Handle dict, list and tuple explicitly and "
            f"return anything else as it is."
        )


tensors = st.integers(0, 3).map(lambda n: torch.arange(float(n)))
keys = st.sampled_from(["", "a", "bc"])
leaves = st.one_of(tensors, st.integers(-5, 5), keys, st.none())


def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    small_lists = st.lists(children, max_size=3)
    return st.one_of(
        small_lists,
        small_lists.map(tuple),
        st.dictionaries(keys, children, max_size=3),
        st.builds(Pair, children, children),
    )


@given(obj=st.recursive(leaves, extend, max_leaves=8))
def test_move_to_mirrors_any_nesting(obj: Any) -> None:
    before = skeleton(obj)
    moved = kata.move_to(obj, "meta")
    check_moved(obj, moved, "meta")
    assert skeleton(obj) == before, "the input structure was modified"


@pytest.mark.cuda
def test_move_to_moves_a_nested_batch_to_cuda() -> None:
    batch = make_batch()
    on_gpu = kata.move_to(batch, torch.device("cuda"))
    check_moved(batch, on_gpu, "cuda")
    back = kata.move_to(on_gpu, "cpu")
    check_moved(on_gpu, back, "cpu")
    assert torch.equal(back["x"], batch["x"]) and torch.equal(
        back["pair"].label[0], batch["pair"].label[0]
    ), "values changed on the way to the GPU and back"


# --------------------------------------------------------------------------------------------- amp_train_step


class Probe(nn.Module):
    """A small MLP that notes, on each forward pass, whether autocast is on for its device and its dtype."""

    def __init__(self, device_type: str) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))
        self.device_type = device_type
        self.seen: list[tuple[bool, torch.dtype]] = []

        self.backward_under_autocast: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        enabled = torch.is_autocast_enabled(self.device_type)
        self.seen.append((enabled, torch.get_autocast_dtype(self.device_type)))
        out = self.body(x)
        if out.requires_grad:  # note, during backward, whether autocast is still on
            out.register_hook(self._note_backward)
        return out

    def _note_backward(self, grad: torch.Tensor) -> None:
        self.backward_under_autocast.append(torch.is_autocast_enabled(self.device_type))


def make_problem(device: torch.device) -> tuple[Probe, torch.optim.Optimizer, torch.Tensor, torch.Tensor]:
    model = Probe(device.type).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    x = torch.randn(8, 4, device=device)
    y = 2 * torch.randn(8, 2, device=device)
    return model, optimizer, x, y


def reference_step(model: Probe, x: torch.Tensor, y: torch.Tensor) -> tuple[float, list[torch.Tensor]]:
    """The loss (float64, from the autocast output) and the parameters one plain SGD step would produce."""
    ref = copy.deepcopy(model)
    ref.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=AMP_DTYPE[x.device.type]):
        out = ref(x)
    loss = ((out.double() - y.double()) ** 2).mean().item()
    F.mse_loss(out.float(), y).backward()
    return loss, [(p - LR * p.grad).detach() for p in ref.parameters()]


def snapshot(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_amp_train_step_runs_the_forward_pass_under_autocast(device: torch.device) -> None:
    model, optimizer, x, y = make_problem(device)
    kata.amp_train_step(model, optimizer, torch.amp.GradScaler(device.type), x, y, device.type)
    expected = AMP_DTYPE[device.type]
    assert model.seen == [(True, expected)], (
        f"expected one forward pass under autocast for {device.type!r} in {expected}, saw "
        f"(autocast on, dtype) = {model.seen}; likely cause: no `with torch.autocast({device.type!r}):` "
        f"around the forward pass, or a fixed dtype - autocast is float16 on cuda and bfloat16 on cpu."
    )


def test_amp_train_step_returns_a_python_float(device: torch.device) -> None:
    model, optimizer, x, y = make_problem(device)
    got = kata.amp_train_step(model, optimizer, torch.amp.GradScaler(device.type), x, y, device.type)
    assert type(got) is float, (
        f"expected the loss as a Python float, got {type(got).__name__}; likely cause: returning the loss "
        f"tensor - use loss.item()."
    )


def test_amp_train_step_returns_the_float32_mse(device: torch.device) -> None:
    model, optimizer, x, y = make_problem(device)
    expected, _ = reference_step(model, x, y)
    got = kata.amp_train_step(model, optimizer, torch.amp.GradScaler(device.type), x, y, device.type)
    assert isinstance(got, (float, torch.Tensor)), f"expected a float, got {type(got).__name__}"
    assert float(got) == pytest.approx(expected, rel=2e-5), (
        f"expected the mean squared error {expected:.7f} of the float32-cast output, got {float(got):.7f}; "
        f"likely cause: a loss computed in {AMP_DTYPE[device.type]} (cast the output with .float(), not the "
        f"target down), a sum instead of a mean, or the scaled loss returned instead of the loss."
    )


@pytest.mark.parametrize("enabled", [True, False], ids=["scaler enabled", "scaler disabled"])
def test_amp_train_step_makes_one_optimizer_step(device: torch.device, enabled: bool) -> None:
    model, optimizer, x, y = make_problem(device)
    _, expected = reference_step(model, x, y)
    scaler = torch.amp.GradScaler(device.type, enabled=enabled)
    kata.amp_train_step(model, optimizer, scaler, x, y, device.type)
    assert_close(
        snapshot(model),
        expected,
        rtol=1e-4,
        atol=1e-6,
        what=f"parameters after one SGD step (lr={LR}) with scaler enabled={enabled}",
        likely_cause="backward on the unscaled loss while scaler.step() unscales (gradients end up divided "
        "by the scale), optimizer.step() on still-scaled gradients, or a forward pass outside autocast.",
    )


def test_amp_train_step_ignores_earlier_gradients(device: torch.device) -> None:
    model, optimizer, x, y = make_problem(device)
    for p in model.parameters():
        p.grad = torch.full_like(p, 100.0)
    _, expected = reference_step(model, x, y)
    kata.amp_train_step(model, optimizer, torch.amp.GradScaler(device.type), x, y, device.type)
    assert_close(
        snapshot(model),
        expected,
        rtol=1e-4,
        atol=1e-6,
        what="parameters after one step when the model came in with leftover gradients of 100",
        likely_cause="gradients are not cleared before backward (optimizer.zero_grad()), so backward "
        "added this step's gradients to the old ones.",
    )


def poisoned_input(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[0, 0] = float("inf")
    return x


# (input transform, target shift, initial scale). A loss over 4 times 2**127 is beyond float32's range.
OVERFLOWS = {
    "inf in the input": (poisoned_input, 0.0, 2.0**16),
    "huge initial scale": (lambda x: x, 50.0, 2.0**127),
}


@pytest.mark.parametrize("case", list(OVERFLOWS))
def test_amp_train_step_skips_the_step_on_overflow(device: torch.device, case: str) -> None:
    model, optimizer, x, y = make_problem(device)
    make_input, shift, init_scale = OVERFLOWS[case]
    scaler = torch.amp.GradScaler(device.type, init_scale=init_scale)
    before = snapshot(model)
    kata.amp_train_step(model, optimizer, scaler, make_input(x), y + shift, device.type)
    changed = [
        name for (name, p), old in zip(model.named_parameters(), before, strict=True) if not p.equal(old)
    ]
    assert not changed, (
        f"the scaled gradients overflowed ({case}), yet these parameters changed: {changed}; likely cause: "
        f"optimizer.step() called directly (or backward without scaler.scale). scaler.step(optimizer) checks "
        f"the gradients for inf/nan and skips the step."
    )


def test_amp_train_step_updates_the_scale(device: torch.device) -> None:
    model, optimizer, x, y = make_problem(device)
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0**16)
    kata.amp_train_step(model, optimizer, scaler, poisoned_input(x), y, device.type)
    assert scaler.get_scale() == 2.0**15, (
        f"after an overflowing step the scale should have been halved from {2.0**16} to {2.0**15}, it is "
        f"{scaler.get_scale()}; likely cause: scaler.update() is not called after scaler.step(optimizer)."
    )
    try:
        kata.amp_train_step(model, optimizer, scaler, x, y, device.type)
    except RuntimeError as exc:
        pytest.fail(f"a second step with the same scaler failed: {exc}; likely cause: no scaler.update()")


def test_amp_train_step_goes_through_the_scaler(
    device: torch.device, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, optimizer, x, y = make_problem(device)
    scaler = torch.amp.GradScaler(device.type)
    calls: list[str] = []
    for name in ("scale", "step", "update"):
        original = getattr(scaler, name)

        def spy(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            calls.append(_name)
            if _name == "step":
                given = args[0] if args else kwargs.get("optimizer")
                assert given is optimizer, f"scaler.step should be given the optimizer, got {given!r}"
            return _original(*args, **kwargs)

        monkeypatch.setattr(scaler, name, spy)
    kata.amp_train_step(model, optimizer, scaler, x, y, device.type)
    assert calls == ["scale", "step", "update"], (
        f"expected the scaler to be used as scale(loss) -> step(optimizer) -> update(), saw the calls "
        f"{calls}; likely cause: loss.backward() and optimizer.step() called directly, bypassing the scaler."
    )


@pytest.mark.parametrize("enabled", [True, False], ids=["scaler enabled", "scaler disabled"])
def test_amp_train_step_autocasts_only_the_forward_pass_and_the_loss(
    device: torch.device, monkeypatch: pytest.MonkeyPatch, enabled: bool
) -> None:
    model, optimizer, x, y = make_problem(device)
    scaler = torch.amp.GradScaler(device.type, enabled=enabled)
    under_autocast: dict[str, list[bool]] = {"optimizer.step": [], "scaler.step": [], "scaler.update": []}
    optimizer.register_step_pre_hook(
        lambda *_: under_autocast["optimizer.step"].append(torch.is_autocast_enabled(device.type))
    )
    for name in ("step", "update"):
        original = getattr(scaler, name)

        def spy(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            under_autocast[f"scaler.{_name}"].append(torch.is_autocast_enabled(device.type))
            return _original(*args, **kwargs)

        monkeypatch.setattr(scaler, name, spy)
    kata.amp_train_step(model, optimizer, scaler, x, y, device.type)
    under_autocast["backward"] = model.backward_under_autocast
    missing = [name for name, seen in under_autocast.items() if not seen]
    assert not missing, f"these parts of the step never ran: {missing}"
    inside = [name for name, seen in under_autocast.items() if any(seen)]
    assert not inside, (
        f"these ran while autocast was still on: {inside}; likely cause: backward and the optimizer step "
        f"indented inside the `with torch.autocast(...)` block. Autocast wraps the forward pass and the loss "
        f"only: backward already runs each op in the dtype its forward pass used, and the update must see "
        f"float32 gradients and parameters. Close the block before `scaler.scale(loss).backward()`."
    )


def test_amp_train_step_leaves_no_autocast_enabled(device: torch.device) -> None:
    model, optimizer, x, y = make_problem(device)
    kata.amp_train_step(model, optimizer, torch.amp.GradScaler(device.type), x, y, device.type)
    left_on = [kind for kind in AMP_DTYPE if torch.is_autocast_enabled(kind)]
    assert not left_on, (
        f"after amp_train_step returned, autocast was still enabled for {left_on}; likely cause: "
        f"`torch.autocast(...).__enter__()` or `torch.set_autocast_enabled(...)` without the matching exit. "
        f"Use `with torch.autocast(...):` so that it closes, even on an exception."
    )


def test_amp_train_step_keeps_float32_parameters_and_leaves_the_batch_alone(device: torch.device) -> None:
    model, optimizer, x, y = make_problem(device)
    before = [(name, t.clone(), t.dtype, t.requires_grad) for name, t in (("x", x), ("y", y))]
    kata.amp_train_step(model, optimizer, torch.amp.GradScaler(device.type), x, y, device.type)
    dtypes = {name: p.dtype for name, p in model.named_parameters() if p.dtype != torch.float32}
    assert not dtypes, (
        f"after the step these parameters are no longer float32: {dtypes}; likely cause: casting the model "
        f"(`model.half()`, `model.to(torch.bfloat16)`) instead of letting autocast cast inside each op. "
        f"With mixed precision the weights (and the optimizer's update) stay float32."
    )
    for (name, old, dtype, requires_grad), t in zip(before, (x, y), strict=True):
        assert t.dtype == dtype and t.requires_grad == requires_grad and torch.equal(t, old), (
            f"the caller's {name} changed: dtype {dtype} -> {t.dtype}, requires_grad {requires_grad} -> "
            f"{t.requires_grad}, values equal: {torch.equal(t.float(), old.float())}; likely cause: an "
            f"in-place cast or write on the batch. Cast copies (`.float()`), never the caller's tensor."
        )


@pytest.mark.cuda
def test_amp_train_step_survives_float16_gradient_overflow_on_cuda() -> None:
    device = torch.device("cuda")
    model, optimizer, x, y = make_problem(device)
    # The loss is float32, but its gradient enters the float16 output: 2**40 times it is far above 65504.
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**40)
    before = snapshot(model)
    kata.amp_train_step(model, optimizer, scaler, x, y, "cuda")
    changed = [
        name for (name, p), old in zip(model.named_parameters(), before, strict=True) if not p.equal(old)
    ]
    assert not changed and scaler.get_scale() == 2.0**39, (
        f"float16 gradients overflowed, so the step should be skipped and the scale halved; changed "
        f"parameters: {changed}, scale now {scaler.get_scale()}"
    )


# ----------------------------------------------------------------------------------------------- gpu_summary

FAKE_GPU = SimpleNamespace(name="Fake GPU 80GB", total_memory=85_520_809_984, major=9, minor=0)


def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    def get_device_properties(device: Any = None) -> SimpleNamespace:
        index = device
        if isinstance(index, str):
            index = torch.device(index)
        if isinstance(index, torch.device):
            index = index.index
        assert index in (None, 0), f"gpu_summary should describe device 0, it asked about {device!r}"
        return FAKE_GPU

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", get_device_properties)


def summary_of_fake_gpu(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    fake_gpu(monkeypatch)
    summary = kata.gpu_summary()
    assert isinstance(summary, dict), f"with a GPU present, expected a dict, got {type(summary).__name__}"
    return summary


def test_gpu_summary_is_none_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    got = kata.gpu_summary()
    assert got is None, (
        f"without CUDA, gpu_summary() should return None, got {got!r}; likely cause: no early "
        f"`if not torch.cuda.is_available(): return None`."
    )


def test_gpu_summary_name(monkeypatch: pytest.MonkeyPatch) -> None:
    summary = summary_of_fake_gpu(monkeypatch)
    assert summary.get("name") == FAKE_GPU.name and type(summary.get("name")) is str, (
        f"expected 'name' to be the device name {FAKE_GPU.name!r}, got {summary.get('name')!r}"
    )


def test_gpu_summary_total_memory_in_decimal_gigabytes(monkeypatch: pytest.MonkeyPatch) -> None:
    summary = summary_of_fake_gpu(monkeypatch)
    got = summary.get("total_memory_gb")
    expected = FAKE_GPU.total_memory / 1e9
    assert type(got) is float and got == pytest.approx(expected, rel=1e-12), (
        f"expected 'total_memory_gb' = total_memory / 1e9 = {expected} (a float), got {got!r}; likely "
        f"cause: dividing by 1024**3 (that is GiB, {FAKE_GPU.total_memory / 1024**3:.3f}) or rounding."
    )


def test_gpu_summary_capability_is_a_pair_of_ints(monkeypatch: pytest.MonkeyPatch) -> None:
    summary = summary_of_fake_gpu(monkeypatch)
    got = summary.get("capability")
    ok = type(got) is tuple and len(got) == 2 and all(type(v) is int for v in got) and got == (9, 0)
    assert ok, (
        f"expected 'capability' to be the tuple (major, minor) = (9, 0), got {got!r}; likely cause: a list, "
        f"a string like '9.0', or a float - build tuple((props.major, props.minor)) or use "
        f"torch.cuda.get_device_capability(0)."
    )


@pytest.mark.cuda
def test_gpu_summary_describes_the_real_gpu() -> None:
    props = torch.cuda.get_device_properties(0)
    summary = kata.gpu_summary()
    assert isinstance(summary, dict), f"expected a dict on a CUDA machine, got {summary!r}"
    expected = {
        "name": props.name,
        "total_memory_gb": props.total_memory / 1e9,
        "capability": (props.major, props.minor),
    }
    got = {key: summary.get(key) for key in expected}
    assert got == expected, f"expected {expected}, got {got}"
