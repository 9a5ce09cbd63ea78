"""Shared fixtures: the published grokking checkpoint, tiny runs, and real training runs (trained once).

Tiers: ``python -m pytest -m "not slow"`` is the quick tier (under a minute: hand-built and
tiny models); tests marked ``slow`` train full models (the default recipes, notebooks), start
processes (a new interpreter pays seconds of imports) or wait out a timeout.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO.parent / "shared" / "data" / "nanda2023_modadd_p113_frac0.3.pth"


@pytest.fixture(scope="session")
def published_path() -> Path:
    if not PUBLISHED.exists():
        pytest.skip(f"published grokking model not found at {PUBLISHED} (shared/data/ beside the repository)")
    return PUBLISHED


@pytest.fixture(scope="session")
def induction_run(tmp_path_factory) -> Path:
    """`interp train induction` with no options: the default recipe, trained for real."""
    from interp.cli import main

    out = tmp_path_factory.mktemp("runs") / "induction"
    assert main(["train", "induction", "--out-dir", str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="session")
def modadd_run(tmp_path_factory) -> Path:
    """`interp train modadd` with no options: the fast preset, trained until it groks."""
    from interp.cli import main

    out = tmp_path_factory.mktemp("runs") / "modadd"
    assert main(["train", "modadd", "--out-dir", str(out), "--quiet"]) == 0
    return out


TINY_INDUCTION_ARGS = ["--steps", "20", "--checkpoint-every", "5", "--quiet"]
TINY_MODADD_ARGS = ["--steps", "10", "--checkpoint-every", "5", "--quiet"]


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> tuple[Path, Path]:
    """An induction run (8 checkpoints) and a modular-addition run (6 checkpoints), trained once.

    Seconds, not minutes; tests must not modify them (copy them first).
    """
    from interp.cli import main

    root = tmp_path_factory.mktemp("tiny_runs")
    ind, mod = root / "ind", root / "mod"
    assert main(["train", "induction", "--out-dir", str(ind), *TINY_INDUCTION_ARGS]) == 0
    assert main(["train", "modadd", "--out-dir", str(mod), *TINY_MODADD_ARGS]) == 0
    return ind, mod
