"""interp/analysis/split_memorization.py: dataset bits, memorised bits and capacity, by hand and in the table."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from interp.analysis.capacity_figures import MEASURED_BITS_PER_PARAMETER
from interp.tasks.models import config_to_dict, modadd_config
from interp.tasks.presets import preset
from interp.analysis.split_memorization import capacity_bits, dataset_bits, memorized_bits
from interp.experiments.sweep import run_summary


def test_memorized_bits_by_hand():
    # 100 training pairs, 0.1 nats on them, 2.0 nats on held-out pairs: 100 * 1.9 / ln 2 bits
    assert memorized_bits(0.1, 2.0, 100, 113) == pytest.approx(274.1121, abs=1e-4)
    assert memorized_bits(2.0, 0.1, 100, 113) == 0.0  # better off the training set: clamped at 0
    assert memorized_bits(1.0, 1.0, 100, 113) == 0.0
    assert math.isnan(memorized_bits(0.1, math.nan, 100, 113))  # no test split
    # a test loss above chance (ln 113 = 4.727 nats) is measured against chance, not the test loss
    bits = memorized_bits(np.array([4.7, 0.01, 0.5, 0.0]), np.array([4.7, 5.01, 0.4, 9.0]), 10, 113)
    np.testing.assert_allclose(bits, [0.0, 10 * (math.log(113) - 0.01) / math.log(2), 0.0, dataset_bits(10, 113)])
    assert memorized_bits(0.0, 50.0, 3831, 113) == pytest.approx(dataset_bits(3831, 113))  # never above the labels
    # the default split: 3,831 of 113^2 pairs, log2 113 bits per label
    assert dataset_bits(3831, 113) == pytest.approx(26128.106, abs=1e-3)
    assert dataset_bits(0, 113) == 0.0 and dataset_bits(10, 1) == 0.0
    assert capacity_bits(1000) == pytest.approx(1000 * MEASURED_BITS_PER_PARAMETER) and capacity_bits(1000, 3.6) == pytest.approx(3600.0)
    with pytest.raises(ValueError, match="n_train"):
        memorized_bits(0.1, 0.2, -1, 113)
    with pytest.raises(ValueError, match="n_classes"):
        memorized_bits(0.1, 0.2, 10, 0)
    with pytest.raises(ValueError, match="n_classes"):
        dataset_bits(10, 0)


def test_run_summary_of_hand_made_metrics(tmp_path):
    """A run of p = 5, 40 % train (10 of 25 pairs), with a metrics.csv written by hand."""
    options = preset("modadd", p=5, frac_train=0.4, d_model=4, steps=30)
    info = {"format": "interp-run-v1", "task": {"name": "modadd", "p": 5, "frac_train": 0.4, "split_seed": 0},
            "model_config": config_to_dict(modadd_config(5, d_model=4)), "training": options.to_dict(), "seed": 0}
    (tmp_path / "run.json").write_text(json.dumps(info))
    (tmp_path / "metrics.csv").write_text(
        "step,train_loss,train_acc,test_loss,test_acc\n"
        "0,1.6,0.2,1.6,0.2\n"        # chance everywhere: 0 bits
        "10,0.2,0.995,2.2,0.1\n"     # memorised, test loss above chance: 10 * (ln 5 - 0.2) / ln 2 = 20.33 bits (the peak)
        "20,0.05,1.0,1.0,0.6\n"      # 10 * 0.95 / ln 2 = 13.71 bits
        "30,0.01,1.0,0.02,0.99\n"    # grokked: 0.14 bits
    )
    row = run_summary(tmp_path)
    # 4 d^2 + 4 d (attention) + 8 d^2 + 5 d (MLP) + (p + 1) d + 3 d + d p + p, at d = 4, p = 5
    assert row["params"] == 12 * 16 + 9 * 4 + 6 * 4 + 3 * 4 + 4 * 5 + 5 == 289
    assert row["dataset_bits"] == pytest.approx(10 * math.log2(5))
    assert row["peak_memorized_bits"] == pytest.approx(10 * (math.log(5) - 0.2) / math.log(2)) and row["peak_step"] == 10
    assert row["peak_memorized_bits"] <= row["dataset_bits"]
    assert row["train99_step"] == 10 and row["test99_step"] == 30 and row["steps"] == 30
    assert row["capacity_bits"] == pytest.approx(MEASURED_BITS_PER_PARAMETER * 289)
    assert row["bits_per_parameter"] == MEASURED_BITS_PER_PARAMETER


def test_the_fourier_detector_writes_the_bits(tiny_runs):
    from interp.runs.record import run_train_mask
    from interp.scoring.batch import score_checkpoints

    _, mod = tiny_runs
    table = score_checkpoints(mod, detectors=["fourier"])
    wide = table.pivot_table(index="step", columns="metric", values="value")
    n_train = int(run_train_mask(mod).sum())
    reference = np.minimum(wide["test_loss"], math.log(113))  # the better of the test loss and chance
    expected = np.maximum(0.0, n_train * (reference - wide["train_loss"]) / math.log(2))
    assert (wide["memorized_bits"] <= wide["dataset_bits"] + 1e-9).all()
    np.testing.assert_allclose(wide["memorized_bits"], expected, rtol=1e-12)
    assert (wide["dataset_bits"] == n_train * math.log2(113)).all()
