"""Which code is running: the git commit of the checkout the toolkit is imported from.

``run.json`` records it beside the toolkit's version (``interp/runs/record.py``), so a run
names the exact code that trained it when that code is a git checkout. Git is asked with a
short timeout and never raises: without git, outside a checkout, or on any failure the answer
is None.
"""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path

__all__ = ["GIT_TIMEOUT_S", "git_commit", "toolkit_commit"]

#: Seconds one git command may take before the answer is None.
GIT_TIMEOUT_S = 3.0

_COMMIT = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")  # SHA-1 or SHA-256


def _git(directory: Path, *args: str) -> str | None:
    """The stripped output of ``git -C directory ARGS``, or None when git fails, is missing or is slow."""
    try:
        done = subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError, ValueError, UnicodeError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_commit(directory: str | Path) -> str | None:
    """``git rev-parse HEAD`` of the checkout that tracks ``directory``'s files, or None.

    ``-dirty`` is appended when a tracked file differs from that commit (``git status
    --porcelain --untracked-files=no`` lists something; untracked files do not count). None when
    ``directory`` holds no file tracked by a git checkout (not in one, or in an ignored folder
    of one, such as a virtual environment inside a repository), when git is missing, or when a
    git command fails or takes longer than :data:`GIT_TIMEOUT_S`. Never raises.
    """
    try:
        directory = Path(directory)
        if not directory.is_dir():
            return None
        head = _git(directory, "rev-parse", "HEAD")
        if head is None or not _COMMIT.fullmatch(head):
            return None
        if not _git(directory, "ls-files", "--", "."):
            return None  # a directory the checkout does not track
        status = _git(directory, "status", "--porcelain", "--untracked-files=no")
        if status is None:
            return None
        return head + ("-dirty" if status else "")
    except Exception:  # a provenance field must never stop a run
        return None


@functools.cache
def toolkit_commit() -> str | None:
    """:func:`git_commit` of the ``interp`` package's own directory, looked up once per process."""
    return git_commit(Path(__file__).resolve().parents[1])
