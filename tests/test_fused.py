"""The fused head-score path equals the hooked one (circuits._fused, circuits._hooks.layer_means)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from circuits import attention_pattern, copying_scores, induction_heads, prefix_matching_scores, repeated_tokens
from circuits import _hooks
from circuits._fused import fused_supported, hooked_only
from circuits.architecture import PLAIN_ACTIVATIONS
from interp.runs.checkpoints import load_model
from interp.runs.layout import list_checkpoints
from tests.handbuilt_models import induction_circuit_model, random_model, set_left_padding_tokenizer

SCORES = ["previous_token", "prefix_matching", "copying", "ov_copying"]


def _randomise(model, seed: int = 0, scale: float = 0.3):
    """Every parameter random (TransformerLens initialises biases and LayerNorms to constants)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * scale)
    return model


def _both_paths(model, tokens) -> tuple[pd.DataFrame, pd.DataFrame]:
    assert fused_supported(model)
    fused = induction_heads(model, tokens)
    with hooked_only():
        assert not fused_supported(model)
        hooked = induction_heads(model, tokens)
    return fused, hooked


def _max_difference(a: pd.DataFrame, b: pd.DataFrame) -> float:
    assert a[["layer", "head"]].equals(b[["layer", "head"]])
    return float((a[SCORES] - b[SCORES]).abs().to_numpy().max())


ARCHITECTURES = {
    "attn-only, no norm": dict(attn_only=True, normalization_type=None),
    "attn-only, LN": dict(attn_only=True, normalization_type="LN"),
    "gelu MLP, LN": dict(normalization_type="LN"),
    "relu MLP, no norm": dict(normalization_type=None, act_fn="relu"),
    "gelu_new MLP, LN (GPT-2's)": dict(normalization_type="LN", act_fn="gelu_new"),
    "silu MLP, no norm": dict(normalization_type=None, act_fn="silu"),
    "3 layers, 5 heads, d_vocab_out < d_vocab": dict(n_layers=3, n_heads=5, d_head=6, d_vocab_out=40),
}


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_fused_equals_hooked_on_random_models(name, monkeypatch):
    options = dict(ARCHITECTURES[name])
    act = options.pop("act_fn", None)
    model = random_model(seed=1, **options)
    if act:
        model.cfg.act_fn = act
        for block in model.blocks:
            block.mlp.act_fn = PLAIN_ACTIVATIONS[act]
    _randomise(model, seed=2)
    tokens = repeated_tokens(model, n_seqs=16, half_len=12, seed=3)
    fused, hooked = _both_paths(model, tokens)
    assert _max_difference(fused, hooked) < 1e-5
    monkeypatch.setattr(_hooks, "CACHE_CHUNK_ELEMENTS", 5 * model.cfg.n_heads * 25 * 25)  # chunks of 5, 5, 5, 1
    assert _max_difference(induction_heads(model, tokens), hooked) < 1e-5
    assert fused[SCORES].std().min() > 0  # the scores differ between heads: nothing trivially equal


@pytest.mark.parametrize("half_len, positions, options", [
    (15, 32, dict(n_ctx=72, attn_only=True, normalization_type=None)),
    (31, 64, dict(n_ctx=72, attn_only=True, normalization_type=None)),
    (14, 29, dict(n_ctx=72, attn_only=True, normalization_type=None)),
    (32, 65, dict(n_ctx=72, attn_only=True, normalization_type=None)),
    (15, 32, dict(n_ctx=31, normalization_type="LN")),  # the padding position lies past n_ctx
    (31, 64, dict(n_ctx=63, normalization_type="LN", n_layers=3, d_vocab=50, d_vocab_out=40)),
    (15, 32, dict(n_ctx=31, attn_only=True, normalization_type=None, d_vocab=20, dtype=torch.float64)),
])
def test_padded_probe_changes_nothing(half_len, positions, options):
    """Probes of 31 and 63 tokens run as 32 and 64 positions (padded at the end); 29 and 65 do not."""
    from circuits._fused import padded_length

    length = 2 * half_len + 1
    assert padded_length(length) == positions
    model = _randomise(random_model(seed=8, **options), seed=9)
    tokens = repeated_tokens(model, n_seqs=6, half_len=half_len, seed=10)
    fused, hooked = _both_paths(model, tokens)
    assert _max_difference(fused, hooked) < 1e-5
    one = tokens[:1]
    pattern = attention_pattern(model, 1, 2, one)
    with hooked_only():
        expected = attention_pattern(model, 1, 2, one)
    assert pattern.shape == (length, length) and pattern.is_contiguous()
    assert (pattern - expected).abs().max() < 1e-6
    assert torch.allclose(pattern.sum(dim=-1), torch.ones(length), atol=1e-5)  # no weight on a padding key


