"""Shared plumbing of the modular-addition analysis: inputs, model check, forward pass, Fourier analysis.

:mod:`circuits.fourier` (spectra, neuron clusters, key frequencies) and :mod:`circuits.progress`
(losses, report, progress measures) both build on what is here, and on nothing of each
other's. Layout: ``docs/architecture.md``; score definitions: ``docs/scores.md``.

Conventions (Nanda et al. 2023, "Progress measures for grokking via mechanistic
interpretability", ICLR). Inputs ``[a, b, =]`` with ``=`` the token id p, enumerated in the order
``row = a * p + b``; the answer ``(a + b) mod p`` is read at the last position. ``K = (p - 1) // 2``
frequencies ``k = 1..K`` (p odd).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import torch
from transformer_lens import HookedTransformer

from circuits._checks import nonfinite_parameters
from circuits._parallel import one_thread
from circuits.architecture import plain_forward_supported
from circuits.plain_forward import qkv_tables

__all__ = [
    "NEURON_THRESHOLD",
    "MAJORITY_THRESHOLD",
    "MIN_UNEMBED_SHARE",
    "MIN_CLUSTER_SHARE",
    "Analysis",
    "analyze",
    "check_modadd_model",
    "embed_power",
    "fourier_basis",
    "key_rule",
    "last_position_outputs",
    "modadd_answers",
    "modadd_inputs",
    "neuron_block_fractions",
    "pair_operands",
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


# ---------------------------------------------------------------------------------------------
# inputs


def pair_operands(p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """LongTensors ``a`` and ``b``, each ``(p*p,)``: row ``a * p + b`` holds the pair (a, b)."""
    return torch.arange(p).repeat_interleave(p), torch.arange(p).repeat(p)


def modadd_inputs(p: int) -> torch.Tensor:
    """LongTensor ``(p*p, 3)`` of every input of a + b mod p: row ``a*p + b`` is ``[a, b, p]``.

    The ``=`` token is id p, so a model of the task needs ``d_vocab >= p + 1`` (Nanda et al. 2023).
    """
    a, b = pair_operands(p)
    return torch.stack([a, b, torch.full_like(a, p)], dim=1)


def modadd_answers(p: int) -> torch.Tensor:
    """LongTensor ``(p*p,)``: the answer ``(a + b) mod p`` in the row order of :func:`modadd_inputs`."""
    a, b = pair_operands(p)
    return (a + b) % p


# ---------------------------------------------------------------------------------------------
# Fourier basis


def fourier_basis(p: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Orthonormal real Fourier basis of functions on Z_p, shape ``(p, p)``, one basis vector a row.

    Rows: ``const, cos 1, sin 1, ..., cos K, sin K`` with ``K = (p - 1) // 2``, i.e. row 0 is
    ``1/sqrt(p)``, row ``2k - 1`` is ``sqrt(2/p) cos(2 pi k x / p)`` and row ``2k`` is
    ``sqrt(2/p) sin(2 pi k x / p)`` for ``x = 0..p-1``. ``F @ F.T = I``. Nanda et al. 2023, sec. 4.
    p must be odd (for even p the real basis needs an extra Nyquist row; the task uses primes).
    """
    if not isinstance(p, int) or p < 3 or p % 2 == 0:
        raise ValueError(f"p must be an odd integer >= 3, got {p!r}")
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
# model check and the last-position forward pass


def check_modadd_model(model: HookedTransformer, p: int | None = None) -> int:
    """Validate that ``model`` has the modular-addition shape; return p.

    Requirements (each violation raises ``ValueError`` naming it): one layer with an MLP,
    ``d_vocab_out == p`` (p defaults to ``d_vocab_out``), an input vocabulary holding the ``=``
    token ``p`` (``d_vocab >= p + 1``), a context of at least 3, p odd, and finite weights.
    """
    cfg = getattr(model, "cfg", None)
    if cfg is None or not isinstance(model, torch.nn.Module):
        raise ValueError(f"expected a HookedTransformer, got {type(model).__name__}")
    if cfg.n_layers != 1:
        raise ValueError(
            f"Fourier analysis of modular addition needs a one-layer model; this one has n_layers={cfg.n_layers}"
        )
    if cfg.attn_only or not cfg.d_mlp:
        raise ValueError("Fourier analysis of modular addition needs a model with an MLP; this one is attention-only")
    d_out = cfg.d_vocab_out
    if p is None:
        p = d_out
    if not isinstance(p, int) or isinstance(p, bool):
        raise ValueError(f"p must be an int, got {p!r}")
    if p != d_out:
        raise ValueError(f"p={p} does not match the model's output vocabulary (d_vocab_out={d_out})")
    if p < 3 or p % 2 == 0:
        raise ValueError(f"p must be odd and >= 3 for the Fourier basis, got p={p}")
    if cfg.d_vocab < p + 1:
        raise ValueError(f"input vocabulary d_vocab={cfg.d_vocab} has no '=' token (id p={p}); need d_vocab >= {p + 1}")
    if cfg.n_ctx < 3:
        raise ValueError(f"context n_ctx={cfg.n_ctx} is too short for inputs [a, b, =]")
    bad = nonfinite_parameters(model)
    if bad:
        raise ValueError(f"model has NaN or infinite weights in: {', '.join(bad)}")
    return p


