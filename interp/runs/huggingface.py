"""Hugging Face causal-LM directories read offline into TransformerLens weights.

A directory (:mod:`interp.runs.series`) holds ``config.json`` and the weights: ``model.safetensors``,
shards listed in ``model.safetensors.index.json``, or ``pytorch_model.bin`` (or its shards),
which goes through ``torch.load(..., weights_only=True)``: nothing is unpickled. The config is
mapped to a TransformerLens config by :mod:`interp.runs.hf_config`; the weights are converted by
TransformerLens' own conversion functions (``transformer_lens.pretrained.weight_conversions``),
which read attributes of a Hugging Face model object: here they read a view of the state dict
(:class:`_Weights`), so no Hugging Face model is built and nothing is fetched.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from interp.base.errors import first_line, one_line
from interp.runs.errors import CheckpointError
from interp.runs.hf_config import tied_embeddings, tl_config
from interp.runs.layout import checked_file
from interp.runs.series import (BIN_FILE, BIN_INDEX, CONFIG_FILE, MAX_JSON_BYTES, SAFETENSORS_FILE, SAFETENSORS_INDEX,
                                index_shards, missing_config)

__all__ = ["read_hf_config", "read_hf_dir", "read_hf_weights"]

#: What the unembedding is tied to, by architecture: (unembedding key, embedding key).
_TIES = {"GPT2LMHeadModel": ("lm_head.weight", "transformer.wte.weight"),
         "GPTNeoForCausalLM": ("lm_head.weight", "transformer.wte.weight"),
         "GPTNeoXForCausalLM": ("embed_out.weight", "gpt_neox.embed_in.weight"),
         "LlamaForCausalLM": ("lm_head.weight", "model.embed_tokens.weight")}


def read_hf_dir(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], int | None]:
    """(TransformerLens state dict, TransformerLens config dict, BOS id) of a Hugging Face directory.

    The BOS id is ``config.json``'s ``bos_token_id`` when it is a token of the vocabulary, else
    None (no tokenizer is read: :func:`interp.load_model` hands it on as ``model.bos_token_id``).

    Raises :class:`CheckpointError` naming the directory for an unreadable ``config.json``, an
    unsupported architecture (naming the supported ones), missing or unreadable weight files, and
    weights the config does not describe (a tensor missing, or of another shape). The caller
    checks the converted weights against the model's keys and shapes.
    """
    path = Path(path)
    hf = read_hf_config(path)
    arch, cfg = tl_config(path, hf)
    weights = read_hf_weights(path)
    bos = hf.get("bos_token_id")
    in_vocab = isinstance(bos, int) and not isinstance(bos, bool) and 0 <= bos < cfg["d_vocab"]
    return _convert(path, arch, hf, cfg, weights), cfg, bos if in_vocab else None


def read_hf_config(path: Path) -> dict[str, Any]:
    """The parsed ``DIR/config.json``; :class:`CheckpointError` when it is missing or not a JSON object."""
    file = path / CONFIG_FILE
    try:
        hf = json.loads(_read_small(file))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable config.json ({str(exc).splitlines()[0] if str(exc) else exc})") from exc
    if not isinstance(hf, dict):
        raise CheckpointError(f"{path}: unreadable config.json (expected an object, found {type(hf).__name__})")
    return hf


def _read_small(file: Path) -> bytes:
    checked_file(file)
    if file.stat().st_size > MAX_JSON_BYTES:
        raise ValueError(f"{file.name} is larger than {MAX_JSON_BYTES} bytes")
    return file.read_bytes()


def read_hf_weights(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a Hugging Face directory's weight files, by their Hugging Face names.

    Raises :class:`CheckpointError` naming the directory when there are none, or a file (a shard)
    is missing, truncated, corrupt or refers to code.
    """
    for single, index in ((SAFETENSORS_FILE, SAFETENSORS_INDEX), (BIN_FILE, BIN_INDEX)):  # transformers' order
        if (path / single).is_file():
            return _read_weight_file(path / single)
        if (path / index).is_file():
            return _read_shards(path, index)
    raise CheckpointError(missing_config(path) or f"{path}: config.json but no weights ({SAFETENSORS_FILE}, "
                          f"{SAFETENSORS_INDEX}, {BIN_FILE} or {BIN_INDEX})")  # missing_config: a LoRA adapter alone


