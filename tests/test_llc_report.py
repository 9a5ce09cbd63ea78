"""The llc detector's report section: the LLC band, the other detectors' phases, the heads by flag.

On made-up tables (no SGLD run: the section draws what the table holds, so every number the
figure and the page show is known here): a heads table whose induction head forms around step
310 with an LLC rising there, and a modular-addition table with three grokking phases.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from interp.detectors.heads.flags import head_kinds
from interp.detectors.llc.figures import FLAG_COLOURS, llc_curve, plot_llc
from interp.detectors.llc.report import located_phases
from interp.report import build_report
from interp.cli import main
from interp.scoring.table import canonical, write_table
from test_phase import STEPS
from test_report import synthetic_heads_table

#: Heads of synthetic_heads_table: L1H1 rises in prefix matching (flagged induction from ~step 310).
PREVIOUS = (0, 1)


def llc_rows(run: str = "/runs/ind", heads: bool = True) -> list[dict]:
    """LLC rising from 10 to 30 around step 310 (std 1 + 5 % of it), per-head curves, one setting."""
    rows = []
    for step in STEPS:
        value = 10 + 20 / (1 + np.exp(-(step - 310) / 25))
        base = {"run": run, "checkpoint": f"step_{step:06d}.safetensors", "step": step, "detector": "llc"}
        for metric, v in (("llc", value), ("llc_std", 1 + 0.05 * value), ("llc_epsilon", 3e-3), ("llc_gamma", 100.0),
                          ("llc_nbeta", 5.77)):
            rows.append({**base, "metric": metric, "value": v})
        for layer in (0, 1) if heads else ():
            for head in range(2):
                rows.append({**base, "layer": layer, "head": head, "metric": "llc_head",
                             "value": value / 4 + 10 * layer + head})
                rows.append({**base, "layer": layer, "head": head, "metric": "llc_head_std", "value": 0.5})
    return rows


def _table() -> pd.DataFrame:
    heads = synthetic_heads_table(310)
    flag = (heads["metric"] == "is_previous_token") & (heads["layer"] == PREVIOUS[0]) & (heads["head"] == PREVIOUS[1])
    heads.loc[flag, "value"] = 1.0  # L0H1 a previous-token head
    return canonical([*heads.to_dict("records"), *llc_rows()])


def test_figure_has_the_band_the_phase_change_and_the_flag_colours():
    table = _table()
    curve, flags = llc_curve(table), head_kinds(table)
    assert flags == {(0, 0): "other", (0, 1): "previous-token head", (1, 0): "other", (1, 1): "induction head"}
    marks = located_phases(table)
    assert marks["grokking"] is None and marks["icl_change"] is None
    change = marks["phase_change"]
    assert change.start_step <= 310 <= change.end_step
    from interp.detectors.llc.figures import head_llc_curves

    fig = plot_llc(curve, head_llc_curves(table), flags, **marks)
    band, line, *heads = fig.data
    assert band.fill == "toself" and len(band.x) == 2 * len(STEPS)
    at = STEPS.index(300)  # the band is mean +- std at each step: 10 + 20 s(-0.4) +- (1 + 0.05 value)
    value = 10 + 20 / (1 + np.exp(10 / 25))
    assert line.y[at] == pytest.approx(value)
    assert band.y[at] == pytest.approx(value + 1 + 0.05 * value)
    assert band.y[2 * len(STEPS) - 1 - at] == pytest.approx(value - 1 - 0.05 * value)
    colours = {trace.name: trace.line.color for trace in heads}
    assert colours == {"L0H0 (other)": FLAG_COLOURS["other"], "L0H1 (previous-token head)": FLAG_COLOURS[
        "previous-token head"], "L1H0 (other)": FLAG_COLOURS["other"], "L1H1 (induction head)": FLAG_COLOURS[
        "induction head"]}
    assert heads[3].y[-1] == pytest.approx(30 / 4 + 11, rel=1e-3) and heads[3].xaxis == "x2"
    dashed = [s for s in fig.layout.shapes if s.type == "line" and s.line.dash == "dash"]
    assert [s.x0 for s in dashed] == [change.step, change.step]  # both panels
    assert f"induction phase change ~ step {change.step}" in [a.text for a in fig.layout.annotations]


def test_interp_report_has_the_llc_section_with_its_figure_and_sentence(tmp_path):
    write_table(_table(), tmp_path / "scores.parquet")
    assert main(["report", str(tmp_path / "scores.parquet"), "--out", str(tmp_path / "r.html"), "--quiet"]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "local learning coefficient" in page
    sentence = re.search(r"<p class='llc'>(.*?)</p>", page).group(1)
    assert "epsilon=0.003, gamma=100, nbeta=5.77, one setting" in sentence  # no llc_plateau row: nothing said
    assert "highest 30.00 at step 1000" in sentence and "Induction phase change (heads) at step" in sentence
    rise = re.search(r"Where the LLC changes \(steepest rise and fall of the curve smoothed over 3 checkpoints\): "
                     r"rise between steps "
                     r"(\d+) and (\d+); the nearest lies (\d+) % of the run from the induction phase change", sentence)
    assert rise and int(rise.group(1)) <= 310 <= int(rise.group(2)) and int(rise.group(3)) <= 5, sentence
    assert f"refined LLC from step {STEPS[0]} to step 1000: " in sentence  # every head rises by (30 - 10) / 4
    assert "L1H1 +5.00 (induction head)" in sentence and "L0H1 +5.00 (previous-token head)" in sentence
    assert re.search(r"L1H1 18\.50 \(induction head\)", page)  # the final heads' LLC, largest first
    assert page.index("L1H1 18.50") < page.index("L1H0 17.50") < page.index("L0H1 8.50")
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page, re.DOTALL)
    llc_caption = [c for c in captions if "LLC" in c]
    assert len(llc_caption) == 1 and "induction phase change" in llc_caption[0] and "red induction" in llc_caption[0]


def test_grokking_phases_are_shaded_on_a_modadd_table():
    """Fourier model rows whose losses follow memorisation, circuit formation and cleanup."""
    steps = [0, 100, 200, 300, 400, 500, 600, 800, 1000]
    train = [4.7, 0.5, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01]
    test = [4.7, 6.0, 7.0, 6.5, 5.0, 1.0, 0.02, 0.01, 0.01]
    restricted = [4.7, 4.7, 4.0, 1.0, 0.2, 0.1, 0.01, 0.01, 0.01]
    test_acc = [0.01, 0.01, 0.01, 0.02, 0.2, 0.6, 0.995, 1.0, 1.0]
    norm = [100, 150, 160, 155, 150, 120, 80, 70, 70]
    rows = []
    for i, step in enumerate(steps):
        base = {"run": "/runs/mod", "checkpoint": f"step_{step:06d}.safetensors", "step": step}
        for metric, v in (("train_loss", train[i]), ("test_loss", test[i]), ("restricted_loss", restricted[i]),
                          ("train_accuracy", 1.0 if train[i] < 0.05 else 0.5), ("test_accuracy", test_acc[i]),
                          ("excluded_loss", 5.0), ("weight_norm", norm[i])):
            rows.append({**base, "detector": "fourier", "metric": metric, "value": v})
    rows += [{**r, "run": "/runs/mod"} for r in llc_rows("/runs/mod", heads=False) if r["step"] in steps]
    table = canonical(rows)
    from circuits import grokking_phases
    from interp.detectors.llc.figures import grokking_measures

    phases = grokking_phases(grokking_measures(table))
    assert (phases.memorization_end, phases.circuit_formation_end) == (200, 400)
    marks = located_phases(table)
    assert marks["grokking"] == phases and marks["phase_change"] is None
    fig = plot_llc(llc_curve(table), **marks)
    rects = [(s.x0, s.x1) for s in fig.layout.shapes if s.type == "rect"]
    assert phases.cleanup_end == 800 and rects == [(0, 200), (200, 400), (400, 800)]
    assert [a.text for a in fig.layout.annotations][1:] == ["memorisation", "circuit formation", "cleanup"]
    page = build_report(table)
    assert "Grokking phases (fourier): memorisation to step 200, circuit formation to step 400" in page
    # without a train/test split the column is NaN, not gone: the phases say so, not "lack columns"
    no_split = table.assign(value=table["value"].where(table["metric"] != "test_accuracy"))
    with pytest.raises(ValueError, match="needs measures with a train/test split"):
        grokking_phases(grokking_measures(no_split))


def test_a_flat_curve_has_no_change_point_and_heads_at_one_step_no_ranking():
    from interp.detectors.llc.report import _changes, _head_changes

    flat = pd.DataFrame({"step": STEPS, "llc": [5.0] * len(STEPS), "llc_std": [0.1] * len(STEPS)})
    marks = {"phase_change": None, "grokking": None, "icl_change": None}
    assert _changes(flat, marks) == " The LLC curve has no change point (no segment stands out of its smoothed range)."
    one_step = pd.DataFrame({"step": [400, 400], "layer": [0, 1], "head": [0, 0], "llc_head": [1.0, 2.0]})
    assert _head_changes(one_step, {}) == ""


@pytest.mark.parametrize("plateau, said", [(1.0, False), (float("nan"), False), (0.0, True)])
def test_a_setting_without_a_plateau_is_said(plateau, said):
    from interp.detectors.llc.report import report

    rows = llc_rows(heads=False)
    rows += [{**row, "metric": "llc_plateau", "value": plateau} for row in rows if row["metric"] == "llc"]
    sentence = report(canonical(rows))[0]
    assert ("no plateau over step sizes: the values depend on the step size" in sentence) == said, sentence


def test_a_table_without_the_chains_spread_says_no_nan():
    from interp.detectors.llc.report import report

    rows = [row for row in llc_rows(heads=False) if row["metric"] != "llc_std"]
    sentence = report(canonical(rows))[0]
    assert "nan" not in sentence and re.search(r"30\.00 at step 1000\.", sentence), sentence