def last_position_outputs(model: HookedTransformer, p: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``(p*p, p)`` and MLP activations ``(p*p, d_mlp)`` at the ``=`` position, all p^2 inputs.

    Row ``a * p + b`` is the input ``[a, b, =]``. For the plain architecture of Nanda et al. (one
    layer, no LayerNorm, learned positions, ReLU/GELU MLP: :func:`circuits.architecture.
    plain_forward_supported`) this uses a closed form: the query at ``=`` is the same for every
    input, so attention reduces to per-token tables and only the last position's MLP is
    evaluated; otherwise it falls back to ``model.run_with_cache``. Same dtype as the model.
    """
    p = check_modadd_model(model, p)
    with torch.inference_mode():
        if plain_forward_supported(model, n_layers=1, require_mlp=True):
            logits, post = _fast_forward(model, p)
            return logits.cpu(), post.cpu()
        tokens = modadd_inputs(p).to(model.cfg.device)
        name = "blocks.0.mlp.hook_post"
        logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n == name)
        return logits[:, -1].cpu(), cache[name][:, -1].cpu()


def _mix(pattern: torch.Tensor, tab: torch.Tensor, tab_eq: torch.Tensor) -> torch.Tensor:
    """sum_h pattern[a,b,h,0] tab[0,a,h] + pattern[a,b,h,1] tab[1,b,h] + pattern[a,b,h,2] tab_eq[h]."""
    out = torch.bmm(pattern[..., 0], tab[0])  # batched over a: (p_b, h) @ (h, x)
    out += torch.bmm(pattern[..., 1].transpose(0, 1), tab[1]).transpose(0, 1)  # batched over b
    out += pattern[..., 2] @ tab_eq
    return out


def _fast_forward(model: HookedTransformer, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    blk = model.blocks[0]
    at, mlp = blk.attn, blk.mlp
    tok, pos = qkv_tables(at, model.W_E, model.W_pos[:3])  # (vocab, 3, h, e), (3, 3, h, e)
    ab = tok[:p] + pos[:2, None]  # (2, p, 3, h, e): a at pos 0, b at pos 1
    eq = tok[p] + pos[2]  # (3, h, e): the "=" token at pos 2
    q, k, v, k2, v2 = eq[0], ab[:, :, 1], ab[:, :, 2], eq[1], eq[2]
    scores_ab = torch.einsum("he,sphe->sph", q, k) / at.attn_scale  # (2, p, h)
    score_eq = (q * k2).sum(-1) / at.attn_scale  # (h,)
    n_heads = q.shape[0]
    scores = torch.stack(
        [
            scores_ab[0][:, None, :].expand(p, p, n_heads),
            scores_ab[1][None, :, :].expand(p, p, n_heads),
            score_eq.expand(p, p, n_heads),
        ],
        dim=-1,
    )  # (a, b, h, 3)
    pattern = scores.softmax(dim=-1)
    ov = torch.einsum("sphe,hed->sphd", v, at.W_O)  # (2, p, h, d)
    ov2 = torch.einsum("he,hed->hd", v2, at.W_O)  # (h, d)
    base = model.W_E[p] + model.W_pos[2] + at.b_O  # residual at "=" before the heads' value-weighted writes
    resid = (_mix(pattern, ov, ov2) + base).reshape(p * p, -1)  # (p*p, d_model) at "="
    post = mlp.act_fn(torch.addmm(mlp.b_in, resid, mlp.W_in))
    w_l = mlp.W_out @ model.W_U
    logits = torch.addmm(model.b_U + mlp.b_out @ model.W_U, resid, model.W_U)
    logits.addmm_(post, w_l)
    return logits, post


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
    return total if total > 0 else torch.ones((), dtype=x.dtype)


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
    if not flat.is_floating_point():
        flat = flat.float()
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
    ).to(torch.float64)  # (4, p, n); sums of p values each, so the model dtype is precise enough
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


def key_rule(
    an: Analysis, min_unembed_share: float = MIN_UNEMBED_SHARE, min_cluster_share: float = MIN_CLUSTER_SHARE
) -> list[int]:
    """The key frequencies of :func:`circuits.fourier.key_frequencies` (rule documented there)."""
    d_mlp = an.neuron_frac.shape[1]
    min_cluster = max(2, math.ceil(min_cluster_share * d_mlp))
    keep = (an.neurons_majority >= min_cluster) & (an.unembed >= min_unembed_share)
    return [int(k) + 1 for k in torch.nonzero(keep).flatten()]
