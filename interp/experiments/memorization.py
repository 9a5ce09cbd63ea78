"""Memorisation capacity: how many bits a model stores per parameter (Morris et al. 2025).

"How much do language models memorize?" (Morris et al. 2025, arXiv 2505.24832) trains GPT-style
models on uniformly random token sequences, where nothing can be generalised, so all a model
learns about its data set is memorisation. Memorised bits of a sequence ``x`` under the trained
model, against the uniform reference (:mod:`interp.tasks.random_sequences`)::

    mem(x) = S * log2(V) - min(S * log2(V), -log2 p(x | model))

Summed over a data set of ``N`` sequences this grows with ``N`` until the model is full; the
plateau is the model's **capacity** in bits, and capacity / parameters is about 3.6 bits per
parameter for GPT-style models (3.83 in fp32; 2.86-4.23 across their models).

A *cell* (:class:`MemorizationCell`) is one model size trained on one data set to saturation
(:mod:`interp.experiments.memorization_training`, which states the plateau rule that stops it).

**Capacity** of a model (:func:`capacity_table`) is the largest total memorised bits over its data
set sizes, per setting (another seed, sequence length, vocabulary or budget is another model:
``capacity.SETTING``). It is a measured plateau only when that cell stopped on a plateau short of
memorising its whole data set: a cell that memorised everything (``complete``) was limited by
the data, not the model, and gives a lower bound. **Bits per parameter**
(:func:`fit_bits_per_parameter`) is the least-squares slope of capacity against parameter count
through the origin, over the models whose capacity is a measured plateau. Parameters are every
trainable parameter of the ``HookedTransformer`` (embeddings, positions, LayerNorms and
unembedding included), as in the paper.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from interp.base.device import device_name
from interp.base.files import atomic_write, out_folder
from interp.experiments.capacity import capacity_table, fit_bits_per_parameter
from interp.experiments.tables import CUT_SHORT, checked_whole_numbers, incomplete_rows
from interp.scoring.jobs import TableFile, pending, run_jobs
from interp.experiments.memorization_training import MemorizationCell, measure_memorization, train_to_saturation
from interp.tasks.presets import MEMORIZATION_DATASETS, MEMORIZATION_SIZES

__all__ = [
    "CELL_COLUMNS",
    "KEY_COLUMNS",
    "MEMORIZATION_DATASETS",
    "MEMORIZATION_SIZES",
    "MemorizationCell",
    "capacity_table",
    "cells_table",
    "fit_bits_per_parameter",
    "measure_memorization",
    "memorization_sweep",
    "memorization_sweep_to_dir",
    "read_cells",
    "sweep_cells",
    "train_to_saturation",
]

#: Columns of the per-cell table (one row per cell). ``entropy_bits``: N S log2 V of the data set;
#: ``reachable_bits``: the most a causal model can lower its total code length; ``memorized_bits``: total
#: mem(x) at the end; ``fraction``: memorized / reachable (NaN when nothing is reachable; above 1 can
#: happen, mem(x) being clamped per sequence: docs/scores.md); ``bits_per_parameter``: memorized /
#: params; ``stopped_by``: complete, plateau, max_steps or error (the reason then in ``error``);
#: ``max_steps`` and ``plateau_window``: the cell's budget (``interp memorization --budget``).
CELL_COLUMNS = (
    "model", "d_model", "n_layers", "params", "n_sequences", "seq_len", "vocab", "seed", "max_steps", "plateau_window",
    "entropy_bits", "reachable_bits", "memorized_bits", "fraction", "bits_per_parameter", "steps", "stopped_by",
    "seconds", "error",
)


def _run_cell(cell: MemorizationCell, device: str = "cpu") -> dict[str, Any]:
    """Executor entry point: a result row, or an error row (the sweep goes on)."""
    try:
        return train_to_saturation(cell, device=device)
    except Exception as exc:  # one bad cell must not lose the sweep; the reason is kept
        return _error_row(cell, exc)


def _error_row(cell: MemorizationCell, exc: BaseException) -> dict[str, Any]:
    """The row of a cell that failed (or whose worker died): its key columns and the reason."""
    row = {c: None for c in CELL_COLUMNS}
    row.update(model=cell.model, d_model=cell.d_model, n_layers=cell.n_layers, n_sequences=cell.n_sequences,
               seq_len=cell.seq_len, vocab=cell.vocab, seed=cell.seed, max_steps=cell.max_steps,
               plateau_window=cell.plateau_window, stopped_by="error",
               error=f"{type(exc).__name__}: {exc}")
    return row


def sweep_cells(sizes: Iterable[tuple[int, int]], datasets: Iterable[int], **cell_options: Any) -> list[MemorizationCell]:
    """Every (d_model, n_layers) size x data set size, as cells (``cell_options`` for all).

    ``ValueError`` naming the flag when a size (``--sizes``) or a data set size (``--datasets``)
    repeats, or when a data set asks for more sequences than there are distinct ones
    (``vocab ** seq_len``): its sequences would repeat, and the memorised bits, clamped at 0 per
    sequence, would count the noise of the ones a model does not store (an untrained model
    measured several times the reachable bits there).
    """
    sizes, datasets = [(int(d), int(n)) for d, n in sizes], [int(size) for size in datasets]
    for flag, values, shown in (("--sizes", sizes, "{0[0]}x{0[1]}"), ("--datasets", datasets, "{0}")):
        repeated = [value for index, value in enumerate(values) if value in values[:index]]
        if repeated:
            raise ValueError(f"{flag} repeats {shown.format(repeated[0])}")
    seq_len, vocab = cell_options.get("seq_len"), cell_options.get("vocab")
    if seq_len is not None and vocab is not None and max(datasets, default=0) > vocab ** seq_len:
        raise ValueError(f"--datasets {max(datasets)} asks for more sequences than the {vocab ** seq_len} distinct ones "
                         f"of --seq-len {seq_len} --vocab {vocab}")
    return [MemorizationCell(d_model=d, n_layers=n, n_sequences=size, **cell_options)
            for d, n in sizes for size in datasets]


#: The columns naming a cell in the table: a new row replaces the row of the same key.
KEY_COLUMNS = ("d_model", "n_layers", "n_sequences", "seq_len", "vocab", "seed", "max_steps", "plateau_window")
_INTEGER_COLUMNS = (*KEY_COLUMNS, "params", "steps")
_TEXT_COLUMNS = ("model", "stopped_by", "error")


def _key(row: dict[str, Any] | pd.Series) -> tuple:
    """A cell's (or a row's) values of :data:`KEY_COLUMNS`."""
    return tuple(int(row[c]) for c in KEY_COLUMNS)


def own_cells(table: pd.DataFrame, cells: Sequence[MemorizationCell]) -> pd.DataFrame:
    """The rows of ``table`` that are rows of ``cells`` (same :data:`KEY_COLUMNS`)."""
    keys = pd.DataFrame([dataclasses.asdict(cell) for cell in cells], columns=list(KEY_COLUMNS)).astype("Int64")
    return table.merge(keys.drop_duplicates(), on=list(KEY_COLUMNS), how="inner")


def _typed(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with the dtypes of the cell table: integers (missing in error rows), floats, text."""
    table = table.copy()
    for column in CELL_COLUMNS:
        if column == "error":
            table[column] = table[column].astype(object).fillna("").astype(str)
        elif column not in _TEXT_COLUMNS:
            values = pd.to_numeric(table[column], errors="coerce")
            table[column] = values.round().astype("Int64") if column in _INTEGER_COLUMNS else values.astype(float)
    return table


