"""A series of Hugging Face checkpoint directories named by step is one run: listed, scored,
reported and inspected like a run of ours."""

from __future__ import annotations

import shutil

import pytest
import torch

transformers = pytest.importorskip("transformers")

from interp.cli import main  # noqa: E402
from interp.runs.checkpoints import ModelCache  # noqa: E402
from interp.runs.layout import (checkpoint_series, find_checkpoints, fingerprint, run_of,  # noqa: E402
                                scored_checkpoint, step_of, unlisted_files)
from interp.scoring.table import read_table  # noqa: E402

STEPS = {"step100": 100, "checkpoint-500": 500, "step1000": 1000, "global_step_2000": 2000}


def _neox(directory, seed: int) -> None:
    torch.manual_seed(seed)
    config = transformers.GPTNeoXConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                                        intermediate_size=64, vocab_size=64, max_position_embeddings=48,
                                        rotary_pct=0.5)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(directory)


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    root = tmp_path_factory.mktemp("series") / "pythia-tiny"
    for seed, name in enumerate(STEPS):
        _neox(root / name, seed)
    (root / "runs").mkdir()  # not checkpoints: ignored without a word
    (root / "logs").mkdir()
    (root / "logs" / "events.txt").write_text("x")
    (root / "tokenizer").mkdir()
    (root / "tokenizer" / "tokenizer.json").write_text("{}")
    shutil.copytree(root / "step100", root / "final")  # a checkpoint not named by step: named in a notice
    return root


def test_the_series_is_one_run_by_step(series):
    refs = find_checkpoints(series)
    assert [r.checkpoint for r in refs] == list(STEPS) and [r.step for r in refs] == list(STEPS.values())
    assert {r.run for r in refs} == {str(series)}
    pairs, run = checkpoint_series(series)
    assert run == series and [s for s, _ in pairs] == list(STEPS.values())
    assert find_checkpoints(series.parent) == refs  # a folder of series
    assert unlisted_files(series) == [series / "final"]
    child = series / "step1000"
    assert step_of(child) == 1000 and run_of(child) == series and run_of(series) == series
    assert scored_checkpoint(str(series), "step1000") == child
    one = find_checkpoints(child)  # a lone Hugging Face directory: one checkpoint, its run is its parent
    assert [(r.run, r.checkpoint, r.step) for r in one] == [(str(series), "step1000", 1000)]
    assert ModelCache().load(child)[1] == 1000


def test_two_children_named_by_one_step_are_named(series, tmp_path, capsys):
    twice = tmp_path / "twice"
    shutil.copytree(series, twice)
    shutil.copytree(twice / "step1000", twice / "checkpoint_1000")  # two names of step 1000
    with pytest.raises(ValueError, match="checkpoint_1000 and .*step1000 are both step 1000; keep one"):
        checkpoint_series(twice)
    refs = find_checkpoints(twice)  # batch scoring scores both (nothing is dropped) ...
    assert [(r.checkpoint, r.step) for r in refs if r.step == 1000] == [("checkpoint_1000", 1000), ("step1000", 1000)]
    assert main(["score", str(twice), "--out", str(tmp_path / "t.csv"), "--quiet", "--detectors", "heads"]) == 0
    err = capsys.readouterr().err  # ... and says so
    assert f"checkpoint_1000 and step1000 of {twice} are all step 1000: each is scored" in err
    assert main(["score", str(series), "--out", str(tmp_path / "u.csv"), "--quiet", "--detectors", "heads"]) == 0
    assert "are all step" not in capsys.readouterr().err  # one name per step: no word


def test_a_trainers_final_model_at_the_top_of_its_series_is_named(series, tmp_path, capsys):
    out = tmp_path / "trainer_out"  # Trainer: checkpoint-N folders, and the final model at the top
    for name in ("checkpoint-500", "step1000"):
        shutil.copytree(series / name, out / name)
    for file in (series / "step100").iterdir():
        shutil.copy(file, out / file.name)
    assert [r.checkpoint for r in find_checkpoints(out)] == ["checkpoint-500", "step1000"]
    assert main(["score", str(out), "--out", str(tmp_path / "t.csv"), "--quiet", "--detectors", "heads"]) == 0
    assert f"ignored the model at the top of {out}: it has no step" in capsys.readouterr().err
    top = ModelCache().load(out)[0]  # what inspect reads: that model, as its docstring says
    assert torch.equal(top.W_E, ModelCache().load(series / "step100")[0].W_E)


