"""interp score / report / inspect / demo on the command line: exit codes, restart, errors; help without torch."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from interp import load_model
from interp.runs.checkpoints import list_checkpoints
from interp.cli import HANDLERS, main
from interp.tasks.models import config_to_dict
from interp.scoring.table import read_table


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_score_is_restartable(tiny_runs, tmp_path, suffix, capsys):
    ind, mod = tiny_runs
    out = tmp_path / f"scores{suffix}"
    assert main(["score", str(ind), str(mod), "--out", str(out), "--quiet"]) == 0
    first = read_table(out)
    stamp = out.stat().st_mtime_ns
    assert main(["score", str(ind), str(mod), "--out", str(out)]) == 0
    assert "scored 0 checkpoint(s)" in capsys.readouterr().out
    assert out.stat().st_mtime_ns == stamp  # nothing new: the file is not rewritten
    pd.testing.assert_frame_equal(read_table(out), first)
    n = len(list_checkpoints(ind)) + len(list_checkpoints(mod))
    assert first["checkpoint"].groupby(first["run"]).nunique().sum() == n


def test_score_adds_only_new_checkpoints(tiny_runs, tmp_path, capsys):
    ind, _ = tiny_runs
    out = tmp_path / "s.parquet"
    early = [str(p) for s, p in list_checkpoints(ind) if s <= 4]
    assert main(["score", *early, "--out", str(out), "--quiet"]) == 0
    assert read_table(out)["step"].nunique() == 4
    assert main(["score", str(ind), "--out", str(out)]) == 0
    assert f"scored {len(list_checkpoints(ind)) - 4} checkpoint(s)" in capsys.readouterr().out
    full = read_table(out)
    assert sorted(full["step"].unique()) == [s for s, _ in list_checkpoints(ind)]
    assert not full.duplicated(["run", "checkpoint", "detector", "layer", "head", "metric"]).any()


def test_rows_of_checkpoints_gone_from_a_retrained_run_are_kept_and_named(tiny_runs, tmp_path, capsys):
    _, mod = tiny_runs
    run = tmp_path / "mod"
    shutil.copytree(mod, run)
    out = tmp_path / "s.csv"
    assert main(["score", str(run), "--out", str(out), "--quiet"]) == 0
    shutil.rmtree(run)  # trained again in its folder, shorter: its last checkpoints are gone
    assert main(["train", "modadd", "--out-dir", str(run), "--seed", "1", "--steps", "2", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["score", str(run), "--out", str(out), "--quiet"]) == 0
    gone = sorted(set(read_table(out)["checkpoint"]) - {p.name for _, p in list_checkpoints(run)})
    err = capsys.readouterr().err  # the old rows were kept without a word
    assert gone and len(err.splitlines()) == 1, err
    assert f"rows of {len(gone)} checkpoint(s) of {run} no longer on disk ({', '.join(gone[:3])}" in err


def test_truncated_checkpoint_gives_error_row_and_exit_1(tiny_runs, tmp_path, capsys):
    ind, _ = tiny_runs
    run = tmp_path / "ind"
    shutil.copytree(ind, run)
    bad = list_checkpoints(run)[2][1]
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    out = tmp_path / "s.csv"
    assert main(["score", str(run), "--out", str(out), "--quiet", "--workers", "2"]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    table = read_table(out)
    errors = table[table["metric"] == "error"]
    assert errors["checkpoint"].tolist() == [bad.name] and "truncated" in errors["error"].iloc[0]
    assert table.loc[table["metric"] != "error", "checkpoint"].nunique() == len(list_checkpoints(run)) - 1
    # restart: the failed checkpoint is tried again (still bad), the others are skipped
    assert main(["score", str(run), "--out", str(out)]) == 1
    assert "scored 1 checkpoint(s), 1 failed" in capsys.readouterr().out
    pd.testing.assert_frame_equal(read_table(out), table)
    # another run into the same file: the job says nothing of run's failure, which is not its own
    assert main(["score", str(tiny_runs[1]), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "could not score" not in captured.err and " 0 failed" in captured.out
    assert bad.name in set(read_table(out)["checkpoint"])  # still in the table


@pytest.mark.slow  # starts processes (each imports torch and transformer_lens)
def test_score_through_a_dask_scheduler(tiny_runs, tmp_path):
    distributed = pytest.importorskip("distributed")
    ind, mod = tiny_runs
    local, remote = tmp_path / "local.parquet", tmp_path / "dask.parquet"
    assert main(["score", str(ind), str(mod), "--out", str(local), "--quiet"]) == 0
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        args = ["score", str(ind), str(mod), "--out", str(remote), "--quiet", "--scheduler", cluster.scheduler_address]
        assert main(args) == 0
    pd.testing.assert_frame_equal(read_table(local), read_table(remote))


@pytest.mark.parametrize(
    "args, message",
    [
        (["score", "{ind}", "--out", "{tmp}/s.txt"], ".parquet or .csv"),
        (["score", "{ind}", "--out", "{tmp}/s.csv", "--detectors", "heads,nope"], "unknown detector"),
        (["score", "{tmp}/missing", "--out", "{tmp}/s.csv"], "no such run directory"),
        (["report", "{tmp}/missing.parquet", "--out", "{tmp}/r.html"], "no such table"),
        (["inspect", "{tmp}/missing"], "no such"),
    ],
)
def test_usage_errors_are_one_line_exit_2(tiny_runs, tmp_path, capsys, args, message):
    ind, _ = tiny_runs
    argv = [a.format(ind=ind, tmp=tmp_path) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_not_a_table_is_a_usage_error(tmp_path, capsys):
    bogus = tmp_path / "s.csv"
    bogus.write_text("a,b\n1,2\n")
    assert main(["report", str(bogus), "--out", str(tmp_path / "r.html")]) == 2
    assert "not a scores table" in capsys.readouterr().err


def test_inspect_prints_heads_or_fourier(tiny_runs, capsys):
    ind, mod = tiny_runs
    assert main(["inspect", str(list_checkpoints(ind)[-1][1])]) == 0
    out = capsys.readouterr().out
    assert "prefix_matching" in out and "is_induction" in out and "Fourier" not in out
    assert main(["inspect", str(mod)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{mod} (its latest checkpoint: checkpoints/{list_checkpoints(mod)[-1][1].name}): ")
    assert "key frequencies" in out and "restricted_loss" in out and "prefix_matching" not in out


def test_inspect_prints_the_other_summaries_when_one_fails(tiny_runs, capsys, monkeypatch):
    # A detector's summary that raised stopped inspect with a traceback, the other sections lost.
    import dataclasses

    from interp.detectors.registry import DETECTORS

    def broken(model, run_dir):
        raise RuntimeError("shape mismatch\nsecond line")

    monkeypatch.setitem(DETECTORS, "heads", dataclasses.replace(DETECTORS["heads"], summary=broken))
    ind, _ = tiny_runs
    assert main(["inspect", str(ind)]) == 1
    out = capsys.readouterr().out
    assert "heads: not summarised: RuntimeError: shape mismatch\n" in out and "second line" not in out
    assert "\nllc: not estimated here" in out  # the other detector that applies still summarised


@pytest.mark.slow  # starts processes (each imports torch and transformer_lens)
def test_cli_subprocess_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "interp", "score", str(tmp_path / "x"), "--out", str(tmp_path / "s.csv")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("interp: error:") and "Traceback" not in proc.stderr


def test_os_errors_are_one_line(tiny_runs, tmp_path, capsys, monkeypatch):
    import errno
    import os

    from interp.base import files

    ind, _ = tiny_runs
    (tmp_path / "dir.csv").mkdir()
    assert main(["score", str(ind), "--out", str(tmp_path / "dir.csv"), "--quiet"]) == 2
    assert "is a directory" in capsys.readouterr().err
    table = tmp_path / "s.csv"
    assert main(["score", str(ind), "--out", str(table), "--quiet", "--detectors", "heads"]) == 0
    # a usage error, exit 2 (they were exit 1, "--out ''" naming the working directory), and nothing of
    # a run replaced by the page (run.json was: the run lost, and the command said "report written")
    run_json = ind / "run.json"
    before_run = run_json.read_bytes()
    for out, why in ((tmp_path, f"--out '{tmp_path}' is a directory: name the report's file, *.html"),
                     ("", "--out '' is empty"), (run_json, f"--out {run_json} exists and is not an HTML page"),
                     (table / "r.html", f"--out {table}: {table} is a file, not a directory")):
        assert main(["report", str(table), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and why in err, err
    assert run_json.read_bytes() == before_run

    def read_only(src, dst):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(files.os, "replace", read_only)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["report", str(table), "--out", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "read-only file system" in err and "r.html" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no partial file


def test_inspect_refuses_nan_weights_in_one_line(tiny_runs, tmp_path, capsys):
    import torch

    from interp import load_model
    from interp.runs.checkpoints import save_checkpoint

    ind, _ = tiny_runs
    step, path = list_checkpoints(ind)[-1]
    model = load_model(path)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    bad = tmp_path / "nan.safetensors"
    save_checkpoint(bad, model, step)
    assert main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "NaN or infinite weights" in err and "Traceback" not in err


# -- the parser answers at once: help, version and usage errors import neither torch nor transformer_lens --

SUBCOMMANDS = ("train", "score", "report", "inspect", "demo", "memorization", "sweep")
#: Runs ``interp.cli.main(argv)`` in a fresh interpreter, then prints the exit code and the heavy
#: modules it imported.
_CHECK = """
import json, sys
from interp.cli import main
try:
    code = main(json.loads(sys.argv[1]))
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in ("torch", "transformer_lens", "numpy", "pandas") if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}), file=sys.__stdout__)
"""


def _run_cli_fresh(argv: list[str], tmp_path) -> tuple[dict, str, str]:
    import json
    import os
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", _CHECK, json.dumps(argv)], capture_output=True, text=True,
                          timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    *out, last = proc.stdout.splitlines()
    return json.loads(last), "\n".join(out), proc.stderr


@pytest.mark.parametrize("argv", [["--help"], ["--version"], *([cmd, "--help"] for cmd in SUBCOMMANDS)],
                         ids=lambda argv: " ".join(argv))
def test_help_imports_no_torch(argv, tmp_path):
    result, out, _ = _run_cli_fresh(argv, tmp_path)
    assert result["code"] == 0 and out.strip()
    assert "torch" not in result["heavy"] and "transformer_lens" not in result["heavy"], result
    assert result["heavy"] == [], result  # not even numpy or pandas: the help answers at once


@pytest.mark.parametrize("argv, message", [
    ([], "required: COMMAND"),
    (["nosuchcommand"], "invalid choice: 'nosuchcommand'"),
    (["train", "nosuchtask", "--out-dir", "x"], "invalid choice: 'nosuchtask'"),
    (["train", "modadd"], "required: --out-dir"),
    (["train", "modadd", "--out-dir", "x", "--steps", "0"], "expected a positive integer"),
    (["train", "modadd", "--out-dir", "x", "--preset", "nope"], "unknown preset 'nope'"),
    (["train", "modadd", "--out-dir", "x", "--corpus", "y"], "--corpus is for the text task"),
    (["train", "induction", "--out-dir", "x", "--epochs", "5"],
     "--epochs is for modadd (full batch: an epoch is a step); use --steps"),
    (["train", "text", "--out", "x", "--epochs", "5"], "--epochs is for modadd"),
    (["score"], "required: PATH, --out"),
    (["score", "x", "--out", "t.csv", "--workers", "many"], "expected a positive integer"),
    (["report"], "required"),
    (["memorization", "--out-dir", "x", "--sizes", ","], "expected sizes"),
    (["memorization"], "required: --out-dir"),
    (["sweep", "induction", "--out-dir", "x"], "no default grid for induction"),
    (["sweep", "modadd", "--out-dir", "x", "--seed", "-1"], "expected a seed, an integer in [0, "),
    (["sweep", "modadd", "--out", "x", "--seeds", "-1"], "expected a seed, an integer in [0, "),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_usage_errors_import_no_torch(argv, message, tmp_path):
    result, _, err = _run_cli_fresh(argv, tmp_path)
    assert result["code"] == 2 and message in err and "Traceback" not in err, (result, err)
    assert "torch" not in result["heavy"] and "transformer_lens" not in result["heavy"], result
    assert not any(tmp_path.iterdir())  # nothing written


def test_the_parser_covers_every_subcommand():
    import argparse

    from interp.cli import build_parser

    (action,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert tuple(action.choices) == SUBCOMMANDS


def test_version(capsys):
    import interp

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out == f"interp {interp.__version__}\n"


def test_the_light_names_are_the_registries():
    """The parser's tasks, detectors and detector help come from light modules; they are the registries'."""
    from interp.detectors.catalog import builtin_names, help_line
    from interp.detectors.registry import DETECTORS
    from interp.tasks.presets import PRESETS
    from interp.tasks.registry import TASKS

    assert sorted(PRESETS) == sorted(TASKS)
    assert builtin_names() == list(DETECTORS)
    assert {name: help_line(name) for name in builtin_names()} == {n: d.help for n, d in DETECTORS.items()}


def test_help_line_evaluates_literals_concatenations_and_fstrings(tmp_path, monkeypatch):
    from interp.detectors import catalog

    for name, source in {
        "plain": 'DETECTOR = Detector(name="plain", help="one " "line")\n',
        "joined": 'A, B = 5, "x"\nDETECTOR = Detector(name="joined", help=f"token {A} of {B}" + " more")\n',
        "dynamic": 'DETECTOR = Detector(name="dynamic", help=make_help())\n',
        "formatted": 'A = 0.5\nDETECTOR = Detector(name="formatted", help=f"{A:.2f}")\n',
    }.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("from .detector import DETECTOR\n")
        (tmp_path / name / "detector.py").write_text(source)
    monkeypatch.setattr(catalog, "_HERE", tmp_path)
    assert catalog.builtin_names() == ["dynamic", "formatted", "joined", "plain"]
    assert catalog.help_line("plain") == "one line" and catalog.help_line("joined") == "token 5 of x more"
    assert catalog.help_line("dynamic") is None and catalog.help_line("formatted") is None
    assert catalog.help_line("missing") is None


def _usage_error(argv, capsys) -> str:
    """The one line a usage error prints (argparse's errors exit 2 through SystemExit, ours return 2)."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err  # one line: no usage block
    return err[0]


@pytest.mark.parametrize("argv", [
    ["train", "modadd", "--seed", "18446744073709551616"],
    ["train", "modadd", "--seed", "-1"],
    ["sweep", "modadd", "--seed", "0,-1"],
    ["memorization", "--seed", "-1"],
])
def test_a_seed_out_of_range_is_one_line_naming_the_flag_and_the_range(argv, tmp_path, capsys):
    line = _usage_error([*argv, "--out-dir", str(tmp_path / "x")], capsys)
    assert "--seed" in line and "[0, 9223372036854775807]" in line
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("sizes", ["7x1", "8", "8x", "16x0", "x1"])
def test_memorization_sizes_are_d_model_x_layers(sizes, tmp_path, capsys):
    line = _usage_error(["memorization", "--sizes", sizes, "--out-dir", str(tmp_path / "x")], capsys)
    assert "--sizes" in line and "D_MODELxLAYERS" in line and "multiple of 8" in line


def test_a_budget_that_leaves_no_steps_is_refused(tmp_path, capsys):
    line = _usage_error(["memorization", "--sizes", "8x1", "--datasets", "4", "--budget", "1e-9",
                         "--out-dir", str(tmp_path / "x")], capsys)
    assert line.startswith("interp: error: --budget 1e-09 leaves a cell 0 steps") and "at least 0.002" in line
    assert not (tmp_path / "x" / "cells.csv").exists()


def test_detectors_that_fit_no_run_are_one_line_not_an_empty_success(tiny_runs, tmp_path, capsys):
    ind, _ = tiny_runs
    line = _usage_error(["score", str(ind), "--detectors", "fourier", "--out", str(tmp_path / "ff.csv")], capsys)
    assert "no checkpoint scored" in line and f"fourier on {ind}" in line
    # into a table holding another run's rows it said "scored 0 checkpoint(s)" and exit 0
    shared = tmp_path / "shared.csv"
    assert main(["score", str(tiny_runs[1]), "--detectors", "fourier", "--out", str(shared), "--quiet"]) == 0
    line = _usage_error(["score", str(ind), "--detectors", "fourier", "--out", str(shared)], capsys)
    assert "no checkpoint scored" in line and f"fourier on {ind}" in line
    assert main(["score", str(tiny_runs[1]), "--detectors", "fourier", "--out", str(shared), "--quiet"]) == 0  # done


def test_a_file_inside_checkpoints_not_named_by_step_is_named(tiny_runs, tmp_path, capsys):
    run = tmp_path / "ind"
    shutil.copytree(tiny_runs[0], run)
    stray = run / "checkpoints" / "final.safetensors"
    shutil.copyfile(list_checkpoints(run)[-1][1], stray)
    assert main(["score", str(run), "--out", str(tmp_path / "s.csv"), "--quiet"]) == 0
    assert f"interp: ignored {stray}: a checkpoint inside a run is named step_N.safetensors" in capsys.readouterr().err


def test_sweep_sends_workers_absolute_run_directories(tmp_path, monkeypatch):
    import interp.experiments.sweep as sweep_module

    sent = []

    def record(fn, items, **kwargs):
        sent.extend(items)
        raise KeyboardInterrupt  # enough: the jobs are planned

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sweep_module, "run_jobs", record)
    with pytest.raises(KeyboardInterrupt):
        sweep_module.sweep("modadd", "default", {"d_model": [8]}, [0], "relative/out")
    assert sent and all(Path(runs_dir).is_absolute() for _, runs_dir, _, _ in sent)
    assert Path(sent[0][1]) == tmp_path / "relative" / "out" / "runs"


