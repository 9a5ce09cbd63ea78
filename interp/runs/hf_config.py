"""A Hugging Face ``config.json`` as a TransformerLens config, for the architectures this toolkit reads.

One function per architecture maps the fields of the Hugging Face config (as ``save_pretrained``
writes them, transformers 4 or 5) to the init fields of a ``HookedTransformerConfig``, so the
weights converted by TransformerLens' own functions (:mod:`interp.runs.huggingface`) fit a model
built from it and give the logits the Hugging Face model gives. Nothing is fetched.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from interp.runs.errors import CheckpointError

__all__ = ["MAX_CTX", "SUPPORTED_ARCHITECTURES", "architecture_of", "tl_config", "tied_embeddings"]

#: Longest context a model is built for: TransformerLens stores an n_ctx x n_ctx mask per layer,
#: so a config announcing 128k positions (rotary models) is capped here. Models with learned
#: positions keep their first MAX_CTX rows.
MAX_CTX = 8192

_MODEL_TYPES = {"gpt2": "GPT2LMHeadModel", "gpt_neo": "GPTNeoForCausalLM", "gpt_neox": "GPTNeoXForCausalLM",
                "llama": "LlamaForCausalLM"}


def architecture_of(path: Path, hf: dict[str, Any]) -> str:
    """The architecture a config names (``architectures[0]``, else its ``model_type``).

    Raises :class:`CheckpointError` naming the supported ones when it is not one of them.
    """
    names = hf.get("architectures") or []
    arch = names[0] if isinstance(names, list) and names else _MODEL_TYPES.get(str(hf.get("model_type")))
    if not isinstance(arch, str) or arch not in _MAPPERS:
        raise CheckpointError(f"{path}: unsupported architecture {arch or hf.get('model_type')!r}; "
                              f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}")
    return arch


def tied_embeddings(arch: str, hf: dict[str, Any]) -> bool:
    """Whether the unembedding is the embedding (``tie_word_embeddings``, else the architecture's default)."""
    return _flag(hf, "tie_word_embeddings", arch in ("GPT2LMHeadModel", "GPTNeoForCausalLM"))


def tl_config(path: Path, hf: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(architecture, ``HookedTransformerConfig`` init fields) of a parsed ``config.json``.

    Raises :class:`CheckpointError` naming ``path`` for an unsupported architecture, a missing
    or invalid field (a size that is not a positive integer, a flag that is not true or false:
    as transformers refuses them, never rounded or read as truthy), quantized weights, or a
    feature these mappings do not reproduce (rope scaling, biases in Llama attention or MLP,
    GPT-NeoX without attention biases).
    """
    arch = architecture_of(path, hf)
    if hf.get("quantization_config") is not None:
        method = hf["quantization_config"].get("quant_method") if isinstance(hf["quantization_config"], dict) else None
        raise CheckpointError(f"{path}: quantized weights ({method or 'quantization_config'}) are not supported: "
                              "save the model unquantized (float32, float16 or bfloat16)")
    try:
        cfg = _MAPPERS[arch](hf)
        cfg["n_ctx"] = min(int(cfg["n_ctx"]), MAX_CTX)
        tied_embeddings(arch, hf)  # checked here, read by the conversion
    except KeyError as exc:
        raise CheckpointError(f"{path}: config.json lacks {exc} (needed for {arch})") from exc
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        raise CheckpointError(f"{path}: config.json has an invalid value for {arch} ({exc})") from exc
    cfg.update(original_architecture=arch, init_weights=False)
    return arch, cfg


def _refuse(hf: dict[str, Any], key: str, allowed: Any) -> None:
    if key in hf and hf[key] not in (allowed, None):
        raise ValueError(f"{key} = {hf[key]!r} is not supported (only {allowed!r})")


def _size(hf: dict[str, Any], *keys: str, default: int | None = None) -> int:
    """The first of ``keys`` present and not null, a positive int (else ``default``; KeyError without one)."""
    key = next((k for k in keys if hf.get(k) is not None), None)
    if key is None:
        if default is None:
            raise KeyError(keys[0])
        return default
    value = hf[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key} = {value!r} is not a positive integer")
    return value


def _flag(hf: dict[str, Any], key: str, default: bool) -> bool:
    value = hf.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ValueError(f"{key} = {value!r} is not true or false")
    return value


def _rotary_dim(width: int) -> int:
    """The rotary width, refused when odd: TransformerLens rotates pairs of dimensions."""
    if width % 2:
        raise ValueError(f"a rotary width of {width} dimensions is not supported (only even widths)")
    return width


def _rope(hf: dict[str, Any]) -> dict[str, Any]:
    """The rotary parameters: ``rope_scaling`` where given, else ``rope_parameters`` (transformers 5's
    order), else the older top-level fields."""
    params = hf.get("rope_scaling") or hf.get("rope_parameters") or {}
    if not isinstance(params, dict):
        raise ValueError(f"rope parameters {params!r} are not an object")
    kind = params.get("rope_type", params.get("type", "default"))
    if kind != "default":
        raise ValueError(f"rope type {kind!r} is not supported (only 'default')")
    return params


def _gpt2(hf: dict[str, Any]) -> dict[str, Any]:
    d_model, n_heads = _size(hf, "n_embd"), _size(hf, "n_head")
    return {
        "n_layers": _size(hf, "n_layer"), "d_model": d_model, "n_heads": n_heads, "d_head": d_model // n_heads,
        "d_mlp": _size(hf, "n_inner", default=4 * d_model), "n_ctx": _size(hf, "n_positions", "n_ctx"),
        "d_vocab": _size(hf, "vocab_size"), "act_fn": hf.get("activation_function", "gelu_new"),
        "eps": float(hf.get("layer_norm_epsilon", 1e-5)), "normalization_type": "LN",
        "use_attn_scale": _flag(hf, "scale_attn_weights", True),
        "scale_attn_by_inverse_layer_idx": _flag(hf, "scale_attn_by_inverse_layer_idx", False),
    }


def _neo(hf: dict[str, Any]) -> dict[str, Any]:
    d_model, n_heads, n_layers = _size(hf, "hidden_size"), _size(hf, "num_heads"), _size(hf, "num_layers")
    kinds = hf.get("attention_layers") or [kind for kinds, repeat in hf["attention_types"]
                                           for _ in range(int(repeat)) for kind in kinds]
    if len(kinds) != n_layers or not set(kinds) <= {"global", "local"}:
        raise ValueError(f"attention layers {kinds} do not describe {n_layers} layers of global/local attention")
    return {
        "n_layers": n_layers, "d_model": d_model, "n_heads": n_heads, "d_head": d_model // n_heads,
        "d_mlp": _size(hf, "intermediate_size", default=4 * d_model), "n_ctx": _size(hf, "max_position_embeddings"),
        "d_vocab": _size(hf, "vocab_size"), "act_fn": hf.get("activation_function", "gelu_new"),
        "eps": float(hf.get("layer_norm_epsilon", 1e-5)), "normalization_type": "LN",
        # GPT-Neo does not divide attention scores by sqrt(d_head)
        "use_attn_scale": False, "use_local_attn": True, "attn_types": list(kinds),
        "window_size": _size(hf, "window_size", default=256),
    }


def _neox(hf: dict[str, Any]) -> dict[str, Any]:
    _refuse(hf, "attention_bias", True)
    d_model, n_heads = _size(hf, "hidden_size"), _size(hf, "num_attention_heads")
    d_head = d_model // n_heads
    rope = _rope(hf)
    # what transformers reads for GPT-NeoX; the generic top-level names it ignores (some 4.x releases
    # read them) must agree, else the same file gives two models
    fraction = float(rope.get("partial_rotary_factor", hf.get("rotary_pct", 0.25)))
    base = float(rope.get("rope_theta", hf.get("rotary_emb_base", 10000.0)))
    for key, used in (("partial_rotary_factor", fraction), ("rope_theta", base)):
        if hf.get(key) is not None and float(hf[key]) != used:
            raise ValueError(f"{key} = {hf[key]!r} differs from the {used:g} that transformers reads for GPT-NeoX "
                             "(rope_parameters, else rotary_pct and rotary_emb_base): make them agree")
    return {
        "n_layers": _size(hf, "num_hidden_layers"), "d_model": d_model, "n_heads": n_heads, "d_head": d_head,
        "d_mlp": _size(hf, "intermediate_size"), "n_ctx": _size(hf, "max_position_embeddings"),
        "d_vocab": _size(hf, "vocab_size"), "act_fn": hf.get("hidden_act", "gelu"),
        "eps": float(hf.get("layer_norm_eps", 1e-5)), "normalization_type": "LN",
        "parallel_attn_mlp": _flag(hf, "use_parallel_residual", True),
        "positional_embedding_type": "rotary", "rotary_dim": _rotary_dim(int(fraction * d_head)),  # int(): as transformers
        "rotary_base": base, "rotary_adjacent_pairs": False, "default_prepend_bos": False,
    }


def _llama(hf: dict[str, Any]) -> dict[str, Any]:
    _refuse(hf, "attention_bias", False)
    _refuse(hf, "mlp_bias", False)
    d_model, n_heads = _size(hf, "hidden_size"), _size(hf, "num_attention_heads")
    d_head = _size(hf, "head_dim", default=d_model // n_heads)
    n_kv = _size(hf, "num_key_value_heads", default=n_heads)
    rope = _rope(hf)
    return {
        "n_layers": _size(hf, "num_hidden_layers"), "d_model": d_model, "n_heads": n_heads, "d_head": d_head,
        "n_key_value_heads": None if n_kv == n_heads else n_kv,
        "d_mlp": _size(hf, "intermediate_size"), "n_ctx": _size(hf, "max_position_embeddings"),
        "d_vocab": _size(hf, "vocab_size"), "act_fn": hf.get("hidden_act", "silu"),
        "eps": float(hf.get("rms_norm_eps", 1e-6)), "normalization_type": "RMS", "final_rms": True,
        "gated_mlp": True, "positional_embedding_type": "rotary", "rotary_dim": _rotary_dim(d_head),
        "rotary_base": float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))), "rotary_adjacent_pairs": False,
    }


_MAPPERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "GPT2LMHeadModel": _gpt2, "GPTNeoForCausalLM": _neo, "GPTNeoXForCausalLM": _neox, "LlamaForCausalLM": _llama,
}
#: The ``architectures`` names :func:`interp.load_model` reads from a Hugging Face directory.
SUPPORTED_ARCHITECTURES = tuple(_MAPPERS)