def _ordered(table: pd.DataFrame) -> pd.DataFrame:
    """The cell table: columns :data:`CELL_COLUMNS`, typed, rows by parameters then data set size."""
    table = _typed(table.reindex(columns=list(CELL_COLUMNS)))
    return table.sort_values(["params", "n_sequences"], kind="stable", ignore_index=True)


def memorization_sweep(
    cells: Sequence[MemorizationCell],
    existing: pd.DataFrame | None = None,
    workers: int = 1,
    scheduler: Any = None,
    quiet: bool = True,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    into: TableFile | None = None,
    device: Any = None,
) -> pd.DataFrame:
    """Train every cell (skipping those already in ``existing`` without error); the cell table.

    Cells run through the job runner of batch scoring (:func:`interp.scoring.jobs.run_jobs`):
    this process, ``workers`` local processes, or a Dask scheduler; the biggest first, a cell
    given twice once. A cell that fails becomes a row with ``stopped_by="error"`` and the reason
    in ``error``. Each row goes to ``on_row`` and, with ``into``, is merged into that table file
    as its cell finishes. Returns the rows of ``existing`` without error and the new rows.
    ``device``: where each cell trains (:func:`interp.base.device.resolve_device`).
    """
    done = []
    if existing is not None and not existing.empty:
        done = [r for _, r in existing.iterrows() if r["stopped_by"] != "error"]
    # Biggest first (cost grows with both), so parallel workers do not wait on one long last cell.
    todo = pending(cells, key=lambda c: _key(dataclasses.asdict(c)), done={_key(r) for r in done},
                   cost=lambda c: c.d_model ** 2 * c.n_layers * c.n_sequences)
    target = device_name(device, remote=scheduler is not None)
    ran = run_jobs(functools.partial(_run_cell, device=target), todo, lost=_error_row, into=into, on_result=on_row,
                   workers=workers, scheduler=scheduler, spawn=target.startswith("cuda"), quiet=quiet,
                   desc="memorization")
    return _ordered(pd.DataFrame([dict(r) for r in done] + ran.results, columns=list(CELL_COLUMNS)))


