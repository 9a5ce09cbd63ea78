"""The transformer forward written from the raw weights, and the pieces every such forward shares.

For the architectures of :func:`circuits.architecture.plain_forward_supported` (with
``layer_norm=True`` where a forward admits pre-LayerNorm), each piece computes what
TransformerLens's module computes, in plain torch on the model's own parameters: no hook points,
no masked score tensors, and gradients flow into the parameters.

``logits`` is the forward of any depth: fused causal attention
(``F.scaled_dot_product_attention``) instead of TransformerLens's hooked attention, which
materialises masked scores and patterns for every hook. It equals ``model(tokens)`` (tested to
1e-5, gradients too).

``last_position_logits`` is the one-layer forward read at the last position only, as the
modular-addition model's answer is (at ``=``). In a one-layer model nothing downstream depends on
the other positions' queries, MLP or unembedding, so those run for the last position only: a
third of the attention work and of the MLP work of the full forward. It equals
``model(tokens)[:, -1]`` (tested to 1e-5, gradients too).

Both are the training forwards of ``interp.tasks.fast_forward`` (which falls back to the model's
own forward for other architectures). The fused head-score path (:mod:`circuits._fused`) and
the closed form of the modular-addition analysis (:mod:`circuits._modadd`) are forwards of their
own (``docs/architecture.md`` says why) built of the pieces here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformer_lens import HookedTransformer

__all__ = ["add_mlp", "causal_attention", "embed", "last_position_logits", "layer_norm", "logits", "lookup", "mlp_out",
           "qkv_tables", "unembed"]


def lookup(table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``table[ids]`` through ``F.embedding``, whose gradient is reproducible.

    The backward of advanced indexing (``table[ids]``) is a multithreaded ``index_put_`` with
    accumulation whose summation order varies from call to call, so two runs with the same seed
    drift apart in the last bits and, over a long run, in their outcome (seen: different key
    frequencies). ``F.embedding``'s CPU backward sums in a fixed order.
    """
    return F.embedding(ids, table)


def embed(tokens: torch.Tensor, w_e: torch.Tensor, w_pos: torch.Tensor) -> torch.Tensor:
    """The residual stream before the first block: ``W_E[tokens] + w_pos`` (batch, pos, d_model).

    ``w_pos`` holds one row per position of ``tokens`` (``W_pos[:pos]``, or padded by the caller).
    """
    return lookup(w_e, tokens) + w_pos


def layer_norm(x: torch.Tensor, ln, cfg) -> torch.Tensor:
    """``ln``'s LayerNorm of ``x`` (its learned ``w``, ``b`` and ``eps``) when
    ``cfg.normalization_type == "LN"``; ``x`` itself in a model without normalisation."""
    if cfg.normalization_type != "LN":
        return x
    return F.layer_norm(x, (x.shape[-1],), ln.w, ln.b, ln.eps)


def add_mlp(x: torch.Tensor, block, cfg) -> torch.Tensor:
    """``x`` plus the block's MLP output on its (pre-LayerNorm'd) ``x``; ``x`` in an attention-only model."""
    return x if cfg.attn_only else x + mlp_out(x, block, cfg)


def mlp_out(x: torch.Tensor, block, cfg) -> torch.Tensor:
    """The block's MLP output (``hook_mlp_out``) on the residual ``x`` it reads, before its LayerNorm."""
    mlp = block.mlp
    h = layer_norm(x, getattr(block, "ln2", None), cfg)
    return mlp.act_fn(h @ mlp.W_in + mlp.b_in) @ mlp.W_out + mlp.b_out


def unembed(x: torch.Tensor, model: HookedTransformer) -> torch.Tensor:
    """Logits of the final residual stream: through the final LayerNorm (if any), ``@ W_U + b_U``."""
    return layer_norm(x, getattr(model, "ln_final", None), model.cfg) @ model.unembed.W_U + model.unembed.b_U


