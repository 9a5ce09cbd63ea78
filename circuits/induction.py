"""The combined head table: previous-token and induction heads of any HookedTransformer.

Definitions: Olsson et al. 2022, "In-context learning and induction heads"; Elhage et al. 2021,
"A mathematical framework for transformer circuits". Composition and ablation checks live in
:mod:`circuits.composition` and :mod:`circuits.ablation`.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from transformer_lens import HookedTransformer

from circuits._checks import check_model, is_real, vocab_out
from circuits._hooks import head_frame, layer_means
from circuits._parallel import threads_for
from circuits.attention import check_prefix_half, prefix_matching_from_pattern, previous_token_from_pattern
from circuits.copying import DEFAULT_VOCAB_SAMPLE, LayerLogitMaps, copying_from_layer, ov_copying_tensor
from circuits.probes import DEFAULT_N_SEQS, DEFAULT_SEED, resolve_probe

__all__ = [
    "COPYING_CHANCE_MULTIPLE",
    "PREFIX_MATCHING_THRESHOLD",
    "PREVIOUS_TOKEN_THRESHOLD",
    "induction_heads",
]

#: Default: a previous-token head puts at least this share of its attention on the previous token.
PREVIOUS_TOKEN_THRESHOLD = 0.4
#: Default: an induction head puts at least this share of its second-half attention on the token
#: after the earlier copy of the current token.
PREFIX_MATCHING_THRESHOLD = 0.4
#: Default copying threshold, as a multiple of the chance level ``1 / d_vocab_out`` (the empirical
#: copying score of a head whose write is unrelated to what it attends to).
COPYING_CHANCE_MULTIPLE = 2.0


@torch.inference_mode()
def induction_heads(
    model: HookedTransformer,
    tokens: torch.Tensor | None = None,
    *,
    n_seqs: int = DEFAULT_N_SEQS,
    half_len: int | None = None,
    seed: int = DEFAULT_SEED,
    previous_token_threshold: float = PREVIOUS_TOKEN_THRESHOLD,
    prefix_matching_threshold: float = PREFIX_MATCHING_THRESHOLD,
    copying_threshold: float | None = None,
    chunk_elements: int | None = None,
    vocab_sample: int | None = DEFAULT_VOCAB_SAMPLE,
) -> pd.DataFrame:
    """Every head's scores from one batched forward pass on the probe ``[x0, r, r]``.

    Columns: ``layer, head, previous_token, prefix_matching, copying, ov_copying,
    is_previous_token, is_induction``; one row per head sorted by (layer, head).

    - ``previous_token`` in [0, 1]: mean ``A[q, q-1]``, q = 1..L-1 (see
      :func:`circuits.attention.previous_token_scores`).
    - ``prefix_matching`` in [0, 1]: mean ``A[N+k, k+1]``, k = 1..N (see
      :func:`circuits.attention.prefix_matching_scores`).
    - ``copying`` in [0, 1]: empirical copying of the head's direct write (see
      :func:`circuits.copying.copying_scores`); chance level about ``1 / d_vocab_out``.
    - ``ov_copying`` in [-1, 1]: ``Re(sum lambda) / sum |lambda|`` over the eigenvalues of
      ``W_E W_V W_O W_U`` (see :func:`circuits.copying.ov_copying_scores`; weights only).
    - ``is_previous_token``: ``previous_token >= previous_token_threshold`` (default 0.4).
    - ``is_induction``: high prefix matching AND positive copying, i.e.
      ``prefix_matching >= prefix_matching_threshold`` (default 0.4) and
      ``copying >= copying_threshold`` (default ``2 / d_vocab_out``, twice the chance level, so
      that an anti-copying or non-writing head, which scores about 0, is excluded).

    Patterns and ``z`` come one layer at a time (no activation cache): computed straight from the
    weights by the fused path on the architectures it reproduces (pre-LayerNorm or none, learned
    positions, MLPs of an elementwise activation or none; ``docs/scores.md``, "How the head scores
    are computed"), in memory-bounded chunks of the batch, else read with temporary hooks
    from the model's own forward. The copying logits are computed in bounded chunks of
    ``chunk_elements`` per worker; on a large vocabulary the copying denominator reads
    ``vocab_sample`` sampled ids besides each sequence's own (see
    :func:`circuits.copying.copying_scores`; ``None``: the whole vocabulary). Runs under ``inference_mode`` and
    leaves the model unchanged. ``ValueError`` (one line) for copies shorter than 3 tokens (the
    prefix-matching diagonal would be the previous-token one) and for a forward pass whose
    activations overflow (NaN or infinity from finite weights). Olsson et al. 2022, "In-context learning and induction heads";
    Elhage et al. 2021, "A mathematical framework for transformer circuits".
    """
    model = check_model(model)
    tokens, n = resolve_probe(model, tokens, n_seqs, half_len, seed, repeated=True)
    check_prefix_half(n)
    n_layers, n_heads = int(model.cfg.n_layers), int(model.cfg.n_heads)
    if copying_threshold is None:
        copying_threshold = COPYING_CHANCE_MULTIPLE / vocab_out(model)
    thresholds = {"previous_token_threshold": previous_token_threshold,
                  "prefix_matching_threshold": prefix_matching_threshold, "copying_threshold": copying_threshold}
    for name, value in thresholds.items():
        if not is_real(value) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    with threads_for(model.cfg, tokens):  # a small model's whole call on one thread, not only its pass
        maps = LayerLogitMaps(model, vocab_sample)

        def reduce(layer: int, pattern: torch.Tensor, z: torch.Tensor | None, chunk: torch.Tensor) -> torch.Tensor:
            assert z is not None
            copying = copying_from_layer(pattern, z, maps, layer, chunk, n, chunk_elements)
            return torch.stack([previous_token_from_pattern(pattern), prefix_matching_from_pattern(pattern, n), copying])

        previous, prefix, copying = torch.stack(layer_means(model, tokens, reduce, need_z=True)).unbind(1)
        ov = ov_copying_tensor(model).cpu()
    return head_frame(
        n_layers,
        n_heads,
        {
            "previous_token": previous,
            "prefix_matching": prefix,
            "copying": copying,
            "ov_copying": ov,
            "is_previous_token": (previous >= previous_token_threshold).numpy(),
            "is_induction": ((prefix >= prefix_matching_threshold) & (copying >= copying_threshold)).numpy(),
        },
    )
