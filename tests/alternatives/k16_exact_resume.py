"""Independent alternative solution of kata 16 (checkpoints that resume bit for bit)."""

from __future__ import annotations

import os
import random
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

WRAPPER_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.")


def _shared_prefix(keys: list[str]) -> str | None:
    """The first wrapper prefix that every key starts with, or None (also for no keys at all)."""
    if not keys:
        return None
    return next((pre for pre in WRAPPER_PREFIXES if all(key.startswith(pre) for key in keys)), None)


def clean_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Peel the shared wrapper prefixes off the keys, one layer at a time, keeping values and order."""
    keys = list(state_dict.keys())
    cut = 0  # how many leading characters every key loses
    rest = keys
    while (pre := _shared_prefix(rest)) is not None:
        cut += len(pre)
        rest = [key[len(pre) :] for key in rest]
    out: OrderedDict[str, Tensor] = OrderedDict()
    for key in keys:
        out[key[cut:]] = state_dict[key]
    meta = getattr(state_dict, "_metadata", None)
    if meta is not None:  # keep the per-module version info, re-keyed like the entries
        full = keys[0][:cut] if keys else ""
        new_meta: OrderedDict[str, Any] = OrderedDict()
        for name, value in meta.items():
            dotted = name + "."
            if dotted.startswith(full):  # the wrappers' own entries (shorter names) are dropped
                new_meta[dotted[len(full) :][:-1]] = value
        out._metadata = new_meta  # type: ignore[attr-defined]
    return out


def _cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def rng_state() -> dict[str, Any]:
    """Copies of every global generator's state, made of tensors and plain Python values only."""
    np_state = np.random.get_state(legacy=False)
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch_cpu": torch.default_generator.get_state(),
        "torch_cuda": [torch.cuda.get_rng_state(dev) for dev in range(_cuda_count())],
        "python": {"version": int(py_version), "internal": list(py_internal), "gauss_next": py_gauss},
        "numpy": {
            "bit_generator": str(np_state["bit_generator"]),
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
    }


def _cpu_bytes(t: Tensor) -> Tensor:
    """A CPU uint8 copy, whatever device the tensor came back on."""
    return t.detach().to(device="cpu", dtype=torch.uint8).clone()


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore a snapshot taken by `rng_state`, on whatever device its tensors arrived."""
    torch.default_generator.set_state(_cpu_bytes(state["torch_cpu"]))
    saved_cuda = state.get("torch_cuda") or []
    for dev in range(min(len(saved_cuda), _cuda_count())):
        torch.cuda.set_rng_state(_cpu_bytes(saved_cuda[dev]), dev)
    py = state["python"]
    gauss = py["gauss_next"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["internal"]), gauss))
    npy = state["numpy"]
    key = npy["key"]
    key_arr = key.detach().cpu().numpy() if isinstance(key, Tensor) else np.asarray(key)
    np.random.set_state(
        {
            "bit_generator": npy["bit_generator"],
            "state": {"key": key_arr.astype(np.uint32), "pos": int(npy["pos"])},
            "has_gauss": int(npy["has_gauss"]),
            "gauss": float(npy["gauss"]),
        }
    )


def _micro_batch(run: Any, j: int) -> tuple[Tensor, Tensor]:
    """Rows of micro-batch j of the stream, drawing the epoch's permutation at its first micro-batch."""
    n = run.x.shape[0]
    b = run.micro_batch_size
    per_epoch = n // b
    p = j % per_epoch
    if p == 0 or run.order is None:
        run.order = torch.randperm(n, generator=run.generator)
    idx = run.order.narrow(0, p * b, b)
    xs = torch.index_select(run.x, 0, idx.to(run.x.device))
    ys = torch.index_select(run.y, 0, idx.to(run.y.device))
    return xs, ys


def train_steps(run: Any, n_steps: int, on_step: Callable[[Any], None] | None = None) -> list[float]:
    """Resumable loop: each step clears the grads, accumulates k scaled micro-batch backward passes,
    unscales, clips, steps through the scaler, then the scheduler and the counter."""
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    model: nn.Module = run.model
    k = int(run.accum_steps)
    history: list[float] = []
    for _ in range(n_steps):
        model.train()
        for p in model.parameters():
            p.grad = None
        for group in run.optimizer.param_groups:
            for p in group["params"]:
                p.grad = None
        total = 0.0
        for i in range(k):
            xs, ys = _micro_batch(run, run.step * k + i)
            loss = (model(xs) - ys).square().mean()
            total += loss.item()
            run.scaler.scale(loss / k).backward()
        run.scaler.unscale_(run.optimizer)
        if run.max_norm is not None:
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
            torch.nn.utils.clip_grads_with_norm_(model.parameters(), run.max_norm, norm)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        with warnings.catch_warnings():
            # A skipped first update makes the scheduler warn about the call order; it is intended.
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
            run.scheduler.step()
        run.step += 1
        history.append(total / k)
        if on_step is not None:
            on_step(run)
    return history


def _bare(model: nn.Module) -> nn.Module:
    """The model inside DDP / DataParallel / torch.compile wrappers, found by type, not by attribute name."""
    wrappers: list[type] = [nn.DataParallel]
    ddp = getattr(nn.parallel, "DistributedDataParallel", None)
    if ddp is not None:
        wrappers.append(ddp)
    compiled = getattr(getattr(torch, "_dynamo", None), "eval_frame", None)
    if compiled is not None and hasattr(compiled, "OptimizedModule"):
        wrappers.append(compiled.OptimizedModule)
    while isinstance(model, tuple(wrappers)):
        model = model._orig_mod if hasattr(model, "_orig_mod") else model.module
    return model


def save_checkpoint(path: str | os.PathLike[str], run: Any) -> None:
    """Write model, optimizer, scheduler, scaler, counter, data position and all RNGs, atomically."""
    order = run.order
    payload = {
        "format": 1,
        "model": clean_state_dict(run.model.state_dict()),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "step": int(run.step),
        "order": None if order is None else order.detach().to("cpu", torch.int64),
        "generator": run.generator.get_state(),
        "rng": rng_state(),
    }
    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(prefix=".ckpt-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_checkpoint(
    path: str | os.PathLike[str],
    run: Any,
    map_location: str | torch.device | Callable | dict[str, str] | None = None,
) -> None:
    """Read the file with the safe unpickler and restore every piece of it in place into `run`."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    _bare(run.model).load_state_dict(clean_state_dict(ckpt["model"]), strict=True)
    run.optimizer.load_state_dict(ckpt["optimizer"])
    for group in run.optimizer.param_groups:
        if group.get("capturable") or group.get("fused"):
            continue
        for p in group["params"]:
            st = run.optimizer.state.get(p, {})
            step = st.get("step")
            if isinstance(step, Tensor) and step.device.type != "cpu":
                st["step"] = step.cpu()  # a non-capturable optimizer keeps its step count on the CPU
    run.scheduler.load_state_dict(ckpt["scheduler"])
    run.scaler.load_state_dict(ckpt["scaler"])
    run.step = int(ckpt["step"])
    order = ckpt["order"]
    run.order = None if order is None else order.to(device="cpu", dtype=torch.int64).clone()
    run.generator.set_state(_cpu_bytes(ckpt["generator"]))
    set_rng_state(ckpt["rng"])
