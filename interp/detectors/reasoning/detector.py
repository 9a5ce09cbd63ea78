"""The ``reasoning`` detector: ID and OOD generalisation of a composition or comparison run.

Wang et al. 2024 ("Grokked transformers are implicit reasoners", arXiv 2405.15071) train a
transformer on atomic facts and on facts inferred from them; two-hop composition generalises to
held-out inferred facts of trained atoms (ID) but not to those whose atoms never took part in a
trained inference (OOD), and the bridge entity of an ID query is decodable at the ``r1`` position
from the middle layers (logit lens, their section 5); comparison generalises OOD too.

Per checkpoint, on the run's own evaluation sets (``interp/tasks/_facts.py``: the fixed seeded
samples of at most 4,096 queries that ``metrics.csv`` is computed on, rebuilt from ``run.json``
by the seeded generator), model-level rows ``train_acc``, ``test_id_acc``, ``test_ood_acc``
(the same definitions and numbers as the run's ``metrics.csv`` at that step) and, for
composition, ``bridge_rr_id`` and ``bridge_rr_ood`` with ``layer`` = residual state ``l = 0..L``
(0: embeddings; ``L``: after the last block): the mean over the ID / OOD test chains ``h r1 r2``
of the reciprocal rank of the bridge entity ``b`` read through the final norm and unembedding at
the ``r1`` position (:func:`circuits.logit_lens`), in ``[1/d_vocab, 1]``. For comparison,
whose attribute values are not decodable through the unembedding, ``value_r2_id`` and
``value_r2_ood`` per residual state instead: the ``R^2`` of linear probes reading each entity's
value at its own position of ``a e1 e2``, fitted on most ID facts and scored on the held-out ID
facts and on the OOD facts (:mod:`interp.comparison_probe`; mean of the ``e1`` and ``e2``
positions), in ``(-inf, 1]``. The definitions are in ``docs/scores.md`` ("Reasoning detector").

Applies to models named by ``interp.models.reasoning_config`` for the two tasks
(``composition-4l-d128``, ``comparison-...``); the test sets come from the run's ``run.json``,
so a checkpoint outside a run gets error rows saying the detector cannot apply there.

Its report section draws the three accuracies over training, the bridge entity's reciprocal rank
(composition) or the value probes' ``R^2`` (comparison) per residual state over training (ID
beside OOD), and for the final checkpoint the logit-lens heatmap (composition) or the probes'
heatmap over states and positions (comparison), and the causal-tracing heatmap
(:func:`circuits.causal_trace`: one state of the clean query replaced by that of a query with
another head entity, or first entity, and the rank change of the clean answer).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformer_lens import HookedTransformer

from interp.detectors.reasoning.probes import (
    POSITIONS as PROBE_POSITIONS,
    ProbeSet,
    label_probes,
    probe_sets,
    value_probes,
)
from interp.detectors.spec import Detector, Row
from interp.base.page import ReportFigure
from interp.detectors._curves import metric_curves
from interp.detectors._final import final_model_with
from interp.runs.layout import RunError
from interp.runs.record import read_run

__all__ = ["DETECTOR", "METRICS", "POSITIONS", "VALUES", "ReasoningContext", "accuracy_curve", "bridge_lens",
           "first_step_at", "label_curves", "rank_curves", "run_context", "trace", "trace_inputs", "value_grids"]

ACCURACIES = ("train_acc", "test_id_acc", "test_ood_acc")
RANKS = ("bridge_rr_id", "bridge_rr_ood")
VALUES = ("value_r2_id", "value_r2_ood")
METRICS = (*ACCURACIES, *RANKS, *VALUES)
TASKS = ("composition", "comparison")
#: Names of the three query positions of each task.
POSITIONS = {"composition": ("h", "r1", "r2"), "comparison": ("a", "e1", "e2")}
#: Queries of a split used by the report's causal trace (a fixed seeded sample).
TRACE_QUERIES = 256
_NAME = re.compile(r"^(composition|comparison)-\d+l-d\d+$")


@dataclass(frozen=True)
class ReasoningContext:
    """What a run's checkpoints are scored on, rebuilt once from its ``run.json`` (it pickles).

    ``task``: ``"composition"`` or ``"comparison"``; ``sets``: the evaluation samples
    ``train_atomic``, ``train_inferred``, ``test_id``, ``test_ood`` (:class:`interp.tasks._facts.Facts`)
    of the training loop; ``shares``: the atomic and inferred shares of the training set (the
    weights of ``train_acc``); ``bridge``: composition only, ``"id"``/``"ood"`` -> the bridge entity of
    each query of ``test_id`` / ``test_ood``; ``n_entities``; ``values``: comparison only, the (E, A)
    attribute values; ``probes``: comparison only, the value probes' queries
    (:func:`interp.comparison_probe.probe_sets`); ``label0``: comparison only, the token id of ``<``
    (``=`` and ``>`` follow).
    """

    task: str
    sets: dict[str, Any]
    shares: tuple[float, float]
    n_entities: int
    bridge: dict[str, torch.Tensor] = field(default_factory=dict)
    values: torch.Tensor | None = None
    probes: dict[tuple[str, str], Any] = field(default_factory=dict)
    label0: int = -1

    def split(self, split: str):
        """The test queries of ``split`` (``"id"`` or ``"ood"``)."""
        if split not in ("id", "ood"):
            raise ValueError(f"split must be 'id' or 'ood', got {split!r}")
        return self.sets[f"test_{split}"]


def applies(model: HookedTransformer) -> str | None:
    name = str(model.cfg.model_name or "")
    if not _NAME.match(name):
        return (f"model {name!r} is not a composition or comparison model (interp train composition / comparison "
                "name theirs composition-<L>l-d<D> / comparison-<L>l-d<D>)")
    if int(model.cfg.n_ctx) < 3:
        return f"context n_ctx={model.cfg.n_ctx} is shorter than the 3-token queries"
    return None


def run_context(run_dir: str | Path | None) -> ReasoningContext:
    """The evaluation sets of a composition or comparison run, rebuilt from its ``run.json``.

    The task is built again from the recorded training options (seeded generator); its
    description must equal the recorded one, so the sets are those ``metrics.csv`` was computed
    on. Raises :class:`interp.RunError` (one line) for a checkpoint outside a run, a run of
    another task, or data this version no longer generates.
    """
    info = read_run(run_dir) if run_dir is not None else None
    if info is None:
        raise RunError("not applicable: the checkpoint is not inside a run with a run.json, from which the task's "
                       "ID and OOD test sets are rebuilt")
    name = info.task_name
    if name not in TASKS:
        raise RunError(f"not applicable: {run_dir} is a run of task {name!r}, not composition or comparison")
    task = info.rebuild_task()
    sets = {k: task.eval_sets[k] for k in ("train_atomic", "train_inferred", "test_id", "test_ood")}
    data = task.data
    n = len(data.train)
    shares = (data.n_atomic / n, (n - data.n_atomic) / n)  # the weights of FactsTask.evaluate, computed alike
    if name == "composition":
        return ReasoningContext(name, sets, shares, data.n_entities,
                                bridge={s: _bridges(data, sets[f"test_{s}"].tokens) for s in ("id", "ood")})
    return ReasoningContext(name, sets, shares, data.n_entities, values=data.values.clone(),
                            probes=probe_sets(data.values, data.ood_entities), label0=data.label_ids[0])


def _bridges(data, tokens: torch.Tensor) -> torch.Tensor:
    """The bridge entity of each query ``h r1 r2``: the tail of the atomic fact ``(h, r1)``."""
    E = data.n_entities
    table = torch.full((E, data.n_relations), -1, dtype=torch.long)
    table[data.atomic[:, 0], data.atomic[:, 1] - E] = data.atomic[:, 2]
    bridge = table[tokens[:, 0], tokens[:, 1] - E]
    if bool((bridge < 0).any()):  # cannot happen for chains the generator built
        raise RunError("a test chain's first hop is not an atomic fact of the run")
    return bridge


def prepare(model: HookedTransformer, run_dir: Path | None) -> ReasoningContext | str:
    try:
        return run_context(run_dir)
    except (RunError, OSError, ValueError) as exc:  # each checkpoint becomes an error row with the reason
        return str(exc)


def _accuracies(model: HookedTransformer, context: ReasoningContext) -> dict[str, float]:
    from interp.tasks._facts import loss_and_accuracy

    with torch.inference_mode():
        acc = {name: loss_and_accuracy(model, facts)[1] for name, facts in context.sets.items()}
    wa, wi = context.shares
    return {"train_acc": wa * acc["train_atomic"] + wi * acc["train_inferred"],
            "test_id_acc": acc["test_id"], "test_ood_acc": acc["test_ood"]}


def bridge_lens(model: HookedTransformer, context: ReasoningContext, split: str):
    """:func:`circuits.logit_lens` of the bridge entity on a composition run's ``split`` test chains.

    Ranks at every residual state and all three positions (``h, r1, r2``); the ``r1`` column of
    ``mean_reciprocal_rank()`` is the detector's ``bridge_rr_<split>`` curve.
    """
    from circuits import logit_lens

    if context.task != "composition":
        raise ValueError(f"the bridge entity is a composition query's; this is a {context.task} run")
    return logit_lens(model, context.split(split).tokens, context.bridge[split])


def value_grids(model: HookedTransformer, context: ReasoningContext) -> dict[str, torch.Tensor]:
    """The value probes of a comparison run: ``"id"/"ood"`` -> ``R^2`` (L + 1 states, e1 and e2)."""
    if context.task != "comparison":
        raise ValueError(f"attribute values are a comparison query's; this is a {context.task} run")
    table = value_probes(model, context.probes, ("id", "ood"))
    grid = table.pivot_table(index="state", columns=["split", "position"], values="r2")
    return {split: torch.tensor(grid[split][list(PROBE_POSITIONS)].to_numpy()) for split in ("id", "ood")}


def label_curves(model: HookedTransformer, context: ReasoningContext) -> pd.DataFrame:
    """Where a comparison run compares: :func:`interp.comparison_probe.label_probes` fitted on the
    training comparisons of the run's evaluation sample, scored on its ID and OOD test queries."""
    if context.task != "comparison":
        raise ValueError(f"the comparison label is a comparison query's; this is a {context.task} run")
    as_set = lambda facts: ProbeSet(facts.tokens, facts.answer - context.label0)  # noqa: E731
    return label_probes(model, as_set(context.sets["train_inferred"]),
                        {s: as_set(context.split(s)) for s in ("id", "ood")})


