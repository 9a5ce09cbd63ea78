"""Comparison (Wang et al. 2024, "Grokked transformers are implicit reasoners", arXiv 2405.15071).

Data, as the paper builds it (section 3; their public notebook ``comparison.ipynb``), from a
seeded generator:

- **Atomic facts**: every entity has, for each of ``n_attributes`` attributes, an integer value
  drawn uniformly from ``0..n_values-1``: ``e a`` -> ``v``. Every atomic fact is trained.
- **OOD entities**: per attribute, a random ``ood_share`` of the entities (rounded) is OOD for it:
  their values are trained as atomic facts but never appear in a training comparison.
- **Inferred facts** (comparisons): ``a e1 e2`` -> one of three labels, ``<`` (value of ``e1``
  below that of ``e2``), ``=``, ``>``. Per attribute, unordered pairs of distinct entities that are
  both ID form the ID pool (both orders of a pair always go to the same side); a random
  ``test_share`` of the pairs is the **ID test**, the rest are candidates. Pairs of two OOD
  entities are the **OOD test**; mixed pairs are dropped. The training comparisons are
  ``round(phi * n_id_atomic)`` ordered comparisons drawn from the candidates, ``phi`` being the
  paper's inferred/atomic ratio over the ID atomic facts. The paper uses attribute-specific labels
  and a longer query (``a <q> e1 <mask> e2``); here the three labels are shared and the query is
  ``a e1 e2``.

Tokens: entities ``0..E-1``, attributes ``E..E+A-1``, values ``E+A..E+A+V-1``, labels ``<``,
``=``, ``>`` the next three ids, PAD the last: one vocabulary of ``E + A + V + 4`` ids in and out.
Comparisons are kept as rows ``[a, e1, e2, label, v1, v2]`` of token ids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch

from interp.tasks.models import reasoning_config
from interp.tasks._facts import Facts, FactsTask, check_request, choose, given, queries

#: Version of the generator, recorded in run.json: a run resumes only on the data it began with.
DATA_VERSION = "comparison-v1"
LABELS = ("<", "=", ">")


@dataclass(frozen=True)
class ComparisonData:
    """One draw of the comparison data (module docstring). ``values`` (E, A) raw values;
    ``ood_entities`` (E, A) bool; token-id tensors ``atomic`` (n, 3) rows ``[e, a, v]`` with
    ``atomic_ood`` (n,); ``train_comparisons``, ``test_id_comparisons``, ``test_ood_comparisons``
    (m, 6) rows ``[a, e1, e2, label, v1, v2]``; query sets as in ``CompositionData``."""

    n_entities: int
    n_attributes: int
    n_values: int
    values: torch.Tensor
    ood_entities: torch.Tensor
    atomic: torch.Tensor
    atomic_ood: torch.Tensor
    train_comparisons: torch.Tensor
    test_id_comparisons: torch.Tensor
    test_ood_comparisons: torch.Tensor

    @property
    def label_ids(self) -> list[int]:
        """Token ids of ``<``, ``=``, ``>``."""
        first = self.n_entities + self.n_attributes + self.n_values
        return [first, first + 1, first + 2]

    @property
    def pad(self) -> int:
        return self.n_entities + self.n_attributes + self.n_values + 3

    @property
    def d_vocab(self) -> int:
        return self.pad + 1

    @property
    def n_atomic(self) -> int:
        return int(self.atomic.shape[0])

    def atomic_queries(self, facts: torch.Tensor) -> Facts:
        """Queries ``e a`` -> ``v`` of rows ``[e, a, v]``."""
        return queries([facts[:, 0], facts[:, 1]], facts[:, 2], self.pad)

    def comparison_queries(self, rows: torch.Tensor) -> Facts:
        """Queries ``a e1 e2`` -> label of rows ``[a, e1, e2, label, v1, v2]``."""
        return queries([rows[:, 0], rows[:, 1], rows[:, 2]], rows[:, 3], self.pad)

    @cached_property
    def train(self) -> Facts:
        return Facts.cat([self.atomic_queries(self.atomic), self.comparison_queries(self.train_comparisons)])

    @cached_property
    def ood_atomic(self) -> Facts:
        return self.atomic_queries(self.atomic[self.atomic_ood])

    @cached_property
    def test_id(self) -> Facts:
        return self.comparison_queries(self.test_id_comparisons)

    @cached_property
    def test_ood(self) -> Facts:
        return self.comparison_queries(self.test_ood_comparisons)


def comparison_data(n_entities: int = 200, n_attributes: int = 5, n_values: int = 20, ood_share: float = 0.1,
                    phi: float = 20.0, test_share: float = 0.1, seed: int = 0) -> ComparisonData:
    """Draw the comparison data (module docstring); a pure function of its arguments.

    Raises ``ValueError`` (one line) for impossible requests: shares outside (0, 1), so few
    entities that an attribute has fewer than 2 OOD or ID entities or a test set would be empty,
    or ``phi`` asking for more training comparisons than the ID pool holds.
    """
    check_request(phi, n_entities=n_entities, n_attributes=n_attributes, n_values=n_values, seed=seed)
    E, A, V = n_entities, n_attributes, n_values
    if E < 2 or A < 1 or V < 2:
        raise ValueError(f"need n_entities >= 2, n_attributes >= 1, n_values >= 2; got {E}, {A}, {V}")
    for name, share in (("ood_share", ood_share), ("test_share", test_share)):
        if not 0.0 < share < 1.0:
            raise ValueError(f"{name} must be in (0, 1), got {share}")
    n_ood = round(ood_share * E)
    if n_ood < 2 or E - n_ood < 2:
        raise ValueError(f"ood_share={ood_share} of {E} entities gives {n_ood} OOD and {E - n_ood} ID entities per "
                         f"attribute; each needs at least 2 (raise n_entities)")
    g = torch.Generator().manual_seed(seed)
    values = torch.randint(V, (E, A), generator=g)
    ood = torch.zeros(E, A, dtype=torch.bool)
    for a in range(A):
        ood[choose(E, n_ood, g), a] = True
    value_id = E + A
    label0 = E + A + V
    ents, attrs = torch.meshgrid(torch.arange(E), torch.arange(A), indexing="ij")
    atomic = torch.stack([ents.reshape(-1), attrs.reshape(-1) + E, values.reshape(-1) + value_id], dim=-1)
    atomic_ood = ood.reshape(-1)

    i, j = torch.triu_indices(E, E, offset=1)  # unordered pairs i < j
    pools: dict[str, list[torch.Tensor]] = {"test_id": [], "candidates": [], "test_ood": []}
    for a in range(A):
        both_id, both_ood = ~ood[i, a] & ~ood[j, a], ood[i, a] & ood[j, a]
        id_pairs = torch.stack([i[both_id], j[both_id]], dim=-1)
        held = torch.zeros(id_pairs.shape[0], dtype=torch.bool)
        held[choose(id_pairs.shape[0], round(test_share * id_pairs.shape[0]), g)] = True
        for name, pairs in (("test_id", id_pairs[held]), ("candidates", id_pairs[~held]),
                            ("test_ood", torch.stack([i[both_ood], j[both_ood]], dim=-1))):
            pools[name].append(_ordered_rows(pairs, a, values, E, value_id, label0))
    test_id, candidates, test_ood = (torch.cat(pools[n]) for n in ("test_id", "candidates", "test_ood"))
    n_train = round(phi * int((~atomic_ood).sum()))
    if test_id.shape[0] == 0:
        raise ValueError(f"test_share={test_share} of the ID pairs of {E} entities is no pair; raise n_entities")
    if n_train > candidates.shape[0]:
        raise ValueError(f"phi={phi} asks for {n_train} training comparisons but only {candidates.shape[0]} ID "
                         f"comparisons are left after the test split; phi can be at most "
                         f"{math.floor(100 * candidates.shape[0] / int((~atomic_ood).sum())) / 100:.2f}")  # rounded down: that phi is accepted
    if n_train < 1:
        raise ValueError(f"phi={phi} gives no training comparison")
    train = candidates[choose(candidates.shape[0], n_train, g)]
    return ComparisonData(E, A, V, values, ood, atomic, atomic_ood, train, test_id, test_ood)


def _ordered_rows(pairs: torch.Tensor, a: int, values: torch.Tensor, E: int, value_id: int,
                  label0: int) -> torch.Tensor:
    """Rows ``[a, e1, e2, label, v1, v2]`` (token ids) of both orders of each unordered pair."""
    e1 = torch.cat([pairs[:, 0], pairs[:, 1]])
    e2 = torch.cat([pairs[:, 1], pairs[:, 0]])
    v1, v2 = values[e1, a], values[e2, a]
    label = (v1 > v2).long() - (v1 < v2).long() + 1  # 0: <, 1: =, 2: >
    return torch.stack([torch.full_like(e1, E + a), e1, e2, label + label0, v1 + value_id, v2 + value_id], dim=-1)


class ComparisonTask(FactsTask):
    """Attribute comparisons for a GPT-2-style model (``interp.models.reasoning_config``)."""

    name = "comparison"
    #: The task-specific fields of ``TrainOptions`` it reads (``interp sweep`` checks grid keys against them).
    option_names = ("n_entities", "n_attributes", "n_values", "ood_share", "phi", "batch_size", "d_model",
                    "n_layers")

    def __init__(self, options) -> None:  # options: interp.presets.TrainOptions
        o = options
        self.params = {"n_entities": given(o.n_entities, 200), "n_attributes": given(o.n_attributes, 5),
                       "n_values": given(o.n_values, 20), "ood_share": given(o.ood_share, 0.1),
                       "phi": given(o.phi, 20.0), "test_share": 0.1}
        self.data = comparison_data(**self.params, seed=o.seed)
        cfg = reasoning_config(self.data.d_vocab, d_model=given(o.d_model, 128), n_layers=given(o.n_layers, 4),
                               name="comparison")
        self._setup(options, cfg)

    def describe(self) -> dict:
        d = self.data
        return {"name": self.name, "data": DATA_VERSION, **self.params, "data_seed": self.options.seed,
                "d_vocab": d.d_vocab, "n_atomic": d.n_atomic, "n_ood_atomic": int(d.atomic_ood.sum()),
                "n_train_inferred": int(d.train_comparisons.shape[0]),
                "n_test_id": int(d.test_id_comparisons.shape[0]),
                "n_test_ood": int(d.test_ood_comparisons.shape[0])}
