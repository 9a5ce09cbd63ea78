"""interp demo: train both, score, report; a second run resumes."""

from __future__ import annotations

import pandas as pd
import pytest

from interp.cli import main
from interp.score_table import read_table


@pytest.mark.slow
def test_demo_on_reduced_settings(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps-scale", "0.02", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"report: {(out / 'report.html').resolve()}" in printed
    table = read_table(out / "scores.parquet")
    assert set(table["detector"]) == {"heads", "fourier"}
    assert "plotly" in (out / "report.html").read_text()[:5_000_000].lower()
    # a second run resumes: nothing to train or score again
    assert main(["demo", "--out", str(out), "--steps-scale", "0.02", "--quiet"]) == 0
    pd.testing.assert_frame_equal(read_table(out / "scores.parquet"), table)
