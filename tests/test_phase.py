"""interp.phase: the induction phase change located on the best head curve."""

from __future__ import annotations

import numpy as np
import pytest

from interp import curve_change_points, locate_phase_change

STEPS = [0, 1, 2, 4, 8, 16, 32, *range(50, 1001, 50)]


def sigmoid_curve(centre: float, width: float = 25.0, noise: float = 0.01, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = np.asarray(STEPS, dtype=float)
    return 0.02 + 0.88 / (1 + np.exp(-(steps - centre) / width)) + noise * rng.standard_normal(len(steps))


@pytest.mark.parametrize("centre", [120, 310, 640])
def test_phase_change_at_the_steepest_rise(centre):
    change = locate_phase_change(STEPS, sigmoid_curve(centre))
    assert change is not None
    assert change.start_step <= centre <= change.end_step and abs(change.step - centre) <= 25
    assert change.after > change.before and change.slope > 0


@pytest.mark.parametrize("every,seed", [(4, 0), (2, 1), (20, 2)])
def test_the_same_rise_is_found_however_densely_it_was_checkpointed(every, seed):
    """The default induction run checkpointed every 4 steps had "no phase change": no single step
    between two checkpoints rose by 10 % of the range (the run checkpointed every 20 had one at 130)."""
    steps = np.arange(0, 401, every)
    rng = np.random.default_rng(seed)
    scores = 0.04 + 0.85 / (1 + np.exp(-(steps - 150) / 12)) + 0.004 * rng.standard_normal(len(steps))
    change = locate_phase_change(steps, scores)
    assert change is not None and abs(change.step - 150) <= 20 and change.end_step - change.start_step <= 40
    assert change.after - change.before >= 0.1 * (scores.max() - scores.min())


def test_noisy_early_log_spaced_points_do_not_win():
    # a jump of 0.03 between steps 1 and 2 is steeper per step than the real rise, but small
    scores = sigmoid_curve(500, noise=0.0)
    scores[2] += 0.03
    assert locate_phase_change(STEPS, scores).step == 475


def test_flat_or_falling_curves_have_no_phase_change():
    assert locate_phase_change(STEPS, np.full(len(STEPS), 0.3)) is None
    assert locate_phase_change(STEPS, sigmoid_curve(300)[::-1]) is None
    assert locate_phase_change([5], [0.9]) is None


def test_curve_change_points_find_a_noisy_rise_and_fall_at_any_scale():
    # an LLC-like curve: 10 -> 60 around step 300, back down to 30 around step 700, noise 2 (5 % of range)
    steps = np.asarray(STEPS, dtype=float)
    rng = np.random.default_rng(1)
    values = (10 + 50 / (1 + np.exp(-(steps - 300) / 25)) - 30 / (1 + np.exp(-(steps - 700) / 25))
              + 2 * rng.standard_normal(len(steps)))
    values[1] = 500.0  # a wild early checkpoint (below 5 % of the run) is ignored
    rise, fall = curve_change_points(STEPS, values)
    assert rise.slope > 0 and abs(rise.step - 300) <= 50
    assert fall.slope < 0 and abs(fall.step - 700) <= 50


def test_curve_change_points_over_uneven_checkpoints():
    # A 60-step induction run's LLC (checkpoints 0..16 log-spaced, then 20, 40, 60): it barely
    # moves from 16 to 20 (0.004 per step) and rises from 20 on (0.038, then 0.034 per step).
    # Smoothing the values alone put the rise at 16 -> 20, whose 4 steps divided the window's change.
    steps = [0, 1, 2, 4, 8, 16, 20, 40, 60]
    llc = [0.6518, 0.6520, 0.6536, 0.6555, 0.6631, 0.7160, 0.7334, 1.4938, 2.1779]
    (rise,) = curve_change_points(steps, llc)
    assert rise.start_step >= 20 and rise.slope > 0.02
    # evenly spaced checkpoints: the smoothed steps are the checkpoints themselves
    even = curve_change_points([0, 10, 20, 30, 40, 50, 60], [0, 0, 0, 1, 2, 2, 2])
    assert [(c.start_step, c.end_step) for c in even] == [(20, 30)]


def test_curve_change_points_of_flat_or_short_curves_are_empty():
    rng = np.random.default_rng(0)
    assert curve_change_points(STEPS, 40 + 0.5 * rng.standard_normal(len(STEPS))) == []
    assert curve_change_points([0, 100], [1.0, float("nan")]) == []
    with pytest.raises(ValueError, match="window"):
        curve_change_points(STEPS, np.ones(len(STEPS)), window=0)


def test_the_last_value_of_a_repeated_step_wins():
    # 40 flat points in shuffled order, then step 200 given again with a rise: that later value is
    # the one kept (pandas' default sort is not stable, and put it before the earlier 0.0 here)
    steps = [*np.random.default_rng(3).permutation(np.arange(0, 400, 10)), 200]
    change = locate_phase_change(steps, [0.0] * 40 + [0.8])
    assert change is not None and change.after == pytest.approx(0.8) and 190 <= change.step <= 210
    points = curve_change_points(steps, [1.0] * 40 + [9.0], window=1, skip_share=0.0)
    assert [p.after for p in points if p.slope > 0] == [pytest.approx(9.0)]