# ---------------------------------------------------------------------------------------------
# the sweep on disk (interp memorization)


@dataclass(frozen=True)
class SweepFiles:
    """What :func:`memorization_sweep_to_dir` wrote, and its tables."""

    cells: pd.DataFrame
    capacity: pd.DataFrame
    bits_per_parameter: float
    cells_path: Path
    report_path: Path


def read_cells(path: str | Path) -> pd.DataFrame | None:
    """The cell table in ``path`` (None when missing), typed; ``ValueError`` when it is not one."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        table = pd.read_csv(path, keep_default_na=False, na_values={"memorized_bits": [""]})
    except (ValueError, UnicodeDecodeError) as exc:  # empty, not text, not CSV
        raise ValueError(f"{path} is not a memorization table ({type(exc).__name__}: {exc})") from None
    budget = ("max_steps", "plateau_window")
    if list(table.columns) == [c for c in CELL_COLUMNS if c not in budget]:  # written before the budget columns
        default = MemorizationCell(d_model=0, n_layers=0, n_sequences=0)
        for column in budget:
            table.insert(CELL_COLUMNS.index(column), column, getattr(default, column))
    if list(table.columns) != list(CELL_COLUMNS):
        raise ValueError(f"{path} is not a memorization table; choose another --out-dir")
    checked_whole_numbers(table, _INTEGER_COLUMNS, path)
    for column in KEY_COLUMNS:  # a row's cell: every row has it, an error row too
        missing = incomplete_rows(table, pd.Series(True, index=table.index), [column])
        if missing.any():
            raise ValueError(f"{path}: row {int(missing.to_numpy().nonzero()[0][0]) + 2} has no {column}, which names "
                             "its cell; fix or delete the row")
    table = _typed(table)
    cut = incomplete_rows(table, table["stopped_by"] != "error", ("params", "memorized_bits", "steps", "stopped_by"))
    table.loc[cut, "error"] = CUT_SHORT.format(path.name)
    table.loc[cut, "stopped_by"] = "error"
    return table


def _write_csv(table: pd.DataFrame, name: str) -> None:
    """Write ``table`` to the CSV file ``name``, without the index."""
    table.to_csv(name, index=False)


def cells_table(out: str | Path) -> TableFile:
    """``OUT/cells.csv`` as a job runner's table file; every write also rewrites ``OUT/capacity.csv`` from it."""
    out = Path(out)

    def write_capacity(table: pd.DataFrame) -> None:
        atomic_write(out / "capacity.csv", lambda name: _write_csv(capacity_table(table), name))

    return TableFile(out / "cells.csv", read=read_cells, save=_write_csv, key=KEY_COLUMNS,
                     frame=lambda rows: pd.DataFrame(rows, columns=list(CELL_COLUMNS)), order=_ordered,
                     after=write_capacity)


def memorization_sweep_to_dir(cells: Sequence[MemorizationCell], out: str | Path, **options: Any) -> SweepFiles:
    """:func:`memorization_sweep` into the directory ``out``, restartable.

    Each finished cell is merged into ``OUT/cells.csv`` under the file's lock (:func:`cells_table`):
    the file is re-read, the cell's old row replaced and every other row kept, so an interrupted
    sweep resumes and jobs writing one ``OUT`` at once keep each other's cells. ``OUT/capacity.csv``
    (:func:`capacity_table`) is rewritten from the merged table under the same lock, and at the end
    ``OUT/memorization.html``. ``options`` go to :func:`memorization_sweep`. Returns the whole
    table of ``cells.csv`` (every job's cells) and its capacity.
    """
    from interp.experiments.memorization_page import write_memorization_report

    out = out_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    into = cells_table(out)
    memorization_sweep(cells, existing=into.existing(), into=into, **options)
    page = out / "memorization.html"

    def write_derived(table: pd.DataFrame) -> None:  # the last job to finish writes the page of every cell
        into.after(table)
        write_memorization_report(table, page)

    table = dataclasses.replace(into, after=write_derived).merge([])
    capacity = capacity_table(table)
    return SweepFiles(table, capacity, fit_bits_per_parameter(capacity), into.path, page)
