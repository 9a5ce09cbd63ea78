"""Where models run: the ``--device`` flag and the ``device`` argument of the library.

A device is named as PyTorch names it, plus ``auto``:

- ``auto``: the first CUDA device when there is one, else the CPU. Apple's ``mps`` is never
  chosen by itself: it has no float64, which the modular-addition loss uses; name it to use it;
- ``cpu``; ``cuda`` (the current CUDA device) or ``cuda:N``; ``mps``.

:func:`check_device_name` checks the spelling without importing torch (the command-line parser);
:func:`resolve_device` also checks that the machine has the device, and says in one line what it
has when it does not.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["DEVICE_NAMES", "check_device_name", "device_name", "resolve_device"]

#: What ``--device`` accepts, as its help and errors say it.
DEVICE_NAMES = "auto, cpu, cuda, cuda:N, mps"
_NAME = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device_name(name: str) -> str:
    """``name`` lower-cased and stripped; ``ValueError`` naming what is accepted when it is not a device name."""
    text = str(name).strip().lower()
    if not _NAME.match(text):
        raise ValueError(f"unknown device {name!r}; expected one of {DEVICE_NAMES}")
    return text


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The ``torch.device`` that ``device`` names on this machine (None: the CPU).

    Raises ``ValueError`` for a name that is not a device (:data:`DEVICE_NAMES`) and for a
    device this machine lacks (``cuda`` without a CUDA GPU or a CUDA build of torch, ``cuda:3``
    on a machine with fewer GPUs, ``mps`` off Apple silicon), saying what it has.
    """
    import torch

    if device is None:
        return torch.device("cpu")
    name = check_device_name(str(device))
    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    resolved = torch.device(name)
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            built = "a CPU-only build of torch" if torch.version.cuda is None else "no CUDA GPU visible"
            raise ValueError(f"device {name}: this machine has no CUDA device ({built}); use --device cpu or auto")
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"device {name}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name}: Apple's Metal (mps) is not available here; use --device cpu or auto")
    return resolved


def device_name(device: str | torch.device | None, remote: bool = False) -> str:
    """The name a worker is given: ``device`` resolved on this machine (``"cuda:0"``, ``"cpu"``), or
    only checked when the workers are elsewhere (``remote``: a Dask cluster resolves ``auto`` on
    each worker's machine)."""
    if device is None:
        return "cpu"
    if remote:
        return check_device_name(str(device))
    return str(resolve_device(device))
