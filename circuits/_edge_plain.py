"""The plain path of ``eap`` and ``eap-ig``: their runs written from the weights.

For the architectures the fused head-score path takes (:func:`circuits._fused.fused_supported`:
learned absolute positions, ``normalization_type`` None or ``"LN"``, ReLU/GELU MLPs or none,
float32 or float64, one device, no hooks of the model's own), the corrupted run and the clean (or
interpolated) run with gradient are computed here from :mod:`circuits.plain_forward`'s pieces,
with fused causal attention (``plain_forward.causal_attention``) and one projection for every
head's q, k and v, instead of TransformerLens's hooked forward, which materialises masked scores
and patterns and runs a hook point per activation. The runs hand out what :func:`circuits._edge_gradients.score_edges` reads:
each source's difference between the runs (a head's is ``(z'_h - z_h) @ W_O[h]``, made once from
the two runs' ``z``, so neither run writes its heads' outputs one by one) and, after one backward,
the gradient at each layer's queries, keys and values, at each MLP's input and at the logits'.
Nothing upstream of the first layer's q/k/v is differentiated (the embeddings are an edge
source, never an input). The scores equal the hooked path's to float rounding
(``tests/test_edge_attribution.py::test_the_plain_path_gives_the_hooked_scores``: random
biases and norm weights, with and without MLPs and LayerNorm, frozen weights or not);
``docs/scores.md``, "Edge attribution".
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformer_lens import HookedTransformer

from circuits._edge_gradients import GradientRun, interpolated_embeddings, metric_total
from circuits._edge_graph import Graph
from circuits._fused import fused_supported
from circuits.plain_forward import causal_attention, embed, layer_norm, mlp_out, unembed

__all__ = ["plain_gradients", "plain_sources", "plain_supported"]


def plain_supported(model: HookedTransformer) -> bool:
    """True when this path reproduces the model's forward (the fused path's conditions)."""
    return fused_supported(model)


def plain_sources(model: HookedTransformer, tokens: torch.Tensor) -> list[torch.Tensor]:
    """The parts of :func:`_run` that make the sources' outputs on ``tokens``, without gradient."""
    with torch.no_grad():
        return _run(model, _embedding(model, tokens), None, logits=False)[1]


def plain_gradients(model: HookedTransformer, graph: Graph, clean: torch.Tensor, corrupted: list[torch.Tensor],
                    metric: Callable, steps: int) -> GradientRun:
    """The sources' differences and the metric's gradient at every input over the ``steps`` runs of
    :func:`circuits._edge_gradients.interpolated_embeddings` (batched as copies; the last copy is
    the clean run, whose parts are kept); ``corrupted``: :func:`plain_sources` of the corrupted tokens."""
    with torch.no_grad():
        path = interpolated_embeddings(_embedding(model, clean), corrupted[0], steps)
    held: dict = {}
    with torch.enable_grad():
        logits, parts = _run(model, path, held, keep=clean.shape[0] if steps > 1 else None)
        total = metric_total(metric, logits, steps)
        keys = [key for key in held if key[0] != "pre"]
        grads = dict(zip(keys, torch.autograd.grad(total, [held[key] for key in keys])))
    layers = range(graph.n_layers)
    return GradientRun(
        deltas=_differences(model, graph, corrupted, parts),
        pre=[held["pre", layer].detach() for layer in layers],
        qkv=[grads["qkv", layer] for layer in layers],
        mlp=[grads["mlp", layer] for layer in layers] if graph.has_mlp else [],
        acts=[held["qkv", layer].detach() for layer in layers],
        final=grads["final", 0])


def _differences(model: HookedTransformer, graph: Graph, corrupted: list[torch.Tensor], clean: list[torch.Tensor]
                 ) -> torch.Tensor:
    """Each source's corrupted minus clean output, (n_sources, b, p, d), in ``graph.sources``' order,
    from two runs' parts: a head's is ``(z'_h - z_h) @ W_O[h]``, made here once for both runs."""
    with torch.no_grad():
        deltas = clean[0].new_empty(len(graph.sources), *clean[0].shape)
        parts = iter(zip(corrupted, clean))
        torch.sub(*next(parts), out=deltas[0])
        for layer, block in enumerate(model.blocks):
            start, stop = graph.sources_of_layer(layer)
            z_corrupted, z_clean = next(parts)  # (b, heads, p, d_head)
            by_head = (z_corrupted - z_clean).transpose(0, 1).flatten(1, 2)
            torch.bmm(by_head, block.attn.W_O, out=deltas[start:stop].flatten(1, 2))
            if graph.has_mlp:
                torch.sub(*next(parts), out=deltas[stop])
    return deltas


def _embedding(model: HookedTransformer, tokens: torch.Tensor) -> torch.Tensor:
    return embed(tokens, model.embed.W_E, model.pos_embed.W_pos[: tokens.shape[1]])


def _run(model: HookedTransformer, x: torch.Tensor, held: dict | None, logits: bool = True, keep: int | None = None
         ) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
    """(logits, or None without ``logits``; the parts that make the sources' outputs, detached, in
    forward order: the residual ``x`` before block 0 (``embed``, (batch, pos, d_model)), then per
    layer its heads' ``z`` (batch, heads, pos, d_head) and its MLP's output (batch, pos, d_model))
    from ``x``; with ``keep``, the parts of the last ``keep`` sequences only (copied, so that the
    others' are freed as the run goes on).

    With ``held``, each input it reads is kept there for its gradient: ``("pre", l)`` the residual
    before ``ln1``, ``("qkv", l)`` the queries, keys and values (batch, pos, heads, 3, d_head),
    ``("mlp", l)`` the MLP's input, ``("final", 0)`` the logits'; each is a tensor of its own, so
    its gradient is the part that flows through that input alone.
    """
    cfg = model.cfg

    def kept(out: torch.Tensor) -> torch.Tensor:
        return out.detach() if keep is None else out[-keep:].detach().clone()

    parts = [kept(x)]
    for layer, block in enumerate(model.blocks):
        attn = block.attn
        n_heads, d_model, d_head = attn.W_Q.shape
        # columns (heads, 3, d_head): the gradient comes out in score_edges' layout
        weights = torch.stack([attn.W_Q, attn.W_K, attn.W_V], 1).permute(2, 0, 1, 3).reshape(d_model, -1)
        bias = torch.stack([attn.b_Q, attn.b_K, attn.b_V], 1).flatten()
        normed = layer_norm(x, getattr(block, "ln1", None), cfg)
        qkv = torch.addmm(bias, normed.flatten(0, 1), weights).view(*x.shape[:2], n_heads, 3, d_head)
        if held is not None:
            if not qkv.requires_grad:  # frozen weights: the graph starts here
                qkv.requires_grad_(True)
            held["pre", layer], held["qkv", layer] = x, qkv
        q, k, v = qkv.permute(0, 2, 3, 1, 4).unbind(2)  # each (batch, heads, pos, d_head)
        z = causal_attention(q, k, v, cfg)
        parts.append(kept(z))
        mixed = z.transpose(1, 2).flatten(0, 1).flatten(1)  # (batch * pos, heads * d_head)
        x = x + torch.addmm(attn.b_O, mixed, attn.W_O.flatten(0, 1)).view_as(x)
        if not cfg.attn_only:
            mlp_in = x.view_as(x)
            if held is not None:
                held["mlp", layer] = mlp_in
            out = mlp_out(mlp_in, block, cfg)
            parts.append(kept(out))
            x = x + out
    final = x.view_as(x)
    if held is not None:
        held["final", 0] = final
    return unembed(final, model) if logits else None, parts
