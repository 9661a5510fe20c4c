"""Terminals run for an agent (``terminal/create``, ``/output``, ``/wait_for_exit``, ``/kill``, ``/release``).

Owns: ``TerminalManager`` (one per session), the child processes it spawns, their merged
stdout+stderr capture with the ACP ``outputByteLimit`` truncation, and the one watcher task per
terminal. Must not import acp (the ACP driver maps these results onto the schema), duckdb,
core.session, runtime or kernel. The permission mode and the workspace boundary of ``cwd`` are
checked by the caller before ``create``.

How a terminal lives: ``create`` makes an OS pipe, starts the command in its own process group
(``start_new_session``) with both stdout and stderr on the pipe's write end, and reads the read end
through an asyncio pipe transport whose protocol appends to a byte buffer trimmed from the front.
The watcher task waits for the process, then briefly for the pipe's end of file, then records the
exit status. ``kill`` sends SIGKILL to the whole group (so ``sh -c 'a | b'`` dies with its
children); ``release`` kills, waits, closes the pipe and forgets the id; ``aclose`` releases all.

Owning the pipe ourselves (rather than ``stdout=PIPE``) means the read side is a transport we can
close on release even when a backgrounded grandchild still holds the write end open; with
``stdout=PIPE`` the process transport would stay open and leak.

Confined (``confine``, set by the driver once the agent runs): each command runs inside the
session's bubblewrap sandbox (``adapters.sandbox``), the same one as the agent, and carries
``AGH_NB_SESSION``; each spawned process is written to the session's ``ProcessBook`` and removed
once reaped, so a host starting after a crash can kill what a dead host left (``core.leftovers``).
For the shutdown path: ``kill``/``release``/``aclose`` are the whole API (SIGKILL to the group).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, TypedDict

from agh_nb.adapters.sandbox import Confinement, unconfined
from agh_nb.core.leftovers import ProcessBook, ProcessEntry
from agh_nb.core.sandbox_policy import PROCESS_TAG
from agh_nb.errors import AghError

log = logging.getLogger(__name__)

DEFAULT_OUTPUT_BYTE_LIMIT = 1024 * 1024
# Variables a command may inherit from our own environment; everything else (API keys, tokens,
# the notebook server's secrets) stays out unless the agent passes it explicitly.
ENV_ALLOWLIST = ("PATH", "HOME", "LANG", "LC_ALL", "TERM", "TMPDIR", "USER", "LOGNAME", "SHELL")


class UnknownTerminalError(AghError, KeyError, ValueError):
    """Raised when a terminal id was never created here or has been released.

    A ``KeyError`` (an id lookup failed) and a ``ValueError`` (the agent sent a bad parameter), so
    callers may catch either; ``str()`` is the plain one-line message, not KeyError's repr.
    """


class TerminalsClosedError(AghError, RuntimeError):
    """Raised when ``create`` is called on a ``TerminalManager`` that was closed."""


class ExitStatus(TypedDict):
    """How a terminal's process ended: exactly one of the two is set (ACP ``TerminalExitStatus``)."""

    exit_code: int | None
    """The exit code, or None when a signal ended the process."""
    signal: str | None
    """The signal's name (``"SIGKILL"``), or None when the process exited by itself."""


class TerminalOutput(NamedTuple):
    """What ``TerminalManager.output`` returns; unpacks as ``(output, truncated, exit_status)``."""

    output: str
    truncated: bool
    exit_status: ExitStatus | None


def _new_terminal_id() -> str:
    return f"term_{secrets.token_hex(8)}"


@dataclass(eq=False)
class _Output:
    """The captured bytes of one terminal: the newest ``limit`` bytes, cut at a character start."""

    limit: int
    data: bytearray = field(default_factory=bytearray)
    truncated: bool = False

    def append(self, chunk: bytes) -> None:
        self.data += chunk
        excess = len(self.data) - self.limit
        if excess <= 0:
            return
        del self.data[:excess]
        # A cut may land inside a multi-byte character: drop its continuation bytes (10xxxxxx),
        # at most 3 of them, so the kept text starts on a character (ACP requires the cut to be on
        # a character boundary even if that keeps slightly less than the limit).
        skip = 0
        while skip < 3 and skip < len(self.data) and self.data[skip] & 0xC0 == 0x80:
            skip += 1
        del self.data[:skip]
        self.truncated = True

    def text(self, *, final: bool) -> str:
        """Decode the buffer; while the process runs, hold back a character still arriving."""
        end = len(self.data) if final else _complete_prefix(self.data)
        return bytes(self.data[:end]).decode("utf-8", errors="replace")


