"""The parser of the ``interp`` command: its subcommands and flags, built without torch.

One flag means one thing in every subcommand: ``--out-dir DIR`` is a folder the command writes
into, ``--out FILE`` a file; ``--seed`` (a comma-separated list where a command trains several
runs); ``--workers N`` local processes, default 1; ``--quiet`` as :data:`QUIET_HELP` says. Old
spellings keep working for one release with a warning on stderr (:class:`OldSpelling`).

Building it imports neither torch nor transformer_lens: the presets and the detector folders read
by :mod:`interp.detectors.catalog` are light.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from interp import arguments
from interp.detectors.catalog import OPT_IN

__all__ = ["DESCRIPTION", "QUIET_HELP", "REMOVED_IN", "OldSpelling", "build_parser", "parse_args"]

#: Plain text, as ``interp --help`` prints it.
DESCRIPTION = ("Train toy transformers, score their checkpoints with circuit detectors and write reports. "
               "A mistake on the command line prints one line on stderr and exits with status 2.")
#: The release that drops the old spellings.
REMOVED_IN = "0.4"
#: What ``--quiet`` means, the same words in every subcommand.
QUIET_HELP = ("no progress bars and no informational lines on stdout; the command's result (the summary of "
              "inspect, the report path of demo), errors and warnings still print")
WORKERS_HELP = "local worker processes (default 1)"
SCHEDULER_HELP = "Dask scheduler, e.g. tcp://HOST:8786 (needs the [dask] extra); replaces --workers"


class OldSpelling(argparse.Action):
    """An old spelling of a flag, kept for one release: it sets the new flag's value and warns
    on stderr, in one line, that it is going."""

    def __init__(self, option_strings, dest, *, new: str, command: str, **kwargs):
        self.new, self.command = new, command
        kwargs.setdefault("help", f"old spelling of {new}, removed in {REMOVED_IN}")
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"interp: warning: {option_string} is now {self.new} for {self.command}; "
              f"{option_string} will be removed in {REMOVED_IN}", file=sys.stderr)
        setattr(namespace, self.dest, values)
        namespace.old_spellings = [*getattr(namespace, "old_spellings", []), (option_string, self.new)]


def _renamed(parser: argparse.ArgumentParser, command: str, old: str, new: argparse.Action) -> None:
    """Add ``old`` as the old spelling of the flag ``new`` (same value type and destination)."""
    parser.add_argument(old, action=OldSpelling, dest=new.dest, type=new.type, metavar=new.metavar,
                        new=new.option_strings[0], command=command)


def _out_dir(parser: argparse.ArgumentParser, command: str, what: str, default: str | None = None) -> None:
    """``--out-dir DIR`` (required unless ``default``), and ``--out`` as its old spelling."""
    shown = f" (default {default})" if default else "; required"
    new = parser.add_argument("--out-dir", default=default, metavar="DIR", help=what + shown)
    _renamed(parser, command, "--out", new)


def _workers(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=arguments.positive, default=1, metavar="N", help=WORKERS_HELP)
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS", help=SCHEDULER_HELP)


def _device(parser: argparse.ArgumentParser, what: str) -> None:
    from interp.base.device import DEVICE_NAMES

    parser.add_argument("--device", type=arguments.device, default="auto", metavar="DEVICE",
                        help=f"{what}: {DEVICE_NAMES} (default auto: the first CUDA device when there is one, "
                             "else the CPU)")


def _quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help=QUIET_HELP)


class _OneLineErrors(argparse.ArgumentParser):
    """Errors are one line on stderr, exit 2 (argparse's own print the usage block first); the
    subcommands' parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _command(sub, name: str, text: str, **kwargs) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".", **kwargs)


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


def build_parser() -> argparse.ArgumentParser:
    """The ``interp`` parser; building it imports neither torch nor transformer_lens."""
    from interp import __version__
    from interp.analysis.capacity_figures import MEASURED_BITS_PER_PARAMETER
    from interp.tasks.presets import MEMORIZATION_DATASETS, MEMORIZATION_SIZES, PRESETS, SWEEP_GRIDS

    detectors = _detectors()
    tasks = sorted(PRESETS)  # every task has its recipes (tests/test_cli.py: the same names as TASKS)
    recipes = "; ".join(f"{task}: {', '.join(names)}" for task, names in sorted(PRESETS.items()))
    parser = _OneLineErrors(prog="interp", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"interp {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="one of the commands below; interp COMMAND --help describes it")

    p = _command(sub, "train", "train a toy model, writing a run directory with checkpoints")
    p.add_argument("task", choices=tasks, help="what to train: " + ", ".join(tasks))
    _out_dir(p, "train", "run directory (created; must be empty unless --resume)")
    p.add_argument("--preset", default=None, help=f"training recipe (default: default); {recipes}")
    p.add_argument("--seed", type=arguments.seed, default=None, help="training seed (default: the preset's, 0)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--steps", type=arguments.positive, default=None, metavar="N",
                       help="optimiser steps (default: the preset's)")
    group.add_argument("--epochs", type=arguments.positive, default=None, metavar="N",
                       help="modadd only: same as --steps (full batch: an epoch is a step)")
    p.add_argument("--checkpoint-every", type=arguments.positive, default=None, metavar="N",
                   help="steps between checkpoints (default: the preset's)")
    p.add_argument("--corpus", default=None, metavar="DIR",
                   help="text only: train on the text files under DIR instead of the standard library's .py files")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change one value of the recipe, e.g. --set lr=0.003 --set d_model=64 (the keys of "
                        "sweep --grid; recorded in run.json)")
    p.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint in --out-dir")
    _device(p, "where the model trains")
    _quiet(p)

    p = _command(sub, "score", "score checkpoints with the detectors into one long table",
                 epilog="detectors: " + "; ".join(f"{name}: {text}" if text else name
                                                  for name, text in detectors.items()))
    p.add_argument("paths", nargs="+", metavar="PATH", help="run directories, checkpoint files, or globs")
    p.add_argument("--detectors", default=",".join(d for d in detectors if d not in OPT_IN),
                   help=f"comma-separated, any of {', '.join(detectors)} (default all but {', '.join(OPT_IN)}, "
                        "which are opt-in: name them)")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="table file, .parquet or .csv; checkpoints already in it are skipped")
    _workers(p)
    _device(p, "where checkpoints are loaded and scored")
    _quiet(p)

    p = _command(sub, "report", "turn a scores table (or a sweep or memorization directory) into a self-contained "
                 "HTML page")
    p.add_argument("table", help="table written by interp score (.parquet or .csv), or a directory of interp sweep "
                   "or of interp memorization (its page again, e.g. after a killed job)")
    p.add_argument("--out", required=True, metavar="FILE", help="HTML file to write")
    _quiet(p)

    p = _command(sub, "inspect", "print the summary of every detector that applies to one checkpoint")
    p.add_argument("checkpoint", help="checkpoint file or run directory (its latest checkpoint)")
    _device(p, "where the checkpoint is loaded and the detectors run")
    _quiet(p)

    p = _command(sub, "demo", "train both toy models, score their checkpoints, write the report")
    _out_dir(p, "demo", "directory for the runs, table and report", default="interp-demo")
    p.add_argument("--workers", type=arguments.positive, default=1, metavar="N", help=WORKERS_HELP)
    p.add_argument("--steps-scale", type=float, default=1.0, help=argparse.SUPPRESS)  # tests: shorter runs
    _device(p, "where the models train and are scored")
    _quiet(p)

    p = _command(sub, "memorization", "measure memorisation capacity (bits per parameter) on random data")
    p.add_argument("--sizes", type=arguments.sizes, default=MEMORIZATION_SIZES,
                   help="model sizes as D_MODELxLAYERS, comma-separated (default "
                        + ",".join(f"{d}x{n}" for d, n in MEMORIZATION_SIZES) + ")")
    p.add_argument("--datasets", type=arguments.positive_list, default=MEMORIZATION_DATASETS,
                   help="data-set sizes in sequences, comma-separated (default "
                        + ",".join(map(str, MEMORIZATION_DATASETS)) + ")")
    p.add_argument("--seq-len", type=arguments.positive, default=32, help="tokens per sequence (default 32)")
    p.add_argument("--vocab", type=arguments.at_least_two, default=64, help="vocabulary size (default 64, at least 2)")
    p.add_argument("--seed", type=arguments.seed, default=0, help="seed of the data sets and models (default 0)")
    p.add_argument("--budget", type=arguments.positive_float, default=1.0,
                   help="multiply each cell's step budget and plateau window (default 1; 4: the convergence "
                        "check of BENCHMARKS.md)")
    _out_dir(p, "memorization", "directory for cells.csv, capacity.csv and memorization.html; cells already "
                                "in it are kept (restartable)")
    _workers(p)
    _device(p, "where each cell trains")
    _quiet(p)

    p = _command(sub, "sweep", "train a grid of runs of one task (restartable): grokking against capacity",
                 epilog="default grids: " + "; ".join(
                     f"{task}: " + " ".join(f"{k}={','.join(map(str, v))}" for k, v in grid.items())
                     for task, grid in SWEEP_GRIDS.items()) + "; other tasks need --grid")
    p.add_argument("task", choices=tasks, help="what every cell trains: " + ", ".join(tasks))
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="a training option and its values, one --grid per option, e.g. "
                        "--grid d_model=16,32 --grid frac_train=0.3,0.5 (default: the task's default grid)")
    seed = p.add_argument("--seed", type=arguments.seed_list, default=[0], metavar="SEED[,SEED...]",
                          help="seeds, comma-separated: every grid cell is trained once per seed (default 0)")
    _renamed(p, "sweep", "--seeds", seed)
    p.add_argument("--preset", default="default", help="the recipe every cell starts from (default: default)")
    _out_dir(p, "sweep", "directory for runs/, runs.csv and sweep.html; finished cells are kept")
    p.add_argument("--bits-per-parameter", type=arguments.bits_per_parameter, default=MEASURED_BITS_PER_PARAMETER, metavar="BITS",
                   help=f"capacity figure (default {MEASURED_BITS_PER_PARAMETER}: BENCHMARKS.md, "
                        "'Memorisation capacity'; Morris et al. 2025: 3.6)")
    _workers(p)
    _device(p, "where each cell trains")
    _quiet(p)
    return parser


def command_parser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of one subcommand."""
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices[name]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv``; what argparse cannot check alone (a flag required under either spelling)
    exits 2 as its own errors do."""
    parser = build_parser()
    args = parser.parse_args(argv)
    given = list(sys.argv[1:] if argv is None else argv)
    for old, new in getattr(args, "old_spellings", []):  # both spellings: the last one given won, silently
        if any(token == new or token.startswith(new + "=") for token in given):
            command_parser(parser, args.command).error(f"{old} and {new} are one flag under two spellings: "
                                                       f"give {new} once")
    if getattr(args, "out_dir", "") is None:
        command_parser(parser, args.command).error("the following arguments are required: --out-dir")
    return args
