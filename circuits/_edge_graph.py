"""The computational graph of edge attribution: nodes, inputs, edges, and the hooks that read them.

Sources (nodes that write to the residual stream), in forward order: ``embed`` (the residual
before block 0: token plus position embeddings), then per layer ``l`` its heads ``L{l}H{h}``
(output ``z_h @ W_O[h]``; the attention bias ``b_O`` is the same on every run and belongs to no
edge) and ``mlp{l}`` (``hook_mlp_out``). Inputs (what reads the residual stream, before its
LayerNorm): each head's ``q``, ``k``, ``v`` input (``hook_q_input`` ... with
``use_split_qkv_input``), each MLP's input (``hook_mlp_in``) and the logits (the residual after
the last block, before ``ln_final``). Source ``s`` is upstream of an input of layer ``l`` when
it is ``embed``, a head or MLP of a layer ``< l``, or (MLP inputs of sequential blocks only) a
head of layer ``l``; every source is upstream of the logits. docs/scores.md, "Edge attribution".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from transformer_lens import HookedTransformer

from circuits._checks import unpadded
from circuits._residual import check_model as _check_layers
from circuits._residual import check_tokens as _check_token_ids

EDGE_COLUMNS = ["source", "target", "input"]


@dataclass(frozen=True)
class Graph:
    """Sources and inputs of one model, and which source is upstream of which input.

    ``inputs[i] = (target, input, layer, head)``: head ``-1`` for MLP and logit inputs, layer
    ``n_layers`` for the logits. ``upstream``: bool (n_sources, n_inputs).
    """

    sources: list[str]
    inputs: list[tuple[str, str, int, int]]
    upstream: np.ndarray
    n_layers: int
    n_heads: int
    has_mlp: bool
    parallel: bool

    def edges(self) -> pd.DataFrame:
        """One row per edge (source, target, input), ordered by input, then source (forward order)."""
        s_idx, i_idx = self.edge_index()
        return pd.DataFrame({"source": [self.sources[s] for s in s_idx],
                             "target": [self.inputs[i][0] for i in i_idx],
                             "input": [self.inputs[i][1] for i in i_idx]})

    def edge_index(self) -> tuple[np.ndarray, np.ndarray]:
        """(source index, input index) of every edge, in the order of :meth:`edges`."""
        i_idx, s_idx = np.nonzero(self.upstream.T)
        return s_idx, i_idx

    def sources_of_layer(self, layer: int) -> tuple[int, int]:
        """Source indices [start, stop) of the heads of ``layer``; the MLP (if any) is at ``stop``."""
        start = 1 + layer * (self.n_heads + self.has_mlp)
        return start, start + self.n_heads


def build_graph(model: HookedTransformer) -> Graph:
    cfg = model.cfg
    n_layers, n_heads = int(cfg.n_layers), int(cfg.n_heads)
    has_mlp, parallel = not cfg.attn_only, bool(cfg.parallel_attn_mlp)
    sources = ["embed"]
    stage = [-1.0]  # a source is upstream of an input of a later stage
    for layer in range(n_layers):
        sources += [f"L{layer}H{h}" for h in range(n_heads)]
        stage += [layer] * n_heads
        if has_mlp:
            sources.append(f"mlp{layer}")
            stage.append(layer + 0.5)
    inputs: list[tuple[str, str, int, int]] = []
    reads: list[float] = []  # the stage an input reads: sources of an earlier stage are upstream
    for layer in range(n_layers):
        for h in range(n_heads):
            for kind in "qkv":
                inputs.append((f"L{layer}H{h}", kind, layer, h))
                reads.append(layer)
        if has_mlp:
            inputs.append((f"mlp{layer}", "", layer, -1))
            reads.append(layer if parallel else layer + 0.25)
    inputs.append(("logits", "", n_layers, -1))
    reads.append(n_layers)
    upstream = np.asarray(stage)[:, None] < np.asarray(reads)[None, :]
    return Graph(sources, inputs, upstream, n_layers, n_heads, has_mlp, parallel)


def check_edge_model(model: object) -> HookedTransformer:
    """A ``HookedTransformer`` whose residual stream splits into the graph's sources (else one line)."""
    model = _check_layers(model)
    cfg = model.cfg
    grouped = cfg.n_key_value_heads is not None and int(cfg.n_key_value_heads) != int(cfg.n_heads) \
        and not cfg.ungroup_grouped_query_attention
    reasons = {
        "grouped-query attention (keys and values shared between heads)": grouped,
        "shortformer positional embeddings (added inside attention)": cfg.positional_embedding_type == "shortformer",
        "4-bit weights": bool(getattr(cfg, "load_in_4bit", False)),
        "a LayerNorm after attention or MLP outputs": bool(cfg.use_normalization_before_and_after)
        or "Olmo2" in str(cfg.original_architecture) or "Olmo3" in str(cfg.original_architecture),
    }
    bad = [why for why, present in reasons.items() if present]
    if bad:
        raise ValueError(f"edge attribution does not support models with {bad[0]}")
    skipped = [name for name, point in model.hook_dict.items() if cfg.use_attn_in  # else they never run anyway
               and name.endswith("hook_attn_in") and (point._forward_hooks or point._forward_pre_hooks)]
    if skipped:
        raise ValueError(f"edge attribution reads each head's q, k and v input apart (use_split_qkv_input), so the "
                         f"hooks on {', '.join(skipped[:3])} would not run: put them on hook_q_input, hook_k_input "
                         "and hook_v_input")
    return model


