"""Repeated-random-token probes for previous-token and induction heads (Olsson et al. 2022)."""

from __future__ import annotations

import torch
from transformer_lens import HookedTransformer

from circuits._checks import check_model, check_tokens, is_int, model_device, positive_int, seed_int, vocab_out

__all__ = ["DEFAULT_HALF_LEN", "DEFAULT_N_SEQS", "DEFAULT_SEED", "probe_bos", "repeated_tokens", "resolve_probe"]

#: Default number of probe sequences.
DEFAULT_N_SEQS = 64
#: Default length N of each repeated half, capped by the context (``2N + 1 <= n_ctx``) and vocabulary.
DEFAULT_HALF_LEN = 32
#: Default seed of the probe.
DEFAULT_SEED = 0
#: First token of every probe when the model has no tokenizer with a BOS id.
FALLBACK_BOS = 0


def probe_bos(model: HookedTransformer) -> int:
    """The token ``x0`` that starts every probe: the tokenizer's ``bos_token_id`` if any, else the
    model's own ``bos_token_id`` attribute (``interp.load_model`` sets it from a Hugging Face
    directory's ``config.json``, which comes without a tokenizer), else 0."""
    tokenizer = getattr(model, "tokenizer", None)
    bos = getattr(tokenizer, "bos_token_id", None) if tokenizer is not None else None
    if bos is None:
        bos = getattr(model, "bos_token_id", None)
    if bos is None or not 0 <= int(bos) < int(model.cfg.d_vocab):
        return FALLBACK_BOS
    return int(bos)


def _candidates(model: HookedTransformer, bos: int) -> torch.Tensor:
    """Ordinary token ids a probe may use: ``[0, min(d_vocab, d_vocab_out))`` minus x0 and special ids.

    Ids at or above ``d_vocab_out`` are left out because the model cannot predict them.
    """
    n = min(int(model.cfg.d_vocab), vocab_out(model))
    keep = torch.ones(n, dtype=torch.bool)
    tokenizer = getattr(model, "tokenizer", None)
    special = list(getattr(tokenizer, "all_special_ids", None) or []) if tokenizer is not None else []
    for tok in [bos, *special]:
        if tok is not None and 0 <= int(tok) < n:
            keep[int(tok)] = False
    return keep.nonzero().flatten()


def _token_ids(ids: object) -> torch.Tensor:
    """``ids`` as a flat int64 tensor; ``ValueError`` for anything but whole numbers (1.7 was read as 1)."""
    try:
        allowed = torch.as_tensor(ids, device="cpu")  # beside the candidates, drawn on the CPU
    except (TypeError, ValueError, RuntimeError):
        allowed = None
    if allowed is None or allowed.dtype == torch.bool or allowed.is_floating_point() or allowed.is_complex():
        raise ValueError(f"ids must be integer token ids, got {ids!r:.80}")
    return allowed.to(torch.long).flatten()


