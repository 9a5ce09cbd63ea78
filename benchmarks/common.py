"""Shared by the benchmark scripts: timing, machine description, BENCHMARKS.md sections."""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    """Best wall-clock seconds of ``repeats`` calls (after one warm-up call)."""
    return min(rounds_of_each({"fn": fn}, repeats)["fn"])


def rounds_of_each(fns: dict[str, Callable[[], object]], repeats: int = 3) -> dict[str, list[float]]:
    """Wall-clock seconds of each function in each of ``repeats`` rounds, the functions interleaved
    within each round (so a change in the machine's speed hits all of them alike), after one
    warm-up call each."""
    for fn in fns.values():
        fn()
    seconds: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def machine() -> str:
    """torch version, threads, architecture and cores (the load goes in :func:`load_note`)."""
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}, {os.cpu_count()} cores"


def load_average() -> tuple[float, float, float]:
    """The 1-, 5- and 15-minute load averages (zeros where the platform has none)."""
    return os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)


def is_busy(before: tuple[float, float, float], own: float = 0.0) -> bool:
    """True when the 1-minute load average before a run exceeded half the cores: its figures
    are then recorded as measured but never mark a target as met. ``own``: the threads the
    benchmark itself ran just before the reading (a reading taken after its work), not counted."""
    return before[0] - own > (os.cpu_count() or 1) / 2


def load_note(before: tuple[float, float, float], after: tuple[float, float, float]) -> str:
    """One sentence with the load averages before and after a run, and whether it counts as idle."""
    before_text, after_text = (", ".join(f"{x:.1f}" for x in xs) for xs in (before, after))
    note = f"Load average before {before_text}, after {after_text}"
    if is_busy(before):
        return note + f": **busy machine** (1-minute load above {(os.cpu_count() or 1) / 2:g}), so no target is marked met."
    return note + "."


def verdict(ok: bool, busy: bool) -> str:
    """``ok`` / ``MISSED`` for a target; a target held on a busy machine is ``not judged (busy)``."""
    if not ok:
        return "MISSED (busy machine)" if busy else "MISSED"
    return "not judged (busy)" if busy else "ok"


def seeds_label(seeds) -> str:
    """The seeds a row was measured on, as its label says them: ``seed 0``, ``seeds 0-9``, ``seeds 0, 2``.

    A row judged over several runs names exactly the seeds it ran, never "every seed"."""
    seeds = sorted(int(s) for s in seeds)
    if not seeds:
        raise ValueError("no seeds")
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    if seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"seeds {seeds[0]}-{seeds[-1]}"
    return "seeds " + ", ".join(map(str, seeds))


def minutes(seconds: float) -> str:
    """A duration for a benchmark's prose: ``45 s`` under two minutes, else ``12.6 min``."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def write_section(name: str, text: str, path: Path = ROOT / "BENCHMARKS.md") -> None:
    """Replace (or append) the block between ``<!-- name:start -->`` and ``<!-- name:end -->``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{text.rstrip()}\n{end}"
    old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    new = pattern.sub(lambda _: block, old) if pattern.search(old) else old.rstrip() + "\n\n" + block + "\n"
    path.write_text(new, encoding="utf-8")


def markdown_table(frame) -> str:
    """A pandas DataFrame as a Markdown table (floats to 3 decimals), without the tabulate package."""
    def cell(value) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def default_run_arguments(parser: argparse.ArgumentParser) -> None:
    """``--induction RUN`` and ``--modadd RUN``: existing default runs to use instead of training them."""
    parser.add_argument("--induction", type=Path, default=None, help="a default induction run (default: train one)")
    parser.add_argument("--modadd", type=Path, default=None, help="a default modadd run (default: train one)")


def default_runs(args: argparse.Namespace, folder: Path) -> dict[str, Path]:
    """The runs ``--induction`` / ``--modadd`` name, or the default recipes trained into ``folder``."""
    runs = {}
    for task in ("induction", "modadd"):
        runs[task] = getattr(args, task) or folder / task
        if getattr(args, task) is None:
            subprocess.run([sys.executable, "-m", "interp", "train", task, "--out-dir", str(runs[task]), "--quiet"],
                           check=True)
    return runs
