"""One line describing an exception, for error rows and one-line messages."""

from __future__ import annotations

__all__ = ["first_line", "one_line"]


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message ("" when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def one_line(exc: BaseException) -> str:
    """``"TypeName: first line of the message"``, or ``"TypeName"`` for an empty message."""
    text = first_line(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
