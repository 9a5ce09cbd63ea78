"""The ``interp`` command. A user mistake prints one line on stderr and exits 2, never a traceback.

``interp --help``, ``interp COMMAND --help`` and the mistakes the parser catches import neither
torch nor transformer_lens: the parser (:mod:`interp.parser`) is built from light modules; each
command imports what it runs, after the checks that need no model.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from interp.parser import build_parser, parse_args

__all__ = ["EXIT_SOME_FAILED", "EXIT_USAGE", "HANDLERS", "UsageError", "build_parser", "main"]

EXIT_USAGE = 2
#: Some items could not be done (error rows in the table, failed cells), or the job could not
#: write its output (a full disk, a read-only file system).
EXIT_SOME_FAILED = 1
#: The reader of stdout closed it (`interp inspect RUN | head`): 128 + SIGPIPE, as a filter killed by it.
EXIT_BROKEN_PIPE = 141
#: The most steps ``interp memorization --budget`` may give a cell (exact in float64 and int64).
MAX_CELL_STEPS = 2**53
#: ``interp score`` prints at most this many error reasons on stderr.
MAX_ERRORS_SHOWN = 20


class UsageError(Exception):
    """A mistake on the command line or in its inputs, shown as one line."""


def _train(args: argparse.Namespace) -> int:
    from interp.tasks.presets import preset

    if args.epochs is not None and args.task != "modadd":
        raise UsageError("--epochs is for modadd (full batch: an epoch is a step); use --steps")
    steps = args.steps if args.steps is not None else args.epochs
    corpus = args.corpus
    if corpus is not None:
        if args.task != "text":
            raise UsageError(f"--corpus is for the text task, not {args.task}")
        if not corpus.strip():  # Path("") is the working directory
            raise UsageError(f"--corpus {corpus!r} is empty: name a folder of text files")
        corpus = str(Path(corpus).expanduser().resolve())
    # an unknown preset: one line before torch is imported
    options = preset(args.task, args.preset or "default", seed=args.seed, steps=steps,
                     checkpoint_every=args.checkpoint_every, corpus=corpus)
    if args.resume:
        _check_resumed_recipe(args, corpus)
    if corpus is not None:  # checked before --set, whose errors would otherwise be blamed for it
        from interp.tasks.registry import make_task

        make_task(options)  # the folder, its text files, both splits' sizes: one line, before anything is written
    if args.set:
        options = _recipe_values(args, options)
    from interp.training.loop import train

    out = train(options, args.out_dir, resume=args.resume, quiet=args.quiet, steps=steps, device=args.device)
    if not args.quiet:
        print(f"run written to {out}")
    return 0


def _check_resumed_recipe(args: argparse.Namespace, corpus: str | None) -> None:
    """Refuse a flag that asks a resumed run for another recipe than its ``run.json`` records (a
    resume trains on the recorded recipe; only ``--steps``/``--epochs`` may extend it)."""
    from interp.runs.layout import RUN_FILE
    from interp.runs.record import read_run

    if not (Path(args.out_dir) / RUN_FILE).exists():
        return
    recorded = read_run(args.out_dir).options()
    asked = {"--preset": ("preset", args.preset), "--seed": ("seed", args.seed),
             "--checkpoint-every": ("checkpoint_every", args.checkpoint_every), "--corpus": ("corpus", corpus)}
    for flag, (field, value) in asked.items():
        if value is not None and getattr(recorded, field) != value:
            raise UsageError(f"{flag} {value} differs from the run being resumed ({field} {getattr(recorded, field)}): "
                             "its run.json holds the recipe")


def _recipe_values(args: argparse.Namespace, options):
    """``options`` with the values of ``--set KEY=VALUE`` (:func:`interp.experiments.sweep_grid.parse_settings`)."""
    if args.resume:
        raise UsageError("--set cannot change the recipe of a run being resumed (its run.json holds the recipe)")
    keys = {spec.partition("=")[0].strip() for spec in args.set}
    flags = {"steps": (args.steps if args.steps is not None else args.epochs, "--steps/--epochs"),
             "checkpoint_every": (args.checkpoint_every, "--checkpoint-every"), "corpus": (args.corpus, "--corpus")}
    for key, (value, flag) in flags.items():
        if key in keys and value is not None:
            raise UsageError(f"{key} is given twice: by {flag} and by --set {key}=...")
    from interp.experiments.sweep_grid import parse_settings

    return parse_settings(args.task, args.set, options)


def _score(args: argparse.Namespace) -> int:
    from interp.runs.layout import scored_checkpoint, unlisted_files
    from interp.scoring.table import SUFFIXES
    from interp.scoring.batch import score_to_file
    from interp.scoring.task import check_detectors

    out = Path(args.out)
    if out.suffix.lower() not in SUFFIXES:
        raise UsageError(f"--out must end in .parquet or .csv, got {out}")
    detectors = check_detectors([d.strip() for d in args.detectors.split(",") if d.strip()])
    table = score_to_file(args.paths, out, detectors, workers=args.workers, scheduler=args.scheduler,
                          quiet=args.quiet, device=args.device)
    n_scored, n_failed = table.attrs["n_scored"], table.attrs["n_failed"]
    if table.attrs["fits_none"]:  # no detector fits any run named (whatever the table held before)
        reasons = "; ".join(f"{d} on {run}: {why}" for run, skips in table.attrs["skipped"].items()
                            for d, why in skips.items())
        raise UsageError(f"no checkpoint scored: the detectors fit none of the runs ({reasons})")
    table = table[table["run"].isin(table.attrs["runs"])]  # the file may hold other jobs' runs: not this job's to say
    errors = table[table["metric"] == "error"]
    for _, row in errors.drop_duplicates(["run", "checkpoint"]).head(MAX_ERRORS_SHOWN).iterrows():
        path = scored_checkpoint(row["run"], row["checkpoint"])
        by = "" if row["detector"] == "load" else f" with {row['detector']}"  # load: the file itself
        print(f"interp: could not score {path}{by}: {row['error']}", file=sys.stderr)
    files = {(run, name): scored_checkpoint(run, name)
             for run, name in sorted(set(zip(table["run"], table["checkpoint"])))}
    scored = set(files.values())
    for run in sorted({str(run) for run in table["run"].dropna().unique()}):
        for path in unlisted_files(run):
            if path in scored:  # named on its own (a folder of loose files called checkpoints)
                continue
            if str(path) == run:
                print(f"interp: ignored the model at the top of {run}: it has no step; a series' checkpoints are "
                      "its folders named by step (move it into one, step1234, to score it)", file=sys.stderr)
                continue
            rule = ("a checkpoint of a series is a folder named by step (step1000, checkpoint-500, global_step2000)"
                    if path.is_dir() else "a checkpoint inside a run is named step_N.safetensors")
            print(f"interp: ignored {path}: {rule}", file=sys.stderr)
    gone: dict[str, list[str]] = {}
    for (run, name), path in files.items():
        if not path.exists():
            gone.setdefault(run, []).append(name)
    for run, names in gone.items():
        print(f"interp: the table holds rows of {len(names)} checkpoint(s) of {run} no longer on disk "
              f"({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}): kept; if the run was trained again in "
              "its folder, its rows mix two trainings: score it into a new table", file=sys.stderr)
    stepped = table.dropna(subset=["step"]).drop_duplicates(["run", "checkpoint"])
    for (run, step), names in stepped.groupby(["run", "step"])["checkpoint"]:
        if len(names) > 1:
            print(f"interp: {' and '.join(sorted(names))} of {run} are all step {step}: each is scored; the report "
                  "draws the last by name and names the others", file=sys.stderr)
    if not args.quiet:
        for run, why in table.attrs["skipped"].items():
            for detector, reason in why.items():
                print(f"skipped {detector} on {run}: {reason}")
        print(f"scored {n_scored} checkpoint(s), {n_failed} failed; table: {out}")
    return EXIT_SOME_FAILED if n_failed else 0


def _report(args: argparse.Namespace) -> int:
    from interp.base.files import out_folder
    from interp.report import write_report
    from interp.scoring.table import SUFFIXES, read_table

    folder, out = Path(args.table), Path(args.out)
    if out.suffix.lower() in SUFFIXES or (out.exists() and out.resolve() == folder.resolve()):
        raise UsageError(f"--out {out} would write the HTML page over a table: name the report *.html")
    if not args.out or out.is_dir():
        raise UsageError(f"--out {args.out!r} is {'empty' if not args.out else 'a directory'}: name the report's "
                         "file, *.html")
    if out.exists() and out.suffix.lower() not in (".html", ".htm"):  # run.json, a checkpoint: the run was lost
        raise UsageError(f"--out {out} exists and is not an HTML page: the report replaces only a page (*.html)")
    out_folder(out.parent, "--out")
    if folder.is_dir() and (folder / "cells.csv").exists() and not (folder / "runs.csv").exists():
        from interp.experiments.memorization import read_cells  # a memorization folder: its page
        from interp.experiments.memorization_page import write_memorization_report

        path = write_memorization_report(read_cells(folder / "cells.csv"), args.out)
    elif folder.is_dir():  # a sweep directory (interp sweep): its page
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

    # the summary is the command's result: --quiet (no bars, no informational lines) leaves it
    failed: list[str] = []
    print(inspect_checkpoint(args.checkpoint, device=args.device, failed=failed))
    return EXIT_SOME_FAILED if failed else 0


def _demo(args: argparse.Namespace) -> int:
    from interp.demo import run_demo

    result = run_demo(args.out_dir, steps_scale=args.steps_scale, workers=args.workers, quiet=args.quiet,
                      device=args.device)
    print(f"report: {result.report.resolve()}")
    if not args.quiet:
        print(f"runs: {', '.join(str(p) for p in result.runs.values())}; scores: {result.table}")
        print("seconds: " + ", ".join(f"{stage} {secs:.0f}" for stage, secs in result.seconds.items()))
    return EXIT_SOME_FAILED if result.n_failed else 0


def _memorization(args: argparse.Namespace) -> int:
    from interp.experiments.memorization import MemorizationCell, memorization_sweep_to_dir, own_cells, sweep_cells

    default = MemorizationCell(d_model=0, n_layers=0, n_sequences=0)
    most = MAX_CELL_STEPS // default.max_steps  # a whole number that passes, printed whole
    if not args.budget <= most:  # larger: the step counts would not fit the cell table's integers
        raise UsageError(f"--budget {args.budget:g} gives a cell more than 2^53 steps; it must be at most {most}")
    budget = {"max_steps": round(default.max_steps * args.budget),
              "plateau_window": round(default.plateau_window * args.budget)}
    if min(budget.values()) < 1:
        least = 1 / min(default.max_steps, default.plateau_window)
        raise UsageError(f"--budget {args.budget:g} leaves a cell {budget['max_steps']} steps and a plateau window "
                         f"of {budget['plateau_window']}; it must be at least {least:g} (a plateau window of one step)")
    cells = sweep_cells(args.sizes, args.datasets, seq_len=args.seq_len, vocab=args.vocab, seed=args.seed, **budget)
    result = memorization_sweep_to_dir(cells, args.out_dir, workers=args.workers, scheduler=args.scheduler,
                                       quiet=args.quiet, device=args.device)
    failed = own_cells(result.cells, cells)  # the folder may hold other jobs' cells, failed or not
    failed = failed[failed["stopped_by"] == "error"]
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
    result = sweep(args.task, args.preset, grid, args.seed, args.out_dir, workers=args.workers,
                   scheduler=args.scheduler, bits_per_parameter=args.bits_per_parameter, quiet=args.quiet,
                   device=args.device)
    table = result.table
    # a folder may hold other sweeps' cells, failed or not, and another recipe's of the same names
    mine = table[table["cell"].isin(result.cells) & (table["task"] == args.task) & (table["preset"] == args.preset)]
    failed = mine[mine["error"] != ""]
    for row in failed.head(MAX_ERRORS_SHOWN).itertuples():
        print(f"interp: cell {row.cell} failed: {row.error}", file=sys.stderr)
    if not args.quiet:
        print(f"trained {result.n_trained} cell(s), {result.n_failed} failed; table: {result.path}; page: {result.page}")
    return EXIT_SOME_FAILED if len(failed) else 0


#: The function that runs each subcommand.
HANDLERS = {"train": _train, "score": _score, "report": _report, "inspect": _inspect, "demo": _demo,
            "memorization": _memorization, "sweep": _sweep}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return HANDLERS[args.command](args)
    except KeyboardInterrupt:
        print("interp: interrupted", file=sys.stderr)
        return 130
    except (UsageError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        print(f"interp: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError as exc:
        if not _stdout_closed():  # another pipe (a worker's): the job failed
            print(f"interp: error: {_one_line(exc)}", file=sys.stderr)
            return EXIT_SOME_FAILED
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the flush at exit does not raise again
        return EXIT_BROKEN_PIPE
    except OSError as exc:  # a full disk, a read-only file system, ...: the job failed, not the user
        print(f"interp: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_SOME_FAILED
    except (MemoryError, RuntimeError) as exc:  # torch's allocators raise RuntimeError subclasses
        if not isinstance(exc, MemoryError) and not _out_of_memory(exc):
            raise
        print(f"interp: error: out of memory ({_one_line(exc)}); try a smaller batch_size or model",
              file=sys.stderr)
        return EXIT_SOME_FAILED


def _stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader has gone (poll reports an error on its write end)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, ValueError, OSError):  # no poll (Windows), or no file behind stdout
        return False


def _out_of_memory(exc: BaseException) -> bool:
    """torch's CPU allocator failing (a plain RuntimeError) or its CUDA one (``torch.OutOfMemoryError``)."""
    return type(exc).__name__ == "OutOfMemoryError" or "can't allocate memory" in str(exc)


def _one_line(exc: BaseException) -> str:
    from interp.base.errors import first_line

    return first_line(exc) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
