"""Every sentence true: the figures the README and docs/ state, checked against their sources.

- the README's recipe table ("Models and recipes") against ``interp.tasks.presets.PRESETS``;
- a time quoted in prose (README.md, docs/*.md, notebook markdown; outside code blocks) cites
  ``BENCHMARKS.md`` in its sentence (a table row: in the row or in the paragraph just before the table), unless it is
  a target (``<= 60 s``) or a constant of the code;
- a bare private name in backticks (``_ablated_losses``) is defined in ``interp/`` or ``circuits/``;
- a measured-looking figure in prose (README.md, docs/*.md, notebook markdown: a decimal with two or
  more digits after the point, ``0.77``, a ratio, ``3.4x``, or a percentage, ``15 %``; outside code)
  has a source in its paragraph (a table row: in the row or the paragraph before the table):
  ``BENCHMARKS.md`` or a committed table under ``docs/data/``; or it is a literal of the code
  (``0.98``, a preset's beta; ``30 %`` for ``0.3``), a bound (``at least 2x``), derived in
  ``DERIVED`` (whose arithmetic is checked), a setting or version in ``NOT_RESULTS``, or one of the
  few listed in ``UNSOURCED_FOR_NOW`` with the reason. Integers and one-decimal figures are not
  checked (too many are settings);
- a "BENCHMARKS.md, "Heading"" citation names a section BENCHMARKS.md has;
- the modadd sweep table of ``docs/training.md`` is the committed CSV it cites;
- the capacity figure the prose quotes is the one in code.

(Files and ``module.name`` references are resolved by ``tests/test_public_api.py``.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from interp.analysis.capacity_figures import MEASURED_BITS_PER_PARAMETER, PAPER_BITS_PER_PARAMETER
from interp.tasks.presets import PRESETS

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]

#: A duration: ``269 s``, ``12.6 min``, ``6-9 minutes``, ``350 ms``.
TIME = re.compile(r"(?<![\w.])~?\d[\d,.]*(?:\s?-\s?\d[\d,.]*)?\s?(?:ms|s|min|minutes?|seconds?|hours?)\b")
#: What may carry a time without citing BENCHMARKS.md: a target, or a constant of the code.
NOT_A_MEASUREMENT = re.compile(r"(?:<=|>=|<|>|\bunder|\bwithin|\bat most)\s*~?$|`[A-Z_]+` = $")


def _without_code(text: str) -> str:
    return re.sub(r"```.*?```", "", text, flags=re.DOTALL)


def _sentences(paragraph: str) -> list[str]:
    return re.split(r"(?<=[.!?])\s+(?=[A-Z`(*\[])", " ".join(paragraph.split()))


def uncited_times(text: str) -> list[str]:
    """The times of ``text``'s prose whose sentence (table row: row or the paragraph before the
    table) does not cite BENCHMARKS.md."""
    bad = []
    for rows, prose, before_table in _blocks(text, lambda prose: _sentences(prose)[-1]):
        units = [(row, row + " " + before_table) for row in rows]
        for item in re.split(r"\n(?=- )", prose):
            units += [(s, s) for s in _sentences(item)]
        for shown, context in units:
            for m in TIME.finditer(shown):
                if "BENCHMARKS" in context or NOT_A_MEASUREMENT.search(shown[: m.start()]):
                    continue
                bad.append(f"{m.group(0)!r} in: {shown[:160]}")
    return bad


def _blocks(text: str, table_context):
    """Each blank-line-separated block of ``text`` (code blocks removed) as ``(table rows, the other
    lines, context)``: the context of a table's rows is ``table_context`` of the last block of prose
    before the table."""
    before_table = ""
    for block in re.split(r"\n\s*\n", _without_code(text)):
        lines = block.strip().splitlines()
        rows = [line for line in lines if line.startswith("|")]
        prose = "\n".join(line for line in lines if not line.startswith("|"))
        yield rows, prose, before_table
        if prose.strip() and not rows:
            before_table = table_context(prose)


def test_the_time_check_finds_uncited_times():
    text = ("A run took 269 s (`BENCHMARKS.md`, \"Training\"). Another took 40 s.\n\n"
            "Target: <= 60 s.\n\n```bash\ninterp demo  # 5 min\n```\n\n"
            "Seed 0 (`BENCHMARKS.md`, \"Training\"):\n\n| seed | time |\n|---|---|\n| 0 | 16.3 s |\n\n"
            "Measured once:\n\n| seed | time |\n|---|---|\n| 1 | 17.6 s |\n")
    assert [b.split(" in: ")[0] for b in uncited_times(text)] == ["'40 s'", "'17.6 s'"]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_times_in_prose_cite_benchmarks(document):
    bad = uncited_times((ROOT / document).read_text(encoding="utf-8"))
    assert not bad, f"{document}: times without a BENCHMARKS.md reference:\n" + "\n".join(bad)


#: A measured-looking figure: ``0.77``, ``-0.503``, the end of ``0.85-0.94``, ``3.4x``, ``0.06x``, ``15 %``.
FIGURE = re.compile(r"(?:(?<![\w.])-?|(?<=\d-))\d+\.\d{2,}(?![\d.]*\w)|(?<![\w.])\d+(?:\.\d+)?(?:x\b|\s?%)")
#: What a paragraph cites as the source of its figures.
SOURCE = re.compile(r"BENCHMARKS|docs/data/")
#: Figures the prose derives, by document: value -> the arithmetic that gives it (checked below;
#: ``H(n)`` is the n-th harmonic number).
DERIVED = {
    "docs/training.md": {
        "0.21": "sum(1 - (126 / 127) ** k for k in range(64)) / 64",
        "0.475": "(1 - 1 / 20) / 2",  # the comparison task's majority label
        "0.04x": "0.06 * 2.37 / 3.6",  # the sweep's lowest ratio at the paper's capacity
        "4.3x": "6.58 * 2.37 / 3.6",  # and its highest
    },
    "docs/scores.md": {
        "0.060": "(H(63) - 1) / 62",
        "0.022": "(H(63) - H(32)) / 31",
        "0.0078": "1 / 128",
        "4.73": "log(113)",
        "5.55": "log(257)",
        "0.475": "(1 - 1 / 20) / 2",
        "0.417": "1000 * 0.5 ** 2 / (2 * (1000 * 0.5 ** 2 + 50))",  # the localised product model at a = 0.5
        "5.77": "16 / log(16)",
        "2.89": "4 / log(4)",
        "0.58": "H(10 ** 6) - log(10 ** 6)",  # Euler's constant: H_V ~ ln V + 0.58
        "1.245": "6 - 3 * log(3) / log(2)",  # reachable bits of 3 one-token sequences over 4 ids
        "1.61": "2 / (6 - 3 * log(3) / log(2))",  # and the fraction of a model sure of one of them
    },
}
#: Figures that are settings or versions, not results, by document: value -> what it is.
NOT_RESULTS = {
    "README.md": {"3.11": "the Python version of pyproject.toml's requires-python"},
    "docs/training.md": {"35 %": "a training fraction tried in the recipe search"},
}
#: Figures known to lack a source, each with the reason it is still there; the list only shrinks.
UNSOURCED_FOR_NOW: dict[str, dict[str, str]] = {}
#: What may precede a figure that is a bound, not a measurement (a target: ``at least 2x``).
BOUND = re.compile(r"(?:<=|>=|<|>|\bunder|\bwithin|\bat most|\bat least)\s*~?$")


def _code_literals() -> frozenset[float]:
    files = [p for pkg in ("interp", "circuits") for p in (ROOT / pkg).rglob("*.py")]
    text = "\n".join(p.read_text(encoding="utf-8") for p in files)
    return frozenset(float(v) for v in re.findall(r"(?<![\w.])\d+\.\d+(?:e-?\d+)?", text))


def _is_literal(value: str, literals: frozenset[float]) -> bool:
    """A decimal that the code holds (``0.98``), or a percentage whose fraction it holds (``30 %``)."""
    if value.endswith("x"):
        return False
    if value.endswith("%"):
        return round(float(value.rstrip("% ")) / 100, 6) in literals
    return float(value) in literals


def uncited_figures(text: str, derived: dict[str, str] | None = None,
                    literals: frozenset[float] = frozenset()) -> list[str]:
    """The figures of ``text``'s prose (:data:`FIGURE`; not in code, inline code or link targets)
    whose paragraph (table row: the row and the paragraph before the table) names no source
    (:data:`SOURCE`), and that are neither a literal of the code (``literals``; not for ratios)
    nor listed in ``derived``."""
    derived = derived or {}
    bad = []
    for rows, prose, before_table in _blocks(text, lambda prose: prose):
        units = [(row, row + " " + before_table) for row in rows] + [(prose, prose)]
        for shown, context in units:
            if SOURCE.search(context):
                continue
            bare = " ".join(re.sub(r"`[^`\n]*`|\]\([^)]*\)|arXiv[: ]\d+\.\d+", "", shown).split())
            for m in FIGURE.finditer(bare):
                value = m.group(0)
                if value in derived or BOUND.search(bare[: m.start()]) or _is_literal(value, literals):
                    continue
                start = bare.rfind(". ", 0, m.start()) + 1
                bad.append(f"{value!r} in: {bare[start:start + 160].strip()}")
    return bad


def test_the_figure_check_finds_unsourced_figures():
    text = ("Seed 0 ends at 0.77 (`BENCHMARKS.md`, \"Training on text\"). Betas (0.9, 0.98).\n\n"
            "The search gave 0.85-0.94, 3.4x later, 12 % faster on 30 % of pairs; chance is 4.73. See `x = 0.55`.\n\n"
            "```\nloss 0.12\n```\n\nFrom `docs/data/sweep.csv`:\n\n| a | b |\n|---|---|\n| 0.17 | 2.6x |\n\n"
            "Read by hand:\n\n| a |\n|---|\n| 0.29 |\n\n[Paper](https://arxiv.org/abs/2301.05217).\n")
    found = [b.split(" in: ")[0] for b in uncited_figures(text, {"4.73": "ln 113"}, frozenset({0.98, 0.3}))]
    assert found == ["'0.85'", "'0.94'", "'3.4x'", "'12 %'", "'0.29'"]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_figures_in_prose_have_a_source(document):
    known = {**DERIVED.get(document, {}), **NOT_RESULTS.get(document, {}), **UNSOURCED_FOR_NOW.get(document, {})}
    bad = uncited_figures((ROOT / document).read_text(encoding="utf-8"), known, _code_literals())
    assert not bad, (f"{document}: figures with no BENCHMARKS.md section or docs/data/ table in their "
                     "paragraph (cite one, list it in DERIVED with its arithmetic, or remove it):\n" + "\n".join(bad))


def test_derived_figures_are_their_arithmetic():
    import math

    names = {"log": math.log, "H": lambda n: sum(1 / k for k in range(1, n + 1))}
    for document, figures in DERIVED.items():
        for value, expression in figures.items():
            shown = value.rstrip("x")
            decimals = len(shown.split(".")[1]) if "." in shown else 0
            assert round(eval(expression, names), decimals) == float(shown), f"{document}: {value} != {expression}"


def _benchmark_headings() -> set[str]:
    text = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    return {re.sub(r"\s*\(.*$", "", h).strip() for h in re.findall(r"^## (.+)$", text, re.MULTILINE)}


@pytest.mark.parametrize("document", DOCUMENTS)
def test_benchmark_sections_cited_exist(document):
    text = " ".join((ROOT / document).read_text(encoding="utf-8").split())
    cited = re.findall(r"BENCHMARKS\.md`?,? \(?\"([^\"]+)\"", text)
    headings = _benchmark_headings()
    missing = sorted({c for c in cited if c not in headings})
    assert not missing, f"{document} cites BENCHMARKS.md sections that do not exist: {missing}; have {sorted(headings)}"


def _definitions() -> str:
    files = [p for pkg in ("interp", "circuits") for p in (ROOT / pkg).rglob("*.py")]
    return "\n".join(p.read_text(encoding="utf-8") for p in files)


@pytest.mark.parametrize("document", DOCUMENTS)
def test_private_names_in_docs_are_defined(document):
    text = (ROOT / document).read_text(encoding="utf-8")
    names = set(re.findall(r"`(_[a-z]\w*)(?:\(\))?`", text))
    code = _definitions()
    missing = sorted(n for n in names if not re.search(rf"^\s*(?:def|class) {n}\b|^{n}\s*[:=]", code, re.MULTILINE))
    assert not missing, f"{document} names private functions that do not exist: {missing}"


def test_capacity_figures_in_prose_are_the_constants():
    """The measured capacity is quoted as the constant, and the benchmark prints the constant."""
    bench = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    fitted = re.search(r"\| fitted capacity, bits per parameter [^|]*\| \*\*([\d.]+)\*\* \|", bench)
    assert fitted and float(fitted.group(1)) == MEASURED_BITS_PER_PARAMETER
    for document in DOCUMENTS:
        text = (ROOT / document).read_text(encoding="utf-8")
        for m in re.finditer(r"(\d\.\d+) bits(?: per |/)param", text):
            value = float(m.group(1))
            context = text[max(0, m.start() - 300): m.end() + 300]
            assert value in (MEASURED_BITS_PER_PARAMETER, PAPER_BITS_PER_PARAMETER) or "2.37" in m.group(1) and (
                "when this sweep ran" in context or "(2.44 now)" in context or "stored" in context), (
                f"{document}: capacity {value} bits per parameter is neither constant: ...{context}...")


# -- the README's recipe table ---------------------------------------------------------------------


def _recipe_rows() -> dict[str, str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text[text.index("### Models and recipes"):].split("\n\n")[1]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[2]
    return rows


def _number(text: str) -> float:
    text = text.replace(",", "")
    return float(text[:-1]) * 1000 if text.endswith("k") else float(text)


def _find(pattern: str, row: str) -> tuple[float, ...]:
    m = re.search(pattern, row)
    assert m, f"the README's recipe row no longer says {pattern!r}: {row}"
    return tuple(_number(g) for g in m.groups())


def test_readme_recipe_table_matches_the_presets():
    rows = _recipe_rows()
    assert set(rows) == {"induction", "text", "modadd", "reasoning"}

    ind = PRESETS["induction"]["default"]
    assert _find(r"lr ([\d.e-]+) decaying linearly", rows["induction"]) == (ind.lr,) and ind.lr_schedule == "linear"
    assert _find(r"([\d,]+) steps of (\d+) sequences", rows["induction"]) == (ind.steps, ind.batch_size)

    grok = PRESETS["modadd"]["default"]
    row = rows["modadd"].split("`nanda2023`")[0]
    assert _find(r"full batch on (\d+) % of pairs", row) == (100 * grok.frac_train,) and grok.batch_size is None
    assert _find(r"lr ([\d.e-]+)", row) == (grok.lr,)
    assert _find(r"epsilon ([\d.e-]+)", row) == (grok.adam_eps,)
    assert _find(r"weight decay rising linearly from ([\d.]+) to ([\d.]+)", row) == (grok.weight_decay,
                                                                                    grok.weight_decay_end)
    assert grok.weight_decay_ramp_start == 0
    assert _find(r"α ([\d.]+), λ ([\d.]+)", row) == (grok.grokfast_alpha, grok.grokfast_lambda)
    assert _find(r"([\d,]+) epochs", row) == (grok.steps,)
    paper = PRESETS["modadd"]["nanda2023"]
    row = rows["modadd"].split("`nanda2023`")[1]
    assert _find(r"lr ([\d.e-]+), wd ([\d.]+), ([\d.]+k?) epochs", row) == (paper.lr, paper.weight_decay, paper.steps)

    comp, cmp_ = PRESETS["composition"]["default"], PRESETS["comparison"]["default"]
    row = rows["reasoning"].split("`comparison`")[0]
    assert _find(r"(\d+) entities", row) == (comp.n_entities,)
    assert _find(r"lr ([\d.e-]+) with betas \(([\d.]+), ([\d.]+)\)", row) == (comp.lr, *comp.betas)
    assert _find(r"weight decay ([\d.]+) for the first third, then rising to ([\d.]+)", row) == (
        comp.weight_decay, comp.weight_decay_end) and comp.weight_decay_ramp_start == pytest.approx(1 / 3)
    assert "cooldown" in row and comp.lr_schedule == "cooldown"
    assert _find(r"([\d,]+) steps of (\d+) queries", row) == (comp.steps, comp.batch_size)
    row = rows["reasoning"].split("`comparison`")[1]
    assert _find(r"(\d+) entities, lr ([\d.e-]+), weight decay ([\d.]+)", row) == (cmp_.n_entities, cmp_.lr,
                                                                                  cmp_.weight_decay)
    assert "cooldown" in row and cmp_.lr_schedule == "cooldown"
    assert _find(r"([\d,]+) steps of (\d+)", row) == (cmp_.steps, cmp_.batch_size)


@pytest.mark.parametrize("notebook", sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb")))
def test_times_in_notebook_markdown_cite_benchmarks(notebook):
    import nbformat

    nb = nbformat.read(ROOT / "notebooks" / notebook, as_version=4)
    bad = uncited_times("\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown"))
    assert not bad, f"{notebook}: times without a BENCHMARKS.md reference:\n" + "\n".join(bad)


@pytest.mark.parametrize("notebook", sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb")))
def test_figures_in_notebook_markdown_have_a_source(notebook):
    """A notebook's own figures are printed by its code; its markdown quotes only sourced ones."""
    import nbformat

    nb = nbformat.read(ROOT / "notebooks" / notebook, as_version=4)
    bad = uncited_figures("\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown"),
                          literals=_code_literals())
    assert not bad, f"{notebook}: figures without a source:\n" + "\n".join(bad)


