"""The detector registry: what batch scoring, ``interp inspect`` and the report can measure.

Every sub-package of ``interp/detectors/`` is a detector: its ``__init__`` exposes ``DETECTOR``,
an :class:`interp.detectors.spec.Detector`. :data:`DETECTORS` maps names to detectors; scoring,
the CLI, ``inspect`` and the report read it and nothing else, so adding a detector is adding one
folder (``docs/architecture.md``, "Adding a detector").
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from interp.detectors.spec import Detector

__all__ = ["DETECTORS", "builtin_names"]

#: The built-in detectors in the order scoring runs them and the report shows them; a folder
#: not named here comes after them, by name.
_ORDER = ("heads", "fourier", "text", "reasoning")


def builtin_names() -> list[str]:
    """Names of the detector folders, in registry order, without importing them (for ``--help``)."""
    found = [m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.ispkg]
    return sorted(found, key=lambda name: (name not in _ORDER, _ORDER.index(name) if name in _ORDER else 0, name))


def _registry() -> dict[str, Detector]:
    detectors = {}
    for name in builtin_names():
        detector = importlib.import_module(f"interp.detectors.{name}").DETECTOR
        detectors[detector.name] = detector
    return detectors


#: Every detector, by name, in the order scoring runs them and the report shows them.
DETECTORS: dict[str, Detector] = _registry()
