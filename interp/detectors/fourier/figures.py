"""Figures of the ``fourier`` detector: spectra, neuron clusters, progress measures, memorised bits.

Each function returns a plotly ``Figure`` and never shows it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from circuits import FourierReport, GrokkingPhases

# ---------------------------------------------------------------------------------------------
# Fourier structure of modular addition (Nanda et al. 2023)

#: A capacity line more than this many times above the curve's scale is named, not drawn.
OFF_SCALE = 4.0
_FOURIER_KEY_COLOUR = "rgba(214, 39, 40, 0.12)"
_FOURIER_PHASE_COLOURS = ("rgba(31, 119, 180, 0.10)", "rgba(255, 127, 14, 0.12)", "rgba(44, 160, 44, 0.12)")


def _fourier_unpack(
    spectrum: pd.DataFrame | FourierReport, key_frequencies: Sequence[int] | None
) -> tuple[pd.DataFrame, list[int]]:
    if isinstance(spectrum, FourierReport):
        keys = spectrum.key_frequencies if key_frequencies is None else key_frequencies
        return spectrum.spectrum, list(keys)
    missing = {"freq", "embed", "unembed", "neurons"} - set(spectrum.columns)
    if missing:
        raise ValueError(f"spectrum lacks columns {sorted(missing)}")
    return spectrum, list(key_frequencies or [])


def _fourier_mark_keys(fig: go.Figure, keys: Sequence[int], **where: int) -> None:
    """Shade each key frequency and name it above the plot (``k = 14``)."""
    for k in keys:
        fig.add_vrect(x0=k - 0.5, x1=k + 0.5, fillcolor=_FOURIER_KEY_COLOUR, line_width=0, layer="below", **where)
        fig.add_annotation(x=k, y=1, yref="paper", yanchor="bottom", text=f"k = {k}", showarrow=False,
                           font={"color": "#d62728"})


def plot_fourier_spectrum(
    spectrum: pd.DataFrame | FourierReport, key_frequencies: Sequence[int] | None = None
) -> go.Figure:
    """Bars of the embedding and W_L Fourier spectra per frequency, key frequencies shaded.

    ``spectrum`` is a :class:`circuits.FourierReport` or its ``spectrum`` DataFrame (``freq,
    embed, unembed``); y is the share of squared Fourier norm (Nanda et al. 2023, fig. 3).
    """
    frame, keys = _fourier_unpack(spectrum, key_frequencies)
    fig = go.Figure()
    fig.add_bar(x=frame["freq"], y=frame["embed"], name="embedding W_E")
    fig.add_bar(x=frame["freq"], y=frame["unembed"], name="neuron-logit map W_L")
    _fourier_mark_keys(fig, keys)
    title = "Fourier spectrum" + (f" (key frequencies {', '.join(map(str, keys))})" if keys else " (no key frequencies)")
    fig.update_layout(title=title, barmode="group", xaxis_title="frequency k", yaxis_title="share of squared norm")
    return fig


def plot_neuron_clusters(
    spectrum: pd.DataFrame | FourierReport, key_frequencies: Sequence[int] | None = None
) -> go.Figure:
    """Number of MLP neurons per frequency cluster, key frequencies shaded.

    Bars: neurons whose activation variance is >= 85 % explained by the frequency (``neurons``)
    and, when present, >= 50 % (``neurons_majority``, the clusters the key-frequency rule uses).
    """
    frame, keys = _fourier_unpack(spectrum, key_frequencies)
    fig = go.Figure()
    fig.add_bar(x=frame["freq"], y=frame["neurons"], name=">= 85 % of variance")
    if "neurons_majority" in frame:
        fig.add_bar(x=frame["freq"], y=frame["neurons_majority"], name=">= 50 % of variance")
    _fourier_mark_keys(fig, keys)
    fig.update_layout(title="MLP neuron clusters by frequency", barmode="group", xaxis_title="frequency k",
                      yaxis_title="neurons")
    return fig


def plot_progress_measures(measures: pd.DataFrame, phases: GrokkingPhases | None = None) -> go.Figure:
    """Progress measures over training steps, with the three phases of grokking shaded.

    ``measures`` is the DataFrame of :func:`circuits.progress_measures`; ``phases`` the result of
    :func:`circuits.grokking_phases` (computed from ``measures`` when omitted). Panels: losses
    (log scale: train, test, restricted, excluded), Gini coefficients, total squared weights.
    """
    if "step" not in measures or measures.empty:
        raise ValueError("measures must be a non-empty DataFrame with a 'step' column")
    if phases is None:
        from circuits import grokking_phases

        phases = grokking_phases(measures)
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.05,
                        subplot_titles=("loss", "Gini of Fourier norms", "sum of squared weights"))
    x = measures["step"]
    for col, name in (("train_loss", "train"), ("test_loss", "test"), ("restricted_loss", "restricted"),
                      ("excluded_loss", "excluded")):
        if col in measures and measures[col].notna().any():
            fig.add_scatter(x=x, y=measures[col], name=name, mode="lines", row=1, col=1)
    for col, name in (("gini_embed", "Gini W_E"), ("gini_unembed", "Gini W_L")):
        if col in measures:
            fig.add_scatter(x=x, y=measures[col], name=name, mode="lines", row=2, col=1)
    if "weight_norm" in measures:
        fig.add_scatter(x=x, y=measures["weight_norm"], name="weights", mode="lines", row=3, col=1)
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_xaxes(title_text="step", row=3, col=1)
    fig.update_layout(title="Progress measures of grokking", height=800)
    _shade_phases(fig, float(x.min()), phases, rows=(1, 2, 3))
    return fig


#: Pixels between the tops of the phase labels, one row each inside the top of the plot, so the
#: labels of narrow bands never print over each other (their font is 11 px).
_LABEL_ROW_PX = 18


def _shade_phases(fig: go.Figure, start: float, phases: GrokkingPhases, rows: Sequence[int] | None) -> None:
    """Shade memorisation, circuit formation and cleanup from ``start``; ``rows`` None: a figure without subplots.

    Each band is labelled once, at its left edge, on a row of its own above the plot area's top.
    """
    bounds = (phases.memorization_end, phases.circuit_formation_end, phases.cleanup_end)
    labels = ("memorisation", "circuit formation", "cleanup")
    panels = [{"row": row, "col": 1} for row in rows] if rows else [{}]
    margin = fig.layout.margin
    plot_px = (fig.layout.height or 450) - (margin.t if margin.t is not None else 100) - (margin.b or 80)
    heights = [0.995 - i * _LABEL_ROW_PX / max(plot_px, 100) for i in range(3)]
    for end, label, colour, height in zip(bounds, labels, _FOURIER_PHASE_COLOURS, heights):
        if end is None:
            break
        for where in panels:
            fig.add_vrect(x0=start, x1=end, fillcolor=colour, line_width=0, layer="below", **where)
        fig.add_annotation(x=start, y=height, xref="x", yref="paper", text=label, showarrow=False, xanchor="left",
                           yanchor="top", font={"size": 11})
        start = end


def plot_memorized_bits(measures: pd.DataFrame, phases: GrokkingPhases | None = None,
                        capacities: Sequence[tuple[str, float]] = ()) -> go.Figure:
    """Memorised bits over training steps, the grokking phases shaded, with reference lines.

    ``measures`` has ``step`` and ``memorized_bits`` columns (and ``dataset_bits``, drawn dotted:
    everything the training labels hold), as :func:`interp.detectors.fourier.fourier_measures`
    gives for a run with a split; ``capacities`` are ``(label, bits)`` pairs drawn as dashed
    horizontal lines (:func:`interp.analysis.split_memorization.capacity_bits`), unless one lies
    more than ``OFF_SCALE`` times above the curve and the labels' bits: drawn, it would flatten the
    curve to zero, so it is named in a note instead.
    """
    if "step" not in measures or "memorized_bits" not in measures or measures.empty:
        raise ValueError("measures must be a non-empty DataFrame with 'step' and 'memorized_bits' columns")
    fig = go.Figure()
    x = measures["step"]
    fig.add_scatter(x=x, y=measures["memorized_bits"], mode="lines+markers", name="memorised bits")
    top = float(np.nanmax(measures["memorized_bits"].to_numpy(dtype=float), initial=0.0))
    if "dataset_bits" in measures and measures["dataset_bits"].notna().any():
        labels_bits = float(measures["dataset_bits"].dropna().iloc[-1])
        top = max(top, labels_bits)
        fig.add_hline(y=labels_bits, line_dash="dot", line_color="#888",
                      annotation_text="bits in the training labels", annotation_position="bottom right")
    ceiling = 1.3 * top if top > 0 else None  # room above the curve for the phase labels
    off_scale = []
    for (label, bits), colour in zip(capacities, ("#d62728", "#9467bd", "#8c564b")):
        if ceiling is not None and bits > ceiling * OFF_SCALE:  # drawn, the curve would read as flat zero
            off_scale.append(f"{label}: {bits:,.0f} bits ({bits / top:.0f}x the top of this scale)")
            continue
        ceiling = None if ceiling is None else max(ceiling, 1.3 * bits)
        fig.add_hline(y=bits, line_dash="dash", line_color=colour, annotation_text=label,
                      annotation_position="bottom right")
    if off_scale:
        fig.add_annotation(x=1.0, y=1.01, xref="paper", yref="paper", xanchor="right", yanchor="bottom", showarrow=False,
                           align="right", text="off the scale: " + "<br>".join(off_scale), font={"size": 11})
    fig.update_layout(title="Memorised bits over training", xaxis_title="step", yaxis_title="bits",
                      template="plotly_white", height=450, margin={"t": 110})
    if phases is not None:
        _shade_phases(fig, float(x.min()), phases, rows=None)
    if ceiling is not None:
        fig.update_yaxes(range=[0, ceiling])
    return fig
