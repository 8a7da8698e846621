"""Grader for k15_data_pipeline: SequenceDataset, pad_collate, ShardedStream, balanced_sampler, seed_worker
and make_loader.

Oracles: padded batches built here with Python lists (right padding, mask and lengths from the sequence
lengths); the records of a stream counted as a multiset over all workers; weights `1 / count` computed in
Python floats (float64, compared at rtol 1e-12); RNG states built by `random.seed(s)` and `np.random.seed(s)`
themselves. Sample identity: every dataset here labels sample i with i, so a batch says which samples it
holds.

Workers, two ways. (1) In the grading process, a DataLoader worker is played by setting the
`WorkerInfo` that `torch.utils.data.get_worker_info()` returns (and seeding torch as the worker loop does):
fast, exact, and it covers 1-4 workers. (2) A few REAL `DataLoader(num_workers=2)` runs on the CPU, started
with `fork` (Linux's default: the test's own datasets need not be picklable), each with
`DataLoader(timeout=5)` or the `timeout` make_loader is given, so a hanging worker fails its test instead of
hanging it. Each real epoch costs about 0.1 s of worker start-up; the whole file runs five.

Statistics: the class balance of `balanced_sampler` is checked on 3000 draws from a seeded generator: each
class's share must be within 0.05 of 1/3 (the binomial standard deviation is 0.0086, so 0.05 is 5.8 of them:
a correct sampler fails with probability < 1e-7 whatever generator, while the unbalanced bugs miss by 0.2 or
more). The masking rate of `SequenceDataset` is checked on 4000 tokens within 0.04 of p = 0.3 (sd 0.0072,
5.5 sd). Everything is seeded, so every run draws the same numbers.

Nothing here needs a GPU: a data pipeline runs on the CPU (pin_memory and non_blocking copies are for the
model's side and are not graded).
"""

from __future__ import annotations

import contextlib
import math
import random
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler
from torch.utils.data._utils import worker as worker_module

from kata_harness import load_kata
from kata_harness.testing import explain_crash

kata = load_kata("k15_data_pipeline")

WORKER_TIMEOUT = 5.0  # seconds a real worker may take for one batch before the DataLoader gives up


def _global_rngs() -> tuple:
    return torch.get_rng_state(), random.getstate(), np.random.get_state()


def _assert_global_rngs_untouched(before: tuple, what: str, likely_cause: str) -> None:
    torch_state, random_state, numpy_state = _global_rngs()
    changed = [
        name
        for name, same in (
            ("torch's", torch.equal(before[0], torch_state)),
            ("random's", before[1] == random_state),
            ("numpy's", all(np.array_equal(a, b) for a, b in zip(before[2], numpy_state, strict=True))),
        )
        if not same
    ]
    assert not changed, (
        f"{what} changed the global RNG of {' and '.join(changed)}; expected it untouched; "
        f"likely cause: {likely_cause}"
    )


@contextlib.contextmanager
def _as_worker(worker_id: int, num_workers: int, dataset: object, seed: int | None = None) -> Iterator[None]:
    """Play DataLoader worker `worker_id` of `num_workers` here, set up as torch's worker loop does it."""
    saved = worker_module._worker_info
    if seed is not None:
        torch.manual_seed(seed)
    worker_module._worker_info = worker_module.WorkerInfo(
        id=worker_id, num_workers=num_workers, seed=seed if seed is not None else worker_id, dataset=dataset
    )
    try:
        yield
    finally:
        worker_module._worker_info = saved


# Sample i of the datasets below: tokens [i + 2] * (1 + i % 3), label i, so a batch's labels name its samples.
def _records(n: int) -> tuple[list[list[int]], list[int]]:
    return [[i + 2] * (1 + i % 3) for i in range(n)], list(range(n))


def _expected_batch(samples: list[tuple[list[int], int]], padding_value: int) -> dict[str, list]:
    """The padded batch as Python lists: right padding, mask and lengths from each sequence's length."""
    width = max((len(tokens) for tokens, _ in samples), default=0)
    return {
        "input_ids": [tokens + [padding_value] * (width - len(tokens)) for tokens, _ in samples],
        "attention_mask": [[True] * len(tokens) + [False] * (width - len(tokens)) for tokens, _ in samples],
        "lengths": [len(tokens) for tokens, _ in samples],
        "labels": [label for _, label in samples],
    }


DTYPES = {
    "input_ids": torch.int64,
    "attention_mask": torch.bool,
    "lengths": torch.int64,
    "labels": torch.int64,
}


