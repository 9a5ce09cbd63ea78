"""The scores table's canonical form: the same frame from row dicts as from a frame, in any order."""

import math
import random

import pandas as pd
import pytest

from interp.scoring.table import COLUMNS, canonical


def _rows() -> list[dict]:
    rows = []
    for run in ("/runs/b", "/runs/a"):
        for step in (200, 0, None, 30):
            name = f"step_{step}.safetensors" if step is not None else "final.safetensors"
            base = {"run": run, "checkpoint": name, "step": step, "fingerprint": f"f{step}"}
            for layer in (1, 0):
                for head in (2, 0, 1):
                    for metric in ("prefix_matching", "copying"):
                        rows.append({**base, "detector": "heads", "layer": layer, "head": head, "metric": metric,
                                     "value": random.random(), "error": ""})
            rows.append({**base, "detector": "fourier", "layer": None, "head": None, "metric": "restricted_loss",
                         "value": -math.inf if step == 30 else 0.5})
            rows.append({**base, "detector": "fourier", "layer": None, "head": 3, "metric": "key_frequency",
                         "value": float("nan")})
        # Equal keys but the value: NaN first, then by value. (Not -inf: pandas's multi-key sort ties it
        # with NaN, keeping the input order.)
        for value in (0.25, float("nan"), -1.0):
            rows.append({"run": run, "checkpoint": "x.safetensors", "step": 5, "detector": "fourier",
                         "layer": None, "head": None, "metric": "loss", "value": value})
        rows.append({"run": run, "checkpoint": "broken.safetensors", "step": None, "detector": "load",
                     "metric": "error", "value": float("nan"), "error": "not a checkpoint"})  # no fingerprint
    return rows


def test_row_dicts_and_frames_give_the_same_table():
    random.seed(0)
    rows = _rows()
    for _ in range(3):
        random.shuffle(rows)
        from_rows = canonical(rows)
        from_frame = canonical(pd.DataFrame(rows))
        pd.testing.assert_frame_equal(from_rows, from_frame)
    assert list(from_rows.columns) == COLUMNS and len(from_rows) == len(rows)
    assert from_rows["run"].iloc[0] == "/runs/a" and pd.isna(from_rows["step"].iloc[0])  # missing step first
    assert (from_rows.loc[from_rows["checkpoint"] == "broken.safetensors", "fingerprint"] == "").all()
    heads = from_rows[(from_rows["run"] == "/runs/a") & (from_rows["step"] == 0) & (from_rows["detector"] == "heads")]
    assert list(heads["metric"].iloc[:6]) == ["copying"] * 6 and list(heads["layer"].iloc[:3]) == [0, 0, 0]
    assert list(heads["head"].iloc[:3]) == [0, 1, 2]
    values = from_rows.loc[(from_rows["run"] == "/runs/a") & (from_rows["metric"] == "loss"), "value"]
    assert math.isnan(values.iloc[0]) and list(values.iloc[1:]) == [-1.0, 0.25]


def test_text_columns_that_look_like_numbers_read_back_as_text(tmp_path):
    # A digest or fingerprint of digits ("0123", "12e45") must not come back as a number from a CSV.
    from interp.scoring.table import read_table, write_table

    # So must a name: Hugging Face directories 007 and 010 scored as models of their own came back as
    # checkpoints 7 and 10, never matched their files again, and were scored anew on every run.
    rows = [{"run": "007", "checkpoint": checkpoint, "step": i, "detector": "1", "metric": "2e3",
             "value": 1.0, "fingerprint": "0123", "context": context}
            for i, (checkpoint, context) in enumerate([("007", "0123"), ("010", "12e45")])]
    for suffix in (".csv", ".parquet"):
        write_table(canonical(rows), tmp_path / f"t{suffix}")
        table = read_table(tmp_path / f"t{suffix}")
        assert list(table["context"]) == ["0123", "12e45"] and set(table["fingerprint"]) == {"0123"}
        assert list(table["checkpoint"]) == ["007", "010"] and set(table["run"]) == {"007"}
        assert set(table["detector"]) == {"1"} and set(table["metric"]) == {"2e3"}


@pytest.mark.parametrize("column, text, why", [("layer", "1.5", "'1.5' is not an integer"),
                                               ("step", "x", "'x' is not an integer"),
                                               ("value", "abc", "'abc' is not a number"),
                                               # an OverflowError traceback; a float's rounding without a word
                                               ("step", str(10 ** 20), f"'{10 ** 20}' is not an integer below 2\\*\\*53"),
                                               ("head", "9007199254740993", "'9007199254740993' is not an integer")])
def test_a_table_edited_into_other_types_is_one_line_naming_the_file(tmp_path, column, text, why):
    from interp.scoring.table import read_table, write_table

    rows = [{"run": "/r", "checkpoint": f"step_{i}.safetensors", "step": i, "detector": "heads", "layer": 0,
             "head": 0, "metric": "m", "value": 1.0} for i in range(3)]
    path = tmp_path / "t.csv"
    write_table(canonical(rows), path)
    edited = pd.read_csv(path, dtype=str, keep_default_na=False)
    edited.loc[1, column] = text  # by hand, or in a spreadsheet: a pandas traceback before
    edited.to_csv(path, index=False)
    with pytest.raises(ValueError, match=f"t.csv: not a scores table \\(column {column}, row 2: {why}"):
        read_table(path)


def test_a_special_file_is_not_taken_for_a_missing_table(tmp_path):
    import os

    from interp.scoring.table import read_table

    fifo = tmp_path / "scores.csv"
    os.mkfifo(fifo)  # "no such table" for a path that exists
    with pytest.raises(ValueError, match="is not a regular file, not a table file"):
        read_table(fifo)
