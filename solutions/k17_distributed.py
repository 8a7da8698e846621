"""Distributed data parallel: one model, many processes

Interview question: How does DDP train one model on many devices, and what do FSDP and ZeRO shard?

Difficulty 4/5, about 90 minutes, after katas 7 and 15.

The idea
========
Data parallelism runs one process per device (a "rank"; `world_size` of them), each holding a full
replica of the model and a different slice of every batch. After `backward()` each rank has the gradient
of ITS slice; the ranks then all-reduce the gradients (every rank ends with the same combination of
everyone's tensors) and divide by `world_size`. The mean of the per-rank mean losses' gradients is the
gradient of the mean loss over the whole global batch when every rank holds the same number of rows, so
every replica takes the same optimizer step and the replicas stay identical, step after step, as if one
process had trained on the global batch. Three things must hold for that:
- the replicas start identical. Seeding every rank with the same seed gives identical weights only if
  every rank draws exactly the same random numbers in the same order; the robust way is to broadcast rank
  0's parameters and buffers to everyone once. `DistributedDataParallel` does that broadcast in its
  constructor, which is why a rank-dependent seed for the model's init is harmless under DDP and a silent
  divergence in hand-written data parallelism (and `init_sync=False` switches the broadcast off);
- the gradients are AVERAGED: `dist.all_reduce` sums by default, so a sum without the division is a
  `world_size`-fold learning rate (gloo and NCCL also take `op=ReduceOp.AVG` in torch 2.13);
- every rank runs the same collectives in the same order: a collective only one rank reaches waits
  forever, or until the process group's timeout (`init_process_group(timeout=...)`; 10 minutes for
  NCCL and 30 for gloo by default).

DDP does this for you, and faster. It registers a hook on every parameter's gradient accumulator,
groups parameters into buckets (25 MiB by default, in roughly the reverse order of `model.parameters()`,
the order gradients become ready in), and launches a bucket's asynchronous all-reduce as soon as all of
its gradients exist, so communication overlaps the rest of the backward pass. A ring all-reduce (the
bandwidth-optimal algorithm NCCL uses for large tensors) sends and receives about `2 * (N - 1) / N`
times the gradient's bytes per rank, whatever N is: a reduce-scatter (each rank ends up owning the sum
of 1/N of the tensor) followed by an all-gather. The gradients are divided by `world_size`; buffers
(BatchNorm's running statistics) are broadcast from rank 0 at every forward by default
(`forward_sync_buffers`, formerly `broadcast_buffers`); the optimizer is an ordinary local optimizer
that every rank steps in lockstep.

The data. `DistributedSampler` gives each rank a disjoint shard of the indices: it shuffles all of them
with a generator seeded with `seed + epoch`, identical on every rank (a rank-dependent seed makes the
shards overlap and miss samples), pads the list by wrapping around to a multiple of `world_size` (so
every rank runs the same number of steps: an uneven count leaves one rank waiting in a collective; with
`drop_last=True` it cuts the tail instead), and gives rank r every `world_size`-th index starting at r.
Its epoch is set by `sampler.set_epoch(epoch)`; without the call every epoch replays epoch 0's order.
The `DataLoader` gets `sampler=` and no `shuffle=True`.

Gradient accumulation. With k micro-batches per step, the first k - 1 backward passes need no
communication: `with ddp_model.no_sync():` runs forward and backward with the all-reduce switched off and
lets gradients accumulate locally; the last micro-batch runs outside it, and its backward all-reduces the
accumulated gradients once. Each micro-batch's loss is weighted by its share of the rows, exactly as in
single-process accumulation. `no_sync` around the last micro-batch too means no synchronisation at all:
each rank steps on its own gradient and the replicas drift apart without any error.

Beyond replicas: ZeRO and FSDP. A replica costs the full training state on every rank. With Adam in
mixed precision that is 16 bytes per parameter: 2 for the bf16/fp16 weights, 2 for their gradients and
12 of optimizer state (a 4-byte fp32 master copy of the weights and Adam's two 4-byte moments). A 7.5B
parameter model needs 120 GB per rank before a single activation. ZeRO (DeepSpeed) removes the
redundancy in stages, each rank keeping 1/N of:
- ZeRO-1: the optimizer states. Per parameter 2 + 2 + 12/N bytes (31.4 GB for 7.5B on N = 64). Each
  rank updates only its shard and the updated weights are all-gathered. `torch.distributed.optim.
  ZeroRedundancyOptimizer` is ZeRO-1 in PyTorch.
- ZeRO-2: also the gradients: they are reduce-scattered instead of all-reduced, so each rank receives
  only the summed gradient of the shard it updates. 2 + 14/N bytes (16.6 GB).
- ZeRO-3, which is what PyTorch's FSDP (`fully_shard`, or `FullyShardedDataParallel` with
  `FULL_SHARD`) does: also the parameters. 16/N bytes (1.9 GB). The model is split into units (usually
  one per transformer block); before a unit's forward its parameters are all-gathered, used, and freed
  again after it (`reshard_after_forward`), all-gathered a second time before its backward, and its
  gradients are reduce-scattered straight after, so at any moment only one or two units are whole.
  Prefetching the next unit's all-gather overlaps it with the current unit's compute.
The price is communication: ZeRO-1 and -2 move the same volume as DDP (a reduce-scatter of gradients
plus an all-gather of updated parameters is an all-reduce cut in two), ZeRO-3 about 1.5x (parameters
gathered twice, gradients reduce-scattered once). None of them shards activations: activation
checkpointing, tensor and pipeline parallelism address those.

What interviewers probe
=======================
- Mean, not sum: DDP divides by `world_size`; a hand-written `all_reduce` sums unless told otherwise,
  and the mean of per-rank means is the global mean only when every rank has the same number of rows.
- Why replicas stay identical: same initial weights (broadcast at DDP construction), same averaged
  gradient, same deterministic optimizer. Nothing re-synchronises the parameters afterwards, so any
  asymmetry (a rank-dependent step, a skipped sync) makes them drift silently.
- The sampler: disjoint shards, padding to equal length, the same seed everywhere, `set_epoch` every
  epoch, `shuffle=` on the sampler and not on the DataLoader.
- Gradient accumulation with `no_sync()` on every micro-batch but the last, and the loss scaling.
- Deadlocks: collectives are matched by order, not by name; a rank that skips one (a `if rank == 0:`
  around a collective, an extra batch on one rank) hangs everyone until the timeout.
- ZeRO stages and FSDP: what is sharded, when parameters are gathered, reduce-scatter instead of
  all-reduce, and the 16-bytes-per-parameter arithmetic.

Your tasks
==========
1. `shard_indices(dataset_len, rank, world_size, epoch, seed, drop_last)` - the indices one rank sees in
   one epoch, as `DistributedSampler` gives them, written by hand.
2. `average_gradients(model)` - the gradient all-reduce of data parallelism, by hand.
3. `broadcast_parameters(model, src)` - make every rank's replica equal to rank `src`'s.
4. `data_parallel_train(model, batches, lr)` - data-parallel SGD training with tasks 2 and 3, no DDP.
5. `train_ddp(model, dataset, epochs, batch_size, lr, seed)` - the same with `DistributedDataParallel`,
   `DistributedSampler` and a `DataLoader`.
6. `ddp_accumulated_step(ddp_model, optimizer, micro_batches)` - one step of gradient accumulation under
   DDP, synchronising only once.

Follow-up questions
===================
- Why does DDP use one process per GPU rather than one process driving all GPUs like DataParallel?
- How does DDP overlap communication with the backward pass, and what is a bucket?
- What does `DistributedSampler` do when the dataset does not divide evenly, and what goes wrong without
  `set_epoch`?
- How do you accumulate gradients over micro-batches under DDP without paying for an all-reduce on
  every one?
- What does each ZeRO stage shard, and how much memory per GPU does training a 7.5B-parameter model
  with Adam in mixed precision need on 64 GPUs at each stage?
- When does FSDP all-gather a unit's parameters, when does it free them, and what does it do with the
  gradients?
- What makes a distributed job hang, and how do you find out which rank is stuck?

Grade this kata: `nox -s check -- 17`. Stuck? `nox -s hint -- 17`.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def shard_indices(
    dataset_len: int, rank: int, world_size: int, epoch: int, seed: int = 0, drop_last: bool = False
) -> list[int]:
    """The dataset indices that rank `rank` of `world_size` visits in epoch `epoch`, in visiting order.

    Equal to `list(sampler)` for `sampler = DistributedSampler(dataset, num_replicas=world_size,
    rank=rank, shuffle=True, seed=seed, drop_last=drop_last)` over a dataset of `dataset_len` items, after
    `sampler.set_epoch(epoch)`: the same indices in the same order. It must be written by hand: it may not
    use `torch.utils.data.DistributedSampler` (the grader checks). What follows from that equivalence:
    - the shuffle depends on `seed + epoch` only, never on `rank`, so the ranks' lists are disjoint
      slices of one permutation (up to the padding) and a new epoch gives a new order;
    - with `drop_last=False` every rank gets `ceil(dataset_len / world_size)` indices: the permutation is
      padded, by wrapping around to its start (as many times as needed), to a multiple of `world_size`;
      the ranks' lists together then cover every index, and the padding repeats a few;
    - with `drop_last=True` every rank gets `floor(dataset_len / world_size)` indices and the tail of the
      permutation is left out: no index repeats;
    - the global RNG is neither used nor changed.

    Returns a `list` of Python `int`s. Raises `ValueError` unless `world_size >= 1`, `0 <= rank <
    world_size` and `dataset_len >= 1`.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size - 1}], got {rank}")
    if dataset_len < 1:
        raise ValueError(f"dataset_len must be at least 1, got {dataset_len}")
    generator = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(dataset_len, generator=generator).tolist()
    if drop_last:
        per_rank = dataset_len // world_size
        order = order[: per_rank * world_size]
    else:
        per_rank = math.ceil(dataset_len / world_size)
        while len(order) < per_rank * world_size:
            order += order[: per_rank * world_size - len(order)]
    return order[rank::world_size]


