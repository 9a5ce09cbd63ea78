"""Reading the experiment tables back (``cells.csv`` of ``interp memorization``, ``runs.csv`` of
``interp sweep``): what a hand edit or a cut-short file can leave in them.

A whole-number column holding text, infinity or a number past 2**53 is refused in one line naming
the file, the row and the column (they were tracebacks from deep inside pandas). A row that lacks
what every finished row has (a row cut short) is made an error row, so the page shows it as
failed and the next job trains its cell again, instead of showing its half as a result.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

__all__ = ["CUT_SHORT", "checked_whole_numbers", "incomplete_rows"]

#: The error of a row :func:`incomplete_rows` finds (``{}``: the table's file name).
CUT_SHORT = "the row in {} lacks values (cut short?): the cell is trained again"

#: Whole numbers of a table are read exactly up to here (as the scores table's are).
_LARGEST = 2 ** 53


def checked_whole_numbers(table: pd.DataFrame, columns: Sequence[str], path: str | Path) -> None:
    """``ValueError`` naming the first cell of ``columns`` that holds a value but no whole number below 2**53."""
    for column in columns:
        if column not in table:
            continue
        raw = table[column]
        values = pd.to_numeric(raw, errors="coerce")
        given = raw.notna() & (raw.astype(str).str.strip() != "")
        whole = values.notna() & (values.abs() < _LARGEST) & (values.fillna(0) % 1 == 0)
        bad = given & ~whole
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise ValueError(f"{path}: row {row + 2}, column {column}: {str(raw.iloc[row])!r} is not a whole number "
                             "below 2**53; fix or delete the row")


def incomplete_rows(table: pd.DataFrame, finished: pd.Series, required: Sequence[str]) -> pd.Series:
    """The rows counted as ``finished`` that lack a value of ``required`` (each finished row has them all)."""
    missing = pd.Series(False, index=table.index)
    for column in required:
        values = table[column] if column in table else pd.Series(pd.NA, index=table.index)
        missing |= values.isna() | (values.astype(str).str.strip() == "")
    return finished & missing
