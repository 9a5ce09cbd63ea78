"""Restartable batch jobs: plan, skip what is done, run on an executor, merge each result into a table file.

Batch scoring (:mod:`interp.scoring.batch`), training sweeps (:mod:`interp.experiments.sweep`) and
memorisation sweeps (:mod:`interp.experiments.memorization`) are one kind of job: items
(checkpoints, cells), a worker function turning an item into rows, and a table file that holds
the rows of every finished item. :func:`pending` drops the items whose key the caller counts as
done (a row without error, of the same file content, ...) and orders the rest; :func:`run_jobs`
runs them on an executor (:func:`interp.scoring.executors.make_executor`) with a progress bar and
merges each result into the :class:`TableFile` as it arrives.

Every merge holds the file's lock (:func:`interp.base.files.locked`), re-reads the file, drops
the rows the new ones supersede (by default those of the same key), keeps every other row and
writes the whole table atomically (:func:`interp.base.files.atomic_write`). So jobs writing one
file at the same time keep each other's rows, and a job killed at any moment leaves a file with
every result merged so far, which it skips when started again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from interp.base.files import atomic_write, locked
from interp.scoring.executors import Executor, Lost, make_executor

__all__ = ["JobResults", "TableFile", "pending", "run_jobs"]

T = TypeVar("T")


def _unchanged(table: pd.DataFrame) -> pd.DataFrame:
    """The default order of a table file: as merged (the rows kept, then the new ones)."""
    return table


@dataclass(frozen=True)
class TableFile:
    """A table file that jobs merge rows into, and how to read, order and write it.

    ``read(path)``: the table the file holds (an error naming the file when it is not one).
    ``save(table, name)``: write ``table`` to the file ``name`` (a temporary one, renamed into place).
    ``key``: the columns naming an item: new rows replace the rows of their key. ``superseded``
    (optional) replaces that rule: ``superseded(current, new)`` is a boolean per row of
    ``current``, true for the rows to drop. ``frame(rows)``: new row dicts as a table.
    ``order(table)``: the merged table in the file's column and row order. ``after(table)``
    (optional): called under the lock after each write, for files derived from the table.
    """

    path: Path
    read: Callable[[Path], pd.DataFrame]
    save: Callable[[pd.DataFrame, str], None]
    key: tuple[str, ...] = ()
    frame: Callable[[list[dict[str, Any]]], pd.DataFrame] = pd.DataFrame
    order: Callable[[pd.DataFrame], pd.DataFrame] = _unchanged
    superseded: Callable[[pd.DataFrame, pd.DataFrame], Any] | None = None
    after: Callable[[pd.DataFrame], None] | None = None

    def existing(self) -> pd.DataFrame | None:
        """The table the file holds now (read without the lock: files are replaced whole), or None."""
        return self.read(self.path) if self.path.exists() else None

    def merge(self, rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
        """Merge ``rows`` into the file under its lock; return the table written.

        Re-reads the file, drops the rows that ``rows`` supersede, keeps every other row and
        writes the result atomically. With no rows it rewrites the file as it is (creating it
        when missing) and runs ``after``: derived files brought up to date.
        """
        new = self.frame(list(rows))
        with locked(self.path):
            current = self.existing()
            if current is None or (len(current) == 0 and len(new)):
                table = self.order(new)
            elif len(new) == 0:
                table = self.order(current)
            else:
                current = current[~pd.Series(self._superseded(current, new), index=current.index, dtype=bool)]
                table = self.order(pd.concat([current, new], ignore_index=True) if len(current) else new)
            atomic_write(self.path, lambda name: self.save(table, name))
            if self.after is not None:
                self.after(table)
        return table

    def _superseded(self, current: pd.DataFrame, new: pd.DataFrame) -> Any:
        """Per row of ``current``, whether ``new`` replaces it: ``superseded``, else the same key."""
        if self.superseded is not None:
            return self.superseded(current, new)
        if not self.key:
            raise ValueError(f"{self.path}: a table file needs a key or a superseded rule")
        columns = list(self.key)
        replaced = set(new[columns].itertuples(index=False, name=None))
        return [row in replaced for row in current[columns].itertuples(index=False, name=None)]


@dataclass(frozen=True)
class JobResults:
    """What :func:`run_jobs` did: every result (in the order they finished) and the table last written."""

    results: list[Any]
    table: pd.DataFrame | None  # the whole file as this job last wrote it; None when it wrote nothing


def pending(items: Iterable[T], key: Callable[[T], Hashable], done: Iterable[Hashable] = (),
            cost: Callable[[T], float] | None = None) -> list[T]:
    """The items still to run: those whose key is not in ``done``, each key once (its first item).

    With ``cost``, the most costly come first (ties keep their order), so parallel workers do
    not wait on one long last item.
    """
    seen = set(done)
    todo = []
    for item in items:
        name = key(item)
        if name not in seen:
            seen.add(name)
            todo.append(item)
    return sorted(todo, key=cost, reverse=True) if cost is not None else todo


def _one_row(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The default ``rows_of``: a result is one row."""
    return [result]


def run_jobs(
    fn: Callable[[T], Any],
    items: Iterable[T],
    *,
    lost: Lost | None = None,
    into: TableFile | None = None,
    rows_of: Callable[[Any], list[dict[str, Any]]] = _one_row,
    flush_seconds: float = 0.0,
    on_result: Callable[[Any], None] | None = None,
    workers: int = 1,
    scheduler: Any = None,
    executor: Executor | None = None,
    spawn: bool = False,
    wait: bool = True,
    quiet: bool = True,
    desc: str | None = None,
    unit: str = "it",
) -> JobResults:
    """Run ``fn`` on every item on an executor, merging each result's rows into ``into`` as it arrives.

    Args:
        fn, lost: as for :meth:`interp.scoring.executors.Executor.map_unordered` (``lost(item, exc)``:
            the result of an item whose worker died under it).
        into: the table file the rows go to (none: the results are only returned).
        rows_of: a result's row dicts (default: the result is one row).
        flush_seconds: merge at most this often, gathering the rows that arrive meanwhile
            (0: each result at once); the rows left are merged at the end, also on an
            exception or Ctrl-C.
        on_result: called in this process with each result as it arrives.
        workers, scheduler: the executor (:func:`interp.scoring.executors.make_executor`),
            closed at the end (``wait``: for its workers to exit); ``spawn``: local workers are
            spawned, not forked (work on a CUDA device). ``executor``: one of the caller's
            instead, left open.
        quiet, desc, unit: the progress bar (:func:`interp.base.progress_bar.progress_bar`).
    """
    from interp.base.progress_bar import progress_bar  # tqdm, imported when a job runs

    items = list(items)
    own = executor is None
    executor = executor or make_executor(workers, scheduler, spawn)
    results: list[Any] = []
    waiting: list[dict[str, Any]] = []
    written: list[pd.DataFrame] = []
    last_merge = -math.inf  # the first result is merged at once

    def merge() -> None:
        nonlocal last_merge
        written[:] = [into.merge(waiting)]
        waiting.clear()
        last_merge = time.monotonic()

    bar = progress_bar(total=len(items), desc=desc, unit=unit, quiet=quiet)
    try:
        try:
            for result in executor.map_unordered(fn, items, lost=lost):
                results.append(result)
                if on_result is not None:
                    on_result(result)
                if into is not None:
                    waiting.extend(rows_of(result))
                    if waiting and time.monotonic() - last_merge >= flush_seconds:
                        merge()
                bar.update(1)
        finally:
            if waiting:
                merge()
    finally:
        bar.close()
        if own:
            executor.close(wait=wait)
    return JobResults(results, written[0] if written else None)
