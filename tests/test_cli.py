"""interp score / report / inspect / demo on the command line: exit codes, restart, errors."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pandas as pd
import pytest

from interp.runs.checkpoints import list_checkpoints
from interp.cli import main
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
    assert "key frequencies" in out and "restricted_loss" in out and "prefix_matching" not in out


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
    assert main(["report", str(table), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot write {tmp_path}: it is a directory" in err

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
