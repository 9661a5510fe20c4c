"""The permission gate of one session (SPEC 5): what the agent may do, and who decides.

Owns: ``PermissionGate`` — answering ``session/request_permission`` (boundary first, then the
mode, else a pending request in the host's ``ApprovalBroker``), authorising the client methods
agents call on us (mode, then workspace boundary), and the grants an approved request gives.
Every decision and refusal is recorded as a ``permission`` event. Imports no third-party library.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Protocol

from agh_nb.core.approvals import CANCELLED, ApprovalBroker, PendingRequest
from agh_nb.core.boundary import resolve_in_workspace
from agh_nb.core.clock import IdGenerator, SystemClock
from agh_nb.core.permissions import choose_option, operation_allowed, request_paths, static_decision
from agh_nb.core.record import SessionRecord
from agh_nb.errors import PathOutsideWorkspaceError, PermissionDeniedError
from agh_nb.events import JSON, EventDraft, EventType

# What an approved permission request of a tool kind lets the agent do through client methods.
GRANTED_OPERATION = {
    "edit": "fs/write_text_file",
    "delete": "fs/write_text_file",
    "move": "fs/write_text_file",
    "execute": "terminal/create",
}


class GatedSession(Protocol):
    """What the gate needs from its session."""

    @property
    def session_id(self) -> str: ...

    @property
    def record(self) -> SessionRecord: ...

    @property
    def active_turn_id(self) -> str | None: ...

    def append_event(self, draft: EventDraft) -> None: ...

    async def append_event_durable(self, draft: EventDraft) -> None: ...

    def touch(self) -> None: ...


class PermissionGate:
    """Decides what one session's agent may do.

    Args:
        session: the session it guards.
        approvals: the host's broker of pending requests.
        clock, ids: collaborators.
    """

    def __init__(
        self, session: GatedSession, *, approvals: ApprovalBroker, clock: SystemClock, ids: IdGenerator
    ) -> None:
        self._session = session
        self._approvals = approvals
        self._clock = clock
        self._ids = ids
        self._once: dict[str, set[str]] = {}
        self._always: set[str] = set()

    async def on_permission_request(self, tool_call: JSON, options: list[JSON]) -> str | None:
        """Answer ``session/request_permission``: boundary first, then the mode, else ask the user."""
        request_id = self._ids.request_id()
        turn_id = self._session.active_turn_id
        kind = tool_call.get("kind")
        paths = request_paths(tool_call)
        base: JSON = {
            "request_id": request_id,
            "tool_call_id": tool_call.get("toolCallId"),
            "title": tool_call.get("title"),
            "action": kind,
            "resource": paths[0] if paths else None,
        }
        self._session.append_event(
            EventDraft(
                EventType.PERMISSION,
                turn_id,
                base | {"raw": {"toolCall": tool_call, "options": options}},
                self._clock.now(),
            ),
        )

        async def record(decision: str, source: str, error: str | None = None) -> None:
            await self._session.append_event_durable(
                EventDraft(
                    EventType.PERMISSION,
                    turn_id,
                    base | {"decision": decision, "error": error, "runtime": {"source": source}},
                    self._clock.now(),
                ),
            )

        outside = await asyncio.to_thread(self._first_outside, paths)
        if outside is not None:
            await record("reject-once", "boundary", outside)
            return choose_option("reject-once", options)
        decision = static_decision(self._session.record.permissions, kind)
        if decision is not None:
            await record(decision, f"mode:{self._session.record.permissions}")
            return choose_option(decision, options)
        pending = PendingRequest(
            request_id=request_id,
            session_id=self._session.session_id,
            turn_id=turn_id,
            title=tool_call.get("title"),
            kind=kind,
            paths=paths,
            diff=[c for c in tool_call.get("content") or [] if isinstance(c, dict) and c.get("type") == "diff"],
            options=options,
            created_at=self._clock.now(),
            record=record,
        )
        outcome = await self._approvals.wait(pending)
        if outcome.startswith("allow"):
            await asyncio.to_thread(self._grant, kind, paths, always=outcome == "allow-always")
        return None if outcome == CANCELLED else choose_option(outcome, options)

    def _grant(self, kind: str | None, paths: list[str], *, always: bool) -> None:
        """Let an approved request do what it asked even where the mode alone would block it.

        An approved edit may write its own paths (once, or for the rest of the session with
        allow-always); an approved execute may open one terminal (or any, with allow-always).
        """
        operation = GRANTED_OPERATION.get(kind or "")
        if operation is None:
            return
        if always:
            self._always.add(operation)
            return
        root = Path(self._session.record.workspace_path)
        if operation == "terminal/create":
            self._once[operation] = self._once.get(operation, set()) | {""}
            return
        resolved = {str(resolve_in_workspace(root, p)) for p in paths}
        self._once[operation] = self._once.get(operation, set()) | resolved

    def _consume_grant(self, operation: str, resolved: Path) -> bool:
        if operation in self._always:
            return True
        granted = self._once.get(operation, set())
        key = "" if operation == "terminal/create" else str(resolved)
        if key in granted:
            granted.discard(key)
            return True
        return False

    def _first_outside(self, paths: list[str]) -> str | None:
        root = Path(self._session.record.workspace_path)
        for path in paths:
            try:
                resolve_in_workspace(root, path)
            except PathOutsideWorkspaceError as exc:
                return str(exc)
        return None

    async def authorize(self, operation: str, path: str | None) -> Path:
        """Check a client method the agent calls on us: the mode first, then the workspace boundary.

        Returns the resolved path (the workspace root for ``terminal/create`` without a cwd).

        Raises:
            PermissionDeniedError: when the session's mode blocks the operation.
            PathOutsideWorkspaceError: when the path resolves outside the workspace.
        """
        turn_id = self._session.active_turn_id
        root = Path(self._session.record.workspace_path)
        try:
            allowed = operation_allowed(self._session.record.permissions, operation)
            denied = PermissionDeniedError(
                f"{operation} is blocked by permission mode {self._session.record.permissions}"
                " (and no approved request covers it)",
                operation=operation,
            )
            if not allowed and operation not in self._always and not self._once.get(operation):
                raise denied
            resolved = await asyncio.to_thread(resolve_in_workspace, root, path if path else root)
            if not allowed and not self._consume_grant(operation, resolved):
                raise denied
        except (PermissionDeniedError, PathOutsideWorkspaceError) as exc:
            self._session.append_event(
                EventDraft(
                    EventType.PERMISSION,
                    turn_id,
                    {
                        "action": operation,
                        "resource": path,
                        "decision": "reject-once",
                        "error": str(exc),
                        "runtime": {
                            "source": "boundary"
                            if isinstance(exc, PathOutsideWorkspaceError)
                            else f"mode:{self._session.record.permissions}"
                        },
                    },
                    self._clock.now(),
                ),
            )
            raise
        self._session.touch()
        return resolved