def average_gradients(model: nn.Module) -> None:
    """Replace every gradient of `model`, on every rank, by its mean over all the ranks.

    Called by every rank of the default process group (already initialised; any backend and world size)
    with its own replica, after `backward()`. Afterwards, for every parameter `p` whose `.grad` is not
    None, `p.grad` holds on every rank the element-wise mean over the ranks of the `p.grad` each rank held
    (up to float rounding), in place: `p.grad` is the same tensor object, with its dtype and device.
    Parameters whose `.grad` is None are skipped (the same ones on every rank). The parameters' values are
    not changed. Only `torch.distributed` collectives may communicate: it may not construct a
    DistributedDataParallel (the grader checks).
    """
    world_size = dist.get_world_size()
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(world_size)


def broadcast_parameters(model: nn.Module, src: int = 0) -> None:
    """Make every rank's `model` equal to rank `src`'s: all its parameters and all its buffers.

    Called by every rank of the default process group with its replica of the same architecture, whose
    values may differ between ranks (a rank-dependent seed, say). Afterwards every parameter and every
    buffer (BatchNorm's running statistics and counter included) holds, on every rank, exactly the values
    rank `src` held, bit for bit. In place: the same tensor objects, still leaves with their
    `requires_grad` unchanged, no autograd graph recorded. Rank `src`'s own model is unchanged.
    """
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor, src=src)


