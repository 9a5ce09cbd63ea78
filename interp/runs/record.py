"""A run's records: ``run.json`` (a frozen :class:`RunInfo`), ``metrics.csv``, and what they rebuild.

The only module that reads or writes these two files (``docs/architecture.md``, "Run format").
``run.json`` is written once when a run starts (again when a resume extends it)::

    {"format": "interp-run-v1", "task": {...}, "model_config": {...}, "training": {...},
     "seed": N, "device": "cpu", "versions": {"python": ..., "torch": ..., "transformer_lens": ...,
     "interp": "X.Y.Z", "interp_commit": "<git commit>[-dirty]" or null}}

``task`` is what the task object describes (enough to rebuild its data); ``training`` is the
:class:`interp.tasks.presets.TrainOptions` of the run. :meth:`RunInfo.rebuild_task` builds the
task again from them and refuses data this version no longer generates.
"""

from __future__ import annotations

import csv
import importlib.metadata
import io
import json
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from interp.base.files import atomic_write_text
from interp.base.provenance import toolkit_commit
from interp.runs.layout import METRICS_FILE, RUN_FILE, RunError
from interp.tasks.presets import TrainOptions

__all__ = [
    "RUN_FORMAT",
    "RunInfo",
    "read_metrics",
    "read_run",
    "read_run_info",
    "run_train_mask",
    "write_metrics",
    "write_run",
]

RUN_FORMAT = "interp-run-v1"


@dataclass(frozen=True)
class RunInfo:
    """The parsed ``run.json`` of a run directory.

    Attributes:
        run_dir: the run directory.
        task: the task's description (``task.describe()`` when it was trained); a bare name in
            files of other writers.
        model_config: the model config as a dict (``interp.tasks.models.config_to_dict``), or None.
        training: the training options as a dict, or None.
        seed: the training seed, or None.
        versions: what the run was trained with: ``python``, ``torch``, ``transformer_lens``, and
            (runs written by 0.3.0 on) ``interp``, the toolkit's version, and ``interp_commit``,
            the ``git rev-parse HEAD`` of the checkout the toolkit was imported from (``-dirty``
            when tracked files differed from it), None when it was not a git checkout or git
            was missing (:func:`interp.base.provenance.git_commit`).
        raw: the whole parsed file.
    """

    run_dir: Path
    task: Any
    model_config: dict[str, Any] | None
    training: dict[str, Any] | None
    seed: int | None
    versions: dict[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def path(self) -> Path:
        """``RUN/run.json``."""
        return self.run_dir / RUN_FILE

    @property
    def task_name(self) -> str | None:
        """The task's name (``task["name"]``), or None when the file names none."""
        return self.task.get("name") if isinstance(self.task, dict) else self.task

    def task_entry(self, name: str) -> dict[str, Any]:
        """The task description when the run is of task ``name``, else an empty dict."""
        return self.task if isinstance(self.task, dict) and self.task.get("name") == name else {}

    def options(self) -> TrainOptions:
        """The run's :class:`TrainOptions`; :class:`RunError` when ``training`` cannot describe them."""
        try:
            return TrainOptions.from_dict(self.training)
        except (KeyError, TypeError, ValueError) as exc:
            raise RunError(f"{self.path}: unreadable training options ({exc})") from exc

    def check_same_data(self, task) -> None:
        """:class:`RunError` unless ``task`` describes the data this run was trained on."""
        if self.task != task.describe():
            raise RunError(f"{self.run_dir} was trained on task data {self.task}, which this version no longer "
                           f"generates ({task.describe()}); start a new run")

    def rebuild_task(self):
        """The run's task object, built again from its recorded options (seeded, so the same data).

        :class:`RunError` when the options cannot build a task or the task's data is not the
        recorded one (a run of an older data generator).
        """
        from interp.tasks.registry import make_task

        options = self.options()
        try:
            task = make_task(options)
        except (KeyError, TypeError, ValueError) as exc:
            raise RunError(f"{self.path}: cannot rebuild the {self.task_name} task ({exc})") from exc
        self.check_same_data(task)
        return task


def read_run(run_dir: str | Path) -> RunInfo | None:
    """The :class:`RunInfo` of ``RUN/run.json``, or None when the run has none.

    Raises :class:`RunError` when the file is unreadable or not a JSON object.
    """
    run_dir = Path(run_dir)
    path = run_dir / RUN_FILE
    if not path.exists():
        return None
    if not path.is_file():  # a folder or a device: a run whose record cannot be read
        raise RunError(f"{path}: unreadable run.json (not a regular file)")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"{path}: unreadable run.json ({exc})") from exc
    if not isinstance(info, dict):
        raise RunError(f"{path}: unreadable run.json (expected an object, found {type(info).__name__})")

    def mapping(key: str) -> dict[str, Any] | None:
        value = info.get(key)
        return value if isinstance(value, dict) else None

    seed = info.get("seed")
    return RunInfo(run_dir, info.get("task"), mapping("model_config"), mapping("training"),
                   seed if isinstance(seed, int) else None, mapping("versions") or {}, info)


