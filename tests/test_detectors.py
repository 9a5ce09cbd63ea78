"""interp.detectors: the registry is all that scoring, the CLI, inspect and the report need."""

from __future__ import annotations

import pandas as pd
import pytest

from interp import load_model
from interp.cli import build_parser, main
from interp.detectors.registry import DETECTORS, Detector
from interp.inspection import inspect_checkpoint
from interp.report import build_report
from interp.runs.layout import list_checkpoints
from interp.scoring.table import read_table
from interp.scoring.batch import score_checkpoints


def test_each_detector_writes_exactly_its_metrics(tiny_runs):
    ind, mod = tiny_runs
    table = score_checkpoints([ind, mod])
    for name, detector in DETECTORS.items():
        written = set(table.loc[table["detector"] == name, "metric"])
        assert written <= set(detector.metrics), name
        # text needs a byte-level run (tests/test_text.py), reasoning a fact-task run (tests/test_reasoning_detector.py);
        # llc and circuit are opt-in (catalog.OPT_IN: scored only when named), their rows are tested in
        # tests/test_llc.py and tests/test_circuit_detector.py
        assert written or name in ("text", "reasoning", "llc", "circuit"), name
    assert not {"llc", "circuit"} & set(table["detector"])
    assert set(table.loc[table["detector"] == "heads", "metric"]) == set(DETECTORS["heads"].metrics)


def test_applies_gives_the_reason(tiny_runs):
    ind, mod = tiny_runs
    induction, modadd = load_model(ind), load_model(mod)
    assert DETECTORS["heads"].applies(induction) is None and DETECTORS["fourier"].applies(modadd) is None
    assert "n_ctx=3" in DETECTORS["heads"].applies(modadd)
    assert "one-layer" in DETECTORS["fourier"].applies(induction)
    # a context that fits the probe but a vocabulary of 3 ordinary ids: halves of 3 tokens
    from handbuilt_models import induction_circuit_model

    small = DETECTORS["heads"].applies(induction_circuit_model(vocab=4))
    assert small == "vocabulary too small for the repeated-token probe: halves of 3 tokens (needs >= 4)"


def _mean_weight_detector() -> Detector:
    """A detector written as one registry entry: the mean of the unembedding, and its size."""

    def score(model, scale):
        return [{"metric": "mean_w_u", "value": scale * float(model.W_U.detach().mean())}]

    return Detector(
        name="mean_wu",
        help="mean of W_U (a test detector)",
        metrics=("mean_w_u",),
        applies=lambda model: None,
        prepare=lambda model, run_dir: 2.0 if run_dir is not None else 1.0,
        score=score,
        summary=lambda model, run_dir: f"mean W_U: {float(model.W_U.detach().mean()):.6f}",
        report=lambda rows: [f"<p id='mean-wu'>{len(rows)} rows</p>"],
    )


def test_a_new_detector_is_one_entry(tiny_runs, tmp_path, monkeypatch, capsys):
    ind, _ = tiny_runs
    monkeypatch.setitem(DETECTORS, "mean_wu", _mean_weight_detector())
    assert "mean_wu" in build_parser().parse_args(["score", "x", "--out", "t.csv"]).detectors
    out = tmp_path / "t.csv"
    assert main(["score", str(ind), "--detectors", "mean_wu", "--out", str(out), "--quiet"]) == 0
    table = read_table(out)
    assert set(table["detector"]) == {"mean_wu"} and len(table) == len(list_checkpoints(ind))
    last = table.sort_values("step")["value"].iloc[-1]
    assert last == pytest.approx(2.0 * float(load_model(ind).W_U.detach().mean()))  # prepared with the run directory
    assert "mean W_U:" in inspect_checkpoint(ind)
    assert f"<p id='mean-wu'>{len(table)} rows</p>" in build_report(table)


def test_report_sections_skip_detectors_without_rows():
    table = pd.DataFrame({"run": ["/r"], "checkpoint": ["a.pt"], "step": [1], "detector": ["load"],
                          "layer": [None], "head": [None], "metric": ["error"], "value": [float("nan")],
                          "error": ["corrupt"]})
    page = build_report(table)
    assert ">Errors</h3>" in page and "corrupt" in page and "Progress measures" not in page


_FOLDER_DETECTOR = '''
from interp.detectors.spec import Detector

DETECTOR = Detector(
    name="n_layers", help="the number of layers, as a row", metrics=("n_layers",),
    applies=lambda model: None, prepare=lambda model, run_dir: None,
    score=lambda model, context: [{"metric": "n_layers", "value": float(model.cfg.n_layers)}],
    summary=lambda model, run_dir: f"n_layers: {model.cfg.n_layers}", report=lambda rows: [],
)
'''


@pytest.mark.slow  # a fresh interpreter that imports torch
def test_a_detector_is_added_by_adding_one_folder(tiny_runs, tmp_path):
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    shutil.copytree(root / "interp", tmp_path / "interp", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(root / "circuits", tmp_path / "circuits", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "interp" / "detectors" / "n_layers").mkdir()
    (tmp_path / "interp" / "detectors" / "n_layers" / "__init__.py").write_text(_FOLDER_DETECTOR)
    code = ("import sys; from interp.cli import main; from interp.scoring.table import read_table; "
            f"assert main(['score', {str(tiny_runs[0])!r}, '--detectors', 'n_layers', '--out', 't.csv', '--quiet']) == 0; "
            "t = read_table('t.csv'); print(sorted(set(t['value'])), list(__import__('interp').DETECTORS)[-1])")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(tmp_path), "PATH": ""})
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[2.0] n_layers"  # scored by the new folder, last in the registry
    help_text = subprocess.run([sys.executable, "-c", "from interp.cli import main; main(['score', '--help'])"],
                               cwd=tmp_path, capture_output=True, text=True, timeout=120,
                               env={"PYTHONPATH": str(tmp_path), "PATH": ""}).stdout
    assert "n_layers: the number of layers, as a row" in " ".join(help_text.split())  # argparse wraps the help
