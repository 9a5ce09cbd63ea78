"""Copying and OV-copying scores (circuits.copying), against dense references computed the slow way."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from handbuilt_models import random_model

from circuits import copying_scores, induction_heads, ov_copying_scores, repeated_tokens
from circuits._fused import hooked_only


@torch.no_grad()
def _reference_copying(model, tokens: torch.Tensor) -> np.ndarray:
    """The definition of docs/scores.md, literally: full cache, z @ W_O through ln_final, full logits."""
    n = (tokens.shape[1] - 1) // 2
    _, cache = model.run_with_cache(tokens)
    w_u = model.W_U.double()
    vocab = w_u.shape[1]
    out = np.zeros((model.cfg.n_layers, model.cfg.n_heads))
    for layer in range(model.cfg.n_layers):
        z = cache["z", layer].double()  # (batch, pos, head, d_head)
        result = torch.einsum("bphd,hdm->bphm", z, model.blocks[layer].attn.W_O.double())
        if model.cfg.normalization_type in ("LN", "LNPre"):
            result = result - result.mean(-1, keepdim=True)
        if model.cfg.normalization_type is not None:
            result = result / cache["ln_final.hook_scale"].double()[:, :, None, :]  # real final-norm scale
        if model.cfg.normalization_type in ("LN", "RMS"):
            result = result * model.ln_final.w.double()
        logits = result @ w_u  # (batch, pos, head, vocab)
        logits = logits - logits.mean(-1, keepdim=True)
        w = logits.relu()
        w = w / w.sum(-1, keepdim=True)
        pattern = cache["pattern", layer].double()  # (batch, head, q, k)
        for head in range(model.cfg.n_heads):
            scores = []
            for b in range(tokens.shape[0]):
                for q in range(n + 1, 2 * n + 1):
                    stop = tokens.shape[1] if model.cfg.attention_dir == "bidirectional" else q + 1  # keys attended
                    keys = tokens[b, :stop]
                    wk = torch.where(keys < vocab, w[b, q, head, keys.clamp(max=vocab - 1)], 0.0)
                    scores.append(float((pattern[b, head, q, :stop] * wk).sum()))
            out[layer, head] = np.mean(scores)
    return out


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(normalization_type="LN"),
        dict(normalization_type="RMS", n_heads=2, d_head=16),
        dict(normalization_type=None, attn_only=True, n_layers=3),
        dict(normalization_type="LNPre", d_vocab=50, d_vocab_out=30),
        dict(attention_dir="bidirectional"),  # every key attended, later ones too (docs/scores.md)
    ],
)
def test_copying_matches_dense_reference(kwargs, monkeypatch):
    model = random_model(**kwargs)
    with torch.no_grad():  # make writes and attention less uniform than the default init
        for block in model.blocks:
            block.attn.W_Q.mul_(8.0)
            block.attn.W_O.mul_(4.0)
    tokens = repeated_tokens(model, n_seqs=3, half_len=7, seed=4)
    if model.cfg.d_vocab_out < model.cfg.d_vocab:  # some key ids without an output logit
        tokens = tokens.clone()
        tokens[:, 0] = 45
        tokens[0, [3, 10]] = 40
    reference = _reference_copying(model, tokens)
    default = copying_scores(model, tokens)["score"].to_numpy().reshape(reference.shape)
    one_row = copying_scores(model, tokens, chunk_elements=1)["score"].to_numpy().reshape(reference.shape)
    # one head per task, on single-threaded worker threads (as for large layers on a multi-core CPU)
    monkeypatch.setattr("circuits.copying._SMALL_LAYER_ELEMENTS", 0)
    monkeypatch.setattr("circuits._parallel.SMALL_WORKLOAD", 0)
    threads = torch.get_num_threads()
    per_head = copying_scores(model, tokens, chunk_elements=3 * model.cfg.d_vocab)["score"].to_numpy()
    assert torch.get_num_threads() == threads
    np.testing.assert_allclose(default, reference, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(one_row, reference, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(per_head.reshape(reference.shape), reference, rtol=1e-4, atol=1e-6)


def test_ov_copying_matches_dense_eigenvalues():
    model = random_model(n_layers=2, n_heads=3, d_vocab=40, d_model=32, d_head=8)
    with torch.no_grad():
        dense = torch.einsum(
            "vm,lhmd,lhdn,nw->lhvw",
            model.W_E.double(), model.W_V.double(), model.W_O.double(), model.W_U.double(),
        )
    eig = torch.linalg.eigvals(dense)  # (layer, head, d_vocab): only feasible for a tiny vocabulary
    expected = (eig.real.sum(-1) / eig.abs().sum(-1)).numpy().reshape(-1)
    ours = ov_copying_scores(model)["score"].to_numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)  # W_U W_E is taken in float32
    assert ((ours >= -1) & (ours <= 1)).all()
    # The score ignores the scale of the weights; finite ones whose W_U W_E overflows float32 scored
    # 0 for every head (NaN eigenvalues taken for none): it is taken in float64 then.
    with torch.no_grad():
        model.embed.W_E.mul_(3e19)
        model.unembed.W_U.mul_(3e19)
    np.testing.assert_allclose(ov_copying_scores(model)["score"].to_numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(normalization_type="LN"),  # LayerNorm, GELU MLPs, learned positions: the fused path
        dict(normalization_type="LN", positional_embedding_type="rotary", rotary_dim=4, parallel_attn_mlp=True),
    ],
    ids=["ln-gelu-mlp", "rotary-parallel"],
)
@pytest.mark.parametrize("chunk_elements", [None, 7, 64])
def test_vocabulary_tiles_equal_the_full_logits(kwargs, chunk_elements, monkeypatch):
    """The large-layer path (key logits gathered, ``sum relu(l)`` over vocabulary tiles) gives the
    definition's numbers on standard shapes: equal to the full-logit path and the dense reference,
    in one tile or many (7: one id per tile, rows cut; 64: several ids and rows per tile)."""
    model = random_model(n_layers=2, n_heads=4, d_model=32, d_head=8, d_vocab=61, **kwargs)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.W_Q.mul_(8.0)
            block.attn.W_O.mul_(4.0)
    tokens = repeated_tokens(model, n_seqs=3, half_len=9, seed=2)
    reference = _reference_copying(model, tokens).reshape(-1)
    full = copying_scores(model, tokens)["score"].to_numpy()  # small layers: full logits in one chunk
    table = induction_heads(model, tokens)
    with hooked_only():
        hooked_table = induction_heads(model, tokens)
    monkeypatch.setattr("circuits.copying._SMALL_LAYER_ELEMENTS", 0)
    tiled = copying_scores(model, tokens, chunk_elements=chunk_elements)["score"].to_numpy()
    tiled_table = induction_heads(model, tokens, chunk_elements=chunk_elements)
    np.testing.assert_allclose(full, reference, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(tiled, reference, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(tiled, full, rtol=1e-5, atol=1e-7)
    for other in (hooked_table, tiled_table):
        for column in ("previous_token", "prefix_matching", "copying", "ov_copying"):
            np.testing.assert_allclose(other[column], table[column], rtol=1e-4, atol=1e-6)


def _copying_model(seed: int, d_vocab: int, d_vocab_out: int = -1):
    """A random model whose heads 0 copy: they attend to keys like the query's token (the earlier
    copy, in the probe's second half) and write them back (tied unembedding, QK and OV identities
    on their 16 dimensions); their copying scores stand above the other heads'."""
    model = random_model(n_layers=2, n_heads=4, d_model=32, d_head=16, d_vocab=d_vocab, d_vocab_out=d_vocab_out,
                         n_ctx=64, seed=seed)
    with torch.no_grad():
        vocab = model.W_U.shape[1]
        model.W_U.copy_(model.W_E[:vocab].T)
        for block in model.blocks:
            for weight in (block.attn.W_Q, block.attn.W_K, block.attn.W_V):
                weight[0] = 3 * torch.eye(32)[:, :16]
            block.attn.W_O[0] = 3 * torch.eye(32)[:16, :]
    return model


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampled_denominator_is_close_to_the_whole_vocabulary(seed):
    """On a vocabulary more than 4x the sample, the estimate stays within 2 % of the exact score
    for every head, on probes of two lengths, and flags the same heads."""
    model = _copying_model(seed, d_vocab=6000)
    for half_len, n_seqs in ((20, 8), (31, 3)):
        tokens = repeated_tokens(model, n_seqs=n_seqs, half_len=half_len, seed=seed + 5)
        exact = induction_heads(model, tokens, vocab_sample=None)
        sampled = induction_heads(model, tokens, vocab_sample=1024)
        assert not np.allclose(sampled["copying"], exact["copying"], rtol=1e-7, atol=0)  # it did sample
        np.testing.assert_allclose(sampled["copying"], exact["copying"], rtol=0.02)
        assert (sampled["is_induction"] == exact["is_induction"]).all()
    planted = exact["head"] == 0
    assert exact["copying"][planted].min() > exact["copying"][~planted].max()  # the planted heads copy


