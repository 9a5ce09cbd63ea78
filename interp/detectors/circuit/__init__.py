"""The ``circuit`` detector: the induction circuit of a run's final checkpoint (edge attribution, eap-ig),
its edges' scores and its faithfulness at every checkpoint.

Its parts: ``detector.py`` (the contrast, the once-per-run circuit, rows, ``inspect`` text),
``figures.py`` (the circuit as a graph, the faithfulness curve, the circuit over training) and
``report.py`` (the report section). Opt-in (``catalog.OPT_IN``): scored only when named.
"""

from interp.detectors.circuit.detector import DETECTOR

__all__ = ["DETECTOR"]
