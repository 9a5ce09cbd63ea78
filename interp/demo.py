"""``interp demo``: train both toy models, score their checkpoints, write the report.

Layout under ``out`` (default ``interp-demo``)::

    OUT/induction/          run of the default induction recipe (interp.presets)
    OUT/modadd/             run of the default modular-addition recipe
    OUT/scores.parquet      the long scores table of both runs
    OUT/report.html         the self-contained report

Re-running resumes: finished runs are kept (``train(..., resume=True)``) and checkpoints already
in the table are not scored again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from interp.base.files import out_folder
from interp.tasks.presets import preset
from interp.runs.layout import RUN_FILE
from interp.report import write_report
from interp.scoring.batch import score_to_file
from interp.training.loop import train

__all__ = ["DemoResult", "run_demo"]


@dataclass(frozen=True)
class DemoResult:
    """Paths the demo wrote."""

    runs: dict[str, Path]
    table: Path
    report: Path
    n_failed: int
    seconds: dict[str, float]  # wall-clock seconds per stage: induction, modadd, score, report


def run_demo(out: str | Path = "interp-demo", *, steps_scale: float = 1.0, workers: int = 1,
             quiet: bool = False, device: str | None = None) -> DemoResult:
    """Train both default recipes into ``out``, score every checkpoint, write the report.

    ``steps_scale`` multiplies both recipes' step counts (tests use a small value; 1.0 is the
    real demo). ``workers``: scoring processes (default 1, as every command's ``--workers``).
    ``device``: where the models train and are scored (:func:`interp.base.device.resolve_device`;
    None: the CPU).
    """
    if steps_scale <= 0:
        raise ValueError(f"steps_scale must be positive, got {steps_scale}")
    out = out_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, Path] = {}
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage], clock = now - clock, now

    for task in ("induction", "modadd"):
        options = preset(task)
        steps = max(2, round(options.steps * steps_scale))
        options = preset(task, steps=steps)
        runs[task] = train(options, out / task, resume=(out / task / RUN_FILE).exists(), quiet=quiet,
                           device=device)
        lap(task)
    table_path = out / "scores.parquet"
    table = score_to_file([runs["induction"], runs["modadd"]], table_path, workers=workers, quiet=quiet,
                          device=device)
    lap("score")
    report = write_report(table, out / "report.html", title="interp demo: induction heads and grokking")
    lap("report")
    return DemoResult(runs, table_path, report, int(table.attrs.get("n_failed", 0)), seconds)

