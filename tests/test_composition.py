"""Q/K/V-composition scores with their random baseline (Elhage et al. 2021)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from handbuilt_models import VOCAB, induction_circuit_model, random_model

from circuits import composition_scores

COLUMNS = ["src_layer", "src_head", "dst_layer", "dst_head", "kind", "score", "baseline"]


def test_handbuilt_k_composition():
    """L0H0 writes the token into PREV, which L1H0/L1H1 read as keys: K-composition only.

    W_A = W_V W_O maps tok_i -> prev_i (rank V), W_B = W_K W_Q^T maps prev_i -> c tok_i, so
    ||W_A W_B|| / (||W_A|| ||W_B||) = c sqrt(V) / (sqrt(V) c sqrt(V)) = 1 / sqrt(V).
    """
    model = induction_circuit_model()
    table = composition_scores(model, kind="all")
    assert list(table.columns) == COLUMNS
    assert len(table) == 3 * 2 * 2  # kinds x src heads of layer 0 x dst heads of layer 1
    assert table["kind"].tolist() == ["Q"] * 4 + ["K"] * 4 + ["V"] * 4
    s = table.set_index(["kind", "src_layer", "src_head", "dst_layer", "dst_head"])["score"]
    for dst in (0, 1):
        assert s[("K", 0, 0, 1, dst)] == pytest.approx(1 / np.sqrt(VOCAB), rel=1e-9)
        assert s[("K", 0, 0, 1, dst)] > table["baseline"].iloc[0]
        assert s[("K", 0, 1, 1, dst)] == 0.0  # the all-zero head composes with nothing
        assert s[("Q", 0, 0, 1, dst)] == pytest.approx(0.0, abs=1e-12)
        assert s[("V", 0, 0, 1, dst)] == pytest.approx(0.0, abs=1e-12)
    k_only = composition_scores(model, kind="K")
    assert (k_only["kind"] == "K").all() and len(k_only) == 4
    np.testing.assert_allclose(k_only["score"], table[table.kind == "K"]["score"])


@pytest.mark.parametrize("kind", ["Q", "K", "V"])
def test_parity_with_transformer_lens(kind):
    model = random_model(n_layers=3, n_heads=2, d_model=32, d_head=8)
    table = composition_scores(model, kind=kind)
    assert len(table) == (2 * 2 + 4 * 2) * 1  # pairs (src layer < dst layer): 0->1, 0->2, 1->2
    assert table[["src_layer", "dst_layer"]].apply(lambda r: r.src_layer < r.dst_layer, axis=1).all()
    with torch.no_grad():
        tl = model.all_composition_scores(kind).double()
    index = [torch.tensor(table[c].tolist()) for c in ("src_layer", "src_head", "dst_layer", "dst_head")]
    expected = tl[tuple(index)]
    np.testing.assert_allclose(table["score"].to_numpy(), expected.numpy(), rtol=1e-4, atol=1e-7)
    for column in ("src_layer", "src_head", "dst_layer", "dst_head"):
        assert table[column].dtype == np.int64


def test_baseline_is_about_one_over_sqrt_d_model():
    for d_model in (32, 128):
        model = random_model(d_model=d_model, d_head=8, n_layers=2, n_heads=2)
        table = composition_scores(model, kind="all", n_baseline=64, seed=1)
        assert table["baseline"].nunique() == 1
        assert table["baseline"].iloc[0] == pytest.approx(1 / np.sqrt(d_model), rel=0.25)
        again = composition_scores(model, kind="all", n_baseline=64, seed=1)
        assert table.equals(again)  # seeded


def test_single_layer_and_bad_kind():
    one_layer = composition_scores(random_model(n_layers=1))
    assert one_layer.empty and list(one_layer.columns) == COLUMNS
    with pytest.raises(ValueError, match="kind"):
        composition_scores(random_model(), kind="QK")
    with pytest.raises(ValueError, match="n_baseline"):
        composition_scores(random_model(), n_baseline=0)
    for seed in (1.5, True, -1, 2 ** 70):  # not silently seed 1, nor torch's overflow
        with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*63\)"):
            composition_scores(random_model(), seed=seed)
    with pytest.raises(TypeError, match="HookedTransformer"):
        composition_scores(torch.nn.Linear(2, 2))
