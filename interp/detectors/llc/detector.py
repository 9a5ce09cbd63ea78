"""The ``llc`` detector: the local learning coefficient of each checkpoint, whole model and per head.

Per checkpoint, on the run's own training distribution and loss (``RunInfo.rebuild_task``:
``train_loss(model, step)``, the answer token for modular addition and the fact tasks, the next
token for the induction and text runs), :func:`interp.detectors.llc.estimate.estimate_llc` gives

- model rows: ``llc`` and ``llc_std`` (mean and spread over chains), the setting they were
  estimated at, ``llc_epsilon``, ``llc_gamma``, ``llc_nbeta``, and ``llc_plateau``: 1 when the
  calibration found the setting on a plateau over step sizes, 0 when it fell back to a setting
  without one (the values then depend on the step size), NaN when ``setting=`` gave it;
- head rows (attention models): ``llc_head`` and ``llc_head_std``, the refined LLC of one head
  (SGLD restricted to its ``W_Q, W_K, W_V, W_O`` slices and Q/K/V biases, devinterp's masks).

The setting is chosen once per run in ``prepare`` from the final checkpoint, checked not to
diverge on every earlier one (at most :data:`~interp.detectors.llc.calibrate.CHECKS`, spread evenly)
(:mod:`interp.detectors.llc.calibrate`, whose docstring is the procedure) and kept for every
checkpoint. SGLD batches: :data:`SGLD_BATCH` sequences (a task with a smaller batch keeps its
own; the fact tasks' queries and full-batch modular addition's training pairs: :data:`FULL_BATCH`), a pool of :data:`POOL` batches from steps :data:`BATCH_BASE`
on of the run's data stream, the same for every chain and checkpoint. A diverged chain, a
failed calibration or a run without ``run.json`` is an error row with the reason, never a number.

Cost: the whole-model LLC is ``chains x (burnin + draws)`` = 300 forward and backward passes per
checkpoint; each head costs as much again. The option string in the environment variable
``INTERP_LLC`` (read by ``prepare``, in the process that plans the run) chooses what is scored:
``heads=final`` (default: head rows at the final checkpoint only), ``heads=all``, ``heads=none``,
or ``heads=L0H1+L1H3`` (those heads, at every checkpoint); ``chains=N``, ``draws=N``,
``burnin=N``, ``seed=N``; ``checks=N``: at most N earlier checkpoints the calibration must not
diverge on (default 32, every checkpoint of the toolkit's runs; 0: the final checkpoint only);
``setting=EPSILON/GAMMA/NBETA`` skips the calibration. Example:
``INTERP_LLC=heads=all,draws=200 interp score RUN --detectors heads,llc --out scores.parquet``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from pathlib import Path
from typing import Any

import pandas as pd
from transformer_lens import HookedTransformer

from interp.detectors.llc.calibrate import Calibration, calibrate, summary_line
from interp.detectors.llc.estimate import Sampling, devinterp_missing, estimate_llc, head_masks
from interp.detectors.llc.options import ENV, Options, head_list, parse_options, settings
from interp.detectors.spec import Detector, Row
from interp.runs.layout import RunError, list_checkpoints
from interp.runs.record import read_run

__all__ = ["DETECTOR", "ENV", "HEAD_METRICS", "METRICS", "LLCContext", "Options", "parse_options", "run_loss",
           "settings"]

METRICS = ("llc", "llc_std", "llc_epsilon", "llc_gamma", "llc_nbeta", "llc_plateau")
HEAD_METRICS = ("llc_head", "llc_head_std")
SGLD_BATCH = 16
#: Examples per SGLD step for a full-batch task (modular addition's 3,830 training pairs).
FULL_BATCH = 256
POOL = 16
BATCH_BASE = 1_000_000


@dataclasses.dataclass(frozen=True)
class LLCContext:
    """What ``prepare`` fixes for a run: its directory, the setting, the head policy (picklable)."""

    run_dir: str | None
    sampling: Sampling | None
    options: Options
    final_digest: str
    reason: str | None = None  # why no checkpoint of the run gets a number
    calibration: tuple[str, ...] = ()
    plateau: bool | None = None  # None: the setting was given, not calibrated


def applies(model: HookedTransformer) -> str | None:
    return devinterp_missing()


@functools.lru_cache(maxsize=4)
def run_loss(run_dir: str) -> tuple[Any, tuple[Any, ...], int]:
    """``(loss, batches, examples)``: ``loss(model, batch)``, the run's own loss on one SGLD batch;
    the batches (the same for every chain and checkpoint); examples per batch.

    A task that can hand out a step's batch (``train_batch``, ``batch_loss``: the sequence tasks)
    has its batches drawn here, once, instead of at every SGLD step; for the others a batch is
    the data stream's step number (``train_loss(model, step)``). :class:`RunError` without
    ``run.json`` or when its task cannot be rebuilt.
    """
    task, steps, examples = _sgld_task(run_dir)
    if hasattr(task, "train_batch"):
        return task.batch_loss, tuple(task.train_batch(step) for step in steps), examples
    return _loss(task), steps, examples


def _sgld_task(run_dir: str) -> tuple[Any, tuple[int, ...], int]:
    """``(task, steps, examples)``: the run's task at the SGLD batch size, the batch steps, examples per batch."""
    from interp.tasks.registry import make_task

    info = read_run(run_dir)
    if info is None:
        raise RunError(f"{run_dir}: no run.json, so no training task and loss to estimate the LLC on "
                       "(the llc detector needs a run trained by interp train)")
    task = info.rebuild_task()
    options = task.options
    batches = tuple(range(BATCH_BASE, BATCH_BASE + POOL))
    if hasattr(task, "batch_size"):  # queries of the fact tasks
        size = min(int(task.batch_size), FULL_BATCH)
    elif options.batch_size is not None:  # sequences (induction, text)
        size = min(options.batch_size, SGLD_BATCH)
    elif hasattr(task, "x_train") and len(task.y_train) > FULL_BATCH:  # full batch (modadd): minibatches of its split
        return _Minibatches(task, len(batches)), batches, FULL_BATCH
    else:
        return task, batches, max(int(len(getattr(task, "y_train", ()))), 1)
    if size != getattr(task, "batch_size", options.batch_size):
        task = make_task(dataclasses.replace(options, batch_size=size))
    return task, batches, size


