"""The head table of circuits.induction: hand-built circuits, thresholds, any model, bad input."""

from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import pytest
import torch
from handbuilt_models import VOCAB, induction_circuit_model, random_model

from circuits import (
    copying_scores,
    induction_heads,
    ov_copying_scores,
    prefix_matching_scores,
    previous_token_scores,
    repeated_tokens,
)
from circuits.induction import PREFIX_MATCHING_THRESHOLD, PREVIOUS_TOKEN_THRESHOLD

TABLE_COLUMNS = [
    "layer", "head", "previous_token", "prefix_matching", "copying", "ov_copying",
    "is_previous_token", "is_induction",
]


@pytest.fixture(scope="module")
def circuit_model():
    return induction_circuit_model()


@pytest.fixture(scope="module")
def ln_model():
    return random_model(n_layers=2, n_heads=3, d_vocab=40, d_vocab_out=-1)


def _flagged(table: pd.DataFrame, column: str) -> set[tuple[int, int]]:
    return {(int(r.layer), int(r.head)) for r in table[table[column]].itertuples()}


# --- hand-built models: the detectors find exactly the known heads ---------------------------


def test_handbuilt_circuit_is_found_exactly(circuit_model):
    table = induction_heads(circuit_model)
    assert list(table.columns) == TABLE_COLUMNS
    assert table[["layer", "head"]].values.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert table["layer"].dtype == np.int64 and table["head"].dtype == np.int64
    assert _flagged(table, "is_previous_token") == {(0, 0)}
    assert _flagged(table, "is_induction") == {(1, 0)}  # L1H1 attends the same way but anti-copies
    s = table.set_index(["layer", "head"])
    assert s.loc[(0, 0), "previous_token"] == pytest.approx(1.0, abs=1e-4)
    # L0H1 attends uniformly: mean over q = 1..L-1 of 1/(q+1) with L = 2N+1 = 23
    length = 2 * (VOCAB - 1) + 1
    uniform = np.mean([1 / (q + 1) for q in range(1, length)])
    assert s.loc[(0, 1), "previous_token"] == pytest.approx(uniform, rel=1e-5)
    assert s.loc[(1, 0), "prefix_matching"] == pytest.approx(1.0, abs=1e-4)
    assert s.loc[(1, 1), "prefix_matching"] == pytest.approx(1.0, abs=1e-4)
    assert s.loc[(0, 0), "prefix_matching"] == pytest.approx(0.0, abs=1e-4)
    assert s.loc[(0, 1), "prefix_matching"] < 0.1
    assert s.loc[(1, 0), "copying"] == pytest.approx(1.0, abs=1e-4)  # raises only what it attends to
    assert s.loc[(1, 1), "copying"] == pytest.approx(0.0, abs=1e-4)  # lowers it instead
    assert s.loc[(0, 0), "copying"] == 0.0  # writes into a subspace the unembedding ignores
    assert s.loc[(0, 1), "copying"] == 0.0  # writes nothing
    assert s.loc[(1, 0), "ov_copying"] == pytest.approx(1.0, abs=1e-9)  # identity-like OV
    assert s.loc[(1, 1), "ov_copying"] == pytest.approx(-1.0, abs=1e-9)  # negated OV
    assert s.loc[(0, 0), "ov_copying"] == 0.0 and s.loc[(0, 1), "ov_copying"] == 0.0


def test_models_without_the_circuit_have_no_flags():
    # Without the previous-token head, layer 1 has nothing to match keys against.
    no_prev = induction_heads(induction_circuit_model(previous_token_head=False))
    assert not no_prev["is_previous_token"].any() and not no_prev["is_induction"].any()
    assert (no_prev["prefix_matching"] < 0.1).all()
    # A previous-token head alone is not an induction circuit.
    prev_only = induction_heads(induction_circuit_model(layer1=False))
    assert _flagged(prev_only, "is_previous_token") == {(0, 0)}
    assert not prev_only["is_induction"].any()
    # A freshly initialised model has neither.
    fresh = induction_heads(random_model(n_layers=3, n_heads=4, d_vocab=64))
    assert not fresh["is_previous_token"].any() and not fresh["is_induction"].any()
    assert (fresh["previous_token"] < PREVIOUS_TOKEN_THRESHOLD).all()
    assert (fresh["prefix_matching"] < PREFIX_MATCHING_THRESHOLD).all()


def test_thresholds_are_parameters(circuit_model):
    table = induction_heads(circuit_model, previous_token_threshold=0.1, copying_threshold=-1.0)
    assert _flagged(table, "is_previous_token") == {(0, 0), (0, 1)}
    assert _flagged(table, "is_induction") == {(1, 0), (1, 1)}
    # a string failed after the forward in torch's words; NaN flagged nothing without a word
    for name, bad in (("previous_token_threshold", "0.4"), ("prefix_matching_threshold", None),
                      ("copying_threshold", float("nan")), ("prefix_matching_threshold", True)):
        with pytest.raises(ValueError, match=f"{name} must be a finite number"):
            induction_heads(circuit_model, **{name: bad})


