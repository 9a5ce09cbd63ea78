"""The ``heads`` detector: previous-token, prefix-matching, copying and OV-copying scores of every head.

Its parts: ``detector.py`` (context, scoring, ``inspect`` text, report section) and ``figures.py``.
"""

from interp.detectors.heads.detector import DETECTOR

__all__ = ["DETECTOR"]
