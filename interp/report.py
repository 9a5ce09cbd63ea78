"""A self-contained HTML report of a scores table (``interp report``).

One page, plotly.js inlined once (works offline), one section per run, made of the sections of
the detectors that scored it (:data:`interp.detectors.DETECTORS`): for head scores, the
prefix-matching and previous-token scores of every head over training with the located phase
change (:func:`interp.phase.locate_phase_change` on the best prefix-matching score) and a table
of the heads at the final checkpoint; for Fourier rows, the progress measures of Nanda et al.
2023 with the phases of :func:`circuits.grokking_phases` shaded; then the error rows.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from interp.detectors import DETECTORS
from interp.files import atomic_write_text
from interp.score_table import ERROR_METRIC

__all__ = ["build_report", "html_page", "write_report"]


def _figure_html(fig: go.Figure, first: bool) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=True if first else False)


def build_report(table: pd.DataFrame, title: str = "Circuit scores over training") -> str:
    """The report page as one HTML string (plotly.js inlined once; no external resources).

    One section per run: a header, then the section of every detector of
    :data:`interp.detectors.DETECTORS` that has rows for the run (its ``report``), then the
    run's error rows.
    """
    parts: list[str] = []
    figures = 0
    for run, part in table.groupby("run", sort=True):
        run = str(run)
        n_checkpoints = int(part["checkpoint"].nunique())
        errors = part[part["metric"] == ERROR_METRIC]
        parts.append(f"<h2>{html.escape(Path(run).name or run)}</h2><p class='path'>{html.escape(run)} &middot; "
                     f"{n_checkpoints} checkpoints, {errors['checkpoint'].nunique()} with errors</p>")
        for name, detector in DETECTORS.items():
            rows = part[(part["detector"] == name) & (part["metric"] != ERROR_METRIC)]
            if rows.empty:
                continue
            for item in detector.report(rows):
                if isinstance(item, go.Figure):
                    item = _figure_html(item, figures == 0)
                    figures += 1
                parts.append(item)
        if not errors.empty:
            parts.append("<h3>Errors</h3>")
            parts.append(errors[["checkpoint", "step", "detector", "error"]].to_html(index=False, classes="errors"))
    if not parts:
        parts.append("<p>The table has no rows.</p>")
    return html_page(title, "\n".join(parts))


def html_page(title: str, body: str) -> str:
    """A whole HTML page around ``body`` (already HTML), with the reports' plain table style."""
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
        ".path{color:#666;font-size:90%}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )


def write_report(table: pd.DataFrame, path: str | Path, title: str = "Circuit scores over training") -> Path:
    """Write :func:`build_report` to ``path`` atomically; returns the path."""
    path = Path(path)
    atomic_write_text(path, build_report(table, title))
    return path
