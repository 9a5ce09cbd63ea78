"""The ``reasoning`` detector: ID and OOD generalisation of a composition or comparison run.

Wang et al. 2024 ("Grokked transformers are implicit reasoners", arXiv 2405.15071) train a
transformer on atomic facts and on facts inferred from them; two-hop composition generalises to
held-out inferred facts of trained atoms (ID) but not to those whose atoms never took part in a
trained inference (OOD), and the bridge entity of an ID query is decodable at the ``r1`` position
from the middle layers (logit lens, their section 3); comparison generalises OOD too.

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

import re
from pathlib import Path

from transformer_lens import HookedTransformer

from interp.detectors.reasoning.context import METRICS, ReasoningContext, run_context
from interp.detectors.reasoning.measures import accuracies, bridge_lens, label_curves, value_grids
from interp.detectors.reasoning.report import report
from interp.detectors.spec import Detector, Row
from interp.runs.layout import RunError

__all__ = ["DETECTOR"]

_NAME = re.compile(r"^(composition|comparison)-\d+l-d\d+$")


def applies(model: HookedTransformer) -> str | None:
    name = str(model.cfg.model_name or "")
    if not _NAME.match(name):
        return (f"model {name!r} is not a composition or comparison model (interp train composition / comparison "
                "name theirs composition-<L>l-d<D> / comparison-<L>l-d<D>)")
    if int(model.cfg.n_ctx) < 3:
        return f"context n_ctx={model.cfg.n_ctx} is shorter than the 3-token queries"
    return None


def prepare(model: HookedTransformer, run_dir: Path | None) -> ReasoningContext | str:
    try:
        return run_context(run_dir)
    except (RunError, OSError, ValueError) as exc:  # each checkpoint becomes an error row with the reason
        return str(exc)


def score(model: HookedTransformer, context: ReasoningContext | str) -> list[Row]:
    if isinstance(context, str):
        raise RunError(context)
    rows: list[Row] = [{"metric": k, "value": v} for k, v in accuracies(model, context).items()]
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
    acc = accuracies(model, context)
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
