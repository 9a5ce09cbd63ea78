"""Training sweeps (``interp sweep``): a grid of runs of one task and preset, restartable.

A sweep trains one run per *cell* of a grid (every combination of the ``--grid`` values, times
every seed) into ``DIR/runs/<cell>/``, a standard run directory (``docs/architecture.md``, "Run
format"), and keeps ``DIR/runs.csv``, one row per cell (:data:`RESULT_COLUMNS`): the grid values,
the seed, the model's parameters, the bits in its training labels and its capacity
(:mod:`interp.split_memorization`), the peak memorised bits over training, the steps at which
train and test accuracy first reached 99 %, the seconds it took, and the error of a cell that
failed (a failed cell does not stop the sweep).

Restartable: a cell with a row without error is finished and kept; any other cell is trained,
resuming its run directory where a killed sweep left it (``interp train --resume``). A run
directory trained with other options than the cell's is refused, never silently reused.
Cells run through the job runner of batch scoring (:func:`interp.scoring.jobs.run_jobs`: this
process, ``workers`` local processes or a Dask scheduler; a Dask cluster's workers must see
``DIR``), biggest first. Each row reaches ``runs.csv`` as its cell finishes, merged under the
file's lock (:meth:`interp.scoring.jobs.TableFile.merge`): two sweeps writing one ``DIR`` keep
each other's rows, and a cell being trained by one is waited for, not trained twice.

The grid (its keys, values and cells, all checked before anything trains) is in
:mod:`interp.experiments.sweep_grid`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from interp.analysis.capacity_figures import MAX_BITS_PER_PARAMETER
from interp.analysis.split_memorization import (
    MEASURED_BITS_PER_PARAMETER,
    capacity_bits,
    dataset_bits,
    memorized_bits,
)
from interp.base.files import atomic_write_text, holds_nothing, locked, out_folder
from interp.experiments.sweep_grid import (
    LOOP_OPTIONS,
    SweepCell,
    base_type,
    option_types,
    parse_grid,
    sweep_cells,
    sweepable_options,
)
from interp.runs.layout import RUN_FILE, RunError
from interp.runs.record import read_metrics, read_run, run_train_mask
from interp.experiments.tables import CUT_SHORT, checked_whole_numbers, incomplete_rows
from interp.scoring.jobs import TableFile, pending, run_jobs
from interp.base.device import device_name
from interp.tasks.models import build_model
from interp.tasks.presets import TrainOptions
from interp.tasks.registry import make_task
from interp.training.loop import train

__all__ = [
    "LOOP_OPTIONS",
    "RESULT_COLUMNS",
    "RUNS_DIR",
    "SWEEP_FILE",
    "SweepCell",
    "SweepResult",
    "parse_grid",
    "read_sweep",
    "run_summary",
    "sweep",
    "sweep_cells",
    "sweep_table",
    "sweepable_options",
]

SWEEP_FILE = "runs.csv"
#: The folder's figure of bits per parameter, recorded by its first sweep (:func:`_claim_capacity_figure`).
FIGURE_FILE = "sweep.json"
RUNS_DIR = "runs"
#: Accuracy that counts as reached for ``train99_step`` and ``test99_step``.
REACHED_ACCURACY = 0.99
#: Columns of ``runs.csv`` after the cell's name, task, preset, grid values and seed. ``params``:
#: every parameter of the model; ``dataset_bits``, ``capacity_bits``, ``bits_per_parameter``:
#: :mod:`interp.split_memorization` (capacity = bits_per_parameter x params);
#: ``peak_memorized_bits``: the largest memorised bits over the evaluations of ``metrics.csv``,
#: at ``peak_step``; ``train99_step``, ``test99_step``: first evaluation with accuracy >= 0.99
#: (empty when never reached); ``steps``: the run's length; ``seconds``: wall time this sweep
#: spent on the cell (a resumed cell counts only its last part); ``error``: why it failed.
RESULT_COLUMNS = ("params", "dataset_bits", "capacity_bits", "bits_per_parameter", "peak_memorized_bits",
                  "peak_step", "train99_step", "test99_step", "steps", "seconds", "error")
_LEAD = ("cell", "task", "preset")
_INTEGER_COLUMNS = ("seed", "params", "peak_step", "train99_step", "test99_step", "steps")


@dataclass(frozen=True)
class SweepResult:
    """What :func:`sweep` did: the whole ``runs.csv`` table, its path, the page, and counts."""

    table: pd.DataFrame
    path: Path
    page: Path
    n_trained: int
    n_failed: int
    cells: tuple[str, ...] = ()  # the names of this call's cells (the table may hold other sweeps')


# ---------------------------------------------------------------------------------------------
# one cell


def run_summary(run_dir: str | Path, bits_per_parameter: float = MEASURED_BITS_PER_PARAMETER) -> dict[str, Any]:
    """The :data:`RESULT_COLUMNS` of a finished run (``seconds`` and ``error`` aside), from its files.

    Memorised bits come from the train and test losses of every row of ``metrics.csv``; they and
    ``dataset_bits`` are NaN for a run without a train/test split, as are the 99 % steps for a
    run whose metrics have no ``train_acc`` / ``test_acc``.
    """
    run_dir = Path(run_dir)
    info = read_run(run_dir)
    if info is None:
        raise RunError(f"{run_dir} holds no {RUN_FILE}")
    model = build_model(info.model_config)
    params = sum(p.numel() for p in model.parameters())
    metrics = pd.DataFrame(read_metrics(run_dir))
    try:
        mask = run_train_mask(run_dir)
    except RunError:
        raise
    except ValueError:  # a run of a task without a split
        mask = None
    row: dict[str, Any] = {"params": params, "capacity_bits": capacity_bits(params, bits_per_parameter),
                           "bits_per_parameter": bits_per_parameter, "dataset_bits": math.nan,
                           "peak_memorized_bits": math.nan, "peak_step": None,
                           "steps": info.options().steps}
    if mask is not None and not bool(mask.all()) and {"train_loss", "test_loss"} <= set(metrics.columns):
        n_train = int(mask.sum())
        bits = pd.Series(memorized_bits(metrics["train_loss"], metrics["test_loss"], n_train, model.cfg.d_vocab_out),
                         index=metrics.index)
        row["dataset_bits"] = dataset_bits(n_train, model.cfg.d_vocab_out)
        if bits.notna().any():
            row["peak_memorized_bits"] = float(bits.max())
            row["peak_step"] = int(metrics.loc[bits.idxmax(), "step"])
    for split in ("train", "test"):
        column = f"{split}_acc"
        reached = metrics.loc[metrics[column] >= REACHED_ACCURACY, "step"] if column in metrics else ()
        row[f"{split}99_step"] = int(reached.min()) if len(reached) else None
    return row


def _prepare_run_dir(run_dir: Path, options: TrainOptions) -> bool:
    """Whether to resume ``run_dir``; ``RunError`` when it holds something else than this cell's run."""
    info = read_run(run_dir)
    if info is None:
        if not holds_nothing(run_dir):
            raise RunError(f"{run_dir} exists and holds no {RUN_FILE}; delete it to train the cell again")
        return False
    recorded = info.options()
    if recorded != options:
        theirs, ours = recorded.to_dict(), options.to_dict()
        diff = ", ".join(f"{k} {theirs[k]!r} not {ours[k]!r}" for k in ours if theirs[k] != ours[k])
        raise RunError(f"{run_dir} holds a run trained with other options ({diff}); delete it or choose another --out-dir")
    return True


