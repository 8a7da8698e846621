"""Grader for k19_bug_hunt_language_model: one test per planted bug, each named for the symptom it causes.

Each test isolates one part of the program, so that one bug fails one test:

- the model: perturbation tests (change future tokens, repeat one token) on an untrained model;
- the loss: hand-made logits whose loss is known in relative terms (the next token predicted beats the
  current token predicted; more padding changes nothing), never an absolute value that another bug in the
  same function could shift;
- overfitting: a textbook Adam loop written here, around the program's model and loss, on one batch;
- the loop: `train` against the same textbook loop (with clipping) written here, around the program's
  own model and loss, so a bug in the model or the loss cancels out and only the loop is compared.

Oracles and tolerances: causality and padding are exact up to float32 summation order (atol 1e-6 on
logits of size ~1, rtol 1e-5 on losses); the loop comparison runs the same float32 operations in the same
order, and allows rtol 1e-4 / atol 1e-5 for a differently ordered but correct loop (a stale gradient
moves Adam's parameters by about lr = 1e-2). The overfitting threshold (0.5 after 40 steps) is cleared
by the fixed program with a wide margin (it reaches 0.002-0.005 on the five seeds tried, and a model
without position information still reaches 0.003-0.07), while a loss fed probabilities instead of logits
cannot fall below ln(1 + (V - 1) / e) = 1.62 for V = 12 (it stalls at 1.65).

Everything runs on the CPU: nothing here needs a GPU.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kata_harness import load_kata
from kata_harness.testing import assert_close, assert_same_parameters

kata = load_kata("k19_bug_hunt_language_model")

VOCAB = 12
PAD = VOCAB - 1  # the last id is padding; real tokens are 0 .. PAD - 1
LENGTH = 8


@pytest.fixture(autouse=True)
def _one_cpu_thread() -> Iterator[None]:
    """Ops this small only lose from threads; on a loaded machine two threads run them ten times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return kata.TinyLM(VOCAB, dim=32, max_len=16)


def _distinct_rows(rows: int, seed: int) -> Tensor:
    """`rows` sequences of LENGTH distinct real tokens, no two starting alike: every next token is
    determined by what came before, so one batch can be fitted exactly."""
    generator = torch.Generator().manual_seed(seed)
    firsts = torch.randperm(PAD, generator=generator)[:rows]
    out = []
    for first in firsts.tolist():
        rest = [t for t in torch.randperm(PAD, generator=generator).tolist() if t != first]
        out.append([first, *rest[: LENGTH - 1]])
    return torch.tensor(out)


def _textbook_steps(model: nn.Module, batches: list[Tensor], steps: int, lr: float, max_norm: float) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for step in range(steps):
        tokens = batches[step % len(batches)]
        optimizer.zero_grad()
        loss = kata.lm_loss(model(tokens), tokens, PAD)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        optimizer.step()


def test_one_batch_can_be_overfit() -> None:
    model = _model()
    tokens = _distinct_rows(4, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(40):
        optimizer.zero_grad()
        loss = kata.lm_loss(model(tokens), tokens, PAD)
        first = loss.item() if first is None else first
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        final = float(kata.lm_loss(model(tokens), tokens, PAD))
    floor = math.log(1 + (VOCAB - 1) / math.e)
    assert final < 0.5, (
        f"40 steps of Adam (lr 1e-2) on ONE batch of 4 sequences, each next token fully determined by "
        f"the tokens before it, should drive the loss close to zero (the fixed program reaches about "
        f"0.005); it went from {first:.3f} to {final:.3f}. Likely cause: a loss that stalls at a floor is "
        f"computed on the wrong thing. Check what F.cross_entropy receives: it wants raw logits and "
        f"applies log-softmax itself; fed probabilities in [0, 1], its loss cannot fall below "
        f"ln(1 + (V - 1) / e) = {floor:.3f} for V = {VOCAB}."
    )


def test_future_tokens_do_not_change_earlier_logits() -> None:
    model = _model().eval()
    generator = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, PAD, (2, LENGTH), generator=generator)
    changed = tokens.clone()
    changed[:, 5:] = (tokens[:, 5:] + 1) % PAD
    with torch.no_grad():
        before, after = model(tokens), model(changed)
    assert before.shape == (2, LENGTH, VOCAB), (
        f"TinyLM(V)(tokens (N, L)) should return logits (N, L, V) = (2, {LENGTH}, {VOCAB}); "
        f"got {tuple(before.shape)}."
    )
    assert_close(
        after[:, :5],
        before[:, :5],
        rtol=0,
        atol=1e-6,
        what="logits at positions 0-4 after changing only the tokens at positions 5-7",
        likely_cause="the model is not causal: positions attend to tokens after them, so during training "
        "each position can read the very token it must predict (the loss falls, nothing is learnt). Check "
        "that the causal mask is built for the right entries (above the diagonal) and actually applied "
        "to the attention scores before the softmax.",
    )


