"""Hugging Face causal-LM directories load offline into HookedTransformers with the same logits."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import PurePosixPath

import pytest
import torch

transformers = pytest.importorskip("transformers")

from interp import CheckpointError, load_model  # noqa: E402
from interp.runs.checkpoints import ModelCache, load_cached  # noqa: E402
from interp.runs.hf_config import SUPPORTED_ARCHITECTURES  # noqa: E402

VOCAB = 100


def _configs():
    return {
        "gpt2": transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=64),
        "neox": transformers.GPTNeoXConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                                           intermediate_size=64, vocab_size=VOCAB, max_position_embeddings=64,
                                           rotary_pct=0.5),
        "neox_sequential": transformers.GPTNeoXConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                                                      intermediate_size=64, vocab_size=VOCAB,
                                                      max_position_embeddings=64, rotary_pct=0.25,
                                                      use_parallel_residual=False, tie_word_embeddings=True),
        # head size 20 at 0.33: transformers rotates int(6.6) = 6 dimensions (rounding gave 7, which crashed)
        "neox_partial": transformers.GPTNeoXConfig(num_hidden_layers=2, hidden_size=40, num_attention_heads=2,
                                                   intermediate_size=64, vocab_size=VOCAB,
                                                   max_position_embeddings=64, rotary_pct=0.33),
        "neo": transformers.GPTNeoConfig(num_layers=2, hidden_size=32, num_heads=4, vocab_size=VOCAB,
                                         max_position_embeddings=64, attention_types=[[["global", "local"], 1]],
                                         window_size=8),
        "llama": transformers.LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                                          num_key_value_heads=2, intermediate_size=64, vocab_size=VOCAB,
                                          max_position_embeddings=64, rms_norm_eps=1e-5),
        "llama_tied": transformers.LlamaConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=4,
                                               intermediate_size=48, vocab_size=VOCAB, max_position_embeddings=64,
                                               tie_word_embeddings=True),
    }


def save_hf_model(name: str, directory, seed: int = 0, **save):
    """A tiny random Hugging Face model of kind ``name`` saved to ``directory``; the model (float32, eval).

    Weights are drawn with a large scale so that the logits differ a lot between positions and a
    conversion mistake shows.
    """
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(_configs()[name]).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.3)
    model.save_pretrained(directory, **save)
    return model


def _assert_same_logits(hf_model, model):
    tokens = torch.randint(0, VOCAB, (3, 24), generator=torch.Generator().manual_seed(1))  # longer than Neo's window
    with torch.no_grad():
        expected = hf_model(tokens).logits
        actual = model(tokens)
    assert expected.abs().max() > 1.0  # not vanishing logits
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["gpt2", "neox", "neox_sequential", "neox_partial", "neo", "llama", "llama_tied"])
def test_logits_equal_the_transformers_model(tmp_path, name):
    hf_model = save_hf_model(name, tmp_path / name)
    model = load_model(tmp_path / name)
    _assert_same_logits(hf_model, model)
    assert model.cfg.original_architecture in SUPPORTED_ARCHITECTURES


def test_pytorch_bin_is_read_weights_only(tmp_path):
    hf_model = save_hf_model("gpt2", tmp_path / "bin", safe_serialization=False) if _bin_supported() else None
    if hf_model is None:  # transformers 5 always writes safetensors: write the .bin the old way
        hf_model = save_hf_model("gpt2", tmp_path / "bin")
        state = {k: v.clone() for k, v in hf_model.state_dict().items()}
        (tmp_path / "bin" / "model.safetensors").unlink()
        torch.save(state, tmp_path / "bin" / "pytorch_model.bin")
    assert (tmp_path / "bin" / "pytorch_model.bin").is_file()
    _assert_same_logits(hf_model, load_model(tmp_path / "bin"))


def _bin_supported() -> bool:
    import inspect

    return "safe_serialization" in inspect.signature(transformers.PreTrainedModel.save_pretrained).parameters


def test_sharded_safetensors(tmp_path):
    hf_model = save_hf_model("llama", tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    assert len(list((tmp_path / "sharded").glob("model-*.safetensors"))) > 1
    _assert_same_logits(hf_model, load_model(tmp_path / "sharded"))


def test_shards_of_any_name_are_in_the_fingerprint_and_a_single_file_wins(tmp_path):
    from interp.runs.layout import fingerprint

    sharded = tmp_path / "sharded"
    save_hf_model("llama", sharded, max_shard_size="20KB")
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    renamed = {shard: f"weights-{i}.safetensors" for i, shard in enumerate(sorted(set(index["weight_map"].values())))}
    for old, new in renamed.items():  # an index may name its shards anything
        (sharded / old).rename(sharded / new)
    index["weight_map"] = {key: renamed[shard] for key, shard in index["weight_map"].items()}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    before = fingerprint(sharded)
    (sharded / "training_args.bin").write_bytes(b"a Trainer's arguments")  # not weights: not in it
    (sharded / "optimizer.bin").write_bytes(b"an optimiser's state")
    assert fingerprint(sharded) == before
    other = tmp_path / "other"
    hf_other = save_hf_model("llama", other, seed=1, max_shard_size="20KB")
    shard = sorted(renamed.values())[0]
    original = sorted(renamed)[0]
    shutil.copy(other / original, sharded / shard)  # one shard's weights replaced
    assert before and fingerprint(sharded) != before
    # beside the index, a single model.safetensors is what transformers reads, and so does the loader
    shutil.copy(other / "model.safetensors.index.json", sharded / "unused.json")
    single = tmp_path / "single"
    save_hf_model("llama", single, seed=1)
    shutil.copy(single / "model.safetensors", sharded / "model.safetensors")
    _assert_same_logits(hf_other, load_model(sharded))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_weights_stored_in_another_dtype_load_as_float32(tmp_path, dtype):
    hf_model = save_hf_model("gpt2", tmp_path / "float32")
    hf_model.to(dtype).save_pretrained(tmp_path / "stored")
    model = load_model(tmp_path / "stored")
    assert model.W_E.dtype == torch.float32 and model.cfg.dtype == torch.float32
    expected = load_model(tmp_path / "float32")
    error = (model.W_E - expected.W_E).abs().max() / expected.W_E.abs().max()
    assert error < (1e-2 if dtype == torch.bfloat16 else 1e-6)  # the stored values, cast


def test_device_argument_and_caches(tmp_path):
    save_hf_model("gpt2", tmp_path / "step100")
    model = load_model(tmp_path / "step100", device="cpu")
    assert model.W_E.device.type == "cpu"
    cache = ModelCache(device=torch.device("cpu"))
    cached, step = cache.load(tmp_path / "step100")
    assert step == 100 and torch.equal(cached.W_E, model.W_E)
    one, step = load_cached(tmp_path / "step100", device="cpu")
    assert step == 100 and torch.equal(one.W_E, model.W_E)


def _error(path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_errors_are_one_line_naming_the_directory(tmp_path):
    base = tmp_path / "base"
    save_hf_model("gpt2", base)

    bad = tmp_path / "arch"
    shutil.copytree(base, bad)
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "architectures": ["BertForMaskedLM"]}))
    message = _error(bad)
    assert "unsupported architecture 'BertForMaskedLM'" in message and "LlamaForCausalLM" in message

    no_config = tmp_path / "no_config"  # the weights alone: named as such, by load and by score
    shutil.copytree(base, no_config)
    (no_config / "config.json").unlink()
    assert "model.safetensors without the config.json a Hugging Face directory has beside it" in _error(no_config)
    from interp.scoring.batch import score_checkpoints

    assert "without the config.json" in score_checkpoints(no_config, ["heads"])["error"].iloc[0]

    nothing = tmp_path / "no_weights"
    nothing.mkdir()
    shutil.copy(base / "config.json", nothing / "config.json")
    assert "no weights" in _error(nothing)

    unreadable = tmp_path / "unreadable"
    shutil.copytree(base, unreadable)
    (unreadable / "config.json").write_text("{not json")
    assert "unreadable config.json" in _error(unreadable)

    wrong = tmp_path / "wrong_shape"
    shutil.copytree(base, wrong)
    (wrong / "config.json").write_text(json.dumps({**cfg, "n_embd": 64}))
    assert "config" in _error(wrong)

    vocab = tmp_path / "vocab"
    shutil.copytree(base, vocab)
    (vocab / "config.json").write_text(json.dumps({**cfg, "vocab_size": 120}))
    assert r"transformer.wte.weight is (100, 32), config.json implies (120, 32)" in _error(vocab)

    activation = tmp_path / "activation"
    shutil.copytree(base, activation)
    (activation / "config.json").write_text(json.dumps({**cfg, "activation_function": "swishy"}))
    message = _error(activation)
    assert "activation 'swishy' is not supported (supported: " in message and "gelu_new" in message
    assert "<function" not in message
    # one with learned parameters: it was "missing: blocks.0.mlp.act_fn.alpha_n, ...", which the file holds
    (activation / "config.json").write_text(json.dumps({**cfg, "activation_function": "xielu"}))
    assert "activation 'xielu' is not supported (its parameters are learned, and the conversion does not carry " \
           "them) (supported: " in _error(activation)

    odd = tmp_path / "odd_rotary"
    save_hf_model("neox_partial", odd)
    neox = json.loads((odd / "config.json").read_text())
    neox["rotary_pct"] = 0.35  # int(7.0): an odd width (transformers 4 keeps it here, 5 in rope_parameters)
    neox.get("rope_parameters", {})["partial_rotary_factor"] = 0.35
    (odd / "config.json").write_text(json.dumps(neox))
    assert "a rotary width of 7 dimensions is not supported (only even widths)" in _error(odd)
    # the generic names transformers ignores for GPT-NeoX, disagreeing with what it reads: the file
    # gave other logits than transformers' (the generic names won here), with no word
    for edit, message in (({"rope_theta": 50.0}, "rope_theta = 50.0 differs from the 10000"),
                          ({"partial_rotary_factor": 1.0}, "partial_rotary_factor = 1.0 differs from the 0.25"),
                          ({"partial_rotary_factor": 1.0, "rotary_pct": 0.5}, "differs from the 0.5")):
        generic = tmp_path / f"generic_{len(edit)}_{next(iter(edit))}"
        save_hf_model("neox", generic)
        neox = {k: v for k, v in json.loads((generic / "config.json").read_text()).items()
                if k not in ("rope_parameters", "rope_theta", "partial_rotary_factor")}
        neox["rotary_pct"] = 0.25
        (generic / "config.json").write_text(json.dumps({**neox, **edit}))
        assert message in _error(generic), edit
    (generic / "config.json").write_text(json.dumps({**neox, "partial_rotary_factor": 0.25, "rope_theta": 10000}))
    load_model(generic)  # agreeing: taken

    layers = tmp_path / "layers"  # weights of 2 layers: one would be dropped
    shutil.copytree(base, layers)
    (layers / "config.json").write_text(json.dumps({**cfg, "n_layer": 1}))
    assert "the weights hold 2 layers, config.json says 1" in _error(layers)

    for field, value, message in (("vocab_size", 10 ** 9, r"transformer.wte.weight is \(100, 32\), config.json implies "
                                                             r"\(1000000000, 32\)"),
                                  ("n_positions", 8, "transformer.wpe.weight holds 64 positions, config.json says 8")):
        sizes = tmp_path / f"sizes_{field}"  # checked before a table of the config's size is made, never cut to fit
        shutil.copytree(base, sizes)
        (sizes / "config.json").write_text(json.dumps({**cfg, field: value}))
        assert re.search(message, _error(sizes))

    missing = tmp_path / "missing_key"
    shutil.copytree(base, missing)
    (missing / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "n_layer"}))
    assert "lacks 'n_layer'" in _error(missing)


def test_a_pickle_with_code_is_refused(tmp_path):
    directory = tmp_path / "evil"
    save_hf_model("gpt2", directory)
    (directory / "model.safetensors").unlink()
    torch.save({"x": PurePosixPath("code")}, directory / "pytorch_model.bin")  # a global weights-only refuses
    assert "weights-only" in _error(directory)


@pytest.mark.parametrize("name", ["neo", "llama"])
def test_inspect_a_directory(tmp_path, name):
    from interp.inspection import inspect_checkpoint

    save_hf_model(name, tmp_path / name)
    text = inspect_checkpoint(tmp_path / name)
    assert "heads:" in text and "prefix_matching" in text


def test_score_a_lone_directory(tmp_path):
    from interp.cli import main
    from interp.scoring.table import read_table

    save_hf_model("gpt2", tmp_path / "models" / "my-gpt2")
    out = tmp_path / "t.csv"
    assert main(["score", str(tmp_path / "models" / "my-gpt2"), "--out", str(out), "--quiet", "--detectors", "heads"]) == 0
    table = read_table(out)
    assert set(table["run"]) == {str(tmp_path / "models")} and set(table["checkpoint"]) == {"my-gpt2"}
    assert not (table["metric"] == "error").any() and len(table) == 2 * 4 * 6


def test_the_probe_starts_with_the_config_bos(tmp_path):
    """No tokenizer comes with a directory: the probes start with config.json's bos_token_id, so the
    heads the detector scores are those of the model's own BOS (not id 0, an ordinary token here)."""
    from circuits import induction_heads, repeated_tokens
    from interp.cli import main
    from interp.scoring.table import read_table

    hf_model = save_hf_model("gpt2", tmp_path / "runs" / "bos7")
    hf_model.config.bos_token_id = 7
    hf_model.save_pretrained(tmp_path / "runs" / "bos7")
    model = load_model(tmp_path / "runs" / "bos7")
    assert model.bos_token_id == 7
    probe = repeated_tokens(model)
    assert (probe[:, 0] == 7).all() and not (probe[:, 1:] == 7).any()
    out = tmp_path / "t.csv"
    assert main(["score", str(tmp_path / "runs" / "bos7"), "--out", str(out), "--quiet", "--detectors", "heads"]) == 0
    scored = read_table(out).query("metric == 'prefix_matching'")["value"].to_numpy()
    expected = induction_heads(model, probe)["prefix_matching"].to_numpy()
    at_zero = induction_heads(model, repeated_tokens(model, bos=0))["prefix_matching"].to_numpy()
    assert abs(scored - at_zero).max() > 1e-4  # another probe: other scores, far above rounding
    assert abs(scored - expected).max() < 1e-6
    # transformers' default GPT-2 BOS (50256) is outside this vocabulary: the probe keeps id 0
    save_hf_model("gpt2", tmp_path / "default")
    assert not hasattr(load_model(tmp_path / "default"), "bos_token_id")
    assert (repeated_tokens(load_model(tmp_path / "default"))[:, 0] == 0).all()


