"""Interactive approvals (SPEC 5): pending permission requests and the decisions that resolve them.

Owns: ``PendingRequest`` and ``ApprovalBroker`` — one broker per host, shared by every session,
so any surface (magic, widget, HTTP) can decide any request. Runs on the runtime loop. A request
is resolved exactly once: by a decision, by the approval timeout (``reject-once``) or by the
turn being cancelled (``cancelled``); a second decision is an ``ApprovalError``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agh_nb.core.permissions import DECISIONS
from agh_nb.errors import ApprovalError
from agh_nb.events import JSON, format_timestamp

log = logging.getLogger(__name__)

CANCELLED = "cancelled"
Recorder = Callable[[str, str], Awaitable[None]]
Listener = Callable[[str, JSON], None]


@dataclass
class PendingRequest:
    """One ``session/request_permission`` waiting for a decision.

    ``record`` stores the resolution durably (decision, source) before the agent is answered.
    """

    request_id: str
    session_id: str
    turn_id: str | None
    title: str | None
    kind: str | None
    paths: list[str]
    diff: list[JSON]
    options: list[JSON]
    created_at: datetime
    record: Recorder
    future: asyncio.Future[str] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    decision: str | None = None
    source: str | None = None
    _timer: asyncio.TimerHandle | None = None

    def to_dict(self) -> JSON:
        """JSON form for surfaces (no futures, no callbacks)."""
        return {
            "request_id": self.request_id,
            "session_id": self.session_id,
            "turn_id": self.turn_id,
            "title": self.title,
            "kind": self.kind,
            "paths": list(self.paths),
            "diff": list(self.diff),
            "options": [{"option_id": o.get("optionId"), "name": o.get("name"), "kind": o.get("kind")} for o in self.options],
            "created_at": format_timestamp(self.created_at),
            "decision": self.decision,
            "source": self.source,
        }


class ApprovalBroker:
    """Pending requests of every session on this host.

    Args:
        timeout: seconds before an undecided request resolves ``reject-once`` (0 = never).
    """

    def __init__(self, *, timeout: float) -> None:
        self._timeout = timeout
        self._pending: dict[str, PendingRequest] = {}
        self._resolved: dict[str, PendingRequest] = {}
        self._listeners: list[Listener] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    def pending(self, session_id: str | None = None) -> list[JSON]:
        """Return the pending requests (of one session, or all), oldest first."""
        return [p.to_dict() for p in self._pending.values() if session_id is None or p.session_id == session_id]

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(change, request)`` with ``added``/``resolved``; returns an unsubscribe function."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    async def wait(self, request: PendingRequest) -> str:
        """Register ``request`` and wait for its resolution; returns the decision or ``cancelled``."""
        self._pending[request.request_id] = request
        if self._timeout > 0:
            loop = asyncio.get_running_loop()
            request._timer = loop.call_later(self._timeout, self._expire, request.request_id)
        self._notify("added", request)
        try:
            return await asyncio.shield(request.future)
        except asyncio.CancelledError:
            # The ACP request itself went away (connection closed): resolve it so nothing dangles.
            await self._resolve(request, CANCELLED, "cancelled")
            raise

    async def decide(self, request_id: str, decision: str, *, session_id: str | None = None, source: str = "user") -> JSON:
        """Resolve a pending request with a user decision; returns the resolved request.

        Raises:
            ApprovalError: unknown decision, unknown request, wrong session, or already resolved.
        """
        if decision not in DECISIONS:
            raise ApprovalError(f"unknown decision {decision!r}: use one of {', '.join(DECISIONS)}")
        request = self._pending.get(request_id)
        if request is None:
            done = self._resolved.get(request_id)
            if done is not None:
                raise ApprovalError(
                    f"permission request {request_id} was already resolved ({done.decision} by {done.source}); "
                    "a second decision is not sent",
                    request_id=request_id,
                )
            raise ApprovalError(f"no pending permission request {request_id!r}", request_id=request_id)
        if session_id is not None and request.session_id != session_id:
            raise ApprovalError(
                f"permission request {request_id} belongs to session {request.session_id}, not {session_id}",
                request_id=request_id,
            )
        await self._resolve(request, decision, source)
        return request.to_dict()

    async def cancel_session(self, session_id: str) -> int:
        """Resolve every pending request of a session as ``cancelled`` (turn cancelled or stopping)."""
        requests = [p for p in self._pending.values() if p.session_id == session_id]
        for request in requests:
            await self._resolve(request, CANCELLED, "cancelled")
        return len(requests)

    def _expire(self, request_id: str) -> None:
        request = self._pending.get(request_id)
        if request is None:
            return
        task = asyncio.ensure_future(self._resolve(request, "reject-once", "timeout"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, request: PendingRequest, decision: str, source: str) -> None:
        if self._pending.pop(request.request_id, None) is None:
            return
        if request._timer is not None:
            request._timer.cancel()
        request.decision, request.source = decision, source
        self._resolved[request.request_id] = request
        try:
            await request.record(decision, source)  # durable before the agent hears it
        finally:
            if not request.future.done():
                request.future.set_result(decision)
            self._notify("resolved", request)

    def _notify(self, change: str, request: PendingRequest) -> None:
        snapshot = request.to_dict()
        for listener in list(self._listeners):
            try:
                listener(change, snapshot)
            except Exception:  # a broken widget must not break approvals
                log.exception("approval listener failed")
