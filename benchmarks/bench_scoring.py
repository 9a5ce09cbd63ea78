"""Batch scoring of a default induction run: checkpoints per second, 2-worker speed-up, memory.

    python benchmarks/bench_scoring.py [--run RUN_DIR]

Without ``--run`` the default induction recipe is trained first (``interp train induction``).
Figures (heads detector, everything included: finding files, planning, loading each checkpoint
into the one model instance, scoring, building the table):

- checkpoints per second with 1 worker (in-process, the call repeated in one warm process), best
  of the rounds below; target >= 30/s (goal 60);
- the same with 2 worker processes (pool start-up included), the two alternating, 15 rounds;
  target speed-up >= 1.6x, judged on the median over rounds of the ratio within a round (both
  timings of a round see the same machine; the middle half of those ratios, and the ratio of
  the two bests, which may come from rounds the machine ran at different speeds, beside it);
- the same speed-up as ``interp score`` meets it: each call the first in a fresh process (torch
  and the package imported before the clock starts; the model is built and the memory
  allocator is cold, for 1 worker as for 2), 15 rounds, judged the same way;
- the machine's own ceiling for this work: serial scoring in two processes at once against one
  process alone (each scores the run 6 times after a warm-up; the pair starts together),
  ``2 x alone / pair`` from the best of 3 rounds (the median of the rounds' ratios beside it):
  what the two cores give two independent copies of this work, which no pool can beat;
- the in-process speed-up on 200 checkpoints (the run's files linked again under new steps),
  best of 2, where the fixed costs of a pool are amortised;
- peak resident memory of a fresh process scoring 20 and 200 checkpoints (the run's files
  repeated under new step names); must not grow with the number of checkpoints.

The load average is recorded before and after; when the 1-minute load before the run exceeds
half the cores the figures are marked as taken on a busy machine and no target is marked met.
Writes its section of BENCHMARKS.md between ``<!-- scoring:start -->`` and ``<!-- scoring:end -->``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import is_busy, load_average, load_note, machine, verdict, write_section  # noqa: E402

from interp.runs.checkpoints import list_checkpoints  # noqa: E402
from interp.scoring.batch import score_checkpoints  # noqa: E402

MEMORY_SCRIPT = """
import resource, sys
from interp.scoring.batch import score_checkpoints
table = score_checkpoints(sys.argv[1], detectors=["heads"])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, len(table))
"""

#: One call in a fresh process, timed after the imports: what ``interp score`` does.
FRESH_SCRIPT = """
import sys, time
import circuits
from interp.scoring.batch import score_checkpoints
start = time.perf_counter()
score_checkpoints(sys.argv[1], detectors=["heads"], workers=int(sys.argv[2]))
print(time.perf_counter() - start)
"""

#: Serial scoring repeated ``k`` times once told to go (after a warm-up call, it says it is ready).
REPEAT_SCRIPT = """
import sys, time
from interp.scoring.batch import score_checkpoints
run, k = sys.argv[1], int(sys.argv[2])
score_checkpoints(run, detectors=["heads"])
print("ready", flush=True)
sys.stdin.readline()
start = time.perf_counter()
for _ in range(k):
    score_checkpoints(run, detectors=["heads"])
print(time.perf_counter() - start, flush=True)
"""
CEILING_REPEATS = 6
#: Rounds of 1 then 2 workers for each speed-up.
ROUNDS = 15
#: Pause after each timed call of this process (a worker takes ~20 ms to exit).
SETTLE_SECONDS = 0.1


def alternating(measure, repeats: int = ROUNDS) -> tuple[float, float, list[float]]:
    """``measure(workers)`` seconds for 1 then 2 workers, ``repeats`` rounds: the best of each, and the
    ratio within each round (both of a round see the same machine), sorted."""
    seconds: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(repeats):
        for workers in seconds:
            seconds[workers].append(measure(workers))
    return min(seconds[1]), min(seconds[2]), sorted(a / b for a, b in zip(seconds[1], seconds[2]))


def spread(ratios: list[float]) -> str:
    """The middle half of the rounds' ratios, in words."""
    low, _, high = statistics.quantiles(ratios, n=4, method="inclusive")
    return f"middle half of the rounds {low:.2f}-{high:.2f}x"