def _complete_prefix(data: bytearray) -> int:
    """Length of ``data`` without a trailing, not yet complete UTF-8 sequence."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:
            continue  # a continuation byte: the lead byte is further back
        needed = 2 if byte >= 0xC0 else 1
        needed = 3 if byte >= 0xE0 else needed
        needed = 4 if byte >= 0xF0 else needed
        return len(data) - back if needed > back else len(data)
    return len(data)


class _PipeProtocol(asyncio.Protocol):
    """Feeds the read end of a terminal's pipe into its ``_Output``; resolves ``closed`` at the end."""

    def __init__(self, output: _Output, closed: asyncio.Future[None]) -> None:
        self._output = output
        self._closed = closed

    def data_received(self, data: bytes) -> None:
        # No flow control on purpose: the buffer is trimmed to its limit, so memory stays bounded,
        # and pausing would block a chatty command forever once nobody polls its output.
        self._output.append(data)

    def eof_received(self) -> bool | None:
        return None  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed.done():
            self._closed.set_result(None)


@dataclass(eq=False)
class _Terminal:
    """One spawned command and everything owned on its behalf."""

    id: str
    process: asyncio.subprocess.Process
    output: _Output
    pipe: asyncio.ReadTransport
    pipe_closed: asyncio.Future[None]
    watcher: asyncio.Task[None] | None = None
    exit_status: ExitStatus | None = None


