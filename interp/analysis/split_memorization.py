"""Memorised bits of a run with a train/test split, and the capacity they are measured against.

Morris et al. 2025 ("How much do language models memorize?", arXiv 2505.24832) separate what a
model knows about its training set into what it generalises and what it memorises, and find
that a GPT-style model stores about 3.6 bits per parameter (its *capacity*). This module applies
their accounting to a classification task with a held-out split (modular addition), per
checkpoint, from the mean losses on the two splits:

- :func:`dataset_bits`: the information in the training labels, ``N_train log2(C)`` for ``C``
  classes (``log2 p`` per pair for a + b mod p): what a model would hold after memorising every
  label of a set it cannot generalise from at all.
- :func:`memorized_bits`: ``N_train (min(L_test, ln C) - L_train) / ln 2``, clamped at 0. The
  better of the test split and chance stands in for the model's generalisation: the code
  length of the training labels under the model is ``N_train L_train / ln 2`` bits, and the
  excess of the reference code's length over it is what the model knows about its particular
  training pairs beyond what it generalises; it never exceeds :func:`dataset_bits`.
- :func:`capacity_bits`: ``bits_per_parameter x parameters``: the line a model's memorised bits
  cannot cross if the capacity figure holds for it.

The capacity figure is named wherever it is used: :data:`MEASURED_BITS_PER_PARAMETER` (2.44,
``interp memorization``'s fitted figure on 2-18k-parameter GPT-style models, ``BENCHMARKS.md``,
"Memorisation capacity") by default, and :data:`PAPER_BITS_PER_PARAMETER` (3.6, Morris et al.)
for comparison. The definitions are in ``docs/scores.md`` (fourier detector).
"""

from __future__ import annotations

import math

import numpy as np

from interp.analysis.capacity_figures import CAPACITY_SOURCES, MEASURED_BITS_PER_PARAMETER, PAPER_BITS_PER_PARAMETER

__all__ = [
    "CAPACITY_SOURCES",
    "MEASURED_BITS_PER_PARAMETER",
    "PAPER_BITS_PER_PARAMETER",
    "capacity_bits",
    "dataset_bits",
    "memorized_bits",
]


def dataset_bits(n_train: int, n_classes: int) -> float:
    """Bits in the training labels: ``n_train * log2(n_classes)``.

    Range ``[0, inf)``; 26,128 bits for the default modadd split (3,831 pairs, ``log2 113`` each).
    It counts the labels as uniform and independent, which they are for a model that has not
    found the rule; a model that generalises needs far fewer bits to reproduce them.
    Paper: Morris et al. 2025 (arXiv 2505.24832), the entropy of a data set against its generator.
    """
    if n_train < 0 or n_classes < 1:
        raise ValueError(f"need n_train >= 0 and n_classes >= 1, got {n_train} and {n_classes}")
    return float(n_train * math.log2(n_classes))


def memorized_bits(train_loss, test_loss, n_train: int, n_classes: int):
    """Bits the model holds about its training set beyond what it generalises.

    ``memorized_bits = max(0, n_train * (min(test_loss, ln n_classes) - train_loss) / ln 2)``, with
    ``train_loss`` and ``test_loss`` the mean cross-entropies (nats) on the training pairs and on
    the held-out pairs. Floats or arrays (element-wise; NaN stays NaN, as without a test split).

    The reference code length of a training label is the better of two codes that need no
    knowledge of the training pairs: the model's own code for unseen pairs (the test loss) and
    chance (``ln n_classes``, the uniform code). Morris et al. 2025 measure unintended
    memorisation against the best available reference in the same way. So a memorising model
    that is confidently wrong off its training set (test loss above chance) is not credited with
    more than the labels hold.

    Range ``[0, dataset_bits(n_train, n_classes)]``: 0 when the model does no better on its
    training pairs than on unseen ones (nearly so at initialisation, and again once it has grokked:
    a few bits); the
    labels' bits when it fits its training pairs exactly and knows nothing of the rest. Limits:
    an estimate from two means, not a per-example code length; the clamp hides a model that fits
    its test pairs better than its training pairs (noise on tiny splits). Paper: Morris et al.
    2025, "How much do language models memorize?" (arXiv 2505.24832): unintended memorisation,
    the information about a data set beyond what the model generalises.
    """
    if n_train < 0:
        raise ValueError(f"n_train must be >= 0, got {n_train}")
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    reference = np.minimum(np.asarray(test_loss, dtype=float), math.log(n_classes))  # NaN stays NaN
    gap = (reference - np.asarray(train_loss, dtype=float)) * n_train / math.log(2)
    bits = np.where(np.isnan(gap), np.nan, np.maximum(gap, 0.0))
    return float(bits) if bits.ndim == 0 else bits


def capacity_bits(params: int, bits_per_parameter: float = MEASURED_BITS_PER_PARAMETER) -> float:
    """``bits_per_parameter * params``: the most a model of ``params`` parameters can memorise.

    Range ``[0, inf)``. Default figure: :data:`MEASURED_BITS_PER_PARAMETER` (2.44, this toolkit's
    measurement on 2-18k-parameter models, ``BENCHMARKS.md``, "Memorisation capacity"); Morris et al. 2025 measure 3.6
    (:data:`PAPER_BITS_PER_PARAMETER`) on models of 100k parameters and up. Neither was measured
    on the modadd architecture (no LayerNorm, ReLU): it is a reference line, not a measurement.
    """
    if params < 0 or bits_per_parameter < 0:
        raise ValueError(f"need params >= 0 and bits_per_parameter >= 0, got {params} and {bits_per_parameter}")
    return float(params * bits_per_parameter)
