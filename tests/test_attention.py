"""Previous-token and prefix-matching scores (circuits.attention), against TransformerLens's head detector."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from handbuilt_models import induction_circuit_model, random_model
from transformer_lens.head_detector import (
    compute_head_attention_similarity_score,
    get_induction_head_detection_pattern,
    get_previous_token_head_detection_pattern,
)

from circuits import attention_pattern, prefix_matching_scores, previous_token_scores, repeated_tokens


@pytest.fixture(scope="module")
def ln_model():
    return random_model(n_layers=2, n_heads=3, d_vocab=40, d_vocab_out=-1)


# --- parity with TransformerLens's head detector ---------------------------------------------


def test_parity_with_transformer_lens_head_detector(ln_model):
    """Our scores are TL's "mul" similarity scores over the same query rows.

    ``compute_head_attention_similarity_score(A, D, error_measure="mul")`` is
    ``sum(A * D) / sum(A)``, and ``sum(A)`` counts every query row (each sums to 1). So:

    - previous-token: D = TL's previous-token pattern (ones at (q, q-1)). Zeroing row 0 of A (the
      one query with no previous token) leaves L-1 rows, so TL's score is exactly our
      mean of A[q, q-1] over q = 1..L-1. Without zeroing it is ours * (L-1)/L.
    - prefix-matching: on [x0, r, r] (distinct r, x0 not in r), TL's induction pattern has ones
      exactly at (N+k, k+1) for k = 1..N -- our entries; it does not contain the two first-half
      entries (N-1, 0), (N, 1) of the raw diagonal q - k = N - 1. Zeroing the first-half rows
      0..N leaves N rows, so TL's score is exactly our mean of A[N+k, k+1].
      With ``exclude_bos=True`` TL also drops column 0 from the denominator:
      TL = ours * N / (N - attention to x0 of the second-half rows).
    Averaging per-sequence scores over the batch gives our batch score (same length rows).
    """
    tokens = repeated_tokens(ln_model, n_seqs=5, half_len=8, seed=2)
    n_seqs, length = tokens.shape
    n = (length - 1) // 2
    _, cache = ln_model.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_pattern"))
    previous = previous_token_scores(ln_model, tokens).set_index(["layer", "head"])["score"]
    prefix = prefix_matching_scores(ln_model, tokens).set_index(["layer", "head"])["score"]
    mul = dict(exclude_current_token=False, error_measure="mul")
    for layer in range(ln_model.cfg.n_layers):
        for head in range(ln_model.cfg.n_heads):
            tl_prev, tl_ind = [], []
            for b in range(n_seqs):
                seq = tokens[b : b + 1].cpu()
                attn = cache["pattern", layer][b, head]
                d_prev = get_previous_token_head_detection_pattern(seq)
                d_ind = get_induction_head_detection_pattern(seq)
                expected = torch.zeros(length, length)
                for k in range(1, n + 1):
                    expected[n + k, k + 1] = 1.0
                assert torch.equal(d_ind, expected)
                raw_diagonal = torch.diagonal(d_ind, offset=1 - n)
                assert raw_diagonal[:2].sum() == 0 and raw_diagonal[2:].sum() == n

                later_rows = attn.clone()
                later_rows[0] = 0.0
                tl_prev.append(compute_head_attention_similarity_score(later_rows, d_prev, exclude_bos=False, **mul))
                ours_prev_b = float(torch.diagonal(attn, offset=-1).mean())
                assert tl_prev[-1] == pytest.approx(ours_prev_b, rel=1e-5)
                raw = compute_head_attention_similarity_score(attn, d_prev, exclude_bos=False, **mul)
                assert raw == pytest.approx(ours_prev_b * (length - 1) / length, rel=1e-5)

                second_half = attn.clone()
                second_half[: n + 1] = 0.0
                tl_ind.append(compute_head_attention_similarity_score(second_half, d_ind, exclude_bos=False, **mul))
                ours_ind_b = float(sum(attn[n + k, k + 1] for k in range(1, n + 1)) / n)
                assert tl_ind[-1] == pytest.approx(ours_ind_b, rel=1e-5)
                no_bos = compute_head_attention_similarity_score(second_half, d_ind, exclude_bos=True, **mul)
                bos_mass = float(attn[n + 1 :, 0].sum())
                assert no_bos == pytest.approx(ours_ind_b * n / (n - bos_mass), rel=1e-5)
            assert previous[(layer, head)] == pytest.approx(np.mean(tl_prev), rel=1e-5)
            assert prefix[(layer, head)] == pytest.approx(np.mean(tl_ind), rel=1e-5)


# --- one head's whole pattern (the report's picture) -------------------------------------------


def test_attention_pattern_is_the_cached_pattern_and_shows_the_handbuilt_circuit():
    model = induction_circuit_model()
    tokens = repeated_tokens(model, n_seqs=1, half_len=8, seed=3)
    _, cache = model.run_with_cache(tokens)
    for layer, head in ((0, 0), (1, 0)):
        pattern = attention_pattern(model, layer, head, tokens[0])  # one sequence, (L,) accepted
        assert pattern.shape == (17, 17) and pattern.dtype == torch.float32
        torch.testing.assert_close(pattern, cache["pattern", layer][0, head].float())
        torch.testing.assert_close(pattern.sum(dim=1), torch.ones(17))
    previous = attention_pattern(model, 0, 0, tokens)
    assert previous.diagonal(offset=-1).min() > 0.99  # L0H0: every position attends to the one before
    induction = attention_pattern(model, 1, 0, tokens)
    assert induction.diagonal(offset=-(8 - 1))[2:].min() > 0.9  # second half: the token after the earlier copy
    # default tokens: the seeded one-sequence probe
    torch.testing.assert_close(attention_pattern(model, 1, 0, half_len=8, seed=3), induction)


def test_attention_pattern_rejects_missing_heads_and_batches():
    model = induction_circuit_model()
    with pytest.raises(ValueError, match="no head L2H0"):
        attention_pattern(model, 2, 0)
    with pytest.raises(ValueError, match="one sequence"):
        attention_pattern(model, 0, 0, repeated_tokens(model, n_seqs=2, half_len=4))


def test_the_pattern_helpers_refuse_patterns_of_another_shape():
    from circuits.attention import prefix_matching_from_pattern, previous_token_from_pattern

    n = 5
    pattern = torch.zeros(2, 1, 2 * n + 1, 2 * n + 1)
    for k in range(1, n + 1):
        pattern[:, :, n + k, k + 1] = 1.0  # pure induction
    assert prefix_matching_from_pattern(pattern, n).item() == 1.0
    # another N read the wrong diagonal without a word (0.0); N of 0 or 1 too; a longer N gave NaN
    for half_len, match in ((3, "has 2N . 1 = 7 positions, got 11"), (20, r"L >= 41"), (1, "at least 3 tokens"),
                            (0, "at least 3 tokens")):
        with pytest.raises(ValueError, match=match):
            prefix_matching_from_pattern(pattern, half_len)
    for bad in (pattern[0], pattern[:0], pattern[..., :-1], torch.zeros(1, 1, 1, 1)):
        with pytest.raises(ValueError, match=r"pattern must be \(batch >= 1, n_heads, L, L\)"):
            previous_token_from_pattern(bad)
