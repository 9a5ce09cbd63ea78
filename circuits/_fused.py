"""The fused path: each layer's attention pattern and ``z`` computed straight from the weights.

TransformerLens's hooked forward runs every hook point, builds masked score tensors through
several generic helpers and, for the head scores, hands patterns out through hooks. For the
architectures a plain forward reproduces (:func:`circuits.architecture.plain_forward_supported`
with pre-LayerNorm admitted: learned absolute positions, no normalisation or ``"LN"``, MLPs of
an elementwise activation (``PLAIN_ACTIVATIONS``: ReLU, the GELUs, SiLU) or none) this module
computes the same residual stream with a few batched tensor operations per layer and calls the
same per-layer callback as
:func:`circuits._hooks.run_attention_hooks`, which dispatches here. The patterns equal the
hooked ones to float rounding (tested to 1e-5 on random, trained and hand-built models). The
embedding, LayerNorm and MLP are :mod:`circuits.plain_forward`'s; the attention is this module's
own (per chunk of sequences, base-2 softmax, padded positions), since it must hand out patterns.

Anything else takes the hooked forward: other architectures, dtypes other than float32/float64,
and a model carrying hooks of its own (on a hook point or any other module, or a global module
hook: a hook may change what the head scores see, and only the hooked forward runs it).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from transformer_lens import HookedTransformer

from circuits.architecture import plain_forward_supported
from circuits.plain_forward import add_mlp, embed, layer_norm

__all__ = ["fused_attention_layers", "fused_supported", "hooked_only", "padded_length"]

#: The queries carry ``log2(e) / attn_scale``, so that the scores are normalised with ``exp2``.
LOG2_E = 1.0 / math.log(2.0)
_enabled = True


@contextmanager
def hooked_only() -> Iterator[None]:
    """Inside the block every head score takes the hooked forward (for comparisons and benchmarks)."""
    global _enabled
    previous, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = previous


def fused_supported(model: HookedTransformer) -> bool:
    """True when the fused path reproduces the model's attention: see the module docstring."""
    return (
        _enabled
        and model.W_E.dtype in (torch.float32, torch.float64)
        and plain_forward_supported(model, layer_norm=True)
    )


