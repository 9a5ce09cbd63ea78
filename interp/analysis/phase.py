"""Locating the induction-head phase change on a curve of head scores over training.

Olsson et al. 2022 ("In-context learning and induction heads") see induction heads form in a
short window of training, visible as a sudden rise of the prefix-matching score. Here the curve
is the best prefix-matching score over heads at each checkpoint, and the phase change is where
it rises most steeply.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["MIN_RISE", "MIN_SEGMENT_SHARE", "PhaseChange", "best_head_curve", "curve_change_points",
           "locate_phase_change"]

#: Default: a curve whose range (max - min) is below this has no phase change.
MIN_RISE = 0.1
#: Default: a stretch of the curve counts only if it rises by at least this share of its range.
MIN_SEGMENT_SHARE = 0.1


@dataclass(frozen=True)
class PhaseChange:
    """The steepest rise of a score curve.

    Attributes:
        step: the located step, the middle of the steepest stretch (rounded down).
        start_step, end_step: the checkpoints bounding that stretch (consecutive where one step
            between two checkpoints rises far enough, :func:`locate_phase_change`).
        before, after: the score at ``start_step`` and ``end_step``.
        slope: ``(after - before) / (end_step - start_step)``, score per step.
    """

    step: int
    start_step: int
    end_step: int
    before: float
    after: float
    slope: float


def locate_phase_change(
    steps: Sequence[int] | np.ndarray | pd.Series,
    scores: Sequence[float] | np.ndarray | pd.Series,
    *,
    min_rise: float = MIN_RISE,
    min_segment_share: float = MIN_SEGMENT_SHARE,
    falling: bool = False,
) -> PhaseChange | None:
    """The step of the steepest rise of ``scores`` over ``steps``, or None when the curve does not rise.

    Definition: sort the points by step (NaN scores dropped). Checkpoints are often log-spaced
    early in training, where tiny step differences turn noise into steep slopes, so a stretch of
    the curve counts only if it rises by at least ``min_segment_share`` (default 10 %) of the
    curve's range ``max - min``: from each checkpoint, the candidate is the stretch to the first
    later checkpoint at least that much higher (the next one, where one step between two
    checkpoints rises that far), and its slope is ``rise / (step difference)``. The phase change
    is the candidate with the largest slope; its ``step`` is the stretch's midpoint. Returns None
    when the range is below ``min_rise`` (default 0.1, for scores in [0, 1]), when no later
    checkpoint is that much higher than an earlier one (the curve only falls), or when fewer than
    two points remain. The stretch, not the step between two checkpoints, makes the answer
    independent of how densely the run was checkpointed: a rise taken every 4 steps is found
    where the same run checkpointed every 20 steps has it (it was "no phase change" at 4, where
    no single step rose by 10 % of the range).

    With ``falling=True`` the same rule finds the steepest *fall* (the rule applied to
    ``-scores``; ``before``, ``after`` and ``slope`` stay in the curve's own units, the slope
    negative): the change point of the in-context learning score, which falls as induction
    heads form (``interp/detectors/text/detector.py``; ``docs/scores.md``).

    For the induction phase change pass the best prefix-matching score per checkpoint
    (:func:`best_head_curve`).
    """
    frame = pd.DataFrame({"step": np.asarray(steps, dtype=np.int64), "score": np.asarray(scores, dtype=float)})
    frame = frame.dropna().sort_values("step", kind="stable").drop_duplicates("step", keep="last")
    if len(frame) < 2:
        return None
    x, y = frame["step"].to_numpy(), frame["score"].to_numpy()
    sign = -1.0 if falling else 1.0
    y = sign * y
    span = float(y.max() - y.min())
    if span < min_rise:
        return None
    stretches = [(i, i + 1 + int(hit[0])) for i in range(len(y) - 1)
                 if (hit := np.flatnonzero(y[i + 1:] >= y[i] + min_segment_share * span)).size]
    if not stretches:
        return None
    i, j = max(stretches, key=lambda s: (y[s[1]] - y[s[0]]) / (x[s[1]] - x[s[0]]))  # the first of equal slopes
    return PhaseChange(
        step=int((x[i] + x[j]) // 2),
        start_step=int(x[i]),
        end_step=int(x[j]),
        before=float(sign * y[i]),
        after=float(sign * y[j]),
        slope=float(sign * (y[j] - y[i]) / (x[j] - x[i])),
    )


def curve_change_points(
    steps: Sequence[int] | np.ndarray | pd.Series,
    values: Sequence[float] | np.ndarray | pd.Series,
    *,
    window: int = 3,
    skip_share: float = 0.05,
    min_relative: float = 0.1,
) -> list[PhaseChange]:
    """The change points of a noisy curve of any scale (an LLC curve): its steepest rise and steepest fall.

    Definition: sort the points by step (NaN values dropped) and keep those from ``skip_share``
    (default 5 %) of the last step on (the log-spaced first checkpoints of a run are a few steps
    apart, where any change looks steep). Smooth the curve with a centred running mean over
    ``window`` consecutive checkpoints (default 3; fewer at the ends), of the steps and the values
    alike: each smoothed point is its window's mean step and mean value. (Smoothing the values
    alone, over unevenly spaced checkpoints, divided a change spread over the window by the
    shortest gap inside it, and put the steepest rise where the curve barely moves.) The change
    points are the steepest rise and the steepest fall of the smoothed curve, each by
    :func:`locate_phase_change` (a segment counts only if it moves by at least
    :data:`MIN_SEGMENT_SHARE` of the range), found only when the smoothed curve's range is at
    least ``min_relative`` (default 10 %) of its largest absolute value. Returns 0, 1 or 2
    :class:`PhaseChange` on the smoothed curve (``start_step``/``end_step`` are its points' steps,
    rounded; ``before``/``after`` its values; a fall has a negative ``slope``), sorted by step.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    frame = pd.DataFrame({"step": np.asarray(steps, dtype=np.int64), "value": np.asarray(values, dtype=float)})
    frame = frame.dropna().sort_values("step", kind="stable").drop_duplicates("step", keep="last")
    if frame.empty:
        return []
    frame = frame[frame["step"] >= skip_share * frame["step"].max()]
    if len(frame) < 2:
        return []
    smooth = frame.astype(float).rolling(window, center=True, min_periods=1).mean()
    at, value = smooth["step"].round().to_numpy(), smooth["value"].to_numpy()
    floor = min_relative * float(np.abs(value).max())
    found = [locate_phase_change(at, value, min_rise=floor, falling=falling) for falling in (False, True)]
    return sorted((c for c in found if c is not None), key=lambda c: c.step)


def best_head_curve(table: pd.DataFrame, metric: str = "prefix_matching") -> pd.DataFrame:
    """Per checkpoint, the head with the highest ``metric``: columns ``step, score, layer, head``.

    ``table`` is the long scores table of one run (:func:`interp.score_checkpoints`); rows of
    other metrics, model-level rows and error rows are ignored. Sorted by step.
    """
    rows = table[(table["metric"] == metric) & table["layer"].notna()].dropna(subset=["value", "step"])
    if rows.empty:
        return pd.DataFrame({"step": pd.Series(dtype="int64"), "score": pd.Series(dtype=float),
                             "layer": pd.Series(dtype="int64"), "head": pd.Series(dtype="int64")})
    best = rows.loc[rows.groupby("step")["value"].idxmax()]
    return pd.DataFrame({
        "step": best["step"].astype("int64").to_numpy(),
        "score": best["value"].to_numpy(dtype=float),
        "layer": best["layer"].astype("int64").to_numpy(),
        "head": best["head"].astype("int64").to_numpy(),
    }).sort_values("step", ignore_index=True)
