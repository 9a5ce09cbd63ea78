"""Where a comparison model holds each entity's attribute value: linear probes per residual state.

Wang et al. 2024 ("Grokked transformers are implicit reasoners", arXiv 2405.15071; their circuit analysis)
find that a grokked comparison model retrieves the attribute values of both entities in the lower
layers, at the entities' own positions, and compares them in the upper layers; because the
retrieval is the same for every entity, the rule carries over to OOD entities. Read through the
unembedding, the values are not decodable in this toolkit's default model (``docs/training.md``),
so the values are read by linear probes (:mod:`circuits.linear_probe`) instead.

Probe queries, a seeded function of the run's data: each atomic fact ``(e, a)`` gives two
comparison queries, ``a e y`` (the value of ``e`` read at position 1, ``e1``) and ``a y e``
(read at position 2, ``e2``), with ``y`` another entity drawn uniformly from those of the same
kind for ``a`` (ID with ID, OOD with OOD, as the test sets pair them). The ID facts are split,
seeded, into a *fit* share (:data:`FIT_SHARE`) and *held-out* ones. Per position, one scalar
probe per residual state (ridge regression of the value ``0..V-1``; the values are ordinal and
comparing needs only their order, so the probe reads a magnitude, not 20 separable classes) is
fitted on the fit facts' queries and scored by ``R^2`` on the held-out ID facts' queries (``id``)
and the OOD facts' queries (``ood``): 1 = the value is read exactly, 0 = no better than the mean
value. A held-out fact's query was never a probe input, so a high ``id`` score means the value
sits along directions shared across facts; ``ood`` asks the same of facts the model never
compared. Definitions in ``docs/scores.md`` ("Reasoning detector").

Where the comparison itself is made, :func:`label_probes`: a class probe of the answer label
(``<``, ``=``, ``>``) per residual state at the last position, fitted on training comparisons and
scored on the ID and OOD test comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from transformer_lens import HookedTransformer

from circuits import fit_linear_probe, probe_score

__all__ = ["FIT_SHARE", "ProbeSet", "label_probes", "probe_sets", "value_probes"]

#: Share of the ID atomic facts whose queries fit the probes; the rest are the held-out ID facts.
FIT_SHARE = 0.8
#: Read positions of the two entities in ``a e1 e2``.
POSITIONS = {"e1": 1, "e2": 2}


@dataclass(frozen=True)
class ProbeSet:
    """Queries ``tokens`` (n, 3) int64 and their int64 targets ``labels`` (n,): the read entity's value
    ``0..V-1`` (:func:`probe_sets`) or the comparison label ``0, 1, 2`` (:func:`label_probes`)."""

    tokens: torch.Tensor
    labels: torch.Tensor


def probe_sets(values: torch.Tensor, ood: torch.Tensor, seed: int = 0, fit_share: float = FIT_SHARE
               ) -> dict[tuple[str, str], ProbeSet]:
    """The probe queries of a comparison run (module docstring): ``(position, split) -> ProbeSet``.

    ``values``: the (E, A) attribute values; ``ood``: the (E, A) OOD mask of the run's data
    (:class:`interp.tasks.comparison.ComparisonData`). ``position`` is ``"e1"`` or ``"e2"``,
    ``split`` is ``"fit"``, ``"id"`` or ``"ood"``. Token ids follow the task's vocabulary:
    entities ``0..E-1``, attributes ``E..E+A-1``.
    """
    if not 0.0 < fit_share < 1.0:
        raise ValueError(f"fit_share must be in (0, 1), got {fit_share}")
    if values.shape != ood.shape or values.ndim != 2:
        raise ValueError(f"values and ood must both be (entities, attributes), got {tuple(values.shape)} and "
                         f"{tuple(ood.shape)}")
    E = values.shape[0]
    g = torch.Generator().manual_seed(seed)
    entity, attribute = (~ood).nonzero(as_tuple=True)
    fit = torch.zeros(entity.shape[0], dtype=torch.bool)
    fit[torch.randperm(entity.shape[0], generator=g)[:round(fit_share * entity.shape[0])]] = True
    facts = {"fit": (entity[fit], attribute[fit]), "id": (entity[~fit], attribute[~fit]),
             "ood": ood.nonzero(as_tuple=True)}
    sets = {}
    for split, (e, a) in facts.items():
        if e.numel() == 0:
            raise ValueError(f"no {split} facts to probe (fit_share={fit_share}, {int(ood.sum())} OOD facts)")
        y = _partners(e, a, ood, g)
        for name, position in POSITIONS.items():
            tokens = torch.stack([a + E, e, y] if position == 1 else [a + E, y, e], dim=-1)
            sets[(name, split)] = ProbeSet(tokens, values[e, a].long())
    return sets


def _partners(e: torch.Tensor, a: torch.Tensor, ood: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """For each fact ``(e, a)``, another entity of the same kind (ID or OOD) for ``a``, uniformly."""
    same = ood[:, a].T == ood[e, a][:, None]  # (n, E)
    same[torch.arange(e.shape[0]), e] = False
    if not bool(same.any(1).all()):
        raise ValueError("an attribute has a single ID or OOD entity; no partner to compare it with")
    return torch.rand(same.shape, generator=g).masked_fill(~same, -1.0).argmax(1)


def value_probes(model: HookedTransformer, sets: dict[tuple[str, str], ProbeSet],
                 splits: tuple[str, ...] = ("fit", "id", "ood")) -> pd.DataFrame:
    """``R^2`` of each entity's value read by a scalar probe, per position, split and residual state.

    Columns ``position`` (``e1``/``e2``), ``split`` (those of ``splits``), ``state`` (``0..L``),
    ``r2`` in ``(-inf, 1]``, ``n`` (queries). ``fit`` is the probe's score on its own fit queries
    (how much it could memorise); the detector scores ``id`` and ``ood`` only. ``r2`` is NaN for a
    split whose values are all equal (a small run's OOD entities can share one): R^2 is undefined
    there, and the other splits' rows stand.
    """
    rows = []
    for name, position in POSITIONS.items():
        fit = sets[(name, "fit")]
        probe = fit_linear_probe(model, fit.tokens, fit.labels.double(), position, kind="scalar")
        for split in splits:
            s = sets[(name, split)]
            constant = s.labels.numel() > 0 and bool((s.labels == s.labels.flatten()[0]).all())
            r2 = ([float("nan")] * (int(model.cfg.n_layers) + 1) if constant
                  else probe_score(model, probe, s.tokens, s.labels.double(), position).tolist())
            rows += [{"position": name, "split": split, "state": state, "r2": float(v), "n": int(s.labels.numel())}
                     for state, v in enumerate(r2)]
    return pd.DataFrame(rows)


def label_probes(model: HookedTransformer, fit: ProbeSet, tests: dict[str, ProbeSet]) -> pd.DataFrame:
    """Accuracy of a class probe of the comparison label at the last position, per residual state.

    ``fit``: comparison queries ``a e1 e2`` (training comparisons) and their labels ``0, 1, 2``
    (``<``, ``=``, ``>``); ``tests``: split name -> queries and labels. Columns ``split``,
    ``state`` (``0..L``), ``accuracy`` in [0, 1], ``chance`` (the split's majority-label share).
    The state from which the label is read is where the two values have been compared.
    """
    probe = fit_linear_probe(model, fit.tokens, fit.labels, 2, n_classes=3)
    rows = []
    for split, s in tests.items():
        chance = float(s.labels.bincount().max()) / s.labels.numel()
        rows += [{"split": split, "state": state, "accuracy": float(v), "chance": chance}
                 for state, v in enumerate(probe_score(model, probe, s.tokens, s.labels, 2).tolist())]
    return pd.DataFrame(rows)
