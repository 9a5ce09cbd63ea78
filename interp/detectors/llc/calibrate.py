"""Calibration of the SGLD sampler, once per run, on its final checkpoint, checked on the earlier
ones (``docs/scores.md``, "LLC").

The estimate depends on the step size ``epsilon``, the localisation ``gamma`` and the inverse
temperature ``nbeta``; a run's checkpoints are only comparable at one setting. :func:`calibrate`
chooses it from the run's final checkpoint with the chain shape every checkpoint is then scored
with (:class:`interp.detectors.llc.estimate.Sampling`: 2 chains, 50 burn-in steps, 100 draws):

1. ``nbeta = m / log(m)``, ``m`` the examples in one SGLD batch (sequences, or training pairs
   for a full-batch task): devinterp's ``default_nbeta``.
2. For ``gamma`` in :data:`GAMMAS` (weakest first), for ``epsilon`` in :data:`EPSILONS` (largest
   first), run the chains; a trial *passes* when
   - no chain diverges (``estimate.DIVERGED_RISE``; a NaN or infinite loss or weight),
   - the trace settles: the mean loss rise over the second half of the draws differs from the
     first half's by at most :data:`SETTLE_TOL` (10 %) of the mean over all draws,
   - few draws fall below the starting loss: at most :data:`MAX_BELOW` (5 %) of the draws have
     ``L(w_t; B_t) < L(w*; B_t)``,
   - the estimate is positive.
3. The chosen ``(epsilon, gamma)`` is the largest ``epsilon`` that passes, whose estimate the
   next smaller ``epsilon`` reproduces within :data:`AGREE` (20 %) (the estimate has stopped
   depending on the step size), and that *holds across the run*. The smaller step's reference
   trial burns in for the same SGLD time, ``burnin * epsilon / smaller`` steps (a chain moves
   about ``epsilon`` per step, so at a smaller step the scoring's burn-in ends before the chain
   has relaxed and the trace is still rising); it must not diverge and must agree (the trace
   checks above are the scored setting's: on the reference they only add noise). Holding
   across the run: on each of the ``checks``, the run's earlier checkpoints (the detector passes
   every one, or :data:`CHECKS` spread evenly over a longer run), the first chain of the estimate
   (the scoring's own chain 0: same seed, same batches) does not diverge. A run's sharpest
   checkpoint need not be its last (a modular-addition run at the end of memorisation), and a
   setting that diverges there would give error rows instead of a curve. A candidate that
   diverges on a check is dropped (a trial line says where; the later candidates are checked
   there first) and the search goes on down the step sizes; the first ``gamma`` with such a
   setting wins. Without one, the first passing ``epsilon`` that holds across the run (first
   ``gamma`` first, largest ``epsilon`` first) is chosen and :attr:`Calibration.plateau` is
   False. Nothing passing is a :class:`CalibrationError` naming every trial's failure; each
   checkpoint of the run is then an error row saying so. The checks run only on candidates, one
   chain each, side by side on the estimate's ``CHAIN_THREADS`` threads: about half a scoring
   pass over the run per candidate, divided by the threads (a diverging chain stops at once).

The chosen setting is fixed for every checkpoint of the run and recorded in the model rows
(``llc_epsilon``, ``llc_gamma``, ``llc_nbeta``; ``llc_plateau`` says whether it is on a plateau).
Deterministic for a seed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from interp.detectors.llc.estimate import CHAIN_THREADS, LLCEstimate, Sampling, estimate_llc

__all__ = ["AGREE", "CHECKS", "EPSILONS", "GAMMAS", "MAX_BELOW", "SETTLE_TOL", "Calibration", "CalibrationError",
           "calibrate", "default_nbeta", "summary_line", "trial_problem"]

EPSILONS = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5)
#: Weakest first; 10000 is reached only where no setting of 100 or 1000 holds across the run (the
#: default modadd run of seed 0 trained on AVX-512 kernels, whose end of memorisation is sharper).
GAMMAS = (100.0, 1000.0, 10000.0)
SETTLE_TOL = 0.10
MAX_BELOW = 0.05
AGREE = 0.20
#: At most this many earlier checkpoints of a run on which a setting must not diverge (every one when fewer).
CHECKS = 32


class CalibrationError(RuntimeError):
    """No step size passed the checks (on the final checkpoint, and no divergence on the earlier ones)."""


@dataclass(frozen=True)
class Calibration:
    """The chosen setting, whether it is on a plateau, and what each trial gave (for the record)."""

    sampling: Sampling
    plateau: bool
    trials: tuple[str, ...]


def default_nbeta(examples: int) -> float:
    """devinterp's default inverse temperature ``m / log(m)`` for ``m`` examples per batch (1 for m <= 1)."""
    return examples / math.log(examples) if examples > 1 else 1.0


def trial_problem(estimate: LLCEstimate) -> str | None:
    """Why a trial fails the checks of the module docstring, or None when it passes."""
    if estimate.diverged:
        return estimate.diverged
    draws = estimate.draws
    half = draws.shape[1] // 2
    first, second, whole = draws[:, :half].mean(), draws[:, half:].mean(), draws.mean()
    if abs(second - first) > SETTLE_TOL * abs(whole):
        return (f"the loss trace does not settle (mean rise {first:.3g} then {second:.3g}, more than "
                f"{SETTLE_TOL:.0%} apart)")
    below = float((draws < 0).mean())
    if below > MAX_BELOW:
        return f"{below:.0%} of the draws fall below the starting loss (at most {MAX_BELOW:.0%})"
    if not estimate.llc > 0:
        return f"the estimate {estimate.llc:.3g} is not positive"
    return None


