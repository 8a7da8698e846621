"""Grader for k17_distributed: shard_indices, average_gradients, broadcast_parameters, data_parallel_train,
train_ddp and ddp_accumulated_step, in real processes that talk through torch.distributed.

Oracles: `torch.utils.data.DistributedSampler` itself for `shard_indices` (disjointness, coverage, padding
and a new order per epoch are also checked on their own, for clearer messages; the sampler itself is
disabled while the learner's function runs). Everything else runs in three real processes joined by the
`gloo` backend (three, so that a division by a hard-coded 2 shows) and is compared with ONE process: the
mean of the ranks' own gradients, rank `src`'s own tensors bit for bit, and plain gradient descent written
out with `torch.autograd.grad` on the global batch (every rank's rows concatenated), from rank 0's initial
weights. Models and data are float64, so the only difference from the oracle is the order of summation:
rtol 1e-10 / atol 1e-12 (float32 gradients in average_gradients: rtol 1e-6); the replicas are compared
with each other at atol 1e-12. When a result misses the oracle, the grader also trains the way typical bugs
do (a sum instead of a mean, no broadcast, no averaging, no `set_epoch`, a wrong or rank-dependent sampler
seed, no shuffle, unscaled or 1/k-scaled micro-batch losses) and names the one that gives exactly the
learner's weights. DDP's all-reduces are counted by a communication hook that wraps `allreduce_hook`,
against the count of one ordinary backward pass of the same model. `average_gradients` and
`data_parallel_train` may not construct a DistributedDataParallel (its `__init__` raises in the ranks).

The launcher (`_launch`, private to this file). ONE launch runs every scenario, in order, on the same
three ranks, each scenario in a fresh process group (a `PrefixStore` over one `TCPStore`), and caches the
outcomes for all the tests: a learner who has done only some tasks gets the others' NotImplementedError
per scenario, and the rest still run. The parent makes the `TCPStore` on port 0 (the OS picks a free
port, bound before any rank connects, so parallel runs cannot collide); MASTER_ADDR is 127.0.0.1; every
collective has a 15 s timeout (`init_process_group(timeout=...)`); each rank sends a scenario's outcome as
soon as it has it; the parent waits at most 60 s in all, then kills the ranks; every rank destroys its
process group in a `finally`. A rank that raises sends its traceback, which the failure message shows,
the rank that failed first leading. A stub's NotImplementedError is replayed in the parent (same file,
line and function) so that the harness reads it as "not started". A deadlock costs one collective timeout
per scenario it blocks.

Start method, measured on this 2-core machine: `fork` from the test process costs 0.08-0.15 s per launch
idle, 0.4-0.9 s under a load of 8; `spawn` costs 16-38 s under the same loads, because each child imports
torch again and because constructing a `DistributedDataParallel` imports `torch._dynamo` (1.5 s idle,
7 s loaded), which with `fork` the parent imports once and every rank inherits. A spawned child also
cannot unpickle a function of a kata loaded by file path: the scenarios are functions of this module and
reach the kata through `load_kata`, which works in a child because KATA_SOURCE is inherited. So the ranks
are forked on Linux, and the first thing a forked rank does is `torch.set_num_threads(1)`: GNU OpenMP's
thread pool does not survive `fork`, and a parallel region in the child could hang (DataLoader workers
do the same). Elsewhere (macOS, Windows), and always for CUDA, they are spawned: CUDA cannot be used in
a process forked after it was initialised.

What only a GPU can check: `train_ddp` on two CUDA devices with NCCL (`@pytest.mark.cuda`, skipped unless
torch.cuda.device_count() >= 2; spawned ranks): batches moved to the model's device, and NCCL's float64
all-reduce.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import multiprocessing
import multiprocessing.connection
import os
import pickle
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler, TensorDataset

from kata_harness import load_kata
from kata_harness.testing import assert_close

kata = load_kata("k17_distributed")

# ---------------------------------------------------------------- the launcher

WORLD = 3  # ranks of the CPU launch: three, so that a hard-coded division by 2 shows
COLLECTIVE_TIMEOUT = datetime.timedelta(seconds=15)
LAUNCH_DEADLINE = 60.0  # seconds the parent waits for the ranks to finish every scenario
START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"
LAUNCH_TIMEOUT = pytest.mark.timeout(LAUNCH_DEADLINE + 20)
RTOL, ATOL = 1e-10, 1e-12


def _stub_frame(exc: BaseException) -> tuple[str, int, str, str] | None:
    """(file, line, function, message) when `exc` is a NotImplementedError raised by the kata's own code."""
    if not isinstance(exc, NotImplementedError):
        return None
    frames = list(traceback.walk_tb(exc.__traceback__))
    if not frames:
        return None
    frame, line = frames[-1]
    if Path(frame.f_code.co_filename).resolve() != kata.path.resolve():
        return None
    return frame.f_code.co_filename, line, frame.f_code.co_name, str(exc)


def _error(exc: BaseException) -> tuple:
    return ("error", time.monotonic(), traceback.format_exc(), _stub_frame(exc))


