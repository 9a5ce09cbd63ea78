"""The files that make the toolkit something others can depend on and cite: the licence, the
citation file, the changelog, the bibliography every author-year citation points to, and the
README's account of the notebooks' environment variables."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

import interp

ROOT = Path(__file__).resolve().parents[1]
BIBLIOGRAPHY = ROOT / "docs" / "bibliography.md"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))
#: Documents whose first mention of each paper links to its bibliography entry.
LINKED_DOCUMENTS = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if p != BIBLIOGRAPHY)]

#: An author-year citation: "Olsson et al. 2022", "Olsson et al. (2022)", "Alain & Bengio 2016",
#: "Hurley and Rickard 2009", "nostalgebraist 2020". Its key is the first author's surname,
#: lower-cased, and the year: ``olsson2022``.
CITATION = re.compile(
    r"\b(?:(?P<author>[A-Z][a-z]+(?:-[A-Z][a-z]+)?)(?:\s+et\s+al\.?|\s+(?:&|and)\s+[A-Z][a-z]+),?"
    r"|(?P<handle>nostalgebraist))"
    r"\s+(?:\((?P<year_in_parentheses>(?:19|20)\d\d)\)|(?P<year>(?:19|20)\d\d))(?!\d)")
FENCED_CODE = re.compile(r"^```.*?^```[^\n]*$", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
ENTRY = re.compile(r"^### ([a-z]+\d{4})$", re.M)


def citation_key(match: re.Match) -> str:
    name = match.group("author") or match.group("handle")
    return name.lower() + (match.group("year") or match.group("year_in_parentheses"))


def prose(text: str) -> str:
    """``text`` with code (fenced blocks, inline spans) blanked out, offsets kept."""
    chars = list(text)
    for pattern in (FENCED_CODE, INLINE_CODE):
        for match in pattern.finditer(text):
            for i in range(match.start(), match.end()):
                if chars[i] != "\n":
                    chars[i] = " "
    return "".join(chars)


def markdown_cells(path: Path) -> list[str]:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    return ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "markdown"]


def code_cells(path: Path) -> list[str]:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    return ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]


def bibliography_entries() -> dict[str, str]:
    """key -> the entry's text (up to the next entry)."""
    text = BIBLIOGRAPHY.read_text(encoding="utf-8")
    matches = list(ENTRY.finditer(text))
    return {m.group(1): text[m.end():(matches[i + 1].start() if i + 1 < len(matches) else len(text))]
            for i, m in enumerate(matches)}


def cited_texts() -> dict[str, str]:
    """Every text that cites papers: the README, docs/*.md, the notebooks' markdown, the code's docstrings."""
    texts = {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in LINKED_DOCUMENTS}
    for path in NOTEBOOKS:
        texts[str(path.relative_to(ROOT))] = "\n\n".join(markdown_cells(path))
    for package in ("interp", "circuits"):
        for path in sorted((ROOT / package).rglob("*.py")):
            texts[str(path.relative_to(ROOT))] = path.read_text(encoding="utf-8")
    return texts


def test_the_citation_pattern_reads_the_forms_in_use():
    text = ("Olsson et al. 2022; Elhage et al. (2021); Alain & Bengio 2016; Hurley and Rickard\n2009; "
            "nostalgebraist 2020; Morris et al.'s 3.6; ICLR 2023; 2,000 entities")
    assert [citation_key(m) for m in CITATION.finditer(text)] == [
        "olsson2022", "elhage2021", "alain2016", "hurley2009", "nostalgebraist2020"]


def test_every_author_year_citation_has_a_bibliography_entry():
    entries = bibliography_entries()
    missing = sorted({f"{citation_key(m)} ({name})" for name, text in cited_texts().items()
                      for m in CITATION.finditer(text) if citation_key(m) not in entries})
    assert not missing, f"citations without an entry in docs/bibliography.md: {missing}"


def test_every_bibliography_entry_has_a_link_and_is_cited():
    entries = bibliography_entries()
    assert len(entries) >= 10
    for key, text in entries.items():
        assert re.search(r"\]\(https://[^)\s]+\)", text), f"{key}: no link"
        assert re.search(r"\*\*.+?\*\*", text, re.S), f"{key}: no title"
    cited = {citation_key(m) for text in cited_texts().values() for m in CITATION.finditer(text)}
    assert set(entries) <= cited, f"entries nobody cites: {sorted(set(entries) - cited)}"


@pytest.mark.parametrize("path", LINKED_DOCUMENTS, ids=lambda p: p.name)
def test_the_first_mention_of_each_paper_links_to_its_entry(path):
    text = path.read_text(encoding="utf-8")
    target = "docs/bibliography.md" if path.parent == ROOT else "bibliography.md"
    links = [(m.start(), m.end(), m.group(2)) for m in LINK.finditer(text)]
    first: dict[str, re.Match] = {}
    for match in CITATION.finditer(prose(text)):
        first.setdefault(citation_key(match), match)
    for key, match in first.items():
        inside = [href for start, end, href in links if start <= match.start() and match.end() <= end]
        assert inside == [f"{target}#{key}"], (
            f"{path.name}: the first mention of {key} ({match.group(0)!r}) does not link to {target}#{key}")


def test_the_changelogs_newest_version_is_the_packages():
    versions = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", (ROOT / "CHANGELOG.md").read_text(encoding="utf-8"), re.M)
    assert versions and versions[0] == interp.__version__


def test_the_citation_file_names_this_version_and_the_licence():
    yaml = pytest.importorskip("yaml")
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert citation["cff-version"] == "1.2.0"
    assert str(citation["version"]) == interp.__version__ == project["version"]
    assert citation["license"] == project["license"] == "MIT"
    assert citation["title"] and citation["abstract"] and citation["keywords"]
    assert citation["authors"] == [{"name": "The interp-circuits authors"}]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", str(citation["date-released"]))


def test_the_licence_file_is_mit_and_declared():
    licence = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert licence.startswith("MIT License") and "The interp-circuits authors" in licence
    assert tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["license-files"] == ["LICENSE"]


def test_every_environment_variable_a_notebook_reads_is_in_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    names = {name for path in NOTEBOOKS for source in code_cells(path)
             for name in re.findall(r"""(?:environ(?:\.get)?\s*[\[(]|getenv\s*\()\s*["'](\w+)["']""", source)}
    names |= {name for path in NOTEBOOKS for source in code_cells(path)
              for name in re.findall(r"""["'](\w+)["']\s+in\s+os\.environ""", source)}
    assert {"INTERP_INDUCTION_RUN", "INTERP_PUBLISHED_MODEL"} <= names  # the pattern still finds them
    notebooks_section = readme.split("## Notebooks", 1)[1].split("\n## ", 1)[0]
    missing = sorted(name for name in names if f"`{name}`" not in notebooks_section)
    assert not missing, f"read by a notebook, not explained in the README's Notebooks section: {missing}"
