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

from circuits.progress import fourier_report
from circuits.progress import progress_measures as _progress_measures
from interp.runs.checkpoints import CheckpointError, load_model
from interp.base.progress_bar import progress_bar
from interp.runs.layout import CHECKPOINT_DIR, list_checkpoints, run_train_mask, step_of

__all__ = ["progress_measures", "run_progress_measures", "run_train_mask"]


def _checkpoints(source: str | Path | Sequence[str | Path]) -> tuple[list[tuple[int, Path]], Path | None]:
    """(step, path) pairs sorted by step, and the run directory they come from (if one)."""
    if isinstance(source, (str, Path)):
        source = Path(source)
        if source.is_dir():
            found = list_checkpoints(source)
            if not found:
                raise CheckpointError(f"{source}: run directory has no checkpoints/step_*.safetensors")
            return found, source
        source = [source]
    paths = [Path(s) for s in source]
    if not paths:
        raise ValueError("no checkpoints given")
    pairs = []
    for i, path in enumerate(paths):
        if not path.exists():
            raise FileNotFoundError(f"no such checkpoint: {path}")
        step = step_of(path)
        pairs.append((i if step is None else step, path))
    steps = [s for s, _ in pairs]
    if len(set(steps)) != len(steps):
        raise ValueError("checkpoints have duplicate steps; name them step_<N> or pass a run directory")
    in_runs = [p.parent.parent for p in paths if p.parent.name == CHECKPOINT_DIR]
    run_dir = in_runs[0] if len(in_runs) == len(paths) and len(set(in_runs)) == 1 else None
    return sorted(pairs), run_dir


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
    pairs, run_dir = _checkpoints(source)
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
