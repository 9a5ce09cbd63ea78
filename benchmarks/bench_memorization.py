"""Run the default memorisation-capacity sweep; write the `memorization` section of BENCHMARKS.md.

Runs `interp memorization` with its defaults (model sizes x data-set sizes, 2 worker processes)
into a fresh directory, times it end to end (target: <= 20 minutes on 2 cores), and reports the
capacity of each model and the fitted bits per parameter next to Morris et al. 2025's range for
fp32 models (2.86-4.23).

Usage: python benchmarks/bench_memorization.py [--out DIR] [--workers N] [--no-write]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import is_busy, load_average, load_note, machine, markdown_table, minutes, verdict, write_section  # noqa: E402

from interp.cli import main as interp_main  # noqa: E402
from interp.experiments.memorization import (
    MEMORIZATION_DATASETS,
    MEMORIZATION_SIZES,
    MemorizationCell,
    fit_bits_per_parameter  # noqa: E402,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="sweep directory (default: a temporary one)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or Path(tmp) / "sweep")
        before = load_average()
        start = time.perf_counter()
        status = interp_main(["memorization", "--out-dir", str(out), "--workers", str(args.workers), "--quiet"])
        seconds = time.perf_counter() - start
        after = load_average()
        cells = pd.read_csv(out / "cells.csv")
        capacity = pd.read_csv(out / "capacity.csv")
    slope = fit_bits_per_parameter(capacity)
    cell = MemorizationCell(d_model=0, n_layers=0, n_sequences=0)
    cell_table = cells[["model", "params", "n_sequences", "reachable_bits", "memorized_bits", "fraction",
                        "bits_per_parameter", "steps", "stopped_by", "seconds"]]
    text = f"""## Memorisation capacity (`python benchmarks/bench_memorization.py`)

{machine()}. {load_note(before, after)} `interp memorization --workers {args.workers}` with its defaults: GPT-style models
(pre-LayerNorm, heads of 8, GELU MLP 4x, untied embeddings; `interp.memorization_config`)
of sizes {", ".join(f"d_model {d} x {n} layer(s)" for d, n in MEMORIZATION_SIZES)}, each trained on
{", ".join(map(str, MEMORIZATION_DATASETS))} uniformly random sequences of {cell.seq_len} tokens over
{cell.vocab} ids (Adam lr {cell.lr}, batch {cell.batch_size}, plateau: < {cell.plateau_tol:.1%}
growth over {cell.plateau_window} steps, then lr / 10, {cell.lr_drops} times). Exit status {status}.

| what | figure |
|---|---|
| whole default sweep, {len(cells)} cells (target <= 20 min) | **{minutes(seconds)}**: {verdict(seconds <= 1200, is_busy(before))} |
| fitted capacity, bits per parameter (Morris et al. 2025, fp32: 2.86-4.23) | **{slope:.2f}** |

Capacity per model (the largest total memorised bits over its data sets; `saturated` = that
cell stopped on a plateau short of memorising all it could):

{markdown_table(capacity)}

Every cell:

{markdown_table(cell_table)}
"""
    print(text)
    if not args.no_write:
        write_section("memorization", text)


if __name__ == "__main__":
    main()