def _rank_main(
    rank: int,
    world_size: int,
    conn: multiprocessing.connection.Connection,
    scenarios: list[tuple[str, Callable, tuple]],
    backend: str,
) -> None:
    """One rank: run every scenario in a process group of its own; send each outcome once it is known."""
    torch.set_num_threads(1)  # before any op: GNU OpenMP's thread pool does not survive fork
    try:
        if not conn.poll(LAUNCH_DEADLINE):
            raise TimeoutError("the parent never sent the store's port")
        port = conn.recv()
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank))
        os.environ["WORLD_SIZE"] = str(world_size)
        store = dist.TCPStore("127.0.0.1", port, world_size, is_master=False, timeout=COLLECTIVE_TIMEOUT)
    except BaseException as exc:
        conn.send_bytes(pickle.dumps(("setup", _error(exc))))
        return
    if backend == "nccl":
        torch.cuda.set_device(rank)  # before the process group, so NCCL's communicator binds this GPU
    for index, (key, scenario, args) in enumerate(scenarios):
        try:
            dist.init_process_group(
                backend,
                store=dist.PrefixStore(f"scenario{index}/", store),
                rank=rank,
                world_size=world_size,
                timeout=COLLECTIVE_TIMEOUT,
            )
            # Plain pickle, inside the try: an unpicklable result is an error, and torch's ForkingPickler
            # (what conn.send uses) would share tensors through file descriptors that die with this process.
            payload = pickle.dumps((key, ("ok", scenario(rank, world_size, *args))))
        except BaseException as exc:
            payload = pickle.dumps((key, _error(exc)))
        finally:
            with contextlib.suppress(Exception):
                if dist.is_initialized():
                    dist.destroy_process_group()
        conn.send_bytes(payload)
    conn.close()


def _launch(scenarios: list[tuple[str, Callable, tuple]], world_size: int, backend: str) -> dict[str, list]:
    """Run the scenarios, in order, on `world_size` ranks; return every scenario's outcome on every rank."""
    method = START_METHOD if backend == "gloo" else "spawn"
    if method == "fork":
        import torch._dynamo  # noqa: F401  DDP's constructor imports it: once here, not once per rank

    context = multiprocessing.get_context(method)
    outcomes: dict[str, list] = {key: [None] * world_size for key, _, _ in scenarios}
    procs, conns = [], []
    try:
        for rank in range(world_size):
            parent_end, child_end = context.Pipe()
            proc = context.Process(
                target=_rank_main,
                args=(rank, world_size, child_end, scenarios, backend),
                daemon=True,
                name=f"k17-rank{rank}",
            )
            proc.start()
            child_end.close()
            procs.append(proc)
            conns.append(parent_end)
        # Port 0: the OS picks a free port, bound before any rank connects, so parallel runs cannot collide.
        store = dist.TCPStore("127.0.0.1", 0, None, True, timeout=COLLECTIVE_TIMEOUT, wait_for_workers=False)
        for conn in conns:
            conn.send(store.port)
        deadline = time.monotonic() + LAUNCH_DEADLINE
        listening = dict(enumerate(conns))
        while listening and time.monotonic() < deadline:
            ready = multiprocessing.connection.wait(list(listening.values()), deadline - time.monotonic())
            for rank, conn in list(listening.items()):
                if conn not in ready:
                    continue
                try:
                    key, outcome = pickle.loads(conn.recv_bytes())
                except EOFError:
                    del listening[rank]
                    continue
                for name in outcomes if key == "setup" else [key]:
                    outcomes[name][rank] = outcome
        del store
    finally:
        for proc in procs:
            proc.join(timeout=2)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in conns:
            conn.close()
    for rank, proc in enumerate(procs):
        stuck = None
        for key, _, _ in scenarios:
            if outcomes[key][rank] is not None:
                continue
            if stuck is None:
                stuck = key
                outcomes[key][rank] = (
                    ("died", proc.exitcode) if proc.exitcode not in (None, -9) else ("hung", None)
                )
            else:
                outcomes[key][rank] = ("not run", stuck)
    return outcomes


def _replay_stub(filename: str, line: int, function: str, message: str) -> None:
    """Raise the rank's NotImplementedError again here, from the same file and line, so that the harness
    sees an unfinished stub ("not started") rather than a failure."""
    name = function if function.isidentifier() else "stub"
    source = "\n" * (line - 1) + f"def {name}(): raise NotImplementedError({message!r})"
    namespace: dict = {}
    exec(compile(source, filename, "exec"), namespace)
    namespace[name]()


def _raise_failure(outcomes: list, what: str) -> None:
    errors = sorted((o[1], rank, o) for rank, o in enumerate(outcomes) if o[0] == "error")
    for _, _, outcome in errors:
        if outcome[3] is not None:
            _replay_stub(*outcome[3])
    parts = [f"--- rank {rank} raised:\n{outcome[2]}" for _, rank, outcome in errors]
    for rank, outcome in enumerate(outcomes):
        if outcome[0] == "died":
            parts.append(f"--- rank {rank} died without a word (exit code {outcome[1]}): os._exit or a crash")
        elif outcome[0] == "hung":
            parts.append(
                f"--- rank {rank} was still running after {LAUNCH_DEADLINE:.0f} s and was killed: a "
                "collective that not every rank reached (one rank calling all_reduce once more, or running "
                "more steps), or an endless loop"
            )
        elif outcome[0] == "not run":
            parts.append(f"--- rank {rank} never ran it: it was stuck in the {outcome[1]} scenario before")
    pytest.fail(
        f"{what}: not every rank finished (the rank listed first failed first).\n"
        + "\n".join(parts)
        + "\nLikely cause: read the first traceback. A rank that waits in a collective that its peer never "
        "reaches fails with a timeout or a 'connection closed' error: the bug is then on the OTHER rank",
        pytrace=False,
    )


_LAUNCHES: dict[str, dict[str, list]] = {}


