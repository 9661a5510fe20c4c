"""Elicitations (ACP ``elicitation/create``, form mode): an agent asks the user to fill a small form.

Owns: ``PendingElicitation`` and ``ElicitationBroker`` — one per host, so any surface (the
magic ``session answer``, the form widget, HTTP) can answer any request. An answer is checked
against the form's schema (required fields, types, allowed values) before it reaches the agent;
a request nobody answers within the approval timeout, or whose turn or session ends, is
cancelled (the protocol's ``cancel`` action). Runs on the runtime loop. Imports nothing
third-party.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from agh_nb.errors import ApprovalError, UsageError
from agh_nb.events import JSON, EventDraft, EventType, format_timestamp

log = logging.getLogger(__name__)

Recorder = Callable[[str, JSON | None], Awaitable[None]]
Listener = Callable[[str, JSON], None]


@dataclass
class PendingElicitation:
    """One form the agent asked the user to fill."""

    request_id: str
    session_id: str
    turn_id: str | None
    message: str
    schema: JSON
    created_at: datetime
    record: Recorder
    future: asyncio.Future[JSON] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    action: str | None = None

    def fields(self) -> list[JSON]:
        """The form's fields: ``{name, type, title, description, required, values, default}``."""
        required = set(self.schema.get("required") or [])
        out = []
        for name, spec in (self.schema.get("properties") or {}).items():
            spec = spec if isinstance(spec, dict) else {}
            values = _allowed(spec)
            out.append(
                {
                    "name": name,
                    "type": spec.get("type") or "string",
                    "title": spec.get("title"),
                    "description": spec.get("description"),
                    "required": name in required,
                    "values": values,
                    "default": spec.get("default"),
                }
            )
        return out

    def to_dict(self) -> JSON:
        """JSON form for surfaces (agent text as received: surfaces escape it)."""
        return {
            "request_id": self.request_id,
            "session_id": self.session_id,
            "turn_id": self.turn_id,
            "message": self.message,
            "fields": self.fields(),
            "created_at": format_timestamp(self.created_at),
            "action": self.action,
        }


def _allowed(spec: Mapping[str, Any]) -> list[str] | None:
    if isinstance(spec.get("enum"), list):
        return [str(v) for v in spec["enum"]]
    if isinstance(spec.get("oneOf"), list):
        return [str(o.get("const")) for o in spec["oneOf"] if isinstance(o, dict)]
    items = spec.get("items")
    if spec.get("type") == "array" and isinstance(items, dict):
        return _allowed(items)
    return None


def coerce_answer(pending: PendingElicitation, values: Mapping[str, str]) -> JSON:
    """Turn ``key=value`` strings into the form's content, checked against its schema.

    Raises:
        UsageError: one line naming the field that is unknown, missing or of the wrong kind.
    """
    fields = {f["name"]: f for f in pending.fields()}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UsageError(
            f"elicitation {pending.request_id} has no field {unknown[0]!r} (its fields: {', '.join(fields) or 'none'})"
        )
    missing = [name for name, f in fields.items() if f["required"] and name not in values]
    if missing:
        raise UsageError(f"elicitation {pending.request_id} needs {', '.join(missing)} (give them as KEY=VALUE)")
    content: JSON = {}
    for name, raw in values.items():
        spec = fields[name]
        kind = spec["type"]
        allowed = spec["values"]
        try:
            if kind == "boolean":
                lowered = raw.strip().lower()
                if lowered not in ("true", "false"):
                    raise ValueError
                value: Any = lowered == "true"
            elif kind == "integer":
                value = int(raw)
            elif kind == "number":
                value = float(raw)
            elif kind == "array":
                value = [part.strip() for part in raw.split(",") if part.strip()]
            else:
                value = raw
        except ValueError:
            raise UsageError(f"field {name!r} of elicitation {pending.request_id} takes a {kind}, got {raw!r}") from None
        chosen = value if isinstance(value, list) else [value]
        if allowed is not None and any(str(v) not in allowed for v in chosen):
            raise UsageError(f"field {name!r} of elicitation {pending.request_id} takes one of {', '.join(allowed)}, got {raw!r}")
        content[name] = value
    return content


