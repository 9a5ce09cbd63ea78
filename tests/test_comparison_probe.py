"""The comparison task's value probes (interp/detectors/reasoning/probes.py): queries and known answers."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import HookedTransformer

from interp.detectors.reasoning.probes import probe_sets, value_probes
from interp.tasks.models import reasoning_config
from interp.tasks.comparison import comparison_data


def _data(seed: int = 0, n_attributes: int = 3):
    return comparison_data(n_entities=40, n_attributes=n_attributes, n_values=10, ood_share=0.2, phi=3.0, seed=seed)


@pytest.mark.parametrize("seed", [0, 3])
def test_probe_queries_split_the_facts_and_pair_entities_of_one_kind(seed):
    data = _data(seed)
    E = data.n_entities
    sets = probe_sets(data.values, data.ood_entities, seed=seed)
    facts = {}
    for (position, split), s in sets.items():
        a = s.tokens[:, 0] - E
        e, partner = (s.tokens[:, 1], s.tokens[:, 2]) if position == "e1" else (s.tokens[:, 2], s.tokens[:, 1])
        assert bool((a >= 0).all()) and bool((a < data.n_attributes).all())
        assert torch.equal(s.labels, data.values[e, a])
        assert bool((partner != e).all())
        assert torch.equal(data.ood_entities[partner, a], data.ood_entities[e, a])  # ID with ID, OOD with OOD
        assert bool((data.ood_entities[e, a] == (split == "ood")).all())
        facts[(position, split)] = {(int(x), int(y)) for x, y in zip(e, a)}
    for position in ("e1", "e2"):
        fit, held, ood = (facts[(position, s)] for s in ("fit", "id", "ood"))
        assert not fit & held
        assert len(fit | held) == int((~data.ood_entities).sum()) and len(ood) == int(data.ood_entities.sum())
        assert len(fit) == round(0.8 * len(fit | held))
    assert facts[("e1", "fit")] == facts[("e2", "fit")]
    again = probe_sets(data.values, data.ood_entities, seed=seed)
    assert all(torch.equal(again[k].tokens, sets[k].tokens) for k in sets)


def _value_model(data, value_dim: bool) -> HookedTransformer:
    """Blocks that write nothing; the embedding of entity e holds its value of attribute 0 in dim 0
    (``value_dim``) beside random dims, so every state at an entity's position reads its value."""
    model = HookedTransformer(reasoning_config(data.d_vocab, d_model=16, n_layers=2, name="comparison"),
                              move_to_device=False)
    model.eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embed.W_E.copy_(torch.randn(model.embed.W_E.shape, generator=g))
        if value_dim:
            model.embed.W_E[:data.n_entities, 0] = data.values[:, 0].float() * 3.0
    return model


def test_a_value_held_in_the_embedding_is_read_at_every_state_id_and_ood():
    data = _data(n_attributes=1)
    sets = probe_sets(data.values, data.ood_entities)
    table = value_probes(_value_model(data, value_dim=True), sets)
    assert set(table["state"]) == {0, 1, 2} and set(table["split"]) == {"fit", "id", "ood"}
    assert float(table["r2"].min()) > 0.98
    blind = value_probes(_value_model(data, value_dim=False), sets)
    held = blind[blind["split"] != "fit"]
    assert float(held["r2"].max()) < 0.0  # random embeddings: a probe fitted on some entities says nothing of others


def test_bad_requests_are_one_line_errors():
    data = _data()
    with pytest.raises(ValueError, match="fit_share"):
        probe_sets(data.values, data.ood_entities, fit_share=1.0)
    with pytest.raises(ValueError, match="entities, attributes"):
        probe_sets(data.values, data.ood_entities[:, :1])
    lonely = torch.zeros_like(data.ood_entities)
    lonely[0, :] = True  # a single OOD entity per attribute: nothing to pair it with
    with pytest.raises(ValueError, match="single ID or OOD entity"):
        probe_sets(data.values, lonely)
