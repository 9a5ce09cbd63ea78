"""interp.report: the self-contained HTML page built from the detectors' sections."""

from __future__ import annotations

import re

import pandas as pd

from interp.cli import main
from interp.detectors.fourier import fourier_measures
from interp.detectors.heads import final_heads
from interp.report import build_report
from interp.score_table import canonical
from interp.scoring import score_checkpoints
from test_phase import STEPS, sigmoid_curve


def synthetic_heads_table(centre: int = 310) -> pd.DataFrame:
    """A heads table whose best prefix-matching head (L1H2) rises around ``centre``."""
    best = sigmoid_curve(centre, noise=0.0)
    rows = []
    for i, step in enumerate(STEPS):
        for layer in (0, 1):
            for head in range(2):
                induction = (layer, head) == (1, 1)
                for metric in ("previous_token", "prefix_matching", "copying", "ov_copying",
                               "is_previous_token", "is_induction"):
                    value = {"prefix_matching": best[i] if induction else 0.05,
                             "is_induction": float(induction and best[i] > 0.4)}.get(metric, 0.1)
                    rows.append({"run": "/runs/ind", "checkpoint": f"step_{step:06d}.safetensors", "step": step,
                                 "detector": "heads", "layer": layer, "head": head, "metric": metric, "value": value})
    return canonical(rows)


def test_report_is_self_contained_and_marks_the_phase_change():
    page = build_report(synthetic_heads_table(310))
    assert page.count("<script") >= 2 and not re.search(r"<script[^>]+src=[\"']?https?:", page)
    assert len(re.findall(r"plotly\.js v\d", page)) == 1  # the plotly.js bundle is inlined, once
    assert len(page) > 1_000_000
    step = int(re.search(r"data-phase-change-step='(\d+)'", page).group(1))
    assert 275 <= step <= 325 and f"phase change ~ step {step}" in page
    assert "Heads at the final checkpoint (step 1000)" in page


def test_final_heads_table():
    heads = final_heads(synthetic_heads_table())
    assert list(heads[["layer", "head"]].itertuples(index=False, name=None)) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert heads.loc[heads["is_induction"], ["layer", "head"]].values.tolist() == [[1, 1]]


def test_report_of_scored_runs_with_fourier_phases(tiny_runs, tmp_path):
    ind, mod = tiny_runs
    table = score_checkpoints([ind, mod])
    measures = fourier_measures(table[table["run"] == str(mod.resolve())])
    assert {"step", "train_loss", "test_accuracy", "restricted_loss", "weight_norm"} <= set(measures.columns)
    assert len(measures) == table.loc[table["detector"] == "fourier", "step"].nunique()
    table_path = tmp_path / "scores.parquet"
    assert main(["score", str(ind), str(mod), "--out", str(table_path), "--quiet"]) == 0
    html_path = tmp_path / "report.html"
    assert main(["report", str(table_path), "--out", str(html_path), "--quiet"]) == 0
    page = html_path.read_text()
    assert "Progress measures of grokking" in page and "Grokking phases" in page and "head scores" in page
    assert not re.search(r"<script[^>]+src=[\"']?https?:", page)
