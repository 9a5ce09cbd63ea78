"""The ``reasoning`` detector's report section: curves over training from its rows, the final heatmaps."""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from interp.base.page import ReportFigure
from interp.detectors._curves import metric_curves
from interp.detectors._final import final_model_with
from interp.detectors.reasoning.context import ACCURACIES, POSITIONS, RANKS, TRACE_QUERIES, VALUES, run_context
from interp.detectors.reasoning.measures import bridge_lens, trace, value_grids
from interp.detectors.reasoning.probes import POSITIONS as PROBE_POSITIONS

__all__ = ["accuracy_curve", "first_step_at", "rank_curves", "report"]


def accuracy_curve(rows: pd.DataFrame) -> pd.DataFrame:
    """``step, train_acc, test_id_acc, test_ood_acc`` per checkpoint from one run's reasoning rows."""
    return metric_curves(rows, "reasoning", ACCURACIES)


def rank_curves(rows: pd.DataFrame, metrics: tuple[str, str] = RANKS) -> pd.DataFrame:
    """``step, split ("id"/"ood"), layer (residual state), value``: the bridge reciprocal ranks of one run
    (or, with ``metrics=VALUES``, the value probes' ``R^2``)."""
    rows = rows[(rows["detector"] == "reasoning") & rows["metric"].isin(metrics)].dropna(subset=["step", "layer"])
    out = pd.DataFrame({"step": rows["step"].astype("int64"), "split": rows["metric"].str.rsplit("_", n=1).str[-1],
                        "layer": rows["layer"].astype("int64"), "value": rows["value"].astype(float)})
    return out.sort_values(["split", "layer", "step"], ignore_index=True)


def first_step_at(curve: pd.DataFrame, column: str, level: float) -> int | None:
    """The first step at which ``curve[column] >= level``; None when never reached."""
    if column not in curve:
        return None
    hit = curve[curve[column] >= level]
    return int(hit["step"].min()) if not hit.empty else None


def report(rows: pd.DataFrame) -> list[Any]:
    """Accuracies over training, the bridge entity's logit lens over training, the final heatmaps."""
    from interp.detectors.reasoning.figures import plot_rank_curves, plot_reasoning_accuracy

    curve = accuracy_curve(rows)
    if curve.empty:
        return []
    parts: list[Any] = [_sentence(curve)]
    caption = ("Accuracy on the training set (atomic and inferred facts), on held-out inferred facts of trained "
               "atoms (ID test) and on inferred facts whose atoms never took part in a trained inference (OOD "
               "test). In Wang et al. 2024 composition reaches high ID but stays near 0 OOD; comparison "
               "generalises to both.")
    parts.append(ReportFigure("accuracy: train, ID, OOD", plot_reasoning_accuracy(curve), caption))
    ranks = rank_curves(rows)
    if not ranks.empty:
        caption = ("Mean reciprocal rank of the bridge entity b of h r1 r2, read through the final norm and "
                   "unembedding at the r1 position, for each residual state (0: embeddings; the last: the r1 "
                   "position's own output, its atomic fact h r1 -> b). A bridge decodable from a middle state "
                   "on ID but not OOD chains is the paper's picture.")
        parts.append(ReportFigure("bridge entity by layer (logit lens)", plot_rank_curves(ranks), caption))
    values = rank_curves(rows, VALUES)
    if not values.empty:
        caption = ("R^2 of linear probes reading each entity's attribute value at its own position of a e1 e2 "
                   "(mean of e1 and e2) at each residual state, fitted on 80 % of the ID atomic facts and scored on "
                   "the other 20 % (ID) and on the OOD facts; 1 = read exactly, 0 = no better than the mean value. "
                   "The paper's picture: the values are retrieved in the lower layers for every entity, ID and OOD "
                   "alike.")
        fig = plot_rank_curves(values, ylabel="value probe R^2 (held-out facts)",
                               title="Attribute values by layer (linear probes) over training",
                               panels=("held-out ID facts", "OOD facts"))
        parts.append(ReportFigure("attribute values by layer (linear probes)", fig, caption))
    return parts + _final_figures(rows)


def _sentence(curve: pd.DataFrame) -> str:
    last = curve.iloc[-1]
    said = [f"{label} {last[col]:.3f}" for col, label in zip(ACCURACIES, ("train", "ID test", "OOD test"))
            if col in curve and pd.notna(last[col])]
    reached = []
    for col, level, label in (("train_acc", 0.99, "train"), ("test_id_acc", 0.9, "ID"), ("test_ood_acc", 0.9, "OOD")):
        step = first_step_at(curve, col, level)
        reached.append(f"{label} {level:g} " + (f"at <b>step {step}</b>" if step is not None else "not reached"))
    return (f"<p class='phase'>At step {int(last['step'])}: accuracy {', '.join(said)}. "
            f"{'; '.join(reached)}.</p>")


def _final_figures(rows: pd.DataFrame) -> list[Any]:
    """Logit-lens (composition) and causal-tracing heatmaps of the final checkpoint, ID beside OOD."""
    from interp.detectors.reasoning.figures import plot_state_heatmaps

    model, step, context, why = final_model_with(rows, run_context)
    if why:
        return [f"<p class='note'>Heatmaps of the final checkpoint not drawn: {html.escape(why)}.</p>"]
    labels = POSITIONS[context.task]
    parts: list[Any] = []
    if context.task == "composition":
        grids = {f"{s.upper()} test chains": bridge_lens(model, context, s).mean_reciprocal_rank()
                 for s in ("id", "ood")}
        fig = plot_state_heatmaps(grids, labels, "mean RR", f"Logit lens of the bridge entity at step {step}")
        parts.append(ReportFigure("bridge entity heatmap (logit lens)", fig,
                                  "Mean reciprocal rank of the bridge entity at every residual state and position "
                                  "of h r1 r2 at the final checkpoint; the r1 column is the last point of the "
                                  "curves above."))
    else:
        grids = value_grids(model, context)
        fig = plot_state_heatmaps({f"{s.upper()} facts (held out)": grids[s] for s in ("id", "ood")},
                                  list(PROBE_POSITIONS), "R^2", f"Attribute values by linear probe at step {step}")
        parts.append(ReportFigure("attribute value heatmap (linear probes)", fig,
                                  "R^2 of the value probes at every residual state, for the entity read at e1 "
                                  "and at e2, at the final checkpoint; the mean of the two columns is the last "
                                  "point of the curves above."))
    grids = {f"{s.upper()} test queries": trace(model, context, s).mean_change() for s in ("id", "ood")}
    corrupt = "the head entity h" if context.task == "composition" else "the first entity e1"
    fig = plot_state_heatmaps(grids, labels, "rank change", f"Causal tracing at step {step}", diverging=True)
    parts.append(ReportFigure("causal tracing heatmap", fig,
                              f"Mean rise of the clean answer's rank at the last position when one residual state "
                              f"of the query is taken from the same query with {corrupt} replaced "
                              f"({TRACE_QUERIES} test queries at most). Large values mark the states that carry "
                              "what the answer depends on."))
    return parts