class _Minibatches:
    """A full-batch task's loss on :data:`FULL_BATCH` training examples per step: ``pool`` fixed
    seeded subsets of its training split, each seen through a copy of the task (its own loss code)."""

    def __init__(self, task: Any, pool: int) -> None:
        import copy

        import torch

        g = torch.Generator().manual_seed(BATCH_BASE)
        self.parts = []
        for _ in range(pool):
            pick = torch.randperm(len(task.y_train), generator=g)[:FULL_BATCH]
            part = copy.copy(task)
            part.x_train, part.y_train = task.x_train[pick], task.y_train[pick]
            self.parts.append(part)

    def train_loss(self, model: Any, step: int) -> Any:
        return self.parts[(step - BATCH_BASE) % len(self.parts)].train_loss(model, step)


def _loss(task: Any) -> Any:
    return lambda model, step: task.train_loss(model, step)


def digest(model: HookedTransformer) -> str:
    """A hash of the weights: which checkpoint ``score`` is looking at (the final one or not)."""
    h = hashlib.sha1()
    for param in model.parameters():
        h.update(param.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def prepare(model: HookedTransformer, run_dir: Path | None) -> LLCContext:
    try:
        options = parse_options(os.environ.get(ENV))
    except ValueError as exc:
        return LLCContext(None, None, Options(), "", str(exc))
    final = digest(model)
    if options.heads not in ("none", "final", "all"):
        n_layers, n_heads = int(model.cfg.n_layers), int(model.cfg.n_heads)
        absent = [f"L{la}H{h}" for la, h in head_list(options.heads) if not (la < n_layers and h < n_heads)]
        if absent:
            return LLCContext(None, None, options, final, f"INTERP_LLC heads={options.heads}: {', '.join(absent)} "
                              f"not in this model ({n_layers} layers x {n_heads} heads)")
    if run_dir is None:
        return LLCContext(None, None, options, final, "a loose checkpoint has no run.json, so no training task and "
                          "loss to estimate the LLC on")
    from circuits import one_thread

    try:
        loss, batches, examples = run_loss(str(run_dir))
        if options.setting is not None:
            epsilon, gamma, nbeta = options.setting
            sampling = Sampling(epsilon, gamma, nbeta, options.chains, options.draws, options.burnin, options.seed)
            return LLCContext(str(run_dir), sampling, options, final, None, ("given by INTERP_LLC",))
        with one_thread():
            found: Calibration = calibrate(model, loss, batches, examples, chains=options.chains,
                                           draws=options.draws, burnin=options.burnin, seed=options.seed,
                                           checks=_checks(run_dir, options.checks))
    except Exception as exc:  # noqa: BLE001 - any failure here is every checkpoint's error row, not a stopped job
        return LLCContext(str(run_dir), None, options, final, f"{type(exc).__name__}: {exc}")
    return LLCContext(str(run_dir), found.sampling, options, final, None,
                      (summary_line(found), *found.trials), found.plateau)


def _checks(run_dir: Path, count: int) -> list[tuple[str, Any]]:
    """``(name, load)`` of the run's checkpoints before its last: every one, or ``count`` spread
    evenly over them (first and last included) when there are more; ``load`` gives None for an
    unreadable checkpoint or one with non-finite weights (scoring reports those itself)."""
    earlier = list_checkpoints(run_dir)[:-1]
    if count < 1 or not earlier:
        return []
    if len(earlier) > count:
        last = len(earlier) - 1
        earlier = [earlier[round(i * last / max(count - 1, 1))] for i in range(count)]
    return [(f"step {step}", functools.partial(_load_checked, path)) for step, path in earlier]


def _load_checked(path: Path) -> HookedTransformer | None:
    from interp.runs.checkpoints import load_model
    from interp.runs.soundness import nonfinite_weights

    try:
        model = load_model(path)
    except Exception:  # noqa: BLE001 - scoring gives that checkpoint its own error row
        return None
    return None if nonfinite_weights(model) else model


def _heads(model: HookedTransformer, context: LLCContext) -> list[tuple[int, int]]:
    policy = context.options.heads
    if policy == "none" or not int(model.cfg.n_heads):
        return []
    if policy == "final" and digest(model) != context.final_digest:
        return []
    if policy in ("final", "all"):
        return [(la, h) for la in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)]
    return list(head_list(policy))  # prepare refused heads the model lacks


