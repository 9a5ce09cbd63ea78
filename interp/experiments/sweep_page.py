"""The page of a training sweep (``interp sweep``, ``interp report DIR``): grokking against capacity.

Two figures from ``DIR/runs.csv`` (:mod:`interp.sweep`), built with the report's page and figure
helpers (:func:`interp.report.html_page`, :func:`interp.report.figure_html`), then the table:

- steps (epochs, for full-batch modadd) to 99 % test accuracy against the training labels' bits
  over the model's capacity, cells that never got there drawn at their run's length;
- peak memorised bits against capacity, with the line where they are equal.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from interp.base.page import ReportFigure
from interp.base.files import atomic_write_text
from interp.base.page import figure_html, html_page
from interp.analysis.split_memorization import CAPACITY_SOURCES

__all__ = ["build_sweep_page", "plot_grokking_against_bits", "plot_peak_memorized", "write_sweep_report"]


def _ok(table: pd.DataFrame) -> pd.DataFrame:
    ok = table[table["error"].fillna("") == ""].copy()
    ok["ratio"] = ok["dataset_bits"] / ok["capacity_bits"]
    ok["grokked"] = ok["test99_step"].notna()
    return ok


def plot_grokking_against_bits(table: pd.DataFrame) -> go.Figure:
    """Steps to 99 % test (and train) accuracy against dataset bits / capacity bits, one point per cell."""
    ok = _ok(table).dropna(subset=["ratio"])
    fig = go.Figure()
    grokked, not_grokked = ok[ok["grokked"]], ok[~ok["grokked"]]
    fig.add_scatter(x=ok["ratio"], y=ok["train99_step"], mode="markers", name="train accuracy 99 %",
                    text=ok["cell"], marker={"color": "#aaa", "size": 7, "symbol": "diamond"})
    fig.add_scatter(x=grokked["ratio"], y=grokked["test99_step"], mode="markers", name="test accuracy 99 % (grokked)",
                    text=grokked["cell"], marker={"color": "#1f77b4", "size": 10})
    fig.add_scatter(x=not_grokked["ratio"], y=not_grokked["steps"], mode="markers",
                    name="not grokked (drawn at the run's length)", text=not_grokked["cell"],
                    marker={"color": "#d62728", "size": 10, "symbol": "x-open"})
    fig.add_vline(x=1.0, line_dash="dash", line_color="#555", annotation_text="dataset bits = capacity")
    fig.update_traces(hovertemplate="%{text}<br>bits / capacity %{x:.3g}<br>step %{y}<extra></extra>")
    fig.update_layout(title="Steps to grokking against the training set's bits over capacity",
                      xaxis_title="dataset bits / capacity bits", yaxis_title="step (epoch) reached",
                      xaxis_type="log", template="plotly_white", height=480)
    return fig


def plot_peak_memorized(table: pd.DataFrame) -> go.Figure:
    """Peak memorised bits against capacity bits, one point per cell, with the line y = x."""
    ok = _ok(table).dropna(subset=["peak_memorized_bits", "capacity_bits"])
    fig = go.Figure()
    for grokked, name, colour in ((True, "grokked", "#1f77b4"), (False, "not grokked", "#d62728")):
        part = ok[ok["grokked"] == grokked]
        fig.add_scatter(x=part["capacity_bits"], y=part["peak_memorized_bits"], mode="markers", name=name,
                        text=part["cell"], customdata=part["dataset_bits"], marker={"color": colour, "size": 10},
                        hovertemplate="%{text}<br>capacity %{x:.3s} bits<br>peak memorised %{y:.3s} bits"
                                      "<br>dataset %{customdata:.3s} bits<extra></extra>")
    if len(ok):
        xs = np.array([ok["capacity_bits"].min() / 1.5, ok["capacity_bits"].max() * 1.5])
        fig.add_scatter(x=xs, y=xs, mode="lines", name="memorised = capacity", line={"dash": "dash", "color": "#555"})
    fig.update_layout(title="Peak memorised bits against capacity", xaxis_title="capacity bits",
                      yaxis_title="peak memorised bits", xaxis_type="log", yaxis_type="log",
                      template="plotly_white", height=480)
    return fig


def _capacity_source(table: pd.DataFrame) -> str:
    figures = sorted(set(table["bits_per_parameter"].dropna()))
    named = [f"{bpp:g} bits per parameter ({CAPACITY_SOURCES.get(bpp, 'given with --bits-per-parameter')})"
             for bpp in figures]
    return " and ".join(named) or "no capacity figure (no cell finished)"


def build_sweep_page(table: pd.DataFrame, title: str = "Training sweep: grokking against capacity") -> str:
    """The sweep page as one HTML string: both figures with captions, the table, the errors."""
    source = _capacity_source(table)
    ok = _ok(table)
    errors = table[table["error"].fillna("") != ""]
    grok_caption = ("Each cell's step of 99 % test accuracy (blue; grey: 99 % train accuracy) against the bits in its "
                    f"training labels over its capacity at {source}. Red crosses did not reach 99 % test accuracy "
                    "within the run. If grokking waited for memorisation to fill capacity, cells right of the dashed "
                    "line would grok and cells left of it would wait longer.")
    peak_caption = ("Each cell's largest memorised bits over training, N_train (min(test loss, ln p) - train loss) / ln 2, "
                    "against its capacity. Points on the dashed line filled their capacity; points below it "
                    "stopped short, held back by the data (at most the dataset's bits) or by training.")
    parts = [
        f"<p>{len(table)} cells, {int(ok['grokked'].sum())} grokked (99 % test accuracy), {len(errors)} failed. "
        f"Capacity: {html.escape(source)}; memorised bits as in Morris et al. 2025 (arXiv 2505.24832).</p>",
        figure_html(ReportFigure("steps to grokking", plot_grokking_against_bits(table), grok_caption),
                    "grokking", first=True),
        figure_html(ReportFigure("peak memorised bits", plot_peak_memorized(table), peak_caption),
                    "memorised", first=False),
        "<h2>Every cell</h2>",
        table.drop(columns=["error"]).to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}"),
    ]
    if not errors.empty:
        named = ["cell", "preset", "error"] if table["preset"].nunique() > 1 else ["cell", "error"]  # two recipes, one name
        parts += ["<h2>Errors</h2>", errors[named].to_html(index=False, classes="errors")]
    return html_page(title, "\n".join(parts))


def write_sweep_report(table: pd.DataFrame, path: str | Path) -> Path:
    """Write :func:`build_sweep_page` of a sweep's table (:func:`interp.experiments.sweep.read_sweep`) to ``path``."""
    path = Path(path)
    atomic_write_text(path, build_sweep_page(table))
    return path