def _check_batch_types(batch: object, what: str) -> dict[str, torch.Tensor]:
    assert isinstance(batch, dict) and set(batch) == set(DTYPES), (
        f"{what} should be a dict with exactly the keys {sorted(DTYPES)}, got "
        f"{sorted(batch) if isinstance(batch, dict) else type(batch).__name__}"
    )
    for key, dtype in DTYPES.items():
        value = batch[key]
        assert isinstance(value, torch.Tensor) and value.dtype == dtype, (
            f"{what}: {key!r} should be a {dtype} tensor, got "
            f"{value.dtype if isinstance(value, torch.Tensor) else type(value).__name__}; likely cause: "
            + (
                "a mask built as integers or floats (.long(), .float(), or arithmetic on a bool); the "
                "contract is torch.bool"
                if key == "attention_mask"
                else "a tensor built without dtype=torch.int64"
            )
        )
        assert value.device.type == "cpu", f"{what}: {key!r} should be on the CPU, got {value.device}"
    return batch


def _assert_batch(batch: object, samples: list[tuple[list[int], int]], padding_value: int, what: str) -> None:
    batch = _check_batch_types(batch, what)
    expected = _expected_batch(samples, padding_value)
    width = len(expected["input_ids"][0]) if samples else 0
    for key in ("input_ids", "attention_mask"):
        assert tuple(batch[key].shape) == (len(samples), width), (
            f"{what}: {key!r} should have shape (batch, longest) = {(len(samples), width)}, got "
            f"{tuple(batch[key].shape)}; likely cause: time-first layout (batch_first=False), or padding "
            f"to a fixed length instead of the longest sequence in the batch"
        )
    for key in ("lengths", "labels"):
        assert tuple(batch[key].shape) == (len(samples),), (
            f"{what}: {key!r} should have shape {(len(samples),)}, got {tuple(batch[key].shape)}"
        )
    ids, mask = batch["input_ids"].tolist(), batch["attention_mask"].tolist()
    if ids != expected["input_ids"]:
        left = [[padding_value] * (width - len(t)) + t for t, _ in samples]
        cause = (
            "the padding went on the LEFT; the contract pads on the right (tokens first)"
            if ids == left
            else "rows out of order, or padded with something other than padding_value"
        )
        raise AssertionError(
            f"{what}: input_ids expected {expected['input_ids']}, got {ids}; likely cause: {cause}"
        )
    if mask != expected["attention_mask"]:
        inverted = [[not v for v in row] for row in expected["attention_mask"]]
        from_ids = [[v != padding_value for v in row] for row in expected["input_ids"]]
        cause = (
            "the mask is inverted: True must mark REAL tokens, False the padding"
            if mask == inverted
            else "the mask was derived from input_ids != padding_value, which also hides real tokens equal "
            "to the padding value: build it from the lengths"
            if mask == from_ids
            else "a mask that does not follow each sequence's length"
        )
        raise AssertionError(
            f"{what}: attention_mask expected {expected['attention_mask']}, got {mask}; likely cause: {cause}"
        )
    assert batch["lengths"].tolist() == expected["lengths"], (
        f"{what}: lengths expected {expected['lengths']}, got {batch['lengths'].tolist()}; likely cause: "
        f"lengths counted from tokens != padding_value (a real token can equal it), or the padded width"
    )
    assert batch["labels"].tolist() == expected["labels"], (
        f"{what}: labels expected {expected['labels']}, got {batch['labels'].tolist()}"
    )


# ---------------------------------------------------------------- SequenceDataset


def test_dataset_len_and_items() -> None:
    sequences, labels = [[5, 6, 7], [], [0, 9]], [2, 0, 1]
    ds = explain_crash(
        lambda: kata.SequenceDataset(sequences, labels), "SequenceDataset(...)", "see the trace"
    )
    assert len(ds) == 3, f"len(dataset) should be the number of samples, 3; got {len(ds)}"
    for i in (0, 1, 2, -1, -3):
        tokens, label = ds[i]
        expected = sequences[i]
        assert isinstance(tokens, torch.Tensor) and tokens.dtype == torch.int64 and tokens.ndim == 1, (
            f"dataset[{i}] tokens should be a 1-D torch.int64 tensor, got "
            f"{tokens.dtype if isinstance(tokens, torch.Tensor) else type(tokens).__name__}"
            f"{'' if not isinstance(tokens, torch.Tensor) else f' with shape {tuple(tokens.shape)}'}"
        )
        assert tokens.tolist() == expected, (
            f"dataset[{i}] tokens expected {expected} (mask_prob=0 leaves them as they are), got "
            f"{tokens.tolist()}; likely cause: negative indices not counted from the end, or an off-by-one"
        )
        assert type(label) is int and label == labels[i], (
            f"dataset[{i}] label should be the Python int {labels[i]}, got {label!r} ({type(label).__name__})"
        )
    for bad in (3, 4, -4):
        with pytest.raises(IndexError):
            ds[bad]
    assert [t.tolist() for t, _ in ds] == sequences, (
        "iterating a SequenceDataset with a for loop should give every sample once and stop: Python's "
        "fallback iteration calls dataset[0], dataset[1], ... until IndexError"
    )


