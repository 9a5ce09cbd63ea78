"""Notebook figures that draw offline in every front end: ``use_offline_renderer()`` (docs/figures.md).

After it, ``fig.show()`` puts two representations of each figure in the cell's output:

- ``application/vnd.plotly.v1+json``, the figure as JSON, which JupyterLab and Notebook 7 (with
  the ``jupyterlab-plotly`` extension that the ``plotly`` package installs) and VS Code draw with
  their own copy of plotly.js;
- ``text/html``, a ``<div>`` and a script calling ``Plotly.newPlot``, which everything that shows
  HTML draws, an nbconvert HTML export included. plotly.js itself (about 5 MB) is written once,
  in its own output just before the first figure of the kernel session; nothing is loaded from
  a CDN and MathJax is not asked for.
"""

from __future__ import annotations

from typing import Any

import plotly.io as pio
from plotly.io.base_renderers import MimetypeRenderer

__all__ = ["OFFLINE_HTML", "RENDERERS", "OfflineHtmlRenderer", "use_offline_renderer"]

#: Name under which :class:`OfflineHtmlRenderer` is registered with plotly.
OFFLINE_HTML = "interp_offline_html"
#: The renderer combination :func:`use_offline_renderer` makes the default.
RENDERERS = f"plotly_mimetype+{OFFLINE_HTML}"


class OfflineHtmlRenderer(MimetypeRenderer):
    """The ``text/html`` half of the bundle: plotly.js written once, then one small script per figure."""

    def activate(self) -> None:
        """Display plotly.js once; plotly calls this before the first figure it renders."""
        from IPython.display import HTML, display
        from plotly.offline import get_plotlyjs

        display(HTML("<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>"
                     f"<script>{get_plotlyjs()}</script>"))

    def to_mimebundle(self, fig_dict: dict[str, Any]) -> dict[str, str]:
        html = pio.to_html(fig_dict, full_html=False, include_plotlyjs=False, include_mathjax=False,
                           default_width="100%", default_height=525, validate=False)
        return {"text/html": html}


def use_offline_renderer() -> None:
    """Register :class:`OfflineHtmlRenderer` and make :data:`RENDERERS` plotly's default renderer."""
    pio.renderers[OFFLINE_HTML] = OfflineHtmlRenderer()
    pio.renderers.default = RENDERERS
