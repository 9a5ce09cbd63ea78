"""The ``llc`` detector's options: the ``INTERP_LLC`` option string (:mod:`.detector`'s docstring
lists the keys), read and checked before any work."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

from interp.detectors.llc.calibrate import CHECKS
from interp.detectors.llc.estimate import CHAIN_STRIDE, MAX_SEED

__all__ = ["ENV", "Options", "head_list", "parse_options", "settings"]

ENV = "INTERP_LLC"


@dataclasses.dataclass(frozen=True)
class Options:
    """What is scored (the ``INTERP_LLC`` option string; :mod:`.detector`'s docstring)."""

    heads: str = "final"  # final, all, none, or heads joined by '+': L0H1+L1H3
    chains: int = 2
    draws: int = 100
    burnin: int = 50
    seed: int = 0
    checks: int = CHECKS
    setting: tuple[float, float, float] | None = None  # epsilon, gamma, nbeta: no calibration


#: The whole-number keys and their ranges, [low, high] (None: no bound).
_WHOLE = {"chains": (1, CHAIN_STRIDE), "draws": (2, None), "burnin": (0, None), "seed": (0, MAX_SEED - 1),
          "checks": (0, None)}


def parse_options(text: str | None) -> Options:
    """:class:`Options` from ``key=value`` pairs joined by commas (spaces around either ignored);
    ``ValueError`` naming a bad one: an unknown key, a key given twice, a value out of its range."""
    values: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, _, value = (s.strip() for s in part.partition("="))
        try:
            if key in values:
                raise ValueError("given twice")
            if key in _WHOLE:
                values[key] = _whole(value, *_WHOLE[key])
            elif key == "setting":
                values[key] = _setting(value)
            elif key == "heads":
                values[key] = value
                if value not in ("final", "all", "none"):
                    head_list(value)
            else:
                raise ValueError("unknown key")
        except ValueError as exc:
            raise ValueError(f"{ENV}: cannot read {part!r} ({exc}); keys: heads=final|all|none|L0H1+..., "
                             "chains=N, draws=N, burnin=N, seed=N, checks=N, setting=EPSILON/GAMMA/NBETA") from None
    return Options(**values)


def settings() -> str:
    """``Detector.settings``: the options ``INTERP_LLC`` gives, "" for the defaults; ``ValueError``
    when it cannot be read (so ``interp score`` and ``inspect`` stop before any work)."""
    options = parse_options(os.environ.get(ENV))
    return "" if options == Options() else repr(options)


def _whole(text: str, low: int, high: int | None) -> int:
    number = int(text)
    if number < low or (high is not None and number > high):
        raise ValueError(f"must be >= {low}" if high is None else f"must be in [{low}, {high}]")
    return number


def _setting(text: str) -> tuple[float, float, float]:
    epsilon, gamma, nbeta = (float(v) for v in text.split("/"))
    if not (0 < epsilon < math.inf and 0 <= gamma < math.inf and 0 < nbeta < math.inf):
        raise ValueError("need finite EPSILON > 0, GAMMA >= 0, NBETA > 0")
    return epsilon, gamma, nbeta


def head_list(text: str) -> tuple[tuple[int, int], ...]:
    heads = []
    for item in text.upper().split("+"):
        layer, _, head = item.removeprefix("L").partition("H")
        if not (layer.isdigit() and head.isdigit()):  # L0H-1 is no head (devinterp's error, every row lost)
            raise ValueError(f"{item!r} is not a head L<layer>H<head>")
        heads.append((int(layer), int(head)))
    return tuple(dict.fromkeys(heads))  # a head named twice is estimated once
