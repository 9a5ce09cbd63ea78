"""The ``llc`` detector: local learning coefficient of each checkpoint (whole model and per head), via devinterp.

Its parts: ``estimate.py`` (:func:`estimate_llc`, the one estimation path, on devinterp's SGLD),
``calibrate.py`` (the per-run choice of step size, localisation and inverse temperature) and
``detector.py`` (run data, options, rows, ``inspect`` text, report section). devinterp is imported
only when the detector runs (``pip install "interp-circuits[llc]"``).
"""

from interp.detectors.llc.detector import DETECTOR

__all__ = ["DETECTOR"]
