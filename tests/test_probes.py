"""The repeated-random-token probe [x0, r, r] (docs/scores.md, "The repeated-token probe")."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from handbuilt_models import random_model

from circuits import repeated_tokens
from interp.tasks.models import INDUCTION_BOS, build_model, induction_config


@pytest.fixture(scope="module")
def induction_model():
    return build_model(induction_config(), seed=0)


def test_layout_bos_and_without_replacement(induction_model):
    tokens = repeated_tokens(induction_model, n_seqs=16, half_len=20, seed=3)
    assert tokens.shape == (16, 41)
    assert tokens.dtype == torch.long
    assert (tokens[:, 0] == INDUCTION_BOS).all()
    first, second = tokens[:, 1:21], tokens[:, 21:]
    assert torch.equal(first, second)
    for row in first:
        assert len(set(row.tolist())) == 20  # drawn without replacement: one earlier copy each
    assert int(first.min()) >= 1 and int(first.max()) < 128  # never x0, always in the vocabulary
    assert len(set(map(tuple, first.tolist()))) == 16  # rows differ


def test_seeded_and_identical_between_calls(induction_model):
    a = repeated_tokens(induction_model, n_seqs=8, half_len=10, seed=1)
    b = repeated_tokens(induction_model, n_seqs=8, half_len=10, seed=1)
    c = repeated_tokens(induction_model, n_seqs=8, half_len=10, seed=2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    torch.manual_seed(0)
    d = repeated_tokens(induction_model, n_seqs=8, half_len=10, seed=1)
    assert torch.equal(a, d)  # the global RNG plays no part


def test_default_half_len_fits_the_context(induction_model):
    tokens = repeated_tokens(induction_model)
    assert tokens.shape == (64, 63)  # n_ctx 64: N = min(32, (64 - 1) // 2) = 31
    small = random_model(n_ctx=9, d_vocab=50)
    assert repeated_tokens(small, n_seqs=2).shape == (2, 9)


def test_tokenizer_bos_and_special_ids_are_respected():
    model = random_model(d_vocab=20)
    model.tokenizer = SimpleNamespace(bos_token_id=7, all_special_ids=[7, 8, 9])
    tokens = repeated_tokens(model, n_seqs=32, half_len=10, seed=0)
    assert (tokens[:, 0] == 7).all()
    halves = set(tokens[:, 1:].flatten().tolist())
    assert halves.isdisjoint({7, 8, 9})
    assert halves <= set(range(20))


def test_only_predictable_ids_when_d_vocab_out_is_smaller():
    model = random_model(d_vocab=30, d_vocab_out=12)
    tokens = repeated_tokens(model, n_seqs=16, half_len=11, seed=0)
    assert int(tokens.max()) < 12
    assert all(len(set(row.tolist())) == 11 for row in tokens[:, 1:12])  # all 11 ordinary ids


def test_with_replacement_only_when_the_vocabulary_is_short():
    model = random_model(d_vocab=6, n_ctx=32)
    tokens = repeated_tokens(model, n_seqs=4, half_len=12, seed=0)
    assert tokens.shape == (4, 25)
    assert torch.equal(tokens[:, 1:13], tokens[:, 13:])
    assert int(tokens[:, 1:].min()) >= 1 and int(tokens.max()) < 6


def test_clear_errors(induction_model):
    with pytest.raises(ValueError, match="n_ctx=64"):
        repeated_tokens(induction_model, n_seqs=2, half_len=32)
    with pytest.raises(ValueError, match="vocabulary too small"):
        repeated_tokens(random_model(d_vocab=2), n_seqs=2, half_len=1)
    with pytest.raises(ValueError, match="n_seqs"):
        repeated_tokens(induction_model, n_seqs=0, half_len=4)
    with pytest.raises(ValueError, match="half_len"):
        repeated_tokens(induction_model, n_seqs=2, half_len=0)
    with pytest.raises(TypeError, match="HookedTransformer"):
        repeated_tokens(torch.nn.Linear(2, 2), n_seqs=2, half_len=4)
    # ids 1.7 were read as 1; a bos or ids of strings gave Python's and torch's words, naming neither
    for bad in ([1.7, 2.2, 3.9], ["a"], [True, False]):
        with pytest.raises(ValueError, match="ids must be integer token ids"):
            repeated_tokens(induction_model, n_seqs=2, half_len=2, ids=bad)
    for bad in ("a", 1.0, True, 128, -1):
        with pytest.raises(ValueError, match=r"bos must be a token id in the vocabulary \[0, 128\)"):
            repeated_tokens(induction_model, n_seqs=2, half_len=4, bos=bad)
    assert (repeated_tokens(induction_model, n_seqs=2, half_len=2, bos=np.int64(5), ids=np.arange(10, 20))[:, 0] == 5).all()


def test_arguments_of_any_integer_kind_and_their_errors(induction_model):
    import numpy as np

    from circuits import attention_pattern, composition_scores, copying_scores, prefix_matching_scores

    assert torch.equal(repeated_tokens(induction_model, np.int64(2), np.int32(5), np.int64(3)),
                       repeated_tokens(induction_model, 2, 5, 3))
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*63\)"):
        repeated_tokens(induction_model, 2, 5, seed=2 ** 70)
    tokens = repeated_tokens(induction_model, 2, 5)
    with pytest.raises(ValueError, match="half_len=4 does not match the tokens given, whose halves are N=5 long"):
        prefix_matching_scores(induction_model, tokens, half_len=4)
    assert len(prefix_matching_scores(induction_model, tokens, half_len=5)) == 8  # the same N: accepted
    with pytest.raises(ValueError, match="layer and head must be ints"):
        attention_pattern(induction_model, 0, 0.5)
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="chunk_elements must be a positive int"):
            copying_scores(induction_model, tokens, chunk_elements=bad)
    assert len(composition_scores(induction_model, n_baseline=np.int64(4))) > 0
