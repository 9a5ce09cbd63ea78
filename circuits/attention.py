"""Previous-token and prefix-matching scores from attention patterns (Olsson et al. 2022).

Patterns are ``(batch, n_heads, q_pos, k_pos)`` with rows (queries) summing to 1. On the probe
``[x0, r_1..r_N, r_1..r_N]`` of :func:`circuits.probes.repeated_tokens` (length L = 2N + 1):

- previous-token score: mean of ``A[q, q-1]`` over ``q = 1..L-1`` (and over the batch);
- prefix-matching score: mean of ``A[N+k, k+1]`` over ``k = 1..N``, the attention a second-half
  query pays to the token right *after* the earlier copy of itself.

:func:`attention_pattern` returns one head's whole pattern on one sequence, for pictures.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from transformer_lens import HookedTransformer

from circuits._checks import check_model, check_tokens
from circuits._hooks import head_frame, layer_means
from circuits.probes import DEFAULT_N_SEQS, DEFAULT_SEED, repeated_tokens, resolve_probe

__all__ = [
    "attention_pattern",
    "prefix_matching_from_pattern",
    "prefix_matching_scores",
    "previous_token_from_pattern",
    "previous_token_scores",
]


def previous_token_from_pattern(pattern: torch.Tensor) -> torch.Tensor:
    """Per-head mean of ``A[q, q-1]`` over queries ``q = 1..L-1`` and the batch; shape ``(n_heads,)``.

    ``pattern``: ``(batch, n_heads, L, L)``. Range [0, 1]; 1 = every query attends only to the
    previous position. Previous-token heads: Olsson et al. 2022, "In-context learning and
    induction heads"; Elhage et al. 2021, "A mathematical framework for transformer circuits".
    ``ValueError`` (one line) for a pattern of another shape, no sequences or fewer than 2 positions.
    """
    _check_pattern(pattern, 2)
    return pattern.diagonal(offset=-1, dim1=-2, dim2=-1).float().mean(dim=(0, 2))


def _check_pattern(pattern: torch.Tensor, min_len: int) -> int:
    """The length L of a ``(batch, n_heads, L, L)`` pattern of at least one sequence and ``min_len`` positions."""
    shape = tuple(getattr(pattern, "shape", ()))
    if len(shape) != 4 or shape[2] != shape[3] or shape[0] < 1 or shape[2] < min_len:
        raise ValueError(f"pattern must be (batch >= 1, n_heads, L, L) with L >= {min_len}, got shape {shape}")
    return shape[2]


#: Shortest copy the prefix-matching score reads apart from the previous-token score.
MIN_PREFIX_HALF_LEN = 3


def check_prefix_half(half_len: int) -> None:
    """``ValueError`` (one line) for copies too short for prefix matching: at ``N = 2`` its diagonal
    ``q - k = N - 1`` is the previous-token diagonal, at ``N = 1`` the main one."""
    if half_len < MIN_PREFIX_HALF_LEN:
        raise ValueError(f"prefix matching needs copies of at least {MIN_PREFIX_HALF_LEN} tokens, got N={half_len}: "
                         f"its diagonal q - k = N - 1 is then {'the previous-token' if half_len == 2 else 'the main'} "
                         "diagonal: use copies of 3 or more tokens (the default probe is capped by the context and vocabulary)")


def prefix_matching_from_pattern(pattern: torch.Tensor, half_len: int) -> torch.Tensor:
    """Per-head mean of ``A[N+k, k+1]`` over ``k = 1..N`` and the batch; shape ``(n_heads,)``.

    ``pattern``: ``(batch, n_heads, 2N+1, 2N+1)`` on ``[x0, r, r]``. The entries lie on the
    diagonal ``q - k = N - 1``, whose first two entries ``A[N-1, 0]`` and ``A[N, 1]`` are first-half
    queries and are left out. Range [0, 1]; 1 = every second-half query attends only to the token
    that followed its earlier copy. Olsson et al. 2022, "In-context learning and induction heads".
    ``ValueError`` (one line) for a pattern of another shape than ``half_len`` gives, or ``N < 3``.
    """
    n = int(half_len)
    check_prefix_half(n)
    length = _check_pattern(pattern, 2 * n + 1)
    if length != 2 * n + 1:
        raise ValueError(f"a pattern of [x0, r, r] with half_len={n} has 2N + 1 = {2 * n + 1} positions, got {length}")
    return pattern.diagonal(offset=1 - n, dim1=-2, dim2=-1)[..., 2:].float().mean(dim=(0, 2))


def _pattern_scores(model: HookedTransformer, tokens: torch.Tensor, score: str, half_len: int) -> torch.Tensor:
    def reduce(layer: int, pattern: torch.Tensor, _z: torch.Tensor | None, _tokens: torch.Tensor) -> torch.Tensor:
        if score == "previous_token":
            return previous_token_from_pattern(pattern)
        return prefix_matching_from_pattern(pattern, half_len)

    return torch.stack(layer_means(model, tokens, reduce, need_z=False))


@torch.inference_mode()
def previous_token_scores(
    model: HookedTransformer,
    tokens: torch.Tensor | None = None,
    *,
    n_seqs: int = DEFAULT_N_SEQS,
    half_len: int | None = None,
    seed: int = DEFAULT_SEED,
) -> pd.DataFrame:
    """Previous-token score of every head: columns ``layer, head, score``.

    score = mean over the batch and over queries ``q = 1..L-1`` of ``A[q, q-1]``, in [0, 1]
    (1 = pure previous-token head; uniform causal attention gives ``(H_L - 1) / (L - 1)`` with
    ``H_L`` the L-th harmonic number, 0.060 for L = 63). ``tokens``
    may be any ``(batch, pos)`` id tensor; by default the seeded probe
    ``repeated_tokens(model, n_seqs, half_len, seed)``. One batched forward pass.
    Olsson et al. 2022, "In-context learning and induction heads".
    """
    model = check_model(model)
    tokens, _ = resolve_probe(model, tokens, n_seqs, half_len, seed, repeated=False)
    scores = _pattern_scores(model, tokens, "previous_token", 0)
    return head_frame(int(model.cfg.n_layers), int(model.cfg.n_heads), {"score": scores})


@torch.inference_mode()
def prefix_matching_scores(
    model: HookedTransformer,
    tokens: torch.Tensor | None = None,
    *,
    n_seqs: int = DEFAULT_N_SEQS,
    half_len: int | None = None,
    seed: int = DEFAULT_SEED,
) -> pd.DataFrame:
    """Prefix-matching score of every head: columns ``layer, head, score``.

    score = mean over the batch and ``k = 1..N`` of ``A[N+k, k+1]`` on ``[x0, r_1..r_N, r_1..r_N]``,
    in [0, 1] (1 = pure induction attention). ``tokens`` must have that layout; by default the
    seeded probe ``repeated_tokens(model, n_seqs, half_len, seed)``. One batched forward pass.
    ``ValueError`` for copies shorter than 3 tokens (:func:`check_prefix_half`) and for a forward
    pass that overflows. Olsson et al. 2022, "In-context learning and induction heads".
    """
    model = check_model(model)
    tokens, n = resolve_probe(model, tokens, n_seqs, half_len, seed, repeated=True)
    check_prefix_half(n)
    scores = _pattern_scores(model, tokens, "prefix_matching", n)
    return head_frame(int(model.cfg.n_layers), int(model.cfg.n_heads), {"score": scores})


@torch.inference_mode()
def attention_pattern(
    model: HookedTransformer,
    layer: int,
    head: int,
    tokens: torch.Tensor | None = None,
    *,
    half_len: int | None = None,
    seed: int = DEFAULT_SEED,
) -> torch.Tensor:
    """Attention pattern ``A[q, k]`` of head ``(layer, head)`` on one sequence: float32 ``(L, L)`` on the CPU.

    Row ``q`` is the attention of query position ``q`` over key positions (each row sums to 1,
    zero above the diagonal). ``tokens`` is one sequence, ``(L,)`` or ``(1, L)``; by default the
    seeded probe ``repeated_tokens(model, 1, half_len, seed)``, on which a previous-token head
    fills the diagonal ``q - k = 1`` and an induction head the diagonal ``q - k = N - 1`` of the
    second half. Raises ``ValueError`` for a layer or head the model does not have.
    """
    model = check_model(model)
    n_layers, n_heads = int(model.cfg.n_layers), int(model.cfg.n_heads)
    if not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in (layer, head)):
        raise ValueError(f"layer and head must be ints, got layer={layer!r}, head={head!r}")
    if not (0 <= layer < n_layers and 0 <= head < n_heads):
        raise ValueError(f"no head L{layer}H{head} in a model of {n_layers} layers x {n_heads} heads")
    if tokens is None:
        tokens = repeated_tokens(model, n_seqs=1, half_len=half_len, seed=seed)
    elif isinstance(tokens, torch.Tensor) and tokens.ndim == 1:
        tokens = tokens[None]
    tokens, _ = check_tokens(model, tokens, repeated=False)
    if tokens.shape[0] != 1:
        raise ValueError(f"tokens must be one sequence, got a batch of {tokens.shape[0]}")
    def reduce(at: int, pattern: torch.Tensor, _z: torch.Tensor | None, _tokens: torch.Tensor) -> torch.Tensor:
        return pattern[0, head].float().contiguous() if at == layer else pattern.new_zeros(())

    return layer_means(model, tokens, reduce, need_z=False)[layer]