def test_dataset_len_counts_samples_not_tokens() -> None:
    sequences, labels = _records(7)
    ds = kata.SequenceDataset(sequences, labels, mask_prob=0.5)
    assert len(ds) == 7 and type(len(ds)) is int, (
        f"len(dataset) should be 7 (the samples), got {len(ds)}; likely cause: counting tokens, or an "
        f"off-by-one; a DataLoader asks its sampler for range(len(dataset)), so a wrong length loses or "
        f"invents samples"
    )
    loader = DataLoader(ds, batch_size=3, collate_fn=kata.pad_collate)
    assert len(loader) == 3, (
        f"a DataLoader with batch_size=3 over 7 samples should have 3 batches, got {len(loader)}"
    )


def test_dataset_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        kata.SequenceDataset([[1], [2]], [0])
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError):
            kata.SequenceDataset([[1]], [0], mask_prob=p)
    sequences, labels = [[1, 2]], [3]
    kata.SequenceDataset(sequences, labels, mask_prob=1.0)[0]
    assert sequences == [[1, 2]] and labels == [3], "SequenceDataset changed the caller's lists"


def test_dataset_items_are_fresh_tensors() -> None:
    ds = kata.SequenceDataset([[4, 5, 6]], [1])
    tokens, _ = ds[0]
    tokens.fill_(-7)
    again, _ = ds[0]
    assert again.tolist() == [4, 5, 6], (
        f"writing into a returned tensor changed what the dataset returns next: got {again.tolist()}, "
        f"expected [4, 5, 6]; likely cause: the dataset returns a tensor it keeps (a collate_fn or a "
        f"training step that edits a batch in place would then corrupt the dataset); return a new tensor"
    )


def test_dataset_masking_rate_and_values() -> None:
    n, length, mask_token = 100, 40, 99
    sequences = [[(i + j) % 50 + 100 for j in range(length)] for i in range(n)]
    ds = kata.SequenceDataset(sequences, [0] * n, mask_prob=0.3, mask_token=mask_token, seed=3)
    masked = 0
    for i in range(n):
        tokens, _ = ds[i]
        got = tokens.tolist()
        kept = [g == s for g, s in zip(got, sequences[i], strict=True)]
        assert all(k or g == mask_token for k, g in zip(kept, got, strict=True)), (
            f"dataset[{i}] with mask_prob=0.3 should keep each token or replace it by mask_token "
            f"{mask_token}; "
            f"got {got}, original {sequences[i]}"
        )
        masked += kept.count(False)
    rate = masked / (n * length)
    assert abs(rate - 0.3) < 0.04, (
        f"with mask_prob=0.3 about 30% of 4000 tokens should be masked (tolerance 0.04, 5.5 binomial sd); "
        f"got {rate:.3f}; likely cause: the comparison inverted (masking with probability 1 - p), or one "
        f"draw per sequence instead of one per token"
    )
    all_masked, _ = kata.SequenceDataset([[5, 6, 7]], [0], mask_prob=1.0, mask_token=mask_token)[0]
    assert all_masked.tolist() == [mask_token] * 3, (
        f"mask_prob=1 should mask every token, got {all_masked.tolist()}"
    )


def test_dataset_draws_only_from_its_own_rng() -> None:
    sequences, labels = [list(range(10, 30))] * 6, [0] * 6

    def draws(ds) -> list[list[int]]:
        return [ds[i][0].tolist() for i in range(6)]

    before = _global_rngs()
    first = draws(kata.SequenceDataset(sequences, labels, mask_prob=0.5, mask_token=1, seed=11))
    _assert_global_rngs_untouched(
        before,
        "SequenceDataset.__getitem__ with mask_prob=0.5",
        "the masking draws from torch.rand / random / np.random; draw from self.rng, the Generator the "
        "dataset owns (what seed_worker can reseed in each worker)",
    )
    second = draws(kata.SequenceDataset(sequences, labels, mask_prob=0.5, mask_token=1, seed=11))
    assert first == second, (
        "two datasets built with the same seed should return the same samples for the same calls; likely "
        "cause: the draws do not come from np.random.default_rng(seed) alone"
    )
    other = draws(kata.SequenceDataset(sequences, labels, mask_prob=0.5, mask_token=1, seed=12))
    assert other != first, "datasets with seeds 11 and 12 returned the same masks: is the seed used?"
    reseeded = kata.SequenceDataset(sequences, labels, mask_prob=0.5, mask_token=1, seed=11)
    assert isinstance(reseeded.rng, np.random.Generator), (
        f"dataset.rng should be a numpy.random.Generator, got {type(reseeded.rng).__name__}"
    )
    reseeded.rng = np.random.default_rng(12)
    assert draws(reseeded) == other, (
        "after `dataset.rng = np.random.default_rng(12)` the dataset should draw like one built with "
        "seed=12; likely cause: the masking draws from another generator (a private copy made in "
        "__init__), so seed_worker's reseeding of dataset.rng cannot reach it"
    )


# ---------------------------------------------------------------- pad_collate


