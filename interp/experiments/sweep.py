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
Cells run on the executors of batch scoring (this process, ``workers`` local processes or a
Dask scheduler, :mod:`interp.executors`; a Dask cluster's workers must see ``DIR``). Each row
reaches ``runs.csv`` as its cell finishes, merged under the file's lock (:func:`interp.files.locked`):
two sweeps writing one ``DIR`` keep each other's rows, and a cell being trained by one is
waited for, not trained twice.

Grid keys are fields of :class:`interp.presets.TrainOptions`: those of the training loop
(:data:`LOOP_OPTIONS`) and those the task reads (its ``option_names``: ``p, frac_train,
d_model, float64_loss`` for modadd). Every value is checked before anything trains, by building
the task and its model config, so a bad key or value is one clear error naming it.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from interp.scoring.executors import make_executor
from interp.base.files import atomic_write, holds_nothing, locked
from interp.tasks.models import build_model
from interp.tasks.presets import TrainOptions, preset
from interp.runs.layout import METRICS_FILE, RUN_FILE, RunError
from interp.runs.record import read_run_info, run_train_mask
from interp.analysis.split_memorization import (
    MEASURED_BITS_PER_PARAMETER,
    capacity_bits,
    dataset_bits,
    memorized_bits,
)
from interp.tasks.registry import TASKS, make_task
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
]

SWEEP_FILE = "runs.csv"
RUNS_DIR = "runs"
#: Accuracy that counts as reached for ``train99_step`` and ``test99_step``.
REACHED_ACCURACY = 0.99
#: ``TrainOptions`` fields the training loop itself reads, so every task takes them in a grid.
LOOP_OPTIONS = ("steps", "lr", "weight_decay", "weight_decay_end", "weight_decay_ramp_start", "warmup_steps",
                "lr_schedule", "grokfast_alpha", "grokfast_lambda", "eval_every", "checkpoint_every")
#: Grid keys whose values must be positive.
_POSITIVE = {"steps", "lr", "eval_every", "checkpoint_every", "batch_size", "p", "d_model"}
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
class SweepCell:
    """One run of a sweep: the task and preset, the grid values (sorted by key), the seed."""

    task: str
    preset: str
    values: tuple[tuple[str, Any], ...]
    seed: int

    @property
    def name(self) -> str:
        """The run's folder under ``DIR/runs/``: ``d_model=32,frac_train=0.3,seed=0``."""
        return ",".join(f"{key}={value}" for key, value in (*self.values, ("seed", self.seed)))

    def options(self) -> TrainOptions:
        return dataclasses.replace(preset(self.task, self.preset), seed=self.seed, **dict(self.values))

    def columns(self) -> dict[str, Any]:
        return {"cell": self.name, "task": self.task, "preset": self.preset, **dict(self.values), "seed": self.seed}


@dataclass(frozen=True)
class SweepResult:
    """What :func:`sweep` did: the whole ``runs.csv`` table, its path, the page, and counts."""

    table: pd.DataFrame
    path: Path
    page: Path
    n_trained: int
    n_failed: int


# ---------------------------------------------------------------------------------------------
# the grid


def _field_types() -> dict[str, str]:
    return {f.name: str(f.type) for f in dataclasses.fields(TrainOptions)}


