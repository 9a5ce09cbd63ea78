"""Batch scoring: checkpoints x detectors -> one long table (DESIGN section 6).

:func:`score_checkpoints` resolves run directories, checkpoint files and globs into checkpoints,
plans per run what to compute, and scores each checkpoint on an executor
(:mod:`interp.executors`). The table schema is in :mod:`interp.score_table`.

Detectors:

- ``"heads"``: :func:`circuits.induction_heads` on the repeated-token probe; one row per head and
  metric ``previous_token, prefix_matching, copying, ov_copying, is_previous_token,
  is_induction`` (the last two as 0/1). The probe is built once per run
  (``circuits.repeated_tokens(model)`` with its defaults: 64 sequences, seed 0) and the same
  tensor is used for every checkpoint of the run, so the scores of a checkpoint equal
  ``circuits.prefix_matching_scores(model)`` etc. with default arguments. Applies to models whose
  probe halves can hold at least :data:`MIN_HEADS_HALF_LEN` tokens (``n_ctx >= 9``): with
  ``N <= 2`` the prefix-matching diagonal ``q - k = N - 1`` coincides with the previous-token one
  and the score would not mean anything. So the modular-addition model (n_ctx = 3) is skipped.
- ``"fourier"``: :func:`circuits.fourier_report`; model-level rows (layer/head empty) for
  ``loss, train_loss, test_loss, train_accuracy, test_accuracy, restricted_loss, excluded_loss,
  gini_embed, gini_unembed, weight_norm, n_key_frequencies`` and one ``key_frequency`` row per key
  frequency of the checkpoint (value = k). As in Nanda et al. 2023 the restricted and excluded
  losses of every checkpoint use the key frequencies of the run's *latest readable* checkpoint,
  and the train/test split is rebuilt from ``RUN/run.json`` (all pairs count as training when
  there is none). Applies to one-layer models with an MLP whose output vocabulary p is odd and
  whose input vocabulary holds the ``=`` token (the shape of :func:`circuits.fourier_report`).

A detector that does not apply to a run's model is skipped for that run (no rows, no error). A
checkpoint that cannot be read gives one row ``detector="load", metric="error"``; a detector that
fails on a checkpoint gives ``detector=<name>, metric="error"``; the reason is in ``error``.
"""

from __future__ import annotations

import glob
import json
import os
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformer_lens import HookedTransformer

from interp.checkpoints import CheckpointError, _instantiate, _is_weight, list_checkpoints, load_model, read_checkpoint
from interp.executors import Executor, make_executor
from interp.score_table import ERROR_METRIC, canonical, empty_table

__all__ = [
    "DETECTORS",
    "MIN_HEADS_HALF_LEN",
    "CheckpointRef",
    "find_checkpoints",
    "drop_failed",
    "score_checkpoints",
]

#: Detectors known to :func:`score_checkpoints`.
DETECTORS = ("heads", "fourier")
#: Shortest probe half for the heads detector (see the module docstring): needs ``n_ctx >= 2N + 1 = 9``.
MIN_HEADS_HALF_LEN = 4
HEAD_METRICS = ("previous_token", "prefix_matching", "copying", "ov_copying", "is_previous_token", "is_induction")
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth")
_STEP = re.compile(r"step_(\d+)")
_GLOB = re.compile(r"[*?\[]")


# ---------------------------------------------------------------------------------------------
# finding checkpoints


@dataclass(frozen=True, order=True)
class CheckpointRef:
    """One checkpoint file: its run (run directory, absolute), file name, path, and step if known.

    ``step`` comes from ``step_<N>`` in the file name; the file's metadata overrides it once loaded.
    """

    run: str
    sort_step: int
    checkpoint: str
    path: str = field(compare=False)
    step: int | None = field(compare=False, default=None)


def _ref(path: Path) -> CheckpointRef:
    path = Path(os.path.abspath(path))  # absolute, symlinks kept: a linked file is its own checkpoint
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    match = _STEP.search(path.stem)
    step = int(match.group(1)) if match else None
    return CheckpointRef(str(run), -1 if step is None else step, path.name, str(path), step)


def _refs_in_dir(directory: Path) -> list[CheckpointRef]:
    if (directory / "checkpoints").is_dir():
        return [_ref(p) for _, p in list_checkpoints(directory)]
    if directory.name == "checkpoints" and (directory.parent / "run.json").exists():
        return [_ref(p) for _, p in list_checkpoints(directory.parent)]
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES)
    if files:
        return [_ref(p) for p in files]
    # a folder of runs, one level down
    return [r for child in sorted(directory.iterdir()) if (child / "checkpoints").is_dir() for r in _refs_in_dir(child)]


