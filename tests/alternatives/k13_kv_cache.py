"""Independent alternative solution of kata 13 (KV cache and sampling: autoregressive decoding)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention.bias import causal_lower_right


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


def _check_filters(top_k: int | None, top_p: float | None) -> None:
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def filter_logits(
    logits: Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> Tensor:
    """Temperature, top-k via `kthvalue`, top-p via `searchsorted` over ascending-sorted probabilities."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    _check_filters(top_k, top_p)
    z = logits / temperature
    neg_inf = torch.full((), float("-inf"), dtype=z.dtype, device=z.device)
    vocab = z.shape[-1]
    if top_k is not None and top_k < vocab:
        # The k-th largest entry is the (V - k + 1)-th smallest.
        threshold = torch.kthvalue(z, vocab - top_k + 1, dim=-1, keepdim=True).values
        z = torch.where(z >= threshold, z, neg_inf)
    if top_p is not None and top_p != 1.0:
        rows = z.reshape(-1, vocab)
        probs = torch.softmax(rows.to(torch.float64), dim=-1)
        ascending = torch.sort(probs, dim=-1).values
        # suffix[:, i] = total mass of ascending[:, i:], with a trailing 0 for "nothing above".
        suffix = torch.flip(torch.cumsum(torch.flip(ascending, dims=(-1,)), dim=-1), dims=(-1,))
        suffix = torch.cat([suffix, suffix.new_zeros(suffix.shape[0], 1)], dim=-1)
        # Number of entries <= P[t]; everything after them is strictly more probable than t.
        at_most = torch.searchsorted(ascending, probs, right=True)
        mass_above = torch.gather(suffix, -1, at_most)
        keep = (mass_above < top_p).reshape(z.shape)
        z = torch.where(keep, z, neg_inf)
    return z


