import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from interp.runs.checkpoints import list_checkpoints
from interp.cli import main
from interp.tasks.presets import preset
from interp.training.loop import RunError, checkpoint_steps, train

SMALL = ["--steps", "20", "--checkpoint-every", "10", "--quiet"]
TINY = ["--steps", "8", "--checkpoint-every", "4", "--quiet"]


def test_checkpoint_schedule_is_log_spaced_then_regular():
    steps = checkpoint_steps(1000)
    assert steps[:6] == [0, 1, 2, 4, 8, 16]
    assert steps[-3:] == [900, 950, 1000]
    assert len([s for s in steps if s % 50 == 0 and s > 0]) == 20
    assert checkpoint_steps(7, every=3) == [0, 1, 2, 3, 6, 7]


def test_same_seed_same_metrics(tmp_path):
    runs = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        assert main(["train", "induction", "--out-dir", str(tmp_path / name), "--seed", str(seed), *TINY]) == 0
        runs.append(pd.read_csv(tmp_path / name / "metrics.csv"))
    pd.testing.assert_frame_equal(runs[0], runs[1])
    assert not runs[0]["test_loss"].equals(runs[2]["test_loss"])
    assert {"step", "train_loss", "test_loss", "test_acc", "repeat_loss"} <= set(runs[0].columns)


def test_run_directory_layout(tmp_path):
    import json

    out = tmp_path / "run"
    main(["train", "modadd", "--out-dir", str(out), *TINY])
    info = json.loads((out / "run.json").read_text())
    assert info["task"] == {"name": "modadd", "p": 113, "frac_train": 0.3, "split_seed": 0}
    assert info["training"]["weight_decay"] == 1.0 and info["training"]["weight_decay_end"] == 14.0
    assert info["model_config"]["d_mlp"] == 512
    assert [s for s, _ in list_checkpoints(out)] == checkpoint_steps(8, 4)
    metrics = pd.read_csv(out / "metrics.csv")
    assert {"train_loss", "test_loss", "train_acc", "test_acc"} <= set(metrics.columns)


@pytest.mark.slow  # starts processes (each imports torch and transformer_lens)
def test_killed_run_resumes_to_the_same_metrics(tmp_path):
    args = ["train", "induction", "--steps", "120", "--checkpoint-every", "20", "--quiet"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "interp", *args, "--out-dir", str(killed)])
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if any(step >= 40 for step, _ in list_checkpoints(killed)):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = max(step for step, _ in list_checkpoints(killed))
    assert 40 <= done < 120
    assert main([*args, "--out-dir", str(killed), "--resume"]) == 0
    assert main([*args, "--out-dir", str(tmp_path / "whole")]) == 0
    pd.testing.assert_frame_equal(
        pd.read_csv(killed / "metrics.csv"), pd.read_csv(tmp_path / "whole" / "metrics.csv")
    )
    assert [s for s, _ in list_checkpoints(killed)] == checkpoint_steps(120, 20)


