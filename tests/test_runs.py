"""interp.runs: the run layout, run.json, and resolving paths and globs into checkpoints."""

from __future__ import annotations

import pytest

from interp.runs.layout import RunError, find_checkpoints, list_checkpoints, run_of, step_of
from interp.runs.record import read_run


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
