"""The ``interp`` command. A user mistake prints one line on stderr and exits 2, never a traceback.

``interp --help``, ``interp COMMAND --help`` and the mistakes the parser catches import neither
torch nor transformer_lens: the parser is built from light modules (the presets, the detector
folders read by :mod:`interp.detectors.catalog`); each command imports what it runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from interp import arguments

EXIT_USAGE = 2
#: Some items could not be done (error rows in the table, failed cells), or the job could not
#: write its output (a full disk, a read-only file system).
EXIT_SOME_FAILED = 1
#: ``interp score`` prints at most this many error reasons on stderr.
MAX_ERRORS_SHOWN = 20


class UsageError(Exception):
    """A mistake on the command line or in its inputs, shown as one line."""


def _train(args: argparse.Namespace) -> int:
    from interp.tasks.presets import preset

    steps = args.steps if args.steps is not None else args.epochs
    corpus = getattr(args, "corpus", None)
    if corpus is not None:
        if args.task != "text":
            raise UsageError(f"--corpus is for the text task, not {args.task}")
        corpus = str(Path(corpus).expanduser().resolve())
    # an unknown preset: one line before torch is imported
    options = preset(args.task, args.preset, seed=args.seed, steps=steps, checkpoint_every=args.checkpoint_every,
                     corpus=corpus)
    if args.set:
        options = _recipe_values(args, options)
    if corpus is not None:
        from interp.tasks.text import load_corpus

        load_corpus(corpus)  # a missing folder or one without text files: one line, before anything is written
    from interp.training.loop import train

    out = train(options, args.out, resume=args.resume, quiet=args.quiet, steps=steps, device=args.device)
    if not args.quiet:
        print(f"run written to {out}")
    return 0


def _recipe_values(args: argparse.Namespace, options):
    """``options`` with the values of ``--set KEY=VALUE`` (:func:`interp.experiments.sweep_grid.parse_settings`)."""
    if args.resume:
        raise UsageError("--set cannot change the recipe of a run being resumed (its run.json holds the recipe)")
    keys = {spec.partition("=")[0].strip() for spec in args.set}
    flags = {"steps": (args.steps if args.steps is not None else args.epochs, "--steps/--epochs"),
             "checkpoint_every": (args.checkpoint_every, "--checkpoint-every")}
    for key, (value, flag) in flags.items():
        if key in keys and value is not None:
            raise UsageError(f"{key} is given twice: by {flag} and by --set {key}=...")
    from interp.experiments.sweep_grid import parse_settings

    return parse_settings(args.task, args.set, options)


def _score(args: argparse.Namespace) -> int:
    from interp.runs.layout import scored_checkpoint, unlisted_files
    from interp.scoring.table import SUFFIXES
    from interp.scoring.batch import check_detectors, score_to_file

    out = Path(args.out)
    if out.suffix.lower() not in SUFFIXES:
        raise UsageError(f"--out must end in .parquet or .csv, got {out}")
    detectors = check_detectors([d.strip() for d in args.detectors.split(",") if d.strip()])
    table = score_to_file(args.paths, out, detectors, workers=args.workers, scheduler=args.scheduler,
                          quiet=args.quiet, device=args.device)
    n_scored, n_failed = table.attrs["n_scored"], table.attrs["n_failed"]
    if table.empty and table.attrs["skipped"]:  # no detector fits any run named: nothing to write
        reasons = "; ".join(f"{d} on {run}: {why}" for run, skips in table.attrs["skipped"].items()
                            for d, why in skips.items())
        raise UsageError(f"no checkpoint scored: the detectors fit none of the runs ({reasons})")
    errors = table[table["metric"] == "error"]
    for _, row in errors.drop_duplicates(["run", "checkpoint"]).head(MAX_ERRORS_SHOWN).iterrows():
        path = scored_checkpoint(row["run"], row["checkpoint"])
        print(f"interp: could not score {path}: {row['error']}", file=sys.stderr)
    for run in sorted({str(run) for run in table["run"].dropna().unique()}):
        for path in unlisted_files(run):
            rule = ("a checkpoint of a series is a folder named by step (step1000, checkpoint-500, global_step2000)"
                    if path.is_dir() else "a checkpoint inside a run is named step_N.safetensors")
            print(f"interp: ignored {path}: {rule}", file=sys.stderr)
    if not args.quiet:
        for run, why in table.attrs["skipped"].items():
            for detector, reason in why.items():
                print(f"skipped {detector} on {run}: {reason}")
        print(f"scored {n_scored} checkpoint(s), {n_failed} failed; table: {out}")
    return EXIT_SOME_FAILED if n_failed else 0


def _report(args: argparse.Namespace) -> int:
    from interp.report import write_report
    from interp.scoring.table import read_table

    if Path(args.table).is_dir():  # a sweep directory (interp sweep): its page
        from interp.experiments.sweep import read_sweep
        from interp.experiments.sweep_page import write_sweep_report

        path = write_sweep_report(read_sweep(args.table), args.out)
    else:
        path = write_report(read_table(args.table), args.out)
    if not args.quiet:
        print(f"report written to {path}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from interp.inspection import inspect_checkpoint

    print(inspect_checkpoint(args.checkpoint, device=args.device))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from interp.demo import run_demo

    result = run_demo(args.out, steps_scale=args.steps_scale, workers=args.workers, quiet=args.quiet,
                      device=args.device)
    print(f"report: {result.report.resolve()}")
    if not args.quiet:
        print(f"runs: {', '.join(str(p) for p in result.runs.values())}; scores: {result.table}")
        print("seconds: " + ", ".join(f"{stage} {secs:.0f}" for stage, secs in result.seconds.items()))
    return EXIT_SOME_FAILED if result.n_failed else 0


def _memorization(args: argparse.Namespace) -> int:
    from interp.experiments.memorization import MemorizationCell, memorization_sweep_to_dir, sweep_cells

    default = MemorizationCell(d_model=0, n_layers=0, n_sequences=0)
    budget = {"max_steps": round(default.max_steps * args.budget),
              "plateau_window": round(default.plateau_window * args.budget)}
    if min(budget.values()) < 1:
        least = 1 / min(default.max_steps, default.plateau_window)
        raise UsageError(f"--budget {args.budget:g} leaves a cell {budget['max_steps']} steps and a plateau window "
                         f"of {budget['plateau_window']}; it must be at least {least:g} (one evaluation)")
    cells = sweep_cells(args.sizes, args.datasets, seq_len=args.seq_len, vocab=args.vocab, seed=args.seed, **budget)
    result = memorization_sweep_to_dir(cells, args.out, workers=args.workers, scheduler=args.scheduler,
                                       quiet=args.quiet, device=args.device)
    failed = result.cells[result.cells["stopped_by"] == "error"]
    for row in failed.itertuples():
        print(f"interp: cell {row.model} x {row.n_sequences} failed: {row.error}", file=sys.stderr)
    if not args.quiet:
        print(result.capacity.to_string(index=False))
        print(f"bits per parameter (fit): {result.bits_per_parameter:.2f}")
        print(f"table: {result.cells_path}; report: {result.report_path}")
    return EXIT_SOME_FAILED if len(failed) else 0


def _sweep(args: argparse.Namespace) -> int:
    from interp.tasks.presets import SWEEP_GRIDS

    if not args.grid and args.task not in SWEEP_GRIDS:  # one line before torch is imported
        raise UsageError(f"no default grid for {args.task}; give --grid KEY=V1,V2")
    from interp.experiments.sweep import parse_grid, sweep

    grid = parse_grid(args.task, args.grid) if args.grid else SWEEP_GRIDS[args.task]
    result = sweep(args.task, args.preset, grid, args.seeds, args.out, workers=args.workers,
                   scheduler=args.scheduler, bits_per_parameter=args.bits_per_parameter, quiet=args.quiet,
                   device=args.device)
    failed = result.table[result.table["error"] != ""]
    for row in failed.head(MAX_ERRORS_SHOWN).itertuples():
        print(f"interp: cell {row.cell} failed: {row.error}", file=sys.stderr)
    if not args.quiet:
        print(f"trained {result.n_trained} cell(s), {result.n_failed} failed; table: {result.path}; page: {result.page}")
    return EXIT_SOME_FAILED if len(failed) else 0


def _detectors() -> dict[str, str | None]:
    """Detector name -> its help line, for the parser.

    The registry's when something has imported it already (a detector added to ``DETECTORS`` at
    run time counts); else the detector folders and the help read from their source, which
    imports neither torch nor the detectors (``tests/test_cli.py`` checks both agree).
    """
    registry = sys.modules.get("interp.detectors.registry")
    if registry is not None and hasattr(registry, "DETECTORS"):
        return {name: detector.help for name, detector in registry.DETECTORS.items()}
    from interp.detectors.catalog import listing

    return listing()  # the folders and the plugins' entry points


def _device_flag(parser: argparse.ArgumentParser, what: str) -> None:
    from interp.base.device import DEVICE_NAMES

    parser.add_argument("--device", type=arguments.device, default="auto", metavar="DEVICE",
                        help=f"{what}: {DEVICE_NAMES} (default auto: the first CUDA device when there is one, "
                             "else the CPU)")


def build_parser() -> argparse.ArgumentParser:
    """The ``interp`` parser; building it imports neither torch nor transformer_lens."""
    from interp import __version__
    from interp.analysis.capacity_figures import MEASURED_BITS_PER_PARAMETER
    from interp.tasks.presets import MEMORIZATION_DATASETS, MEMORIZATION_SIZES, PRESETS, SWEEP_GRIDS

    detectors = _detectors()
    tasks = sorted(PRESETS)  # every task has its recipes (tests/test_cli.py: the same names as TASKS)
    parser = argparse.ArgumentParser(prog="interp", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"interp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a toy model, writing a run directory with checkpoints")
    p.add_argument("task", choices=tasks)
    p.add_argument("--out", required=True, help="run directory (created; must be empty unless --resume)")
    p.add_argument("--preset", default="default", help="training recipe: " + "; ".join(
        f"{task}: {', '.join(names)}" for task, names in sorted(PRESETS.items())))
    p.add_argument("--seed", type=arguments.seed, default=None, help="training seed (default: the preset's, 0)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--steps", type=arguments.positive, default=None, help="optimiser steps")
    group.add_argument("--epochs", type=arguments.positive, default=None, help="same as --steps (modadd is full batch)")
    p.add_argument("--checkpoint-every", type=arguments.positive, default=None)
    p.add_argument("--corpus", default=None, metavar="DIR",
                   help="text: train on the text files under DIR instead of the standard library's .py files")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change one value of the recipe, e.g. --set lr=0.003 --set d_model=64 (the keys of "
                        "sweep --grid; recorded in run.json)")
    p.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint in --out")
    _device_flag(p, "where the model trains")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)

    p = sub.add_parser("score", help="score checkpoints with the detectors into one long table",
                       epilog="detectors: " + "; ".join(f"{name}: {text}" if text else name
                                                        for name, text in detectors.items()))
    p.add_argument("paths", nargs="+", metavar="PATH", help="run directories, checkpoint files, or globs")
    p.add_argument("--detectors", default=",".join(detectors),
                   help=f"comma-separated, any of {', '.join(detectors)} (default all)")
    p.add_argument("--out", required=True, help="table file, .parquet or .csv; checkpoints already in it are skipped")
    p.add_argument("--workers", type=arguments.positive, default=1, help="local worker processes (default 1)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="Dask scheduler, e.g. tcp://HOST:8786 (needs the [dask] extra)")
    _device_flag(p, "where checkpoints are loaded and scored")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=_score)

    p = sub.add_parser("report", help="turn a scores table (or a sweep directory) into a self-contained HTML page")
    p.add_argument("table", help="table written by interp score (.parquet or .csv), or a directory of interp sweep")
    p.add_argument("--out", required=True, help="HTML file to write")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_report)

    p = sub.add_parser("inspect", help="print the summary of every detector that applies to one checkpoint")
    p.add_argument("checkpoint", help="checkpoint file or run directory (its latest checkpoint)")
    _device_flag(p, "where the checkpoint is loaded and the detectors run")
    p.set_defaults(func=_inspect)

    p = sub.add_parser("demo", help="train both toy models, score their checkpoints, write the report")
    p.add_argument("--out", default="interp-demo", help="directory for the runs, table and report")
    p.add_argument("--workers", type=arguments.positive, default=None, help="scoring processes (default min(2, cores))")
    p.add_argument("--steps-scale", type=float, default=1.0, help=argparse.SUPPRESS)  # tests: shorter runs
    _device_flag(p, "where the models train and are scored")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_demo)

    p = sub.add_parser("memorization", help="measure memorisation capacity (bits per parameter) on random data")
    p.add_argument("--sizes", type=arguments.sizes, default=MEMORIZATION_SIZES,
                   help="model sizes as D_MODELxLAYERS, comma-separated (default "
                        + ",".join(f"{d}x{n}" for d, n in MEMORIZATION_SIZES) + ")")
    p.add_argument("--datasets", type=arguments.positive_list, default=MEMORIZATION_DATASETS,
                   help="data-set sizes in sequences, comma-separated (default "
                        + ",".join(map(str, MEMORIZATION_DATASETS)) + ")")
    p.add_argument("--seq-len", type=arguments.positive, default=32, help="tokens per sequence (default 32)")
    p.add_argument("--vocab", type=arguments.positive, default=64, help="vocabulary size (default 64)")
    p.add_argument("--seed", type=arguments.seed, default=0, help="seed of the data sets and models (default 0)")
    p.add_argument("--budget", type=arguments.positive_float, default=1.0,
                   help="multiply each cell's step budget and plateau window (default 1; 4: the convergence "
                        "check of BENCHMARKS.md)")
    p.add_argument("--out", required=True, help="directory for cells.csv, capacity.csv and memorization.html; "
                                                "cells already in it are kept (restartable)")
    p.add_argument("--workers", type=arguments.positive, default=1, help="local worker processes (default 1)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS", help="Dask scheduler, e.g. tcp://HOST:8786")
    _device_flag(p, "where each cell trains")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_memorization)

    p = sub.add_parser("sweep", help="train a grid of runs of one task (restartable): grokking against capacity",
                       epilog="default grids: " + "; ".join(
                           f"{task}: " + " ".join(f"{k}={','.join(map(str, v))}" for k, v in grid.items())
                           for task, grid in SWEEP_GRIDS.items()))
    p.add_argument("task", choices=tasks)
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="a training option and its values, one --grid per option, e.g. "
                        "--grid d_model=16,32 --grid frac_train=0.3,0.5 (default: the task's default grid)")
    p.add_argument("--seeds", type=arguments.seed_list, default=[0], help="comma-separated seeds (default 0)")
    p.add_argument("--preset", default="default", help="the recipe every cell starts from")
    p.add_argument("--out", required=True, help="directory for runs/, runs.csv and sweep.html; finished cells are kept")
    p.add_argument("--bits-per-parameter", type=float, default=MEASURED_BITS_PER_PARAMETER, metavar="BITS",
                   help=f"capacity figure (default {MEASURED_BITS_PER_PARAMETER}, measured by interp memorization, "
                        "BENCHMARKS.md; Morris et al. 2025: 3.6)")
    p.add_argument("--workers", type=arguments.positive, default=1, help="local worker processes (default 1)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS", help="Dask scheduler, e.g. tcp://HOST:8786")
    _device_flag(p, "where each cell trains")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_sweep)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interp: interrupted", file=sys.stderr)
        return 130
    except (UsageError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        print(f"interp: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a full disk, a read-only file system, ...: the job failed, not the user
        print(f"interp: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_SOME_FAILED


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
