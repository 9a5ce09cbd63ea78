"""Checkpoint files: our safetensors format, loaders for foreign checkpoints, and a model cache.

Foreign checkpoints are read by :mod:`interp.runs.foreign` (torch files) and
:mod:`interp.runs.huggingface` (Hugging Face directories).

The run directory around the checkpoints is :mod:`interp.runs` (``docs/architecture.md``, "Run
format"). Every file is written atomically (:mod:`interp.files`). Nothing is ever unpickled:
our files are safetensors, and foreign ``.pt``/``.pth`` files go through
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import json
import threading
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as save_bytes
from transformer_lens import HookedTransformer

from interp.base.device import resolve_device
from interp.base.errors import one_line
from interp.base.files import atomic_write
from interp.tasks.models import build_model, config_from_dict, config_to_dict
from interp.runs.foreign import read_torch_file
from interp.runs.huggingface import read_hf_dir
from interp.runs.layout import CHECKPOINT_DIR, RUN_FILE, CheckpointError, checked_file, checkpoint_path, list_checkpoints, \
    run_of, step_of
from interp.runs.soundness import nonfinite_weights
from interp.runs.series import CONFIG_FILE, series_children, weights_without_config, why_no_checkpoint
from interp.runs.record import read_run

__all__ = ["CheckpointError", "ModelCache", "checkpoint_of", "checkpoint_path", "list_checkpoints", "load_cached",
           "load_model", "load_optimizer", "read_checkpoint", "save_checkpoint", "save_optimizer"]

FORMAT = "interp-checkpoint-v1"


def save_checkpoint(path: str | Path, model: HookedTransformer, step: int) -> None:
    """Write the model's weights and config to ``path`` atomically (safetensors)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if _is_weight(k)}
    metadata = {"format": FORMAT, "step": str(step), "config": json.dumps(config_to_dict(model.cfg))}
    _write_safetensors(path, tensors, metadata)


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
    metadata = {"format": FORMAT, "step": str(step), "param_groups": json.dumps(state["param_groups"]),
                "scalars": json.dumps(scalars)}
    _write_safetensors(path, tensors, metadata)


def _write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    # Serialised in memory and written with open(): safetensors' own file writer turns a full or
    # read-only disk into a SafetensorError, which atomic_write could not report as one line.
    data = save_bytes(tensors, metadata=metadata)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    atomic_write(path, write)


def load_optimizer(path: str | Path, optimizer: torch.optim.Optimizer) -> tuple[int, dict[str, torch.Tensor]]:
    """Restore an optimiser from :func:`save_optimizer`; returns (step, extra tensors)."""
    tensors, metadata = _read_safetensors(path)
    state: dict[int, dict[str, Any]] = {}
    extra = {k.removeprefix("extra/"): v for k, v in tensors.items() if k.startswith("extra/")}
    try:
        for key, value in tensors.items():
            if key.startswith("extra/"):
                continue
            idx, name = key.split(".", 1)
            state.setdefault(int(idx), {})[name] = value
        for idx, values in json.loads(metadata["scalars"]).items():
            state.setdefault(int(idx), {}).update(values)
        optimizer.load_state_dict({"state": state, "param_groups": json.loads(metadata["param_groups"])})
        return int(metadata["step"]), extra
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: optimiser state does not fit this run ({exc})") from exc


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], int | None]:
    """(state dict, model config dict, step) of one of our safetensors checkpoints."""
    tensors, metadata = _read_safetensors(path)
    if "config" not in metadata:
        raise CheckpointError(weights_without_config(path)
                              or f"{path}: safetensors file has no model config in its metadata")
    try:
        cfg = json.loads(metadata["config"])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: model config in metadata is not valid JSON ({exc})") from exc
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: model config in metadata is a JSON {type(cfg).__name__}, not an object")
    if not metadata.get("step", "0").isdigit():
        raise CheckpointError(f"{path}: step in metadata is {metadata['step']!r}, not a whole number")
    return tensors, cfg, int(metadata["step"]) if "step" in metadata else None


def _read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = checked_file(path)
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({exc})") from exc
    return tensors, metadata


def _is_weight(key: str) -> bool:
    # TransformerLens registers masks and rotary tables as buffers; they are rebuilt from config.
    return not key.endswith((".mask", ".IGNORE", "rotary_sin", "rotary_cos"))


#: Config fields that fix a model's shape: a checkpoint must agree with its run on all of them.
SHAPE_FIELDS = ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab", "d_vocab_out", "n_ctx",
                "attn_only", "normalization_type", "act_fn", "positional_embedding_type")


