"""What a host says about a session: the stored row with what is live laid over it.

Owns: ``LiveState`` (what the overlays need of a live session), ``current_record`` /
``current_records`` (the live record wins over the stored one), ``status_view`` (state, stop
reason, failure, health, and the queue of a live session) and ``inspect_view`` (the ``inspect``
document). Every host answers ``list``, ``status`` and ``inspect`` through these functions, so the
embedded host, the server host (and the remote host, which reads the server's answers) agree.
Pure: no I/O; the caller passes the clock and whatever it read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Protocol

from agh_nb.core.health import compute_health
from agh_nb.core.record import SessionRecord
from agh_nb.events import JSON


class LiveState(Protocol):
    """What the overlays read of a session this host runs (``LiveSession`` is one)."""

    @property
    def record(self) -> SessionRecord: ...

    @property
    def active_turn_id(self) -> str | None: ...

    @property
    def last_activity_at(self) -> datetime | None: ...

    def queue_snapshot(self) -> list[JSON]: ...


LiveLookup = Callable[[str], "LiveState | None"]
"""The live session of an id on this host, or None (``SessionManager.live``)."""


def current_record(stored: SessionRecord, live: LiveState | None) -> SessionRecord:
    """The freshest record: the live one when this host runs the session, else the stored one."""
    return live.record if live is not None else stored


def current_records(stored: Iterable[SessionRecord], live_of: LiveLookup) -> list[SessionRecord]:
    """Every stored record (in the given order) with the live ones laid over."""
    return [current_record(record, live_of(record.id)) for record in stored]


def status_view(record: SessionRecord, live: LiveState | None, *, now: datetime, stale_after: float) -> JSON:
    """The ``status`` document: id, name, agent, state, stop reason and detail, failure, health,
    and for a live session its ``queue`` (the running turn first). With ``live`` given, its record
    is the one described (``record`` is only the stored fallback)."""
    if live is not None:
        record = live.record
    health = compute_health(
        record,
        live=live is not None,
        active_prompt=live.active_turn_id if live is not None else None,
        last_activity_at=live.last_activity_at if live is not None else None,
        now=now,
        stale_after=stale_after,
    )
    doc: JSON = {
        "id": record.id,
        "name": record.name,
        "agent_name": record.agent_name,
        "state": record.state.value,
        "stop_reason": record.stop_reason.value if record.stop_reason else None,
        "stop_detail": record.stop_detail,
        "failure": record.failure.to_dict() if record.failure else None,
        "health": health,
    }
    if live is not None:
        doc["queue"] = live.queue_snapshot()
    return doc


def inspect_view(
    record: SessionRecord,
    status: JSON,
    *,
    pending_approvals: Sequence[JSON],
    pending_elicitations: Sequence[JSON],
    vault_refs: Sequence[JSON],
    agent: JSON,
) -> JSON:
    """The ``inspect`` document: the record, its ``status`` (from ``status_view``), the ``queue``
    (empty unless live), pending approvals and elicitations, the session's vault refs (metadata)
    and the ``agent`` part (auth methods, mode, model, options, commands, log tail)."""
    return record.to_dict() | {
        "status": status,
        "queue": status.get("queue", []),
        "pending_approvals": list(pending_approvals),
        "pending_elicitations": list(pending_elicitations),
        "vault_refs": list(vault_refs),
        "agent": agent,
    }
