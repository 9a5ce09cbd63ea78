"""Config factories for the model families, and the one place that builds a HookedTransformer.

Everything that constructs a model goes through :func:`build_model`, so that a later move off
TransformerLens 3.x's ``HookedTransformer`` touches this file only.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

#: Token id that starts every sequence of the induction task (the model has no tokenizer).
INDUCTION_BOS = 0
#: The text task's byte-level vocabulary: token id = byte value, BOS = 256 (``interp.tasks.text``).
TEXT_BOS = 256
TEXT_VOCAB = 257


def induction_config(
    d_vocab: int = 128,
    n_ctx: int = 64,
    d_model: int = 64,
    n_heads: int = 4,
    d_head: int = 16,
    n_layers: int = 2,
) -> HookedTransformerConfig:
    """Two-layer attention-only transformer that grows induction heads (Olsson et al. 2022).

    Defaults: vocabulary of 128 ids where id 0 is the BOS token and 1..127 are ordinary tokens,
    context 64, d_model 64, 4 heads of 16 per layer, learned positional embeddings, no
    LayerNorm, no MLPs. Small enough to train in well under a minute on two CPU cores, large
    enough that a previous-token head in layer 0 and an induction head in layer 1 form cleanly.
    """
    return HookedTransformerConfig(
        n_layers=n_layers,
        d_model=d_model,
        n_ctx=n_ctx,
        d_head=d_head,
        n_heads=n_heads,
        d_vocab=d_vocab,
        attn_only=True,
        act_fn=None,
        normalization_type=None,
        positional_embedding_type="standard",
        default_prepend_bos=False,
        model_name="induction-attn-only-2l",
    )


def modadd_config(p: int = 113, d_model: int = 128) -> HookedTransformerConfig:
    """One-layer transformer for a + b mod p, exactly as in Nanda et al. 2023 by default.

    Inputs are ``[a, b, =]`` with ``=`` the token id ``p`` (so ``d_vocab = p + 1``); the answer is
    read at the last position over ``d_vocab_out = p`` classes. d_model 128, 4 heads of 32,
    d_mlp 512, ReLU, no LayerNorm ("Progress measures for grokking via mechanistic
    interpretability", section 4). Another ``d_model`` (a multiple of 4) scales the rest with
    it: 4 heads of ``d_model / 4``, ``d_mlp = 4 d_model`` (``interp sweep`` over width).
    """
    if d_model < 4 or d_model % 4:
        raise ValueError(f"d_model must be a positive multiple of 4 (4 heads), got {d_model}")
    return HookedTransformerConfig(
        n_layers=1,
        d_model=d_model,
        n_ctx=3,
        d_head=d_model // 4,
        n_heads=4,
        d_mlp=4 * d_model,
        d_vocab=p + 1,
        d_vocab_out=p,
        act_fn="relu",
        normalization_type=None,
        positional_embedding_type="standard",
        default_prepend_bos=False,
        model_name=f"modadd-p{p}-1l" + (f"-d{d_model}" if d_model != 128 else ""),
    )


def memorization_config(d_model: int = 32, n_layers: int = 1, vocab: int = 64, seq_len: int = 32,
                        d_head: int = 8) -> HookedTransformerConfig:
    """GPT-style transformer for the memorisation-capacity task (Morris et al. 2025).

    Pre-LayerNorm blocks with attention (heads of ``d_head`` = 8, ``d_model // d_head`` of them) and
    a GELU MLP of width ``4 * d_model``, learned positions, untied embeddings. Inputs are
    ``[BOS, x_1..x_S]`` with BOS the id ``vocab`` (``d_vocab = vocab + 1``, ``d_vocab_out = vocab``,
    ``n_ctx = seq_len + 1``), as made by :func:`interp.tasks.random_sequences.random_sequences`.
    """
    if d_model % d_head:
        raise ValueError(f"d_model ({d_model}) must be a multiple of d_head ({d_head})")
    return HookedTransformerConfig(
        n_layers=n_layers,
        d_model=d_model,
        n_ctx=seq_len + 1,
        d_head=d_head,
        n_heads=d_model // d_head,
        d_mlp=4 * d_model,
        d_vocab=vocab + 1,
        d_vocab_out=vocab,
        act_fn="gelu",
        normalization_type="LN",
        positional_embedding_type="standard",
        default_prepend_bos=False,
        model_name=f"memorization-{n_layers}l-d{d_model}",
    )


def text_config(n_ctx: int = 512, d_model: int = 64, n_heads: int = 4, d_head: int = 16, n_layers: int = 2,
                d_mlp: int | None = None) -> HookedTransformerConfig:
    """Transformer for byte-level text (``interp.tasks.text``): 2 layers, attention only by default.

    Vocabulary 257 (bytes 0-255 and BOS = 256), context 512, d_model 64, 4 heads of 16 per
    layer, learned positions (started as sinusoids by the text task), no LayerNorm; ``d_mlp``
    adds a ReLU MLP of that width to every layer. The recipe and the measurements behind the
    shape are in ``docs/training.md``.
    """
    return HookedTransformerConfig(
        n_layers=n_layers,
        d_model=d_model,
        n_ctx=n_ctx,
        d_head=d_head,
        n_heads=n_heads,
        d_mlp=d_mlp,
        d_vocab=TEXT_VOCAB,
        attn_only=d_mlp is None,
        act_fn=None if d_mlp is None else "relu",
        normalization_type=None,
        positional_embedding_type="standard",
        default_prepend_bos=False,
        model_name=f"text-bytes-{n_layers}l" + ("" if d_mlp is None else "-mlp"),
    )


def reasoning_config(d_vocab: int, d_model: int = 128, n_layers: int = 4, n_heads: int = 4, n_ctx: int = 3,
                     name: str = "reasoning") -> HookedTransformerConfig:
    """GPT-2-style transformer for the fact tasks (``interp.tasks.composition``, ``comparison``).

    Pre-LayerNorm blocks with ``n_heads`` heads of ``d_model / n_heads`` and a GELU MLP of width
    ``4 d_model``, learned positions, untied embeddings; one vocabulary in and out
    (``d_vocab_out = d_vocab``), context 3 (the longest query). Wang et al. 2024 ("Grokked
    transformers are implicit reasoners") train GPT-2's architecture with 8 layers of 768; the
    defaults here (4 layers of 128, 4 heads) are the scale that trains on 2 CPU cores
    (``docs/training.md``).
    """
    if d_model < n_heads or d_model % n_heads:
        raise ValueError(f"d_model ({d_model}) must be a positive multiple of n_heads ({n_heads})")
    if d_vocab < 2 or n_layers < 1:
        raise ValueError(f"need d_vocab >= 2 and n_layers >= 1, got d_vocab={d_vocab}, n_layers={n_layers}")
    return HookedTransformerConfig(
        n_layers=n_layers,
        d_model=d_model,
        n_ctx=n_ctx,
        d_head=d_model // n_heads,
        n_heads=n_heads,
        d_mlp=4 * d_model,
        d_vocab=d_vocab,
        d_vocab_out=d_vocab,
        act_fn="gelu",
        normalization_type="LN",
        positional_embedding_type="standard",
        default_prepend_bos=False,
        model_name=f"{name}-{n_layers}l-d{d_model}",
    )


FAMILIES = {"induction": induction_config, "modadd": modadd_config, "memorization": memorization_config,
            "text": text_config, "reasoning": reasoning_config}


def build_model(
    cfg: HookedTransformerConfig | dict[str, Any], seed: int | None = None, device: str | torch.device | None = None
) -> HookedTransformer:
    """Build a ``HookedTransformer`` from a config (or its JSON dict), in eval mode, on ``device``.

    With ``seed`` the initial weights are a deterministic function of it, the same on every
    device: they are drawn on the CPU and then moved. ``device``: a name of
    :func:`interp.base.device.resolve_device` (None: the CPU); ``model.cfg.device`` names it.
    """
    from interp.base.device import resolve_device

    if isinstance(cfg, dict):
        cfg = config_from_dict(cfg)
    target = resolve_device(device)
    if seed is not None:
        torch.manual_seed(seed)
    model = HookedTransformer(cfg, move_to_device=False)
    # TransformerLens' own .to() records the device in the config (and prints unless told not
    # to); its string form keeps the index of cuda:N, which a torch.device would lose there.
    model.to(str(target), print_details=False)
    model.eval()
    return model


_ALWAYS = {"n_layers", "d_model", "n_ctx", "d_head", "n_heads", "d_mlp", "d_vocab", "d_vocab_out",
           "act_fn", "attn_only", "normalization_type", "positional_embedding_type"}
_DERIVED = {"n_params", "device", "n_devices", "dtype", "seed", "tokenizer_prepends_bos"}


def config_to_dict(cfg: HookedTransformerConfig) -> dict[str, Any]:
    """The JSON-safe fields of a config that differ from their defaults.

    Derived fields (``n_params``, device, ...) are left out: the config is rebuilt from what was
    chosen, and TransformerLens recomputes the rest.
    """
    out: dict[str, Any] = {}
    defaults = HookedTransformerConfig(n_layers=1, d_model=1, n_ctx=1, d_head=1, act_fn="relu", d_vocab=1)
    for field in dataclasses.fields(cfg):
        if field.name in _DERIVED or not field.init:
            continue
        value = getattr(cfg, field.name)
        if field.name in _ALWAYS or value != getattr(defaults, field.name):
            if isinstance(value, float):
                out[field.name] = float(value)
            elif isinstance(value, (bool, int, str)) or value is None:
                out[field.name] = value
            elif isinstance(value, (list, tuple)) and all(isinstance(v, (int, float, str)) for v in value):
                out[field.name] = list(value)
    return out


#: Sizes a config must give as ints (TransformerLens' constructor fails deep inside on "2").
_SIZES = ("n_layers", "d_model", "n_ctx", "d_head", "n_heads", "d_mlp", "d_vocab", "d_vocab_out")


def config_from_dict(d: dict[str, Any]) -> HookedTransformerConfig:
    """Rebuild a config from :func:`config_to_dict` output (or any dict of init fields).

    Unknown keys raise ``ValueError`` naming them, rather than a ``TypeError`` from deep inside.
    """
    names = {f.name for f in dataclasses.fields(HookedTransformerConfig) if f.init}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"model config has unknown fields: {', '.join(unknown)}")
    d_vocab = d.get("d_vocab")
    if isinstance(d_vocab, bool) or not isinstance(d_vocab, int) or d_vocab < 1:
        # TransformerLens reads a missing d_vocab (-1) from a tokenizer, which a checkpoint has not
        raise ValueError(f"model config needs d_vocab, a positive int; got {d_vocab!r}")
    wrong = [k for k in _SIZES if d.get(k) is not None and (isinstance(d[k], bool) or not isinstance(d[k], int))]
    if wrong:
        raise ValueError(f"model config field {wrong[0]} must be an int, got {d[wrong[0]]!r}")
    kwargs = {k: v for k, v in d.items() if k not in _DERIVED}
    try:
        return HookedTransformerConfig(**kwargs)
    except (TypeError, ValueError, AssertionError) as exc:
        raise ValueError(f"invalid model config: {exc}") from exc


def on_device_of(model: torch.nn.Module, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``tensors`` on the device of ``model``'s weights: a task's data (built on the CPU) meets a
    model wherever it runs. Tensors already there are returned as they are, without a copy."""
    device = next(model.parameters()).device
    return tuple(t.to(device) for t in tensors)
