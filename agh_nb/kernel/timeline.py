"""A timeline chart of a session: one bar per turn, tool calls as bars inside it.

Owns: ``timeline_figure`` and ``TimelineChart``. Pure matplotlib (no pyplot, Agg-safe). Labels
made of agent text are plain text, never markup: matplotlib would read ``$...$`` as mathtext
(and TeX, with ``text.usetex``), so the chart is drawn with mathtext parsing off and agent text
never goes through TeX. A chart that cannot be drawn raises one ``AghError`` line. Must not
import ``agh_nb.server``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from agh_nb.errors import AghError
from agh_nb.events import Event

TITLE_CHARS = 40  # of a tool call's title on the chart
MAX_ROWS = 60  # bars drawn; a longer session shows its newest turns

def _spans(events: Sequence[Event]) -> tuple[list[tuple[str, float, float, str]], list[tuple[str, str, float, float, bool]]]:
    if not events:
        return [], []
    t0 = events[0].timestamp
    seconds = {e.sequence: (e.timestamp - t0).total_seconds() for e in events}
    turns: dict[str, list[float]] = {}
    stops: dict[str, str] = {}
    calls: dict[tuple[str, str], list[Any]] = {}
    for e in events:
        if not e.turn_id:
            continue
        t = seconds[e.sequence]
        span = turns.setdefault(e.turn_id, [t, t])
        span[1] = max(span[1], t)
        if e.type == "done":
            stops[e.turn_id] = str(e.content.get("stop_reason") or "")
        call_id = e.content.get("tool_call_id")
        if e.type in ("tool_call", "tool_result") and call_id:
            entry = calls.setdefault((e.turn_id, str(call_id)), [str(call_id), t, t, False])
            if e.content.get("title"):
                entry[0] = str(e.content["title"])
            entry[2] = max(entry[2], t)
            if e.type == "tool_result":
                entry[3] = bool(e.content.get("tool_error"))
    turn_rows = [(tid, s, max(end - s, 0.05), stops.get(tid, "running")) for tid, (s, end) in turns.items()]
    call_rows = [(tid, title, s, max(end - s, 0.05), failed) for (tid, _), (title, s, end, failed) in calls.items()]
    return turn_rows, call_rows


def _label(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1] + "…"


class TimelineChart:
    """A timeline that shows itself as a PNG in a notebook (no pyplot or backend needed).

    Attributes:
        figure: the matplotlib Figure.
        png: the chart drawn as PNG bytes (drawn once, when the chart was made).
    """

    def __init__(self, figure: Any, png: bytes) -> None:
        self.figure = figure
        self.png = png

    def _repr_png_(self) -> bytes:
        return self.png

    def __repr__(self) -> str:
        return f"<TimelineChart {self.figure.axes[0].get_title() if self.figure.axes else ''}>"


def timeline_chart(session_id: str, events: Sequence[Event], *, name: str | None = None) -> TimelineChart:
    """Return the session's timeline as a displayable chart (``.figure`` is the matplotlib Figure),
    titled by the session's ``name`` when it has one (its id otherwise).

    Raises:
        AghError: when the chart cannot be drawn (one line naming the session and the cause).
    """
    import io

    try:
        figure = timeline_figure(session_id, events, name=name)
        buffer = io.BytesIO()
        with _drawing():
            figure.savefig(buffer, format="png", dpi=100)
    except AghError:
        raise
    except Exception as exc:  # matplotlib raises many kinds; the user gets one line either way
        cause = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise AghError(f"cannot draw the timeline of {session_id}: {cause}") from exc
    return TimelineChart(figure, buffer.getvalue())


def _drawing() -> Any:
    """A context for building and drawing the chart: no mathtext anywhere, quiet about glyphs."""
    import contextlib

    import matplotlib

    stack = contextlib.ExitStack()
    stack.enter_context(matplotlib.rc_context({"text.parse_math": False}))
    stack.enter_context(warnings.catch_warnings())
    # Agent text may hold characters the font lacks (emoji...): a box is drawn, no warning shown.
    warnings.filterwarnings("ignore", message=r"Glyph .* missing from", category=UserWarning)
    return stack


def timeline_figure(session_id: str, events: Sequence[Event], *, name: str | None = None) -> Any:
    """Return a matplotlib Figure: turns (grey) and their tool calls (green, red if failed), titled
    ``<name> (<id>)`` or ``<id>``.

    Every label is plain text (agent text is never parsed as mathtext or TeX).
    """
    from matplotlib.figure import Figure

    with _drawing():
        turn_rows, call_rows = _spans(events)
        rows: list[tuple[str, float, float, str]] = []  # (label, start, width, colour)
        for tid, start, width, stop in turn_rows:
            rows.append((f"{tid} ({stop})", start, width, "#8c959f"))
            for call_tid, title, cstart, cwidth, failed in call_rows:
                if call_tid == tid:
                    rows.append((f"  {_label(title)}", cstart, cwidth, "#cf222e" if failed else "#2da44e"))
        hidden = max(0, len(rows) - MAX_ROWS)
        rows = rows[hidden:]
        height = 1.2 + 0.35 * len(rows)
        fig = Figure(figsize=(9, min(height, 12)))
        ax = fig.add_subplot()
        for y, (_label_text, start, width, colour) in enumerate(rows):
            ax.barh(y, width, left=start, color=colour)
        ax.set_yticks(range(len(rows)), labels=[r[0] for r in rows], fontsize=8, parse_math=False, usetex=False)
        ax.invert_yaxis()
        ax.set_xlabel("seconds since the session's first event")
        who = f"{_label(name)} ({session_id})" if name else session_id
        title = f"{who}: turns and tool calls" + (f" (the newest {len(rows)} rows)" if hidden else "")
        ax.set_title(title, parse_math=False, usetex=False)
        fig.tight_layout()
    return fig
