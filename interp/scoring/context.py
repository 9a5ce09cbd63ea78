"""Which plan a row was scored against: a digest of what a detector prepared for its run.

A detector's ``prepare`` fixes what every checkpoint of a run is scored against (the final
checkpoint's circuit, key frequencies or LLC setting; the heads' probe). Each row records the
digest of that context (the ``context`` column of :mod:`interp.scoring.table`), so rows scored
against another plan (the run gained a later checkpoint, its final file changed, one checkpoint
was scored alone before its run was) are told apart and scored again. The digest is built from
the context's values, not from its pickle, which differs between two pickles of one tensor. A
detector whose rows changed definition (its ``version`` raised) tags the digest with that version
(:func:`plan_label`), and one whose settings (``Detector.settings``) are not its defaults tags it
with their hash, so rows of another version or other settings are scored again without planning
their run first.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import pickle
import types
from typing import Any

import numpy as np
import pandas as pd
import torch

__all__ = ["context_digest", "label_settings", "label_version", "plan_label", "settings_tag"]


def context_digest(context: Any) -> str | None:
    """A 16-hex-digit hash of ``context``, or None when it holds what this cannot read (its rows are
    then kept as they are). Tensors and arrays by dtype, shape and values, dataclasses, objects,
    functions, mappings and sequences by type and contents, anything else by its pickle. Floats
    count to 6 significant digits, so a context computed on another machine (other BLAS, other
    rounding) has the same digest."""
    digest = hashlib.sha256()
    try:
        _feed(digest, context)
    except Exception:  # noqa: BLE001 - a plugin's context of any kind: no digest, never a stopped job
        return None
    return digest.hexdigest()[:16]


def plan_label(digest: str | None, version: int = 1, settings: str = "") -> str | None:
    """The ``context`` a row records: the plan's ``digest``, followed by ``~TAG`` for settings other
    than the detector's defaults (:func:`settings_tag`) and ``@N`` for a detector at ``version`` N > 1
    (``"@2"`` alone when there is neither a digest nor a tag)."""
    label = f"{digest or ''}~{settings}" if settings else digest
    return label if version <= 1 else f"{label or ''}@{version}"


def label_version(label: str | None) -> int:
    """The detector version a row's ``context`` records (:func:`plan_label`): 1 when it names none."""
    _, at, version = (label or "").rpartition("@")
    return int(version) if at and version.isdigit() else 1


def label_settings(label: str | None) -> str:
    """The settings tag a row's ``context`` records (:func:`plan_label`): "" for the defaults."""
    _, tilde, tag = (label or "").partition("@")[0].partition("~")
    return tag if tilde else ""


def settings_tag(detector: Any) -> str:
    """A 12-hex-digit hash of ``detector.settings()``, "" for its defaults or a detector without
    settings; the settings' ``ValueError`` passes through (bad settings stop a job before any work)."""
    text = detector.settings() if detector.settings is not None else ""
    return hashlib.sha256(text.encode()).hexdigest()[:12] if text else ""


def _feed(digest: Any, value: Any) -> None:
    tag = type(value).__qualname__
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        digest.update(f"{tag}{value.dtype}{tuple(value.shape)}".encode())
        if value.is_floating_point():
            value = _rounded(value.double())
        digest.update(value.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, np.ndarray):
        _feed(digest, torch.from_numpy(np.array(value)))  # a copy: writable, contiguous
    elif isinstance(value, (pd.DataFrame, pd.Series)):
        names = value.columns if isinstance(value, pd.DataFrame) else [value.name]
        _feed(digest, (tag, [str(n) for n in names], pd.util.hash_pandas_object(value, index=True).to_numpy()))
    elif isinstance(value, float):
        digest.update(f"{tag}:{value:.6g};".encode())
    elif value is None or isinstance(value, (bool, int, complex, str, bytes)):
        digest.update(f"{tag}:{value!r};".encode())
    elif isinstance(value, dict):
        digest.update(f"{tag}{len(value)}".encode())
        for key in sorted(value, key=repr):
            _feed(digest, key)
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        digest.update(f"{tag}{len(items)}".encode())
        for item in items:
            _feed(digest, item)
    elif isinstance(value, types.FunctionType):  # by its code, constants, closure and defaults
        code = value.__code__
        digest.update(f"{tag}{value.__module__}.{value.__qualname__}".encode() + code.co_code)
        _feed(digest, [c for c in code.co_consts if not isinstance(c, types.CodeType)])
        _feed(digest, [cell.cell_contents for cell in value.__closure__ or ()])
        _feed(digest, value.__defaults__)
    elif isinstance(value, functools.partial):
        _feed(digest, (value.func, value.args, value.keywords))
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        digest.update(tag.encode())
        _feed(digest, {f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    elif hasattr(value, "__dict__") and not isinstance(value, (type, types.ModuleType)):
        digest.update(tag.encode())
        _feed(digest, vars(value))
    else:
        digest.update(pickle.dumps(value, protocol=4))


def _rounded(values: torch.Tensor) -> torch.Tensor:
    """``values`` (float64) to 6 significant digits of their largest magnitude, as integers."""
    finite = values[values.isfinite()]
    scale = float(finite.abs().max()) if finite.numel() else 0.0
    if scale == 0.0:
        return values
    return torch.where(values.isfinite(), torch.round(values / scale * 1e6), values).to(torch.float64)
