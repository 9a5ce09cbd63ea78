"""Devices: ``--device`` and the ``device`` argument, checked on the CPU.

No GPU is needed: a device this machine lacks must be refused in one line, and the tasks' data
must follow the model wherever it is. The second is checked on PyTorch's ``meta`` device, which
raises "Tensor on device meta is not on the expected device cpu" wherever a CPU tensor meets the
model's, as a CUDA model would (these tests failed before the tasks moved their data).
"""

from __future__ import annotations

import json

import pytest
import torch

from interp.base.device import check_device_name, device_name, resolve_device
from interp.cli import main
from interp.tasks.models import build_model
from interp.tasks.presets import preset
from interp.tasks.registry import TASKS, make_task

HAS_CUDA = torch.cuda.is_available()


def test_device_names_resolve_to_what_this_machine_has() -> None:
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if HAS_CUDA else "cpu")
    assert device_name(None) == "cpu"
    assert device_name("auto", remote=True) == "auto"  # a Dask worker resolves it on its own machine


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "cuda:-1", "", "cpu:0:1", "tpu"])
def test_a_name_that_is_no_device_lists_the_accepted_ones(name: str) -> None:
    with pytest.raises(ValueError, match=r"unknown device .*; expected one of auto, cpu, cuda, cuda:N, mps"):
        check_device_name(name)


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a CUDA device")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_a_cuda_device_this_machine_lacks_is_one_line(name: str) -> None:
    with pytest.raises(ValueError, match=rf"device {name}: this machine has no CUDA device"):
        resolve_device(name)


def test_the_flag_is_checked_before_anything_runs(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["train", "modadd", "--out-dir", str(tmp_path / "r"), "--device", "gpu"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "argument --device: unknown device 'gpu'" in err
    if not HAS_CUDA:
        assert main(["train", "modadd", "--out-dir", str(tmp_path / "r"), "--steps", "2", "--device", "cuda:1"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "device cuda:1: this machine has no CUDA device" in err
        assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("command", ["train", "score", "inspect", "demo", "memorization", "sweep"])
def test_every_command_that_runs_a_model_takes_the_flag(command: str, capsys) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "--device DEVICE" in capsys.readouterr().out


def test_a_model_is_built_on_its_device_with_the_same_weights_and_records_it() -> None:
    cfg = make_task(preset("induction")).model_config()
    a, b = build_model(cfg, seed=3), build_model(cfg, seed=3, device="cpu")
    assert a.cfg.device == "cpu" and a.W_E.device.type == "cpu"
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def test_a_run_records_its_device(tmp_path) -> None:
    from interp.training.loop import train

    train(preset("modadd", steps=2), tmp_path / "run", quiet=True, device="auto")
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["device"] == ("cuda" if HAS_CUDA else "cpu")


def _on_meta(task_name: str):
    task = make_task(preset(task_name, steps=10))
    model = build_model(task.model_config(), seed=0)
    model.to("meta", print_details=False)
    return task, model


@pytest.mark.parametrize("task_name", sorted(TASKS))
def test_every_task_trains_where_its_model_is(task_name: str) -> None:
    task, model = _on_meta(task_name)
    loss = task.train_loss(model, 0)
    assert loss.device.type == "meta" and loss.ndim == 0


@pytest.mark.parametrize("task_name", sorted(TASKS))
def test_every_task_evaluates_where_its_model_is(task_name: str, monkeypatch) -> None:
    # Values cannot be read off the meta device: reading one gives 0, and a boolean mask keeps
    # every element; what is left to fail is a tensor on the wrong device.
    monkeypatch.setattr(torch.Tensor, "item", lambda self: 0.0)
    monkeypatch.setattr(torch.Tensor, "__float__", lambda self: 0.0)
    from torch.fx.experimental import _config

    task, model = _on_meta(task_name)
    with torch.inference_mode(), _config.patch(meta_nonzero_assume_all_nonzero=True):
        row = task.evaluate(model, 0)
    assert row and set(row.values()) == {0.0}
