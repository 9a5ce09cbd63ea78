"""A self-contained HTML report of a scores table (``interp report``).

One page, plotly.js inlined once (works offline, no CDN, no MathJax), a short contents list, then
one section per run made of the sections of the detectors that scored it
(:data:`interp.detectors.DETECTORS`), then the run's error rows. For head scores: the attention
patterns of the detected previous-token and induction heads at the final checkpoint, layer x head
heatmaps around the located phase change, the score curves and the final head table; for
Fourier rows: the final checkpoint's Fourier spectrum with its key frequencies, its neuron
clusters and the progress measures of Nanda et al. 2023 with the grokking phases shaded. Every
figure has a caption saying what to see (:class:`interp.detectors.ReportFigure`).
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from interp.detectors._curves import NAME
from interp.detectors.registry import DETECTORS
from interp.base.page import ReportFigure, figure_html, html_page
from interp.base.errors import first_line
from interp.base.files import atomic_write_text
from interp.scoring.table import ERROR_METRIC, LOAD_DETECTOR

__all__ = ["build_report", "write_report"]


def build_report(table: pd.DataFrame, title: str = "Circuit scores over training") -> str:
    """The report page as one HTML string (plotly.js inlined once; no external resources).

    A contents list (each run and its figures), then one section per run: a header, the section
    of every detector of :data:`interp.detectors.DETECTORS` that has rows for the run (its
    ``report``), then the run's error rows. Rows of a detector this installation does not know
    are named in a note, not dropped silently; a detector whose section fails on its rows gets a
    note naming the error in its place, and the rest of the page is drawn. Raises ``TypeError``
    when a detector returns a figure without a caption (anything but an HTML string or a
    :class:`ReportFigure`).
    """
    parts: list[str] = []
    contents: list[str] = []
    figures = 0
    sections = list(_sections(table))
    wheres = [str(Path(run) / stepless) if stepless else run for run, stepless, _ in sections]
    for number, ((run, stepless, part), where, plain) in enumerate(zip(sections, wheres, _names(wheres)), start=1):
        anchor = f"run-{number}"
        name = html.escape(plain)
        n_checkpoints = int(part["checkpoint"].nunique())
        errors = part[part["metric"] == ERROR_METRIC]
        parts.append(f"<h2 id='{anchor}'>{name}</h2><p class='path'>{html.escape(where)} &middot; "
                     f"{n_checkpoints} checkpoint{'s' * (n_checkpoints != 1)}, "
                     f"{errors['checkpoint'].nunique()} with errors</p>")
        if stepless:
            parts.append(f"<p class='note'>{name} records no training step: a section of its own, its rows "
                         "drawn at step 0.</p>")
        part, note = _one_checkpoint_per_step(part)
        part.attrs[NAME] = plain  # the figures' titles say it too
        if note:
            parts.append(note)
        links: list[str] = []
        unknown = part.loc[~part["detector"].isin([*DETECTORS, LOAD_DETECTOR]), "detector"].value_counts()
        if not unknown.empty:  # a detector of another version, or of a plugin not installed here
            said = ", ".join(f"{html.escape(str(name))} ({count} rows)" for name, count in unknown.items())
            parts.append(f"<p class='note'>Not shown: rows of detectors this installation does not know: {said}.</p>")
        for detector_name, detector in DETECTORS.items():
            rows = part[(part["detector"] == detector_name) & (part["metric"] != ERROR_METRIC)]
            if rows.empty:
                continue
            if detector.report_rows:  # with the rows of the other detectors its section draws on
                rows = part[part["detector"].isin((detector_name, *detector.report_rows))
                            & (part["metric"] != ERROR_METRIC)]
            try:
                items = detector.report(rows)
            except Exception as exc:  # noqa: BLE001 - rows it cannot draw: a note in its section, not a lost page
                items = [f"<p class='note'>The {html.escape(detector_name)} section is not drawn: "
                         f"{html.escape(type(exc).__name__)}: {html.escape(first_line(exc))}.</p>"]
            for item in items:
                if isinstance(item, ReportFigure):
                    figures += 1
                    figure_anchor = f"{anchor}-figure-{len(links) + 1}"
                    parts.append(figure_html(item, figure_anchor, first=figures == 1))
                    links.append(f"<a href='#{figure_anchor}'>{html.escape(item.title)}</a>")
                elif isinstance(item, str):
                    parts.append(item)
                else:
                    raise TypeError(f"detector {detector_name} returned a {type(item).__name__}; a report item "
                                    "is an HTML string or a ReportFigure (a figure with its caption)")
        if not errors.empty:
            parts.append(f"<h3 id='{anchor}-errors'>Errors</h3>")
            parts.append(errors[["checkpoint", "step", "detector", "error"]].to_html(index=False, classes="errors"))
            links.append(f"<a href='#{anchor}-errors'>errors</a>")
        contents.append(f"<li><a href='#{anchor}'>{name}</a>" + (": " + " &middot; ".join(links) if links else "")
                        + "</li>")
    if not parts:
        parts.append("<p>The table has no rows.</p>")
    nav = f"<nav class='contents'><b>Contents</b><ol>{''.join(contents)}</ol></nav>\n" if contents else ""
    return html_page(title, nav + "\n".join(parts))


def _names(wheres: list[str]) -> list[str]:
    """Each section's name: the last part of its path, or as many last parts as tell it from every
    other section's (two runs ``X/ind`` and ``Y/ind`` are named so, not both ``ind``)."""
    parts = [Path(where).parts or (where,) for where in wheres]
    names = []
    for own, where in zip(parts, wheres):
        others = [other for other in parts if other is not own]
        depth = next((d for d in range(1, len(own)) if all(other[-d:] != own[-d:] for other in others)), None)
        names.append(str(Path(*own[-depth:])) if depth else where)
    return names


