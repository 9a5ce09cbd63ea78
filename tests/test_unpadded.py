"""Every detector reads its tokens as given: a model whose tokenizer pads on the left (pad token =
BOS = 0, the probes' first token) scores the same token tensors exactly as it does without a
tokenizer. Without the all-ones mask TransformerLens took the leading 0s for padding, hid them and
shifted the positions (``circuits._checks.unpadded``). The head scores and edge attribution have
their own tests (test_fused.py, test_edge_attribution.py)."""

from __future__ import annotations

import numpy as np
import torch

from circuits import (ablation_scores, causal_trace, fit_linear_probe, in_context_learning_score, induction_contrast,
                      logit_lens, per_token_loss, probe_score, repeated_token_loss, repeated_tokens,
                      second_copy_losses)
from handbuilt_models import random_model, set_left_padding_tokenizer


def _scores(model, tokens, contrast) -> dict[str, np.ndarray]:
    clean, corrupted, metric = contrast
    targets = tokens[:, 3]
    corrupted_tokens = tokens.roll(1, 0)
    probe = fit_linear_probe(model, tokens, targets % 2, positions=4)
    return {
        "repeated_token_loss": np.array(repeated_token_loss(model, tokens)),
        "ablation_scores": ablation_scores(model, tokens).loss_increase.to_numpy(),
        "per_token_loss": per_token_loss(model, tokens, ablate=[(0, 1)]).numpy(),
        "in_context_learning_score": np.array(in_context_learning_score(model, tokens, 2, 12)),
        "second_copy_losses": np.array(second_copy_losses(model, clean, corrupted, metric)),
        "logit_lens": logit_lens(model, tokens, targets, positions=[1, 5]).mean_reciprocal_rank().numpy(),
        "causal_trace": causal_trace(model, tokens, corrupted_tokens, targets, read_position=5,
                                     positions=[0, 2, 5]).patched.numpy(),
        "probe_score": probe_score(model, probe, tokens, targets % 2, positions=4).numpy(),
    }


def test_a_left_padding_tokenizer_changes_no_score():
    model = random_model(seed=0)
    tokens = repeated_tokens(model, n_seqs=8, half_len=9)
    assert bool((tokens[:, 0] == 0).all())  # the probes start with the pad token
    contrast = induction_contrast(model, 8, half_len=9)
    assert bool((contrast[0][:, 0] == 0).all())
    before = _scores(model, tokens, contrast)
    set_left_padding_tokenizer(model)
    after = _scores(model, tokens, contrast)
    for name, value in before.items():
        np.testing.assert_allclose(after[name], value, rtol=1e-6, atol=1e-7, err_msg=name)


def test_the_tokenizer_would_have_changed_them():
    # The check above can fail: without the mask, the same tokenizer moves a loss.
    model = random_model(seed=0)
    tokens = repeated_tokens(model, n_seqs=8, half_len=9)
    with torch.no_grad():
        plain = model(tokens, return_type="loss")
        set_left_padding_tokenizer(model)
        assert abs(float(model(tokens, return_type="loss")) - float(plain)) > 1e-3
