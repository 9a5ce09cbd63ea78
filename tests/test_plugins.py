"""Detectors from other packages: real distributions installed with pip (``interp.detectors`` entry
points), and ``interp.register_detector`` in this process, score, inspect and report like built-ins."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from interp import Detector, load_model, register_detector
from interp.detectors import plugins
from interp.detectors.registry import DETECTORS
from interp.runs.layout import find_checkpoints, list_checkpoints
from interp.scoring.batch import score_checkpoints
from interp.scoring.task import RunPlan, ScoreTask, check_detectors, score_task
from interp.scoring.table import read_table

ROOT = Path(__file__).resolve().parents[1]

#: A plugin module: the norm of the unembedding (one row) and of each head's W_O (a row per head).
WU_NORM = '''
"""A detector from another package: Frobenius norms of W_U and of each head's W_O."""
from interp import Detector


def _wu(model):
    return float(model.W_U.detach().norm())


def score(model, context):
    rows = [{"metric": "wu_norm", "value": _wu(model)}]
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            rows.append({"metric": "wo_norm", "layer": layer, "head": head,
                         "value": float(model.W_O[layer, head].detach().norm())})
    return rows


def report(rows):
    last = rows[rows["metric"] == "wu_norm"].sort_values("step")["value"].iloc[-1]
    return [f"<h3 id='wu-norm'>W_U norm</h3><p>last wu_norm {last:.6f} over {rows['checkpoint'].nunique()} checkpoints</p>"]


DETECTOR = Detector(
    name="wu_norm", help="Frobenius norm of W_U and of each head's W_O (a plugin)", metrics=("wu_norm", "wo_norm"),
    applies=lambda model: None, prepare=lambda model, run_dir: None, score=score,
    summary=lambda model, run_dir: f"wu_norm: {_wu(model):.6f}", report=report,
)
'''

BROKEN = "import interp_no_such_module  # noqa: F401  (the plugin's dependency is missing)\n"

CLASH = '''
from interp import Detector

