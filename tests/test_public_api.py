"""The public API is what people use: the notebooks import only ``interp.__all__`` and
``circuits.__all__`` names, every such name resolves, ``import interp`` costs no torch, and the
``interp.X`` / ``circuits.X`` names in the README's code resolve."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))
PACKAGES = ("interp", "circuits")
#: ``interp.X`` / ``circuits.X`` in text, not part of a longer name or a path.
REFERENCE = re.compile(r"(?<![\w./\\-])(?:interp|circuits)(?:\.[A-Za-z_]\w*)+")
#: References in README.md left stale by the regrouping into layer packages; the README is being
#: corrected separately. Each must still be there and still not resolve: once fixed, drop it here.


def _public(package: str) -> set[str]:
    return set(importlib.import_module(package).__all__)


def code_cells(path: Path) -> list[str]:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    return ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]


def markdown_cells(path: Path) -> list[str]:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    return ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "markdown"]


def api_problems(source: str, public: dict[str, set[str]]) -> list[str]:
    """What one piece of Python does with ``interp`` / ``circuits`` beyond their public names.

    Flagged: ``from interp.x import ...`` and ``import interp.x`` (a submodule), ``from interp
    import n`` and ``interp.n`` where ``n`` is not in ``__all__`` (module dunders such as
    ``__file__`` aside).
    """
    source = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
    problems: list[tuple[int, int, str]] = []  # line, column, what
    aliases: dict[str, str] = {}  # local name -> package
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                if root not in PACKAGES:
                    continue
                if alias.name != root:
                    problems.append((node.lineno, node.col_offset, f"imports the submodule {alias.name}"))
                aliases[alias.asname or root] = root
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            root = node.module.split(".")[0]
            if root not in PACKAGES:
                continue
            if node.module != root:
                problems.append((node.lineno, node.col_offset, f"imports from the submodule {node.module}"))
                continue
            problems += [(node.lineno, node.col_offset, f"imports {root}.{a.name}, not in {root}.__all__")
                         for a in node.names if a.name not in public[root]]
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr not in public[aliases[node.value.id]]
                and not (node.attr.startswith("__") and node.attr.endswith("__"))):
            package = aliases[node.value.id]
            problems.append((node.lineno, node.col_offset, f"uses {package}.{node.attr}, not in {package}.__all__"))
    return [what for _, _, what in sorted(problems)]


def resolves(dotted: str) -> bool:
    """True when ``dotted`` imports as a module, or as a module and a chain of attributes."""
    parts = dotted.split(".")
    if "__main__" in parts:  # importing it would run the command: found is enough
        return parts[-1] == "__main__" and importlib.util.find_spec(dotted) is not None
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def code_references(markdown: str) -> list[str]:
    """The ``interp.X`` / ``circuits.X`` references inside code (fenced blocks and inline spans)."""
    spans = re.findall(r"^```[^\n]*\n(.*?)^```", markdown, re.DOTALL | re.MULTILINE)
    rest = re.sub(r"^```[^\n]*\n.*?^```", "", markdown, flags=re.DOTALL | re.MULTILINE)
    spans += re.findall(r"`([^`]+)`", rest)  # a span may run over a line break
    return [ref for span in spans for ref in REFERENCE.findall(span)]


def unresolved_references(markdown: str) -> list[str]:
    return sorted({ref for ref in code_references(markdown) if not resolves(ref)})


# -- (a) the notebooks ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_use_only_public_names(path):
    public = {package: _public(package) for package in PACKAGES}
    problems = [f"cell {i}: {p}" for i, source in enumerate(code_cells(path)) for p in api_problems(source, public)]
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


def test_the_notebook_check_flags_submodules_and_private_names():
    public = {"interp": {"preset", "train"}, "circuits": {"induction_heads"}}
    source = """
import interp
import circuits as c
import interp.tasks.presets
from interp.tasks.presets import preset
from interp import preset, PRESETS
from circuits import induction_heads, _fused

def f():
    return interp.train, interp.runs.read_run_info, c.induction_heads, c.logit_lens, interp.__file__
