"""The Fourier analysis of a modular-addition model that :mod:`circuits.fourier` and :mod:`circuits.progress` share.

The Fourier basis of Z_p; the Fourier powers of the embedding, of ``W_L = W_out W_U`` and of every
MLP neuron; and :func:`analyze`, which takes them all from one forward pass
(:func:`circuits._modadd.last_position_outputs`) into the :class:`Analysis` that the spectra, the
key-frequency rule and the report read. Conventions are :mod:`circuits._modadd`'s; score
definitions: ``docs/scores.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import torch
from transformer_lens import HookedTransformer

from circuits._checks import is_int
from circuits._modadd import check_modadd_model, last_position_outputs
from circuits._parallel import one_thread

__all__ = [
    "NEURON_THRESHOLD",
    "MAJORITY_THRESHOLD",
    "MIN_UNEMBED_SHARE",
    "MIN_CLUSTER_SHARE",
    "MIN_CLUSTER_NEURONS",
    "MIN_KEY_P",
    "Analysis",
    "analyze",
    "embed_power",
    "fourier_basis",
    "key_rule",
    "neuron_block_fractions",
    "per_frequency",
    "safe_sum",
    "spectrum_frame",
    "unembed_power",
]

#: A neuron *belongs* to frequency k when the 3x3 block of k explains at least this share of its
#: centred activation variance (Nanda et al. 2023, section 4: "85%"). Reported as ``neurons``.
NEURON_THRESHOLD = 0.85
#: A neuron is *dominated* by k when k's block explains a majority of its variance. Blocks of
#: different frequencies are disjoint, so a neuron is dominated by at most one frequency.
MAJORITY_THRESHOLD = 0.5
#: Least share of W_L's (non-constant) squared Fourier norm for a key frequency.
MIN_UNEMBED_SHARE = 0.05
#: Least share of the MLP's neurons that a key frequency's cluster must hold.
MIN_CLUSTER_SHARE = 0.02
#: Least number of neurons in a key frequency's cluster, whatever the width: random weights at
#: p = 23 put up to 3 neurons in one block at d_mlp 32-128 (200 seeds each;
#: ``tests/test_fourier.py::test_random_weights_have_no_key_frequencies_at_any_width``).
MIN_CLUSTER_NEURONS = 4


# ---------------------------------------------------------------------------------------------
# Fourier basis


def fourier_basis(p: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Orthonormal real Fourier basis of functions on Z_p, shape ``(p, p)``, one basis vector a row.

    Rows: ``const, cos 1, sin 1, ..., cos K, sin K`` with ``K = (p - 1) // 2``, i.e. row 0 is
    ``1/sqrt(p)``, row ``2k - 1`` is ``sqrt(2/p) cos(2 pi k x / p)`` and row ``2k`` is
    ``sqrt(2/p) sin(2 pi k x / p)`` for ``x = 0..p-1``. ``F @ F.T = I``. Nanda et al. 2023, sec. 4.
    p must be odd (for even p the real basis needs an extra Nyquist row; the task uses primes).
    """
    if not is_int(p) or p < 3 or p % 2 == 0:
        raise ValueError(f"p must be an odd integer >= 3, got {p!r}")
    p = int(p)
    x = torch.arange(p, dtype=torch.float64)
    k = torch.arange(1, (p - 1) // 2 + 1, dtype=torch.float64)
    angles = 2 * math.pi * k[:, None] * x[None, :] / p
    rows = torch.empty(p, p, dtype=torch.float64)
    rows[0] = 1 / math.sqrt(p)
    rows[1::2] = torch.cos(angles) * math.sqrt(2 / p)
    rows[2::2] = torch.sin(angles) * math.sqrt(2 / p)
    return rows.to(dtype)


def per_frequency(power: torch.Tensor) -> torch.Tensor:
    """Sum squared coefficients over the (cos k, sin k) row pairs: ``(p, ...)`` -> ``(K, ...)``."""
    return power[1::2] + power[2::2]


# ---------------------------------------------------------------------------------------------
# Fourier powers of the weights and of the neurons


def embed_power(model: HookedTransformer, p: int) -> torch.Tensor:
    """Squared Fourier norm of ``W_E[:p]`` per frequency, float64 ``(K,)`` (over the token axis)."""
    with torch.inference_mode():
        coeffs = fourier_basis(p) @ model.W_E[:p].detach().double().cpu()
        return per_frequency(coeffs.pow(2).sum(-1))


def unembed_power(model: HookedTransformer, p: int) -> torch.Tensor:
    """Squared Fourier norm of ``W_L = W_out W_U`` per frequency, float64 ``(K,)`` (answer axis)."""
    with torch.inference_mode():
        w_l = model.blocks[0].mlp.W_out.detach().double().cpu() @ model.W_U.detach().double().cpu()
        coeffs = w_l @ fourier_basis(p).T  # (d_mlp, p)
        return per_frequency(coeffs.pow(2).sum(0))


def safe_sum(x: torch.Tensor) -> torch.Tensor:
    """``x.sum()``, or 1 when that is not positive (so shares of an all-zero power stay 0)."""
    total = x.sum()
    return total if total > 0 else torch.ones((), dtype=x.dtype, device=x.device)


def neuron_block_fractions(acts: torch.Tensor, p: int) -> torch.Tensor:
    """Share of each neuron's centred variance explained by each frequency's 3x3 block, ``(K, n)``.

    ``acts`` is ``(p*p, n)`` (row ``a * p + b``). With ``C = F A F^T`` the 2D Fourier transform of
    a neuron's activation table ``A[a, b]`` and the constant term ``C[0, 0]`` removed, the block of
    k is ``C[i, j]`` for i, j in {const, cos k, sin k} (terms in a alone, b alone, and products);
    fraction = block energy / total energy. Blocks of different k are disjoint, so fractions sum to
    at most 1 over k. Range [0, 1]; 0 for a constant (dead) neuron. Nanda et al. 2023, sec. 4.
    Computed without a 2D transform: in complex form the block is the DFT coefficients X[u, v] with
    u, v in {0, +-k}; X[k, 0] and X[0, k] are 1D DFTs of the row and column sums of A, X[k, k] the
    1D DFT of its sums along a + b = s, X[-k, k] that of its sums along b - a = d (mod p). So
    block energy = (P_k(rows) + P_k(cols) + P_k(sums) + P_k(diffs)) / p, with P_k the power of
    frequency k in the orthonormal basis. Cost O(p^2 n) instead of O(p^3 n).
    """
    n = acts.shape[-1]
    flat = acts.detach().cpu()
    if not flat.is_floating_point() or flat.element_size() < 4:
        flat = flat.float()  # half precision: a neuron's sum of squares overflows float16's 65504
    x = flat.reshape(p, p, n)
    idx = torch.arange(p)
    plus = ((idx[:, None] + idx[None, :]) % p).reshape(-1)
    minus = ((idx[None, :] - idx[:, None]) % p).reshape(-1)
    rows = x.sum(dim=1)  # (p, n): sums over b, a function of a
    marginals = torch.stack(
        [
            rows,
            x.sum(dim=0),
            torch.zeros(p, n, dtype=flat.dtype).index_add_(0, plus, flat),
            torch.zeros(p, n, dtype=flat.dtype).index_add_(0, minus, flat),
        ]
    ).to(torch.float64)  # (4, p, n); sums of p values each, so float32 or wider is precise enough
    coeffs = torch.matmul(fourier_basis(p), marginals)  # (4, p, n)
    block = per_frequency(coeffs.pow(2).sum(0)) / p  # (K, n)
    # total centred energy = within-row part (centred per row: no cancellation) + between-row part
    dev = x - (rows / p).unsqueeze(1)
    within = dev.square_().sum(dim=1).to(torch.float64).sum(dim=0)
    row_means = marginals[0] / p
    total = within + p * (row_means - row_means.mean(dim=0)).pow(2).sum(dim=0)  # (n,)
    tiny = total <= 1e-12 * total.max().clamp_min(1e-300)
    frac = block / torch.where(tiny, torch.ones_like(total), total)
    frac[:, tiny] = 0.0
    return frac.clamp(0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# one analysis shared by the spectra, the key frequencies and the report


@dataclass(frozen=True)
class Analysis:
    """Everything the key-frequency rule and the report need from one forward pass."""

    p: int
    logits: torch.Tensor  # (p*p, p), model dtype
    embed: torch.Tensor  # (K,) shares
    unembed: torch.Tensor  # (K,) shares
    embed_norms: torch.Tensor  # (K,) Fourier norms of W_E
    unembed_norms: torch.Tensor  # (K,) Fourier norms of W_L
    neuron_frac: torch.Tensor  # (K, d_mlp)

    @property
    def neurons(self) -> torch.Tensor:
        """Per-frequency count of neurons with a block fraction >= NEURON_THRESHOLD."""
        return (self.neuron_frac >= NEURON_THRESHOLD).sum(dim=1)

    @property
    def neurons_majority(self) -> torch.Tensor:
        """Per-frequency count of neurons with a block fraction >= MAJORITY_THRESHOLD."""
        return (self.neuron_frac >= MAJORITY_THRESHOLD).sum(dim=1)


def analyze(model: HookedTransformer, p: int | None) -> Analysis:
    """Check the model, run the last-position forward once and take every Fourier measure.

    Runs on one intra-op thread (:func:`circuits._parallel.one_thread`): the analysis is a few
    dozen mid-sized ops, and on a busy 2-core machine several threads made a report 3x slower.
    """
    with one_thread():
        p = check_modadd_model(model, p)
        logits, acts = last_position_outputs(model, p)
        e_pow, u_pow = embed_power(model, p), unembed_power(model, p)
        return Analysis(
            p=p,
            logits=logits,
            embed=e_pow / safe_sum(e_pow),
            unembed=u_pow / safe_sum(u_pow),
            embed_norms=e_pow.sqrt(),
            unembed_norms=u_pow.sqrt(),
            neuron_frac=neuron_block_fractions(acts, p),
        )


def spectrum_frame(an: Analysis) -> pd.DataFrame:
    """The per-frequency table of :func:`circuits.fourier.fourier_spectrum`."""
    k = an.embed.shape[0]
    return pd.DataFrame(
        {
            "freq": range(1, k + 1),
            "embed": an.embed.numpy(),
            "unembed": an.unembed.numpy(),
            "neurons": an.neurons.numpy(),
            "neurons_majority": an.neurons_majority.numpy(),
        }
    )


#: Smallest modulus the key-frequency rule holds for: below it models with random weights pass it
#: (p = 17: up to 14 neurons of one block at d_mlp 1024, 13 at 512, 4 at 64; p = 19: 7 at 512, 4 at
#: 64; p = 23: at most 3, and 5 at d_mlp 256 where the floor is 6).
MIN_KEY_P = 23


def key_rule(
    an: Analysis, min_unembed_share: float = MIN_UNEMBED_SHARE, min_cluster_share: float = MIN_CLUSTER_SHARE
) -> list[int]:
    """The key frequencies of :func:`circuits.fourier.key_frequencies` (rule documented there)."""
    if an.p < MIN_KEY_P:
        raise ValueError(f"the key-frequency rule needs p >= {MIN_KEY_P}: at p={an.p} one frequency's 3x3 block "
                         f"spans {8 / (an.p ** 2 - 1):.1%} of the centred directions and untrained models pass it")
    d_mlp = an.neuron_frac.shape[1]
    min_cluster = max(MIN_CLUSTER_NEURONS, math.ceil(min_cluster_share * d_mlp))
    keep = (an.neurons_majority >= min_cluster) & (an.unembed >= min_unembed_share)
    return [int(k) + 1 for k in torch.nonzero(keep).flatten()]
