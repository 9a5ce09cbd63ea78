"""A self-contained HTML report of a scores table (``interp report``).

One page, plotly.js inlined once (works offline): for every run with head scores, the
prefix-matching and previous-token scores of every head over training with the located phase
change (:func:`interp.phase.locate_phase_change` on the best prefix-matching score) and a table
of the heads at the final checkpoint; for every run with Fourier rows, the progress measures of
Nanda et al. 2023 with the phases of :func:`circuits.grokking_phases` shaded; and the error rows.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from circuits.progress import GrokkingPhases, grokking_phases
from interp.checkpoints import atomic_write_text
from interp.phase import PhaseChange, best_head_curve, locate_phase_change
from interp.plots import plot_head_scores, plot_progress_measures
from interp.score_table import ERROR_METRIC
from interp.scoring import HEAD_METRICS

__all__ = ["RunSummary", "build_report", "final_heads", "fourier_measures", "summarise_runs", "write_report"]


@dataclass(frozen=True)
class RunSummary:
    """What the report found in one run's rows."""

    run: str
    phase_change: PhaseChange | None  # induction phase change (heads rows), None if not located
    phases: GrokkingPhases | None  # grokking phases (fourier rows), None without a train/test split
    n_checkpoints: int
    n_errors: int


def final_heads(table: pd.DataFrame) -> pd.DataFrame:
    """Head table (``layer, head`` + the head metrics) of the last scored checkpoint of one run."""
    rows = table[(table["detector"] == "heads") & table["layer"].notna() & (table["metric"] != ERROR_METRIC)]
    if rows.empty:
        return pd.DataFrame()
    last = rows[rows["step"] == rows["step"].max()]
    wide = last.pivot_table(index=["layer", "head"], columns="metric", values="value", aggfunc="first")
    wide = wide[[m for m in HEAD_METRICS if m in wide.columns]].reset_index()
    for col in ("is_previous_token", "is_induction"):
        if col in wide:
            wide[col] = wide[col].astype(bool)
    return wide.astype({"layer": int, "head": int}).sort_values(["layer", "head"], ignore_index=True)


def fourier_measures(table: pd.DataFrame) -> pd.DataFrame:
    """The progress-measure frame (``step`` + one column per scalar) from one run's Fourier rows.

    Same columns as :func:`circuits.progress_measures`, so :func:`circuits.grokking_phases` and
    :func:`interp.plots.plot_progress_measures` take it.
    """
    rows = table[(table["detector"] == "fourier") & table["layer"].isna()
                 & ~table["metric"].isin([ERROR_METRIC, "key_frequency"])].dropna(subset=["step"])
    if rows.empty:
        return pd.DataFrame()
    wide = rows.pivot_table(index="step", columns="metric", values="value", aggfunc="first").reset_index()
    wide.columns.name = None
    return wide.astype({"step": "int64"}).sort_values("step", ignore_index=True)


def _phases(measures: pd.DataFrame) -> GrokkingPhases | None:
    try:
        return grokking_phases(measures)
    except ValueError:
        return None


def summarise_runs(table: pd.DataFrame) -> list[RunSummary]:
    """One :class:`RunSummary` per run in the table, in table order."""
    out = []
    for run, part in table.groupby("run", sort=True):
        curve = best_head_curve(part)
        measures = fourier_measures(part)
        out.append(RunSummary(
            run=str(run),
            phase_change=locate_phase_change(curve["step"], curve["score"]) if not curve.empty else None,
            phases=_phases(measures) if not measures.empty else None,
            n_checkpoints=int(part["checkpoint"].nunique()),
            n_errors=int(part.loc[part["metric"] == ERROR_METRIC, "checkpoint"].nunique()),
        ))
    return out


def _figure_html(fig: go.Figure, first: bool) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=True if first else False)


def build_report(table: pd.DataFrame, title: str = "Circuit scores over training") -> str:
    """The report page as one HTML string (plotly.js inlined once; no external resources)."""
    parts: list[str] = []
    figures = 0

    def add_figure(fig: go.Figure) -> None:
        nonlocal figures
        parts.append(_figure_html(fig, figures == 0))
        figures += 1

    for summary in summarise_runs(table):
        part = table[table["run"] == summary.run]
        name = html.escape(Path(summary.run).name or summary.run)
        parts.append(f"<h2>{name}</h2><p class='path'>{html.escape(summary.run)} &middot; "
                     f"{summary.n_checkpoints} checkpoints, {summary.n_errors} with errors</p>")
        heads = part[(part["detector"] == "heads") & part["layer"].notna()]
        if not heads.empty:
            pc = summary.phase_change
            if pc is None:
                parts.append("<p class='phase'>No induction phase change located (best prefix-matching score "
                             "never rises by 0.1).</p>")
            else:
                parts.append(f"<p class='phase' data-phase-change-step='{pc.step}'>Induction phase change at "
                             f"<b>step {pc.step}</b>: best prefix-matching score {pc.before:.3f} &rarr; "
                             f"{pc.after:.3f} between steps {pc.start_step} and {pc.end_step}.</p>")
            add_figure(plot_head_scores(part, pc, title=f"{name}: head scores over training"))
            final = final_heads(part)
            parts.append(f"<h3>Heads at the final checkpoint (step {int(heads['step'].max())})</h3>")
            parts.append(final.to_html(index=False, float_format=lambda v: f"{v:.3f}", classes="heads"))
        measures = fourier_measures(part)
        if not measures.empty:
            ph = summary.phases
            if ph is None:
                parts.append("<p class='phase'>Grokking phases not located (no train/test split).</p>")
                ph = GrokkingPhases(None, None, None)
            else:
                parts.append(
                    "<p class='phase'>Grokking phases: memorisation ends at step "
                    f"{ph.memorisation_end}, circuit formation at {ph.circuit_formation_end}, cleanup at "
                    f"{ph.cleanup_end}; test accuracy reaches 0.5 at step {ph.grokking_step}.</p>")
            add_figure(plot_progress_measures(measures, ph))
            keys = part[(part["metric"] == "key_frequency")]
            if not keys.empty:
                last = keys[keys["step"] == keys["step"].max()]
                freqs = ", ".join(str(int(v)) for v in sorted(last["value"]))
                parts.append(f"<p>Key frequencies at step {int(last['step'].iloc[0])}: {freqs}</p>")
        errors = part[part["metric"] == ERROR_METRIC]
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
