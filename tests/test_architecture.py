"""Which architectures the plain fast forwards support (circuits.architecture, interp.fast_forward)."""

from __future__ import annotations

import copy

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.components import MLP, Attention

import interp
from circuits.architecture import plain_forward_supported
from interp.tasks.fast_forward import supports_fast_forward
from interp.tasks.models import induction_config, memorization_config, modadd_config


def _modadd_like(**changes: object) -> HookedTransformer:
    """A tiny one-layer modular-addition model (p = 23) of the plain architecture."""
    cfg = dict(
        n_layers=1, d_model=32, d_head=8, n_heads=4, d_mlp=64, d_vocab=24, d_vocab_out=23, n_ctx=3,
        act_fn="relu", normalization_type=None,
    )
    cfg.update(changes)
    torch.manual_seed(0)
    return HookedTransformer(HookedTransformerConfig(**cfg), move_to_device=False)


@pytest.fixture(scope="module")
def plain():
    return _modadd_like()


def test_the_plain_architecture_is_supported(plain):
    assert plain_forward_supported(plain)
    assert plain_forward_supported(plain, n_layers=1, require_mlp=True)
    assert plain_forward_supported(_modadd_like(act_fn="gelu"), n_layers=1, require_mlp=True)
    assert plain_forward_supported(_modadd_like(n_key_value_heads=4))  # grouped K/V, one group per head


def test_interp_models_keep_their_fast_forwards():
    induction, modadd, memorization = (interp.build_model(cfg, seed=0) for cfg in
                                       (induction_config(), modadd_config(), memorization_config()))
    assert supports_fast_forward(modadd)  # one layer, no LayerNorm: last_position_logits
    assert not supports_fast_forward(induction)  # two layers
    assert not supports_fast_forward(memorization)  # LayerNorm
    for model in (induction, modadd, memorization):  # fused-attention logits of any depth, pre-LN
        assert supports_fast_forward(model, n_layers=None, layer_norm=True)
    assert plain_forward_supported(induction, n_layers=2)
    assert not plain_forward_supported(induction, require_mlp=True)  # attention-only


# Each architectural option the plain forwards do not implement, set on a supported model.
UNSUPPORTED = [
    ("normalization_type", "LN"),  # without layer_norm=True
    ("positional_embedding_type", "rotary"),
    ("attention_dir", "bidirectional"),  # no causal mask
    ("load_in_4bit", True),
    ("act_fn", "solu"),  # softmax over the MLP's units: not among PLAIN_ACTIVATIONS
    ("act_fn", "solu_ln"),  # an activation followed by a LayerNorm inside the MLP
    ("gated_mlp", True),
    ("num_experts", 4),
    ("n_key_value_heads", 2),
    ("use_attn_scale", False),
    ("scale_attn_by_inverse_layer_idx", True),
    ("use_local_attn", True),
    ("use_qk_norm", True),
    ("clip_qkv", 8.0),
    ("use_logn_attn", True),
    ("use_attention_sinks", True),
    ("attn_scores_soft_cap", 50.0),
    ("output_logits_soft_cap", 30.0),
    ("parallel_attn_mlp", True),
    ("post_embedding_ln", True),
    ("use_normalization_before_and_after", True),
    ("n_devices", 2),  # layers spread over devices: the plain forwards keep every tensor on one
]


@pytest.mark.parametrize(("name", "value"), UNSUPPORTED, ids=[f"{n}={v}" for n, v in UNSUPPORTED])
def test_each_condition_makes_the_check_false(plain, name, value):
    model = copy.deepcopy(plain)
    assert hasattr(model.cfg, name)
    setattr(model.cfg, name, value)
    assert not plain_forward_supported(model)
    assert not plain_forward_supported(model, n_layers=1, require_mlp=True)
    assert not supports_fast_forward(model)


def test_layer_count_norms_and_mlp_are_parameters(plain):
    assert not plain_forward_supported(plain, n_layers=2)
    ln = _modadd_like(normalization_type="LN")
    assert plain_forward_supported(ln, layer_norm=True) and not plain_forward_supported(ln)
    relabelled = copy.deepcopy(plain)
    relabelled.cfg.normalization_type = "LN"  # the config says LayerNorm, the blocks hold none
    assert not plain_forward_supported(relabelled, layer_norm=True)
    ln.cfg.final_rms = True  # LayerNorm blocks, an RMSNorm before the unembedding
    assert not plain_forward_supported(ln, layer_norm=True)
    ln.cfg.final_rms = False
    for norm in ("LNPre", "RMS", "RMSPre"):
        ln.cfg.normalization_type = norm
        assert not plain_forward_supported(ln, layer_norm=True), norm
    attn_only = _modadd_like(attn_only=True, act_fn=None, d_mlp=None)
    assert plain_forward_supported(attn_only) and not plain_forward_supported(attn_only, require_mlp=True)


def test_modules_must_be_transformer_lens_own(plain):
    class PatchedAttention(Attention):
        """A subclass: it could override forward, so the check must refuse it."""

    class PatchedMLP(MLP):
        """Likewise for the MLP."""

    for module, cls in (("attn", PatchedAttention), ("mlp", PatchedMLP)):
        model = copy.deepcopy(plain)
        getattr(model.blocks[0], module).__class__ = cls  # a subclass may change the maths
        assert not plain_forward_supported(model), module
    model = copy.deepcopy(plain)
    del model.blocks[0].mlp.act_fn
    assert not plain_forward_supported(model)


