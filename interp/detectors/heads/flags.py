"""What the ``heads`` detector flags each head as, read back from its rows (for other detectors' reports)."""

from __future__ import annotations

import pandas as pd

__all__ = ["head_kinds"]


def head_kinds(rows: pd.DataFrame) -> dict[tuple[int, int], str]:
    """``(layer, head) -> kind`` at the last checkpoint the ``heads`` detector scored: ``"induction head"``
    (``is_induction``), else ``"previous-token head"`` (``is_previous_token``), else ``"other"``;
    empty without ``heads`` rows."""
    flags = rows[(rows["detector"] == "heads") & rows["metric"].isin(("is_previous_token", "is_induction"))
                 & rows["layer"].notna()].dropna(subset=["step", "value"])
    if flags.empty:
        return {}
    last = flags[flags["step"] == flags["step"].max()]
    kinds: dict[tuple[int, int], str] = {}
    for (layer, head), part in last.groupby(["layer", "head"]):
        on = set(part.loc[part["value"] > 0.5, "metric"])
        kinds[(int(layer), int(head))] = ("induction head" if "is_induction" in on else
                                          "previous-token head" if "is_previous_token" in on else "other")
    return kinds
