"""One training loop for every task: AdamW, evaluation, checkpoints, resume, progress bar.

A run is a directory (docs/architecture.md, "Run format"). The loop writes ``run.json`` first, then
at every evaluation step a row of ``metrics.csv``, and at every checkpoint step the weights and
then the optimiser state. ``resume=True`` continues from the step of the optimiser state on disk
(the newest checkpoint whose optimiser state was written completely), dropping metrics rows after
it. Batches depend only on (seed, step), so a resumed run reproduces an uninterrupted one exactly.
A fresh run that fails before it has trained a step (out of memory in step 0's evaluation or its
first update, say) removes what it wrote, so that a retry with another recipe may use the same directory.
The run directory is locked while a run trains into it (:func:`interp.base.files.held_folder`): a
second training there is refused, not interleaved with the first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Callable
from pathlib import Path

import torch

from interp.base.allocator import reuse_freed_memory
from interp.runs.checkpoints import SHAPE_FIELDS, describe_shape, load_optimizer, read_checkpoint, save_checkpoint, \
    save_optimizer
from interp.base.files import FolderBusy, held_folder, holds_nothing, out_folder
from interp.tasks.models import build_model, config_to_dict
from interp.tasks.presets import TrainOptions
from interp.base.progress_bar import progress_bar
from interp.runs.layout import (
    CHECKPOINT_DIR,
    CheckpointError,
    METRICS_FILE,
    OPTIMIZER_FILE,
    RUN_FILE,
    RunError,
    checkpoint_path,
    list_checkpoints,
)
from interp.runs.record import read_metrics, read_run, write_metrics, write_run
from interp.runs.soundness import nonfinite_weights
from interp.tasks.registry import make_task


def checkpoint_steps(total: int, every: int | None = None) -> list[int]:
    """Steps to checkpoint: 0, log-spaced (powers of two) below ``every``, then every ``every``.

    ``every`` defaults to ``total // 20``, giving at least 20 regular checkpoints plus the early
    log-spaced ones, dense enough to see a phase change wherever it falls. ``total`` is always
    included.
    """
    every = max(1, every or total // 20)
    steps = {0, total}
    k = 1
    while k < min(every, total):
        steps.add(k)
        k *= 2
    steps.update(range(every, total + 1, every))
    return sorted(steps)


def train(
    options: TrainOptions,
    out: str | Path,
    resume: bool = False,
    quiet: bool = False,
    on_eval: Callable[[dict[str, float]], None] | None = None,
    steps: int | None = None,
    device: str | torch.device | None = None,
) -> Path:
    """Train ``options.task`` into run directory ``out``; returns ``out``.

    ``steps`` overrides ``options.steps``. With ``resume=True`` and a run in ``out``, the run's
    recorded options are used, not ``options``: it continues to its recorded length, or to
    ``steps`` when that is given and longer (``run.json`` then records the new length); the step
    it resumes from is evaluated again, so ``metrics.csv`` keeps a row for it.

    ``device``: where the model trains (:func:`interp.base.device.resolve_device`; None: the
    CPU). The initial weights are drawn on the CPU, so a seed starts the same model everywhere;
    checkpoints are written from the CPU and ``run.json`` records the device. A run may resume on
    another device (its floating-point results then differ in the last bits).

    Raises :class:`RunError` when ``out`` holds something other than an empty directory and
    ``resume`` is False, when a resume finds no usable state (no ``run.json``; no optimiser state
    beside checkpoints past step 0), when another process is training into ``out`` (it is locked
    while a run trains) or when its path is not UTF-8 (safetensors could not open the run);
    :class:`CheckpointError` when a checkpoint to resume from is corrupt or of another shape.
    """
    reuse_freed_memory()
    out = out_folder(out)
    if any("\ud800" <= c <= "\udfff" for c in os.path.abspath(out)):  # bytes that are not UTF-8
        raise RunError(f"{str(out)!r}: a path that is not UTF-8, which safetensors cannot open (the run could be "
                       "neither resumed nor loaded); choose another --out-dir")
    made = [folder for folder in (out, *out.parents) if not folder.exists()]  # deepest first
    try:
        with held_folder(out):  # two trainings never write one run
            return _train(options, out, resume, quiet, on_eval, steps, device, made)
    except FolderBusy:
        raise RunError(f"{out} is being trained into by another process: wait for it to end, or choose another "
                       "--out-dir") from None
    except BaseException:
        for folder in made:  # the folders made for a run that did not start (a refusal, a bad task)
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _train(options: TrainOptions, out: Path, resume: bool, quiet: bool,
           on_eval: Callable[[dict[str, float]], None] | None, steps: int | None,
           device: str | torch.device | None, made: list[Path]) -> Path:
    """:func:`train` in the folder it holds."""
    has_run = (out / RUN_FILE).exists()
    extended = False
    if resume and has_run:
        options, extended = _resume_options(out, options, steps)
    elif resume:
        raise RunError(f"{out} holds no {RUN_FILE} to resume from" + ("; drop --resume to start a run there"
                                                                       if holds_nothing(out) else ""))
    elif not holds_nothing(out):
        raise RunError(f"{out} exists and is not empty; pass --resume to continue the run in it")
    elif steps is not None:
        options = dataclasses.replace(options, steps=steps)
    task = make_task(options)
    if hasattr(task, "check_out_dir"):  # a task reading a folder the run must stay out of (text: its corpus)
        task.check_out_dir(out)
    if resume:
        read_run(out).check_same_data(task)
    model = build_model(task.model_config(), seed=options.seed, device=device)
    if hasattr(task, "init_model"):  # a task's own initialisation (text: sinusoidal positions)
        task.init_model(model)
    model.train()
    saved: list[int] = []  # the steps whose optimiser state was written
    try:
        _loop(out, options, task, model, resume, extended, quiet, on_eval, saved)
    except BaseException as exc:
        if not resume and max(saved, default=0) == 0:  # nothing trained (step 0's weights are the seed's): a retry starts clean
            _discard(out, made)
            if isinstance(exc, _Diverged):
                raise RunError(f"{out}: training diverged before step {exc.step} ({exc.bad}); nothing is kept, as "
                               "no step was trained before it: train again with a lower learning rate") from None
        raise
    return out


def _loop(out: Path, options: TrainOptions, task: object, model: torch.nn.Module, resume: bool, extended: bool,
          quiet: bool, on_eval: Callable[[dict[str, float]], None] | None, saved: list[int]) -> None:
    """:func:`train`'s steps, from the optimiser state on disk when resuming (``run.json`` rewritten
    when ``extended``), else from step 0 (``run.json`` written first); each step whose optimiser
    state is written is appended to ``saved``."""
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=options.lr, weight_decay=options.weight_decay, betas=options.betas,
        eps=options.adam_eps,
    )
    grad_filter = _GradFilter(model, options.grokfast_alpha, options.grokfast_lambda)
    start, rows = 0, []
    if resume and (out / OPTIMIZER_FILE).exists():
        start, rows = _restore(out, model, optimizer, grad_filter)
        if extended:  # the new length, and the earlier one; otherwise run.json keeps what the run was trained with
            info = read_run(out)
            history = [*info.raw.get("extensions", []), {"steps": info.options().steps, "resumed_at_step": start}]
            write_run(out, options, task, config_to_dict(model.cfg), device=model.cfg.device, extensions=history)
    else:
        trained = [step for step, _ in list_checkpoints(out) if step > 0] if resume else []
        if trained:
            raise RunError(f"{out}: {OPTIMIZER_FILE} is missing, so the run cannot continue exactly from its "
                           f"checkpoints (the last of step {trained[-1]}); train it again into another --out-dir")
        write_run(out, options, task, config_to_dict(model.cfg), device=model.cfg.device)

    ckpt_steps = set(checkpoint_steps(options.steps, options.checkpoint_every))
    bar = progress_bar(total=options.steps, initial=start, quiet=quiet, desc=f"train {options.task}", unit="step")
    for step in range(start, options.steps + 1):
        if step % options.eval_every == 0 or step in ckpt_steps or (step == start and start > 0):
            rows.append(_evaluate(task, model, step))
            _check_sound(out, model, rows[-1], resumed=step == start and start > 0)
            write_metrics(out, rows)
            bar.set_postfix({k: f"{v:.3g}" for k, v in rows[-1].items() if k in _SHOWN})
            if on_eval is not None:
                on_eval(rows[-1])
        if step in ckpt_steps and not (step == start and start > 0):  # a resume's own checkpoint exists
            save_checkpoint(checkpoint_path(out, step), model, step)
            save_optimizer(out / OPTIMIZER_FILE, optimizer, step, extra=grad_filter.state())
            saved.append(step)
        if step == options.steps:
            break
        for group in optimizer.param_groups:
            group["lr"] = options.lr_at(step)
            group["weight_decay"] = options.weight_decay_at(step)
        loss = task.train_loss(model, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_filter.apply()
        optimizer.step()
        bar.update(1)
    bar.close()


def _discard(out: Path, made: list[Path]) -> None:
    """Remove what a fresh run wrote before it trained a step (its ``run.json``, step 0's metrics,
    weights and optimiser state), and the folders it made, so that a retry with another recipe (after
    running out of memory, say) may use the same ``--out-dir``; what cannot be removed stays."""
    for path in (out / RUN_FILE, out / METRICS_FILE, out / OPTIMIZER_FILE, checkpoint_path(out, 0),
                 out / CHECKPOINT_DIR, *made):
        with contextlib.suppress(OSError):
            path.rmdir() if path.is_dir() else path.unlink(missing_ok=True)


#: Metrics shown beside the progress bar (those a task reports).
_SHOWN = ("train_loss", "test_loss", "test_acc", "train_acc", "test_id_acc", "test_ood_acc")


class _GradFilter:
    """Grokfast-EMA (Lee et al. 2024): grad += lambda * EMA_alpha(grad). Off when lambda == 0."""

    def __init__(self, model: torch.nn.Module, alpha: float, lamb: float) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.alpha, self.lamb = alpha, lamb
        self.ema: list[torch.Tensor] | None = None

    def apply(self) -> None:
        if self.lamb == 0:
            return
        grads = [p.grad for p in self.params]
        if self.ema is None:
            self.ema = [g.detach().clone() for g in grads]
        else:
            torch._foreach_mul_(self.ema, self.alpha)
            torch._foreach_add_(self.ema, grads, alpha=1 - self.alpha)
        torch._foreach_add_(grads, self.ema, alpha=self.lamb)

    def state(self) -> dict[str, torch.Tensor]:
        return {f"grokfast.{i}": t for i, t in enumerate(self.ema or [])}

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        if tensors:
            self.ema = [tensors[f"grokfast.{i}"].to(p.device) for i, p in enumerate(self.params)]


def _evaluate(task, model, step: int) -> dict[str, float]:
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        row = {"step": step, **task.evaluate(model, step)}
    model.train(was_training)
    return row


def _resume_options(out: Path, requested: TrainOptions, steps: int | None) -> tuple[TrainOptions, bool]:
    """The recorded options of the run in ``out``, extended to ``steps`` when given; and whether that extends it."""
    try:
        options = read_run(out).options()
    except RunError as exc:
        raise RunError(f"cannot resume: {exc}") from exc
    if requested.task != options.task:
        raise RunError(f"{out} holds a {options.task} run, not {requested.task}")
    if steps is not None and steps < options.steps:
        raise RunError(f"{out} is a run of {options.steps} steps; --steps {steps} cannot shorten it")
    if steps is not None and steps > options.steps:
        return dataclasses.replace(options, steps=steps), True
    return options, False




def _check_sound(out: Path, model, row: dict[str, float], resumed: bool) -> None:
    """:class:`RunError` (one line) for NaN or infinite weights or training loss: a diverged run is
    stopped before its metrics and checkpoints fill with NaN (the checkpoints before it are kept)."""
    step, loss = int(row["step"]), row.get("train_loss", 0.0)
    bad = nonfinite_weights(model) or (None if math.isfinite(loss) else f"a training loss of {loss}")
    if bad and resumed:
        raise RunError(f"{out}: the checkpoint of step {step} has {bad}: the run diverged before it and "
                       "cannot be resumed")
    if bad:
        raise _Diverged(f"{out}: training diverged before step {step} ({bad}); its checkpoints before that step "
                        "are kept: train again with a lower learning rate", step, bad)


class _Diverged(RunError):
    """A run stopped by :func:`_check_sound`: the step at which it diverged, and how."""

    def __init__(self, message: str, step: int, bad: str) -> None:
        super().__init__(message)
        self.step, self.bad = step, bad


def _restore(out: Path, model, optimizer, grad_filter: _GradFilter) -> tuple[int, list[dict[str, float]]]:
    step, extra = load_optimizer(out / OPTIMIZER_FILE, optimizer)
    grad_filter.load(extra)
    by_step = dict(list_checkpoints(out))
    if step not in by_step:
        raise RunError(f"{out}: optimiser state is at step {step} but checkpoints/ has no step {step}")
    state, cfg, _ = read_checkpoint(by_step[step])
    ours = config_to_dict(model.cfg)
    if any(cfg.get(k) != ours.get(k) for k in SHAPE_FIELDS):
        raise CheckpointError(f"{by_step[step]}: its model ({describe_shape(cfg)}) does not match its run {out} "
                              f"({describe_shape(ours)})")
    model.load_state_dict(state, strict=False)
    # Rows from the resume step on are recomputed (identically) by the loop.
    rows = [r for r in read_metrics(out) if r["step"] < step]
    return step, rows


__all__ = ["checkpoint_steps", "train"]
