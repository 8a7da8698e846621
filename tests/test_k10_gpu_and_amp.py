"""Grader for k10_gpu_and_amp: device choice, moving nested batches, one AMP step, timing, training memory.

Everything runs on CPU: bfloat16 and float16 autocast with a CPU GradScaler, the `meta` device for movement
and for a model too big to allocate, faked device availability, and a simulated GPU (a stand-in for
`torch.cuda` whose kernels finish later than they are queued) for the timing helper. The memory estimate is
compared with what `torch.optim` really allocates on a step. The tests marked `cuda` repeat the AMP step and
movement on a real GPU and time real kernels. Only those can catch a step that ignores `device_type` (a
hard-coded `torch.autocast("cpu")`): on a machine without CUDA, `torch.autocast("cuda")` disables itself, so
there is no CPU stand-in for it.
"""

import copy
import time
from collections import OrderedDict, namedtuple
from collections.abc import Callable, Iterator
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

# The loss scale of the value tests: a power of two, so scaling and unscaling are exact, and small enough
# that no float16 gradient of this problem overflows (at the default 2**16 some seeds do, and the step is
# then skipped, as it should be, which is not what those tests are about).
SCALE = 2.0**8
LOW_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


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


def make_scaler(device: torch.device, kind: str) -> torch.amp.GradScaler | None:
    """ "enabled" (scale SCALE), "disabled" (a GradScaler that does nothing) or "none" (scaler=None)."""
    if kind == "none":
        return None
    return torch.amp.GradScaler(device.type, init_scale=SCALE, enabled=kind == "enabled")


def true_gradients(
    model: Probe, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype | None = None
) -> tuple[Probe, float]:
    """A copy of the model holding the true (unscaled) gradients of the step's loss; the loss in float64."""
    ref = copy.deepcopy(model)
    ref.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=dtype or AMP_DTYPE[x.device.type]):
        out = ref(x)
    loss = ((out.double() - y.double()) ** 2).mean().item()
    F.mse_loss(out.float(), y).backward()
    return ref, loss


def grad_norm(model: nn.Module) -> float:
    return torch.linalg.vector_norm(torch.cat([p.grad.double().flatten() for p in model.parameters()])).item()


def reference_step(
    model: Probe,
    x: torch.Tensor,
    y: torch.Tensor,
    dtype: torch.dtype | None = None,
    max_norm: float | None = None,
) -> tuple[float, list[torch.Tensor]]:
    """The loss (float64, from the autocast output) and the parameters one plain SGD step would produce,
    on the true gradients, clipped by torch's own clip_grad_norm_ when max_norm is given."""
    ref, loss = true_gradients(model, x, y, dtype)
    if max_norm is not None:
        torch.nn.utils.clip_grad_norm_(ref.parameters(), max_norm)
    return loss, [(p - LR * p.grad).detach() for p in ref.parameters()]


