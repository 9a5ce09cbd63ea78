"""The two errors of the run format (importable from :mod:`interp.runs.layout` and from ``interp``)."""

from __future__ import annotations

__all__ = ["CheckpointError", "RunError"]


class RunError(ValueError):
    """A run directory that cannot be read, started or resumed as asked."""


class CheckpointError(ValueError):
    """A checkpoint or run directory that cannot be read: missing, truncated, corrupt, or foreign."""
