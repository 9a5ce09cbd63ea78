"""Edge patching on the graph of :mod:`circuits._edge_graph`: one edge at a time, or many at once.

Patching edge ``s -> i`` replaces source ``s``'s contribution to input ``i`` (the residual read by
``i``, before ``i``'s LayerNorm, which is recomputed) by its value on the corrupted run; every
other input reads what the patched run writes. A patch is made where the input is read, before
any hook of the caller's at that hook point (:func:`circuits._edge_graph.first_hooks`), which then
sees the patched input. docs/scores.md, "Edge attribution".
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from transformer_lens import HookedTransformer

from circuits._checks import unpadded
from circuits._edge_graph import Graph, copies_metric, first_hooks, input_hook_names, input_slots, source_hooks, \
    split_inputs

#: Residual-sized numbers (copies x batch x pos x d_model, times the inputs held per copy) per
#: batched forward: 2^24 float32 = 64 MiB.
CHUNK_ELEMENTS = 1 << 24


def chunk_copies(graph: Graph, tokens: torch.Tensor, d_model: int, per_copy_inputs: int) -> int:
    per_copy = tokens.numel() * d_model * max(1, per_copy_inputs)
    return max(1, CHUNK_ELEMENTS // per_copy)


def exact_scores(model: HookedTransformer, graph: Graph, clean: torch.Tensor, deltas: torch.Tensor,
                 metric: Callable, m_clean: float) -> np.ndarray:
    """``metric(edge patched) - m_clean`` of every edge (the order of ``graph.edges()``).

    ``deltas`` (n_sources, batch, pos, d_model): corrupted minus clean source outputs. Only the
    patched input changes, and everything upstream of it is the clean run's, so a patch adds the
    source's delta to that one input. Edges are run as copies of the clean batch, grouped by the
    layer of their input, each group starting from the clean residual before that layer
    (``start_at_layer``); edges into the logits need only the final norm and the unembedding.
    """
    final = f"blocks.{graph.n_layers - 1}.hook_resid_post"
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(graph.n_layers)] + [final]
    cache: dict[str, torch.Tensor] = {}

    def keep(x: torch.Tensor, hook: object) -> None:
        cache[hook.name] = x.clone()  # before the caller's hooks there (which may write in place), which
        # the restarted run applies again

    with first_hooks(model, [(name, keep) for name in names]), torch.no_grad():
        model(clean, attention_mask=unpadded(clean), return_type=None)
    s_idx, i_idx = graph.edge_index()
    scores = np.zeros(len(s_idx))
    layer_of = np.array([graph.inputs[i][2] for i in i_idx])
    n_copies = chunk_copies(graph, clean, deltas.shape[-1], 3 * graph.n_heads + 1)
    batch = clean.shape[0]
    with split_inputs(model), torch.no_grad():
        for layer in range(graph.n_layers + 1):
            rows = np.flatnonzero(layer_of == layer)
            resid = cache[names[layer]]
            for start in range(0, len(rows), n_copies):
                part = rows[start:start + n_copies]
                src, inp = torch.as_tensor(s_idx[part], device=deltas.device), i_idx[part]
                x = resid.repeat(len(part), 1, 1)
                if layer == graph.n_layers:  # the logits' input: its hook point (the caller's hooks), then the head
                    x = (x.view(len(part), batch, *x.shape[1:]) + deltas[src]).view_as(x)
                    logits = model(model.blocks[-1].hook_resid_post(x), start_at_layer=layer)
                else:
                    with first_hooks(model, _single_edge_hooks(graph, layer, src, inp, deltas)):
                        logits = model(x, start_at_layer=layer)
                scores[part] = np.asarray(copies_metric(metric, logits, len(part))) - m_clean
    return scores


def _single_edge_hooks(graph: Graph, layer: int, src: torch.Tensor, inp: np.ndarray,
                       deltas: torch.Tensor) -> list[tuple[str, Callable]]:
    """Hooks on ``layer``'s inputs adding ``deltas[src[c]]`` to input ``inp[c]`` of copy ``c`` only."""
    hooks = []
    kinds = [graph.inputs[i][1] for i in inp]
    heads = torch.as_tensor([graph.inputs[i][3] for i in inp], device=deltas.device)
    for kind in ("q", "k", "v", ""):
        sel = [c for c, k in enumerate(kinds) if k == kind]
        if not sel:
            continue
        copies = torch.as_tensor(sel, device=deltas.device)

        def hook(x: torch.Tensor, hook: object, copies: torch.Tensor = copies, kind: str = kind) -> torch.Tensor:
            x = x.clone()
            view = x.view(len(inp), -1, *x.shape[1:])
            add = deltas[src[copies]]
            if kind:
                view[copies, :, :, heads[copies]] += add
            else:
                view[copies] += add
            return x

        name = f"blocks.{layer}.hook_{kind}_input" if kind else f"blocks.{layer}.hook_mlp_in"
        hooks.append((name, hook))
    return hooks


def patched_metrics(model: HookedTransformer, graph: Graph, clean: torch.Tensor, corrupted_out: torch.Tensor,
                    patched: np.ndarray, metric: Callable) -> list[float]:
    """The metric of the clean run with a set of edges patched, for each set.

    ``patched``: bool (n_sets, n_sources, n_inputs), True where an edge takes the corrupted
    source output; ``corrupted_out`` (n_sources, batch, pos, d_model). Within a patched run an
    input reads, from each unpatched edge, the source's output *in that run* (which may itself
    have changed upstream) and, from each patched edge, the corrupted run's: one forward per set
    (sets run as copies of the batch), the inputs rewritten as the sources fire.
    """
    out: list[float] = []
    n_copies = chunk_copies(graph, clean, corrupted_out.shape[-1], len(graph.sources) + 3 * graph.n_heads)
    for start in range(0, len(patched), n_copies):
        part = torch.as_tensor(patched[start:start + n_copies], dtype=corrupted_out.dtype,
                               device=corrupted_out.device)
        out += _patched_run(model, graph, clean, corrupted_out, part, metric)
    return out


def _patched_run(model: HookedTransformer, graph: Graph, clean: torch.Tensor, corrupted_out: torch.Tensor,
                 weight: torch.Tensor, metric: Callable) -> list[float]:
    n_sets, batch = weight.shape[0], clean.shape[0]
    current: list[torch.Tensor | None] = [None] * len(graph.sources)

    def store(i: int, output: torch.Tensor) -> None:
        current[i] = output.view(n_sets, batch, *output.shape[1:])

    slots = input_slots(graph)

    def rewrite(x: torch.Tensor, hook: object) -> torch.Tensor:
        x = x.clone()
        view = x.view(n_sets, batch, *x.shape[1:])
        for i, head in slots[hook.name]:
            src = np.flatnonzero(graph.upstream[:, i])
            diff = corrupted_out[src][:, None] - torch.stack([current[s] for s in src])  # (src, sets, b, p, d)
            add = torch.einsum("ks,skbpd->kbpd", weight[:, src, i], diff)
            if head >= 0:
                view[:, :, :, head] += add
            else:
                view += add
        return x

    inputs = [(name, rewrite) for name, _ in input_hook_names(graph)]
    with split_inputs(model), first_hooks(model, inputs), torch.no_grad():
        tokens = clean.repeat(n_sets, 1)
        logits = model.run_with_hooks(tokens, fwd_hooks=source_hooks(model, graph, store), attention_mask=unpadded(tokens))
    return copies_metric(metric, logits, n_sets)