def test_a_gpt2_directory_takes_the_fast_paths_with_the_hooked_numbers(tmp_path):
    """GPT-2's ``gelu_new`` is among the plain forwards' activations: its head scores and ``eap``
    are written from the weights, and equal the model's own hooked forward's."""
    from circuits import edge_attribution, induction_heads, repeated_tokens
    from circuits._fused import fused_supported, hooked_only

    save_hf_model("gpt2", tmp_path / "gpt2")
    model = load_model(tmp_path / "gpt2")
    assert model.cfg.act_fn == "gelu_new" and fused_supported(model)
    probe = repeated_tokens(model, n_seqs=8, half_len=20)
    clean, corrupted = probe, repeated_tokens(model, n_seqs=8, half_len=20, seed=1)

    def loss(logits):
        return -logits[:, 20:-1].log_softmax(-1).gather(-1, clean[:, 21:, None]).mean()

    fast = induction_heads(model, probe), edge_attribution(model, clean, corrupted, loss, "eap")
    with hooked_only():
        hooked = induction_heads(model, probe), edge_attribution(model, clean, corrupted, loss, "eap")
    scores = ["previous_token", "prefix_matching", "copying", "ov_copying"]
    assert (fast[0][scores] - hooked[0][scores]).abs().to_numpy().max() < 1e-5
    assert fast[1]["score"].abs().max() > 1e-3
    got, expected = (torch.tensor(frame["score"].to_numpy()) for frame in (fast[1], hooked[1]))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))


