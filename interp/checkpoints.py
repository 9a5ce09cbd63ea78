"""Checkpoint files: our safetensors format, loaders for foreign checkpoints, and a model cache.

The run directory around the checkpoints is :mod:`interp.runs` (``docs/architecture.md``, "Run
format"). Every file is written atomically (:mod:`interp.files`). Nothing is ever unpickled:
our files are safetensors, and foreign ``.pt``/``.pth`` files go through
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformer_lens import HookedTransformer

from interp.files import atomic_write
from interp.models import build_model, config_from_dict, config_to_dict, modadd_config
from interp.runs import checkpoint_path, list_checkpoints

__all__ = [
    "CheckpointError",
    "ModelCache",
    "checkpoint_path",
    "list_checkpoints",
    "load_cached",
    "load_model",
    "load_optimizer",
    "read_checkpoint",
    "save_checkpoint",
    "save_optimizer",
]

FORMAT = "interp-checkpoint-v1"


class CheckpointError(ValueError):
    """A checkpoint or run directory that cannot be read: missing, truncated, corrupt, or foreign."""


# ---------------------------------------------------------------------------------------------
# our format


def save_checkpoint(path: str | Path, model: HookedTransformer, step: int) -> None:
    """Write the model's weights and config to ``path`` atomically (safetensors)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if _is_weight(k)}
    metadata = {"format": FORMAT, "step": str(step), "config": json.dumps(config_to_dict(model.cfg))}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def save_optimizer(
    path: str | Path, optimizer: torch.optim.Optimizer, step: int, extra: dict[str, torch.Tensor] | None = None
) -> None:
    """Write an optimiser's state (tensors and scalars), plus ``extra`` tensors, atomically."""
    state = optimizer.state_dict()
    tensors = {f"extra/{k}": v.detach().contiguous().cpu() for k, v in (extra or {}).items()}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, per_param in state["state"].items():
        for name, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    metadata = {
        "format": FORMAT,
        "step": str(step),
        "param_groups": json.dumps(state["param_groups"]),
        "scalars": json.dumps(scalars),
    }
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_optimizer(path: str | Path, optimizer: torch.optim.Optimizer) -> tuple[int, dict[str, torch.Tensor]]:
    """Restore an optimiser from :func:`save_optimizer`; returns (step, extra tensors)."""
    tensors, metadata = _read_safetensors(path)
    state: dict[int, dict[str, Any]] = {}
    extra = {k.removeprefix("extra/"): v for k, v in tensors.items() if k.startswith("extra/")}
    for key, value in tensors.items():
        if key.startswith("extra/"):
            continue
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for idx, values in json.loads(metadata["scalars"]).items():
        state.setdefault(int(idx), {}).update(values)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": json.loads(metadata["param_groups"])})
        return int(metadata["step"]), extra
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: optimiser state does not fit this run ({exc})") from exc


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], int | None]:
    """(state dict, model config dict, step) of one of our safetensors checkpoints."""
    tensors, metadata = _read_safetensors(path)
    if "config" not in metadata:
        raise CheckpointError(f"{path}: safetensors file has no model config in its metadata")
    try:
        cfg = json.loads(metadata["config"])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: model config in metadata is not valid JSON ({exc})") from exc
    step = int(metadata["step"]) if "step" in metadata else None
    return tensors, cfg, step


def _read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({exc})") from exc
    return tensors, metadata


def _is_weight(key: str) -> bool:
    # TransformerLens registers masks and rotary tables as buffers; they are rebuilt from config.
    return not key.endswith((".mask", ".IGNORE", "rotary_sin", "rotary_cos"))


# ---------------------------------------------------------------------------------------------
# loading anything into a HookedTransformer