def _run(key: str, names: tuple[str, ...]) -> list:
    """Scenario `key`'s result on every rank of the CPU launch (which runs all the scenarios, once)."""
    for name in names:  # in this process: a broken kata file or a missing name is reported as such
        getattr(kata, name)
    if "gloo" not in _LAUNCHES:
        _LAUNCHES["gloo"] = _launch(CPU_SCENARIOS, WORLD, "gloo")
    outcomes = _LAUNCHES["gloo"][key]
    if any(o[0] != "ok" for o in outcomes):
        _raise_failure(outcomes, f"{' / '.join(names)} on {WORLD} gloo ranks")
    return [o[1] for o in outcomes]


# ---------------------------------------------------------------- shared models, data and oracles


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _mlp(seed: int) -> nn.Module:
    """A small float64 model whose output row depends on its input row alone."""
    with _seeded(seed):
        return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()


def _data(rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 3, generator=generator, dtype=torch.float64)
    y = torch.randn(rows, 2, generator=generator, dtype=torch.float64)
    return x, y


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _gd_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float) -> float:
    """Oracle: one plain gradient-descent step on the mean squared error; returns the loss before it."""
    params = list(model.parameters())
    loss = ((model(x) - y) ** 2).mean()
    grads = torch.autograd.grad(loss, params)
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            p -= lr * g
    return loss.item()


def _close(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.allclose(x, y, rtol=RTOL, atol=ATOL) for x, y in zip(a, b, strict=True))


def _assert_params(
    got: list[torch.Tensor],
    expected: list[torch.Tensor],
    what: str,
    cause: str,
    bugs: dict[str, Callable[[], list[torch.Tensor]]],
) -> None:
    """Compare with the oracle; on a mismatch, name the typical bug whose training gives exactly `got`."""
    if not _close(got, expected):
        for bug, train in bugs.items():
            if _close(got, train()):
                cause = f"these are exactly the weights that code with this bug gives: {bug}"
                break
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert_close(g, e, rtol=RTOL, atol=ATOL, what=f"{what}, parameter {i}", likely_cause=cause)


def _assert_replicas_identical(results: list[dict], what: str, cause: str) -> None:
    for rank, result in enumerate(results[1:], start=1):
        for i, (a, b) in enumerate(zip(results[0]["params"], result["params"], strict=True)):
            assert_close(
                b,
                a,
                rtol=0,
                atol=ATOL,
                what=f"{what}: parameter {i} on rank {rank} against rank 0",
                likely_cause=cause,
            )


# ---------------------------------------------------------------- shard_indices


@contextlib.contextmanager
def _distributed_sampler_forbidden() -> Iterator[None]:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(
            "shard_indices must compute the shard by hand: it used torch.utils.data.DistributedSampler, "
            "which is the oracle it is graded against"
        )

    saved = DistributedSampler.__init__, DistributedSampler.__iter__
    DistributedSampler.__init__, DistributedSampler.__iter__ = refuse, refuse  # type: ignore[method-assign]
    try:
        yield
    finally:
        DistributedSampler.__init__, DistributedSampler.__iter__ = saved  # type: ignore[method-assign]


def _sampler_indices(
    n: int,
    rank: int,
    world_size: int,
    epoch: int,
    seed: int = 0,
    drop_last: bool = False,
    shuffle: bool = True,
) -> list[int]:
    sampler = DistributedSampler(
        range(n), num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
    )
    sampler.set_epoch(epoch)
    return list(sampler)


def _shard(*args: object, **kwargs: object) -> list[int]:
    with _distributed_sampler_forbidden():
        return kata.shard_indices(*args, **kwargs)


def test_shard_indices_equals_distributed_sampler() -> None:
    # A fixed sweep rather than hypothesis: thousands of cheap cases, and no engine start-up per kata process.
    for n in (1, 2, 3, 5, 8, 11, 16, 23):
        for world_size in (1, 2, 3, 5):
            for drop_last in (False, True):
                if drop_last and n < world_size:
                    continue  # DistributedSampler would give every rank nothing
                epoch, seed = (n + world_size) % 4, 17 * n + world_size
                for rank in range(world_size):
                    expected = _sampler_indices(n, rank, world_size, epoch, seed, drop_last)
                    got = _shard(n, rank, world_size, epoch, seed=seed, drop_last=drop_last)
                    assert got == expected, (
                        f"shard_indices({n}, rank={rank}, world_size={world_size}, epoch={epoch}, "
                        f"seed={seed}, drop_last={drop_last}) should be DistributedSampler's {expected}; got "
                        f"{got!r}. Likely cause: the shuffle must come from a torch.Generator seeded with "
                        f"seed + epoch (a randperm of all {n} indices), padded by wrapping around to a "
                        f"multiple of world_size (or cut, with drop_last), then every world_size-th index "
                        f"starting at rank"
                    )


def test_shard_indices_are_disjoint_and_cover_the_data() -> None:
    n, world_size = 10, 3
    shards = [_shard(n, rank, world_size, epoch=1, seed=7) for rank in range(world_size)]
    everything = [i for shard in shards for i in shard]
    assert sorted(set(everything)) == list(range(n)), (
        f"the {world_size} ranks' shards of a {n}-item dataset should together cover every index; they "
        f"cover {sorted(set(everything))} ({shards}). Likely cause: each rank shuffling with its own seed "
        f"(seed + rank): the shards must be slices of ONE permutation, the same on every rank"
    )
    assert len(everything) == 12 and len(set(everything)) == n and all(len(s) == 4 for s in shards), (
        f"with drop_last=False, {n} items on {world_size} ranks should give 4 indices per rank, 2 of the 12 "
        f"repeated as padding; got {shards}. Likely cause: overlapping slices (a rank-dependent seed, or "
        f"contiguous blocks that overlap), or no padding (unequal shards make one rank wait in a collective)"
    )


