"""``interp inspect``: a text summary of one checkpoint, one section per detector that applies."""

from __future__ import annotations

from pathlib import Path

from interp.base.errors import first_line
from interp.runs.checkpoints import checkpoint_of, load_model
from interp.detectors.registry import DETECTORS
from interp.runs.layout import run_of

__all__ = ["inspect_checkpoint"]


def inspect_checkpoint(path: str | Path, device: str | None = None, failed: list[str] | None = None) -> str:
    """The ``summary`` of every detector of :data:`interp.detectors.DETECTORS` that applies, as text.

    ``path`` is anything :func:`interp.load_model` reads (a run directory or a series means its
    latest checkpoint, which the first line names); the run directory, when there is one, gives
    detectors their run context (the train/test split of a modular-addition run). Raises
    ``ValueError`` when no detector applies or a detector's settings cannot be read (``INTERP_LLC``),
    and :class:`interp.CheckpointError` for a checkpoint with NaN or infinite weights. ``device``:
    where the model is loaded and the detectors run (:func:`interp.base.device.resolve_device`).
    A detector whose summary fails gets a line naming the error in its place, the others are
    still summarised, and its name is appended to ``failed`` (when given).
    """
    path = Path(path)
    for detector in DETECTORS.values():
        if detector.settings is not None:
            detector.settings()  # unreadable settings: one line before any work
    shown = checkpoint_of(path)
    model = load_model(shown, strict=True, device=device)  # NaN or infinite weights: one line, not a table of NaN
    cfg = model.cfg
    which = "" if shown == path else f" (its latest checkpoint: {shown.relative_to(path)})"
    sections = [f"{path}{which}: {cfg.n_layers} layer(s), {cfg.n_heads} heads, d_model {cfg.d_model}, "
                f"n_ctx {cfg.n_ctx}, d_vocab {cfg.d_vocab}"]
    why_not = {}
    for name, detector in DETECTORS.items():
        why = detector.applies(model)
        if why is None:
            try:
                sections.append(detector.summary(model, run_of(shown)))
            except Exception as exc:  # noqa: BLE001 - its failure is its section; the others are still printed
                sections.append(f"{name}: not summarised: {type(exc).__name__}: {first_line(exc)}")
                if failed is not None:
                    failed.append(name)
        else:
            why_not[name] = why
    if len(why_not) == len(DETECTORS):
        raise ValueError(f"{path}: no detector applies ({'; '.join(f'{k}: {v}' for k, v in why_not.items())})")
    return "\n\n".join(sections)