def load_model(path: str | Path) -> HookedTransformer:
    """Load a ``HookedTransformer`` (CPU, eval mode) from any checkpoint this toolkit knows.

    ``path`` may be:

    - a run directory: its latest complete checkpoint;
    - one of our checkpoint files (``.safetensors`` with the config in its metadata);
    - a TransformerLens state dict with its config: a ``.pt``/``.pth`` dict with keys
      ``state_dict`` (or ``model``) and ``config`` (or ``cfg``);
    - a published grokking checkpoint of Nanda et al. 2023 in its original layout
      (``{"model": state_dict, ...}`` with ``embed.W_E`` of shape d_model x (p+1)).

    Raises ``FileNotFoundError`` for a missing path and :class:`CheckpointError` for a file that
    is truncated, corrupt, or in a layout this loader does not know.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such run directory or checkpoint: {path}")
    if path.is_dir():
        ckpts = list_checkpoints(path)
        if not ckpts:
            raise CheckpointError(f"{path}: run directory has no checkpoints/step_*.safetensors")
        path = ckpts[-1][1]
    if path.suffix == ".safetensors":
        state, cfg, _ = read_checkpoint(path)
    else:
        state, cfg = _read_torch_file(path)
    return _instantiate(path, cfg, state)


def _instantiate(path: Path, cfg: dict[str, Any], state: dict[str, torch.Tensor]) -> HookedTransformer:
    try:
        model = build_model(config_from_dict(cfg))
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    _check_shapes(path, model, state)
    model.load_state_dict({k: state[k] for k in _weight_shapes(model)}, strict=False)
    model.eval()
    return model


def _weight_shapes(model: HookedTransformer) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if _is_weight(k)}


def _check_shapes(path: Path, model: HookedTransformer, state: dict[str, torch.Tensor]) -> None:
    """Raise :class:`CheckpointError` unless ``state`` holds exactly the model's weights, shape for shape."""
    expected = _weight_shapes(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected) - {k for k in state if not _is_weight(k)})
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match the config (missing: {missing[:5]}, unexpected: {unexpected[:5]})"
        )
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise CheckpointError(f"{path}: {key} has shape {tuple(state[key].shape)}, config implies {shape}")


class ModelCache:
    """Loads checkpoints into one model instance, rebuilt only when the model config changes.

    Scoring a run loads dozens of checkpoints of one config; building a ``HookedTransformer``
    costs more than loading its weights, so our safetensors checkpoints are loaded with
    ``load_state_dict`` into the model of the previous one. Other formats go through
    :func:`load_model`. The returned model is shared: the next :meth:`load` overwrites it.
    """

    def __init__(self) -> None:
        self._key: str | None = None
        self._model: HookedTransformer | None = None

    def load(self, path: str | Path) -> tuple[HookedTransformer, int | None]:
        """(model, step) of a checkpoint (step None for foreign files). Raises like :func:`load_model`."""
        path = Path(path)
        if path.suffix != ".safetensors":
            self._key, self._model = None, None
            return load_model(path), None
        state, cfg, step = read_checkpoint(path)
        key = json.dumps(cfg, sort_keys=True)
        if self._model is not None and key == self._key:
            _check_shapes(path, self._model, state)
            self._model.load_state_dict({k: state[k] for k in _weight_shapes(self._model)}, strict=False)
        else:
            self._key, self._model = None, None
            self._model, self._key = _instantiate(path, cfg, state), key
        return self._model, step


_LOCAL = threading.local()


def load_cached(path: str | Path) -> tuple[HookedTransformer, int | None]:
    """:meth:`ModelCache.load` on this thread's cache (one per worker thread or process)."""
    cache = getattr(_LOCAL, "cache", None)
    if cache is None:
        cache = _LOCAL.cache = ModelCache()
    return cache.load(path)


def _read_torch_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file; all mean the same here
        raise CheckpointError(f"{path}: cannot read as a weights-only torch file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of weights, found {type(obj).__name__}")
    state = obj.get("state_dict", obj.get("model"))
    cfg = obj.get("config", obj.get("cfg"))
    if isinstance(state, dict) and isinstance(cfg, dict):
        return {k: v for k, v in state.items() if torch.is_tensor(v)}, cfg
    if isinstance(state, dict) and _is_nanda_layout(state):
        return _convert_nanda(path, state)
    raise CheckpointError(
        f"{path}: unknown checkpoint layout (keys: {sorted(obj)[:8]}); expected a TransformerLens "
        "state dict with its config, or a Nanda et al. grokking checkpoint"
    )


def _is_nanda_layout(state: dict[str, Any]) -> bool:
    w_e, w_q = state.get("embed.W_E"), state.get("blocks.0.attn.W_Q")
    return torch.is_tensor(w_e) and torch.is_tensor(w_q) and w_q.ndim == 3 and "blocks.1.attn.W_Q" not in state


def _convert_nanda(path: Path, s: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Original layout of neelnanda-io/Grokking -> TransformerLens layout (one layer, p = d_vocab - 1).

    Original shapes: W_E (d_model, p+1); W_Q/K/V (heads, d_head, d_model); W_O (d_model,
    heads*d_head) acting on the head-major concatenation of z; W_in (d_mlp, d_model); W_out
    (d_model, d_mlp); W_U (d_model, p+1) whose last column (the "=" logit) is unused.
    """
    try:
        d_model, d_vocab = s["embed.W_E"].shape
        n_heads, d_head, _ = s["blocks.0.attn.W_Q"].shape
        p = d_vocab - 1
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
    return state, cfg