def _default_half_len(model: HookedTransformer, n_candidates: int) -> int:
    return max(1, min(DEFAULT_HALF_LEN, (int(model.cfg.n_ctx) - 1) // 2, n_candidates))


def repeated_tokens(
    model: HookedTransformer,
    n_seqs: int = DEFAULT_N_SEQS,
    half_len: int | None = None,
    seed: int = DEFAULT_SEED,
    *,
    bos: int | None = None,
    ids: torch.Tensor | list[int] | None = None,
) -> torch.Tensor:
    """Probe batch ``[x0, r_1..r_N, r_1..r_N]`` of shape ``(n_seqs, 2N + 1)``, int64, on the model's device.

    ``x0`` is :func:`probe_bos`: the tokenizer's BOS id when the model has one, else its
    ``bos_token_id`` attribute, otherwise token id 0 (the BOS of the induction models in this
    project). Each half ``r`` is drawn uniformly **without replacement** from the ordinary
    vocabulary (ids below ``min(d_vocab, d_vocab_out)`` other than ``x0`` and the tokenizer's
    special ids), so every token of the second half has exactly one earlier copy; the
    first ``r_k`` sits at position ``k``, the second at ``N + k``. Only when ``N`` exceeds the
    ordinary vocabulary are halves drawn with replacement. A local ``torch.Generator`` seeded with
    ``seed`` makes the batch identical between calls. ``half_len=None`` picks
    ``min(32, (n_ctx - 1) // 2, ordinary vocabulary size)``.

    ``bos`` sets ``x0`` (for models whose BOS is not id 0 and that have no tokenizer, such as the
    byte-level text model, BOS 256) and ``ids`` restricts the halves to those token ids (for
    a vocabulary with ids never seen in training, such as the bytes outside the text a model was
    trained on); ``x0`` and ids the model cannot predict are still left out.

    Raises ``ValueError`` when ``2 * half_len + 1 > n_ctx``, when the ordinary vocabulary has fewer
    than 2 tokens, or for non-positive ``n_seqs``/``half_len``, a ``bos`` that is not a token id of
    the vocabulary, or ``ids`` that are not integers.
    Probe of Olsson et al. 2022, "In-context learning and induction heads".
    """
    model = check_model(model, weights=False)  # the probe depends on the config alone
    n_seqs, seed = positive_int("n_seqs", n_seqs), seed_int(seed)
    if bos is None:
        bos = probe_bos(model)
    elif not is_int(bos) or not 0 <= int(bos) < int(model.cfg.d_vocab):
        raise ValueError(f"bos must be a token id in the vocabulary [0, {model.cfg.d_vocab}), got {bos!r}")
    bos = int(bos)
    candidates = _candidates(model, bos)
    if ids is not None:
        candidates = candidates[torch.isin(candidates, _token_ids(ids))]
    if candidates.numel() < 2:
        raise ValueError(
            f"vocabulary too small for a repeated-token probe: {candidates.numel()} ordinary token(s) "
            f"(d_vocab={model.cfg.d_vocab}, d_vocab_out={vocab_out(model)}) besides x0={bos} and special tokens"
        )
    if half_len is None:
        half_len = _default_half_len(model, candidates.numel())
    half_len = positive_int("half_len", half_len)
    n_ctx = int(model.cfg.n_ctx)
    if 2 * half_len + 1 > n_ctx:
        raise ValueError(
            f"probe too long: 2*half_len+1 = {2 * half_len + 1} positions exceed the model's context n_ctx={n_ctx}"
        )
    # Drawn on the CPU with a CPU generator, so the probe is the same whatever the model's device,
    # then moved to the model's device.
    gen = torch.Generator().manual_seed(seed)
    n_cand = candidates.numel()
    if half_len <= n_cand:
        idx = torch.stack([torch.randperm(n_cand, generator=gen)[:half_len] for _ in range(n_seqs)])
    else:
        idx = torch.randint(n_cand, (n_seqs, half_len), generator=gen)
    half = candidates[idx]
    first = torch.full((n_seqs, 1), bos, dtype=torch.long)
    return torch.cat([first, half, half], dim=1).to(model_device(model))


def resolve_probe(
    model: HookedTransformer,
    tokens: torch.Tensor | None,
    n_seqs: int,
    half_len: int | None,
    seed: int,
    *,
    repeated: bool = True,
) -> tuple[torch.Tensor, int]:
    """Caller's ``tokens`` (validated) or the default probe; returns ``(tokens, N)``.

    ``N`` is the half length when ``repeated`` (the tokens must then be ``[x0, r, r]``), else 0.
    """
    if tokens is None:
        tokens = repeated_tokens(model, n_seqs=n_seqs, half_len=half_len, seed=seed)
    tokens, n = check_tokens(model, tokens, repeated=repeated)
    if repeated and half_len is not None and half_len != n:
        raise ValueError(f"half_len={half_len!r} does not match the tokens given, whose halves are N={n} long")
    return tokens, n
