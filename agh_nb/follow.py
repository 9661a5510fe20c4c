"""``session events ID --follow``: print committed events as they arrive, in a cell or a terminal.

Owns: ``follow_events`` and ``describe`` (one line per event). Every filter of ``session events``
holds while following: ``--type``, ``--turn`` and ``--since`` choose both the backlog and the live
events, ``--after-sequence`` starts after that sequence, and ``--last N`` shows the newest N
matching events first. Events come from the host's subscription (the subscription's delivery thread, or
an SSE reader in client mode) through a queue; the calling thread prints them, and stops when
the session is idle with nothing queued, stopped, the followed ``--turn`` ended, or the user
interrupts. Imports no IPython; must not import ``agh_nb.server``.
"""

from __future__ import annotations

import argparse
import queue
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from agh_nb.api import build_query
from agh_nb.core.host import HostProtocol
from agh_nb.events import Event, EventQuery
from agh_nb.output import one_line, summary

IDLE_GRACE = 0.5
POLL = 0.2


def describe(event: Event, titles: dict[str, str] | None = None) -> str:
    """One plain-text line for an event (no markup: agent text stays text); ``titles`` names a
    tool call's later updates by the title its first event gave."""
    text = one_line(summary(event, titles))
    return f"#{event.sequence:<5} {event.type:<16} {event.turn_id or '-':<18} {text}"


def _matcher(query: EventQuery) -> Callable[[Event], bool]:
    types = set(query.types)
    since: datetime | None = query.since

    def matches(event: Event) -> bool:
        if types and event.type not in types:
            return False
        if query.turn_id is not None and event.turn_id != query.turn_id:
            return False
        if since is not None and event.timestamp < since:
            return False
        return query.after_sequence is None or event.sequence > query.after_sequence

    return matches


def follow_events(
    host: HostProtocol,
    session_id: str,
    args: argparse.Namespace,
    *,
    write: Callable[[str], None] | None = None,
    max_seconds: float | None = None,
) -> int:
    """Print the matching backlog, then matching live events, one line each.

    Args:
        host: the process-wide host (embedded or remote), or the CLI's remote host.
        session_id: the session to follow.
        args: the parsed ``session events`` words (``types``, ``turn``, ``since``,
            ``after_sequence``, ``last``).
        write: prints one line (default: ``print`` with flush).
        max_seconds: give up after this long (tests).

    Returns the number of events printed.
    """
    out = write or (lambda line: print(line, flush=True))
    query = build_query(
        last=args.last,
        types=[t for spec in (args.types or []) for t in spec.split(",") if t],
        turn=args.turn,
        since=args.since,
        after_sequence=args.after_sequence,
    )
    matches = _matcher(query)
    # The newest sequence first, then the filtered backlog: an event stored in between is either
    # in the backlog or after both, so subscribing after the larger of the two loses nothing and
    # repeats nothing, and events that do not match are never fetched twice.
    newest = host.events(session_id, EventQuery(limit=1))
    backlog = host.events(session_id, query)
    after = max([newest[-1].sequence if newest else 0, query.after_sequence or 0] + [e.sequence for e in backlog[-1:]])
    inbox: queue.Queue[Sequence[Event]] = queue.Queue()
    titles: dict[str, str] = {}
    printed = 0
    for event in backlog:
        out(describe(event, titles))
        printed += 1
    if query.turn_id is not None and host.events(
        session_id, EventQuery(types=("done",), turn_id=query.turn_id, limit=1)
    ):
        return printed  # the followed turn is over already: nothing of it can follow
    turn_over = False
    subscription = host.subscribe(session_id, after, inbox.put)
    idle_since: float | None = None
    started = time.monotonic()
    try:
        while not turn_over:
            try:
                batch = inbox.get(timeout=POLL)
            except queue.Empty:
                if _idle(host, session_id, query):
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since > IDLE_GRACE:
                        break
                else:
                    idle_since = None
                if max_seconds is not None and time.monotonic() - started > max_seconds:
                    break
                continue
            for event in batch:
                if matches(event):
                    out(describe(event, titles))
                    printed += 1
                if query.turn_id is not None and event.turn_id == query.turn_id and event.type == "done":
                    turn_over = True
    except KeyboardInterrupt:
        out("(stopped following; the session goes on)")
    finally:
        subscription.close()
    return printed


def _idle(host: HostProtocol, session_id: str, query: EventQuery) -> bool:
    status = host.status(session_id)
    if status["state"] == "stopped":
        return True
    if query.turn_id is not None:  # following one turn: wait for it while it is running or queued
        queued = {q.get("turn_id") for q in status.get("queue") or []}
        return status["health"]["active_prompt"] != query.turn_id and query.turn_id not in queued
    return not (status["health"]["active_prompt"] or status.get("queue"))