def _one_checkpoint_per_step(part: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """One run's rows with one checkpoint per step, the last by name, so that every curve and every
    final figure shows the same one; and a note naming the others (None when no step has two).
    Error rows are all kept, for the errors table."""
    stepped = part.dropna(subset=["step"])
    names = stepped.groupby("step")["checkpoint"].unique()
    shared = {int(step): sorted(map(str, found)) for step, found in names.items() if len(found) > 1}
    if not shared:
        return part, None
    drawn = part["step"].map({step: found[-1] for step, found in shared.items()})
    keep = drawn.isna() | (part["checkpoint"] == drawn) | (part["metric"] == ERROR_METRIC)
    said = "; ".join(f"step {step}: {html.escape(', '.join(found))}, drawn: {html.escape(found[-1])}"
                     for step, found in sorted(shared.items()))
    return part[keep], f"<p class='note'>Steps held by more than one checkpoint (the last by name is drawn): {said}.</p>"


def _sections(table: pd.DataFrame):
    """``(run, checkpoint or None, rows)`` per section: a run's checkpoints with a step together, and
    each checkpoint without one (a foreign file) on its own, its scores' step set to 0 (it has no
    place in the run's order)."""
    for run, part in table.groupby("run", sort=True, dropna=False):  # a row without a run is shown, not dropped
        stepless = part["step"].isna()
        if not stepless.all():
            yield str(run), None, part[~stepless]
        for checkpoint, rows in part[stepless].groupby("checkpoint", sort=True, dropna=False):
            step = pd.array([pd.NA if m == ERROR_METRIC else 0 for m in rows["metric"]], dtype="Int64")
            yield str(run), str(checkpoint), rows.assign(step=step)  # error rows keep saying "no step"


def write_report(table: pd.DataFrame, path: str | Path, title: str = "Circuit scores over training") -> Path:
    """Write :func:`build_report` to ``path`` atomically; returns the path."""
    path = Path(path)
    atomic_write_text(path, build_report(table, title))
    return path