def test_cli_user_mistakes_exit_2_with_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "induction", "--out-dir", str(out), *SMALL]) == 0
    capsys.readouterr()
    assert main(["train", "induction", "--out-dir", str(out), *SMALL]) == 2  # exists, no --resume
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resume" in err
    assert main(["train", "modadd", "--preset", "nope", "--out-dir", str(tmp_path / "x")]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    newest = list_checkpoints(out)[-1][1]
    newest.write_bytes(newest.read_bytes()[:100])
    (out / "optimizer.safetensors").write_bytes(b"garbage")
    assert main(["train", "induction", "--out-dir", str(out), "--resume", *SMALL]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "corrupt or truncated" in err


def test_a_directory_left_by_a_killed_first_write_is_trained_into(tmp_path):
    """SIGKILL between creating an empty run directory's run.json temp file and renaming it leaves only
    ``.interp-*.tmp``: nothing was written, so training (and a sweep's cell) starts there afresh."""
    out = tmp_path / "run"
    out.mkdir()
    (out / ".interp-0badc0de.tmp").write_text('{"format": "interp-ru')
    train(preset("induction", steps=2), out, quiet=True)
    assert (out / "run.json").exists() and list_checkpoints(out)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="is not empty"):
        train(preset("induction", steps=2), other, quiet=True)


@pytest.mark.parametrize("made, where", [(True, "evaluation"), (False, "evaluation"), (True, "update")])
def test_a_run_that_fails_before_it_trains_a_step_leaves_its_folder_as_it_found_it(tmp_path, monkeypatch, made, where):
    """Running out of memory at step 0 (a batch too large: in its evaluation, or in its first update,
    after step 0's checkpoint) used to leave the run: the retry with a smaller batch was refused (not
    empty) and ``--resume`` would train the recorded recipe again."""
    import interp.training.loop as loop

    out = tmp_path / "new" / "run" if made else tmp_path / "run"
    if not made:
        out.mkdir()
    evaluate, update = loop._evaluate, torch.optim.AdamW.step

    def fail(at: int) -> None:
        """Out of memory in step ``at``'s evaluation, or in its update (after its checkpoint)."""
        calls = []

        def run(*args, **kwargs):
            calls.append(1)
            step = args[-1] if where == "evaluation" else len(calls) - 1
            if step == at:
                raise RuntimeError("DefaultCPUAllocator: can't allocate memory")
            return (evaluate if where == "evaluation" else update)(*args, **kwargs)

        if where == "evaluation":
            monkeypatch.setattr(loop, "_evaluate", run)
        else:
            monkeypatch.setattr(torch.optim.AdamW, "step", run)

    fail(0)
    with pytest.raises(RuntimeError, match="allocate"):
        train(preset("induction", steps=4, checkpoint_every=2), out, quiet=True)
    if made:
        assert not (tmp_path / "new").exists()  # every folder it made, gone
    else:
        assert out.is_dir() and not any(out.iterdir())
    fail(2)  # once step 1 is trained and saved: everything is kept
    with pytest.raises(RuntimeError, match="allocate"):
        train(preset("induction", steps=4, checkpoint_every=2), out, quiet=True)
    assert [step for step, _ in list_checkpoints(out)] == [0, 1] + ([2] if where == "update" else [])
    monkeypatch.setattr(loop, "_evaluate", evaluate)
    monkeypatch.setattr(torch.optim.AdamW, "step", update)
    train(preset("induction", steps=4, checkpoint_every=2), out, resume=True, quiet=True)
    assert [step for step, _ in list_checkpoints(out)] == [0, 1, 2, 4]


def test_resume_rejects_a_run_of_another_task(tmp_path):
    out = tmp_path / "run"
    train(preset("induction", steps=4), out, quiet=True)
    with pytest.raises(RunError, match="induction run"):
        train(preset("modadd", steps=4), out, resume=True, quiet=True)


def test_a_diverging_run_stops_and_a_nan_checkpoint_is_not_resumed(tmp_path):
    # both trained on without a word: NaN metrics and NaN checkpoints, exit 0
    from interp.runs.checkpoints import read_checkpoint, save_checkpoint
    from interp.runs.record import read_metrics
    from interp.tasks.models import build_model

    out = tmp_path / "div"
    # before step 1 nothing was trained: the folder is removed, and the message says so (it said "its
    # checkpoints before that step are kept")
    with pytest.raises(RunError, match=r"training diverged before step 1 \(a training loss of nan\); nothing is kept"):
        train(preset("induction", steps=40, lr=1e9, checkpoint_every=10), out, quiet=True)
    assert not out.exists()
    with pytest.raises(RunError, match=r"training diverged before step 4 \(.*\); its checkpoints before that step are kept"):
        train(preset("induction", steps=40, lr=1e4, checkpoint_every=10), out, quiet=True)
    kept = list_checkpoints(out)
    assert [step for step, _ in kept] == [0, 1, 2]
    assert all(torch.isfinite(t).all() for _, path in kept for t in read_checkpoint(path)[0].values())
    assert all(pd.notna(list(row.values())).all() for row in read_metrics(out))
    run = tmp_path / "run"
    train(preset("induction", steps=8, checkpoint_every=4), run, quiet=True)
    step, path = list_checkpoints(run)[-1]
    state, cfg, _ = read_checkpoint(path)
    model = build_model(cfg)
    model.load_state_dict(state, strict=False)
    with torch.no_grad():
        model.blocks[0].attn.W_K[0, 0, 0] = float("nan")
    save_checkpoint(path, model, step)
    with pytest.raises(RunError, match=f"the checkpoint of step {step} has NaN or infinite weights in blocks.0.attn.W_K"):
        train(preset("induction", steps=12, checkpoint_every=4), run, resume=True, quiet=True)


@pytest.mark.slow  # starts processes (each imports torch and transformer_lens)
def test_cli_has_no_traceback_for_a_missing_required_option():
    proc = subprocess.run([sys.executable, "-m", "interp", "train", "induction"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--out-dir" in proc.stderr and "Traceback" not in proc.stderr


def test_resume_keeps_the_recorded_length_unless_steps_extend_it(tmp_path):
    import json

    out = tmp_path / "run"
    assert main(["train", "induction", "--out-dir", str(out), *TINY]) == 0
    assert main(["train", "induction", "--out-dir", str(out), "--resume", "--quiet"]) == 0
    assert max(s for s, _ in list_checkpoints(out)) == 8
    assert json.loads((out / "run.json").read_text())["training"]["steps"] == 8
    assert main(["train", "induction", "--out-dir", str(out), "--resume", "--steps", "12", "--quiet"]) == 0
    assert max(s for s, _ in list_checkpoints(out)) == 12
    record = json.loads((out / "run.json").read_text())
    # the updates before step 8 followed the 8-step schedules: run.json says so
    assert record["training"]["steps"] == 12 and record["extensions"] == [{"steps": 8, "resumed_at_step": 8}]
    assert main(["train", "induction", "--out-dir", str(out), "--resume", "--steps", "4", "--quiet"]) == 2


def test_steps_overrides_the_preset_on_a_fresh_run(tmp_path):
    train(preset("induction"), tmp_path / "run", quiet=True, steps=3)
    assert max(s for s, _ in list_checkpoints(tmp_path / "run")) == 3


def test_learning_rate_schedules():
    from interp.tasks.presets import TrainOptions

    linear = TrainOptions(task="induction", lr=1.0, steps=100, warmup_steps=10, lr_schedule="linear")
    assert linear.lr_at(0) == pytest.approx(0.1)  # warm-up, and decay already under way
    assert linear.lr_at(50) == pytest.approx(0.5)
    assert linear.lr_at(99) == pytest.approx(0.01)
    constant = TrainOptions(task="induction", lr=1.0, steps=100, warmup_steps=10)
    assert [constant.lr_at(s) for s in (0, 9, 50, 99)] == pytest.approx([0.1, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainOptions(task="induction", lr_schedule="cosine")


def test_weight_decay_ramps_when_an_end_is_set(tmp_path):
    from interp.tasks.presets import TrainOptions

    ramp = TrainOptions(task="modadd", steps=100, weight_decay=2.0, weight_decay_end=4.0)
    assert [ramp.weight_decay_at(s) for s in (0, 50, 100)] == pytest.approx([2.0, 3.0, 4.0])
    assert TrainOptions(task="modadd", weight_decay=1.5).weight_decay_at(999) == 1.5
    late = TrainOptions(task="modadd", steps=100, weight_decay=2.0, weight_decay_end=4.0, weight_decay_ramp_start=0.6)
    assert [late.weight_decay_at(s) for s in (0, 60, 80, 100)] == pytest.approx([2.0, 2.0, 3.0, 4.0])
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="weight_decay_ramp_start"):
            TrainOptions(task="modadd", weight_decay_ramp_start=bad)
    # the loop applies it: from 0 at step 0 the runs agree; at step 1 the decay differs
    from interp.runs.checkpoints import read_checkpoint

    weights = {}
    for end in (0.0, 10.0):
        out = tmp_path / f"end{end}"
        train(preset("modadd", steps=2, weight_decay=0.0, weight_decay_end=end, grokfast_lambda=0.0), out, quiet=True)
        weights[end] = {step: read_checkpoint(path)[0]["embed.W_E"] for step, path in list_checkpoints(out)}
    assert torch.equal(weights[0.0][1], weights[10.0][1])
    assert not torch.allclose(weights[0.0][2], weights[10.0][2])


def test_resume_refuses_a_run_trained_on_other_data(tmp_path):
    import json

    out = tmp_path / "run"
    train(preset("induction", steps=4), out, quiet=True)
    info = json.loads((out / "run.json").read_text())
    info["task"] = {"name": "induction", "d_vocab": 128, "n_ctx": 64, "min_span": 16, "bos": 0}  # an older generator
    (out / "run.json").write_text(json.dumps(info))
    with pytest.raises(RunError, match="no longer generates"):
        train(preset("induction"), out, resume=True, quiet=True, steps=8)


@pytest.mark.parametrize("override, message", [
    ({"frac_train": 0}, "frac_train must be in"),  # was silently replaced by 0.3
    ({"frac_train": 1.5}, "frac_train must be in"),
    ({"seed": -1}, r"seed must be an integer in \[0, 9223372036854775807\]"),
    ({"seed": 2**64}, "seed must be an integer"),
    ({"steps": 0}, "steps must be >= 1"),
    ({"checkpoint_every": 0}, "checkpoint_every must be >= 1"),
    ({"lr": 0.0}, "lr must be > 0"),
    ({"adam_eps": 0.0}, "adam_eps must be > 0"),
])
def test_options_that_cannot_describe_a_run_are_refused_in_one_line(override, message):
    from interp.tasks.presets import preset

    with pytest.raises(ValueError, match=message):
        preset("modadd", **override)


def test_adam_eps_reaches_the_optimizer(tmp_path, monkeypatch):
    seen = []
    real = torch.optim.AdamW

    def recording(*args, **kwargs):
        seen.append(kwargs.get("eps"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", recording)
    assert preset("modadd").adam_eps == 1e-5 and preset("induction").adam_eps == 1e-8  # torch's default elsewhere
    train(preset("modadd", steps=2, adam_eps=3e-4, checkpoint_every=1), tmp_path / "run", quiet=True)
    assert seen == [3e-4]


def test_zero_is_not_replaced_by_a_task_default():
    from interp.tasks.presets import TrainOptions
    from interp.tasks.registry import make_task

    with pytest.raises(ValueError, match=r"ood_share must be in \(0, 1\), got 0.0"):  # was replaced by 0.05
        make_task(TrainOptions(task="composition", n_entities=20, ood_share=0.0, steps=2))


def test_two_trainings_never_write_one_run(tmp_path):
    # Two processes on one --out-dir both exited 0, leaving run.json of one seed and later
    # checkpoints and metrics.csv of the other; the folder is now held while a run trains.
    from interp.base.files import held_folder

    out = tmp_path / "run"
    with held_folder(out):  # another process's hold (flock: another open of the folder conflicts)
        with pytest.raises(RunError, match="is being trained into by another process"):
            train(preset("induction", steps=2), out, quiet=True)
    assert out.is_dir() and not any(out.iterdir())
    train(preset("induction", steps=2), out, quiet=True)
    with held_folder(out), pytest.raises(RunError, match="is being trained into by another process"):
        train(preset("induction", steps=4), out, resume=True, quiet=True)


def test_a_resume_without_usable_state_is_refused(tmp_path):
    # --resume of a mistyped folder started a new run; of a run whose optimiser state is gone,
    # retrained from step 0 over its checkpoints, rewriting run.json
    missing = tmp_path / "typo" / "run"
    with pytest.raises(RunError, match="holds no run.json to resume from; drop --resume to start a run there"):
        train(preset("induction", steps=2), missing, resume=True, quiet=True)
    assert not (tmp_path / "typo").exists()
    out = tmp_path / "run"
    train(preset("induction", steps=8, checkpoint_every=4), out, quiet=True)
    record = (out / "run.json").read_bytes()
    (out / "optimizer.safetensors").unlink()
    with pytest.raises(RunError, match=r"optimizer.safetensors is missing, so the run cannot continue exactly from its "
                                       r"checkpoints \(the last of step 8\)"):
        train(preset("induction", steps=8), out, resume=True, quiet=True)
    assert (out / "run.json").read_bytes() == record


def test_a_resume_from_damaged_state_is_one_line(tmp_path, capsys):
    from interp.runs.checkpoints import save_checkpoint
    from interp.tasks.models import build_model, induction_config

    out = tmp_path / "run"
    assert main(["train", "induction", "--out-dir", str(out), *TINY]) == 0
    metrics = (out / "metrics.csv").read_text()
    (out / "metrics.csv").write_text("a,b\n1,2\n")  # no step column: was a KeyError traceback
    assert main(["train", "induction", "--out-dir", str(out), "--resume", "--steps", "12", "--quiet"]) == 2
    assert "metrics.csv: unreadable metrics (no step column in its header ['a', 'b'])" in capsys.readouterr().err
    (out / "metrics.csv").write_text(metrics)
    other = induction_config()
    other.d_model = 32  # the resume step's checkpoint of another shape: was torch's size-mismatch traceback
    save_checkpoint(list_checkpoints(out)[-1][1], build_model(other, seed=0), 8)
    assert main(["train", "induction", "--out-dir", str(out), "--resume", "--steps", "12", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "step_000008.safetensors: its model (2 layer(s), d_model 32" in err
    assert "does not match its run" in err


def test_an_out_dir_that_is_not_utf8_is_refused_before_training(tmp_path):
    # The run trained, but could never be resumed or loaded: safetensors cannot open such a path.
    out = tmp_path / os.fsdecode(b"caf\xe9")
    with pytest.raises(RunError, match="a path that is not UTF-8, which safetensors cannot open"):
        train(preset("induction", steps=2), out, quiet=True)
    assert not out.exists()