def sweepable_options(task: str) -> tuple[str, ...]:
    """The grid keys ``task`` accepts: the loop's options and the task's own ``option_names``."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(sorted(TASKS))}")
    return (*LOOP_OPTIONS, *getattr(TASKS[task], "option_names", ()))


_EXPECTED = {"int": "an integer", "float": "a number", "bool": "true or false"}


def _base_type(kind: str) -> str:
    """``"int | None"`` -> ``"int"``: the type of a ``TrainOptions`` field, without its None."""
    return kind.replace(" | None", "").strip()


def _parse_value(key: str, kind: str, text: str) -> Any:
    base = _base_type(kind)
    if base not in (*_EXPECTED, "str"):
        raise ValueError(f"grid key {key} cannot be swept (a {base})")
    try:
        if base == "int":
            value: Any = int(text)
        elif base == "float":
            value = float(text)
            if not math.isfinite(value):
                raise ValueError
        elif base == "bool":
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            value = text.lower() in ("true", "1")
        else:
            value = text
    except ValueError:
        raise ValueError(f"bad grid value {key}={text}: expected {_EXPECTED[base]}") from None
    if key in _POSITIVE and value <= 0:
        raise ValueError(f"bad grid value {key}={text}: must be positive")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        raise ValueError(f"bad grid value {key}={text}: must not be negative")
    return value


def _check_key(task: str, key: str) -> str:
    types = _field_types()
    if key == "seed":
        raise ValueError("seed is not a grid key; give the seeds with --seeds")
    allowed = sweepable_options(task)
    if key not in allowed:
        why = ("not a training option" if key not in types
               else f"not an option the {task} task or the training loop reads")
        raise ValueError(f"bad grid key {key!r}: {why}; {task} takes {', '.join(sorted(allowed))}")
    return types[key]


def parse_grid(task: str, specs: Sequence[str]) -> dict[str, list[Any]]:
    """``["d_model=16,32", "frac_train=0.3"]`` -> ``{"d_model": [16, 32], "frac_train": [0.3]}``.

    Values are parsed as the type of their ``TrainOptions`` field. ``ValueError`` naming the bad
    key or value: not ``KEY=V1,V2``, a repeated key, a key ``task`` does not take, a value of the
    wrong type, a negative value, or a repeated value.
    """
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        key, sep, values = (part.strip() for part in str(spec).partition("="))
        texts = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key or not texts:
            raise ValueError(f"bad --grid {spec!r}: expected KEY=VALUE[,VALUE...], e.g. d_model=16,32")
        if key in grid:
            raise ValueError(f"grid key {key} is given twice")
        kind = _check_key(task, key)
        parsed = [_parse_value(key, kind, text) for text in texts]
        if len(set(parsed)) != len(parsed):
            raise ValueError(f"grid key {key} repeats a value: {values}")
        grid[key] = parsed
    return grid


def sweep_cells(task: str, preset_name: str, grid: Mapping[str, Sequence[Any]],
                seeds: Sequence[int]) -> list[SweepCell]:
    """Every combination of the grid's values, for every seed, checked before anything trains.

    Values are parsed (from their text) as in :func:`parse_grid`. Each value, then each cell, is checked by
    building its options, task and model config: ``ValueError`` naming the bad key and value
    (or the cell) and why it does not fit.
    """
    preset(task, preset_name)  # unknown task or preset: its own clear error
    if not seeds or any(int(s) < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct non-negative integers, got {list(seeds)}")
    checked: dict[str, list[Any]] = {}
    for key in sorted(grid):
        kind = _check_key(task, key)
        values = [_parse_value(key, kind, str(v)) for v in grid[key]]
        if not values:
            raise ValueError(f"grid key {key} has no values")
        for value in values:
            _check_fits(SweepCell(task, preset_name, ((key, value),), int(seeds[0])), f"bad grid value {key}={value}")
        checked[key] = values
    cells = [SweepCell(task, preset_name, tuple(zip(checked, combo)), int(seed))
             for combo in itertools.product(*checked.values()) for seed in seeds]
    for cell in cells:
        _check_fits(cell, f"grid cell {cell.name} does not fit {task}/{preset_name}")
    return cells


def _check_fits(cell: SweepCell, what: str) -> None:
    try:
        make_task(cell.options()).model_config()
    except (ValueError, TypeError, AssertionError) as exc:
        raise ValueError(f"{what}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# one cell


def run_summary(run_dir: str | Path, bits_per_parameter: float = MEASURED_BITS_PER_PARAMETER) -> dict[str, Any]:
    """The :data:`RESULT_COLUMNS` of a finished run (``seconds`` and ``error`` aside), from its files.

    Memorised bits come from the train and test losses of every row of ``metrics.csv``; they and
    ``dataset_bits`` are NaN for a run without a train/test split, as are the 99 % steps for a
    run whose metrics have no ``train_acc`` / ``test_acc``.
    """
    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    if info is None:
        raise RunError(f"{run_dir} holds no {RUN_FILE}")
    model = build_model(info["model_config"])
    params = sum(p.numel() for p in model.parameters())
    metrics = pd.read_csv(run_dir / METRICS_FILE)
    try:
        mask = run_train_mask(run_dir)
    except RunError:
        raise
    except ValueError:  # a run of a task without a split
        mask = None
    row: dict[str, Any] = {"params": params, "capacity_bits": capacity_bits(params, bits_per_parameter),
                           "bits_per_parameter": bits_per_parameter, "dataset_bits": math.nan,
                           "peak_memorized_bits": math.nan, "peak_step": None,
                           "steps": int(info["training"]["steps"])}
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
    info = read_run_info(run_dir)
    if info is None:
        if not holds_nothing(run_dir):
            raise RunError(f"{run_dir} exists and holds no {RUN_FILE}; delete it to train the cell again")
        return False
    try:
        recorded = TrainOptions.from_dict(info["training"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(f"{run_dir}/{RUN_FILE} is unreadable ({exc})") from None
    if recorded != options:
        theirs, ours = recorded.to_dict(), options.to_dict()
        diff = ", ".join(f"{k} {theirs[k]!r} not {ours[k]!r}" for k in ours if theirs[k] != ours[k])
        raise RunError(f"{run_dir} holds a run trained with other options ({diff}); delete it or choose another --out")
    return True


def _run_cell(job: tuple[SweepCell, str, float]) -> dict[str, Any]:
    """Executor entry point: train (or resume) one cell, return its row; an error row if it fails."""
    cell, runs_dir, bits_per_parameter = job
    start = time.perf_counter()
    run_dir = Path(runs_dir) / cell.name
    try:
        options = cell.options()
        with locked(run_dir):  # a second sweep on the same cell waits, then finds it finished
            train(options, run_dir, resume=_prepare_run_dir(run_dir, options), quiet=True)
            row = run_summary(run_dir, bits_per_parameter)
    except Exception as exc:  # one bad cell must not stop the sweep; the reason is kept
        return _error_row(cell, exc, time.perf_counter() - start)
    return {**cell.columns(), **row, "seconds": time.perf_counter() - start, "error": ""}


def _error_row(cell: SweepCell, exc: BaseException, seconds: float = math.nan) -> dict[str, Any]:
    text = str(exc).strip().splitlines()
    return {**cell.columns(), "seconds": seconds, "error": f"{type(exc).__name__}: {text[0] if text else ''}"}


def _lost(job: tuple[SweepCell, str, float], exc: BaseException) -> dict[str, Any]:
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
        raise ValueError(f"{path} is not a sweep table (no column {', '.join(missing)}); choose another --out")
    return _ordered(table)


def _ordered(table: pd.DataFrame) -> pd.DataFrame:
    """Columns: cell, task, preset, the grid keys (sorted), seed, results; rows by grid values."""
    grid = sorted(c for c in table.columns if c not in (*_LEAD, "seed", *RESULT_COLUMNS))
    table = table.reindex(columns=[*_LEAD, *grid, "seed", *RESULT_COLUMNS])
    table["error"] = table["error"].astype(object).fillna("").astype(str)
    types = _field_types()
    for column in (*_INTEGER_COLUMNS, *(c for c in grid if _base_type(types.get(c, "")) == "int")):
        table[column] = pd.to_numeric(table[column], errors="coerce").round().astype("Int64")
    return table.sort_values(["task", "preset", *grid, "seed"], kind="stable", ignore_index=True)


def _merge_row(path: Path, row: dict[str, Any]) -> pd.DataFrame:
    """Write ``row`` into ``runs.csv`` under its lock, replacing the cell's old row, keeping all others."""
    with locked(path):
        current = read_sweep(path) if path.exists() else pd.DataFrame(columns=[*_LEAD, "seed", *RESULT_COLUMNS])
        current = current[current["cell"] != row["cell"]]
        new = pd.DataFrame([row])
        table = _ordered(pd.concat([current, new], ignore_index=True) if len(current) else new)
        atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))
    return table


