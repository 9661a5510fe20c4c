"""The event vocabulary shared by the store, the streams and the widgets (SPEC section 4).

Owns: ``EventType``, the ``EventDraft`` a producer hands to the store, the stored ``Event``
row, and the canonical ``content`` envelope. Imports only ``errors``; never acp or duckdb.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

import orjson

EVENT_SCHEMA = "agh.session.event.v1"

JSON = dict[str, Any]


class EventType(str, Enum):
    """Every event ``type`` the store accepts; values are the SPEC's exact strings."""

    USER_MESSAGE = "user_message"
    AGENT_MESSAGE = "agent_message"
    THOUGHT = "thought"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    PLAN = "plan"
    PERMISSION = "permission"
    USAGE = "usage"
    RUNTIME_PROGRESS = "runtime_progress"
    RUNTIME_WARNING = "runtime_warning"
    SYSTEM = "system"
    DONE = "done"
    ERROR = "error"
    SESSION_STOPPED = "session_stopped"
    MODE_CHANGED = "mode_changed"
    CONFIG_CHANGED = "config_changed"
    COMMANDS_AVAILABLE = "commands_available"

    def __str__(self) -> str:
        return self.value


# Optional envelope fields, in the SPEC's order; anything else goes under ``raw``/``runtime``.
ENVELOPE_FIELDS = (
    "text",
    "title",
    "tool_name",
    "tool_call_id",
    "tool_input",
    "tool_result",
    "tool_error",
    "stop_reason",
    "failure",
    "request_id",
    "action",
    "resource",
    "decision",
    "error",
    "usage",
    "runtime",
    "raw",
)


_ENVELOPE_SET = frozenset(ENVELOPE_FIELDS)


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(timezone.utc)


def format_timestamp(ts: datetime) -> str:
    """Render a timestamp as RFC3339 UTC with microseconds and a ``Z`` suffix."""
    if ts.tzinfo is not timezone.utc:
        ts = ts.astimezone(timezone.utc)
    if ts.microsecond:
        # Once per event: orjson's C formatter is four times faster than isoformat. It leaves
        # out a zero fraction, hence the other branch.
        return orjson.dumps(ts, option=orjson.OPT_UTC_Z)[1:-1].decode("ascii")
    return ts.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


@dataclass(frozen=True, slots=True)
class EventDraft:
    """An event before the store gives it a sequence: what producers emit.

    Attributes:
        type: the event type.
        turn_id: the prompt turn it belongs to, or None for session-level events.
        fields: envelope fields (keys from ``ENVELOPE_FIELDS``).
        timestamp: when it happened (UTC); defaults to now.
    """

    type: EventType
    turn_id: str | None = None
    fields: JSON = field(default_factory=dict)
    timestamp: datetime = field(default_factory=utcnow)


_UNDECODED: Any = object()
"""``Event._content`` of a stored row not decoded yet (``Event.stored``)."""

_EVENT_FIELDS = (
    "id", "session_id", "sequence", "turn_id", "type", "agent_name", "workspace_id", "workspace_path",
    "content", "timestamp",
)


