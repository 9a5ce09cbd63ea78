"""Fast training forwards for the toy models: plain torch on the model's own parameters.

``logits`` runs LayerNorm-free and pre-LayerNorm models with fused causal attention
(``F.scaled_dot_product_attention``) instead of TransformerLens's hooked attention, which
materialises masked scores and patterns for every hook; the result equals ``model(tokens)``
(tested to 1e-5) and gradients flow into the model's parameters.

``last_position_logits`` goes further for one-layer models such as the modular-addition model.

Modular addition reads its answer at the last position (``=``), and in a one-layer model nothing
else downstream depends on the other positions' queries, MLP or unembedding. So the query,
attention pattern, MLP and unembedding need only run for the last position: a third of the
attention work and of the MLP work of the full forward. The result equals
``model(tokens)[:, -1]`` (tested to 1e-5) and gradients flow into the model's own parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformer_lens import HookedTransformer

from circuits.architecture import plain_forward_supported


def _lookup(table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``table[ids]`` through ``F.embedding``, whose gradient is reproducible.

    The backward of advanced indexing (``table[ids]``) is a multithreaded ``index_put_`` with
    accumulation whose summation order varies from call to call, so two runs with the same seed
    drift apart in the last bits and, over a long run, in their outcome (seen: different key
    frequencies). ``F.embedding``'s CPU backward sums in a fixed order.
    """
    return F.embedding(ids, table)


def supports_fast_forward(model: HookedTransformer, n_layers: int | None = 1, layer_norm: bool = False) -> bool:
    """True for models with standard positions and plain ReLU/GELU MLPs (if any), without LayerNorm.

    ``n_layers`` additionally requires that many layers (``None``: any number); ``layer_norm``
    also admits pre-LayerNorm models with learned weights (``normalization_type="LN"``). The
    conditions are :func:`circuits.architecture.plain_forward_supported`'s.
    """
    return plain_forward_supported(model, n_layers=n_layers, layer_norm=layer_norm)


def logits(model: HookedTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """Logits (batch, pos, d_vocab_out), equal to ``model(tokens)``; falls back to it if unsupported.

    Handles LayerNorm-free and pre-LayerNorm (``"LN"``) models of any depth.
    """
    if not supports_fast_forward(model, n_layers=None, layer_norm=True):
        return model(tokens)
    cfg = model.cfg
    norm = _layer_norm if cfg.normalization_type == "LN" else _identity
    batch, n = tokens.shape
    x = _lookup(model.embed.W_E, tokens) + model.pos_embed.W_pos[:n]
    for block in model.blocks:
        attn = block.attn
        h = norm(x, getattr(block, "ln1", None))
        qkv = torch.einsum("bpd,shde->sbhpe", h, torch.stack([attn.W_Q, attn.W_K, attn.W_V]))
        qkv = qkv + torch.stack([attn.b_Q, attn.b_K, attn.b_V])[:, None, :, None]
        z = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=True, scale=1.0 / cfg.attn_scale)
        x = x + torch.einsum("bhpe,hed->bpd", z, attn.W_O) + attn.b_O
        if not cfg.attn_only:
            mlp = block.mlp
            h = norm(x, getattr(block, "ln2", None))
            x = x + mlp.act_fn(h @ mlp.W_in + mlp.b_in) @ mlp.W_out + mlp.b_out
    return norm(x, getattr(model, "ln_final", None)) @ model.unembed.W_U + model.unembed.b_U


def _layer_norm(x: torch.Tensor, ln) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), ln.w, ln.b, ln.eps)


def _identity(x: torch.Tensor, ln) -> torch.Tensor:
    return x


def last_position_logits(model: HookedTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """Logits (batch, d_vocab_out) at the last position; falls back to the full forward."""
    if not supports_fast_forward(model):
        return model(tokens)[:, -1]
    cfg = model.cfg
    n = tokens.shape[1]
    attn = model.blocks[0].attn
    # Every attention quantity is linear in the residual stream, which is W_E[token] + W_pos[pos]:
    # project the (small) vocabulary and position tables once, then gather per example. This
    # replaces per-example d_model contractions with per-vocabulary ones.
    emb, pos = model.embed.W_E, model.pos_embed.W_pos[:n]
    w_qkv = torch.stack([attn.W_Q, attn.W_K, attn.W_V])  # (3, heads, d_model, d_head)
    tok_qkv = torch.einsum("vd,shde->vshe", emb, w_qkv)  # (vocab, 3, heads, d_head)
    pos_qkv = torch.einsum("pd,shde->pshe", pos, w_qkv) + torch.stack([attn.b_Q, attn.b_K, attn.b_V])
    last = n - 1
    q = _lookup(tok_qkv[:, 0].flatten(1), tokens[:, last]).view(-1, cfg.n_heads, cfg.d_head) + pos_qkv[last, 0]
    kv = _lookup(tok_qkv[:, 1:].flatten(1), tokens).view(*tokens.shape, 2, cfg.n_heads, cfg.d_head)
    kv = kv + pos_qkv[:, 1:]
    k, v = kv[:, :, 0], kv[:, :, 1]  # (batch, pos, heads, d_head)
    scores = (q.unsqueeze(1) * k).sum(-1) / cfg.attn_scale  # (batch, pos, heads); last query sees all
    z = (scores.softmax(dim=1).unsqueeze(-1) * v).sum(1)  # (batch, heads, d_head)
    x = _lookup(emb, tokens[:, last]) + pos[last] + z.flatten(1) @ attn.W_O.flatten(0, 1) + attn.b_O
    if not cfg.attn_only:
        mlp = model.blocks[0].mlp
        x = x + mlp.act_fn(x @ mlp.W_in + mlp.b_in) @ mlp.W_out + mlp.b_out
    return x @ model.unembed.W_U + model.unembed.b_U
