"""The default recipes, trained for real once per session (tests/conftest.py), do what they promise."""

import pandas as pd
import pytest

from circuits import (
    ablation_scores,
    fourier_report,
    grokking_phases,
    induction_heads,
    key_frequencies,
    prefix_matching_scores,
    repeated_token_loss,
)
from interp import load_model
from interp.runs.checkpoints import list_checkpoints
from interp.tasks.presets import preset
from interp.training.loop import train
from interp import run_progress_measures, run_train_mask

pytestmark = pytest.mark.slow


def _best_last_layer_prefix_matching(model, half_len=None) -> float:
    scores = prefix_matching_scores(model, half_len=half_len)
    return scores.loc[scores.layer == model.cfg.n_layers - 1, "score"].max()


def test_induction_default_grows_an_induction_head(induction_run):
    ckpts = list_checkpoints(induction_run)
    assert len(ckpts) >= 20
    assert _best_last_layer_prefix_matching(load_model(ckpts[0][1])) < 0.3
    assert _best_last_layer_prefix_matching(load_model(ckpts[-1][1])) >= 0.8


def _copies_at_every_length(model) -> None:
    # The lengths (4, 8, 16, 31) and others; the loss probe's seed is not the default one.
    for half_len in (3, 4, 8, 12, 16, 24, 31):
        assert _best_last_layer_prefix_matching(model, half_len) >= 0.8, half_len
        assert repeated_token_loss(model, half_len=half_len, seed=7) <= 1.0, half_len  # chance: ln 127 = 4.8


def test_the_induction_head_copies_after_a_repeat_of_any_length(induction_run):
    _copies_at_every_length(load_model(induction_run))


def test_another_seed_grows_the_same_head(tmp_path):
    train(preset("induction", seed=3), tmp_path / "run", quiet=True)
    _copies_at_every_length(load_model(tmp_path / "run"))


def test_trained_induction_head_is_found_and_needed(induction_run):
    model = load_model(induction_run)
    table = induction_heads(model)
    induction = table[table.is_induction]
    previous = table[table.is_previous_token]
    assert set(induction.layer) == {1} and len(induction) >= 1
    assert 0 in set(previous.layer)
    ablation = ablation_scores(model).sort_values("loss_increase", ascending=False)
    top = ablation.iloc[0]
    top_heads = {(int(r.layer), int(r.head)) for r in ablation.head(2).itertuples()}
    found = {(int(r.layer), int(r.head)) for r in pd.concat([induction, previous]).itertuples()}
    # ablating the induction head or its previous-token partner costs the most
    assert (int(top["layer"]), int(top["head"])) in found
    assert top_heads <= found
    assert top["loss_increase"] > 1.0


def test_modadd_default_groks(modadd_run):
    metrics = pd.read_csv(modadd_run / "metrics.csv")
    train99 = metrics.step[metrics.train_acc >= 0.99].iloc[0]
    test99 = metrics.step[metrics.test_acc >= 0.99].iloc[0]
    assert test99 >= 2 * train99  # generalisation comes late: grokking, not plain learning
    assert metrics.test_acc.iloc[-1] >= 0.99
    # and it stays grokked: with AdamW's epsilon at torch's 1e-8 this seed's test loss jumped from
    # 0.003 to 1.2 nats near epoch 900 (the slingshot, BENCHMARKS.md "The late spike and AdamW's epsilon")
    after = metrics.test_loss[metrics.step >= test99]
    assert (after - after.cummin()).max() <= 0.05


def test_modadd_default_groks_on_a_seed_the_first_preset_missed(tmp_path):
    # Seed 2 never reached 99 % test accuracy with the first fast preset (0.964 after 1,500 epochs).
    train(preset("modadd", seed=2), tmp_path / "run", quiet=True)
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert (metrics.test_acc >= 0.99).any(), metrics.test_acc.max()
    train99 = metrics.step[metrics.train_acc >= 0.99].iloc[0]
    test99 = metrics.step[metrics.test_acc >= 0.99].iloc[0]
    assert test99 >= 2 * train99


def test_modadd_key_frequencies_match_neuron_clusters_and_phases_are_ordered(modadd_run):
    model = load_model(modadd_run)
    report = fourier_report(model, train_mask=run_train_mask(modadd_run))
    keys = key_frequencies(model)
    assert keys == report.key_frequencies and 1 <= len(keys) <= 8
    # Every frequency with an 85 % cluster (>= 2 % of the neurons, the paper's criterion) is key;
    # a key frequency may have its cluster only at the majority rule, since ReLU harmonics take
    # 15-25 % of a neuron's variance (circuits.key_frequencies explains; seen on this run: k = 8).
    spectrum = report.spectrum.set_index("freq")
    assert set(spectrum.index[spectrum.neurons >= 11]) <= set(keys)
    assert (spectrum.loc[keys, "neurons_majority"] >= 11).all()
    # The key frequencies alone carry the function (chance is ln 113 = 4.7): within 0.05 nats, or
    # within 2x the model's own loss where that is larger. Not 2x alone: a freshly grokked model's
    # loss is ~1e-4 and the harmonics 2k still hold part of it. Not 0.05 alone: the default's
    # weight decay, rising to 14, can end with small logits and a loss near 0.1 at 100 % accuracy
    # (seen on seed 0 before the recipe's epsilon was raised, when a late spike left it there).
    assert report.restricted_loss < max(0.05, 2 * report.loss)
    for k in keys:
        without = fourier_report(model, key_freqs=[f for f in keys if f != k]).restricted_loss
        assert without >= 2 * report.restricted_loss, k

    measures = run_progress_measures(modadd_run, quiet=True)
    assert measures.attrs["key_frequencies"] == keys
    assert measures.n_key_frequencies.iloc[0] == 0 and measures.n_key_frequencies.iloc[-1] == len(keys)
    phases = grokking_phases(measures)
    # the test-accuracy jump on the same checkpoint grid as the phases (first checkpoint >= 50 %)
    jump = phases.grokking_step
    assert phases.memorization_end < phases.circuit_formation_end <= phases.cleanup_end
    assert phases.memorization_end < jump <= phases.cleanup_end
    # the Fourier circuit alone solves the task by the time the model has generalised (test 99 %)
    generalised = measures.step[measures.test_accuracy >= 0.99].iloc[0]
    assert phases.circuit_formation_end <= generalised
    metrics = pd.read_csv(modadd_run / "metrics.csv")
    assert jump == measures.step[measures.test_accuracy >= 0.5].iloc[0]
    assert metrics.step[metrics.test_acc >= 0.5].iloc[0] <= jump
