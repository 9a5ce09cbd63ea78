"""Checkpoints written by other code: TransformerLens state dicts with their config, and the
published models of Nanda et al. in their original layout: the grokking checkpoints (2023) and
the attention-only induction models (``attn_blocks.{l}.attn.W_Q``, any depth and size).

Nothing is unpickled: every file goes through ``torch.load(..., weights_only=True)``, and a file
that refers to code is refused, naming it.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from interp.runs.layout import CheckpointError, checked_file
from interp.tasks.models import config_to_dict, modadd_config

__all__ = ["read_torch_file"]


def read_torch_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any] | None]:
    """(state dict, model config, the original training config of a grokking checkpoint or None)."""
    path = checked_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refused the content; say what, in one line
        code = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if code:
            raise CheckpointError(f"{path}: refused: it refers to code ({code.group(1)}); "
                                  "weights-only loading never runs it") from exc
        raise CheckpointError(f"{path}: corrupt, or not a weights-only torch file") from exc
    except Exception as exc:  # torch raises many types for a bad file; all mean the same here
        first = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else ""
        raise CheckpointError(f"{path}: cannot read as a weights-only torch file ({type(exc).__name__}: {first})") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of weights, found {type(obj).__name__}")
    state = obj if _is_induction_layout(obj) else obj.get("state_dict", obj.get("model"))
    cfg = obj.get("config", obj.get("cfg"))
    if isinstance(state, dict) and _is_induction_layout(state):
        return (*_convert_induction(path, state, obj.get("model_config") if state is not obj else None), None)
    tl_config = isinstance(cfg, dict) and {"n_layers", "n_heads", "d_model"} <= set(cfg)
    if isinstance(state, dict) and not tl_config and _is_nanda_layout(state):
        converted, model_cfg = _convert_nanda(path, state)
        if isinstance(cfg, dict):  # the original code's training config (p, lr, frac_train, ...)
            _check_training_config(path, cfg, model_cfg)
        return converted, model_cfg, cfg if isinstance(cfg, dict) else None
    if isinstance(state, dict) and tl_config:
        return {k: v for k, v in state.items() if torch.is_tensor(v)}, cfg, None
    raise CheckpointError(
        f"{path}: unknown checkpoint layout (keys: {sorted(obj)[:8]}); expected a TransformerLens "
        "state dict with its config, a Nanda et al. grokking checkpoint or attention-only induction model"
    )


#: What the original code's training config may say, for this loader to rebuild its model exactly.
_NANDA_OPTIONS = {"fn_name": "add", "act_type": "ReLU", "use_ln": False, "num_layers": 1}


def _check_training_config(path: Path, training: dict[str, Any], model_cfg: dict[str, Any]) -> None:
    """The stored training config must describe these weights (``p``, ``d_model``, ``d_mlp``,
    ``num_heads``, ``d_vocab``, ``n_ctx``, if given) and a model this loader rebuilds: a + b mod p,
    one layer, ReLU, no LayerNorm (:data:`_NANDA_OPTIONS`)."""
    sizes = {"p": model_cfg["d_vocab_out"], "d_model": model_cfg["d_model"], "d_mlp": model_cfg["d_mlp"],
             "num_heads": model_cfg["n_heads"], "d_vocab": model_cfg["d_vocab"], "n_ctx": model_cfg["n_ctx"]}
    for key, actual in sizes.items():
        if key in training and training[key] != actual:
            raise CheckpointError(f"{path}: its stored config says {key} = {training[key]!r}, "
                                  f"but the weights have {key} = {actual}")
    for key, supported in _NANDA_OPTIONS.items():
        if key in training and training[key] != supported:
            raise CheckpointError(f"{path}: its stored config says {key} = {training[key]!r}; this loader "
                                  f"rebuilds {key} = {supported!r} only (a + b mod p, one layer, ReLU, no LayerNorm)")


def _is_nanda_layout(state: dict[str, Any]) -> bool:
    w_e, w_q = state.get("embed.W_E"), state.get("blocks.0.attn.W_Q")
    return torch.is_tensor(w_e) and torch.is_tensor(w_q) and w_q.ndim == 3 and "blocks.1.attn.W_Q" not in state


def _convert_nanda(path: Path, s: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Original layout of neelnanda-io/Grokking -> TransformerLens layout (one layer, p = d_vocab - 1).

    Original shapes: W_E (d_model, p+1); W_Q/K/V (heads, d_head, d_model); W_O (d_model,
    heads*d_head) acting on the head-major concatenation of z; W_in (d_mlp, d_model); W_out
    (d_model, d_mlp); W_U (d_model, p+1) whose last column (the "=" logit) is unused.
    """
    extra = sorted(set(s) - _NANDA_KEYS)
    if extra:  # a LayerNorm, say: the model rebuilt without it would be another model
        raise CheckpointError(f"{path}: grokking-checkpoint layout with weights this loader does not convert: {extra[:4]}")
    try:
        d_model, d_vocab = s["embed.W_E"].shape
        n_heads, d_head, _ = s["blocks.0.attn.W_Q"].shape
        p = d_vocab - 1
        if tuple(s["unembed.W_U"].shape) != (d_model, d_vocab):
            raise CheckpointError(f"{path}: unembed.W_U is {tuple(s['unembed.W_U'].shape)}, the embedding "
                                  f"implies ({d_model}, {d_vocab})")
        cfg = config_to_dict(modadd_config(p))
        if (cfg["d_model"], cfg["n_heads"], cfg["d_head"], cfg["d_mlp"]) != (
            d_model, n_heads, d_head, s["blocks.0.mlp.W_in"].shape[0]
        ):
            raise CheckpointError(f"{path}: grokking checkpoint of an unexpected size (d_model {d_model}, heads {n_heads})")
        zeros = torch.zeros
        state = {
            "embed.W_E": s["embed.W_E"].T.contiguous(),
            "pos_embed.W_pos": s["pos_embed.W_pos"],
            "blocks.0.attn.W_Q": s["blocks.0.attn.W_Q"].transpose(1, 2).contiguous(),
            "blocks.0.attn.W_K": s["blocks.0.attn.W_K"].transpose(1, 2).contiguous(),
            "blocks.0.attn.W_V": s["blocks.0.attn.W_V"].transpose(1, 2).contiguous(),
            "blocks.0.attn.W_O": s["blocks.0.attn.W_O"].T.reshape(n_heads, d_head, d_model).contiguous(),
            "blocks.0.attn.b_Q": zeros(n_heads, d_head),
            "blocks.0.attn.b_K": zeros(n_heads, d_head),
            "blocks.0.attn.b_V": zeros(n_heads, d_head),
            "blocks.0.attn.b_O": zeros(d_model),
            "blocks.0.mlp.W_in": s["blocks.0.mlp.W_in"].T.contiguous(),
            "blocks.0.mlp.b_in": s["blocks.0.mlp.b_in"],
            "blocks.0.mlp.W_out": s["blocks.0.mlp.W_out"].T.contiguous(),
            "blocks.0.mlp.b_out": s["blocks.0.mlp.b_out"],
            "unembed.W_U": s["unembed.W_U"][:, :p].contiguous(),
            "unembed.b_U": zeros(p),
        }
    except KeyError as exc:
        raise CheckpointError(f"{path}: grokking checkpoint lacks {exc}") from exc
    except (AttributeError, ValueError, RuntimeError, IndexError, TypeError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{path}: grokking-checkpoint weights of inconsistent shapes ({exc})") from exc
    return state, cfg


#: The tensors of the original grokking layout (the causal mask is rebuilt).
_NANDA_KEYS = {"embed.W_E", "pos_embed.W_pos", "unembed.W_U", "blocks.0.attn.mask",
               *(f"blocks.0.attn.{w}" for w in ("W_Q", "W_K", "W_V", "W_O")),
               *(f"blocks.0.mlp.{w}" for w in ("W_in", "b_in", "W_out", "b_out"))}


#: ``model_config`` keys of the original induction code -> the size they fix, checked against the weights.
_INDUCTION_SIZES = {"num_layers": "n_layers", "d_model": "d_model", "num_heads": "n_heads", "d_head": "d_head",
                    "n_ctx": "n_ctx", "d_vocab": "d_vocab"}


def _is_induction_layout(state: dict[str, Any]) -> bool:
    w_q = state.get("attn_blocks.0.attn.W_Q")
    return torch.is_tensor(w_q) and w_q.ndim == 3 and torch.is_tensor(state.get("embed.W_E"))


def _convert_induction(path: Path, s: dict[str, Any], model_config: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Original layout of Nanda's attention-only induction models -> a TransformerLens attention-only model.

    Original: ``embed.W_E`` (d_model, d_vocab); ``pos_embed.W_pos`` (n_ctx, d_model) added to the
    embedding; per layer ``attn_blocks.{l}.attn.W_Q/K/V`` (heads, d_head, d_model) and ``W_O``
    (d_model, heads*d_head) acting on the head-major concatenation of z, scores scaled by
    1/sqrt(d_head) under a causal mask (the ``mask`` buffer), the output added to the residual;
    ``unembed.W_U`` (d_model, d_vocab_out). No LayerNorm, no MLP, no biases. Sizes come from the
    shapes; ``model_config`` (``num_layers``, ``d_model``, ``num_heads``, ``d_head``, ``n_ctx``,
    ``d_vocab``, ``pos_embed_type``), when given, must agree with them.
    """
    try:
        d_model, d_vocab = s["embed.W_E"].shape
        n_heads, d_head, _ = s["attn_blocks.0.attn.W_Q"].shape
        n_layers = 1 + max(int(k.split(".")[1]) for k in s if k.startswith("attn_blocks.") and k.endswith(".attn.W_Q"))
        n_ctx = s["pos_embed.W_pos"].shape[0]
        d_vocab_out = s["unembed.W_U"].shape[1]
        cfg = {"n_layers": n_layers, "d_model": int(d_model), "n_heads": int(n_heads), "d_head": int(d_head),
               "n_ctx": int(n_ctx), "d_vocab": int(d_vocab), "d_vocab_out": int(d_vocab_out), "attn_only": True,
               "normalization_type": None, "act_fn": "relu", "positional_embedding_type": "standard"}
        _check_induction_config(path, model_config, cfg)
        state = {"embed.W_E": s["embed.W_E"].T.contiguous(), "pos_embed.W_pos": s["pos_embed.W_pos"].contiguous(),
                 "unembed.W_U": s["unembed.W_U"].contiguous(), "unembed.b_U": torch.zeros(d_vocab_out)}
        expected = {f"attn_blocks.{l}.attn.{w}" for l in range(n_layers) for w in ("W_Q", "W_K", "W_V", "W_O", "mask")}
        extra = sorted(set(s) - expected - {"embed.W_E", "pos_embed.W_pos", "unembed.W_U"})
        if extra:
            raise CheckpointError(f"{path}: induction-model layout with weights this loader does not convert: {extra[:4]}")
        for l in range(n_layers):
            attn = f"attn_blocks.{l}.attn."
            for w in ("W_Q", "W_K", "W_V"):
                state[f"blocks.{l}.attn.{w}"] = s[attn + w].transpose(1, 2).contiguous()
                state[f"blocks.{l}.attn.b_{w[-1]}"] = torch.zeros(n_heads, d_head)
            state[f"blocks.{l}.attn.W_O"] = s[attn + "W_O"].T.reshape(n_heads, d_head, d_model).contiguous()
            state[f"blocks.{l}.attn.b_O"] = torch.zeros(d_model)
    except KeyError as exc:
        raise CheckpointError(f"{path}: induction-model checkpoint lacks {exc}") from exc
    except (AttributeError, ValueError, RuntimeError, IndexError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{path}: induction-model weights of inconsistent shapes ({exc})") from exc
    return state, cfg


def _check_induction_config(path: Path, model_config: Any, cfg: dict[str, Any]) -> None:
    """The stored ``model_config`` must describe the weights, with the original positional embedding."""
    if not isinstance(model_config, dict):
        return
    for key, field in _INDUCTION_SIZES.items():
        if key in model_config and model_config[key] != cfg[field]:
            raise CheckpointError(f"{path}: its model_config says {key} = {model_config[key]!r}, "
                                  f"but the weights have {cfg[field]}")
    kind = model_config.get("pos_embed_type", "orig")
    if kind != "orig":
        raise CheckpointError(f"{path}: positional embedding {kind!r} is not supported (only 'orig', added to the input)")
