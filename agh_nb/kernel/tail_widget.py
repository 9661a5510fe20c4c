"""``%agh tail ID``: a live event tail: newest events streaming in, coloured by type.

Owns: ``EventTail``. Events arrive from the store's writer thread after they are committed
(store first, then show); rendering is throttled and the scrollback bounded. Every agent-provided
string is HTML-escaped: nothing an agent says becomes markup.
"""

from __future__ import annotations

import html
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import ipywidgets as widgets

from agh_nb.events import Event
from agh_nb.kernel.describe import summary as _summary

COLOURS = {
    "user_message": "#1f6feb",
    "agent_message": "#24292f",
    "thought": "#8250df",
    "tool_call": "#bf8700",
    "tool_result": "#1a7f37",
    "plan": "#0969da",
    "permission": "#cf222e",
    "usage": "#57606a",
    "runtime_progress": "#57606a",
    "runtime_warning": "#bc4c00",
    "system": "#57606a",
    "done": "#1a7f37",
    "error": "#cf222e",
    "session_stopped": "#cf222e",
}
RENDER_INTERVAL = 0.2


class EventTail(widgets.VBox):  # type: ignore[misc]
    """A bounded, live view of one session's newest events.

    Args:
        host: the embedded host.
        session_id: the session to follow.
        scrollback: how many rows to keep (older rows fall off).
        backlog: how many stored events to show first.
    """

    def __init__(self, host: Any, session_id: str, *, scrollback: int = 300, backlog: int = 50) -> None:
        self.session_id = session_id
        self._rows: deque[Event] = deque(maxlen=scrollback)
        self._lock = threading.Lock()
        self._dirty = False
        self._last_render = 0.0
        self._timer: threading.Timer | None = None
        self.count = 0
        self._html = widgets.HTML(layout=widgets.Layout(max_height="24em", overflow="auto"))
        self._title = widgets.HTML(f"<b>Events</b> — {html.escape(session_id)}")
        super().__init__([self._title, self._html])
        recent = host.events(session_id, _last(backlog))
        after = recent[0].sequence - 1 if recent else 0
        self._subscription = host.subscribe(session_id, after, self._on_events)
        self._render()

    def _on_events(self, events: Sequence[Event]) -> None:
        with self._lock:
            self._rows.extend(events)
            self.count += len(events)
        now = time.monotonic()
        if now - self._last_render >= RENDER_INTERVAL:
            self._render()
        elif self._timer is None:
            self._timer = threading.Timer(RENDER_INTERVAL, self._render)
            self._timer.daemon = True
            self._timer.start()

    def _render(self) -> None:
        with self._lock:
            rows = list(self._rows)
            self._timer = None
        self._last_render = time.monotonic()
        lines = []
        for event in reversed(rows):
            colour = COLOURS.get(event.type, "#24292f")
            text = _summary(event)
            if len(text) > 300:
                text = text[:299] + "…"
            lines.append(
                "<div style='font-family:monospace;font-size:85%;white-space:pre-wrap'>"
                f"<span style='color:#999'>#{event.sequence}</span> "
                f"<span style='color:{colour};font-weight:bold'>{html.escape(event.type)}</span> "
                f"{html.escape(text)}</div>"
            )
        self._html.value = "".join(lines) or "<i>No events yet.</i>"

    def sequences(self) -> list[int]:
        """Sequences currently held, oldest first."""
        with self._lock:
            return [e.sequence for e in self._rows]

    def close(self) -> None:
        """Stop following and close the widget."""
        self._subscription.close()
        super().close()


def _last(n: int) -> Any:
    from agh_nb.events import EventQuery

    return EventQuery(limit=n)
