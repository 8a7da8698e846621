"""Independent fix of the kata 19 bug hunt (written without the reference).

Interview question: This language-model training script runs but does not learn: find and fix the bugs.

Difficulty 4/5, about 45 minutes, after katas 7 and 11.

The program
===========
A character-level causal language model small enough to train on a laptop in seconds, and the script
that trains it:

- `TinyLM` embeds each token and its position, runs one pre-norm transformer block (single-head causal
  self-attention, then an MLP, each in a residual branch) and a final LayerNorm, and maps every position
  to one logit per vocabulary entry: `tokens (N, L) -> logits (N, L, V)`.
- `lm_loss` is the next-token cross-entropy: the logits at position t are scored against the token at
  t + 1, and targets equal to the padding id count for nothing.
- `train` is the loop: Adam, one batch per step (cycling through the list), gradient clipping, and the
  loss of every step returned as plain Python floats.

Running the file trains the model on a toy corpus and prints the losses. It runs to the end without an
error or a warning; it just does not learn what it should. Seven independent bugs are planted in this
file; each test names one symptom. Fix the code, not the tests: every test passes on the fixed program.

What interviewers probe
=======================
A script like this is handed over to watch HOW you debug a model that will not learn, not just whether
you spot a typo:

- Check the loss at initialisation. With V classes and small random logits, next-token cross-entropy
  starts near ln(V) (ln 12 = 2.48). Much higher means overconfident initial logits; exactly ln(V) at
  every step means the gradient does not reach the weights.
- Overfit one batch. A few dozen steps of Adam on a single fixed batch must drive the loss close to zero.
  If it cannot, the bug is in the model, the loss or the loop, not in the data or the hyperparameters.
  A loss that stalls at a floor well above zero is the signature of a loss computed on the wrong thing.
- Check shapes at every boundary, and check the pairing, not just the shapes: cross-entropy takes
  logits of shape (N, C) with targets (N,), or (N, C, L) with (N, L); a tensor with the right shape but
  the wrong pairing of rows raises nothing.
- Check information flow with perturbation tests: change one input and see which outputs move. A causal
  model's logits at position t must not depend on any token after t; a loss must not depend on padding.
- Read the loop in order: zero the gradients, forward, loss, backward, clip, step. `backward()` adds into
  `.grad`, so a missing or misplaced `zero_grad()` trains on a running sum of old gradients.
- Watch memory over steps. Anything kept across steps that still references the autograd graph (a loss
  tensor appended to a list, a running `total += loss`) keeps that graph alive, and memory grows with
  every step. Log `loss.item()` (which also synchronises with the GPU: log sparingly).
- Compare a suspect piece with a reference on an input whose answer you know: a few hand-made logits
  through the loss, a hand-written attention against `F.scaled_dot_product_attention(..., is_causal=True)`.

Follow-up questions: held back, as an interviewer would. Once every bug is fixed,
`nox -s explain -- 19` asks them, with model answers.

Grade this kata: `nox -s check -- 19`. Stuck? `nox -s hint -- 19`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class TinyLM(nn.Module):
    """A causal language model with one single-head transformer block.

    `TinyLM(vocab_size, dim=32, max_len=16)`: token embeddings (vocab_size, dim), learned position
    embeddings (max_len, dim), one pre-norm block (causal self-attention, then an MLP of width 4 * dim,
    each added back to its input), a final LayerNorm and a linear head to vocab_size logits.
    """

    def __init__(self, vocab_size: int, dim: int = 32, max_len: int = 16) -> None:
        super().__init__()
        self.dim = dim
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.position_embedding = nn.Embedding(max_len, dim)
        self.attention_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.final_norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size)

    def forward(self, tokens: Tensor) -> Tensor:
        """Logits (N, L, vocab_size) for int64 `tokens` (N, L), L <= max_len, on the model's device.

        The logits at position t depend on tokens[:, :t + 1] only (the model is causal), and on where
        each token stands in the sequence.
        """
        length = tokens.shape[1]
        positions = torch.arange(length, device=tokens.device)
        x = self.token_embedding(tokens) + self.position_embedding(positions)

        q, k, v = self.qkv(self.attention_norm(x)).chunk(3, dim=-1)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.dim)
        allowed = positions.unsqueeze(0) <= positions.unsqueeze(1)
        scores = torch.where(allowed, scores, torch.full_like(scores, float("-inf")))
        x = x + self.out(scores.softmax(dim=-1) @ v)

        x = x + self.mlp(self.mlp_norm(x))
        return self.head(self.final_norm(x))


def lm_loss(logits: Tensor, tokens: Tensor, pad_id: int) -> Tensor:
    """The mean next-token cross-entropy of `logits` (N, L, V) for `tokens` (N, L), as a 0-d tensor.

    The logits at position t are scored against tokens[:, t + 1] (the last position predicts nothing);
    targets equal to `pad_id` are left out of the mean. Equals `F.cross_entropy` on the matching pairs.
    """
    log_probs = logits[:, :-1].log_softmax(dim=-1)
    targets = tokens[:, 1:]
    keep = targets != pad_id
    picked = log_probs.gather(-1, torch.where(keep, targets, 0).unsqueeze(-1)).squeeze(-1)
    nll = -picked.masked_fill(~keep, 0.0)
    return nll.sum() / keep.sum()


def train(
    model: nn.Module,
    batches: list[Tensor],
    steps: int,
    lr: float,
    pad_id: int,
    max_norm: float = 1.0,
) -> list[float]:
    """Train `model` for `steps` steps; return each step's loss (before its update) as a Python float.

    Step i uses batches[i % len(batches)] and `lm_loss`; the optimizer is `torch.optim.Adam(lr=lr)` over
    all of the model's parameters, created here, and the gradients' total norm is clipped to `max_norm`
    before each update. Each step's parameter update therefore matches the textbook loop (zero_grad,
    forward, loss, backward, `clip_grad_norm_`, step) step for step.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for step in range(steps):
        tokens = batches[step % len(batches)]
        optimizer.zero_grad(set_to_none=True)
        loss = lm_loss(model(tokens), tokens, pad_id)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def _toy_batches(text: str, length: int, batch_size: int) -> tuple[list[Tensor], int, int]:
    """Batches of character ids cut from `text`, padded at the end; returns (batches, vocab size, pad id)."""
    vocab = sorted(set(text))
    pad_id = len(vocab)
    ids = [vocab.index(char) for char in text]
    rows = [ids[start : start + length] for start in range(0, len(ids), length // 2)]
    rows = [row + [pad_id] * (length - len(row)) for row in rows]
    data = torch.tensor(rows)
    return list(data.split(batch_size)), len(vocab) + 1, pad_id


if __name__ == "__main__":
    torch.manual_seed(0)
    corpus = "the cat sat on the mat. the dog sat on the log. " * 4
    batches, vocab_size, pad_id = _toy_batches(corpus, length=16, batch_size=8)
    model = TinyLM(vocab_size, dim=32, max_len=16)
    history = train(model, batches, steps=200, lr=3e-3, pad_id=pad_id)
    print(f"loss at init {history[0]:.3f} (ln V = {math.log(vocab_size):.3f}), at the end {history[-1]:.3f}")
