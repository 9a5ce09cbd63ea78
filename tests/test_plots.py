"""Plot builders for the Fourier detector (interp.plots): they return figures and show nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from circuits import FourierReport, GrokkingPhases
from interp.detectors.fourier.figures import plot_fourier_spectrum, plot_neuron_clusters, plot_progress_measures


def _spectrum() -> pd.DataFrame:
    k = np.arange(1, 57)
    embed = np.where(np.isin(k, [4, 9]), 0.45, 0.1 / 54)
    neurons = np.where(np.isin(k, [4, 9]), 200, 0)
    return pd.DataFrame({"freq": k, "embed": embed, "unembed": embed, "neurons": neurons, "neurons_majority": neurons})


def _shaded(fig: go.Figure) -> list[tuple[float, float]]:
    return [(s.x0, s.x1) for s in fig.layout.shapes]


def test_spectrum_plot_marks_key_frequencies():
    fig = plot_fourier_spectrum(_spectrum(), [4, 9])
    assert isinstance(fig, go.Figure)
    assert [t.name for t in fig.data] == ["embedding W_E", "neuron-logit map W_L"]
    assert list(fig.data[0].x) == list(range(1, 57))
    assert _shaded(fig) == [(3.5, 4.5), (8.5, 9.5)]
    assert "4, 9" in fig.layout.title.text


def test_spectrum_plot_accepts_a_report():
    report = FourierReport(
        p=113, key_frequencies=[4, 9], spectrum=_spectrum(), loss=0.0, train_loss=0.0, test_loss=float("nan"),
        train_accuracy=1.0, test_accuracy=float("nan"), restricted_loss=0.0, excluded_loss=5.0,
        gini_embed=0.9, gini_unembed=0.9, weight_norm=1.0,
    )
    assert _shaded(plot_fourier_spectrum(report)) == [(3.5, 4.5), (8.5, 9.5)]
    fig = plot_neuron_clusters(report)
    assert [int(v) for v in fig.data[0].y if v] == [200, 200]
    assert len(fig.data) == 2 and len(fig.layout.shapes) == 2


def test_spectrum_plot_rejects_other_frames():
    with pytest.raises(ValueError, match="columns"):
        plot_fourier_spectrum(pd.DataFrame({"freq": [1]}))


def test_progress_plot_shades_the_phases():
    steps = np.arange(0, 1001, 50)
    frame = pd.DataFrame({
        "step": steps,
        "train_loss": np.exp(-steps / 50.0),
        "test_loss": np.where(steps < 600, 10.0, 0.01),
        "restricted_loss": np.linspace(4, 0.01, len(steps)),
        "excluded_loss": np.linspace(0.1, 10, len(steps)),
        "gini_embed": np.linspace(0.1, 0.9, len(steps)),
        "gini_unembed": np.linspace(0.1, 0.9, len(steps)),
        "weight_norm": np.linspace(2000, 900, len(steps)),
    })
    phases = GrokkingPhases(memorization_end=100, circuit_formation_end=550, cleanup_end=800, grokking_step=600)
    fig = plot_progress_measures(frame, phases)
    assert isinstance(fig, go.Figure)
    assert {t.name for t in fig.data} == {"train", "test", "restricted", "excluded", "Gini W_E", "Gini W_L", "weights"}
    spans = sorted({(s.x0, s.x1) for s in fig.layout.shapes})
    assert spans == [(0, 100), (100, 550), (550, 800)]
    assert {a.text for a in fig.layout.annotations} >= {"memorisation", "circuit formation", "cleanup"}


def test_progress_plot_with_unfinished_phases():
    frame = pd.DataFrame({"step": [0, 10], "train_loss": [4.7, 1.0], "test_loss": [4.7, 5.0]})
    fig = plot_progress_measures(frame, GrokkingPhases(10, None, None, None))
    assert sorted({(s.x0, s.x1) for s in fig.layout.shapes}) == [(0, 10)]
    with pytest.raises(ValueError, match="step"):
        plot_progress_measures(pd.DataFrame())


def test_every_annotation_has_text_and_each_head_one_colour():
    from interp.analysis.phase import locate_phase_change
    from interp.detectors.heads.figures import plot_head_scores

    steps = [0, 50, 100, 150, 200]
    rows = [{"step": s, "layer": la, "head": h, "metric": m, "value": (s / 200) * (la + 1) * (h + 1) / 8}
            for s in steps for la in (0, 1) for h in range(4) for m in ("prefix_matching", "previous_token")]
    table = pd.DataFrame(rows)
    curve = table[table["metric"] == "prefix_matching"].groupby("step")["value"].max()
    fig = plot_head_scores(table, locate_phase_change(curve.index, curve.to_numpy()))
    assert fig.layout.annotations and all(a.text for a in fig.layout.annotations)
    colours: dict[str, set] = {}
    for trace in fig.data:
        colours.setdefault(trace.name, set()).add(trace.line.color)
    assert len(colours) == 8 and all(len(c) == 1 for c in colours.values())
    assert len({next(iter(c)) for c in colours.values()}) == 8  # and distinct between heads
    phases = GrokkingPhases(memorization_end=1, circuit_formation_end=2, cleanup_end=3, grokking_step=2)
    measures = pd.DataFrame({"step": [0, 1, 2, 3, 4], "train_loss": [4.0, 0.01, 0.01, 0.01, 0.01],
                             "weight_norm": [5.0, 5.0, 4.0, 3.0, 3.0]})
    assert all(a.text for a in plot_progress_measures(measures, phases).layout.annotations)


def test_spectrum_names_each_key_frequency():
    fig = plot_fourier_spectrum(_spectrum(), [4, 9])
    assert [(a.x, a.text) for a in fig.layout.annotations] == [(4, "k = 4"), (9, "k = 9")]


def test_head_heatmaps_put_each_score_in_its_cell():
    from interp.detectors.heads.figures import plot_head_heatmaps

    rows = [{"step": s, "layer": la, "head": h, "metric": m,
             "value": s / 1000 + la / 10 + h / 100 + (m == "prefix_matching")}
            for s in (100, 200, 300) for la in (0, 1) for h in range(3) for m in ("previous_token", "prefix_matching")]
    fig = plot_head_heatmaps(pd.DataFrame(rows), [(100, "before"), (300, "final")])
    assert [t.name for t in fig.data] == ["previous_token step 100", "previous_token step 300",
                                          "prefix_matching step 100", "prefix_matching step 300"]
    z = np.asarray(fig.data[3].z)
    assert z.shape == (2, 3) and z[1, 2] == pytest.approx(0.3 + 0.1 + 0.02 + 1)  # layer 1, head 2, step 300
    assert list(fig.data[0].y) == ["L0", "L1"] and list(fig.data[0].x) == ["H0", "H1", "H2"]
    assert [a.text for a in fig.layout.annotations] == [
        "previous token at step 100 (before)", "previous token at step 300 (final)",
        "prefix matching at step 100 (before)", "prefix matching at step 300 (final)"]
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (0, 1)
    with pytest.raises(ValueError, match="no head rows"):
        plot_head_heatmaps(pd.DataFrame(rows), [])


def test_attention_patterns_side_by_side_with_the_copy_marked():
    from interp.detectors.heads.figures import plot_attention_patterns

    eye = np.eye(5)
    fig = plot_attention_patterns([("a", eye), ("b", np.tril(np.ones((5, 5))) / np.arange(1, 6)[:, None])], half_len=2)
    assert [a.text for a in fig.layout.annotations] == ["a", "b"]
    assert np.asarray(fig.data[1].z)[4].sum() == pytest.approx(1.0)
    vertical = [s.x0 for s in fig.layout.shapes if s.x0 == s.x1]
    horizontal = [s.y0 for s in fig.layout.shapes if s.y0 == s.y1]
    assert vertical == horizontal == [2.5, 2.5]  # one of each per panel, where the copy starts (N + 0.5)
    with pytest.raises(ValueError, match="square"):
        plot_attention_patterns([("c", np.ones((2, 3)))])


def _narrow_phases_run() -> tuple[pd.DataFrame, GrokkingPhases]:
    """Progress measures whose circuit-formation and cleanup bands are one checkpoint wide."""
    steps = np.arange(0, 1501, 75)
    frame = pd.DataFrame({
        "step": steps, "train_loss": np.exp(-steps / 60.0), "test_loss": np.where(steps < 450, 8.0, 0.01),
        "restricted_loss": np.where(steps < 450, 2.0, 0.01), "excluded_loss": np.linspace(0.1, 10, len(steps)),
        "gini_embed": np.linspace(0.1, 0.9, len(steps)), "gini_unembed": np.linspace(0.1, 0.9, len(steps)),
        "weight_norm": np.linspace(2000, 900, len(steps)),
        "memorized_bits": np.where(steps < 450, 25_000.0, 100.0), "dataset_bits": 26_128.0,
    })
    return frame, GrokkingPhases(memorization_end=375, circuit_formation_end=450, cleanup_end=525, grokking_step=450)


def test_phase_labels_stand_on_rows_of_their_own():
    from interp.detectors.fourier.figures import plot_memorized_bits

    frame, phases = _narrow_phases_run()
    for fig in (plot_progress_measures(frame, phases), plot_memorized_bits(frame, phases)):
        labels = {a.text: a.y for a in fig.layout.annotations if a.text in ("memorisation", "circuit formation", "cleanup")}
        assert len(labels) == 3 and len(set(labels.values())) == 3  # three heights: never over each other


def test_memorized_bits_are_not_flattened_by_a_capacity_far_above():
    from interp.detectors.fourier.figures import plot_memorized_bits

    frame, phases = _narrow_phases_run()
    fig = plot_memorized_bits(frame, phases, [("capacity at 2.37 bits/param", 540_000.0), ("near", 30_000.0)])
    low, high = fig.layout.yaxis.range
    assert low == 0 and 26_128 < high < 60_000  # the curve fills the plot
    assert [s.y0 for s in fig.layout.shapes if s.type == "line"] == [26_128.0, 30_000.0]  # the far line is not drawn
    note = [a.text for a in fig.layout.annotations if a.text.startswith("off the scale")]
    assert note and "540,000 bits" in note[0]


def test_phase_labels_and_capacity_note_render_apart_in_chromium(tmp_path):
    from chromium import inspect_page, overlapping, problems

    from interp.base.page import ReportFigure, figure_html, html_page
    from interp.detectors.fourier.figures import plot_memorized_bits

    frame, phases = _narrow_phases_run()
    figures = [plot_progress_measures(frame, phases),
               plot_memorized_bits(frame, phases, [("capacity at 2.37 bits/param", 540_000.0)])]
    body = "".join(figure_html(ReportFigure("f", fig, "c"), f"f{i}", first=i == 0) for i, fig in enumerate(figures))
    page = tmp_path / "page.html"
    page.write_text(html_page("phases", body), encoding="utf-8")
    drawn = inspect_page(page, tmp_path / "chromium", screenshot=True)
    assert problems(drawn) == [] and len(drawn) == 2
    labels = [label[0] for fig in drawn for label in fig.labels]
    assert labels.count("cleanup") == 2 and labels.count("circuit formation") == 2
    # the check itself sees overlaps: two boxes that meet, and two that do not
    assert overlapping([["a", 0, 0, 10, 10], ["b", 5, 5, 10, 10], ["c", 20, 20, 1, 1]]) == [("a", "b")]
