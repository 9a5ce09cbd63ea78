"""One run's curves over training: a detector's model-level metrics (one row per step), and the
name their figures give the run."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

__all__ = ["metric_curves", "run_title"]

#: ``rows.attrs`` key of the name the report gives a section (:func:`interp.report.build_report`).
NAME = "section_name"


def run_title(rows: pd.DataFrame) -> str:
    """The run's name in a plotly figure title: the report section's (``rows.attrs[NAME]``: a loose
    checkpoint's file name), else the run folder's; escaped for plotly, which reads ``&lt;``,
    ``&gt;`` and ``&amp;`` but shows ``&quot;`` as it is."""
    name = rows.attrs.get(NAME) or Path(str(rows["run"].iloc[0])).name
    return html.escape(str(name), quote=False)


def metric_curves(rows: pd.DataFrame, detector: str, metrics: Sequence[str]) -> pd.DataFrame:
    """``step`` and one column per metric of ``metrics`` written by ``detector`` (first value per
    step); empty with those columns when there is none. ``rows``: one run's long-table rows."""
    rows = rows[(rows["detector"] == detector) & rows["metric"].isin(metrics)].dropna(subset=["step", "value"])
    if rows.empty:
        return pd.DataFrame(columns=["step", *metrics])
    wide = rows.pivot_table(index="step", columns="metric", values="value", aggfunc="first").reset_index()
    wide.columns.name = None
    return wide.astype({"step": "int64"}).sort_values("step", ignore_index=True)
