"""The three phases of grokking located on progress-measure curves (Nanda et al. 2023, section 5.2).

:func:`grokking_phases` reads the output of :func:`circuits.progress_measures` (a DataFrame, one
row per checkpoint) and returns the steps at which memorization, circuit formation and cleanup
end, as a :class:`GrokkingPhases`. Score definitions: ``docs/scores.md``.

Deprecated British spellings, kept for one release (each use warns ``DeprecationWarning``):
``GrokkingPhases.memorisation_end`` and ``GrokkingPhases(memorisation_end=...)``,
``grokking_phases(memorised_loss=...)``, and ``circuits.progress.MEMORISED_LOSS``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "CIRCUIT_LOSS",
    "CLEAN_ACCURACY",
    "CLEAN_FRACTION",
    "GROKKED_ACCURACY",
    "MEMORIZED_ACCURACY",
    "MEMORIZED_LOSS",
    "GrokkingPhases",
    "grokking_phases",
]

#: Default thresholds of :func:`grokking_phases` (nats and accuracies; see its docstring).
MEMORIZED_LOSS = 0.05
MEMORIZED_ACCURACY = 0.99
CIRCUIT_LOSS = 0.3
GROKKED_ACCURACY = 0.5
CLEAN_ACCURACY = 0.99
CLEAN_FRACTION = 0.1

def _deprecated(old: str, new: str) -> None:
    """Warn, pointing at the caller of the function that called this one."""
    message = f"{old} is deprecated; use {new} (American spelling, as in TransformerLens)"
    warnings.warn(message, DeprecationWarning, stacklevel=3)


class _Required:
    """Default of the required fields of :class:`GrokkingPhases` (which may come by the old name)."""

    def __repr__(self) -> str:
        return "<required>"


_REQUIRED = _Required()


@dataclass(frozen=True, init=False)
class GrokkingPhases:
    """Steps at which the phases of grokking end (Nanda et al. 2023, section 5.2); None: not reached.

    Attributes:
        memorization_end: the model has fitted its training pairs.
        circuit_formation_end: the Fourier circuit alone (restricted logits) solves the task.
        cleanup_end: the memorisation that hurt held-out pairs is gone; the model generalises.
        grokking_step: the test-accuracy jump (test accuracy first reaches one half).

    ``memorisation_end`` (attribute and keyword) is the deprecated spelling of ``memorization_end``.
    """

    memorization_end: int | None
    circuit_formation_end: int | None
    cleanup_end: int | None
    grokking_step: int | None = None

    def __init__(
        self,
        memorization_end: int | None = _REQUIRED,  # type: ignore[assignment]
        circuit_formation_end: int | None = _REQUIRED,  # type: ignore[assignment]
        cleanup_end: int | None = _REQUIRED,  # type: ignore[assignment]
        grokking_step: int | None = None,
        *,
        memorisation_end: int | None = _REQUIRED,  # type: ignore[assignment]
    ) -> None:
        if memorisation_end is not _REQUIRED:
            _deprecated("GrokkingPhases(memorisation_end=...)", "memorization_end")
            if memorization_end is not _REQUIRED:
                raise TypeError("GrokkingPhases() got both memorization_end and memorisation_end")
            memorization_end = memorisation_end
        values = {
            "memorization_end": memorization_end,
            "circuit_formation_end": circuit_formation_end,
            "cleanup_end": cleanup_end,
        }
        missing = [name for name, value in values.items() if value is _REQUIRED]
        if missing:
            raise TypeError(f"GrokkingPhases() missing required argument(s): {', '.join(missing)}")
        for name, value in {**values, "grokking_step": grokking_step}.items():
            object.__setattr__(self, name, value)

    @property
    def memorisation_end(self) -> int | None:
        """Deprecated: use :attr:`memorization_end`."""
        _deprecated("GrokkingPhases.memorisation_end", "memorization_end")
        return self.memorization_end


def _first_step(steps: np.ndarray, ok: np.ndarray, start: int | None = None) -> int | None:
    if start is not None:
        ok = ok & (steps >= start)
    hits = np.flatnonzero(ok)
    return int(steps[hits[0]]) if hits.size else None


def grokking_phases(
    measures: pd.DataFrame,
    *,
    memorized_loss: float = MEMORIZED_LOSS,
    memorized_accuracy: float = MEMORIZED_ACCURACY,
    circuit_loss: float = CIRCUIT_LOSS,
    grokked_accuracy: float = GROKKED_ACCURACY,
    clean_accuracy: float = CLEAN_ACCURACY,
    clean_fraction: float = CLEAN_FRACTION,
    memorised_loss: float | None = None,
) -> GrokkingPhases:
    """Locate the three phases of grokking on progress-measure curves (Nanda et al. 2023, 5.2).

    The paper's phases: *memorisation* (train loss falls, test and restricted loss stay high),
    *circuit formation* (restricted loss falls and excluded loss rises while test loss stays
    high: the Fourier circuit grows beside the memorised lookup table), *cleanup* (weight decay
    removes the memorisation; test loss drops and the weight norm falls). Rules, on the rows of
    ``measures`` (:func:`circuits.progress_measures`) sorted by step, each "first step" among checkpoints:

    - ``memorization_end``: first step at which the training pairs are fitted: ``train_loss <=
      memorized_loss`` (default 0.05 nats, about 1 % of the chance loss ln 113) or, where
      ``measures`` has it, ``train_accuracy >= memorized_accuracy`` (default 0.99), whichever
      comes first, and no later than the grokking step. The accuracy rule keeps a loss that
      hovers at the threshold (0.0514 at epoch 225 of one run, 0.05 one checkpoint earlier on
      another machine) from moving the end of memorisation past the test-accuracy jump. A run
      that fits its training pairs only after the jump had no memorisation phase: None.
    - ``circuit_formation_end``: first step after memorisation with ``restricted_loss <=
      circuit_loss`` (default 0.3 nats, 6 % of chance): the final key frequencies' directions
      alone give the right answer ~3/4 of the probability (geometric mean over all p^2 pairs,
      held-out ones included). On the two grokking runs we first measured (p = 113, 30 % split:
      the first fast preset of ``interp train modadd``, constant weight decay 2, and plain AdamW
      at lr 3e-3) the restricted loss crossed 0.3 while test accuracy was still 0.25-0.36, before
      the grokking step. With a weight decay rising from 1 to 8 (the default before the ramp to
      14), where the test-accuracy jump takes under 100 epochs, it crossed one checkpoint *after*
      the grokking step on seed 0 (675 vs 600, checkpoints every 75 epochs), before 99 % test
      accuracy.
    - ``grokking_step``: first step with ``test_accuracy >= grokked_accuracy`` (default 0.5),
      the middle of the test-accuracy jump.
    - ``cleanup_end``: first step at or after the grokking step where (a) ``test_accuracy >=
      clean_accuracy`` (default 0.99) and (b) the weight norm has finished its fall: it is within
      ``clean_fraction`` (default 10 %) of the way from its value at the grokking step down to its
      value at the last checkpoint. Weight decay prunes the memorised components, so the sum of
      squared weights falls steeply during cleanup and then levels off (the paper's fig. 7).

    The restricted loss uses the final model's key frequencies, so it falls while the test loss
    is still high: ``memorization_end < circuit_formation_end <= cleanup_end`` and
    ``grokking_step <= cleanup_end`` on a run that groks, with circuit formation and the grokking
    step within a checkpoint or two of each other, in either order (above); the rules do not
    enforce an order. A phase not reached within the run is
    None; ``circuit_formation_end`` is None when ``memorization_end`` is, and ``cleanup_end``
    when ``grokking_step`` or ``circuit_formation_end`` is; ``grokking_step`` is located alone.
    Needs a train/test split (``test_accuracy`` not all NaN); raises ``ValueError`` otherwise.
    ``memorised_loss`` is the deprecated spelling of ``memorized_loss`` (``DeprecationWarning``).
    """
    if memorised_loss is not None:
        _deprecated("memorised_loss", "memorized_loss")
        memorized_loss = memorised_loss
    if not isinstance(measures, pd.DataFrame):
        raise TypeError(f"measures must be a DataFrame (the output of progress_measures), got {type(measures).__name__}")
    need = {"step", "train_loss", "test_accuracy", "restricted_loss", "weight_norm"}
    missing = need - set(measures.columns)
    if missing:
        raise ValueError(f"measures lack columns {sorted(missing)}; pass the output of progress_measures")
    frame = measures.sort_values("step")
    if frame.empty or frame["test_accuracy"].isna().all():
        raise ValueError("grokking_phases needs measures with a train/test split (test_accuracy is all NaN)")
    steps = frame["step"].to_numpy(dtype=np.int64)
    fitted = frame["train_loss"].to_numpy() <= memorized_loss
    if "train_accuracy" in frame:
        fitted |= frame["train_accuracy"].to_numpy() >= memorized_accuracy
    acc = frame["test_accuracy"].to_numpy()
    grok = _first_step(steps, acc >= grokked_accuracy)
    mem = _first_step(steps, fitted)
    if mem is not None and grok is not None and mem > grok:  # it generalised before it had memorised
        mem = None
    circuit = None if mem is None else _first_step(
        steps, frame["restricted_loss"].to_numpy() <= circuit_loss, start=mem + 1
    )
    clean = None
    if grok is not None and circuit is not None:
        norm = frame["weight_norm"].to_numpy()
        at_grok, last = norm[steps == grok][0], norm[-1]
        settled = norm <= last + clean_fraction * max(at_grok - last, 0.0)
        clean = _first_step(steps, (acc >= clean_accuracy) & settled, start=grok)
    return GrokkingPhases(memorization_end=mem, circuit_formation_end=circuit, cleanup_end=clean, grokking_step=grok)
