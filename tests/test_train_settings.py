"""``interp train TASK --set KEY=VALUE``: recipe values from the shell, parsed as ``sweep --grid`` parses them."""

from __future__ import annotations

import json

import pytest

from interp.cli import main


def test_set_values_train_the_run_and_are_recorded(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    code = main(["train", "modadd", "--out-dir", str(out), "--steps", "2", "--quiet",
                 "--set", "lr=0.003", "--set", "d_model=64", "--set", "lr_schedule=linear"])
    assert code == 0, capsys.readouterr().err
    info = json.loads((out / "run.json").read_text())
    assert info["training"]["lr"] == 0.003 and info["training"]["d_model"] == 64
    assert info["training"]["lr_schedule"] == "linear" and info["training"]["steps"] == 2
    assert info["model_config"]["d_model"] == 64


def test_set_reaches_a_task_of_its_own_keys(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "induction", "--out-dir", str(out), "--steps", "1", "--quiet", "--set", "batch_size=8"]) == 0
    assert json.loads((out / "run.json").read_text())["training"]["batch_size"] == 8


@pytest.mark.parametrize("spec, message", [
    ("bogus=1", "bad --set key 'bogus': not a training option; modadd takes adam_eps, checkpoint_every, d_model, "),
    ("batch_size=8", "bad --set key 'batch_size': not an option the modadd task or the training loop reads"),
    ("lr=fast", "bad --set value lr=fast: expected a number"),
    ("lr=0.1,0.2", "bad --set value lr=0.1,0.2: expected a number"),
    ("lr=0", "bad --set value lr=0: must be positive"),
    ("d_model=18", "bad --set d_model=18: d_model must be a positive multiple of 4"),
    ("frac_train=1.5", r"bad --set frac_train=1.5: frac_train must be in (0, 1)"),
    ("grokfast_alpha=3", "bad --set grokfast_alpha=3.0: grokfast_alpha must be in [0, 1), got 3.0"),
    ("grokfast_alpha=1", "bad --set grokfast_alpha=1.0: grokfast_alpha must be in [0, 1), got 1.0"),
    ("seed=1", "seed is not a --set key; give it with --seed"),
    ("lr", "bad --set 'lr': expected KEY=VALUE, e.g. lr=0.003"),
])
def test_a_bad_key_or_value_is_one_line_naming_what_is_accepted(tmp_path, capsys, spec: str, message: str) -> None:
    out = tmp_path / "run"
    assert main(["train", "modadd", "--out-dir", str(out), "--steps", "2", "--set", spec]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not out.exists()


@pytest.mark.parametrize("task, spec, message, say", [
    ("induction", "weight_decay_ramp_start=0.5", "weight_decay_ramp_start=0.5 does nothing without weight_decay_end",
     ["--set", "weight_decay_end=0.1"]),
    ("induction", "grokfast_alpha=0.9", "grokfast_alpha=0.9 does nothing while grokfast_lambda is 0",
     ["--set", "grokfast_lambda=1"]),
    ("modadd", "warmup_steps=3", "warmup_steps=3 is longer than the run (2 steps)", ["--steps", "3"]),
])
def test_a_value_the_recipe_gives_no_say_is_refused(tmp_path, capsys, task: str, spec: str, message: str,
                                                     say: list[str]) -> None:
    out = tmp_path / "run"  # each used to train as if it had not been given
    assert main(["train", task, "--out-dir", str(out), "--steps", "2", "--set", spec]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not out.exists()
    flags = ["train", task, "--out-dir", str(tmp_path / "ok"), "--quiet", "--set", spec, *say]
    if "--steps" not in say:
        flags += ["--steps", "2"]
    assert main(flags) == 0, capsys.readouterr().err  # where the recipe gives it a say, it trains


def test_a_value_given_twice_or_to_a_resumed_run_is_refused(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "modadd", "--out-dir", str(out), "--steps", "2", "--set", "steps=3"]) == 2
    assert "steps is given twice: by --steps/--epochs and by --set steps=..." in capsys.readouterr().err
    assert main(["train", "modadd", "--out-dir", str(out), "--set", "lr=0.1", "--set", "lr=0.2"]) == 2
    assert "--set key lr is given twice" in capsys.readouterr().err
    assert main(["train", "modadd", "--out-dir", str(out), "--resume", "--set", "lr=0.1"]) == 2
    assert "--set cannot change the recipe of a run being resumed" in capsys.readouterr().err


def test_a_resumed_run_keeps_its_recipe_and_its_record(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    train = ["train", "induction", "--out-dir", str(out), "--quiet"]
    assert main([*train, "--steps", "4", "--checkpoint-every", "2"]) == 0
    for flags, message in [(["--seed", "7"], "--seed 7 differs from the run being resumed (seed 0)"),
                           (["--checkpoint-every", "3"], "--checkpoint-every 3 differs from the run being resumed "
                                                         "(checkpoint_every 2): its run.json holds the recipe")]:
        assert main([*train, "--steps", "6", "--resume", *flags]) == 2  # used to be ignored without a word
        assert message in capsys.readouterr().err
    record = json.loads((out / "run.json").read_text())
    record["versions"]["torch"] = "2.1.0"  # what the run was trained with
    (out / "run.json").write_text(json.dumps(record))
    assert main([*train, "--resume", "--seed", "0", "--preset", "default"]) == 0  # the recorded values: accepted
    assert json.loads((out / "run.json").read_text())["versions"]["torch"] == "2.1.0"  # nothing trained: kept
    assert main([*train, "--resume", "--steps", "6"]) == 0  # an extension is recorded
    assert json.loads((out / "run.json").read_text())["training"]["steps"] == 6