def _run_cell(job: tuple[SweepCell, str, float, str]) -> dict[str, Any]:
    """Executor entry point: train (or resume) one cell, return its row; an error row if it fails."""
    cell, runs_dir, bits_per_parameter, device = job
    start = time.perf_counter()
    run_dir = Path(runs_dir) / cell.name
    try:
        options = cell.options()
        with locked(run_dir):  # a second sweep on the same cell waits, then finds it finished
            train(options, run_dir, resume=_prepare_run_dir(run_dir, options), quiet=True, device=device)
            row = run_summary(run_dir, bits_per_parameter)
    except Exception as exc:  # one bad cell must not stop the sweep; the reason is kept
        return _error_row(cell, exc, time.perf_counter() - start)
    return {**cell.columns(), **row, "seconds": time.perf_counter() - start, "error": ""}


def _error_row(cell: SweepCell, exc: BaseException, seconds: float = math.nan) -> dict[str, Any]:
    """The row of a cell that failed: its columns, the seconds spent and the first line of the reason."""
    text = str(exc).strip().splitlines()
    return {**cell.columns(), "seconds": seconds, "error": f"{type(exc).__name__}: {text[0] if text else ''}"}


def _lost(job: tuple[SweepCell, str, float, str], exc: BaseException) -> dict[str, Any]:
    """The error row of a cell whose worker process died under it."""
    return _error_row(job[0], exc)