class TerminalManager:
    """The terminals of one session: spawn, poll, wait, kill, release; ``aclose`` ends them all.

    Use as ``async with TerminalManager() as terminals:`` or call ``aclose()`` (idempotent) when
    the session stops. All methods run on the event loop that created the terminals.

    Args:
        environ: where the allowlisted variables come from (default: ``os.environ``, read at each
            ``create``); tests pass a plain dict.
        new_id: terminal id generator (default ``term_<16 hex digits>``).
        drain_timeout: after the process exits, how long to wait for the pipe's end of file before
            reporting the exit anyway (a backgrounded grandchild may keep the pipe open).
        kill_timeout: how long ``kill``/``release`` wait for the process to die after SIGKILL.
    """

    def __init__(
        self,
        *,
        environ: Mapping[str, str] | None = None,
        new_id: Callable[[], str] = _new_terminal_id,
        drain_timeout: float = 1.0,
        kill_timeout: float = 5.0,
    ) -> None:
        self._environ = environ
        self._new_id = new_id
        self._drain_timeout = drain_timeout
        self._kill_timeout = kill_timeout
        self._terminals: dict[str, _Terminal] = {}
        self._closed = False
        self._confinement: Confinement | None = None
        self._book: ProcessBook | None = None
        self._tag: str | None = None

    def confine(self, confinement: Confinement | None, *, book: ProcessBook | None = None, tag: str | None = None) -> None:
        """Run later commands in ``confinement`` (None: unconfined), record each spawned process
        in ``book`` (crash repair kills what a dead host left) and give each ``AGH_NB_SESSION=tag``."""
        self._confinement = confinement
        self._book = book
        self._tag = tag

    async def __aenter__(self) -> TerminalManager:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def ids(self) -> list[str]:
        """The ids of the terminals not yet released, oldest first."""
        return list(self._terminals)

    async def create(
        self,
        command: str,
        args: list[str],
        *,
        cwd: Path,
        env: dict[str, str],
        output_byte_limit: int | None,
    ) -> str:
        """Start ``command args...`` (no shell) and return its terminal id.

        Args:
            command: the program; looked up on the ``PATH`` of the child's environment.
            args: its arguments.
            cwd: working directory (already checked against the workspace boundary).
            env: variables the agent asked for, on top of the allowlisted ones.
            output_byte_limit: most output bytes to retain (newest kept); None means 1 MiB.

        Returns:
            ``term_<hex>``.

        Raises:
            FileNotFoundError: the command or the working directory does not exist.
            PermissionError: the command is not executable.
            ValueError: a negative ``output_byte_limit`` or an invalid variable name.
            TerminalsClosedError: the manager was closed.
        """
        if self._closed:
            raise TerminalsClosedError(
                "the terminal manager is closed; no new terminals can be created"
            )
        limit = DEFAULT_OUTPUT_BYTE_LIMIT if output_byte_limit is None else output_byte_limit
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(
                f"output_byte_limit must be a non-negative integer, got {output_byte_limit!r}"
            )
        child_env = self._child_environment(env)
        if not os.path.isdir(cwd):
            raise FileNotFoundError(
                f"working directory '{cwd}' does not exist or is not a directory"
            )
        if self._confinement is not None and "/" not in command and shutil.which(command, path=child_env.get("PATH", os.defpath)) is None:
            # Inside the sandbox, bubblewrap is what starts: say it the way an unconfined spawn would.
            raise FileNotFoundError(
                f"command not found: '{command}' (looked up on the terminal's PATH)"
            )
        launch = (
            self._confinement.launch([command, *args], child_env, str(cwd))
            if self._confinement is not None
            else unconfined([command, *args], child_env, str(cwd))
        )

        loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        try:
            try:
                process = await asyncio.create_subprocess_exec(
                    *launch.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=write_fd,
                    stderr=subprocess.STDOUT,
                    cwd=launch.cwd,
                    env=launch.env,
                    start_new_session=True,  # own process group: kill reaches its children too
                    pass_fds=launch.pass_fds,
                )
            finally:
                # The child has its copy; ours must go or the pipe never reaches end of file.
                os.close(write_fd)
                launch.close()
        except FileNotFoundError as exc:
            os.close(read_fd)
            raise FileNotFoundError(
                f"command not found: '{command}' (looked up on the terminal's PATH)"
            ) from exc
        except BaseException:
            os.close(read_fd)
            raise

        output = _Output(limit)
        pipe_closed: asyncio.Future[None] = loop.create_future()
        pipe_file = os.fdopen(read_fd, "rb", buffering=0)
        try:
            transport, _ = await loop.connect_read_pipe(
                lambda: _PipeProtocol(output, pipe_closed), pipe_file
            )
        except BaseException:
            pipe_file.close()
            await self._reap_unwatched(process)
            raise
        terminal = _Terminal(self._new_id(), process, output, transport, pipe_closed)
        await self._record(terminal)
        terminal.watcher = asyncio.create_task(
            self._watch(terminal), name=f"agh-terminal-{terminal.id}-watch"
        )
        terminal.watcher.add_done_callback(self._report_watcher_failure)
        if self._closed:  # aclose ran while we were spawning: this terminal must not outlive it
            await self._shutdown(terminal)
            raise TerminalsClosedError(
                "the terminal manager was closed while the terminal was starting"
            )
        self._terminals[terminal.id] = terminal
        log.debug("terminal %s started pid=%s command=%r", terminal.id, process.pid, command)
        return terminal.id

    def output(self, terminal_id: str) -> TerminalOutput:
        """Return the retained output so far, whether it was truncated, and the exit status if exited.

        Raises:
            UnknownTerminalError: unknown or released id.
        """
        terminal = self._get(terminal_id)
        exited = terminal.exit_status is not None
        # Once exited, decode everything: an incomplete trailing character will not complete.
        return TerminalOutput(
            terminal.output.text(final=exited),
            terminal.output.truncated,
            terminal.exit_status.copy() if terminal.exit_status else None,
        )

    async def wait_for_exit(self, terminal_id: str) -> ExitStatus:
        """Wait until the terminal's process has exited and return its exit status.

        Raises:
            UnknownTerminalError: unknown id, or released before the process exited.
        """
        terminal = self._get(terminal_id)
        assert terminal.watcher is not None
        # asyncio.wait, not ``await watcher``: a watcher cancelled by release must not surface
        # here as a CancelledError that looks like our own caller being cancelled.
        await asyncio.wait({terminal.watcher})
        if terminal.exit_status is None:
            raise UnknownTerminalError(
                f"terminal '{terminal_id}' was released before it exited", terminal_id=terminal_id
            )
        return terminal.exit_status.copy()

    async def kill(self, terminal_id: str) -> None:
        """SIGKILL the terminal's process group and wait (bounded) for the exit to be recorded.

        The terminal stays valid: its output and exit status can still be read until released.
        Killing an exited terminal is harmless.

        Raises:
            UnknownTerminalError: unknown or released id.
        """
        terminal = self._get(terminal_id)
        self._signal_group(terminal)
        await self._await_watcher(terminal)

    async def release(self, terminal_id: str) -> None:
        """Kill the terminal if still running, free its pipe, and forget the id.

        Raises:
            UnknownTerminalError: unknown or already released id.
        """
        terminal = self._get(terminal_id)
        del self._terminals[terminal_id]  # before awaiting, so a concurrent call sees it gone
        await self._shutdown(terminal)

    async def aclose(self) -> None:
        """Kill and release every terminal; later ``create`` calls are refused. Idempotent."""
        self._closed = True
        terminals = list(self._terminals.values())
        self._terminals.clear()
        if not terminals:
            return
        # _shutdown never raises (it logs), so one stubborn process cannot stop the others' cleanup.
        async with asyncio.TaskGroup() as group:
            for terminal in terminals:
                group.create_task(
                    self._shutdown(terminal), name=f"agh-terminal-{terminal.id}-release"
                )

    # -- internals ----------------------------------------------------------------------------

    def _get(self, terminal_id: str) -> _Terminal:
        try:
            return self._terminals[terminal_id]
        except KeyError:
            raise UnknownTerminalError(
                f"unknown terminal '{terminal_id}' (never created in this session, or released)",
                terminal_id=terminal_id,
            ) from None

    def _child_environment(self, extra: Mapping[str, str]) -> dict[str, str]:
        """The allowlisted variables of our environment, then the agent's own on top."""
        source = os.environ if self._environ is None else self._environ
        env = {name: source[name] for name in ENV_ALLOWLIST if name in source}
        for name, value in extra.items():
            # Popen would refuse these too, but with a message that does not name the variable.
            if not name or "=" in name or "\x00" in name or "\x00" in value:
                raise ValueError(
                    f"invalid environment variable {name!r}: names must be non-empty, without '=' or NUL"
                )
            env[name] = value
        if self._tag:
            env[PROCESS_TAG] = self._tag  # last: the agent cannot take its commands out of crash repair
        return env

    async def _watch(self, terminal: _Terminal) -> None:
        """Wait for the process, then (briefly) for the last output, then record the exit status."""
        returncode = await terminal.process.wait()
        # The last bytes may still be in the pipe when the process is reaped; end of file says
        # they are in. Not forever: a backgrounded grandchild may hold the write end open.
        await asyncio.wait({terminal.pipe_closed}, timeout=self._drain_timeout)
        terminal.exit_status = _exit_status(returncode)
        log.debug("terminal %s exited %s", terminal.id, terminal.exit_status)
        if terminal.pipe_closed.done():  # nothing of its group holds the pipe: all gone
            await self._forget(terminal)

    async def _record(self, terminal: _Terminal) -> None:
        """Write the terminal's process to the session's book (crash repair reads it)."""
        if self._book is not None:
            entry = ProcessEntry.of(terminal.process.pid, kind="terminal", name=terminal.id)
            try:
                await asyncio.to_thread(self._book.add, entry)
            except OSError as exc:
                log.warning("cannot record terminal %s (pid %s): %s", terminal.id, terminal.process.pid, exc)

    async def _forget(self, terminal: _Terminal) -> None:
        if self._book is not None:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self._book.remove, terminal.process.pid)

    def _report_watcher_failure(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("terminal watcher %s failed", task.get_name(), exc_info=task.exception())

    def _signal_group(self, terminal: _Terminal) -> None:
        """SIGKILL the terminal's process group if anything in it may still be alive."""
        # After the leader exited and the pipe reached end of file, nobody of the group is left to
        # kill and the group id may even be reused by now: do not signal a stranger.
        if terminal.process.returncode is not None and terminal.pipe_closed.done():
            return
        try:
            os.killpg(terminal.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # already gone
        except PermissionError:
            # macOS reports EPERM for a group whose members are all zombies.
            log.debug("killpg(%s) refused; the group is exiting", terminal.process.pid)

    async def _await_watcher(self, terminal: _Terminal) -> bool:
        """Wait, bounded by ``kill_timeout``, for the watcher to record the exit; True when it did."""
        assert terminal.watcher is not None
        done, _ = await asyncio.wait(
            {terminal.watcher}, timeout=self._kill_timeout + self._drain_timeout
        )
        if not done:
            log.warning(
                "terminal %s (pid %s) did not exit after SIGKILL", terminal.id, terminal.process.pid
            )
        return bool(done)

    async def _shutdown(self, terminal: _Terminal) -> None:
        """Kill, wait, stop the watcher, close the pipe. Never raises: failures are logged."""
        try:
            self._signal_group(terminal)
            await self._await_watcher(terminal)
            assert terminal.watcher is not None
            if not terminal.watcher.done():
                terminal.watcher.cancel()
                await asyncio.wait({terminal.watcher})
            # Closing our read end also cuts off any grandchild that escaped the group and still
            # writes: it gets EPIPE instead of filling memory we no longer watch.
            terminal.pipe.close()
            await asyncio.wait({terminal.pipe_closed}, timeout=self._drain_timeout)
            if terminal.process.returncode is not None:
                await self._forget(terminal)
        except Exception:
            log.exception("releasing terminal %s failed", terminal.id)

    async def _reap_unwatched(self, process: asyncio.subprocess.Process) -> None:
        """Kill and reap a process whose terminal could not be set up."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(process.wait(), timeout=self._kill_timeout)


def _exit_status(returncode: int) -> ExitStatus:
    """Map asyncio's return code (negative = killed by that signal) to the ACP exit status."""
    if returncode >= 0:
        return ExitStatus(exit_code=returncode, signal=None)
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return ExitStatus(exit_code=None, signal=name)
