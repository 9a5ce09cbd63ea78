"""Zero-ablation of single heads: loss increase on the repeated half of the probe."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from handbuilt_models import induction_circuit_model, random_model

from circuits import ablation_scores, repeated_tokens


def test_handbuilt_ablation():
    model = induction_circuit_model()
    table = ablation_scores(model)
    assert list(table.columns) == ["layer", "head", "loss_increase"]
    s = table.set_index(["layer", "head"])["loss_increase"]
    assert s[(0, 1)] == 0.0  # the all-zero head does nothing
    assert s[(1, 1)] < 0  # removing the anti-induction head helps
    assert s[(1, 0)] > 1.0 and s[(0, 0)] > 1.0  # both halves of the induction circuit matter
    assert s.idxmax() == (1, 0)


@torch.no_grad()
def _reference(model, tokens: torch.Tensor) -> np.ndarray:
    """One full forward pass per head with that head's z zeroed."""
    n = (tokens.shape[1] - 1) // 2

    def loss(logits: torch.Tensor) -> float:
        return float(F.cross_entropy(logits[:, n + 1 : 2 * n].flatten(0, 1), tokens[:, n + 2 :].flatten()))

    clean = loss(model(tokens))
    out = np.zeros((model.cfg.n_layers, model.cfg.n_heads))
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):

            def zero(z, hook, head=head):
                z[:, :, head] = 0.0
                return z

            logits = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero)])
            out[layer, head] = loss(logits) - clean
    return out


@pytest.mark.parametrize(
    "kwargs",
    [dict(normalization_type="LN"), dict(normalization_type=None, attn_only=True, n_layers=3, n_heads=2)],
)
def test_matches_one_forward_per_head(kwargs):
    model = random_model(**kwargs)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.W_O.mul_(10.0)  # make heads matter
    tokens = repeated_tokens(model, n_seqs=4, half_len=6, seed=0)
    ours = ablation_scores(model, tokens)["loss_increase"].to_numpy()
    np.testing.assert_allclose(ours, _reference(model, tokens).reshape(-1), rtol=1e-4, atol=1e-5)


def test_errors():
    model = random_model()
    with pytest.raises(ValueError, match="half_len >= 2"):
        ablation_scores(model, half_len=1)
    with pytest.raises(ValueError, match="not repeated"):
        ablation_scores(model, torch.arange(9).view(1, 9))
    with pytest.raises(TypeError, match="HookedTransformer"):
        ablation_scores(object())


def test_logits_that_overflow_are_refused_not_nan():
    # Finite weights whose logits overflow float32: the losses were inf, their difference NaN for every head.
    model = random_model(seed=2)
    with torch.no_grad():
        model.W_U.mul_(1e38 / float(model.W_U.abs().max()))
    assert torch.isfinite(model.W_U).all()
    with pytest.raises(ValueError, match="the loss is not finite .*: the model's logits overflow their dtype"):
        ablation_scores(model, n_seqs=2, half_len=4)
