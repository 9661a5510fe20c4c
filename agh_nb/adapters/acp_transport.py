"""The byte-level side of an ACP agent: spawning it, and the framing of what it writes.

Owns: the child's environment (an allowlist), checking the command exists, spawning the agent
(confined in the sandbox or not) in its own process group with
a stdout reader that has a read-ahead bound (backpressure on a fast agent), and the NDJSON
transport that tells ACP frames from garbage (reported, never skipped) and hands each
``session/update`` notification's params straight to a callback, as parsed from the frame: no SDK
model and no task per notification (issue 14: those were most of a bare SDK client's cost).
Requests, responses and every other notification still go to the SDK. Imports acp's transport
classes; must not import core.session, runtime, kernel or server.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from typing import Any, SupportsIndex, cast

from acp._transport import NdjsonTransport  # the SDK's framing; we only change bad-line handling
from acp.task import MessageSender, TaskSupervisor

from agh_nb.adapters.sandbox import Confinement, unconfined
from agh_nb.events import loads

log = logging.getLogger(__name__)

# The SDK's default; multimodal payloads can be large.
STREAM_LIMIT = 50 * 1024 * 1024
PIPE_BYTES = 1024 * 1024
"""The size asked for the agent's stdout pipe (``widen_pipe``); Linux's default is 64 KiB."""

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


def build_environment(extra: dict[str, str], base: dict[str, str] | None = None) -> dict[str, str]:
    """Return the child's environment: allowlisted variables of ``base`` plus ``extra``."""
    base = dict(os.environ) if base is None else base
    env = {k: v for k in ENV_ALLOWLIST if (v := base.get(k)) is not None and not v.startswith("()")}
    env.update(extra)
    return env


YIELD_EVERY = 64
"""Frames read before the transport lets the loop run other work: a buffered line is read
without yielding, so a fast agent would otherwise hold the loop for as long as its backlog."""
BACKLOG_HIGH = 10_000
"""Rows queued for the store writer past which the transport stops reading an agent's updates
until the backlog is back under ``BACKLOG_LOW``: the agent's pipe then fills and the agent waits
(backpressure). Without it, agents that stream faster than the store commits build a backlog of
seconds of commits, which every later save (a stop's record, at host shutdown) waits behind."""
BACKLOG_LOW = 5_000
BACKLOG_POLL = 0.005
"""Seconds between looks at the backlog while it is high."""
SESSION_UPDATE = "session/update"


RAW_RESULT_KEY = "agh_nb.raw_result"
"""Where the transport leaves a response's ``result`` as received, for ``acp_driver``."""


def carry_raw_result(message: dict[str, Any]) -> None:
    # The SDK validates an answer to our requests into its model and drops what the model does
    # not know (claude-agent-acp's and gemini's ``models``,
    # not yet in the SDK's schema). A shallow copy goes under ``_meta``, where the model keeps it.
    result = message.get("result")
    if "method" in message or not isinstance(result, dict):
        return
    meta = result.get("_meta")
    if meta is not None and not isinstance(meta, dict):
        return
    result["_meta"] = {**(meta or {}), RAW_RESULT_KEY: dict(result)}


READ_AHEAD = 128 * 1024
"""Bytes of agent output read ahead of the parser before reading pauses (backpressure)."""


class BoundedReader(asyncio.StreamReader):
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

    def take_lines(self) -> list[bytes]:
        """Every complete line already buffered (newlines dropped), taken at once, without
        waiting; ``[]`` when none is. One split of the buffer costs far less than a ``readline``
        (a coroutine and a ``wait_for``) per line: a fast agent's frames arrive by the hundred."""
        buffer = self._buffer
        end = buffer.rfind(b"\n")
        if end < 0:
            return []
        lines = bytes(buffer[:end]).split(b"\n")
        del buffer[: end + 1]
        self._maybe_resume_transport()
        return lines

    def _maybe_resume_transport(self) -> None:
        if self._paused and len(self._buffer) <= self._read_ahead and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()


class AgentProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """The subprocess protocol of ``create_subprocess_exec``, reading stdout with ``BoundedReader``."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        pipe = cast(asyncio.SubprocessTransport, transport).get_pipe_transport(1)
        if pipe is not None:
            widen_pipe(pipe.get_extra_info("pipe"))
            reader = BoundedReader(limit=STREAM_LIMIT, read_ahead=READ_AHEAD, loop=self._loop)  # type: ignore[attr-defined]
            reader.set_transport(pipe)
            self.stdout = reader


def check_command(command: str, env: Mapping[str, str]) -> str:
    """Return where ``command`` is found on ``env``'s ``PATH`` (as ``execvp`` would look).

    Checked before spawning, so a missing or non-executable command is reported as such even when
    the process that is spawned first is the sandbox's.

    Raises:
        FileNotFoundError: no such command.
        PermissionError: the file exists but is not executable.
    """
    if "/" in command:
        if not os.path.isfile(command):
            raise FileNotFoundError(command)
        if not os.access(command, os.X_OK):
            raise PermissionError(command)
        return command
    found = shutil.which(command, path=env.get("PATH", os.defpath))
    if found is None:
        raise FileNotFoundError(command)
    return found


async def spawn_agent(
    argv: list[str], *, env: dict[str, str], cwd: str, confinement: Confinement | None = None
) -> asyncio.subprocess.Process:
    """Spawn the agent in its own process group, with piped stdio and the bounded stdout reader
    (``asyncio.create_subprocess_exec`` otherwise); inside ``confinement`` when given.

    Sandboxed, the agent's stdin and stdout are pipes of its own (see ``Confinement.launch``),
    connected here to the same reader and writer types the unconfined path gets from asyncio.
    """
    loop = asyncio.get_running_loop()
    if confinement is None:
        launch = unconfined(argv, env, cwd)
        transport, protocol = await loop.subprocess_exec(
            lambda: AgentProtocol(limit=STREAM_LIMIT, loop=loop),
            *launch.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=launch.env,
            cwd=launch.cwd,
            start_new_session=True,
        )
        return asyncio.subprocess.Process(transport, protocol, loop)
    stdin_r, stdin_w = (_above_stdio(fd) for fd in os.pipe())
    stdout_r, stdout_w = (_above_stdio(fd) for fd in os.pipe())
    ours = [stdin_w, stdout_r]
    try:
        launch = confinement.launch(argv, env, cwd, stdio=(stdin_r, stdout_w))
        try:
            boxed_transport, boxed_protocol = await loop.subprocess_exec(
                lambda: asyncio.subprocess.SubprocessStreamProtocol(limit=STREAM_LIMIT, loop=loop),
                *launch.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=launch.env,
                cwd=launch.cwd,
                start_new_session=True,
                pass_fds=launch.pass_fds,
            )
        finally:
            launch.close()  # closes stdin_r and stdout_w too: the child has them
        process = asyncio.subprocess.Process(boxed_transport, boxed_protocol, loop)
        reader = BoundedReader(limit=STREAM_LIMIT, read_ahead=READ_AHEAD, loop=loop)
        widen_pipe(stdout_r)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader, loop=loop), os.fdopen(stdout_r, "rb", 0))
        ours.remove(stdout_r)
        write_transport, write_protocol = await loop.connect_write_pipe(
            lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader(loop=loop), loop=loop), os.fdopen(stdin_w, "wb", 0)
        )
        ours.remove(stdin_w)
    except BaseException:
        for fd in ours:
            with contextlib.suppress(OSError):
                os.close(fd)
        raise
    process.stdout = reader
    process.stdin = asyncio.StreamWriter(write_transport, write_protocol, None, loop)
    return process


def widen_pipe(pipe: Any) -> None:
    """Let the agent's stdout pipe hold ``PIPE_BYTES`` (Linux; elsewhere, or past the system's
    ``pipe-max-size``, it keeps its size).

    The runtime loop shares the GIL with the store writer: after each read of the pipe it may
    wait up to a switch interval to run again. With the default 64 KiB the agent then blocks on
    a full pipe and sits idle on its own CPU; with room to write ahead it keeps working, and each
    read takes a bigger batch (benchmarks/ingest.py).
    """
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is None or pipe is None:
        return
    with contextlib.suppress(OSError, ValueError):
        fcntl.fcntl(pipe if isinstance(pipe, int) else pipe.fileno(), set_size, PIPE_BYTES)


def _above_stdio(fd: int) -> int:
    """``fd``, moved above 2 if it is not: the child's own stdio will take 0-2."""
    if fd > 2:
        return fd
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.close(fd)
    return moved


