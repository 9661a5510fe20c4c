"""Health (SPEC 3): a metadata-only view of a session; never calls the agent.

Owns: ``compute_health``, a pure function of the record (its ``last_presence_at`` heartbeat
included), what the host knows of the live session, the clock and the stale threshold; and
``heartbeat_interval``, how often a live session refreshes its presence, and ``heartbeat_phase``,
when its first refresh comes (sessions started together refresh apart). Imports only
``core.record``, ``core.state`` and ``events``.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from agh_nb.core.record import SessionRecord
from agh_nb.core.state import SessionState
from agh_nb.events import JSON, format_timestamp

MAX_HEARTBEAT_INTERVAL = 30.0
"""The longest time between two presence refreshes of a live session (seconds)."""


def heartbeat_interval(stale_after: float) -> float:
    """Seconds between two heartbeats: ``min(30 s, stale_after / 3)`` (30 s when stale_after is off).

    A third of the threshold, so a session whose host is alive never looks stale for lack of a
    heartbeat even when one refresh is late.
    """
    if stale_after <= 0:
        return MAX_HEARTBEAT_INTERVAL
    return min(MAX_HEARTBEAT_INTERVAL, stale_after / 3)


def heartbeat_phase(session_id: str, interval: float) -> float:
    """Seconds before a session's first heartbeat: a share of ``interval`` taken from its id.

    Sessions started together (a server host opening fifty at once) would otherwise refresh
    their presence in the same instant, every interval: fifty session rows rewritten in one
    commit, which held every stream's events back for about a second (benchmarks/server.py,
    paced leg). Spread over the interval, each refresh is one small write among the events.
    The result is in (0, interval], so the first refresh is never later than the others.
    """
    digest = hashlib.sha256(session_id.encode("utf-8")).digest()
    return interval * (int.from_bytes(digest[:8], "big") + 1) / 2**64


def compute_health(
    record: SessionRecord,
    *,
    live: bool,
    active_prompt: str | None,
    last_activity_at: datetime | None,
    now: datetime,
    stale_after: float,
) -> JSON:
    """Return the SPEC 3 health fields for one session.

    ``stale`` means the session is not stopped but nothing has been heard of it for longer than
    ``stale_after``: its presence (the host's heartbeat, ``record.last_presence_at``) is older
    than that, or, on a live session with no prompt running, its last activity is. A session
    that is not stopped and not run by this host is ``detached``; without a recent presence its
    health is ``unknown``.

    Args:
        record: the stored or live record.
        live: whether this host runs the session's agent right now.
        active_prompt: the running turn id, if any.
        last_activity_at: last prompt activity seen by this host.
        now: the current time.
        stale_after: seconds after which silence makes a session ``stale`` (0 = never).
    """
    last_activity = last_activity_at or record.updated_at
    presence = record.last_presence_at
    absent_for = (now - presence).total_seconds() if presence is not None else None
    presence_stale = bool(stale_after) and absent_for is not None and absent_for > stale_after
    if record.state is SessionState.STOPPED:
        state, health = "stopped", ("dead" if record.failure else "unknown")
    elif not live:
        state, health = "detached", ("stale" if presence_stale else "unknown")
    else:
        state = "prompting" if active_prompt else "idle"
        idle_for = (now - last_activity).total_seconds()
        idle_stale = not active_prompt and bool(stale_after) and idle_for > stale_after
        health = "stale" if (presence_stale or idle_stale) else "healthy"
    attachable = live and record.state is SessionState.ACTIVE
    if not attachable:
        reason: str | None = "session_not_attachable"
    elif active_prompt:
        reason = "session_prompt_active"
    elif health != "healthy":
        reason = "session_unhealthy"
    else:
        reason = None
    return {
        "state": state,
        "health": health,
        "active_prompt": active_prompt,
        "attachable": attachable,
        "eligible_for_wake": reason is None,
        "ineligibility_reason": reason,
        "last_activity_at": format_timestamp(last_activity),
        "last_presence_at": format_timestamp(presence) if presence is not None else None,
        "last_error": record.failure.summary if record.failure else None,
        "updated_at": format_timestamp(record.updated_at),
    }