# ---------------------------------------------------------------------------------------------
# runs.csv


def read_sweep(path: str | Path) -> pd.DataFrame:
    """The table of ``runs.csv`` (or of the sweep directory holding it); ``ValueError`` when it is not one."""
    path = Path(path)
    if path.is_dir():
        path = path / SWEEP_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no sweep table at {path} (interp sweep writes DIR/{SWEEP_FILE})")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a sweep table ({exc})") from None
    missing = [c for c in (*_LEAD, "seed", *RESULT_COLUMNS) if c not in table.columns]
    if missing:
        raise ValueError(f"{path} is not a sweep table (no column {', '.join(missing)}); choose another --out-dir")
    types = option_types()
    checked_whole_numbers(table, [*_INTEGER_COLUMNS, *(c for c in table.columns if base_type(types.get(c, "")) == "int")],
                          path)
    finished = table["error"].isna() | (table["error"].astype(str).str.strip() == "")
    cut = incomplete_rows(table, finished, ("cell", "task", "preset", "params", "steps", "seconds"))
    table["error"] = table["error"].astype(object)
    table.loc[cut, "error"] = CUT_SHORT.format(path.name)
    return _ordered(table)


def _ordered(table: pd.DataFrame) -> pd.DataFrame:
    """Columns: cell, task, preset, the grid keys (sorted), seed, results; rows by grid values."""
    grid = sorted(c for c in table.columns if c not in (*_LEAD, "seed", *RESULT_COLUMNS))
    table = table.reindex(columns=[*_LEAD, *grid, "seed", *RESULT_COLUMNS])
    table["error"] = table["error"].astype(object).fillna("").astype(str)
    types = option_types()
    for column in (*_INTEGER_COLUMNS, *(c for c in grid if base_type(types.get(c, "")) == "int")):
        table[column] = pd.to_numeric(table[column], errors="coerce").round().astype("Int64")
    return table.sort_values(["task", "preset", *grid, "seed"], kind="stable", ignore_index=True)


def _write_csv(table: pd.DataFrame, name: str) -> None:
    """Write ``table`` to the CSV file ``name``, without the index."""
    table.to_csv(name, index=False)


def sweep_table(path: str | Path) -> TableFile:
    """``runs.csv`` at ``path`` as a job runner's table file: a row per cell (by name, task and preset: a sweep of
    another recipe into the same folder at the same time never replaces a finished row), ordered by :func:`_ordered`."""
    return TableFile(Path(path), read=read_sweep, save=_write_csv, key=("cell", "task", "preset"), order=_ordered)


# ---------------------------------------------------------------------------------------------
# the sweep


def _cost(cell: SweepCell) -> float:
    """A rough cost, to start the biggest cells first (workers do not wait on one long last cell)."""
    options = cell.options()
    cfg = make_task(options).model_config()
    return options.steps * cfg.n_layers * cfg.d_model * (cfg.d_mlp or cfg.d_model) * (options.frac_train or 1.0)


