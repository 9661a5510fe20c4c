"""Health (SPEC 3): a metadata-only view of a session; never calls the agent.

Owns: ``compute_health``, a pure function of the record, what the host knows of the live
session, the clock and the stale threshold.
"""

from __future__ import annotations

from datetime import datetime

from agh_nb.core.record import SessionRecord
from agh_nb.core.state import SessionState
from agh_nb.events import JSON, format_timestamp


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

    Args:
        record: the stored or live record.
        live: whether this host runs the session's agent right now.
        active_prompt: the running turn id, if any.
        last_activity_at: last prompt activity seen by this host.
        now: the current time.
        stale_after: seconds of idleness after which a live session is ``stale``.
    """
    last_activity = last_activity_at or record.updated_at
    if record.state is SessionState.STOPPED:
        state, health = "stopped", ("dead" if record.failure else "unknown")
    elif not live:
        state, health = "detached", "unknown"
    else:
        state = "prompting" if active_prompt else "idle"
        idle_for = (now - last_activity).total_seconds()
        health = "stale" if (not active_prompt and stale_after and idle_for > stale_after) else "healthy"
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
        "last_presence_at": format_timestamp(now) if live else None,
        "last_error": record.failure.summary if record.failure else None,
        "updated_at": format_timestamp(record.updated_at),
    }