def describe_shape(cfg: dict[str, Any]) -> str:
    """``2 layers, d_model 64, 4 heads x 16, d_mlp -, vocab 128 -> 128, n_ctx 64`` from a config dict."""
    mlp = "-" if cfg.get("attn_only") or not cfg.get("d_mlp") else cfg.get("d_mlp")
    return (f"{cfg.get('n_layers')} layer(s), d_model {cfg.get('d_model')}, {cfg.get('n_heads')} heads x "
            f"{cfg.get('d_head')}, d_mlp {mlp}, vocab {cfg.get('d_vocab')} -> {cfg.get('d_vocab_out')}, "
            f"n_ctx {cfg.get('n_ctx')}")


def _check_run(path: Path, cfg: dict[str, Any]) -> None:
    """:class:`CheckpointError` when a checkpoint inside a run has another shape than its ``run.json`` records."""
    run = run_of(path) if path.is_file() else None
    info = None if run is None else read_run(run)
    expected = None if info is None else info.model_config
    if expected is None:
        return
    if any(cfg.get(k) != expected.get(k) for k in SHAPE_FIELDS if k in expected):
        raise CheckpointError(f"{path}: its model ({describe_shape(cfg)}) does not match its run "
                              f"{run} ({describe_shape(expected)})")


def load_model(path: str | Path, *, strict: bool = False,
               device: str | torch.device | None = None) -> HookedTransformer:
    """Load a ``HookedTransformer`` (eval mode) from any checkpoint this toolkit knows, on ``device``
    (None: the CPU; the model is built and loaded on the CPU, then moved).

    ``path`` may be:

    - a run directory: its latest complete checkpoint; a series of Hugging Face directories
      (:mod:`interp.runs.series`): its latest step, unless the series is itself a Hugging Face
      directory (as a Trainer's output folder holds its final model beside its ``checkpoint-N``
      folders): then that model;
    - a Hugging Face causal-LM directory (``config.json`` + ``model.safetensors``, sharded
      safetensors, or ``pytorch_model.bin`` read weights-only) of an architecture in
      :data:`interp.runs.hf_config.SUPPORTED_ARCHITECTURES`, read offline
      (:mod:`interp.runs.huggingface`; ``config.json``'s ``bos_token_id`` kept as ``model.bos_token_id``);
    - the original-layout two-layer attention-only induction model of Nanda
      (``{"model": ..., "model_config": ...}`` with ``attn_blocks.{l}.attn.W_Q``; any depth and
      size, with or without ``model_config``);
    - one of our checkpoint files (``.safetensors`` with the config in its metadata);
    - a TransformerLens state dict with its config: a ``.pt``/``.pth`` dict with keys
      ``state_dict`` (or ``model``) and ``config`` (or ``cfg``);
    - a published grokking checkpoint of Nanda et al. 2023 in its original layout
      (``{"model": state_dict, ...}`` with ``embed.W_E`` of shape d_model x (p+1)), with or
      without loss curves and with or without the original code's training config under
      ``config``: that config must agree with the weights on its sizes and describe a + b mod p
      with ReLU and no LayerNorm (``interp.runs.foreign._check_training_config``), and is kept
      as ``model.training_config``; a weight the layout does not have is refused.

    A checkpoint inside a run must have the model shape its ``run.json`` records. Weights that
    hold NaN or infinity give a ``RuntimeWarning`` naming them (a :class:`CheckpointError` with
    ``strict=True``).

    Raises ``FileNotFoundError`` for a missing path, :class:`CheckpointError` for a file that
    is truncated, corrupt, in a layout this loader does not know or foreign to its run (for a
    Hugging Face directory also: an unreadable ``config.json``, an unsupported architecture, no
    weights file, weights of other shapes than the config), and :class:`interp.runs.RunError` when
    the run's ``run.json`` is unreadable.
    """
    path = checkpoint_of(path)
    training = bos = None
    if path.is_dir() and (path / CONFIG_FILE).is_file():  # a Hugging Face directory
        state, cfg, bos = read_hf_dir(path)
    elif path.suffix == ".safetensors":
        state, cfg, _ = read_checkpoint(path)
        _check_run(path, cfg)
    else:
        state, cfg, training = read_torch_file(path)
    model = _instantiate(path, cfg, state)
    if training is not None:
        model.training_config = training
    if bos is not None:  # the repeated-token probes start with it (circuits.probes.probe_bos)
        model.bos_token_id = bos
    bad = nonfinite_weights(model)
    if bad:
        message = f"{path}: {bad}"
        if strict:
            raise CheckpointError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    return _moved(model, device)


