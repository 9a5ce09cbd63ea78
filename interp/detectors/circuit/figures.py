"""Figures of the ``circuit`` detector: the circuit as a graph, faithfulness against circuit size,
the circuit over training. Each function returns a plotly ``Figure`` and never shows it."""

from __future__ import annotations

import re
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = ["plot_circuit_graph", "plot_circuit_over_training", "plot_faithfulness_curve"]

#: Colour and dash of an edge by the input it enters: a head's query, key or value; an MLP or the logits.
INPUT_STYLE = {"q": ("#1f77b4", "dot", "query (q)"), "k": ("#ff7f0e", "dash", "key (k)"),
               "v": ("#2ca02c", "solid", "value (v)"), "": ("#7f7f7f", "solid", "MLP or logits input")}
#: Where on the target node each kind of edge arrives (a vertical offset, in node spacings).
_SLOT = {"q": 0.18, "k": 0.0, "v": -0.18, "": 0.0}
_PHASE_CHANGE_COLOUR = "rgba(255, 127, 14, 0.12)"
_HEAD = re.compile(r"L(\d+)H(\d+)$")
_MLP = re.compile(r"mlp(\d+)$")


def _column(node: str, n_layers: int) -> tuple[int, float]:
    """(column, order within the column) of a node: embed in column 0, layer l in l + 1, logits last."""
    if node == "embed":
        return 0, 0.0
    if node == "logits":
        return n_layers + 1, 0.0
    head = _HEAD.match(node)
    if head:
        return int(head.group(1)) + 1, float(head.group(2))
    mlp = _MLP.match(node)
    if mlp:
        return int(mlp.group(1)) + 1, 1e6  # below the heads
    raise ValueError(f"unknown node name {node!r} (expected embed, L<l>H<h>, mlp<l> or logits)")


def plot_circuit_graph(edges: pd.DataFrame, n_layers: int | None = None, n_heads: int | None = None,
                       title: str = "The circuit") -> go.Figure:
    """The circuit drawn as a graph: layers as columns, one line per edge, width by ``|score|``.

    ``edges``: columns source, target, input, score (:func:`circuits.smallest_circuit`'s
    ``edges``, or a ``top_edges`` frame); nodes are named as :func:`circuits.edge_attribution`
    names them. Columns: ``embed``, then each layer's heads (and MLP, below them), then ``logits``.
    An edge's colour and dash say which input it enters (query, key, value; grey for an MLP's or
    the logits' input), and it arrives at the target's upper (q), middle (k) or lower (v) side.
    Hover shows the score. With ``n_layers`` and ``n_heads`` every head of the model is drawn, the
    ones outside the circuit faded.
    """
    missing = {"source", "target", "input", "score"} - set(getattr(edges, "columns", ()))
    if missing:
        raise ValueError(f"edges must have columns source, target, input, score; missing {sorted(missing)}")
    nodes = list(dict.fromkeys([*edges["source"], *edges["target"]]))
    layers = [int(m.group(1)) for n in nodes for m in [_HEAD.match(n) or _MLP.match(n)] if m]
    n_layers = max(n_layers or 0, max(layers, default=-1) + 1)
    extra = [f"L{la}H{h}" for la in range(n_layers) for h in range(n_heads or 0) if f"L{la}H{h}" not in nodes]
    placed = {n: _column(n, n_layers) for n in [*nodes, *extra]}
    position = {}
    for column in sorted({c for c, _ in placed.values()}):
        members = sorted((order, n) for n, (c, order) in placed.items() if c == column)
        for rank, (_, n) in enumerate(members):
            position[n] = (column, -(rank - (len(members) - 1) / 2))
    fig = go.Figure()
    largest = float(edges["score"].abs().max()) if len(edges) else 1.0
    shown = set()
    for source, target, kind, value in edges[["source", "target", "input", "score"]].itertuples(index=False,
                                                                                                name=None):
        kind = "" if kind is None or (isinstance(kind, float) and np.isnan(kind)) else str(kind)
        colour, dash, label = INPUT_STYLE.get(kind, INPUT_STYLE[""])
        (x0, y0), (x1, y1) = position[source], position[target]
        y1 += _SLOT.get(kind, 0.0)
        width = 1.0 + 9.0 * abs(float(value)) / (largest or 1.0)
        name = f"{source} -> {target}{'.' + kind if kind else ''}"
        fig.add_scatter(x=[x0, (x0 + x1) / 2, x1], y=[y0, (y0 + y1) / 2, y1], mode="lines",
                        line={"color": colour, "dash": dash, "width": width}, name=label, legendgroup=label,
                        showlegend=label not in shown, hoverinfo="text",
                        hovertext=f"{name}: score {float(value):+.3f}")
        shown.add(label)
    names = list(position)
    in_circuit = [n in nodes for n in names]
    fig.add_scatter(x=[position[n][0] for n in names], y=[position[n][1] for n in names], mode="markers+text",
                    text=names, textposition="top center", name="nodes", showlegend=False, hoverinfo="text",
                    marker={"size": 18, "color": ["#333" if c else "#ddd" for c in in_circuit],
                            "line": {"color": "white", "width": 1}})
    ticks = ["embed", *(f"layer {la}" for la in range(n_layers)), "logits"]
    fig.update_xaxes(tickvals=list(range(n_layers + 2)), ticktext=ticks, showgrid=False, zeroline=False)
    ys = [y for _, y in position.values()]
    fig.update_yaxes(visible=False, range=[min(ys) - 0.6, max(ys) + 0.6])
    fig.update_layout(title=title, height=max(360, 120 + 70 * max(sum(1 for c, _ in placed.values() if c == col)
                                                                    for col in range(n_layers + 2))),
                      plot_bgcolor="white", legend={"title": {"text": "edge into"}})
    return fig


