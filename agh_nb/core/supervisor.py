"""Turn supervision (SPEC 2): progress, one warning, and the inactivity timeout.

Owns: ``supervise_turn``, a coroutine the session runs beside each prompt turn. Inactivity is
not elapsed time: every update from the agent, every client call and a pending approval count
as activity, so a long turn that keeps working stays healthy. Past ``inactivity_warning_after`` it
records one ``runtime_warning``; past ``inactivity_timeout`` a ``system`` event titled
"inactivity timeout", then it cancels the turn cooperatively, waits ``timeout_cancel_grace``, and
stops the session as ``timeout`` with detail ``activity_timeout``. Imports no third-party library.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, Protocol

from agh_nb.config import Settings
from agh_nb.core.classify import CauseKind, StopCause
from agh_nb.core.state import FailureKind
from agh_nb.events import EventDraft, EventType

MIN_TICK = 0.05
MAX_TICK = 1.0

TIMEOUT_TITLES = {"activity_timeout": "inactivity timeout", "wall_clock_timeout": "wall clock timeout"}
"""The ``title`` of the ``system`` event that says a turn timed out and is being cancelled."""


class SupervisedSession(Protocol):
    """What supervision needs from a session."""

    last_activity_at: datetime

    @property
    def active_turn_id(self) -> str | None: ...

    def has_pending_approvals(self) -> bool: ...

    @property
    def last_stderr_line(self) -> str | None: ...

    def now(self) -> datetime: ...

    def append_event(self, draft: EventDraft) -> None: ...

    async def cancel_turn(self) -> bool: ...

    def begin_stop(self, cause: StopCause) -> None: ...


def _tick(settings: Settings) -> float:
    periods = [
        p
        for p in (
            settings.inactivity_timeout,
            settings.inactivity_warning_after,
            settings.progress_notify_interval,
            settings.session_timeout,
        )
        if p > 0
    ]
    if not periods:
        return 0.0
    return max(MIN_TICK, min(MAX_TICK, min(periods) / 5))


async def supervise_turn(
    session: SupervisedSession, turn_id: str, turn_done: asyncio.Future[Any], settings: Settings
) -> None:
    """Watch one turn until it finishes; returns at once when every limit is off."""
    tick = _tick(settings)
    if tick == 0.0:
        return
    started = session.now()
    last_progress = started
    warned = False
    while not turn_done.done() and session.active_turn_id == turn_id:
        await asyncio.wait({turn_done}, timeout=tick)
        if turn_done.done():
            return
        now = session.now()
        if session.has_pending_approvals():
            session.last_activity_at = now  # waiting for the user is not the agent going quiet
        idle = (now - session.last_activity_at).total_seconds()
        elapsed = (now - started).total_seconds()
        runtime = {"elapsed_seconds": round(elapsed, 3), "idle_seconds": round(idle, 3)}
        if (
            settings.progress_notify_interval
            and (now - last_progress).total_seconds() >= settings.progress_notify_interval
        ):
            last_progress = now
            session.append_event(EventDraft(EventType.RUNTIME_PROGRESS, turn_id, {"runtime": runtime}, now))
        if settings.inactivity_warning_after and not warned and idle >= settings.inactivity_warning_after:
            warned = True
            # An agent that went quiet is often retrying something and saying so on stderr.
            last = session.last_stderr_line
            text = f"no activity from the agent for {idle:.1f}s" + (f"; its last stderr line: {last}" if last else "")
            session.append_event(
                EventDraft(
                    EventType.RUNTIME_WARNING,
                    turn_id,
                    {"text": text, "runtime": runtime | ({"last_stderr_line": last} if last else {})},
                    now,
                )
            )
        if settings.inactivity_timeout and idle >= settings.inactivity_timeout:
            await _time_out(
                session,
                turn_id,
                turn_done,
                settings,
                f"no activity for {idle:.1f}s (inactivity_timeout {settings.inactivity_timeout:g}s)",
                "activity_timeout",
            )
            return
        if settings.session_timeout and elapsed >= settings.session_timeout:
            await _time_out(
                session,
                turn_id,
                turn_done,
                settings,
                f"turn ran {elapsed:.1f}s (session.limits.timeout {settings.session_timeout:g}s)",
                "wall_clock_timeout",
            )
            return


async def _time_out(
    session: SupervisedSession,
    turn_id: str,
    turn_done: asyncio.Future[Any],
    settings: Settings,
    summary: str,
    detail: str,
) -> None:
    # A notice, not a second warning: SPEC 2 gives inactivity exactly one runtime_warning.
    session.append_event(
        EventDraft(
            EventType.SYSTEM,
            turn_id,
            {
                "title": TIMEOUT_TITLES[detail],
                "text": f"{summary}: cancelling the turn",
                "runtime": {"detail": detail},
            },
            session.now(),
        )
    )
    await session.cancel_turn()
    try:
        await asyncio.wait_for(asyncio.shield(turn_done), timeout=settings.timeout_cancel_grace or None)
    except asyncio.TimeoutError:
        summary += f"; the cancel did not finish within {settings.timeout_cancel_grace:g}s"
    session.begin_stop(StopCause(CauseKind.TIMEOUT, FailureKind.TIMEOUT, summary, detail))