def test_a_folder_of_model_directories_is_each_of_them(series, tmp_path):
    models = tmp_path / "models"  # Hugging Face directories not named by step: models of their own
    for name in ("pythia-a", "pythia-b"):
        shutil.copytree(series / "step100", models / name)
    refs = find_checkpoints(models)
    assert [(r.checkpoint, r.step, r.run) for r in refs] == [("pythia-a", None, str(models)), ("pythia-b", None, str(models))]


def test_fingerprint_of_a_directory_is_content_based(series, tmp_path):
    first = fingerprint(series / "step100")
    assert first and first == fingerprint(series / "step100") and first != fingerprint(series / "step1000")
    copy = tmp_path / "copy"
    shutil.copytree(series / "step100", copy)
    assert fingerprint(copy) == first
    (copy / "config.json").write_text((copy / "config.json").read_text().replace('"vocab_size": 64', '"vocab_size":64'))
    assert fingerprint(copy) == first  # the config is compared parsed
    _neox(copy, seed=9)
    assert fingerprint(copy) != first


def test_score_report_inspect_a_series(series, tmp_path, capsys):
    table_path, page = tmp_path / "t.csv", tmp_path / "r.html"
    assert main(["score", str(series), "--out", str(table_path), "--quiet", "--detectors", "heads"]) == 0
    err = capsys.readouterr().err  # the unnamed checkpoint is named, with the rule
    assert f"ignored {series / 'final'}: a checkpoint of a series is a folder named by step" in err
    table = read_table(table_path)
    assert not (table["metric"] == "error").any()
    heads = table[table["detector"] == "heads"]
    assert heads.drop_duplicates("checkpoint")["step"].tolist() == list(STEPS.values())
    assert len(heads) == len(STEPS) * 8 * 6  # 2 layers x 4 heads x 6 metrics per step
    assert set(heads["fingerprint"]) and "" not in set(heads["fingerprint"])
    assert main(["report", str(table_path), "--out", str(page), "--quiet"]) == 0
    text = page.read_text()
    assert "head scores over training" in text and "Attention patterns not drawn" not in text
    capsys.readouterr()
    assert main(["inspect", str(series / "step1000")]) == 0
    out = capsys.readouterr().out
    assert "heads:" in out and "prefix_matching" in out
    assert main(["inspect", str(series)]) == 0  # the series: the step shown is named
    assert capsys.readouterr().out.startswith(f"{series} (its latest checkpoint: {max(STEPS, key=STEPS.get)}): ")
    # scoring again keeps everything (fingerprints unchanged)
    assert main(["score", str(series), "--out", str(table_path), "--quiet", "--detectors", "heads"]) == 0
    assert len(read_table(table_path)) == len(table)


def test_a_folder_of_lora_adapters_alone_is_named_as_such(tmp_path, capsys):
    # A PEFT Trainer's folder of adapter steps said "no checkpoints found" (score) or "run directory
    # has no checkpoints" (inspect), and an adapter's safetensors file scored on its own "has no
    # model config in its metadata": each now says what the folder holds, and what to do.
    from safetensors.torch import save_file

    lora = "a LoRA adapter (adapter_model.safetensors) without the base model's weights, which this toolkit does not read"
    for step in (500, 1000):
        (tmp_path / "peft" / f"checkpoint-{step}").mkdir(parents=True)
        (tmp_path / "peft" / f"checkpoint-{step}" / "adapter_config.json").write_text('{"peft_type": "LORA"}')
        save_file({"lora_A.weight": torch.zeros(2, 8)}, tmp_path / "peft" / f"checkpoint-{step}" / "adapter_model.safetensors")
    table_path = tmp_path / "t.csv"
    assert main(["score", str(tmp_path / "peft"), "--out", str(table_path), "--quiet"]) == 2
    said = capsys.readouterr().err
    assert f"no checkpoints found under {tmp_path / 'peft'}; {tmp_path / 'peft' / 'checkpoint-500'}: {lora}" in said
    assert main(["inspect", str(tmp_path / "peft")]) == 2
    assert f"{tmp_path / 'peft' / 'checkpoint-500'}: {lora}" in capsys.readouterr().err
    assert main(["score", str(tmp_path / "peft" / "checkpoint-1000"), "--out", str(table_path), "--quiet"]) == 1
    assert lora in read_table(table_path)["error"].iloc[0]


