"""Induction on real text: the in-context learning score, the byte corpus and its sampler, the text run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from handbuilt_models import induction_circuit_model

from circuits import icl_score_from_losses, in_context_learning_score, per_token_loss
from interp.cli import main
from interp.analysis.phase import locate_phase_change
from interp.tasks.induction import step_generator
from interp.tasks.text import BOS, D_VOCAB, encode, load_corpus

# --- the score ------------------------------------------------------------------------------


def test_icl_score_of_hand_made_losses():
    losses = torch.full((3, 10), 9.0)
    losses[:, 1] = torch.tensor([4.0, 5.0, 6.0])  # token 2: mean 5
    losses[:, 7] = torch.tensor([1.0, 2.0, 6.0])  # token 8: mean 3
    assert icl_score_from_losses(losses, early=2, late=8) == pytest.approx(-2.0)
    assert icl_score_from_losses(losses, early=8, late=10) == pytest.approx(6.0)
    losses[0, 7] = float("nan")  # ignored: mean of 2 and 6
    assert icl_score_from_losses(losses, early=2, late=8) == pytest.approx(-1.0)
    for early, late in ((0, 5), (5, 5), (6, 5), (2, 11)):
        with pytest.raises(ValueError, match="early"):
            icl_score_from_losses(losses, early=early, late=late)
    with pytest.raises(ValueError, match=r"batch >= 1"):  # no sequences: was NaN
        icl_score_from_losses(losses[:0], early=2, late=8)


@pytest.fixture(scope="module")
def circuit_model():
    return induction_circuit_model(vocab=40, n_ctx=64)


def _repeated_and_random(n_seqs: int = 128, vocab: int = 40, n_ctx: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    bos = torch.zeros(n_seqs, 1, dtype=torch.long)
    period = torch.stack([torch.randperm(vocab - 1, generator=g) + 1 for _ in range(n_seqs)])  # 39 tokens
    repeated = torch.cat([bos, period.repeat(1, 2)[:, : n_ctx - 1]], dim=1)
    random = torch.cat([bos, torch.randint(1, vocab, (n_seqs, n_ctx - 1), generator=g)], dim=1)
    return repeated, random


def test_handbuilt_induction_model_uses_repeated_context_only(circuit_model):
    repeated, random = _repeated_and_random()
    # token 4 is in the first period (nothing to copy), token 62 in the second (a copy of token 23)
    on_repeats = in_context_learning_score(circuit_model, repeated, early=4, late=62)
    on_random = in_context_learning_score(circuit_model, random, early=4, late=62)
    assert on_repeats < -2.5
    assert abs(on_random) < 0.3
    # without its induction head the repeats are no longer used
    ablated = in_context_learning_score(circuit_model, repeated, early=4, late=62, ablate=[(1, 0)])
    assert ablated > -0.5
    losses = per_token_loss(circuit_model, repeated)
    assert losses.shape == (128, 63)
    assert icl_score_from_losses(losses, 4, 62) == pytest.approx(on_repeats)
    # the second copy is predicted: a token at index >= 41 costs far less than ln(40)
    assert float(losses[:, 41:].mean()) < 1.0 < math.log(40) < float(losses[:, 1:39].mean())


def test_bad_input_is_a_clear_error(circuit_model):
    repeated, _ = _repeated_and_random()
    with pytest.raises(ValueError, match=r"n_ctx=64 is shorter than late \+ 1 = 501"):
        in_context_learning_score(circuit_model, repeated)  # Olsson's defaults need 501 positions
    with pytest.raises(ValueError, match="pos >= late"):
        in_context_learning_score(circuit_model, repeated[:, :30], early=4, late=40)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, d_vocab=40\)"):
        per_token_loss(circuit_model, repeated + 1)
    with pytest.raises(ValueError, match="not in the model"):
        per_token_loss(circuit_model, repeated, ablate=[(2, 0)])
    for bad in ([(0, 1.7)], [(True, 0)], (0, 1), [(0, 1, 2)]):  # not head 1, layer 1, or a traceback
        with pytest.raises(ValueError, match="ablate must be \\(layer, head\\) pairs of ints"):
            per_token_loss(circuit_model, repeated, ablate=bad)
    assert torch.equal(per_token_loss(circuit_model, repeated[:2], ablate=[(np.int64(1), 0)]),
                       per_token_loss(circuit_model, repeated[:2], ablate=[(1, 0)]))
    for bad in (4.5, True):  # an index, not a fraction or a flag
        with pytest.raises(ValueError, match="early must be a positive int"):
            in_context_learning_score(circuit_model, repeated, early=bad, late=40)
        with pytest.raises(ValueError, match="early must be a positive int"):
            icl_score_from_losses(torch.ones(2, 50), early=bad, late=40)
    assert icl_score_from_losses(torch.ones(2, 50), early=np.int64(4), late=40) == 0.0
    with pytest.raises(ValueError, match="floating tensor, got torch.int64"):
        icl_score_from_losses(torch.ones(2, 50, dtype=torch.long), early=4, late=40)
    with pytest.raises(TypeError, match="tokens must be a torch.Tensor, got ndarray"):
        in_context_learning_score(circuit_model, repeated.numpy(), early=4, late=40)
    from interp.tasks.text import encode

    with pytest.raises(TypeError, match="encode takes text"):
        encode(5)


def test_steepest_fall_uses_the_same_rule():
    steps, icl = [0, 100, 200, 300, 400], [0.0, -0.05, -0.1, -0.45, -0.5]
    change = locate_phase_change(steps, icl, falling=True)
    assert (change.start_step, change.end_step, change.step) == (200, 300, 250)
    assert change.before == pytest.approx(-0.1) and change.slope == pytest.approx(-0.0035)
    assert locate_phase_change(steps, [-v for v in icl]).step == 250  # the rise of the mirrored curve
    assert locate_phase_change(steps, icl) is None  # it never rises


def test_probe_of_a_byte_model_draws_from_its_alphabet(tmp_path):
    from circuits import repeated_tokens
    from interp.detectors.heads.detector import probe_options
    from interp.tasks.models import build_model, text_config

    model = build_model(text_config(n_ctx=65), seed=0)
    default = repeated_tokens(model)
    assert (default[:, 0] == 0).all() and int(default.max()) == 256  # no tokenizer: x0 = 0, BOS among the halves
    probe = {"bos": 256, "ids": [[9, 10], [32, 126]]}
    (tmp_path / "run.json").write_text(json.dumps({"task": {"name": "text", "probe": probe}}))
    options = probe_options(tmp_path)
    assert options["bos"] == 256 and options["ids"] == [9, 10, *range(32, 127)]
    probe = repeated_tokens(model, **options)
    assert probe.shape == (64, 65) and (probe[:, 0] == 256).all()
    assert set(probe[:, 1:].unique().tolist()) <= set(options["ids"])
    assert torch.equal(probe[:, 1:33], probe[:, 33:])
    assert probe_options(None) == {} and probe_options(tmp_path / "nothing") == {}
    from circuits import induction_heads
    from interp.detectors.heads.detector import summary

    on_probe = induction_heads(model, tokens=repeated_tokens(model, **options))  # inspect reads what score reads
    assert summary(model, tmp_path).splitlines()[2].split()[2] == f"{on_probe['previous_token'][0]:.3f}"
    with pytest.raises(ValueError, match=r"bos must be a token id in the vocabulary \[0, 257\)"):
        repeated_tokens(model, bos=257)


def test_text_preset_cools_down_over_the_last_quarter():
    from interp.tasks.presets import preset

    options = preset("text")
    assert options.lr_schedule == "cooldown" and options.steps == 4000
    assert options.lr_at(1000) == options.lr_at(2999) == pytest.approx(options.lr)
    assert options.lr_at(3500) == pytest.approx(options.lr / 2) and options.lr_at(3999) < options.lr / 500


def test_change_points_of_a_run_skip_the_first_moments():
    import pandas as pd

    from interp.detectors.text.detector import change_points

    steps = [0, 1, 2, 4, 8, 16, 32, 64, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]
    icl = [-0.23, -0.2, -0.1, 0.0, -0.15, -0.05, 0.0, 0.0, -0.02, -0.05, -0.1, -0.3, -0.45, -0.5, -0.5, -0.52, -0.5, -0.5]
    best = [0.02] * 10 + [0.05, 0.3, 0.5, 0.6, 0.62, 0.63, 0.64, 0.65]
    rows = [{"detector": "text", "metric": "icl_score", "layer": None, "head": None, "step": s, "value": v}
            for s, v in zip(steps, icl)]
    rows += [{"detector": "heads", "metric": "prefix_matching", "layer": 1, "head": 2, "step": s, "value": v}
             for s, v in zip(steps, best)]
    heads, curve, pm, change = change_points(pd.DataFrame(rows))
    assert len(heads) == len(curve) == len(steps)
    assert (pm.start_step, pm.end_step) == (300, 400)  # +0.25 in 100 steps
    assert (change.start_step, change.end_step) == (300, 400)  # -0.2 in 100 steps; 4 -> 8 (-0.15 in 4) is skipped
    assert change.before == pytest.approx(-0.1) and change.after == pytest.approx(-0.3)


# --- the corpus and its sampler --------------------------------------------------------------


def _letters_corpus(folder, n_files: int = 8, size: int = 20_000):
    """Files ``f0.txt .. f7.txt``, each one letter (A, B, ...) with newlines, plus a binary file."""
    folder.mkdir()
    for i in range(n_files):
        (folder / f"f{i}.txt").write_text((chr(ord("A") + i) * 99 + "\n") * (size // 100))
    (folder / "image.bin").write_bytes(bytes(range(256)))  # not text: skipped
    (folder / ".hidden.txt").write_text("Z" * 1000)  # hidden: skipped
    return folder


def test_corpus_split_by_file_and_no_context_crosses_it(tmp_path):
    corpus = load_corpus(_letters_corpus(tmp_path / "c"))
    assert sorted(corpus.files + corpus.held_out_files) == [f"f{i}.txt" for i in range(8)]
    assert corpus.held_out_files and corpus.files and list(corpus.files) == sorted(corpus.files)
    letters = {split: {chr(ord("A") + int(name[1])) for name in names}
               for split, names in (("train", corpus.files), ("held_out", corpus.held_out_files))}
    for split in ("train", "held_out"):
        tokens = corpus.sample(split, 64, 512, torch.Generator().manual_seed(1))
        assert tokens.shape == (64, 512) and (tokens[:, 0] == BOS).all() and int(tokens[:, 1:].max()) < 256
        seen = {chr(t) for t in tokens[:, 1:].unique().tolist()} - {"\n"}
        assert seen <= letters[split], split
    chains = corpus.chained_contexts("held_out", n_chains=2, per_chain=4, early=5, late=50)
    assert chains.shape == (8, 51) and (chains[:, 0] == BOS).all()
    assert torch.equal(chains[:3, 50], chains[1:4, 5])  # token 50 of one context is token 5 of the next
    described = corpus.describe()
    assert described["files"] + described["held_out_files"] == 8 and len(described["corpus_hash"]) == 16


def test_sampler_is_a_function_of_seed_and_step(tmp_path):
    corpus = load_corpus(_letters_corpus(tmp_path / "c"))
    pairs = ((0, 5), (0, 5), (0, 6), (1, 5))
    draw = [corpus.sample("train", 8, 512, step_generator(seed, step)) for seed, step in pairs]
    assert torch.equal(draw[0], draw[1])
    assert not torch.equal(draw[0], draw[2]) and not torch.equal(draw[0], draw[3])


def test_corpus_hash_follows_the_content(tmp_path):
    folder = _letters_corpus(tmp_path / "c")
    first = load_corpus(folder).digest
    (folder / "f3.txt").write_text("changed\n" * 3000)
    assert load_corpus(folder).digest not in ("", first)


def test_a_file_whose_name_is_not_utf8_is_read(tmp_path):
    # "'utf-8' codec can't encode character '\\udcff'" stopped the run, naming neither the file nor
    # --corpus. Names are hashed as their bytes: the split and the hash of UTF-8 names are unchanged.
    import os

    folder = _letters_corpus(tmp_path / "c")
    before = load_corpus(folder)
    (folder / os.fsdecode(b"odd\xff.txt")).write_text("Q" * 5000)
    after = load_corpus(folder)
    # the new file's hash holds it out; f7.txt was held out only because no file's hash did
    assert after.held_out_files == (os.fsdecode(b"odd\xff.txt"),) and after.files == before.files + ("f7.txt",)
    assert after.digest != before.digest
    assert (before.digest, before.held_out_files) == ("2fee3092da2c27f3", ("f7.txt",))  # as before the change


def test_encode_is_plain_bytes():
    assert D_VOCAB == 257 and BOS == 256
    assert encode("é a").tolist() == [256, 0xC3, 0xA9, 32, 97]


def test_stdlib_corpus():
    corpus = load_corpus()
    assert corpus.source == "stdlib" and len(corpus.files) > 200
    names = corpus.files + corpus.held_out_files
    assert all(n.endswith(".py") and "site-packages" not in n for n in names)
    assert 0.02 < len(corpus.held_out_files) / len(names) < 0.1
    assert corpus.held_out.numel() > 100_000 and corpus.describe()["python"].count(".") == 2


def test_text_task_models_and_run_description(tmp_path):
    import dataclasses

    from interp.tasks.presets import preset
    from interp.tasks.text import TextTask

    folder = str(_letters_corpus(tmp_path / "c"))
    plain = TextTask(dataclasses.replace(preset("text"), corpus=folder))
    mlp = TextTask(dataclasses.replace(preset("text", "mlp"), corpus=folder))
    assert plain.cfg.attn_only and plain.cfg.n_layers == 2 and plain.cfg.n_ctx == 512 and plain.cfg.d_vocab == 257
    assert not mlp.cfg.attn_only and mlp.cfg.d_mlp == 256
    described = plain.describe()
    assert described["corpus"] == folder and described["probe"]["bos"] == BOS and described["d_vocab"] == D_VOCAB
    assert plain.eval_tokens.shape == (256, 501)


def test_bad_corpus_is_one_line(tmp_path, capsys):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "a.bin").write_bytes(b"\x00\x01" * 100)
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "a.txt").write_text("only one file")
    (tmp_path / "short").mkdir()  # the last file is held out: 20,000 bytes; the training split 100
    (tmp_path / "short" / "a.txt").write_text("a" * 100)
    (tmp_path / "short" / "b.txt").write_text("b" * 20_000)
    letters = str(_letters_corpus(tmp_path / "letters"))
    cases = [(["text", "--corpus", str(tmp_path / "missing")], "does not exist"),
             (["text", "--corpus", str(tmp_path / "bin")], "0 non-empty text file"),
             (["text", "--corpus", str(tmp_path / "one")], "need at least 2"),
             (["induction", "--corpus", str(tmp_path / "one")], "--corpus is for the text task"),
             # before anything is written, not at the first batch after run.json
             (["text", "--corpus", str(tmp_path / "short")], "the train split of the corpus"),
             # the corpus's own error, not blamed on an unrelated --set
             (["text", "--corpus", str(tmp_path / "bin"), "--set", "lr=0.01"], "error: corpus"),
             (["text", "--corpus", letters, "--set", f"corpus={tmp_path / 'one'}"],
              "corpus is given twice: by --corpus and by --set corpus=..."),
             (["text", "--corpus", ""], "--corpus '' is empty"),  # was the working directory, trained on
             # the run's own files would join the corpus: never scored nor resumed
             (["text", "--corpus", letters, "--out-dir", f"{letters}/runs/run"], "lies inside the corpus")]
    for args, message in cases:
        out = Path(args[-1]) if "--out-dir" in args else tmp_path / "run"
        args = args if "--out-dir" in args else [*args, "--out-dir", str(out)]
        assert main(["train", *args, "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
        assert not out.exists() and not (tmp_path / "letters" / "runs").exists()


def test_a_corpus_given_by_set_is_recorded_absolute_and_keeps_every_folder(tmp_path, monkeypatch):
    # A relative --set corpus=DIR was kept relative: the run could not resume or be scored elsewhere.
    # Under --corpus no folder is left out by name (site-packages is left out of the stdlib corpus only).
    from interp.experiments.sweep_grid import parse_settings
    from interp.tasks.presets import preset

    folder = _letters_corpus(tmp_path / "c")
    (folder / "site-packages").mkdir()
    (folder / "site-packages" / "kept.txt").write_text("K" * 20_000)
    monkeypatch.chdir(tmp_path)
    options = parse_settings("text", ["corpus=c"], preset("text"))
    assert options.corpus == str(folder.resolve())
    corpus = load_corpus("c")
    assert "site-packages/kept.txt" in corpus.files + corpus.held_out_files


def test_running_out_of_memory_is_one_line(tmp_path, capsys, monkeypatch):
    import interp.training.loop as loop

    def allocate(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                           "memory: you tried to allocate 51200000000 bytes.")

    monkeypatch.setattr(loop, "train", allocate)
    assert main(["train", "induction", "--out-dir", str(tmp_path / "r"), "--set", "batch_size=100000000"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("interp: error: out of memory") and "smaller batch_size" in err and len(err.splitlines()) == 1
    monkeypatch.setattr(loop, "train", lambda *a, **k: 1 / 0)  # any other error is not hidden
    with pytest.raises(ZeroDivisionError):
        main(["train", "induction", "--out-dir", str(tmp_path / "r2")])


# --- a text run -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_text_run(tmp_path_factory):
    """Four steps on a folder of letters (the default model shape, 512-token contexts)."""
    root = tmp_path_factory.mktemp("text")
    out = root / "run"
    args = ["train", "text", "--corpus", str(_letters_corpus(root / "corpus")), "--out-dir", str(out),
            "--steps", "4", "--checkpoint-every", "2", "--quiet"]
    assert main(args) == 0
    return out


@pytest.mark.slow
def test_text_detector_scores_a_text_run_and_skips_other_runs(tiny_text_run, tiny_runs, tmp_path):
    from interp import load_model
    from interp.detectors.registry import DETECTORS
    from interp.report import build_report
    from interp.scoring.batch import score_checkpoints

    info = json.loads((tiny_text_run / "run.json").read_text())
    assert info["task"]["name"] == "text" and info["task"]["corpus"].endswith("corpus")
    assert info["task"]["python"] and len(info["task"]["corpus_hash"]) == 16 and info["model_config"]["d_vocab"] == 257
    table = score_checkpoints([tiny_text_run, *tiny_runs], detectors=("heads", "text"))
    text = table[table["detector"] == "text"]
    assert set(text["metric"]) == set(DETECTORS["text"].metrics)
    assert set(text["run"]) == {str(tiny_text_run.resolve())}  # the toy runs are skipped: n_ctx, vocabulary
    first, last = (text[text["step"] == s].set_index("metric")["value"] for s in (0, 4))
    assert last["test_loss"] < first["test_loss"] - 0.01  # four steps already lower the held-out loss
    assert last["loss_late"] - last["loss_early"] == pytest.approx(last["icl_score"])
    assert "d_vocab=128" in DETECTORS["text"].applies(load_model(tiny_runs[0]))
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    bpe = HookedTransformer(HookedTransformerConfig(n_layers=1, d_model=16, n_ctx=512, d_head=8, n_heads=2,
                                                    d_vocab=50257, attn_only=True))  # GPT-2's vocabulary
    assert "d_vocab=50257 is not the byte vocabulary" in DETECTORS["text"].applies(bpe)
    narrow = HookedTransformer(HookedTransformerConfig(n_layers=1, d_model=16, n_ctx=512, d_head=8, n_heads=2,
                                                       d_vocab=257, d_vocab_out=100, attn_only=True))
    assert DETECTORS["text"].applies(narrow) == "d_vocab_out=100 does not predict every byte (the 256 byte ids)"
    page = build_report(table)
    assert "in-context learning beside the heads" in page and "data-icl-change-step" in page
    # the corpus changed since training: every checkpoint an error row naming it, not numbers on other text
    (tiny_text_run.parent / "corpus" / "f0.txt").write_text("new text\n" * 5000)
    again = score_checkpoints([tiny_text_run], detectors=("text",))
    assert (again["metric"] == "error").all() and again["error"].str.contains("not the one the run saw").all()
