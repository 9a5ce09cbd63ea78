"""The modular-addition task as the analysis sees it: the input grid, the model check, the forward pass.

Everything :mod:`circuits.fourier` and :mod:`circuits.progress` need from a model and its task
before any Fourier analysis (which is :mod:`circuits._fourier_analysis`'s): the ``p^2`` inputs and
their answers, the check that a model has the task's shape, and the logits and MLP activations at
the ``=`` position. Layout: ``docs/architecture.md``; score definitions: ``docs/scores.md``.

Conventions (Nanda et al. 2023, "Progress measures for grokking via mechanistic
interpretability", ICLR). Inputs ``[a, b, =]`` with ``=`` the token id p, enumerated in the order
``row = a * p + b``; the answer ``(a + b) mod p`` is read at the last position. ``K = (p - 1) // 2``
frequencies ``k = 1..K`` (p odd).
"""

from __future__ import annotations

import torch
from transformer_lens import HookedTransformer

from circuits._checks import check_finite_weights, is_int, model_device, unpadded
from circuits.architecture import plain_forward_supported

__all__ = [
    "check_modadd_model",
    "last_position_outputs",
    "modadd_answers",
    "modadd_inputs",
    "pair_operands",
]


# ---------------------------------------------------------------------------------------------
# inputs


def pair_operands(p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """LongTensors ``a`` and ``b``, each ``(p*p,)``: row ``a * p + b`` holds the pair (a, b)."""
    if not is_int(p) or p < 2:  # a float, a bool, 0 or a negative: torch's errors, or an empty task
        raise ValueError(f"p must be a whole number of at least 2 (the modulus), got {p!r}")
    p = int(p)
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
    if not is_int(p):
        raise ValueError(f"p must be an int, got {p!r}")
    p = int(p)
    if p != d_out:
        raise ValueError(f"p={p} does not match the model's output vocabulary (d_vocab_out={d_out})")
    if p < 3 or p % 2 == 0:
        raise ValueError(f"p must be odd and >= 3 for the Fourier basis, got p={p}")
    if cfg.d_vocab < p + 1:
        raise ValueError(f"input vocabulary d_vocab={cfg.d_vocab} has no '=' token (id p={p}); need d_vocab >= {p + 1}")
    if cfg.n_ctx < 3:
        raise ValueError(f"context n_ctx={cfg.n_ctx} is too short for inputs [a, b, =]")
    check_finite_weights(model)
    return p


def last_position_outputs(model: HookedTransformer, p: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``(p*p, p)`` and MLP activations ``(p*p, d_mlp)`` at the ``=`` position, all p^2 inputs.

    Row ``a * p + b`` is the input ``[a, b, =]``. For the plain architecture of Nanda et al. (one
    layer, no LayerNorm, learned positions, an MLP of an elementwise activation:
    :func:`circuits.architecture.plain_forward_supported`: no hooks attached), this uses a
    closed form: the query at ``=`` is the same for every input, so attention reduces to per-token
    tables and only the last position's MLP is evaluated; otherwise (a hook, which only the
    model's forward runs, may change what it computes) it falls back to ``model.run_with_cache``,
    the tokens read as given (:func:`circuits._checks.unpadded`). Same dtype as the model.
    """
    p = check_modadd_model(model, p)
    with torch.inference_mode():
        if plain_forward_supported(model, n_layers=1, require_mlp=True):
            logits, post = _fast_forward(model, p)
            return logits.cpu(), post.cpu()
        tokens = modadd_inputs(p).to(model_device(model))
        name = "blocks.0.mlp.hook_post"
        logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n == name, attention_mask=unpadded(tokens))
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
    W_E, W_pos = model.W_E, model.W_pos
    E = torch.stack([W_E[:p] + W_pos[0], W_E[:p] + W_pos[1]])  # (2, p, d): a at pos 0, b at pos 1
    e2 = W_E[p] + W_pos[2]  # the "=" token at pos 2
    q = torch.einsum("d,hde->he", e2, at.W_Q) + at.b_Q
    k = torch.einsum("spd,hde->sphe", E, at.W_K) + at.b_K
    k2 = torch.einsum("d,hde->he", e2, at.W_K) + at.b_K
    v = torch.einsum("spd,hde->sphe", E, at.W_V) + at.b_V
    v2 = torch.einsum("d,hde->he", e2, at.W_V) + at.b_V
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
    base = e2 + at.b_O  # residual at "=" before the heads' value-weighted writes
    resid = (_mix(pattern, ov, ov2) + base).reshape(p * p, -1)  # (p*p, d_model) at "="
    post = mlp.act_fn(torch.addmm(mlp.b_in, resid, mlp.W_in))
    w_l = mlp.W_out @ model.W_U
    logits = torch.addmm(model.b_U + mlp.b_out @ model.W_U, resid, model.W_U)
    logits.addmm_(post, w_l)
    return logits, post
