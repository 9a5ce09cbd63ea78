"""Every notebook in notebooks/ runs top to bottom without error (nbclient), on the runs trained here,
and its nbconvert HTML export shows every figure in headless Chromium, offline.

The notebooks train their own models when run by hand; here they get the session's trained runs
through ``INTERP_INDUCTION_RUN`` / ``INTERP_MODADD_RUN`` so the suite trains each model once.
They run in a temporary directory, so whatever they write stays out of the repository; each is
executed once and shared by the two tests.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from chromium import inspect_page, problems
from conftest import PUBLISHED
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
#: Text each notebook must print: its findings, not just the absence of errors.
EXPECTED = {
    "01_induction_heads.ipynb": [r"induction head +L1H\d: prefix matching 0\.[89]\d", r"K-composition L0H\d -> L1H\d"],
    # the published model's line where ../shared/data/ holds it, else the notebook's note that it skips it
    "02_grokking_fourier.ipynb": [r"key frequencies: \[3, 6, 23, 39\]" if PUBLISHED.exists() else
                                  r"the published model is not at \S+: its sections are skipped",
                                  r"test accuracy 99 % at epoch \d+",
                                  r"peak memorised bits [\d,]+ at epoch \d+",
                                  r"sweep: 12 cells, 3 grokked; bits over capacity of the grokked cells 0\.17-0\.55"],
    "03_scoring_checkpoints.ipynb": [r"the same as in Python: True", r"0 failed"],
    # short runs (REASONING_STEPS): the findings it prints are worded from whatever they show
    "04_grokked_reasoning.ipynb": [r"composition at step \d+: train \d\.\d+, ID \d\.\d+, OOD \d\.\d+",
                                   r"detector accuracies equal metrics\.csv: True",
                                   r"bridge entity at r1, mean reciprocal rank by state: OOD( \d\.\d\d)+",
                                   r"Composition (generalises|is ahead|has not generalised)",
                                   r"Comparison (generalises|reaches ID)",
                                   r"attribute value R\^2 by state, OOD facts \(e1/e2\):( -?\d\.\d\d/-?\d\.\d\d)+",
                                   r"(A linear probe reads|No residual state holds)"],
    # a short run (TEXT_STEPS): too short for the phase change, so only what any run prints
    "05_induction_on_text.ipynb": [r"corpus: stdlib \(Python 3\.\d+",
                                   r"in-context learning score at step \d+: -?\d\.\d+ nats",
                                   r"held-out loss: \d\.\d\d nats at step 0 -> \d\.\d\d at step \d+",
                                   r"ablating (L\dH\d(, )?)+: token 50 loss [+-]\d\.\d\d, token 500 loss "
                                   r"[+-]\d\.\d\d nats"],
    # trains its own GPT-NeoX with transformers (no run of the session fits)
    "06_your_own_model.ipynb": [r"31 checkpoints scored, 0 failed",
                                r"induction phase change at step \d+: best prefix-matching score 0\.\d\d -> 0\.[6-9]\d",
                                r"induction head L1H\d: prefix matching 0\.[6-9]\d",
                                r"loss on copied tokens: \d\.\d\d nats at step \d+, [0-2]\.\d\d at step \d+",
                                r"largest logit difference to transformers: \d\.\de-0[5-9]",
                                r"phase change in it: True"],
    # the llc detector at short chains (notebook text): minutes of SGLD kept to what the suite affords
    "07_development.ipynb": [r"induction phase change at step \d+ \(between steps \d+ and \d+\) of 400",
                             r"steepest change \d+\.\d\d -> \d+\.\d\d between steps \d+ and \d+: \d+ % of the "
                             r"run from the phase change",
                             r"ranks of the flagged heads: \[1, 2(, \d)+\] of 8",
                             r"LLC \d+\.\d\d at step 0; \d+\.\d\d at the end of memorisation \(step \d+\)"],
    # the session's default induction run: the circuit found, checked against the flagged heads, over training
    "08_finding_the_circuit.ipynb": [r"smallest circuit with faithfulness >= 0\.9: the top \d+ of 81 edges, "
                                     r"\d+ of them on no path from embed to the logits; \d+ edges, "
                                     r"faithfulness (0\.9\d\d|1\.\d\d\d)",
                                     r"heads the circuit holds that no detector flags: (none|\['L\dH\d'(, 'L\dH\d')*\])",
                                     r"share of the circuit's \|score\| on edges among flagged heads, embed and "
                                     r"logits: (0\.[89]\d|1\.00)",
                                     r"K-composition in the circuit: L0H\d -> L1H\d\.k",
                                     r"second copy re-drawn: \d+ edges, faithfulness \d\.\d{3}, \d+ key edges",
                                     r"circuit loss \d\.\d\d nats at step 0 \(corrupted \d\.\d\d, clean \d\.\d\d\) -> "
                                     r"\d\.\d\d at step \d+ \(corrupted \d\.\d\d, clean \d\.\d\d\); phase change at step \d+",
                                     r"faithfulness of the final circuit: undefined before step \d+ \(loss gap at most 0\.[0-4]\d "
                                     r"nats there\), 0\.[0-5]\d there, (0\.9\d|1\.\d\d) at step \d+"],
}

#: Steps of the text run notebook 05 trains when the suite runs it (the default recipe takes minutes).
TEXT_STEPS = 40
#: Steps of each fact-task run notebook 04 trains when the suite runs it (its own take ~2.5 minutes).
REASONING_STEPS = 200

#: Notebooks that read the published grokking model where it is (tests/conftest.py: PUBLISHED).
NEEDS_PUBLISHED = {"02_grokking_fourier.ipynb"}


def test_every_notebook_is_listed_and_committed_without_outputs():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(EXPECTED)
    for name in EXPECTED:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), name


@pytest.fixture(scope="module")
def execute(induction_run, modadd_run, tmp_path_factory):
    """``execute(name)``: the notebook run top to bottom on the session's runs (once per name)."""
    done: dict[str, nbformat.NotebookNode] = {}

    def run(name: str) -> nbformat.NotebookNode:
        if name not in done:
            with pytest.MonkeyPatch.context() as env:
                env.setenv("INTERP_INDUCTION_RUN", str(induction_run))
                env.setenv("INTERP_MODADD_RUN", str(modadd_run))
                env.setenv("INTERP_TEXT_STEPS", str(TEXT_STEPS))  # notebook 05 trains a short text run
                env.setenv("INTERP_REASONING_STEPS", str(REASONING_STEPS))  # notebook 04: shorter fact-task runs
                if name in NEEDS_PUBLISHED:  # where ../shared/data/ is absent, the notebook runs without it
                    env.setenv("INTERP_PUBLISHED_MODEL", str(PUBLISHED))
                nb = nbformat.read(NOTEBOOKS / name, as_version=4)
                workdir = tmp_path_factory.mktemp(name.split("_")[0])
                resources = {"metadata": {"path": str(workdir)}}
                NotebookClient(nb, timeout=300, kernel_name="python3", resources=resources).execute()
            done[name] = nb
        return done[name]

    return run