def data_parallel_train(model: nn.Module, batches: list[tuple[Tensor, Tensor]], lr: float) -> list[float]:
    """Data-parallel SGD on the mean squared error, written by hand with the two tasks above (no DDP).

    Called by every rank of the default process group with its replica `model` and its own `batches`, a
    list of `(x, y)` pairs: one per step, the same number of steps on every rank, and at each step the
    same number of rows on every rank. The replicas may START DIFFERENT (built with rank-dependent seeds):
    training starts from rank 0's parameters and buffers. Step t is one step of plain SGD with learning
    rate `lr` (what `torch.optim.SGD(model.parameters(), lr=lr)` does) on the mean over ALL elements of
    `(model(x) - y) ** 2` over the global batch t: the concatenation of every rank's t-th batch.

    Graded, for a model whose output row depends on its input row alone: afterwards every rank's
    parameters equal (up to float rounding) those of ONE process that started from rank 0's parameters
    and took those steps on the global batches; the ranks' parameters are then identical to each other.
    Gradients already on the parameters when it is called play no part. `batches` and its tensors are
    left as they were.

    Only `torch.distributed` collectives may communicate: it may not construct a DistributedDataParallel
    (the grader checks).

    Returns the loss of every step, measured before its update: the global batch's loss, a Python
    `float`, the same list on every rank.
    """
    broadcast_parameters(model, src=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    world_size = dist.get_world_size()
    losses = []
    for x, y in batches:
        optimizer.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        average_gradients(model)
        optimizer.step()
        global_loss = loss.detach().clone()
        dist.all_reduce(global_loss)
        losses.append(global_loss.item() / world_size)
    return losses


def train_ddp(
    model: nn.Module, dataset: Dataset, epochs: int, batch_size: int, lr: float, seed: int = 0
) -> DistributedDataParallel:
    """Train `model` with `DistributedDataParallel` for `epochs` epochs of `dataset`; return the wrapper.

    Called by every rank of the default process group with the same arguments except `model`, whose
    values may differ between ranks: training starts from rank 0's parameters. `dataset` is a map-style
    dataset whose items are `(x, y)` pairs of tensors (each row of x one sample), on the CPU; `model` is
    on this rank's device (the CPU for gloo; a CUDA device for NCCL), and each batch is moved there.

    Each rank reads, in epoch e, the indices `shard_indices(len(dataset), rank, world_size, e, seed)`
    (what `DistributedSampler(dataset, seed=seed)` gives after `set_epoch(e)`), in that order, in
    consecutive batches of `batch_size` (the last one of an epoch may be shorter). Each batch is one step
    of plain SGD with learning rate `lr` on the mean over ALL elements of `(model(x) - y) ** 2`, with the
    gradient averaged over the ranks by DDP. Graded: afterwards every rank's `model` (trained in place)
    equals, up to float rounding, one process that started from rank 0's parameters and took, for every
    epoch and step, one SGD step on the concatenation of all the ranks' batches of that step; the ranks'
    parameters are then identical.

    Returns the `DistributedDataParallel` that wraps `model` (its `.module` is `model`).
    """
    ddp_model = DistributedDataParallel(model)
    sampler = DistributedSampler(dataset, shuffle=True, seed=seed)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler)
    optimizer = torch.optim.SGD(ddp_model.parameters(), lr=lr)
    device = next(model.parameters()).device
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss = ((ddp_model(x) - y) ** 2).mean()
            loss.backward()
            optimizer.step()
    return ddp_model


