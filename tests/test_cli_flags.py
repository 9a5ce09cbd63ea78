"""One command line: a flag means the same thing in every subcommand, every flag has help in plain
text, old spellings still work for one release with a warning, and an option a task does not
take is refused in one line."""

from __future__ import annotations

import argparse
import inspect
import json
from pathlib import Path

import pytest

from interp.cli import main
from interp.parser import QUIET_HELP, OldSpelling, build_parser, command_parser, parse_args

FOLDER_COMMANDS = ("train", "demo", "memorization", "sweep")
FILE_COMMANDS = ("score", "report")
#: Flags left out of the help on purpose: a hook for the tests.
HIDDEN = {"--steps-scale"}
#: reStructuredText that must not reach a terminal.
MARKUP = ("``", ":func:", ":mod:", ":class:", ":data:", ":meth:", ".. ")


def _commands() -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: action for action in parser._actions for flag in action.option_strings}


def test_every_flag_and_positional_has_plain_help():
    parser = build_parser()
    texts = {"interp": parser.description}
    for command, sub in [("interp", parser), *_commands().items()]:
        texts[f"{command} description"] = sub.description
        texts[f"{command} epilog"] = sub.epilog or ""
        for action in sub._actions:
            name = f"{command} {'/'.join(action.option_strings) or action.dest}"
            if isinstance(action, argparse._HelpAction) or set(action.option_strings) & HIDDEN:
                continue
            assert action.help and action.help.strip() and action.help != argparse.SUPPRESS, name
            texts[name] = action.help
            for choice in getattr(action, "_choices_actions", []):  # the subcommands' one-line help
                texts[f"{name} {choice.dest}"] = choice.help
                assert choice.help, choice.dest
    for command in _commands():
        assert texts[f"{command} description"], command
    marked = {name: text for name, text in texts.items() if text and any(m in text for m in MARKUP)}
    assert not marked, marked


def test_a_folder_is_out_dir_and_a_file_is_out():
    for command, sub in _commands().items():
        flags = _flags(sub)
        if command in FOLDER_COMMANDS:
            assert flags["--out-dir"].metavar == "DIR" and isinstance(flags["--out"], OldSpelling), command
        elif command in FILE_COMMANDS:
            assert flags["--out"].metavar == "FILE" and "--out-dir" not in flags, command
        else:
            assert "--out" not in flags and "--out-dir" not in flags, command


@pytest.mark.parametrize("command", FOLDER_COMMANDS)
def test_the_old_out_still_works_with_a_warning(command, capsys):
    args = parse_args([command, *(["modadd"] if command in ("train", "sweep") else []), "--out", "somewhere"])
    assert args.out_dir == "somewhere"
    err = capsys.readouterr().err
    assert err == f"interp: warning: --out is now --out-dir for {command}; --out will be removed in 0.4\n"
    task = ["modadd"] if command in ("train", "sweep") else []
    for both in (["--out", "a", "--out-dir", "b"], ["--out-dir=b", "--out", "a"]):  # the last one won, silently
        with pytest.raises(SystemExit) as exited:
            parse_args([command, *task, *both])
        assert exited.value.code == 2
        assert "--out and --out-dir are one flag under two spellings" in capsys.readouterr().err


def test_the_new_spellings_do_not_warn(capsys):
    args = parse_args(["sweep", "modadd", "--out-dir", "d", "--seed", "0,1"])
    assert args.out_dir == "d" and args.seed == [0, 1]
    assert capsys.readouterr().err == ""


def test_sweep_seeds_is_the_old_seed(capsys):
    args = parse_args(["sweep", "modadd", "--out-dir", "d", "--seeds", "2,3"])
    assert args.seed == [2, 3]
    warning = "interp: warning: --seeds is now --seed for sweep; --seeds will be removed in 0.4\n"
    assert capsys.readouterr().err == warning
    assert parse_args(["sweep", "modadd", "--out-dir", "d"]).seed == [0]