def test_a_trainer_output_folder_is_its_series_and_load_model_takes_the_latest(series, tmp_path):
    out = tmp_path / "trainer_out"
    shutil.copytree(series, out)
    _neox(out, seed=7)  # the final model at the top, as transformers' Trainer leaves it
    assert [r.checkpoint for r in find_checkpoints(out)] == list(STEPS)
    from interp import load_model

    latest = load_model(series)
    assert torch.equal(latest.W_E, load_model(series / "global_step_2000").W_E)
    assert not torch.equal(load_model(out).W_E, latest.W_E)  # a folder with its own model is that model


def test_a_step_that_lost_its_weights_is_an_error_row_not_a_gap(series, tmp_path, monkeypatch, capsys):
    damaged = tmp_path / "damaged"
    shutil.copytree(series, damaged)
    (damaged / "step1000" / "model.safetensors").unlink()  # config.json left: a checkpoint, broken
    refs = find_checkpoints(damaged)
    assert [r.checkpoint for r in refs] == list(STEPS)
    table_path = tmp_path / "t.csv"
    assert main(["score", str(damaged), "--out", str(table_path), "--quiet", "--detectors", "heads"]) == 1
    table = read_table(table_path)
    errors = table[table["metric"] == "error"]
    assert errors["checkpoint"].tolist() == ["step1000"] and "no weights" in errors["error"].iloc[0]
    assert set(table.loc[table["detector"] == "heads", "checkpoint"]) == set(STEPS) - {"step1000"}
    # steps that hold a LoRA adapter alone (a PEFT Trainer's, with or without config.json) were left
    # out without a word ("scored 3, 0 failed"), and inspect said "run directory has no checkpoints"
    for name, config in (("checkpoint-3000", False), ("checkpoint-4000", True)):
        (damaged / name).mkdir()
        (damaged / name / "adapter_config.json").write_text('{"peft_type": "LORA"}')
        torch.save({"lora_A": torch.zeros(2, 2)}, damaged / name / "adapter_model.bin")
        if config:
            shutil.copy(damaged / "step100" / "config.json", damaged / name / "config.json")
    assert main(["score", str(damaged), "--out", str(table_path), "--quiet", "--detectors", "heads"]) == 1
    errors = read_table(table_path).query("metric == 'error'").set_index("checkpoint")["error"]
    lora = "a LoRA adapter (adapter_model.bin) without the base model's weights, which this toolkit does not read"
    assert errors.index.tolist() == ["step1000", "checkpoint-3000", "checkpoint-4000"]
    assert all(lora in errors[name] for name in ("checkpoint-3000", "checkpoint-4000"))
    assert main(["inspect", str(damaged / "checkpoint-3000")]) == 2
    assert lora in capsys.readouterr().err
    # a model that loads but whose forward pass fails is an error row too, and the job goes on
    from transformer_lens import HookedTransformer

    def broken(model, *args, **kwargs):
        raise RuntimeError("The expanded size of the tensor (2) must match\nthe existing size")

    monkeypatch.setattr(HookedTransformer, "run_with_cache", broken)
    fresh = tmp_path / "fresh.csv"
    assert main(["score", str(series), "--out", str(fresh), "--quiet", "--detectors", "heads"]) == 1
    rows = read_table(fresh)
    assert set(rows["error"]) == {"its forward pass fails: RuntimeError: The expanded size of the tensor (2) must match"}
    assert rows["checkpoint"].tolist() == list(STEPS)