def ddp_accumulated_step(
    ddp_model: DistributedDataParallel,
    optimizer: torch.optim.Optimizer,
    micro_batches: list[tuple[Tensor, Tensor]],
) -> float:
    """One optimizer step on the global batch, one micro-batch at a time, synchronising gradients ONCE.

    Called by every rank of the default process group with the same `DistributedDataParallel` replica
    (identical parameters on every rank), an optimizer over its parameters, and its own non-empty list of
    `(x, y)` micro-batches: the same number of micro-batches on every rank and the same total number of
    rows on every rank, though the micro-batches' sizes may differ. The big batch is the concatenation of
    ALL ranks' micro-batches; its loss is the mean over all its elements of `(model(x) - y) ** 2`.
    Graded, for a model whose output row depends on its input row alone:
    - afterwards every rank's parameters equal, up to float rounding, those after ONE step of the same
      optimizer on the big batch in a single process; gradients already on the parameters when it is
      called play no part;
    - the gradients cross between ranks exactly once per call: through DDP (forward through `ddp_model`),
      during the LAST micro-batch's backward only (one pass of DDP's bucket all-reduces, which the grader
      counts with a communication hook); every other backward pass is communication-free;
    - `micro_batches` and its tensors are left as they were.

    Returns this rank's share of the loss: the mean over this rank's rows (all its micro-batches), a
    Python `float` measured before the update.
    """
    total_rows = sum(x.shape[0] for x, _ in micro_batches)
    optimizer.zero_grad()
    local_loss = 0.0
    for i, (x, y) in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        # Every backward but the last only accumulates locally; the last one all-reduces the sum.
        with contextlib.nullcontext() if last else ddp_model.no_sync():
            loss = ((ddp_model(x) - y) ** 2).mean() * (x.shape[0] / total_rows)
            loss.backward()
        local_loss += loss.item()
    optimizer.step()
    return local_loss