def test_the_sweep_table_in_training_md_is_the_committed_csv():
    """``docs/training.md``, "The experiment": every row is the CSV's cell (epochs, peak bits, ratios)."""
    import csv

    cells = {(int(r["d_model"]), float(r["frac_train"])): r
             for r in csv.DictReader((ROOT / "docs/data/sweep_modadd_seed0.csv").open(encoding="utf-8"))}
    text = (ROOT / "docs/training.md").read_text(encoding="utf-8")
    section = text[text.index("### The experiment (seed 0, the default grid)"):]
    rows = [line for line in section.split("\n\n", 3)[2].splitlines()[2:] if line.startswith("|")]
    assert len(rows) == len(cells) == 12
    for line in rows:
        c = [x.strip() for x in line.strip("|").split("|")]
        r = cells[(int(c[0]), float(c[1]))]
        bits = float(r["dataset_bits"]) / float(r["capacity_bits"])
        assert float(c[2]) == pytest.approx(bits, abs=0.006), line
        for shown, step in ((c[3], r["train99_step"]), (c[4], r["test99_step"])):
            assert shown == (str(int(float(step))) if step else "-"), line
        if r["test99_step"] and r["train99_step"]:
            assert float(c[5].rstrip("x")) == pytest.approx(float(r["test99_step"]) / float(r["train99_step"]), abs=0.06)
        peak, epoch = re.fullmatch(r"([\d,]+) \((\d+)\)", c[6]).groups()
        assert int(peak.replace(",", "")) == round(float(r["peak_memorized_bits"])), line
        assert int(epoch) == int(r["peak_step"]), line
        assert float(c[7]) == pytest.approx(float(r["peak_memorized_bits"]) / float(r["capacity_bits"]), abs=0.006)
