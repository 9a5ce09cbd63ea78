"""The detector registry: what batch scoring, ``interp inspect`` and the report can measure.

Every sub-package of ``interp/detectors/`` is a detector: its ``__init__`` exposes ``DETECTOR``,
an :class:`interp.detectors.spec.Detector`. :data:`DETECTORS` maps names to detectors; scoring,
the CLI, ``inspect`` and the report read it and nothing else, so adding a detector is adding one
folder (``docs/architecture.md``, "Adding a detector"). After the folders come the detectors of
other packages: their ``interp.detectors`` entry points (:mod:`interp.detectors.plugins`), and
those added at run time with :func:`register_detector`.
"""

from __future__ import annotations

import importlib

from interp.detectors.catalog import builtin_names  # the folders, in registry order (no import of them)
from interp.detectors.plugins import load_plugins, name_problem
from interp.detectors.spec import Detector

__all__ = ["DETECTORS", "builtin_names", "register_detector"]


def _registry() -> dict[str, Detector]:
    detectors = {}
    for name in builtin_names():
        detector = importlib.import_module(f"interp.detectors.{name}").DETECTOR
        detectors[detector.name] = detector
    load_plugins(detectors)  # the entry points of installed distributions, after the built-ins
    return detectors


#: Every detector, by name, in the order scoring runs them and the report shows them.
DETECTORS: dict[str, Detector] = _registry()


def register_detector(detector: Detector, *, replace: bool = False) -> Detector:
    """Add ``detector`` to :data:`DETECTORS` in this process (a notebook, research code); returns it.

    From then on it scores (:func:`interp.score_checkpoints`, by default with every detector, or
    named in ``detectors``), inspects and has its report section like a built-in one. A name
    already registered (a built-in, a plugin, an earlier call) raises ``ValueError`` unless
    ``replace=True``, which puts ``detector`` in its place; anything but a :class:`Detector`
    raises ``TypeError``.

    Only this process knows it. Batch scoring with ``workers=1`` runs here, and the local pool of
    ``workers > 1`` on Linux forks its workers from this process, so they have it too. Workers
    started afresh (a spawned pool on macOS or Windows, a Dask scheduler's workers) import the
    registry anew and lack it: each of its checkpoints then gets an error row saying so. For
    those, or for ``interp score`` on the command line, publish the detector from a package
    through the ``interp.detectors`` entry point group instead (:mod:`interp.detectors.plugins`),
    which every process loads.
    """
    if not isinstance(detector, Detector):
        raise TypeError(f"register_detector expects an interp.Detector, got {type(detector).__name__}")
    problem = name_problem(detector.name)
    if problem:
        raise ValueError(problem)
    if detector.name in DETECTORS and not replace:
        raise ValueError(f"a detector named {detector.name!r} is already registered; pass replace=True to replace it")
    DETECTORS[detector.name] = detector
    return detector