def test_shard_indices_pads_by_wrapping_around_and_drops_tail() -> None:
    for n, world_size in ((2, 5), (7, 3)):
        expected = [_sampler_indices(n, rank, world_size, 0) for rank in range(world_size)]
        got = [_shard(n, rank, world_size, 0) for rank in range(world_size)]
        assert got == expected, (
            f"{n} items on {world_size} ranks, drop_last=False: expected {expected}, got {got}. Likely "
            f"cause: the padding must wrap around the shuffled list as many times as needed, so every rank "
            f"gets ceil({n} / {world_size}) = {math.ceil(n / world_size)} indices"
        )
    got = [_shard(7, rank, 3, 0, drop_last=True) for rank in range(3)]
    expected = [_sampler_indices(7, rank, 3, 0, drop_last=True) for rank in range(3)]
    assert got == expected, (
        f"7 items on 3 ranks, drop_last=True: expected {expected} (2 each, the permutation's tail left out), "
        f"got {got}. Likely cause: drop_last keeps floor(7 / 3) * 3 = 6 items of the permutation, no padding"
    )


def test_shard_indices_change_with_the_epoch() -> None:
    epochs = [_shard(16, 0, 2, epoch, seed=3) for epoch in range(3)]
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2], (
        f"rank 0's indices for epochs 0, 1, 2 should differ (a new shuffle every epoch); got {epochs}. "
        f"Likely cause: the shuffle ignores the epoch, which is what forgetting sampler.set_epoch(epoch) "
        f"does: every epoch replays epoch 0's order. Seed the generator with seed + epoch"
    )
    again = _shard(16, 0, 2, 1, seed=3)
    assert again == epochs[1], (
        f"the same (rank, epoch, seed) should always give the same indices: {epochs[1]}, then {again}. "
        f"Likely cause: drawing from the global RNG instead of a generator seeded with seed + epoch"
    )


def test_shard_indices_returns_python_ints_and_leaves_global_rng() -> None:
    state = torch.get_rng_state()
    got = _shard(9, 1, 2, 0)
    assert type(got) is list and all(type(i) is int for i in got), (
        f"shard_indices should return a list of Python ints; got {type(got).__name__} of "
        f"{sorted({type(i).__name__ for i in got})}. Likely cause: returning the tensor, or a list of 0-dim "
        f"tensors; Tensor.tolist() gives ints"
    )
    assert torch.equal(torch.get_rng_state(), state), (
        "shard_indices changed the global RNG; likely cause: torch.manual_seed(seed + epoch) or randperm "
        "without generator=: use a torch.Generator of its own, so the training's randomness is not reset"
    )


@pytest.mark.parametrize(
    "args",
    [(4, 2, 2, 0), (4, -1, 2, 0), (4, 0, 0, 0), (0, 0, 2, 0)],
    ids=["rank=ws", "rank<0", "ws=0", "empty"],
)
def test_shard_indices_rejects_impossible_arguments(args: tuple[int, int, int, int]) -> None:
    with pytest.raises(ValueError):
        _shard(*args)


# ---------------------------------------------------------------- average_gradients


@contextlib.contextmanager
def _ddp_forbidden(task: str) -> Iterator[None]:
    """In a rank: constructing a DistributedDataParallel raises (the hand-written tasks must not use it)."""
    ddp = nn.parallel.DistributedDataParallel

    def refuse(self: object, *args: object, **kwargs: object) -> None:
        raise AssertionError(
            f"{task} must communicate with torch.distributed collectives written by hand; it constructed a "
            f"DistributedDataParallel, which is train_ddp's task"
        )

    saved = ddp.__init__
    ddp.__init__ = refuse  # type: ignore[method-assign]
    try:
        yield
    finally:
        ddp.__init__ = saved  # type: ignore[method-assign]


def _grad_model(rank: int) -> nn.Module:
    with _seeded(100 + rank):
        model = nn.ModuleDict(
            {"a": nn.Linear(3, 4).double(), "b": nn.Linear(4, 2), "unused": nn.Linear(2, 2)}
        )
        for name, p in model.named_parameters():
            if not name.startswith("unused"):
                p.grad = torch.randn_like(p) * (rank + 1)
    return model


def _scenario_average_gradients(rank: int, world_size: int) -> dict:
    model = _grad_model(rank)
    grads = {name: p.grad for name, p in model.named_parameters()}
    grads_in = {name: None if g is None else g.clone() for name, g in grads.items()}
    params_in = {name: p.detach().clone() for name, p in model.named_parameters()}
    with _ddp_forbidden("average_gradients"):
        kata.average_gradients(model)
    return {
        "grads_in": grads_in,
        "grads": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        "same_object": {n: p.grad is grads[n] for n, p in model.named_parameters()},
        "params_changed": [n for n, p in model.named_parameters() if not torch.equal(p, params_in[n])],
    }


@LAUNCH_TIMEOUT
def test_average_gradients_gives_every_rank_the_mean() -> None:
    results = _run("average_gradients", ("average_gradients",))
    for name in ("a.weight", "a.bias", "b.weight", "b.bias"):
        grads = [result["grads_in"][name] for result in results]
        mean = torch.stack([g.double() for g in grads]).mean(0).to(grads[0].dtype)
        total = torch.stack(grads).sum(0)
        for rank, result in enumerate(results):
            got = result["grads"][name]
            if got is not None and torch.allclose(got, total):
                cause = (
                    "this is the SUM over the ranks: dist.all_reduce sums by default; divide by "
                    "dist.get_world_size() (or use op=ReduceOp.AVG)"
                )
            else:
                cause = (
                    f"each rank must end with the element-wise mean of every rank's gradient, in the "
                    f"gradient's own dtype: reduce every parameter's .grad, and divide by the world size "
                    f"({WORLD} here), not by a constant"
                )
            assert_close(
                got,
                mean,
                rtol=1e-6,
                atol=1e-7,
                what=f"rank {rank}'s {name}.grad after average_gradients on {WORLD} ranks",
                likely_cause=cause,
            )


