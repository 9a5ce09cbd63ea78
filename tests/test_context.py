"""interp.scoring.context: the digest of a run's plan, which tells rows of an older plan apart."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import torch

from interp.scoring.context import context_digest


@dataclasses.dataclass(frozen=True)
class Plan:
    tokens: torch.Tensor
    edges: tuple
    score: float


def test_equal_contexts_agree_and_different_ones_differ():
    plan = Plan(torch.arange(6).view(2, 3), (("L0H1", "L1H0", "k"),), 0.91)
    twin = Plan(torch.arange(6).view(2, 3), (("L0H1", "L1H0", "k"),), 0.91)
    assert context_digest(plan) == context_digest(twin)  # two tensors of one value (their pickles differ)
    others = [Plan(torch.arange(6).view(3, 2), plan.edges, 0.91), Plan(plan.tokens, (("L0H2", "L1H0", "k"),), 0.91),
              Plan(plan.tokens, plan.edges, 0.5), Plan(plan.tokens.float(), plan.edges, 0.91)]
    assert len({context_digest(p) for p in [plan, *others]}) == 5
    assert context_digest(lambda x: x + 1) != context_digest(lambda x: x * 2)
    assert context_digest(pd.DataFrame({"a": [1]})) != context_digest(pd.DataFrame({"a": [2]}))
    assert context_digest(np.arange(3)) == context_digest(np.arange(3))


def test_floats_count_to_six_digits_and_unreadable_contexts_have_none():
    # Another machine's BLAS may change the last bits of a prepared float: the digest must not.
    noisy = torch.tensor([1.0, 2.0, -3.0], dtype=torch.float64) * (1 + 1e-12)
    assert context_digest(torch.tensor([1.0, 2.0, -3.0], dtype=torch.float64)) == context_digest(noisy)
    assert context_digest(0.3) == context_digest(0.1 + 0.2) and context_digest(0.3) != context_digest(0.31)

    class Holder:
        def __init__(self):
            self.stream = (i for i in range(3))  # a generator pickles nowhere

    assert context_digest(Holder()) is None