def test_model_can_tell_positions_apart() -> None:
    model = _model().eval()
    tokens = torch.full((1, LENGTH), 3)
    with torch.no_grad():
        logits = model(tokens)
    spread = float((logits - logits[:, :1]).abs().amax())
    assert spread > 1e-2, (
        f"A sequence of {LENGTH} copies of one token should give different logits at different "
        f"positions (position 3 of 'aaaa...' is not position 0); the largest difference from position 0 "
        f"is {spread:.2e}. Likely cause: the model receives no information about where a token stands. "
        f"Check what the position embedding is looked up with: it should be indexed by position "
        f"(0 .. L-1), not by token."
    )


def test_loss_scores_the_next_token() -> None:
    tokens = (torch.arange(3)[:, None] * 4 + torch.arange(LENGTH)[None, :]) % PAD  # no token repeats next
    confident = 6.0

    def predicting(ids: Tensor) -> Tensor:
        return confident * F.one_hot(ids, VOCAB).float()

    losses = {
        "the next token": float(kata.lm_loss(predicting(tokens.roll(-1, dims=1)), tokens, PAD)),
        "the current token": float(kata.lm_loss(predicting(tokens), tokens, PAD)),
        "the previous token": float(kata.lm_loss(predicting(tokens.roll(1, dims=1)), tokens, PAD)),
    }
    best = min(losses, key=losses.__getitem__)
    others = min(value for name, value in losses.items() if name != "the next token")
    assert best == "the next token" and losses["the next token"] < others - 0.5, (
        f"Logits that confidently predict, at each position, the token one step AHEAD should score the "
        f"lowest loss; losses were "
        f"{', '.join(f'{value:.3f} when predicting {name}' for name, value in losses.items())}. "
        f"Likely cause: the targets are not shifted against the logits. The logits at position t must be "
        f"scored against tokens[:, t + 1]; scored against the token they were computed from, the model "
        f"learns to copy its input, and the loss falls while it learns nothing useful."
    )


def test_padding_does_not_change_the_loss() -> None:
    lengths = [4, 6, 7]  # every row ends with padding
    short = torch.full((3, LENGTH), PAD)
    for row, n in enumerate(lengths):
        short[row, :n] = torch.arange(n) % PAD + row
    longer = torch.cat([short, torch.full((3, 4), PAD)], dim=1)
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(3, LENGTH + 4, VOCAB, generator=generator)
    loss_short = kata.lm_loss(logits[:, :LENGTH], short, PAD)
    loss_long = kata.lm_loss(logits, longer, PAD)
    assert_close(
        loss_long,
        loss_short,
        rtol=1e-5,
        atol=1e-6,
        what=f"the loss of a batch padded to length {LENGTH + 4} compared with the same batch padded to "
        f"length {LENGTH}",
        likely_cause="padding counts in the loss: the model is trained to predict pads, and the mean is "
        "diluted by however much padding the batch happens to have. Targets equal to pad_id must be left "
        "out of the mean (cross-entropy has an argument for exactly that).",
    )


def test_each_update_uses_only_its_own_batch() -> None:
    model = _model()
    reference = copy.deepcopy(model)
    batches = [_distinct_rows(4, seed=4), _distinct_rows(4, seed=5)]
    kata.train(model, batches, steps=3, lr=1e-2, pad_id=PAD)
    _textbook_steps(reference, batches, steps=3, lr=1e-2, max_norm=1.0)
    assert_same_parameters(
        model,
        reference,
        "after 3 steps of train() on 2 alternating batches, compared with the textbook loop (zero_grad, "
        "forward, lm_loss, backward, clip_grad_norm_, Adam step)",
        "the updates do not follow each step's own gradient. backward() ADDS into .grad: unless the "
        "gradients are zeroed at every step, step k updates with the sum of the gradients of steps 1..k.",
        rtol=1e-4,
        atol=1e-5,
    )


def test_memory_stays_flat_over_steps() -> None:
    model = _model()
    losses = kata.train(model, [_distinct_rows(4, seed=6)], steps=3, lr=1e-2, pad_id=PAD)
    assert isinstance(losses, list) and len(losses) == 3, (
        f"train(..., steps=3) should return a list of 3 losses; got {type(losses).__name__} {losses!r}."
    )
    kinds = [type(value).__name__ for value in losses]
    holding_graphs = sum(isinstance(value, Tensor) and value.grad_fn is not None for value in losses)
    assert all(type(value) is float for value in losses), (
        f"train() should return each step's loss as a plain Python float; got {kinds}, {holding_graphs} "
        f"of them tensors that still reference their step's autograd graph. Likely cause: the loss "
        f"tensor itself is kept across steps, so every step's graph stays alive and memory grows with "
        f"the number of steps. Keep a number (.item()), not the tensor."
    )
