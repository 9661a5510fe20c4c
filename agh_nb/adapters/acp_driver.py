"""The ACP driver: one agent subprocess spoken to through the official ``acp`` SDK.

Owns: spawning the child (environment from an allowlist), the stdout tap that tells ACP frames
from garbage, stderr capture (bounded tail), the exit watcher, ``initialize`` / ``session/new``
/ ``session/load`` / ``session/prompt`` / ``session/cancel``, and turning every way those fail
into a classified ``DriverFailure``. The only module (with ``acp_mapping``) that imports acp.
Must not import core.session, runtime, kernel or server.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any, SupportsIndex, TypeVar, cast

import acp
from acp import schema
from acp._transport import NdjsonTransport  # the SDK's framing; we only change bad-line handling
from acp.task import MessageSender, TaskSupervisor

from agh_nb.adapters import fs_ops
from agh_nb.adapters.acp_mapping import dump, map_update, usage_from_prompt
from agh_nb.adapters.terminals import TerminalManager, UnknownTerminalError
from agh_nb.core.classify import exit_summary
from agh_nb.core.ports import (
    DriverFailure,
    DriverListener,
    ExitInfo,
    Handshake,
    LaunchSpec,
    TurnOutcome,
)
from agh_nb.core.redaction import redact_strings
from agh_nb.core.state import FailureKind
from agh_nb.errors import PathOutsideWorkspaceError, PermissionDeniedError
from agh_nb.events import loads

log = logging.getLogger(__name__)

T = TypeVar("T")

# The SDK's default; multimodal payloads can be large.
STREAM_LIMIT = 50 * 1024 * 1024
STDERR_TAIL_BYTES = 8192
SECRET_MARGIN = 4096
"""Text kept beyond a cut (stderr tail, garbage preview) until it is redacted: a secret that
straddles the cut is then replaced whole instead of leaving its end (or start) in the text."""
ENV_ALLOWLIST = (
    "HOME",
    "LOGNAME",
    "PATH",
    "SHELL",
    "TERM",
    "USER",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "TZ",
)

Redactor = Callable[[str], str]


def _identity(text: str) -> str:
    return text


def _client_version() -> str:
    try:
        return metadata.version("agh-nb")
    except metadata.PackageNotFoundError:
        return "0"


def build_environment(extra: dict[str, str], base: dict[str, str] | None = None) -> dict[str, str]:
    """Return the child's environment: allowlisted variables of ``base`` plus ``extra``."""
    base = dict(os.environ) if base is None else base
    env = {k: v for k in ENV_ALLOWLIST if (v := base.get(k)) is not None and not v.startswith("()")}
    env.update(extra)
    return env


YIELD_EVERY = 32
"""Frames read before the transport lets the loop run the tasks they started."""
SESSION_UPDATE = "session/update"
RAW_UPDATE_KEY = "agh_nb.raw_update"
"""Where the transport leaves a ``session/update``'s payload as received, for ``_Client``."""


def _carry_raw_update(message: dict[str, Any]) -> None:
    # The SDK validates a notification into a model and calls session_update with the model,
    # plus the notification's ``_meta`` entries as keyword arguments. Putting the update's own
    # dict there hands it to _Client as received: that is the SPEC's ``raw`` (a dump of the
    # model would drop unknown fields and explicit nulls) and saves re-serialising it.
    params = message.get("params")
    if not isinstance(params, dict) or "id" in message:
        return
    update = params.get("update")
    meta = params.get("_meta")
    if not isinstance(update, dict) or not (meta is None or isinstance(meta, dict)):
        return
    params["_meta"] = {**(meta or {}), RAW_UPDATE_KEY: update}


READ_AHEAD = 128 * 1024
"""Bytes of agent output read ahead of the parser before reading pauses (backpressure)."""


