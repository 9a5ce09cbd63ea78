"""Plot builders of the text detector: in-context learning beside the heads, loss by token index.

Each function returns a plotly ``Figure`` and never shows it (as ``interp.plots``).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

__all__ = ["plot_icl_curves", "plot_token_losses"]

_BAND = "rgba(255, 127, 14, 0.12)"


def _mark(fig: go.Figure, change, row: int, label: str) -> None:
    if change is None:
        return
    fig.add_vrect(x0=change.start_step, x1=change.end_step, fillcolor=_BAND, line_width=0, layer="below", row=row,
                  col=1)
    fig.add_vline(x=change.step, line_dash="dash", line_color="black", row=row, col=1,
                  annotation_text=f"{label} ~ step {change.step}", annotation_position="top right")


def plot_icl_curves(
    curve: pd.DataFrame,
    heads: pd.DataFrame | None = None,
    head_change=None,
    icl_change=None,
    title: str = "In-context learning and induction heads over training",
) -> go.Figure:
    """Three panels over training steps: best prefix matching, in-context learning score, losses.

    ``curve``: ``step, icl_score, loss_early, loss_late, test_loss`` (``interp.detectors.text.icl_curve``);
    ``heads``: ``step, score`` of the best prefix-matching head (:func:`interp.phase.best_head_curve`),
    or None; ``head_change`` and ``icl_change``: :class:`interp.phase.PhaseChange` results drawn as
    dashed lines with their segment shaded.
    """
    if curve.empty:
        raise ValueError("no in-context learning scores to plot")
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.07,
                        subplot_titles=("best prefix-matching score (heads)", "in-context learning score (nats)",
                                        "held-out loss (nats)"))
    if heads is not None and not heads.empty:
        fig.add_scatter(x=heads["step"], y=heads["score"], mode="lines+markers", name="best prefix matching",
                        marker={"size": 4}, row=1, col=1)
    fig.add_scatter(x=curve["step"], y=curve["icl_score"], mode="lines+markers", name="in-context learning score",
                    marker={"size": 4}, row=2, col=1)
    for col, name in (("test_loss", "all tokens"), ("loss_early", "token 50"), ("loss_late", "token 500")):
        if col in curve:
            fig.add_scatter(x=curve["step"], y=curve[col], mode="lines", name=name, row=3, col=1)
    _mark(fig, head_change, 1, "heads")
    _mark(fig, icl_change, 2, "in-context learning")
    fig.update_yaxes(title_text="score", range=[0, 1], row=1, col=1)
    fig.update_xaxes(title_text="step", row=3, col=1)
    fig.update_layout(title=title, height=800)
    return fig


def plot_token_losses(
    clean: torch.Tensor, ablated: torch.Tensor | None = None, marks: Sequence[int] = (50, 500),
    title: str = "Held-out loss by token index",
) -> go.Figure:
    """Mean loss of the token at each index (``circuits.per_token_loss`` layout), clean and ablated.

    Dotted vertical lines mark the token indices in ``marks`` (the in-context learning score's).
    """
    index = list(range(1, clean.shape[1] + 1))
    fig = go.Figure()
    fig.add_scatter(x=index, y=clean.double().mean(0).tolist(), mode="lines", name="clean")
    if ablated is not None:
        fig.add_scatter(x=index, y=ablated.double().mean(0).tolist(), mode="lines", name="induction heads ablated")
    for t in marks:
        fig.add_vline(x=t, line_dash="dot", line_color="#999", annotation_text=f"token {t}",
                      annotation_position="top")
    fig.update_xaxes(title_text="token index in the context", type="log")
    fig.update_yaxes(title_text="mean loss (nats)")
    fig.update_layout(title=title, height=450)
    return fig
