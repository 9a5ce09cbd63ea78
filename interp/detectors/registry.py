"""The detector registry: what batch scoring, ``interp inspect`` and the report can measure.

Every sub-package of ``interp/detectors/`` is a detector: its ``__init__`` exposes ``DETECTOR``,
an :class:`interp.detectors.spec.Detector`. :data:`DETECTORS` maps names to detectors; scoring,
the CLI, ``inspect`` and the report read it and nothing else, so adding a detector is adding one
folder (``docs/architecture.md``, "Adding a detector").
"""

from __future__ import annotations

import importlib

from interp.detectors.catalog import builtin_names  # the folders, in registry order (no import of them)
from interp.detectors.spec import Detector

__all__ = ["DETECTORS", "builtin_names"]


def _registry() -> dict[str, Detector]:
    detectors = {}
    for name in builtin_names():
        detector = importlib.import_module(f"interp.detectors.{name}").DETECTOR
        detectors[detector.name] = detector
    return detectors


#: Every detector, by name, in the order scoring runs them and the report shows them.
DETECTORS: dict[str, Detector] = _registry()
