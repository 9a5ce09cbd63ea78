import json

import pytest
import torch

from interp.tasks.models import build_model, config_from_dict, config_to_dict, induction_config, modadd_config


def test_modadd_config_is_the_papers_model():
    cfg = modadd_config()
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp) == (1, 128, 4, 32, 512)
    assert (cfg.d_vocab, cfg.d_vocab_out, cfg.n_ctx) == (114, 113, 3)
    assert cfg.act_fn == "relu" and cfg.normalization_type is None


def test_induction_config_is_two_layer_attention_only():
    cfg = induction_config()
    assert cfg.n_layers == 2 and cfg.attn_only and cfg.normalization_type is None
    assert cfg.n_heads == 4


@pytest.mark.parametrize("factory", [induction_config, modadd_config])
def test_config_round_trips_through_json(factory):
    d = config_to_dict(factory())
    again = config_to_dict(config_from_dict(json.loads(json.dumps(d))))
    assert again == d


def test_config_from_dict_names_unknown_fields():
    with pytest.raises(ValueError, match="bogus"):
        config_from_dict({**config_to_dict(modadd_config()), "bogus": 1})


def test_build_model_is_seeded():
    a, b, c = (build_model(modadd_config(), seed=s) for s in (1, 1, 2))
    assert torch.equal(a.W_E, b.W_E)
    assert not torch.equal(a.W_E, c.W_E)
    assert not a.training
