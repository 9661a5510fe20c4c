"""The ACP driver: one agent subprocess spoken to through the official ``acp`` SDK.

Owns: ``AcpDriver`` — deciding the agent's sandbox (``adapters.sandbox``: bubblewrap, per the
launch's ``SandboxPolicy``; its terminals get the same one) and recording its process for crash
repair, the agent-facing calls (``initialize``, ``authenticate``, ``session/new``, ``/load``,
``/resume``, ``/fork``, ``/set_mode``, ``/set_config_option``, ``/set_model``, ``/prompt``,
``/cancel``, ``/close``), stderr capture (bounded tail, and every chunk handed to the session's
log), the exit watcher, the escalating close, and turning every way those fail into a classified
``DriverFailure`` (what an error answer means: ``acp_errors``). Spawning and framing live in
``acp_transport``, the methods an agent calls on
us in ``acp_client``. Imports acp; must not import core.session, runtime, kernel or server.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar, cast

import acp
from acp import schema

from agh_nb.adapters.acp_client import Client
from agh_nb.adapters.acp_errors import is_auth_required, is_unknown_session
from agh_nb.adapters.acp_mapping import dump, mcp_servers as _mcp, raw_result as _raw_result, usage_from_prompt
from agh_nb.adapters.acp_transport import CheckedTransport, build_environment, check_command, spawn_agent
from agh_nb.adapters.sandbox import Confinement, SandboxUnavailableError, confinement
from agh_nb.adapters.terminals import TerminalManager
from agh_nb.config import McpServerDef
from agh_nb.core.classify import exit_summary
from agh_nb.core.leftovers import ProcessBook, ProcessEntry
from agh_nb.core.ports import (
    DriverFailure,
    DriverListener,
    ExitInfo,
    Handshake,
    LaunchSpec,
    OpenedSession,
    TurnOutcome,
)
from agh_nb.core.redaction import redact_strings
from agh_nb.core.sandbox_policy import PROCESS_TAG
from agh_nb.core.state import FailureKind
from agh_nb.core.tasks import TaskOwner

log = logging.getLogger(__name__)
_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])
"""The agh_nb package directory."""

T = TypeVar("T")

SESSION_CLOSE_TIMEOUT = 1.0
"""Seconds ``session/close`` may take at stop before stdin is closed anyway."""
STATE_KEYS = ("modes", "models", "configOptions")
"""What a session-opening answer carries about the session, kept as received."""
STDERR_TAIL_BYTES = 8192
SECRET_MARGIN = 4096
"""Text kept beyond a cut (stderr tail, garbage preview) until it is redacted: a secret that
straddles the cut is then replaced whole instead of leaving its end (or start) in the text."""

Redactor = Callable[[str], str]


def _identity(text: str) -> str:
    return text


def _client_version() -> str:
    try:
        return metadata.version("agh-nb")
    except metadata.PackageNotFoundError:
        return "0"


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
        backlog: Callable[[], int] | None = None,
    ) -> None:
        self._startup_timeout = startup_timeout
        self._backlog = backlog
        self._redact = redact
        self._base_env = base_env
        self._proc: asyncio.subprocess.Process | None = None
        self._conn: Any = None
        self._transport: CheckedTransport | None = None
        self._listener: DriverListener | None = None
        self._agent_name = "agent"
        self.workspace = Path(".")  # the session's workspace (``spec.cwd``), set by start()
        self._tasks = TaskOwner("agent", logger=log)
        self._stderr: collections.deque[bytes] = collections.deque()
        self._stderr_size = 0
        self._fatal: asyncio.Future[DriverFailure] | None = None
        self._exit: asyncio.Future[ExitInfo] | None = None
        self._closing = False
        self._closed_info: ExitInfo | None = None
        self._exit_info: ExitInfo | None = None
        self._phase = "spawn"
        self._caps: dict[str, Any] = {}
        self._open_sessions: list[str] = []  # ACP sessions opened here, closed at stop
        self._book: ProcessBook | None = None
        self._confinement: Confinement | None = None
        self.terminals = TerminalManager()

    # -- public surface -----------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The child's pid once spawned."""
        return self._proc.pid if self._proc else None

    @property
    def sandboxed(self) -> bool:
        """True when the agent (and its terminals) run inside the sandbox."""
        return self._confinement is not None

    @property
    def listener(self) -> DriverListener:
        """The session listening to this driver."""
        assert self._listener is not None
        return self._listener

    def redact(self, text: str) -> str:
        """Scrub the secrets this driver knows from ``text``."""
        return self._redact(text)

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
        self._tasks.rename(spec.agent_name)
        self.workspace = Path(spec.cwd)
        self._fatal = loop.create_future()
        self._exit = loop.create_future()
        argv = list(spec.argv)
        env = build_environment(dict(spec.env), self._base_env)
        if spec.session_id:
            env[PROCESS_TAG] = spec.session_id  # how crash repair knows our processes
        try:
            resolved = check_command(argv[0], env)
            # The interpreter, and agh_nb's own code (the built-in agents run from it; an editable
            # install is the source tree), stay visible wherever they are installed.
            keep = [resolved, os.path.realpath(resolved), sys.prefix, sys.base_prefix, _PACKAGE_DIR]
            self._confinement = await confinement(spec.sandbox, keep=keep)
            self._proc = await spawn_agent(argv, env=env, cwd=spec.cwd, confinement=self._confinement)
        except SandboxUnavailableError as exc:
            raise DriverFailure(
                FailureKind.STARTUP_FAILURE, f"cannot start agent {spec.agent_name!r}: {exc}"
            ) from None
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
        if self._closing:  # closed (host shutdown) while spawning: this agent must not outlive it
            await self._reap_unwanted(self._proc)
            raise DriverFailure(FailureKind.STARTUP_FAILURE, f"agent {spec.agent_name!r} was stopped while it started")
        if spec.state_dir:
            self._book = ProcessBook(Path(spec.state_dir))
            entry = ProcessEntry.of(self._proc.pid, kind="agent", name=spec.agent_name)
            with contextlib.suppress(OSError):  # a crash could then leave it running; nothing worse
                await asyncio.to_thread(self._book.add, entry)
        self.terminals.confine(self._confinement, book=self._book, tag=env.get(PROCESS_TAG))
        client = Client(listener, self.terminals, self._redact, self.workspace)
        transport = self._transport = CheckedTransport(
            self._proc.stdout,
            self._proc.stdin,
            on_garbage=self._garbage,
            on_eof=self._stdout_closed,
            on_update=client.on_raw_update,
            backlog=self._backlog,
        )
        self._tasks.spawn(self._drain_stderr(), "acp.stderr")
        self._tasks.spawn(self._watch_exit(), "acp.exit-watch")
        # Client implements the part of acp.Client we support; the SDK answers the rest, except
        # session/update, which the transport hands to client.on_raw_update itself.
        # The unstable protocol lets the SDK route elicitation/create to us.
        self._conn = acp.connect_to_agent(
            cast(acp.Client, client), transport, use_unstable_protocol=True
        )
        self._phase = "initialize"
        response = await self._guard(
            self._conn.initialize(
                protocol_version=acp.PROTOCOL_VERSION,
                client_capabilities=schema.ClientCapabilities(
                    fs=schema.FileSystemCapabilities(read_text_file=True, write_text_file=True),
                    terminal=True,
                    # Opting in to terminal auth makes agents list their login methods (claude's
                    # claude-login); we never run them, we name them in an auth_failure.
                    auth=schema.AuthCapabilities(terminal=True),
                    elicitation=schema.ElicitationCapabilities(form=schema.ElicitationFormCapabilities()),
                    session=schema.ClientSessionCapabilities(
                        config_options=schema.SessionConfigOptionsCapabilities(
                            boolean=schema.BooleanConfigOptionCapabilities()
                        )
                    ),
                ),
                client_info=schema.Implementation(
                    name="agh_nb", title="agh_nb", version=_client_version()
                ),
            ),
            phase="initialize",
            error_kind=FailureKind.HANDSHAKE_FAILURE,
            timeout=self._startup_timeout,
        )
        # All of it is the agent's words and ends up in the session record: scrubbed like events.
        caps = redact_strings(dump(response.agent_capabilities), self._redact) if response.agent_capabilities else {}
        info = redact_strings(dump(response.agent_info), self._redact) if response.agent_info else None
        raw = _raw_result(response)
        methods = raw.get("authMethods") if isinstance(raw.get("authMethods"), list) else [
            dump(m) for m in response.auth_methods or []
        ]
        self._caps = caps
        return Handshake(
            protocol_version=response.protocol_version,
            agent_caps=caps,
            agent_info=info,
            auth_methods=[m for m in redact_strings(methods, self._redact) if isinstance(m, dict)],
            sandboxed=self.sandboxed,
        )

    async def authenticate(self, method_id: str) -> None:
        """Run ``authenticate``; raise ``DriverFailure`` (auth_failure, code kept) when refused."""
        self._phase = "authenticate"
        try:
            await self._guard(
                self._conn.authenticate(method_id=method_id),
                phase=f"authenticate {method_id}",
                error_kind=FailureKind.AUTH_FAILURE,
                timeout=self._startup_timeout,
            )
        finally:
            self._phase = "idle"

    async def new_session(self, cwd: str, mcp_servers: tuple[McpServerDef, ...] = ()) -> OpenedSession:
        """Run ``session/new``; raise ``DriverFailure`` (handshake_failure) when it fails."""
        response = await self._session_call(
            "session/new",
            self._conn.new_session(cwd=cwd, mcp_servers=_mcp(mcp_servers)),
            FailureKind.HANDSHAKE_FAILURE,
        )
        return self._opened(str(response.session_id), response)

    async def load_session(
        self, acp_session_id: str, cwd: str, mcp_servers: tuple[McpServerDef, ...] = ()
    ) -> OpenedSession:
        """Run ``session/load``; raise ``DriverFailure`` (load_session_failure, code kept)."""
        response = await self._session_call(
            "session/load",
            self._conn.load_session(cwd=cwd, session_id=acp_session_id, mcp_servers=_mcp(mcp_servers)),
            FailureKind.LOAD_SESSION_FAILURE,
        )
        return self._opened(acp_session_id, response)

    async def resume_session(
        self, acp_session_id: str, cwd: str, mcp_servers: tuple[McpServerDef, ...] = ()
    ) -> OpenedSession:
        """Run ``session/resume``; raise ``DriverFailure`` (load_session_failure, code kept)."""
        response = await self._session_call(
            "session/resume",
            self._conn.resume_session(cwd=cwd, session_id=acp_session_id, mcp_servers=_mcp(mcp_servers)),
            FailureKind.LOAD_SESSION_FAILURE,
        )
        return self._opened(acp_session_id, response)

    async def fork_session(
        self, acp_session_id: str, cwd: str, mcp_servers: tuple[McpServerDef, ...] = ()
    ) -> OpenedSession:
        """Run ``session/fork``; raise ``DriverFailure`` (handshake_failure) when it fails."""
        response = await self._session_call(
            "session/fork",
            self._conn.fork_session(cwd=cwd, session_id=acp_session_id, mcp_servers=_mcp(mcp_servers)),
            FailureKind.HANDSHAKE_FAILURE,
        )
        return self._opened(str(response.session_id), response)

    async def set_mode(self, acp_session_id: str, mode_id: str) -> None:
        """Run ``session/set_mode``; raise ``DriverFailure`` (protocol_failure) when refused."""
        await self._guard(
            self._conn.set_session_mode(session_id=acp_session_id, mode_id=mode_id),
            phase="session/set_mode",
            error_kind=FailureKind.PROTOCOL_FAILURE,
            timeout=self._startup_timeout,
        )

    async def set_config_option(self, acp_session_id: str, config_id: str, value: str | bool) -> list[Any] | None:
        """Run ``session/set_config_option``; returns the config options the agent answered."""
        response = await self._guard(
            self._conn.set_config_option(config_id=config_id, session_id=acp_session_id, value=value),
            phase="session/set_config_option",
            error_kind=FailureKind.PROTOCOL_FAILURE,
            timeout=self._startup_timeout,
        )
        options = _raw_result(response).get("configOptions") if response is not None else None
        return redact_strings(options, self._redact) if isinstance(options, list) else None

    async def set_model(self, acp_session_id: str, model_id: str) -> None:
        """Run ``session/set_model``, a method of the protocol's unstable part that the SDK has no
        call for (gemini-cli reports ``models`` and takes it): sent as a raw request."""
        await self._guard(
            self._conn._conn.send_request("session/set_model", {"sessionId": acp_session_id, "modelId": model_id}),
            phase="session/set_model",
            error_kind=FailureKind.PROTOCOL_FAILURE,
            timeout=self._startup_timeout,
        )

    async def _session_call(self, phase: str, call: Awaitable[T], error_kind: FailureKind) -> T:
        self._phase = phase
        try:
            return await self._guard(call, phase=phase, error_kind=error_kind, timeout=self._startup_timeout)
        finally:
            self._phase = "idle"

    def _opened(self, session_id: str, response: Any) -> OpenedSession:
        raw = _raw_result(response) if response is not None else {}
        state = {k: raw[k] for k in STATE_KEYS if raw.get(k) is not None}
        if session_id not in self._open_sessions:
            self._open_sessions.append(session_id)
        return OpenedSession(session_id=session_id, state=redact_strings(state, self._redact))

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

    def quiesce(self) -> None:
        """Drop the agent's ``session/update`` notifications from now on (host shutdown); see
        ``CheckedTransport.discard_updates``."""
        if self._transport is not None:
            self._transport.discard_updates()

    @property
    def discarded_updates(self) -> int:
        """``session/update`` notifications dropped since ``quiesce``."""
        return self._transport.discarded if self._transport is not None else 0

    async def close(self, grace: float) -> ExitInfo:
        """Close the agent's sessions, close stdin, wait ``grace`` seconds, SIGTERM its group,
        wait, SIGKILL it, wait; then SIGKILL what is left of the group; idempotent.

        Bounded: ``session/close`` gets at most ``min(grace, SESSION_CLOSE_TIMEOUT)`` per ACP
        session and every other wait at most ``grace``, so a stuck agent costs about
        ``5 x grace``. A process still there after that is reported ``running``.
        """
        if self._closed_info is not None:
            return self._closed_info
        await self._close_sessions(min(grace, SESSION_CLOSE_TIMEOUT))
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
        reaped = self._tasks.spawn(proc.wait(), "acp.reap")
        for escalate in (None, signal.SIGTERM, signal.SIGKILL):
            if escalate is not None and proc.returncode is None:
                self._killpg(escalate)
            done, _ = await asyncio.wait({reaped}, timeout=grace)
            if done:
                break
        if proc.returncode is not None:
            # The leader is gone; a child it left in its group (a shell's background job) goes
            # too, and its stdio with it, so the exit watcher is not kept waiting for the pipes.
            self._kill_stragglers(proc.pid)
        info = await self._final_exit(proc, grace)
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._conn.close(), timeout=grace)
        await self._tasks.aclose()
        self._closed_info = info
        return info

    async def _final_exit(self, proc: asyncio.subprocess.Process, grace: float) -> ExitInfo:
        """How the agent ended, as the exit watcher saw it (waiting at most ``grace`` more for
        its last stderr); ``running`` if it never exited."""
        try:
            return await asyncio.wait_for(asyncio.shield(self._exit_future()), timeout=grace)
        except asyncio.TimeoutError:
            pass
        returncode = proc.returncode
        if returncode is None:
            log.warning("agent %r (pid %s) did not exit after SIGKILL", self._agent_name, proc.pid)
            return ExitInfo(pid=proc.pid, returncode=None, signal=None, stderr_tail=self.stderr_tail(), running=True)
        return ExitInfo(
            pid=proc.pid,
            returncode=returncode if returncode >= 0 else None,
            signal=-returncode if returncode < 0 else None,
            stderr_tail=self.stderr_tail(),
        )

    async def _close_sessions(self, timeout: float) -> None:
        """Send ``session/close`` for each ACP session opened here, where the agent advertises it.

        claude-agent-acp ignores EOF on stdin while a session is open, and exits once it is
        closed; an agent that ignores both still gets the escalation. Each close is bounded by
        ``timeout``; a failed or slow close is no reason to wait longer.
        """
        session_caps = self._caps.get("sessionCapabilities") if isinstance(self._caps, dict) else None
        proc = self._proc
        if not isinstance(session_caps, dict) or session_caps.get("close") is None or self._conn is None:
            return
        if proc is None or proc.returncode is not None or (self._exit is not None and self._exit.done()):
            return
        for session_id in list(self._open_sessions):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._conn.close_session(session_id=session_id), timeout=timeout)
        self._open_sessions.clear()

    # -- internals ----------------------------------------------------------------------------

    def _killpg(self, sig: signal.Signals) -> None:
        # The agent runs in its own process group so children it spawned (npx -> node) die too.
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    @staticmethod
    async def _reap_unwanted(proc: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(proc.wait(), timeout=SESSION_CLOSE_TIMEOUT)

    @staticmethod
    def _kill_stragglers(pgid: int) -> None:
        # Called right after the leader was reaped. While members of its group live, the kernel
        # does not hand its pid (their pgid) to anyone else; once none do, the call finds no
        # group, unless a whole cycle of pids went by in these few milliseconds.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)

    def _exit_future(self) -> asyncio.Future[ExitInfo]:
        assert self._exit is not None
        return self._exit

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
                raise DriverFailure(
                    error_kind,
                    msg,
                    code=exc.code,
                    detail=(detail + (f" ({self._redact(extra)[:300]})" if isinstance(extra, str) and extra else ""))[:500],
                    auth_required=is_auth_required(exc.code, str(exc), exc.data),
                    unknown_session=is_unknown_session(exc.code, str(exc), exc.data),
                ) from None
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
        if failure.kind is FailureKind.PROCESS_EXIT and (
            phase in ("initialize", "session/new", "session/fork") or phase.startswith("authenticate")
        ):
            return DriverFailure(
                FailureKind.HANDSHAKE_FAILURE, self._exit_summary(f" before answering {phase}")
            )
        if failure.kind is FailureKind.PROCESS_EXIT and phase in ("session/load", "session/resume"):
            return DriverFailure(
                FailureKind.LOAD_SESSION_FAILURE, self._exit_summary(f" during {phase}")
            )
        return failure

    def _garbage(self, line: bytes) -> None:
        preview = self._redact(line[: 120 + SECRET_MARGIN].decode("utf-8", "replace"))[:120]
        self._protocol_error(f"agent {self._agent_name!r} wrote non-ACP output on stdout: {preview!r}")

    def _stdout_closed(self) -> None:
        if not self._closing:
            self._tasks.spawn(self._check_stdout_close(), "acp.stdout-closed")

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
            self.listener.on_protocol_error(failure.kind, failure.summary)

    def _protocol_error(self, summary: str) -> None:
        log.warning("%s", summary)
        self._set_fatal(DriverFailure(FailureKind.PROTOCOL_FAILURE, summary))
        self.listener.on_protocol_error(FailureKind.PROTOCOL_FAILURE, summary)

    async def _drain_stderr(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stderr is not None
        while True:
            chunk = await proc.stderr.read(4096)
            if not chunk:
                return
            self.listener.on_stderr(chunk)
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
        # The book entry goes first, and on the loop: one unlink is cheaper than a hop to the
        # thread pool (busy with every other session's stop at host shutdown), and a hop could be
        # cancelled half way by close(), which ends this watcher as soon as the exit is known,
        # leaving a reaped agent in the book for crash repair to chase.
        if self._book is not None:
            try:
                self._book.remove(proc.pid)
            except OSError as exc:
                log.warning("cannot forget agent pid %s in the process book: %s", proc.pid, exc)
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

