"""The plain path of ``eap`` and ``eap-ig``: their runs written from the weights.

For the architectures the fused head-score path takes (:func:`circuits._fused.fused_supported`:
learned absolute positions, ``normalization_type`` None or ``"LN"``, elementwise-activation MLPs
or none, float32 or float64, one device, no hooks of the model's own), the corrupted run and the clean (or
interpolated) run with gradient are computed here from :mod:`circuits.plain_forward`'s pieces,
with the attention written out (:func:`_attention`) and one projection for every head's q, k and
v, instead of TransformerLens's hooked forward, which runs a hook point per activation. The runs
hand :func:`circuits._edge_gradients.score_edges` each source's difference between them (a head's
is ``(z'_h - z_h) @ W_O[h]``, made once from the two runs' ``z``, so neither run writes its heads'
outputs one by one), the scores of every head input, made inside the backward
(:class:`_ScoredHeadInputs`), and the gradient at each MLP's input and at the logits'.
Nothing upstream of the first layer's q/k/v is differentiated (the embeddings are an edge
source, never an input). The scores equal the hooked path's to float rounding
(``tests/test_edge_attribution.py::test_the_plain_path_gives_the_hooked_scores``: random
biases and norm weights, with and without MLPs and LayerNorm, frozen weights or not);
``docs/scores.md``, "Edge attribution".
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

import torch
from transformer_lens import HookedTransformer

from circuits._edge_gradients import (GradientRun, gradients, input_bias, interpolated_embeddings, metric_total,
                                      norm_weights, run_cotangents, source_scores)
from circuits._edge_graph import Graph
from circuits._fused import fused_supported
from circuits.plain_forward import embed, layer_norm, unembed

__all__ = ["plain_gradients", "plain_sources", "plain_supported"]


def plain_supported(model: HookedTransformer) -> bool:
    """True when this path reproduces the model's forward (the fused path's conditions)."""
    return fused_supported(model)


def plain_sources(model: HookedTransformer, tokens: torch.Tensor) -> list[torch.Tensor]:
    """The parts of :func:`_run` that make the sources' outputs on ``tokens``, without gradient."""
    with torch.no_grad():
        return _run(model, _embedding(model, tokens), _layers(model, 1), logits=False)[1]


def plain_gradients(model: HookedTransformer, graph: Graph, clean: torch.Tensor, corrupted: list[torch.Tensor],
                    metric: Callable, steps: int) -> GradientRun:
    """The sources' differences and the scores over the ``steps`` runs of
    :func:`circuits._edge_gradients.interpolated_embeddings` (batched as copies; the last copy is
    the clean run, whose parts are kept); ``corrupted``: :func:`plain_sources` of the corrupted tokens.

    The head inputs are scored inside the backward (:class:`_ScoredHeadInputs`), once the
    differences are known: the per-input cotangents it makes for the scores, summed, are the
    residual's gradient, so autograd does not make that gradient a second time."""
    with torch.no_grad():
        path = interpolated_embeddings(_embedding(model, clean), corrupted[0], steps)
        layers = _layers(model, steps)
    path.requires_grad_(True)  # the graph starts here: nothing upstream is an input
    held: dict = {}
    with torch.enable_grad():
        logits, parts = _run(model, path, layers, held, keep=clean.shape[0] if steps > 1 else None, scored=True)
        total = metric_total(metric, logits, steps)
        deltas = _differences(model, graph, corrupted, parts)
        for layer, state in enumerate(layers):
            state.deltas = deltas[:graph.sources_of_layer(layer)[0]]
        keys = list(held)
        grads = dict(zip(keys, gradients(total, [path] + [held[key] for key in keys])[1:]))
    heads = [state.scores if state.scores is not None  # None: the metric does not reach this layer
             else deltas.new_zeros(len(state.deltas), 3 * graph.n_heads) for state in layers]
    return GradientRun(
        deltas=deltas, heads=heads,
        mlp=[grads["mlp", layer] for layer in range(graph.n_layers)] if graph.has_mlp else [],
        final=grads["final", 0])


class _Layer:
    """One layer's head inputs: their projection, and what :class:`_ScoredHeadInputs` scores them with."""

    def __init__(self, block: torch.nn.Module, cfg: object, steps: int) -> None:
        self.norm, self.steps, self.cfg = block.ln1, steps, cfg
        attn = block.attn
        self.weights = torch.stack([attn.W_Q, attn.W_K, attn.W_V], 1)  # (heads, 3, d, d_head)
        # columns (heads, 3, d_head): the q/k/v come out in cotangents' layout
        self.columns = self.weights.permute(2, 0, 1, 3).flatten(1)
        self.own_bias = torch.stack([attn.b_Q, attn.b_K, attn.b_V], 1)  # (heads, 3, d_head)
        self.deltas: torch.Tensor | None = None  # the upstream sources' differences, set before the backward
        self.scores: torch.Tensor | None = None  # (n_upstream, 3 n_heads), set by the backward

    @cached_property
    def bias(self) -> torch.Tensor:
        """The bias of the q/k/v as the norm feeds them (the backward's only: the corrupted run needs none)."""
        return input_bias(self.norm, self.weights, self.own_bias)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """``ln1`` and every head's q, k and v at once, (batch, pos, heads, 3, d_head)."""
        normed = layer_norm(x, self.norm, self.cfg)
        qkv = torch.addmm(self.own_bias.flatten(), normed.flatten(0, 1), self.columns)
        return qkv.view(*x.shape[:2], *self.own_bias.shape)


