"""The model of a run's last scored checkpoint, for the report's pictures of the circuits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
from transformer_lens import HookedTransformer

from interp.runs.checkpoints import CheckpointError, load_model
from interp.runs.layout import RunError, fingerprint, scored_checkpoint

__all__ = ["final_model", "final_model_with"]


def final_model(rows: pd.DataFrame) -> tuple[HookedTransformer | None, int | None, str]:
    """``(model, step, why)`` for the last scored checkpoint of one run's rows.

    ``model`` is None when the file is gone, unreadable, or no longer the checkpoint that was
    scored (its content fingerprint differs from the table's); ``why`` then says which, so the
    report can show the reason in place of the figures.
    """
    steps = rows["step"].dropna()
    last = rows.loc[rows["step"] == steps.max()] if not steps.empty else rows
    row = last.iloc[-1]
    step = None if pd.isna(row["step"]) else int(row["step"])
    path = scored_checkpoint(str(row["run"]), str(row["checkpoint"]))
    if not path.exists():  # a file, or a Hugging Face directory
        return None, step, f"the checkpoint {path} is not on this machine"
    value = row["fingerprint"] if "fingerprint" in rows else None
    scored = "" if value is None or pd.isna(value) else str(value)
    if scored and fingerprint(path) != scored:
        return None, step, f"{path} changed since it was scored (score the run again)"
    try:
        return load_model(path), step, ""
    except (CheckpointError, RunError, OSError, ValueError) as exc:
        return None, step, f"{path} could not be loaded ({exc})"


def final_model_with(rows: pd.DataFrame, read_run: Callable[[str], Any]) -> tuple[HookedTransformer | None, int | None, Any, str]:
    """:func:`final_model` and ``read_run(run)`` of the same run (e.g. its data rebuilt from
    ``run.json``): ``(model, step, value, why)``; ``why`` says what could not be read, else ""."""
    model, step, why = final_model(rows)
    value = None
    if not why:
        try:
            value = read_run(str(rows["run"].iloc[0]))
        except (RunError, OSError, ValueError) as exc:
            why = str(exc)
    return model, step, value, why
