"""The demo's report: its size (one offline file, target under 8 MB) and what it holds.

    python benchmarks/bench_report.py [--out DIR]

Runs ``interp demo --workers 2`` into ``DIR`` (default: a temporary directory, so both default
recipes are trained first, minutes). Finished runs already in ``DIR`` are kept, as the demo does, so pointing
``--out`` at a finished demo only scores what is new and writes the report again. Records the
report's size, the share of it that is plotly.js, its figures, the seconds of each demo stage
and the load average before and after.

Writes its section of BENCHMARKS.md between ``<!-- report:start -->`` and ``<!-- report:end -->``.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_average, load_note, machine, write_section  # noqa: E402

from interp.demo import run_demo  # noqa: E402

TARGET_BYTES = 8_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="demo directory (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "demo"
        resumed = [task for task in ("induction", "modadd") if (out / task / "run.json").exists()]
        load_before = load_average()
        result = run_demo(out, workers=2, quiet=True)  # 2 scoring processes, as in the figures recorded so far
        load_after = load_average()
        page = result.report.read_text(encoding="utf-8")
    size = len(page.encode("utf-8"))
    plotly_js = re.search(r"<script[^>]*>/\*\*\s*\* plotly\.js v[\d.]+.*?</script>", page, re.DOTALL)
    js_bytes = len(plotly_js.group(0).encode("utf-8")) if plotly_js else 0
    captions = re.findall(r"<figcaption>", page)
    external = re.findall(r"<(?:script|link|img)[^>]+(?:src|href)=[\"']?https?:", page)
    verdict = "ok" if size < TARGET_BYTES and not external else "MISSED"
    stages = ", ".join(f"{stage} {secs:.0f} s" for stage, secs in result.seconds.items())
    if resumed:
        stages += f" ({' and '.join(resumed)} already trained in the demo directory: resumed, not retrained)"
    text = (
        "## Demo report (`python benchmarks/bench_report.py`)\n\n"
        f"`interp demo --workers 2` (the default recipes); {machine()}. {load_note(load_before, load_after)} "
        f"Stages: {stages}.\n\n"
        "| what | measured | target | |\n|---|---|---|---|\n"
        f"| `report.html`, one self-contained file | {size / 1e6:.2f} MB | < {TARGET_BYTES / 1e6:.0f} MB "
        f"| {verdict} |\n"
        f"| of which plotly.js (inlined once) | {js_bytes / 1e6:.2f} MB |  |  |\n"
        f"| figures, each with a caption | {len(captions)} |  |  |\n"
        f"| resources fetched from the network | {len(external)} | 0 | {'ok' if not external else 'MISSED'} |\n\n"
        "The page draws the circuits of the final checkpoints (attention of the detected heads, layer x head "
        "score heatmaps around the phase change, Fourier spectrum with the key frequencies, neuron clusters) "
        "beside the score curves; figures are stored as compact typed arrays, so nearly all the size is plotly.js."
    )
    write_section("report", text)
    print(text)


if __name__ == "__main__":
    main()
