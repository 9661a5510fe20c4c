"""``%agh tail ID``: a live event tail: newest rows first, coloured by type.

Owns: ``EventTail`` and the folding of events into rows (``TailRows``). A tool call and its
updates and result share one row (an HTML ``<details>`` whose summary is the call and its key
result fields, and whose body, folded, is the whole result or error as ``key: value`` lines);
consecutive message (or thought) chunks of one turn grow one row, joined with the spacing a
reader expects; a turn's plan is one row, updated as the agent revises it and marked final when
the turn ends (steps left open read "not finished", not "in progress" forever).
Every row reads ``#<sequence> <type> <summary>``, the sequence and type being those of the row's
newest event. Events arrive on the subscription's delivery thread after they are committed (store first,
then show); rendering is throttled and the scrollback bounded. Every agent-provided string is
HTML-escaped: nothing an agent says becomes markup. Must not import ``agh_nb.server``.
"""

from __future__ import annotations

import dataclasses
import html
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets

from agh_nb.core.host import HostProtocol
from agh_nb.events import Event, EventQuery
from agh_nb.output import as_text as _as_text
from agh_nb.output import join_chunks, plan_entries, plan_line, preview_is_whole, result_body, result_preview
from agh_nb.output import summary as _summary

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
FAILED_COLOUR = "#cf222e"
RENDER_INTERVAL = 0.2
CHUNK_TYPES = frozenset({"agent_message", "thought"})
TOOL_TYPES = frozenset({"tool_call", "tool_result"})
SUMMARY_CHARS = 300  # one row's visible summary
PREVIEW_CHARS = 80  # of a tool result or error in its row's summary
TEXT_CHARS = 4000  # what a growing message row or a result body keeps (the newest text)

_ROW_STYLE = "font-family:monospace;font-size:85%;white-space:pre-wrap;margin:0"
_BODY_STYLE = "margin:2px 0 4px 2em;padding:4px;background:#f6f8fa;max-height:12em;overflow:auto;white-space:pre-wrap"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _keep_newest(text: str, limit: int) -> str:
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


@dataclass
class TailRow:
    """One row of the tail: a single event, a run of message chunks, or one tool call.

    Attributes:
        type: the type word shown (that of the newest event folded in).
        sequence: the newest event's sequence.
        turn_id: the turn the row belongs to.
        text: the summary (the joined text of a chunk run).
        events: how many events the row folds.
        title, kind, status: a tool call's title, ACP kind and last status.
        result, error: a tool call's result (as ``key: value`` lines) and error text, once it
            finished.
        preview: the result's key fields in one line.
        whole: True when the preview shows the whole result (nothing to unfold).
        finished: True once the tool call's ``tool_result`` arrived.
        plan: a plan row's entries, ``(status, text)``.
        ended: a plan row's turn stop reason, once the turn ended.
    """

    type: str
    sequence: int
    turn_id: str | None
    text: str = ""
    events: int = 1
    title: str = ""
    kind: str = ""
    status: str = ""
    result: str = ""
    error: str = ""
    preview: str = ""
    whole: bool = True
    finished: bool = False
    plan: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    ended: str | None = None

    @property
    def is_tool(self) -> bool:
        """True for a tool-call row."""
        return self.type in TOOL_TYPES

    def headline(self) -> str:
        """The plain-text summary shown after ``#<sequence> <type>`` (never markup)."""
        if self.type in CHUNK_TYPES:
            # A growing message shows its newest text; its line breaks are kept.
            return _keep_newest(self.text.strip(), SUMMARY_CHARS)
        if self.type == "plan" and self.plan:
            return plan_line(self.plan, ended=self.ended)
        if not self.is_tool:
            return " ".join(self.text.split())
        bits = [self.title or "(untitled tool call)"]
        if self.kind:
            bits.append(f"[{self.kind}]")
        if self.error:
            bits.append(f"✗ error: {_clip(' '.join(self.error.split()), PREVIEW_CHARS)}")
        elif self.finished:
            bits.append(f"→ {self.preview}" if self.preview else "✓")
        elif self.status:
            bits.append(f"({self.status})")
        return " ".join(bits)

    def body(self) -> str:
        """What a tool row's ``<details>`` opens to: the whole result and error, or '' when the
        headline already shows all of it."""
        if not self.is_tool:
            return ""
        if self.error and self.result:
            return f"{self.error}\n{self.result}"
        if self.error:
            long = "\n" in self.error.strip() or len(" ".join(self.error.split())) > PREVIEW_CHARS
            return self.error if long else ""
        return "" if self.whole else self.result