def _claim_capacity_figure(existing: pd.DataFrame | None, bits_per_parameter: float, path: Path) -> None:
    """Refuse a figure of bits per parameter other than the folder's (its page's axis and capacity
    line would mix two): the one :data:`FIGURE_FILE` records, else the one the table's finished
    cells used (a folder of an earlier version); record it where the folder has none. Called under
    the table's lock, so that of two sweeps starting at once, the second meets the first's figure."""
    record = path.parent / FIGURE_FILE
    used = set()
    if record.is_file():
        try:
            figure = float(json.loads(record.read_text())["bits_per_parameter"])
            if not 0 < figure < float("inf"):  # json reads NaN and Infinity
                raise ValueError(figure)
            used.add(round(figure, 9))
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{record} is not a sweep's record of its capacity figure; choose another --out-dir") from None
    if existing is not None and "bits_per_parameter" in existing:
        used |= {round(float(v), 9) for v in existing.loc[existing["error"] == "", "bits_per_parameter"].dropna()}
    if used and used != {round(float(bits_per_parameter), 9)}:
        figures = ", ".join(f"{v:g}" for v in sorted(used))
        if existing is None or not (existing["error"] == "").any():  # recorded by a sweep with no cell finished yet
            raise ValueError(f"{record} records {figures} bits per parameter, not {bits_per_parameter:g}, from a sweep "
                             f"into {path.parent} that has no finished cell: if it is no longer running, delete "
                             f"{record.name}; else sweep with that --bits-per-parameter, or into another --out-dir")
        held = f"{path} holds cells at {figures} bits per parameter"
        raise ValueError(f"{held}: its page cannot draw them on one axis; sweep into another --out-dir" if len(used) > 1
                         else f"{held}, not {bits_per_parameter:g}: sweep into it with that --bits-per-parameter, "
                              "or into another --out-dir")
    if not record.is_file():
        atomic_write_text(record, json.dumps({"bits_per_parameter": bits_per_parameter}) + "\n")


def sweep(
    task: str,
    preset_name: str,
    grid: Mapping[str, Sequence[Any]],
    seeds: Sequence[int],
    out: str | Path,
    *,
    workers: int = 1,
    scheduler: Any = None,
    bits_per_parameter: float = MEASURED_BITS_PER_PARAMETER,
    quiet: bool = True,
    device: Any = None,
) -> SweepResult:
    """Train every cell of ``grid`` x ``seeds`` into ``out``, restartable; see the module docstring.

    Cells already in ``out/runs.csv`` without error are kept; the rest are trained (resumed when
    their run directory holds a partial run). Writes ``out/runs.csv`` as cells finish and the
    sweep page ``out/sweep.html`` at the end (:mod:`interp.experiments.sweep_page`). ``ValueError``
    for a bad grid, or when a finished cell's run was trained with other options than the cell's.
    ``device``: where each cell trains (:func:`interp.base.device.resolve_device`; on a Dask
    cluster each worker resolves it on its own machine).
    """
    from interp.experiments.sweep_page import write_sweep_report

    if not 0 < bits_per_parameter <= MAX_BITS_PER_PARAMETER:
        raise ValueError(f"bits per parameter must be a positive number of at most {MAX_BITS_PER_PARAMETER:g}, got "
                         f"{bits_per_parameter}")
    cells = sweep_cells(task, preset_name, grid, seeds)
    out = out_folder(out).absolute()  # workers (a Dask cluster's among them) may run in another directory
    path, runs_dir = out / SWEEP_FILE, out / RUNS_DIR
    runs_dir.mkdir(parents=True, exist_ok=True)
    table_file = sweep_table(path)
    with locked(path):
        existing = table_file.existing()
        _claim_capacity_figure(existing, bits_per_parameter, path)
    finished = set() if existing is None else set(existing.loc[existing["error"] == "", "cell"])
    for cell in cells:
        if cell.name in finished:
            _prepare_run_dir(runs_dir / cell.name, cell.options())  # refuses a run of other options
    todo = pending(cells, key=lambda cell: cell.name, done=finished, cost=_cost)
    target = device_name(device, remote=scheduler is not None)
    jobs = [(cell, str(runs_dir), float(bits_per_parameter), target) for cell in todo]
    ran = run_jobs(_run_cell, jobs, lost=_lost, into=table_file, workers=workers, scheduler=scheduler,
                   spawn=target.startswith("cuda"), quiet=quiet, desc=f"sweep {task}", unit="cell")
    failed = sum(bool(row["error"]) for row in ran.results)
    table = read_sweep(path) if path.exists() else pd.DataFrame(columns=[*_LEAD, "seed", *RESULT_COLUMNS])
    page = write_sweep_report(table, out / "sweep.html")
    return SweepResult(table, path, page, len(jobs), failed, tuple(cell.name for cell in cells))