def test_sampled_estimate_is_exact_when_the_sample_is_the_whole_vocabulary(monkeypatch):
    """The split over the sequence's ids and the rest, and the moment rescaling, are exact
    algebra: with every id in the sample the estimate equals the definition (key ids without an
    output logit included)."""
    model = _copying_model(3, d_vocab=70, d_vocab_out=60)
    tokens = repeated_tokens(model, n_seqs=4, half_len=12, seed=1)
    exact = copying_scores(model, tokens, vocab_sample=None)["score"].to_numpy()
    monkeypatch.setattr("circuits.copying.SAMPLE_SAVING", 0)
    whole = copying_scores(model, tokens, vocab_sample=60)["score"].to_numpy()
    np.testing.assert_allclose(whole, exact, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(exact, _reference_copying(model, tokens).reshape(-1), rtol=1e-4, atol=1e-7)


def test_sampled_scores_equal_on_the_fused_and_hooked_paths():
    model = _copying_model(4, d_vocab=6000)
    tokens = repeated_tokens(model, n_seqs=4, half_len=15, seed=0)
    table = induction_heads(model, tokens, vocab_sample=1024)
    with hooked_only():
        hooked = induction_heads(model, tokens, vocab_sample=1024)
    np.testing.assert_allclose(hooked["copying"], table["copying"], rtol=1e-5)


def test_small_vocabularies_are_read_whole_and_bad_samples_refused():
    from circuits.copying import DEFAULT_VOCAB_SAMPLE, SAMPLE_SAVING, LayerLogitMaps

    assert LayerLogitMaps(_copying_model(0, d_vocab=SAMPLE_SAVING * DEFAULT_VOCAB_SAMPLE)).sample is None
    assert LayerLogitMaps(_copying_model(0, d_vocab=6000), vocab_sample=1024).sample.numel() == 1024
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="vocab_sample"):
            copying_scores(_copying_model(0, d_vocab=50), vocab_sample=bad)