class _BoundedReader(asyncio.StreamReader):
    """asyncio's StreamReader with a read-ahead bound of its own.

    The stock reader pauses the pipe only past twice its line limit (100 MiB here, since one ACP
    frame may be that big): an agent writing faster than we store would fill our memory and
    every event would wait behind that backlog. This one pauses past ``READ_AHEAD`` bytes, so
    the agent blocks on its own writes instead. (Uses the reader's documented-by-source private
    state: ``_buffer``, ``_paused``, ``_transport``, stable since Python 3.4.)
    """

    # The base class's own state, declared for the type checker.
    _buffer: bytearray
    _paused: bool
    _transport: asyncio.ReadTransport | None

    def __init__(self, *, limit: int, read_ahead: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self._read_ahead = read_ahead

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        super().feed_data(data)
        transport = self._transport
        if transport is not None and not self._paused and len(self._buffer) > self._read_ahead:
            transport.pause_reading()
            self._paused = True

    def _maybe_resume_transport(self) -> None:
        if self._paused and len(self._buffer) <= self._read_ahead and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()


class _AgentProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """The subprocess protocol of ``create_subprocess_exec``, reading stdout with ``_BoundedReader``."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        pipe = cast(asyncio.SubprocessTransport, transport).get_pipe_transport(1)
        if pipe is not None:
            reader = _BoundedReader(limit=STREAM_LIMIT, read_ahead=READ_AHEAD, loop=self._loop)  # type: ignore[attr-defined]
            reader.set_transport(pipe)
            self.stdout = reader


async def _spawn_agent(argv: list[str], *, env: dict[str, str], cwd: str) -> asyncio.subprocess.Process:
    """``asyncio.create_subprocess_exec`` with piped stdio and the bounded stdout reader."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.subprocess_exec(
        lambda: _AgentProtocol(limit=STREAM_LIMIT, loop=loop),
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    return asyncio.subprocess.Process(transport, protocol, loop)


class _CheckedTransport(NdjsonTransport):
    """The SDK's own NDJSON framing, except that a line which is not a JSON object is reported
    (a protocol failure) instead of being logged and skipped; each frame is parsed once."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        on_garbage: Callable[[bytes], None],
        on_eof: Callable[[], None],
    ) -> None:
        self._supervisor = TaskSupervisor(source="agh_nb.acp_driver")
        super().__init__(reader, MessageSender(writer, self._supervisor))
        self._on_garbage = on_garbage
        self._on_eof = on_eof
        self._unyielded = 0

    async def receive(self) -> dict[str, Any] | None:
        self._unyielded += 1
        if self._unyielded >= YIELD_EVERY:
            # Reading a buffered line does not yield to the loop, and the SDK starts one task per
            # notification: without this, a fast agent fills the loop with thousands of pending
            # tasks (latency, and garbage-collector work on everything they hold).
            self._unyielded = 0
            await asyncio.sleep(0)
        while True:
            try:
                line = await self._read_line()
            except (ValueError, asyncio.LimitOverrunError):
                self._on_garbage(b"<a line longer than the 50 MiB limit>")
                continue
            if not line:
                self._on_eof()
                return None
            line = line.strip()
            if not line:
                continue
            try:
                message = loads(line)
            except ValueError:
                message = None
            if isinstance(message, dict):
                if message.get("method") == SESSION_UPDATE:
                    _carry_raw_update(message)
                return message
            self._on_garbage(line)

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            await self._supervisor.shutdown()


def _outside(exc: PathOutsideWorkspaceError) -> acp.RequestError:
    return acp.RequestError(-32602, f"path-outside-workspace: {exc}", {"reason": "path_outside_workspace"})


class _Client:
    """The ACP ``Client`` side we implement: updates, permission requests, files and terminals.

    Every file or terminal call is authorised by the session first (permission mode, then the
    workspace boundary); a refusal reaches the agent as a JSON-RPC error naming the reason.
    """

    def __init__(self, driver: AcpDriver) -> None:
        self._driver = driver

    async def _authorize(self, operation: str, path: str | None, command: list[str] | None = None) -> Path:
        try:
            return await self._driver.listener.authorize(operation, path, command)
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
                fs_ops.read_text_file, self._driver.workspace, resolved, line=line, limit=limit
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
            await asyncio.to_thread(fs_ops.write_text_file, self._driver.workspace, resolved, content)
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
            terminal_id = await self._driver.terminals.create(
                command,
                list(args or []),
                cwd=resolved,
                env={e.name: e.value for e in env or []},
                output_byte_limit=output_byte_limit,
            )
        except (OSError, ValueError) as exc:  # missing or not executable, cwd not a directory...
            raise acp.RequestError.invalid_params({"details": self._driver._redact(str(exc))}) from None
        return schema.CreateTerminalResponse(terminal_id=terminal_id)

    async def terminal_output(
        self, session_id: str, terminal_id: str, **kwargs: Any
    ) -> schema.TerminalOutputResponse:
        output, truncated, status = self._terminal_call(
            lambda: self._driver.terminals.output(terminal_id)
        )
        exit_status = schema.TerminalExitStatus(**status) if status else None
        return schema.TerminalOutputResponse(
            output=output, truncated=truncated, exit_status=exit_status
        )

    async def wait_for_terminal_exit(
        self, session_id: str, terminal_id: str, **kwargs: Any
    ) -> schema.WaitForTerminalExitResponse:
        status = await self._terminal_await(self._driver.terminals.wait_for_exit(terminal_id))
        return schema.WaitForTerminalExitResponse(**status)

    async def kill_terminal(
        self, session_id: str, terminal_id: str, **kwargs: Any
    ) -> schema.KillTerminalResponse:
        await self._terminal_await(self._driver.terminals.kill(terminal_id))
        return schema.KillTerminalResponse()

    async def release_terminal(
        self, session_id: str, terminal_id: str, **kwargs: Any
    ) -> schema.ReleaseTerminalResponse:
        await self._terminal_await(self._driver.terminals.release(terminal_id))
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

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        raw = kwargs.get(RAW_UPDATE_KEY)
        event_type, fields = map_update(update, raw if isinstance(raw, dict) else None)
        self._driver.listener.on_update(event_type, fields)

    async def request_permission(
        self, session_id: str, tool_call: Any, options: list[Any], **kwargs: Any
    ) -> schema.RequestPermissionResponse:
        choice = await self._driver.listener.on_permission_request(
            dump(tool_call), [dump(o) for o in options]
        )
        if choice is None:
            return schema.RequestPermissionResponse(
                outcome=schema.DeniedOutcome(outcome="cancelled")
            )
        return schema.RequestPermissionResponse(
            outcome=schema.AllowedOutcome(outcome="selected", option_id=choice)
        )

    async def ext_method(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        raise acp.RequestError.method_not_found(method)

    async def ext_notification(self, method: str, params: dict[str, Any]) -> None:
        return None

    def on_connect(self, conn: Any) -> None:
        return None


class AcpDriver:
    """One ACP agent subprocess; implements ``agh_nb.core.ports.AgentDriver``.

    Args:
        startup_timeout: seconds to wait for ``initialize`` / ``session/new`` / ``session/load``.
        redact: scrubs secrets from any text that leaves the driver (summaries, stderr tail).
        base_env: environment the allowlist is drawn from (default ``os.environ``).
    """

    def __init__(
        self,
        *,
        startup_timeout: float = 60.0,
        redact: Redactor = _identity,
        base_env: dict[str, str] | None = None,
    ) -> None:
        self._startup_timeout = startup_timeout
        self._redact = redact
        self._base_env = base_env
        self._proc: asyncio.subprocess.Process | None = None
        self._conn: Any = None
        self._listener: DriverListener | None = None
        self._agent_name = "agent"
        self.workspace = Path(".")  # the session's workspace (``spec.cwd``), set by start()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stderr: collections.deque[bytes] = collections.deque()
        self._stderr_size = 0
        self._fatal: asyncio.Future[DriverFailure] | None = None
        self._exit: asyncio.Future[ExitInfo] | None = None
        self._closing = False
        self._closed_info: ExitInfo | None = None
        self._exit_info: ExitInfo | None = None
        self._phase = "spawn"
        self.terminals = TerminalManager()

    # -- public surface -----------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The child's pid once spawned."""
        return self._proc.pid if self._proc else None

    @property
    def listener(self) -> DriverListener:
        """The session listening to this driver."""
        assert self._listener is not None
        return self._listener

    def stderr_tail(self) -> str:
        """Return the last few KiB the agent wrote to stderr, redacted."""
        return self._redact(b"".join(self._stderr).decode("utf-8", "replace"))[-STDERR_TAIL_BYTES:]

    async def start(self, spec: LaunchSpec, listener: DriverListener) -> Handshake:
        """Spawn the agent and run ``initialize``.

        Raises:
            DriverFailure: ``startup_failure`` (cannot spawn), ``handshake_failure`` (exit,
                error or timeout before ``initialize`` answered), ``protocol_failure`` (garbage).
        """
        loop = asyncio.get_running_loop()
        self._listener = listener
        self._agent_name = spec.agent_name
        self.workspace = Path(spec.cwd)
        self._fatal = loop.create_future()
        self._exit = loop.create_future()
        argv = list(spec.argv)
        try:
            self._proc = await _spawn_agent(
                argv, env=build_environment(dict(spec.env), self._base_env), cwd=spec.cwd
            )
        except FileNotFoundError as exc:
            raise DriverFailure(
                FailureKind.STARTUP_FAILURE,
                f"cannot start agent {spec.agent_name!r}: command {argv[0]!r} was not found "
                "(install it, or fix `command` in its AGENT.md)",
            ) from exc
        except PermissionError as exc:
            raise DriverFailure(
                FailureKind.STARTUP_FAILURE,
                f"cannot start agent {spec.agent_name!r}: {argv[0]!r} is not executable",
            ) from exc
        except OSError as exc:
            raise DriverFailure(
                FailureKind.STARTUP_FAILURE,
                f"cannot start agent {spec.agent_name!r}: {exc.strerror or exc}",
            ) from exc
        assert self._proc.stdin is not None and self._proc.stdout is not None
        transport = _CheckedTransport(
            self._proc.stdout, self._proc.stdin, on_garbage=self._garbage, on_eof=self._stdout_closed
        )
        self._spawn(self._drain_stderr(), "acp.stderr")
        self._spawn(self._watch_exit(), "acp.exit-watch")
        # _Client implements the part of acp.Client we support; the SDK answers the rest.
        self._conn = acp.connect_to_agent(cast(acp.Client, _Client(self)), transport)
        self._phase = "initialize"
        response = await self._guard(
            self._conn.initialize(
                protocol_version=acp.PROTOCOL_VERSION,
                client_capabilities=schema.ClientCapabilities(
                    fs=schema.FileSystemCapabilities(read_text_file=True, write_text_file=True),
                    terminal=True,
                ),
                client_info=schema.Implementation(
                    name="agh_nb", title="agh_nb", version=_client_version()
                ),
            ),
            phase="initialize",
            error_kind=FailureKind.HANDSHAKE_FAILURE,
            timeout=self._startup_timeout,
        )
        # Both are the agent's words and end up in the session record: scrubbed like events.
        caps = redact_strings(dump(response.agent_capabilities), self._redact) if response.agent_capabilities else {}
        info = redact_strings(dump(response.agent_info), self._redact) if response.agent_info else None
        return Handshake(
            protocol_version=response.protocol_version, agent_caps=caps, agent_info=info
        )

    async def new_session(self, cwd: str) -> str:
        """Run ``session/new``; raise ``DriverFailure`` (handshake_failure) when it fails."""
        self._phase = "session/new"
        response = await self._guard(
            self._conn.new_session(cwd=cwd, mcp_servers=[]),
            phase="session/new",
            error_kind=FailureKind.HANDSHAKE_FAILURE,
            timeout=self._startup_timeout,
        )
        self._phase = "idle"
        return str(response.session_id)

    async def load_session(self, acp_session_id: str, cwd: str) -> None:
        """Run ``session/load``; raise ``DriverFailure`` (load_session_failure, code kept)."""
        self._phase = "session/load"
        await self._guard(
            self._conn.load_session(cwd=cwd, session_id=acp_session_id, mcp_servers=[]),
            phase="session/load",
            error_kind=FailureKind.LOAD_SESSION_FAILURE,
            timeout=self._startup_timeout,
        )
        self._phase = "idle"

    async def prompt(self, acp_session_id: str, text: str) -> TurnOutcome:
        """Run one ``session/prompt`` turn; raise ``DriverFailure`` when it fails."""
        self._phase = "prompt"
        try:
            response = await self._guard(
                self._conn.prompt(session_id=acp_session_id, prompt=[acp.text_block(text)]),
                phase="session/prompt",
                error_kind=FailureKind.PROMPT_FAILURE,
                timeout=None,
            )
        finally:
            self._phase = "idle"
        return TurnOutcome(
            stop_reason=str(response.stop_reason), usage=usage_from_prompt(response.usage)
        )

    async def cancel(self, acp_session_id: str) -> None:
        """Send ``session/cancel``; harmless when the agent is already gone.

        Raises:
            DriverFailure: ``cancellation`` when the agent still runs but the cancel cannot be
                written to it (its stdin is broken): the turn cannot be stopped cooperatively.
        """
        if self._conn is None:
            return
        try:
            await self._conn.cancel(session_id=acp_session_id)
        except (ConnectionError, OSError, RuntimeError) as exc:
            proc = self._proc
            if self._closing or proc is None or proc.returncode is not None or (self._exit is not None and self._exit.done()):
                return  # the agent is gone: there is nothing left to cancel
            raise DriverFailure(
                FailureKind.CANCELLATION,
                f"session/cancel could not be sent to agent {self._agent_name!r} (pid {proc.pid}): "
                f"{self._redact(str(exc) or type(exc).__name__)}",
            ) from exc

    async def close(self, grace: float) -> ExitInfo:
        """Close stdin, wait ``grace`` seconds, terminate, wait, kill; idempotent."""
        if self._closed_info is not None:
            return self._closed_info
        self._closing = True
        with contextlib.suppress(Exception):
            await self.terminals.aclose()
        proc = self._proc
        if proc is None:
            self._closed_info = ExitInfo(pid=None, returncode=None, signal=None)
            return self._closed_info
        if proc.stdin is not None:
            with contextlib.suppress(Exception):
                proc.stdin.close()
        for escalate in (None, proc.terminate, proc.kill):
            if escalate is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    escalate()
                    self._killpg(escalate is proc.kill)
            try:
                await asyncio.wait_for(asyncio.shield(self._exit_future()), timeout=grace)
                break
            except asyncio.TimeoutError:
                continue
        info = await self._exit_future()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._conn.close(), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        self._closed_info = info
        return info

    # -- internals ----------------------------------------------------------------------------

    def _killpg(self, hard: bool) -> None:
        # The agent runs in its own process group so children it spawned (npx -> node) die too.
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, 9 if hard else 15)

    def _exit_future(self) -> asyncio.Future[ExitInfo]:
        assert self._exit is not None
        return self._exit

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(f"{name}[{self._agent_name}]")
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("driver task %s failed: %r", t.get_name(), t.exception())

        task.add_done_callback(done)

    def _set_fatal(self, failure: DriverFailure) -> None:
        if self._fatal is not None and not self._fatal.done():
            self._fatal.set_result(failure)

    async def _guard(
        self,
        call: Awaitable[T],
        *,
        phase: str,
        error_kind: FailureKind,
        timeout: float | None,
    ) -> T:
        """Run one SDK call, racing it against the agent dying or misbehaving."""
        assert self._fatal is not None
        task: asyncio.Future[T] = asyncio.ensure_future(call)
        try:
            waiters: set[asyncio.Future[Any]] = {task, self._fatal}
            done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task in done:
            try:
                return task.result()
            except acp.RequestError as exc:
                detail = self._redact(str(exc))
                data = exc.data if isinstance(exc.data, dict) else None
                extra = data.get("details") or data.get("message") if data else None
                msg = f"agent {self._agent_name!r} answered {phase} with error {exc.code}: {detail}"
                if extra and isinstance(extra, str):
                    msg += f" ({self._redact(extra)[:300]})"
                raise DriverFailure(error_kind, msg, code=exc.code) from None
            except ConnectionError:
                # The SDK saw EOF; the exit watcher / tap says why. Give them a moment.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._fatal), timeout=2.0)
                if self._fatal.done():
                    raise self._phase_failure(self._fatal.result(), phase) from None
                raise DriverFailure(
                    FailureKind.TRANSPORT_FAILURE,
                    f"connection to agent {self._agent_name!r} closed during {phase}",
                ) from None
            except DriverFailure:
                raise
            except Exception as exc:  # SDK validation of a malformed answer
                raise DriverFailure(
                    FailureKind.PROTOCOL_FAILURE,
                    f"agent {self._agent_name!r} sent an invalid answer to {phase}: {type(exc).__name__}",
                ) from exc
        task.cancel()
        if self._fatal.done():
            raise self._phase_failure(self._fatal.result(), phase)
        raise DriverFailure(
            error_kind if phase != "session/prompt" else FailureKind.TIMEOUT,
            f"agent {self._agent_name!r} did not answer {phase} within {timeout:g}s",
        )

    def _phase_failure(self, failure: DriverFailure, phase: str) -> DriverFailure:
        """Re-classify a process exit by phase: before the handshake it is a handshake failure."""
        if failure.kind is FailureKind.PROCESS_EXIT and phase in ("initialize", "session/new"):
            return DriverFailure(
                FailureKind.HANDSHAKE_FAILURE, self._exit_summary(f" before answering {phase}")
            )
        if failure.kind is FailureKind.PROCESS_EXIT and phase == "session/load":
            return DriverFailure(
                FailureKind.LOAD_SESSION_FAILURE, self._exit_summary(" during session/load")
            )
        return failure

    def _garbage(self, line: bytes) -> None:
        preview = self._redact(line[: 120 + SECRET_MARGIN].decode("utf-8", "replace"))[:120]
        self._protocol_error(f"agent {self._agent_name!r} wrote non-ACP output on stdout: {preview!r}")

    def _stdout_closed(self) -> None:
        if not self._closing:
            self._spawn(self._check_stdout_close(), "acp.stdout-closed")

    async def _check_stdout_close(self) -> None:
        """stdout closed: either the process is exiting, or it closed stdout and lives on."""
        try:
            await asyncio.wait_for(asyncio.shield(self._exit_future()), timeout=1.0)
        except asyncio.TimeoutError:
            pid = self._proc.pid if self._proc else None
            failure = DriverFailure(
                FailureKind.TRANSPORT_FAILURE,
                f"agent {self._agent_name!r} closed its stdout but is still running (pid {pid})",
            )
            self._set_fatal(failure)
            self.listener.on_protocol_error(failure.summary)

    def _protocol_error(self, summary: str) -> None:
        log.warning("%s", summary)
        self._set_fatal(DriverFailure(FailureKind.PROTOCOL_FAILURE, summary))
        self.listener.on_protocol_error(summary)

    async def _drain_stderr(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stderr is not None
        while True:
            chunk = await proc.stderr.read(4096)
            if not chunk:
                return
            self._stderr.append(chunk)
            self._stderr_size += len(chunk)
            while self._stderr_size > STDERR_TAIL_BYTES + SECRET_MARGIN and len(self._stderr) > 1:
                self._stderr_size -= len(self._stderr.popleft())

    async def _watch_exit(self) -> None:
        proc = self._proc
        assert proc is not None
        returncode = await proc.wait()
        # Let the stderr pipe drain so the tail includes the last words.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stderr_closed(), timeout=0.5)
        info = ExitInfo(
            pid=proc.pid,
            returncode=returncode if returncode >= 0 else None,
            signal=-returncode if returncode < 0 else None,
            stderr_tail=self.stderr_tail(),
        )
        if self._exit is not None and not self._exit.done():
            self._exit.set_result(info)
        self._exit_info = info
        if not self._closing:
            self._set_fatal(
                DriverFailure(
                    FailureKind.PROCESS_EXIT, self._exit_summary(""), returncode=returncode
                )
            )
        self.listener.on_exit(info)

    def _exit_summary(self, when: str) -> str:
        assert self._exit_info is not None
        return exit_summary(self._agent_name, self._exit_info, when)

    async def _stderr_closed(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stderr is not None
        while not proc.stderr.at_eof():
            await asyncio.sleep(0.01)
