"""Multi-head self-attention from scratch

Interview question: Implement multi-head self-attention from scratch, with causal and padding masks.

Difficulty 3/5, about 60 minutes, after katas 3 and 6.

The idea
========
Attention is a soft dictionary lookup. Each position asks a question (a query vector q), every position
offers a label (a key k) and a payload (a value v). A query's output is the average of all values,
weighted by how well its query matches each key:

    scores  = q @ k.transpose(-2, -1) / sqrt(d)      # (..., L, S): one score per (query, key) pair
    weights = softmax(scores, dim=-1)                 # over the KEYS: each query row sums to 1
    output  = weights @ v                             # (..., L, Dv)

with L queries, S keys, d the query/key size. Three details carry most of the interview:

- Why sqrt(d): for unit-variance entries, the dot product of two d-vectors has variance d. Without the
  scale, a head of size 64 produces scores with a standard deviation of 8, the softmax saturates to a
  near one-hot, and its gradients vanish. Dividing by sqrt(d) (not by d) brings the standard deviation
  back to 1. `F.scaled_dot_product_attention` uses 1/sqrt(d) unless given `scale=`.
- Softmax over the last dim, the keys. Normalising over the queries (dim=-2) still runs, gives the right
  shape and is wrong.
- Masks set a score to -inf before the softmax, so its weight is exactly 0. torch has two opposite
  boolean conventions, a classic bug source: in `F.scaled_dot_product_attention` a True mask entry means
  "may attend"; in `nn.MultiheadAttention` (`key_padding_mask`, boolean `attn_mask`) True means "masked
  out". A float mask is added to the scores (0 keeps, -inf removes, anything else biases, as ALiBi does).

Two masks matter in practice. The causal mask lets query i see keys j <= i only, so a language model
cannot peek at the token it must predict; torch's `is_causal=True` is `tril(ones(L, S))`, aligned at
the top-left, which for L != S (a few new queries against a longer key cache) is NOT what decoding
wants: there the last query is the last position, a bottom-right alignment. The padding mask removes the
keys of pad tokens in a batch of sequences of different lengths; it masks KEYS, shape (B, S): a pad
query still produces an output (which the loss ignores), but no real token may attend to a pad.

A row whose every key is masked (a sequence that is all padding, a custom mask) is the classic NaN:
softmax of all -inf is 0/0. Zeroing the output afterwards with `torch.where` is not enough: autograd
still runs the softmax's backward through the NaN row (0 * NaN is NaN), so the scores' gradient is NaN
there. A boolean mask applied with `masked_fill` happens to zero it again (it filled the whole row), but
an additive mask (a float mask, or a boolean one turned into a -inf bias) passes the NaN on to q, k and
every parameter. The fix is to keep the NaN from ever forming: give such rows finite scores before the
softmax and zero their weights after it. torch 2.13's SDPA on the CPU returns zeros for such rows.

Multi-head attention runs h attentions of size d = E / h side by side instead of one of size E: each head
can attend to different positions for different reasons, at the same cost. One Linear projects x of
shape (B, L, E) to queries, keys and values of size E each; each is split into heads, (B, L, E) ->
(B, L, h, d) -> (B, h, L, d), which needs a TRANSPOSE: reshaping (B, L, E) straight to (B, h, L, d) runs
without an error and mixes positions with features. After attention the heads are merged back (transpose,
then reshape) and an output projection mixes them. `nn.MultiheadAttention` stores the three input
projections as one (3E, E) `in_proj_weight`: rows [0, E) for q, [E, 2E) for k, [2E, 3E) for v.

The scores matrix costs O(L^2) memory and time per head: that, not the projections, is what limits
context length, and what FlashAttention attacks by never materialising it (tiles and an online softmax).

Grouped-query attention (GQA) keeps h query heads but only g key/value heads (g divides h): each group of
h / g consecutive query heads shares one k/v head. It shrinks the key/value projections and, above all,
the KV cache of autoregressive decoding, by a factor h / g; multi-query attention (MQA) is g = 1, and
g = h is plain multi-head attention. Sharing means repeating each k/v head h / g times, head by head
(`repeat_interleave` on the head dim: heads 0, 0, 1, 1), as Llama's `repeat_kv` and torch's `enable_gqa`
do; `repeat` (heads 0, 1, 0, 1) pairs query heads with the wrong k/v heads and still runs.

What interviewers probe
=======================
- The formula with its scale, and why sqrt(d) rather than d: the softmax's temperature, and saturation.
- Which dim the softmax normalises (keys), and the shapes at each step: (B, h, L, d) @ (B, h, d, S).
- The causal mask's diagonal (a position attends to itself: `tril`, diagonal 0), and that it can be
  checked by a property: changing a future token must not change any earlier output.
- Mask conventions (True = attend in SDPA, True = ignore in `nn.MultiheadAttention`), key padding
  masking keys not queries, and the all-masked row (NaN in the output, and in the gradients).
- Splitting heads with view + transpose, and what a bare reshape silently does.
- Complexity O(L^2 d) time and O(L^2) memory per head; FlashAttention; the KV cache and why GQA/MQA
  shrink it.

Your tasks
==========
1. `split_heads(x, num_heads)` - (..., L, E) -> (..., h, L, E / h).
2. `merge_heads(x)` - the inverse, (..., h, L, d) -> (..., L, h * d).
3. `scaled_dot_product_attention(q, k, v, attn_mask, is_causal, scale)` - attention with torch's mask
   conventions, and zeros (not NaN) for a query with no key to attend to.
4. `MultiHeadSelfAttention` - self-attention with torch's parameter layout, a key padding mask and a
   causal mask.
5. `GroupedQueryAttention` - the same with fewer key/value heads than query heads (GQA, MQA).

Follow-up questions
===================
- Why divide the scores by sqrt(d) and not by d, and what happens without any scaling?
- Why does masked_fill(-inf) followed by softmax give NaN for a fully masked row, and why is zeroing the
  output afterwards with torch.where not enough?
- What are the time and memory costs of self-attention in the sequence length, and how does
  FlashAttention reduce the memory?
- How is torch's is_causal mask aligned when there are fewer queries than keys, and which alignment does
  decoding with a KV cache need?
- What do grouped-query and multi-query attention save, by how much, and what do they cost?
- Self-attention without positional information is permutation-equivariant: what does that mean, and how
  do transformers inject position?

Grade this kata: `nox -s check -- 11`. Stuck? `nox -s hint -- 11`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """Split the last dim of `x` into `num_heads` heads, moved before the sequence dim.

    Args:
        x: a tensor of shape `(..., L, E)` (at least 2 dims; any number of leading dims, any dtype and
            device). Not modified.
        num_heads: a positive int that divides `E`; otherwise `ValueError`.

    Returns:
        A tensor `out` of shape `(..., num_heads, L, E // num_heads)` with
        `out[..., h, l, j] == x[..., l, h * (E // num_heads) + j]`: head h owns the h-th consecutive block
        of `E // num_heads` features. Same dtype and device as `x`, differentiable with respect to `x`. It
        may be a view of `x`.
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


