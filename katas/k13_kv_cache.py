"""KV cache and sampling: autoregressive decoding from scratch

Interview question: How does a KV cache speed up decoding? How do temperature, top-k and top-p sampling work?

Difficulty 4/5, about 75 minutes, after katas 4 and 11.

The idea
========
A decoder-only language model generates one token at a time: run the model on the sequence so far, take
the logits of the LAST position, pick a token, append it, repeat. Done naively, step t runs the whole
model on all t tokens again, so n new tokens cost O(n^2) projections and O(n^3) attention work, and
almost all of it recomputes numbers already computed at the previous step.

Causal attention makes that recomputation pointless. Position i attends only to positions <= i, so the
key and value vectors of an old position never change once computed: nothing after it can affect
them. A KV cache keeps them. Each decoding step then feeds ONLY the new token through the model: its
query, key and value are projected (one row per sequence instead of t), its key and value are appended
to the cache, and its query attends over all cached keys. Per step that is O(t) attention work instead
of O(t^2), and O(1) projections instead of O(t). The first step, the PREFILL, runs the whole prompt in one
parallel pass and fills the cache; every later step is a DECODE step of one token.

What the cache costs is memory: 2 (keys and values) x layers x heads x head_dim x positions x batch
numbers. For a 7B model in the Llama-2 shape (32 layers, 32 heads of 128, fp16) that is 2 * 32 * 4096 *
2 bytes = 0.5 MiB per token, so 2 GiB for one 4096-token sequence. That is why decoding is memory-bound
(each step reads the whole cache and all the weights to do little arithmetic), and why multi-query and
grouped-query attention (fewer key/value heads than query heads) and paged caches exist.

Three details decide whether incremental decoding reproduces the full forward pass exactly:
- Positions. A token fed alone at step t sits at position t, not 0: its positional embedding index is
  the number of positions already in the cache.
- The mask of a chunk. When several new tokens are fed at once over a non-empty cache (the prefill is
  the special case of an empty cache), new token i may see every cached position and new tokens 0..i.
  The causal mask is offset by the cache length: it is the bottom-right corner of the full mask. A
  single new token needs no mask at all. Beware `F.scaled_dot_product_attention(..., is_causal=True)`:
  its mask is aligned top-left (`torch.ones(L, S).tril()`), which is right only when there is no cache.
- The cache is appended to exactly once per position, before the new queries attend (a token sees
  itself).

Choosing the next token from the logits z (one row of the vocabulary, V entries):
- Greedy: `argmax z`. Deterministic, and prone to dull, repetitive text.
- Temperature T: sample from `softmax(z / T)`. T < 1 sharpens, T > 1 flattens, T -> 0 tends to greedy.
  It divides the LOGITS: dividing the probabilities instead changes nothing once they are renormalised.
- Top-k: keep the k largest logits, set the rest to -inf, sample from the softmax of what is left. A
  fixed k is too many candidates for a confident distribution and too few for a flat one.
- Top-p (nucleus): sort the probabilities in decreasing order and keep the smallest prefix whose mass
  reaches p; the token that crosses p is kept, the most probable token is always kept, and p = 1 keeps
  everything. The candidate set adapts to the shape of the distribution.
The filters compose in the order used by Hugging Face's `generate`: temperature, then top-k, then top-p
on the RENORMALISED distribution that top-k left. Setting a logit to -inf before the softmax is how a
token is removed: the softmax then renormalises the rest by itself.

Randomness comes from a `torch.Generator` passed in: the same seed gives the same text, and nothing else
in the program (dropout, data shuffling) shifts the draws. Drawing from the global RNG instead would make
every other random call in the program change the generated text, and vice versa.

What interviewers probe
=======================
- What is cached and why queries are not: only keys and values are re-read by later positions; a query
  is used once, at its own step.
- The cost: per step, projections for one token instead of t; the cache's memory formula; why decoding
  is memory-bound and batching helps throughput; MQA/GQA shrinking the cache by sharing key/value heads.
- Off-by-one bugs: the new token's position is the cache length; the last generated token never needs
  to be fed back in; a chunk needs the offset causal mask.
- Top-p edge cases: the token that crosses p is kept, ties at the boundary, the top token always kept,
  p = 1 filters nothing even when floating-point sums reach 1 early.
- Temperature divides logits, not probabilities; temperature 0 is greedy and must not divide by zero.
- Inference hygiene: no autograd graph (`torch.no_grad()` or `torch.inference_mode()`), a seeded
  generator, the model's own device and dtype.

Your tasks
==========
`TinyCausalLM` is given: a one-layer causal self-attention language model. Read its `forward`.
1. `filter_logits(logits, temperature, top_k, top_p)` - temperature, top-k and top-p as logit masks.
2. `sample_next(logits, generator, temperature, top_k, top_p)` - pick one token per row.
3. `KVCache` - the keys and values of every position so far; `append` grows them.
4. `cached_forward(model, tokens, cache)` - run new tokens over a cache: the model's logits for them.
5. `generate(model, prompt, max_new_tokens, generator, ...)` - prefill once, then one token per step.

Follow-up questions
===================
- How much memory does the KV cache of a 7B model take for one 4096-token sequence, and what do
  multi-query and grouped-query attention change?
- Why is decoding memory-bound while the prefill is compute-bound, and what does batching many requests
  change?
- Why do we cache keys and values but not queries?
- Why does `F.scaled_dot_product_attention(q, k, v, is_causal=True)` give wrong results for a decode step
  over a cache, and what mask is right for a chunk of new tokens?
- Why can top-k alone be a poor choice, and what does top-p adapt to?
- Why should a sampler take a `torch.Generator` instead of calling `torch.manual_seed`?

Grade this kata: `nox -s check -- 13`. Stuck? `nox -s hint -- 13`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class TinyCausalLM(nn.Module):  # stub: keep
    """A one-layer decoder-only language model: given, not a task. Read `forward`: it defines the logits.

    Token embedding plus learned positional embedding, one multi-head causal self-attention block with a
    residual connection, and a linear head over the vocabulary. The layers your code uses, by these names:
    `tok_emb`, `pos_emb` (nn.Embedding), `q_proj`, `k_proj`, `v_proj`, `out_proj`, `lm_head` (nn.Linear);
    and the sizes `vocab_size`, `d_model`, `n_heads`, `head_dim` (= d_model // n_heads), `max_len` (the
    number of positions `pos_emb` has).
    """

    def __init__(self, vocab_size: int = 13, d_model: int = 16, n_heads: int = 2, max_len: int = 24) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not a multiple of n_heads {n_heads}")
        self.vocab_size, self.d_model, self.n_heads, self.max_len = vocab_size, d_model, n_heads, max_len
        self.head_dim = d_model // n_heads
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(max_len, d_model)
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.lm_head = nn.Linear(d_model, vocab_size)

    def forward(self, tokens: Tensor) -> Tensor:
        """Logits (B, T, vocab_size) of int64 `tokens` (B, T), T <= max_len; t sees positions <= t."""
        batch, length = tokens.shape
        positions = torch.arange(length, device=tokens.device)
        x = self.tok_emb(tokens) + self.pos_emb(positions)  # (B, T, d_model)

        def heads(t: Tensor) -> Tensor:  # (B, T, d_model) -> (B, n_heads, T, head_dim)
            return t.view(batch, length, self.n_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, n_heads, T, T)
        future = torch.ones(length, length, dtype=torch.bool, device=tokens.device).triu(1)
        weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
        attended = (weights @ v).transpose(1, 2).reshape(batch, length, self.d_model)
        return self.lm_head(x + self.out_proj(attended))


def filter_logits(
    logits: Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> Tensor:
    """Temperature, then top-k, then top-p, applied to `logits` (..., V); returns the filtered logits.

    `logits` is a float tensor of any shape (..., V): the last dimension is the vocabulary, and every
    row (every index of the leading dimensions) is filtered on its own. Each row has at least one finite
    entry; entries may be -inf (tokens already removed). The result has the shape, dtype and device of
    `logits`; `logits` itself is never modified (the result may be `logits` only when it equals it).

    1. Temperature: every entry is divided by `temperature` (> 0). Call the result z.
    2. Top-k (`top_k` None: skipped): an entry of z is kept when it is >= the k-th largest entry of its
       row (ties at the boundary are all kept, so more than k may stay); the others become -inf.
       `top_k` >= V keeps everything.
    3. Top-p (`top_p` None or exactly 1.0: skipped): with P = softmax over the row of z after step 2
       (renormalised over what top-k kept), a token t is kept when the total P of the tokens with
       STRICTLY larger P than t's is < `top_p`. So the kept set is the smallest set of most probable
       tokens whose mass reaches (>=) `top_p`, the token that crosses `top_p` included, plus any token tied
       with the last one kept; the most probable token is always kept. Removed entries become -inf.
    Kept entries hold exactly z (not renormalised, not log-probabilities); removed ones hold -inf.

    Raises ValueError when `temperature` <= 0, `top_k` < 1, or `top_p` is not in (0, 1].
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


