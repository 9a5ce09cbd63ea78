"""Does the memorisation capacity converge? Write the `capacity-convergence` section of BENCHMARKS.md.

Two checks on `interp memorization`'s defaults (issue 15):

1. **Budget.** Each model's capacity cell of seed 0 (the data-set size where its memorised bits
   peaked) trained again with 4x the step budget and plateau window (`--budget 4`): the capacity
   should move by less than 5 %. Only those cells are retrained (the whole grid at 4x is about
   80 minutes of one core), so a larger data set overtaking the capacity cell at 4x is not seen.
2. **Seeds.** The default grid with seeds 0, 1 and 2: bits per parameter (the fit of
   :func:`interp.memorization.fit_bits_per_parameter`) per seed, and their mean and range, beside
   Morris et al. 2025's per-configuration range for fp32 models of 100k parameters and up
   (2.86-4.23).

Every run goes into ``ROOT/seed<s>/`` and ``ROOT/budget4/`` and is restartable (cells already
there are kept), so a killed benchmark resumes and the figures can be recomputed without training.

Usage: python benchmarks/bench_capacity_convergence.py --root DIR [--seeds 0,1,2] [--no-write]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_average, load_note, machine, markdown_table, minutes, write_section  # noqa: E402

from interp.cli import main as interp_main  # noqa: E402
from interp.experiments.memorization import capacity_table, fit_bits_per_parameter, read_cells  # noqa: E402

SEEDS = (0, 1, 2)
BUDGET = 4
TOLERANCE = 0.05
PAPER_RANGE = (2.86, 4.23)


def run(args: list[str]) -> None:
    status = interp_main(["memorization", *args, "--quiet"])
    if status != 0:
        raise SystemExit(f"interp memorization {' '.join(args)} exited {status}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="directory of the runs (restartable)")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma-separated (default 0,1,2; 0 first)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]

    before, start = load_average(), time.perf_counter()
    capacities = {}
    for seed in seeds:
        run(["--seed", str(seed), "--out-dir", str(args.root / f"seed{seed}")])
        capacities[seed] = capacity_table(read_cells(args.root / f"seed{seed}" / "cells.csv"))
    base = capacities[seeds[0]]
    for row in base.itertuples():
        run(["--budget", str(BUDGET), "--sizes", f"{row.d_model}x{row.n_layers}", "--datasets", str(row.at_n_sequences),
             "--out-dir", str(args.root / f"budget{BUDGET}")])
    seconds, after = time.perf_counter() - start, load_average()

    longer = read_cells(args.root / f"budget{BUDGET}" / "cells.csv")
    budget = base[["model", "params", "at_n_sequences", "capacity_bits", "saturated"]].merge(
        longer[["model", "n_sequences", "memorized_bits", "steps", "stopped_by"]],
        left_on=["model", "at_n_sequences"], right_on=["model", "n_sequences"]).drop(columns="n_sequences")
    budget = budget.rename(columns={"capacity_bits": "bits_1x", "memorized_bits": f"bits_{BUDGET}x",
                                    "steps": f"steps_{BUDGET}x", "stopped_by": f"stopped_{BUDGET}x"})
    budget["change"] = budget[f"bits_{BUDGET}x"] / budget["bits_1x"] - 1
    worst = float(budget["change"].abs().max())

    per_seed = pd.concat([c.assign(seed=s) for s, c in capacities.items()])
    wide = per_seed.pivot_table(index=["params", "model"], columns="seed", values="bits_per_parameter").reset_index()
    wide.columns = [c if isinstance(c, str) else f"seed {c}" for c in wide.columns]
    fits = {s: fit_bits_per_parameter(c) for s, c in capacities.items()}
    values = pd.Series(fits)
    lo, hi = PAPER_RANGE
    spent = (f"{minutes(seconds)} for what was not already in `DIR`" if seconds >= 1 else
             "Every run was already in `DIR`, so nothing was trained")
    text = f"""## Capacity convergence (`python benchmarks/bench_capacity_convergence.py --root DIR`)

{machine()}. {load_note(before, after)} {spent}
(runs are kept and reused, so no time here is the cost of the check). `interp memorization`
defaults, seeds {", ".join(map(str, seeds))}; then each model's capacity cell of seed {seeds[0]} again with
`--budget {BUDGET}` ({BUDGET}x the step budget and the plateau window).

| what | figure | target |
|---|---|---|
| largest change of a capacity cell at {BUDGET}x the budget | **{worst:+.1%}** | < {TOLERANCE:.0%}: {"ok" if worst < TOLERANCE else "MOVED"} |
| bits per parameter, seeds {", ".join(map(str, seeds))} | {", ".join(f"{v:.2f}" for v in values)} | |
| bits per parameter, mean (range over seeds) | **{values.mean():.2f}** ({values.min():.2f}-{values.max():.2f}) | Morris et al. 2025, fp32, 100k+ parameters: {lo}-{hi} |

Capacity cells at 1x and {BUDGET}x the budget (seed {seeds[0]}; `change` = {BUDGET}x / 1x - 1):

{markdown_table(budget)}

Bits per parameter of each model's capacity, per seed:

{markdown_table(wide)}
"""
    print(text)
    if not args.no_write:
        write_section("capacity-convergence", text)


if __name__ == "__main__":
    main()