# ---------------------------------------------------------------------------------------------
# the sweep


def _cost(cell: SweepCell) -> float:
    """A rough cost, to start the biggest cells first (workers do not wait on one long last cell)."""
    options = cell.options()
    cfg = make_task(options).model_config()
    return options.steps * cfg.n_layers * cfg.d_model * (cfg.d_mlp or cfg.d_model) * (options.frac_train or 1.0)


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
) -> SweepResult:
    """Train every cell of ``grid`` x ``seeds`` into ``out``, restartable; see the module docstring.

    Cells already in ``out/runs.csv`` without error are kept; the rest are trained (resumed when
    their run directory holds a partial run). Writes ``out/runs.csv`` as cells finish and the
    sweep page ``out/sweep.html`` at the end (:mod:`interp.sweep_report`). ``ValueError`` for a
    bad grid, or when a finished cell's run was trained with other options than the cell's.
    """
    from interp.base.progress_bar import progress_bar
    from interp.experiments.sweep_page import write_sweep_report

    if not bits_per_parameter > 0:
        raise ValueError(f"bits per parameter must be positive, got {bits_per_parameter}")
    cells = sweep_cells(task, preset_name, grid, seeds)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file, not a directory")
    path, runs_dir = out / SWEEP_FILE, out / RUNS_DIR
    runs_dir.mkdir(parents=True, exist_ok=True)
    existing = read_sweep(path) if path.exists() else None
    finished = set() if existing is None else set(existing.loc[existing["error"] == "", "cell"])
    for cell in cells:
        if cell.name in finished:
            _prepare_run_dir(runs_dir / cell.name, cell.options())  # refuses a run of other options
    todo = sorted((c for c in cells if c.name not in finished), key=_cost, reverse=True)
    jobs = [(cell, str(runs_dir), float(bits_per_parameter)) for cell in todo]
    failed = 0
    executor = make_executor(workers, scheduler)
    try:
        results = executor.map_unordered(_run_cell, jobs, lost=_lost)
        for row in progress_bar(results, total=len(jobs), quiet=quiet, desc=f"sweep {task}", unit="cell"):
            failed += bool(row["error"])
            _merge_row(path, row)
    finally:
        executor.close()
    table = read_sweep(path) if path.exists() else pd.DataFrame(columns=[*_LEAD, "seed", *RESULT_COLUMNS])
    page = write_sweep_report(table, out / "sweep.html")
    return SweepResult(table, path, page, len(jobs), failed)