class TailRows:
    """Events folded into rows, oldest first, at most ``limit`` rows (older ones fall off).

    Not thread-safe on its own: ``EventTail`` holds a lock around it.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._rows: OrderedDict[tuple[Any, ...], TailRow] = OrderedDict()
        self._last_key: tuple[Any, ...] | None = None
        self.count = 0
        self.last: Event | None = None

    def add(self, event: Event) -> None:
        """Fold one event in (events must come in sequence order)."""
        self.count += 1
        self.last = event
        c = event.content
        key: tuple[Any, ...]
        if event.type in CHUNK_TYPES:
            text = str(c.get("text") or "")
            previous = self._rows.get(self._last_key) if self._last_key is not None else None
            if previous is not None and previous.type == event.type and previous.turn_id == event.turn_id:
                previous.text = _keep_newest(join_chunks(previous.text, text), TEXT_CHARS)
                previous.sequence = event.sequence
                previous.events += 1
                return
            key = ("chunks", event.sequence)
            self._put(key, TailRow(event.type, event.sequence, event.turn_id, text=_keep_newest(text, TEXT_CHARS)))
        elif event.type in TOOL_TYPES and c.get("tool_call_id"):
            key = ("tool", event.turn_id, str(c["tool_call_id"]))
            row = self._rows.get(key)
            if row is None:
                row = TailRow(event.type, event.sequence, event.turn_id, events=0)
            row.type = event.type
            row.sequence = event.sequence
            row.events += 1
            row.title = str(c.get("title") or row.title or "")
            row.kind = str(c.get("tool_name") or row.kind or "")
            raw = c.get("raw")
            if isinstance(raw, dict) and raw.get("status"):
                row.status = str(raw["status"])
            if event.type == "tool_result":
                row.finished = True
                row.error = _keep_newest(_as_text(c.get("tool_error")), TEXT_CHARS)
                row.result = _keep_newest(result_body(c.get("tool_result")), TEXT_CHARS)
                row.preview = result_preview(c.get("tool_result"))
                row.whole = preview_is_whole(c.get("tool_result"))
            self._put(key, row)
        elif event.type == "plan":
            key = ("plan", event.turn_id, str(c.get("title") or "plan"))
            row = self._rows.get(key) or TailRow(event.type, event.sequence, event.turn_id, events=0)
            row.sequence = event.sequence
            row.events += 1
            row.text = _summary(event)
            row.plan = plan_entries(c)
            self._put(key, row)
        else:
            if event.type == "done":
                self._end_plans(event.turn_id, str(c.get("stop_reason") or "ended"))
            key = ("event", event.sequence)
            self._put(key, TailRow(event.type, event.sequence, event.turn_id, text=_summary(event)))
        self._last_key = key

    def _end_plans(self, turn_id: str | None, stop_reason: str) -> None:
        # The turn is over: its plan shows its final state (in place: the row does not move).
        for key, row in self._rows.items():
            if key[0] == "plan" and row.turn_id == turn_id:
                row.ended = stop_reason

    def _put(self, key: tuple[Any, ...], row: TailRow) -> None:
        # An updated row moves to the newest end: rows stay ordered by their newest sequence.
        self._rows[key] = row
        self._rows.move_to_end(key)
        while len(self._rows) > self.limit:
            dropped, _ = self._rows.popitem(last=False)
            if dropped == self._last_key:
                self._last_key = None

    def rows(self) -> list[TailRow]:
        """Copies of the rows, oldest first."""
        return [dataclasses.replace(row) for row in self._rows.values()]

    def render(self) -> str:
        """The rows as HTML, newest first."""
        return "".join(render_row(row) for row in reversed(self._rows.values()))

    def sequences(self) -> list[int]:
        """Each row's newest sequence, oldest row first."""
        return [row.sequence for row in self._rows.values()]


