"""The ``reasoning`` detector's measurements of one checkpoint on its run's :class:`ReasoningContext`.

Accuracies as the training loop computes them, the bridge entity's logit lens (composition), the
value and label probes (comparison), and the causal trace of the answer (Wang et al. 2024).
"""

from __future__ import annotations

import pandas as pd
import torch
from transformer_lens import HookedTransformer

from interp.detectors.reasoning.context import TRACE_QUERIES, ReasoningContext
from interp.detectors.reasoning.probes import POSITIONS as PROBE_POSITIONS
from interp.detectors.reasoning.probes import ProbeSet, label_probes, value_probes

__all__ = ["accuracies", "bridge_lens", "label_curves", "trace", "trace_inputs", "value_grids"]


def accuracies(model: HookedTransformer, context: ReasoningContext) -> dict[str, float]:
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
    grid = table.pivot(index="state", columns=["split", "position"], values="r2")  # keeps a split of NaN
    return {split: torch.tensor(grid[split][list(PROBE_POSITIONS)].to_numpy()) for split in ("id", "ood")}


def label_curves(model: HookedTransformer, context: ReasoningContext) -> pd.DataFrame:
    """Where a comparison run compares: :func:`interp.comparison_probe.label_probes` fitted on the
    training comparisons of the run's evaluation sample, scored on its ID and OOD test queries."""
    if context.task != "comparison":
        raise ValueError(f"the comparison label is a comparison query's; this is a {context.task} run")
    as_set = lambda facts: ProbeSet(facts.tokens, facts.answer - context.label0)  # noqa: E731
    return label_probes(model, as_set(context.sets["train_inferred"]),
                        {s: as_set(context.split(s)) for s in ("id", "ood")})


def trace_inputs(context: ReasoningContext, split: str, n: int = TRACE_QUERIES, seed: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(tokens, corrupted, answer)`` of a seeded sample of at most ``n`` ``split`` test queries.

    Composition: the head entity ``h`` replaced by another entity drawn uniformly (so the bridge,
    and nearly always the answer, changes). Comparison: the first entity ``e1`` replaced by one
    whose value of the attribute compares differently with ``e2``'s (the label changes), drawn
    uniformly among them; never ``e2`` itself (a query comparing an entity with itself is in no
    split), unless it is the only one.
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
        not_e2 = differs & (torch.arange(E)[None] != tokens[:, 2:3])
        differs = torch.where(not_e2.any(1, keepdim=True), not_e2, differs)
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
