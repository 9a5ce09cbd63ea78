import pytest
import torch

from interp import CheckpointError, build_model, induction_config, load_model, modadd_config
from interp.runs.checkpoints import checkpoint_path, list_checkpoints, load_cached, save_checkpoint
from interp.tasks.models import config_to_dict
from interp.tasks.modular import all_pairs, answers


def test_checkpoint_round_trip(tmp_path):
    model = build_model(induction_config(), seed=0)
    path = checkpoint_path(tmp_path, 12)
    save_checkpoint(path, model, 12)
    loaded = load_model(path)
    assert not loaded.training
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert list_checkpoints(tmp_path) == [(12, path)]
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_run_directory_loads_latest_checkpoint(tmp_path):
    for step, seed in ((5, 0), (40, 1), (10, 2)):
        save_checkpoint(checkpoint_path(tmp_path, step), build_model(modadd_config(), seed=seed), step)
    assert torch.equal(load_model(tmp_path).W_E, build_model(modadd_config(), seed=1).W_E)


def test_truncated_checkpoint_gives_clear_error(tmp_path):
    path = checkpoint_path(tmp_path, 1)
    save_checkpoint(path, build_model(induction_config(), seed=0), 1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(path)


def test_garbage_files_give_clear_errors(tmp_path):
    for name in ("x.safetensors", "x.pth"):
        (tmp_path / name).write_bytes(b"not a checkpoint at all")
        with pytest.raises(CheckpointError):
            load_model(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="no such"):
        load_model(tmp_path / "missing.safetensors")
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoints"):
        load_model(tmp_path / "empty_run")


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, path)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_model(path)


def test_transformer_lens_state_dict_with_config(tmp_path):
    model = build_model(modadd_config(), seed=4)
    path = tmp_path / "tl.pt"
    torch.save({"state_dict": model.state_dict(), "config": config_to_dict(model.cfg)}, path)
    assert torch.equal(load_model(path).W_in, model.W_in)
    torch.save({"state_dict": model.state_dict(), "config": config_to_dict(induction_config())}, path)
    with pytest.raises(CheckpointError, match="do not match|shape"):
        load_model(path)