def find_checkpoints(paths: str | Path | Iterable[str | Path]) -> list[CheckpointRef]:
    """Checkpoints named by ``paths``, each once, sorted by (run, step, file name).

    Each path may be a run directory (all its ``checkpoints/step_*.safetensors``), a folder of
    runs or of checkpoint files (``.safetensors``, ``.pt``, ``.pth``), one checkpoint file, or a
    glob of any of these (``runs/*/checkpoints/step_00*``; ``**`` recurses). Raises
    ``FileNotFoundError`` for a path or glob that matches nothing.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    found: dict[str, CheckpointRef] = {}
    for raw in paths:
        text = str(raw)
        if Path(text).exists():
            matches = [Path(text)]
        elif _GLOB.search(text):
            matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
            if not matches:
                raise FileNotFoundError(f"no files match {text}")
        else:
            raise FileNotFoundError(f"no such run directory or checkpoint: {text}")
        for match in matches:
            refs = _refs_in_dir(match) if match.is_dir() else [_ref(match)]
            for ref in refs:
                found.setdefault(ref.path, ref)
    return sorted(found.values())


# ---------------------------------------------------------------------------------------------
# loading into one model instance per process

_LOCAL = threading.local()


def load_into_cache(path: str | Path) -> tuple[HookedTransformer, int | None]:
    """(model, step) of a checkpoint, reusing this thread's model when the config is unchanged.

    Our safetensors checkpoints are loaded with ``load_state_dict`` into the model built for the
    previous checkpoint of the same config (no rebuild); other formats go through
    :func:`interp.load_model`. Raises :class:`CheckpointError` / ``FileNotFoundError``.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        _LOCAL.cached = None
        return load_model(path), None
    state, cfg, step = read_checkpoint(path)
    key = json.dumps(cfg, sort_keys=True)
    cached = getattr(_LOCAL, "cached", None)
    if cached is not None and cached[0] == key:
        model = cached[1]
        expected = {k: v.shape for k, v in model.state_dict().items() if _is_weight(k)}
        bad = [k for k, shape in expected.items() if k not in state or tuple(state[k].shape) != tuple(shape)]
        if bad:
            raise CheckpointError(f"{path}: weights do not match the config ({', '.join(bad[:5])})")
        model.load_state_dict({k: state[k] for k in expected}, strict=False)
    else:
        model = _instantiate(path, cfg, state)
        _LOCAL.cached = (key, model)
    return model, step


# ---------------------------------------------------------------------------------------------
# what to compute for a run


def heads_applicable(model: HookedTransformer) -> str | None:
    """None when the heads detector applies to ``model``, else the reason it does not."""
    n_ctx = int(model.cfg.n_ctx)
    if (n_ctx - 1) // 2 < MIN_HEADS_HALF_LEN:
        return f"context n_ctx={n_ctx} too short for a repeated-token probe (needs >= {2 * MIN_HEADS_HALF_LEN + 1})"
    if int(model.cfg.n_heads) < 1:
        return "model has no attention heads"
    return None


def fourier_applicable(model: HookedTransformer) -> str | None:
    """None when the Fourier detector applies (modular-addition shape), else the reason it does not."""
    cfg = model.cfg
    p = getattr(cfg, "d_vocab_out", -1)
    if cfg.n_layers != 1 or cfg.attn_only or not cfg.d_mlp:
        return "not a one-layer model with an MLP"
    if p is None or p < 3 or p % 2 == 0 or cfg.d_vocab < p + 1 or cfg.n_ctx < 3:
        return f"output vocabulary d_vocab_out={p} is not an odd modulus with an '=' token"
    return None


@dataclass(frozen=True)
class RunPlan:
    """What every checkpoint of one run is scored with (built once per run, shipped to workers)."""

    detectors: tuple[str, ...]
    tokens: torch.Tensor | None = None  # heads probe, fixed across the run's checkpoints
    train_mask: torch.Tensor | None = None
    loss_frequencies: tuple[int, ...] | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # detector -> why it does not apply