def checkpoint_of(path: str | Path) -> Path:
    """The checkpoint :func:`load_model` reads for ``path``: a series' latest step, a run's latest
    checkpoint file (the run named or its ``checkpoints`` folder), else ``path`` itself (a file or a
    Hugging Face directory); raises like it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such run directory or checkpoint: {path}")
    if path.name == CHECKPOINT_DIR and (path.parent / RUN_FILE).is_file():
        path = path.parent  # as score takes it: the run's checkpoints
    if path.is_dir() and not list_checkpoints(path) and not (path / CONFIG_FILE).is_file() and series_children(path):
        path = series_children(path)[-1][1]  # a series: its latest step
    if path.is_dir() and (list_checkpoints(path) or not (path / CONFIG_FILE).is_file()):
        ckpts = list_checkpoints(path)
        if not ckpts:
            raise CheckpointError(why_no_checkpoint(path) or f"{path}: run directory has no checkpoints/step_*.safetensors")
        path = ckpts[-1][1]
    return path


def _moved(model: HookedTransformer, device: str | torch.device | None) -> HookedTransformer:
    """``model`` on ``device`` (:func:`interp.base.device.resolve_device`), its config saying where
    (TransformerLens' ``.to`` records ``cuda:N`` whole only from the string, and prints unless told not to)."""
    return model.to(str(resolve_device(device)), print_details=False)


def _instantiate(path: Path, cfg: dict[str, Any], state: dict[str, torch.Tensor]) -> HookedTransformer:
    """The model of ``cfg`` holding ``state``; the shapes checked on a model without storage first
    (``meta``), so that a config announcing sizes the weights do not have takes no memory."""
    try:
        config = config_from_dict(cfg)
        with torch.device("meta"):
            skeleton = HookedTransformer(config, move_to_device=False)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    except (TypeError, AssertionError) as exc:  # a field of the wrong type, reached by TransformerLens' constructor
        raise CheckpointError(f"{path}: its model config does not build a model ({one_line(exc)})") from exc
    expected = _weight_shapes(skeleton)
    _check_shapes(path, skeleton, state, expected)
    model = build_model(config)
    try:
        model.load_state_dict({k: state[k] for k in expected}, strict=False)
    except (RuntimeError, TypeError, ValueError) as exc:  # a sparse, quantized or otherwise unloadable tensor
        why = " ".join(str(exc).split())[:300]  # torch's message spans lines: the reason is below its header
        raise CheckpointError(f"{path}: its weights do not load into the model ({why})") from exc
    model.eval()
    return model


def _weight_shapes(model: HookedTransformer) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if _is_weight(k)}


def _check_shapes(
    path: Path, model: HookedTransformer, state: dict[str, torch.Tensor],
    expected: dict[str, tuple[int, ...]] | None = None,
) -> None:
    """Raise :class:`CheckpointError` unless ``state`` holds exactly the model's weights, shape for shape.

    ``expected``: the model's :func:`_weight_shapes`, when the caller has them already.
    """
    expected = _weight_shapes(model) if expected is None else expected
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
    costs more than loading its weights, so our safetensors checkpoints are copied into the
    parameters of the model of the previous one (their shapes checked first). Other formats go through
    :func:`load_model`. The returned model is shared: the next :meth:`load` overwrites it.

    ``device``: where the models live (None: the CPU); weights are read on the CPU and copied there.
    """

    def __init__(self, device: str | torch.device | None = None) -> None:
        self.device = resolve_device(device)
        self._key: str | None = None
        self._model: HookedTransformer | None = None
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._params: dict[str, torch.Tensor] = {}

    def load(self, path: str | Path) -> tuple[HookedTransformer, int | None]:
        """(model, step) of a checkpoint (step None for foreign files, except a Hugging Face
        directory named by step: ``step1000``, ``checkpoint-500``). Raises like :func:`load_model`."""
        path = Path(path)
        if path.suffix != ".safetensors":
            self._key, self._model = None, None
            with warnings.catch_warnings():  # non-finite weights are the caller's to check
                warnings.simplefilter("ignore", RuntimeWarning)
                model = load_model(path, device=self.device)
            return model, step_of(path) if path.is_dir() and (path / CONFIG_FILE).is_file() else None
        state, cfg, step = read_checkpoint(path)
        _check_run(path, cfg)
        key = json.dumps(cfg, sort_keys=True)
        if self._model is not None and key == self._key:
            _check_shapes(path, self._model, state, self._shapes)
            with torch.no_grad():
                for name, param in self._params.items():
                    param.copy_(state[name])
        else:
            self._key = None  # a failed build leaves no stale model behind
            model = _instantiate(path, cfg, state)
            self._model = _moved(model, self.device)
            self._shapes = _weight_shapes(self._model)
            self._params = {k: v for k, v in self._model.state_dict(keep_vars=True).items() if k in self._shapes}
            self._key = key
        return self._model, step


_LOCAL = threading.local()


def load_cached(path: str | Path, device: str | torch.device | None = None) -> tuple[HookedTransformer, int | None]:
    """:meth:`ModelCache.load` on this thread's cache for ``device`` (None: the CPU; one cache
    per worker thread or process and device)."""
    key = str(resolve_device(device))
    caches = getattr(_LOCAL, "caches", None)
    if caches is None:
        caches = _LOCAL.caches = {}
    if key not in caches:
        caches[key] = ModelCache(device)
    return caches[key].load(path)