def _variant(tmp_path, base, name: str, **fields):
    path = tmp_path / name
    shutil.copytree(base, path)
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, **fields}))
    return path


def test_garbled_values_and_quantized_weights_are_one_line(tmp_path):
    # Values transformers refuses are refused (never rounded, nor read as truthy); quantized codes
    # are not read as weights; sizes are checked against layer 0 before the conversion allocates.
    from safetensors.torch import load_file, save_file

    gpt2, llama = tmp_path / "gpt2", tmp_path / "llama"
    save_hf_model("gpt2", gpt2)
    save_hf_model("llama", llama)
    cases = [
        (gpt2, {"architectures": [["GPT2LMHeadModel"]]}, "unsupported architecture ['GPT2LMHeadModel']; supported"),
        (gpt2, {"n_head": 2.5}, "n_head = 2.5 is not a positive integer"),
        (gpt2, {"n_inner": -1}, "n_inner = -1 is not a positive integer"),
        (gpt2, {"n_layer": -1}, "n_layer = -1 is not a positive integer"),
        (gpt2, {"scale_attn_by_inverse_layer_idx": "no"}, "scale_attn_by_inverse_layer_idx = 'no' is not true or false"),
        (gpt2, {"tie_word_embeddings": "yes"}, "tie_word_embeddings = 'yes' is not true or false"),
        (gpt2, {"quantization_config": {"quant_method": "bitsandbytes"}}, "quantized weights (bitsandbytes) are not "
         "supported"),
        (llama, {"max_position_embeddings": -1}, "max_position_embeddings = -1 is not a positive integer"),
        (llama, {"rope_parameters": "default"}, "rope parameters 'default' are not an object"),
        # transformers 5 reads rope_scaling before rope_parameters: a linear scaling is not plain RoPE
        (llama, {"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
                 "rope_scaling": {"rope_type": "linear", "factor": 4.0}}, "rope type 'linear' is not supported"),
        (llama, {"intermediate_size": 10 ** 9}, "model.layers.0.mlp.gate_proj.weight is (64, 32), config.json implies "
         "(1000000000, 32)"),
        (llama, {"head_dim": 10 ** 8}, "model.layers.0.self_attn.q_proj.weight is (32, 32), config.json implies "
         "(400000000, 32)"),
    ]
    for i, (base, fields, expected) in enumerate(cases):
        message = _error(_variant(tmp_path, base, f"case{i}", **fields))
        assert expected in message, (fields, message)

    for dtype in (torch.int8, torch.float8_e4m3fn):  # codes without a quantization_config
        coded = _variant(tmp_path, gpt2, f"coded_{dtype}".replace("torch.", ""))
        weights = load_file(coded / "model.safetensors")
        weights["transformer.h.0.attn.c_attn.weight"] = weights["transformer.h.0.attn.c_attn.weight"].to(dtype)
        save_file(weights, coded / "model.safetensors")
        assert f"transformer.h.0.attn.c_attn.weight holds {dtype} numbers" in _error(coded)

    if _bin_supported():
        wrapped = tmp_path / "wrapped"
        shutil.copytree(gpt2, wrapped)
        state = load_file(wrapped / "model.safetensors")
        (wrapped / "model.safetensors").unlink()
        torch.save({"state_dict": state, "epoch": 3}, wrapped / "pytorch_model.bin")
        assert "'state_dict' holds a dict (a training checkpoint?" in _error(wrapped)

    empty = tmp_path / "empty_index"
    shutil.copytree(gpt2, empty)
    (empty / "model.safetensors").rename(empty / "model-00001-of-00001.safetensors")
    (empty / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": {}}))
    assert "model.safetensors.index.json lists no shards" in _error(empty)
