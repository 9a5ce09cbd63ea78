"""The ``heads`` detector: previous-token, prefix-matching, copying and OV-copying scores of every head.

Its parts: ``detector.py`` (context, scoring, ``inspect`` text, report section), ``figures.py``
and ``flags.py`` (each head's flag read back from the rows, for other detectors' reports).
"""

from interp.detectors.heads.detector import DETECTOR

__all__ = ["DETECTOR"]