def test_a_malformed_config_or_step_is_one_line_naming_it(tmp_path):
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    model = build_model(induction_config(), seed=0)
    good = checkpoint_path(tmp_path, 3)
    save_checkpoint(good, model, 3)
    tensors = load_file(str(good))
    with safe_open(str(good), "pt") as handle:
        metadata = handle.metadata()
    config = json.loads(metadata["config"])
    no_vocab = {k: v for k, v in config.items() if k != "d_vocab"}
    cases = [({"config": "[]"}, "model config in metadata is a JSON list, not an object"),
             ({"step": "5.0"}, "step in metadata is '5.0', not a whole number"),
             ({"config": json.dumps({**config, "n_layers": "2"})}, "field n_layers must be an int, got '2'"),
             ({"config": json.dumps(no_vocab)}, "model config needs d_vocab, a positive int; got None")]
    for i, (change, message) in enumerate(cases):
        path = tmp_path / f"bad{i}.safetensors"
        save_file(tensors, str(path), metadata={**metadata, **change})
        with pytest.raises(CheckpointError, match=message) as info:
            load_model(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
    partial = tmp_path / "partial.pt"  # a TransformerLens dict whose config lacks d_vocab
    torch.save({"state_dict": model.state_dict(), "config": no_vocab}, partial)
    with pytest.raises(CheckpointError, match="needs d_vocab"):
        load_model(partial)


def test_published_grokking_checkpoint_is_accurate(published_path):
    model = load_model(published_path)
    with torch.inference_mode():
        logits = model(all_pairs(113))[:, -1]
    accuracy = (logits.argmax(-1) == answers(113)).float().mean().item()
    assert accuracy >= 0.999


def test_one_model_instance_per_config(tiny_runs):
    ind, _ = tiny_runs
    (_, first), (_, second) = list_checkpoints(ind)[:2]
    m1, s1 = load_cached(first)
    w1 = m1.W_Q.detach().clone()
    m2, s2 = load_cached(second)
    assert m1 is m2 and (s1, s2) == (0, 1)
    assert torch.equal(m2.W_Q.detach(), load_model(second).W_Q.detach()) and not torch.equal(w1, m2.W_Q.detach())


def test_cache_rebuilds_for_another_config_and_checks_shapes(tiny_runs, tmp_path):
    ind, mod = tiny_runs
    a, _ = load_cached(list_checkpoints(ind)[0][1])
    b, _ = load_cached(list_checkpoints(mod)[0][1])
    assert a is not b and b.cfg.d_vocab_out == 113


def test_a_run_refuses_a_checkpoint_of_another_shape(tiny_runs, tmp_path):
    import shutil

    ind, mod = tiny_runs
    run = tmp_path / "ind"
    shutil.copytree(ind, run)
    shutil.copy(list_checkpoints(mod)[-1][1], run / "checkpoints" / "step_000700.safetensors")
    with pytest.raises(CheckpointError) as info:
        load_model(run)
    message = str(info.value)
    assert "\n" not in message and "does not match its run" in message
    assert "1 layer(s), d_model 128" in message and "2 layer(s), d_model 64" in message


def test_nan_weights_warn_or_raise(tmp_path):
    model = build_model(induction_config(), seed=0)
    with torch.no_grad():
        model.blocks[1].attn.W_K[0, 0, 0] = float("inf")
    path = checkpoint_path(tmp_path, 3)
    save_checkpoint(path, model, 3)
    with pytest.warns(RuntimeWarning, match="NaN or infinite weights in blocks.1.attn.W_K"):
        load_model(path)
    with pytest.raises(CheckpointError, match="NaN or infinite weights in blocks.1.attn.W_K"):
        load_model(path, strict=True)


def test_an_unsafe_pickle_is_refused_in_one_line(tmp_path):
    import os

    path = tmp_path / "evil.pt"
    torch.save({"model": os.system}, path)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    message = str(info.value)
    assert "\n" not in message and "refers to code" in message and "weights_only=False" not in message


@pytest.mark.parametrize("extra", [{}, {"train_losses": [4.7, 0.1], "test_losses": [4.7]}])
def test_original_layout_with_its_training_config_loads(published_path, tmp_path, extra):
    original = torch.load(published_path, map_location="cpu", weights_only=True)
    config = {"lr": 1e-3, "weight_decay": 1.0, "p": 113, "d_model": 128, "frac_train": 0.3, "seed": 0}
    path = tmp_path / "grok.pth"
    torch.save({"model": original["model"], "config": config, **extra}, path)
    model = load_model(path)
    assert model.training_config == config and model.cfg.d_vocab_out == 113
    with torch.inference_mode():
        assert (model(all_pairs(113))[:, -1].argmax(-1) == answers(113)).float().mean() >= 0.999
    torch.save({"model": original["model"], "config": {**config, "p": 97}}, path)
    with pytest.raises(CheckpointError, match="p = 97, but the weights have p = 113"):
        load_model(path)
    torch.save({"model": original["model"]}, path)
    assert not hasattr(load_model(path), "training_config")


def test_a_full_disk_while_saving_is_one_write_error(tmp_path, monkeypatch):
    import errno
    import os

    from interp.base import files
    from interp.base.files import WriteError

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", full)
    path = checkpoint_path(tmp_path, 1)
    with pytest.raises(WriteError, match="no space left on the device"):
        save_checkpoint(path, build_model(induction_config(), seed=0), 1)
    assert not list(path.parent.iterdir())


@pytest.fixture
def alarm():
    """Fail, rather than hang, when a read blocks (a FIFO) or never ends (/dev/zero)."""
    import signal

    def hung(*_):
        raise TimeoutError("a checkpoint read did not end")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "trailing_data", "directory"])