def fused_attention_layers(
    model: HookedTransformer, tokens: torch.Tensor, callback, *, need_z: bool, chunk_seqs: int
) -> None:
    """Call ``callback(layer, rows, pattern, z)`` for every layer and chunk of the batch, in order.

    ``rows``: the slice of the batch the chunk covers (``chunk_seqs`` sequences, the last chunk
    fewer); ``pattern``: ``(rows, n_heads, q_pos, k_pos)`` (a view whose rows may be stored
    padded, see :func:`padded_length`); ``z``: ``(rows, pos, n_heads, d_head)`` (a view) or
    ``None`` when not ``need_z``. Stops after the last layer's attention.

    Per layer: one matrix product for the queries, keys and values of all heads and the whole
    batch, laid out head-major (in the first layer of a model without LayerNorm, a look-up in
    per-token and per-position tables when the vocabulary is smaller than the batch); then per chunk of
    sequences one batched product for the scores, the causal mask added, a softmax and one
    batched product for ``z``, so that a chunk's pattern stays in cache while it is used; then
    one product for the output of the whole batch.
    """
    cfg = model.cfg
    n_layers, n_heads = int(cfg.n_layers), int(cfg.n_heads)
    batch, length = tokens.shape
    w_e = model.embed.W_E
    # Positions past the probe (token 0 at zero position embedding; see padded_length): causal
    # attention hides them from every real query, so nothing else changes.
    padded = padded_length(length)
    tokens = F.pad(tokens, (0, padded - length))
    w_pos = F.pad(model.pos_embed.W_pos[:length], (0, 0, 0, padded - length))
    mask = torch.full((padded, padded), float("-inf"), dtype=w_e.dtype, device=tokens.device).triu_(1)
    x = None if cfg.normalization_type is None and int(cfg.d_vocab) < batch * padded else embed(tokens, w_e, w_pos)
    for index, block in enumerate(model.blocks):
        attn, last = block.attn, index == n_layers - 1
        parts = 3 if need_z or not last else 2  # queries, keys and (unless not needed) values
        weight, bias = _qkv_weights(attn, parts, LOG2_E / cfg.attn_scale)
        if x is None:  # first layer, no LayerNorm: the residual is W_E[token] + W_pos[pos]
            qkv = F.embedding(tokens, w_e @ weight).add_(torch.addmm(bias, w_pos, weight))
        else:
            h = layer_norm(x, getattr(block, "ln1", None), cfg).reshape(batch * padded, -1)
            qkv = torch.addmm(bias, h, weight)
        # Head-major in one copy: each chunk's q, k, v are then contiguous, and k's transpose a
        # plain one, so the batched products copy nothing (measured ~5 % off the toy's head scores).
        qkv = qkv.view(batch, padded, parts, n_heads, -1).permute(2, 0, 3, 1, 4).contiguous()  # (part, b, h, pos, e)
        z = None if parts == 2 else torch.empty_like(qkv[2])  # (batch, heads, pos, d_head)
        for start in range(0, batch, chunk_seqs):
            rows = slice(start, min(batch, start + chunk_seqs))
            pattern = _softmax2(torch.matmul(qkv[0, rows], qkv[1, rows].transpose(-1, -2)).add_(mask))
            if z is None:
                callback(index, rows, pattern[..., :length, :length], None)
                continue
            z[rows] = torch.matmul(pattern, qkv[2, rows])  # (not out=: autograd refuses it outside inference mode)
            callback(index, rows, pattern[..., :length, :length], z[rows, :, :length].transpose(1, 2) if need_z else None)
        if last:
            return
        if x is None:
            x = embed(tokens, w_e, w_pos)
        z_flat = z.transpose(1, 2).reshape(batch * padded, -1)
        x.view(batch * padded, -1).addmm_(z_flat, attn.W_O.reshape(-1, attn.W_O.shape[-1])).add_(attn.b_O)
        x = add_mlp(x, block, cfg)


def _softmax2(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension of scores in base 2 (``2**s`` normalised), in place.

    The same numbers as ``softmax(s * ln 2)``, computed with ``exp2``: torch's CPU softmax and
    ``exp`` run ~3x slower per element than ``exp2`` on this project's machines (measured: 1.6 vs
    0.6 ns), so the queries carry ``log2(e)`` and the scores are normalised here.
    """
    scores = scores.sub_(scores.amax(dim=-1, keepdim=True)).exp2_()
    return scores.div_(scores.sum(dim=-1, keepdim=True))


#: The probe is padded up to a multiple of this many positions (8 float32 numbers: one AVX2 register).
POSITION_MULTIPLE = 8


def padded_length(length: int) -> int:
    """Positions the fused pass runs on: ``length``, or the next multiple of
    :data:`POSITION_MULTIPLE` when that adds at most 1/16 more positions.

    Products and the softmax over rows of whole vectors are faster: the toy model's 63-token probe
    run as 64 positions makes its head scores ~1.2x faster (median of 25 interleaved rounds, one
    thread). The padding runs through every product of every layer, so a longer one costs more
    than it saves (65 -> 72 measured no faster on a 4-layer model, with the keys alone padded).
    """
    padded = -(-length // POSITION_MULTIPLE) * POSITION_MULTIPLE
    return padded if 16 * (padded - length) <= length else length


def _qkv_weights(attn, parts: int, query_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(d_model, parts * n_heads * d_head)`` weights and the matching bias of Q, K (and V), the
    queries' scaled by ``query_scale`` (``log2(e) / attn_scale``: one pass over the weights
    instead of one over the scores)."""
    names = ("Q", "K", "V")[:parts]
    scales = (query_scale, 1.0, 1.0)
    weight = torch.cat([getattr(attn, f"W_{n}").permute(1, 0, 2).flatten(1) * s for n, s in zip(names, scales)], dim=1)
    bias = torch.cat([getattr(attn, f"b_{n}").flatten() * s for n, s in zip(names, scales)])
    return weight, bias
