"""The ``interp`` command. A user mistake prints one line on stderr and exits 2, never a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_USAGE = 2
#: ``interp score``: some checkpoints could not be scored (they are error rows in the table).
EXIT_SOME_FAILED = 1


#: ``interp score`` rewrites its table at most this often (and always at the end).
FLUSH_SECONDS = 1.0
#: ``interp score`` prints at most this many error reasons on stderr.
MAX_ERRORS_SHOWN = 20


class UsageError(Exception):
    """A mistake on the command line or in its inputs, shown as one line."""


def _train(args: argparse.Namespace) -> int:
    from interp.presets import preset
    from interp.training import train

    steps = args.steps if args.steps is not None else args.epochs
    options = preset(args.task, args.preset, seed=args.seed, steps=steps, checkpoint_every=args.checkpoint_every)
    out = train(options, args.out, resume=args.resume, quiet=args.quiet)
    if not args.quiet:
        print(f"run written to {out}")
    return 0


def _score(args: argparse.Namespace) -> int:
    import time

    import pandas as pd

    from interp.score_table import SUFFIXES, read_table, write_table
    from interp.scoring import DETECTORS, drop_failed, score_checkpoints

    out = Path(args.out)
    if out.suffix.lower() not in SUFFIXES:
        raise UsageError(f"--out must end in .parquet or .csv, got {out}")
    detectors = [d.strip() for d in args.detectors.split(",") if d.strip()]
    unknown = [d for d in detectors if d not in DETECTORS]
    if unknown or not detectors:
        raise UsageError(f"unknown detector(s) {', '.join(unknown) or '(none)'}; known: {', '.join(DETECTORS)}")
    existing = read_table(out) if out.exists() else None
    base = drop_failed(existing)
    new: list[pd.DataFrame] = []
    last_write = [0.0]

    def flush(force: bool = False) -> None:
        if new and (force or time.monotonic() - last_write[0] >= FLUSH_SECONDS):
            write_table(pd.concat([base, *new], ignore_index=True), out)
            last_write[0] = time.monotonic()

    def on_checkpoint(rows: pd.DataFrame) -> None:
        new.append(rows)
        flush()

    try:
        table = score_checkpoints(args.paths, detectors, existing=existing, workers=args.workers,
                                  scheduler=args.scheduler, quiet=args.quiet, on_checkpoint=on_checkpoint)
    finally:
        flush(force=True)
    if new:
        write_table(table, out)
    n_scored, n_failed = table.attrs["n_scored"], table.attrs["n_failed"]
    errors = table[table["metric"] == "error"]
    for _, row in errors.drop_duplicates(["run", "checkpoint"]).head(MAX_ERRORS_SHOWN).iterrows():
        print(f"interp: could not score {row['run']}/{row['checkpoint']}: {row['error']}", file=sys.stderr)
    if not args.quiet:
        for run, why in table.attrs["skipped"].items():
            for detector, reason in why.items():
                print(f"skipped {detector} on {run}: {reason}")
        print(f"scored {n_scored} checkpoint(s), {n_failed} failed; table: {out}")
    return EXIT_SOME_FAILED if n_failed else 0


def _report(args: argparse.Namespace) -> int:
    from interp.report import write_report
    from interp.score_table import read_table

    table = read_table(args.table)
    path = write_report(table, args.out)
    if not args.quiet:
        print(f"report written to {path}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from interp.inspection import inspect_checkpoint

    print(inspect_checkpoint(args.checkpoint))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from interp.demo import run_demo

    result = run_demo(args.out, steps_scale=args.steps_scale, workers=args.workers, quiet=args.quiet)
    print(f"report: {result.report.resolve()}")
    if not args.quiet:
        print(f"runs: {', '.join(str(p) for p in result.runs.values())}; scores: {result.table}")
        print("seconds: " + ", ".join(f"{stage} {secs:.0f}" for stage, secs in result.seconds.items()))
    return EXIT_SOME_FAILED if result.n_failed else 0


def _memorization(args: argparse.Namespace) -> int:
    import pandas as pd

    from interp.checkpoints import atomic_write
    from interp.memorization import CELL_COLUMNS, capacity_table, fit_bits_per_parameter, memorization_sweep, sweep_cells
    from interp.memorization_report import write_memorization_report

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a directory")
    out.mkdir(parents=True, exist_ok=True)
    cells_path = out / "cells.csv"
    existing = None
    if cells_path.exists():
        existing = pd.read_csv(cells_path, keep_default_na=False, na_values={"memorized_bits": [""]})
        if list(existing.columns) != list(CELL_COLUMNS):
            raise UsageError(f"{cells_path} is not a memorization table; choose another --out")
    rows = [] if existing is None else existing.to_dict("records")

    def save(frame: pd.DataFrame) -> None:
        atomic_write(cells_path, lambda tmp: frame.to_csv(tmp, index=False))

    def on_row(row: dict) -> None:  # every finished cell reaches the disk at once
        rows.append(row)
        save(pd.DataFrame(rows, columns=list(CELL_COLUMNS)))

    cells = sweep_cells(args.sizes, args.datasets, seq_len=args.seq_len, vocab=args.vocab, seed=args.seed)
    table = memorization_sweep(cells, existing=existing, workers=args.workers, scheduler=args.scheduler,
                               quiet=args.quiet, on_row=on_row)
    save(table)
    capacity = capacity_table(table)
    atomic_write(out / "capacity.csv", lambda tmp: capacity.to_csv(tmp, index=False))
    page = write_memorization_report(table, out / "memorization.html")
    failed = table[table["stopped_by"] == "error"]
    for row in failed.itertuples():
        print(f"interp: cell {row.model} x {row.n_sequences} failed: {row.error}", file=sys.stderr)
    if not args.quiet:
        print(capacity.to_string(index=False))
        print(f"bits per parameter (fit): {fit_bits_per_parameter(capacity):.2f}")
        print(f"table: {cells_path}; report: {page}")
    return EXIT_SOME_FAILED if len(failed) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interp", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a toy model, writing a run directory with checkpoints")
    p.add_argument("task", choices=["induction", "modadd"])
    p.add_argument("--out", required=True, help="run directory (created; must be empty unless --resume)")
    p.add_argument("--preset", default="default", help="training recipe (modadd: default, nanda2023)")
    p.add_argument("--seed", type=int, default=None)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--steps", type=_positive, default=None, help="optimiser steps")
    group.add_argument("--epochs", type=_positive, default=None, help="same as --steps (modadd is full batch)")
    p.add_argument("--checkpoint-every", type=_positive, default=None)
    p.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)

    p = sub.add_parser("score", help="score checkpoints with the detectors into one long table")
    p.add_argument("paths", nargs="+", metavar="PATH", help="run directories, checkpoint files, or globs")
    p.add_argument("--detectors", default="heads,fourier", help="comma-separated: heads, fourier (default both)")
    p.add_argument("--out", required=True, help="table file, .parquet or .csv; checkpoints already in it are skipped")
    p.add_argument("--workers", type=_positive, default=1, help="local worker processes (default 1)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="Dask scheduler, e.g. tcp://HOST:8786 (needs the [dask] extra)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=_score)

    p = sub.add_parser("report", help="turn a scores table into a self-contained HTML page")
    p.add_argument("table", help="table written by interp score (.parquet or .csv)")
    p.add_argument("--out", required=True, help="HTML file to write")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_report)

    p = sub.add_parser("inspect", help="print the head table or the Fourier summary of one checkpoint")
    p.add_argument("checkpoint", help="checkpoint file or run directory (its latest checkpoint)")
    p.set_defaults(func=_inspect)

    p = sub.add_parser("demo", help="train both toy models, score their checkpoints, write the report")
    p.add_argument("--out", default="interp-demo", help="directory for the runs, table and report")
    p.add_argument("--workers", type=_positive, default=None, help="scoring processes (default min(2, cores))")
    p.add_argument("--steps-scale", type=float, default=1.0, help=argparse.SUPPRESS)  # tests: shorter runs
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_demo)

    from interp.presets import MEMORIZATION_DATASETS, MEMORIZATION_SIZES

    p = sub.add_parser("memorization", help="measure memorisation capacity (bits per parameter) on random data")
    p.add_argument("--sizes", type=_sizes, default=MEMORIZATION_SIZES,
                   help="model sizes as D_MODELxLAYERS, comma-separated (default "
                        + ",".join(f"{d}x{n}" for d, n in MEMORIZATION_SIZES) + ")")
    p.add_argument("--datasets", type=_positive_list, default=MEMORIZATION_DATASETS,
                   help="data-set sizes in sequences, comma-separated (default "
                        + ",".join(map(str, MEMORIZATION_DATASETS)) + ")")
    p.add_argument("--seq-len", type=_positive, default=32, help="tokens per sequence (default 32)")
    p.add_argument("--vocab", type=_positive, default=64, help="vocabulary size (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="directory for cells.csv, capacity.csv and memorization.html; "
                                                "cells already in it are kept (restartable)")
    p.add_argument("--workers", type=_positive, default=1, help="local worker processes (default 1)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS", help="Dask scheduler, e.g. tcp://HOST:8786")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_memorization)
    return parser


def _positive_list(text: str) -> list[int]:
    values = [_positive(part) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


def _sizes(text: str) -> list[tuple[int, int]]:
    """``32x1,64x2`` -> [(32, 1), (64, 2)]; a bare ``32`` means one layer."""
    sizes = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        d, _, n = part.lower().partition("x")
        sizes.append((_positive(d), _positive(n or "1")))
    if not sizes:
        raise argparse.ArgumentTypeError(f"expected sizes such as 32x1,64x2, got {text!r}")
    return sizes


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interp: interrupted", file=sys.stderr)
        return 130
    except (UsageError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        print(f"interp: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
