"""Two-hop composition (Wang et al. 2024, "Grokked transformers are implicit reasoners", arXiv 2405.15071).

Data, as the paper builds it (section 3; their public notebook ``composition.ipynb``), from a
seeded generator:

- **Atomic facts**: each of ``n_entities`` entities ``h`` gets ``facts_per_entity`` distinct
  relations of the ``n_relations``, each to a tail drawn uniformly from all entities: ``(h, r, t)``,
  queried as ``h r`` -> ``t``. Every atomic fact is trained.
- **OOD atomic facts**: a random ``ood_share`` of the atomic facts (rounded). They are trained as
  atomic facts but never appear as a hop of a training chain.
- **Inferred facts** (two-hop chains): ``(h, r1, b)`` and ``(b, r2, t)`` give ``h r1 r2`` -> ``t``
  with bridge entity ``b``: ``facts_per_entity ** 2`` chains per entity. Chains whose two hops are
  both ID facts form the ID pool; those whose two hops are both OOD facts are the **OOD test**;
  mixed chains are dropped. A random ``test_share`` of the ID pool is the **ID test**; the training
  chains are ``round(phi * n_id_atomic)`` drawn from the rest, ``phi`` being the paper's
  inferred/atomic ratio (over the ID atomic facts, as in their code). Where ``phi`` needs more
  chains than the rest holds (the default phi 9 on about one seed in six), the ID test gives the
  few missing ones up, keeping at least half of its chains; past that ``phi`` is refused.

Tokens: entities ``0..E-1``, relations ``E..E+R-1``, PAD ``E+R``; one vocabulary of
``E + R + 1`` ids in and out. Chains are kept as rows ``[h, r1, b, r2, t]`` of token ids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch

from interp.tasks.models import reasoning_config
from interp.tasks._facts import Facts, FactsTask, check_request, choose, given, queries

#: Version of the generator, recorded in run.json: a run resumes only on the data it began with.
DATA_VERSION = "composition-v1"


@dataclass(frozen=True)
class CompositionData:
    """One draw of the composition data (module docstring). Token-id tensors:

    ``atomic`` (n, 3) rows ``[h, r, t]`` of every atomic fact and ``atomic_ood`` (n,) bool;
    ``train_chains``, ``test_id_chains``, ``test_ood_chains`` (m, 5) rows ``[h, r1, b, r2, t]``;
    ``train``: the trained queries (every atomic fact, then the training chains), of which the
    first ``n_atomic`` are atomic; ``ood_atomic``, ``test_id``, ``test_ood``: query sets.
    """

    n_entities: int
    n_relations: int
    atomic: torch.Tensor
    atomic_ood: torch.Tensor
    train_chains: torch.Tensor
    test_id_chains: torch.Tensor
    test_ood_chains: torch.Tensor

    @property
    def pad(self) -> int:
        return self.n_entities + self.n_relations

    @property
    def d_vocab(self) -> int:
        return self.n_entities + self.n_relations + 1

    @property
    def n_atomic(self) -> int:
        return int(self.atomic.shape[0])

    def atomic_queries(self, facts: torch.Tensor) -> Facts:
        """Queries ``h r`` -> ``t`` of rows ``[h, r, t]``."""
        return queries([facts[:, 0], facts[:, 1]], facts[:, 2], self.pad)

    def chain_queries(self, chains: torch.Tensor) -> Facts:
        """Queries ``h r1 r2`` -> ``t`` of rows ``[h, r1, b, r2, t]``."""
        return queries([chains[:, 0], chains[:, 1], chains[:, 3]], chains[:, 4], self.pad)

    @cached_property
    def train(self) -> Facts:
        return Facts.cat([self.atomic_queries(self.atomic), self.chain_queries(self.train_chains)])

    @cached_property
    def ood_atomic(self) -> Facts:
        return self.atomic_queries(self.atomic[self.atomic_ood])

    @cached_property
    def test_id(self) -> Facts:
        return self.chain_queries(self.test_id_chains)

    @cached_property
    def test_ood(self) -> Facts:
        return self.chain_queries(self.test_ood_chains)


def composition_data(n_entities: int = 200, n_relations: int = 20, facts_per_entity: int = 10,
                     ood_share: float = 0.05, phi: float = 9.0, test_share: float = 0.05,
                     seed: int = 0) -> CompositionData:
    """Draw the composition data (module docstring); a pure function of its arguments.

    Raises ``ValueError`` (one line) for impossible requests: more relations per entity than
    relations, shares outside (0, 1), so few entities or facts that a test set or the training
    chains would be empty, or ``phi`` asking for more training chains than the ID pool holds.
    """
    check_request(phi, n_entities=n_entities, n_relations=n_relations, facts_per_entity=facts_per_entity, seed=seed)
    E, R, k = n_entities, n_relations, facts_per_entity
    if E < 2 or R < 1 or k < 1:
        raise ValueError(f"need n_entities >= 2, n_relations >= 1, facts_per_entity >= 1; got {E}, {R}, {k}")
    if k > R:
        raise ValueError(f"facts_per_entity={k} needs as many distinct relations, but n_relations={R}")
    for name, share in (("ood_share", ood_share), ("test_share", test_share)):
        if not 0.0 < share < 1.0:
            raise ValueError(f"{name} must be in (0, 1), got {share}")
    g = torch.Generator().manual_seed(seed)
    relations = torch.rand(E, R, generator=g).argsort(dim=1)[:, :k]  # k distinct relations per entity
    tails = torch.randint(E, (E, k), generator=g)
    heads = torch.arange(E)[:, None].expand(E, k)
    atomic = torch.stack([heads, relations + E, tails], dim=-1).reshape(E * k, 3)  # fact i: head i // k
    n_atomic = E * k
    n_ood = round(ood_share * n_atomic)
    if n_ood < 1:
        raise ValueError(f"ood_share={ood_share} of {n_atomic} atomic facts is no fact; raise n_entities or ood_share")
    ood = torch.zeros(n_atomic, dtype=torch.bool)
    ood[choose(n_atomic, n_ood, g)] = True

    # Chain (i, j): first hop fact i (h, r1, b), second hop the j-th fact of b.
    first = torch.arange(n_atomic)[:, None].expand(n_atomic, k).reshape(-1)
    second = atomic[first, 2] * k + torch.arange(k).repeat(n_atomic)
    chains = torch.stack([atomic[first, 0], atomic[first, 1], atomic[first, 2], atomic[second, 1],
                          atomic[second, 2]], dim=-1)
    both_id = ~ood[first] & ~ood[second]
    both_ood = ood[first] & ood[second]
    id_pool, test_ood = chains[both_id], chains[both_ood]
    n_test = round(test_share * id_pool.shape[0])
    held = torch.zeros(id_pool.shape[0], dtype=torch.bool)
    held[choose(id_pool.shape[0], n_test, g)] = True
    n_train = round(phi * (n_atomic - n_ood))
    # phi near the pool's size (the default 9 of 100 entities: 8,550 chains of ~9,000) can need a few
    # test chains on some seeds: the ID test gives them up, keeping at least half of its chains.
    short = n_train - (id_pool.shape[0] - n_test)
    if 0 < short <= n_test // 2:
        held[held.nonzero().flatten()[:short]] = False
    test_id, candidates = id_pool[held], id_pool[~held]
    if test_ood.shape[0] == 0 or test_id.shape[0] == 0:
        raise ValueError(f"{E} entities with {k} facts each (ood_share={ood_share}, test_share={test_share}) give "
                         f"{test_id.shape[0]} ID and {test_ood.shape[0]} OOD test chains; raise n_entities")
    if n_train > candidates.shape[0]:
        most = id_pool.shape[0] - (n_test - n_test // 2)  # the ID test keeps at least half of its chains
        raise ValueError(f"phi={phi} asks for {n_train} training chains but only {most} of the {id_pool.shape[0]} ID "
                         f"chains can be spared from the test split; phi can be at most "
                         f"{math.floor(100 * most / (n_atomic - n_ood)) / 100:.2f}")  # rounded down: that phi is accepted
    if n_train < 1:
        raise ValueError(f"phi={phi} gives no training chain")
    train = candidates[choose(candidates.shape[0], n_train, g)]
    return CompositionData(E, R, atomic, ood, train, test_id, test_ood)


class CompositionTask(FactsTask):
    """Two-hop composition facts for a GPT-2-style model (``interp.models.reasoning_config``)."""

    name = "composition"
    #: The task-specific fields of ``TrainOptions`` it reads (``interp sweep`` checks grid keys against them).
    option_names = ("n_entities", "n_relations", "facts_per_entity", "ood_share", "phi", "batch_size",
                    "d_model", "n_layers")

    def __init__(self, options) -> None:  # options: interp.presets.TrainOptions
        o = options
        self.params = {"n_entities": given(o.n_entities, 200), "n_relations": given(o.n_relations, 20),
                       "facts_per_entity": given(o.facts_per_entity, 10), "ood_share": given(o.ood_share, 0.05),
                       "phi": given(o.phi, 9.0), "test_share": 0.05}
        self.data = composition_data(**self.params, seed=o.seed)
        cfg = reasoning_config(self.data.d_vocab, d_model=given(o.d_model, 128), n_layers=given(o.n_layers, 4),
                               name="composition")
        self._setup(options, cfg)

    def describe(self) -> dict:
        d = self.data
        return {"name": self.name, "data": DATA_VERSION, **self.params, "data_seed": self.options.seed,
                "d_vocab": d.d_vocab, "n_atomic": d.n_atomic, "n_ood_atomic": int(d.atomic_ood.sum()),
                "n_train_inferred": int(d.train_chains.shape[0]), "n_test_id": int(d.test_id_chains.shape[0]),
                "n_test_ood": int(d.test_ood_chains.shape[0])}
