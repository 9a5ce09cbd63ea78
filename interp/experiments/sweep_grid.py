"""The grid of a training sweep (``interp sweep``): its cells, parsed and checked before anything trains.

Grid keys are fields of :class:`interp.tasks.presets.TrainOptions`: those of the training loop
(:data:`LOOP_OPTIONS`) and those the task reads (its ``option_names``: ``p, frac_train,
d_model, float64_loss`` for modadd). Every value is checked before anything trains, by building
the task and its model config, so a bad key or value is one clear error naming it. A cell
(:class:`SweepCell`) is one combination of the grid's values and one seed.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interp.tasks.presets import TrainOptions, preset
from interp.tasks.registry import TASKS, make_task

__all__ = ["LOOP_OPTIONS", "SweepCell", "base_type", "option_types", "parse_grid", "parse_settings", "sweep_cells",
           "sweepable_options"]

#: ``TrainOptions`` fields the training loop itself reads, so every task takes them in a grid.
LOOP_OPTIONS = ("steps", "lr", "weight_decay", "weight_decay_end", "weight_decay_ramp_start", "warmup_steps",
                "lr_schedule", "adam_eps", "grokfast_alpha", "grokfast_lambda", "eval_every", "checkpoint_every")
#: Grid keys whose values must be positive.
_POSITIVE = {"steps", "lr", "adam_eps", "eval_every", "checkpoint_every", "batch_size", "p", "d_model"}
#: A ``--set`` value refused where the recipe gives it no say: (key, when, why). A sweep's grid may
#: cross such keys (its cells without the filter are its baseline), so only ``--set`` is checked.
_IDLE = (
    ("weight_decay_ramp_start", lambda o: o.weight_decay_end is None,
     "does nothing without weight_decay_end (the decay is constant); set weight_decay_end too"),
    ("grokfast_alpha", lambda o: o.grokfast_lambda == 0,
     "does nothing while grokfast_lambda is 0 (the Grokfast filter is off); set grokfast_lambda > 0 too"),
    ("warmup_steps", lambda o: o.warmup_steps > o.steps,
     "is longer than the run ({o.steps} steps): the learning rate would never reach lr"),
)


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
        """The cell's training options: its preset with the grid values and the seed."""
        return dataclasses.replace(preset(self.task, self.preset), seed=self.seed, **dict(self.values))

    def columns(self) -> dict[str, Any]:
        """The cell's leading columns of ``runs.csv``: name, task, preset, grid values, seed."""
        return {"cell": self.name, "task": self.task, "preset": self.preset, **dict(self.values), "seed": self.seed}


def option_types() -> dict[str, str]:
    """Every ``TrainOptions`` field and its type as written (``"int | None"``)."""
    return {f.name: str(f.type) for f in dataclasses.fields(TrainOptions)}