class ElicitationBroker:
    """Pending elicitations of every session on this host.

    Args:
        timeout: seconds before an unanswered form is cancelled (0 = never).
    """

    def __init__(self, *, timeout: float) -> None:
        self._timeout = timeout
        self._pending: dict[str, PendingElicitation] = {}
        self._listeners: list[Listener] = []

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(change, request)`` (``added``/``resolved``); returns the remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _notify(self, change: str, pending: PendingElicitation) -> None:
        for listener in list(self._listeners):
            try:
                listener(change, pending.to_dict())
            except Exception:  # a broken widget must not break the agent's request
                log.warning("an elicitation listener failed", exc_info=True)

    async def ask(self, pending: PendingElicitation) -> JSON:
        """Wait for the user's answer to ``pending``: the ACP response (accept/decline/cancel)."""
        self._pending[pending.request_id] = pending
        self._notify("added", pending)
        try:
            if self._timeout:
                with contextlib.suppress(asyncio.TimeoutError):
                    return await asyncio.wait_for(asyncio.shield(pending.future), self._timeout)
                await self._resolve(pending, {"action": "cancel"})
            return await pending.future
        finally:
            self._pending.pop(pending.request_id, None)

    def pending(self, session_id: str | None = None) -> list[JSON]:
        """Unanswered forms (of one session, or all), oldest first."""
        return [p.to_dict() for p in self._pending.values() if session_id is None or p.session_id == session_id]

    async def answer(self, request_id: str, values: Mapping[str, str] | None, *, session_id: str, action: str = "accept") -> JSON:
        """Answer a form: ``accept`` with ``values`` (checked), or ``decline`` / ``cancel``.

        Raises:
            ApprovalError: no such pending request of that session.
            UsageError: the values do not fit the form.
        """
        pending = self._pending.get(request_id)
        if pending is None or pending.session_id != session_id:
            raise ApprovalError(
                f"no pending elicitation {request_id!r} in session {session_id} (it was answered, cancelled, or never asked)",
                request_id=request_id,
                session_id=session_id,
            )
        if action not in ("accept", "decline", "cancel"):
            raise UsageError(f"an elicitation is answered with accept, decline or cancel, got {action!r}")
        response: JSON = {"action": action}
        if action == "accept":
            response["content"] = coerce_answer(pending, values or {})
        await self._resolve(pending, response)
        return pending.to_dict() | {"content": response.get("content")}

    async def cancel_session(self, session_id: str) -> None:
        """Cancel every pending form of a session (its turn or the session ended)."""
        for pending in [p for p in self._pending.values() if p.session_id == session_id]:
            await self._resolve(pending, {"action": "cancel"})

    async def _resolve(self, pending: PendingElicitation, response: JSON) -> None:
        if pending.future.done():
            return
        pending.action = str(response["action"])
        try:
            await pending.record(pending.action, response.get("content"))
        finally:
            if not pending.future.done():
                pending.future.set_result(response)
            self._pending.pop(pending.request_id, None)
            self._notify("resolved", pending)


class ElicitingSession(Protocol):
    """What ``elicit`` needs from the session whose agent asks."""

    @property
    def session_id(self) -> str: ...

    @property
    def active_turn_id(self) -> str | None: ...

    def now(self) -> datetime: ...

    def touch(self) -> None: ...

    def redact(self, text: str) -> str: ...

    def redact_json(self, value: Any) -> Any: ...

    def new_request_id(self) -> str: ...

    def append_event(self, draft: EventDraft) -> None: ...

    async def append_event_durable(self, draft: EventDraft) -> None: ...


async def elicit(session: ElicitingSession, broker: ElicitationBroker, message: str, schema: JSON, scope: JSON) -> JSON:
    """Put the agent's form before the user and wait for the answer (the ACP response).

    The request is recorded as a ``system`` event titled ``elicitation`` (its message, schema and
    scope under ``raw``), the answer as ``elicitation answered`` (its action, and the content
    under ``runtime``), durable before the agent hears it.
    """
    turn_id = session.active_turn_id
    request_id = "eli_" + session.new_request_id().removeprefix("req_")

    async def record(action: str, content: JSON | None) -> None:
        fields: JSON = {"title": "elicitation answered", "request_id": request_id, "action": action}
        if content is not None:
            fields["runtime"] = {"content": content}
        await session.append_event_durable(EventDraft(EventType.SYSTEM, turn_id, fields, session.now()))
        session.touch()  # waiting for the user was not the agent going quiet

    session.append_event(
        EventDraft(
            EventType.SYSTEM,
            turn_id,
            {"title": "elicitation", "request_id": request_id, "text": message, "raw": {"requestedSchema": schema, **scope}},
            session.now(),
        )
    )
    pending = PendingElicitation(
        request_id=request_id,
        session_id=session.session_id,
        turn_id=turn_id,
        message=session.redact(message),
        schema=session.redact_json(schema),
        created_at=session.now(),
        record=record,
    )
    return await broker.ask(pending)