def check_pair(model: HookedTransformer, clean: object, corrupted: object) -> tuple[torch.Tensor, torch.Tensor]:
    clean = _check_token_ids(model, clean, "clean_tokens")
    corrupted = _check_token_ids(model, corrupted, "corrupted_tokens")
    if clean.shape != corrupted.shape:
        raise ValueError(f"corrupted_tokens must have the shape of clean_tokens {tuple(clean.shape)}, got "
                         f"{tuple(corrupted.shape)}")
    return clean, corrupted


def metric_value(metric: Callable[[torch.Tensor], torch.Tensor], logits: torch.Tensor, run: str) -> torch.Tensor:
    """``metric(logits)`` of ``run`` (named in the errors), checked to be a finite 0-dim floating tensor."""
    if not callable(metric):
        raise TypeError(f"metric must be a function of the logits returning a 0-dim tensor, got {metric!r:.60}")
    value = metric(logits)
    if not isinstance(value, torch.Tensor) or value.ndim != 0 or not value.is_floating_point():
        got = (type(value).__name__ if not isinstance(value, torch.Tensor)
               else f"shape {tuple(value.shape)}" if value.ndim else f"dtype {value.dtype}")
        raise ValueError(f"metric(logits) must return a 0-dim floating torch.Tensor, got {got}")
    number = float(value.detach())
    if not math.isfinite(number):
        raise ValueError(f"metric(logits) is {number} on the {run}: every score would be undefined")
    return value


def metric_number(metric: Callable[[torch.Tensor], torch.Tensor], logits: torch.Tensor, run: str) -> float:
    """:func:`metric_value` as a float (detached: a metric made with gradient gives no warning)."""
    return float(metric_value(metric, logits, run).detach())


def copies_metric(metric: Callable, logits: torch.Tensor, n_copies: int) -> list[float]:
    """The metric of each of ``n_copies`` equal-sized blocks of a batch of logits (patched runs),
    checked as :func:`metric_value` checks it."""
    return [metric_number(metric, chunk, "patched run") for chunk in logits.chunk(n_copies)]


@contextmanager
def split_inputs(model: HookedTransformer, qkv: bool = True) -> Iterator[None]:
    """Expose each MLP's input and (with ``qkv``) each head's q/k/v input as hook points, for the
    ``with`` block; the model's flags are restored after it."""
    cfg = model.cfg
    old = (cfg.use_split_qkv_input, cfg.use_hook_mlp_in, cfg.use_attn_in)
    try:
        cfg.use_split_qkv_input, cfg.use_attn_in = qkv, False
        cfg.use_hook_mlp_in = not cfg.attn_only
        yield
    finally:
        cfg.use_split_qkv_input, cfg.use_hook_mlp_in, cfg.use_attn_in = old