DETECTOR = Detector(
    name="heads", help="not the built-in heads", metrics=("fake",), applies=lambda model: None,
    prepare=lambda model, run_dir: None, score=lambda model, context: [{"metric": "fake", "value": 1.0}],
    summary=lambda model, run_dir: "fake heads", report=lambda rows: [],
)
'''


def _write_package(where: Path, dist: str, module: str, entry: str, source: str) -> Path:
    package = where / dist
    package.mkdir(parents=True)
    (package / f"{module}.py").write_text(source)
    (package / "pyproject.toml").write_text(textwrap.dedent(f'''
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{dist}"
        version = "0.1"

        [project.entry-points."interp.detectors"]
        {entry} = "{module}:DETECTOR"

        [tool.setuptools]
        py-modules = ["{module}"]
    '''))
    return package


def _pip_install(target: Path, *packages: Path) -> Path:
    """``pip install --target``: a real installation (dist-info with entry_points.txt), no network."""
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(target), *map(str, packages)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return target


@pytest.fixture(scope="session")
def plugin_dirs(tmp_path_factory) -> dict[str, Path]:
    """``good``: interp-wu-norm; ``bad``: interp-broken-plugin (fails to import) and interp-clash-plugin ("heads")."""
    pytest.importorskip("setuptools")
    root = tmp_path_factory.mktemp("plugins")
    good = _pip_install(root / "good", _write_package(root / "src", "interp-wu-norm", "interp_wu_norm", "wu_norm",
                                                      WU_NORM))
    bad = _pip_install(root / "bad",
                       _write_package(root / "src", "interp-broken-plugin", "interp_broken_plugin", "broken", BROKEN),
                       _write_package(root / "src", "interp-clash-plugin", "interp_clash_plugin", "heads", CLASH))
    return {"good": good, "bad": bad}


def _env(*dirs: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([*map(str, dirs), str(ROOT)]), "PATH": os.environ.get("PATH", "")}


def _expected(run: Path) -> dict[int, float]:
    """step -> norm of W_U, computed here from each checkpoint."""
    return {step: float(load_model(path).W_U.detach().norm()) for step, path in list_checkpoints(run)}


# -- in this process: the installed distributions' entry points, loaded into a registry ---------


def _load(monkeypatch, *dirs: Path) -> tuple[dict, list[str]]:
    for directory in dirs:
        monkeypatch.syspath_prepend(str(directory))
    for module in ("interp_wu_norm", "interp_broken_plugin", "interp_clash_plugin"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setattr(plugins, "SKIPPED", {})
    detectors = {name: DETECTORS[name] for name in ("heads", "fourier", "text", "reasoning")}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plugins.load_plugins(detectors)
    return detectors, [str(w.message) for w in caught if issubclass(w.category, plugins.PluginWarning)]


def test_an_installed_plugin_joins_the_registry_after_the_builtins(plugin_dirs, monkeypatch):
    detectors, said = _load(monkeypatch, plugin_dirs["good"])
    assert said == [] and list(detectors) == ["heads", "fourier", "text", "reasoning", "wu_norm"]
    assert detectors["wu_norm"].metrics == ("wu_norm", "wo_norm")
    assert plugins.plugin_help(["heads"]) == {"wu_norm": "(plugin from interp-wu-norm)"}


def test_a_broken_or_clashing_plugin_is_one_warning_naming_it(plugin_dirs, monkeypatch):
    detectors, said = _load(monkeypatch, plugin_dirs["good"], plugin_dirs["bad"])
    assert list(detectors) == ["heads", "fourier", "text", "reasoning", "wu_norm"]
    assert detectors["heads"] is DETECTORS["heads"]  # the built-in is kept
    assert len(said) == 2 and all("\n" not in line for line in said)
    broken, clash = said  # by distribution name
    assert "broken" in broken and "interp_broken_plugin:DETECTOR" in broken and "interp-broken-plugin 0.1" in broken
    assert "ModuleNotFoundError" in broken and "interp_no_such_module" in broken
    assert "interp-clash-plugin 0.1" in clash and "built-in detector" in clash
    assert set(plugins.SKIPPED) == {"broken", "heads"}


def test_interp_help_lists_plugins_without_importing_torch(plugin_dirs):
    code = ("import sys\nfrom interp.cli import main\ntry:\n    main(['score', '--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'interp_wu_norm' not in sys.modules, 'imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=_env(plugin_dirs["good"], plugin_dirs["bad"]))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "wu_norm: (plugin from interp-wu-norm)" in " ".join(done.stdout.split())
    assert "broken: (plugin from interp-broken-plugin)" in " ".join(done.stdout.split())  # help wraps lines
    assert "not the built-in" not in done.stdout and done.stdout.count("heads:") == 1


# -- the command line in a fresh interpreter, with the distributions on its path -----------------


def _cli(tmp_path: Path, env: dict[str, str], *commands: list[str]) -> subprocess.CompletedProcess:
    """``python -m interp`` for each command, in one interpreter (importing torch once)."""
    code = ("import runpy, sys\nfor argv in %r:\n    sys.argv = ['interp', *argv]\n    try:\n"
            "        runpy.run_module('interp', run_name='__main__')\n    except SystemExit as exc:\n"
            "        assert not exc.code, (argv, exc.code)\n" % ([list(c) for c in commands],))
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=env)


@pytest.mark.slow  # a fresh interpreter that imports torch
def test_a_plugin_scores_inspects_and_reports(plugin_dirs, tiny_runs, tmp_path):
    ind, _ = tiny_runs
    done = _cli(tmp_path, _env(plugin_dirs["good"]), ["score", str(ind), "--out", "t.csv", "--quiet"],
                ["inspect", str(ind)], ["report", "t.csv", "--out", "r.html", "--quiet"])
    assert done.returncode == 0, done.stderr[-3000:]
    table = read_table(tmp_path / "t.csv")
    assert {"heads", "wu_norm"} <= set(table["detector"]) and not (table["metric"] == "error").any()
    wu = table[table["metric"] == "wu_norm"]
    expected = _expected(ind)
    assert dict(zip(wu["step"], wu["value"])) == pytest.approx(expected)
    cfg = load_model(ind).cfg
    assert (table["metric"] == "wo_norm").sum() == len(expected) * cfg.n_layers * cfg.n_heads
    last = expected[max(expected)]
    assert f"wu_norm: {last:.6f}" in done.stdout  # inspect
    page = (tmp_path / "r.html").read_text()
    assert f"last wu_norm {last:.6f} over {len(expected)} checkpoints" in page and "does not know" not in page


@pytest.mark.slow  # a fresh interpreter that imports torch
def test_a_broken_plugin_or_a_clash_leaves_the_rest_working(plugin_dirs, tiny_runs, tmp_path):
    ind, _ = tiny_runs
    done = _cli(tmp_path, _env(plugin_dirs["good"], plugin_dirs["bad"]),
                ["score", str(ind), "--out", "t.csv", "--quiet"], ["inspect", str(ind)])
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if "PluginWarning" in line]
    assert len(lines) == 2, done.stderr[-3000:]  # one line each, once (the registry is built once)
    assert any("interp-broken-plugin" in line and "failed to import" in line for line in lines)
    assert any("interp-clash-plugin" in line and "clashes" in line for line in lines)
    assert not any(line.startswith(" ") for line in done.stderr.splitlines())  # no source line under a warning
    table = read_table(tmp_path / "t.csv")
    assert set(table["detector"]) == {"heads", "wu_norm"} and "fake" not in set(table["metric"])
    assert "fake heads" not in done.stdout


# -- interp.register_detector in this process -----------------------------------------------------


def _local_detector(name: str = "wu_norm_local") -> Detector:
    return Detector(
        name=name, help="norm of W_U (registered in a test)", metrics=("wu_norm",), applies=lambda model: None,
        prepare=lambda model, run_dir: None,
        score=lambda model, context: [{"metric": "wu_norm", "value": float(model.W_U.detach().norm())}],
        summary=lambda model, run_dir: "wu_norm_local", report=lambda rows: [],
    )


@pytest.fixture
def registered():
    detector = register_detector(_local_detector())
    yield detector
    DETECTORS.pop(detector.name, None)


@pytest.mark.parametrize("workers", [1, 2])  # 2: the fork pool on Linux (its workers inherit the registry)
def test_a_registered_detector_scores_in_process_and_in_forked_workers(registered, tiny_runs, workers):
    ind, _ = tiny_runs
    assert registered.name in check_detectors(None)  # the default: every detector registered at the call
    table = score_checkpoints(ind, workers=workers)
    rows = table[table["detector"] == registered.name]
    assert not (table["metric"] == "error").any()
    assert dict(zip(rows["step"], rows["value"])) == pytest.approx(_expected(ind))


def test_a_worker_without_the_registered_detector_gives_an_error_row(tiny_runs):
    ref = find_checkpoints(tiny_runs[0])[0]
    rows = score_task(ScoreTask(ref, ("unregistered",), RunPlan({"unregistered": None})))
    assert [r["metric"] for r in rows] == ["error"] and "not registered in this worker process" in rows[0]["error"]


def test_register_detector_refuses_clashes_and_non_detectors(registered):
    with pytest.raises(ValueError, match="already registered; pass replace=True"):
        register_detector(_local_detector("heads"))
    with pytest.raises(ValueError, match="already registered"):
        register_detector(_local_detector())
    with pytest.raises(TypeError, match="expects an interp.Detector, got dict"):
        register_detector({"name": "x"})
    with pytest.raises(ValueError, match="not a detector name"):
        register_detector(_local_detector("a,b"))
    other = _local_detector()
    assert register_detector(other, replace=True) is other and DETECTORS[other.name] is other
    assert list(DETECTORS)[:4] == ["heads", "fourier", "text", "reasoning"]


@pytest.mark.parametrize("rows, match", [
    ({"metric": "x", "value": 1.0}, "score returned a dict, not a list of row dicts"),
    (["x"], "row 0 is a str, not a dict"),
    ([{"metric": "x", "value": "abc"}], r"row 0 \(x\) has value 'abc', not a number"),  # sank the whole job
    ([{"value": 1.0}], "row 0 has metric None"),  # a traceback and blank metrics
    ([{"metric": "error", "value": 1.0}], "a name other than 'error'"),
    ([{"metric": "x", "value": 1.0, "layer": "zero"}], r"layer, head \('zero', None\)"),
    ([{"metric": "x", "value": 1.0, "detector": "heads", "run": "elsewhere"}], r"sets \['detector', 'run'\]"),
    ([{"metric": "x", "value": 1.0}, {"metric": "x", "value": 2.0}], r"row 1 repeats x"),  # two values, one key
])
def test_a_detectors_bad_rows_are_its_error_row_and_the_rest_is_scored(tiny_runs, rows, match):
    bad = _local_detector("bad_rows")
    register_detector(dataclasses.replace(bad, score=lambda model, context: rows))
    try:
        table = score_checkpoints(tiny_runs[0], detectors=["heads", "bad_rows"])
    finally:
        DETECTORS.pop("bad_rows", None)
    errors = table[table["detector"] == "bad_rows"]
    assert (errors["metric"] == "error").all() and errors["error"].str.contains(match).all()
    assert errors["checkpoint"].nunique() == table["checkpoint"].nunique()
    assert not (table[table["detector"] == "heads"]["metric"] == "error").any()  # the others' rows stay


def test_the_line_of_a_failing_detector_names_it(tiny_runs, tmp_path, capsys):
    from interp.cli import main

    def boom(model, context):
        raise RuntimeError("boom")

    register_detector(dataclasses.replace(_local_detector("raiser"), score=boom))
    try:
        assert main(["score", str(tiny_runs[0]), "--detectors", "raiser", "--out", str(tmp_path / "t.csv"),
                     "--quiet"]) == 1
    finally:
        DETECTORS.pop("raiser", None)
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(re.search(r"^interp: could not score \S+ with raiser: RuntimeError: boom$", line)
                         for line in lines)  # the detector went unnamed
