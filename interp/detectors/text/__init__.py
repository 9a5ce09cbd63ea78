"""The ``text`` detector: in-context learning score and held-out loss of a byte-level text model.

Its parts: ``detector.py`` (context, scoring, ``inspect`` text, report section) and ``figures.py``.
"""

from interp.detectors.text.detector import DETECTOR

__all__ = ["DETECTOR"]
