"""interp.runs: the run layout, run.json, and resolving paths and globs into checkpoints."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import interp
from interp.base import provenance
from interp.runs.layout import RunError, find_checkpoints, list_checkpoints, run_of, step_of
from interp.runs.record import read_metrics, read_run

ROOT = Path(__file__).resolve().parents[1]


def test_find_checkpoints_dirs_files_globs(tiny_runs, tmp_path):
    ind, mod = tiny_runs
    every = find_checkpoints([ind, mod])
    assert len(every) == len(list_checkpoints(ind)) + len(list_checkpoints(mod))
    assert find_checkpoints(ind.parent) == every  # a folder of runs
    one = find_checkpoints(list_checkpoints(ind)[-1][1])
    assert len(one) == 1 and one[0].run == str(ind.resolve()) and one[0].step == 20
    globbed = find_checkpoints(str(ind / "checkpoints" / "step_00000[0-2]*"))
    assert [r.step for r in globbed] == [0, 1, 2]
    assert find_checkpoints([ind, ind / "checkpoints" / "step_000005.safetensors"]) == find_checkpoints(ind)
    with pytest.raises(FileNotFoundError):
        find_checkpoints(tmp_path / "nope")
    with pytest.raises(FileNotFoundError):
        find_checkpoints(str(tmp_path / "*.safetensors"))


def test_two_files_of_one_step_in_a_run_are_named(tiny_runs, tmp_path, capsys):
    from interp.cli import main
    from interp.runs.layout import checkpoint_series

    run = tmp_path / "dup"
    shutil.copytree(tiny_runs[0], run)
    shutil.copy(run / "checkpoints" / "step_000005.safetensors", run / "checkpoints" / "step_5.safetensors")
    with pytest.raises(ValueError, match=r"step_000005.safetensors and .*step_5.safetensors are both step 5; keep one"):
        checkpoint_series(run)
    assert main(["score", str(run), "--out", str(tmp_path / "t.csv"), "--quiet", "--detectors", "heads"]) == 0
    assert f"step_000005.safetensors and step_5.safetensors of {run.resolve()} are all step 5" in capsys.readouterr().err


def test_step_and_run_of_a_path(tiny_runs, tmp_path):
    ind, _ = tiny_runs
    step, path = list_checkpoints(ind)[-1]
    assert step_of(path) == step == 20 and step_of(tmp_path / "model.pt") is None
    assert run_of(path) == ind and run_of(ind) == ind and run_of(tmp_path / "model.pt") is None


def test_run_info(tiny_runs, tmp_path):
    ind, _ = tiny_runs
    info = read_run(ind)
    assert info.task_name == "induction" and info.run_dir == ind
    assert info.options().task == "induction" and info.seed == info.options().seed
    assert info.rebuild_task().describe() == info.task  # the same data, rebuilt from the record
    assert read_run(tmp_path) is None
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(RunError, match="unreadable run.json"):
        read_run(tmp_path)
    (tmp_path / "run.json").write_text("[1, 2]")
    with pytest.raises(RunError, match="expected an object"):
        read_run(tmp_path)
    (tmp_path / "run.json").write_text('{"task": {"name": "induction"}, "training": {"no_such_option": 1}}')
    with pytest.raises(RunError, match="unreadable training options"):
        read_run(tmp_path).options()
    (tmp_path / "metrics.csv").write_text("step,train_loss\n0,4.8\n5,unterminated\n")  # the file went unnamed
    with pytest.raises(RunError, match=r"metrics.csv: unreadable metrics \(could not convert"):
        read_metrics(tmp_path)
    (tmp_path / "run.json").unlink()
    (tmp_path / "run.json").mkdir()  # read as no record: train --resume fell into an AttributeError
    with pytest.raises(RunError, match="unreadable run.json .not a regular file"):
        read_run(tmp_path)


def test_fingerprint_follows_the_weights_not_the_bytes(tmp_path):
    import torch

    from interp.runs.checkpoints import save_checkpoint
    from interp.tasks.models import build_model, induction_config
    from interp.runs.layout import fingerprint

    model = build_model(induction_config(), seed=0)
    prints = set()
    for i in range(4):  # safetensors writes its header keys in an arbitrary order
        save_checkpoint(tmp_path / f"{i}.safetensors", model, 5)
        prints.add(fingerprint(tmp_path / f"{i}.safetensors"))
    assert len(prints) == 1 and prints.pop().startswith(str((tmp_path / "0.safetensors").stat().st_size))
    with torch.no_grad():
        model.blocks[0].attn.W_Q[0, 0, 0] += 1e-3
    save_checkpoint(tmp_path / "changed.safetensors", model, 5)
    assert fingerprint(tmp_path / "changed.safetensors") != fingerprint(tmp_path / "0.safetensors")
    assert fingerprint(tmp_path / "missing.safetensors") == ""


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_run_json_names_the_toolkits_version_and_commit(tiny_runs):
    ind, _ = tiny_runs
    versions = read_run(ind).versions
    assert versions["interp"] == interp.__version__
    assert versions["interp_commit"] == provenance.toolkit_commit()
    assert {"python", "torch", "transformer_lens"} <= set(versions)
    from importlib.metadata import version

    assert versions["transformer_lens"] == version("transformer-lens")  # 3.x has no __version__: "unknown" before


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_the_commit_is_the_checkouts_head_dirty_when_tracked_files_differ():
    try:
        head = _git("rev-parse", "HEAD")
        changed = _git("status", "--porcelain", "--untracked-files=no")
    except subprocess.CalledProcessError:
        pytest.skip("this copy of the toolkit is not a git checkout")
    commit = provenance.git_commit(ROOT / "interp")
    assert commit == head + ("-dirty" if changed else "")
    assert provenance.toolkit_commit() == commit


def test_the_commit_is_none_outside_a_checkout_or_without_git(tmp_path, monkeypatch):
    inside = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "--is-inside-work-tree"],
                            capture_output=True, text=True).returncode == 0 if shutil.which("git") else False
    if not inside:  # the temporary directory is in no checkout
        assert provenance.git_commit(tmp_path) is None
    assert provenance.git_commit(tmp_path / "missing") is None
    if shutil.which("git"):
        subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
        assert provenance.git_commit(tmp_path / "repo") is None  # a repository without a commit
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on the PATH: None, not an exception
    assert provenance.git_commit(ROOT) is None


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_a_commit_with_untracked_files_is_clean_and_with_a_changed_tracked_file_dirty(tmp_path):
    repo = tmp_path / "repo"
    run = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "tracked.txt").write_text("one\n")
    subprocess.run([*run, "add", "tracked.txt"], check=True)
    subprocess.run([*run, "commit", "-q", "-m", "one"], check=True)
    head = subprocess.run([*run, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    (repo / "untracked.txt").write_text("new\n")
    (repo / "ignored").mkdir()
    assert provenance.git_commit(repo) == head
    assert provenance.git_commit(repo / "ignored") is None  # a folder the checkout does not track
    (repo / "tracked.txt").write_text("two\n")
    assert provenance.git_commit(repo) == head + "-dirty"