def score(model: HookedTransformer, context: LLCContext) -> list[Row]:
    from circuits import one_thread

    if context.reason or context.sampling is None:
        raise RunError(context.reason or "the llc detector was not prepared for this run")
    loss, batches, _ = run_loss(context.run_dir)
    s = context.sampling
    with one_thread():
        whole = estimate_llc(model, loss, batches, s)
        if whole.diverged:
            raise RuntimeError(f"{whole.diverged} (epsilon={s.epsilon:g} gamma={s.gamma:g} nbeta={s.nbeta:.4g})")
        rows: list[Row] = [{"metric": "llc", "value": whole.llc}, {"metric": "llc_std", "value": whole.llc_std},
                           {"metric": "llc_epsilon", "value": s.epsilon}, {"metric": "llc_gamma", "value": s.gamma},
                           {"metric": "llc_nbeta", "value": s.nbeta},
                           {"metric": "llc_plateau", "value": float("nan") if context.plateau is None
                            else float(context.plateau)}]
        for layer, head in _heads(model, context):
            found = estimate_llc(model, loss, batches, s, masks=head_masks(model, layer, head))
            if found.diverged:
                raise RuntimeError(f"head L{layer}H{head}: {found.diverged}")
            rows += [{"metric": "llc_head", "value": found.llc, "layer": layer, "head": head},
                     {"metric": "llc_head_std", "value": found.llc_std, "layer": layer, "head": head}]
    return rows


def summary(model: HookedTransformer, run_dir: Path | None) -> str:
    """The whole-model LLC when ``INTERP_LLC`` is set (a calibration and a scoring: minutes), else how
    to get it; at the setting ``score`` gives it: calibrated on the run's latest sound checkpoint."""
    if run_dir is None or read_run(run_dir) is None:
        return ("llc: not estimated: no run.json beside this checkpoint, so no training task and loss to estimate "
                "the LLC on (the llc detector needs a run trained by interp train)")
    if ENV not in os.environ:
        return (f"llc: not estimated here (a calibration and {2 * 150} SGLD steps); set {ENV} (e.g. {ENV}=heads=none) "
                "to estimate it, or score the run with --detectors llc")
    latest = next(((step, found) for step, path in reversed(list_checkpoints(run_dir))
                   if (found := _load_checked(path)) is not None), None)
    context = prepare(model if latest is None else latest[1], run_dir)
    if context.reason:
        return f"llc: {context.reason}"
    try:
        rows = score(model, dataclasses.replace(context, options=dataclasses.replace(context.options, heads="none")))
    except Exception as exc:  # noqa: BLE001 - a chain that diverged: a line of the summary, as a row's error
        return f"llc: {type(exc).__name__}: {exc}"
    values = {row["metric"]: row["value"] for row in rows}
    where = "" if latest is None else f", the setting of step {latest[0]}, as score uses it"
    return (f"llc (whole model, {context.calibration[0]}{where}):\n"
            f"  llc {values['llc']:.3f} +- {values['llc_std']:.3f}")


def report(rows: pd.DataFrame) -> list[Any]:
    """The LLC curve with its spread, the other detectors' phases and the heads by flag (:mod:`.report`)."""
    from interp.detectors.llc.report import report as section

    return section(rows)


DETECTOR = Detector(
    name="llc",
    help="local learning coefficient (SGLD, devinterp) of the whole model and of each head, on the run's own loss",
    metrics=METRICS + HEAD_METRICS,
    applies=applies,
    prepare=prepare,
    score=score,
    summary=summary,
    report=report,
    report_rows=("heads", "fourier", "text"),
    version=2,  # 2: llc_plateau added
    settings=settings,
)
