"""The ``fourier`` detector: progress measures and key frequencies of a modular-addition model.

:func:`circuits.fourier_report` on every checkpoint; model-level rows (layer/head empty) for
``loss, train_loss, test_loss, train_accuracy, test_accuracy, restricted_loss, excluded_loss,
gini_embed, gini_unembed, weight_norm, n_key_frequencies`` and one ``key_frequency`` row per key
frequency of the checkpoint (``head`` = value = k, so each has its own key). As in Nanda et al. 2023 the restricted and excluded
losses of every checkpoint use the key frequencies of the run's *latest readable* checkpoint,
and the train/test split is rebuilt from ``RUN/run.json`` (all pairs count as training when
there is none). With a split it also writes ``dataset_bits`` and ``memorized_bits``
(:mod:`interp.split_memorization`, Morris et al. 2025) from the same train and test losses, at
no extra cost. The definitions are in ``docs/scores.md``.

Applies to one-layer models with an MLP whose output vocabulary p is odd and at least 23
(``MIN_KEY_P``, the key-frequency rule's smallest modulus) and whose input vocabulary holds the
``=`` token (:func:`circuits.fourier.check_modadd_model`).

Its report section reads the run's final checkpoint to draw the Fourier spectrum with the key
frequencies and the neuron clusters, then the progress measures with the grokking phases, then
the memorised bits over training beside the phases, against the model's capacity.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformer_lens import HookedTransformer

from interp.detectors.spec import Detector, Row
from interp.base.page import ReportFigure
from interp.detectors._final import final_model
from interp.runs.layout import RunError
from interp.runs.record import run_train_mask
from interp.analysis.split_memorization import (
    CAPACITY_SOURCES,
    MEASURED_BITS_PER_PARAMETER,
    PAPER_BITS_PER_PARAMETER,
    capacity_bits,
    dataset_bits,
    memorized_bits,
)

__all__ = ["DETECTOR", "METRICS", "fourier_measures"]

_SCALARS = ("loss", "train_loss", "test_loss", "train_accuracy", "test_accuracy", "restricted_loss",
            "excluded_loss", "gini_embed", "gini_unembed", "weight_norm", "n_key_frequencies")
#: Written only for a run with a train/test split (interp.split_memorization).
_BITS = ("dataset_bits", "memorized_bits")
METRICS = (*_SCALARS, "key_frequency", *_BITS)


def applies(model: HookedTransformer) -> str | None:
    from circuits.fourier import MIN_KEY_P, check_modadd_model

    try:
        p = check_modadd_model(model)
    except ValueError as exc:
        return str(exc)
    if p < MIN_KEY_P:
        return f"p={p} is below {MIN_KEY_P}, the smallest modulus the key-frequency rule holds for"
    return None


def _train_mask(run_dir: Path | None) -> torch.Tensor | None:
    if run_dir is None:
        return None
    try:
        return run_train_mask(run_dir)
    except RunError:  # an unreadable or incomplete run.json must not silently drop the split
        raise
    except ValueError:  # a run of another task: no split to rebuild
        return None


def prepare(model: HookedTransformer, run_dir: Path | None) -> tuple[torch.Tensor | None, tuple[int, ...] | None]:
    """(train mask of the run, key frequencies of its latest checkpoint) for every checkpoint's losses."""
    from circuits import key_frequencies

    try:
        freqs = tuple(key_frequencies(model))
    except ValueError:
        freqs = None
    return _train_mask(run_dir), freqs


def score(model: HookedTransformer, context: tuple[torch.Tensor | None, tuple[int, ...] | None]) -> list[Row]:
    from circuits import fourier_report

    mask, freqs = context
    result = fourier_report(model, train_mask=mask, key_freqs=freqs)
    rows = [{"metric": name, "value": float(value)} for name, value in result.scalars().items()]
    # each frequency its own key: k in ``head`` (the table's key is unique outside error rows)
    rows += [{"metric": "key_frequency", "head": int(k), "value": float(k)} for k in result.key_frequencies]
    return rows + _bits_rows(result, mask)


