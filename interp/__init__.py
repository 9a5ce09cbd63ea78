"""Train and instrument toy transformers: runs, checkpoints, batch scoring, plots, the CLI.

The layers and who imports whom are in ``docs/architecture.md``; every score's definition is in
``docs/scores.md``.
"""

from interp.checkpoints import CheckpointError, load_model
from interp.detectors import DETECTORS, Detector
from interp.fourier_runs import progress_measures, run_progress_measures
from interp.models import build_model, induction_config, memorization_config, modadd_config
from interp.phase import best_head_curve, locate_phase_change
from interp.presets import preset
from interp.runs import RunError, find_checkpoints, list_checkpoints, run_train_mask
from interp.scoring import score_checkpoints, score_to_file
from interp.training import train

__all__ = [
    "DETECTORS",
    "CheckpointError",
    "Detector",
    "RunError",
    "best_head_curve",
    "build_model",
    "find_checkpoints",
    "induction_config",
    "list_checkpoints",
    "load_model",
    "locate_phase_change",
    "memorization_config",
    "modadd_config",
    "preset",
    "run_progress_measures",
    "run_train_mask",
    "score_checkpoints",
    "score_to_file",
    "train",
]
