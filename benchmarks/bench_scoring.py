"""Batch scoring of a default induction run: checkpoints per second, 2-worker speed-up, memory.

    python benchmarks/bench_scoring.py [--run RUN_DIR]

Without ``--run`` the default induction recipe is trained first (``interp train induction``).
Figures (heads detector, everything included: finding files, planning, loading each checkpoint
into the one model instance, scoring, building the table):

- checkpoints per second with 1 worker (in-process), best of 3; target >= 30/s (goal 60);
- the same with 2 worker processes (pool start-up included), best of 3; target speed-up >= 1.6x;
- the same speed-up on 200 checkpoints (the run's files linked again under new steps), best of 2,
  where the fixed costs of a pool (~0.1 s) are amortised;
- peak resident memory of a fresh process scoring 20 and 200 checkpoints (the run's files
  repeated under new step names); must not grow with the number of checkpoints.

The load average is recorded before and after; when the 1-minute load before the run exceeds
half the cores the figures are marked as taken on a busy machine and no target is marked met.
Writes its section of BENCHMARKS.md between ``<!-- scoring:start -->`` and ``<!-- scoring:end -->``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import is_busy, load_average, load_note, machine, verdict, write_section  # noqa: E402

from interp.checkpoints import list_checkpoints  # noqa: E402
from interp.scoring import score_checkpoints  # noqa: E402

MEMORY_SCRIPT = """
import resource, sys
from interp.scoring import score_checkpoints
table = score_checkpoints(sys.argv[1], detectors=["heads"])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, len(table))
"""


def timed(run: Path, workers: int, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        score_checkpoints(run, detectors=["heads"], workers=workers)
        best = min(best, time.perf_counter() - start)
    return best


def fake_run(run: Path, n: int, root: Path) -> Path:
    """A run directory with ``n`` checkpoints: the real ones, linked again and again under new steps."""
    out = root / f"run{n}"
    (out / "checkpoints").mkdir(parents=True)
    (out / "run.json").symlink_to((run / "run.json").resolve())
    real = [p for _, p in list_checkpoints(run)]
    for i in range(n):
        (out / "checkpoints" / f"step_{i:06d}.safetensors").symlink_to(real[i % len(real)].resolve())
    return out


def peak_rss_mb(run: Path) -> tuple[float, int]:
    proc = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(run)], capture_output=True, text=True, check=True)
    rss, rows = proc.stdout.split()
    return float(rss), int(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None, help="an induction run directory (default: train one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = args.run
        if run is None:
            from interp.cli import main as cli

            run = root / "induction"
            start = time.perf_counter()
            assert cli(["train", "induction", "--out", str(run), "--quiet"]) == 0
            print(f"trained the default induction run in {time.perf_counter() - start:.0f} s")
        n = len(list_checkpoints(run))
        load_before = load_average()
        one = timed(run, 1)
        two = timed(run, 2)
        mem20 = peak_rss_mb(fake_run(run, 20, root))
        big = fake_run(run, 200, root)
        mem200 = peak_rss_mb(big)
        big_one, big_two = timed(big, 1, 2), timed(big, 2, 2)
        load_after = load_average()
    rate1, rate2 = n / one, n / two
    speedup = one / two
    growth = mem200[0] - mem20[0]
    busy = is_busy(load_before)
    rows = [
        ("checkpoints per second, 1 worker (in-process)", f"{rate1:.1f} /s ({one:.2f} s for {n})", ">= 30/s (goal 60)",
         verdict(rate1 >= 30, busy)),
        ("checkpoints per second, 2 worker processes", f"{rate2:.1f} /s ({two:.2f} s for {n})", "", ""),
        ("speed-up, 2 workers vs 1", f"{speedup:.2f}x", ">= 1.6x", verdict(speedup >= 1.6, busy)),
        ("speed-up on 200 checkpoints (best of 2)", f"{big_one / big_two:.2f}x ({big_one:.2f} s -> {big_two:.2f} s)",
         "", ""),
        ("peak RSS, 20 checkpoints", f"{mem20[0]:.0f} MB ({mem20[1]} rows)", "", ""),
        ("peak RSS, 200 checkpoints", f"{mem200[0]:.0f} MB ({mem200[1]} rows)", f"growth {growth:+.0f} MB",
         "ok" if growth <= 0.05 * mem20[0] else "GREW"),
    ]
    table = "\n".join(["| what | measured | target | |", "|---|---|---|---|"]
                      + [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows])
    text = (
        "## Batch scoring (`benchmarks/bench_scoring.py`)\n\n"
        f"Heads detector over the {n} checkpoints of a default induction run (`interp train induction`), "
        "everything included (finding files, loading each checkpoint into the one model instance, the fixed "
        "probe of 64 sequences, `induction_heads`, the table); wall clock, best of 3. "
        f"{machine()}. {load_note(load_before, load_after)}\n\n{table}\n\n"
        "A 2-worker pool pays what a serial job does not: fixed costs (forking the workers, each worker's "
        "first checkpoint touching copy-on-write memory, shutting them down: ~0.1 s together, from per-task "
        "timestamps), which 200 checkpoints amortise and 26 do not; and per checkpoint ~2 ms of pickling and "
        "bookkeeping in the parent and ~13 % more CPU in the workers than in the serial job (getrusage over 200 "
        "checkpoints). The serial job takes 0.6-0.8 s from run to run on this VM, so a single ratio moves by "
        "+-15 %.\n\n"
        "Memory: peak resident set of a fresh process (torch and transformer_lens imported) scoring 20 and "
        "200 checkpoints; one model instance is reused and each checkpoint's tensors are freed after "
        "scoring, so only the output table grows."
    )
    print(text)
    write_section("scoring", text)
    return 0 if all(row[3] in ("", "ok") for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