def sweepable_options(task: str) -> tuple[str, ...]:
    """The grid keys ``task`` accepts: the loop's options and the task's own ``option_names``."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(sorted(TASKS))}")
    return (*LOOP_OPTIONS, *getattr(TASKS[task], "option_names", ()))


_EXPECTED = {"int": "an integer", "float": "a number", "bool": "true or false"}


def base_type(kind: str) -> str:
    """``"int | None"`` -> ``"int"``: the type of a ``TrainOptions`` field, without its None."""
    return kind.replace(" | None", "").strip()


def _parse_value(key: str, kind: str, text: str, noun: str = "grid") -> Any:
    base = base_type(kind)
    if base not in (*_EXPECTED, "str"):
        raise ValueError(f"{noun} key {key} cannot be {'swept' if noun == 'grid' else 'set'} (a {base})")
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
        elif key == "corpus":  # a folder: recorded absolute, so the run resumes and scores from anywhere
            value = str(Path(text).expanduser().resolve())
        else:
            value = text
    except ValueError:
        raise ValueError(f"bad {noun} value {key}={text}: expected {_EXPECTED[base]}") from None
    if key in _POSITIVE and value <= 0:
        raise ValueError(f"bad {noun} value {key}={text}: must be positive")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        raise ValueError(f"bad {noun} value {key}={text}: must not be negative")
    return value


def _check_key(task: str, key: str, noun: str = "grid") -> str:
    types = option_types()
    if key == "seed":
        raise ValueError("seed is not a grid key; give the seeds with --seed 0,1" if noun == "grid"
                         else f"seed is not a {noun} key; give it with --seed")
    allowed = sweepable_options(task)
    if key not in allowed:
        why = ("not a training option" if key not in types
               else f"not an option the {task} task or the training loop reads")
        raise ValueError(f"bad {noun} key {key!r}: {why}; {task} takes {', '.join(sorted(allowed))}")
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


def parse_settings(task: str, specs: Sequence[str], base: TrainOptions) -> TrainOptions:
    """``base`` with ``["lr=3e-3", "d_model=64"]`` set (``interp train --set``), checked like a grid.

    Keys and values are parsed and checked as :func:`parse_grid` does, one value per key, and the
    options that result must build the task and its model (``ValueError`` naming the bad key or
    value and what is accepted); so is a value the recipe then gives no say (:data:`_IDLE`:
    ``weight_decay_ramp_start`` without ``weight_decay_end``, ``grokfast_alpha`` with the filter
    off, ``warmup_steps`` longer than the run).
    """
    values: dict[str, Any] = {}
    for spec in specs:
        key, sep, text = (part.strip() for part in str(spec).partition("="))
        if not sep or not key or not text:
            raise ValueError(f"bad --set {spec!r}: expected KEY=VALUE, e.g. lr=0.003")
        if key in values:
            raise ValueError(f"--set key {key} is given twice")
        values[key] = _parse_value(key, _check_key(task, key, "--set"), text, "--set")
    try:
        options = dataclasses.replace(base, **values)
        make_task(options).model_config()
    except (ValueError, TypeError, AssertionError) as exc:
        raise ValueError(f"bad --set {', '.join(f'{k}={v}' for k, v in values.items())}: {exc}") from None
    for key, idle, why in _IDLE:
        if key in values and idle(options):
            raise ValueError(f"--set {key}={values[key]} {why.format(o=options)}")
    return options


def sweep_cells(task: str, preset_name: str, grid: Mapping[str, Sequence[Any]],
                seeds: Sequence[int]) -> list[SweepCell]:
    """Every combination of the grid's values, for every seed, checked before anything trains.

    Values are parsed (from their text) as in :func:`parse_grid`. Each cell is checked by building
    its options, task and model config: ``ValueError`` naming the bad key and value when every cell
    holding it fails and so does the value alone among the preset's (``bad grid value d_model=18:
    ...``), else the first cell that fails and why.
    A value is judged with the grid's other values, not the preset's alone (``n_relations=40`` with
    ``facts_per_entity=30``).
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
        checked[key] = values
    cells = [SweepCell(task, preset_name, tuple(zip(checked, combo)), int(seed))
             for combo in itertools.product(*checked.values()) for seed in seeds]
    failed = {cell: why for cell in cells if (why := _misfit(cell))}
    if failed:
        for key, values in checked.items():
            for value in values:  # a value to blame: no cell holding it fits, nor does it with the preset's other values
                holding = [cell for cell in cells if dict(cell.values)[key] == value]
                if all(cell in failed for cell in holding) and \
                        _misfit(SweepCell(task, preset_name, ((key, value),), int(seeds[0]))):
                    raise ValueError(f"bad grid value {key}={value}: {failed[holding[0]]}")
        cell, why = next(iter(failed.items()))
        raise ValueError(f"grid cell {cell.name} does not fit {task}/{preset_name}: {why}")
    return cells


def _misfit(cell: SweepCell) -> str:
    """Why ``cell``'s options, task or model config cannot be built ("" when they can)."""
    try:
        make_task(cell.options()).model_config()
    except (ValueError, TypeError, AssertionError) as exc:
        return str(exc)
    return ""
