"""Independent alternative solution of kata 15 (data pipelines: Dataset, DataLoader, samplers, workers)."""

from __future__ import annotations

import math
import operator
import random
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import (
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    WeightedRandomSampler,
    get_worker_info,
)

Sample = tuple[Tensor, int]


def _check_lengths(sequences: Sequence[Sequence[int]], labels: Sequence[int]) -> None:
    if len(sequences) != len(labels):
        raise ValueError(f"{len(sequences)} sequences but {len(labels)} labels")


class SequenceDataset(Dataset):
    """Map-style dataset; sequences kept as numpy int64 arrays, masking via `rng.binomial` and `np.where`."""

    def __init__(
        self,
        sequences: Sequence[Sequence[int]],
        labels: Sequence[int],
        mask_prob: float = 0.0,
        mask_token: int = 1,
        seed: int = 0,
    ) -> None:
        """Copy the records into private numpy arrays and create the dataset's own Generator."""
        _check_lengths(sequences, labels)
        if not 0.0 <= mask_prob <= 1.0:
            raise ValueError(f"mask_prob must lie in [0, 1], got {mask_prob}")
        self._arrays = [np.array(list(seq), dtype=np.int64).reshape(-1) for seq in sequences]
        self._labels = [int(label) for label in labels]
        self.mask_prob = float(mask_prob)
        self.mask_token = int(mask_token)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        """Number of records."""
        return len(self._arrays)

    def __getitem__(self, index: int) -> Sample:
        """Return a freshly allocated, possibly masked token tensor and its label."""
        i = operator.index(index)
        n = len(self._arrays)
        if not -n <= i < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} samples")
        i %= n
        base = self._arrays[i]
        replace = self.rng.binomial(1, self.mask_prob, size=base.shape[0]).astype(bool)
        tokens = np.where(replace, np.int64(self.mask_token), base).astype(np.int64, copy=True)
        return torch.from_numpy(tokens), self._labels[i]


def pad_collate(batch: Sequence[Sample], padding_value: int = 0) -> dict[str, Tensor]:
    """Fill a (B, T) tensor with the padding value and `masked_scatter` the concatenated tokens in."""
    if len(batch) == 0:
        raise ValueError("cannot collate an empty batch")
    tokens = [sample[0].reshape(-1).to(device="cpu", dtype=torch.int64) for sample in batch]
    lengths = torch.tensor([t.numel() for t in tokens], dtype=torch.int64)
    width = int(lengths.max().item())
    attention_mask = torch.arange(width, dtype=torch.int64).unsqueeze(0) < lengths.unsqueeze(1)
    input_ids = torch.full((len(tokens), width), padding_value, dtype=torch.int64)
    # The mask is True in row-major order exactly at the real tokens, so scattering the concatenation of
    # all sequences fills each row with its own tokens, left-aligned.
    input_ids = input_ids.masked_scatter(attention_mask, torch.cat(tokens))
    labels = torch.tensor([int(sample[1]) for sample in batch], dtype=torch.int64)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "lengths": lengths, "labels": labels}


class ShardedStream(IterableDataset):
    """Iterable dataset; each worker takes one contiguous chunk of ceil(N / W) records."""

    def __init__(self, sequences: Sequence[Sequence[int]], labels: Sequence[int]) -> None:
        """Copy the records."""
        _check_lengths(sequences, labels)
        pairs = zip(sequences, labels, strict=True)
        self._records = [([int(tok) for tok in seq], int(label)) for seq, label in pairs]

    def __iter__(self) -> Iterator[Sample]:
        """Yield this process's contiguous chunk (everything in the main process)."""
        info = get_worker_info()
        n = len(self._records)
        if info is None:
            start, stop = 0, n
        else:
            chunk = math.ceil(n / info.num_workers)
            start = min(n, info.id * chunk)
            stop = min(n, start + chunk)
        return (
            (torch.tensor(seq, dtype=torch.int64).reshape(-1), label)
            for seq, label in self._records[start:stop]
        )


def balanced_sampler(
    labels: Sequence[int],
    num_samples: int | None = None,
    generator: torch.Generator | None = None,
) -> WeightedRandomSampler:
    """Per-sample weights 1 / class count, computed with `torch.bincount` and float64 reciprocals."""
    if len(labels) == 0:
        raise ValueError("labels must not be empty")
    count = len(labels) if num_samples is None else num_samples
    if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    ids = torch.tensor([int(label) for label in labels], dtype=torch.int64)
    class_sizes = torch.bincount(ids).to(torch.float64)
    weights = torch.reciprocal(class_sizes.gather(0, ids))
    return WeightedRandomSampler(weights, count, replacement=True, generator=generator)


def seed_worker(worker_id: int) -> None:
    """Seed `random`, numpy's global RNG and the dataset copy's `rng` from `torch.initial_seed()`."""
    info = get_worker_info()
    if info is None:
        return
    full_seed = torch.initial_seed()
    seed32 = full_seed % 2**32
    random.seed(seed32)
    np.random.seed(seed32)
    if isinstance(getattr(info.dataset, "rng", None), np.random.Generator):
        info.dataset.rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(full_seed)))


def make_loader(
    dataset: Dataset | IterableDataset,
    batch_size: int,
    seed: int,
    *,
    sampler: torch.utils.data.Sampler | None = None,
    num_workers: int = 0,
    drop_last: bool = False,
    timeout: float = 5.0,
) -> DataLoader:
    """DataLoader with an explicit `RandomSampler` sharing the loader's own seeded Generator."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    chosen_sampler = sampler
    if sampler is None and not isinstance(dataset, IterableDataset):
        chosen_sampler = RandomSampler(dataset, generator=generator)
    with_workers = num_workers > 0
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=chosen_sampler,
        collate_fn=pad_collate,
        num_workers=num_workers,
        worker_init_fn=seed_worker if with_workers else None,
        generator=generator,
        drop_last=drop_last,
        timeout=timeout if with_workers else 0,
    )
