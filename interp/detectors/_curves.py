"""One run's model-level metrics of a detector as curves over training (one row per step)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

__all__ = ["metric_curves"]


def metric_curves(rows: pd.DataFrame, detector: str, metrics: Sequence[str]) -> pd.DataFrame:
    """``step`` and one column per metric of ``metrics`` written by ``detector`` (first value per
    step); empty with those columns when there is none. ``rows``: one run's long-table rows."""
    rows = rows[(rows["detector"] == detector) & rows["metric"].isin(metrics)].dropna(subset=["step", "value"])
    if rows.empty:
        return pd.DataFrame(columns=["step", *metrics])
    wide = rows.pivot_table(index="step", columns="metric", values="value", aggfunc="first").reset_index()
    wide.columns.name = None
    return wide.astype({"step": "int64"}).sort_values("step", ignore_index=True)
