"""Every notebook in notebooks/ runs top to bottom without error (nbclient), on the runs trained here.

The notebooks train their own models when run by hand; here they get the session's trained runs
through ``INTERP_INDUCTION_RUN`` / ``INTERP_MODADD_RUN`` so the suite trains each model once.
They run in a temporary directory, so whatever they write stays out of the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
#: Text each notebook must print: its findings, not just the absence of errors.
EXPECTED = {
    "01_induction_heads.ipynb": [r"induction head +L1H\d: prefix matching 0\.[89]\d", r"K-composition L0H\d -> L1H\d"],
    "02_grokking_fourier.ipynb": [r"key frequencies: \[3, 6, 23, 39\]", r"test accuracy 99 % at epoch \d+"],
    "03_scoring_checkpoints.ipynb": [r"the same as in Python: True", r"0 failed"],
}

#: Notebooks that read the published grokking model (tests/conftest.py: published_path).
NEEDS_PUBLISHED = {"02_grokking_fourier.ipynb"}


def test_every_notebook_is_listed_and_committed_without_outputs():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(EXPECTED)
    for name in EXPECTED:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), name


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs(name, induction_run, modadd_run, tmp_path, monkeypatch, request):
    monkeypatch.setenv("INTERP_INDUCTION_RUN", str(induction_run))
    monkeypatch.setenv("INTERP_MODADD_RUN", str(modadd_run))
    if name in NEEDS_PUBLISHED:  # skips, with the reason, where ../shared/data/ is absent
        monkeypatch.setenv("INTERP_PUBLISHED_MODEL", str(request.getfixturevalue("published_path")))
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "\n".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    for pattern in EXPECTED[name]:
        assert re.search(pattern, text), f"{name}: no output matches {pattern!r}"
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert figures, f"{name}: no plotly figure"
    # figures are mime bundles, drawn by the plotly extension that ships with the plotly package:
    # nothing in the notebook loads a script from the network
    html = "\n".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert not re.search(r"<script[^>]+src=[\"']?https?:", html)