@LAUNCH_TIMEOUT
def test_average_gradients_leaves_parameters_and_missing_grads_alone() -> None:
    for rank, result in enumerate(_run("average_gradients", ("average_gradients",))):
        assert not result["params_changed"], (
            f"average_gradients changed rank {rank}'s parameters {result['params_changed']}; likely cause: "
            f"all-reducing the parameters (p) instead of their gradients (p.grad)"
        )
        filled = [n for n in ("unused.weight", "unused.bias") if result["grads"][n] is not None]
        assert not filled, (
            f"parameters whose .grad is None must be skipped and keep None; on rank {rank} {filled} got a "
            f"gradient. Likely cause: filling missing gradients with zeros before the all-reduce"
        )


@LAUNCH_TIMEOUT
def test_average_gradients_works_in_place() -> None:
    for rank, result in enumerate(_run("average_gradients", ("average_gradients",))):
        replaced = [n for n, same in result["same_object"].items() if not same and "unused" not in n]
        assert not replaced, (
            f"average_gradients replaced rank {rank}'s .grad tensors {replaced} with new ones; the contract "
            f"is in place (an optimizer or DDP's buckets may hold them). Likely cause: p.grad = p.grad / n; "
            f"divide the all-reduced tensor in place (div_)"
        )


# ---------------------------------------------------------------- broadcast_parameters


def _bn_model(rank: int) -> nn.Module:
    with _seeded(200 + rank):
        model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
        for _ in range(rank + 1):  # rank-dependent running statistics and counter
            model(torch.randn(5, 3) + rank)
    return model


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def _scenario_broadcast(rank: int, world_size: int) -> dict:
    results = {}
    for src in (2, None):
        model = _bn_model(rank)
        tensors = dict([*model.named_parameters(), *model.named_buffers()])
        before = _state(model)
        if src is None:
            kata.broadcast_parameters(model)
        else:
            kata.broadcast_parameters(model, src)
        results[src] = {
            "before": before,
            "after": _state(model),
            "same_object": all(
                t is tensors[n] for n, t in [*model.named_parameters(), *model.named_buffers()]
            ),
            "leaves": all(p.is_leaf and p.requires_grad and p.grad_fn is None for p in model.parameters()),
        }
    return results


@LAUNCH_TIMEOUT
@pytest.mark.parametrize("src", [2, None], ids=["src=2", "default src"])
def test_broadcast_parameters_copies_src_parameters(src: int | None) -> None:
    results = _run("broadcast", ("broadcast_parameters",))
    origin = 0 if src is None else src
    expected = results[origin][src]["before"]
    for rank, result in enumerate(results):
        got = result[src]["after"]
        for name in ("0.weight", "0.bias", "1.weight", "1.bias"):
            assert torch.equal(got[name], expected[name]), (
                f"after broadcast_parameters(model{'' if src is None else f', {src}'}), rank {rank}'s {name} "
                f"should be rank {origin}'s, bit for bit; it is not. Likely cause: an all_reduce (a mean of "
                f"the replicas) instead of dist.broadcast, or "
                f"{'a default src other than 0' if src is None else 'src ignored'}"
            )


@LAUNCH_TIMEOUT
def test_broadcast_parameters_copies_buffers() -> None:
    results = _run("broadcast", ("broadcast_parameters",))
    expected = results[2][2]["before"]
    for rank, result in enumerate(results):
        got = result[2]["after"]
        for name in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
            assert torch.equal(got[name], expected[name]), (
                f"after broadcast_parameters(model, 2), rank {rank}'s buffer {name} should be rank 2's "
                f"({expected[name].tolist()}); got {got[name].tolist()}. Likely cause: only "
                f"model.parameters() was broadcast: BatchNorm's running statistics are buffers "
                f"(model.buffers()), and replicas that differ there evaluate differently"
            )


@LAUNCH_TIMEOUT
def test_broadcast_parameters_works_in_place_on_leaves() -> None:
    for rank, result in enumerate(_run("broadcast", ("broadcast_parameters",))):
        assert result[2]["same_object"], (
            f"broadcast_parameters replaced rank {rank}'s parameter or buffer tensors; the contract is in "
            f"place (an optimizer built before it holds the old ones). Likely cause: assigning new tensors, "
            f"or load_state_dict of a copy: broadcast into the existing tensors"
        )
        assert result[2]["leaves"], (
            f"after broadcast_parameters, rank {rank}'s parameters should still be leaves requiring grad, "
            f"with no grad_fn; likely cause: an out-of-place copy recorded by autograd"
        )


# ---------------------------------------------------------------- data_parallel_train

DPT_STEPS, DPT_ROWS, DPT_LR = 3, 4, 0.3


def _global_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    return _data(WORLD * DPT_ROWS, seed=300 + step)


