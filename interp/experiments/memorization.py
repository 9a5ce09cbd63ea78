"""Memorisation capacity: how many bits a model stores per parameter (Morris et al. 2025).

"How much do language models memorize?" (Morris et al. 2025, arXiv 2505.24832) trains GPT-style
models on uniformly random token sequences, where nothing can be generalised, so all a model
learns about its data set is memorisation. Memorised bits of a sequence ``x`` under the trained
model, against the uniform reference (:mod:`interp.tasks.random_sequences`)::

    mem(x) = S * log2(V) - min(S * log2(V), -log2 p(x | model))

Summed over a data set of ``N`` sequences this grows with ``N`` until the model is full; the
plateau is the model's **capacity** in bits, and capacity / parameters is about 3.6 bits per
parameter for GPT-style models (3.83 in fp32; 2.86-4.23 across their models).

A *cell* (:class:`MemorizationCell`) is one model size trained on one data set to saturation.

**Plateau rule** (when a cell stops): every ``eval_every`` steps the total memorised bits ``M``
of the whole data set is measured (model in eval mode). ``M`` is on a plateau when it has grown
by less than ``plateau_tol * M`` over the last ``plateau_window`` steps. At a plateau the
learning rate drops tenfold and a fresh window starts, ``lr_drops`` times; the next plateau
stops the cell. It also stops when ``M`` is within ``complete_tol`` of the most any causal
model can memorise of the data set (its entropy minus
:func:`interp.tasks.random_sequences.unreachable_bits`, what the first tokens cost before a
prefix identifies its sequence): everything is memorised. Or at ``max_steps``. The row
records which rule stopped it; a cell stopped by ``max_steps`` is not saturated, and
:func:`capacity_table` says so.

**Capacity** of a model (:func:`capacity_table`) is the largest total memorised bits over its data
set sizes. It is a measured plateau only when that cell stopped on a plateau short of
memorising its whole data set: a cell that memorised everything (``complete``) was limited by
the data, not the model, and gives a lower bound. **Bits per parameter**
(:func:`fit_bits_per_parameter`) is the least-squares slope of capacity against parameter count
through the origin, over the models whose capacity is a measured plateau. Parameters are every
trainable parameter of the ``HookedTransformer`` (embeddings, positions, LayerNorms and
unembedding included), as in the paper.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from interp.scoring.executors import make_executor
from interp.tasks.fast_forward import logits as fast_logits
from interp.tasks.models import build_model, memorization_config
from interp.tasks.presets import MEMORIZATION_DATASETS, MEMORIZATION_SIZES
from interp.tasks.random_sequences import (
    code_length_bits,
    memorized_bits,
    random_sequences,
    sequence_bits,
    unreachable_bits,
)

__all__ = [
    "CELL_COLUMNS",
    "MEMORIZATION_DATASETS",
    "MEMORIZATION_SIZES",
    "MemorizationCell",
    "capacity_table",
    "fit_bits_per_parameter",
    "measure_memorization",
    "memorization_sweep",
    "memorization_sweep_to_dir",
    "read_cells",
    "sweep_cells",
    "train_to_saturation",
]

#: Columns of the per-cell table (one row per cell). ``entropy_bits``: N S log2 V of the data set;
#: ``reachable_bits``: the most a causal model can memorise of it; ``memorized_bits``: total
#: mem(x) at the end; ``fraction``: memorized / reachable; ``bits_per_parameter``: memorized /
#: params; ``stopped_by``: complete, plateau, max_steps or error (the reason then in ``error``);
#: ``max_steps`` and ``plateau_window``: the cell's budget (``interp memorization --budget``).
CELL_COLUMNS = (
    "model", "d_model", "n_layers", "params", "n_sequences", "seq_len", "vocab", "seed", "max_steps", "plateau_window",
    "entropy_bits", "reachable_bits", "memorized_bits", "fraction", "bits_per_parameter", "steps", "stopped_by",
    "seconds", "error",
)


@dataclass(frozen=True)
class MemorizationCell:
    """One model size trained on one random data set until it stops memorising more."""

    d_model: int
    n_layers: int
    n_sequences: int
    seq_len: int = 32
    vocab: int = 64
    seed: int = 0
    lr: float = 1e-2
    lr_drops: int = 2
    batch_size: int = 256
    max_steps: int = 20_000
    eval_every: int = 100
    plateau_window: int = 500
    plateau_tol: float = 0.005
    complete_tol: float = 0.01

    @property
    def model(self) -> str:
        return f"{self.n_layers}L-d{self.d_model}"

    def config(self):
        return memorization_config(self.d_model, self.n_layers, self.vocab, self.seq_len)


def measure_memorization(model, tokens: torch.Tensor, vocab: int, batch_size: int = 1024) -> torch.Tensor:
    """Memorised bits of every sequence of ``tokens`` (``[BOS, x]`` rows) under ``model``.

    Each value is ``mem(x)`` in ``[0, S log2 V]`` with ``V = vocab`` (see the module docstring).
    """
    seq_len = tokens.shape[1] - 1
    if tokens.shape[1] > model.cfg.n_ctx:
        raise ValueError(f"sequences of {tokens.shape[1]} tokens exceed the model's n_ctx {model.cfg.n_ctx}")
    if model.cfg.d_vocab_out != vocab or int(tokens[:, 1:].max()) >= vocab or int(tokens.max()) >= model.cfg.d_vocab:
        raise ValueError(f"tokens and vocab {vocab} do not fit the model (d_vocab {model.cfg.d_vocab}, "
                         f"d_vocab_out {model.cfg.d_vocab_out}): it must predict exactly the {vocab} data ids")
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        lengths = torch.cat([code_length_bits(fast_logits(model, chunk), chunk)
                             for chunk in tokens.split(batch_size)])
    model.train(was_training)
    return memorized_bits(lengths, seq_len, vocab)


def train_to_saturation(cell: MemorizationCell, on_eval: Callable[[int, torch.Tensor], None] | None = None
                        ) -> dict[str, Any]:
    """Train ``cell``'s model on its data set until the plateau rule stops it; one result row.

    Adam (no weight decay, which would erase stored bits) with a 100-step warm-up to ``lr``, on
    minibatches of ``batch_size`` sequences drawn by a seeded shuffle each epoch. At each
    plateau the learning rate drops tenfold, ``lr_drops`` times, before the run stops: a constant
    rate leaves the loss hovering above what the weights could reach. ``on_eval(step, bits)``
    receives the memorised bits of every sequence at each evaluation.
    """
    start = time.perf_counter()
    tokens = random_sequences(cell.n_sequences, cell.seq_len, cell.vocab, seed=cell.seed)
    model = build_model(cell.config(), seed=cell.seed)
    model.train()
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=cell.lr, betas=(0.9, 0.98))
    generator = torch.Generator().manual_seed(cell.seed)
    entropy = cell.n_sequences * sequence_bits(cell.seq_len, cell.vocab)
    reachable = entropy - unreachable_bits(tokens)
    history: dict[int, float] = {}
    order, cursor, step, lr, drops = torch.randperm(cell.n_sequences, generator=generator), 0, 0, cell.lr, 0
    while True:
        if step % cell.eval_every == 0 or step == cell.max_steps:
            per_sequence = measure_memorization(model, tokens, cell.vocab)
            history[step] = per_sequence.sum().item()
            if on_eval is not None:
                on_eval(step, per_sequence)
            stopped_by = _stop_reason(cell, step, history, reachable)
            if stopped_by == "plateau" and drops < cell.lr_drops:
                lr, drops, history = lr / 10, drops + 1, {step: history[step]}  # a fresh window
            elif stopped_by:
                break
        if cursor >= cell.n_sequences:
            order, cursor = torch.randperm(cell.n_sequences, generator=generator), 0
        batch = tokens[order[cursor:cursor + cell.batch_size]]
        cursor += cell.batch_size
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 100)
        logits = fast_logits(model, batch)[:, :-1]
        loss = F.cross_entropy(logits.reshape(-1, cell.vocab), batch[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
    memorized = history[step]
    return {
        "model": cell.model, "d_model": cell.d_model, "n_layers": cell.n_layers, "params": params,
        "n_sequences": cell.n_sequences, "seq_len": cell.seq_len, "vocab": cell.vocab, "seed": cell.seed,
        "max_steps": cell.max_steps, "plateau_window": cell.plateau_window, "entropy_bits": entropy,
        "reachable_bits": reachable, "memorized_bits": memorized, "fraction": memorized / reachable,
        "bits_per_parameter": memorized / params, "steps": step, "stopped_by": stopped_by,
        "seconds": time.perf_counter() - start, "error": "",
    }


def _stop_reason(cell: MemorizationCell, step: int, history: dict[int, float], reachable: float) -> str:
    """``complete``, ``plateau``, ``max_steps`` or "" (go on); ``history``: step -> memorised bits."""
    memorized = history[step]
    if memorized >= (1 - cell.complete_tol) * reachable:
        return "complete"
    before = history.get(step - cell.plateau_window)
    if before is not None and memorized - before < cell.plateau_tol * memorized:
        return "plateau"
    if step >= cell.max_steps:
        return "max_steps"
    return ""


def _run_cell(cell: MemorizationCell) -> dict[str, Any]:
    """Executor entry point: a result row, or an error row (the sweep goes on)."""
    try:
        return train_to_saturation(cell)
    except Exception as exc:  # one bad cell must not lose the sweep; the reason is kept
        return _error_row(cell, exc)


def _error_row(cell: MemorizationCell, exc: BaseException) -> dict[str, Any]:
    row = {c: None for c in CELL_COLUMNS}
    row.update(model=cell.model, d_model=cell.d_model, n_layers=cell.n_layers, n_sequences=cell.n_sequences,
               seq_len=cell.seq_len, vocab=cell.vocab, seed=cell.seed, max_steps=cell.max_steps,
               plateau_window=cell.plateau_window, stopped_by="error",
               error=f"{type(exc).__name__}: {exc}")
    return row


def sweep_cells(sizes: Iterable[tuple[int, int]], datasets: Iterable[int], **cell_options: Any) -> list[MemorizationCell]:
    """Every (d_model, n_layers) size x data set size, as cells (``cell_options`` for all)."""
    return [MemorizationCell(d_model=d, n_layers=n, n_sequences=size, **cell_options)
            for d, n in sizes for size in datasets]


def _key(row: dict[str, Any] | pd.Series) -> tuple:
    return tuple(int(row[c]) for c in ("d_model", "n_layers", "n_sequences", "seq_len", "vocab", "seed", "max_steps",
                                        "plateau_window"))


def memorization_sweep(
    cells: Sequence[MemorizationCell],
    existing: pd.DataFrame | None = None,
    workers: int = 1,
    scheduler: Any = None,
    quiet: bool = True,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> pd.DataFrame:
    """Train every cell (skipping those already in ``existing`` without error); the cell table.

    Cells run on the executor of batch scoring (:func:`interp.executors.make_executor`): this
    process, ``workers`` local processes, or a Dask scheduler. A cell that fails becomes a row
    with ``stopped_by="error"`` and the reason in ``error``.
    """
    from interp.base.progress_bar import progress_bar

    done = []
    if existing is not None and not existing.empty:
        done = [r for _, r in existing.iterrows() if r["stopped_by"] != "error"]
    have = {_key(r) for r in done}
    todo = [c for c in cells if _key(dataclasses.asdict(c)) not in have]
    # Biggest first (cost grows with both), so parallel workers do not wait on one long last cell.
    todo.sort(key=lambda c: c.d_model ** 2 * c.n_layers * c.n_sequences, reverse=True)
    rows = [dict(r) for r in done]
    executor = make_executor(workers, scheduler)
    try:
        results = executor.map_unordered(_run_cell, todo, lost=_error_row)
        for row in progress_bar(results, total=len(todo), quiet=quiet, desc="memorization"):
            rows.append(row)
            if on_row is not None:
                on_row(row)
    finally:
        executor.close()
    table = pd.DataFrame(rows, columns=list(CELL_COLUMNS))
    return table.sort_values(["params", "n_sequences"], ignore_index=True)


def capacity_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Per model: capacity (the largest total memorised bits over its data sets) and bits/parameter.

    ``saturated`` is True when that largest cell stopped on a plateau short of memorising its
    whole data set, so the capacity is measured rather than bounded below by the data.
    """
    ok = cells[cells["stopped_by"] != "error"]
    out = []
    for (model, params), group in ok.groupby(["model", "params"], sort=False):
        best = group.loc[group["memorized_bits"].idxmax()]
        out.append({
            "model": model, "d_model": int(best["d_model"]), "n_layers": int(best["n_layers"]), "params": int(params),
            "capacity_bits": float(best["memorized_bits"]), "bits_per_parameter": float(best["memorized_bits"]) / params,
            "at_n_sequences": int(best["n_sequences"]),
            "saturated": bool(best["stopped_by"] == "plateau"),
        })
    columns = ["model", "d_model", "n_layers", "params", "capacity_bits", "bits_per_parameter", "at_n_sequences",
               "saturated"]
    return pd.DataFrame(out, columns=columns).sort_values("params", ignore_index=True)


