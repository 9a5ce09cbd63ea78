"""Gradients of the metric at every input of the edge graph, for ``eap`` and ``eap-ig``.

One forward with gradient on the (clean or interpolated) run, through the model's hooked forward
(:func:`hooked_gradients`, the model's own layout: no split q/k/v inputs, they would multiply the
attention inputs by the head count, unless hooks of the caller's may sit between an input and its
head) or, where it applies, the runs written from the weights
(:mod:`circuits._edge_plain`). Each head's q/k/v input is scored from the gradient at
``hook_q``/``hook_k``/``hook_v``, carried to the residual before ``ln1``:
``dm/dx = J_ln1(x)^T (dm/dq_h W_Q[h]^T)`` (the projection's bias does not matter). For
TransformerLens' norms that vector-Jacobian product is written out, for every head input of a
layer at once (:func:`cotangents`); any other norm takes autograd's (:func:`norm_vjp`). MLP
inputs (``hook_mlp_in``, before ``ln2``) and the logits' input (the last residual, before
``ln_final``) are read directly; :func:`score_edges` puts the scores together.
docs/scores.md, "Edge attribution".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from transformer_lens import HookedTransformer

from circuits._checks import unpadded
from circuits._edge_graph import Graph, first_hooks, metric_value, source_hooks, split_inputs
from circuits.architecture import has_own_hooks

CLOSED_FORM_NORMS = ("LayerNorm", "LayerNormPre", "RMSNorm", "RMSNormPre")
_IN_PLACE = ("metric(logits) changed the logits in place, which eap and eap-ig differentiate; compute it out of "
             "place (e.g. logits - logits.logsumexp(-1, keepdim=True))")


@dataclass
class GradientRun:
    """What the scores read from the clean (or interpolated) runs with gradient, ``steps`` copies of the batch.

    ``deltas``: each source's output on the corrupted run minus the clean run's (n_sources, b, p,
    d). ``heads``: per layer, the scores of the sources upstream of it (``graph.sources_of_layer``)
    into its head inputs, (n_upstream, 3 n_heads), head-major, q k v (:func:`head_input_scores`).
    ``mlp``: per layer, the gradient at the MLP's input (steps * b, p, d; empty without MLPs);
    ``final`` the gradient at the logits' input (steps * b, p, d).
    """

    deltas: torch.Tensor
    heads: list[torch.Tensor]
    mlp: list[torch.Tensor]
    final: torch.Tensor


def hooked_gradients(model: HookedTransformer, graph: Graph, clean: torch.Tensor, corrupted_out: torch.Tensor,
                     metric: Callable, steps: int) -> GradientRun:
    """The runs of :func:`score_edges` through the model's own hooked forward.

    The gradient is taken over the ``steps`` runs of :func:`interpolated_embeddings`, batched as
    copies of the clean tokens; the source outputs are the last (clean) copy's, subtracted from
    ``corrupted_out`` (n_sources, b, p, d; overwritten). Each input is read before any hook of
    the caller's at its hook point. A model with hooks of the caller's (on any module) has its
    head inputs read at ``hook_q_input``/``hook_k_input``/``hook_v_input`` themselves, whose
    gradients then hold every hook between an input and its head (at ``hook_q``, on ``ln1``, ...);
    that holds ``3 n_heads`` residual-sized gradients per layer, the reason the other models read
    ``hook_q``/``hook_k``/``hook_v`` and carry the gradient back through the weights and the norm.
    """
    batch, n_layers = clean.shape[0], graph.n_layers
    at_inputs = has_own_hooks(model)
    outs: list[torch.Tensor | None] = [None] * len(graph.sources)
    held: dict[str, torch.Tensor] = {}

    def embed(resid: torch.Tensor) -> torch.Tensor:
        clean_embed = resid.detach()[(steps - 1) * batch:]  # every copy holds the clean tokens
        outs[0] = clean_embed
        return interpolated_embeddings(clean_embed, corrupted_out[0], steps).view(resid.shape).requires_grad_(True)

    def store(i: int, out: torch.Tensor) -> None:
        if i:  # the clean copy alone (a copy of it, so that the other copies' outputs are freed)
            outs[i] = out.detach()[(steps - 1) * batch:].clone() if steps > 1 else out.detach()

    def hold(x: torch.Tensor, hook: object) -> None:
        held[hook.name] = x

    def hold_first(x: torch.Tensor, hook: object) -> torch.Tensor:
        held[hook.name] = x = x.view_as(x)  # its own node: the gradient through this input alone
        return x.clone()  # a caller's hook may write in place: into a copy, never into what is held

    kinds = [f"hook_{kind}_input" if at_inputs else f"attn.hook_{kind}" for kind in "qkv"]
    by_layer = [[f"blocks.{layer}.{kind}" for kind in kinds] for layer in range(n_layers)]
    names = [name for group in by_layer for name in group]
    names += [f"blocks.{layer}.hook_mlp_in" for layer in range(n_layers) if graph.has_mlp]
    names.append(f"blocks.{n_layers - 1}.hook_resid_post")
    pre = [] if at_inputs else [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)]
    hooks = source_hooks(model, graph, store, embed=embed) + [(name, hold) for name in pre]
    with split_inputs(model, qkv=at_inputs), first_hooks(model, [(name, hold_first) for name in names]), \
            torch.enable_grad():
        tokens = clean.repeat(steps, 1)
        logits = model.run_with_hooks(tokens, fwd_hooks=hooks, attention_mask=unpadded(tokens))
        total = metric_total(metric, logits, steps)
        grads = dict(zip(names, gradients(total, [held[name] for name in names])))
    deltas = corrupted_out.sub_(torch.stack(outs))  # type: ignore[arg-type]
    heads = []
    with torch.no_grad():
        for layer, group in enumerate(by_layer):
            up = graph.sources_of_layer(layer)[0]
            grads_qkv = torch.stack([grads[name] for name in group], 3)
            if at_inputs:  # (steps * b, p, heads, 3, d): dotted with the differences as they are
                inputs = _mean_over_steps(grads_qkv, steps).permute(2, 3, 0, 1, 4).flatten(0, 1)
                heads.append(source_scores(deltas[:up], inputs.flatten(1, 2), 1))
                continue
            block = model.blocks[layer]
            weights, bias = head_weights(block)
            linear = torch.stack([held[name].detach() for name in group], 3) - bias
            heads.append(head_input_scores(block.ln1, held[pre[layer]].detach(), grads_qkv, weights, deltas[:up],
                                           steps, linear))
    return GradientRun(
        deltas=deltas, heads=heads,
        mlp=[grads[f"blocks.{layer}.hook_mlp_in"] for layer in range(n_layers)] if graph.has_mlp else [],
        final=grads[names[-1]])


def gradients(total: torch.Tensor, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """``d total / d input`` for each input, zeros where ``total`` does not depend on it (a hook of
    the caller's cut it off, or the metric reads no logits)."""
    return torch.autograd.grad(total, inputs, allow_unused=True, materialize_grads=True)


def interpolated_embeddings(clean_embed: torch.Tensor, corrupted_embed: torch.Tensor, steps: int) -> torch.Tensor:
    """The embedding outputs of ``eap-ig``'s runs, (steps * b, p, d): ``e - (1 - k/steps) (e - e')``
    for ``k = 1..steps`` (``e`` clean, ``e'`` corrupted), step-major; the last copy is ``e`` exactly
    (with ``steps = 1``, ``eap``'s clean run). A new tensor."""
    back = 1 - torch.arange(1, steps + 1, dtype=clean_embed.dtype, device=clean_embed.device) / steps
    return (clean_embed - back[:, None, None, None] * (clean_embed - corrupted_embed)).flatten(0, 1)


def metric_total(metric: Callable, logits: torch.Tensor, steps: int) -> torch.Tensor:
    """The sum of ``metric`` over the ``steps`` equal blocks of ``logits`` (one per run), checked to be
    finite, differentiable and not to have written into the logits (its gradient would be of
    what it wrote, or autograd would fail in the backward)."""
    run = "clean run" if steps == 1 else "path from the corrupted to the clean input"
    version = logits._version
    try:  # chunk()'s views refuse a write in place (autograd's error about a "Split" the caller never made)
        total = sum(metric_value(metric, chunk, run) for chunk in ([logits] if steps == 1 else logits.chunk(steps)))
    except RuntimeError as exc:
        if "modified inplace" not in str(exc):
            raise
        raise ValueError(_IN_PLACE) from None
    if logits._version != version:  # the whole logits, written into
        raise ValueError(_IN_PLACE)
    if not total.requires_grad:
        raise ValueError("metric(logits) must be differentiable in the logits for eap and eap-ig")
    return total


def score_edges(graph: Graph, run: GradientRun, steps: int) -> np.ndarray:
    """Every edge's ``(out_s(corrupted) - out_s(clean)) . mean dm/dx_i`` summed over batch, positions,
    d_model, in the order of ``graph.edges()``."""
    with torch.no_grad():
        deltas = run.deltas
        flat = deltas.flatten(1)  # (n_sources, b * p * d)
        table = torch.zeros(len(graph.sources), len(graph.inputs), dtype=deltas.dtype, device=deltas.device)
        i, n_heads = 0, graph.n_heads
        for layer in range(graph.n_layers):
            up = graph.sources_of_layer(layer)[0]  # sources are in forward order: the first `up` feed this layer
            table[:up, i:i + 3 * n_heads] = run.heads[layer]
            i += 3 * n_heads
            if graph.has_mlp:
                up = int(graph.upstream[:, i].sum())
                table[:up, i] = flat[:up] @ _mean_over_steps(run.mlp[layer], steps).flatten()
                i += 1
        table[:, i] = flat @ _mean_over_steps(run.final, steps).flatten()
    s_idx, i_idx = graph.edge_index()
    return table[torch.as_tensor(s_idx, device=table.device), torch.as_tensor(i_idx, device=table.device)].double().cpu().numpy()


def head_weights(block: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """A block's q/k/v weights ``(n_heads, 3, d, d_head)`` and the bias of its queries, keys and values
    as ``ln1`` feeds them, ``(n_heads, 3, d_head)``: ``b_Q/b_K/b_V`` plus the norm's bias through the
    weights; the queries, keys and values less it are ``(w * n) @ W`` (``n`` the normalised input)."""
    attn = block.attn
    weights = torch.stack([attn.W_Q, attn.W_K, attn.W_V], 1)
    return weights, input_bias(block.ln1, weights, torch.stack([attn.b_Q, attn.b_K, attn.b_V], 1))


def input_bias(norm: torch.nn.Module, weights: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``bias`` (n_heads, 3, d_head) plus the norm's bias (if it has one) through ``weights``."""
    if isinstance(getattr(norm, "b", None), torch.Tensor):
        return bias + torch.einsum("d,hjde->hje", norm.b, weights)
    return bias


def head_input_scores(norm: torch.nn.Module, x: torch.Tensor, grads: torch.Tensor, weights: torch.Tensor,
                      deltas: torch.Tensor, steps: int, linear: torch.Tensor) -> torch.Tensor:
    """Scores of every source into one layer's head inputs: (n_sources, 3 n_heads), head-major, q k v.

    Entry ``(s, 3h + j)``: ``sum_{b,p} delta_s . mean_k J_norm(x_k)^T W_j[h] g_kj[h]`` with ``x``
    (steps * b, p, d) the residual before the norm, ``grads`` (steps * b, p, n_heads, 3, d_head)
    the gradients at ``hook_q``/``hook_k``/``hook_v``, ``weights`` (n_heads, 3, d, d_head) and
    ``deltas`` (n_sources, b, p, d), ``linear`` (the shape of ``grads``) the queries, keys and
    values less every bias, ``(w * n) @ W_j[h]``. For TransformerLens' LayerNorm and RMSNorm (and
    their Pre forms) the norm's vector-Jacobian product is written out: with ``n`` the normalised
    ``x``, ``sigma`` its scale, ``P`` the centring (LayerNorm) and ``u = w * W g``,
    ``J^T u = (P u - n (n . u) / d) / sigma``, for all ``3 n_heads`` cotangents at once and
    without copying the residual per head; ``n . u = ((w * n) @ W) . g`` is read from ``linear``,
    d_head wide instead of d_model. Any other norm goes through :func:`norm_vjp`.
    """
    total = None
    for cot in run_cotangents(norm, x, grads, linear, norm_weights(norm, weights), steps):
        total = cot if total is None else total.add_(cot)
    return source_scores(deltas, total, steps)


def run_cotangents(norm: torch.nn.Module, x: torch.Tensor, grads: torch.Tensor, linear: torch.Tensor,
                   weights: torch.Tensor, steps: int) -> Iterator[torch.Tensor]:
    """:func:`cotangents` of each of the ``steps`` runs batched in ``x``, ``grads`` and ``linear``,
    one run at a time (what one run makes stays in cache)."""
    for x_k, grads_k, linear_k in zip(x.chunk(steps), grads.chunk(steps), linear.chunk(steps)):
        yield cotangents(norm, x_k, grads_k, linear_k, weights)


def source_scores(deltas: torch.Tensor, cot: torch.Tensor, steps: int) -> torch.Tensor:
    """``(n_sources, n_inputs)``: each source's difference dotted with each input's cotangent summed
    over the ``steps`` runs, over the run's mean (``cot`` (n_inputs, b * p, d))."""
    return (cot.flatten(1) @ deltas.flatten(1).T).T / steps  # this way round: faster with n_inputs small


def norm_weights(norm: torch.nn.Module, weights: torch.Tensor) -> torch.Tensor:
    """``weights`` (n_heads, 3, d, d_head) as :func:`cotangents` reads them: times the norm's gain
    ``w`` (LayerNorm, RMSNorm) and centred along d (LayerNorm: ``P W``, so that ``P u = (P W) g``)."""
    kind = closed_form(norm)
    if kind in ("LayerNorm", "RMSNorm"):
        weights = weights * norm.w[:, None]
    if kind in ("LayerNorm", "LayerNormPre"):
        weights = weights - weights.mean(2, keepdim=True)
    return weights


def cotangents(norm: torch.nn.Module, x: torch.Tensor, grads: torch.Tensor, linear: torch.Tensor,
               weights: torch.Tensor) -> torch.Tensor:
    """``J_norm(x)^T W_j[h] g_j[h]`` of one run, (3 n_heads, b * p, d); ``weights`` from
    :func:`norm_weights`."""
    kind, d = closed_form(norm), x.shape[-1]
    if kind is not None:
        if kind in ("LayerNorm", "LayerNormPre"):
            x = x - x.mean(-1, keepdim=True)
        inv_scale = (x.pow(2).mean(-1, keepdim=True) + norm.eps).rsqrt()  # 1 / sigma, (b, p, 1)
        unit = (x * inv_scale).reshape(-1, d)
        u = _project(grads * inv_scale[..., None, None], weights)  # P W g / sigma
        along = (torch.linalg.vecdot(linear, grads) * inv_scale[..., None]).flatten(2).flatten(0, 1)  # n . u
        return u.addcmul_(along.T[..., None], unit, value=-1 / d)  # - n (n . u) / d
    u = _project(grads, weights)
    if isinstance(norm, torch.nn.Identity):
        return u
    cot = norm_vjp(norm, x, u.view(u.shape[0], *x.shape).permute(1, 2, 0, 3))
    return cot.permute(2, 0, 1, 3).reshape(u.shape)


def _project(grads: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``W_j[h] g_j[h]``, (3 n_heads, b * p, d): grads (b, p, h, 3, e), weights (h, 3, d, e)."""
    n_inputs, e = 3 * grads.shape[2], grads.shape[-1]
    by_input = grads.reshape(-1, n_inputs, e).transpose(0, 1)
    return torch.bmm(by_input, weights.reshape(n_inputs, -1, e).transpose(1, 2))


def closed_form(norm: torch.nn.Module) -> str | None:
    """The name of the TransformerLens norm class ``norm`` is, whose vector-Jacobian product is
    written out (:data:`CLOSED_FORM_NORMS`), else None: any other module, a subclass or torch's own
    ``LayerNorm`` included, takes autograd's (:func:`norm_vjp`)."""
    kind = type(norm)
    top = kind.__module__.split(".")[0]
    return kind.__name__ if top == "transformer_lens" and kind.__name__ in CLOSED_FORM_NORMS else None


def norm_vjp(norm: torch.nn.Module, x: torch.Tensor, cot: torch.Tensor) -> torch.Tensor:
    """``J_norm(x)^T cot`` for every slice ``cot[:, :, j]`` by autograd: x (b, p, d), cot (b, p, n, d)."""
    leaf = x[:, :, None].expand_as(cot).clone().requires_grad_(True)
    with torch.enable_grad():
        return torch.autograd.grad(norm(leaf), leaf, cot)[0]


def _mean_over_steps(x: torch.Tensor, steps: int) -> torch.Tensor:
    return x if steps == 1 else x.view(steps, -1, *x.shape[1:]).mean(0)
