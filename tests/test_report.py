"""interp.report: the self-contained HTML page built from the detectors' sections."""

from __future__ import annotations

import dataclasses
import math
import re
import shutil

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from interp.analysis.capacity_figures import MEASURED_BITS_PER_PARAMETER, PAPER_BITS_PER_PARAMETER
from interp.cli import main
from interp.detectors.registry import DETECTORS
from interp.base.page import ReportFigure
from interp.detectors.fourier.detector import fourier_measures
from interp.detectors.heads.detector import ATTENTION_HALF_LEN, final_heads
from interp.report import build_report
from interp.scoring.table import canonical
from interp.scoring.batch import score_checkpoints
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
    assert "Heads at the last scored checkpoint (step 1000)" in page
    # the checkpoints of this made-up table are nowhere: the page says so instead of drawing them
    missing = "the checkpoint /runs/ind/checkpoints/step_001000.safetensors is not on this machine"
    assert f"Attention patterns not drawn: {missing}" in page
    assert "head scores by layer and head" in page and "before" in page and "after" in page


def _captions_and_links(page: str) -> tuple[list[str], list[str], set[str]]:
    captions = re.findall(r"<figure id='[^']+'>.*?<figcaption>(.*?)</figcaption></figure>", page, re.DOTALL)
    nav = re.search(r"<nav class='contents'>(.*?)</nav>", page, re.DOTALL).group(1)
    return captions, re.findall(r"href='#([^']+)'", nav), set(re.findall(r"id='([^']+)'", page))


def test_every_figure_has_a_caption_and_a_contents_entry():
    page = build_report(synthetic_heads_table(310))
    captions, links, ids = _captions_and_links(page)
    assert len(captions) == page.count("<figure ") == 2  # heatmaps and curves (no checkpoint for attention)
    assert all(1 <= len(re.findall(r"[.!?](?:\s|$)", c)) <= 2 and len(c) > 40 for c in captions), captions
    assert links == ["run-1", "run-1-figure-1", "run-1-figure-2"] and set(links) <= ids


def test_a_figure_without_a_caption_is_refused(monkeypatch):
    bare = dataclasses.replace(DETECTORS["heads"], report=lambda rows: [go.Figure()])
    monkeypatch.setitem(DETECTORS, "heads", bare)
    with pytest.raises(TypeError, match="ReportFigure"):
        build_report(synthetic_heads_table())


@pytest.fixture(scope="module")
def tiny_table(tiny_runs, tmp_path_factory):
    """The tiny runs copied (so a test may alter them) and scored."""
    root = tmp_path_factory.mktemp("report_runs")
    ind, mod = (shutil.copytree(run, root / run.name) for run in tiny_runs)
    return ind, mod, score_checkpoints([ind, mod])


def test_the_report_draws_the_circuits_of_the_final_checkpoints(tiny_table):
    from circuits import attention_pattern, fourier_report, repeated_tokens
    from interp import load_model

    ind, mod, table = tiny_table
    items = DETECTORS["heads"].report(table[table["run"] == str(ind)])
    figures = {i.title: i for i in items if isinstance(i, ReportFigure)}
    assert list(figures) == ["attention of the detected heads", "head scores by layer and head",
                             "head scores over training"]
    attention = figures["attention of the detected heads"].figure
    model = load_model(ind / "checkpoints" / "step_000020.safetensors")
    tokens = repeated_tokens(model, n_seqs=1, half_len=ATTENTION_HALF_LEN)
    heads = final_heads(table[table["run"] == str(ind)])
    best_previous = heads.loc[heads["previous_token"].idxmax()]
    expected = attention_pattern(model, int(best_previous["layer"]), int(best_previous["head"]), tokens).numpy()
    np.testing.assert_allclose(np.asarray(attention.data[0].z), expected, rtol=1e-6)
    assert f"L{int(best_previous['layer'])}H{int(best_previous['head'])}" in attention.layout.annotations[0].text
    heatmaps = figures["head scores by layer and head"].figure
    last = heads.set_index(["layer", "head"])
    np.testing.assert_allclose(np.asarray(heatmaps.data[-1].z)[1, 3], last.loc[(1, 3), "prefix_matching"])

    items = DETECTORS["fourier"].report(table[table["run"] == str(mod)])
    figures = {i.title: i for i in items if isinstance(i, ReportFigure)}
    assert list(figures) == ["Fourier spectrum", "neuron clusters", "progress measures", "memorised bits"]
    bits = table[(table["run"] == str(mod)) & (table["metric"] == "memorized_bits")].sort_values("step")
    np.testing.assert_allclose(np.asarray(figures["memorised bits"].figure.data[0].y), bits["value"].to_numpy())
    params = sum(p.numel() for p in load_model(mod).parameters())
    bits_figure = figures["memorised bits"].figure
    drawn = [s.y0 for s in bits_figure.layout.shapes if s.line.dash == "dash"]
    note = " ".join(a.text for a in bits_figure.layout.annotations if a.text.startswith("off the scale"))
    for capacity in (MEASURED_BITS_PER_PARAMETER * params, PAPER_BITS_PER_PARAMETER * params):  # a line, or named in the note when far above the curve
        assert any(y == pytest.approx(capacity) for y in drawn) or f"{capacity:,.0f} bits" in note
    final = fourier_report(load_model(mod / "checkpoints" / "step_000010.safetensors"))
    spectrum = figures["Fourier spectrum"].figure
    np.testing.assert_allclose(np.asarray(spectrum.data[0].y), final.spectrum["embed"].to_numpy())
    assert [a.text for a in spectrum.layout.annotations] == [f"k = {k}" for k in final.key_frequencies]
    assert list(figures["neuron clusters"].figure.data[0].y) == list(final.spectrum["neurons"])
    # the formula plotted (it said N_train (test loss - train loss) / ln 2: 29,965 bits where 24,792 are drawn)
    assert "max(0, N_train (min(test loss, ln p) - train loss) / ln 2)" in figures["memorised bits"].caption


