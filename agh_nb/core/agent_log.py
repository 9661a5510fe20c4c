"""The agent's log: everything a session's agent writes to stderr, kept under the session directory.

Owns: ``AgentLog`` (the writer a live session feeds with stderr chunks) and ``read_log`` (what
``session logs`` and ``inspect`` read). The log is ``$AGH_HOME/sessions/<id>/logs/agent.log``
plus one rotated ``agent.log.1``: about 1 MiB in all (``MAX_FILE_BYTES`` each), owner-only
(directory 0700, files 0600), kept across stops and resumes (a resume appends after a header
line). Every line is redacted before it is written; a line is held until it is complete, so a
secret split across two reads of the pipe is whole when it is redacted. Terminal colour codes are
dropped. Writes run off the event loop (``asyncio.to_thread``). Imports nothing third-party.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import re
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any

from agh_nb.events import format_timestamp

LOG_DIR = "logs"
LOG_FILE = "agent.log"
BACKUP_SUFFIX = ".1"
MAX_FILE_BYTES = 512 * 1024
"""Size at which ``agent.log`` is rotated to ``agent.log.1`` (so the log stays near 1 MiB)."""
LONG_LINE = 64 * 1024
"""A line without a newline is written (in pieces) once it is this long."""
SECRET_MARGIN = 4096
"""Characters of an over-long line held back past a cut, so a secret near it is not split."""
LAST_LINE_CHARS = 300
DIR_MODE = 0o700
FILE_MODE = 0o600

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")

Spawn = Callable[[Coroutine[Any, Any, None], str], object]


def log_dir(session_directory: Path) -> Path:
    """Where a session's agent log lives."""
    return session_directory / LOG_DIR


class AgentLog:
    """Keeps one session's agent stderr: redacted, complete lines, rotated, owner-only.

    Args:
        directory: the log directory (created 0700 on first write).
        redact: scrubs secrets from every line before it is written.
        spawn: starts an owned background task (``TaskOwner.spawn``) for the writes.
        max_bytes: rotation size of ``agent.log``.
    """

    def __init__(
        self,
        directory: Path,
        *,
        redact: Callable[[str], str],
        spawn: Spawn,
        max_bytes: int = MAX_FILE_BYTES,
    ) -> None:
        self._directory = directory
        self._redact = redact
        self._spawn = spawn
        self._max_bytes = max_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""
        self._pending: list[str] = []
        self._writer: asyncio.Future[None] | None = None
        self._done = asyncio.Event()
        self._done.set()
        self._last_line: str | None = None
        self._closed = False

    @property
    def last_line(self) -> str | None:
        """The agent's last non-blank stderr line so far (redacted, colours dropped, clipped)."""
        return self._last_line

    def header(self, text: str, now: datetime) -> None:
        """Write one line of our own (``--- text (time) ---``), e.g. when an agent starts; it is
        not the agent's, so ``last_line`` does not change."""
        self._queue(f"--- {text} ({format_timestamp(now)}) ---\n", ours=True)

    def feed(self, data: bytes) -> None:
        """Take a chunk of stderr; complete lines are redacted and queued for writing."""
        if self._closed:
            return
        text = self._partial + _ANSI.sub("", self._decoder.decode(data))
        cut = text.rfind("\n") + 1
        complete, self._partial = text[:cut], text[cut:]
        if len(self._partial) > LONG_LINE:
            # A line that never ends: write most of it, cut where a secret is unlikely to be.
            head = self._partial[: len(self._partial) - SECRET_MARGIN]
            space = max(head.rfind(" "), head.rfind("\t"))
            at = space + 1 if space > 0 else len(head)
            complete += self._partial[:at] + "\n"
            self._partial = self._partial[at:]
        if complete:
            self._queue(self._redact(complete))

    async def aclose(self) -> None:
        """Write what is left (an unfinished last line too) and wait for the writes; idempotent."""
        if not self._closed:
            rest = self._partial + _ANSI.sub("", self._decoder.decode(b"", final=True))
            self._partial = ""
            if rest:
                self._queue(self._redact(rest) + "\n")
            self._closed = True
        await self._done.wait()

    def _queue(self, text: str, *, ours: bool = False) -> None:
        for line in [] if ours else reversed(text.splitlines()):
            if line.strip():
                clipped = " ".join(line.split())
                self._last_line = clipped if len(clipped) <= LAST_LINE_CHARS else clipped[: LAST_LINE_CHARS - 1] + "…"
                break
        self._pending.append(text)
        if self._done.is_set():
            self._done.clear()
            self._spawn(self._flush(), "agent-log")

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = "".join(self._pending), []
                try:
                    await asyncio.to_thread(self._write, batch)
                except OSError:
                    # The log is a convenience: losing it must not stop the agent.
                    return
        finally:
            self._done.set()

    def _write(self, text: str) -> None:
        directory = self._directory
        if not directory.is_dir():
            directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            os.chmod(directory, DIR_MODE)  # mkdir's mode is filtered by the umask
        path = directory / LOG_FILE
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        piece: list[bytes] = []
        for line in text.encode("utf-8").splitlines(keepends=True):
            if size and size + len(line) > self._max_bytes:
                self._append(path, b"".join(piece))
                piece = []
                os.replace(path, directory / (LOG_FILE + BACKUP_SUFFIX))  # the older half of the log
                size = 0
            piece.append(line)
            size += len(line)
        self._append(path, b"".join(piece))

    @staticmethod
    def _append(path: Path, data: bytes) -> None:
        if not data:
            return
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)
            os.write(fd, data)
        finally:
            os.close(fd)


def read_log(directory: Path, *, last: int | None = None, cursor: str | None = None) -> tuple[list[str], str]:
    """Read a session's agent log (blocking): ``(lines, cursor)``.

    Args:
        directory: the log directory.
        last: only the newest ``last`` lines.
        cursor: from an earlier call: only the lines written since (rotation is followed).

    Returns:
        The lines (oldest first) and the cursor to pass next time.
    """
    current = directory / LOG_FILE
    backup = directory / (LOG_FILE + BACKUP_SUFFIX)
    seen_inode, seen_offset = _parse_cursor(cursor)
    parts: list[bytes] = []
    current_stat = _stat(current)
    backup_stat = _stat(backup)
    if seen_inode is not None and current_stat is not None and current_stat.st_ino == seen_inode:
        parts.append(_read(current, seen_offset, current_stat.st_size))
    else:
        if seen_inode is not None and backup_stat is not None and backup_stat.st_ino == seen_inode:
            parts.append(_read(backup, seen_offset, backup_stat.st_size))
        elif backup_stat is not None and seen_inode is None:
            parts.append(_read(backup, 0, backup_stat.st_size))
        if current_stat is not None:
            parts.append(_read(current, 0, current_stat.st_size))
    lines = b"".join(parts).decode("utf-8", "replace").splitlines()
    if last is not None:
        lines = lines[-last:] if last > 0 else []
    next_cursor = f"{current_stat.st_ino}:{current_stat.st_size}" if current_stat is not None else "0:0"
    return lines, next_cursor


def _parse_cursor(cursor: str | None) -> tuple[int | None, int]:
    if not cursor:
        return None, 0
    inode, _, offset = cursor.partition(":")
    try:
        return int(inode), max(0, int(offset))
    except ValueError:
        return None, 0


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def _read(path: Path, start: int, end: int) -> bytes:
    try:
        with path.open("rb") as handle:
            handle.seek(min(start, end))
            return handle.read(max(0, end - start))
    except OSError:
        return b""