def score(model: HookedTransformer, context: ReasoningContext | str) -> list[Row]:
    if isinstance(context, str):
        raise RunError(context)
    rows: list[Row] = [{"metric": k, "value": v} for k, v in _accuracies(model, context).items()]
    if context.task == "composition":
        for split in ("id", "ood"):
            rr = bridge_lens(model, context, split).mean_reciprocal_rank()[:, 1]  # the r1 position
            rows += [{"metric": f"bridge_rr_{split}", "layer": state, "value": float(v)}
                     for state, v in enumerate(rr.tolist())]
    else:
        grids = value_grids(model, context)
        for split in ("id", "ood"):
            rows += [{"metric": f"value_r2_{split}", "layer": state, "value": float(v)}
                     for state, v in enumerate(grids[split].mean(1).tolist())]
    return rows


def summary(model: HookedTransformer, run_dir: Path | None) -> str:
    try:
        context = run_context(run_dir)
    except RunError as exc:
        return f"reasoning: {exc}"
    acc = _accuracies(model, context)
    lines = [f"reasoning ({context.task}): train {acc['train_acc']:.3f}, ID test {acc['test_id_acc']:.3f} "
             f"({len(context.sets['test_id'])} queries), OOD test {acc['test_ood_acc']:.3f} "
             f"({len(context.sets['test_ood'])} queries)"]
    if context.task == "composition":
        lines.append("  bridge entity at r1, mean reciprocal rank by residual state 0..L (logit lens):")
        for split in ("id", "ood"):
            rr = bridge_lens(model, context, split).mean_reciprocal_rank()[:, 1]
            lines.append(f"    {split.upper():<4}" + " ".join(f"{v:.3f}" for v in rr.tolist()))
    else:
        grids = value_grids(model, context)
        lines.append("  attribute value at e1 / e2, linear-probe R^2 by residual state 0..L (held-out facts):")
        for split in ("id", "ood"):
            lines.append(f"    {split.upper():<4}" + " ".join(f"{a:.2f}/{b:.2f}" for a, b in grids[split].tolist()))
        labels = label_curves(model, context)
        lines.append("  comparison label at e2, linear-probe accuracy by residual state 0..L (test queries):")
        for split, part in labels.groupby("split"):
            lines.append(f"    {split.upper():<4}" + " ".join(f"{v:.2f}" for v in part["accuracy"])
                         + f"  (majority label {part['chance'].iloc[0]:.2f})")
    return "\n".join(lines)


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


