"""Which ``HookedTransformer`` architectures a hand-written plain-torch forward pass reproduces.

Fast forwards that skip TransformerLens's hooked modules (:mod:`circuits.plain_forward`, which
``interp.tasks.fast_forward`` trains with; the fused head-score path of :mod:`circuits._fused`;
the closed-form last-position pass of the modular-addition analysis in :mod:`circuits._modadd`)
compute token and position embeddings, causal softmax attention scaled by ``attn_scale``,
optionally an MLP of an elementwise activation (:data:`PLAIN_ACTIVATIONS`) after it and, where
allowed, pre-LayerNorm. Every other architectural option changes the result, so a model with any
of them must take the model's own forward pass; so must a model with a hook attached, which only
that forward runs.
"""

from __future__ import annotations

import torch
from transformer_lens.utilities.activation_functions import SUPPORTED_ACTIVATIONS

__all__ = ["PLAIN_ACTIVATIONS", "has_own_hooks", "plain_forward_supported"]

#: MLP activations of the plain forward: ``cfg.act_fn`` -> the function the MLP must hold (a plain
#: forward calls the MLP's own ``act_fn``): TransformerLens's elementwise ones without parameters
#: (GPT-2's ``gelu_new`` among them); not ``solu_ln`` (a LayerNorm after it) nor ``xielu`` (learned).
PLAIN_ACTIVATIONS = {name: SUPPORTED_ACTIVATIONS[name]
                     for name in ("relu", "gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "silu")}


def plain_forward_supported(
    model: object, *, n_layers: int | None = None, layer_norm: bool = False, require_mlp: bool = False
) -> bool:
    """True when ``model`` has only the features a plain forward pass implements.

    Args:
        model: a ``HookedTransformer`` (anything with a ``cfg`` and ``blocks``).
        n_layers: require exactly this many layers (``None``: any number).
        layer_norm: also admit pre-LayerNorm models with learned weights
            (``normalization_type="LN"``); otherwise no normalisation at all.
        require_mlp: require an MLP in every block (attention-only models are False).

    Conditions, each of which must hold: the layer count (when given); no normalisation (or
    ``"LN"``); learned absolute positions (``positional_embedding_type="standard"``); causal
    attention (``attention_dir="causal"``, not bidirectional) scaled by ``attn_scale``
    (``use_attn_scale``; every layer's module holding that same scale), not by layer index, with
    no local windows, QK norm (``use_qk_norm`` or the OLMo norms ``original_architecture`` brings),
    Q/K/V clipping, log-n scaling, attention sinks, score or logit soft-caps; no grouped K/V heads
    (``n_key_value_heads`` unset or equal to ``n_heads``); unquantised weights (no
    ``load_in_4bit``); attention before the MLP (not parallel), no post-embedding LayerNorm, no
    extra post-sublayer norms, a final norm of the blocks' kind (not ``final_rms`` after
    LayerNorm blocks); the model on one device (``n_devices`` 1); an MLP (if any) that is a
    plain, ungated, single-expert ``MLP`` of an activation in :data:`PLAIN_ACTIVATIONS`; and every
    module one of TransformerLens's own classes (``Embed``, ``PosEmbed``, ``TransformerBlock``,
    ``Attention``/``GroupedQueryAttention``, ``MLP``, ``LayerNorm``, ``Unembed``, ``HookPoint``) or
    torch's identity and containers, not a subclass nor another module spliced in, each norm the
    one the config names, still in the state the config describes (a module changed after it was
    built, e.g. its attention type or activation, is refused); and no hook on any module, nor a
    global module hook (:func:`has_own_hooks`).
    """
    cfg = model.cfg
    norms = (None, "LN") if layer_norm else (None,)
    has_mlp = not cfg.attn_only and bool(cfg.d_mlp)
    config_ok = (
        (n_layers is None or cfg.n_layers == n_layers)
        and cfg.normalization_type in norms
        and cfg.positional_embedding_type == "standard"
        and getattr(cfg, "attention_dir", "causal") == "causal"
        and not getattr(cfg, "load_in_4bit", False)
        and (has_mlp or not require_mlp)
        and (cfg.attn_only or (cfg.act_fn in PLAIN_ACTIVATIONS and not cfg.gated_mlp))
        and not getattr(cfg, "num_experts", None)
        and getattr(cfg, "n_key_value_heads", None) in (None, cfg.n_heads)
        and cfg.use_attn_scale
        and not cfg.scale_attn_by_inverse_layer_idx
        and not getattr(cfg, "use_local_attn", False)
        and not getattr(cfg, "use_qk_norm", False)
        and getattr(cfg, "clip_qkv", None) is None
        and not getattr(cfg, "use_logn_attn", False)
        and not getattr(cfg, "use_attention_sinks", False)
        and (cfg.attn_scores_soft_cap or -1) <= 0
        and (cfg.output_logits_soft_cap or -1) <= 0
        and not cfg.parallel_attn_mlp
        and not cfg.post_embedding_ln
        and not getattr(cfg, "use_normalization_before_and_after", False)
        and not (cfg.normalization_type == "LN" and getattr(cfg, "final_rms", False))
        and int(getattr(cfg, "n_devices", 1) or 1) == 1
    )
    return config_ok and _plain_modules(model) and all(_plain_block(block, cfg) for block in model.blocks)


#: The classes a plain model is built of, by top-level package: exactly these (a subclass, or a
#: module spliced in at a hook point as sparse-autoencoder tools do, may change the maths).
_PLAIN_CLASSES = {
    "transformer_lens": {"HookedTransformer", "Embed", "PosEmbed", "Unembed", "TransformerBlock", "Attention",
                         "GroupedQueryAttention", "MLP", "LayerNorm", "HookPoint", "TypedModuleList"},
    "torch": {"Identity", "ModuleList"},
}


#: The hook registries of every ``torch.nn.Module`` (forward, pre-forward, with or without kwargs,
#: backward); a hook in any of them may change what the model's forward computes.
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _global_hooks() -> bool:
    module_api = torch.nn.modules.module
    return any(getattr(module_api, f"_global{name}", None) for name in _HOOK_DICTS)


def _hooked(module: torch.nn.Module) -> bool:
    return any(getattr(module, name, None) for name in _HOOK_DICTS)


def has_own_hooks(model: torch.nn.Module) -> bool:
    """A hook on any module of the model (a HookPoint or any other), or a global module hook."""
    return _global_hooks() or any(_hooked(module) for module in model.modules())


def _plain_modules(model: object) -> bool:
    """Every module is one of :data:`_PLAIN_CLASSES` and holds no hook, there is no global module
    hook, and each norm is the one the config names (TransformerLens's ``LayerNorm`` for ``"LN"``,
    else the identity or none)."""
    if _global_hooks():
        return False
    for module in model.modules():
        kind = type(module)
        if kind.__name__ not in _PLAIN_CLASSES.get(kind.__module__.split(".")[0], ()) or _hooked(module):
            return False
    norm = "LayerNorm" if model.cfg.normalization_type == "LN" else "Identity"
    norms = [getattr(block, name) for block in model.blocks for name in ("ln1", "ln2") if hasattr(block, name)]
    final = getattr(model, "ln_final", None)
    return all(type(n).__name__ == norm for n in norms) and (final is None or type(final).__name__ == norm)


def _plain_block(block: object, cfg: object) -> bool:
    """The block and its modules are TransformerLens's plain classes (a subclass may change the
    maths) in the state the config describes, which they fix when built: global causal attention
    without Q/K norms, scaled by ``cfg.attn_scale``; the MLP's activation that of ``cfg.act_fn``."""
    attn = block.attn
    if type(block).__name__ != "TransformerBlock" or type(attn).__name__ not in ("Attention", "GroupedQueryAttention"):
        return False
    if getattr(attn, "q_norm", None) is not None or getattr(attn, "k_norm", None) is not None:
        return False
    if getattr(attn, "attn_type", "global") != "global" or getattr(attn, "_attention_dir_override", None) not in (None, "causal"):
        return False
    if float(getattr(attn, "attn_scale", float("nan"))) != float(cfg.attn_scale):
        return False
    if cfg.attn_only:
        return True
    mlp = getattr(block, "mlp", None)
    return type(mlp).__name__ == "MLP" and getattr(mlp, "act_fn", None) is PLAIN_ACTIVATIONS.get(cfg.act_fn)
