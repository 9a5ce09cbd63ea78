"""Figures and the HTML page of a memorisation-capacity sweep (``interp memorization``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from interp.base.page import ReportFigure
from interp.base.files import atomic_write_text
from interp.experiments.capacity import SETTING, capacity_table, fit_bits_per_parameter
from interp.base.page import figure_html, html_page
from interp.analysis.split_memorization import PAPER_BITS_PER_PARAMETER

__all__ = ["plot_capacity_fit", "plot_memorized_bits", "write_memorization_report"]

#: Morris et al. 2025's estimate for GPT-style models (bits per parameter), drawn for reference.
PUBLISHED_BITS_PER_PARAMETER = PAPER_BITS_PER_PARAMETER
_BITS_CAPTION = ("Total bits each model memorised against the number of random sequences it was trained on. The "
                 "dotted grey line is the data's entropy (sequences x length x log2 vocabulary); the dash-dotted "
                 "one, below it, the most any causal model can memorise of it (its reachable bits: a model sees "
                 "only each sequence's prefix, docs/scores.md). A model's curve follows the reachable line while "
                 "the data fit, then flattens at its capacity (dashed).")
_FIT_CAPTION = ("Each model's capacity against its parameter count. The slope of the fitted line is the capacity in "
                f"bits per parameter, to compare with Morris et al.'s {PUBLISHED_BITS_PER_PARAMETER}.")


def plot_memorized_bits(cells: pd.DataFrame) -> go.Figure:
    """Total memorised bits against data-set size, one line per model, its plateau dashed.

    The grey dotted line is the data set's entropy, the dash-dotted one its reachable bits (the most
    a causal model can memorise), per sequence length and vocabulary.
    """
    ok = cells[cells["stopped_by"] != "error"].sort_values("n_sequences")
    capacity = capacity_table(cells)
    fig = go.Figure()
    sizes = np.sort(ok["n_sequences"].unique())
    per_seq = sorted({float(b) / n for b, n in zip(ok["entropy_bits"], ok["n_sequences"])})
    for bits in per_seq:  # one per sequence length and vocabulary
        fig.add_trace(go.Scatter(x=sizes, y=sizes * bits, mode="lines", line={"color": "#bbb", "dash": "dot"},
                                 name="data entropy" + (f" ({bits:g} bits/sequence)" if len(per_seq) > 1 else "")))
    for (seq_len, vocab), group in ok.groupby(["seq_len", "vocab"]):  # each data set's own, one line per setting
        reach = group.groupby("n_sequences")["reachable_bits"].first()
        fig.add_trace(go.Scatter(x=reach.index, y=reach.to_numpy(), mode="lines",
                                 line={"color": "#888", "dash": "dashdot"},
                                 name="reachable bits" + (f" (length {seq_len}, vocabulary {vocab})"
                                                          if len(per_seq) > 1 else "")))
    keys = [c for c in SETTING if c in capacity]
    for row in capacity.itertuples():
        group = ok[(ok[keys] == pd.Series({c: getattr(row, c) for c in keys})).all(axis=1)]
        trace = go.Scatter(x=group["n_sequences"], y=group["memorized_bits"], mode="lines+markers",
                           name=f"{row.label} ({row.params:,} params)")
        fig.add_trace(trace)
        fig.add_hline(y=row.capacity_bits, line_dash="dash", opacity=0.4,
                      annotation_text=f"{row.label}: {row.bits_per_parameter:.2f} bits/param"
                      + ("" if row.saturated else " (lower bound)"))
    fig.update_layout(title="Memorised bits vs data-set size (Morris et al. 2025)",
                      xaxis_title="sequences in the data set", yaxis_title="total memorised bits",
                      xaxis_type="log", template="plotly_white")
    return fig


def plot_capacity_fit(capacity: pd.DataFrame) -> go.Figure:
    """Capacity against parameter count, with the fitted bits-per-parameter slope and 3.6 for reference."""
    slope = fit_bits_per_parameter(capacity)
    fig = go.Figure()
    for saturated, group in capacity.groupby("saturated"):
        fig.add_trace(go.Scatter(x=group["params"], y=group["capacity_bits"], mode="markers+text",
                                 text=group["label"], textposition="top center",
                                 name="plateau" if saturated else "lower bound (data memorised)",
                                 marker={"size": 10, "symbol": "circle" if saturated else "triangle-up"}))
    if len(capacity):
        xs = np.array([0, capacity["params"].max() * 1.1])
        if np.isfinite(slope):
            fig.add_trace(go.Scatter(x=xs, y=slope * xs, mode="lines", name=f"fit: {slope:.2f} bits/param"))
        fig.add_trace(go.Scatter(x=xs, y=PUBLISHED_BITS_PER_PARAMETER * xs, mode="lines",
                                 name=f"Morris et al.: {PUBLISHED_BITS_PER_PARAMETER} bits/param",
                                 line={"dash": "dot", "color": "#999"}))
    fig.update_layout(title="Capacity vs parameters", xaxis_title="parameters", yaxis_title="capacity (bits)",
                      template="plotly_white")
    return fig


def write_memorization_report(cells: pd.DataFrame, path: str | Path) -> Path:
    """One self-contained HTML page (plotly.js inlined): both figures and both tables."""
    capacity = capacity_table(cells)
    slope = fit_bits_per_parameter(capacity)
    fit_text = (f"Fitted capacity: <b>{slope:.2f} bits per parameter</b> over {int(capacity['saturated'].sum())} "
                "saturated model(s)." if np.isfinite(slope) else
                "No cell finished, so no capacity was measured." if capacity.empty else
                "No model reached a plateau short of its data, so no capacity was measured: add larger data sets.")
    errors = cells[cells["stopped_by"] == "error"]
    parts = [
        "<p>Models trained on uniformly random sequences, where everything learned is memorisation. "
        "mem(x) = S log2 V - min(S log2 V, -log2 p(x | model)); a model's capacity is the plateau of "
        "its total memorised bits as the data set grows (Morris et al. 2025, arXiv 2505.24832, who "
        "measure about 3.6 bits per parameter).</p>",
        f"<p>{fit_text}</p>",
        figure_html(ReportFigure("memorised bits", plot_memorized_bits(cells), _BITS_CAPTION), "bits", first=True),
        figure_html(ReportFigure("capacity", plot_capacity_fit(capacity), _FIT_CAPTION), "capacity", first=False),
        "<h2>Capacity per model</h2>",
        capacity.to_html(index=False, float_format=lambda v: f"{v:.3f}"),
        "<h2>Every cell</h2>",
        cells.drop(columns=["error"]).to_html(index=False, float_format=lambda v: f"{v:.3f}"),
    ]
    if not errors.empty:
        parts += ["<h2>Errors</h2>", errors[["model", "n_sequences", "error"]].to_html(index=False)]
    page = html_page("Memorisation capacity", "\n".join(parts))
    path = Path(path)
    atomic_write_text(path, page)
    return path
