"""Fourier structure of modular-addition models: basis, spectra, neuron clusters, key frequencies.

A one-layer transformer trained on ``a + b mod p`` (inputs ``[a, b, =]``, answer read at the last
position) computes the sum by rotating through a handful of *key frequencies* w_k = 2 pi k / p:
it embeds a and b as cos/sin(w_k a), cos/sin(w_k b), its MLP neurons multiply them into
cos/sin(w_k (a + b)), and the neuron->logit map reads out cos(w_k (a + b - c)) for every answer c.
Nanda et al. 2023, "Progress measures for grokking via mechanistic interpretability" (ICLR),
sections 4-5. This module measures that structure on any ``HookedTransformer`` of the task's shape;
:mod:`circuits.progress` turns it into the paper's progress measures. Both share the plumbing of
:mod:`circuits._modadd` (inputs, model check, forward pass) and :mod:`circuits._fourier_analysis`
(basis, Fourier powers, the one analysis), whose public parts are re-exported here.

Conventions. ``K = (p - 1) // 2`` frequencies ``k = 1..K`` (p odd). Inputs are enumerated in the
order ``row = a * p + b``. Spectra exclude the constant (k = 0) component: it is the mean over
tokens/answers, which the softmax (for logits) and the biases (for the embedding) absorb.
"""

from __future__ import annotations

import pandas as pd
import torch
from transformer_lens import HookedTransformer

from circuits._fourier_analysis import (
    MAJORITY_THRESHOLD,
    MIN_CLUSTER_NEURONS,
    MIN_CLUSTER_SHARE,
    MIN_KEY_P,
    MIN_UNEMBED_SHARE,
    NEURON_THRESHOLD,
    analyze,
    embed_power,
    fourier_basis,
    key_rule,
    neuron_block_fractions,
    safe_sum,
    spectrum_frame,
    unembed_power,
)
from circuits._modadd import check_modadd_model, last_position_outputs, modadd_answers, modadd_inputs

__all__ = [
    "NEURON_THRESHOLD",
    "MAJORITY_THRESHOLD",
    "MIN_UNEMBED_SHARE",
    "MIN_CLUSTER_SHARE",
    "MIN_CLUSTER_NEURONS",
    "MIN_KEY_P",
    "fourier_basis",
    "check_modadd_model",
    "last_position_outputs",
    "modadd_inputs",
    "modadd_answers",
    "embed_spectrum",
    "unembed_spectrum",
    "neuron_block_fractions",
    "neuron_frequencies",
    "fourier_spectrum",
    "key_frequencies",
]


# ---------------------------------------------------------------------------------------------
# spectra


def embed_spectrum(model: HookedTransformer, p: int | None = None) -> torch.Tensor:
    """Share of the embedding's squared Fourier norm per frequency, float64 ``(K,)``, sums to 1.

    ``||(F W_E[:p])[cos k]||^2 + ||(F W_E[:p])[sin k]||^2`` over ``k = 1..K``, divided by their
    sum (the constant component is left out). Range [0, 1]; ~1/K each for random weights, a few
    frequencies holding nearly all of it in a grokked model (Nanda et al. 2023, fig. 3).
    """
    p = check_modadd_model(model, p)
    return embed_power(model, p) / safe_sum(embed_power(model, p))


def unembed_spectrum(model: HookedTransformer, p: int | None = None) -> torch.Tensor:
    """Share of ``W_L = W_out W_U``'s squared Fourier norm per frequency along the output axis.

    ``W_L`` (d_mlp, p) maps neuron activations to logits; its rows are expanded in the Fourier
    basis over the answer c (``W_L F^T``), squared, summed over neurons and over each (cos k,
    sin k) pair, and divided by the total over ``k = 1..K``. Float64 ``(K,)``, range [0, 1].
    Nanda et al. 2023, section 4 ("W_L is sparse in the Fourier basis").
    """
    p = check_modadd_model(model, p)
    power = unembed_power(model, p)
    return power / safe_sum(power)


def neuron_frequencies(model: HookedTransformer, p: int | None = None) -> pd.DataFrame:
    """One row per MLP neuron: ``neuron, freq, frac`` — its dominant frequency and that block's share.

    ``freq`` is the k whose 3x3 block (see :func:`neuron_block_fractions`) explains the most of the
    neuron's centred activation variance over all p^2 inputs, and ``frac`` that share ([0, 1]);
    ``freq`` is 0 for a dead neuron. A neuron belongs to k's cluster when ``frac >= 0.85``
    (:data:`NEURON_THRESHOLD`). Nanda et al. 2023, section 4.
    """
    p = check_modadd_model(model, p)
    _, acts = last_position_outputs(model, p)
    return _neuron_table(neuron_block_fractions(acts, p))