def _dpt_batches(rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Rank `rank`'s batch of every step: its slice of that step's global batch."""
    rows = slice(rank * DPT_ROWS, (rank + 1) * DPT_ROWS)
    return [(x[rows], y[rows]) for x, y in map(_global_batch, range(DPT_STEPS))]


def _scenario_data_parallel_train(rank: int, world_size: int) -> dict:
    model = _mlp(10 + rank)  # the replicas start different, as after a rank-dependent seed
    for p in model.parameters():
        p.grad = torch.full_like(p, 5.0)  # stale gradients some earlier code left behind
    batches = _dpt_batches(rank)
    before = [(x.clone(), y.clone()) for x, y in batches]
    with _ddp_forbidden("data_parallel_train"):
        losses = kata.data_parallel_train(model, batches, DPT_LR)
    unchanged = all(
        torch.equal(x, x0) and torch.equal(y, y0) and not x.requires_grad
        for (x, y), (x0, y0) in zip(batches, before, strict=True)
    )
    return {"params": _params(model), "losses": losses, "batches_unchanged": unchanged}


def _dpt_oracle(
    start_seed: int = 10, lr: float = DPT_LR, own_rows_of: int | None = None
) -> tuple[list, list]:
    """One process, SGD on every global batch (or, for a bug, on rank `own_rows_of`'s rows only)."""
    model = _mlp(start_seed)
    losses = []
    for step in range(DPT_STEPS):
        x, y = _global_batch(step)
        if own_rows_of is not None:
            rows = slice(own_rows_of * DPT_ROWS, (own_rows_of + 1) * DPT_ROWS)
            x, y = x[rows], y[rows]
        losses.append(_gd_step(model, x, y, lr))
    return _params(model), losses


def _dpt_without_broadcast() -> list[list[torch.Tensor]]:
    """The bug: each replica starts from its own weights; every step applies the mean of their gradients."""
    replicas = [_mlp(10 + rank) for rank in range(WORLD)]
    for step in range(DPT_STEPS):
        grads = []
        for rank, (x, y) in enumerate(batches[step] for batches in map(_dpt_batches, range(WORLD))):
            loss = ((replicas[rank](x) - y) ** 2).mean()
            grads.append(torch.autograd.grad(loss, list(replicas[rank].parameters())))
        with torch.no_grad():
            for replica in replicas:
                for i, p in enumerate(replica.parameters()):
                    p -= DPT_LR * sum(g[i] for g in grads) / WORLD
    return [_params(replica) for replica in replicas]


@LAUNCH_TIMEOUT
def test_data_parallel_train_matches_one_process_on_the_global_batch() -> None:
    results = _run("data_parallel_train", ("data_parallel_train",))
    expected, _ = _dpt_oracle()
    for rank, result in enumerate(results):
        bugs = {
            "the gradients are summed over the ranks, not averaged (a world_size-fold learning rate)": (
                lambda: _dpt_oracle(lr=DPT_LR * WORLD)[0]
            ),
            "no broadcast at the start: every replica kept its own initial weights and took the "
            "averaged steps from there": lambda rank=rank: _dpt_without_broadcast()[rank],
            f"no gradient averaging at all: rank {rank} trained on its own rows only": (
                lambda rank=rank: _dpt_oracle(own_rows_of=rank)[0]
            ),
        }
        _assert_params(
            result["params"],
            expected,
            f"rank {rank}'s parameters after data_parallel_train ({DPT_STEPS} steps, {WORLD} ranks of "
            f"{DPT_ROWS} rows, replicas started different, stale gradients present)",
            "every step must be SGD(lr) on the global batch's mean loss: broadcast rank 0's weights first, "
            "clear stale gradients, then backward, average_gradients, step",
            bugs,
        )


@LAUNCH_TIMEOUT
def test_data_parallel_train_keeps_replicas_identical() -> None:
    _assert_replicas_identical(
        _run("data_parallel_train", ("data_parallel_train",)),
        "data_parallel_train",
        "the replicas drifted apart: they started different (broadcast rank 0's parameters before training) "
        "or stepped on different gradients (average every gradient, at every step)",
    )


@LAUNCH_TIMEOUT
def test_data_parallel_train_returns_the_global_loss() -> None:
    _, expected = _dpt_oracle()
    for rank, result in enumerate(_run("data_parallel_train", ("data_parallel_train",))):
        losses = result["losses"]
        assert type(losses) is list and all(type(v) is float for v in losses), (
            f"data_parallel_train should return a list of Python floats on rank {rank}; got {losses!r}. "
            f"Likely cause: loss tensors instead of .item()"
        )
        assert losses == pytest.approx(expected, rel=1e-9), (
            f"rank {rank}'s losses should be the global batch's loss before each step, {expected}, the same "
            f"on every rank; got {losses}. Likely cause: returning this rank's local loss: all-reduce it and "
            f"divide by the world size (a loss logged on rank 0 alone is only rank 0's share)"
        )
        assert result["batches_unchanged"], f"data_parallel_train changed rank {rank}'s batches"


# ---------------------------------------------------------------- train_ddp

DDP_N, DDP_EPOCHS, DDP_BATCH, DDP_LR, DDP_SEED = 11, 3, 3, 0.2, 5


def _ddp_dataset() -> TensorDataset:
    return TensorDataset(*_data(DDP_N, seed=400))


def _scenario_train_ddp(rank: int, world_size: int, device: str = "cpu") -> dict:
    if device == "cuda":
        torch.cuda.set_device(rank)
        device = f"cuda:{rank}"
    model = _mlp(20 + rank).to(device)  # the replicas start different
    wrapper = kata.train_ddp(model, _ddp_dataset(), DDP_EPOCHS, DDP_BATCH, DDP_LR, DDP_SEED)
    return {
        "params": [p.cpu() for p in _params(model)],
        "wrapper": type(wrapper).__name__,
        "is_ddp": isinstance(wrapper, nn.parallel.DistributedDataParallel),
        "wraps_model": getattr(wrapper, "module", None) is model,
    }


def _ddp_oracle(
    world_size: int = WORLD, order: Callable[[int, int], list[int]] | None = None
) -> list[torch.Tensor]:
    """One process on the global batches; `order(rank, epoch)` gives a rank's indices (default: torch's)."""
    order = order or (lambda rank, epoch: _sampler_indices(DDP_N, rank, world_size, epoch, DDP_SEED))
    x, y = _ddp_dataset().tensors
    model = _mlp(20)
    for epoch in range(DDP_EPOCHS):
        shards = [order(rank, epoch) for rank in range(world_size)]
        for start in range(0, len(shards[0]), DDP_BATCH):
            rows = [i for shard in shards for i in shard[start : start + DDP_BATCH]]
            _gd_step(model, x[rows], y[rows], DDP_LR)
    return _params(model)


DDP_BUGS = {
    "sampler.set_epoch(epoch) is never called, so every epoch replays epoch 0's order": lambda: _ddp_oracle(
        order=lambda rank, epoch: _sampler_indices(DDP_N, rank, WORLD, 0, DDP_SEED)
    ),
    "the sampler's seed is not the given one (DistributedSampler(dataset, seed=seed))": lambda: _ddp_oracle(
        order=lambda rank, epoch: _sampler_indices(DDP_N, rank, WORLD, epoch, 0)
    ),
    "the sampler's seed depends on the rank, so the shards overlap": lambda: _ddp_oracle(
        order=lambda rank, epoch: _sampler_indices(DDP_N, rank, WORLD, epoch, DDP_SEED + rank)
    ),
    "the sampler does not shuffle (shuffle=False)": lambda: _ddp_oracle(
        order=lambda rank, epoch: _sampler_indices(DDP_N, rank, WORLD, epoch, shuffle=False)
    ),
}


@LAUNCH_TIMEOUT
def test_train_ddp_matches_one_process_on_the_global_batches() -> None:
    expected = _ddp_oracle()
    for rank, result in enumerate(_run("train_ddp", ("train_ddp",))):
        _assert_params(
            result["params"],
            expected,
            f"rank {rank}'s parameters after train_ddp ({DDP_EPOCHS} epochs of {DDP_N} items, batch_size "
            f"{DDP_BATCH}, {WORLD} ranks that started different)",
            "each epoch must call sampler.set_epoch(epoch) on a DistributedSampler(dataset, seed=seed) that "
            "the DataLoader uses (sampler=, no shuffle=), and every batch is one SGD(lr) step on the mean "
            "loss, through the DDP wrapper (a forward that bypasses it averages nothing)",
            DDP_BUGS,
        )


@LAUNCH_TIMEOUT
def test_train_ddp_keeps_replicas_identical_and_returns_the_wrapper() -> None:
    results = _run("train_ddp", ("train_ddp",))
    _assert_replicas_identical(
        results,
        "train_ddp",
        "the replicas drifted apart: the forward pass did not go through the DistributedDataParallel "
        "wrapper (model(x) instead of ddp_model(x)), so no gradient was averaged",
    )
    for rank, result in enumerate(results):
        assert result["is_ddp"] and result["wraps_model"], (
            f"train_ddp should return the DistributedDataParallel whose .module is the given model; rank "
            f"{rank} returned a {result['wrapper']} whose .module is "
            f"{'' if result['wraps_model'] else 'not '}that model. Likely cause: returning the bare model, "
            f"or wrapping a copy of it"
        )


@pytest.mark.cuda
@pytest.mark.timeout(300)
def test_train_ddp_with_nccl_on_two_gpus() -> None:
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    kata.train_ddp  # noqa: B018  a broken kata file is reported here, in this process
    outcomes = _launch([("train_ddp", _scenario_train_ddp, ("cuda",))], 2, "nccl")["train_ddp"]
    if any(o[0] != "ok" for o in outcomes):
        _raise_failure(outcomes, "train_ddp on 2 NCCL ranks")
    expected = _ddp_oracle(world_size=2)
    for rank, outcome in enumerate(outcomes):
        _assert_params(
            outcome[1]["params"],
            expected,
            f"rank {rank}'s parameters after train_ddp on cuda:{rank} with NCCL",
            "each batch must be moved to the model's device, and the training must be the CPU one",
            {},
        )


# ---------------------------------------------------------------- ddp_accumulated_step

ACC_LR = 0.25
ACC_SIZES = ([3, 1], [2, 2], [1, 3])  # each rank's micro-batches: 4 rows per rank, split differently


def _acc_micro_batches(rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    x, y = _data(4 * WORLD, seed=500)
    out, start = [], 4 * rank
    for size in ACC_SIZES[rank]:
        out.append((x[start : start + size], y[start : start + size]))
        start += size
    return out


def _scenario_accumulated_step(rank: int, world_size: int) -> dict:
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    model = _mlp(30)
    ddp_model = nn.parallel.DistributedDataParallel(model)
    calls = []

    def counting_hook(state, bucket):  # type: ignore[no-untyped-def]
        calls.append(bucket.index())
        return allreduce_hook(state, bucket)

    ddp_model.register_comm_hook(None, counting_hook)
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)  # stale gradients some earlier code left behind
    optimizer = torch.optim.SGD(ddp_model.parameters(), lr=ACC_LR)
    micro_batches = _acc_micro_batches(rank)
    before = [(x.clone(), y.clone()) for x, y in micro_batches]
    loss = kata.ddp_accumulated_step(ddp_model, optimizer, micro_batches)
    params = _params(model)
    learner_calls = len(calls)
    calls.clear()
    ddp_model(micro_batches[0][0]).sum().backward()  # one ordinary backward: the hook calls of one sync
    unchanged = all(
        torch.equal(x, x0) and torch.equal(y, y0)
        for (x, y), (x0, y0) in zip(micro_batches, before, strict=True)
    )
    return {
        "params": params,
        "calls": learner_calls,
        "per_sync": len(calls),
        "loss": loss,
        "unchanged": unchanged,
    }


def _acc_oracle(weight: Callable[[int, int], float] | None = None) -> list[torch.Tensor]:
    """One SGD step on the big batch; `weight(rank, i)` replaces the micro-batch losses' weights (a bug)."""
    model = _mlp(30)
    if weight is None:
        _gd_step(model, *_data(4 * WORLD, seed=500), ACC_LR)
        return _params(model)
    params = list(model.parameters())
    total = [torch.zeros_like(p) for p in params]
    for rank in range(WORLD):
        for i, (x, y) in enumerate(_acc_micro_batches(rank)):
            loss = ((model(x) - y) ** 2).mean() * weight(rank, i)
            for t, g in zip(total, torch.autograd.grad(loss, params), strict=True):
                t += g / WORLD
    with torch.no_grad():
        for p, g in zip(params, total, strict=True):
            p -= ACC_LR * g
    return _params(model)


def _acc_local_step(rank: int) -> list[torch.Tensor]:
    """The bug: no synchronisation at all, one SGD step on this rank's rows only."""
    model = _mlp(30)
    x, y = _data(4 * WORLD, seed=500)
    _gd_step(model, x[4 * rank : 4 * rank + 4], y[4 * rank : 4 * rank + 4], ACC_LR)
    return _params(model)


ACC_BUGS = {
    "the micro-batch losses are not scaled, so the gradient is the SUM of the micro-batch means": (
        lambda: _acc_oracle(lambda rank, i: 1.0)
    ),
    "every micro-batch loss is scaled by 1/k, right only when the micro-batches have equal sizes: weight "
    "each by its share of the rank's rows": lambda: _acc_oracle(lambda rank, i: 0.5),
}


@LAUNCH_TIMEOUT
def test_ddp_accumulated_step_equals_one_big_batch_step() -> None:
    expected = _acc_oracle()
    for rank, result in enumerate(_run("ddp_accumulated_step", ("ddp_accumulated_step",))):
        never_synced = {
            "no gradient was synchronised (no_sync() around the last micro-batch too, or a forward through "
            "ddp_model.module): this rank stepped on its own rows only": lambda rank=rank: _acc_local_step(
                rank
            )
        }
        _assert_params(
            result["params"],
            expected,
            f"rank {rank}'s parameters after ddp_accumulated_step (micro-batches of {ACC_SIZES[rank]} rows, "
            f"stale gradients present)",
            "one SGD step on the mean loss over ALL ranks' rows: clear stale gradients first, weight each "
            "micro-batch's loss by its share of the rank's rows, forward through the DDP wrapper and let "
            "its last backward average the gradients",
            {**ACC_BUGS, **never_synced},
        )


@LAUNCH_TIMEOUT
def test_ddp_accumulated_step_all_reduces_only_on_the_last_micro_batch() -> None:
    for rank, result in enumerate(_run("ddp_accumulated_step", ("ddp_accumulated_step",))):
        calls, per_sync = result["calls"], result["per_sync"]
        if calls == 0:
            cause = (
                "no gradient was ever synchronised: no_sync() around the LAST micro-batch too (or a forward "
                "through ddp_model.module, which DDP never sees), so each rank stepped on its own gradient"
            )
        elif calls > per_sync:
            cause = (
                f"{calls // max(per_sync, 1)} synchronised backward passes: every micro-batch but the last "
                f"must run inside `with ddp_model.no_sync():`, its forward and its backward"
            )
        else:
            cause = "the bucket all-reduces of exactly one backward pass were expected"
        assert calls == per_sync, (
            f"rank {rank}: ddp_accumulated_step with 2 micro-batches should all-reduce once, in the last "
            f"backward ({per_sync} bucket all-reduce(s), what one ordinary backward of this model makes); "
            f"DDP's communication hook ran {calls} time(s). Likely cause: {cause}"
        )


@LAUNCH_TIMEOUT
def test_ddp_accumulated_step_returns_this_ranks_loss() -> None:
    x, y = _data(4 * WORLD, seed=500)
    for rank, result in enumerate(_run("ddp_accumulated_step", ("ddp_accumulated_step",))):
        rows = slice(4 * rank, 4 * rank + 4)
        expected = ((_mlp(30)(x[rows]) - y[rows]) ** 2).mean().item()
        loss = result["loss"]
        assert type(loss) is float and loss == pytest.approx(expected, rel=1e-9), (
            f"rank {rank}: ddp_accumulated_step should return the mean loss over this rank's 4 rows before "
            f"the update, {expected!r}, as a Python float; got {loss!r}. Likely cause: the last "
            f"micro-batch's loss alone, unweighted micro-batch losses summed, or a tensor instead of a float"
        )
        assert result["unchanged"], f"ddp_accumulated_step changed rank {rank}'s micro-batches"


# Every CPU scenario, run in this order by ONE launch of WORLD gloo ranks (see the module docstring).
CPU_SCENARIOS: list[tuple[str, Callable, tuple]] = [
    ("average_gradients", _scenario_average_gradients, ()),
    ("broadcast", _scenario_broadcast, ()),
    ("data_parallel_train", _scenario_data_parallel_train, ()),
    ("train_ddp", _scenario_train_ddp, ()),
    ("ddp_accumulated_step", _scenario_accumulated_step, ()),
]
