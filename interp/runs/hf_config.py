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
    if arch not in _MAPPERS:
        raise CheckpointError(f"{path}: unsupported architecture {arch or hf.get('model_type')!r}; "
                              f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}")
    return arch


def tied_embeddings(arch: str, hf: dict[str, Any]) -> bool:
    """Whether the unembedding is the embedding (``tie_word_embeddings``, else the architecture's default)."""
    return bool(hf.get("tie_word_embeddings", arch in ("GPT2LMHeadModel", "GPTNeoForCausalLM")))


def tl_config(path: Path, hf: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(architecture, ``HookedTransformerConfig`` init fields) of a parsed ``config.json``.

    Raises :class:`CheckpointError` naming ``path`` for an unsupported architecture, a missing
    or invalid field, or a feature these mappings do not reproduce (rope scaling, biases in Llama
    attention or MLP, GPT-NeoX without attention biases).
    """
    arch = architecture_of(path, hf)
    try:
        cfg = _MAPPERS[arch](hf)
        cfg["n_ctx"] = min(int(cfg["n_ctx"]), MAX_CTX)
    except KeyError as exc:
        raise CheckpointError(f"{path}: config.json lacks {exc} (needed for {arch})") from exc
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        raise CheckpointError(f"{path}: config.json has an invalid value for {arch} ({exc})") from exc
    cfg.update(original_architecture=arch, init_weights=False)
    return arch, cfg


def _refuse(hf: dict[str, Any], key: str, allowed: Any) -> None:
    if key in hf and hf[key] not in (allowed, None):
        raise ValueError(f"{key} = {hf[key]!r} is not supported (only {allowed!r})")


def _rotary_dim(width: int) -> int:
    """The rotary width, refused when odd: TransformerLens rotates pairs of dimensions."""
    if width % 2:
        raise ValueError(f"a rotary width of {width} dimensions is not supported (only even widths)")
    return width


def _rope(hf: dict[str, Any]) -> dict[str, Any]:
    """The rotary parameters (``rope_parameters`` of transformers 5, else the older top-level fields)."""
    params = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    kind = params.get("rope_type", params.get("type", "default"))
    if kind != "default":
        raise ValueError(f"rope type {kind!r} is not supported (only 'default')")
    return params


def _gpt2(hf: dict[str, Any]) -> dict[str, Any]:
    d_model, n_heads = int(hf["n_embd"]), int(hf["n_head"])
    return {
        "n_layers": int(hf["n_layer"]), "d_model": d_model, "n_heads": n_heads, "d_head": d_model // n_heads,
        "d_mlp": int(hf.get("n_inner") or 4 * d_model), "n_ctx": int(hf.get("n_positions", hf.get("n_ctx"))),
        "d_vocab": int(hf["vocab_size"]), "act_fn": hf.get("activation_function", "gelu_new"),
        "eps": float(hf.get("layer_norm_epsilon", 1e-5)), "normalization_type": "LN",
        "use_attn_scale": bool(hf.get("scale_attn_weights", True)),
        "scale_attn_by_inverse_layer_idx": bool(hf.get("scale_attn_by_inverse_layer_idx", False)),
    }


def _neo(hf: dict[str, Any]) -> dict[str, Any]:
    d_model, n_heads, n_layers = int(hf["hidden_size"]), int(hf["num_heads"]), int(hf["num_layers"])
    kinds = hf.get("attention_layers") or [kind for kinds, repeat in hf["attention_types"]
                                           for _ in range(int(repeat)) for kind in kinds]
    if len(kinds) != n_layers or not set(kinds) <= {"global", "local"}:
        raise ValueError(f"attention layers {kinds} do not describe {n_layers} layers of global/local attention")
    return {
        "n_layers": n_layers, "d_model": d_model, "n_heads": n_heads, "d_head": d_model // n_heads,
        "d_mlp": int(hf.get("intermediate_size") or 4 * d_model), "n_ctx": int(hf["max_position_embeddings"]),
        "d_vocab": int(hf["vocab_size"]), "act_fn": hf.get("activation_function", "gelu_new"),
        "eps": float(hf.get("layer_norm_epsilon", 1e-5)), "normalization_type": "LN",
        # GPT-Neo does not divide attention scores by sqrt(d_head)
        "use_attn_scale": False, "use_local_attn": True, "attn_types": list(kinds),
        "window_size": int(hf.get("window_size", 256)),
    }


def _neox(hf: dict[str, Any]) -> dict[str, Any]:
    _refuse(hf, "attention_bias", True)
    d_model, n_heads = int(hf["hidden_size"]), int(hf["num_attention_heads"])
    d_head = d_model // n_heads
    rope = _rope(hf)
    fraction = float(rope.get("partial_rotary_factor", hf.get("partial_rotary_factor", hf.get("rotary_pct", 0.25))))
    return {
        "n_layers": int(hf["num_hidden_layers"]), "d_model": d_model, "n_heads": n_heads, "d_head": d_head,
        "d_mlp": int(hf["intermediate_size"]), "n_ctx": int(hf["max_position_embeddings"]),
        "d_vocab": int(hf["vocab_size"]), "act_fn": hf.get("hidden_act", "gelu"),
        "eps": float(hf.get("layer_norm_eps", 1e-5)), "normalization_type": "LN",
        "parallel_attn_mlp": bool(hf.get("use_parallel_residual", True)),
        "positional_embedding_type": "rotary", "rotary_dim": _rotary_dim(int(fraction * d_head)),  # int(): as transformers
        "rotary_base": float(rope.get("rope_theta", hf.get("rotary_emb_base", hf.get("rope_theta", 10000.0)))),
        "rotary_adjacent_pairs": False, "default_prepend_bos": False,
    }


def _llama(hf: dict[str, Any]) -> dict[str, Any]:
    _refuse(hf, "attention_bias", False)
    _refuse(hf, "mlp_bias", False)
    d_model, n_heads = int(hf["hidden_size"]), int(hf["num_attention_heads"])
    d_head = int(hf.get("head_dim") or d_model // n_heads)
    n_kv = int(hf.get("num_key_value_heads") or n_heads)
    rope = _rope(hf)
    return {
        "n_layers": int(hf["num_hidden_layers"]), "d_model": d_model, "n_heads": n_heads, "d_head": d_head,
        "n_key_value_heads": None if n_kv == n_heads else n_kv,
        "d_mlp": int(hf["intermediate_size"]), "n_ctx": int(hf["max_position_embeddings"]),
        "d_vocab": int(hf["vocab_size"]), "act_fn": hf.get("hidden_act", "silu"),
        "eps": float(hf.get("rms_norm_eps", 1e-6)), "normalization_type": "RMS", "final_rms": True,
        "gated_mlp": True, "positional_embedding_type": "rotary", "rotary_dim": _rotary_dim(d_head),
        "rotary_base": float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))), "rotary_adjacent_pairs": False,
    }


_MAPPERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "GPT2LMHeadModel": _gpt2, "GPTNeoForCausalLM": _neo, "GPTNeoXForCausalLM": _neox, "LlamaForCausalLM": _llama,
}
#: The ``architectures`` names :func:`interp.load_model` reads from a Hugging Face directory.
SUPPORTED_ARCHITECTURES = tuple(_MAPPERS)
