"""Uniformly random token sequences: data in which nothing can be generalised (Morris et al. 2025).

Each sequence is ``seq_len`` tokens drawn independently and uniformly from ``vocab`` ids, so it
carries exactly ``seq_len * log2(vocab)`` bits and a model can only lower its code length by
storing that particular sequence. The model sees ``[BOS, x_1, ..., x_S]`` (BOS is id ``vocab``)
and is scored on predicting every ``x_i``, so all ``S`` tokens count.

Memorised bits of a sequence under a trained model, against the uniform reference
("How much do language models memorize?", Morris et al. 2025, arXiv 2505.24832)::

    mem(x) = S * log2(V) - min(S * log2(V), -log2 p(x | model))

which lies in ``[0, S * log2(V)]``: 0 when the model does no better than chance on ``x``,
``S * log2(V)`` when it predicts ``x`` with certainty.

A causal model cannot reach ``S * log2(V)`` on every sequence of a data set: it predicts
``x_i`` from the prefix ``x_1..x_{i-1}`` alone, so sequences sharing a prefix (all of them, for
``x_1``) get the same prediction. :func:`unreachable_bits` is the exact code length that even a
model storing the whole data set perfectly must pay; entropy minus it is the most any causal model
can lower the data set's total code length. Memorised bits clamp each sequence at 0, so their
total can pass that bound (a model sure of some sequences and worse than chance on the others).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_sequences(n: int, seq_len: int, vocab: int, seed: int = 0) -> torch.Tensor:
    """LongTensor (n, seq_len + 1): BOS (id ``vocab``) then ``seq_len`` uniform ids in [0, vocab)."""
    if n < 1 or seq_len < 1 or vocab < 2:
        raise ValueError(f"need n >= 1, seq_len >= 1 and vocab >= 2; got n={n}, seq_len={seq_len}, vocab={vocab}")
    generator = torch.Generator().manual_seed(seed)
    body = torch.randint(vocab, (n, seq_len), generator=generator)
    return torch.cat([torch.full((n, 1), vocab), body], dim=1)


def sequence_bits(seq_len: int, vocab: int) -> float:
    """Information content of one uniformly random sequence: ``seq_len * log2(vocab)`` bits."""
    return seq_len * math.log2(vocab)


def code_length_bits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Per-sequence ``-log2 p(x | model)`` in bits, from logits (n, S + 1, V) of ``[BOS, x]``.

    Position ``i`` predicts token ``i + 1``; the last position's prediction is not used.
    """
    log_probs = F.log_softmax(logits[:, :-1].double(), dim=-1)
    token_log_probs = log_probs.gather(-1, tokens[:, 1:, None]).squeeze(-1)
    return -token_log_probs.sum(-1) / math.log(2)


def memorized_bits(code_length: torch.Tensor, seq_len: int, vocab: int) -> torch.Tensor:
    """``mem(x) = H - min(H, code_length)`` per sequence, with ``H = seq_len * log2(vocab)``."""
    entropy = sequence_bits(seq_len, vocab)
    return entropy - code_length.clamp(max=entropy)


def unreachable_bits(tokens: torch.Tensor) -> float:
    """Total code length (bits) of ``[BOS, x]`` rows under the best possible causal model of them.

    The best a model can do at position ``i`` is the data set's own distribution of ``x_i`` among
    the sequences that share ``x_1..x_{i-1}``; its code length is
    ``sum_i sum_x log2(count(x_1..x_{i-1}) / count(x_1..x_i))``. It is ``N log2 N`` for the first
    token when all ``N`` first tokens differ, and 0 from the position where every prefix is unique.
    """
    body = tokens[:, 1:]
    n = body.shape[0]
    parent = torch.full((n,), float(n), dtype=torch.float64)
    total = 0.0
    for i in range(1, body.shape[1] + 1):
        _, inverse, counts = torch.unique(body[:, :i], dim=0, return_inverse=True, return_counts=True)
        child = counts[inverse].double()
        total += torch.log2(parent / child).sum().item()
        if (child == 1).all():
            break
        parent = child
    return total
