"""The ``circuit`` detector: the induction circuit of a run's final checkpoint (edge attribution, eap-ig),
followed over every checkpoint: its loss beside the clean and corrupted ones, its faithfulness
(where the run shows induction) and its edges' scores.

Its parts: ``detector.py`` (the contrast, the once-per-run circuit, rows, ``inspect`` text),
``figures.py`` (the circuit as a graph, the faithfulness curve, the circuit over training) and
``report.py`` (the report section). Opt-in (``catalog.OPT_IN``): scored only when named.
"""

from interp.detectors.circuit.detector import DETECTOR

__all__ = ["DETECTOR"]
