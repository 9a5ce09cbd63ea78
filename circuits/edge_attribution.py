"""Edge attribution: how much each edge between components carries a behaviour.

Definition (docs/scores.md, "Edge attribution"). Nodes: ``embed``, every head ``L{l}H{h}``, every
MLP ``mlp{l}`` and the ``logits``; an edge runs from a node that writes to the residual stream
into a node input that reads it later: a head's query, key or value input (``input`` = ``q``,
``k``, ``v``), an MLP's input or the logits (``input`` = ``""``), each read before its
LayerNorm (:mod:`circuits._edge_graph`). Patching an edge gives that one input the source's
contribution from the corrupted run. With a metric ``m(logits)`` the score of an edge is the
change of the metric when the edge alone is patched:

    score(s -> i) = m(clean run, edge s -> i patched) - m(clean run)

- ``exact``: that difference, one patched forward per edge (the ground truth).
- ``eap`` (Syed et al. 2023, "Attribution patching outperforms automated circuit discovery"):
  the first-order estimate ``sum_{batch, pos} (out_s(corrupted) - out_s(clean)) . dm/dx_i`` with
  the gradient at the clean run; one forward with gradient, its backward and one corrupted forward.
- ``eap-ig`` (Hanna et al. 2024, "Have faith in faithfulness", the variant that integrates over
  the *inputs*): the gradient is averaged over ``ig_steps`` runs whose embedding output is
  ``e' + k/n (e - e')`` for ``k = 1..n`` (``e`` clean, ``e'`` corrupted; ``k = n`` is the clean
  run, so one step equals ``eap``), a Riemann sum of the integrated gradient along the straight
  path between the corrupted and clean inputs.

A positive score means patching the edge raises the metric (with a loss as metric: the edge
carries the behaviour when its score is large and positive).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from transformer_lens import HookedTransformer

from circuits._checks import positive_int
from circuits._hooks import overflow_checked
from circuits._edge_gradients import hooked_gradients, score_edges
from circuits._edge_graph import Graph, build_graph, check_edge_model, check_pair, metric_number, run_sources
from circuits._edge_patching import exact_scores
from circuits._edge_plain import plain_gradients, plain_sources, plain_supported

__all__ = ["METHODS", "edge_attribution", "edge_attribution_refusal"]

METHODS = ("exact", "eap", "eap-ig")


def edge_attribution_refusal(model: object) -> str | None:
    """None when :func:`edge_attribution` (and :func:`circuits.circuit_faithfulness`) take ``model``,
    else the one line they refuse it with (grouped-query attention, shortformer positions, ...)."""
    try:
        check_edge_model(model)
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None


def edge_attribution(model: HookedTransformer, clean_tokens: torch.Tensor, corrupted_tokens: torch.Tensor,
                     metric: Callable[[torch.Tensor], torch.Tensor], method: str = "eap", *,
                     ig_steps: int = 5) -> pd.DataFrame:
    """Score every edge of ``model``'s graph: a DataFrame with columns source, target, input, score.

    Args:
        model: a ``HookedTransformer`` (attention-only or with MLPs, sequential or parallel
            blocks, LayerNorm, RMSNorm or none). Its hook flags are set for the call and restored.
        clean_tokens, corrupted_tokens: int (batch, pos) of the same shape, ``pos <= n_ctx``.
        metric: ``metric(logits) -> 0-dim tensor`` (logits ``(batch, pos, d_vocab_out)`` of the
            clean batch's shape); differentiable for ``eap`` and ``eap-ig``.
        method: ``"exact"``, ``"eap"`` or ``"eap-ig"`` (module docstring).
        ig_steps: the number of interpolation points of ``eap-ig`` (>= 1).

    One row per edge, ordered by target input (forward order), then source; ``score`` is
    float64 (module docstring for its sign). Raises ``TypeError``/``ValueError`` (one line) for
    mismatched or out-of-range tokens, a metric that does not return a 0-dim tensor or is not
    finite (its gradient too, for ``eap``/``eap-ig``), an unknown method, or a model whose residual
    stream does not split into these sources.

    The model's own hooks run (the hooked forward is taken then): each input is patched or read
    where it enters the graph, before any hook of the caller's at that point. The call sets hook
    flags and hooks on the model for its duration: do not make two calls on one model at once
    (threads); their hooks would mix.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    ig_steps = positive_int("ig_steps", ig_steps)
    if method != "exact" and torch.is_inference_mode_enabled():
        raise ValueError(f"{method} needs gradients, which torch.inference_mode() forbids: call it outside "
                         "that block (or use method='exact')")
    model = check_edge_model(model)
    if method != "exact" and model.W_E.is_inference():  # made under inference_mode (all its weights, then)
        raise ValueError(f"{method} needs gradients, but the model's weights were made under torch.inference_mode(): "
                         "build or load the model outside that block (or use method='exact')")
    clean, corrupted = check_pair(model, clean_tokens, corrupted_tokens)
    graph = build_graph(model)
    frame = graph.edges()
    if method == "exact":
        with overflow_checked(model):  # TransformerLens zeroes an overflowed attention row: finite, wrong scores
            _, corrupted_out = run_sources(model, graph, corrupted, logits=False)
            clean_logits, clean_out = run_sources(model, graph, clean)
        m_clean = metric_number(metric, clean_logits, "clean run")
        deltas = corrupted_out - clean_out
        _check_differences(graph, deltas)
        scores = exact_scores(model, graph, clean, deltas, metric, m_clean)
    else:
        steps = 1 if method == "eap" else ig_steps
        if plain_supported(model):
            try:
                run = plain_gradients(model, graph, clean, plain_sources(model, corrupted), metric, steps)
            except ValueError:  # a NaN metric: its cause may be an attention that overflowed (this path lets it be NaN)
                _refuse_overflow(model, clean, corrupted)
                raise
        else:
            with overflow_checked(model):
                _, corrupted_out = run_sources(model, graph, corrupted, logits=False)
                run = hooked_gradients(model, graph, clean, corrupted_out, metric, steps)
        scores = score_edges(graph, run, steps)
        if not np.isfinite(scores).all():
            _refuse_overflow(model, clean, corrupted)
            _check_differences(graph, run.deltas)
            run_name = "clean run" if steps == 1 else "path from the corrupted to the clean input"
            raise ValueError(f"the gradient of metric(logits) is not finite on the {run_name}, though the metric is: "
                             f"{method} scores would be NaN; use method='exact', or a metric whose gradient is finite")
    frame["score"] = scores.astype(np.float64)
    return frame


def _refuse_overflow(model: HookedTransformer, clean: torch.Tensor, corrupted: torch.Tensor) -> None:
    """One line (:func:`circuits._hooks.overflow_checked`) when the attention of either run overflows."""
    graph = build_graph(model)
    with overflow_checked(model):
        for tokens in (clean, corrupted):
            run_sources(model, graph, tokens, logits=False)


def _check_differences(graph: Graph, deltas: torch.Tensor) -> None:
    """One line naming the sources whose output differs between the runs by NaN or infinity."""
    bad = [graph.sources[i] for i in range(len(graph.sources)) if not bool(torch.isfinite(deltas[i]).all())]
    if bad:
        raise ValueError(f"the outputs of {', '.join(bad[:4])} differ between the runs by NaN or infinity (a run "
                         "overflows): every edge out of them would score NaN")