def _neuron_table(frac: torch.Tensor) -> pd.DataFrame:
    best, arg = frac.max(dim=0)
    freq = torch.where(best > 0, arg + 1, torch.zeros_like(arg))
    return pd.DataFrame({"neuron": range(frac.shape[1]), "freq": freq.numpy(), "frac": best.numpy()})


def fourier_spectrum(model: HookedTransformer, p: int | None = None) -> pd.DataFrame:
    """Per-frequency spectra, one row per ``freq = 1..K``.

    Columns: ``embed`` (:func:`embed_spectrum`, share in [0, 1]), ``unembed``
    (:func:`unembed_spectrum`, share in [0, 1]), ``neurons`` (count of MLP neurons whose centred
    activation variance is >= 85 % explained by k's 3x3 block), ``neurons_majority`` (count with
    >= 50 %; the cluster size :func:`key_frequencies` uses). Nanda et al. 2023, sections 5.1-5.2.
    """
    return spectrum_frame(analyze(model, p))


# ---------------------------------------------------------------------------------------------
# key frequencies


def key_frequencies(
    model: HookedTransformer,
    p: int | None = None,
    *,
    min_unembed_share: float = MIN_UNEMBED_SHARE,
    min_cluster_share: float = MIN_CLUSTER_SHARE,
) -> list[int]:
    """The key frequencies of a modular-addition model, sorted ascending (Nanda et al. 2023).

    Rule: k (in 1..K) is key when both hold:

    1. **a cluster of neurons computes it**: at least
       ``max(MIN_CLUSTER_NEURONS, ceil(min_cluster_share * d_mlp))`` MLP neurons (4, or 2 % of
       d_mlp where that is more: 11 of 512) have >= 50 % of their centred activation variance in
       k's 3x3 block (``spectrum.neurons_majority``);
    2. **the output reads it**: k holds at least ``min_unembed_share`` (default 5 %) of the squared
       Fourier norm of ``W_L = W_out W_U`` along the answer axis (``spectrum.unembed``).

    Why these thresholds. The 3x3 block of one frequency spans 8 of the p^2 - 1 centred directions
    (0.06 % for p = 113), so in an untrained or memorising model hardly a neuron comes near 50 %
    and condition 1 alone returns ``[]``; in a grokked model each key frequency owns tens to
    hundreds of neurons. At smaller p a block is a larger share, and random weights put a few
    neurons past 50 % in one block: at p = 23 up to 3 of d_mlp 32 to 128, hence the floor of
    ``MIN_CLUSTER_NEURONS`` = 4 neurons. 50 % rather than the paper's 85 % because ReLU adds harmonics: on the published
    model of Nanda et al. (p = 113) the 88 neurons of frequency 3 hold 77-78 % of their variance in
    its block (about 18 % lies outside every frequency's block), none reaches 85 %, yet frequency 3
    is needed (without it the restricted loss rises 58-fold). A majority still assigns each neuron to at most one frequency, since blocks are
    disjoint. Condition 2 drops clusters that do not reach the logits (forming or dying ones);
    random weights give each frequency ~1/K of W_L (K = 56 for p = 113), while key frequencies
    of a grokked model hold 12-36 % each and the largest non-key frequency ~2.5 % (a harmonic);
    on the runs trained here the smallest key frequency held 8.6 % and the largest other 0.6 %.
    During training a frequency becomes key as soon as its cluster forms, so the count per
    checkpoint rises through circuit formation.

    The rule holds for ``p >= 23`` (``MIN_KEY_P``; measured on random weights of widths d_mlp 32
    to 1024, ``tests/test_fourier.py::test_random_weights_have_no_key_frequencies_at_any_width``):
    at smaller p one block is a large share of the directions (p = 17: 2.8 %) and models with
    random weights pass it (p = 17 and 19: clusters of 4 to 14 neurons in one block), so smaller p
    is refused.

    Raises ``ValueError`` when the model does not have the task's shape (see
    :func:`check_modadd_model`) or ``p < 23``; ``p`` defaults to ``model.cfg.d_vocab_out``.
    """
    return key_rule(analyze(model, p), min_unembed_share, min_cluster_share)
