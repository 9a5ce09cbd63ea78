"""Which plan a row was scored against: a digest of what a detector prepared for its run.

A detector's ``prepare`` fixes what every checkpoint of a run is scored against (the final
checkpoint's circuit, key frequencies or LLC setting; the heads' probe). Each row records the
digest of that context (the ``context`` column of :mod:`interp.scoring.table`), so rows scored
against another plan (the run gained a later checkpoint, its final file changed, one checkpoint
was scored alone before its run was) are told apart and scored again. The digest is built from
the context's values, not from its pickle, which differs between two pickles of one tensor.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
from typing import Any

import numpy as np
import torch

__all__ = ["context_digest"]


def context_digest(context: Any) -> str:
    """A 16-hex-digit hash of ``context``: tensors and arrays by dtype, shape and bytes; dataclasses,
    objects, mappings and sequences by type and contents; anything else by its pickle."""
    digest = hashlib.sha256()
    _feed(digest, context)
    return digest.hexdigest()[:16]


def _feed(digest: Any, value: Any) -> None:
    tag = type(value).__qualname__
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().contiguous()
        digest.update(f"{tag}{value.dtype}{tuple(value.shape)}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, np.ndarray):
        digest.update(f"{tag}{value.dtype}{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    elif value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
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
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        digest.update(tag.encode())
        _feed(digest, {f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    elif hasattr(value, "__dict__"):
        digest.update(tag.encode())
        _feed(digest, vars(value))
    else:
        digest.update(pickle.dumps(value, protocol=4))