def test_single_scores_agree_with_the_table(ln_model):
    tokens = repeated_tokens(ln_model, n_seqs=6, half_len=9, seed=5)
    table = induction_heads(ln_model, tokens)
    for fn, column in [
        (previous_token_scores, "previous_token"),
        (prefix_matching_scores, "prefix_matching"),
        (copying_scores, "copying"),
        (ov_copying_scores, "ov_copying"),
    ]:
        frame = fn(ln_model, tokens)
        assert list(frame.columns) == ["layer", "head", "score"]
        np.testing.assert_allclose(frame["score"].to_numpy(), table[column].to_numpy(), rtol=1e-6, atol=1e-7)


def test_defaults_are_seeded_and_stable(ln_model):
    a = induction_heads(ln_model)
    b = induction_heads(ln_model)
    pd.testing.assert_frame_equal(a, b)
    c = induction_heads(ln_model, seed=1)
    assert not np.allclose(a["prefix_matching"], c["prefix_matching"])


# --- any HookedTransformer, unchanged afterwards ---------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(n_layers=1, n_heads=1),
        dict(n_layers=3, n_heads=5, d_head=4, normalization_type="RMSPre"),
        dict(positional_embedding_type="rotary", rotary_dim=8),
        dict(n_heads=4, n_key_value_heads=2),
        dict(d_vocab=60_000, d_model=16, d_head=4, n_heads=4),  # 60k x 60k floats would be 14 GB
    ],
)
def test_any_hooked_transformer(kwargs):
    model = random_model(**kwargs)
    table = induction_heads(model, n_seqs=4, half_len=6)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    assert len(table) == n_layers * n_heads
    assert table[["layer", "head"]].values.tolist() == [[l, h] for l in range(n_layers) for h in range(n_heads)]
    for column in ("previous_token", "prefix_matching", "copying"):
        assert table[column].between(0, 1).all()
    assert table["ov_copying"].between(-1, 1).all()
    assert table["is_induction"].dtype == bool


def test_model_is_left_unchanged(ln_model):
    before = {k: v.clone() for k, v in ln_model.state_dict().items()}
    cfg_before = repr(ln_model.cfg)
    threads = torch.get_num_threads()
    induction_heads(ln_model)
    previous_token_scores(ln_model)
    assert repr(ln_model.cfg) == cfg_before
    assert ln_model.cfg.use_attn_result is False
    assert not ln_model.training
    assert torch.get_num_threads() == threads
    after = ln_model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(not hp.fwd_hooks and not hp.bwd_hooks for hp in ln_model.hook_dict.values())
    # usable for autograd afterwards: no inference tensors leaked into parameters
    ln_model(repeated_tokens(ln_model, 2, 4), return_type="loss").backward()


# --- bad input --------------------------------------------------------------------------------


def test_bad_models_are_rejected():
    with pytest.raises(TypeError, match="HookedTransformer"):
        induction_heads(torch.nn.Linear(4, 4))
    with pytest.raises(TypeError, match="HookedTransformer"):
        previous_token_scores("gpt2")
    model = random_model()
    model.blocks[1].attn.hook_pattern = torch.nn.Identity()  # a model whose patterns cannot be read
    model.setup()
    for fn in (induction_heads, previous_token_scores, prefix_matching_scores, copying_scores, ov_copying_scores):
        with pytest.raises(ValueError, match=r"blocks\.1\.attn\.hook_pattern"):
            fn(model)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_models_with_nonfinite_weights_are_rejected(bad):
    from circuits import ablation_scores, attention_pattern, composition_scores

    model = random_model()
    tokens = repeated_tokens(model, n_seqs=2, half_len=5)  # the probe needs the config alone
    with torch.no_grad():
        model.blocks[1].attn.W_K[2, 3, 1] = bad
    calls = [induction_heads, previous_token_scores, prefix_matching_scores, copying_scores, ov_copying_scores,
             composition_scores, ablation_scores, lambda m: attention_pattern(m, 0, 0, tokens[:1])]
    for fn in calls:
        with pytest.raises(ValueError, match=r"NaN or infinite weights in: blocks\.1\.attn\.W_K"):
            fn(model)
    with torch.no_grad():
        model.blocks[1].attn.W_K[2, 3, 1] = 1e30  # large but finite: accepted
    assert induction_heads(model, tokens)["previous_token"].notna().all()


