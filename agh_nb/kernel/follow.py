"""``session events --follow`` in a cell: print committed events as they arrive.

Owns: ``follow_events``. Events come from the subscription's delivery thread through a queue; the cell
thread prints them, and stops when the session is idle with nothing queued, stopped, or the user
interrupts the cell.
"""

from __future__ import annotations

import argparse
import queue
import time
from collections.abc import Sequence

from typing import Any
from agh_nb.events import Event
from agh_nb.kernel.describe import summary

IDLE_GRACE = 0.5


def describe(event: Event, titles: dict[str, str] | None = None) -> str:
    """One plain-text line for an event (no markup: agent text stays text); ``titles`` names a
    tool call's later updates by the title its first event gave."""
    text = " ".join(summary(event, titles).split())
    if len(text) > 160:
        text = text[:159] + "…"
    return f"#{event.sequence:<5} {event.type:<16} {event.turn_id or '-':<18} {text}"


def follow_events(host: Any, session_id: str, args: argparse.Namespace, *, max_seconds: float | None = None) -> int:
    """Print the backlog after ``--after-sequence`` (or the last N) and then live events.

    Returns the number of events printed.
    """
    inbox: queue.Queue[Sequence[Event]] = queue.Queue()
    after = args.after_sequence or 0
    if args.last:
        recent = host.events(session_id, host_query_last(args.last))
        after = recent[0].sequence - 1 if recent else after
    subscription = host.subscribe(session_id, after, inbox.put)
    printed = 0
    titles: dict[str, str] = {}
    idle_since: float | None = None
    started = time.monotonic()
    try:
        while True:
            try:
                batch = inbox.get(timeout=0.2)
            except queue.Empty:
                status = host.status(session_id)
                busy = status["state"] != "stopped" and (status["health"]["active_prompt"] or status.get("queue"))
                if status["state"] == "stopped" or not busy:
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since > IDLE_GRACE:
                        break
                else:
                    idle_since = None
                if max_seconds is not None and time.monotonic() - started > max_seconds:
                    break
                continue
            for event in batch:
                print(describe(event, titles), flush=True)
                printed += 1
    except KeyboardInterrupt:
        print("(stopped following; the session goes on)")
    finally:
        subscription.close()
    return printed


def host_query_last(n: int):  # type: ignore[no-untyped-def]
    """An EventQuery for the newest ``n`` events."""
    from agh_nb.events import EventQuery

    return EventQuery(limit=n)
