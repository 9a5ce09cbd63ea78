"""Composition and comparison data (interp/tasks/composition.py, comparison.py, _facts.py)."""

from __future__ import annotations

import pytest
import torch

from interp.tasks.models import reasoning_config
from interp.tasks._facts import check_vocabulary
from interp.tasks.comparison import comparison_data
from interp.tasks.composition import composition_data


def _rows(t: torch.Tensor) -> set[tuple[int, ...]]:
    return {tuple(r) for r in t.tolist()}


def test_composition_splits_follow_the_paper():
    E, R, k = 60, 8, 5
    d = composition_data(n_entities=E, n_relations=R, facts_per_entity=k, ood_share=0.1, phi=3.0, seed=1)
    # every entity has k facts with distinct relations; ids: entities < E <= relations < E + R = PAD
    assert d.atomic.shape == (E * k, 3) and d.d_vocab == E + R + 1 and d.pad == E + R
    for h in range(E):
        rel = d.atomic[d.atomic[:, 0] == h, 1]
        assert len(rel) == k == len(set(rel.tolist())) and ((rel >= E) & (rel < E + R)).all()
    assert int(d.atomic_ood.sum()) == round(0.1 * E * k)
    tail = {(h, r): t for h, r, t in d.atomic.tolist()}
    ood = _rows(d.atomic[d.atomic_ood])
    for chains in (d.train_chains, d.test_id_chains, d.test_ood_chains):  # chains follow the facts
        for h, r1, b, r2, t in chains.tolist():
            assert tail[(h, r1)] == b and tail[(b, r2)] == t
    def hops(chains):
        return [((h, r1, b), (b, r2, t)) for h, r1, b, r2, t in chains.tolist()]

    assert not any(f in ood or s in ood for f, s in hops(d.train_chains))  # OOD facts never in a training chain
    assert not any(f in ood or s in ood for f, s in hops(d.test_id_chains))
    assert all(f in ood and s in ood for f, s in hops(d.test_ood_chains))
    train, test_id, test_ood = _rows(d.train_chains), _rows(d.test_id_chains), _rows(d.test_ood_chains)
    assert len(train) == len(d.train_chains) and not train & test_id and not train & test_ood
    assert not test_id & test_ood and len(test_ood) > 0
    n_id_atomic = E * k - int(d.atomic_ood.sum())
    assert len(d.train_chains) == round(3.0 * n_id_atomic)  # phi honoured
    # queries: atomic facts answered at position 1 (padded), chains at position 2
    q = d.train
    assert len(q) == E * k + len(d.train_chains) and d.n_atomic == E * k
    assert (q.answer_pos[: E * k] == 1).all() and (q.tokens[: E * k, 2] == d.pad).all()
    assert (q.answer_pos[E * k:] == 2).all() and torch.equal(q.tokens[E * k:], d.train_chains[:, [0, 1, 3]])
    assert torch.equal(q.answer[E * k:], d.train_chains[:, 4])


def test_comparison_splits_follow_the_paper():
    E, A, V = 50, 3, 6
    d = comparison_data(n_entities=E, n_attributes=A, n_values=V, ood_share=0.2, phi=5.0, seed=2)
    assert d.d_vocab == E + A + V + 4 and d.label_ids == [E + A + V, E + A + V + 1, E + A + V + 2]
    assert d.atomic.shape == (E * A, 3) and int(d.atomic_ood.sum()) == A * 10
    assert torch.equal(d.ood_entities.sum(0), torch.full((A,), 10))
    value = {(e, a): v for e, a, v in d.atomic.tolist()}
    for rows in (d.train_comparisons, d.test_id_comparisons, d.test_ood_comparisons):
        for a, e1, e2, label, v1, v2 in rows.tolist():
            assert value[(e1, a)] == v1 and value[(e2, a)] == v2 and e1 != e2
            assert label - d.label_ids[0] == (0 if v1 < v2 else 1 if v1 == v2 else 2)
    ood = d.ood_entities

    def side(rows):  # (e1 OOD, e2 OOD) for the comparison's attribute
        return [(bool(ood[e1, a - E]), bool(ood[e2, a - E])) for a, e1, e2 in rows[:, :3].tolist()]

    assert all(s == (False, False) for s in side(d.train_comparisons))  # OOD entities never in training comparisons
    assert all(s == (False, False) for s in side(d.test_id_comparisons))
    assert all(s == (True, True) for s in side(d.test_ood_comparisons))
    assert len(d.test_ood_comparisons) == A * 10 * 9  # every ordered pair of two OOD entities

    def pairs(rows):
        return {(a, min(e1, e2), max(e1, e2)) for a, e1, e2 in rows[:, :3].tolist()}

    assert not pairs(d.train_comparisons) & pairs(d.test_id_comparisons)  # a pair is on one side only
    assert len(d.train_comparisons) == round(5.0 * (E * A - A * 10)) == len(_rows(d.train_comparisons))
    q = d.test_id
    assert (q.answer_pos == 2).all() and torch.equal(q.tokens, d.test_id_comparisons[:, :3])