def _read_shards(path: Path, index: str) -> dict[str, torch.Tensor]:
    try:
        shards = index_shards(checked_file(path / index))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: unreadable {index} ({exc})") from exc
    if not shards:
        raise CheckpointError(f"{path}: {index} lists no shards (its weight_map is empty)")
    tensors: dict[str, torch.Tensor] = {}
    for shard in shards:
        if not isinstance(shard, str) or Path(shard).name != shard:
            raise CheckpointError(f"{path}: {index} names a shard outside the directory ({shard!r})")
        if not (path / shard).is_file():
            raise CheckpointError(f"{path}: shard {shard} listed in {index} is missing")
        tensors.update(_read_weight_file(path / shard))
    return tensors


def _read_weight_file(file: Path) -> dict[str, torch.Tensor]:
    checked_file(file)
    if file.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(file))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{file}: corrupt or truncated safetensors file ({exc})") from exc
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{file}: refused: not a weights-only torch file (it may refer to code, "
                              "which weights-only loading never runs)") from exc
    except Exception as exc:  # torch raises many types for a bad file; all mean the same here
        raise CheckpointError(f"{file}: cannot read as a weights-only torch file ({one_line(exc)})") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{file}: expected a dict of tensors, found {type(obj).__name__}")
    other = next((key for key, value in obj.items() if not torch.is_tensor(value)), None)
    if other is not None:
        raise CheckpointError(f"{file}: expected a dict of tensors, but {other!r} holds a "
                              f"{type(obj[other]).__name__} (a training checkpoint? save the model's state_dict)")
    return obj


#: Layer 0's weights whose shapes hold the sizes config.json gives, by architecture: (name, the shape
#: from the TransformerLens config). The conversion allocates by those sizes (Llama's zero biases).
_LAYER_SHAPES = {
    "GPT2LMHeadModel": (("transformer.h.0.mlp.c_fc.weight", lambda c: (c["d_model"], c["d_mlp"])),),
    "GPTNeoForCausalLM": (("transformer.h.0.mlp.c_fc.weight", lambda c: (c["d_mlp"], c["d_model"])),),
    "GPTNeoXForCausalLM": (("gpt_neox.layers.0.mlp.dense_h_to_4h.weight", lambda c: (c["d_mlp"], c["d_model"])),),
    "LlamaForCausalLM": (
        ("model.layers.0.mlp.gate_proj.weight", lambda c: (c["d_mlp"], c["d_model"])),
        ("model.layers.0.self_attn.q_proj.weight", lambda c: (c["n_heads"] * c["d_head"], c["d_model"])),
        ("model.layers.0.self_attn.k_proj.weight",
         lambda c: ((c["n_key_value_heads"] or c["n_heads"]) * c["d_head"], c["d_model"]))),
}

#: The learned position table and the config.json fields that size it, by architecture (the
#: rotary ones have none).
_POSITIONS = {"GPT2LMHeadModel": ("transformer.wpe.weight", ("n_positions", "n_ctx")),
              "GPTNeoForCausalLM": ("transformer.wpe.weight", ("max_position_embeddings",))}


def _check_weights(path: Path, arch: str, hf: dict[str, Any], cfg: dict[str, Any],
                  weights: dict[str, torch.Tensor]) -> None:
    """The token and position tables and layer 0's widths must have the sizes ``config.json``
    gives, checked before anything of those sizes is made (the conversion allocates by the
    config: a config that announces a billion tokens would take gigabytes first), and a table
    never cut to fit. Weights of one byte per number (int8 or float8 codes: quantized) are refused."""
    coded = next((key for key, value in weights.items() if key.endswith(".weight")
                  and (not value.is_floating_point() or value.element_size() == 1)), None)
    if coded is not None:
        raise CheckpointError(f"{path}: {coded} holds {weights[coded].dtype} numbers (quantized codes?); "
                              "the weights must be float32, float16 or bfloat16")
    for key, shape in _LAYER_SHAPES[arch]:
        found = weights.get(key)
        if torch.is_tensor(found) and tuple(found.shape) != shape(cfg):
            raise CheckpointError(f"{path}: {key} is {tuple(found.shape)}, config.json implies {shape(cfg)}")
    table = weights.get(_TIES[arch][1])
    if torch.is_tensor(table) and tuple(table.shape) != (cfg["d_vocab"], cfg["d_model"]):
        raise CheckpointError(f"{path}: {_TIES[arch][1]} is {tuple(table.shape)}, config.json implies "
                              f"({cfg['d_vocab']}, {cfg['d_model']})")
    key, fields = _POSITIONS.get(arch, (None, ()))
    rows = next((int(hf[field]) for field in fields if field in hf), None)
    positions = weights.get(key) if key else None
    if torch.is_tensor(positions) and rows is not None and positions.shape[0] != rows:
        raise CheckpointError(f"{path}: {key} holds {positions.shape[0]} positions, config.json says {rows}")


