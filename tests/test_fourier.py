"""Fourier basis, spectra, key frequencies and report (circuits.fourier, circuits.progress)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import interp
from interp.tasks.models import config_to_dict
from interp.tasks.modular import train_mask
from circuits import FourierReport, fourier_basis, fourier_report, fourier_spectrum, key_frequencies
from circuits.fourier import last_position_outputs, neuron_block_fractions, neuron_frequencies
from circuits.progress import excluded_logits, gini, restricted_logits, weight_norm



@pytest.fixture(scope="module")
def published(published_path):
    """The published grokking model of Nanda et al. 2023 (tests/conftest.py: ../shared/data/)."""
    return interp.load_model(published_path)


@pytest.fixture(scope="module")
def published_report(published):
    return fourier_report(published)


def _reference_outputs(model, p):
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    tokens = torch.stack([a, b, torch.full_like(a, p)], dim=1)
    with torch.inference_mode():
        logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n == "blocks.0.mlp.hook_post")
    return logits[:, -1], cache["blocks.0.mlp.hook_post"][:, -1]


# ---------------------------------------------------------------------------------------------
# basis and neuron fractions


def test_basis_is_orthonormal_and_ordered():
    p = 13
    f = fourier_basis(p)
    assert f.shape == (p, p) and f.dtype == torch.float64
    torch.testing.assert_close(f @ f.T, torch.eye(p, dtype=torch.float64))
    x = torch.arange(p, dtype=torch.float64)
    torch.testing.assert_close(f[0], torch.full((p,), 1 / math.sqrt(p), dtype=torch.float64))
    torch.testing.assert_close(f[5], math.sqrt(2 / p) * torch.cos(2 * math.pi * 3 * x / p))  # cos 3
    torch.testing.assert_close(f[6], math.sqrt(2 / p) * torch.sin(2 * math.pi * 3 * x / p))  # sin 3


def test_basis_takes_a_numpy_integer():
    assert torch.equal(fourier_basis(np.int64(13)), fourier_basis(13))


@pytest.mark.parametrize("p", [1, 4, 114, True, 13.0])
def test_basis_rejects_even_or_tiny_p(p):
    with pytest.raises(ValueError, match="odd"):
        fourier_basis(p)


def test_neuron_fractions_match_explicit_2d_transform():
    p, n = 11, 6
    torch.manual_seed(0)
    acts = torch.randn(p * p, n, dtype=torch.float64)
    acts[:, 1] = 0.0  # a dead neuron
    f = fourier_basis(p)
    c = torch.einsum("ia,abn,jb->ijn", f, acts.reshape(p, p, n), f)
    c[0, 0] = 0
    total = c.pow(2).sum(dim=(0, 1))
    expected = torch.stack(
        [c[[0, 2 * k - 1, 2 * k]][:, [0, 2 * k - 1, 2 * k]].pow(2).sum(dim=(0, 1)) for k in range(1, (p + 1) // 2)]
    ) / total.clamp_min(1e-300)
    expected[:, 1] = 0.0
    torch.testing.assert_close(neuron_block_fractions(acts, p), expected)


def test_single_frequency_neuron_is_fully_explained():
    p, k = 17, 5
    w = 2 * math.pi * k / p
    a = torch.arange(p).repeat_interleave(p).double()
    b = torch.arange(p).repeat(p).double()
    acts = torch.stack([torch.cos(w * (a + b)), torch.cos(w * a) + 0.3 * torch.sin(w * b) + 7.0], dim=1)
    frac = neuron_block_fractions(acts, p)
    torch.testing.assert_close(frac[k - 1], torch.ones(2, dtype=torch.float64))
    assert float(frac.sum(0).max()) <= 1 + 1e-9


def test_half_precision_activations_keep_their_fractions():
    # A neuron of activations near 100 sums to ~1e8 in squares: past float16's 65504. Summed in
    # float16 the whole table read as dead (every fraction 0); the fractions are float64's.
    p, k = 17, 5
    w = 2 * math.pi * k / p
    a = torch.arange(p).repeat_interleave(p).double()
    b = torch.arange(p).repeat(p).double()
    acts = torch.stack([100 * torch.cos(w * (a + b)), torch.cos(w * a) + 0.3 * torch.sin(w * b)], dim=1)
    for dtype in (torch.float16, torch.bfloat16):
        low = acts.to(dtype)
        torch.testing.assert_close(neuron_block_fractions(low, p), neuron_block_fractions(low.double(), p))
        assert float(neuron_block_fractions(low, p)[k - 1].min()) > 0.99


# ---------------------------------------------------------------------------------------------
# forward pass


def test_fast_forward_matches_the_model(published):
    for model in (published, interp.build_model(interp.modadd_config(), seed=3)):
        logits, acts = last_position_outputs(model)
        ref_logits, ref_acts = _reference_outputs(model, 113)
        torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(acts, ref_acts, rtol=1e-4, atol=1e-4)


def test_other_architectures_fall_back_to_the_model():
    cfg = interp.modadd_config(23)
    cfg.normalization_type = "LN"
    model = interp.build_model(config_to_dict(cfg), seed=0)
    logits, acts = last_position_outputs(model)
    ref_logits, ref_acts = _reference_outputs(model, 23)
    torch.testing.assert_close(logits, ref_logits)
    torch.testing.assert_close(acts, ref_acts)


def test_a_hook_on_the_model_is_run():
    # The closed form would skip a user's hook (here: every neuron zeroed); the model's forward runs it.
    model = interp.build_model(interp.modadd_config(23), seed=0)
    model.blocks[0].mlp.hook_post.add_hook(lambda x, hook: torch.zeros_like(x), is_permanent=True)
    try:
        logits, acts = last_position_outputs(model)
        ref_logits, _ = _reference_outputs(model, 23)
        torch.testing.assert_close(logits, ref_logits)
        assert float(acts.abs().max()) == 0.0
        hooked_loss = fourier_report(model).loss
    finally:
        model.reset_hooks(including_permanent=True)
    assert abs(hooked_loss - fourier_report(model).loss) > 1e-4


def test_a_left_padding_tokenizer_changes_nothing():
    # Inputs [0, b, =] start with the pad token of such a tokenizer: read as given, not as padding.
    from handbuilt_models import set_left_padding_tokenizer

    cfg = interp.modadd_config(23)
    cfg.normalization_type = "LN"  # the model's forward, not the closed form
    model = interp.build_model(config_to_dict(cfg), seed=0)
    before = last_position_outputs(model)
    set_left_padding_tokenizer(model)
    after = last_position_outputs(model)
    for old, new in zip(before, after):
        torch.testing.assert_close(new, old, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# published model (Nanda et al. 2023)


def test_published_key_frequencies(published, published_report):
    keys = key_frequencies(published)
    assert keys == published_report.key_frequencies == [3, 6, 23, 39]
    assert published_report.loss_frequencies == keys


def test_restricted_loss_needs_exactly_the_key_frequencies(published, published_report):
    r = published_report
    assert r.restricted_loss <= 2 * r.loss  # nothing is missing
    for k in r.key_frequencies:
        dropped = fourier_report(published, key_freqs=[f for f in r.key_frequencies if f != k])
        assert dropped.restricted_loss >= 2 * r.restricted_loss, f"frequency {k} is not needed"
    # removing the key directions destroys performance
    assert r.excluded_loss > math.log(113)


def test_published_report_fields(published_report):
    r = published_report
    assert isinstance(r, FourierReport) and r.p == 113
    assert r.loss < 0.01 and r.train_loss == r.loss
    assert math.isnan(r.test_loss) and math.isnan(r.test_accuracy)
    assert r.train_accuracy > 0.999
    assert 0.4 < r.gini_embed < 1 and 0.4 < r.gini_unembed < 1
    assert 1000 < r.weight_norm < 1300
    spec = r.spectrum
    assert list(spec.columns[:4]) == ["freq", "embed", "unembed", "neurons"]
    assert list(spec["freq"]) == list(range(1, 57))
    assert spec["embed"].sum() == pytest.approx(1) and spec["unembed"].sum() == pytest.approx(1)
    top = spec.set_index("freq")
    assert (top.loc[r.key_frequencies, "unembed"] > 0.1).all()
    assert (top["neurons"] <= top["neurons_majority"]).all()
    assert top["neurons"].sum() > 0.75 * 512  # the paper: most neurons belong to one frequency
    # docs/scores.md, key-frequency rule: frequency 3 has no neuron at 85 % but 88 at 50 %
    assert (top.loc[3, "neurons"], top.loc[3, "neurons_majority"]) == (0, 88)
    with pytest.raises(AttributeError):
        r.p = 5  # frozen


def test_report_with_train_mask(published):
    mask = train_mask(113, 0.3, seed=0)
    r = fourier_report(published, train_mask=mask)
    assert r.train_loss < 0.01 and r.test_loss < 0.01 and r.test_accuracy > 0.99
    assert r.loss == pytest.approx(0.3 * r.train_loss + 0.7 * r.test_loss, rel=2e-3)


def test_spectrum_and_neuron_table(published):
    spec = fourier_spectrum(published)
    table = neuron_frequencies(published)
    assert len(table) == 512
    counts = table[table["frac"] >= 0.85]["freq"].value_counts()
    for k, n in counts.items():
        assert spec.set_index("freq").loc[k, "neurons"] == n


def test_report_leaves_model_unchanged(published):
    before = {k: v.clone() for k, v in published.state_dict().items()}
    fourier_report(published)
    after = published.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# ---------------------------------------------------------------------------------------------
# untrained models


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_random_init_has_no_key_frequencies(seed):
    model = interp.build_model(interp.modadd_config(), seed=seed)
    assert key_frequencies(model) == []
    r = fourier_report(model)
    assert r.key_frequencies == [] and r.spectrum["neurons"].sum() == 0
    assert r.gini_embed < 0.1 and r.gini_unembed < 0.1


def _random_analysis(p: int, d_model: int, d_mlp: int, seed: int):
    from circuits._fourier_analysis import analyze

    cfg = interp.modadd_config(p, d_model=d_model)
    cfg.d_mlp = d_mlp
    return analyze(interp.build_model(cfg, seed=seed), p)


def test_random_weights_have_no_key_frequencies_at_any_width():
    # At p = 23 (MIN_KEY_P) random weights put a few neurons past 50 % in one block: fewer than the
    # floor of 4 (MIN_CLUSTER_NEURONS) at d_mlp 32 to 128, and than 2 % of d_mlp above. The floor was
    # 2 and MIN_KEY_P 17: random weights had "key" frequencies at p = 17 and 19 (below).
    from circuits._fourier_analysis import MIN_CLUSTER_NEURONS, MIN_KEY_P, key_rule

    assert (MIN_KEY_P, MIN_CLUSTER_NEURONS) == (23, 4)
    largest = {}
    for d_model, d_mlp, seeds in ((16, 32, 200), (32, 64, 200), (64, 128, 200), (64, 256, 200), (128, 512, 20),
                                  (256, 1024, 10)):
        for seed in range(seeds):
            analysis = _random_analysis(23, d_model, d_mlp, seed)
            assert key_rule(analysis) == [], (d_mlp, seed)
            largest[d_mlp] = max(largest.get(d_mlp, 0), int(analysis.neurons_majority.max()))
    assert largest == {32: 3, 64: 2, 128: 3, 256: 5, 512: 3, 1024: 3}
    for p, seed in ((17, 7), (19, 5)):  # d_mlp 64: both conditions met by one frequency of random weights
        analysis = _random_analysis(p, 32, 64, seed)
        passing = (analysis.neurons_majority >= MIN_CLUSTER_NEURONS) & (analysis.unembed >= 0.05)
        assert int(passing.sum()) == 1, p


def test_small_moduli_are_refused_by_the_key_frequency_rule():
    from interp.detectors.registry import DETECTORS

    for p, share in ((13, "4.8"), (19, "2.2")):
        small = interp.build_model(interp.modadd_config(p), seed=0)
        with pytest.raises(ValueError, match=rf"the key-frequency rule needs p >= 23: at p={p} .* spans {share}%"):
            key_frequencies(small)
        assert DETECTORS["fourier"].applies(small) == (f"p={p} is below 23, the smallest modulus the key-frequency "
                                                        "rule holds for")
    with pytest.raises(ValueError, match=r"frequencies must be whole numbers; got \[1\.5\]"):
        fourier_report(interp.build_model(interp.modadd_config(23), seed=0), key_freqs=[1.5, 2])


# ---------------------------------------------------------------------------------------------
# losses and helpers


def test_restricted_plus_excluded_recombine(published):
    logits, _ = last_position_outputs(published)
    freqs = [3, 6, 23, 39]
    total = restricted_logits(logits, 113, freqs) + excluded_logits(logits, 113, freqs)
    torch.testing.assert_close(total - logits.double().mean(0, keepdim=True), logits.double(), atol=1e-9, rtol=1e-9)
    # restricting to no frequency leaves the mean logits: near-chance loss
    flat = restricted_logits(logits, 113, [])
    torch.testing.assert_close(flat, logits.double().mean(0, keepdim=True).expand_as(flat))


def test_gini_and_weight_norm():
    assert gini([1.0, 1.0, 1.0, 1.0]) == pytest.approx(0.0)
    assert gini([0.0, 0.0, 0.0, 5.0]) == pytest.approx(0.75)
    assert gini([0.0, 0.0]) == 0.0
    for bad in ([-1.0, 2.0], [math.nan, 1.0], [math.inf, 1.0]):  # NaN and inf gave NaN, outside its range
        with pytest.raises(ValueError, match="finite non-negative"):
            gini(bad)
    layer = torch.nn.Linear(2, 3)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.bias.fill_(2.0)
    assert weight_norm(layer) == pytest.approx(6 * 1.0 + 3 * 4.0)


# ---------------------------------------------------------------------------------------------
# bad input


def test_two_layer_model_is_rejected():
    cfg = config_to_dict(interp.modadd_config())
    cfg["n_layers"] = 2
    model = interp.build_model(cfg, seed=0)
    with pytest.raises(ValueError, match="one-layer"):
        key_frequencies(model)
    with pytest.raises(ValueError, match="one-layer"):
        fourier_report(model)


def test_attention_only_model_is_rejected():
    cfg = config_to_dict(interp.induction_config(n_layers=1))
    with pytest.raises(ValueError, match="MLP"):
        key_frequencies(interp.build_model(cfg, seed=0))


def test_p_must_match_the_vocabulary(published):
    with pytest.raises(ValueError, match="does not match"):
        key_frequencies(published, p=97)
    with pytest.raises(ValueError, match="does not match"):
        fourier_report(published, p=114)
    cfg = config_to_dict(interp.modadd_config())
    cfg["d_vocab"] = 113  # no room for the "=" token
    with pytest.raises(ValueError, match="'=' token"):
        key_frequencies(interp.build_model(cfg, seed=0))


def test_nan_weights_are_rejected():
    model = interp.build_model(interp.modadd_config(), seed=0)
    with torch.no_grad():
        model.blocks[0].mlp.W_out[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"NaN.*blocks\.0\.mlp\.W_out"):
        key_frequencies(model)
    with pytest.raises(ValueError, match="NaN"):
        fourier_report(model)


def test_bad_train_mask_and_frequencies(published):
    with pytest.raises(ValueError, match="train_mask"):
        fourier_report(published, train_mask=torch.ones(10, dtype=torch.bool))
    with pytest.raises(ValueError, match="train_mask"):
        fourier_report(published, train_mask=torch.ones(113 * 113))  # not bool
    with pytest.raises(ValueError, match="no training pairs"):
        fourier_report(published, train_mask=torch.zeros(113 * 113, dtype=torch.bool))
    with pytest.raises(ValueError, match="1..56"):
        fourier_report(published, key_freqs=[0, 3])
    with pytest.raises(ValueError, match="1..56"):
        fourier_report(published, key_freqs=[57])
