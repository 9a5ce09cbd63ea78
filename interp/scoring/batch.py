"""Batch scoring: checkpoints x detectors -> one long table (``docs/architecture.md``, "Scores table").

:func:`score_checkpoints` resolves what it is given into checkpoints (:func:`interp.runs.find_checkpoints`),
plans per run what to compute and scores each checkpoint (:mod:`interp.scoring.task`) on an executor (:mod:`interp.scoring.executors`) through the job runner
(:func:`interp.scoring.jobs.run_jobs`). :func:`score_to_file` does the same into a table file,
keeping what the file already holds and merging new rows into it under its lock as checkpoints
finish, so a killed job restarts where it stopped. The table schema is in :mod:`interp.scoring.table`.

A detector that does not apply to a run's model is skipped for that run (no rows, no error). A
checkpoint that cannot be read, that holds NaN or infinite weights, whose forward pass is not
finite, or whose model does not match its run's ``run.json`` gives one row ``detector="load", metric="error"``; a detector that
fails on a checkpoint gives ``detector=<name>, metric="error"``; the reason is in ``error``. Every
row carries the checkpoint's content fingerprint, so a checkpoint whose file changed is scored
again. An unreadable ``run.json`` stops the job with :class:`interp.runs.RunError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from interp.base.allocator import reuse_freed_memory
from interp.base.device import device_name
from interp.scoring.executors import Executor
from interp.scoring.jobs import TableFile, run_jobs
from interp.runs.layout import CHECKPOINT_DIR, RUN_FILE, CheckpointRef, find_checkpoints, unlisted_files
from interp.runs.series import missing_in_series, series_children
from interp.runs.record import read_run
from interp.detectors.registry import DETECTORS
from interp.scoring.context import label_settings, label_version, settings_tag
from interp.scoring.table import ERROR_METRIC, canonical, empty_table, read_table, table_saver
from interp.scoring.task import ScoreTask, check_detectors, lost_rows, plan_run, score_task, with_fingerprint

__all__ = ["drop_failed", "score_checkpoints", "score_to_file"]

#: :func:`score_to_file` merges new rows into its table at most this often (and always at the end).
FLUSH_SECONDS = 1.0


def _stale(existing: pd.DataFrame, refs: Sequence[CheckpointRef] | None) -> set[tuple[str, str]]:
    """(run, checkpoint) whose rows must be scored again: an error row, or a file that changed."""
    failed = existing[existing["metric"] == ERROR_METRIC]
    stale = set(zip(failed["run"], failed["checkpoint"]))
    if refs is not None:
        now = {(r.run, r.checkpoint): r.fingerprint for r in refs}
        stale |= {(r, c) for r, c, f in zip(existing["run"], existing["checkpoint"], existing["fingerprint"])
                  if (r, c) in now and f != now[(r, c)]}
    return stale


def _done_keys(existing: pd.DataFrame | None, refs: Sequence[CheckpointRef] | None = None
               ) -> tuple[dict[tuple[str, str, str], str], set[tuple[str, str]]]:
    """(run, checkpoint, detector) already scored -> the digest of the plan it was scored against
    (:mod:`interp.scoring.context`), and the stale (run, checkpoint) (:func:`_stale`)."""
    if existing is None or existing.empty:
        return {}, set()
    stale = _stale(existing, refs)
    ok = existing[existing["metric"] != ERROR_METRIC]
    keys = zip(ok["run"], ok["checkpoint"], ok["detector"], ok["context"])
    return {(r, c, d): plan for r, c, d, plan in keys if (r, c) not in stale}, stale


def drop_failed(existing: pd.DataFrame | None, refs: Sequence[CheckpointRef] | None = None) -> pd.DataFrame:
    """``existing`` without its stale checkpoints (error rows; with ``refs``, changed files): they are scored again."""
    if existing is None or existing.empty:
        return empty_table()
    _, stale = _done_keys(existing, refs)
    keep = [(r, c) not in stale for r, c in zip(existing["run"], existing["checkpoint"])]
    return existing[pd.Series(keep, index=existing.index, dtype=bool)]


def _plan_tasks(refs: list[CheckpointRef], detectors: tuple[str, ...], done: dict[tuple[str, str, str], str],
                device: str = "cpu") -> tuple[list[ScoreTask], dict]:
    """The tasks of a job: per run with anything new, its plan, and every (checkpoint, detector)
    not yet scored against that plan (rows of another plan's digest, or of another version or
    settings of their detector, are scored again)."""
    tasks: list[ScoreTask] = []
    skipped: dict[str, dict[str, str]] = {}
    by_group: dict[str, list[CheckpointRef]] = {}
    for ref in refs:
        by_group.setdefault(_plan_group(ref), []).append(ref)
    group_of = {(r.run, r.checkpoint): group for group, members in by_group.items() for r in members}
    plans: dict[tuple[str, str], set[str]] = {}  # (group, detector) -> the digests its rows were scored against
    for (run, checkpoint, detector), digest in done.items():
        plans.setdefault((group_of.get((run, checkpoint), run), detector), set()).add(digest)
    tags = {d: settings_tag(DETECTORS[d]) for d in detectors}  # unreadable settings: a ValueError before any work
    for group, members in by_group.items():
        if all((r.run, r.checkpoint, d) in done for r in members for d in detectors) and \
                all(len(plans.get((group, d), ())) <= 1 for d in detectors) and \
                all(label_version(p) == DETECTORS[d].version and label_settings(p) == tags[d]
                    for d in detectors for p in plans.get((group, d), ())):
            continue  # nothing new, one plan behind each detector's rows, of its current version and settings
        plan = plan_run(_plan_checkpoints(members[0].run, members), detectors)
        if plan.skipped:
            skipped[group] = dict(plan.skipped)
        for ref in members:
            need = tuple(d for d in plan.contexts
                         if _outdated(done.get((ref.run, ref.checkpoint, d)), plan.digests.get(d)))
            if need:
                tasks.append(ScoreTask(ref, need, plan, device))
    return tasks, skipped


def _outdated(scored: str | None, planned: str | None) -> bool:
    """Whether a (checkpoint, detector) is to be scored: never scored (``scored`` None), or scored
    against another plan than the one made now (``planned`` None: none could be made, keep it)."""
    return scored is None or (planned is not None and scored != planned)


def _plan_group(ref: CheckpointRef) -> str:
    """Which checkpoints share one plan: those of a run (a run directory, a series of Hugging Face
    directories, or loose files named by step in one folder: one run's checkpoints), keyed by the
    run; a loose file or Hugging Face directory whose name carries no step is a model of its own
    (two seeds' final checkpoints, a modular-addition and an induction model side by side), keyed
    by its path, and planned from itself."""
    if ref.step is not None or (Path(ref.run) / CHECKPOINT_DIR).is_dir():
        return ref.run
    return ref.path


def _plan_checkpoints(run: str, given: list[CheckpointRef]) -> list[CheckpointRef]:
    """What a run's plan is made from: every checkpoint of a run directory or of a series of Hugging
    Face directories (a checkpoint scored alone is scored against its run's latest), else those given."""
    folder = Path(run)
    if not ((folder / CHECKPOINT_DIR).is_dir() or series_children(folder)):
        return given
    try:
        listed = find_checkpoints(folder)
    except FileNotFoundError:  # emptied meanwhile
        listed = []
    return sorted({(r.run, r.checkpoint): r for r in [*listed, *given]}.values())  # given: also files not named by step


def score_checkpoints(
    paths: str | Path | Iterable[str | Path],
    detectors: Sequence[str] | None = None,
    *,
    existing: pd.DataFrame | None = None,
    workers: int = 1,
    scheduler: Any = None,
    executor: Executor | None = None,
    quiet: bool = True,
    on_checkpoint: Callable[[pd.DataFrame], None] | None = None,
    device: Any = None,
) -> pd.DataFrame:
    """Score every checkpoint under ``paths`` with ``detectors``; return the long table.

    Args:
        paths: run directories, checkpoint files, folders of runs, or globs (:func:`interp.runs.find_checkpoints`).
        detectors: names in :data:`interp.detectors.DETECTORS`, or one name (default None: all, as registered
            at the call); those that do not apply to a run's model are skipped for that run. A
            detector added with :func:`interp.register_detector` reaches the workers of
            ``workers=1`` and of the forked local pool (Linux) only; elsewhere its checkpoints
            get error rows (entry-point plugins load in every process).
        existing: a table from an earlier call: its (checkpoint, detector) pairs are not scored
            again and its rows are kept; checkpoints with an error row in it, or whose file's
            fingerprint changed, are scored again (their old rows dropped), and so are the rows of
            a run planned anew whose ``context`` is not the new plan's (:mod:`interp.scoring.context`).
        workers: local processes (1: in this process). ``scheduler``: a Dask scheduler address
            or ``distributed.Client`` instead. ``executor``: any :class:`interp.executors.Executor`
            (then ``workers`` and ``scheduler`` are ignored and the executor is left open).
        quiet: no progress bar (the default; the CLI turns it on).
        device: where the checkpoints are loaded and scored (:func:`interp.base.device.resolve_device`;
            None: the CPU). What a detector prepares once per run is computed on the CPU. With a
            CUDA device, local workers are spawned rather than forked (CUDA cannot be used in a
            forked child); Dask workers resolve the name on their own machines.
        on_checkpoint: called in this process with each checkpoint's new rows as they arrive.

    Returns the table of :mod:`interp.score_table` (``run, checkpoint, step, detector, layer, head,
    metric, value, error``) in canonical order: ``existing`` (less rescored checkpoints) plus
    the new rows. ``table.attrs["skipped"]`` maps run (for a model of its own, its path:
    :func:`_plan_group`) -> {detector: reason} for detectors that did not apply;
    ``attrs["n_scored"]``, ``attrs["n_failed"]`` count this call's checkpoints; ``attrs["fits_none"]``
    says that no detector applies to any run named; ``attrs["runs"]`` lists the runs this call named
    (``existing`` may hold others).
    """
    return _score(paths, detectors, existing, None, workers=workers, scheduler=scheduler, executor=executor,
                  quiet=quiet, on_checkpoint=on_checkpoint, device=device)[0]


def _score(paths: str | Path | Iterable[str | Path], detectors: Sequence[str] | None, existing: pd.DataFrame | None,
           into: TableFile | None, *, on_checkpoint: Callable[[pd.DataFrame], None] | None = None,
           device: Any = None, **options: Any) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """:func:`score_checkpoints`, merging the new rows into ``into`` as they arrive (:func:`run_jobs`).

    Returns the table of :func:`score_checkpoints` and the file's table as last written (None
    when nothing was written). ``options``: ``workers``, ``scheduler``, ``executor``, ``quiet``.
    """
    reuse_freed_memory()
    detectors = check_detectors(detectors)
    refs = find_checkpoints(paths)
    if not refs:
        shown = [paths] if isinstance(paths, (str, Path)) else paths
        hints = [f"; {p}/{CHECKPOINT_DIR} holds {', '.join(f.name for f in files[:3])}, but a run's checkpoints are "
                 "step_N.safetensors: " + (f"name the files ({p}/{CHECKPOINT_DIR}/*{files[0].suffix}) to score them"
                                           if (Path(p) / RUN_FILE).exists() else
                                           f"name {p}/{CHECKPOINT_DIR} itself to score them as loose files")
                 for p in shown if (Path(p) / CHECKPOINT_DIR).is_dir() and (files := unlisted_files(p))]
        hints += [f"; {why}" for p in shown if (why := missing_in_series(p))]  # a series of LoRA adapters, say
        raise FileNotFoundError(f"no checkpoints found under {', '.join(map(str, shown))}{''.join(hints[:1])}")
    for run in dict.fromkeys(r.run for r in refs):
        read_run(run)  # an unreadable run.json stops the job here, before anything is scored
    if existing is not None and not existing.empty:  # a file that changed since it was scored is scored again
        known = set(zip(existing["run"], existing["checkpoint"]))
        refs = [with_fingerprint(r) if (r.run, r.checkpoint) in known else r for r in refs]
    done, _ = _done_keys(existing, refs)
    kept = drop_failed(existing, refs)
    target = device_name(device, remote=options.get("scheduler") is not None)
    tasks, skipped = _plan_tasks(refs, detectors, done, target)
    rescored = {(t.ref.run, t.ref.checkpoint, d) for t in tasks for d in t.detectors}
    if rescored and not kept.empty:  # rows of another plan, which the new rows replace
        kept = kept[[k not in rescored for k in zip(kept["run"], kept["checkpoint"], kept["detector"])]]

    def arrived(rows: list[dict[str, Any]]) -> None:
        if rows:
            on_checkpoint(canonical(rows))

    # The executor is closed without waiting for its workers to finish exiting (they release
    # their memory meanwhile, while the table is built).
    ran = run_jobs(score_task, tasks, lost=lost_rows, into=into, rows_of=_rows, flush_seconds=FLUSH_SECONDS,
                   on_result=None if on_checkpoint is None else arrived, wait=False, desc="score", unit="ckpt",
                   spawn=target.startswith("cuda"), **options)
    new = [row for rows in ran.results for row in rows]
    n_failed = sum(any(r["metric"] == ERROR_METRIC for r in rows) for rows in ran.results)
    if not new:
        table = canonical(kept)
    elif kept.empty:
        table = canonical(new)
    else:
        table = canonical(pd.concat([kept, canonical(new)], ignore_index=True))
    fitting = {_plan_group(r) for r in refs} - {g for g, why in skipped.items() if len(why) == len(detectors)}
    table.attrs.update(skipped=skipped, n_scored=len(tasks), n_failed=n_failed, fits_none=not fitting,
                       runs=sorted({r.run for r in refs}))
    return table, ran.table


def _rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A checkpoint's result is its rows."""
    return rows


def score_to_file(
    paths: str | Path | Iterable[str | Path],
    out: str | Path,
    detectors: Sequence[str] | None = None,
    **options: Any,
) -> pd.DataFrame:
    """:func:`score_checkpoints` into the table file ``out`` (``.parquet`` or ``.csv``), resumable.

    The rows already in ``out`` are kept and their checkpoints not scored again (checkpoints with
    an error row or whose file changed are, and rows of an older plan of their run). New rows reach the file as checkpoints finish (at
    most every :data:`FLUSH_SECONDS`, and at the end, also on an exception or Ctrl-C). Each write
    merges under a lock (:func:`interp.scoring.jobs.TableFile.merge`): it re-reads the file, replaces
    the rows of the checkpoints this job scored and keeps every other row, so jobs writing one
    table at the same time never drop each other's rows. Nothing is written when nothing new was
    scored. ``options`` go to :func:`score_checkpoints`. Returns the whole table as written.
    """
    out = Path(out)
    into = TableFile(out, read=read_table, save=table_saver(out), frame=canonical, order=canonical,
                     superseded=_superseded)
    table, written = _score(paths, detectors, into.existing(), into, **options)
    if written is not None:
        written.attrs.update(table.attrs)
        return written
    return table


def _superseded(current: pd.DataFrame, mine: pd.DataFrame) -> list[bool]:
    """The rows of the table ``current`` that the new rows ``mine`` replace.

    Rows of the same checkpoint and detector, and, for every checkpoint in ``mine``, its error
    rows and rows of another file content (fingerprint).
    """
    fingerprints = dict(zip(zip(mine["run"], mine["checkpoint"]), mine["fingerprint"]))
    scored = set(zip(mine["run"], mine["checkpoint"], mine["detector"]))
    return [
        (r, c) in fingerprints and ((r, c, d) in scored or m == ERROR_METRIC or f != fingerprints[(r, c)])
        for r, c, d, m, f in zip(current["run"], current["checkpoint"], current["detector"],
                                 current["metric"], current["fingerprint"])
    ]