def test_one_seed_flag():
    for command, sub in _commands().items():
        flags = _flags(sub)
        assert "--seeds" not in flags or isinstance(flags["--seeds"], OldSpelling), command
    with pytest.raises(SystemExit):
        parse_args(["train", "modadd", "--out-dir", "d", "--seed", "0,1"])  # one run, one seed


def test_workers_and_quiet_mean_the_same_everywhere():
    from interp.demo import run_demo

    for command, sub in _commands().items():
        flags = _flags(sub)
        assert flags["--quiet"].help == QUIET_HELP, command
        if "--workers" in flags:
            assert flags["--workers"].default == 1 and flags["--workers"].help == "local worker processes (default 1)"
    assert {c for c, sub in _commands().items() if "--workers" in _flags(sub)} == {"score", "demo", "memorization",
                                                                                     "sweep"}
    assert inspect.signature(run_demo).parameters["workers"].default == 1
    assert parse_args(["demo"]).workers == 1


def test_epochs_is_for_modadd_only(tmp_path, capsys):
    for task in ("induction", "text", "composition", "comparison"):
        out = tmp_path / task
        assert main(["train", task, "--out-dir", str(out), "--epochs", "2"]) == 2
        err = capsys.readouterr().err
        assert err == "interp: error: --epochs is for modadd (full batch: an epoch is a step); use --steps\n"
        assert not out.exists()
    out = tmp_path / "modadd"
    assert main(["train", "modadd", "--out-dir", str(out), "--epochs", "2", "--quiet"]) == 0
    assert json.loads((out / "run.json").read_text())["training"]["steps"] == 2
    assert capsys.readouterr().out == ""  # quiet: no bar, no "run written to"


def test_train_through_the_old_out(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "modadd", "--out", str(out), "--steps", "2"]) == 0
    captured = capsys.readouterr()
    assert (out / "run.json").exists() and f"run written to {out}" in captured.out
    assert "interp: warning: --out is now --out-dir for train" in captured.err


def test_inspect_quiet_prints_the_same_summary(tiny_runs, capsys):
    ind, _ = tiny_runs
    assert main(["inspect", str(ind)]) == 0
    loud = capsys.readouterr().out
    assert main(["inspect", str(ind), "--quiet"]) == 0
    assert capsys.readouterr().out == loud and "prefix_matching" in loud


def test_every_task_sweep_offers_has_a_default_grid_or_asks_for_one(tmp_path, capsys):
    from interp.experiments.sweep_grid import parse_grid
    from interp.tasks.presets import SWEEP_GRIDS

    (tasks,) = [a.choices for a in command_parser(build_parser(), "sweep")._actions if a.dest == "task"]
    for task in tasks:
        assert parse_grid(task, ["steps=2"]) == {"steps": [2]}  # every task takes a grid
        if task not in SWEEP_GRIDS:
            assert main(["sweep", task, "--out-dir", str(tmp_path / task)]) == 2
            assert f"no default grid for {task}; give --grid KEY=V1,V2" in capsys.readouterr().err


@pytest.mark.slow  # trains one 2-step cell of every task
@pytest.mark.parametrize("task", ["comparison", "composition", "induction", "modadd", "text"])
def test_every_task_can_be_swept(task, tmp_path):
    out = tmp_path / "sweep"
    assert main(["sweep", task, "--grid", "steps=2", "--out-dir", str(out), "--quiet"]) == 0
    assert (out / "runs.csv").exists() and (out / "sweep.html").exists()


def test_the_docs_use_the_current_spellings():
    """Every ``interp train|demo|memorization|sweep`` line in the README, docs/ and the notebooks
    writes its folder with ``--out-dir`` and gives sweep seeds with ``--seed``."""
    import re

    root = Path(__file__).resolve().parents[1]
    files = [root / "README.md", *sorted((root / "docs").glob("*.md")), *sorted((root / "notebooks").glob("*.ipynb"))]
    old = re.compile(r"interp (train|demo|memorization|sweep)\b[^\n`\"]*?(--out(?![-\w])|--seeds\b)")
    found = [f"{path.name}: {m.group(0)}" for path in files for m in old.finditer(path.read_text(encoding="utf-8"))]
    assert found == []
