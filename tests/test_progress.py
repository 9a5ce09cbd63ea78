"""Progress measures over checkpoints and the phases of grokking (circuits.progress, circuits.phases, interp.fourier_runs)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import interp
from circuits import GrokkingPhases, fourier_report, grokking_phases, progress_measures
from interp.runs.checkpoints import save_checkpoint
from interp.analysis.fourier_runs import run_progress_measures
from interp.runs.layout import checkpoint_path
from interp.runs.record import run_train_mask
from interp.tasks.modular import train_mask

COLUMNS = [
    "step", "n_key_frequencies", "loss", "train_loss", "test_loss", "train_accuracy", "test_accuracy",
    "restricted_loss", "excluded_loss", "gini_embed", "gini_unembed", "weight_norm",
]


@pytest.fixture(scope="module")
def published(published_path):
    """The published grokking model of Nanda et al. 2023 (tests/conftest.py: ../shared/data/)."""
    return interp.load_model(published_path)


@pytest.fixture(scope="module")
def untrained():
    return interp.build_model(interp.modadd_config(), seed=0)


def test_progress_measures_from_a_dict(published, untrained):
    mask = train_mask(113, 0.3, seed=1)
    frame = progress_measures({500: published, 0: untrained}, train_mask=mask)
    assert list(frame.columns) == COLUMNS
    assert list(frame["step"]) == [0, 500]  # sorted by step
    assert frame.attrs["key_frequencies"] == [3, 6, 23, 39]  # the last checkpoint's
    assert list(frame["n_key_frequencies"]) == [0, 4]
    final = fourier_report(published, train_mask=mask)
    row = frame.iloc[1]
    assert row["restricted_loss"] == pytest.approx(final.restricted_loss)
    assert row["test_loss"] == pytest.approx(final.test_loss)
    # the untrained model is scored with the final model's frequencies, not its own (none)
    first = fourier_report(untrained, train_mask=mask, key_freqs=[3, 6, 23, 39])
    assert frame.iloc[0]["excluded_loss"] == pytest.approx(first.excluded_loss)
    assert frame.iloc[0]["restricted_loss"] == pytest.approx(first.restricted_loss)


def test_progress_measures_streams_pairs_with_given_frequencies(published, untrained):
    def gen():
        yield 10, untrained
        yield 20, published

    frame = progress_measures(gen(), key_freqs=[6, 23])
    assert frame.attrs["key_frequencies"] == [6, 23]
    assert frame["test_loss"].isna().all()  # no split given
    assert frame.iloc[1]["restricted_loss"] > fourier_report(published).restricted_loss


def test_progress_measures_bad_input(published):
    with pytest.raises(ValueError, match="at least one"):
        progress_measures({})
    with pytest.raises(ValueError, match="duplicate"):
        progress_measures([(1, published), (1, published)], key_freqs=[3])


# ---------------------------------------------------------------------------------------------
# run directories


def _write_run(root: Path, models: dict[int, torch.nn.Module], task: dict | None) -> Path:
    for step, model in models.items():
        save_checkpoint(checkpoint_path(root, step), model, step)
    if task is not None:
        (root / "run.json").write_text(json.dumps({"task": task}))
    return root


def test_run_directory_uses_its_split(tmp_path, published, untrained):
    task = {"name": "modadd", "p": 113, "frac_train": 0.3, "split_seed": 7}
    run = _write_run(tmp_path / "run", {0: untrained, 1000: published}, task)
    assert torch.equal(run_train_mask(run), train_mask(113, 0.3, 7))
    frame = run_progress_measures(run, quiet=True)
    assert list(frame["step"]) == [0, 1000]
    assert frame.attrs["key_frequencies"] == [3, 6, 23, 39]
    expected = fourier_report(published, train_mask=train_mask(113, 0.3, 7))
    assert frame.iloc[1]["test_loss"] == pytest.approx(expected.test_loss)
    assert frame.iloc[1]["train_loss"] == pytest.approx(expected.train_loss)
    # a list of checkpoint files from the same run finds run.json too
    files = [checkpoint_path(run, 1000), checkpoint_path(run, 0)]
    again = run_progress_measures(files, quiet=True)
    pd.testing.assert_frame_equal(again, frame)


def test_run_directory_without_split_and_of_another_task(tmp_path, published):
    run = _write_run(tmp_path / "nosplit", {5: published}, None)
    assert run_train_mask(run) is None
    assert run_progress_measures(run, quiet=True)["test_loss"].isna().all()
    other = _write_run(tmp_path / "other", {5: published}, {"name": "induction"})
    with pytest.raises(ValueError, match="modadd"):
        run_progress_measures(other, quiet=True)
    with pytest.raises(FileNotFoundError):
        run_progress_measures(tmp_path / "missing", quiet=True)


# ---------------------------------------------------------------------------------------------
# phases

# Progress measures of a real run: `interp train modadd` (default preset, seed 0), scored with
# progress_measures on its 29 checkpoints (final key frequencies 8, 16, 21).
# step, train_loss, test_accuracy, restricted_loss, weight_norm
REAL_RUN = [
    (0, 4.736, 0.00772, 4.734, 1131.5), (1, 4.732, 0.00772, 4.732, 1130.8), (2, 4.726, 0.007272, 4.731, 1129.3),
    (4, 4.719, 0.007944, 4.735, 1125.5), (8, 4.715, 0.007384, 4.751, 1122.1), (16, 4.663, 0.005818, 4.741, 1208.1),
    (32, 4.383, 0.005706, 4.734, 1585), (64, 3.308, 0.01589, 4.1, 2224.6), (128, 0.1431, 0.1875, 2.326, 3447.4),
    (150, 0.01314, 0.2074, 2.287, 3805.8), (300, 0.003458, 0.2473, 1.738, 3514.7),
    (450, 0.0005945, 0.2639, 1.422, 3360.7), (600, 0.0001163, 0.2778, 1.093, 3363.1),
    (750, 2.297e-05, 0.2963, 0.7725, 3350.1), (900, 4.651e-06, 0.3188, 0.4976, 3265.5),
    (1050, 1.017e-06, 0.3585, 0.2826, 3093.5), (1200, 2.741e-07, 0.4076, 0.1149, 2826.2),
    (1350, 1.115e-07, 0.4895, 0.02941, 2477), (1500, 7.215e-08, 0.6519, 0.002289, 2130.9),
    (1650, 5.77e-08, 0.8682, 4.328e-05, 1843.7), (1800, 4.312e-08, 0.9921, 5.096e-07, 1570),
    (1950, 3.404e-08, 1, 2.909e-08, 1272.3), (2100, 3.238e-08, 1, 2.182e-08, 1093.9),
    (2250, 3.164e-08, 1, 2.081e-08, 1007.2), (2400, 3.138e-08, 1, 2.126e-08, 966.07),
    (2550, 3.119e-08, 1, 2.196e-08, 946.69), (2700, 3.105e-08, 1, 2.299e-08, 936.91),
    (2850, 3.091e-08, 1, 2.464e-08, 931.34), (3000, 3.079e-08, 1, 2.7e-08, 927.66),
]


def _real_run() -> pd.DataFrame:
    return pd.DataFrame(REAL_RUN, columns=["step", "train_loss", "test_accuracy", "restricted_loss", "weight_norm"])


def test_phases_of_a_real_run():
    phases = grokking_phases(_real_run())
    assert phases == GrokkingPhases(memorization_end=150, circuit_formation_end=1050, cleanup_end=2250, grokking_step=1500)
    assert phases.memorization_end < phases.circuit_formation_end <= phases.grokking_step <= phases.cleanup_end


def test_phases_ignore_row_order_and_follow_thresholds():
    shuffled = _real_run().sample(frac=1.0, random_state=0)
    assert grokking_phases(shuffled) == grokking_phases(_real_run())
    strict = grokking_phases(_real_run(), circuit_loss=0.01, clean_fraction=0.01)
    assert strict.circuit_formation_end == 1500 and strict.cleanup_end == 2700


def test_phases_not_reached_are_none():
    run = _real_run()
    early = run[run["step"] <= 1200]  # stopped before the test-accuracy jump
    phases = grokking_phases(early)
    assert phases.memorization_end == 150 and phases.circuit_formation_end == 1050
    assert phases.grokking_step is None and phases.cleanup_end is None
    never = run.assign(restricted_loss=4.7, test_accuracy=0.01)  # memorised, never grokked
    assert grokking_phases(never) == GrokkingPhases(150, None, None, None)


def test_phases_need_a_split_and_the_columns():
    with pytest.raises(ValueError, match="split"):
        grokking_phases(_real_run().assign(test_accuracy=np.nan))
    with pytest.raises(ValueError, match="restricted_loss"):
        grokking_phases(_real_run().drop(columns=["restricted_loss"]))


def test_old_spellings_still_work_and_warn():
    import circuits.progress
    from circuits.phases import MEMORIZED_LOSS

    phases = grokking_phases(_real_run())
    with pytest.warns(DeprecationWarning, match="memorization_end"):
        assert phases.memorisation_end == phases.memorization_end == 150
    with pytest.warns(DeprecationWarning, match="memorization_end"):
        old = GrokkingPhases(memorisation_end=150, circuit_formation_end=1050, cleanup_end=2250, grokking_step=1500)
    assert old == phases
    with pytest.warns(DeprecationWarning, match="MEMORIZED_LOSS"):
        assert circuits.progress.MEMORISED_LOSS == MEMORIZED_LOSS == circuits.progress.MEMORIZED_LOSS
    with pytest.warns(DeprecationWarning, match="memorized_loss"):
        assert grokking_phases(_real_run(), memorised_loss=0.01) == grokking_phases(_real_run(), memorized_loss=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new names do not warn
        assert grokking_phases(_real_run(), memorized_loss=0.01).memorization_end == 300
        GrokkingPhases(1, 2, 3)
    with pytest.raises(TypeError, match="both"), pytest.warns(DeprecationWarning):
        GrokkingPhases(1, 2, 3, memorisation_end=1)
    with pytest.raises(TypeError, match="cleanup_end"):
        GrokkingPhases(1, 2)
    with pytest.raises(AttributeError):
        phases.memorization_end = 5  # still frozen
    with pytest.raises(AttributeError):
        circuits.progress.NO_SUCH_NAME


def test_memorization_never_ends_after_the_test_accuracy_jump():
    # A default modadd run whose train loss hovered at the threshold (0.0514 at epoch 225) and dipped
    # below it only after the jump: the loss rule alone said 525 against a grokking step of 450.
    steps = [0, 75, 150, 225, 300, 375, 450, 525, 600, 675, 750]
    train_loss = [4.74, 2.68, 0.173, 0.0514, 1.54, 0.277, 0.0728, 0.0236, 0.0125, 0.0074, 0.0045]
    train_acc = [0.01, 0.32, 0.9924, 1.0, 0.62, 0.9927, 1.0, 1.0, 1.0, 1.0, 1.0]
    test_acc = [0.008, 0.031, 0.207, 0.244, 0.148, 0.349, 0.833, 0.9994, 1.0, 1.0, 1.0]
    restricted = [4.73, 3.53, 2.09, 1.82, 4.86, 1.01, 0.154, 0.0222, 0.0122, 0.0076, 0.0049]
    norm = [1131, 2266, 2844, 2703, 2604, 1924, 1667, 1341, 1113, 1050, 1046]
    run = pd.DataFrame({"step": steps, "train_loss": train_loss, "train_accuracy": train_acc,
                        "test_accuracy": test_acc, "restricted_loss": restricted, "weight_norm": norm})
    phases = grokking_phases(run)
    assert phases == GrokkingPhases(memorization_end=150, circuit_formation_end=450, cleanup_end=675, grokking_step=450)
    assert grokking_phases(run.drop(columns=["train_accuracy"])).memorization_end is None  # fitted only after the jump
    # generalising first (a large training fraction): no memorisation phase, so none of the three
    late = run.assign(train_accuracy=0.5, train_loss=np.where(run["step"] < 600, 1.0, 0.01))
    assert grokking_phases(late) == GrokkingPhases(None, None, None, 450)


def test_text_and_repeats_are_not_taken_for_frequencies_and_bad_moduli_are_refused():
    # "12" was read digit by digit as [1, 2]; [3, 1, 1] was recorded as the frequencies used, where
    # the losses took [1, 3]; modadd_inputs(-3), (7.0), (0): torch's errors or an empty task.
    from circuits import modadd_inputs

    model = interp.build_model(interp.modadd_config(23), seed=0)
    with pytest.raises(ValueError, match="frequencies must be a list of whole numbers, not the text '12'"):
        fourier_report(model, key_freqs="12")
    with pytest.raises(ValueError, match=r"frequencies must be whole numbers; got \['12'\]"):
        progress_measures({0: model}, key_freqs="12")
    assert progress_measures({0: model}, key_freqs=[3, 1, 1]).attrs["key_frequencies"] == [1, 3]
    for p in (-3, 7.0, 0, True):
        with pytest.raises(ValueError, match=f"p must be a whole number of at least 2 \\(the modulus\\), got {p!r}"):
            modadd_inputs(p)
    with pytest.raises(TypeError, match="measures must be a DataFrame .*, got list"):
        grokking_phases([1, 2])