def _tensor_samples(samples: list[tuple[list[int], int]]) -> list[tuple[torch.Tensor, int]]:
    return [(torch.tensor(tokens, dtype=torch.int64), label) for tokens, label in samples]


def test_pad_collate_contract() -> None:
    samples = [([3, 0, 5], 1), ([7], 0), ([0, 0, 4, 2, 9], 2), ([], 1)]  # real tokens equal to the padding 0
    batch = explain_crash(
        lambda: kata.pad_collate(_tensor_samples(samples)),
        "pad_collate on 4 samples of lengths 3, 1, 5 and 0",
        "an empty sequence, or padding written by hand with a wrong width",
    )
    _assert_batch(batch, samples, 0, "pad_collate(batch) with the default padding_value=0")
    batch = kata.pad_collate(_tensor_samples(samples), padding_value=-1)
    _assert_batch(batch, samples, -1, "pad_collate(batch, padding_value=-1)")


sequences_strategy = st.lists(
    st.tuples(st.lists(st.integers(0, 4), max_size=6), st.integers(0, 3)), min_size=1, max_size=5
)


@given(samples=sequences_strategy, padding_value=st.sampled_from([0, -1, 3]))
@settings(max_examples=15)
def test_pad_collate_matches_oracle(samples: list[tuple[list[int], int]], padding_value: int) -> None:
    batch = kata.pad_collate(_tensor_samples(samples), padding_value=padding_value)
    _assert_batch(batch, samples, padding_value, f"pad_collate({samples}, padding_value={padding_value})")


def test_pad_collate_all_empty_and_empty_batch() -> None:
    samples = [([], 4), ([], 5)]
    batch = explain_crash(
        lambda: kata.pad_collate(_tensor_samples(samples)),
        "pad_collate on two empty sequences",
        "T = 0 is a valid width: the batch is (2, 0)",
    )
    _assert_batch(batch, samples, 0, "pad_collate on two empty sequences")
    with pytest.raises(ValueError):
        kata.pad_collate([])


def test_pad_collate_leaves_samples_alone() -> None:
    samples = _tensor_samples([([1, 2, 3], 0), ([4], 1)])
    before = [tokens.clone() for tokens, _ in samples]
    batch = kata.pad_collate(samples)
    for tensor in batch.values():
        tensor.fill_(42) if tensor.dtype != torch.bool else tensor.fill_(False)
    for (tokens, _), old in zip(samples, before, strict=True):
        assert torch.equal(tokens, old), (
            f"pad_collate's output shares memory with a sample (or changed it): the sample is now "
            f"{tokens.tolist()}, was {old.tolist()}; likely cause: returning or viewing a sample's tensor "
            f"instead of copying it into a new padded tensor"
        )


# ---------------------------------------------------------------- ShardedStream


def _stream_items(items) -> list[tuple[list[int], int]]:
    out = []
    for tokens, label in items:
        assert isinstance(tokens, torch.Tensor) and tokens.dtype == torch.int64 and type(label) is int, (
            f"ShardedStream should yield (1-D torch.int64 tensor, int) pairs, got "
            f"({getattr(tokens, 'dtype', type(tokens).__name__)}, {type(label).__name__})"
        )
        out.append((tokens.tolist(), label))
    return out


def test_stream_in_main_process_yields_all_in_order_every_epoch() -> None:
    sequences, labels = _records(5)
    stream = kata.ShardedStream(sequences, labels)
    assert isinstance(stream, torch.utils.data.IterableDataset), "ShardedStream should be an IterableDataset"
    expected = list(zip(sequences, labels, strict=True))
    for epoch in (1, 2):
        got = _stream_items(stream)
        assert got == expected, (
            f"epoch {epoch}: iterating ShardedStream in the main process should yield every record once, "
            f"in order: expected {expected}, got {got}; likely cause: "
            + (
                "__iter__ hands out one iterator kept on self, used up after the first epoch"
                if epoch == 2 and not got
                else "records skipped or sharded although get_worker_info() is None"
            )
        )
    with pytest.raises(ValueError):
        kata.ShardedStream([[1]], [0, 1])


def test_stream_shards_exactly_once_across_workers() -> None:
    for n in (0, 1, 5, 7, 10):
        sequences, labels = _records(n)
        stream = kata.ShardedStream(sequences, labels)
        for num_workers in (1, 2, 3, 4):
            shares = []
            for worker_id in range(num_workers):
                with _as_worker(worker_id, num_workers, stream):
                    shares.append([label for _, label in _stream_items(stream)])
            counts = Counter(label for share in shares for label in share)
            lost = sorted(set(range(n)) - set(counts))
            repeated = sorted(label for label, c in counts.items() if c > 1)
            assert not lost and not repeated and sum(counts.values()) == n, (
                f"{n} records over {num_workers} workers: every record should come from exactly one worker; "
                f"the workers yielded {shares} (lost {lost}, repeated {repeated}); likely cause: "
                + (
                    "no sharding: every worker runs the whole stream"
                    if repeated
                    else "a chunk size of n // num_workers, which drops the remainder"
                )
            )
            limit = math.ceil(n / num_workers)
            assert all(len(s) <= limit for s in shares) and all(s == sorted(s) for s in shares), (
                f"{n} records over {num_workers} workers: each worker should yield at most ceil(n / W) = "
                f"{limit} records, in stream order; got {shares}"
            )


