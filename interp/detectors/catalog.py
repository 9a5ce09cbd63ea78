"""The detector folders and their one-line help, read without importing them (``interp --help``).

Importing a detector imports torch and transformer_lens; the command line's help and usage
errors must not. :func:`builtin_names` lists the sub-packages of ``interp/detectors/``;
:func:`help_line` reads the ``help=`` of a folder's ``DETECTOR = Detector(...)`` from its source
with :mod:`ast`; :func:`listing` adds the detectors of other packages, named by their entry
points (:func:`interp.detectors.plugins.plugin_help`, not imported either).
:mod:`interp.detectors.registry` imports them and is the truth; ``tests/test_cli.py`` checks that
both give the same names and help.
"""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

__all__ = ["OPT_IN", "builtin_names", "help_line", "listing"]

_HERE = Path(__file__).parent
#: The built-in detectors in the order scoring runs them and the report shows them; a folder
#: not named here comes after them, by name.
_ORDER = ("heads", "fourier", "text", "reasoning")
#: Detectors scored only when named (``--detectors llc``), so scoring with no detector named (the
#: command line's default, ``interp demo``) leaves them out: ``llc`` costs minutes per run;
#: ``circuit`` applies to induction runs only and its once-per-run search costs more than scoring
#: a checkpoint with ``heads`` (docs/scores.md, "Circuit over training").
OPT_IN = ("llc", "circuit")


def builtin_names() -> list[str]:
    """Names of the detector folders, in registry order, without importing them."""
    found = [m.name for m in pkgutil.iter_modules([str(_HERE)]) if m.ispkg]
    return sorted(found, key=lambda name: (name not in _ORDER, _ORDER.index(name) if name in _ORDER else 0, name))


def listing() -> dict[str, str | None]:
    """Detector name -> help, without importing any: the folders, then the plugins ("(plugin from DIST)")."""
    from interp.detectors.plugins import plugin_help

    builtin = {name: help_line(name) for name in builtin_names()}
    return {**builtin, **plugin_help(builtin)}


def help_line(name: str) -> str | None:
    """The ``help`` of detector folder ``name``, read from its source without importing it.

    Found in ``DETECTOR = Detector(..., help=...)`` of the folder's ``detector.py`` (or its
    ``__init__.py``). The help may be a string, a concatenation or an f-string of the module's
    literal constants (``EARLY, LATE = 50, 500``); None when it is anything else or not found.
    """
    for file in (_HERE / name / "detector.py", _HERE / name / "__init__.py"):
        try:
            tree = ast.parse(file.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, ValueError):
            continue
        constants = _literal_constants(tree)
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "DETECTOR"
                                                    for t in node.targets) and isinstance(node.value, ast.Call):
                for keyword in node.value.keywords:
                    if keyword.arg == "help":
                        value = _evaluate(keyword.value, constants)
                        return value if isinstance(value, str) else None
    return None


class _NotStatic(Exception):
    """An expression that is not built of the module's literal constants."""


def _literal_constants(tree: ast.Module) -> dict[str, object]:
    """Module-level ``NAME = literal`` and ``A, B = literal, literal`` assignments."""
    constants: dict[str, object] = {}
    for node in tree.body:
        if not isinstance(node, ast.Assign):
            continue
        try:
            value = ast.literal_eval(node.value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue
        for target in node.targets:
            if isinstance(target, ast.Name):
                constants[target.id] = value
            elif (isinstance(target, ast.Tuple) and isinstance(value, tuple) and len(value) == len(target.elts)
                  and all(isinstance(e, ast.Name) for e in target.elts)):
                constants.update({e.id: v for e, v in zip(target.elts, value)})
    return constants


def _evaluate(node: ast.expr, constants: dict[str, object]) -> object:
    try:
        return _static(node, constants)
    except _NotStatic:
        return None


def _static(node: ast.expr, constants: dict[str, object]) -> object:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in constants:
        return constants[node.id]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _static(node.left, constants), _static(node.right, constants)
        if isinstance(left, str) and isinstance(right, str):
            return left + right
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.FormattedValue):
                if value.conversion != -1 or value.format_spec is not None:
                    raise _NotStatic
                parts.append(str(_static(value.value, constants)))
            else:
                parts.append(str(_static(value, constants)))
        return "".join(parts)
    raise _NotStatic
