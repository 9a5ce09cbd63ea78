"""Detectors from other packages: the ``interp.detectors`` entry points, loaded into the registry.

A distribution adds a detector by naming, in the entry-point group ``interp.detectors``, a
:class:`interp.detectors.spec.Detector` *object* (not a function returning one), under the
detector's own name::

    [project.entry-points."interp.detectors"]
    wu_norm = "my_package.detector:DETECTOR"

:func:`load_plugins` imports them when the registry is built (:mod:`interp.detectors.registry`,
in every process that imports it: worker processes of any kind get them too), after the
built-in folders. A plugin is left out, with one :class:`PluginWarning` line naming it (its
entry point and distribution), when it fails to import, is not a ``Detector``, is not named
like its detector, or has the name of a detector already there (a built-in, or an earlier
plugin by distribution name): the built-in is kept and everything else works. The plugin module
should import ``Detector`` from ``interp`` or ``interp.detectors.spec``, not the registry
(which is still being built while it is imported).

:func:`plugin_help` lists the entry points without importing them (``interp --help`` imports
no torch): their help there is "(plugin from DIST)".
"""

from __future__ import annotations

import importlib.metadata
import warnings
from collections.abc import Iterable
from typing import Any

__all__ = ["GROUP", "PluginWarning", "SKIPPED", "entry_points", "load_plugins", "plugin_help"]

#: The entry-point group a distribution registers its detectors in.
GROUP = "interp.detectors"

#: Entry-point name -> why that plugin was left out in this process (the warning's text).
SKIPPED: dict[str, str] = {}


class PluginWarning(UserWarning):
    """A detector plugin was left out: it failed to import, or its name is taken."""


def entry_points() -> list[importlib.metadata.EntryPoint]:
    """The group's entry points, by distribution name then entry-point name; none is imported."""
    found = importlib.metadata.entry_points(group=GROUP)
    return sorted(found, key=lambda ep: (_dist_name(ep), ep.name))


def _dist_name(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return str(dist.name) if dist is not None else "?"


def _origin(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    said = f"{dist.name} {dist.version}" if dist is not None else "an unknown distribution"
    return f"detector plugin {ep.name} (entry point {ep.name} = {ep.value} of {said})"


def plugin_help(known: Iterable[str] = ()) -> dict[str, str]:
    """Entry-point name -> "(plugin from DIST)", without importing them; names in ``known`` left out.

    A name given twice is listed once (the first distribution by name, as :func:`load_plugins` keeps).
    """
    listed: dict[str, str] = {}
    known = set(known)
    for ep in entry_points():
        if ep.name not in known and ep.name not in listed:
            listed[ep.name] = f"(plugin from {_dist_name(ep)})"
    return listed


def _skip(ep: importlib.metadata.EntryPoint, why: str) -> None:
    message = f"{_origin(ep)} {why}; left out"
    SKIPPED[ep.name] = message
    # One line: no source line follows (the file "interp" has none).
    warnings.warn_explicit(message, PluginWarning, filename="interp", lineno=0)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def name_problem(name: Any) -> str | None:
    """Why ``name`` cannot name a detector (it must fit ``--detectors a,b``), or None."""
    if not isinstance(name, str) or not name or name != name.strip() or "," in name or name == "load":
        return f"{name!r} is not a detector name (a non-empty string without commas or surrounding spaces, not 'load')"
    return None


def load_plugins(detectors: dict[str, Any]) -> None:
    """Add every entry point's detector to ``detectors`` (name -> Detector) in place.

    A plugin that fails to import, is not a ``Detector``, is not named like its detector or whose
    name is already in ``detectors`` is left out with a :class:`PluginWarning` (and noted in
    :data:`SKIPPED`); this function raises nothing for a plugin.
    """
    from interp.detectors.spec import Detector

    origins: dict[str, str] = {}
    for ep in entry_points():
        try:
            detector = ep.load()
        except Exception as exc:  # a broken plugin must not break the toolkit
            _skip(ep, f"failed to import ({_one_line(exc)})")
            continue
        if not isinstance(detector, Detector):
            _skip(ep, f"names a {type(detector).__name__}, not an interp.Detector")
        elif name_problem(detector.name):
            _skip(ep, f"has a bad name: {name_problem(detector.name)}")
        elif detector.name != ep.name:
            _skip(ep, f"names the detector {detector.name!r}: the entry point must be named like its detector")
        elif detector.name in detectors:
            owner = origins.get(detector.name, "the built-in detector")
            _skip(ep, f"clashes with {owner} of that name, which is kept")
        else:
            detectors[detector.name] = detector
            origins[detector.name] = f"the plugin from {_dist_name(ep)}"
