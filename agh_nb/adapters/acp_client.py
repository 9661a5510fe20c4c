"""The client side of ACP that agh_nb implements: what an agent may call on us.

Owns: ``Client`` — ``session/update`` (mapped from the parsed frame by ``acp_updates``, handed
over by the transport without the SDK), ``session/request_permission``,
``elicitation/create`` (form mode goes to the session; other modes get the protocol's decline),
the file methods and the terminal methods. Every file or terminal call is authorised by the session
first (permission mode, then the workspace boundary); a refusal reaches the agent as a JSON-RPC
error naming the reason. Imports acp; must not import core.session, runtime, kernel or server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import acp
from acp import schema

from agh_nb.adapters import fs_ops
from agh_nb.adapters.acp_mapping import dump
from agh_nb.adapters.acp_updates import map_raw_update
from agh_nb.adapters.terminals import TerminalManager, UnknownTerminalError
from agh_nb.core.ports import DriverListener
from agh_nb.errors import PathOutsideWorkspaceError, PermissionDeniedError

T = TypeVar("T")


def _outside(exc: PathOutsideWorkspaceError) -> acp.RequestError:
    return acp.RequestError(-32602, f"path-outside-workspace: {exc}", {"reason": "path_outside_workspace"})


class Client:
    """The ACP ``Client`` side we implement: updates, permission requests, files and terminals.

    Args:
        listener: the session (decides permissions, authorises client methods, takes updates).
        terminals: the terminals of this agent.
        redact: scrubs secrets from error text sent back to the agent.
        workspace: the session's workspace: every file is opened beneath it, component by
            component (``fs_ops``), whatever was checked before.
    """

    def __init__(
        self, listener: DriverListener, terminals: TerminalManager, redact: Callable[[str], str], workspace: Path
    ) -> None:
        self._listener = listener
        self._terminals = terminals
        self._redact = redact
        self._workspace = workspace

    async def _authorize(self, operation: str, path: str | None, command: list[str] | None = None) -> Path:
        try:
            return await self._listener.authorize(operation, path, command)
        except PathOutsideWorkspaceError as exc:
            raise _outside(exc) from None
        except PermissionDeniedError as exc:
            raise acp.RequestError(
                -32602, f"permission-denied: {exc}", {"reason": "permission_denied"}
            ) from None

    async def read_text_file(
        self,
        session_id: str,
        path: str,
        line: int | None = None,
        limit: int | None = None,
        **kwargs: Any,
    ) -> schema.ReadTextFileResponse:
        resolved = await self._authorize("fs/read_text_file", path)
        try:
            content = await asyncio.to_thread(
                fs_ops.read_text_file, self._workspace, resolved, line=line, limit=limit
            )
        except PathOutsideWorkspaceError as exc:  # the path changed after the check
            raise _outside(exc) from None
        except FileNotFoundError:
            raise acp.RequestError.resource_not_found(path) from None
        except (ValueError, OSError) as exc:
            raise acp.RequestError.invalid_params({"details": str(exc)}) from None
        return schema.ReadTextFileResponse(content=content)

    async def write_text_file(
        self, session_id: str, path: str, content: str, **kwargs: Any
    ) -> schema.WriteTextFileResponse:
        resolved = await self._authorize("fs/write_text_file", path)
        try:
            await asyncio.to_thread(fs_ops.write_text_file, self._workspace, resolved, content)
        except PathOutsideWorkspaceError as exc:  # the path changed after the check
            raise _outside(exc) from None
        except OSError as exc:
            raise acp.RequestError.internal_error(
                {"details": f"cannot write {path}: {exc.strerror or exc}"}
            ) from None
        return schema.WriteTextFileResponse()

    async def create_terminal(
        self,
        session_id: str,
        command: str,
        args: list[str] | None = None,
        env: list[Any] | None = None,
        cwd: str | None = None,
        output_byte_limit: int | None = None,
        **kwargs: Any,
    ) -> schema.CreateTerminalResponse:
        resolved = await self._authorize("terminal/create", cwd, [command, *(args or [])])
        try:
            terminal_id = await self._terminals.create(
                command,
                list(args or []),
                cwd=resolved,
                env={e.name: e.value for e in env or []},
                output_byte_limit=output_byte_limit,
            )
        except (OSError, ValueError) as exc:  # missing or not executable, cwd not a directory...
            raise acp.RequestError.invalid_params({"details": self._redact(str(exc))}) from None
        return schema.CreateTerminalResponse(terminal_id=terminal_id)

    async def terminal_output(
        self, session_id: str, terminal_id: str, **kwargs: Any
    ) -> schema.TerminalOutputResponse:
        output, truncated, status = self._terminal_call(
            lambda: self._terminals.output(terminal_id)
        )
        exit_status = schema.TerminalExitStatus(**status) if status else None
        return schema.TerminalOutputResponse(
            output=output, truncated=truncated, exit_status=exit_status
        )

    async def wait_for_terminal_exit(
        self, session_id: str, terminal_id: str, **kwargs: Any
    ) -> schema.WaitForTerminalExitResponse:
        status = await self._terminal_await(self._terminals.wait_for_exit(terminal_id))
        return schema.WaitForTerminalExitResponse(**status)

    async def kill_terminal(
        self, session_id: str, terminal_id: str, **kwargs: Any
    ) -> schema.KillTerminalResponse:
        await self._terminal_await(self._terminals.kill(terminal_id))
        return schema.KillTerminalResponse()

    async def release_terminal(
        self, session_id: str, terminal_id: str, **kwargs: Any
    ) -> schema.ReleaseTerminalResponse:
        await self._terminal_await(self._terminals.release(terminal_id))
        return schema.ReleaseTerminalResponse()

    @staticmethod
    def _terminal_call(call: Callable[[], T]) -> T:
        try:
            return call()
        except UnknownTerminalError as exc:
            raise acp.RequestError.invalid_params({"details": str(exc)}) from None

    @staticmethod
    async def _terminal_await(call: Awaitable[T]) -> T:
        try:
            return await call
        except UnknownTerminalError as exc:
            raise acp.RequestError.invalid_params({"details": str(exc)}) from None

    def on_raw_update(self, params: Any) -> None:
        """One ``session/update`` notification's ``params`` as parsed from its frame (the
        transport calls this; no SDK model is built): mapped (``acp_updates``) and handed to the
        session, which records it and keeps modes, config options and commands current. A
        payload of the wrong shape still reaches the session, as a ``system`` event saying what
        is wrong with it."""
        update = params.get("update") if isinstance(params, dict) else params
        event_type, fields = map_raw_update(update)
        self._listener.on_update(event_type, fields)

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        # The SDK's route, unused while the transport takes every session/update (on_raw_update);
        # kept so this class still implements the SDK's Client.
        self.on_raw_update({"update": dump(update)})

    async def request_permission(
        self, session_id: str, tool_call: Any, options: list[Any], **kwargs: Any
    ) -> schema.RequestPermissionResponse:
        choice = await self._listener.on_permission_request(
            dump(tool_call), [dump(o) for o in options]
        )
        if choice is None:
            return schema.RequestPermissionResponse(
                outcome=schema.DeniedOutcome(outcome="cancelled")
            )
        return schema.RequestPermissionResponse(
            outcome=schema.AllowedOutcome(outcome="selected", option_id=choice)
        )

    async def create_elicitation(self, message: str, mode: Any, **kwargs: Any) -> Any:
        form = isinstance(mode, (schema.ElicitationFormSessionMode, schema.ElicitationFormRequestMode))
        if not form:
            # URL mode (or anything newer) needs a browser flow we do not offer: decline it.
            return schema.DeclineElicitationResponse(action="decline")
        scope = dump(mode)
        requested = scope.pop("requestedSchema", {})
        answer = await self._listener.on_elicitation(message, requested if isinstance(requested, dict) else {}, scope)
        action = answer.get("action")
        if action == "accept":
            return schema.AcceptElicitationResponse(action="accept", content=answer.get("content") or {})
        if action == "decline":
            return schema.DeclineElicitationResponse(action="decline")
        return schema.CancelElicitationResponse(action="cancel")

    async def complete_elicitation(self, elicitation_id: str, **kwargs: Any) -> None:
        return None

    async def ext_method(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        raise acp.RequestError.method_not_found(method)

    async def ext_notification(self, method: str, params: dict[str, Any]) -> None:
        return None

    def on_connect(self, conn: Any) -> None:
        return None