def plot_faithfulness_curve(curve: pd.DataFrame, size: int | None = None, target: float | None = 0.9,
                            title: str = "Faithfulness against circuit size") -> go.Figure:
    """Faithfulness of the top-k circuit against k (``curve``: columns size, faithfulness, as
    :func:`circuits.faithfulness_curve` returns); a dotted line at ``target`` and a marker at the
    chosen ``size`` (``FoundCircuit.k``: the circuit is those top edges, pruned)."""
    if not {"size", "faithfulness"} <= set(getattr(curve, "columns", ())):
        raise ValueError("curve must have columns size and faithfulness")
    fig = go.Figure()
    fig.add_scatter(x=curve["size"], y=curve["faithfulness"], mode="lines+markers", name="top-k circuit",
                    marker={"size": 4})
    if target is not None:
        fig.add_hline(y=target, line={"dash": "dot", "color": "#999"}, annotation_text=f"target {target:g}",
                      annotation_position="bottom right")
    if size is not None:
        chosen = curve[curve["size"] == size]
        if not chosen.empty:
            fig.add_scatter(x=[size], y=[float(chosen["faithfulness"].iloc[0])], mode="markers",
                            marker={"size": 12, "symbol": "star", "color": "#d62728"},
                            name=f"the circuit: the top {size} edges")
    fig.update_xaxes(title_text="circuit size (edges, by decreasing |score|)")
    fig.update_yaxes(title_text="faithfulness")
    fig.update_layout(title=title, height=420)
    return fig


def plot_circuit_over_training(curves: pd.DataFrame, edges: pd.DataFrame, phase_change: object | None = None,
                               top: int | None = None, title: str = "The circuit over training") -> go.Figure:
    """Two panels against step: the circuit's faithfulness (and the clean, corrupted and circuit
    losses when given), and each circuit edge's score (one line per edge, coloured by its input, the
    ``top`` largest at the last step when given).

    ``curves``: ``step``, ``faithfulness`` (and optionally ``clean_loss``, ``corrupted_loss``,
    ``circuit_loss``);
    ``edges``: ``step, source, target, input, score`` (:func:`interp.circuit_rows` returns both);
    ``phase_change``: what :func:`interp.locate_phase_change` returns, drawn as a dashed line and a shaded band.
    """
    if curves.empty or "faithfulness" not in curves:
        raise ValueError("curves must have faithfulness rows")
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1,
                        subplot_titles=["faithfulness of the final circuit", "circuit edge scores (eap-ig)"],
                        specs=[[{"secondary_y": True}], [{}]])
    fig.add_scatter(x=curves["step"], y=curves["faithfulness"], mode="lines+markers", name="faithfulness",
                    line={"color": "#d62728"}, row=1, col=1)
    for column, colour, dash in (("clean_loss", "#1f77b4", "dot"), ("corrupted_loss", "#7f7f7f", "dot"),
                                 ("circuit_loss", "#ff7f0e", "dash")):
        if column in curves and curves[column].notna().any():
            fig.add_scatter(x=curves["step"], y=curves[column], mode="lines", name=column.replace("_", " "),
                            line={"color": colour, "dash": dash}, row=1, col=1, secondary_y=True)
    last = edges[edges["step"] == edges["step"].max()] if len(edges) else edges
    keep = last.reindex(last["score"].abs().sort_values(ascending=False).index)
    keep = keep.head(top) if top else keep
    shown = set()
    for source, target, kind in keep[["source", "target", "input"]].itertuples(index=False, name=None):
        curve = edges[(edges["source"] == source) & (edges["target"] == target) & (edges["input"] == kind)]
        colour, dash, label = INPUT_STYLE.get(kind, INPUT_STYLE[""])
        fig.add_scatter(x=curve["step"], y=curve["score"], mode="lines", line={"color": colour, "width": 1.5},
                        name=label, legendgroup=label, showlegend=label not in shown, row=2, col=1,
                        hovertext=f"{source} -> {target}{'.' + kind if kind else ''}", hoverinfo="text+y")
        shown.add(label)
    if phase_change is not None:
        for r in (1, 2):
            fig.add_vrect(x0=phase_change.start_step, x1=phase_change.end_step, fillcolor=_PHASE_CHANGE_COLOUR,
                          line_width=0, layer="below", row=r, col=1)
            extra = {"annotation_text": f"phase change ~ step {phase_change.step}",
                     "annotation_position": "top left"} if r == 1 else {}
            fig.add_vline(x=phase_change.step, line_dash="dash", line_color="black", row=r, col=1, **extra)
    fig.update_yaxes(title_text="faithfulness", row=1, col=1)
    fig.update_yaxes(title_text="loss (nats)", row=1, col=1, secondary_y=True, showgrid=False)
    fig.update_yaxes(title_text="score (loss change)", row=2, col=1)
    fig.update_xaxes(title_text="step", row=2, col=1)
    fig.update_layout(title=title, height=720)
    return fig