def test_special_and_oversized_files_are_error_rows_not_hangs(tiny_runs, tmp_path, alarm, kind):
    import os
    import shutil

    from interp.scoring.batch import score_checkpoints

    run = tmp_path / "ind"
    shutil.copytree(tiny_runs[0], run)
    bad = run / "checkpoints" / "step_000999.safetensors"  # the newest: what inspect and load_model pick
    if kind == "fifo":
        os.mkfifo(bad)
    elif kind == "dev_zero":
        bad.symlink_to("/dev/zero")
    elif kind == "directory":
        bad.mkdir()
    else:
        bad.write_bytes(list_checkpoints(run)[-2][1].read_bytes() + b"\0" * 4096)
    expected = {"fifo": "a FIFO", "dev_zero": "a character device", "directory": "a directory",
                "trailing_data": "but its header describes"}[kind]
    with pytest.raises(CheckpointError, match=expected) as caught:
        load_model(run)
    assert str(bad) in str(caught.value)
    table = score_checkpoints([run], detectors=("heads",))
    errors = table[table["metric"] == "error"]
    assert list(errors["checkpoint"]) == [bad.name] and expected in errors["error"].iloc[0]
    scored = table[(table["metric"] != "error")]["checkpoint"].nunique()
    assert scored == len(list_checkpoints(tiny_runs[0]))  # every other checkpoint was scored


def grokking_layout(model) -> dict:
    """A TransformerLens modular-addition model in the original layout of Nanda et al.'s grokking
    code (the inverse of ``interp.runs.foreign._convert_nanda``; biases of attention are zero there)."""
    n_heads, d_head, d_model = model.W_O.shape[1], model.W_O.shape[2], model.cfg.d_model
    state = {"embed.W_E": model.W_E.T, "pos_embed.W_pos": model.W_pos, "blocks.0.attn.mask": torch.ones(3, 3).tril(),
             "blocks.0.attn.W_O": model.W_O[0].reshape(n_heads * d_head, d_model).T,
             "blocks.0.mlp.W_in": model.W_in[0].T, "blocks.0.mlp.b_in": model.b_in[0],
             "blocks.0.mlp.W_out": model.W_out[0].T, "blocks.0.mlp.b_out": model.b_out[0],
             "unembed.W_U": torch.cat([model.W_U, torch.zeros(d_model, 1)], 1)}
    for w in ("W_Q", "W_K", "W_V"):
        state[f"blocks.0.attn.{w}"] = getattr(model, w)[0].transpose(1, 2)
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def test_the_grokking_layout_is_read_exactly_or_refused(tmp_path):
    model = build_model(modadd_config(13), seed=2)
    original = grokking_layout(model)
    path = tmp_path / "grok.pth"
    torch.save({"model": original, "config": {"p": 13, "fn_name": "add", "act_type": "ReLU", "use_ln": False}}, path)
    with torch.no_grad():
        assert torch.allclose(load_model(path)(all_pairs(13)), model(all_pairs(13)), atol=1e-5)
    refused = {  # a model the loader would rebuild as another one, without a word, before
        "fn_name = 'subtract'": ({"model": original, "config": {"p": 13, "fn_name": "subtract"}}),
        "act_type = 'GeLU'": ({"model": original, "config": {"act_type": "GeLU"}}),
        "use_ln = True": ({"model": original, "config": {"use_ln": True}}),
        "d_mlp = 256": ({"model": original, "config": {"d_mlp": 256}}),
        r"does not convert: \['blocks.0.ln1.w'\]": ({"model": {**original, "blocks.0.ln1.w": torch.ones(128)}}),
        r"unembed.W_U is \(128, 14\), the embedding implies \(128, 9\)":
            ({"model": {**original, "embed.W_E": original["embed.W_E"][:, :9]}}),
        "inconsistent shapes": ({"model": {**original, "blocks.0.attn.W_O": original["blocks.0.attn.W_O"][:, :64]}}),
    }
    for message, content in refused.items():
        torch.save(content, path)
        with pytest.raises(CheckpointError, match=message) as info:
            load_model(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_config_larger_than_its_weights_is_refused_before_any_memory_is_taken(tmp_path):
    import resource

    model = build_model(induction_config(), seed=0)
    path = tmp_path / "big.pt"
    torch.save({"state_dict": model.state_dict(), "config": {**config_to_dict(model.cfg), "d_vocab": 3 * 10 ** 9}}, path)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match=r"embed.W_E has shape \(128, 64\), config implies \(3000000000, 64\)"):
        load_model(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # kB: nothing of 3e9 rows
    sparse = {k: (v.to_sparse() if k == "embed.W_E" else v) for k, v in model.state_dict().items()}
    torch.save({"state_dict": sparse, "config": config_to_dict(model.cfg)}, path)
    with pytest.raises(CheckpointError, match="its weights do not load into the model") as info:
        load_model(path)
    assert "\n" not in str(info.value)
