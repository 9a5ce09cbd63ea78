"""The grokking phases beyond one machine's trajectory: default modadd runs on several seeds, each
trained with 1 and with 2 intra-op threads (float summation order differs, so the runs differ).

For each run: the steps of 99 % train and test accuracy, the three phases of
:func:`circuits.grokking_phases` on the run's checkpoints, whether they are in order
(``memorization_end < circuit_formation_end <= cleanup_end`` and ``memorization_end <
grokking_step <= cleanup_end``, what ``tests/test_trained_runs.py`` asserts on one run), and the
largest test loss after test accuracy first reached 99 % (a late loss spike: the recipe damaging
the model it grokked). Targets: every run's phases located and in order. Writes the ``phases``
section of BENCHMARKS.md with the load average before and after.

Usage: python benchmarks/bench_phases.py [--seeds 0,1,2] [--threads 1,2] [--no-write]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_average, load_note, machine, markdown_table, verdict, write_section  # noqa: E402

_ONE_RUN = """
import sys, torch
torch.set_num_threads(int(sys.argv[3]))
from interp import preset, train
train(preset("modadd", seed=int(sys.argv[2])), sys.argv[1], quiet=True)
"""


def one_run(out: Path, seed: int, threads: int) -> dict:
    """Train in a fresh process (the thread count is fixed before torch runs anything); its figures."""
    from circuits import grokking_phases
    from interp import read_run, run_progress_measures
    from interp.runs.record import read_metrics

    clock = time.perf_counter()
    subprocess.run([sys.executable, "-c", _ONE_RUN, str(out), str(seed), str(threads)], check=True)
    seconds = time.perf_counter() - clock
    assert read_run(out) is not None
    metrics = pd.DataFrame(read_metrics(out))
    measures = run_progress_measures(out, quiet=True)
    phases = grokking_phases(measures)
    mem, circuit, clean, grok = (phases.memorization_end, phases.circuit_formation_end, phases.cleanup_end,
                                 phases.grokking_step)
    located = None not in (mem, circuit, clean, grok)
    ordered = located and mem < circuit <= clean and mem < grok <= clean

    def first(column: str) -> int | None:
        hit = metrics.loc[metrics[column] >= 0.99, "step"]
        return int(hit.min()) if len(hit) else None

    test99 = first("test_acc")
    after = metrics[metrics["step"] >= test99] if test99 is not None else metrics.iloc[0:0]
    return {"seed": seed, "threads": threads, "train 99 %": first("train_acc"), "test 99 %": test99,
            "memorization_end": mem, "circuit_formation_end": circuit, "grokking_step": grok, "cleanup_end": clean,
            "in order": bool(ordered), "max test loss after test 99 %": float(after["test_loss"].max())
            if len(after) else float("nan"), "seconds": round(seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--threads", default="1,2", help="comma-separated intra-op thread counts (default 1,2)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [one_run(Path(tmp) / f"s{seed}_t{n}", seed, n) for seed in seeds for n in threads]
    after = load_average()
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    ok = bool(table["in order"].all())
    differ = sum(len(part.drop_duplicates(subset=["memorization_end", "circuit_formation_end", "grokking_step",
                                                 "cleanup_end", "test 99 %"])) > 1
                 for _, part in table.groupby("seed"))
    text = (f"## Grokking phases across seeds and thread counts (`benchmarks/bench_phases.py`)\n\n"
            f"{machine()}. {load_note(before, after)}\n\n"
            f"Default modadd recipe, seeds {args.seeds}, each trained with {args.threads} intra-op thread(s) "
            f"in a fresh process. {differ} of {len(seeds)} seeds gave runs that differ between thread counts "
            f"(a phase or the test-99 % step).\n\n{markdown_table(table)}\n\n"
            f"Every run's phases located and in order: **{verdict(ok, False)}** (phases, not times: the load "
            "does not change them, the thread count does). Timing is not a target here (the runs share the "
            "machine).\n")
    print(text)
    if not args.no_write:
        write_section("phases", text)


if __name__ == "__main__":
    main()