#: A layer's index in a weight name: ``transformer.h.3.`` (GPT-2, GPT-Neo), ``gpt_neox.layers.3.``, ``model.layers.3.``.
_LAYER_KEY = re.compile(r"\.(?:h|layers)\.(\d+)\.")


class _Missing(AttributeError):
    """A weight the conversion asked for and the files lack (an ``AttributeError``, so ``hasattr`` works)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class _Weights:
    """Attribute view of a Hugging Face state dict: ``view.transformer.h[0].ln_1.weight`` is the
    tensor ``transformer.h.0.ln_1.weight``; what TransformerLens' conversion functions read."""

    def __init__(self, tensors: dict[str, torch.Tensor], prefixes: set[str] | None = None, at: str = "") -> None:
        self._tensors = tensors
        self._prefixes = prefixes if prefixes is not None else {
            key.rsplit(".", i)[0] for key in tensors for i in range(1, key.count(".") + 1)}
        self._at = at

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        key = self._at + name
        if key in self._tensors:
            return self._tensors[key]
        if key in self._prefixes:
            return _Weights(self._tensors, self._prefixes, key + ".")
        raise _Missing(key)

    def __getitem__(self, index: int) -> Any:
        return self.__getattr__(str(index))


def _convert(path: Path, arch: str, hf: dict[str, Any], cfg: dict[str, Any],
             weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The Hugging Face weights in TransformerLens names and shapes (TransformerLens' conversion)."""
    from transformer_lens.config.hooked_transformer_config import HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import (convert_gpt2_weights, convert_llama_weights,
                                                                convert_neo_weights, convert_neox_weights)

    convert = {"GPT2LMHeadModel": convert_gpt2_weights, "GPTNeoForCausalLM": convert_neo_weights,
               "GPTNeoXForCausalLM": convert_neox_weights, "LlamaForCausalLM": convert_llama_weights}[arch]
    weights = dict(weights)
    if arch == "GPT2LMHeadModel" and not any(k.startswith("transformer.") for k in weights):
        weights = {k if k.startswith("lm_head.") else f"transformer.{k}": v for k, v in weights.items()}
    if arch == "GPTNeoXForCausalLM" and "lm_head.weight" in weights:  # the newer name of embed_out
        weights["embed_out.weight"] = weights.pop("lm_head.weight")
    layers = {int(match.group(1)) for key in weights if (match := _LAYER_KEY.search(key))}
    if layers and max(layers) + 1 != cfg["n_layers"]:  # the conversion reads only the layers the config names
        raise CheckpointError(f"{path}: the weights hold {max(layers) + 1} layers, config.json says {cfg['n_layers']}")
    head, embedding = _TIES[arch]
    _check_weights(path, arch, hf, cfg, weights)
    if head not in weights and embedding in weights and tied_embeddings(arch, hf):
        weights[head] = weights[embedding]
    try:
        from transformer_lens.utilities.activation_functions import SUPPORTED_ACTIVATIONS
    except ImportError:  # another TransformerLens layout: its own check below stands
        SUPPORTED_ACTIVATIONS = None
    supported = None if SUPPORTED_ACTIVATIONS is None else sorted(set(SUPPORTED_ACTIVATIONS) - {"xielu"})
    if cfg.get("act_fn") == "xielu" or (supported is not None and cfg.get("act_fn") not in (None, *supported)):
        learned = " (its parameters are learned, and the conversion does not carry them)" * (cfg["act_fn"] == "xielu")
        raise CheckpointError(f"{path}: activation {cfg['act_fn']!r} is not supported{learned} (supported: "
                              f"{', '.join(supported or ())})")
    try:
        config = HookedTransformerConfig(**cfg)
    except (TypeError, ValueError, AssertionError) as exc:
        raise CheckpointError(f"{path}: config.json gives an invalid model config ({exc})") from exc
    try:
        state = convert(_Weights(weights), config)
    except _Missing as exc:
        raise CheckpointError(f"{path}: weights lack {exc.key}, which a {arch} of this config has") from exc
    except Exception as exc:  # einops and torch raise several types when shapes disagree with the config
        raise CheckpointError(f"{path}: the weights do not fit the sizes in config.json "
                              f"({first_line(exc) or type(exc).__name__})") from exc
    state.setdefault("unembed.b_U", torch.zeros(cfg["d_vocab"]))
    return {k: v.detach().contiguous() for k, v in state.items()}