def _phase_sentence(rows: pd.DataFrame) -> str:
    return next(i for i in DETECTORS["fourier"].report(rows) if isinstance(i, str) and "class='phase'" in i)


def test_the_grokking_sentence_gives_the_reason_it_has(tiny_table):
    _, mod, table = tiny_table
    rows = table[table["run"] == str(mod)]
    no_split = rows.assign(value=rows["value"].where(rows["metric"] != "test_accuracy"))
    # it said "measures lack columns ['test_accuracy']; pass the output of progress_measures"
    assert "Grokking phases not located (no train/test split)." in _phase_sentence(no_split)
    last = rows["step"].max()
    made_up = {"test_accuracy": lambda s: 0.9, "train_accuracy": lambda s: 1.0 if s == last else 0.5,
               "train_loss": lambda s: 0.01 if s == last else 1.0}
    late = rows.copy()
    for metric, value in made_up.items():
        at = late["metric"] == metric
        late.loc[at, "value"] = [value(s) for s in late.loc[at, "step"]]
    first = int(rows["step"].min())
    # it said "memorisation ends at not reached, circuit formation at not reached, cleanup at not reached"
    assert _phase_sentence(late) == ("<p class='phase'>Grokking phases not located: the training pairs are fitted only "
                                     f"after test accuracy reaches 0.5 (step {first}), so there is no memorisation phase "
                                     "to start from.</p>")


def test_a_checkpoint_changed_since_scoring_is_not_drawn(tiny_table):
    ind, _, table = tiny_table
    rows = table[table["run"] == str(ind)]
    last = ind / "checkpoints" / "step_000020.safetensors"
    saved = last.read_bytes()
    try:
        shutil.copyfile(ind / "checkpoints" / "step_000010.safetensors", last)
        items = DETECTORS["heads"].report(rows)
    finally:
        last.write_bytes(saved)
    notes = [i for i in items if isinstance(i, str) and "not drawn" in i]
    assert notes and "changed since it was scored" in notes[0]
    assert "attention of the detected heads" not in [i.title for i in items if isinstance(i, ReportFigure)]


def test_final_heads_table():
    heads = final_heads(synthetic_heads_table())
    assert list(heads[["layer", "head"]].itertuples(index=False, name=None)) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert heads.loc[heads["is_induction"], ["layer", "head"]].values.tolist() == [[1, 1]]


def test_report_of_scored_runs_with_fourier_phases(tiny_table, tmp_path):
    ind, mod, table = tiny_table
    measures = fourier_measures(table[table["run"] == str(mod.resolve())])
    assert {"step", "train_loss", "test_accuracy", "restricted_loss", "weight_norm"} <= set(measures.columns)
    assert len(measures) == table.loc[table["detector"] == "fourier", "step"].nunique()
    table_path = tmp_path / "scores.parquet"
    assert main(["score", str(ind), str(mod), "--out", str(table_path), "--quiet"]) == 0
    html_path = tmp_path / "report.html"
    before = table_path.read_bytes()
    for out in (table_path, tmp_path / "other.csv"):  # the table itself was overwritten with HTML, exit 0
        assert main(["report", str(table_path), "--out", str(out), "--quiet"]) == 2
    assert table_path.read_bytes() == before and not (tmp_path / "other.csv").exists()
    assert main(["report", str(table_path), "--out", str(html_path), "--quiet"]) == 0
    page = html_path.read_text()
    assert "Progress measures of grokking" in page and "Grokking phases" in page and "head scores" in page
    assert not re.search(r"<script[^>]+src=[\"']?https?:", page)
    captions, links, ids = _captions_and_links(page)
    assert len(captions) == page.count("<figure ") == 7 and set(links) <= ids
    assert "Memorised bits over training" in page and "Morris et al. 2025" in page
    assert "not drawn" not in page  # both final checkpoints were read


