"""What the ``circuit`` detector fixes and how its rows read: the constants, the contrast, the
circuit search on one checkpoint, the edge metrics, and one run's rows as curves (``detector.py``
has the definitions)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
from transformer_lens import HookedTransformer

__all__ = ["EDGE_PREFIX", "METHOD", "METRICS", "MIN_GAP", "MIN_HALF_LEN", "N_SEQS", "TARGET", "circuit_rows",
           "contrast", "edge_metric", "find_run_circuit", "parse_edge_metric"]

METRICS = ("faithfulness", "clean_loss", "corrupted_loss", "circuit_loss", "circuit_size")
EDGE_PREFIX = "edge:"
METHOD = "eap-ig"
TARGET = 0.9
N_SEQS = 16
#: Least gap (nats) between the corrupted and clean second-copy loss for a model to count as doing induction.
MIN_GAP = 0.5
#: Shortest probe half; ``n_ctx >= 2 * MIN_HALF_LEN + 1``.
MIN_HALF_LEN = 4


def edge_metric(source: str, target: str, kind: str) -> str:
    """The ``metric`` of an edge row: ``edge:L0H2->L1H1.k``, ``edge:L1H1->logits``."""
    return f"{EDGE_PREFIX}{source}->{target}{'.' + kind if kind else ''}"


def parse_edge_metric(metric: str) -> tuple[str, str, str]:
    """``(source, target, input)`` of an edge row's metric (:func:`edge_metric`); ValueError otherwise."""
    if not metric.startswith(EDGE_PREFIX) or "->" not in metric:
        raise ValueError(f"not an edge metric: {metric!r}")
    source, _, rest = metric[len(EDGE_PREFIX):].partition("->")
    target, _, kind = rest.partition(".")
    return source, target, kind


def contrast(model: HookedTransformer) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """The detector's clean and corrupted tokens and metric (:func:`circuits.induction_contrast`)."""
    from circuits import induction_contrast

    return induction_contrast(model, N_SEQS)


def find_run_circuit(model: HookedTransformer) -> Any:
    """:func:`circuits.smallest_circuit` on the detector's contrast (``circuits.FoundCircuit``)."""
    from circuits import one_thread, smallest_circuit

    clean, corrupted, metric = contrast(model)
    with one_thread():
        return smallest_circuit(model, clean, corrupted, metric, method=METHOD, target=TARGET)


def circuit_rows(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(curves, edges)`` of one run's ``circuit`` rows: ``curves`` has ``step`` and one column per
    metric of :data:`METRICS`; ``edges`` has ``step, source, target, input, score``, one row per
    edge and step."""
    from interp.detectors._curves import metric_curves

    rows = rows[rows["detector"] == "circuit"].dropna(subset=["step"])  # the report gives a step-less file step 0
    curves = metric_curves(rows, "circuit", METRICS).reindex(columns=["step", *METRICS])  # a metric never written: NaN
    edge_rows = rows[rows["metric"].str.startswith(EDGE_PREFIX)]
    parsed = [parse_edge_metric(m) for m in edge_rows["metric"]]
    edges = pd.DataFrame({"step": edge_rows["step"].astype("int64").to_numpy(),
                          "source": [p[0] for p in parsed], "target": [p[1] for p in parsed],
                          "input": [p[2] for p in parsed], "score": edge_rows["value"].astype(float).to_numpy()})
    return curves, edges.sort_values(["step", "score"], ascending=[True, False], ignore_index=True)
