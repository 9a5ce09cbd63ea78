"""What the ``reasoning`` detector scores a run's checkpoints on: its evaluation sets, rebuilt from ``run.json``.

The metric names, the query positions of each task, and :class:`ReasoningContext`, built once per
run by :func:`run_context` (``docs/scores.md``, "Reasoning detector").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from interp.detectors.reasoning.probes import probe_sets
from interp.runs.layout import RunError
from interp.runs.record import read_run

__all__ = ["ACCURACIES", "METRICS", "POSITIONS", "RANKS", "TASKS", "TRACE_QUERIES", "VALUES", "ReasoningContext",
           "run_context"]

ACCURACIES = ("train_acc", "test_id_acc", "test_ood_acc")
RANKS = ("bridge_rr_id", "bridge_rr_ood")
VALUES = ("value_r2_id", "value_r2_ood")
METRICS = (*ACCURACIES, *RANKS, *VALUES)
TASKS = ("composition", "comparison")
#: Names of the three query positions of each task.
POSITIONS = {"composition": ("h", "r1", "r2"), "comparison": ("a", "e1", "e2")}
#: Queries of a split used by the report's causal trace (a fixed seeded sample).
TRACE_QUERIES = 256


@dataclass(frozen=True)
class ReasoningContext:
    """What a run's checkpoints are scored on, rebuilt once from its ``run.json`` (it pickles).

    ``task``: ``"composition"`` or ``"comparison"``; ``sets``: the evaluation samples
    ``train_atomic``, ``train_inferred``, ``test_id``, ``test_ood`` (:class:`interp.tasks._facts.Facts`)
    of the training loop; ``shares``: the atomic and inferred shares of the training set (the
    weights of ``train_acc``); ``bridge``: composition only, ``"id"``/``"ood"`` -> the bridge entity of
    each query of ``test_id`` / ``test_ood``; ``n_entities``; ``values``: comparison only, the (E, A)
    attribute values; ``probes``: comparison only, the value probes' queries
    (:func:`interp.comparison_probe.probe_sets`); ``label0``: comparison only, the token id of ``<``
    (``=`` and ``>`` follow).
    """

    task: str
    sets: dict[str, Any]
    shares: tuple[float, float]
    n_entities: int
    bridge: dict[str, torch.Tensor] = field(default_factory=dict)
    values: torch.Tensor | None = None
    probes: dict[tuple[str, str], Any] = field(default_factory=dict)
    label0: int = -1

    def split(self, split: str):
        """The test queries of ``split`` (``"id"`` or ``"ood"``)."""
        if split not in ("id", "ood"):
            raise ValueError(f"split must be 'id' or 'ood', got {split!r}")
        return self.sets[f"test_{split}"]


def run_context(run_dir: str | Path | None) -> ReasoningContext:
    """The evaluation sets of a composition or comparison run, rebuilt from its ``run.json``.

    The task is built again from the recorded training options (seeded generator); its
    description must equal the recorded one, so the sets are those ``metrics.csv`` was computed
    on. Raises :class:`interp.RunError` (one line) for a checkpoint outside a run, a run of
    another task, or data this version no longer generates.
    """
    info = read_run(run_dir) if run_dir is not None else None
    if info is None:
        raise RunError("not applicable: the checkpoint is not inside a run with a run.json, from which the task's "
                       "ID and OOD test sets are rebuilt")
    name = info.task_name
    if name not in TASKS:
        raise RunError(f"not applicable: {run_dir} is a run of task {name!r}, not composition or comparison")
    task = info.rebuild_task()
    sets = {k: task.eval_sets[k] for k in ("train_atomic", "train_inferred", "test_id", "test_ood")}
    data = task.data
    n = len(data.train)
    shares = (data.n_atomic / n, (n - data.n_atomic) / n)  # the weights of FactsTask.evaluate, computed alike
    if name == "composition":
        return ReasoningContext(name, sets, shares, data.n_entities,
                                bridge={s: _bridges(data, sets[f"test_{s}"].tokens) for s in ("id", "ood")})
    return ReasoningContext(name, sets, shares, data.n_entities, values=data.values.clone(),
                            probes=probe_sets(data.values, data.ood_entities), label0=data.label_ids[0])


def _bridges(data, tokens: torch.Tensor) -> torch.Tensor:
    """The bridge entity of each query ``h r1 r2``: the tail of the atomic fact ``(h, r1)``."""
    E = data.n_entities
    table = torch.full((E, data.n_relations), -1, dtype=torch.long)
    table[data.atomic[:, 0], data.atomic[:, 1] - E] = data.atomic[:, 2]
    bridge = table[tokens[:, 0], tokens[:, 1] - E]
    if bool((bridge < 0).any()):  # cannot happen for chains the generator built
        raise RunError("a test chain's first hop is not an atomic fact of the run")
    return bridge