@pytest.mark.slow
def test_the_chromium_check_finds_blank_figures_and_empty_annotations(tmp_path):
    """The check the demo's report must pass, on a page with one good figure and three broken ones."""
    from chromium import inspect_page, problems

    from interp.base.page import figure_html, html_page

    good = go.Figure(go.Bar(x=[1, 2, 3], y=[3.0, 1.0, 2.0]))
    no_data = go.Figure(go.Scatter(x=[1, 2, 3], y=[float("nan")] * 3))
    flat = go.Figure(go.Bar(x=[1, 2, 3], y=[0.0, 0.0, 0.0]))  # bars drawn, nothing to see
    unlabelled = go.Figure(go.Bar(x=[1, 2], y=[1.0, 2.0]))
    unlabelled.add_annotation(x=1, y=1, text="")
    figures = [("good", good), ("no-data", no_data), ("flat", flat), ("unlabelled", unlabelled)]
    body = "".join(figure_html(ReportFigure(name, fig, "A caption."), name, first=i == 0)
                   for i, (name, fig) in enumerate(figures))
    page = tmp_path / "page.html"
    page.write_text(html_page("control", body), encoding="utf-8")
    found = problems(inspect_page(page, tmp_path / "chromium", screenshot=True))
    assert [p.split(":")[0] for p in found] == ["no-data-plot", "no-data-plot", "flat-plot", "unlabelled-plot"], found
    assert "without data" in found[0] and "blank in the screenshot" in found[1] and "blank" in found[2]
    assert "without text" in found[3]


def test_rows_of_an_unknown_detector_are_named_not_dropped():
    table = synthetic_heads_table()
    extra = table[table["metric"] == "copying"].assign(detector="my_plugin")
    page = build_report(canonical(pd.concat([table, extra]).to_dict("records")))
    assert "Not shown: rows of detectors this installation does not know: my_plugin (" in page
    assert f"my_plugin ({len(extra)} rows)" in page
    assert "does not know" not in build_report(table)


def test_a_deleted_runs_checkpoint_is_named_inside_its_checkpoints_folder(tmp_path):
    from interp.detectors._final import final_model

    rows = synthetic_heads_table().assign(run=str(tmp_path / "gone"))
    model, step, why = final_model(rows)
    assert model is None and step == STEPS[-1]
    assert f"{tmp_path / 'gone' / 'checkpoints' / f'step_{STEPS[-1]:06d}.safetensors'} is not on this machine" in why


def test_a_checkpoint_without_a_step_gets_a_section_of_its_own(tiny_table, tmp_path):
    # A foreign file records no step: its rows cannot join a run's order (the heatmap of the
    # "final" step read NA), so it is its own section, drawn at step 0, beside the stepped runs.
    import torch

    from interp.runs.checkpoints import list_checkpoints, load_model
    from interp.tasks.models import config_to_dict

    ind, _, table = tiny_table
    model = load_model(list_checkpoints(ind)[-1][1])
    foreign = tmp_path / "theirs.pth"
    torch.save({"state_dict": model.state_dict(), "config": config_to_dict(model.cfg)}, foreign)
    loose = score_checkpoints(foreign, ["heads"])
    assert loose["step"].isna().all()
    page = build_report(canonical(pd.concat([table, loose]).to_dict("records")))
    assert "theirs.pth records no training step: a section of its own, its rows drawn at step 0." in page
    assert page.count("<h2 id='run-") == table["run"].nunique() + 1
    assert f"{tmp_path / 'theirs.pth'} &middot; 1 checkpoint, 0 with errors" in page
    assert "theirs.pth: head scores over training" in page  # the figure's title named the folder


def test_figure_titles_show_a_run_name_as_it_is():
    table = synthetic_heads_table().assign(run='/runs/a "b" <i>c')
    page = build_report(table)
    assert '<h2 id=\'run-1\'>a &quot;b&quot; &lt;i&gt;c</h2>' in page
    assert 'a \\"b\\" &lt;i&gt;c: head scores over training' in page  # plotly shows &quot; as it is