def test_fused_equals_hooked_in_float64():
    model = _randomise(random_model(seed=4).double(), seed=5)
    tokens = repeated_tokens(model, n_seqs=8, half_len=10)
    fused, hooked = _both_paths(model, tokens)
    assert _max_difference(fused, hooked) < 1e-10


def test_fused_equals_hooked_on_the_handbuilt_circuit():
    model = induction_circuit_model()
    tokens = repeated_tokens(model, n_seqs=32, half_len=10, seed=1)
    fused, hooked = _both_paths(model, tokens)
    assert _max_difference(fused, hooked) < 1e-5
    induction = fused.set_index(["layer", "head"]).loc[(1, 0)]
    assert induction["prefix_matching"] > 0.95 and bool(induction["is_induction"])


def test_fused_equals_hooked_on_trained_checkpoints(tiny_runs):
    run = tiny_runs[0]
    for _, path in list_checkpoints(run)[::3]:
        model = load_model(path)
        tokens = repeated_tokens(model)
        fused, hooked = _both_paths(model, tokens)
        assert _max_difference(fused, hooked) < 1e-5
        pattern = attention_pattern(model, 1, 0)
        with hooked_only():
            assert (pattern - attention_pattern(model, 1, 0)).abs().max() < 1e-6


@pytest.mark.slow
def test_fused_equals_hooked_on_the_default_trained_run(induction_run):
    model = load_model(list_checkpoints(induction_run)[-1][1])
    fused, hooked = _both_paths(model, repeated_tokens(model))
    assert _max_difference(fused, hooked) < 1e-5
    assert fused["prefix_matching"].max() > 0.8  # a real induction head, scored the same both ways


def test_chunks_and_threads_do_not_change_the_scores(monkeypatch):
    model = _randomise(random_model(seed=6), seed=7)
    tokens = repeated_tokens(model, n_seqs=12, half_len=12)
    whole = induction_heads(model, tokens)
    monkeypatch.setattr(_hooks, "CHUNK_PATTERN_ELEMENTS", 3 * 25 * 25 * 5)  # 3 parts of 4 sequences,
    monkeypatch.setattr(_hooks, "CACHE_CHUNK_ELEMENTS", 3 * 25 * 25 * 3)  # each in chunks of 3 and 1
    parts = []
    run_part = _hooks.fused_attention_layers

    def recorded(model, tokens, *args, **kwargs):
        parts.append((len(tokens), kwargs["chunk_seqs"]))
        return run_part(model, tokens, *args, **kwargs)

    monkeypatch.setattr(_hooks, "fused_attention_layers", recorded)
    chunked = induction_heads(model, tokens)
    assert parts == [(4, 3)] * 3  # the whole pass runs on bounded parts of the batch, not only its attention
    assert _max_difference(whole, chunked) < 1e-6
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = induction_heads(model, tokens)
        torch.set_num_threads(2)
        parallel = induction_heads(model, tokens)
    finally:
        torch.set_num_threads(previous)
    assert serial[SCORES].equals(parallel[SCORES])  # same chunks, same order: bit for bit