class CheckedTransport(NdjsonTransport):
    """The SDK's own NDJSON framing, except that a line which is not a JSON object is reported
    (a protocol failure) instead of being logged and skipped; each frame is parsed once.

    A ``session/update`` notification never reaches the SDK: its ``params``, as parsed, go to
    ``on_update`` right here, in frame order, before any later frame is read. (The SDK would
    validate them into a pydantic model and start a task to deliver it.) ``on_update`` must not
    block; an exception it raises is logged, as the SDK logs a failed notification handler, and
    reading goes on.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        on_garbage: Callable[[bytes], None],
        on_eof: Callable[[], None],
        on_update: Callable[[Any], None],
        backlog: Callable[[], int] | None = None,
    ) -> None:
        self._supervisor = TaskSupervisor(source="agh_nb.acp_driver")
        super().__init__(reader, MessageSender(writer, self._supervisor))
        self._on_garbage = on_garbage
        self._on_eof = on_eof
        self._on_update = on_update
        self._backlog = backlog
        self._unyielded = 0
        self._bounded = reader if isinstance(reader, BoundedReader) else None
        self._lines: collections.deque[bytes] = collections.deque()  # read, not yet handled
        self._discarding = False
        self.discarded = 0
        """``session/update`` notifications dropped since ``discard_updates``."""

    def discard_updates(self) -> None:
        """From now on drop ``session/update`` notifications unread (host shutdown).

        A busy agent has hundreds of KiB of updates in its pipe and our read-ahead; handing each
        to the session and the store costs the loop seconds when many sessions stop at once, while the
        answers the stop waits for (``session/prompt``'s, ``session/close``'s) queue behind them.
        Dropped, each costs one JSON parse; they are counted, and requests and answers still pass.
        """
        self._discarding = True

    async def receive(self) -> dict[str, Any] | None:
        lines = self._lines
        while True:
            self._unyielded += 1
            if self._unyielded >= YIELD_EVERY:
                self._unyielded = 0
                await asyncio.sleep(0)
                backlog = self._backlog
                if backlog is not None and not self._discarding and backlog() > BACKLOG_HIGH:
                    while backlog() > BACKLOG_LOW and not self._discarding:
                        await asyncio.sleep(BACKLOG_POLL)
            if lines:
                line = lines.popleft()
            else:
                try:
                    line = await self._read_line()  # waits for the next line
                except (ValueError, asyncio.LimitOverrunError):
                    self._on_garbage(b"<a line longer than the 50 MiB limit>")
                    continue
                if not line:
                    self._on_eof()
                    return None
                if self._bounded is not None:
                    lines.extend(self._bounded.take_lines())  # and the ones behind it, at once
            line = line.strip()
            if not line:
                continue
            try:
                message = loads(line)
            except ValueError:
                message = None
            if not isinstance(message, dict):
                self._on_garbage(line)
                continue
            if message.get("method") == SESSION_UPDATE and "id" not in message:
                if self._discarding:
                    self.discarded += 1  # the loop still yields every YIELD_EVERY lines, above
                    continue
                try:
                    self._on_update(message.get("params"))
                except Exception:
                    log.exception("handling a session/update notification failed")
                continue
            if "result" in message:
                carry_raw_result(message)
            return message

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            await self._supervisor.shutdown()