def test_globs_names_and_folders_that_are_not_runs(tiny_runs, tmp_path, capsys):
    folder = tmp_path / "folder"
    folder.mkdir()
    last = list_checkpoints(tiny_runs[0])[-1][1]
    shutil.copyfile(last, folder / "model.safetensors")
    out = folder / "scores.csv"
    for _ in range(2):  # the second time the glob also matches the table (and a note): neither is a checkpoint
        assert main(["score", str(folder / "*"), "--out", str(out), "--detectors", "heads", "--quiet"]) == 0
        (folder / "notes.txt").write_text("not a model")
    table = pd.read_csv(out)
    assert set(table["checkpoint"]) == {"model.safetensors"} and table["error"].isna().all()
    assert main(["score", str(folder / "*.txt"), "--out", str(tmp_path / "t.csv")]) == 2
    assert "no checkpoints match" in capsys.readouterr().err
    # a folder of the user's called checkpoints, of .pth files: scored when named, explained when not
    mine = tmp_path / "myproj" / "checkpoints"
    mine.mkdir(parents=True)
    model = load_model(last)
    torch.save({"state_dict": model.state_dict(), "config": config_to_dict(model.cfg)}, mine / "step_100.pth")
    assert main(["score", str(mine), "--out", str(tmp_path / "m.csv"), "--detectors", "heads", "--quiet"]) == 0
    assert "ignored" not in capsys.readouterr().err
    assert main(["score", str(mine.parent), "--out", str(tmp_path / "m2.csv")]) == 2
    assert f"name {mine} itself to score them as loose files" in capsys.readouterr().err
    # names the table cannot hold (bytes that are not UTF-8, a newline), and ones it can
    for name, code in (("odd\udcffname", 2), ("line\nbreak", 2), ("run\u202fA", 0), ("می\u200cخواهم", 0)):
        odd = tmp_path / name
        odd.mkdir()
        shutil.copyfile(last, odd / "model.safetensors")
        out = tmp_path / f"o{code}{len(name)}.csv"
        assert main(["score", str(odd), "--out", str(out), "--detectors", "heads", "--quiet"]) == code, name
        assert ("a path the scores table cannot hold" in capsys.readouterr().err) == bool(code), name
    # a run of ours whose checkpoint was renamed: the hint names what does score it
    run = tmp_path / "run"
    shutil.copytree(tiny_runs[0], run)
    for _, path in list_checkpoints(run):
        path.rename(path.with_name(f"renamed_{path.name}"))
    assert main(["score", str(run), "--out", str(tmp_path / "r.csv")]) == 2
    assert f"name the files ({run}/checkpoints/*.safetensors) to score them" in capsys.readouterr().err
    assert main(["score", f"{run}/checkpoints/*.safetensors", "--out", str(tmp_path / "r.csv"),
                 "--detectors", "heads", "--quiet"]) == 0
    from interp.runs.layout import step_of

    assert step_of("step_99999999999999999999.safetensors") is None and step_of("step_9.safetensors") == 9