@contextmanager
def first_hooks(model: HookedTransformer, hooks: list[tuple[str, Callable]]) -> Iterator[None]:
    """Forward hooks that run before any other at their hook point for the ``with`` block (one per
    point): an input patched or read there is the one the caller's own hooks then transform, as a
    patch of the edge would change it. Removed on exit, the caller's hooks kept."""
    model.context_level += 1
    try:
        for name, hook in hooks:
            model.mod_dict[name].add_hook(hook, dir="fwd", level=model.context_level, prepend=True)
        yield
    finally:
        model.reset_hooks(clear_contexts=False, including_permanent=False, level=model.context_level)
        model.context_level -= 1


def input_hook_names(graph: Graph) -> list[tuple[str, int]]:
    """(hook name, layer) of every input hook: q, k, v per layer, the MLP inputs, then the logits'."""
    names = []
    for layer in range(graph.n_layers):
        names += [(f"blocks.{layer}.hook_{kind}_input", layer) for kind in "qkv"]
        if graph.has_mlp:
            names.append((f"blocks.{layer}.hook_mlp_in", layer))
    names.append((f"blocks.{graph.n_layers - 1}.hook_resid_post", graph.n_layers))
    return names


def input_slots(graph: Graph) -> dict[str, list[tuple[int, int]]]:
    """Per input hook name: (input index, head or -1) of the graph inputs it holds."""
    slots: dict[str, list[tuple[int, int]]] = {}
    for i, (_target, kind, layer, head) in enumerate(graph.inputs):
        if layer == graph.n_layers:
            name = f"blocks.{layer - 1}.hook_resid_post"
        elif kind:
            name = f"blocks.{layer}.hook_{kind}_input"
        else:
            name = f"blocks.{layer}.hook_mlp_in"
        slots.setdefault(name, []).append((i, head))
    return slots


def source_hooks(model: HookedTransformer, graph: Graph, store: Callable[[int, torch.Tensor], None],
                 embed: Callable[[torch.Tensor], torch.Tensor | None] | None = None) -> list[tuple[str, Callable]]:
    """Forward hooks calling ``store(source index, output (batch, pos, d_model))`` for every source.

    ``embed(resid)`` may replace the embedding output (its return value) before it is stored.
    """
    hooks: list[tuple[str, Callable]] = []

    def on_embed(resid: torch.Tensor, hook: object) -> torch.Tensor | None:
        new = embed(resid) if embed is not None else None
        store(0, resid if new is None else new)
        return new

    hooks.append(("blocks.0.hook_resid_pre", on_embed))
    for layer in range(graph.n_layers):
        start, stop = graph.sources_of_layer(layer)
        w_o = model.blocks[layer].attn.W_O  # (n_heads, d_head, d_model)

        def on_z(z: torch.Tensor, hook: object, start: int = start, w_o: torch.Tensor = w_o) -> None:
            with torch.no_grad():  # outputs are read, never differentiated
                out = torch.einsum("bphe,hed->hbpd", z.detach(), w_o.detach())
            for h in range(out.shape[0]):
                store(start + h, out[h])

        hooks.append((f"blocks.{layer}.attn.hook_z", on_z))
        if graph.has_mlp:
            hooks.append((f"blocks.{layer}.hook_mlp_out",
                          lambda out, hook, i=stop: store(i, out.detach())))
    return hooks


def run_sources(model: HookedTransformer, graph: Graph, tokens: torch.Tensor, logits: bool = True
                ) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(logits, or None without ``logits``; source outputs (n_sources, batch, pos, d_model)) of one
    forward, no gradient; the tokens read as given (:func:`circuits._checks.unpadded`), as by every
    token-input run of edge attribution.
    """
    outs: list[torch.Tensor | None] = [None] * len(graph.sources)

    def store(i: int, out: torch.Tensor) -> None:
        outs[i] = out.detach()

    with torch.no_grad():
        out = model.run_with_hooks(tokens, fwd_hooks=source_hooks(model, graph, store),
                                   attention_mask=unpadded(tokens), return_type="logits" if logits else None)
    return out, torch.stack(outs)  # type: ignore[arg-type]
