"""Gradients of the metric at every input of the edge graph, for ``eap`` and ``eap-ig``.

One forward with gradient on the (clean or interpolated) run, the model's own layout (no split
q/k/v inputs: they would multiply the attention inputs by the head count), then the gradient at
each head's q/k/v input, before ``ln1``, from the gradient at ``hook_q``/``hook_k``/``hook_v``:
``dm/dx = J_ln1(x)^T (dm/dq_h W_Q[h]^T)`` (the projection's bias does not matter), the norm's
vector-Jacobian products taken by autograd on ``ln1`` alone, all heads at once. MLP inputs
(``hook_mlp_in``, before ``ln2``) and the logits' input (the last residual, before ``ln_final``)
are read directly. docs/scores.md, "Edge attribution".
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from transformer_lens import HookedTransformer

from circuits._edge_graph import Graph, metric_value, source_hooks, split_inputs


def gradient_scores(model: HookedTransformer, graph: Graph, clean: torch.Tensor, corrupted_out: torch.Tensor,
                    metric: Callable, steps: int) -> np.ndarray:
    """Every edge's ``(out_s(corrupted) - out_s(clean)) . mean dm/dx_i`` summed over batch, positions, d_model.

    ``corrupted_out`` (n_sources, b, p, d). The gradient is averaged over ``steps`` runs with
    embedding output ``e' + k/steps (e - e')``, ``k = 1..steps`` (``e`` clean, ``e'`` corrupted;
    one run, the clean one, when ``steps = 1``), batched as copies of the clean tokens.
    """
    batch, n_layers, n_heads = clean.shape[0], graph.n_layers, graph.n_heads
    corrupted_embed = corrupted_out[0]
    outs: list[torch.Tensor | None] = [None] * len(graph.sources)
    held: dict[str, torch.Tensor] = {}
    alphas = torch.arange(1, steps + 1, dtype=corrupted_embed.dtype, device=corrupted_embed.device) / steps

    def embed(resid: torch.Tensor) -> torch.Tensor:
        clean_embed = resid.detach()[(steps - 1) * batch:]  # every copy holds the clean tokens
        outs[0] = clean_embed
        if steps == 1:
            return clean_embed.clone().requires_grad_(True)
        path = corrupted_embed + alphas[:, None, None, None] * (clean_embed - corrupted_embed)
        return path.reshape(resid.shape).requires_grad_(True)

    def store(i: int, out: torch.Tensor) -> None:
        if i:
            outs[i] = out.detach()[(steps - 1) * batch:]

    def hold(x: torch.Tensor, hook: object) -> None:
        held[hook.name] = x

    names = [f"blocks.{layer}.attn.hook_{kind}" for layer in range(n_layers) for kind in "qkv"]
    names += [f"blocks.{layer}.hook_mlp_in" for layer in range(n_layers) if graph.has_mlp]
    names.append(f"blocks.{n_layers - 1}.hook_resid_post")
    pre = [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)]
    hooks = source_hooks(model, graph, store, embed=embed) + [(name, hold) for name in names + pre]
    with split_inputs(model, qkv=False), torch.enable_grad():
        logits = model.run_with_hooks(clean.repeat(steps, 1), fwd_hooks=hooks)
        total = sum(metric_value(metric, chunk) for chunk in logits.chunk(steps))
        if not total.requires_grad:
            raise ValueError("metric(logits) must be differentiable in the logits for eap and eap-ig")
        grads = dict(zip(names, torch.autograd.grad(total, [held[name] for name in names])))
    with torch.no_grad():
        deltas = corrupted_out - torch.stack(outs)  # type: ignore[arg-type]
        flat = deltas.flatten(1)  # (n_sources, b * p * d)
        table = torch.zeros(len(graph.sources), len(graph.inputs), dtype=deltas.dtype, device=deltas.device)
        i = 0
        for layer in range(n_layers):
            attn = model.blocks[layer].attn
            for j, (kind, weight) in enumerate((("q", attn.W_Q), ("k", attn.W_K), ("v", attn.W_V))):
                cot = torch.einsum("bphe,hde->bphd", grads[f"blocks.{layer}.attn.hook_{kind}"], weight)
                cot = _mean_over_steps(norm_vjp(model.blocks[layer].ln1, held[pre[layer]].detach(), cot), steps)
                table[:, i + j:i + 3 * n_heads:3] = flat @ cot.permute(2, 0, 1, 3).reshape(n_heads, -1).T
            i += 3 * n_heads
            if graph.has_mlp:
                table[:, i] = flat @ _mean_over_steps(grads[f"blocks.{layer}.hook_mlp_in"], steps).flatten()
                i += 1
        table[:, i] = flat @ _mean_over_steps(grads[names[-1]], steps).flatten()
    s_idx, i_idx = graph.edge_index()
    return table[torch.as_tensor(s_idx, device=table.device), torch.as_tensor(i_idx, device=table.device)].double().cpu().numpy()


def norm_vjp(norm: torch.nn.Module, x: torch.Tensor, cot: torch.Tensor) -> torch.Tensor:
    """``J_norm(x)^T cot`` for every slice ``cot[:, :, j]``: x (b, p, d), cot (b, p, n, d).

    Closed forms for TransformerLens' LayerNorm(Pre) and RMSNorm(Pre) (a handful of elementwise
    passes; autograd through the module costs several times more), autograd for any other norm.
    """
    kind = type(norm).__name__
    if isinstance(norm, torch.nn.Identity):
        return cot
    if kind not in ("LayerNorm", "LayerNormPre", "RMSNorm", "RMSNormPre"):
        leaf = x[:, :, None].expand_as(cot).clone().requires_grad_(True)
        with torch.enable_grad():
            return torch.autograd.grad(norm(leaf), leaf, cot)[0]
    centred = kind.startswith("LayerNorm")
    if centred:
        x = x - x.mean(-1, keepdim=True)
    scale = (x.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt()[:, :, None]  # (b, p, 1, 1)
    unit = x[:, :, None] / scale
    g = cot * norm.w if kind in ("LayerNorm", "RMSNorm") else cot
    if centred:
        g = g - g.mean(-1, keepdim=True)
    return (g - unit * (g * unit).mean(-1, keepdim=True)) / scale


def _mean_over_steps(x: torch.Tensor, steps: int) -> torch.Tensor:
    return x if steps == 1 else x.view(steps, -1, *x.shape[1:]).mean(0)
