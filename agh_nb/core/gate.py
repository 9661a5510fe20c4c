"""The permission gate of one session (SPEC 5): what the agent may do, and who decides.

Owns: ``PermissionGate`` — answering ``session/request_permission`` (boundary first, then the
mode, else a pending request in the host's ``ApprovalBroker``), authorising the client methods
agents call on us (mode, then workspace boundary), and the grants an approved request gives.
Every decision and refusal is recorded as a ``permission`` event. Imports no third-party library.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

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


ANY_COMMAND = "\0any"
"""The grant of an approved execute request that named no command (cannot match a real one)."""


def approved_command(raw_input: Any) -> str:
    """The command line an execute request showed (its ``rawInput.command`` and ``args``).

    ``command`` may be a string (a whole command line) or an argv list; with neither, the
    approval covers one terminal whatever it runs (``ANY_COMMAND``).
    """
    if not isinstance(raw_input, dict):
        return ANY_COMMAND
    command, args = raw_input.get("command"), raw_input.get("args")
    if isinstance(command, list) and command and all(isinstance(c, str) for c in command):
        return shlex.join(command)
    if isinstance(command, str) and command:
        extra = [a for a in args if isinstance(a, str)] if isinstance(args, list) else []
        if extra:
            return shlex.join([command, *extra])
        try:  # one spelling per command line: 'echo "a b"' and "echo 'a b'" are the same argv
            return shlex.join(shlex.split(command))
        except ValueError:
            return command
    return ANY_COMMAND


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
        redact_json: scrubs vault secrets from what the agent sent before any surface shows it.
    """

    def __init__(
        self,
        session: GatedSession,
        *,
        approvals: ApprovalBroker,
        clock: SystemClock,
        ids: IdGenerator,
        redact_json: Callable[[Any], Any] = lambda value: value,
    ) -> None:
        self._session = session
        self._approvals = approvals
        self._clock = clock
        self._ids = ids
        self._redact_json = redact_json
        # Once-grants, by operation: the resolved paths (writes) or the approved command lines
        # (terminals) an approved request covers, each usable once within the turn that asked.
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
        # Durable before anyone is shown the request: a surface that lists it pending can find
        # its event in the store at once (and a crash cannot lose a request someone saw).
        await self._session.append_event_durable(
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
        # What the user is shown comes from the agent: scrubbed of secrets like any event.
        shown: JSON = self._redact_json(tool_call)
        pending = PendingRequest(
            request_id=request_id,
            session_id=self._session.session_id,
            turn_id=turn_id,
            title=shown.get("title"),
            kind=kind,
            paths=self._redact_json(paths),
            diff=[c for c in shown.get("content") or [] if isinstance(c, dict) and c.get("type") == "diff"],
            options=self._redact_json(options),
            created_at=self._clock.now(),
            record=record,
        )
        outcome = await self._approvals.wait(pending)
        if outcome.startswith("allow"):
            await asyncio.to_thread(self._grant, tool_call, paths, always=outcome == "allow-always")
        return None if outcome == CANCELLED else choose_option(outcome, options)

    def _grant(self, tool_call: JSON, paths: list[str], *, always: bool) -> None:
        """Let an approved request do what it asked even where the mode alone would block it.

        An approved edit may write its own paths; an approved execute may open one terminal for
        the command it showed (any command, when it showed none). Once-grants last until the
        turn ends; allow-always covers the operation for the rest of the session.
        """
        operation = GRANTED_OPERATION.get(str(tool_call.get("kind") or ""))
        if operation is None:
            return
        if always:
            self._always.add(operation)
            return
        if operation == "terminal/create":
            keys = {approved_command(tool_call.get("rawInput"))}
        else:
            root = Path(self._session.record.workspace_path)
            keys = set()
            for path in paths:
                try:
                    keys.add(str(resolve_in_workspace(root, path)))
                except PathOutsideWorkspaceError:
                    continue  # changed since the request was checked: it grants nothing
        self._once[operation] = self._once.get(operation, set()) | keys

    def _consume_grant(self, operation: str, resolved: Path, command: list[str] | None) -> bool:
        if operation in self._always:
            return True
        granted = self._once.get(operation, set())
        if operation == "terminal/create":
            line = shlex.join(command or [])
            key = line if line in granted else ANY_COMMAND if ANY_COMMAND in granted else None
        else:
            key = str(resolved) if str(resolved) in granted else None
        if key is None:
            return False
        granted.discard(key)
        return True

    def end_turn(self) -> None:
        """Forget the once-grants: an approval covers what its own turn does, not later turns."""
        self._once.clear()

    def _first_outside(self, paths: list[str]) -> str | None:
        root = Path(self._session.record.workspace_path)
        for path in paths:
            try:
                resolve_in_workspace(root, path)
            except PathOutsideWorkspaceError as exc:
                return str(exc)
        return None

    async def authorize(self, operation: str, path: str | None, command: list[str] | None = None) -> Path:
        """Check a client method the agent calls on us: the mode first, then the workspace boundary.

        ``command`` is the argv of a ``terminal/create`` (an approved execute covers only the
        command it showed). Returns the resolved path (the workspace root for ``terminal/create``
        without a cwd).

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
            if not allowed and not self._consume_grant(operation, resolved, command):
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
