"""interp.notebook_figures: each figure as plotly JSON plus offline HTML, plotly.js written once."""

from __future__ import annotations

import re

import IPython.display
import plotly.graph_objects as go
import plotly.io as pio
import pytest

from interp.base.notebook_figures import RENDERERS, use_offline_renderer


@pytest.fixture
def shown(monkeypatch):
    """What ``fig.show()`` displays, with the offline renderer as the default (restored afterwards)."""
    monkeypatch.setattr(pio.renderers, "default", pio.renderers.default)  # undone at teardown
    calls: list[object] = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, **kwargs: calls.append(obj))
    use_offline_renderer()
    return calls


def test_each_figure_is_a_mime_bundle_with_offline_html(shown):
    assert pio.renderers.default == RENDERERS
    go.Figure(go.Bar(x=[1, 2, 3], y=[4.0, 5.0, 6.0])).show()
    go.Figure(go.Scatter(x=[0, 1], y=[7.0, 8.0])).show()
    loader, first, second = shown  # plotly.js once, before the first figure; then one bundle per figure
    assert len(re.findall(r"plotly\.js v\d", loader.data)) == 1
    assert not re.search(r"<script[^>]*\ssrc=", loader.data)  # inlined, not fetched
    for bundle, y in ((first, [4.0, 5.0, 6.0]), (second, [7.0, 8.0])):
        assert set(bundle) == {"application/vnd.plotly.v1+json", "text/html"}
        assert list(bundle["application/vnd.plotly.v1+json"]["data"][0]["y"]) == y
        page = bundle["text/html"]
        assert "Plotly.newPlot(" in page and len(page) < 20_000  # the figure only, not plotly.js again
        assert not re.search(r"src=|https?://|mathjax", page, re.IGNORECASE)  # no CDN, no MathJax