def sample_next(
    logits: Tensor,
    generator: torch.Generator | None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> Tensor:
    """Greedy `argmax` at temperature 0, else the Gumbel-max trick on the filtered logits."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    _check_filters(top_k, top_p)
    if temperature == 0:
        return torch.argmax(logits, dim=-1)
    if generator is None:
        raise ValueError("sampling with temperature > 0 needs a torch.Generator")
    filtered = filter_logits(logits, temperature, top_k, top_p).to(torch.float64)
    uniform = torch.rand(filtered.shape, generator=generator, dtype=torch.float64, device=filtered.device)
    # Gumbel(0, 1) noise; argmax(z + g) is distributed as softmax(z), and -inf entries never win.
    gumbel = -torch.log(-torch.log(uniform.clamp_min(torch.finfo(torch.float64).tiny)))
    return torch.argmax(filtered + gumbel, dim=-1)


class KVCache:
    """Keys and values kept in buffers that double their capacity; `keys`/`values` are views of them."""

    def __init__(self) -> None:
        """An empty cache."""
        self.keys: Tensor | None = None
        self.values: Tensor | None = None
        self._key_buf: Tensor | None = None
        self._value_buf: Tensor | None = None
        self._length = 0

    def __len__(self) -> int:
        """Number of cached positions."""
        return self._length

    def _check(self, k: Tensor, v: Tensor) -> None:
        if not isinstance(k, Tensor) or not isinstance(v, Tensor):
            raise ValueError("k and v must be tensors")
        if k.dim() != 4 or k.shape != v.shape:
            raise ValueError(f"k and v must be 4-D of the same shape, got {tuple(k.shape)}, {tuple(v.shape)}")
        if k.shape[2] == 0:
            raise ValueError("k and v must hold at least one new position")
        if self._key_buf is None or self._value_buf is None:
            return
        for name, new, buf in (("k", k, self._key_buf), ("v", v, self._value_buf)):
            got, cached = new.shape[:2] + new.shape[3:], buf.shape[:2] + buf.shape[3:]
            if got != cached:
                raise ValueError(f"{name} has (B, H, D) = {tuple(got)}, the cache {tuple(cached)}")
            if new.dtype != buf.dtype or new.device != buf.device:
                raise ValueError(
                    f"{name} is {new.dtype} on {new.device}, the cache {buf.dtype} on {buf.device}"
                )

    @staticmethod
    def _grow(buf: Tensor | None, new: Tensor, length: int) -> Tensor:
        needed = length + new.shape[2]
        if buf is not None and buf.shape[2] >= needed:
            return buf
        capacity = max(needed, 2 * (buf.shape[2] if buf is not None else 0))
        b, h, _, d = new.shape
        grown = torch.empty((b, h, capacity, d), dtype=new.dtype, device=new.device)
        if buf is not None and length:
            grown[:, :, :length].copy_(buf[:, :, :length])
        return grown

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Copy `k`, `v` into the buffers after the cached positions; return the views of all positions."""
        self._check(k, v)
        start, stop = self._length, self._length + k.shape[2]
        key_buf = self._grow(self._key_buf, k, start)
        value_buf = self._grow(self._value_buf, v, start)
        key_buf[:, :, start:stop].copy_(k)
        value_buf[:, :, start:stop].copy_(v)
        self._key_buf, self._value_buf, self._length = key_buf, value_buf, stop
        self.keys = key_buf.narrow(2, 0, stop)
        self.values = value_buf.narrow(2, 0, stop)
        return self.keys, self.values


def cached_forward(model: TinyCausalLM, tokens: Tensor, cache: KVCache) -> Tensor:
    """Project only the new tokens, append their keys/values, attend with a lower-right causal bias."""
    if not isinstance(tokens, Tensor) or tokens.dim() != 2 or tokens.shape[1] < 1:
        raise ValueError("tokens must be a 2-D tensor (B, T_new) with T_new >= 1")
    past, new = len(cache), tokens.shape[1]
    if past + new > model.max_len:
        raise ValueError(f"{past} cached + {new} new positions exceed max_len {model.max_len}")
    with torch.no_grad():
        positions = torch.arange(past, past + new, device=tokens.device)
        x = model.tok_emb(tokens) + model.pos_emb(positions)

        def heads(t: Tensor) -> Tensor:
            return t.unflatten(-1, (model.n_heads, model.head_dim)).movedim(-2, 1)

        q = heads(model.q_proj(x))
        keys, values = cache.append(heads(model.k_proj(x)), heads(model.v_proj(x)))
        mask = causal_lower_right(new, past + new) if new > 1 else None
        attended = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        return model.lm_head(x + model.out_proj(attended.movedim(1, -2).flatten(-2)))


def generate(
    model: TinyCausalLM,
    prompt: Tensor,
    max_new_tokens: int,
    generator: torch.Generator | None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> Tensor:
    """Prefill the prompt once, then feed each sampled token alone, writing into a preallocated output."""
    if not isinstance(prompt, Tensor) or prompt.dim() != 2 or prompt.shape[1] == 0:
        raise ValueError("prompt must be a 2-D tensor (B, P) with P >= 1")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    batch, prompt_len = prompt.shape
    total = prompt_len + max_new_tokens
    if total > model.max_len:
        raise ValueError(f"{prompt_len} + {max_new_tokens} positions exceed max_len {model.max_len}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    _check_filters(top_k, top_p)
    if temperature > 0 and generator is None:
        raise ValueError("sampling with temperature > 0 needs a torch.Generator")
    out = torch.empty((batch, total), dtype=torch.int64, device=prompt.device)
    out[:, :prompt_len] = prompt
    if max_new_tokens == 0:
        return out
    cache = KVCache()
    with torch.no_grad():
        step_logits = cached_forward(model, prompt, cache)[:, -1]
        for pos in range(prompt_len, total):
            out[:, pos] = sample_next(step_logits, generator, temperature, top_k, top_p)
            if pos + 1 < total:
                step_logits = cached_forward(model, out[:, pos : pos + 1], cache)[:, -1]
    return out