def read_run_info(run_dir: str | Path) -> dict[str, Any] | None:
    """``RUN/run.json`` as a plain dict (:func:`read_run`'s ``raw``), or None without the file."""
    info = read_run(run_dir)
    return None if info is None else dict(info.raw)


def _installed(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def write_run(run_dir: str | Path, options: TrainOptions, task, model_config: dict[str, Any],
              device: str = "cpu", extensions: list[dict[str, int]] | None = None) -> None:
    """Write ``RUN/run.json`` atomically for a run of ``task`` with ``options``, trained on ``device``.

    ``extensions``: a run extended by ``--steps`` (:func:`interp.training.loop.train`) records each
    earlier length and the step the extension resumed from (``{"steps": 8, "resumed_at_step":
    8}``): the updates before it followed the schedules (learning rate, weight decay) of that length.

    ``versions`` names the code that trains it (:class:`RunInfo`, ``versions``); the toolkit's
    commit is looked up once per process and is None outside a git checkout.
    """
    from interp import __version__

    info = {
        "format": RUN_FORMAT,
        "task": task.describe(),
        "model_config": model_config,
        "training": options.to_dict(),
        "seed": options.seed,
        "device": str(device),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformer_lens": _installed("transformer-lens"),  # 3.x has no __version__
            "interp": __version__,
            "interp_commit": toolkit_commit(),
        },
        **({"extensions": extensions} if extensions else {}),
    }
    atomic_write_text(Path(run_dir) / RUN_FILE, json.dumps(info, indent=2) + "\n")


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    """The rows of ``RUN/metrics.csv`` (``step`` an int, every other column a float); [] without it."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            rows = [{k: (int(v) if k == "step" else float(v)) for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, ValueError, TypeError, csv.Error) as exc:  # TypeError: a short row's None
        raise RunError(f"{path}: unreadable metrics ({exc})") from exc
    if "step" not in (reader.fieldnames or ["step"]):
        raise RunError(f"{path}: unreadable metrics (no step column in its header {reader.fieldnames})")
    return rows


def write_metrics(run_dir: str | Path, rows: list[dict[str, float]]) -> None:
    """Write ``RUN/metrics.csv`` atomically, one row per evaluation (floats written exactly)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (v if k == "step" else repr(float(v))) for k, v in row.items()})
    atomic_write_text(Path(run_dir) / METRICS_FILE, buf.getvalue())


def run_train_mask(run_dir: str | Path) -> torch.Tensor | None:
    """The training split of a modular-addition run, from ``RUN/run.json``; None without the file.

    ``run.json`` holds ``{"task": {"name": "modadd", "p": P, "frac_train": F, "split_seed": S}}``;
    the mask is ``interp.tasks.modular.train_mask(P, F, S)``. Raises ``ValueError`` when the run
    is of another task, :class:`RunError` (a ``ValueError``) when ``run.json`` is unreadable or
    its task entry lacks these fields.
    """
    from interp.tasks.modular import train_mask

    info = read_run(run_dir)
    if info is None:
        return None
    name = info.task_name
    if name is None:
        raise RunError(f"{info.path}: unreadable run.json (no task entry)")
    if name != "modadd":
        raise ValueError(f"{info.path}: run of task {name!r}; Fourier progress measures need a modadd run")
    task = info.task
    try:
        return train_mask(int(task["p"]), float(task["frac_train"]), int(task["split_seed"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(f"{info.path}: task entry lacks a valid {exc} needed to rebuild the training split") from exc
