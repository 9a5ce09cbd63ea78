"""Progress measures of a modular-addition run on disk: checkpoints -> :func:`circuits.progress_measures`.

:func:`run_progress_measures` takes a run (or checkpoint files); :func:`circuits.progress_measures`
takes models. ``interp.progress_measures`` is the old name of the former, deprecated.

``circuits`` knows nothing about files; this module loads checkpoints with
:func:`interp.load_model`, rebuilds the training split from ``RUN/run.json`` and streams the
models through :func:`circuits.progress.progress_measures` one at a time.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd
import torch

from circuits import fourier_report
from circuits import progress_measures as _progress_measures
from interp.runs.checkpoints import load_model
from interp.base.progress_bar import progress_bar
from interp.runs.layout import checkpoint_series
from interp.runs.record import run_train_mask

__all__ = ["progress_measures", "run_progress_measures", "run_train_mask"]


def run_progress_measures(
    source: str | Path | Sequence[str | Path],
    *,
    key_freqs: Sequence[int] | None = None,
    train_mask: torch.Tensor | None = None,
    quiet: bool = False,
) -> pd.DataFrame:
    """Progress measures (Nanda et al. 2023) of every checkpoint of a modular-addition run.

    Args:
        source: a run directory (all its ``checkpoints/step_*.safetensors``) or a list of
            checkpoint files (steps from ``step_<N>`` in their names, else their list position).
        key_freqs: frequencies for the restricted/excluded losses; default: the key frequencies
            of the last checkpoint.
        train_mask: the training split; default: rebuilt from ``RUN/run.json`` when the
            checkpoints come from one run directory that has it, else all pairs count as training
            (test columns NaN).
        quiet: no progress bar.

    Returns the DataFrame of :func:`circuits.progress_measures` (one row per checkpoint).
    Checkpoints are loaded one at a time.
    """
    pairs, run_dir = checkpoint_series(source)
    if train_mask is None and run_dir is not None:
        train_mask = run_train_mask(run_dir)
    if key_freqs is None:
        key_freqs = fourier_report(load_model(pairs[-1][1])).key_frequencies

    def stream() -> Iterator[tuple[int, torch.nn.Module]]:
        for step, path in progress_bar(pairs, desc="progress measures", unit="ckpt", quiet=quiet):
            yield step, load_model(path)

    return _progress_measures(stream(), key_freqs=key_freqs, train_mask=train_mask)


def progress_measures(*args, **kwargs) -> pd.DataFrame:
    """Deprecated alias of :func:`run_progress_measures` (removed in the next release)."""
    warnings.warn("interp.progress_measures is renamed interp.run_progress_measures "
                  "(circuits.progress_measures takes models)", DeprecationWarning, stacklevel=2)
    return run_progress_measures(*args, **kwargs)