class Event:
    """One stored event row (SPEC 4). ``content`` is the canonical JSON envelope.

    Immutable, compared by value (``content_text`` aside). Built from a stored row
    (``Event.stored``), its ``content`` is decoded from the store's own text on first use: the
    writer hands every committed row to the subscribers of its session, and the SSE streams
    frame rows from that text (``to_json``) without ever reading ``content`` (measured: decoding
    them was 15% of the writer thread under 50 streaming sessions, benchmarks/server.py).
    """

    __slots__ = (
        "id", "session_id", "sequence", "turn_id", "type", "agent_name", "workspace_id", "workspace_path",
        "_content", "timestamp", "content_text",
    )
    id: str
    session_id: str
    sequence: int
    turn_id: str | None
    type: str
    agent_name: str
    workspace_id: str
    workspace_path: str
    _content: JSON
    timestamp: datetime
    content_text: str | None
    """``content`` as the store holds it (compact JSON), when the event was built from a stored
    row: lets the SSE stream frame a row without encoding its content again."""

    def __init__(
        self,
        id: str,  # noqa: A002 - the column's name
        session_id: str,
        sequence: int,
        turn_id: str | None,
        type: str,  # noqa: A002 - the column's name
        agent_name: str,
        workspace_id: str,
        workspace_path: str,
        content: JSON,
        timestamp: datetime,
        content_text: str | None = None,
    ) -> None:
        put = object.__setattr__
        put(self, "id", id)
        put(self, "session_id", session_id)
        put(self, "sequence", sequence)
        put(self, "turn_id", turn_id)
        put(self, "type", type)
        put(self, "agent_name", agent_name)
        put(self, "workspace_id", workspace_id)
        put(self, "workspace_path", workspace_path)
        put(self, "_content", content)
        put(self, "timestamp", timestamp)
        put(self, "content_text", content_text)

    @classmethod
    def stored(
        cls,
        head: tuple[str, str, int, str | None, str, str, str, str],
        content_text: str,
        timestamp: datetime,
    ) -> Event:
        """The event of a stored row whose ``content`` is decoded only when first read."""
        return cls(*head, _UNDECODED, timestamp, content_text)

    @property
    def content(self) -> JSON:
        """The canonical JSON envelope."""
        content = self._content
        if content is _UNDECODED:
            content = loads(self.content_text or "{}")
            object.__setattr__(self, "_content", content)
        return content

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Event is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Event is immutable: cannot delete {name!r}")

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _EVENT_FIELDS)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Event)
        return self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]  # content is a dict: never hashable

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in _EVENT_FIELDS)
        return f"Event({fields})"

    def replace(self, **changes: Any) -> Event:
        """A copy with ``changes`` (field names as in the constructor); a changed ``content``
        drops the stored text it no longer matches."""
        values = dict(zip(_EVENT_FIELDS, self._values(), strict=True))
        unknown = set(changes) - set(values)
        if unknown:
            raise TypeError(f"Event has no field {sorted(unknown)[0]!r}")
        text = None if "content" in changes else self.content_text
        return Event(**{**values, **changes}, content_text=text)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Event, (*self._values(), self.content_text))

    @classmethod
    def from_dict(cls, row: JSON) -> Event:
        """Rebuild an event from its JSON row (as served over HTTP)."""
        return cls(
            id=row["id"],
            session_id=row["session_id"],
            sequence=int(row["sequence"]),
            turn_id=row.get("turn_id"),
            type=row["type"],
            agent_name=row.get("agent_name") or "",
            workspace_id=row.get("workspace_id") or "",
            workspace_path=row.get("workspace_path") or "",
            content=row.get("content") or {},
            timestamp=datetime.fromisoformat(str(row["timestamp"]).replace("Z", "+00:00")),
        )

    def _head(self) -> JSON:
        """The row's fields before ``content`` (the order of ``to_dict``)."""
        return {
            "id": self.id,
            "session_id": self.session_id,
            "sequence": self.sequence,
            "turn_id": self.turn_id,
            "type": self.type,
            "agent_name": self.agent_name,
            "workspace_id": self.workspace_id,
            "workspace_path": self.workspace_path,
        }

    def to_dict(self) -> JSON:
        """Return the row as plain JSON-able data (timestamps as RFC3339 strings)."""
        return {**self._head(), "content": self.content, "timestamp": format_timestamp(self.timestamp)}

    def to_json(self) -> str:
        """``dumps(self.to_dict())``, reusing the stored text of ``content`` when there is one."""
        if self.content_text is None:
            return dumps(self.to_dict())
        head = dumps(self._head())
        return f'{head[:-1]},"content":{self.content_text},"timestamp":"{format_timestamp(self.timestamp)}"}}'


def build_content(
    event_type: EventType | str,
    *,
    acp_session_id: str | None,
    turn_id: str | None,
    timestamp: datetime,
    fields: JSON,
) -> JSON:
    """Build the canonical ``content`` envelope for one event.

    Args:
        event_type: the event type.
        acp_session_id: the ACP session id underneath (the envelope's ``session_id``).
        turn_id: the turn, if any.
        timestamp: event time.
        fields: envelope fields; unknown keys are kept under ``runtime``.

    Returns:
        A JSON-able dict starting with ``schema``, ``type``, ``session_id``, ``turn_id``,
        ``timestamp``.
    """
    content: JSON = {
        "schema": EVENT_SCHEMA,
        "type": event_type._value_ if type(event_type) is EventType else str(event_type),
        "session_id": acp_session_id,
        "turn_id": turn_id,
        "timestamp": format_timestamp(timestamp),
    }
    extra: JSON = {}
    for key, value in fields.items():
        if key in _ENVELOPE_SET:
            if value is not None:
                content[key] = value
        else:
            extra[key] = value
    if extra:
        runtime = dict(content.get("runtime") or {})
        runtime.update(extra)
        content["runtime"] = runtime
    return content


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)
# orjson: several times faster than the standard library on both ways, which matters on the
# per-event path. Datetimes and dataclasses go through ``default=str`` as with ``json``.
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def dumps(value: Any) -> str:
    """Serialise JSON compactly (keys keep their order); runs once per stored event.

    What orjson refuses (integers beyond 64 bits, lone surrogates) is written by the standard
    library instead, so any value that ``json`` can write is still stored.
    """
    try:
        return orjson.dumps(value, default=str, option=_ORJSON_OPTIONS).decode("utf-8")
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return _ENCODER.encode(value)


def loads(text: str | bytes) -> Any:
    """Parse JSON; what orjson refuses (``NaN``, huge integers, escaped lone surrogates) is
    parsed by the standard library, which accepts everything Python's ``json`` writes."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


@dataclass(frozen=True)
class EventQuery:
    """Filters for an event query (SPEC 4); every field optional.

    Attributes:
        types: keep only these event types.
        agent_name: keep only events of this agent.
        turn_id: keep only this turn.
        since: keep events at or after this UTC time.
        after_sequence: keep events with a larger sequence.
        limit: keep the newest N (returned ascending).
    """

    types: tuple[str, ...] = ()
    agent_name: str | None = None
    turn_id: str | None = None
    since: datetime | None = None
    after_sequence: int | None = None
    limit: int | None = None
