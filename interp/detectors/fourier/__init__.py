"""The ``fourier`` detector: progress measures and key frequencies of a modular-addition model.

Its parts: ``detector.py`` (context, scoring, ``inspect`` text, report section) and ``figures.py``.
"""

from interp.detectors.fourier.detector import DETECTOR

__all__ = ["DETECTOR"]