def plan_run(refs: Sequence[CheckpointRef], detectors: Sequence[str]) -> RunPlan:
    """Detectors that apply to the run, the fixed probe and the Fourier context, from its latest readable checkpoint.

    When no checkpoint of the run can be read, every requested detector is planned and each
    checkpoint becomes an error row when scored.
    """
    model = None
    for ref in sorted(refs, reverse=True):
        try:
            model, _ = load_into_cache(ref.path)
            break
        except Exception:  # an unreadable checkpoint is reported when it is scored
            continue
    if model is None:
        return RunPlan(tuple(detectors))
    chosen, skipped = [], {}
    tokens = mask = freqs = None
    for name in detectors:
        why = heads_applicable(model) if name == "heads" else fourier_applicable(model)
        if why is not None:
            skipped[name] = why
            continue
        chosen.append(name)
        if name == "heads":
            from circuits import repeated_tokens

            tokens = repeated_tokens(model)
        else:
            from circuits import key_frequencies
            from interp.fourier_runs import run_train_mask

            try:
                mask = run_train_mask(refs[0].run)
            except ValueError:
                mask = None
            try:
                freqs = tuple(key_frequencies(model))
            except ValueError:
                freqs = None
    return RunPlan(tuple(chosen), tokens, mask, freqs, skipped)


# ---------------------------------------------------------------------------------------------
# scoring one checkpoint (runs in a worker)


@dataclass(frozen=True)
class ScoreTask:
    """One checkpoint and the detectors to run on it."""

    ref: CheckpointRef
    detectors: tuple[str, ...]
    plan: RunPlan


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, (CheckpointError, FileNotFoundError)) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _head_rows(model: HookedTransformer, plan: RunPlan) -> list[dict[str, Any]]:
    from circuits import induction_heads

    table = induction_heads(model, tokens=plan.tokens)
    rows = []
    for rec in table.to_dict("records"):
        for metric in HEAD_METRICS:
            rows.append({"layer": int(rec["layer"]), "head": int(rec["head"]), "metric": metric,
                         "value": float(rec[metric])})
    return rows


def _fourier_rows(model: HookedTransformer, plan: RunPlan) -> list[dict[str, Any]]:
    from circuits import fourier_report

    report = fourier_report(model, train_mask=plan.train_mask, key_freqs=plan.loss_frequencies)
    rows = [{"metric": name, "value": float(value)} for name, value in report.scalars().items()]
    rows += [{"metric": "key_frequency", "value": float(k)} for k in report.key_frequencies]
    return rows


_DETECTOR_ROWS: dict[str, Callable[[HookedTransformer, RunPlan], list[dict[str, Any]]]] = {
    "heads": _head_rows,
    "fourier": _fourier_rows,
}


def score_task(task: ScoreTask) -> list[dict[str, Any]]:
    """Rows of the long table for one checkpoint; never raises for a bad checkpoint or detector."""
    ref = task.ref
    base = {"run": ref.run, "checkpoint": ref.checkpoint, "step": ref.step}
    try:
        model, step = load_into_cache(ref.path)
    except Exception as exc:  # any failure to read becomes an error row; scoring goes on
        return [{**base, "detector": "load", "metric": ERROR_METRIC, "value": float("nan"), "error": _reason(exc)}]
    if step is not None:
        base["step"] = step
    rows: list[dict[str, Any]] = []
    for name in task.detectors:
        try:
            found = _DETECTOR_ROWS[name](model, task.plan)
        except Exception as exc:  # a detector failing on one checkpoint (e.g. NaN weights) is recorded
            found = [{"metric": ERROR_METRIC, "value": float("nan"), "error": _reason(exc)}]
        rows += [{**base, "detector": name, "error": "", **row} for row in found]
    return rows


def _lost_rows(task: ScoreTask, exc: BaseException) -> list[dict[str, Any]]:
    """The error row of a checkpoint whose worker process died under it (twice)."""
    ref = task.ref
    return [{"run": ref.run, "checkpoint": ref.checkpoint, "step": ref.step, "detector": "load",
             "metric": ERROR_METRIC, "value": float("nan"),
             "error": f"the worker process died while scoring this checkpoint ({type(exc).__name__})"}]


# ---------------------------------------------------------------------------------------------
# the batch


def drop_failed(existing: pd.DataFrame | None) -> pd.DataFrame:
    """``existing`` without the checkpoints that have an error row (they will be scored again)."""
    if existing is None or existing.empty:
        return empty_table()
    _, bad = _done_keys(existing)
    keep = [(r, c) not in bad for r, c in zip(existing["run"], existing["checkpoint"])]
    return existing[pd.Series(keep, index=existing.index, dtype=bool)]


