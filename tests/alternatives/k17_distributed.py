"""Independent alternative solution of kata 17 (distributed data parallel)."""

from __future__ import annotations

import contextlib
import math

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler


def shard_indices(
    dataset_len: int, rank: int, world_size: int, epoch: int, seed: int = 0, drop_last: bool = False
) -> list[int]:
    """One rank's indices for one epoch, as DistributedSampler gives them, via tensor reshapes."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    if dataset_len < 1:
        raise ValueError(f"dataset_len must be >= 1, got {dataset_len}")
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed + epoch)
    perm = torch.randperm(dataset_len, generator=gen)
    if drop_last:
        per_rank = dataset_len // world_size
        table = perm[: per_rank * world_size]
    else:
        per_rank = -(-dataset_len // world_size)
        reps = -(-(per_rank * world_size) // dataset_len)
        table = perm.repeat(reps)[: per_rank * world_size]
    # Row j of the table holds the j-th index of every rank; column `rank` is this rank's list.
    return [int(i) for i in table.reshape(per_rank, world_size)[:, rank]]


def _groups(tensors: list[Tensor]) -> dict[tuple[torch.device, torch.dtype], list[Tensor]]:
    groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    return groups


def average_gradients(model: nn.Module) -> None:
    """Mean of every gradient over the ranks, with one coalesced all-reduce per (device, dtype)."""
    world_size = dist.get_world_size()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    for group in _groups(grads).values():
        flat = torch.cat([g.detach().reshape(-1) for g in group])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(world_size)
        offset = 0
        with torch.no_grad():
            for g in group:
                n = g.numel()
                g.copy_(flat[offset : offset + n].view(g.shape))
                offset += n


def broadcast_parameters(model: nn.Module, src: int = 0) -> None:
    """Copy rank `src`'s parameters and buffers everywhere, as one raw-byte broadcast per device."""
    state = list(model.parameters()) + list(model.buffers())
    by_device: dict[torch.device, list[Tensor]] = {}
    for t in state:
        by_device.setdefault(t.device, []).append(t)
    is_src = dist.get_rank() == src
    with torch.no_grad():
        for tensors in by_device.values():
            # Raw bytes are bit-exact for every dtype and let one broadcast carry all of them.
            raw = torch.cat([t.detach().reshape(-1).view(torch.uint8) for t in tensors])
            dist.broadcast(raw, src=src)
            if is_src:
                continue
            offset = 0
            for t in tensors:
                nbytes = t.numel() * t.element_size()
                chunk = raw[offset : offset + nbytes].clone()
                t.copy_(chunk.view(t.dtype).view(t.shape))
                offset += nbytes


def data_parallel_train(model: nn.Module, batches: list[tuple[Tensor, Tensor]], lr: float) -> list[float]:
    """Hand-written data-parallel SGD: each rank's loss is scaled by the global element count."""
    broadcast_parameters(model, src=0)
    world_size = dist.get_world_size()
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device if params else torch.device("cpu")
    losses: list[float] = []
    for x, y in batches:
        for p in params:
            p.grad = None
        out = model(x.to(device))
        sq = (out - y.to(device)) ** 2
        count = torch.tensor(float(sq.numel()), dtype=torch.float64, device=sq.device)
        stats = torch.stack([sq.detach().sum().to(torch.float64), count])
        dist.all_reduce(stats, op=dist.ReduceOp.SUM)
        total_sq, total_n = float(stats[0]), float(stats[1])
        losses.append(total_sq / total_n)
        # mean over ranks of (world_size * local_sum / global_count) = global mean loss
        (sq.sum() * (world_size / total_n)).backward()
        average_gradients(model)
        with torch.no_grad():
            for p in params:
                if p.grad is not None:
                    p.sub_(lr * p.grad)
    return losses


def train_ddp(
    model: nn.Module, dataset: Dataset, epochs: int, batch_size: int, lr: float, seed: int = 0
) -> DistributedDataParallel:
    """DDP training with a DistributedSampler wrapped in an explicit BatchSampler and a hand SGD step."""
    device = next(model.parameters()).device
    ddp = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    sampler = DistributedSampler(dataset, shuffle=True, seed=seed)
    loader = DataLoader(dataset, batch_sampler=BatchSampler(sampler, batch_size, drop_last=False))
    params = [p for p in model.parameters() if p.requires_grad]
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for x, y in loader:
            ddp.zero_grad(set_to_none=True)
            out = ddp(x.to(device))
            loss = torch.mean(torch.square(out - y.to(device)))
            loss.backward()
            with torch.no_grad():
                for p in params:
                    if p.grad is not None:
                        p.add_(p.grad, alpha=-lr)
    return ddp


def ddp_accumulated_step(
    ddp_model: DistributedDataParallel,
    optimizer: torch.optim.Optimizer,
    micro_batches: list[tuple[Tensor, Tensor]],
) -> float:
    """Accumulate sum-of-squares gradients scaled by this rank's element count; sync on the last only."""
    device = next(ddp_model.parameters()).device
    ddp_model.zero_grad(set_to_none=True)
    optimizer.zero_grad(set_to_none=True)
    n_local = sum(math.prod(y.shape) for _, y in micro_batches)
    total_sq = 0.0
    last = len(micro_batches) - 1
    for i, (x, y) in enumerate(micro_batches):
        with contextlib.ExitStack() as stack:
            if i != last:
                stack.enter_context(ddp_model.no_sync())
            out = ddp_model(x.to(device))
            sq = (out - y.to(device)) ** 2
            total_sq += float(sq.detach().sum())
            (sq.sum() / n_local).backward()
    optimizer.step()
    return total_sq / n_local