class _ScoredHeadInputs(torch.autograd.Function):
    """``ln1`` and one projection for every head's q, k and v, ``(batch, pos, heads, 3, d_head)``.

    Its backward makes each head input's cotangent at the residual (the norm's vector-Jacobian
    product of :func:`circuits._edge_gradients.cotangents`, one run at a time), scores the
    upstream sources' differences against their mean over the runs into ``layer.scores``
    (:func:`circuits._edge_gradients.head_input_scores`' definition) and returns their sum, the
    residual's gradient. The weights are constants here: no gradient reaches them.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: _Layer) -> torch.Tensor:  # type: ignore[override]
        qkv = layer.project(x)
        ctx.layer = layer
        ctx.save_for_backward(x, qkv)
        return qkv

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        layer = ctx.layer
        x, qkv = ctx.saved_tensors
        linear = qkv.view_as(grad) - layer.bias
        at_x, total = [], None
        for cot in run_cotangents(layer.norm, x, grad, linear, norm_weights(layer.norm, layer.weights), layer.steps):
            at_x.append(cot.sum(0))  # (3 heads, b * p, d) summed: the residual's gradient
            total = cot if total is None else total.add_(cot)
        layer.scores = source_scores(layer.deltas, total, layer.steps)
        return torch.cat(at_x).view_as(x), None


def _layers(model: HookedTransformer, steps: int) -> list[_Layer]:
    return [_Layer(block, model.cfg, steps) for block in model.blocks]


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


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """``z`` (batch, heads, pos, d_head) of causal attention, scores divided by ``scale``, written out
    (``softmax(q k^T / scale + mask) v``). At the shapes of ``benchmarks/bench_edge_attribution.py``
    it beat the fused kernel (``F.scaled_dot_product_attention``) forward and backward, and it holds
    no more than the hooked forward, which keeps the scores and the pattern too."""
    b, h, p, e = q.shape
    mask = torch.full((p, p), float("-inf"), dtype=q.dtype, device=q.device).triu_(1)
    scores = torch.baddbmm(mask, q.reshape(b * h, p, e), k.reshape(b * h, p, e).transpose(1, 2), alpha=1 / scale)
    return torch.bmm(scores.softmax(-1), v.reshape(b * h, p, e)).view(b, h, p, e)


def _mlp_out(x: torch.Tensor, block: torch.nn.Module, cfg: object) -> torch.Tensor:
    """:func:`circuits.plain_forward.mlp_out` with each bias added inside its product (``addmm``),
    which saves a pass over the activations each way (here, not there: the training forwards keep
    their rounding)."""
    mlp = block.mlp
    normed = layer_norm(x, getattr(block, "ln2", None), cfg).flatten(0, 1)
    hidden = mlp.act_fn(torch.addmm(mlp.b_in, normed, mlp.W_in))
    return torch.addmm(mlp.b_out, hidden, mlp.W_out).view_as(x)


def _run(model: HookedTransformer, x: torch.Tensor, layers: list[_Layer], held: dict | None = None,
         logits: bool = True, keep: int | None = None, scored: bool = False
         ) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
    """(logits, or None without ``logits``; the parts that make the sources' outputs, detached, in
    forward order: the residual ``x`` before block 0 (``embed``, (batch, pos, d_model)), then per
    layer its heads' ``z`` (batch, heads, pos, d_head) and its MLP's output (batch, pos, d_model))
    from ``x``; with ``keep``, the parts of the last ``keep`` sequences only (copied, so that the
    others' are freed as the run goes on).

    ``layers``: each block's :class:`_Layer`. With ``scored`` (the gradient run), each layer's q/k/v
    come from :class:`_ScoredHeadInputs`; with
    ``held``, each other input it reads is kept there for its gradient: ``("mlp", l)`` the MLP's
    input, ``("final", 0)`` the logits'; each is a tensor of its own, so its gradient is the part
    that flows through that input alone.
    """
    cfg = model.cfg

    def kept(out: torch.Tensor) -> torch.Tensor:
        return out.detach() if keep is None else out[-keep:].detach().clone()

    parts = [kept(x)]
    for layer, block in enumerate(model.blocks):
        attn = block.attn
        qkv = _ScoredHeadInputs.apply(x, layers[layer]) if scored else layers[layer].project(x)
        q, k, v = qkv.permute(0, 2, 3, 1, 4).unbind(2)  # each (batch, heads, pos, d_head)
        z = _attention(q, k, v, cfg.attn_scale)
        parts.append(kept(z))
        mixed = z.transpose(1, 2).flatten(0, 1).flatten(1)  # (batch * pos, heads * d_head)
        x = x + torch.addmm(attn.b_O, mixed, attn.W_O.flatten(0, 1)).view_as(x)
        if not cfg.attn_only:
            mlp_in = x.view_as(x)
            if held is not None:
                held["mlp", layer] = mlp_in
            out = _mlp_out(mlp_in, block, cfg)
            parts.append(kept(out))
            x = x + out
    final = x.view_as(x)
    if held is not None:
        held["final", 0] = final
    return unembed(final, model) if logits else None, parts
