"""Who imports whom, derived from the code: no cycles, ``circuits`` never imports ``interp``,
``interp`` uses only public ``circuits`` names, and ``docs/architecture.md``'s arrows are the code's.

Every ``import`` and ``from ... import`` statement of every ``.py`` file under ``interp/`` and
``circuits/`` counts, wherever it stands (inside functions too): ``import a.b`` is an arrow to
``a.b``; ``from a import n`` is an arrow to ``a.n`` when that is a module, else to ``a``.
Relative imports are resolved; the implicit import of parent packages is not counted.

    python tests/test_layout.py      prints the package-level block for docs/architecture.md
"""

from __future__ import annotations

import ast
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("interp", "circuits")
DOC = ROOT / "docs" / "architecture.md"
#: The comment that comes right before the generated block in the doc.
DOC_MARKER = "<!-- import-graph: python tests/test_layout.py prints this block; tests/test_layout.py checks it -->"

Graph = dict[str, set[str]]


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Module name -> file, for every .py file of the two packages (a package is its ``__init__``)."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _ours(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, str | None]]:
    """Every import of one module as (target module, imported name or None), in file order.

    The name is what ``from target import name`` binds when ``target.name`` is not a module; None
    for module imports.
    """
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names if _ours(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if _is_package(path) else module.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if not _ours(base):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub, None) if sub in modules else (base, alias.name))
    return found


def module_graph(root: Path = ROOT) -> Graph:
    """Module -> the modules of the two packages it imports (itself excluded)."""
    modules = module_files(root)
    graph: Graph = {name: set() for name in modules}
    for name, path in modules.items():
        for target, _ in imports_of(name, path, modules):
            if target != name:
                graph[name].add(target)
    return graph


def group_of(module: str) -> str:
    """The layer a module belongs to: ``circuits``, ``interp`` (its ``__init__``), or
    ``interp.X`` for the sub-package or top-level module ``X``."""
    parts = module.split(".")
    if parts[0] == "circuits":
        return "circuits"
    return ".".join(parts[:2])


def package_graph(graph: Graph) -> Graph:
    """The arrows between layers (an import inside one layer is not one)."""
    arrows: Graph = defaultdict(set)
    for source, targets in graph.items():
        for target in targets:
            if group_of(source) != group_of(target):
                arrows[group_of(source)].add(group_of(target))
    return dict(arrows)


def find_cycle(graph: Graph) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def arrow_lines(arrows: Graph) -> list[str]:
    """``source -> target, target`` lines, sorted: the block of docs/architecture.md."""
    return [f"{source} -> {', '.join(sorted(targets))}" for source, targets in sorted(arrows.items()) if targets]


def doc_block(text: str) -> list[str] | None:
    """The lines of the fenced block right after :data:`DOC_MARKER`, or None when there is none."""
    match = re.search(re.escape(DOC_MARKER) + r"\s*\n```[^\n]*\n(.*?)\n```", text, re.DOTALL)
    return match.group(1).splitlines() if match else None


def parse_arrows(lines: list[str]) -> set[tuple[str, str]]:
    pairs = set()
    for line in lines:
        source, arrow, targets = line.partition("->")
        assert arrow, f"not an arrow line: {line!r}"
        pairs |= {(source.strip(), t.strip()) for t in targets.split(",") if t.strip()}
    return pairs


# -- the checks ---------------------------------------------------------------------------------


def test_every_import_is_resolved_to_a_module_of_ours():
    modules = module_files()
    unknown = sorted({f"{name} imports {target}" for name, path in modules.items()
                      for target, _ in imports_of(name, path, modules) if target not in modules})
    assert not unknown, "imports of modules that do not exist:\n" + "\n".join(unknown)