def _figure_outputs(cell: nbformat.NotebookNode) -> list[dict]:
    return [o for o in cell.get("outputs", []) if "application/vnd.plotly.v1+json" in o.get("data", {})]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs(name, execute):
    nb = execute(name)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "\n".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    for pattern in EXPECTED[name]:
        assert re.search(pattern, text), f"{name}: no output matches {pattern!r}"
    figures = [o for c in nb.cells for o in _figure_outputs(c)]
    assert figures, f"{name}: no plotly figure"
    # each figure: plotly JSON for Jupyter's and VS Code's renderers, and HTML for everything else;
    # plotly.js is inlined once, and nothing loads a script from the network or asks for MathJax
    assert all("Plotly.newPlot(" in o["data"].get("text/html", "") for o in figures), name
    html = "\n".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert len(re.findall(r"plotly\.js v\d", html)) == 1
    assert not re.search(r"<script[^>]+src=[\"']?https?:", html)
    assert "mathjax" not in "\n".join(o["data"]["text/html"] for o in figures).lower()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_html_export_shows_every_figure(name, execute, tmp_path):
    """``jupyter nbconvert --to html`` of the executed notebook, opened offline in headless Chromium."""
    from nbconvert import HTMLExporter

    nb = execute(name)
    page = tmp_path / f"{name}.html"
    body, _ = HTMLExporter().from_notebook_node(nb)
    page.write_text(body, encoding="utf-8")
    drawn = inspect_page(page, tmp_path / "chromium")
    assert problems(drawn) == []
    expected = {i: len(_figure_outputs(c)) for i, c in enumerate(nb.cells) if _figure_outputs(c)}
    shown: dict[int, int] = {}
    for fig in drawn:
        shown[fig.cell] = shown.get(fig.cell, 0) + 1
    assert shown == expected, f"{name}: figures drawn per cell {shown}, figure outputs per cell {expected}"