def test_runs_whose_folders_share_a_name_are_told_apart():
    # Two runs X/ind and Y/ind were both headed "ind", their figures titled alike.
    table = pd.concat([synthetic_heads_table().assign(run=run) for run in ("/r/X/ind", "/r/Y/ind", "/r/grok")])
    page = build_report(table)
    headings = re.findall(r"<h2 id='run-\d+'>([^<]*)</h2>", page)
    assert headings == ["X/ind", "Y/ind", "grok"]
    for run in ("X", "Y"):  # a figure's JSON writes "/" as \u002f
        assert f"{run}\\u002find: head scores over training" in page
    assert f"/r/X/ind &middot; {len(STEPS)} checkpoints, 0 with errors" in page


def test_one_checkpoint_locates_no_phases_and_says_why():
    heads = synthetic_heads_table(310)
    last = heads[heads["step"] == heads["step"].max()]
    page = build_report(last)
    assert "No induction phase change located (one checkpoint: a change needs a curve)" in page
    rising = build_report(heads[heads["step"] <= 100])  # a curve that has not risen yet: the other reason
    assert "best prefix-matching score never rises by 0.1" in rising


def test_odd_rows_are_drawn_or_named_never_lost():
    # From an audit of made-up tables: each case below lost the page, hid rows, showed a wrong
    # value or a wrong reason, or wrote a table's text into the page unescaped.
    healthy = synthetic_heads_table(310)
    nan_run = healthy.assign(run="/runs/nan", value=float("nan"))
    page = build_report(canonical([*healthy.to_dict("records"), *nan_run.to_dict("records")]))
    assert "The heads section is not drawn: ValueError: table has no head rows" in page  # that run's note
    assert page.count("data-phase-change-step=") == 1  # the healthy run is still drawn

    # a rise over many checkpoints, no single step of which rises by 10 % of the range: it was "no
    # phase change (rises gradually)", also on a real run checkpointed densely; a fall is no phase change
    steps = list(range(0, 1010, 10))
    dense = canonical([{"run": "/runs/d", "checkpoint": f"step_{s:06d}.safetensors", "step": s, "detector": "heads",
                        "layer": 1, "head": 0, "metric": "prefix_matching",
                        "value": 0.05 + 0.9 / (1 + math.exp(-(s - 500) / 40))} for s in steps])
    assert "Induction phase change at <b>step 500</b>: best prefix-matching score 0.444 &rarr; 0.556 between " \
           "steps 490 and 510" in build_report(dense)
    falling = dense.assign(value=1 - dense["value"])
    assert "score moves by 0.90 but falls: it never rises by 10% of that" in build_report(falling)
    assert "no prefix-matching scores" in build_report(healthy[healthy["metric"] != "prefix_matching"])

    flags = healthy[healthy["step"] == healthy["step"].max()].copy()
    flags.loc[(flags["metric"] == "is_induction") & (flags["layer"] == 0), "value"] = float("nan")
    assert not final_heads(flags).query("layer == 0")["is_induction"].any()  # NaN is not a flag

    edge = {"run": "/runs/c", "checkpoint": "step_000010.safetensors", "step": 10, "detector": "circuit"}
    circuit = canonical([{**edge, "metric": m, "value": v} for m, v in (
        ("faithfulness", 0.95), ("clean_loss", 1.0), ("corrupted_loss", 3.0), ("circuit_loss", 1.1),
        ("circuit_size", 1.0), ("edge:L0H0->L1H0.k<img src=x onerror=alert(2)>", 0.5))])
    page = build_report(circuit)
    assert "<img src=x" not in page and "L1H0.k&lt;img src=x onerror=alert(2)&gt;" in page

    orphan = canonical([{"run": None, "checkpoint": "step_000001.safetensors", "step": 1, "detector": "load",
                         "metric": "error", "value": float("nan"), "error": "ERROR-WITHOUT-RUN"}])
    assert "ERROR-WITHOUT-RUN" in build_report(orphan)  # a row without a run is shown, not dropped


def test_two_checkpoints_at_one_step_draw_one_and_name_the_other():
    # A copy beside step 1000 (other scores): the final table, the heatmaps and the curves each
    # picked their own before; now every figure draws the last by name, and a note names both.
    heads = synthetic_heads_table(310)
    copy = heads[heads["step"] == 1000].assign(checkpoint="zz_copy.safetensors")
    copy.loc[copy["metric"] == "prefix_matching", "value"] = 0.123
    page = build_report(canonical([*heads.to_dict("records"), *copy.to_dict("records")]))
    assert ("Steps held by more than one checkpoint (the last by name is drawn): step 1000: "
            "step_001000.safetensors, zz_copy.safetensors, drawn: zz_copy.safetensors") in page
    table = re.search(r"<h3>Heads at the last scored checkpoint.*?</table>", page, re.S).group(0)
    assert "0.123" in table
