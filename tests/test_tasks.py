import pytest
import torch

from interp.tasks.induction import CopiedSpans, step_generator
from interp.tasks.modular import all_pairs, answers, train_mask


def _copies_are_true(tokens, repeated):
    """Every predictable token continues an earlier occurrence of its predecessor."""
    for seq, rep in zip(tokens.tolist(), repeated.tolist()):
        for j in range(2, len(seq)):
            if rep[j]:
                assert any(seq[i] == seq[j - 1] and seq[i + 1] == seq[j] for i in range(1, j - 1))


def test_copied_spans_copy_earlier_spans_of_every_length():
    data = CopiedSpans(d_vocab=128, n_ctx=64)
    tokens, repeated = data.sample(400, step_generator(0, 7))
    assert tokens.shape == (400, 64) and (tokens[:, 0] == 0).all() and (tokens[:, 1:] != 0).all()
    assert (tokens < 128).all()
    _copies_are_true(tokens, repeated)
    # run lengths of predictable tokens: copies of 2 tokens (1 predictable) up to 31 (30), and
    # repeats at short and long distances
    runs = []
    for rep in repeated.tolist():
        n = 0
        for r in rep + [False]:
            if r:
                n += 1
            elif n:
                runs.append(n)
                n = 0
    assert min(runs) == 1 and max(runs) >= 25
    assert 0.3 < repeated.float().mean().item() < 0.6


def test_fresh_tokens_never_recur_by_chance():
    tokens, repeated = CopiedSpans(d_vocab=128, n_ctx=64, copy_prob=0.0).sample(50, step_generator(1, 0))
    assert not repeated.any()
    for seq in tokens.tolist():
        assert len(set(seq)) == len(seq)  # 63 fresh ids out of 127, all distinct
    # a context longer than the vocabulary cycles through it instead of failing
    tokens, _ = CopiedSpans(d_vocab=10, n_ctx=40, copy_prob=0.0).sample(3, step_generator(1, 0))
    assert tokens.shape == (3, 40) and (tokens[:, 1:] != 0).all() and (tokens < 10).all()


def test_batches_are_a_function_of_seed_and_step():
    data = CopiedSpans()
    a = data.sample(8, step_generator(1, 5))[0]
    assert torch.equal(a, data.sample(8, step_generator(1, 5))[0])
    assert not torch.equal(a, data.sample(8, step_generator(1, 6))[0])
    assert not torch.equal(a, data.sample(8, step_generator(2, 5))[0])


def test_bad_data_options_are_rejected():
    with pytest.raises(ValueError, match="min_span"):
        CopiedSpans(n_ctx=20, min_span=15)
    with pytest.raises(ValueError, match="copy_prob"):
        CopiedSpans(copy_prob=1.0)


def test_modular_pairs_and_split():
    p = 7
    x, y = all_pairs(p), answers(p)
    assert x.shape == (49, 3) and (x[:, 2] == p).all()
    assert torch.equal(y, (x[:, 0] + x[:, 1]) % p)
    mask = train_mask(113, 0.3, seed=0)
    assert mask.sum().item() == round(0.3 * 113**2)
    assert torch.equal(mask, train_mask(113, 0.3, seed=0))
    assert not torch.equal(mask, train_mask(113, 0.3, seed=1))
