"""interp demo: train both, score, report; a second run resumes; its log and its report in headless Chromium."""

from __future__ import annotations

import io
import re
import shutil
from contextlib import redirect_stderr, redirect_stdout

import pandas as pd
import pytest
from chromium import inspect_page, problems

from interp.cli import main
from interp.scoring.table import read_table


@pytest.mark.slow
def test_demo_on_reduced_settings(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out-dir", str(out), "--steps-scale", "0.02", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"report: {(out / 'report.html').resolve()}" in printed
    table = read_table(out / "scores.parquet")
    assert set(table["detector"]) == {"heads", "fourier"}
    assert "plotly" in (out / "report.html").read_text()[:5_000_000].lower()
    # a second run resumes: nothing to train or score again
    assert main(["demo", "--out-dir", str(out), "--steps-scale", "0.02", "--quiet"]) == 0
    pd.testing.assert_frame_equal(read_table(out / "scores.parquet"), table)


@pytest.fixture(scope="module")
def demo(induction_run, modadd_run, tmp_path_factory):
    """``interp demo`` (not quiet) on copies of the session's default runs, so nothing is left to train.

    Returns the output directory, what it printed and what went to stderr (a file, not a terminal).
    """
    out = tmp_path_factory.mktemp("demo_full") / "demo"
    for task, run in (("induction", induction_run), ("modadd", modadd_run)):
        shutil.copytree(run, out / task)
    printed, log = io.StringIO(), io.StringIO()
    with redirect_stdout(printed), redirect_stderr(log):
        assert main(["demo", "--out-dir", str(out)]) == 0
    return out, printed.getvalue(), log.getvalue()


@pytest.mark.slow
def test_demo_log_stays_readable(demo):
    _, printed, log = demo
    assert "report:" in printed
    # three bars (train induction, train modadd, score 50+ checkpoints), each drawn when it opens,
    # when it closes and at most every few seconds between: not once per checkpoint
    assert log.count("score") >= 1 and log.count("\r") <= 12, log


@pytest.mark.slow
def test_demo_report_draws_every_figure_in_chromium(demo, tmp_path):
    out, _, _ = demo
    page = out / "report.html"
    assert page.stat().st_size < 8_000_000  # one offline file under 8 MB (BENCHMARKS.md)
    figures = inspect_page(page, tmp_path, screenshot=True)
    assert problems(figures) == []
    assert len(figures) == 7  # attention, heatmaps, head curves; spectrum, clusters, progress measures, memorised bits
    texts = [t for fig in figures for t in fig.texts]
    assert any(t.startswith("induction head L1H") for t in texts)  # a detected head, not a fallback
    assert any(re.fullmatch(r"k = \d+", t) for t in texts)  # key frequencies named on the spectrum
    assert figures[0].heatmaps == 2 and figures[1].heatmaps == 6  # two heads; 2 metrics x 3 checkpoints