def test_attention_modules_must_match_the_plain_maths(plain):
    # OLMo's Q/K norms come with original_architecture, not with use_qk_norm.
    olmo = _modadd_like(original_architecture="Olmo2ForCausalLM", normalization_type="RMS")
    assert olmo.blocks[0].attn.q_norm is not None and not olmo.cfg.use_qk_norm
    olmo.cfg.normalization_type = None  # only the Q/K norms are left to refuse the model on
    assert not plain_forward_supported(olmo)
    # The hooked forward divides by the module's scale, fixed when it was built.
    model = copy.deepcopy(plain)
    model.blocks[0].attn.attn_scale = 2 * model.cfg.attn_scale
    assert not plain_forward_supported(model)
    model.cfg.attn_scale = model.blocks[0].attn.attn_scale
    assert plain_forward_supported(model)
    # Other state a module fixes when it is built, changed afterwards on the module or the config.
    changes = [
        lambda m: setattr(m.blocks[0].attn, "attn_type", "local"),
        lambda m: setattr(m.blocks[0].attn, "_attention_dir_override", "bidirectional"),
        lambda m: setattr(m.cfg, "act_fn", "gelu"),  # the MLP still applies ReLU
        lambda m: setattr(m.blocks[0].mlp, "act_fn", torch.nn.functional.gelu),
    ]
    for index, change in enumerate(changes):
        model = copy.deepcopy(plain)
        change(model)
        assert not plain_forward_supported(model), index


def test_embeddings_and_blocks_must_be_transformer_lens_own(plain):
    for owner, name in ((None, "embed"), (None, "pos_embed"), ("blocks", 0)):
        model = copy.deepcopy(plain)
        parent = model if owner is None else getattr(model, owner)
        module = parent[name] if owner else getattr(parent, name)
        module.__class__ = type("Patched" + type(module).__name__, (type(module),), {})
        assert not plain_forward_supported(model), name


def test_norms_hook_points_and_the_unembedding_must_be_transformer_lens_own():
    # a module spliced in at a hook point (as sparse-autoencoder tools do), a subclass of a norm or
    # of the unembedding, or a norm other than the config's, would change what the forward computes
    ln = _modadd_like(normalization_type="LN")
    assert plain_forward_supported(ln, layer_norm=True)

    class Spliced(type(ln.blocks[0].hook_resid_mid)):
        def forward(self, x):
            return 2 * x

    swaps = {
        "a hook point": lambda m: setattr(m.blocks[0], "hook_resid_mid", Spliced()),
        "ln1": lambda m: setattr(m.blocks[0].ln1, "__class__", type("FixedLN", (type(m.blocks[0].ln1),), {})),
        "ln_final": lambda m: setattr(m.ln_final, "__class__", type("FixedLN", (type(m.ln_final),), {})),
        "ln1 as the identity": lambda m: setattr(m.blocks[0], "ln1", torch.nn.Identity()),
        "torch's LayerNorm": lambda m: setattr(m.blocks[0], "ln2", torch.nn.LayerNorm(32)),
        "the unembedding": lambda m: setattr(m.unembed, "__class__", type("Tied", (type(m.unembed),), {})),
    }
    for name, swap in swaps.items():
        model = copy.deepcopy(ln)
        swap(model)
        assert not plain_forward_supported(model, layer_norm=True), name
    none = _modadd_like()
    none.blocks[0].ln1 = copy.deepcopy(ln.blocks[0].ln1)  # a LayerNorm where the config names none
    assert not plain_forward_supported(none)


def test_a_hook_anywhere_makes_the_check_false():
    # Only the model's own forward runs a hook, so a plain forward would skip it; the training
    # fast forward then runs the model's, hook and all.
    hooks = {
        "a hook point": lambda m: (m.blocks[0].hook_resid_mid.add_hook(lambda x, hook: 2 * x), m.reset_hooks)[1],
        "a pre-hook on a module": lambda m: m.blocks[0].mlp.register_forward_pre_hook(lambda mod, args: None).remove,
        "a backward hook": lambda m: m.unembed.register_full_backward_hook(lambda *a: None).remove,
        "a global hook": lambda m: torch.nn.modules.module.register_module_forward_hook(lambda *a: None).remove,
    }
    model = _modadd_like()
    tokens = torch.tensor([[1, 2, 23], [4, 5, 23]])
    with torch.no_grad():
        plain = interp.tasks.fast_forward.logits(model, tokens)
    for name, attach in hooks.items():
        remove = attach(model)
        try:
            assert not plain_forward_supported(model), name
        finally:
            remove()
        assert plain_forward_supported(model), name
    model.blocks[0].hook_resid_mid.add_hook(lambda x, hook: 2 * x)
    try:
        with torch.no_grad():
            hooked = interp.tasks.fast_forward.logits(model, tokens)
            torch.testing.assert_close(hooked, model(tokens))
    finally:
        model.reset_hooks()
    assert (hooked - plain).abs().max() > 1e-3
