"""What a detector is: the :class:`Detector` record every detector package ends with, and its :data:`Row`.

A :class:`Detector` bundles everything the toolkit needs to know about one detector: its name,
the metrics it writes into the long table, whether it applies to a model (and why not), what
it prepares once per run, the rows it scores for one checkpoint, its ``interp inspect`` text
and its section of the report (``docs/architecture.md``, "Adding a detector").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from transformer_lens import HookedTransformer

__all__ = ["Detector", "Row"]

#: One scored number: ``{"metric": str, "value": float}`` plus ``"layer"`` and ``"head"`` for a
#: head metric (model-level metrics leave them out). Scoring adds run, checkpoint, step, detector,
#: after checking the rows (:func:`interp.scoring.task.checked_rows`).
Row = dict[str, Any]


@dataclass(frozen=True)
class Detector:
    """One detector of the registry.

    Attributes:
        name: the ``detector`` column of the long table and the name on the command line.
        help: one line for ``interp score --help``.
        metrics: the ``metric`` values it writes (``error`` rows aside).
        applies: ``applies(model)`` is None when the detector fits the model, else the reason it
            does not (the detector is then skipped for that run, with the reason reported).
        prepare: ``prepare(model, run_dir)`` -> context, computed once per run from its latest
            readable checkpoint (``run_dir`` None for loose files); shipped to worker processes,
            so it must pickle. Use it for what must be fixed across a run's checkpoints.
        score: ``score(model, context)`` -> the :data:`Row` list of one checkpoint.
        summary: ``summary(model, run_dir)`` -> the text ``interp inspect`` prints.
        report: ``report(rows)`` -> HTML strings and :class:`ReportFigure` items, in page
            order, from one run's rows of this detector (error rows removed); the report's
            section for it. It may read the run's files (the final checkpoint) and says in the
            page why a figure is missing when they cannot be read.
        report_rows: other detectors whose rows of the same run ``report`` also receives (the
            ``text`` section sets its curve beside the ``heads`` scores); default none.
        version: the definition of the rows it writes, 1 at first; raise it when they change (a
            new metric, another formula), and rows written under an earlier one are scored again
            (each row's ``context`` records it: :func:`interp.scoring.context.plan_label`).
        settings: ``settings()`` -> the settings it reads from outside the model and its run (an
            environment variable) as text, "" for its defaults; ``ValueError`` (one line) when
            they cannot be read, before any work. Rows record a hash of them, so rows scored
            under other settings are scored again without planning their run first.
    """

    name: str
    help: str
    metrics: tuple[str, ...]
    applies: Callable[[HookedTransformer], str | None]
    prepare: Callable[[HookedTransformer, Path | None], Any]
    score: Callable[[HookedTransformer, Any], list[Row]]
    summary: Callable[[HookedTransformer, Path | None], str]
    report: Callable[[pd.DataFrame], list[Any]]
    report_rows: tuple[str, ...] = ()
    version: int = 1
    settings: Callable[[], str] | None = None