def test_no_module_cycle():
    cycle = find_cycle(module_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_cycle_between_layers():
    cycle = find_cycle(package_graph(module_graph()))
    assert cycle is None, "layer cycle: " + " -> ".join(cycle)


def test_circuits_never_imports_interp():
    graph = module_graph()
    wrong = sorted(f"{s} -> {t}" for s, ts in graph.items() if s.split(".")[0] == "circuits"
                   for t in ts if t.split(".")[0] == "interp")
    assert not wrong, "circuits imports interp:\n" + "\n".join(wrong)


def test_interp_uses_only_public_circuits_names():
    modules = module_files()
    wrong = []
    for name, path in modules.items():
        if name.split(".")[0] != "interp":
            continue
        for target, imported in imports_of(name, path, modules):
            private = [p for p in target.split(".") + [imported or ""] if p.startswith("_")]
            if target.split(".")[0] == "circuits" and private:
                wrong.append(f"{name} imports {target}" + (f".{imported}" if imported else ""))
    assert not wrong, "interp reaches into private circuits names:\n" + "\n".join(wrong)


#: The most lines a library module may have (split a longer one by concern).
MAX_MODULE_LINES = 350


def test_no_library_module_is_too_long():
    long = {str(path.relative_to(ROOT)): n for package in ("interp", "circuits") for path in (ROOT / package).rglob("*.py")
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_architecture_doc_has_the_code_arrows():
    block = doc_block(DOC.read_text(encoding="utf-8"))
    assert block is not None, f"docs/architecture.md has no fenced block after {DOC_MARKER}"
    documented = parse_arrows(block)
    derived = parse_arrows(arrow_lines(package_graph(module_graph())))
    missing = sorted(f"{s} -> {t}" for s, t in derived - documented)
    extra = sorted(f"{s} -> {t}" for s, t in documented - derived)
    assert not missing and not extra, (
        "docs/architecture.md's import block differs from the code (regenerate: python tests/test_layout.py)\n"
        f"in the code, not the doc: {missing}\nin the doc, not the code: {extra}")


def test_the_derivation_sees_function_level_relative_and_from_imports(tmp_path):
    (tmp_path / "interp" / "a").mkdir(parents=True)
    (tmp_path / "circuits").mkdir()
    files = {
        "interp/__init__.py": "import importlib\n",
        "interp/a/__init__.py": "from . import b\n",
        "interp/a/b.py": "def f():\n    from ..c import thing\n    from interp import d\n",
        "interp/c.py": "import interp.a.b\nfrom circuits import _private, public\n",
        "interp/d.py": "",
        "circuits/__init__.py": "from circuits._impl import public\n",
        "circuits/_impl.py": "import numpy\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    graph = module_graph(tmp_path)
    assert graph == {"interp": set(), "interp.a": {"interp.a.b"}, "interp.a.b": {"interp.c", "interp.d"},
                     "interp.c": {"interp.a.b", "circuits"}, "interp.d": set(), "circuits": {"circuits._impl"},
                     "circuits._impl": set()}
    assert find_cycle(graph) == ["interp.a.b", "interp.c", "interp.a.b"]
    assert package_graph(graph) == {"interp.a": {"interp.c", "interp.d"}, "interp.c": {"interp.a", "circuits"}}
    assert ("circuits", "_private") in imports_of("interp.c", tmp_path / "interp/c.py", module_files(tmp_path))
    assert arrow_lines(package_graph(graph)) == ["interp.a -> interp.c, interp.d", "interp.c -> circuits, interp.a"]


if __name__ == "__main__":
    print(DOC_MARKER)
    print("```")
    print("\n".join(arrow_lines(package_graph(module_graph()))))
    print("```")
    sys.exit(0)


def test_the_circuits_names_outside_its_all_that_interp_imports_are_the_ones_the_docs_list():
    """docs/architecture.md names every circuits helper outside ``circuits.__all__`` that interp imports."""
    import circuits

    modules = module_files()
    used = set()
    for name, path in modules.items():
        if name.split(".")[0] != "interp":
            continue
        for target, imported in imports_of(name, path, modules):
            public = imported if target == "circuits" else target.removeprefix("circuits.") if not imported else None
            if target.split(".")[0] != "circuits" or public in circuits.__all__:  # `from circuits import logit_lens`
                continue
            used.add(f"{target}.{imported}" if imported else target)  # a name, or a module imported whole
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(circuits\.[\w.]+)`", doc[doc.index("keeps off its top-level list"):][:400]))
    assert used == named, f"interp imports {sorted(used)}; docs/architecture.md lists {sorted(named)}"
