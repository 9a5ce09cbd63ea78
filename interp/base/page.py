"""What every HTML page of the toolkit shares: a captioned figure, its HTML, the page around a body.

The scores report (``interp.report``), the sweep page and the memorisation page are built from these;
detectors return :class:`ReportFigure` items for their report sections (``docs/figures.md``).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

__all__ = ["ReportFigure", "figure_html", "html_page"]


@dataclass(frozen=True)
class ReportFigure:
    """A figure of the report, with its entry in the contents list and its caption.

    Attributes:
        title: a few words for the contents list.
        figure: the plotly ``Figure``.
        caption: one or two plain-text sentences saying what to see in it.
    """

    title: str
    figure: Any
    caption: str


def figure_html(item: ReportFigure, anchor: str, first: bool) -> str:
    """``<figure>`` with the plotly figure (plotly.js inlined when ``first``) and its caption."""
    plot = item.figure.to_html(full_html=False, include_plotlyjs=bool(first), include_mathjax=False,
                               div_id=f"{anchor}-plot", config={"displaylogo": False})
    return (f"<figure id='{anchor}'>{plot}<figcaption>{html.escape(item.caption)}</figcaption></figure>")


def html_page(title: str, body: str) -> str:
    """A whole HTML page around ``body`` (already HTML), with the reports' plain style."""
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
        ".path{color:#666;font-size:90%}.note{color:#8a4b00}"
        "nav.contents{background:#f6f6f6;padding:.5em 1em;margin-bottom:1.5em}nav.contents ol{margin:.3em 0}"
        "figure{margin:1.5em 0}figcaption{color:#333;max-width:900px;margin:.2em 0 0 1em}"
        "</style></head><body>"
        f"<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )
