"""Train and instrument toy transformers: runs, checkpoints, batch scoring, plots, the CLI.

Every public name is importable from here (``interp.load_model``, ``interp.plot_head_scores``);
each is loaded from its module on first use, so ``import interp`` (and ``interp --help``) costs
no torch import. The layers and who imports whom are in ``docs/architecture.md``; every score's
definition is in ``docs/scores.md``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.3.0"

#: public name -> (module, name in that module)
_PUBLIC: dict[str, tuple[str, str]] = {}


def _export(module: str, *names: str, **renamed: str) -> None:
    for name in names:
        _PUBLIC[name] = (module, name)
    for public, name in renamed.items():
        _PUBLIC[public] = (module, name)


_export("interp.runs.checkpoints", "CheckpointError", "load_model")
_export("interp.runs.layout", "RunError", "find_checkpoints", "list_checkpoints")
_export("interp.runs.record", "RunInfo", "read_run", "read_run_info", "run_train_mask")
_export("interp.detectors.registry", "DETECTORS", "register_detector")
_export("interp.detectors.spec", "Detector")
_export("interp.base.page", "ReportFigure")
_export("interp.base.notebook_figures", "use_offline_renderer")
_export("interp.tasks.models", "build_model", "induction_config", "memorization_config", "modadd_config",
        "reasoning_config", "text_config")
_export("interp.tasks.presets", "TrainOptions", "preset", "PRESETS")
_export("interp.tasks.induction", "CopiedSpans")
_export("interp.training.loop", "train")
_export("interp.scoring.batch", "score_checkpoints", "score_to_file")
_export("interp.scoring.table", "read_table")
_export("interp.report", "write_report")
_export("interp.analysis.phase", "best_head_curve", "curve_change_points", "locate_phase_change")
_export("interp.analysis.fourier_runs", "progress_measures", "run_progress_measures")
_export("interp.analysis.capacity_figures", "CAPACITY_SOURCES", "MEASURED_BITS_PER_PARAMETER",
        "PAPER_BITS_PER_PARAMETER")
_export("interp.analysis.split_memorization", "capacity_bits", "dataset_bits", "memorized_bits")
_export("interp.detectors.heads.figures", "plot_attention_patterns", "plot_head_heatmaps", "plot_head_scores")
_export("interp.detectors.fourier.figures", "plot_fourier_spectrum", "plot_memorized_bits", "plot_neuron_clusters",
        "plot_progress_measures")
_export("interp.detectors.circuit.search", "circuit_rows")
_export("interp.detectors.circuit.figures", "plot_circuit_graph", "plot_circuit_over_training", "plot_faithfulness_curve")
_export("interp.detectors.text.detector", "induction_heads_of", "run_corpus_tokens",
        ICL_EARLY="EARLY", ICL_LATE="LATE", icl_change_points="change_points")
_export("interp.detectors.text.figures", "plot_icl_curves", "plot_token_losses")
_export("interp.detectors.heads.flags", "head_kinds")
_export("interp.detectors.llc.figures", "head_llc_curves", "llc_curve", "plot_llc")
_export("interp.detectors.llc.report", "located_phases")
_export("interp.detectors.reasoning.context", REASONING_POSITIONS="POSITIONS", VALUE_METRICS="VALUES",
        reasoning_context="run_context")
_export("interp.detectors.reasoning.measures", "bridge_lens", "value_grids", reasoning_trace="trace")
_export("interp.detectors.reasoning.report", "first_step_at", reasoning_accuracy_curve="accuracy_curve",
        reasoning_rank_curves="rank_curves")
_export("interp.detectors.reasoning.figures", "plot_rank_curves", "plot_reasoning_accuracy", "plot_state_heatmaps")
_export("interp.experiments.sweep", "read_sweep", "sweep")
_export("interp.experiments.sweep_page", "plot_grokking_against_bits", "plot_peak_memorized")
_export("interp.experiments.memorization", "memorization_sweep_to_dir")

__all__ = sorted(["__version__", *_PUBLIC])


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'interp' has no attribute {name!r}")
    module, attr = _PUBLIC[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