def _uniform_attention(pattern: torch.Tensor, hook) -> torch.Tensor:
    causal = torch.ones_like(pattern).tril()
    return causal / causal.sum(dim=-1, keepdim=True)


def test_models_outside_the_fused_path_take_the_hooked_forward():
    rotary = random_model(seed=8, positional_embedding_type="rotary", rotary_dim=8)
    assert not fused_supported(rotary)
    tokens = repeated_tokens(rotary, n_seqs=4, half_len=8)
    assert prefix_matching_scores(rotary, tokens)["score"].between(0, 1).all()

    # Bidirectional attention: queries see later keys, which the fused path's causal mask would hide.
    causal = _randomise(random_model(seed=9), seed=3)
    both_ways = random_model(seed=9, attention_dir="bidirectional")
    both_ways.load_state_dict(causal.state_dict())
    assert fused_supported(causal) and not fused_supported(both_ways)
    tokens = repeated_tokens(both_ways, n_seqs=6, half_len=7)
    assert _max_difference(induction_heads(both_ways, tokens), induction_heads(causal, tokens)) > 0.05

    model = induction_circuit_model()
    tokens = repeated_tokens(model, n_seqs=8, half_len=10)
    clean = copying_scores(model, tokens)
    # A permanent hook changes what the heads see; only the hooked forward runs it.
    model.blocks[1].attn.hook_pattern.add_hook(_uniform_attention)
    try:
        assert not fused_supported(model)
        uniform = copying_scores(model, tokens)
    finally:
        model.reset_hooks(including_permanent=True)
    assert fused_supported(model)
    assert uniform.loc[2, "score"] < clean.loc[2, "score"] - 0.3  # L1H0 no longer attends to its copy


def _zero_output(module, inputs, output):
    return torch.zeros_like(output)


def _kwargs_pre_hook(module, args, kwargs):
    return args, kwargs


@pytest.mark.parametrize("where", ["module forward hook", "pre-hook on a hook point", "kwargs pre-hook", "global hook"])
def test_any_hook_sends_the_model_to_the_hooked_forward(where):
    model = _randomise(random_model(seed=4), seed=5)
    tokens = repeated_tokens(model, n_seqs=4, half_len=7)
    clean = induction_heads(model, tokens)
    if where == "module forward hook":  # plain torch hooks on modules, as steering code adds them
        handle = model.blocks[0].mlp.register_forward_hook(_zero_output)
    elif where == "pre-hook on a hook point":
        handle = model.blocks[1].hook_resid_pre.register_forward_pre_hook(lambda module, args: (args[0] * 0,))
    elif where == "kwargs pre-hook":
        handle = model.blocks[0].attn.register_forward_pre_hook(_kwargs_pre_hook, with_kwargs=True)
    else:
        handle = torch.nn.modules.module.register_module_forward_hook(
            lambda module, args, output: _zero_output(module, args, output) if module is model.blocks[0].mlp else None)
    try:
        assert not fused_supported(model)
        hooked = induction_heads(model, tokens)
    finally:
        handle.remove()
    assert fused_supported(model)
    if where == "kwargs pre-hook":  # changes nothing: the same scores, by the hooked forward
        assert _max_difference(hooked, clean) < 1e-5
    else:
        assert _max_difference(hooked, clean) > 1e-3  # the hook's change reached the scores


def test_a_left_padding_tokenizer_does_not_hide_the_probe_bos():
    """TransformerLens takes leading pad tokens for padding when its tokenizer pads on the left;
    the probe's x0 (BOS, here also the pad token) is not padding, on either path."""
    model = _randomise(random_model(seed=6), seed=7)
    model.cfg.default_prepend_bos = False
    set_left_padding_tokenizer(model)
    tokens = repeated_tokens(model, n_seqs=4, half_len=7)
    assert bool((tokens[:, 0] == 0).all())  # x0 is the pad token
    fused, hooked = _both_paths(model, tokens)
    assert _max_difference(fused, hooked) < 1e-5