def calibrate(model: Any, loss_fn: Callable[[Any, Any], Any], data: Sequence[Any], examples: int, *,
              chains: int = 2, draws: int = 100, burnin: int = 50, seed: int = 0,
              epsilons: Sequence[float] = EPSILONS, gammas: Sequence[float] = GAMMAS,
              checks: Sequence[tuple[str, Callable[[], Any]]] = ()) -> Calibration:
    """The setting of the module docstring for ``model`` (the run's final checkpoint).

    ``checks``: ``(name, load)`` pairs of earlier checkpoints, ``load()`` returning the model (or
    None: not checked); a setting that passes on ``model`` must also not diverge on any of them
    (its first chain).
    """
    nbeta = default_nbeta(examples)
    trials: list[str] = []
    candidates: list[Sampling] = []  # passing settings without a plateau, in order of preference

    order = list(checks)

    def holds(sampling: Sampling) -> bool:
        found = _diverges_elsewhere(order, loss_fn, data, sampling)
        if found is None:
            return True
        index, where = found
        order.insert(0, order.pop(index))  # the next candidate is tried there first: it diverged there
        trials.append(f"epsilon={sampling.epsilon:g} gamma={sampling.gamma:g}: {where}")
        return False

    steps = sorted(epsilons, reverse=True)
    for gamma in gammas:
        passed_here = False
        for i, epsilon in enumerate(steps):
            sampling = Sampling(epsilon, gamma, nbeta, chains=chains, draws=draws, burnin=burnin, seed=seed)
            estimate = estimate_llc(model, loss_fn, data, sampling)
            problem = trial_problem(estimate)
            trials.append(f"epsilon={epsilon:g} gamma={gamma:g}: " + (problem or f"passes, llc {estimate.llc:.4g}"))
            if problem is not None:
                if passed_here:  # a smaller step failing after a larger one passed: no plateau further down
                    break
                continue
            passed_here = True
            if i + 1 < len(steps) and _agrees(model, loss_fn, data, sampling, steps[i + 1], estimate.llc, trials):
                if holds(sampling):
                    return Calibration(sampling, True, tuple(trials))
                continue  # diverges on an earlier checkpoint: the smaller steps are the candidates
            candidates.append(sampling)
    for sampling in candidates:
        if holds(sampling):
            return Calibration(sampling, False, tuple(trials))
    raise CalibrationError(f"no SGLD step size passed the calibration at nbeta={nbeta:.4g}: " + "; ".join(trials))


def _agrees(model: Any, loss_fn: Callable[[Any, Any], Any], data: Sequence[Any], sampling: Sampling,
            smaller: float, llc: float, trials: list[str]) -> bool:
    """Whether the next smaller step, burnt in for the same SGLD time, does not diverge and agrees with ``llc``."""
    burnin = round(sampling.burnin * sampling.epsilon / smaller)
    reference = dataclasses.replace(sampling, epsilon=smaller, burnin=burnin)
    estimate = estimate_llc(model, loss_fn, data, reference)
    problem = estimate.diverged
    if problem is None and not abs(estimate.llc - llc) <= AGREE * abs(estimate.llc):
        problem = f"llc {estimate.llc:.4g}, more than {AGREE:.0%} from {llc:.4g}"
    trials.append(f"epsilon={smaller:g} gamma={sampling.gamma:g} burn-in {burnin} (the same SGLD time): "
                  + (problem or f"agrees, llc {estimate.llc:.4g}"))
    return problem is None


def _diverges_elsewhere(checks: Sequence[tuple[str, Callable[[], Any]]], loss_fn: Callable[[Any, Any], Any],
                        data: Sequence[Any], sampling: Sampling) -> tuple[int, str] | None:
    """``(index, where)``: the first of ``checks`` on which the setting diverges and why, or None.

    The checks run on ``CHAIN_THREADS`` threads, each on one intra-op thread (torch releases
    the GIL in its ops; each chain has its own generator, so the result is the sequential one's).
    A divergence cancels the checks not yet started.
    """
    from circuits import one_thread

    first_chain = dataclasses.replace(sampling, chains=1)

    def check(item: tuple[str, Callable[[], Any]]) -> str | None:
        name, load = item
        model = load()
        if model is None:
            return None
        with one_thread():
            diverged = estimate_llc(model, loss_fn, data, first_chain).diverged
        return f"at {name}: {diverged}" if diverged else None

    pool = ThreadPoolExecutor(max_workers=CHAIN_THREADS)
    try:
        return next(((i, where) for i, where in enumerate(pool.map(check, checks)) if where), None)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def summary_line(calibration: Calibration) -> str:
    s = calibration.sampling
    return (f"epsilon={s.epsilon:g} gamma={s.gamma:g} nbeta={s.nbeta:.4g}, {s.chains} chains x ({s.burnin} burn-in + "
            f"{s.draws} draws)" + ("" if calibration.plateau else " (no plateau over step sizes)"))