def test_stream_with_two_real_workers() -> None:
    sequences, labels = _records(9)
    stream = kata.ShardedStream(sequences, labels)
    loader = DataLoader(stream, batch_size=None, num_workers=2, timeout=WORKER_TIMEOUT)
    got = _stream_items(loader)
    counts = Counter(label for _, label in got)
    assert sorted(got, key=lambda r: r[1]) == list(zip(sequences, labels, strict=True)) and len(got) == 9, (
        f"a DataLoader(num_workers=2) over a 9-record ShardedStream should yield each record once; got the "
        f"labels {[label for _, label in got]} (counts {dict(counts)}); likely cause: each worker iterates "
        f"the whole stream (shard with get_worker_info().id and .num_workers)"
    )


# ---------------------------------------------------------------- balanced_sampler

IMBALANCED = [0] * 40 + [1] * 8 + [2] * 2  # shuffled below so that classes are not contiguous blocks
random.Random(5).shuffle(IMBALANCED)


def test_balanced_sampler_weights_and_settings() -> None:
    labels = list(IMBALANCED)
    generator = torch.Generator().manual_seed(0)
    sampler = explain_crash(
        lambda: kata.balanced_sampler(labels, generator=generator),
        "balanced_sampler(labels, generator=g)",
        "see the trace",
    )
    assert isinstance(sampler, WeightedRandomSampler), (
        f"balanced_sampler should return a WeightedRandomSampler, got {type(sampler).__name__}"
    )
    assert labels == IMBALANCED, "balanced_sampler changed the caller's labels"
    counts = Counter(labels)
    expected = torch.tensor([1.0 / counts[label] for label in labels], dtype=torch.float64)
    weights = sampler.weights
    assert weights.shape == expected.shape, (
        f"sampler.weights should hold one weight PER SAMPLE, shape {tuple(expected.shape)}; got shape "
        f"{tuple(weights.shape)}; likely cause: one weight per class (WeightedRandomSampler then draws class "
        f"ids as if they were dataset indices)"
    )
    assert torch.allclose(weights, expected, rtol=1e-12, atol=0), (
        f"sampler.weights[i] should be 1 / (size of sample i's class), e.g. {expected[:6].tolist()}...; got "
        f"{weights[:6].tolist()}...; likely cause: "
        + (
            "class counts instead of their inverse"
            if torch.allclose(weights, 1 / expected)
            else "weights computed in float32 (exactness at rtol 1e-12 needs float64)"
            if torch.allclose(weights, expected, rtol=1e-6)
            else "weights normalised, or counted over the wrong thing"
        )
    )
    assert sampler.replacement is True, (
        f"sampler.replacement should be True, got {sampler.replacement!r}: without replacement an epoch of "
        f"len(labels) draws is a permutation, as imbalanced as the data"
    )
    assert sampler.num_samples == len(labels), (
        f"num_samples=None should mean len(labels) = {len(labels)}, got {sampler.num_samples}"
    )
    assert sampler.generator is generator, (
        "sampler.generator should be the generator passed in (the same object); without it the sampler "
        "draws from torch's global RNG"
    )
    assert kata.balanced_sampler(labels, num_samples=7).num_samples == 7, "num_samples=7 was not kept"
    with pytest.raises(ValueError):
        kata.balanced_sampler([])
    with pytest.raises(ValueError):
        kata.balanced_sampler(labels, num_samples=0)


def test_balanced_sampler_balances_classes() -> None:
    labels = list(IMBALANCED)
    before = _global_rngs()
    indices = list(
        kata.balanced_sampler(labels, num_samples=3000, generator=torch.Generator().manual_seed(1))
    )
    _assert_global_rngs_untouched(
        before,
        "iterating balanced_sampler(..., generator=g)",
        "the generator is not handed to WeightedRandomSampler, so it draws from the global RNG",
    )
    assert len(indices) == 3000 and all(type(i) is int and 0 <= i < len(labels) for i in indices), (
        f"the sampler should yield 3000 int indices in [0, {len(labels)}); got {len(indices)}, e.g. "
        f"{indices[:8]}; likely cause: weights per class, so the indices are class ids"
    )
    shares = {c: n / 3000 for c, n in sorted(Counter(labels[i] for i in indices).items())}
    assert len(shares) == 3 and all(abs(s - 1 / 3) < 0.05 for s in shares.values()), (
        f"classes of sizes 40, 8 and 2 should each get about 1/3 of 3000 draws (tolerance 0.05, 5.8 sd); "
        f"got shares {shares}; likely cause: uniform weights or counts instead of inverse counts, "
        f"replacement=False (a permutation keeps the imbalance), or weights indexed by class not sample"
    )
    again = list(kata.balanced_sampler(labels, num_samples=3000, generator=torch.Generator().manual_seed(1)))
    assert again == indices, "two samplers with equally seeded generators should draw the same indices"


