"""The toolkit's progress bars: tqdm, quiet when asked, sparse when nobody watches a terminal.

On a terminal a bar redraws as tqdm likes (every 0.1 s at most). Written to a file or a CI log
(the bar's stream is not a terminal), every redraw is a carriage return plus a line that stays in
the log, so the bar redraws at most once every :data:`LOG_INTERVAL` seconds, ``set_postfix``
and ``set_description`` included, and the final state is written when it closes. ``quiet``
disables the bar, and so does a job with nothing to do.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

__all__ = ["LOG_INTERVAL", "on_terminal", "progress_bar"]

#: Seconds between two redraws of a bar whose stream is not a terminal.
LOG_INTERVAL = 5.0


class _LogBar(tqdm):
    """A bar for a log: postfix and description changes wait for the next timed redraw."""

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        super().set_description(desc, refresh=False)


def on_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an interactive terminal (False for files, pipes, None)."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def progress_bar(iterable: Any = None, *, quiet: bool = False, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)`` with the policy of the module docstring; disabled when ``quiet``
    or when there is nothing to do (``total`` 0, or an empty sized ``iterable``)."""
    total = kwargs.get("total", len(iterable) if hasattr(iterable, "__len__") else None)
    quiet = quiet or total == 0
    stream = kwargs.get("file") or sys.stderr
    if on_terminal(stream):
        return tqdm(iterable, disable=quiet, **kwargs)
    kwargs.setdefault("mininterval", LOG_INTERVAL)
    return _LogBar(iterable, disable=quiet, **kwargs)
