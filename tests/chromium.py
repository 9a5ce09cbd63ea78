"""Render an HTML page in headless Chromium and report what each plotly figure drew.

Used by the tests of the report and of the notebooks' HTML exports. Chromium runs offline (every
host name fails to resolve), so a figure that needs a CDN draws nothing. :func:`inspect_page`
injects a probe script into a copy of the page, reads the DOM Chromium ends with
(``--dump-dom``) and, when asked, a screenshot of the whole page, and returns one
:class:`DrawnFigure` per plotly figure; :func:`problems` lists what a reader would miss.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

#: Chromium's names on Debian (package ``chromium``) and elsewhere.
NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WIDTH = 1200
#: A pixel is ink when one of its channels differs from the plot area's background by more than
#: this: light shading (alpha <= 0.12) and plotly's grid lines stay below it.
INK_LEVEL = 48
#: Least share of a figure's plot areas that must be ink for the figure not to count as blank.
MIN_INK = 0.005

_PROBE = """
<script>
window.addEventListener("load", function () { setTimeout(function () {
  function box(el) { var r = el.getBoundingClientRect();
    return [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height]; }
  function count(gd, selector, ok) { return Array.prototype.filter.call(gd.querySelectorAll(selector), ok).length; }
  function hasPath(el) { var d = el.getAttribute("d") || ""; return d.length > 2 && d !== "M0,0Z"; }
  var cells = Array.prototype.slice.call(document.querySelectorAll(".jp-Cell"));
  var figures = Array.prototype.map.call(document.querySelectorAll(".plotly-graph-div"), function (gd) {
    var cell = gd.closest(".jp-Cell");
    return {
      id: gd.id, cell: cell ? cells.indexOf(cell) : -1,
      svg: gd.querySelectorAll("svg.main-svg").length,
      lines: count(gd, ".trace path.js-line", function (el) { return /L/.test(el.getAttribute("d") || ""); }),
      bars: count(gd, ".trace.bars .point path", hasPath),
      markers: count(gd, ".trace .points path.point", hasPath),
      heatmaps: count(gd, ".hm image", function (el) {
        return /^data:image/.test(el.getAttribute("href") || el.getAttribute("xlink:href") || ""); }),
      texts: Array.prototype.map.call(gd.querySelectorAll(".annotation-text, .gtitle"), function (el) {
        return el.textContent; }),
      labels: Array.prototype.map.call(gd.querySelectorAll(".annotation-text"), function (el) {
        return [el.textContent].concat(box(el)); }),
      plots: Array.prototype.map.call(gd.querySelectorAll(".draglayer .nsewdrag"), box),
      box: box(gd)
    };
  });
  var pre = document.createElement("pre");
  pre.id = "interp-probe";
  pre.textContent = JSON.stringify({figures: figures, height: document.documentElement.scrollHeight});
  document.body.appendChild(pre);
}, 500); });
</script>
"""


@dataclass
class DrawnFigure:
    """What Chromium drew for one plotly figure (counts of drawn elements, texts, ink)."""

    id: str
    cell: int  # index of the notebook cell holding it in an nbconvert export, else -1
    svg: int
    lines: int
    bars: int
    markers: int
    heatmaps: int
    texts: list[str]
    plots: list[list[float]]  # page boxes (x, y, width, height) of its plot areas
    box: list[float]
    labels: list[list] = field(default_factory=list)  # each annotation's [text, x, y, width, height]
    ink: list[float] = field(default_factory=list)  # share of ink pixels in each plot area

    @property
    def drawn(self) -> int:
        return self.lines + self.bars + self.markers + self.heatmaps


def chromium() -> str:
    """Path of the Chromium executable; skips the test with one line when there is none."""
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("Chromium not found (Debian: apt-get install chromium); the rendering tests need it")


def _run(page: Path, workdir: Path, *args: str) -> subprocess.CompletedProcess:
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--hide-scrollbars", "--force-device-scale-factor=1", "--host-resolver-rules=MAP * ~NOTFOUND",
               f"--user-data-dir={workdir / 'profile'}", "--virtual-time-budget=20000", *args, page.as_uri()]
    return subprocess.run(command, capture_output=True, timeout=180, check=True)


def inspect_page(page: Path, workdir: Path, *, screenshot: bool = False) -> list[DrawnFigure]:
    """Load ``page`` (a copy with the probe) in headless Chromium; one :class:`DrawnFigure` per plotly figure.

    With ``screenshot`` the whole page is captured too and each figure's ``ink`` filled in.
    """
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    text = page.read_text(encoding="utf-8")
    probed = workdir / "probed.html"
    probed.write_text(text.replace("</body>", _PROBE + "</body>") if "</body>" in text else text + _PROBE,
                      encoding="utf-8")
    dom = _run(probed, workdir, f"--window-size={WIDTH},1000", "--dump-dom").stdout.decode("utf-8", "replace")
    found = re.search(r"<pre id=\"interp-probe\">(.*?)</pre>", dom, re.DOTALL)
    if found is None:
        raise AssertionError(f"the probe did not run in {page} (Chromium printed {len(dom)} characters)")
    probe = json.loads(html.unescape(found.group(1)))
    figures = [DrawnFigure(**fig) for fig in probe["figures"]]
    if screenshot and figures:
        from PIL import Image

        shot = workdir / "page.png"
        _run(probed, workdir, f"--window-size={WIDTH},{int(probe['height']) + 10}", f"--screenshot={shot}")
        pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
        for fig in figures:
            fig.ink = [ink_share(pixels, area) for area in fig.plots]
    return figures


def ink_share(pixels: np.ndarray, area: list[float]) -> float:
    """Share of the pixels of ``area`` (x, y, width, height) that differ from its most common colour."""
    x, y, w, h = (int(round(v)) for v in area)
    crop = pixels[max(y, 0):y + h, max(x, 0):x + w].reshape(-1, 3)
    if crop.size == 0:
        return 0.0
    colours, counts = np.unique(crop, axis=0, return_counts=True)
    background = colours[np.argmax(counts)]
    return float((np.abs(crop - background).max(axis=1) > INK_LEVEL).mean())


def problems(figures: list[DrawnFigure]) -> list[str]:
    """What a reader would miss: figures not drawn, without data drawn, blank, or with empty texts."""
    found = []
    for fig in figures:
        name = fig.id or f"figure at y={fig.box[1]:.0f}"
        if fig.svg == 0:
            found.append(f"{name}: not drawn (no svg.main-svg)")
        elif fig.drawn == 0:
            found.append(f"{name}: axes without data (no line, bar, marker or heatmap drawn)")
        if fig.ink and sum(fig.ink) / len(fig.ink) < MIN_INK:
            found.append(f"{name}: blank in the screenshot (ink {max(fig.ink):.4f} of its plot areas)")
        empty = sum(1 for t in fig.texts if not t.strip())
        if empty:
            found.append(f"{name}: {empty} annotation(s) or title(s) without text")
        found += [f"{name}: labels {a!r} and {b!r} print over each other" for a, b in overlapping(fig.labels)]
    return found


def overlapping(labels: list[list]) -> list[tuple[str, str]]:
    """Pairs of annotation texts whose drawn boxes ([text, x, y, width, height]) intersect."""
    def meet(a, b) -> bool:
        return a[1] < b[1] + b[3] and b[1] < a[1] + a[3] and a[2] < b[2] + b[4] and b[2] < a[2] + a[4]

    boxes = [label for label in labels if label[3] > 0 and label[4] > 0]
    return [(a[0], b[0]) for i, a in enumerate(boxes) for b in boxes[i + 1:] if meet(a, b)]
