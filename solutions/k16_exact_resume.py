"""Checkpoints that resume bit for bit

Interview question: How do you checkpoint training so that resuming is bit-for-bit identical to not stopping?

Difficulty 4/5, about 75 minutes, after katas 7 and 10.

The idea
========
A training run is much more than its weights. Stop it after step N, start a new process, and the next
update depends on everything the old process had in memory at that moment:

- the model's parameters and buffers (`model.state_dict()`);
- the optimizer's state: Adam's two moments and its step count per parameter, SGD's momentum buffers,
  and every param group's current `lr` (`optimizer.state_dict()`). Reset Adam's moments and the next
  steps are bias-corrected from scratch: large, noisy updates exactly where the run was settling;
- the scheduler's position (`scheduler.state_dict()`: `last_epoch`, `base_lrs`, ...). A fresh warm-up
  scheduler restarts the warm-up: the learning rate drops to its start factor and climbs again;
- the `GradScaler`'s scale and growth tracker (`scaler.state_dict()`). A fresh scaler starts again at
  65536 and may skip the next steps as inf/nan while it backs off;
- every random number generator the loop draws from: torch's CPU generator (dropout on the CPU, random
  crops, `randperm` without a generator, a `DataLoader` iterator's base seed), one CUDA generator per
  GPU (dropout on the GPU), Python's `random` and numpy's global generator (data augmentation libraries
  use both), and any `torch.Generator` of your own, such as a sampler's;
- the data position: which permutation the current epoch follows and how far into it the run is. A
  resume that starts the epoch over trains twice on some examples and never on others; one that draws a
  new permutation for the half-finished epoch does the same less visibly;
- the step counter, which the schedule, logging and the data position are all read from.

Save after a step is complete: after `optimizer.step()`, `scaler.update()`, `scheduler.step()` and the
counter's increment. Saved a moment earlier, the scheduler (or the counter) is one step behind the
weights, and the resumed run is off by one forever.

Bit for bit is achievable on a CPU and, with care, on one GPU: the same operations on the same shapes in
the same order give the same bits. So a resumed run must replay the exact sequence of random draws, and
gradient accumulation must run the same micro-batches: accumulating k micro-batches (each loss divided
by k when they are the same size) equals one big batch up to float rounding, but "up to rounding" is
not "bit for bit", so a run that resumes with another accumulation setting has already diverged. On a
GPU some kernels are nondeterministic (atomics in scatter/index_add, some cuBLAS and cuDNN algorithms):
`torch.use_deterministic_algorithms(True)` (with `CUBLAS_WORKSPACE_CONFIG=:4096:8`) and
`torch.backends.cudnn.benchmark = False` make them repeatable, at some speed cost.

The file itself has three traps:
- `torch.load` unpickles, and unpickling can run any code (an object's `__reduce__` names a function to
  call). Since PyTorch 2.6, `torch.load` defaults to `weights_only=True`: an unpickler that accepts only
  tensors, primitive types (int, float, bool, str, bytes, None), tuples, lists, dicts, OrderedDicts and
  a few torch types, and raises `pickle.UnpicklingError` for anything else. So every value in a
  checkpoint has to be one of those: Python's `random.getstate()` is a tuple of ints and passes, but
  `np.random.get_state()` holds a numpy array and is refused (convert it to a tensor or a list). Never
  answer the error with `weights_only=False` on a file you did not write yourself;
  `torch.serialization.add_safe_globals([...])` allows a specific class you trust.
- Tensors come back on the device they were saved from, unless `map_location` says otherwise: a
  checkpoint written on a GPU does not load on a CPU-only machine without `map_location="cpu"`. And
  some consumers insist on the CPU wherever the tensor arrived: `torch.set_rng_state` and
  `Generator.set_state` take a CPU `uint8` tensor only.
- A wrapped model saves prefixed keys: `DistributedDataParallel` stores the model as `.module`, so every
  key starts with `module.`; `torch.compile` returns an `OptimizedModule` holding it as `._orig_mod`, so
  every key starts with `_orig_mod.`; wrap both and the prefixes nest. Load such a file into the bare
  model and `load_state_dict` fails on every key (or, with `strict=False`, silently loads nothing).
  Strip the prefix from the START of each key (`str.removeprefix`): `key.replace("module.", "")`
  also mangles `encoder.module.weight`, a submodule that happens to be called `module`. Saving
  `model.module.state_dict()` in the first place avoids the problem.

What interviewers probe
=======================
- The list of state, and the two that people forget: the RNG states and the data position.
- Why the optimizer state matters even though the weights are restored (Adam's moments and bias
  correction; momentum), and why the scheduler's does (warm-up restarts; the lr jumps).
- Where in the loop the checkpoint is taken, what the step counter counts (optimizer steps, not
  micro-batches), and how the data position follows from it.
- `weights_only=True`: what it protects against, what it accepts, and the numpy-array trap.
- `map_location`, the CPU-only RNG setters, and `module.` / `_orig_mod.` prefixes.
- What makes GPU runs nondeterministic even with every state saved, and what it costs to fix.

A run, in this kata
===================
The functions below work on a "run": any object with these attributes (the grader uses a dataclass).

    model             an nn.Module (may use dropout, so torch's global generator matters)
    optimizer         a torch.optim.Optimizer over model's parameters
    scheduler         an LRScheduler over optimizer, stepped once per optimizer step
    scaler            a torch.amp.GradScaler (enabled or not; float32 training, so it only ever skips
                      steps whose gradients are inf/nan)
    x, y              the training set: N rows, y the regression targets
    generator         a CPU torch.Generator: the only source of the data order
    micro_batch_size  b, rows per micro-batch (1 <= b <= N)
    accum_steps       k >= 1, micro-batches per optimizer step
    max_norm          a float to clip the total gradient norm to, or None for no clipping
    step              optimizer steps done so far (an int, 0 for a new run)
    order             the permutation of the epoch in progress (int64, on the CPU), None for a new run

For example: `SimpleNamespace(model=net, optimizer=opt, scheduler=sched,
scaler=torch.amp.GradScaler("cpu"), x=x, y=y, generator=torch.Generator().manual_seed(0),
micro_batch_size=4, accum_steps=2, max_norm=1.0, step=0, order=None)`.

Your tasks
==========
1. `clean_state_dict(state_dict)` - strip the `module.` / `_orig_mod.` wrapper prefixes.
2. `rng_state()` - a snapshot of every global RNG, in a form `torch.load(weights_only=True)` accepts.
3. `set_rng_state(state)` - restore such a snapshot.
4. `train_steps(run, n_steps, on_step=None)` - the resumable loop: accumulation, GradScaler, clipping,
   scheduler, data order from the run's generator.
5. `save_checkpoint(path, run)` - everything a resume needs, in one file.
6. `load_checkpoint(path, run, map_location=None)` - restore it into a freshly built run, so that
   training on is bit-identical to never having stopped.

Follow-up questions
===================
- What does `torch.load(weights_only=True)` refuse, why did it become the default, and how do you load a
  checkpoint that holds a numpy array?
- A checkpoint was saved from a DDP-wrapped, `torch.compile`d model on 8 GPUs. How do you load it on a
  machine with one CPU and no GPU?
- Why can a resumed GPU run still drift from the uninterrupted one when every state was saved, and what
  can you do about it?
- How do you resume a `DataLoader` in the middle of an epoch, and which random numbers does it draw?
- The job is killed while it writes a checkpoint. What have you lost, and how do you make saving safe?
- What changes when the model and the optimizer state are sharded with FSDP?

Grade this kata: `nox -s check -- 16`. Stuck? `nox -s hint -- 16`.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

# The prefixes wrappers add to every key of a state dict: DistributedDataParallel's and torch.compile's.
WRAPPER_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.")


def clean_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The state dict of the model inside the wrappers: `WRAPPER_PREFIXES` stripped from the keys.

    A wrapper prefixes EVERY key of the model it wraps, so a prefix is removed only when every key of
    the dict starts with it; that is repeated as long as some prefix of `WRAPPER_PREFIXES` is shared by
    every key, so nested wrappers (`module._orig_mod.`, `_orig_mod.module.`, ...) all come off. Only
    the start of a key changes: a wrapper prefix's text further inside a key (a submodule that is called
    `module`) stays. A dict whose keys share no prefix (an unwrapped model's, an empty one) comes back
    with the same keys.

    Returns a new dict (a plain dict or an OrderedDict) with the same number of entries, in the same
    order, each value the very tensor object of the input (not a copy). `state_dict` is left unchanged.
    """
    keys = list(state_dict)
    while keys:
        shared = next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in keys)), None)
        if shared is None:
            break
        keys = [k.removeprefix(shared) for k in keys]
    return dict(zip(keys, state_dict.values(), strict=True))