@pytest.mark.parametrize("command", [["demo"], ["train", "induction"], ["memorization", "--sizes", "8x1"],
                                     ["sweep", "modadd", "--grid", "d_model=8"]])
def test_an_out_dir_under_a_file_is_one_line(tmp_path, capsys, command):
    # demo said "[Errno 17] File exists" (exit 1) or "[Errno 20] Not a directory"; train the same, or
    # named the file only once it came to write run.json (exit 1)
    (tmp_path / "f").write_text("mine")
    for out in (tmp_path / "f", tmp_path / "f" / "sub"):
        assert main([*command, "--out-dir", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err == f"interp: error: --out-dir {out}: {tmp_path / 'f'} is a file, not a directory\n", err
    assert (tmp_path / "f").read_text() == "mine"


def test_unreadable_detector_settings_are_one_line_before_any_work(tiny_runs, tmp_path, capsys, monkeypatch):
    """A malformed INTERP_LLC was every checkpoint's error row (exit 1) in score, and a line of the
    summary (exit 0) in inspect."""
    ind, _ = tiny_runs
    monkeypatch.setenv("INTERP_LLC", "heads=none,speed=2")
    out = tmp_path / "s.csv"
    assert main(["score", str(ind), "--out", str(out), "--detectors", "heads,llc", "--quiet"]) == 2
    assert not out.exists()
    assert main(["inspect", str(ind)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all("INTERP_LLC: cannot read 'speed=2' (unknown key)" in line for line in err)
    assert main(["score", str(ind), "--out", str(out), "--detectors", "heads", "--quiet"]) == 0  # llc not asked for


def test_inspect_takes_a_runs_checkpoints_folder_and_refuses_a_path_safetensors_cannot_open(tiny_runs, tmp_path,
                                                                                              capsys):
    ind, _ = tiny_runs
    assert main(["inspect", str(ind)]) == 0
    whole = capsys.readouterr().out
    assert main(["inspect", str(ind / "checkpoints")]) == 0  # as score takes it: the run's checkpoints
    out = capsys.readouterr().out
    last = list_checkpoints(ind)[-1][1].name
    assert out.startswith(f"{ind / 'checkpoints'} (its latest checkpoint: {last}): ")
    assert out.partition("): ")[2] == whole.partition("): ")[2]  # the same summary, run context included
    odd = tmp_path / "odd\udcffname"
    odd.mkdir()
    shutil.copyfile(list_checkpoints(ind)[-1][1], odd / "ck.safetensors")
    assert main(["inspect", str(odd / "ck.safetensors")]) == 2  # it blamed the file: "corrupt or truncated"
    assert "a path that is not UTF-8, which safetensors cannot open; rename it" in capsys.readouterr().err


def test_a_reader_that_closes_stdout_ends_the_command_quietly(tiny_runs, capsys, monkeypatch):
    """``interp inspect RUN | head -1``: exit 141 (a filter killed by SIGPIPE) and nothing on stderr; it
    was ``interp: error: [Errno 32] Broken pipe``, exit 1, also after ``score`` had written its table."""
    import io
    import os

    ind, _ = tiny_runs
    read, write = os.pipe()
    os.close(read)  # the reader is gone
    with io.TextIOWrapper(os.fdopen(write, "wb", buffering=0), write_through=True) as pipe:
        monkeypatch.setattr(sys, "stdout", pipe)
        assert main(["inspect", str(ind)]) == 141
        monkeypatch.undo()
    assert capsys.readouterr().err == ""
    # a broken pipe of anything else (a worker's) is the job's failure, named
    monkeypatch.setitem(HANDLERS, "inspect", lambda args: (_ for _ in ()).throw(BrokenPipeError(32, "Broken pipe")))
    assert main(["inspect", str(ind)]) == 1
    assert capsys.readouterr().err == "interp: error: [Errno 32] Broken pipe\n"