def sample_next(
    logits: Tensor,
    generator: torch.Generator | None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> Tensor:
    """One token id per row of `logits` (B, V): greedy when `temperature` is 0, else a random draw.

    - `temperature == 0`: the argmax of each row (the lowest index among ties); `top_k` and `top_p` are
      ignored, and `generator` is not used (it may be None; its state is left unchanged).
    - `temperature > 0`: each row's token is drawn independently from
      `softmax(filter_logits(row, temperature, top_k, top_p))`: a removed token is never drawn, and every
      kept token is drawn with its renormalised probability. All randomness comes from `generator`
      (a `torch.Generator` on the device of `logits`; None raises ValueError): the global RNG
      (`torch.manual_seed`'s) is neither used nor changed, and two generators seeded alike give the same
      tokens.
    Returns an int64 tensor of shape (B,) on the device of `logits`. `logits` is not modified.
    Raises ValueError for a negative temperature and, when `temperature > 0`, as `filter_logits` does for
    `top_k` and `top_p` (at `temperature == 0` checking them is allowed, not required).
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


class KVCache:
    """The keys and values of every position seen so far, for one attention layer.

    `KVCache()` is empty: `len(cache) == 0` and `cache.keys`, `cache.values` are None. After appends,
    `cache.keys` and `cache.values` are tensors of shape (B, H, T, D): batch, heads, positions so far,
    head size; `len(cache)` is T, the number of positions cached.
    """

    def __init__(self) -> None:
        raise NotImplementedError  # TODO: replace this line with your implementation

    def __len__(self) -> int:
        """The number of positions cached (T), 0 when empty."""
        raise NotImplementedError  # TODO: replace this line with your implementation

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Add the keys `k` and values `v` of new positions after those cached; return (keys, values).

        `k` and `v` have the same shape (B, H, T_new, D), T_new >= 1. After the call, `cache.keys` is the
        old keys followed by `k` along dim 2 (the positions), likewise `cache.values`, and `len(cache)` has
        grown by T_new. Returns `(cache.keys, cache.values)`, each (B, H, T + T_new, D), with the dtype
        and device of the cache. The cache holds its own copy: changing `k` or `v` in place after the call
        does not change the cache. Raises ValueError (and leaves the cache unchanged) when `k` and `v`
        are not 4-D tensors of the same shape, T_new is 0, or, on a non-empty cache, when B, H, D, the
        dtype or the device differ from the cached ones.
        """
        raise NotImplementedError  # TODO: replace this line with your implementation


def cached_forward(model: TinyCausalLM, tokens: Tensor, cache: KVCache) -> Tensor:
    """Run the new `tokens` (B, T_new) of `model` over `cache`; return their logits (B, T_new, V).

    `cache` holds the keys and values of the P positions that came before (P = `len(cache)`, 0 for a new
    cache), filled by earlier `cached_forward` calls of the same model on the same batch. The new tokens
    sit at positions P .. P + T_new - 1. With `seq` the tokens of all those calls joined along dim 1:
    - The result equals `model(seq)[:, P:]` up to float rounding, in the model's dtype on its device.
    - Afterwards `len(cache)` is P + T_new, and `cache.keys` / `cache.values` (B, n_heads, P + T_new,
      head_dim) hold, for every position, the output of `model.k_proj` / `model.v_proj` split into heads
      as `forward` splits them (feature j of the projection is head j // head_dim, index j % head_dim).
    - Old positions are never recomputed: `model.q_proj`, `model.k_proj` and `model.v_proj` are each
      called as modules (so their hooks see the calls) on exactly B * T_new rows in all, and
      `model.forward` is not called.
    - No autograd graph is recorded, even when called with grad enabled: the result and the cache's
      tensors have `requires_grad` False, and the model's parameters and their `.grad` are untouched.
    `tokens` is int64 on the model's device; it is not modified. Raises ValueError when P + T_new exceeds
    `model.max_len`, and when `tokens` is not 2-D with T_new >= 1.
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


def generate(
    model: TinyCausalLM,
    prompt: Tensor,
    max_new_tokens: int,
    generator: torch.Generator | None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> Tensor:
    """Continue every row of `prompt` (B, P) by `max_new_tokens` tokens; return (B, P + max_new_tokens).

    The result is int64 on the prompt's device: the prompt, then the new tokens. It equals what this
    naive loop returns, draw for draw with the same generator (up to float rounding in the logits):
    `seq = prompt`, then `max_new_tokens` times: `seq = cat([seq, sample_next(model(seq)[:, -1],
    generator, temperature, top_k, top_p)[:, None]], dim=1)`. So temperature 0 is greedy decoding, and
    each step draws from `generator` exactly as one `sample_next` call does; the global RNG is neither
    used nor changed.

    Unlike the naive loop, it never recomputes a position: the prompt goes through the model in one
    pass, then each new token (except the last, which nothing reads) once, so `model.q_proj`, `k_proj`
    and `v_proj` each see B * (P + max_new_tokens - 1) rows in all (none when max_new_tokens is 0), as
    module calls, and `model.forward` is never called. No autograd graph is recorded, even with grad
    enabled: the result has `requires_grad` False, and the parameters and their `.grad` are untouched.
    `prompt` is not modified and `model.training` is left as it was.

    Raises ValueError when P is 0, `max_new_tokens` < 0, P + max_new_tokens exceeds `model.max_len`, or
    `generator` is None while `temperature` > 0 (and as `sample_next` does for the sampling settings).
    """
    raise NotImplementedError  # TODO: replace this line with your implementation
