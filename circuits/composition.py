"""Q-, K- and V-composition scores between heads, with a random baseline (Elhage et al. 2021).

Every matrix involved is a product of low-rank factors, so everything is computed from
``d_head x d_head`` Gram matrices: no ``d_model x d_model`` product is formed per pair of heads.
"""

from __future__ import annotations

import pandas as pd
import torch
from transformer_lens import HookedTransformer

from circuits._checks import check_model, positive_int, seed_int

__all__ = ["COMPOSITION_KINDS", "composition_scores", "composition_tensor"]

#: The three kinds, in the order of Elhage et al. (and of ``kind="all"`` rows).
COMPOSITION_KINDS = ("Q", "K", "V")
#: Largest number of float64 ``d_head x d_head`` entries held at once per dst layer.
_CHUNK_ELEMENTS = 1 << 22


def _right_factors(w_q: torch.Tensor, w_k: torch.Tensor, w_v: torch.Tensor, w_o: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors ``(A, B)`` of the later head's matrix ``W_B = A @ B`` for one kind."""
    if kind == "Q":
        return w_q, w_k.transpose(-2, -1)  # W_QK = W_Q W_K^T
    if kind == "K":
        return w_k, w_q.transpose(-2, -1)  # W_QK^T = W_K W_Q^T
    return w_v, w_o  # W_OV = W_V W_O


def _frobenius_sq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||a @ b||_F^2`` for ``a (..., d, r)``, ``b (..., r, d)`` via ``tr((a^T a)(b b^T))``."""
    return ((a.transpose(-2, -1) @ a) * (b @ b.transpose(-2, -1))).sum(dim=(-2, -1))


def composition_tensor(
    a1: torch.Tensor, b1: torch.Tensor, a2: torch.Tensor, b2: torch.Tensor
) -> torch.Tensor:
    """``||A1 B1 A2 B2||_F / (||A1 B1||_F ||A2 B2||_F)`` for every (src, dst) pair.

    ``a1 (S, d, r1)``, ``b1 (S, r1, d)`` are the src factors, ``a2 (D, d, r2)``, ``b2 (D, r2, d)``
    the dst factors; returns ``(S, D)``. With ``M = B1 A2``, ``G = A1^T A1``, ``P = B2 B2^T``:
    ``||A1 M B2||_F^2 = sum((G M) * (M P))``. A zero matrix gives score 0.
    """
    g1 = a1.transpose(-2, -1) @ a1  # (S, r1, r1)
    p2 = b2 @ b2.transpose(-2, -1)  # (D, r2, r2)
    left = _frobenius_sq(a1, b1).clamp_min(0).sqrt()  # (S,)
    right = _frobenius_sq(a2, b2).clamp_min(0).sqrt()  # (D,)
    n_src, n_dst = a1.shape[0], a2.shape[0]
    per_src = max(1, _CHUNK_ELEMENTS // max(1, n_dst * g1.shape[-1] * p2.shape[-1]))
    prod = torch.empty(n_src, n_dst, dtype=a1.dtype, device=a1.device)
    for s0 in range(0, n_src, per_src):
        s1 = min(n_src, s0 + per_src)
        m = torch.einsum("sij,tjk->stik", b1[s0:s1], a2)  # (s, D, r1, r2)
        gm = torch.einsum("sij,stjk->stik", g1[s0:s1], m)
        mp = m @ p2[None]
        prod[s0:s1] = (gm * mp).sum(dim=(-2, -1)).clamp_min(0).sqrt()
    denom = left[:, None] * right[None, :]
    return torch.where(denom > 0, prod / denom.clamp_min(torch.finfo(prod.dtype).tiny), 0.0)


def _baseline(d_model: int, d_src: int, d_dst: int, n_samples: int, seed: int, device: torch.device) -> float:
    """Mean composition score of i.i.d. Gaussian factors with the same shapes."""
    gen = torch.Generator().manual_seed(int(seed))

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(n_samples, *shape, generator=gen, dtype=torch.float64).to(device)

    a1, b1, a2, b2 = rand(d_model, d_src), rand(d_src, d_model), rand(d_model, d_dst), rand(d_dst, d_model)
    m = b1 @ a2
    prod = (((a1.transpose(-2, -1) @ a1) @ m) * (m @ (b2 @ b2.transpose(-2, -1)))).sum(dim=(-2, -1)).sqrt()
    return float((prod / (_frobenius_sq(a1, b1).sqrt() * _frobenius_sq(a2, b2).sqrt())).mean())


@torch.inference_mode()
def composition_scores(
    model: HookedTransformer,
    kind: str = "K",
    *,
    n_baseline: int = 64,
    seed: int = 0,
) -> pd.DataFrame:
    """Composition scores of every pair of heads in different layers.

    Columns ``src_layer, src_head, dst_layer, dst_head, kind, score, baseline``; one row per pair
    with ``src_layer < dst_layer`` (and per kind), sorted by kind (Q, K, V) then the four indices.

    score = ``||W_A W_B||_F / (||W_A||_F ||W_B||_F)`` in [0, 1], with ``W_A = W_V W_O`` of the
    earlier (src) head and ``W_B`` of the later (dst) head: ``W_Q W_K^T`` for Q-composition,
    ``(W_Q W_K^T)^T`` for K-composition, ``W_V W_O`` for V-composition (row-vector convention, as
    TransformerLens ``all_composition_scores``; biases and LayerNorm ignored). ``baseline`` is the
    mean of the same ratio over ``n_baseline`` i.i.d. Gaussian factor sets of the same shapes
    (seeded with ``seed``), about ``1 / sqrt(d_model)``; a score well above it means the two heads
    read and write a shared subspace. Elhage et al. 2021, "A mathematical framework for
    transformer circuits". ``kind="all"`` stacks the three kinds.
    """
    model = check_model(model)
    if kind == "all":
        kinds: tuple[str, ...] = COMPOSITION_KINDS
    elif kind in COMPOSITION_KINDS:
        kinds = (kind,)
    else:
        raise ValueError(f"kind must be one of 'Q', 'K', 'V', 'all', got {kind!r}")
    n_baseline, seed = positive_int("n_baseline", n_baseline), seed_int(seed)
    n_layers, n_heads = int(model.cfg.n_layers), int(model.cfg.n_heads)
    w_q, w_k, w_v, w_o = (w.detach().double() for w in (model.W_Q, model.W_K, model.W_V, model.W_O))
    d_model, d_head = w_v.shape[-2], w_v.shape[-1]
    columns = ["src_layer", "src_head", "dst_layer", "dst_head", "kind", "score", "baseline"]
    frames = []
    for k in kinds:
        a2_all, b2_all = _right_factors(w_q, w_k, w_v, w_o, k)
        baseline = _baseline(d_model, d_head, a2_all.shape[-1], n_baseline, seed, w_v.device)
        for dst in range(1, n_layers):
            src_a = w_v[:dst].reshape(-1, d_model, d_head)
            src_b = w_o[:dst].reshape(-1, d_head, d_model)
            scores = composition_tensor(src_a, src_b, a2_all[dst], b2_all[dst]).cpu().numpy()
            src_layer = torch.arange(dst).repeat_interleave(n_heads).numpy()
            src_head = torch.arange(n_heads).repeat(dst).numpy()
            frame = pd.DataFrame(
                {
                    "src_layer": src_layer.repeat(n_heads),
                    "src_head": src_head.repeat(n_heads),
                    "dst_layer": dst,
                    "dst_head": torch.arange(n_heads).repeat(dst * n_heads).numpy(),
                    "kind": k,
                    "score": scores.reshape(-1),
                    "baseline": baseline,
                }
            )
            frames.append(frame)
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c.endswith(("layer", "head")) else ("object" if c == "kind" else "float64")) for c in columns})
    out = pd.concat(frames, ignore_index=True)
    out["kind"] = pd.Categorical(out["kind"], categories=list(COMPOSITION_KINDS), ordered=True)
    out = out.sort_values(["kind", "src_layer", "src_head", "dst_layer", "dst_head"], ignore_index=True)
    out["kind"] = out["kind"].astype(str)
    for c in ("src_layer", "src_head", "dst_layer", "dst_head"):
        out[c] = out[c].astype("int64")
    out["score"] = out["score"].astype("float64")
    out["baseline"] = out["baseline"].astype("float64")
    return out[columns]
