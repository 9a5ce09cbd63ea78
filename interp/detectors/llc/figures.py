"""Figures of the ``llc`` detector: the LLC curve with its spread, the other detectors' phases, the heads.

:func:`plot_llc` draws one run's whole-model LLC over training with a band of one standard
deviation over chains, the change points the other detectors locate on the same checkpoints
(the induction phase change of the ``heads`` rows, the grokking phases of the ``fourier`` rows,
the in-context learning change of the ``text`` rows), and under it the refined LLC of every head
(``llc_head``) coloured by what the ``heads`` detector flags it as at the final checkpoint. The
table helpers take one run's long-table rows. Each function returns a plotly ``Figure`` and never
shows it.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interp.detectors._curves import metric_curves

__all__ = ["FLAG_COLOURS", "grokking_measures", "head_llc_curves", "llc_curve", "plot_llc"]

#: The colour of each head kind in the per-head panel (flags of the ``heads`` detector).
FLAG_COLOURS = {"previous-token head": "#1f77b4", "induction head": "#d62728", "other": "#9a9a9a",
                "not scored by heads": "#bcbd22"}
#: The whole model's LLC curve (black: blue is the previous-token heads' colour).
LLC_COLOUR = "#222222"
#: Fill of the band of one standard deviation over chains around the LLC curve.
BAND_COLOUR = "rgba(60, 60, 60, 0.2)"
_CHANGE_BAND = "rgba(255, 127, 14, 0.12)"
_PHASE_COLOURS = ("rgba(31, 119, 180, 0.10)", "rgba(255, 127, 14, 0.12)", "rgba(44, 160, 44, 0.12)")
_PHASE_NAMES = ("memorisation", "circuit formation", "cleanup")


def llc_curve(rows: pd.DataFrame) -> pd.DataFrame:
    """``step, llc, llc_std`` per scored checkpoint (the ``llc`` model rows of one run), sorted by step."""
    curve = metric_curves(rows, "llc", ("llc", "llc_std"))
    if "llc_std" not in curve:
        curve["llc_std"] = float("nan")
    return curve[["step", "llc", "llc_std"]]


def head_llc_curves(rows: pd.DataFrame) -> pd.DataFrame:
    """``step, layer, head, llc_head, llc_head_std`` of every head row of the ``llc`` detector, by head and step."""
    heads = rows[(rows["detector"] == "llc") & rows["layer"].notna()
                 & rows["metric"].isin(("llc_head", "llc_head_std"))].dropna(subset=["step", "value"])
    if heads.empty:
        return pd.DataFrame(columns=["step", "layer", "head", "llc_head", "llc_head_std"])
    wide = heads.pivot_table(index=["step", "layer", "head"], columns="metric", values="value",
                             aggfunc="first").reset_index()
    wide.columns.name = None
    if "llc_head_std" not in wide:
        wide["llc_head_std"] = float("nan")
    wide = wide.astype({"step": "int64", "layer": "int64", "head": "int64"})
    return wide[["step", "layer", "head", "llc_head", "llc_head_std"]].sort_values(["layer", "head", "step"],
                                                                                  ignore_index=True)


def grokking_measures(rows: pd.DataFrame) -> pd.DataFrame:
    """The ``fourier`` model rows of one run as progress measures (``step`` + one column per metric),
    what :func:`circuits.grokking_phases` takes; empty without them."""
    model = rows[(rows["detector"] == "fourier") & rows["layer"].isna() & (rows["metric"] != "key_frequency")]
    metrics = sorted(set(model["metric"]))
    # reindexed: test_accuracy NaN at every step (no train/test split) is a column, so the phases say why
    return metric_curves(model, "fourier", metrics).reindex(columns=["step", *metrics])


def plot_llc(
    curve: pd.DataFrame,
    heads: pd.DataFrame | None = None,
    flags: dict[tuple[int, int], str] | None = None,
    phase_change: Any = None,
    grokking: Any = None,
    icl_change: Any = None,
    title: str = "Local learning coefficient over training",
) -> go.Figure:
    """The LLC over training with its spread, the located phases, and (when given) the per-head LLC.

    ``curve``: ``step, llc, llc_std`` (:func:`llc_curve`), drawn as a line with a band from
    ``llc - llc_std`` to ``llc + llc_std`` (the spread over chains). ``heads``: ``step, layer,
    head, llc_head`` (:func:`head_llc_curves`), one line per head in a second panel, coloured by
    its kind in ``flags`` (:func:`interp.detectors.heads.flags.head_kinds`; :data:`FLAG_COLOURS`). Marks, in every panel:
    ``phase_change`` and ``icl_change`` (:class:`interp.phase.PhaseChange`: a dashed line at its
    step, its segment shaded) and ``grokking`` (:class:`circuits.GrokkingPhases`: memorisation,
    circuit formation and cleanup shaded from the first step).
    """
    if curve.empty:
        raise ValueError("no LLC estimates to plot")
    curve = curve.sort_values("step")
    with_heads = heads is not None and not heads.empty
    rows = 2 if with_heads else 1
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.1,
                        subplot_titles=("whole model", "per head (refined LLC)")[:rows])
    x, mean, std = curve["step"].tolist(), curve["llc"].astype(float), curve["llc_std"].astype(float).fillna(0.0)
    upper, lower = (mean + std).tolist(), (mean - std).tolist()
    fig.add_scatter(x=x + x[::-1], y=upper + lower[::-1], fill="toself", fillcolor=BAND_COLOUR, mode="lines",
                    line={"width": 0}, hoverinfo="skip", name="± 1 std over chains", row=1, col=1)
    fig.add_scatter(x=x, y=mean.tolist(), mode="lines+markers", name="LLC (mean over chains)",
                    line={"color": LLC_COLOUR}, marker={"size": 5, "color": LLC_COLOUR}, row=1, col=1)
    fig.update_yaxes(title_text="LLC", row=1, col=1)
    if with_heads:
        _head_lines(fig, heads, flags or {})
        fig.update_yaxes(title_text="LLC of the head", row=2, col=1)
    start = float(min(x))
    for r in range(1, rows + 1):
        if grokking is not None:
            _shade_grokking(fig, start, grokking, r, label=r == 1)
        for change, label in ((phase_change, "induction phase change"), (icl_change, "in-context learning change")):
            if change is not None:
                fig.add_vrect(x0=change.start_step, x1=change.end_step, fillcolor=_CHANGE_BAND, line_width=0,
                              layer="below", row=r, col=1)
                text = {"annotation_text": f"{label} ~ step {change.step}", "annotation_position": "top right"}
                fig.add_vline(x=change.step, line_dash="dash", line_color="black", row=r, col=1,
                              **(text if r == 1 else {}))
    fig.update_xaxes(title_text="step", row=rows, col=1)
    fig.update_layout(title=title, height=380 * rows + 80)
    return fig


def _head_lines(fig: go.Figure, heads: pd.DataFrame, flags: dict[tuple[int, int], str]) -> None:
    for (layer, head), part in heads.groupby(["layer", "head"], sort=True):
        kind = flags.get((int(layer), int(head)), "not scored by heads" if flags else "other")
        colour = FLAG_COLOURS[kind]
        part = part.sort_values("step")
        fig.add_scatter(x=part["step"].tolist(), y=part["llc_head"].astype(float).tolist(), mode="lines+markers",
                        name=f"L{int(layer)}H{int(head)} ({kind})", legendgroup=kind, showlegend=True,
                        line={"color": colour, "width": 2 if kind != "other" else 1},
                        marker={"size": 6, "color": colour}, row=2, col=1)


def _shade_grokking(fig: go.Figure, start: float, phases: Any, row: int, label: bool) -> None:
    bounds = (phases.memorization_end, phases.circuit_formation_end, phases.cleanup_end)
    for i, (end, name, colour) in enumerate(zip(bounds, _PHASE_NAMES, _PHASE_COLOURS)):
        if end is None:
            break
        fig.add_vrect(x0=start, x1=end, fillcolor=colour, line_width=0, layer="below", row=row, col=1,
                      **({"annotation_text": name, "annotation_position": "top left",
                          "annotation_yshift": -18 * i} if label else {}))
        start = end