def _bits_rows(result, mask: torch.Tensor | None) -> list[Row]:
    """``dataset_bits`` and ``memorized_bits`` of one checkpoint; none without a held-out split."""
    if mask is None or bool(mask.all()):
        return []
    n_train = int(mask.sum())
    return [{"metric": "dataset_bits", "value": dataset_bits(n_train, result.p)},
            {"metric": "memorized_bits", "value": memorized_bits(result.train_loss, result.test_loss, n_train, result.p)}]


def summary(model: HookedTransformer, run_dir: Path | None) -> str:
    from circuits import fourier_report

    result = fourier_report(model, train_mask=_train_mask(run_dir))
    lines = [f"Fourier (p = {result.p}): key frequencies {result.key_frequencies or 'none'}"]
    lines += [f"  {name:<18} {value:.4g}" for name, value in result.scalars().items()]
    lines += [f"  {row['metric']:<18} {row['value']:.4g}" for row in _bits_rows(result, _train_mask(run_dir))]
    return "\n".join(lines)


def fourier_measures(rows: pd.DataFrame) -> pd.DataFrame:
    """The progress-measure frame (``step`` + one column per scalar) from one run's Fourier rows.

    Same columns as :func:`circuits.progress_measures` (plus ``dataset_bits`` and
    ``memorized_bits`` for a run with a split), so :func:`circuits.grokking_phases` and
    :func:`interp.plots.plot_progress_measures` take it.
    """
    rows = rows[(rows["detector"] == "fourier") & rows["layer"].isna() & rows["metric"].isin((*_SCALARS, *_BITS))]
    rows = rows.dropna(subset=["step"])
    if rows.empty:
        return pd.DataFrame()
    # dropna=False: a metric NaN at every step (test_accuracy without a split) is a column of NaN, not gone
    wide = rows.pivot_table(index="step", columns="metric", values="value", aggfunc="first",
                            dropna=False).reset_index()
    wide.columns.name = None
    return wide.astype({"step": "int64"}).sort_values("step", ignore_index=True)


def report(rows: pd.DataFrame) -> list[Any]:
    """The grokking phases, the final checkpoint's Fourier spectrum and neuron clusters, the progress
    measures, the memorised bits against capacity."""
    from circuits import GrokkingPhases, grokking_phases
    from interp.detectors.fourier.figures import plot_progress_measures

    measures = fourier_measures(rows)
    if measures.empty:
        return []
    try:
        ph, why = grokking_phases(measures), ""
    except ValueError as exc:  # no train/test split, or measures of an older table lacking a column
        ph, why = None, ("no train/test split" if "train/test split" in str(exc) else html.escape(str(exc)))
    if ph is None or measures["step"].nunique() < 2:
        why = why or "one checkpoint: phases need a curve"
        parts: list[Any] = [f"<p class='phase'>Grokking phases not located ({why}).</p>"]
        ph = GrokkingPhases(None, None, None)
    elif ph.memorization_end is None and ph.grokking_step is not None:  # the later phases need it: none of them
        parts = [f"<p class='phase'>Grokking phases not located: the training pairs are fitted only after test "
                 f"accuracy reaches 0.5 (step {ph.grokking_step}), so there is no memorisation phase to start from.</p>"]
    else:
        at = [f"at step {v}" if v is not None else "not within the run" for v in
              (ph.memorization_end, ph.circuit_formation_end, ph.cleanup_end, ph.grokking_step)]
        parts = [f"<p class='phase'>Grokking phases: memorisation ends {at[0]}, circuit formation {at[1]}, "
                 f"cleanup {at[2]}; test accuracy reaches 0.5 {at[3]}.</p>"]
    model, step, why = final_model(rows)
    parts += _circuit_figures(model, step, why)
    caption = ("Losses (top, log scale), the Gini sparsity of the embedding and neuron-logit Fourier spectra (middle) "
               "and the sum of squared weights (bottom) over training, the located phases shaded. In a run that groks, "
               "the restricted loss (key frequencies only) falls during circuit formation, before the test loss "
               "falls in cleanup.")
    parts.append(ReportFigure("progress measures", plot_progress_measures(measures, ph), caption))
    keys = rows[rows["metric"] == "key_frequency"]
    if not keys.empty:
        last = keys[keys["step"] == keys["step"].max()]
        freqs = ", ".join(str(int(v)) for v in sorted(last["value"]))
        parts.append(f"<p>Key frequencies at step {int(last['step'].iloc[0])}: {freqs}</p>")
    return parts + _bits_figure(measures, ph, model)


