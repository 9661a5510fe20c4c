"""``--wait`` in IPython: where its progress line goes and whether a person can answer on stdin.

Owns: ``stdin_allowed``, ``NotebookLine`` (a display updated in place, for front ends that
render displays) and ``progress_line`` (that, or a ``TerminalLine`` rewritten with a carriage
return when IPython runs in a terminal, where every display would print a new line). The wait
itself is ``agh_nb.waiting.TurnWaiter``. Must not import ``agh_nb.server``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO

from agh_nb.waiting import ProgressLine, TerminalLine


def _shell() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return None
    return get_ipython()


def in_terminal() -> bool:
    """True when no notebook front end renders displays: terminal IPython, or no IPython."""
    shell = _shell()
    return shell is None or getattr(shell, "kernel", None) is None


def stdin_allowed() -> bool:
    """True when ``input()`` can reach a person: an IPython kernel whose current execute request
    allows stdin, or a terminal IPython / plain interpreter on a TTY."""
    shell = _shell()
    kernel = getattr(shell, "kernel", None) if shell is not None else None
    if kernel is None:  # terminal IPython, or no IPython
        return bool(sys.stdin and sys.stdin.isatty())
    return bool(getattr(kernel, "_allow_stdin", False))


class NotebookLine:
    """A progress line shown as a display and updated in place (``update_display_data``)."""

    def __init__(self, text: str) -> None:
        from IPython.display import display

        self._handle = display(_pretty(text), display_id=True)  # type: ignore[no-untyped-call]

    def update(self, text: str) -> None:
        """Replace the shown text."""
        if self._handle is not None:
            self._handle.update(_pretty(text))

    def close(self) -> None:
        """Nothing to end: the display keeps the last text."""


def progress_line(stream: TextIO | None = None) -> Callable[[str], ProgressLine]:
    """The progress line of this front end: a display in a notebook, a carriage-return line in
    a terminal (on ``stream``, default stdout)."""
    if in_terminal():
        out = stream or sys.stdout

        def terminal(text: str) -> ProgressLine:
            line = TerminalLine(out)
            line.update(text)
            return line

        return terminal
    return NotebookLine


def _pretty(text: str) -> Any:
    from IPython.display import Pretty

    return Pretty(text)  # type: ignore[no-untyped-call]