"""
    assert api_problems(source, public) == [
        "imports the submodule interp.tasks.presets",
        "imports from the submodule interp.tasks.presets",
        "imports interp.PRESETS, not in interp.__all__",
        "imports circuits._fused, not in circuits.__all__",
        "uses interp.runs, not in interp.__all__",
        "uses circuits.logit_lens, not in circuits.__all__",
    ]
    assert api_problems("%matplotlib inline\nimport interp\nx = interp.preset\n", public) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_text_references_resolve(path):
    bad = sorted({ref for text in markdown_cells(path) for ref in unresolved_references(text)})
    assert not bad, f"{path.name} names what does not exist: {bad}"


# -- (b) the public names -------------------------------------------------------------------------


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_resolves(package):
    module = importlib.import_module(package)
    assert len(module.__all__) == len(set(module.__all__))
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"{package}.__all__ names what it does not have: {missing}"


def test_interp_has_no_private_or_unknown_attribute():
    import interp

    assert all(not name.startswith("_") or name == "__version__" for name in interp.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        interp.nope  # noqa: B018


def test_import_interp_imports_no_torch():
    code = ("import sys, interp; interp.__all__; interp.preset; interp.MEASURED_BITS_PER_PARAMETER; "
            "print(sorted(m for m in ('torch', 'transformer_lens', 'numpy', 'pandas') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout


# -- (c) the README and the docs ------------------------------------------------------------------

DOCUMENTS = ["README.md", "BENCHMARKS.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
#: ``interp/x.py`` or ``circuits/x.py``, optionally ``::name``: a file of the repository named in prose.
#: ``tests/test_x.py::test_name``: a test named in prose.
TEST_REFERENCE = re.compile(r"\b(tests/\w+\.py)::(test_\w+)")
FILE_REFERENCE = re.compile(r"\b((?:interp|circuits)/[a-z_/]+\.py)(?:::([A-Za-z_][\w.]*))?")


def defines(path: Path, name: str) -> bool:
    """Whether the module at ``path`` defines ``name`` (def, class, assignment) or imports it by name."""
    source = path.read_text(encoding="utf-8")
    n = re.escape(name)
    definition = rf"^\s*(?:async\s+)?(?:def|class)\s+{n}\b|^\s*{n}\s*(?::[^=\n]*)?=(?!=)"
    return bool(re.search(definition, source, re.MULTILINE)
                or re.search(rf"^\s*from\s+\S+\s+import\s+\(?[^)]*?\b{n}\b", source, re.MULTILINE))


@pytest.mark.parametrize("document", DOCUMENTS)
def test_document_references_resolve(document):
    text = (ROOT / document).read_text(encoding="utf-8")
    bad = unresolved_references(text)
    assert not bad, f"{document} names what does not exist: {sorted(set(bad))}"
    missing = [f"{path}::{name}" if name else path for path, name in FILE_REFERENCE.findall(text)
               if not (ROOT / path).is_file() or (name and not defines(ROOT / path, name.split(".")[0]))]
    assert not missing, f"{document} names files or names in them that do not exist: {sorted(set(missing))}"
    tests = [f"{path}::{name}" for path, name in TEST_REFERENCE.findall(text)
             if not (ROOT / path).is_file() or not re.search(rf"^def {re.escape(name)}\(", (ROOT / path).read_text(
                 encoding="utf-8"), re.MULTILINE)]
    assert not tests, f"{document} names tests that do not exist: {sorted(set(tests))}"


def test_reference_extraction():
    text = "See `interp.load_model(path)` and `circuits.fourier_report`.\n\n```python\nx = interp.tasks.text\n```\n" \
           "Not code: interp.nope. A path `interp/cli.py`, a package `interp-circuits`, `docs/interp.md`."
    assert code_references(text) == ["interp.tasks.text", "interp.load_model", "circuits.fourier_report"]
    assert resolves("interp.tasks.text") and resolves("interp.load_model") and resolves("interp.tasks.text.TextTask")
    assert not resolves("interp.fast_forward") and not resolves("interp.runs.read_run_info")
    assert resolves("interp.__main__") and not resolves("interp.tasks.__main__")
    assert unresolved_references(text) == []
    here = ROOT / "circuits" / "progress.py"
    assert defines(here, "progress_measures") and defines(here, "gini")  # defined; imported by name
    assert not defines(here, "repeated_loss") and not defines(ROOT / "circuits" / "ablation.py", "_repeated_loss")


if __name__ == "__main__":  # the unresolved references of README.md and docs/*.md
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for ref in unresolved_references(doc.read_text(encoding="utf-8")):
            print(f"{doc.relative_to(ROOT)}: {ref}")


def test_the_version_is_the_packages():
    import tomllib

    import interp

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert interp.__version__ == declared
