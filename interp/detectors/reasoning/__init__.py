"""The ``reasoning`` detector: ID and OOD generalisation of a composition or comparison run.

Its parts: ``detector.py`` (context, scoring, ``inspect`` text, report section) and ``figures.py``.
"""

from interp.detectors.reasoning.detector import DETECTOR

__all__ = ["DETECTOR"]
