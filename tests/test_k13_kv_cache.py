"""Grader for k13_kv_cache: logit filters, sampling with a generator, a KV cache, cached decoding, generation.

Oracles, never the reference:
- `filter_logits`: a float64 oracle written from the contract's definition (top-k by comparison with the
  k-th largest value; top-p as "the mass of the strictly more probable tokens is < p", an O(V^2) sum), on
  crafted rows whose kept sets differ for each classic bug, and on hypothesis rows kept away from the
  boundaries (distinct logits at least 1e-6 apart, every mass at least 1e-9 from p) so that float64
  rounding cannot decide membership.
- `sample_next`: 5000 draws in one call (rows alternating between two distributions) compared with the
  oracle's renormalised probabilities by a chi-square test. The thresholds are the chi-square quantiles
  at 1 - 1e-6 for the number of kept tokens minus one, so a correct sampler fails with probability about
  1e-6 per check, whatever order it draws in; the bugs it targets (temperature ignored or applied to the
  probabilities, missing renormalisation in a hand-written sampler, rows mixed up) move the statistic
  into the hundreds or thousands. Removed tokens must never be drawn (exact).
- `cached_forward` and `generate`: the given model's own full forward pass, in float64 (chunked decoding
  agrees with it to ~1e-15; tolerance rtol 1e-10, atol 1e-12) and in float32 (rtol 1e-5, atol 1e-6);
  "never recomputes" is counted with forward hooks on the q/k/v projections; sampled generation is
  compared draw for draw with the naive loop around the learner's own `sample_next` and an equally
  seeded generator (float64 logits make a different draw from rounding alone essentially impossible).
- Graph: a torch function mode records every call that returns a tensor with a grad_fn.
Only a GPU checks that everything (positions, masks, generators) lives on the model's device; on a CPU the
`meta` device catches a mask built on the CPU.
"""

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kata_harness import load_kata
from kata_harness.testing import assert_close, record_graph_calls

kata = load_kata("k13_kv_cache")

# Pay for the meta kernels once, at import, rather than inside one test's 10-second budget.
_ = torch.empty(0, device="meta") + 0

F64 = {"rtol": 1e-10, "atol": 1e-12}
F32 = {"rtol": 1e-5, "atol": 1e-6}
# Chi-square quantiles at 1 - 1e-6, by degrees of freedom (number of kept tokens - 1).
CHI2_CRITICAL = {1: 23.93, 2: 27.63, 3: 30.66, 4: 33.38, 5: 35.89, 6: 38.26, 7: 40.52}
INF = float("inf")


# --- oracles ------------------------------------------------------------------------------------------


def _oracle_keep(logits: torch.Tensor, temperature=1.0, top_k=None, top_p=None) -> torch.Tensor:
    """The kept mask of `filter_logits` for (..., V) logits, from the contract's definitions, in float64."""
    z = logits.double() / temperature
    keep = torch.isfinite(z) | (z > -INF)  # everything not already -inf
    if top_k is not None and top_k < z.shape[-1]:
        kth = z.sort(dim=-1, descending=True).values[..., top_k - 1 : top_k]
        keep = keep & (z >= kth)
    if top_p is not None and top_p < 1:
        probs = z.masked_fill(~keep, -INF).softmax(dim=-1)
        more_probable = probs[..., None, :] > probs[..., :, None]  # [t, j]: j strictly more probable than t
        mass_above = (more_probable * probs[..., None, :]).sum(dim=-1)
        keep = keep & (mass_above < top_p)
    return keep


def _oracle_probs(logits: torch.Tensor, temperature=1.0, top_k=None, top_p=None) -> torch.Tensor:
    keep = _oracle_keep(logits, temperature, top_k, top_p)
    return (logits.double() / temperature).masked_fill(~keep, -INF).softmax(dim=-1)


def _kept(result: torch.Tensor) -> torch.Tensor:
    return result > -INF


def _words(mask: torch.Tensor) -> str:
    return str(mask.nonzero().flatten().tolist()) if mask.dim() == 1 else str(mask.int().tolist())


def _check_filter(logits, expected_keep, what, likely_cause, **settings_) -> torch.Tensor:
    result = kata.filter_logits(logits, **settings_)
    assert (
        isinstance(result, torch.Tensor) and result.shape == logits.shape and result.dtype == logits.dtype
    ), (
        f"{what}: filter_logits should return a {logits.dtype} tensor of shape {tuple(logits.shape)}, got "
        f"{type(result).__name__} {getattr(result, 'dtype', '')} {tuple(getattr(result, 'shape', ()))}"
    )
    got = _kept(result)
    assert torch.equal(got, expected_keep), (
        f"{what}: expected kept tokens {_words(expected_keep)}, got {_words(got)}; "
        f"likely cause: {likely_cause}"
    )
    temperature = settings_.get("temperature", 1.0)
    assert_close(
        result[expected_keep],
        logits[expected_keep] / temperature,
        rtol=1e-12 if logits.dtype == torch.float64 else 1e-6,
        atol=0.0,
        what=f"{what}: the values of the kept logits",
        likely_cause="kept entries must be exactly logits / temperature: not renormalised, not "
        "log-probabilities, not probabilities",
    )
    return result