def snapshot(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def run_step(*args: Any, **kwargs: Any) -> float:
    """kata.amp_train_step, with an AttributeError on a None scaler reported as the missing case it is."""
    try:
        return kata.amp_train_step(*args, **kwargs)
    except AttributeError as exc:
        if args[2] is None and "NoneType" in str(exc):
            pytest.fail(
                f"amp_train_step(..., scaler=None, ...) failed: AttributeError: {exc}; likely cause: the "
                f"scaler is used unconditionally. scaler=None means no loss scaling (bfloat16 needs none): "
                f"backward on the loss itself and a plain optimizer.step().",
                pytrace=False,
            )
        raise


def test_amp_train_step_runs_the_forward_pass_under_autocast(device: torch.device) -> None:
    model, optimizer, x, y = make_problem(device)
    kata.amp_train_step(model, optimizer, torch.amp.GradScaler(device.type), x, y, device.type)
    expected = AMP_DTYPE[device.type]
    assert model.seen == [(True, expected)], (
        f"expected one forward pass under autocast for {device.type!r} in {expected}, saw "
        f"(autocast on, dtype) = {model.seen}; likely cause: no `with torch.autocast({device.type!r}):` "
        f"around the forward pass, or a fixed dtype - without `dtype=`, autocast is float16 on cuda and "
        f"bfloat16 on cpu."
    )


@pytest.mark.parametrize("name", list(LOW_DTYPES))
def test_amp_train_step_autocasts_in_the_dtype_it_is_given(device: torch.device, name: str) -> None:
    dtype = LOW_DTYPES[name]
    model, optimizer, x, y = make_problem(device)
    kata.amp_train_step(model, optimizer, make_scaler(device, "enabled"), x, y, device.type, dtype=dtype)
    assert model.seen == [(True, dtype)], (
        f"with dtype={dtype} on {device.type!r}, expected one forward pass under autocast in {dtype}, saw "
        f"(autocast on, dtype) = {model.seen}; likely cause: the `dtype` argument is ignored (the device's "
        f"default is used instead) - pass it on to torch.autocast."
    )


def test_amp_train_step_returns_a_python_float(device: torch.device) -> None:
    model, optimizer, x, y = make_problem(device)
    got = kata.amp_train_step(model, optimizer, torch.amp.GradScaler(device.type), x, y, device.type)
    assert type(got) is float, (
        f"expected the loss as a Python float, got {type(got).__name__}; likely cause: returning the loss "
        f"tensor - use loss.item()."
    )


@pytest.mark.parametrize("name", list(LOW_DTYPES))
def test_amp_train_step_returns_the_float32_mse(device: torch.device, name: str) -> None:
    dtype = LOW_DTYPES[name]
    model, optimizer, x, y = make_problem(device)
    _, expected = true_gradients(model, x, y, dtype)
    got = kata.amp_train_step(
        model, optimizer, make_scaler(device, "enabled"), x, y, device.type, dtype=dtype
    )
    assert isinstance(got, (float, torch.Tensor)), f"expected a float, got {type(got).__name__}"
    # The oracle is the float64 MSE of the very same autocast output; a float32 MSE of 16 values is within a
    # few float32 ulps of it, while a loss computed in the low dtype is off by about 1e-3 (float16) or 1e-2.
    assert float(got) == pytest.approx(expected, rel=2e-5), (
        f"expected the mean squared error {expected:.7f} of the float32-cast output, got {float(got):.7f}; "
        f"likely cause: a loss computed in {dtype} (cast the output with .float(), not the target down), a "
        f"sum instead of a mean, or the scaled loss returned instead of the loss."
    )


STEP_CASES = {
    "float16, scaler enabled": ("float16", "enabled"),
    "float16, scaler disabled": ("float16", "disabled"),
    "bfloat16, scaler enabled": ("bfloat16", "enabled"),
    "bfloat16, scaler=None": ("bfloat16", "none"),
}


@pytest.mark.parametrize("case", list(STEP_CASES))
def test_amp_train_step_makes_one_optimizer_step(device: torch.device, case: str) -> None:
    name, kind = STEP_CASES[case]
    model, optimizer, x, y = make_problem(device)
    _, expected = reference_step(model, x, y, LOW_DTYPES[name])
    run_step(model, optimizer, make_scaler(device, kind), x, y, device.type, dtype=LOW_DTYPES[name])
    # Scaling by a power of two is exact, so the unscaled gradients equal the reference's bit for bit (but
    # for float16 subnormals, which scaling rescues: ~1e-8 of gradient); the tolerance absorbs the float32
    # rounding of `p - lr * grad` only. A scale left in the update is off by a factor of SCALE = 256.
    assert_close(
        snapshot(model),
        expected,
        rtol=1e-4,
        atol=1e-6,
        what=f"parameters after one SGD step (lr={LR}), {case}",
        likely_cause="backward on the unscaled loss while scaler.step() unscales (gradients end up divided "
        "by the scale), optimizer.step() on still-scaled gradients, or a forward pass outside autocast.",
    )


def test_amp_train_step_ignores_earlier_gradients(device: torch.device) -> None:
    model, optimizer, x, y = make_problem(device)
    for p in model.parameters():
        p.grad = torch.full_like(p, 100.0)
    _, expected = reference_step(model, x, y)
    kata.amp_train_step(model, optimizer, make_scaler(device, "enabled"), x, y, device.type)
    assert_close(
        snapshot(model),
        expected,
        rtol=1e-4,
        atol=1e-6,
        what="parameters after one step when the model came in with leftover gradients of 100",
        likely_cause="gradients are not cleared before backward (optimizer.zero_grad()), so backward "
        "added this step's gradients to the old ones.",
    )


def test_amp_train_step_trains_bfloat16_without_a_scaler(device: torch.device) -> None:
    dtypes = (
        {"bfloat16": torch.bfloat16} if device.type == "cuda" else {"None": None, "bfloat16": torch.bfloat16}
    )
    for label, dtype in dtypes.items():
        model, optimizer, x, y = make_problem(device)
        _, expected = reference_step(model, x, y, torch.bfloat16)
        got = run_step(model, optimizer, None, x, y, device.type, dtype=dtype)
        assert model.seen == [(True, torch.bfloat16)] and type(got) is float, (
            f"with scaler=None and dtype={label} on {device.type!r}, expected one bfloat16 autocast forward "
            f"pass and a float back, saw {model.seen} and {type(got).__name__}"
        )
        assert_close(
            snapshot(model),
            expected,
            rtol=1e-4,
            atol=1e-6,
            what=f"parameters after a bfloat16 step with scaler=None (dtype={label})",
            likely_cause="no backward or no optimizer.step() when there is no scaler.",
        )


@pytest.mark.parametrize(
    "max_norm_of_true_norm", [0.25, 10.0], ids=["clipping", "norm already below max_norm"]
)
@pytest.mark.parametrize("case", list(STEP_CASES))
def test_amp_train_step_clips_the_true_gradients(
    device: torch.device, case: str, max_norm_of_true_norm: float
) -> None:
    name, kind = STEP_CASES[case]
    dtype = LOW_DTYPES[name]
    model, optimizer, x, y = make_problem(device)
    ref, _ = true_gradients(model, x, y, dtype)
    max_norm = max_norm_of_true_norm * grad_norm(ref)
    _, expected = reference_step(model, x, y, dtype, max_norm=max_norm)
    run_step(model, optimizer, make_scaler(device, kind), x, y, device.type, dtype=dtype, max_norm=max_norm)
    clipping = max_norm_of_true_norm < 1
    assert_close(
        snapshot(model),
        expected,
        rtol=1e-4,
        atol=1e-6,
        what=f"parameters after one SGD step with max_norm = {max_norm_of_true_norm} x the true gradient "
        f"norm, {case}",
        likely_cause=(
            "the scaled gradients were clipped (clipping before scaler.unscale_(optimizer), or without it): "
            f"their norm is {SCALE:g} times too large, so they are cut to max_norm and then divided by the "
            "scale, and the update shrinks to almost nothing. Or each parameter is clipped on its own "
            "instead of by the norm of all gradients together, or values are clipped instead of the norm, "
            "or the clipping happens after the step."
            if clipping
            else "max_norm is 10 times the true gradient norm, so clipping must change nothing. Either the "
            f"scaled gradients were clipped (their norm is {SCALE:g} times the true one: unscale them "
            "first), or the gradients are rescaled to max_norm although they were within it (a clip "
            "coefficient max_norm / norm that is not capped at 1)."
        ),
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


@pytest.mark.parametrize("max_norm", [None, 1.0], ids=["no clipping", "clipping"])
@pytest.mark.parametrize("case", list(OVERFLOWS))
def test_amp_train_step_skips_the_step_on_overflow(
    device: torch.device, case: str, max_norm: float | None
) -> None:
    model, optimizer, x, y = make_problem(device)
    make_input, shift, init_scale = OVERFLOWS[case]
    scaler = torch.amp.GradScaler(device.type, init_scale=init_scale)
    before = snapshot(model)
    try:
        kata.amp_train_step(
            model, optimizer, scaler, make_input(x), y + shift, device.type, max_norm=max_norm
        )
    except RuntimeError as exc:
        if isinstance(exc, NotImplementedError):
            raise  # the stub: not started
        pytest.fail(
            f"amp_train_step raised on an overflowing step ({case}, max_norm={max_norm}): {exc}; likely "
            f"cause: clip_grad_norm_(..., error_if_nonfinite=True), or a check of your own. An overflow is "
            f"normal with a GradScaler: scaler.step skips that update and scaler.update lowers the scale.",
            pytrace=False,
        )
    changed = [
        name for (name, p), old in zip(model.named_parameters(), before, strict=True) if not p.equal(old)
    ]
    assert not changed, (
        f"the scaled gradients overflowed ({case}, max_norm={max_norm}), yet these parameters changed: "
        f"{changed}; likely cause: optimizer.step() called directly (or backward without scaler.scale). "
        f"scaler.step(optimizer) checks the gradients for inf/nan and skips the step."
    )
    assert scaler.get_scale() == init_scale / 2, (
        f"after an overflowing step the scale should have been halved from {init_scale} to "
        f"{init_scale / 2}, it is {scaler.get_scale()}; likely cause: scaler.update() is not called (in "
        f"every branch) after scaler.step(optimizer)."
    )


def test_amp_train_step_updates_the_scale(device: torch.device) -> None:
    model, optimizer, x, y = make_problem(device)
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0**16)
    kata.amp_train_step(model, optimizer, scaler, poisoned_input(x), y, device.type)
    assert scaler.get_scale() == 2.0**15, (
        f"after an overflowing step the scale should have been halved from {2.0**16} to {2.0**15}, it is "
        f"{scaler.get_scale()}; likely cause: scaler.update() is not called after scaler.step(optimizer)."
    )
    for max_norm in (None, 1.0):
        try:
            kata.amp_train_step(model, optimizer, scaler, x, y, device.type, max_norm=max_norm)
        except RuntimeError as exc:
            if isinstance(exc, NotImplementedError):
                raise  # the stub: not started
            pytest.fail(
                f"a further step with the same scaler (max_norm={max_norm}) failed: {exc}; likely cause: no "
                f"scaler.update() at the end of the step, or scaler.unscale_ called twice in one step."
            )


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


@pytest.mark.parametrize("kind", ["enabled", "disabled", "none"])
def test_amp_train_step_autocasts_only_the_forward_pass_and_the_loss(
    device: torch.device, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    model, optimizer, x, y = make_problem(device)
    scaler = make_scaler(device, kind)
    under_autocast: dict[str, list[bool]] = {"optimizer.step": []}
    optimizer.register_step_pre_hook(
        lambda *_: under_autocast["optimizer.step"].append(torch.is_autocast_enabled(device.type))
    )
    if scaler is not None:
        for name in ("step", "update"):
            under_autocast[f"scaler.{name}"] = []
            original = getattr(scaler, name)

            def spy(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
                under_autocast[f"scaler.{_name}"].append(torch.is_autocast_enabled(device.type))
                return _original(*args, **kwargs)

            monkeypatch.setattr(scaler, name, spy)
    run_step(model, optimizer, scaler, x, y, device.type, dtype=torch.bfloat16)
    under_autocast["backward"] = model.backward_under_autocast
    missing = [name for name, seen in under_autocast.items() if not seen]
    assert not missing, f"these parts of the step never ran (scaler {kind}): {missing}"
    inside = [name for name, seen in under_autocast.items() if any(seen)]
    assert not inside, (
        f"these ran while autocast was still on: {inside}; likely cause: backward and the optimizer step "
        f"indented inside the `with torch.autocast(...)` block. Autocast wraps the forward pass and the loss "
        f"only: backward already runs each op in the dtype its forward pass used, and the update must see "
        f"float32 gradients and parameters. Close the block before backward."
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


def check_refused(device: torch.device, scaler: Any, dtype: torch.dtype | None, why: str, cause: str) -> None:
    model, optimizer, x, y = make_problem(device)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    before = snapshot(model)
    with pytest.raises(ValueError) as raised:
        kata.amp_train_step(model, optimizer, scaler, x, y, device.type, dtype=dtype)
    assert raised.type is ValueError or issubclass(raised.type, ValueError), raised
    untouched = all(
        p.equal(old) and p.grad is not None for p, old in zip(model.parameters(), before, strict=True)
    )
    assert untouched and model.seen == [], (
        f"{why}: the ValueError came, but only after the step had started (forward passes: "
        f"{len(model.seen)}, parameters or gradients changed: {not untouched}); likely cause: {cause} Check "
        f"the arguments first."
    )


def test_amp_train_step_refuses_float16_without_a_scaler(device: torch.device) -> None:
    try:
        check_refused(device, None, torch.float16, "float16 with scaler=None", "the check comes too late.")
        if device.type == "cuda":  # dtype=None is float16 there
            check_refused(
                device, None, None, "dtype=None on cuda with scaler=None", "the check comes too late."
            )
    except pytest.fail.Exception as exc:
        if "DID NOT RAISE" not in str(exc):
            raise
        pytest.fail(
            "amp_train_step(..., scaler=None, dtype=torch.float16) trained instead of raising ValueError; "
            "likely cause: no check. float16 has 5 exponent bits: gradients below ~6e-8 become 0 and the "
            "model silently stops learning, which is what the GradScaler prevents (bfloat16, with float32's "
            "range, is the one that may go without).",
            pytrace=False,
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_amp_train_step_refuses_dtypes_autocast_does_not_train_in(
    device: torch.device, dtype: torch.dtype
) -> None:
    try:
        check_refused(
            device, make_scaler(device, "enabled"), dtype, f"dtype={dtype}", "the check comes too late."
        )
    except pytest.fail.Exception as exc:
        if "DID NOT RAISE" not in str(exc):
            raise
        pytest.fail(
            f"amp_train_step(..., dtype={dtype}) trained instead of raising ValueError; likely cause: no "
            f"check of `dtype`. Autocast's low precision is float16 or bfloat16; given another dtype, CPU "
            f"autocast warns and silently turns itself off.",
            pytrace=False,
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


# ---------------------------------------------------------------------------------------------- time_per_call


class SimulatedGpu:
    """A stand-in for `torch.cuda` on a machine without one: queued kernels finish later, in real time.

    Each device has a queue that is busy until some moment of `time.perf_counter()`; `launch` adds work to
    it and returns at once, as a CUDA kernel launch does. Waiting (synchronize, an event's synchronize)
    sleeps until the work in question is done; an event records the moment the work queued before it ends.
    """

    def __init__(self, count: int = 2) -> None:
        self.busy_until = [0.0] * count
        self.current = 0
        self.used: list[str] = []  # every torch.cuda function called, in order
        self.waited_for: list[int] = []  # the devices whose queues were waited for

    def launch(self, index: int, seconds: float) -> None:
        self.busy_until[index] = max(time.perf_counter(), self.busy_until[index]) + seconds

    def index(self, device: Any = None) -> int:
        if device is None:
            return self.current
        if isinstance(device, int):
            return device
        device = torch.device(device)
        if device.type != "cuda":
            raise ValueError(f"Expected a cuda device, but got: {device}")
        return self.current if device.index is None else device.index

    def wait(self, index: int, until: float) -> None:
        self.waited_for.append(index)
        delay = until - time.perf_counter()
        if delay > 0:
            time.sleep(delay)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        gpu = self

        def note(name: str) -> None:
            gpu.used.append(name)

        class Stream:
            def __init__(self, device: Any = None) -> None:
                self.index = gpu.index(device)
                self.device = torch.device("cuda", self.index)

            def synchronize(self) -> None:
                note("Stream.synchronize")
                gpu.wait(self.index, gpu.busy_until[self.index])

            def query(self) -> bool:
                return time.perf_counter() >= gpu.busy_until[self.index]

            def record_event(self, event: "Event | None" = None) -> "Event":
                event = event or Event()
                event.record(self)
                return event

        class Event:
            def __init__(
                self,
                enable_timing: bool = False,
                **flags: bool,  # blocking, interprocess, external
            ):
                note("Event")
                self.enable_timing = enable_timing
                self.at: float | None = None
                self.index: int | None = None

            def record(self, stream: Stream | None = None) -> None:
                note("Event.record")
                self.index = gpu.current if stream is None else stream.index
                self.at = max(time.perf_counter(), gpu.busy_until[self.index])

            def query(self) -> bool:
                return self.at is not None and time.perf_counter() >= self.at

            def synchronize(self) -> None:
                note("Event.synchronize")
                if self.at is not None and self.index is not None:
                    gpu.wait(self.index, self.at)

            def wait(self, stream: Stream | None = None) -> None:
                note("Event.wait")

            def elapsed_time(self, end: "Event") -> float:
                note("Event.elapsed_time")
                if not (self.enable_timing and end.enable_timing):
                    raise RuntimeError("Both events must be created with argument 'enable_timing=True'.")
                if self.at is None or end.at is None:
                    raise RuntimeError("Both events must be recorded before calculating elapsed time.")
                if not (self.query() and end.query()):  # what CUDA answers: cudaErrorNotReady
                    raise RuntimeError("CUDA error: device not ready (the end event has not completed yet)")
                return (end.at - self.at) * 1000.0

        class DeviceContext:
            def __init__(self, device: Any) -> None:
                note("device")
                self.index = gpu.index(device)

            def __enter__(self) -> None:
                self.previous, gpu.current = gpu.current, self.index

            def __exit__(self, *exc: object) -> None:
                gpu.current = self.previous

        def synchronize(device: Any = None) -> None:
            note("synchronize")
            index = gpu.index(device)
            gpu.wait(index, gpu.busy_until[index])

        def stream_of(name: str) -> Callable[..., Stream]:
            def get(device: Any = None) -> Stream:
                note(name)
                return Stream(device)

            return get

        def set_device(device: Any) -> None:
            note("set_device")
            gpu.current = gpu.index(device)

        fakes = {
            "is_available": lambda: True,
            "is_initialized": lambda: True,
            "device_count": lambda: len(gpu.busy_until),
            "current_device": lambda: gpu.current,
            "set_device": set_device,
            "synchronize": synchronize,
            "Event": Event,
            "Stream": Stream,
            "current_stream": stream_of("current_stream"),
            "default_stream": stream_of("default_stream"),
            "device": DeviceContext,
        }
        for name, fake in fakes.items():
            monkeypatch.setattr(torch.cuda, name, fake)


def timed(fn: Callable[[], object], device: Any, **kwargs: Any) -> float:
    """kata.time_per_call, with a torch.cuda function the stand-in lacks reported as such."""
    try:
        return kata.time_per_call(fn, device, **kwargs)
    except (AssertionError, RuntimeError, AttributeError) as exc:
        if isinstance(exc, NotImplementedError):
            raise  # the stub: not started
        if "CUDA" not in str(exc) and "cuda" not in str(exc):
            raise
        pytest.fail(
            f"time_per_call({device!r}) failed under the simulated GPU: {type(exc).__name__}: {exc}. The "
            f"stand-in replaces these attributes of torch.cuda while the test runs: synchronize, Event "
            f"(record, synchronize, query, elapsed_time), current_stream/default_stream (synchronize), "
            f"device (a context manager), set_device, current_device. Call them as `torch.cuda.<name>` (not "
            f"names imported before the test). If the message says 'device not ready', elapsed_time was "
            f"asked before the end event had completed: synchronize it first.",
            pytrace=False,
        )


def likely_timing_bug(got: float, expected: float, repeats: int) -> str:
    if got < 0.2 * expected:
        return (
            "the clock stopped before the device had finished: the time of queueing the kernels was "
            "measured, not their work. Wait for the device (the one being timed) before reading the clock, "
            "or time with CUDA events recorded on its stream."
        )
    if abs(got / expected - 1000) < 300:
        return "milliseconds returned instead of seconds (CUDA events' elapsed_time is in milliseconds)."
    if abs(got / expected - repeats) < 0.25 * repeats:
        return "the total time of all timed calls returned, not the time per call."
    return (
        "work done outside the timed calls was counted: the warm-up calls timed too, or the clock started "
        "before the device had finished the work queued earlier (wait for it before starting the clock)."
    )


def test_time_per_call_measures_wall_clock_seconds_per_call_on_the_cpu() -> None:
    calls = 0

    def work() -> None:  # the first calls are slow, as first calls are (lazy initialisation, autotuning)
        nonlocal calls
        calls += 1
        time.sleep(0.1 if calls <= 2 else 0.01)

    got = timed(work, "cpu", warmup=2, repeats=5)
    assert isinstance(got, float), f"expected a Python float of seconds, got {type(got).__name__} {got!r}"
    # time.sleep never returns early, so a correct mean is at least 10 ms; the upper bound leaves 20 ms per
    # call for a loaded machine. Every bug named below is at least 2.8 times further out.
    assert 0.0099 <= got <= 0.03, (
        f"each timed call sleeps 10 ms (after 2 warm-up calls of 100 ms), so time_per_call should be about "
        f"0.010 s, got {got!r}; likely cause: {likely_timing_bug(got, 0.01, 5)}"
    )
    assert calls == 7, f"fn should be called warmup + repeats = 7 times, it was called {calls} times"


@pytest.mark.parametrize(("warmup", "repeats"), [(0, 1), (3, 4)])
def test_time_per_call_calls_fn_warmup_plus_repeats_times(warmup: int, repeats: int) -> None:
    calls: list[None] = []
    timed(lambda: calls.append(None), "cpu", warmup=warmup, repeats=repeats)
    assert len(calls) == warmup + repeats, (
        f"with warmup={warmup} and repeats={repeats}, fn should be called {warmup + repeats} times, it was "
        f"called {len(calls)} times; likely cause: an off-by-one in a loop, or the warm-up calls skipped."
    )


def test_time_per_call_on_the_cpu_calls_no_cuda_function(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = SimulatedGpu()
    gpu.install(monkeypatch)
    timed(lambda: None, "cpu", warmup=1, repeats=2)
    timed(lambda: None, torch.device("cpu"), warmup=1, repeats=2)
    assert not gpu.used, (
        f"timing on the CPU called torch.cuda: {gpu.used}; likely cause: synchronizing whatever the device "
        f"is. On a machine without CUDA that raises; synchronize only when device.type == 'cuda'."
    )


@pytest.mark.parametrize("target", ["cuda", torch.device("cuda", 0)], ids=["'cuda'", "cuda:0"])
def test_time_per_call_waits_for_the_gpu(monkeypatch: pytest.MonkeyPatch, target: Any) -> None:
    gpu = SimulatedGpu()
    gpu.install(monkeypatch)
    calls = 0

    def kernel() -> None:  # 20 ms of GPU work per call (the first one 100 ms), queued in no time
        nonlocal calls
        calls += 1
        gpu.launch(0, 0.1 if calls == 1 else 0.02)

    gpu.launch(0, 0.15)  # the caller's own work, still running when time_per_call starts
    got = timed(kernel, target, warmup=2, repeats=3)
    assert isinstance(got, float), f"expected a Python float of seconds, got {type(got).__name__} {got!r}"
    # Three back-to-back 20 ms kernels take 60 ms, so a correct time is at least 20 ms per call (the
    # simulated device never finishes early); the upper bound leaves 5 ms a call for a loaded machine.
    # Not waiting gives ~0, counting the earlier work (150 + 120 ms) or the total at least 60 ms.
    assert 0.0195 <= got <= 0.035, (
        f"each timed call queues 20 ms of GPU work, so time_per_call({target!r}) should be about 0.020 s, "
        f"got {got!r}; likely cause: {likely_timing_bug(got, 0.02, 3)}"
    )
    assert calls == 5, f"fn should be called warmup + repeats = 5 times, it was called {calls} times"


def test_time_per_call_waits_for_the_device_it_times(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = SimulatedGpu()
    gpu.install(monkeypatch)
    got = timed(lambda: gpu.launch(1, 0.02), "cuda:1", warmup=1, repeats=3)
    waited = sorted(set(gpu.waited_for))
    assert 0.0195 <= got <= 0.035, (
        f"each timed call queues 20 ms of work on cuda:1 while cuda:0 (the current device) is idle, so "
        f"time_per_call('cuda:1') should be about 0.020 s, got {got!r} (waited for devices {waited}); "
        f"likely cause: "
        + (
            "the current device was waited for, not the one being timed: torch.cuda.synchronize() without "
            "an argument, or events recorded on the current stream, wait for cuda:0. Pass the device (or "
            "the device's stream)."
            if got < 0.004 and 0 in waited and 1 not in waited
            else likely_timing_bug(got, 0.02, 3)
        )
    )
    assert gpu.current == 0, (
        f"time_per_call('cuda:1') left the current CUDA device set to {gpu.current}; likely cause: "
        f"torch.cuda.set_device without putting it back. Use `with torch.cuda.device(...)` or pass the "
        f"device explicitly."
    )


@pytest.mark.parametrize(
    ("target", "warmup", "repeats"),
    [("cpu", 1, 0), ("cpu", -1, 3), ("meta", 1, 3)],
    ids=["repeats=0", "warmup=-1", "meta device"],
)
def test_time_per_call_rejects_bad_arguments(target: str, warmup: int, repeats: int) -> None:
    calls: list[None] = []
    with pytest.raises(ValueError):
        kata.time_per_call(lambda: calls.append(None), target, warmup=warmup, repeats=repeats)
    assert not calls, (
        f"time_per_call({target!r}, warmup={warmup}, repeats={repeats}) raised ValueError, but only after "
        f"calling fn {len(calls)} times; check the arguments first."
    )


@pytest.mark.cuda
def test_time_per_call_times_real_kernels() -> None:
    # torch.cuda._sleep(cycles) keeps the GPU busy for a number of clock cycles and returns at once;
    # calibrate it to ~20 ms with CUDA events, then compare.
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    torch.cuda._sleep(10_000_000)
    end.record()
    end.synchronize()
    cycles = int(10_000_000 * 20 / start.elapsed_time(end))
    torch.cuda._sleep(cycles)  # warm up, then measure the truth the same way
    torch.cuda.synchronize()
    start.record()
    for _ in range(3):
        torch.cuda._sleep(cycles)
    end.record()
    end.synchronize()
    expected = start.elapsed_time(end) / 3 / 1000
    got = kata.time_per_call(lambda: torch.cuda._sleep(cycles), "cuda", warmup=1, repeats=3)
    # Events and host clocks around synchronisations differ by launch latency (microseconds) only; the
    # margins allow for the GPU clock changing between the two measurements. Not waiting gives ~0.01 ms.
    assert 0.7 * expected <= got <= 1.5 * expected + 0.002, (
        f"each call keeps the GPU busy for {expected * 1000:.1f} ms (by CUDA events), time_per_call returned "
        f"{got * 1000:.3f} ms; likely cause: {likely_timing_bug(got, expected, 3)}"
    )


# -------------------------------------------------------------------------------------- training_memory_bytes

KEYS = ("parameters", "gradients", "optimizer_state")


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def measured(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """What torch really allocates: every trainable parameter gets a gradient, then one real step."""
    params = list(model.parameters())
    for p in params:
        p.grad = torch.ones_like(p) if p.requires_grad else None
    optimizer.step()
    state = [t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    got = {
        "parameters": sum(nbytes(p) for p in params),
        "gradients": sum(nbytes(p.grad) for p in params if p.grad is not None),
        "optimizer_state": sum(nbytes(t) for t in state),
    }
    return {**got, "total": sum(got.values())}


def estimate(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """kata.training_memory_bytes, checked for its promised form and for leaving model and optimizer alone."""
    on_meta = any(p.is_meta for p in model.parameters())  # no values to compare there
    before = [] if on_meta else snapshot(model)
    got = kata.training_memory_bytes(model, optimizer)
    assert isinstance(got, dict) and set(got) >= {*KEYS, "total"}, (
        f"expected a dict with the keys {[*KEYS, 'total']}, got {got!r}"
    )
    kinds = {key: type(got[key]).__name__ for key in (*KEYS, "total") if type(got[key]) is not int}
    assert not kinds, (
        f"every value should be a Python int (a count of bytes), these are not: {kinds}; likely cause: a "
        f"float from a division or a 4.0, or a tensor from summing with torch."
    )
    assert got["total"] == sum(got[key] for key in KEYS), (
        f"'total' should be parameters + gradients + optimizer_state = {sum(got[key] for key in KEYS)}, got "
        f"{got['total']}"
    )
    created = [name for name, p in model.named_parameters() if p.grad is not None]
    changed = [
        name for (name, p), old in zip(model.named_parameters(), before, strict=False) if not p.equal(old)
    ]
    assert not created and not changed and not optimizer.state, (
        f"training_memory_bytes changed what it should only describe: gradients created for {created}, "
        f"parameters changed: {changed}, optimizer state for {len(optimizer.state)} parameters; likely "
        f"cause: running a backward pass or a step to measure. Work it out from the shapes and dtypes."
    )
    return got


def check_estimate(
    model: nn.Module, optimizer: torch.optim.Optimizer, situation: str, likely_cause: str
) -> None:
    got = estimate(model, optimizer)
    expected = measured(model, optimizer)
    wrong = {key: (got[key], expected[key]) for key in KEYS if got[key] != expected[key]}
    if not wrong:
        return
    n_state = sum(1 for s in optimizer.state.values() if s)
    details = "; ".join(f"{key}: got {g} bytes, torch allocates {e}" for key, (g, e) in wrong.items())
    short = expected["optimizer_state"] - got["optimizer_state"]
    if list(wrong) == ["optimizer_state"] and n_state and short == 4 * n_state:
        likely_cause = (
            "the state is short by exactly 4 bytes for each of the optimizer's parameter tensors: Adam's "
            "`step` counter is a 0-dim float32 tensor, one per parameter."
        )
    pytest.fail(f"{situation}: {details}. Likely cause: {likely_cause}", pytrace=False)


def mlp(*dtypes: torch.dtype) -> nn.Sequential:
    return nn.Sequential(*(nn.Linear(3 + i, 4 + i, dtype=dtype) for i, dtype in enumerate(dtypes)))


class MySGD(torch.optim.SGD):
    """A subclass: it keeps exactly what SGD keeps."""


OPTIMIZERS: dict[str, tuple[Callable[[Any], torch.optim.Optimizer], str]] = {
    "SGD without momentum": (
        lambda params: torch.optim.SGD(params, lr=0.1),
        "SGD without momentum keeps no state at all (state is only what an update needs to remember).",
    ),
    "SGD with momentum": (
        lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
        "SGD with momentum keeps one buffer per parameter, of its shape and dtype.",
    ),
    "SGD subclass with momentum": (
        lambda params: MySGD(params, lr=0.1, momentum=0.9),
        "a subclass of SGD keeps what SGD keeps: test with isinstance, not type(optimizer) is ...",
    ),
    "Adam": (
        lambda params: torch.optim.Adam(params),
        "Adam keeps two parameter-sized moments and a step counter per parameter.",
    ),
    "Adam with amsgrad": (
        lambda params: torch.optim.Adam(params, amsgrad=True),
        "amsgrad adds a third parameter-sized buffer (the running maximum of the second moment).",
    ),
    "AdamW": (
        lambda params: torch.optim.AdamW(params, weight_decay=0.1),
        "AdamW keeps what Adam keeps (weight decay needs no state); an exact type test misses it.",
    ),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_training_memory_bytes_knows_what_each_optimizer_keeps(name: str) -> None:
    make, cause = OPTIMIZERS[name]
    model = mlp(torch.float32, torch.float32)
    check_estimate(model, make(model.parameters()), f"a float32 MLP trained with {name}", cause)


@pytest.mark.parametrize("name", ["SGD with momentum", "Adam"])
def test_training_memory_bytes_counts_each_dtype_at_its_size(name: str) -> None:
    make, _ = OPTIMIZERS[name]
    model = mlp(torch.float64, torch.bfloat16, torch.float16, torch.float32)
    check_estimate(
        model,
        make(model.parameters()),
        f"{name} over layers in float64, bfloat16, float16 and float32",
        "4 bytes assumed per element. A parameter takes its dtype's size (p.element_size()), and its "
        "gradient and optimizer buffers share its dtype.",
    )


@pytest.mark.parametrize("name", ["SGD with momentum", "Adam"])
def test_training_memory_bytes_frozen_parameters_cost_their_weights_only(name: str) -> None:
    make, _ = OPTIMIZERS[name]
    model = mlp(torch.float32, torch.float32, torch.float32)
    model[0].requires_grad_(False)  # frozen, but still handed to the optimizer, as happens
    check_estimate(
        model,
        make(model.parameters()),
        f"{name} with the first layer frozen (requires_grad=False) but still in the optimizer",
        "a frozen parameter gets no gradient, and the optimizer creates state only for parameters with a "
        "gradient: count gradients and state for parameters that require grad only.",
    )


def test_training_memory_bytes_parameters_outside_the_optimizer_still_get_gradients() -> None:
    model = mlp(torch.float32, torch.float32)
    check_estimate(
        model,
        torch.optim.Adam(model[1].parameters()),
        "Adam over the second layer only, the first one trainable but not in the optimizer",
        "gradients come from backward, for every parameter of the model that requires grad (whether or "
        "not an optimizer updates it); optimizer state exists only for the optimizer's own parameters.",
    )


def test_training_memory_bytes_reads_the_options_of_each_parameter_group() -> None:
    model = mlp(torch.float32, torch.float32, torch.float64)
    groups = [
        {"params": model[0].parameters(), "momentum": 0.9},
        {"params": model[1].parameters()},
        {"params": model[2].parameters(), "momentum": 0.5},
    ]
    check_estimate(
        model,
        torch.optim.SGD(groups, lr=0.1),
        "SGD whose parameter groups set their own momentum (0.9, the default 0, 0.5)",
        "the options read from optimizer.defaults instead of each group in optimizer.param_groups.",
    )
    model = mlp(torch.float32, torch.float32)
    groups = [{"params": model[0].parameters(), "amsgrad": True}, {"params": model[1].parameters()}]
    check_estimate(
        model,
        torch.optim.AdamW(groups),
        "AdamW with amsgrad in the first parameter group only",
        "amsgrad read from optimizer.defaults instead of each group.",
    )


def test_training_memory_bytes_counts_a_shared_parameter_once() -> None:
    model = nn.Sequential(nn.Embedding(10, 6), nn.Linear(6, 6), nn.Linear(6, 10, bias=False))
    model[2].weight = model[0].weight  # tied input and output embeddings: one tensor, two modules
    check_estimate(
        model,
        torch.optim.Adam(model.parameters()),
        "Adam over a model whose output layer shares the embedding's weight",
        "a tied parameter counted once per module that holds it. It is one tensor with one gradient: "
        "model.parameters() yields it once.",
    )


def test_training_memory_bytes_leaves_the_optimizer_unstepped(monkeypatch: pytest.MonkeyPatch) -> None:
    models = [mlp(torch.float32, torch.float32) for _ in range(2)]
    optimizers = [
        torch.optim.SGD(models[0].parameters(), lr=0.1, momentum=0.9),
        torch.optim.AdamW(models[1].parameters()),
    ]

    def refuse(*args: Any, **kwargs: Any) -> None:
        pytest.fail(
            "training_memory_bytes called optimizer.step() (on the optimizer or a copy of it); the task is "
            "to know what the step would allocate, not to run it and look. A step on a model of a few "
            "billion parameters would also need the very memory you are estimating.",
            pytrace=False,
        )

    for cls in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW):
        monkeypatch.setattr(cls, "step", refuse)
    for model, optimizer in zip(models, optimizers, strict=True):
        estimate(model, optimizer)  # also checks: no gradient, no state, parameters unchanged
    monkeypatch.undo()
    for model, optimizer in zip(models, optimizers, strict=True):
        check_estimate(model, optimizer, type(optimizer).__name__, "see the other tests")


def test_training_memory_bytes_estimates_a_model_too_big_to_allocate() -> None:
    # 7 billion float32 parameters on `meta` (shapes and dtypes, no storage): 28 GB of weights.
    layers = nn.ModuleList(nn.Linear(8192, 8192, bias=False, device="meta") for _ in range(104))
    n = sum(p.numel() for p in layers.parameters())
    got = estimate(layers, torch.optim.AdamW(layers.parameters(), lr=1e-4))
    expected = {"parameters": 4 * n, "gradients": 4 * n, "optimizer_state": 8 * n + 4 * 104}
    wrong = {key: (got[key], expected[key]) for key in KEYS if got[key] != expected[key]}
    assert not wrong, (
        f"for {n / 1e9:.2f} billion float32 parameters in 104 tensors on `meta` trained with AdamW, expected "
        f"{expected} (16 bytes a parameter, 4 more per tensor for the step counters: "
        f"{sum(expected.values()) / 1e9:.1f} GB), got {got}"
    )


def test_training_memory_bytes_refuses_other_optimizers() -> None:
    model = mlp(torch.float32)
    for optimizer in (torch.optim.RMSprop(model.parameters()), torch.optim.Adagrad(model.parameters())):
        with pytest.raises(TypeError):
            kata.training_memory_bytes(model, optimizer)


@st.composite
def training_setups(draw: st.DrawFn) -> tuple[nn.Module, torch.optim.Optimizer]:
    dtypes = st.sampled_from([torch.float32, torch.float64, torch.bfloat16, torch.float16])
    n_layers = draw(st.integers(1, 4))
    layers = [
        nn.Linear(
            draw(st.integers(1, 4)), draw(st.integers(1, 4)), bias=draw(st.booleans()), dtype=draw(dtypes)
        )
        for _ in range(n_layers)
    ]
    model = nn.ModuleList(layers)
    kind = draw(st.sampled_from(["SGD", "Adam", "AdamW"]))
    groups: list[dict[str, Any]] = []
    for layer in layers:
        if draw(st.booleans()):
            layer.requires_grad_(False)
        if draw(st.integers(0, 3)) == 0:  # not in the optimizer
            continue
        group: dict[str, Any] = {"params": list(layer.parameters())}
        if kind == "SGD":
            group["momentum"] = draw(st.sampled_from([0.0, 0.9]))
        else:
            group["amsgrad"] = draw(st.booleans())
        groups.append(group)
    if not groups:
        groups.append({"params": list(layers[0].parameters())})
    if kind == "SGD":
        return model, torch.optim.SGD(groups, lr=0.1)
    return model, getattr(torch.optim, kind)(groups)


@given(setup=training_setups())
def test_training_memory_bytes_matches_what_torch_allocates(
    setup: tuple[nn.Module, torch.optim.Optimizer],
) -> None:
    model, optimizer = setup
    options = [{k: v for k, v in g.items() if k in ("momentum", "amsgrad")} for g in optimizer.param_groups]
    trainable = [p.requires_grad for p in model.parameters()]
    check_estimate(
        model,
        optimizer,
        f"{type(optimizer).__name__} over {model}, group options {options}, requires_grad {trainable}",
        "see the tests above for single cases: dtypes, frozen parameters, parameter groups, amsgrad.",
    )