def render_row(row: TailRow) -> str:
    """One row as HTML: ``#<sequence> <type> <summary>``; every agent string escaped."""
    failed = row.is_tool and bool(row.error)
    colour = FAILED_COLOUR if failed else COLOURS.get(row.type, "#24292f")
    head = (
        f"<span style='color:#999'>#{row.sequence}</span> "
        f"<span style='color:{colour};font-weight:bold'>{html.escape(row.type)}</span> "
        f"{html.escape(_clip(row.headline(), SUMMARY_CHARS))}"
    )
    body = row.body()
    if body:
        return (
            f"<details style='{_ROW_STYLE}'><summary style='cursor:pointer'>{head}</summary>"
            f"<div style='{_BODY_STYLE}'>{html.escape(body)}</div></details>"
        )
    return f"<div style='{_ROW_STYLE}'>{head}</div>"


class EventTail(widgets.VBox):  # type: ignore[misc]
    """A bounded, live view of one session's newest events, folded into rows, newest first.

    Args:
        host: the process-wide host (embedded or remote).
        session_id: the session to follow.
        scrollback: how many rows to keep (older rows fall off).
        backlog: how many stored events to show first.
    """

    def __init__(self, host: HostProtocol, session_id: str, *, scrollback: int = 300, backlog: int = 50) -> None:
        self.session_id = session_id
        self._folded = TailRows(scrollback)
        self._lock = threading.Lock()
        self._last_render = 0.0
        self._timer: threading.Timer | None = None
        self._html = widgets.HTML(layout=widgets.Layout(max_height="24em", overflow="auto"))
        name = host.get(session_id).name
        label = f"{html.escape(name)} <span style='color:#57606a'>{html.escape(session_id)}</span>" if name else html.escape(session_id)
        self._title = widgets.HTML(f"<b>Events</b> — {label}")
        super().__init__([self._title, self._html])
        # The backlog is shown at once (and in the plain-text form); the subscription picks up
        # right after it, with no gap and no duplicate.
        recent = host.events(session_id, EventQuery(limit=backlog))
        for event in recent:
            self._folded.add(event)
        after = recent[-1].sequence if recent else 0
        self._render()
        self._subscription = host.subscribe(session_id, after, self._on_events)

    @property
    def count(self) -> int:
        """How many events the tail has received (backlog included)."""
        with self._lock:
            return self._folded.count

    def _on_events(self, events: Sequence[Event]) -> None:
        with self._lock:
            for event in events:
                self._folded.add(event)
        now = time.monotonic()
        if now - self._last_render >= RENDER_INTERVAL:
            self._render()
        else:
            with self._lock:
                if self._timer is not None:
                    return
                self._timer = threading.Timer(RENDER_INTERVAL, self._render)
                self._timer.daemon = True
                self._timer.start()

    def _render(self) -> None:
        with self._lock:  # the delivery thread folds new events into the rows meanwhile
            page = self._folded.render()
            self._timer = None
        self._last_render = time.monotonic()
        self._html.value = page or "<i>No events yet.</i>"

    def rows(self) -> list[TailRow]:
        """The rows currently held, oldest first."""
        with self._lock:
            return self._folded.rows()

    def sequences(self) -> list[int]:
        """Each row's newest sequence, oldest row first."""
        with self._lock:
            return self._folded.sequences()

    def text_summary(self) -> str:
        """One line for plain-text front ends, e.g. ``Event tail of sess_x: 12 events, last #12 done``."""
        with self._lock:
            count, last = self._folded.count, self._folded.last
        if last is None:
            return f"Event tail of {self.session_id}: no events yet"
        return f"Event tail of {self.session_id}: {count} event{'s' if count != 1 else ''}, last #{last.sequence} {last.type}"

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):
            bundle["text/plain"] = self.text_summary()
        return bundle

    def close(self) -> None:
        """Stop following and close the widget."""
        subscription = getattr(self, "_subscription", None)
        if subscription is not None:
            subscription.close()
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        super().close()