def merge_heads(x: Tensor) -> Tensor:
    """Undo `split_heads`: `(..., H, L, D)` -> `(..., L, H * D)`.

    Args:
        x: a tensor of shape `(..., H, L, D)` (at least 3 dims, any dtype and device). Not modified.

    Returns:
        A tensor `out` of shape `(..., L, H * D)` with `out[..., l, h * D + j] == x[..., h, l, j]`, so that
        `merge_heads(split_heads(x, H))` equals `x`. Same dtype and device as `x`, differentiable with
        respect to `x`.
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
) -> Tensor:
    """Scaled dot-product attention, matching `torch.nn.functional.scaled_dot_product_attention`.

    Args:
        q: queries, shape `(..., L, E)`.
        k: keys, shape `(..., S, E)`.
        v: values, shape `(..., S, Ev)`.
            q, k and v have the same leading dims (any number of them, none included), one floating
            dtype and one device (any device, `meta` included).
        attn_mask: None, or a tensor whose shape broadcasts to `(..., L, S)`, either
            - boolean: True means the query may attend to that key, False that it may not (torch's SDPA
              convention; the opposite of `nn.MultiheadAttention`'s), or
            - of q's floating dtype: ADDED to the scaled scores (0 keeps a key, -inf removes it).
        is_causal: if True, query i may attend to keys j <= i only (the `tril` of an `(L, S)` matrix of
            ones, aligned at the top-left as torch aligns it, also when L != S).
        scale: the factor applied to `q @ k^T`; None means `1 / sqrt(E)`.

    Returns:
        A tensor of shape `(..., L, Ev)`, q's dtype and device: for each query, the softmax over its S keys
        of the scaled, masked scores, used as weights on the value rows. It equals
        `F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale)`
        (no dropout) up to rounding, including its answer for a query that may attend to NO key (all
        False in a boolean mask, all -inf after adding a float mask): that query's output row is zeros,
        never NaN, and backpropagating through the result gives finite gradients for q, k and v (that row
        contributes zero gradient to them all).

    Raises:
        ValueError: if `attn_mask` is given together with `is_causal=True` (torch's documented rule).

    Not allowed (checked): torch's own attention (`F.scaled_dot_product_attention`,
    `nn.MultiheadAttention`, `F.multi_head_attention_forward`, or their aten kernels). Works on any device
    without reading tensor values back to Python (the grader runs it on the `meta` device). No input is
    modified (values, `requires_grad`).
    """
    raise NotImplementedError  # TODO: replace this line with your implementation


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention for batch-first inputs, with the parameter layout of `nn.MultiheadAttention`.

    Attributes:
        embed_dim, num_heads, head_dim: ints, `head_dim = embed_dim // num_heads`.
        in_proj: `nn.Linear(embed_dim, 3 * embed_dim, bias=bias)`. Its weight stacks the query, key and value
            projections like torch's `in_proj_weight`: rows `[0, E)` give q, `[E, 2E)` give k, `[2E, 3E)` give
            v (and its bias likewise, like `in_proj_bias`). Within each, head h uses the h-th block of
            `head_dim` features, as `split_heads` cuts them.
        out_proj: `nn.Linear(embed_dim, embed_dim, bias=bias)`, like torch's `out_proj`.
    These two Linears are the module's only parameters (`named_parameters()` lists `in_proj.weight`,
    `in_proj.bias`, `out_proj.weight`, `out_proj.bias`, the biases only when `bias=True`), so copying
    torch's `in_proj_weight`, `in_proj_bias` and `out_proj` into them gives the same function.
    """

    def __init__(self, embed_dim: int, num_heads: int, bias: bool = True) -> None:
        """Create the layers above (with nn.Linear's default initialisation).

        Raises `ValueError` unless `num_heads` is positive and divides `embed_dim`.
        """
        raise NotImplementedError  # TODO: replace this line with your implementation

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        """Self-attention over the sequence `x`.

        Args:
            x: shape `(B, L, embed_dim)`, the module's dtype and device (any device, `meta` included). Not
                modified.
            key_padding_mask: None, or a boolean tensor of shape `(B, L)` where True marks a PADDING position
                (torch's `key_padding_mask` convention): no query attends to it as a key. Queries at padding
                positions are computed like any other. Not modified.
            is_causal: if True, position i attends to positions j <= i only.

        Returns:
            Shape `(B, L, embed_dim)`, x's dtype and device, equal up to rounding to
            `nn.MultiheadAttention(embed_dim, num_heads, bias=bias, batch_first=True)` (dropout 0) holding the
            same weights, called as `mha(x, x, x, key_padding_mask=key_padding_mask, attn_mask=causal,
            need_weights=False)[0]`, where `causal` is None or, for `is_causal=True`, the boolean `(L, L)`
            matrix that is True ABOVE the diagonal (torch's MHA masks where True). The same in train and eval
            mode (no dropout). A query with no key left (its whole sequence padding, or left padding under the
            causal mask) gets zeros from the attention, so its output row is `out_proj`'s bias (zeros
            without bias): never NaN, and gradients stay finite.

        Not allowed (checked): torch's own attention, as in `scaled_dot_product_attention`.
        """
        raise NotImplementedError  # TODO: replace this line with your implementation


class GroupedQueryAttention(nn.Module):
    """Grouped-query self-attention: `num_heads` query heads share `num_kv_heads` key/value heads.

    Attributes:
        embed_dim, num_heads, num_kv_heads, head_dim: ints, `head_dim = embed_dim // num_heads`.
        q_proj: `nn.Linear(embed_dim, embed_dim, bias=bias)`; query head h uses its h-th block of `head_dim`
            output features.
        k_proj, v_proj: `nn.Linear(embed_dim, num_kv_heads * head_dim, bias=bias)`; key/value head g uses the
            g-th block of `head_dim` output features.
        out_proj: `nn.Linear(embed_dim, embed_dim, bias=bias)`.
    These four Linears are the module's only parameters.

    Sharing: query head h attends with key/value head `h // (num_heads // num_kv_heads)`, so consecutive
    query heads share one (with 4 query heads and 2 key/value heads: 0, 0, 1, 1), as Llama's `repeat_kv`
    and `F.scaled_dot_product_attention(..., enable_gqa=True)` pair them. `num_kv_heads == 1` is
    multi-query attention; `num_kv_heads == num_heads` is ordinary multi-head attention.
    """

    def __init__(self, embed_dim: int, num_heads: int, num_kv_heads: int, bias: bool = True) -> None:
        """Create the layers above (with nn.Linear's default initialisation).

        Raises `ValueError` unless `num_heads` and `num_kv_heads` are positive, `num_heads` divides
        `embed_dim` and `num_kv_heads` divides `num_heads`.
        """
        raise NotImplementedError  # TODO: replace this line with your implementation

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        """Grouped-query self-attention over `x`; arguments and masks as in `MultiHeadSelfAttention.forward`.

        Returns:
            Shape `(B, L, embed_dim)`, x's dtype and device. It equals `MultiHeadSelfAttention(embed_dim,
            num_heads)` whose in_proj weight (and bias) stacks `q_proj`'s, then `k_proj`'s and `v_proj`'s with
            each key/value head's block of rows repeated `num_heads // num_kv_heads` times in a row (the
            sharing above), and whose out_proj is `out_proj`, on the same inputs and masks. The same rules for
            a query with no key left (zeros from the attention, never NaN, finite gradients), no input
            modified, and torch's own attention not allowed (checked).
        """
        raise NotImplementedError  # TODO: replace this line with your implementation
