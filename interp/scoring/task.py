"""One checkpoint's scoring: which detectors a run gets, and the rows of one checkpoint.

:func:`plan_run` decides once per run what every checkpoint is scored with (the detectors of
:data:`interp.detectors.DETECTORS` that apply to the run's latest sound checkpoint, each with what
it prepares); :func:`score_task` scores one checkpoint in a worker and never raises: a checkpoint
that cannot be read, holds NaN or infinite weights or whose forward pass is not finite gives one ``load`` error row, a detector
that fails gives its own error row. Batch jobs over many checkpoints: :mod:`interp.scoring.batch`.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from interp.base.errors import first_line, one_line
from interp.detectors.catalog import OPT_IN
from interp.detectors.plugins import SKIPPED
from interp.detectors.registry import DETECTORS
from interp.runs.checkpoints import CheckpointError, load_cached
from interp.runs.soundness import unsound
from interp.runs.layout import CheckpointRef, fingerprint, run_of
from interp.scoring.context import context_digest, plan_label, settings_tag
from interp.scoring.table import ERROR_METRIC

__all__ = ["RunPlan", "ScoreTask", "check_detectors", "lost_rows", "plan_run", "score_task", "with_fingerprint"]


def check_detectors(detectors: Sequence[str] | None = None) -> tuple[str, ...]:
    """``detectors`` (names, or one name) without repeats (None: all but the opt-in ones, ``catalog.OPT_IN``); ``ValueError`` naming the unknown ones and the known ones.

    Plugins left out of the registry (:data:`interp.detectors.plugins.SKIPPED`: each has had its
    warning) are dropped from ``detectors``, so the command line's default, which lists them
    without importing them, still scores everything else.
    """
    if detectors is None:
        return tuple(d for d in DETECTORS if d not in OPT_IN)
    if isinstance(detectors, str):  # one name, not its letters
        detectors = [detectors]
    if any(d in DETECTORS for d in detectors):
        detectors = [d for d in detectors if d in DETECTORS or d not in SKIPPED]
    unknown = [d for d in detectors if d not in DETECTORS]
    if unknown or not detectors:
        said = "; ".join(SKIPPED[d] for d in unknown if d in SKIPPED)
        raise ValueError(f"unknown detector(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(DETECTORS)}"
                         + (f" ({said})" if said else ""))
    return tuple(dict.fromkeys(detectors))


@dataclass(frozen=True)
class RunPlan:
    """What every checkpoint of one run is scored with (built once per run, shipped to workers)."""

    contexts: dict[str, Any]  # detector -> what it prepared for the run, in scoring order
    skipped: dict[str, str] = field(default_factory=dict)  # detector -> why it does not apply
    digests: dict[str, str | None] = field(default_factory=dict)  # detector -> plan_label of its context


def plan_run(refs: Sequence[CheckpointRef], detectors: Sequence[str]) -> RunPlan:
    """The detectors that apply to the run and their contexts, from its latest sound checkpoint.

    Sound: readable, matching the run, with finite weights and a finite forward pass (:func:`interp.runs.soundness.unsound`).

    When no checkpoint of the run can be read, every requested detector is planned (with no
    context) and each checkpoint becomes an error row when scored.
    """
    model = None
    for ref in sorted(refs, reverse=True):
        try:
            model, _ = load_cached(ref.path)
        except Exception:  # an unreadable or foreign checkpoint is reported when it is scored
            continue
        if not unsound(model):
            break
        model = None
    if model is None:
        return RunPlan(dict.fromkeys(detectors))
    run_dir = run_of(refs[0].path)
    contexts, skipped = {}, {}
    for name in detectors:
        detector = DETECTORS[name]
        why = detector.applies(model)
        if why is None:
            contexts[name] = detector.prepare(model, run_dir)
        else:
            skipped[name] = why
    return RunPlan(contexts, skipped, {name: plan_label(context_digest(context), DETECTORS[name].version,
                                                        settings_tag(DETECTORS[name]))
                                       for name, context in contexts.items()})


@dataclass(frozen=True)
class ScoreTask:
    """One checkpoint and the detectors to run on it."""

    ref: CheckpointRef
    detectors: tuple[str, ...]
    plan: RunPlan
    device: str = "cpu"  # where the worker loads the model and the detectors run


def _reason(exc: BaseException) -> str:
    text = first_line(exc)
    return text if isinstance(exc, (CheckpointError, FileNotFoundError)) and text else one_line(exc)


def _error_row(ref: CheckpointRef, detector: str, reason: str) -> dict[str, Any]:
    return {"run": ref.run, "checkpoint": ref.checkpoint, "step": ref.step, "detector": detector,
            "metric": ERROR_METRIC, "value": float("nan"), "error": reason, "fingerprint": ref.fingerprint}


def with_fingerprint(ref: CheckpointRef) -> CheckpointRef:
    return ref if ref.fingerprint else dataclasses.replace(ref, fingerprint=fingerprint(ref.path))


def score_task(task: ScoreTask) -> list[dict[str, Any]]:
    """Rows of the long table for one checkpoint; never raises for a bad checkpoint or detector.

    The file's fingerprint is taken here, in the worker, just before it is loaded (unless the
    planner already took it), so hashing the files runs in parallel with scoring.
    """
    ref = with_fingerprint(task.ref)
    try:
        model, step = load_cached(ref.path, device=task.device)
    except Exception as exc:  # any failure to read becomes an error row; scoring goes on
        return [_error_row(ref, "load", _reason(exc))]
    why = unsound(model)
    if why:  # checked once here, for every detector
        return [_error_row(ref, "load", why)]
    base = {"run": ref.run, "checkpoint": ref.checkpoint, "step": ref.step if step is None else step,
            "fingerprint": ref.fingerprint}
    rows: list[dict[str, Any]] = []
    for name in task.detectors:
        try:
            if name not in DETECTORS:  # registered in the parent, which this worker was not forked from
                raise LookupError(f"detector {name} is not registered in this worker process: a detector added "
                                  "with interp.register_detector reaches forked workers only; publish it as an "
                                  "interp.detectors entry point to score it here")
            found = checked_rows(DETECTORS[name].score(model, task.plan.contexts[name]))
        except Exception as exc:  # a detector failing on one checkpoint is recorded
            found = [{"metric": ERROR_METRIC, "value": float("nan"), "error": _reason(exc)}]
        rows += [{**base, "detector": name, "error": "", "context": task.plan.digests.get(name, ""), **row}
                 for row in found]
    return rows


def checked_rows(found: object) -> list[dict[str, Any]]:
    """A detector's rows for one checkpoint (:data:`interp.detectors.spec.Row`), checked: a list of
    dicts holding a metric name (not ``error``), a number or None as ``value``, whole numbers as
    ``layer``/``head`` when given, nothing else, and no (metric, layer, head) twice. Else a
    ``TypeError``/``ValueError`` naming the first bad row: the checkpoint's error row for that
    detector, where a plugin's string value or ``run`` key sank the whole job or rewrote the table."""
    if not isinstance(found, (list, tuple)):
        raise TypeError(f"score returned a {type(found).__name__}, not a list of row dicts")
    seen: set[tuple] = set()
    for i, row in enumerate(found):
        if not isinstance(row, Mapping):
            raise TypeError(f"row {i} is a {type(row).__name__}, not a dict")
        metric, value = row.get("metric"), row.get("value")
        if set(row) - set(_ROW_KEYS):
            raise ValueError(f"row {i} sets {sorted(set(row) - set(_ROW_KEYS))}: a row holds only "
                             f"{', '.join(_ROW_KEYS)}")
        if not isinstance(metric, str) or not metric or metric == ERROR_METRIC:
            raise ValueError(f"row {i} has metric {metric!r}: a detector's metric is a name other than 'error'")
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            raise ValueError(f"row {i} ({metric}) has value {value!r}, not a number")
        where = tuple(row.get(key) for key in ("layer", "head"))
        if any(v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Integral)) for v in where):
            raise ValueError(f"row {i} ({metric}) has layer, head {where}: whole numbers or none")
        if (metric, *where) in seen:
            raise ValueError(f"row {i} repeats {metric} of layer, head {where}")
        seen.add((metric, *where))
    return list(found)


#: The keys of a detector's row; scoring adds the run, checkpoint, step, detector and plan.
_ROW_KEYS = ("metric", "value", "layer", "head")


def lost_rows(task: ScoreTask, exc: BaseException) -> list[dict[str, Any]]:
    """The error row of a checkpoint whose worker process died under it (twice)."""
    return [_error_row(with_fingerprint(task.ref), "load",
                       f"the worker process died while scoring this checkpoint ({_reason(exc)})")]