def _model(dtype=torch.float64, seed=0, **sizes) -> torch.nn.Module:
    torch.manual_seed(seed)
    return kata.TinyCausalLM(**sizes).to(dtype)


def _tokens(batch: int, length: int, vocab: int = 13, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


class _RowCounter:
    """Counts the rows fed to the model's q/k/v projections (forward hooks) and its full forward calls."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.rows = {"q_proj": 0, "k_proj": 0, "v_proj": 0}
        self.forward_calls = 0
        self.handles = [getattr(model, name).register_forward_hook(self._counter(name)) for name in self.rows]
        self.handles.append(model.register_forward_hook(self._count_forward))

    def _counter(self, name):
        def hook(module, inputs, output):
            self.rows[name] += inputs[0].shape[:-1].numel()

        return hook

    def _count_forward(self, module, inputs, output):
        self.forward_calls += 1

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


# --- filter_logits ------------------------------------------------------------------------------------


def test_filter_logits_rejects_bad_settings() -> None:
    logits = torch.randn(2, 5)
    for bad in ({"temperature": 0.0}, {"temperature": -1.0}, {"top_k": 0}, {"top_p": 0.0}, {"top_p": 1.5}):
        with pytest.raises(ValueError):
            kata.filter_logits(logits, **bad)
            pytest.fail(f"filter_logits(logits, **{bad}) should raise ValueError; it returned")


def test_filter_logits_temperature_divides_logits() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0], [0.0, 0.25, -2.0, 1.0]], dtype=torch.float64)
    before = logits.clone()
    everything = torch.ones(2, 4, dtype=torch.bool)
    for temperature in (0.5, 1.0, 2.0):
        _check_filter(
            logits,
            everything,
            f"filter_logits(logits, temperature={temperature}) with no top-k or top-p",
            "temperature removes nothing; it divides the logits (not the probabilities, not multiplies)",
            temperature=temperature,
        )
    assert torch.equal(logits, before), "filter_logits changed its input logits in place; work on a copy"


def test_filter_logits_small_temperature_tends_to_greedy() -> None:
    logits = torch.tensor([[0.3, 1.2, 1.1, -0.5]])
    probs = kata.filter_logits(logits, temperature=1e-3).softmax(dim=-1)
    expected = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    assert_close(
        probs,
        expected,
        rtol=0.0,
        atol=1e-6,
        what="softmax(filter_logits(logits, temperature=1e-3)): nearly all mass on the argmax",
        likely_cause="the temperature must divide the logits (z / T); multiplying, or dividing the "
        "probabilities, does not sharpen the distribution",
    )


def test_filter_logits_top_k_keeps_the_k_largest() -> None:
    logits = torch.tensor([[0.1, 2.0, -1.0, 1.5, 0.7], [3.0, -2.0, 0.0, 1.0, 2.5]])
    expected = torch.tensor([[False, True, False, True, True], [True, False, False, True, True]])
    _check_filter(
        logits,
        expected,
        "filter_logits(logits, top_k=3), two rows",
        "keep the entries >= the k-th LARGEST of each row (sort or topk descending, along the last dim)",
        top_k=3,
    )


def test_filter_logits_top_k_keeps_ties_at_the_boundary() -> None:
    for row, k, expected in (
        ([1.0, 3.0, 3.0, 2.0], 1, [False, True, True, False]),
        ([1.0, 3.0, 2.0, 2.0], 2, [False, True, True, True]),
    ):
        _check_filter(
            torch.tensor(row),
            torch.tensor(expected),
            f"filter_logits({row}, top_k={k})",
            "the contract keeps every entry >= the k-th largest value, so ties at the boundary all stay "
            "(compare with the k-th largest value instead of scattering exactly k indices)",
            top_k=k,
        )


@pytest.mark.parametrize("k", [5, 9])
def test_filter_logits_top_k_at_least_vocab_filters_nothing(k: int) -> None:
    logits = torch.tensor([[0.1, 2.0, -1.0, 1.5, 0.7]])
    _check_filter(
        logits,
        torch.ones(1, 5, dtype=torch.bool),
        f"filter_logits(logits with V=5, top_k={k})",
        "top_k >= V keeps everything (torch.topk raises for k > V: skip the filter then)",
        top_k=k,
    )


# Probabilities 0.5, 0.25, 0.15, 0.1, given in a shuffled order.
NUCLEUS_PROBS = torch.tensor([0.15, 0.5, 0.1, 0.25], dtype=torch.float64)


@pytest.mark.parametrize(
    "top_p, expected, likely_cause",
    [
        (0.3, [False, True, False, False], "the most probable token alone already reaches p"),
        (
            0.6,
            [False, True, False, True],
            "0.5 < 0.6, so the token that crosses p (0.25) must stay, and nothing after it: keep a sorted "
            "token while the mass BEFORE it is < p (an inclusive cumsum > p drops the crossing token)",
        ),
        (
            0.8,
            [True, True, False, True],
            "0.5 + 0.25 = 0.75 < 0.8, 0.5 + 0.25 + 0.15 = 0.9 crosses: keep three, not four",
        ),
        (
            0.95,
            [True, True, True, True],
            "0.9 < 0.95, so the least probable token is needed to reach p",
        ),
    ],
)
def test_filter_logits_top_p_keeps_the_smallest_nucleus(top_p, expected, likely_cause) -> None:
    logits = NUCLEUS_PROBS.log() + 0.7  # any constant shift leaves the probabilities alone
    _check_filter(
        logits,
        torch.tensor(expected),
        f"filter_logits(logits with probabilities {NUCLEUS_PROBS.tolist()}, top_p={top_p})",
        likely_cause + "; sort DESCENDING, and map the decision back to the original token order",
        top_p=top_p,
    )


def test_filter_logits_top_p_always_keeps_the_top_token() -> None:
    logits = torch.tensor([[0.0, 4.0, 1.0], [2.0, -1.0, 0.5]])
    _check_filter(
        logits,
        torch.tensor([[False, True, False], [True, False, False]]),
        "filter_logits(logits, top_p=1e-9)",
        "the most probable token is always kept, however small p is (the mass before it is 0 < p)",
        top_p=1e-9,
    )


def test_filter_logits_top_p_keeps_ties_with_the_last_kept_token() -> None:
    logits = torch.tensor([2.0, 1.0, 1.0, 1.0, 0.5]).log()  # probabilities 0.4, 0.2, 0.2, 0.2, 0.1
    for top_p, expected in (
        (0.3, [True, False, False, False, False]),
        (0.5, [True, True, True, True, False]),
    ):
        _check_filter(
            logits,
            torch.tensor(expected),
            f"filter_logits(logits with probabilities [0.4, 0.2, 0.2, 0.2, 0.1], top_p={top_p})",
            "tokens tied with the token that crosses p are all kept (a token goes only when the mass of the "
            "STRICTLY more probable tokens reaches p); keep every token whose probability is >= the "
            "smallest kept one",
            top_p=top_p,
        )


def test_filter_logits_top_p_one_filters_nothing() -> None:
    # In float32 the cumulative sum reaches exactly 1.0 after the first token: 1 - 9e-14 rounds to 1.
    logits = torch.tensor([[0.0, -30.0, -32.0, -40.0], [1.0, 0.0, -1.0, -2.0]])
    _check_filter(
        logits,
        torch.ones(2, 4, dtype=torch.bool),
        "filter_logits(float32 logits with tiny probabilities, top_p=1.0)",
        "p = 1 filters nothing; a cumulative sum in float32 reaches 1.0 before the last token, so p = 1 "
        "must skip the filter rather than trust the comparison",
        top_p=1.0,
    )


def test_filter_logits_order_temperature_top_k_then_renormalised_top_p() -> None:
    logits = torch.tensor([0.45, 0.25, 0.18, 0.12], dtype=torch.float64).log()
    _check_filter(
        logits,
        torch.tensor([True, False, False, False]),
        "filter_logits(logits with probabilities [0.45, 0.25, 0.18, 0.12], top_k=2, top_p=0.6)",
        "top-p runs AFTER top-k, on the softmax of what top-k kept (renormalised: 0.64, 0.36), so 0.64 "
        "alone reaches 0.6; top-p on the original probabilities keeps two",
        top_k=2,
        top_p=0.6,
    )
    logits = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64).log()
    _check_filter(
        logits,
        torch.tensor([True, False, False]),
        "filter_logits(logits with probabilities [0.5, 0.3, 0.2], temperature=0.5, top_p=0.6)",
        "top-p uses the probabilities AFTER the temperature (softmax(z / T) = 0.66, 0.24, 0.11 here), not "
        "the original ones",
        temperature=0.5,
        top_p=0.6,
    )


def test_filter_logits_rows_of_any_shape_and_removed_tokens() -> None:
    logits = torch.tensor(
        [
            [[0.1, 2.0, -1.0, 1.5, 0.7], [3.0, -INF, 0.0, 1.0, -INF]],
            [[-INF, -INF, 0.5, -INF, 0.0], [1.0, 1.1, 0.9, 1.2, 0.8]],
        ],
        dtype=torch.float64,
    )
    settings_ = {"temperature": 0.8, "top_k": 4, "top_p": 0.7}
    _check_filter(
        logits,
        _oracle_keep(logits, **settings_),
        f"filter_logits on a (2, 2, 5) tensor with some -inf entries, {settings_}",
        "every row of the last dimension is filtered on its own (sort, topk, cumsum and softmax along "
        "dim=-1, never flattening the leading dimensions); -inf entries stay -inf",
        **settings_,
    )


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 3),
    vocab=st.integers(2, 9),
    data=st.data(),
    temperature=st.sampled_from([0.5, 1.0, 1.7]),
    top_k=st.one_of(st.none(), st.integers(1, 10)),
    top_p=st.one_of(st.none(), st.floats(0.05, 0.99)),
)
def test_filter_logits_matches_the_definition(rows, vocab, data, temperature, top_k, top_p) -> None:
    values = data.draw(st.lists(st.floats(-4, 4), min_size=rows * vocab, max_size=rows * vocab))
    logits = torch.tensor(values, dtype=torch.float64).view(rows, vocab)
    z = logits / temperature
    gaps = (z[:, :, None] - z[:, None, :]).abs()
    assume(bool(((gaps == 0) | (gaps > 1e-6)).all()))
    if top_p is not None:
        kept_k = _oracle_keep(logits, temperature, top_k)
        probs = z.masked_fill(~kept_k, -INF).softmax(dim=-1)
        mass_above = ((probs[:, None, :] > probs[:, :, None]) * probs[:, None, :]).sum(dim=-1)
        assume(bool(((mass_above - top_p).abs() > 1e-9).all()))
    settings_ = {"temperature": temperature, "top_k": top_k, "top_p": top_p}
    _check_filter(
        logits,
        _oracle_keep(logits, **settings_),
        f"filter_logits({logits.tolist()}, **{settings_})",
        "compare with the contract: temperature, then top-k (>= the k-th largest), then top-p on the "
        "renormalised result (a token stays while the mass of the strictly more probable ones is < p)",
        **settings_,
    )


# --- sample_next --------------------------------------------------------------------------------------


def test_sample_next_greedy_is_argmax_and_draws_nothing() -> None:
    logits = torch.tensor([[0.1, 2.0, 2.0, -1.0], [3.0, 0.0, 1.0, 2.0], [-1.0, -2.0, -0.5, -0.5]])
    generator = torch.Generator().manual_seed(5)
    generator_state, global_state = generator.get_state(), torch.get_rng_state()
    for gen in (generator, None):
        tokens = kata.sample_next(logits, gen, temperature=0.0, top_k=2, top_p=0.5)
        assert isinstance(tokens, torch.Tensor) and tokens.dtype == torch.int64 and tokens.shape == (3,), (
            f"sample_next should return an int64 tensor of shape (B,) = (3,), got {type(tokens).__name__} "
            f"{getattr(tokens, 'dtype', '')} {tuple(getattr(tokens, 'shape', ()))}"
        )
        assert tokens.tolist() == [1, 0, 2], (
            f"sample_next(temperature=0) should be the argmax of each row, the lowest index among ties: "
            f"expected [1, 0, 2], got {tokens.tolist()}; likely cause: argmax along the wrong dimension, or "
            f"top-k/top-p/sampling applied although temperature is 0"
        )
    assert torch.equal(generator.get_state(), generator_state), (
        "sample_next(temperature=0) advanced the generator: greedy decoding draws no random numbers"
    )
    assert torch.equal(torch.get_rng_state(), global_state), (
        "sample_next(temperature=0) changed the global RNG"
    )


def test_sample_next_rejects_bad_settings() -> None:
    logits = torch.randn(2, 5)
    with pytest.raises(ValueError):
        kata.sample_next(logits, None, temperature=1.0)
        pytest.fail("sample_next(logits, None, temperature=1.0) should raise ValueError: it has no generator")
    with pytest.raises(ValueError):
        kata.sample_next(logits, torch.Generator(), temperature=-0.5)
        pytest.fail("sample_next(temperature=-0.5) should raise ValueError")


def _chi_square(counts: torch.Tensor, probs: torch.Tensor, what: str, likely_cause: str) -> None:
    n = int(counts.sum())
    kept = probs > 0
    outside = counts[~kept].sum()
    assert outside == 0, (
        f"{what}: drew {int(outside)} of {n} tokens that the filters remove (expected none; counts "
        f"{counts.tolist()}, kept {_words(kept)}); likely cause: {likely_cause}"
    )
    expected = probs[kept] * n
    statistic = float(((counts[kept] - expected) ** 2 / expected).sum())
    df = int(kept.sum()) - 1
    if df == 0:
        return
    assert statistic < CHI2_CRITICAL[df], (
        f"{what}: the draws do not follow the filtered distribution. Expected frequencies "
        f"{[round(p, 4) for p in probs.tolist()]}, got {[round(c / n, 4) for c in counts.tolist()]} "
        f"(chi-square {statistic:.1f} with {df} degrees of freedom; a correct sampler stays below "
        f"{CHI2_CRITICAL[df]} with probability 1 - 1e-6); likely cause: {likely_cause}"
    )


@pytest.mark.parametrize(
    "settings_, likely_cause",
    [
        (
            {"temperature": 2.0},
            "sample from softmax(logits / T): dividing the probabilities by T, or ignoring T, leaves the "
            "distribution as it was",
        ),
        (
            {"temperature": 0.7, "top_k": 4, "top_p": 0.8},
            "sample from the softmax of filter_logits(...), renormalised over the kept tokens only, with "
            "one independent draw per row (torch.multinomial(probs, 1, generator=...) on (B, V) probs)",
        ),
    ],
)
def test_sample_next_follows_the_filtered_distribution(settings_, likely_cause) -> None:
    rows = torch.tensor([[1.0, 0.2, -0.5, 0.6, -1.5, 0.0], [-1.0, 0.4, 1.2, -0.3, 0.8, 0.1]])
    logits = rows.repeat(
        2500, 1
    )  # rows alternate between the two distributions (under 32768 entries: one thread)
    tokens = kata.sample_next(logits, torch.Generator().manual_seed(123), **settings_)
    assert tokens.dtype == torch.int64 and tokens.shape == (5000,), (
        f"sample_next should return int64 (B,) = (5000,), got {tokens.dtype} {tuple(tokens.shape)}"
    )
    for r in range(2):
        counts = torch.bincount(tokens[r::2], minlength=6).double()
        _chi_square(
            counts,
            _oracle_probs(rows[r], **settings_),
            f"sample_next({settings_}) on row {r}'s logits, 2500 draws",
            likely_cause,
        )


def test_sample_next_uses_only_the_generator() -> None:
    logits = torch.randn(200, 7, generator=torch.Generator().manual_seed(0))
    global_state = torch.get_rng_state()
    gen = torch.Generator().manual_seed(42)
    first = kata.sample_next(logits, gen, temperature=1.0, top_p=0.9)
    assert torch.equal(torch.get_rng_state(), global_state), (
        "sample_next changed the global RNG state: draw with the generator passed in "
        "(torch.multinomial(..., generator=generator)), never torch.manual_seed or an unseeded draw"
    )
    again = kata.sample_next(logits, torch.Generator().manual_seed(42), temperature=1.0, top_p=0.9)
    assert torch.equal(first, again), (
        "two generators seeded alike (42) gave different tokens: all randomness must come from the "
        "generator passed in"
    )
    other = kata.sample_next(logits, torch.Generator().manual_seed(7), temperature=1.0, top_p=0.9)
    assert not torch.equal(first, other), (
        "generators seeded 42 and 7 gave the same 200 tokens: the generator passed in is ignored"
    )
    second = kata.sample_next(logits, gen, temperature=1.0, top_p=0.9)
    assert not torch.equal(first, second), (
        "two calls with the same generator gave the same 200 tokens: the generator's state must advance "
        "(draw from it, do not reseed or copy it)"
    )


# --- KVCache ------------------------------------------------------------------------------------------


def test_kv_cache_starts_empty() -> None:
    cache = kata.KVCache()
    assert len(cache) == 0 and cache.keys is None and cache.values is None, (
        f"KVCache() should be empty: len 0, keys and values None; got len {len(cache)}, keys "
        f"{type(cache.keys).__name__}, values {type(cache.values).__name__}"
    )


def test_kv_cache_append_concatenates_positions() -> None:
    gen = torch.Generator().manual_seed(3)
    parts = [
        (torch.randn(2, 3, t, 4, generator=gen), torch.randn(2, 3, t, 4, generator=gen)) for t in (2, 1, 3)
    ]
    cache = kata.KVCache()
    for i, (k, v) in enumerate(parts):
        returned = cache.append(k, v)
        total = sum(p[0].shape[2] for p in parts[: i + 1])
        expected_k = torch.cat([p[0] for p in parts[: i + 1]], dim=2)
        expected_v = torch.cat([p[1] for p in parts[: i + 1]], dim=2)
        assert len(cache) == total, (
            f"after appending {total} positions, len(cache) should be {total}, got {len(cache)}; likely "
            f"cause: counting appends, or a dimension other than 2 (the positions of (B, H, T, D))"
        )
        for name, got, want in (
            ("keys", cache.keys, expected_k),
            ("values", cache.values, expected_v),
            ("returned keys", returned[0], expected_k),
            ("returned values", returned[1], expected_v),
        ):
            assert_close(
                got,
                want,
                rtol=0.0,
                atol=0.0,
                what=f"KVCache {name} after {i + 1} appends",
                likely_cause="the old positions followed by the new ones along dim 2 "
                "(torch.cat(..., dim=2)); keys and values kept apart",
            )


def test_kv_cache_keeps_its_own_copy() -> None:
    k, v = torch.randn(1, 2, 2, 3), torch.randn(1, 2, 2, 3)
    cache = kata.KVCache()
    cache.append(k, v)
    saved_k, saved_v = k.clone(), v.clone()
    k.add_(100.0)
    v.mul_(-1.0)
    assert torch.equal(cache.keys, saved_k) and torch.equal(cache.values, saved_v), (
        "changing k and v in place after the first append changed the cache: it stored the caller's "
        "tensors themselves; keep a copy (k.clone()) or a concatenation"
    )


def test_kv_cache_rejects_mismatched_appends() -> None:
    cache = kata.KVCache()
    for k, v in (
        (torch.randn(1, 2, 3), torch.randn(1, 2, 3)),
        (torch.randn(1, 2, 3, 4), torch.randn(1, 2, 2, 4)),
    ):
        with pytest.raises(ValueError):
            cache.append(k, v)
            pytest.fail(
                f"KVCache.append of k {tuple(k.shape)} and v {tuple(v.shape)} should raise ValueError"
            )
    with pytest.raises(ValueError):
        cache.append(torch.randn(1, 2, 0, 4), torch.randn(1, 2, 0, 4))
        pytest.fail("KVCache.append with T_new = 0 should raise ValueError")
    cache.append(torch.randn(2, 3, 1, 4), torch.randn(2, 3, 1, 4))
    bad = {
        "another batch size": (3, 3, 1, 4),
        "another head count": (2, 2, 1, 4),
        "another head size": (2, 3, 1, 5),
    }
    for label, shape in bad.items():
        with pytest.raises(ValueError):
            cache.append(torch.randn(shape), torch.randn(shape))
            pytest.fail(
                f"KVCache.append with {label} {shape} on a (2, 3, 1, 4) cache should raise ValueError"
            )
    with pytest.raises(ValueError):
        cache.append(
            torch.randn(2, 3, 1, 4, dtype=torch.float64), torch.randn(2, 3, 1, 4, dtype=torch.float64)
        )
        pytest.fail("KVCache.append of float64 keys to a float32 cache should raise ValueError")
    assert len(cache) == 1, (
        f"rejected appends must leave the cache unchanged: len is {len(cache)}, expected 1"
    )


# --- cached_forward -----------------------------------------------------------------------------------


def _heads(t: torch.Tensor, model) -> torch.Tensor:
    b, n, _ = t.shape
    return t.view(b, n, model.n_heads, model.head_dim).transpose(1, 2)


def _oracle_keys_values(model, seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        x = model.tok_emb(seq) + model.pos_emb(torch.arange(seq.shape[1]))
        return _heads(model.k_proj(x), model), _heads(model.v_proj(x), model)


CHUNKINGS = {
    "token by token": [1] * 9,
    "prefill then single tokens": [4, 1, 1, 1, 1, 1],
    "prefill then chunks": [3, 3, 1, 2],
    "one prefill": [9],
}


@pytest.mark.parametrize("chunking", list(CHUNKINGS))
def test_cached_forward_matches_full_forward_float64(chunking: str) -> None:
    model = _model()
    seq = _tokens(3, 9)
    with torch.no_grad():
        full = model(seq)
    cache = kata.KVCache()
    start = 0
    for size in CHUNKINGS[chunking]:
        chunk = seq[:, start : start + size]
        logits = kata.cached_forward(model, chunk, cache)
        where = f"cached_forward on positions {start}..{start + size - 1} ({chunking}, B=3, float64)"
        assert isinstance(logits, torch.Tensor) and logits.shape == (3, size, 13), (
            f"{where}: expected logits of shape (B, T_new, V) = (3, {size}, 13), got "
            f"{tuple(getattr(logits, 'shape', ()))}"
        )
        assert len(cache) == start + size, (
            f"{where}: len(cache) should be {start + size} afterwards, got {len(cache)}; likely cause: the "
            f"new keys appended twice, or not at all"
        )
        assert_close(
            logits,
            full[:, start : start + size],
            **F64,
            what=f"{where} vs model(seq)[:, {start}:{start + size}]",
            likely_cause="the new tokens' positional index must start at len(cache), not 0; the scores are "
            "scaled by 1/sqrt(head_dim); a chunk over a cache needs the causal mask offset by the cache "
            "length (is_causal=True aligns it top-left, wrongly); the residual and lm_head as in forward",
        )
        start += size
    keys, values = _oracle_keys_values(model, seq)
    assert_close(
        cache.keys,
        keys,
        **F64,
        what="cache.keys after the whole sequence, (B, n_heads, T, head_dim)",
        likely_cause="split the k_proj output into heads as forward does, .view(B, T, H, D).transpose(1, 2)",
    )
    assert_close(cache.values, values, **F64, what="cache.values after the whole sequence")


def test_cached_forward_float32() -> None:
    model = _model(torch.float32)
    seq = _tokens(2, 7, seed=4)
    with torch.no_grad():
        full = model(seq)
    cache = kata.KVCache()
    got = torch.cat(
        [kata.cached_forward(model, seq[:, a:b], cache) for a, b in ((0, 3), (3, 4), (4, 7))], dim=1
    )
    assert_close(
        got,
        full,
        **F32,
        what="cached_forward in float32, chunks 3, 1, 3, vs model(seq)",
        likely_cause="the logits and the cache follow the model's dtype; no float64 detour or Python floats",
    )
    assert cache.keys.dtype == torch.float32, (
        f"cache.keys should be float32 like the model, got {cache.keys.dtype}"
    )


def test_cached_forward_never_recomputes_old_positions() -> None:
    model = _model()
    seq = _tokens(2, 8, seed=6)
    counter = _RowCounter(model)
    try:
        cache = kata.KVCache()
        for a, b in ((0, 4), (4, 5), (5, 6), (6, 8)):
            before = dict(counter.rows)
            kata.cached_forward(model, seq[:, a:b], cache)
            fed = {name: counter.rows[name] - before[name] for name in counter.rows}
            assert fed == dict.fromkeys(fed, 2 * (b - a)), (
                f"cached_forward on positions {a}..{b - 1} (B=2) should feed B * T_new = {2 * (b - a)} rows "
                f"to each of q_proj, k_proj, v_proj; they got {fed}; likely cause: the whole prefix "
                f"recomputed each step (what the cache is there to avoid), a projection applied twice, or "
                f"the weights used directly (F.linear(x, model.k_proj.weight)) instead of calling the layer"
            )
        assert counter.forward_calls == 0, (
            f"cached_forward called model.forward {counter.forward_calls} times: it must run the layers "
            f"itself, on the new tokens only"
        )
    finally:
        counter.close()


def test_cached_forward_records_no_graph() -> None:
    model = _model(torch.float32)
    seq = _tokens(2, 5, seed=7)
    cache = kata.KVCache()
    for a, b in ((0, 3), (3, 4), (4, 5)):
        with record_graph_calls() as recorded:
            logits = kata.cached_forward(model, seq[:, a:b], cache)
        assert not recorded, (
            f"cached_forward with grad enabled built an autograd graph ({sorted(set(recorded))}); "
            f"decoding never backpropagates: run it under torch.no_grad() or torch.inference_mode() (a "
            f".detach() at the end still builds, and keeps, the graph)"
        )
        assert not logits.requires_grad and not cache.keys.requires_grad and not cache.values.requires_grad
    assert all(p.grad is None for p in model.parameters()), (
        "cached_forward must leave the parameters' .grad alone"
    )


def test_cached_forward_rejects_bad_input() -> None:
    model = _model(torch.float32, max_len=6)
    cache = kata.KVCache()
    kata.cached_forward(model, _tokens(1, 4), cache)
    with pytest.raises(ValueError):
        kata.cached_forward(model, _tokens(1, 3), cache)
        pytest.fail("cached_forward with 4 cached + 3 new positions and max_len=6 should raise ValueError")
    with pytest.raises(ValueError):
        kata.cached_forward(model, torch.tensor([1, 2]), kata.KVCache())
        pytest.fail("cached_forward with 1-D tokens should raise ValueError: tokens are (B, T_new)")


def test_cached_forward_builds_masks_on_the_model_device() -> None:
    model = _model(torch.float32).to("meta")
    tokens = torch.zeros(2, 3, dtype=torch.int64, device="meta")
    cache = kata.KVCache()
    try:
        first = kata.cached_forward(model, tokens, cache)
        second = kata.cached_forward(model, tokens[:, :2], cache)
    except NotImplementedError:
        raise
    except Exception as exc:
        if "device" in str(exc):
            pytest.fail(
                f"cached_forward on the meta device mixed devices ({type(exc).__name__}: {exc}); likely "
                f"cause: a mask or a position index built without device=tokens.device (fails on a GPU too)"
            )
        pytest.skip(f"cached_forward cannot run on the meta device ({type(exc).__name__}); checked on a GPU")
    assert first.device.type == "meta" and first.shape == (2, 3, 13) and second.shape == (2, 2, 13), (
        f"cached_forward on meta tensors should return meta logits (2, 3, 13) then (2, 2, 13), got "
        f"{first.device} {tuple(first.shape)} and {tuple(second.shape)}"
    )


# --- generate -----------------------------------------------------------------------------------------


def _naive_greedy(model, prompt: torch.Tensor, n: int) -> torch.Tensor:
    seq = prompt
    with torch.no_grad():
        for _ in range(n):
            seq = torch.cat([seq, model(seq)[:, -1].argmax(dim=-1, keepdim=True)], dim=1)
    return seq


def _naive_sampling(model, prompt: torch.Tensor, n: int, generator, **settings_) -> torch.Tensor:
    seq = prompt
    with torch.no_grad():
        for _ in range(n):
            token = kata.sample_next(model(seq)[:, -1], generator, **settings_)
            seq = torch.cat([seq, token[:, None]], dim=1)
    return seq


def _check_tokens(got, expected, what: str, likely_cause: str) -> None:
    assert isinstance(got, torch.Tensor) and got.dtype == torch.int64 and got.shape == expected.shape, (
        f"{what}: expected an int64 tensor of shape {tuple(expected.shape)} (prompt then new tokens), got "
        f"{type(got).__name__} {getattr(got, 'dtype', '')} {tuple(getattr(got, 'shape', ()))}"
    )
    assert torch.equal(got, expected), (
        f"{what}: expected\n{expected}\ngot\n{got}\nLikely cause: {likely_cause}"
    )


def test_generate_greedy_matches_the_naive_loop() -> None:
    model = _model()
    prompt = _tokens(3, 4, seed=8)
    before = prompt.clone()
    got = kata.generate(model, prompt, 7, None, temperature=0.0)
    _check_tokens(
        got,
        _naive_greedy(model, prompt, 7),
        "generate(model, prompt (3, 4), 7, None, temperature=0) vs argmax of model(seq)[:, -1] each step",
        "the prefill's LAST position gives the first new token; each new token is fed at position "
        "len(cache); rows of the batch kept apart",
    )
    assert torch.equal(prompt, before), "generate changed the prompt in place"


def test_generate_sampling_matches_the_naive_loop_draw_for_draw() -> None:
    model = _model()
    prompt = _tokens(4, 3, seed=9)
    settings_ = {"temperature": 0.9, "top_k": 8, "top_p": 0.9}
    global_state = torch.get_rng_state()
    got = kata.generate(model, prompt, 8, torch.Generator().manual_seed(11), **settings_)
    assert torch.equal(torch.get_rng_state(), global_state), (
        "generate changed the global RNG state: every draw must come from the generator passed in"
    )
    _check_tokens(
        got,
        _naive_sampling(model, prompt, 8, torch.Generator().manual_seed(11), **settings_),
        f"generate(..., generator seeded 11, **{settings_}) vs the naive loop of sample_next calls",
        "one sample_next(last_logits, generator, temperature, top_k, top_p) per new token, with the "
        "settings passed on and the same generator throughout",
    )
    again = kata.generate(model, prompt, 8, torch.Generator().manual_seed(11), **settings_)
    assert torch.equal(got, again), "generate with generators seeded alike gave different tokens"


@pytest.mark.parametrize("new", [0, 1, 6])
def test_generate_feeds_each_position_once(new: int) -> None:
    model = _model()
    prompt = _tokens(2, 5, seed=10)
    counter = _RowCounter(model)
    try:
        got = kata.generate(model, prompt, new, torch.Generator().manual_seed(0))
    finally:
        counter.close()
    assert got.shape == (2, 5 + new), f"generate should return (2, {5 + new}), got {tuple(got.shape)}"
    want = 0 if new == 0 else 2 * (5 + new - 1)
    assert counter.rows == dict.fromkeys(counter.rows, want), (
        f"generate(prompt (2, 5), max_new_tokens={new}) should feed B * (P + max_new_tokens - 1) = {want} "
        f"rows to each of q_proj, k_proj, v_proj; they got {counter.rows}; likely cause: the prefix "
        f"recomputed at each step, the prompt run twice (once with model(prompt)), or the last new token "
        f"fed to the model although nothing reads its logits"
    )
    assert counter.forward_calls == 0, f"generate called model.forward {counter.forward_calls} times"


def test_generate_records_no_graph_and_leaves_the_model_alone() -> None:
    model = _model(torch.float32)
    model.train()
    prompt = _tokens(2, 3, seed=12)
    with record_graph_calls() as recorded:
        got = kata.generate(model, prompt, 4, torch.Generator().manual_seed(1))
    assert not recorded, (
        f"generate built an autograd graph ({sorted(set(recorded))}); decode under "
        f"torch.no_grad() or torch.inference_mode()"
    )
    assert not got.requires_grad, "generate's result should not require grad"
    assert model.training, "generate changed model.training: leave the model's mode as it was"
    assert all(p.grad is None for p in model.parameters()), "generate must leave the parameters' .grad alone"


def test_generate_rejects_bad_arguments() -> None:
    model = _model(torch.float32, max_len=8)
    gen = torch.Generator().manual_seed(0)
    cases = [
        ("an empty prompt (2, 0)", lambda: kata.generate(model, _tokens(2, 0), 3, gen)),
        ("max_new_tokens=-1", lambda: kata.generate(model, _tokens(2, 3), -1, gen)),
        ("P + max_new_tokens = 5 + 4 > max_len = 8", lambda: kata.generate(model, _tokens(2, 5), 4, gen)),
        ("generator None with temperature 1.0", lambda: kata.generate(model, _tokens(2, 3), 2, None)),
    ]
    for label, call in cases:
        with pytest.raises(ValueError):
            call()
            pytest.fail(f"generate with {label} should raise ValueError")
    got = kata.generate(model, _tokens(2, 5), 3, gen)  # 5 + 3 = max_len: allowed
    assert got.shape == (2, 8), f"generate up to exactly max_len should work, got shape {tuple(got.shape)}"


def test_generate_on_device(device: torch.device) -> None:
    model = _model().to(device)  # float64: no argmax can flip between cached and full logits
    prompt = _tokens(2, 4, seed=13).to(device)
    greedy = kata.generate(model, prompt, 5, None, temperature=0.0)
    assert greedy.device == prompt.device, f"generate on {device} returned tokens on {greedy.device}"
    _check_tokens(
        greedy,
        _naive_greedy(model, prompt, 5),
        f"greedy generate on {device}",
        "positions, masks and new tokens must be created on the model's device",
    )
    first = kata.generate(model, prompt, 5, torch.Generator(device=device).manual_seed(3), top_k=5)
    again = kata.generate(model, prompt, 5, torch.Generator(device=device).manual_seed(3), top_k=5)
    assert first.device == prompt.device and torch.equal(first, again), (
        f"sampling generate on {device} with generators seeded alike should repeat, on the prompt's device"
    )
    assert math.isfinite(float(first.float().mean())), "generated tokens must be valid ids"