def _done_keys(existing: pd.DataFrame | None) -> tuple[set[tuple[str, str, str]], set[tuple[str, str]]]:
    """(run, checkpoint, detector) already scored, and (run, checkpoint) with an error row (rescored)."""
    if existing is None or existing.empty:
        return set(), set()
    failed = existing[existing["metric"] == ERROR_METRIC]
    bad = set(zip(failed["run"], failed["checkpoint"]))
    ok = existing[existing["metric"] != ERROR_METRIC]
    done = {k for k in zip(ok["run"], ok["checkpoint"], ok["detector"]) if (k[0], k[1]) not in bad}
    return done, bad


def score_checkpoints(
    paths: str | Path | Iterable[str | Path],
    detectors: Sequence[str] = DETECTORS,
    *,
    existing: pd.DataFrame | None = None,
    workers: int = 1,
    scheduler: Any = None,
    executor: Executor | None = None,
    quiet: bool = True,
    on_checkpoint: Callable[[pd.DataFrame], None] | None = None,
) -> pd.DataFrame:
    """Score every checkpoint under ``paths`` with ``detectors``; return the long table.

    Args:
        paths: run directories, checkpoint files, folders of runs, or globs (:func:`find_checkpoints`).
        detectors: any of ``"heads"``, ``"fourier"`` (module docstring); those that do not apply
            to a run's model are skipped for that run.
        existing: a table from an earlier call: its (checkpoint, detector) pairs are not scored
            again and its rows are kept; checkpoints with an error row in it are scored again.
        workers: local processes (1: in this process). ``scheduler``: a Dask scheduler address
            or ``distributed.Client`` instead. ``executor``: any :class:`interp.executors.Executor`
            (then ``workers`` and ``scheduler`` are ignored and the executor is left open).
        quiet: no progress bar (the default; the CLI turns it on).
        on_checkpoint: called in this process with each checkpoint's new rows as they arrive.

    Returns the table of :mod:`interp.score_table` (``run, checkpoint, step, detector, layer, head,
    metric, value, error``) in canonical order: ``existing`` (less rescored checkpoints) plus
    the new rows. ``table.attrs["skipped"]`` maps run -> {detector: reason} for detectors that
    did not apply; ``attrs["n_scored"]``, ``attrs["n_failed"]`` count this call's checkpoints.
    """
    from tqdm.auto import tqdm

    unknown = [d for d in detectors if d not in DETECTORS]
    if unknown or not detectors:
        raise ValueError(f"unknown detector(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(DETECTORS)}")
    detectors = tuple(dict.fromkeys(detectors))
    refs = find_checkpoints(paths)
    if not refs:
        raise FileNotFoundError(f"no checkpoints found under {', '.join(map(str, [paths] if isinstance(paths, (str, Path)) else paths))}")
    done, _ = _done_keys(existing)
    kept = drop_failed(existing)

    tasks: list[ScoreTask] = []
    skipped: dict[str, dict[str, str]] = {}
    by_run: dict[str, list[CheckpointRef]] = {}
    for ref in refs:
        by_run.setdefault(ref.run, []).append(ref)
    for run, run_refs in by_run.items():
        todo = [r for r in run_refs if any((r.run, r.checkpoint, d) not in done for d in detectors)]
        if not todo:
            continue
        plan = plan_run(run_refs, detectors)
        if plan.skipped:
            skipped[run] = dict(plan.skipped)
        for ref in todo:
            need = tuple(d for d in plan.detectors if (ref.run, ref.checkpoint, d) not in done)
            if need:
                tasks.append(ScoreTask(ref, need, plan))

    new: list[dict[str, Any]] = []
    n_failed = 0
    own = executor is None
    executor = executor or make_executor(workers, scheduler)
    bar = tqdm(total=len(tasks), desc="score", unit="ckpt", disable=quiet)
    try:
        for rows in executor.map_unordered(score_task, tasks, lost=_lost_rows):
            new.extend(rows)
            n_failed += any(r["metric"] == ERROR_METRIC for r in rows)
            if on_checkpoint is not None and rows:
                on_checkpoint(canonical(rows))
            bar.update(1)
    finally:
        bar.close()
        if own:
            executor.close()
    table = canonical(pd.concat([kept, canonical(new)], ignore_index=True)) if new else canonical(kept)
    table.attrs.update(skipped=skipped, n_scored=len(tasks), n_failed=n_failed)
    return table