def fit_bits_per_parameter(capacity: pd.DataFrame) -> float:
    """Least-squares slope of capacity on parameters through the origin, saturated models only.

    ``nan`` when no model is saturated.
    """
    fit = capacity[capacity["saturated"]]
    if fit.empty:
        return math.nan
    p = fit["params"].to_numpy(dtype=float)
    c = fit["capacity_bits"].to_numpy(dtype=float)
    return float(np.dot(p, c) / np.dot(p, p))


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
    """The cell table in ``path`` (None when missing); ``ValueError`` when it is not one."""
    path = Path(path)
    if not path.exists():
        return None
    table = pd.read_csv(path, keep_default_na=False, na_values={"memorized_bits": [""]})
    budget = ("max_steps", "plateau_window")
    if list(table.columns) == [c for c in CELL_COLUMNS if c not in budget]:  # written before the budget columns
        default = MemorizationCell(d_model=0, n_layers=0, n_sequences=0)
        for column in budget:
            table.insert(CELL_COLUMNS.index(column), column, getattr(default, column))
    if list(table.columns) != list(CELL_COLUMNS):
        raise ValueError(f"{path} is not a memorization table; choose another --out")
    return table


def memorization_sweep_to_dir(cells: Sequence[MemorizationCell], out: str | Path, **options: Any) -> SweepFiles:
    """:func:`memorization_sweep` into the directory ``out``, restartable.

    Writes ``OUT/cells.csv`` (rewritten atomically as each cell finishes; the cells already in
    it are kept, so an interrupted sweep resumes), ``OUT/capacity.csv`` (:func:`capacity_table`)
    and ``OUT/memorization.html``. ``options`` go to :func:`memorization_sweep`.
    """
    from interp.base.files import atomic_write
    from interp.experiments.memorization_page import write_memorization_report

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file, not a directory")
    out.mkdir(parents=True, exist_ok=True)
    cells_path = out / "cells.csv"
    existing = read_cells(cells_path)
    rows = [] if existing is None else existing.to_dict("records")

    def save(frame: pd.DataFrame) -> None:
        atomic_write(cells_path, lambda tmp: frame.to_csv(tmp, index=False))

    def on_row(row: dict[str, Any]) -> None:  # every finished cell reaches the disk at once
        rows.append(row)
        save(pd.DataFrame(rows, columns=list(CELL_COLUMNS)))

    table = memorization_sweep(cells, existing=existing, on_row=on_row, **options)
    save(table)
    capacity = capacity_table(table)
    atomic_write(out / "capacity.csv", lambda tmp: capacity.to_csv(tmp, index=False))
    page = write_memorization_report(table, out / "memorization.html")
    return SweepFiles(table, capacity, fit_bits_per_parameter(capacity), cells_path, page)