def test_generators_are_seeded():
    a, b, c = (composition_data(n_entities=40, n_relations=6, facts_per_entity=4, ood_share=0.1, phi=2.0, seed=s)
               for s in (0, 0, 1))
    assert torch.equal(a.atomic, b.atomic) and torch.equal(a.train_chains, b.train_chains)
    assert torch.equal(a.atomic_ood, b.atomic_ood) and not torch.equal(a.atomic, c.atomic)
    x, y, z = (comparison_data(n_entities=30, n_attributes=2, n_values=5, phi=3.0, seed=s) for s in (3, 3, 4))
    assert torch.equal(x.values, y.values) and torch.equal(x.train_comparisons, y.train_comparisons)
    assert not torch.equal(x.values, z.values)


def test_bad_requests_are_one_line_errors():
    cases = [
        (lambda: composition_data(n_entities=5, n_relations=4, facts_per_entity=2, ood_share=0.05), "raise n_entities"),
        (lambda: composition_data(n_entities=40, n_relations=3, facts_per_entity=4), "n_relations=3"),
        (lambda: composition_data(n_entities=40, n_relations=6, facts_per_entity=4, ood_share=0.1, phi=50.0),
         "phi can be at most"),
        (lambda: composition_data(phi=0.0), "phi"),
        (lambda: composition_data(phi=float("inf")), "phi .* must be a finite number"),  # was an OverflowError
        (lambda: comparison_data(phi=float("inf")), "phi .* must be a finite number"),
        (lambda: composition_data(n_entities=2.5), "n_entities must be a whole number"),  # was torch's TypeError
        (lambda: comparison_data(n_values=True), "n_values must be a whole number"),
        (lambda: composition_data(ood_share=1.0), "ood_share"),
        (lambda: comparison_data(n_entities=10, ood_share=0.1), "raise n_entities"),
        (lambda: comparison_data(n_entities=30, n_attributes=1, n_values=5, phi=1000.0), "phi can be at most"),
        (lambda: check_vocabulary(reasoning_config(100), 221), "smaller than the task's 221"),
        (lambda: check_vocabulary(reasoning_config(300, n_ctx=2), 221), "n_ctx=2"),
        (lambda: reasoning_config(50, d_model=30, n_heads=4), "multiple of n_heads"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match) as info:
            call()
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("seed", [1, 2, 3, 5])
def test_the_largest_phi_an_error_suggests_is_accepted(seed):
    # the suggestion was rounded up (9.01 where 9.00 fits), so following it was refused again
    import re

    for make in (composition_data, lambda **kw: comparison_data(n_entities=30, n_attributes=1, n_values=5, **kw)):
        with pytest.raises(ValueError, match="phi can be at most") as info:
            make(phi=1000.0, seed=seed)
        largest = float(re.search(r"phi can be at most ([\d.]+)", str(info.value)).group(1))
        make(phi=largest, seed=seed)  # accepted


def test_the_default_composition_preset_draws_on_every_seed():
    # phi 9 of 100 entities asks for 8,550 chains of ~9,000; after the ID test's 5 % the rest held
    # 8,522-8,549 on seeds 4, 29, ... (10 of seeds 0-59 refused). The test gives up the few missing.
    from interp.tasks.composition import CompositionTask
    from interp.tasks.presets import preset

    for seed in (4, 29, 0, 1, 2, 3):  # 29: the shortest rest, 8,522
        task = CompositionTask(preset("composition", seed=seed))
        d = task.data
        assert len(d.train_chains) == round(task.params["phi"] * 950) == 8550
        assert 420 <= len(d.test_id_chains) <= 460  # 5 % of the ~9,000 ID chains, less those given up
        assert not _rows(d.train_chains) & _rows(d.test_id_chains)
