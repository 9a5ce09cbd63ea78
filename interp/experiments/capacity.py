"""Capacity from a memorisation cell table: each model's plateau and the fitted bits per parameter.

Definitions in :mod:`interp.experiments.memorization` ("Capacity", "Bits per parameter") and
``docs/scores.md``; the memorisation page and ``interp memorization`` read them from here.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["capacity_table", "fit_bits_per_parameter"]


def capacity_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Per model: capacity (the largest total memorised bits over its data sets) and bits/parameter.

    ``saturated`` is True when that largest cell stopped on a plateau short of memorising its
    whole data set, so the capacity is measured rather than bounded below by the data.
    """
    ok = cells[cells["stopped_by"] != "error"]
    out = []
    for (model, params), group in ok.groupby(["model", "params"], sort=False):
        best = group.loc[group["memorized_bits"].idxmax()]
        out.append({
            "model": model, "d_model": int(best["d_model"]), "n_layers": int(best["n_layers"]), "params": int(params),
            "capacity_bits": float(best["memorized_bits"]), "bits_per_parameter": float(best["memorized_bits"]) / params,
            "at_n_sequences": int(best["n_sequences"]),
            "saturated": bool(best["stopped_by"] == "plateau"),
        })
    columns = ["model", "d_model", "n_layers", "params", "capacity_bits", "bits_per_parameter", "at_n_sequences",
               "saturated"]
    return pd.DataFrame(out, columns=columns).sort_values("params", ignore_index=True)


def fit_bits_per_parameter(capacity: pd.DataFrame) -> float:
    """Least-squares slope of capacity on parameters through the origin, saturated models only.

    ``nan`` when no model is saturated.
    """
    fit = capacity[capacity["saturated"]]
    if fit.empty:
        return math.nan
    p = fit["params"].to_numpy(dtype=float)
    c = fit["capacity_bits"].to_numpy(dtype=float)
    return float(np.dot(p, c) / np.dot(p, p))
