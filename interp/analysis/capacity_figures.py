"""The capacity figures (bits per parameter) and where each comes from: constants only.

:mod:`interp.analysis.split_memorization` uses them; they live apart so that ``interp --help``
can show the default figure without importing numpy.
"""

from __future__ import annotations

__all__ = ["CAPACITY_SOURCES", "MAX_BITS_PER_PARAMETER", "MEASURED_BITS_PER_PARAMETER", "PAPER_BITS_PER_PARAMETER"]

#: ``interp memorization``'s fitted capacity (fp32, random sequences) of its default GPT-style
#: models (d_model 8-32, 2.2k-18k parameters), seed 0: the row "fitted capacity, bits per
#: parameter" of ``BENCHMARKS.md``, "Memorisation capacity" (written by
#: ``benchmarks/bench_memorization.py``). Seeds 0-2 give 2.44-2.49 (``BENCHMARKS.md``, "Capacity
#: convergence"). Until 2026-12-06 this was 2.37, a fit without d_model 32 that no benchmark
#: printed; ``docs/data/sweep_modadd_seed0.csv`` was computed with it (its ``bits_per_parameter``).
MEASURED_BITS_PER_PARAMETER = 2.44
#: Morris et al. 2025's headline capacity of GPT-style models (bits per parameter; 2.86-4.23 across
#: their fp32 configurations, the range ``BENCHMARKS.md`` compares with).
PAPER_BITS_PER_PARAMETER = 3.6
#: The largest figure a sweep takes: a parameter stores at most the bits of its number (a float64's
#: 64); a larger figure describes no model (and times a model's parameters overflows to infinity).
MAX_BITS_PER_PARAMETER = 64.0
#: Where each capacity figure comes from, for captions and legends.
CAPACITY_SOURCES = {
    MEASURED_BITS_PER_PARAMETER: "measured by interp memorization (BENCHMARKS.md)",
    PAPER_BITS_PER_PARAMETER: "Morris et al. 2025",
    2.37: "the toolkit's constant until 2026-12-06, which the stored sweep was summarised with",
}