def qkv_tables(attn, w_e: torch.Tensor, w_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries, keys and values of every token and of every position, biases in the positions'.

    Without a LayerNorm before it, the first layer's attention reads the residual
    ``W_E[token] + W_pos[pos]``, in which every query, key and value is linear: they are
    ``tokens[token] + positions[pos]`` with ``tokens = W_E @ W_{Q,K,V}`` ``(vocab, 3, heads,
    d_head)`` and ``positions = w_pos @ W_{Q,K,V} + b_{Q,K,V}`` ``(pos, 3, heads, d_head)``.
    Projecting the (small) tables once replaces per-example ``d_model`` contractions with
    per-vocabulary ones.
    """
    w_qkv = torch.stack([attn.W_Q, attn.W_K, attn.W_V])  # (3, heads, d_model, d_head)
    tokens = torch.einsum("vd,shde->vshe", w_e, w_qkv)
    positions = torch.einsum("pd,shde->pshe", w_pos, w_qkv) + torch.stack([attn.b_Q, attn.b_K, attn.b_V])
    return tokens, positions


def logits(model: HookedTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """Logits (batch, pos, d_vocab_out) of a plain model of any depth, without LayerNorm or with
    pre-LayerNorm (``"LN"``); equal to ``model(tokens)``. The model must be supported
    (``plain_forward_supported(model, layer_norm=True)``): nothing here checks it."""
    cfg = model.cfg
    x = embed(tokens, model.embed.W_E, model.pos_embed.W_pos[: tokens.shape[1]])
    for block in model.blocks:
        attn = block.attn
        h = layer_norm(x, getattr(block, "ln1", None), cfg)
        qkv = torch.einsum("bpd,shde->sbhpe", h, torch.stack([attn.W_Q, attn.W_K, attn.W_V]))
        qkv = qkv + torch.stack([attn.b_Q, attn.b_K, attn.b_V])[:, None, :, None]
        z = causal_attention(qkv[0], qkv[1], qkv[2], cfg)
        x = x + torch.einsum("bhpe,hed->bpd", z, attn.W_O) + attn.b_O
        x = add_mlp(x, block, cfg)
    return unembed(x, model)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cfg) -> torch.Tensor:
    """``z`` (batch, heads, pos, d_head) of causal attention over queries, keys and values of that
    shape, scores scaled by ``1 / cfg.attn_scale``: fused (``F.scaled_dot_product_attention``),
    differentiable, no pattern materialised."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0 / cfg.attn_scale)


def last_position_logits(model: HookedTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """Logits (batch, d_vocab_out) at the last position of a one-layer plain model without
    LayerNorm; equal to ``model(tokens)[:, -1]``. The model must be supported
    (``plain_forward_supported(model, n_layers=1)``): nothing here checks it."""
    cfg = model.cfg
    n = tokens.shape[1]
    block = model.blocks[0]
    attn = block.attn
    emb, pos = model.embed.W_E, model.pos_embed.W_pos[:n]
    tok_qkv, pos_qkv = qkv_tables(attn, emb, pos)
    last = n - 1
    q = lookup(tok_qkv[:, 0].flatten(1), tokens[:, last]).view(-1, cfg.n_heads, cfg.d_head) + pos_qkv[last, 0]
    kv = lookup(tok_qkv[:, 1:].flatten(1), tokens).view(*tokens.shape, 2, cfg.n_heads, cfg.d_head)
    kv = kv + pos_qkv[:, 1:]
    k, v = kv[:, :, 0], kv[:, :, 1]  # (batch, pos, heads, d_head)
    scores = (q.unsqueeze(1) * k).sum(-1) / cfg.attn_scale  # (batch, pos, heads); last query sees all
    z = (scores.softmax(dim=1).unsqueeze(-1) * v).sum(1)  # (batch, heads, d_head)
    x = lookup(emb, tokens[:, last]) + pos[last] + z.flatten(1) @ attn.W_O.flatten(0, 1) + attn.b_O
    return unembed(add_mlp(x, block, cfg), model)