def rng_state() -> dict[str, Any]:
    """A snapshot of every process-global random number generator.

    Covers torch's CPU generator, every CUDA device's generator when CUDA is available, Python's
    `random` module and numpy's global generator (`np.random.*`), each in full, so that after
    `set_rng_state(snapshot)` every one of them draws exactly what it would have drawn after the
    snapshot was taken: including Python's `random.gauss` and numpy's `standard_normal`, which keep a
    second, cached normal between calls.

    The snapshot is a dict (its keys are up to you) holding only values that `torch.save` writes and
    `torch.load(..., weights_only=True)` reads back without any allowlisting: tensors, Python ints,
    floats, bools, strings, None, and tuples, lists and dicts of those. No numpy object anywhere.
    Taking it draws nothing: no generator advances. Later draws do not change it (it is a copy).
    """
    name, key, pos, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "random": random.getstate(),
        "numpy": {
            "name": str(name),
            "key": torch.from_numpy(key.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Put every global generator back as `rng_state()` found it when it took `state`.

    `state` is what `rng_state()` returned, as it is or after a `torch.save` / `torch.load(...,
    weights_only=True)` round trip, which may have put its tensors on another device (a
    `map_location="cuda"` load): they are restored all the same. CUDA generators are restored when
    `state` holds them and CUDA is available, one per device in order. `state` is left unchanged and can
    be restored any number of times.
    """
    torch.set_rng_state(state["torch"].cpu())
    random.setstate(state["random"])
    saved = state["numpy"]
    np.random.set_state(
        (
            saved["name"],
            saved["key"].cpu().numpy().astype(np.uint32),
            saved["pos"],
            saved["has_gauss"],
            saved["cached_gaussian"],
        )
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def train_steps(run: Any, n_steps: int, on_step: Callable[[Any], None] | None = None) -> list[float]:
    """Train `run` (see "A run, in this kata" above) for `n_steps` more optimizer steps, resumably.

    The data stream. Micro-batches are numbered over the whole run, j = 0, 1, 2, ...; an epoch is
    B = N // micro_batch_size of them (the last N - B * micro_batch_size rows of each permutation are
    left out). Micro-batch j is the rows `order[p * b:(p + 1) * b]` of `run.x` and `run.y`, where
    p = j % B and `order` is the permutation of its epoch. Each epoch's permutation is
    `torch.randperm(N, generator=run.generator)`, drawn when the epoch's first micro-batch (p = 0) is
    needed and not before, and kept in `run.order` until the next epoch's is drawn. Optimizer step s
    (s = `run.step` when it starts, counting from 0) uses micro-batches s * k to s * k + k - 1, with
    k = `run.accum_steps`. So the stream depends only on `run.step`, `run.order` and `run.generator`'s
    state, and calling `train_steps(run, a)` then `train_steps(run, b)` gives bit-identical results to
    `train_steps(run, a + b)`.

    One step: gradients left on the parameters before it play no part; `run.model` is in train mode
    and is called once per micro-batch, on that micro-batch's rows of `run.x` alone, in order, each
    micro-batch's backward pass done before the next one's forward; the step's gradient is that of the
    mean over all k micro-batches of each one's loss `((model(x_j) - y_j) ** 2).mean()` (the big
    batch's MSE), scaled by `run.scaler` for the backward passes. Then the gradients are unscaled and,
    when `run.max_norm` is not None, clipped to that total 2-norm as `torch.nn.utils.clip_grad_norm_`
    clips them (the true gradient, not the scaled one); then `run.scaler` steps the optimizer (skipping
    the update when a gradient is inf or nan) and updates its scale, `run.scheduler` steps once (skipped
    update or not), and `run.step` grows by 1. Only then, when `on_step` is given, `on_step(run)` is
    called: a checkpoint it saves is the state after this complete step.

    Draws no random numbers except the data order (from `run.generator`) and what the model's forward
    pass draws (dropout, from torch's global generator): Python's `random`, numpy and, with a model
    without dropout, torch's global generator are left exactly as they were. Everything is
    deterministic: the same run state and global RNG state give bit-identical parameters.

    Returns the `n_steps` big-batch losses (the mean of the step's k micro-batch losses, measured before
    its update, unscaled), as Python floats; `n_steps=0` changes nothing and returns `[]`.
    Raises ValueError for a negative `n_steps`.
    """
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    n_rows, b, k = run.x.shape[0], run.micro_batch_size, run.accum_steps
    per_epoch = n_rows // b
    params = [p for group in run.optimizer.param_groups for p in group["params"]]
    run.model.train()
    losses = []
    for _ in range(n_steps):
        run.optimizer.zero_grad()
        total = torch.zeros((), device=run.x.device)
        for i in range(k):
            position = (run.step * k + i) % per_epoch
            if position == 0:
                run.order = torch.randperm(n_rows, generator=run.generator)
            rows = run.order[position * b : (position + 1) * b]
            x, y = run.x[rows], run.y[rows]
            loss = ((run.model(x) - y) ** 2).mean()
            run.scaler.scale(loss / k).backward()
            total = total + loss.detach()
        run.scaler.unscale_(run.optimizer)
        if run.max_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, run.max_norm)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        run.step += 1
        losses.append((total / k).item())
        if on_step is not None:
            on_step(run)
    return losses


def save_checkpoint(path: str | os.PathLike[str], run: Any) -> None:
    """Write to `path` everything `load_checkpoint` needs to continue `run` exactly where it is.

    The file is written with `torch.save` and reads back with `torch.load(path, weights_only=True)`
    without any allowlisting (`add_safe_globals`): every value in it is a tensor or a plain Python
    value (see `rng_state`). It holds the state of the model (which may be wrapped, see
    `clean_state_dict`), the optimizer, the scheduler, the scaler, the step counter, the data position
    and the global generators (`rng_state()`). Saving changes nothing: not the run, not a generator.
    An existing file at `path` is replaced.
    """
    torch.save(
        {
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict(),
            "step": run.step,
            "order": run.order,
            "generator": run.generator.get_state(),
            "rng": rng_state(),
        },
        path,
    )


def load_checkpoint(
    path: str | os.PathLike[str],
    run: Any,
    map_location: str | torch.device | Callable | dict[str, str] | None = None,
) -> None:
    """Restore the run saved by `save_checkpoint` at `path` into `run`, a freshly built one.

    `run` has the same structure as the saved run (same architecture, optimizer and scheduler types and
    settings, same data, micro_batch_size, accum_steps and max_norm) but its own initial weights and
    optimizer, scheduler, scaler and generator as built, in a process whose global generators are
    wherever they happen to be. Afterwards:
    - `train_steps(run, m)` gives bit-identical parameters (and losses) to `m` more steps of the saved
      run had it never stopped, and the global generators (torch, CUDA, `random`, numpy) draw what the
      saved process drew right after saving;
    - `run` is in the state the saved run was in: the same parameters, optimizer state and param-group
      settings (`lr` included), scheduler position, scaler scale, `run.step` (an int), `run.order` (an
      int64 CPU tensor, or None) and `run.generator` state;
    - everything was loaded in place: `run.model`, `run.optimizer`, `run.scheduler`, `run.scaler` and
      `run.generator` are the same objects as before, and the optimizer still updates `run.model`'s
      own parameters.
    The saved model may have been wrapped (DDP, `torch.compile`): its weights load into the plain
    `run.model` all the same, every key matched (strictly).

    Security and devices: the file is read with `weights_only=True` semantics, so a file holding any
    other object raises `pickle.UnpicklingError` and no code from it runs. `map_location` is anything
    `torch.load` accepts as one (a device, a string, a dict or a function) and is applied to every tensor
    read from the file; whatever device the tensors arrive on, the generators get CPU state tensors.
    """
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    run.model.load_state_dict(clean_state_dict(checkpoint["model"]))
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    run.scheduler.load_state_dict(checkpoint["scheduler"])
    run.scaler.load_state_dict(checkpoint["scaler"])
    run.step = int(checkpoint["step"])
    order = checkpoint["order"]
    run.order = None if order is None else order.cpu()
    run.generator.set_state(checkpoint["generator"].cpu())
    set_rng_state(checkpoint["rng"])
