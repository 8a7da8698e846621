"""Independent alternative solution of kata 11 (multi-head self-attention from scratch)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """`unflatten` the feature dim into (heads, head_dim), then `movedim` the heads before the sequence."""
    if x.dim() < 2:
        raise ValueError(f"split_heads needs a tensor of at least 2 dims, got {x.dim()}")
    embed = x.shape[-1]
    if num_heads <= 0 or embed % num_heads != 0:
        raise ValueError(f"num_heads={num_heads} must be positive and divide the feature size {embed}")
    return x.unflatten(-1, (num_heads, embed // num_heads)).movedim(-2, -3)


def merge_heads(x: Tensor) -> Tensor:
    """`movedim` the heads back after the sequence, then `flatten` (heads, head_dim) into one dim."""
    if x.dim() < 3:
        raise ValueError(f"merge_heads needs a tensor of at least 3 dims, got {x.dim()}")
    return x.movedim(-3, -2).flatten(-2)


def _causal_allowed(num_queries: int, num_keys: int, device: torch.device) -> Tensor:
    """Boolean (L, S) matrix, True where key j <= query i (top-left aligned), built from two aranges."""
    rows = torch.arange(num_queries, device=device).unsqueeze(-1)
    cols = torch.arange(num_keys, device=device).unsqueeze(0)
    return cols <= rows


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
) -> Tensor:
    """Einsum attention with a hand-written softmax whose denominator is guarded, so no NaN ever forms.

    Masked scores become -inf; the row maximum (detached, and 0 for a row with no finite score) is
    subtracted, `exp` sends masked keys to exactly 0, and a row whose exponentials sum to 0 is divided
    by 1 instead, which yields zero weights and finite gradients without any NaN to clean up.
    """
    if attn_mask is not None and is_causal:
        raise ValueError("attn_mask and is_causal=True cannot be used together")
    out_dtype = q.dtype
    compute = torch.float32 if q.dtype in _LOW_PRECISION else q.dtype
    qc, kc, vc = q.to(compute), k.to(compute), v.to(compute)
    factor = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.einsum("...le,...se->...ls", qc, kc) * factor
    neg_inf = torch.tensor(float("-inf"), dtype=compute, device=scores.device)
    if is_causal:
        scores = torch.where(_causal_allowed(q.shape[-2], k.shape[-2], q.device), scores, neg_inf)
    elif attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = torch.where(attn_mask, scores, neg_inf)
        else:
            scores = scores + attn_mask.to(compute)
    row_max = scores.detach().amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    exps = torch.exp(scores - row_max)
    total = exps.sum(dim=-1, keepdim=True)
    weights = exps / torch.where(total > 0, total, torch.ones_like(total))
    return torch.einsum("...ls,...sv->...lv", weights, vc).to(out_dtype)


def _self_attention_mask(
    key_padding_mask: Tensor | None, is_causal: bool, length: int, device: torch.device
) -> Tensor | None:
    """Boolean "may attend" mask broadcastable to (B, 1, L, L), or None when nothing is masked."""
    allowed = None
    if key_padding_mask is not None:
        allowed = torch.logical_not(key_padding_mask.to(torch.bool))[:, None, None, :]
    if is_causal:
        causal = _causal_allowed(length, length, device)
        allowed = causal if allowed is None else torch.logical_and(allowed, causal)
    return allowed


class MultiHeadSelfAttention(nn.Module):
    """Self-attention with one stacked (3E, E) input projection, split by a single `unflatten` + `permute`."""

    def __init__(self, embed_dim: int, num_heads: int, bias: bool = True) -> None:
        """Create `in_proj` and `out_proj`; validate the head count."""
        super().__init__()
        if num_heads <= 0 or embed_dim % num_heads != 0:
            raise ValueError(f"num_heads={num_heads} must be positive and divide embed_dim={embed_dim}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.in_proj = nn.Linear(embed_dim, 3 * embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        """Project once, view as (3, B, h, L, d), attend with one combined boolean mask, merge, project."""
        length = x.shape[-2]
        qkv = self.in_proj(x).unflatten(-1, (3, self.num_heads, self.head_dim)).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        allowed = _self_attention_mask(key_padding_mask, is_causal, length, x.device)
        attended = scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return self.out_proj(merge_heads(attended))


class GroupedQueryAttention(nn.Module):
    """GQA that groups query heads as (kv_heads, group) and `expand`s each key/value head over its group."""

    def __init__(self, embed_dim: int, num_heads: int, num_kv_heads: int, bias: bool = True) -> None:
        """Create the four projections; validate the head counts."""
        super().__init__()
        if num_heads <= 0 or num_kv_heads <= 0:
            raise ValueError("num_heads and num_kv_heads must be positive")
        if embed_dim % num_heads != 0:
            raise ValueError(f"num_heads={num_heads} must divide embed_dim={embed_dim}")
        if num_heads % num_kv_heads != 0:
            raise ValueError(f"num_kv_heads={num_kv_heads} must divide num_heads={num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = embed_dim // num_heads
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(embed_dim, num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(embed_dim, num_kv_heads * self.head_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        """Attend in a (B, kv_heads, group, L, d) layout: query head g * group + r uses key/value head g."""
        length = x.shape[-2]
        group = self.num_heads // self.num_kv_heads
        # Query features ordered head-major, so head index g * group + r unflattens into (g, r).
        q = self.q_proj(x).unflatten(-1, (self.num_kv_heads, group, self.head_dim)).permute(0, 2, 3, 1, 4)
        k = self.k_proj(x).unflatten(-1, (self.num_kv_heads, 1, self.head_dim)).permute(0, 2, 3, 1, 4)
        v = self.v_proj(x).unflatten(-1, (self.num_kv_heads, 1, self.head_dim)).permute(0, 2, 3, 1, 4)
        k = k.expand(-1, -1, group, -1, -1)
        v = v.expand(-1, -1, group, -1, -1)
        allowed = _self_attention_mask(key_padding_mask, is_causal, length, x.device)
        if allowed is not None:
            allowed = allowed.unsqueeze(-3)  # one more broadcast dim for the (kv_heads, group) pair
        attended = scaled_dot_product_attention(q, k, v, attn_mask=allowed)  # (B, kv_heads, group, L, d)
        return self.out_proj(merge_heads(attended.flatten(1, 2)))