def timed(run: Path, repeats: int = ROUNDS) -> tuple[float, float, list[float]]:
    """:func:`alternating` in this process, after a warm-up call; each call timed until the table is
    returned. Its workers may still be exiting then (a background thread reaps them); the pause
    after each call keeps their exit out of the next call's time (a caller scoring again within
    ~20 ms would share a core with the last worker's exit)."""
    def measure(workers: int) -> float:
        start = time.perf_counter()
        score_checkpoints(run, detectors=["heads"], workers=workers)
        seconds = time.perf_counter() - start
        time.sleep(SETTLE_SECONDS)
        return seconds

    score_checkpoints(run, detectors=["heads"], workers=1)
    return alternating(measure, repeats)


def timed_fresh(run: Path, repeats: int = ROUNDS) -> tuple[float, float, list[float]]:
    """:func:`alternating`, each call the first in a fresh process (imports before the clock starts)."""
    def measure(workers: int) -> float:
        out = subprocess.run([sys.executable, "-c", FRESH_SCRIPT, str(run), str(workers)],
                             capture_output=True, text=True, check=True)
        return float(out.stdout.split()[-1])

    return alternating(measure, repeats)


def ceiling(run: Path, rounds: int = 3) -> tuple[float, float, float]:
    """Seconds of ``CEILING_REPEATS`` serial scorings in one process alone and, right after, in each of
    two processes at once (the slower); best of each over ``rounds``, and the median over rounds of
    ``2 x alone / pair``. A ratio above 2 in a round means the machine's speed drifted within it."""
    alone: list[float] = []
    pair: list[float] = []
    for _ in range(rounds):
        for n, into in ((1, alone), (2, pair)):
            procs = [subprocess.Popen([sys.executable, "-c", REPEAT_SCRIPT, str(run), str(CEILING_REPEATS)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(n)]
            if not all(_ready(p) for p in procs):  # imports and warm-up done
                for p in procs:
                    p.kill()
                    p.wait()
                raise RuntimeError("a ceiling process failed before it was ready")
            for p in procs:  # the pair starts together
                p.stdin.write("go\n")
                p.stdin.flush()
            outs = [p.communicate()[0].split() for p in procs]
            if any(p.returncode for p in procs):
                raise RuntimeError("a ceiling process failed")
            into.append(max(float(out[-1]) for out in outs))
    return min(alone), min(pair), statistics.median(2 * a / b for a, b in zip(alone, pair))


def _ready(proc: subprocess.Popen) -> bool:
    """Read ``proc``'s output up to its "ready" line; False if it ends first."""
    for line in proc.stdout:
        if line.strip() == "ready":
            return True
    return False


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
            assert cli(["train", "induction", "--out-dir", str(run), "--quiet"]) == 0
            print(f"trained the default induction run in {time.perf_counter() - start:.0f} s")
        n = len(list_checkpoints(run))
        load_before = load_average()
        one, two, ratios = timed(run)
        fresh_one, fresh_two, fresh_ratios = timed_fresh(run)
        alone, pair, most = ceiling(run)
        mem20 = peak_rss_mb(fake_run(run, 20, root))
        big = fake_run(run, 200, root)
        mem200 = peak_rss_mb(big)
        big_one, big_two, big_ratios = timed(big, 2)
        load_after = load_average()
    paired, fresh_paired, big_paired = (statistics.median(r) for r in (ratios, fresh_ratios, big_ratios))
    rate1, rate2 = n / one, n / two
    speedup, fresh_speedup = one / two, fresh_one / fresh_two
    growth = mem200[0] - mem20[0]
    busy = is_busy(load_before)
    rows = [
        ("checkpoints per second, 1 worker (in-process)", f"{rate1:.1f} /s ({one:.2f} s for {n})", ">= 30/s (goal 60)",
         verdict(rate1 >= 30, busy)),
        ("checkpoints per second, 2 worker processes", f"{rate2:.1f} /s ({two:.2f} s for {n})", "", ""),
        ("speed-up, 2 workers vs 1, in a warm process (median of the rounds)",
         f"{paired:.2f}x ({spread(ratios)}; ratio of the bests {speedup:.2f}x)", ">= 1.6x",
         verdict(paired >= 1.6, busy)),
        ("speed-up, 2 workers vs 1, first call in a fresh process (`interp score`; median of the rounds)",
         f"{fresh_paired:.2f}x ({spread(fresh_ratios)}; bests {fresh_one:.2f} s -> {fresh_two:.2f} s: "
         f"{fresh_speedup:.2f}x)",
         ">= 1.6x", verdict(fresh_paired >= 1.6, busy)),
        ("the machine's ceiling: 2 serial scorers at once vs 1 alone",
         f"{2 * alone / pair:.2f}x ({CEILING_REPEATS} jobs, best of 3: {alone:.2f} s alone, {pair:.2f} s each of two "
         f"at once; median of the 3 rounds {most:.2f}x)", "", ""),
        ("speed-up on 200 checkpoints, warm process (best of 2)",
         f"{big_one / big_two:.2f}x ({big_one:.2f} s -> {big_two:.2f} s; median {big_paired:.2f}x)", "", ""),
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
        f"probe of 64 sequences, `induction_heads`, the table); wall clock, {ROUNDS} rounds of 1 then 2 workers, "
        f"best of the rounds for the rates. {machine()}. {load_note(load_before, load_after)}\n\n{table}\n\n"
        "A warm process is a notebook scoring again: its model instance is built and its allocator holds the "
        "memory the scores need. A fresh process is `interp score`: the first call builds the model and faults "
        "in its memory, with 1 worker as with 2. The workers are forked with the checkpoints to score in "
        "memory (`interp/scoring/fork_pool.py`). A 2-worker pool pays what a warm serial job does not: forking each "
        "worker from a process that holds ~330 MB of anonymous memory in ~950 mappings (torch and "
        "transformer_lens; 12-17 ms a fork, one after the other, so the second worker starts ~25 ms after the "
        "first); in each worker's first checkpoint ~6,000 page faults on memory it shares with its parent "
        "(~3.7 us each on this VM: ~20-30 ms); an uneven end (the workers finish up to a checkpoint apart); "
        "and the table built while the workers exit (each exit takes ~20 ms of a core; a background thread "
        "reaps them, so the call no longer waits for the last one, which took ~12 ms a job when it did): "
        "~80-100 ms in all, on a job of half a second. Once started, a worker scores a checkpoint as fast as "
        "the serial job does (median 26.4 against 26.0 ms, measured alternating on 2026-12-02), so on 200 "
        "checkpoints the pool comes near the ceiling. The ceiling row is what the two "
        "vCPUs give two independent copies of the serial job at once: no pool can do better. This VM's speed "
        "drifts by 20-40 % over seconds (the same job takes 22 or 33 ms a checkpoint from one process to the "
        "next), so a ratio of two bests taken in different rounds moves by that much from run to run; the "
        "speed-ups are judged on the median of the ratios within a round, whose two timings see the same speed.\n\n"
        "Memory: peak resident set of a fresh process (torch and transformer_lens imported) scoring 20 and "
        "200 checkpoints; one model instance is reused and each checkpoint's tensors are freed after "
        "scoring, so only the output table grows."
    )
    print(text)
    write_section("scoring", text)
    return 0 if all(row[3] in ("", "ok") for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
