"""Figures of the ``heads`` detector: score curves, layer x head heatmaps, attention patterns.

Each function returns a plotly ``Figure`` and never shows it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

#: The band of the located phase change.
_PHASE_CHANGE_COLOUR = "rgba(255, 127, 14, 0.12)"
#: One colour per head, the same in every panel of a figure (plotly's and D3's 10 + 10 more).
_HEAD_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd",
                 "#e6550d", "#31a354", "#756bb1", "#636363")

# ---------------------------------------------------------------------------------------------
# Head scores over training (batch scoring, interp.scoring)


def plot_head_scores(
    table: pd.DataFrame,
    phase_change: object | None = None,
    metrics: Sequence[str] = ("prefix_matching", "previous_token"),
    title: str = "Head scores over training",
) -> go.Figure:
    """One panel per metric, one line per head (``L<layer>H<head>``) over training steps.

    ``table`` is the long scores table of one run (:func:`interp.score_checkpoints`, detector
    ``heads``); ``phase_change`` an :class:`interp.phase.PhaseChange` drawn as a dashed vertical
    line at its step with the steepest segment shaded, in every panel.
    """
    rows = table[table["layer"].notna() & table["metric"].isin(list(metrics))].dropna(subset=["step", "value"])
    if rows.empty:
        raise ValueError(f"table has no head rows for metrics {', '.join(metrics)}")
    fig = make_subplots(rows=len(metrics), cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=[m.replace("_", " ") for m in metrics])
    heads = sorted({(int(la), int(h)) for la, h in zip(rows["layer"], rows["head"])})
    colour = {head: _HEAD_COLOURS[i % len(_HEAD_COLOURS)] for i, head in enumerate(heads)}
    for r, metric in enumerate(metrics, start=1):
        part = rows[rows["metric"] == metric]
        for (layer, head), curve in part.groupby(["layer", "head"], sort=True):
            curve = curve.sort_values("step")
            name, c = f"L{int(layer)}H{int(head)}", colour[(int(layer), int(head))]
            fig.add_scatter(x=curve["step"].astype(int), y=curve["value"], mode="lines+markers", name=name,
                            legendgroup=name, showlegend=r == 1, line={"color": c}, marker={"size": 4, "color": c},
                            row=r, col=1)
        fig.update_yaxes(title_text="score", row=r, col=1)
    if phase_change is not None:
        for r in range(1, len(metrics) + 1):
            fig.add_vrect(x0=phase_change.start_step, x1=phase_change.end_step, fillcolor=_PHASE_CHANGE_COLOUR,
                          line_width=0, layer="below", row=r, col=1)
            label_args = {"annotation_text": f"phase change ~ step {phase_change.step}",
                          "annotation_position": "top right"} if r == 1 else {}
            fig.add_vline(x=phase_change.step, line_dash="dash", line_color="black", row=r, col=1, **label_args)
    fig.update_xaxes(title_text="step", row=len(metrics), col=1)
    fig.update_layout(title=title, height=300 * len(metrics) + 100)
    return fig


def plot_head_heatmaps(
    table: pd.DataFrame,
    steps: Sequence[tuple[int, str]],
    metrics: Sequence[str] = ("previous_token", "prefix_matching"),
    title: str = "Head scores by layer and head",
) -> go.Figure:
    """One layer x head heatmap per (metric, step): rows are metrics, columns the given steps.

    ``table`` is the long scores table of one run; ``steps`` pairs a scored step with a short
    label for its column titles (``(420, "after")``). Each cell shows its score; the
    colour scale is [0, 1] in every panel. Layer 0 is the top row.
    """
    heads = table[table["layer"].notna() & table["metric"].isin(list(metrics))].dropna(subset=["step", "value"])
    if heads.empty or not steps:
        raise ValueError(f"table has no head rows for metrics {', '.join(metrics)}")
    n_layers, n_heads = int(heads["layer"].max()) + 1, int(heads["head"].max()) + 1
    titles = [f"{m.replace('_', ' ')} at step {step} ({label})" for m in metrics for step, label in steps]
    fig = make_subplots(rows=len(metrics), cols=len(steps), subplot_titles=titles, horizontal_spacing=0.06,
                        vertical_spacing=0.18)
    for r, metric in enumerate(metrics, start=1):
        for c, (step, _) in enumerate(steps, start=1):
            part = heads[(heads["metric"] == metric) & (heads["step"] == step)]
            z = np.full((n_layers, n_heads), np.nan)
            z[part["layer"].astype(int), part["head"].astype(int)] = part["value"].astype(float)
            fig.add_heatmap(z=z, x=[f"H{h}" for h in range(n_heads)], y=[f"L{la}" for la in range(n_layers)],
                            coloraxis="coloraxis", texttemplate="%{z:.2f}", name=f"{metric} step {step}",
                            hovertemplate="%{y}%{x}: %{z:.3f}<extra></extra>", row=r, col=c)
            fig.update_yaxes(autorange="reversed", row=r, col=c)
    fig.update_layout(title=title, coloraxis={"colorscale": "Blues", "cmin": 0, "cmax": 1,
                                              "colorbar": {"title": {"text": "score"}}},
                      height=max(320, 160 + len(metrics) * (60 + 45 * n_layers)))
    return fig


def plot_attention_patterns(
    panels: Sequence[tuple[str, np.ndarray]], half_len: int | None = None,
    title: str = "Attention patterns on a repeated sequence",
) -> go.Figure:
    """Side-by-side heatmaps of attention patterns ``A[query, key]`` (rows sum to 1), colour scale [0, 1].

    ``panels`` pairs a panel title with a square pattern. With ``half_len`` N (the probe
    ``[BOS, r_1..r_N, r_1..r_N]``) dotted lines mark where the second copy begins.
    """
    if not panels:
        raise ValueError("no attention patterns to plot")
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[name for name, _ in panels],
                        horizontal_spacing=0.08)
    for c, (name, pattern) in enumerate(panels, start=1):
        pattern = np.asarray(pattern, dtype=float)
        if pattern.ndim != 2 or pattern.shape[0] != pattern.shape[1]:
            raise ValueError(f"{name}: a pattern must be a square matrix, got shape {pattern.shape}")
        fig.add_heatmap(z=pattern, coloraxis="coloraxis", name=name,
                        hovertemplate="query %{y}, key %{x}: %{z:.2f}<extra></extra>", row=1, col=c)
        fig.update_yaxes(autorange="reversed", title_text="query position" if c == 1 else None,
                         scaleanchor=f"x{c if c > 1 else ''}", constrain="domain", row=1, col=c)
        fig.update_xaxes(title_text="key position", constrain="domain", row=1, col=c)
        if half_len:
            edge = half_len + 0.5
            line = {"color": "#999", "dash": "dot", "width": 1}
            fig.add_vline(x=edge, line=line, row=1, col=c)
            fig.add_hline(y=edge, line=line, row=1, col=c)
    fig.update_layout(title=title, height=520, coloraxis={"colorscale": "Blues", "cmin": 0, "cmax": 1,
                                                          "colorbar": {"title": {"text": "attention"}}})
    return fig