def _bits_figure(measures: pd.DataFrame, phases: Any, model: HookedTransformer | None) -> list[Any]:
    """Memorised bits over training, the phases shaded, with the data's bits and the capacity lines."""
    from interp.detectors.fourier.figures import plot_memorized_bits

    if "memorized_bits" not in measures or measures["memorized_bits"].isna().all():
        return []
    lines, said = [], "no capacity line: the final checkpoint could not be read"
    if model is not None:
        params = sum(p.numel() for p in model.parameters())
        for bpp in (MEASURED_BITS_PER_PARAMETER, PAPER_BITS_PER_PARAMETER):
            lines.append((f"capacity at {bpp} bits/param ({CAPACITY_SOURCES[bpp]})", capacity_bits(params, bpp)))
        said = (f"the capacity of its {params:,} parameters at {MEASURED_BITS_PER_PARAMETER} bits each "
                f"(measured by interp memorization, BENCHMARKS.md) and at {PAPER_BITS_PER_PARAMETER} "
                "(Morris et al. 2025): dashed where it falls on the scale, else named in the figure's note")
    caption = ("Bits the model holds about its training pairs beyond what it generalises, max(0, N_train "
               "(min(test loss, ln p) - train loss) / ln 2) (docs/scores.md), over training with the phases shaded; "
               f"dotted: all the bits in the training labels; {said}. "
               "If memorisation filling capacity triggered grokking, the curve would flatten at its capacity "
               "before it falls in cleanup.")
    return [ReportFigure("memorised bits", plot_memorized_bits(measures, phases, lines), caption)]


def _circuit_figures(model: HookedTransformer | None, step: int | None, why: str) -> list[Any]:
    """The Fourier spectrum with the key frequencies and the neuron clusters of the final checkpoint."""
    from circuits import fourier_report
    from interp.detectors.fourier.figures import plot_fourier_spectrum, plot_neuron_clusters

    why = why or (applies(model) or "")
    if why:
        return [f"<p class='note'>Fourier spectrum and neuron clusters not drawn: {html.escape(why)}.</p>"]
    result = fourier_report(model)
    keys = ", ".join(map(str, result.key_frequencies)) or "none"
    bands = (f"the labelled bands are the key frequencies ({keys})" if result.key_frequencies
             else "no key frequency stands out yet")
    spectrum = plot_fourier_spectrum(result)
    spectrum.update_layout(title=f"Fourier spectrum at step {step} (key frequencies {keys})")
    clusters = plot_neuron_clusters(result)
    clusters.update_layout(title=f"MLP neuron clusters by frequency at step {step}")
    return [
        ReportFigure("Fourier spectrum", spectrum,
                     f"Share of each frequency k in the squared Fourier norm of the embedding W_E and of the "
                     f"neuron-logit map W_L; {bands}. A model that has grokked computes a + b mod p with a few "
                     "such waves, so nearly all the norm sits on them."),
        ReportFigure("neuron clusters", clusters,
                     "MLP neurons counted by the one frequency that explains at least 85 % (or 50 %) of their "
                     "activation variance over all input pairs. A grokked model has one cluster per key "
                     "frequency: the neurons that compute cos and sin of that frequency times (a + b)."),
    ]


DETECTOR = Detector(
    name="fourier",
    help="Fourier progress measures and key frequencies of a modular-addition model (Nanda et al. 2023)",
    metrics=METRICS,
    applies=applies,
    prepare=prepare,
    score=score,
    summary=summary,
    report=report,
)