def trace_inputs(context: ReasoningContext, split: str, n: int = TRACE_QUERIES, seed: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(tokens, corrupted, answer)`` of a seeded sample of at most ``n`` ``split`` test queries.

    Composition: the head entity ``h`` replaced by another entity drawn uniformly (so the bridge,
    and nearly always the answer, changes). Comparison: the first entity ``e1`` replaced by one
    whose value of the attribute compares differently with ``e2``'s (the label changes).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    facts = context.split(split)
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(facts), generator=g)[:n].sort().values
    tokens, answer = facts.tokens[pick], facts.answer[pick]
    corrupted = tokens.clone()
    E = context.n_entities
    if context.task == "composition":
        corrupted[:, 0] = (tokens[:, 0] + torch.randint(1, E, (len(pick),), generator=g)) % E
    else:
        values = context.values  # (E, A)
        attr = tokens[:, 0] - E
        v2 = values[tokens[:, 2], attr]
        other = values[:, attr].T  # (n, E): each entity's value of the query's attribute
        current = torch.sign(values[tokens[:, 1], attr] - v2)
        differs = torch.sign(other - v2[:, None]) != current[:, None]
        if not bool(differs.any(1).all()):
            raise ValueError("a comparison query has no entity that would change its label")
        draw = torch.rand(other.shape, generator=g).masked_fill(~differs, -1.0)
        corrupted[:, 1] = draw.argmax(1)
    return tokens, corrupted, answer


def trace(model: HookedTransformer, context: ReasoningContext, split: str, n: int = TRACE_QUERIES, seed: int = 0):
    """:func:`circuits.causal_trace` of the clean answer's rank at the last position, on :func:`trace_inputs`.

    ``trace(...).mean_change()`` is the (residual state x position) heatmap: how far the answer
    falls in rank when that one state is taken from the corrupted query.
    """
    from circuits import causal_trace

    tokens, corrupted, answer = trace_inputs(context, split, n, seed)
    return causal_trace(model, tokens, corrupted, answer, read_position=2, metric="rank")


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
                               title="Attribute values by layer (linear probes) over training")
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


DETECTOR = Detector(
    name="reasoning",
    help="train / ID / OOD accuracy of a composition or comparison run, the bridge entity's logit lens and the "
         "attribute values' linear probes (Wang et al. 2024)",
    metrics=METRICS,
    applies=applies,
    prepare=prepare,
    score=score,
    summary=summary,
    report=report,
)
