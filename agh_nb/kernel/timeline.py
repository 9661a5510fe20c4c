"""A timeline chart of a session: one bar per turn, tool calls as bars inside it.

Owns: ``timeline_figure``. Pure matplotlib (Agg-safe); labels are plain text, never markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agh_nb.events import Event


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
            entry = calls.setdefault((e.turn_id, str(call_id)), [str(e.content.get("title") or call_id), t, t, False])
            entry[2] = max(entry[2], t)
            if e.type == "tool_result":
                entry[3] = bool(e.content.get("tool_error"))
    turn_rows = [(tid, s, max(end - s, 0.05), stops.get(tid, "running")) for tid, (s, end) in turns.items()]
    call_rows = [(tid, title, s, max(end - s, 0.05), failed) for (tid, _), (title, s, end, failed) in calls.items()]
    return turn_rows, call_rows


class TimelineChart:
    """A timeline that shows itself as a PNG in a notebook (no pyplot or backend needed)."""

    def __init__(self, figure: Any) -> None:
        self.figure = figure

    def _repr_png_(self) -> bytes:
        import io

        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()

    def __repr__(self) -> str:
        return f"<TimelineChart {self.figure.axes[0].get_title() if self.figure.axes else ''}>"


def timeline_chart(session_id: str, events: Sequence[Event]) -> TimelineChart:
    """Return the session's timeline as a displayable chart (``.figure`` is the matplotlib Figure)."""
    return TimelineChart(timeline_figure(session_id, events))


def timeline_figure(session_id: str, events: Sequence[Event]) -> Any:
    """Return a matplotlib Figure: turns (grey) and their tool calls (green, red if failed)."""
    from matplotlib.figure import Figure

    turn_rows, call_rows = _spans(events)
    height = 1.2 + 0.35 * (len(turn_rows) + len(call_rows))
    fig = Figure(figsize=(9, min(height, 12)))
    ax = fig.add_subplot()
    labels: list[str] = []
    y = 0
    for tid, start, width, stop in turn_rows:
        ax.barh(y, width, left=start, color="#8c959f")
        labels.append(f"{tid} ({stop})")
        y += 1
        for call_tid, title, cstart, cwidth, failed in call_rows:
            if call_tid == tid:
                ax.barh(y, cwidth, left=cstart, color="#cf222e" if failed else "#2da44e")
                labels.append(f"  {title[:40]}")
                y += 1
    ax.set_yticks(range(len(labels)), labels=labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the session's first event")
    ax.set_title(f"{session_id}: turns and tool calls")
    fig.tight_layout()
    return fig