# ---------------------------------------------------------------- seed_worker


class _DatasetWithRng(Dataset):
    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> tuple:
        # Seen from inside a real worker: its torch seed, then one draw from each RNG seed_worker seeds.
        return torch.initial_seed(), random.random(), float(np.random.random()), float(self.rng.random())


def _expected_draws(initial_seed: int) -> tuple[float, float]:
    s = initial_seed % 2**32
    return random.Random(s).random(), float(np.random.RandomState(s).random_sample())


def test_seed_worker_outside_a_worker_changes_nothing() -> None:
    torch.manual_seed(2**33 + 7)  # RNG states that seeding from torch.initial_seed() would change
    random.random()
    np.random.random()
    before = _global_rngs()
    kata.seed_worker(0)
    _assert_global_rngs_untouched(
        before,
        "seed_worker(0) called in the main process (get_worker_info() is None)",
        "seeding without checking get_worker_info() first; outside a worker it must do nothing",
    )


def test_seed_worker_seeds_from_torch_initial_seed() -> None:
    base = 2**40 + 12345  # above 2**32: np.random.seed only takes seeds below 2**32
    states = {}
    for worker_id in (0, 1):
        dataset = _DatasetWithRng()
        old_rng = dataset.rng
        with _as_worker(worker_id, 2, dataset, seed=base + worker_id):
            torch_before = torch.get_rng_state()
            explain_crash(
                lambda w=worker_id: kata.seed_worker(w),
                f"seed_worker({worker_id}) in a worker whose torch.initial_seed() is {base + worker_id}",
                "np.random.seed(torch.initial_seed()) without % 2**32: numpy only accepts seeds below 2**32",
            )
            got = (random.random(), float(np.random.random()))
            torch_after = torch.get_rng_state()
        expected = _expected_draws(base + worker_id)
        assert got == expected, (
            f"worker {worker_id}: after seed_worker, random.random() and np.random.random() should be "
            f"{expected} (seeded with torch.initial_seed() % 2**32); got {got}; likely cause: seeding from "
            f"worker_id alone (every epoch then repeats the same augmentations), or not seeding one of them"
        )
        assert torch.equal(torch_before, torch_after), (
            "seed_worker changed torch's RNG, which torch had seeded"
        )
        assert isinstance(dataset.rng, np.random.Generator) and dataset.rng is not old_rng, (
            "seed_worker should replace the worker's dataset.rng (a numpy Generator) by a new one; it left "
            "the copy every worker inherited from the parent, so all workers draw the same augmentations"
        )
        states[worker_id] = dataset.rng.bit_generator.state
    assert states[0] != states[1], (
        "workers 0 and 1 got equally seeded dataset.rng: seed it from torch.initial_seed(), which differs "
        "per worker"
    )
    dataset = _DatasetWithRng()
    with _as_worker(1, 2, dataset, seed=base + 1):
        kata.seed_worker(1)
    assert dataset.rng.bit_generator.state == states[1], (
        "seed_worker gave two workers with the same torch.initial_seed() different dataset.rng states: the "
        "seed must come from torch.initial_seed() alone, or runs are not reproducible"
    )
    other = _DatasetWithRng()
    with _as_worker(1, 2, other, seed=base + 1001):
        kata.seed_worker(1)
    assert other.rng.bit_generator.state != states[1], (
        "worker 1 got the same dataset.rng under two different torch seeds (a new epoch, or a loader with "
        "another seed): likely cause: dataset.rng seeded from worker_id"
    )
    plain = torch.utils.data.TensorDataset(torch.arange(3))
    with _as_worker(0, 1, plain, seed=7):
        explain_crash(
            lambda: kata.seed_worker(0),
            "seed_worker in a worker whose dataset has no `rng` attribute",
            "reaching for dataset.rng without checking that it exists and is a numpy Generator",
        )


def test_seed_worker_in_real_workers() -> None:
    kata.seed_worker(0)  # in the main process: must do nothing (a stub stops here, not inside a worker)
    loader = DataLoader(
        _DatasetWithRng(),
        batch_size=None,
        num_workers=2,
        worker_init_fn=kata.seed_worker,
        timeout=WORKER_TIMEOUT,
        generator=torch.Generator().manual_seed(3),
    )
    results = list(loader)
    for worker_id, (initial_seed, py_draw, np_draw, _) in enumerate(results):
        expected = _expected_draws(initial_seed)
        assert (py_draw, np_draw) == expected, (
            f"in real worker {worker_id} (torch.initial_seed() = {initial_seed}), random.random() and "
            f"np.random.random() after seed_worker should be {expected}; got {(py_draw, np_draw)}"
        )
    assert results[0][3] != results[1][3], (
        f"the two real workers drew the same number from dataset.rng ({results[0][3]}): each worker's copy "
        f"of the dataset must be reseeded from its own torch.initial_seed()"
    )