@pytest.mark.parametrize("path", ["fused", "hooked"])
def test_finite_weights_whose_activations_overflow_are_rejected(path):
    # Finite weights, an infinite forward: the fused softmax gives NaN, TransformerLens' zeroes
    # NaN patterns, and either would be a silent score (copying hid it as 0).
    from circuits import attention_pattern
    from circuits._fused import hooked_only

    model = random_model(normalization_type=None, attn_only=True)
    tokens = repeated_tokens(model, n_seqs=4, half_len=6)
    with torch.no_grad():
        model.blocks[0].attn.W_O.mul_(1e30)
    with hooked_only() if path == "hooked" else contextlib.nullcontext():
        for fn in (induction_heads, previous_token_scores, prefix_matching_scores, copying_scores,
                   lambda m, t: attention_pattern(m, 1, 0, t[:1])):
            with pytest.raises(ValueError, match="the forward pass is not finite: layer 1's attention"):
                fn(model, tokens)
    half = induction_circuit_model().half()  # float16 overflows sooner: there it is the hooked path
    with torch.no_grad():
        half.blocks[0].attn.W_V.mul_(300)
        half.blocks[0].attn.W_O.mul_(300)
    with pytest.raises(ValueError, match="not finite: layer 1's attention"):
        induction_heads(half)
    # values too large in the last layer alone: its pattern is sound, its z overflows (copying was 0)
    last = random_model(normalization_type=None, attn_only=True)
    with torch.no_grad():
        last.blocks[1].attn.W_V.mul_(1e30)
        last.blocks[1].attn.W_O.mul_(1e30)
    with pytest.raises(ValueError, match="not finite: layer 1's attention"):
        copying_scores(last, tokens)


def test_losses_of_a_forward_whose_attention_overflows_are_refused():
    # TransformerLens zeroes the NaN rows of an overflowing pattern and goes on: the losses were
    # finite and wrong (no head "mattered": every ablation's loss_increase 0.0).
    from circuits import ablation_scores, per_token_loss, repeated_token_loss

    model = random_model(normalization_type=None, attn_only=True)
    tokens = repeated_tokens(model, n_seqs=4, half_len=6)
    expected = repeated_token_loss(model, tokens)
    with torch.no_grad():
        model.blocks[0].attn.W_O.mul_(1e30)
    from circuits import causal_trace, induction_contrast, logit_lens, second_copy_losses

    clean, corrupted, metric = induction_contrast(model, n_seqs=4, half_len=6)
    others = (lambda m, t: logit_lens(m, t, t[:, -1]), lambda m, t: causal_trace(m, t, corrupted, t[:, -1]),
              lambda m, t: second_copy_losses(m, clean, corrupted, metric))
    for fn in (ablation_scores, repeated_token_loss, per_token_loss, *others):
        with pytest.raises(ValueError, match="the forward pass is not finite: layer 1's attention"):
            fn(model, tokens)
        assert not any(hook for point in model.hook_dict.values() for hook in point._forward_hooks.values())
    with torch.no_grad():
        model.blocks[0].attn.W_O.div_(1e30)
    assert repeated_token_loss(model, tokens) == pytest.approx(expected)


def test_copies_too_short_for_prefix_matching_are_refused():
    # N = 2: the prefix-matching diagonal q - k = N - 1 is the previous-token one (the induction
    # heads scored 0.7 previous-token and were flagged so); N = 1: the main diagonal.
    cases = [(induction_circuit_model(vocab=3), {}, "N=2"), (induction_circuit_model(n_ctx=5), {}, "N=2"),
             (induction_circuit_model(), {"half_len": 2}, "N=2"), (random_model(n_ctx=4), {}, "N=1")]
    for model, options, n in cases:
        for fn in (induction_heads, prefix_matching_scores):
            with pytest.raises(ValueError, match=f"prefix matching needs copies of at least 3 tokens, got {n}"):
                fn(model, **options)
    table = induction_heads(induction_circuit_model(), half_len=3)  # the shortest accepted copy reads apart
    assert table.loc[table.is_previous_token, ["layer", "head"]].values.tolist() == [[0, 0]]
    assert table.loc[table.is_induction, ["layer", "head"]].values.tolist() == [[1, 0]]


def test_bad_tokens_are_rejected(ln_model):
    good = repeated_tokens(ln_model, n_seqs=2, half_len=5)
    with pytest.raises(TypeError, match="integer"):
        induction_heads(ln_model, good.float())
    with pytest.raises(TypeError, match="torch.Tensor"):
        induction_heads(ln_model, good.tolist())
    with pytest.raises(ValueError, match=r"shape \(batch, pos\)"):
        induction_heads(ln_model, good[0])
    with pytest.raises(ValueError, match="n_ctx=32"):
        induction_heads(ln_model, torch.zeros(2, 33, dtype=torch.long))
    with pytest.raises(ValueError, match="n_ctx=32"):
        prefix_matching_scores(ln_model, half_len=16)
    with pytest.raises(ValueError, match="d_vocab=40"):
        copying_scores(ln_model, torch.cat([good[:, :1], good[:, 1:] + 100], dim=1))
    with pytest.raises(ValueError, match="not repeated"):
        induction_heads(ln_model, good.flip(1))
    with pytest.raises(ValueError, match="odd length"):
        prefix_matching_scores(ln_model, good[:, :-1])
    # any (batch, pos) tokens are fine for the previous-token score
    assert len(previous_token_scores(ln_model, good[:, :-1])) == 6
