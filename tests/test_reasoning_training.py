"""Training the fact tasks through the one training loop (interp train composition / comparison)."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

from circuits import one_thread
from interp.cli import main
from interp.tasks.presets import preset
from interp.training.loop import train

COLUMNS = ["step", "train_loss", "train_acc", "train_atomic_acc", "train_inferred_acc", "train_ood_atomic_acc",
           "test_id_loss", "test_id_acc", "test_ood_loss", "test_ood_acc"]
TINY = {
    "composition": dict(n_entities=40, n_relations=6, facts_per_entity=4, ood_share=0.1, phi=2.0),
    "comparison": dict(n_entities=30, n_attributes=2, n_values=5, ood_share=0.2, phi=3.0),
}


def _tiny(task: str, **overrides):
    """A tiny run of the task's default preset, on a constant schedule: the presets' rising weight
    decay and cooldown stretch over the run's length, so a 5-step run resumed to 10 steps would
    rightly differ from a 10-step run (``TrainOptions``)."""
    options = dict(d_model=32, n_layers=2, batch_size=64, eval_every=5, checkpoint_every=5, **TINY[task])
    base = dataclasses.replace(preset(task), lr_schedule="constant", weight_decay_end=None)
    return dataclasses.replace(base, **{**options, **overrides})


@pytest.mark.parametrize("task", ["composition", "comparison"])
def test_tiny_run_writes_the_run_format_and_resumes_exactly(tmp_path, task):
    with one_thread():  # tiny models: one thread is several times faster on a busy machine
        _train_twice(tmp_path, task)


def _train_twice(tmp_path, task):
    full = train(_tiny(task, steps=10), tmp_path / "full", quiet=True)
    metrics = pd.read_csv(full / "metrics.csv")
    assert list(metrics.columns) == COLUMNS and list(metrics["step"]) == [0, 1, 2, 4, 5, 10]
    assert metrics[COLUMNS[1:]].notna().all().all()
    info = json.loads((full / "run.json").read_text())
    assert info["task"]["name"] == task and info["task"]["phi"] == TINY[task]["phi"]
    assert info["model_config"]["normalization_type"] == "LN" and info["model_config"]["n_layers"] == 2
    assert info["model_config"]["d_vocab"] == info["model_config"]["d_vocab_out"] == info["task"]["d_vocab"]
    half = train(_tiny(task, steps=5), tmp_path / "half", quiet=True)
    train(_tiny(task, steps=5), half, resume=True, quiet=True, steps=10)
    pd.testing.assert_frame_equal(pd.read_csv(half / "metrics.csv"), metrics)


@pytest.mark.slow  # ~15 s: 400 steps of the tiny composition data
def test_a_short_composition_run_learns_its_facts(tmp_path):
    with one_thread():
        out = train(_tiny("composition", steps=400, lr=3e-3, eval_every=100, checkpoint_every=200),
                    tmp_path / "run", quiet=True)
    last = pd.read_csv(out / "metrics.csv").iloc[-1]
    assert last["train_atomic_acc"] > 0.5 and last["train_acc"] > 0.3


@pytest.mark.slow  # builds the default data and model and evaluates them three times
@pytest.mark.parametrize("task", ["composition", "comparison"])
def test_cli_trains_the_default_preset(tmp_path, task):
    out = tmp_path / task
    assert main(["train", task, "--out-dir", str(out), "--steps", "2", "--quiet"]) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["training"] == preset(task, steps=2).to_dict()
    assert info["task"]["n_entities"] == preset(task).n_entities
    assert list(pd.read_csv(out / "metrics.csv").columns) == COLUMNS
