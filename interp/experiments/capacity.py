"""Capacity from a memorisation cell table: each model's plateau and the fitted bits per parameter.

Definitions in :mod:`interp.experiments.memorization` ("Capacity", "Bits per parameter") and
``docs/scores.md``; the memorisation page and ``interp memorization`` read them from here.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["SETTING", "capacity_table", "fit_bits_per_parameter"]

#: The columns of one model's curve: cells that differ in any are other models (another sequence
#: length or vocabulary changes the parameters and the data's entropy; another seed or budget is
#: another training). One folder may hold several side by side.
SETTING = ("model", "params", "seq_len", "vocab", "seed", "max_steps", "plateau_window")


def capacity_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Per model (per :data:`SETTING`): capacity (the largest total memorised bits over its data
    sets) and bits/parameter; cells without a finite number of bits (errors) are left out.

    ``saturated`` is True when that largest cell stopped on a plateau short of memorising its
    whole data set, so the capacity is measured rather than bounded below by the data. ``label``
    is ``model``, and when the cells hold several settings, what tells them apart (``1L-d8, seed 1``).
    """
    ok = cells[(cells["stopped_by"] != "error") & np.isfinite(pd.to_numeric(cells["memorized_bits"], errors="coerce"))]
    keys = [c for c in SETTING if c in ok]
    varying = [c for c in keys[2:] if ok[c].nunique() > 1]
    out = []
    for values, group in ok.groupby(keys, sort=False):
        setting = dict(zip(keys, values))
        best = group.loc[group["memorized_bits"].idxmax()]
        params = int(setting["params"])
        out.append({
            **setting, "label": setting["model"] + "".join(f", {c.replace('_', ' ')} {setting[c]}" for c in varying),
            "d_model": int(best["d_model"]), "n_layers": int(best["n_layers"]), "params": params,
            "capacity_bits": float(best["memorized_bits"]), "bits_per_parameter": float(best["memorized_bits"]) / params,
            "at_n_sequences": int(best["n_sequences"]),
            "saturated": bool(best["stopped_by"] == "plateau"),
        })
    columns = ["model", "d_model", "n_layers", "params", "capacity_bits", "bits_per_parameter", "at_n_sequences",
               "saturated", *keys[2:], "label"]
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