# ---------------------------------------------------------------- make_loader


def _epoch_labels(loader) -> list[list[int]]:
    return [batch["labels"].tolist() for batch in loader]


def test_make_loader_batches_length_and_drop_last() -> None:
    sequences, labels = _records(10)
    ds = kata.SequenceDataset(sequences, labels)
    for drop_last, n_batches in ((False, 3), (True, 2)):
        loader = explain_crash(
            lambda d=drop_last: kata.make_loader(ds, 4, seed=0, drop_last=d),
            f"make_loader(dataset, 4, seed=0, drop_last={drop_last})",
            "an argument DataLoader rejects (shuffle=True together with a sampler, a timeout with "
            "num_workers=0)",
        )
        assert loader.batch_size == 4 and loader.drop_last is drop_last, (
            f"loader.batch_size / drop_last should be 4 / {drop_last}, got {loader.batch_size} / "
            f"{loader.drop_last}; likely cause: drop_last not passed to the DataLoader"
        )
        assert len(loader) == n_batches, (
            f"10 samples in batches of 4 with drop_last={drop_last}: len(loader) should be {n_batches} "
            f"({'floor' if drop_last else 'ceil'}(10 / 4)), got {len(loader)}"
        )
        batches = explain_crash(
            lambda lo=loader: list(lo),
            f"iterating make_loader(..., drop_last={drop_last}) with num_workers=0",
            "timeout > 0 with num_workers=0 (torch asserts timeout == 0 in the main process), or a "
            "collate_fn that is not pad_collate",
        )
        assert len(batches) == n_batches, f"the epoch yielded {len(batches)} batches, expected {n_batches}"
        for b, batch in enumerate(batches):
            idx = _check_batch_types(batch, f"batch {b} of make_loader")["labels"].tolist()
            _assert_batch(batch, [(sequences[i], i) for i in idx], 0, f"batch {b} of make_loader")
        seen = [i for batch in batches for i in batch["labels"].tolist()]
        size = 8 if drop_last else 10
        assert len(seen) == size and len(set(seen)) == size, (
            f"one epoch with drop_last={drop_last} should hold {size} distinct samples, got {sorted(seen)}; "
            f"likely cause: drop_last ignored, or a sampler that repeats indices"
        )
        assert [len(batch["labels"]) for batch in batches] == [4] * (n_batches - 1) + [
            4 if drop_last else 2
        ], (
            f"batch sizes should be {[4] * (n_batches - 1) + [4 if drop_last else 2]}, got "
            f"{[len(batch['labels']) for batch in batches]}"
        )
    loader = kata.make_loader(ds, 4, seed=0, timeout=7.0)
    assert loader.timeout == 0, (
        f"with num_workers=0, loader.timeout should be 0 (torch accepts nothing else there), got "
        f"{loader.timeout}"
    )
    loader = kata.make_loader(ds, 4, seed=0, num_workers=2, timeout=7.0)
    assert loader.timeout == 7.0 and loader.num_workers == 2, (
        f"with num_workers=2, loader.num_workers / timeout should be 2 / 7.0, got {loader.num_workers} / "
        f"{loader.timeout}: a hanging worker would hang training instead of failing after 7 s"
    )


def test_make_loader_shuffle_is_reproducible_and_leaves_global_rngs() -> None:
    sequences, labels = _records(12)
    ds = kata.SequenceDataset(sequences, labels)
    before = _global_rngs()
    a = kata.make_loader(ds, 4, seed=5)
    a_epochs = [_epoch_labels(a), _epoch_labels(a)]
    _assert_global_rngs_untouched(
        before,
        "building make_loader(..., seed=5) and running two epochs",
        "no torch.Generator handed to the DataLoader (it then draws the shuffle and its base seed from "
        "torch's global RNG every epoch), or torch.manual_seed(seed) called on the global RNG",
    )
    b = kata.make_loader(ds, 4, seed=5)
    b_epochs = [_epoch_labels(b), _epoch_labels(b)]
    c_epochs = [_epoch_labels(kata.make_loader(ds, 4, seed=6))]
    flat = [[i for batch in epoch for i in batch] for epoch in a_epochs]
    assert all(sorted(order) == list(range(12)) for order in flat), (
        f"each epoch should visit the 12 samples once each, got {flat}"
    )
    assert flat[0] != list(range(12)), (
        "the samples came in dataset order: shuffle=True for a map-style dataset"
    )
    assert a_epochs == b_epochs, (
        f"two loaders with seed=5 should give the same epochs; got {a_epochs} and {b_epochs}; likely cause: "
        f"the shuffle draws from an unseeded or global generator"
    )
    assert a_epochs[0] != a_epochs[1], (
        f"two epochs of one loader came in the same order {a_epochs[0]}: the generator should advance from "
        f"epoch to epoch (build it once, in make_loader, not once per epoch)"
    )
    assert c_epochs[0] != a_epochs[0], (
        f"loaders with seeds 5 and 6 gave the same order {a_epochs[0]}; likely cause: a torch.Generator() "
        f"that is never seeded with `seed`"
    )


