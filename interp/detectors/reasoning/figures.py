"""Plot builders of the reasoning detector: accuracy over training, logit-lens curves and heatmaps.

Each function returns a plotly ``Figure`` and never shows it (as ``interp.plots``). The frames
come from :mod:`interp.detectors.reasoning` (``accuracy_curve``, ``rank_curves``) and the
heatmaps from its ``bridge_lens`` / ``trace_heatmap`` (Wang et al. 2024, "Grokked transformers
are implicit reasoners", arXiv 2405.15071).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

__all__ = ["plot_reasoning_accuracy", "plot_rank_curves", "plot_state_heatmaps"]

_ACCURACY = (("train_acc", "train"), ("test_id_acc", "ID test"), ("test_ood_acc", "OOD test"))


def plot_reasoning_accuracy(curve: pd.DataFrame, title: str = "Accuracy over training") -> go.Figure:
    """Train, ID-test and OOD-test accuracy against the training step.

    ``curve``: ``step`` and any of ``train_acc, test_id_acc, test_ood_acc`` (the detector's
    ``accuracy_curve``, or a run's ``metrics.csv``).
    """
    present = [(col, name) for col, name in _ACCURACY if col in curve]
    if curve.empty or not present:
        raise ValueError("no accuracies to plot (need a step column and train_acc, test_id_acc or test_ood_acc)")
    fig = go.Figure()
    for col, name in present:
        fig.add_scatter(x=curve["step"], y=curve[col], mode="lines+markers", name=name, marker={"size": 4})
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="accuracy", range=[0, 1.02])
    fig.update_layout(title=title, height=420)
    return fig


def plot_rank_curves(ranks: pd.DataFrame, ylabel: str = "mean reciprocal rank of the bridge entity",
                     title: str = "Logit lens of the bridge entity over training",
                     panels: tuple[str, str] = ("ID test queries", "OOD test queries")) -> go.Figure:
    """A per-state score over training (by default the bridge's mean reciprocal rank), ID and OOD side by side.

    ``ranks``: ``step, split ("id"/"ood"), layer (residual state 0..L), value`` (the detector's
    ``rank_curves``); one line per state in each panel, ``panels`` their titles (what the ID and OOD
    rows were read on). The y axis runs from 0 (or the lowest value, for an ``R^2`` below 0) to 1.
    """
    if ranks.empty:
        raise ValueError("no reciprocal ranks to plot")
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.05,
                        subplot_titles=list(panels))
    states = sorted(int(s) for s in ranks["layer"].unique())
    last = states[-1]
    # one colour per state at any depth, dark (embeddings) to light (output); the lightest yellow left out
    palette = sample_colorscale("Viridis", [0.9 * i / max(1, len(states) - 1) for i in range(len(states))])
    for col, split in enumerate(("id", "ood"), start=1):
        part = ranks[ranks["split"] == split]
        for s in states:
            line = part[part["layer"] == s].sort_values("step")
            if line.empty:
                continue
            label = f"state {s}" + (" (output)" if s == last else " (embeddings)" if s == 0 else "")
            fig.add_scatter(x=line["step"], y=line["value"], mode="lines+markers", marker={"size": 3},
                            name=label, legendgroup=label, showlegend=col == 1,
                            line={"color": palette[states.index(s)]}, row=1, col=col)
        fig.update_xaxes(title_text="step", row=1, col=col)
    low = min(0.0, float(ranks["value"].min()))
    fig.update_yaxes(title_text=ylabel, range=[low - 0.02 * (1 - low), 1.02], row=1, col=1)
    fig.update_layout(title=title, height=440)
    return fig


def plot_state_heatmaps(grids: Mapping[str, torch.Tensor], positions: Sequence[str], colorbar: str,
                        title: str, diverging: bool = False) -> go.Figure:
    """One heatmap per entry of ``grids`` (residual state x position), side by side.

    ``grids``: panel title -> float tensor (n_states, len(positions)) (a logit lens's mean
    reciprocal rank, a probe's ``R^2``, or a causal trace's mean change); ``positions``: the x
    labels. With ``diverging`` the colour scale is centred on 0 (rank changes), else it runs from 0
    (or the lowest value, for an ``R^2`` below 0) to 1.
    """
    if not grids:
        raise ValueError("no heatmaps to plot")
    names = list(grids)
    fig = make_subplots(rows=1, cols=len(names), shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=names)
    bound = max(float(g.abs().max()) for g in grids.values()) if diverging else 1.0
    bound = bound or 1.0
    low = -bound if diverging else min(0.0, min(float(g.min()) for g in grids.values()))
    for col, name in enumerate(names, start=1):
        grid = grids[name].double()
        if grid.ndim != 2 or grid.shape[1] != len(positions):
            raise ValueError(f"heatmap {name!r} has shape {tuple(grid.shape)}, expected (states, {len(positions)})")
        states = [f"state {s}" for s in range(grid.shape[0])]
        fig.add_heatmap(z=grid.tolist(), x=list(positions), y=states, zmin=low, zmax=bound,
                        colorscale="RdBu_r" if diverging else "Viridis", showscale=col == len(names),
                        colorbar={"title": {"text": colorbar}},
                        text=[[f"{v:.2f}" for v in row] for row in grid.tolist()], texttemplate="%{text}",
                        hovertemplate="%{y}, %{x}: %{z:.3f}<extra></extra>", row=1, col=col)
        fig.update_xaxes(title_text="position", row=1, col=col)
    fig.update_yaxes(title_text="residual state (0: embeddings)", row=1, col=1)
    fig.update_layout(title=title, height=380 + 20 * max(g.shape[0] for g in grids.values()))
    return fig