def test_make_loader_with_sampler_and_with_stream() -> None:
    labels = list(IMBALANCED)
    sequences = [[i + 2] for i in range(len(labels))]
    ds = kata.SequenceDataset(sequences, list(range(len(labels))))
    sampler = WeightedRandomSampler(
        [1.0] * len(labels), 20, replacement=True, generator=torch.Generator().manual_seed(9)
    )
    loader = explain_crash(
        lambda: kata.make_loader(ds, 8, seed=0, sampler=sampler),
        "make_loader(dataset, 8, seed=0, sampler=WeightedRandomSampler(...))",
        "shuffle=True together with a sampler: the DataLoader refuses both (shuffle only without one)",
    )
    order = [i for batch in _epoch_labels(loader) for i in batch]
    expected = list(
        WeightedRandomSampler(
            [1.0] * len(labels), 20, replacement=True, generator=torch.Generator().manual_seed(9)
        )
    )
    assert order == expected, (
        f"with a sampler, the sampler alone decides the order: expected {expected}, got {order}"
    )
    stream_sequences, stream_labels = _records(7)
    stream = kata.ShardedStream(stream_sequences, stream_labels)
    loader = explain_crash(
        lambda: kata.make_loader(stream, 3, seed=0),
        "make_loader(ShardedStream(...), 3, seed=0)",
        "shuffle=True for an IterableDataset, which the DataLoader refuses: shuffle only map-style datasets",
    )
    got = _epoch_labels(loader)
    assert got == [[0, 1, 2], [3, 4, 5], [6]], (
        f"make_loader over a 7-record stream with batch_size 3 should yield the records in stream order: "
        f"[[0, 1, 2], [3, 4, 5], [6]]; got {got}"
    )
    with pytest.raises(ValueError):
        kata.make_loader(stream, 3, seed=0, sampler=sampler)


def _masked_epoch(loader) -> tuple[list[int], dict[int, list[bool]], list[list[list[bool]]]]:
    """(sample order, {label: mask row}, per batch its mask rows) for one epoch."""
    order, rows, batches = [], {}, []
    for batch in loader:
        masks = (batch["input_ids"] == 1).tolist()  # mask_token 1: where the augmentation struck
        batches.append(masks)
        for label, row in zip(batch["labels"].tolist(), masks, strict=True):
            order.append(label)
            rows[label] = row
    return order, rows, batches


def test_make_loader_with_two_real_workers() -> None:
    n, length = 8, 12
    sequences, labels = [[10 + j for j in range(length)] for _ in range(n)], list(range(n))
    ds = kata.SequenceDataset(sequences, labels, mask_prob=0.5, mask_token=1, seed=0)
    kata.seed_worker(0)  # a stub stops here, in the main process, rather than inside a worker
    a = kata.make_loader(ds, 2, seed=21, num_workers=2)
    a1 = _masked_epoch(a)
    b1 = _masked_epoch(kata.make_loader(ds, 2, seed=21, num_workers=2))
    c1 = _masked_epoch(kata.make_loader(ds, 2, seed=22, num_workers=2))
    for name, epoch in (("loader A", a1), ("loader B", b1), ("loader C", c1)):
        assert sorted(epoch[0]) == labels, (
            f"{name} (num_workers=2) should visit the 8 samples once each, got {epoch[0]}"
        )
    patterns = [tuple(map(tuple, masks)) for masks in a1[2]]
    assert len(set(patterns)) == len(patterns), (
        "two batches of one epoch got the very same random masks: with 2 workers, batches 0 and 1 come from "
        "different workers and should be augmented differently; likely cause: the worker_init_fn is "
        "missing or does not reseed dataset.rng, so every worker draws from the same copied generator"
    )
    assert a1[:2] == b1[:2], (
        "two loaders with seed=21 and 2 workers gave different epochs (order or masks); likely cause: "
        "the workers' RNGs are seeded from something other than torch.initial_seed() (time, os.getpid())"
    )
    assert a1[0] != c1[0], "loaders with seeds 21 and 22 gave the same order: seed the loader's generator"
    assert a1[1] != c1[1], (
        "loaders with seeds 21 and 22 applied the same masks to every sample: their workers get different "
        "torch.initial_seed() values (as every new epoch does); likely cause: dataset.rng seeded from "
        "worker_id alone, so every epoch and every seed repeat the same augmentations"
    )
