"""The agent log (core.agent_log): redacted whole lines, a secret split across reads, rotation
near 1 MiB, owner-only files, and reading back with a cursor across a rotation."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Coroutine
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agh_nb.core.agent_log import LOG_FILE, AgentLog, read_log
from agh_nb.core.redaction import Redactor

SECRET = "sk-live-0123456789abcdef"


def run_log(directory: Path, chunks: list[bytes], *, max_bytes: int = 512 * 1024) -> AgentLog:
    redactor = Redactor()
    redactor.register(SECRET, "vault:providers/x")

    async def go() -> AgentLog:
        tasks: set[asyncio.Task[None]] = set()

        def spawn(coro: Coroutine[Any, Any, None], what: str) -> object:
            task = asyncio.ensure_future(coro)
            tasks.add(task)
            return task

        log = AgentLog(directory, redact=redactor.redact, spawn=spawn, max_bytes=max_bytes)
        log.header("agent x starting", datetime(2026, 1, 2, tzinfo=timezone.utc))
        for chunk in chunks:
            log.feed(chunk)
            await asyncio.sleep(0)
        await log.aclose()
        return log

    return asyncio.run(go())


def test_a_secret_split_across_two_reads_is_redacted_whole(tmp_path: Path) -> None:
    half = len(SECRET) // 2
    log = run_log(tmp_path, [f"retrying with key {SECRET[:half]}".encode(), f"{SECRET[half:]} in 5s\n".encode(), b"\x1b[31mlast words\x1b[0m"])
    text = (tmp_path / LOG_FILE).read_text()
    assert SECRET[:half] not in text and SECRET[half:] not in text
    assert "retrying with key [redacted:vault:providers/x] in 5s\n" in text
    assert text.endswith("last words\n")  # an unfinished last line is written at close, colours dropped
    assert text.startswith("--- agent x starting (2026-01-02T00:00:00.000000Z) ---\n")
    assert log.last_line == "last words"
    assert stat.S_IMODE((tmp_path / LOG_FILE).stat().st_mode) == 0o600


def test_the_log_rotates_and_stays_bounded(tmp_path: Path) -> None:
    directory = tmp_path / "logs"
    line = b"x" * 99 + b"\n"
    run_log(directory, [line] * 100, max_bytes=2000)
    files = sorted(p.name for p in directory.iterdir())
    assert files == ["agent.log", "agent.log.1"]
    assert all(p.stat().st_size <= 2000 for p in directory.iterdir())
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    lines, _ = read_log(directory)
    assert 20 <= len(lines) <= 40 and lines[-1] == "x" * 99


def test_reading_with_a_cursor_follows_a_rotation(tmp_path: Path) -> None:
    directory = tmp_path / "logs"
    run_log(directory, [b"one\n", b"two\n"], max_bytes=200)
    lines, cursor = read_log(directory)
    assert lines[-2:] == ["one", "two"]
    assert read_log(directory, cursor=cursor)[0] == []
    # More lines, enough to rotate agent.log (the cursor's file) away.
    more = [f"line {i:03}\n".encode() for i in range(40)]
    log = run_log(directory, more, max_bytes=200)
    assert log.last_line == "line 039"
    newer, _ = read_log(directory, cursor=cursor)
    assert newer[-1] == "line 039" and "one" not in newer
    assert read_log(directory, last=3)[0] == ["line 037", "line 038", "line 039"]


def test_an_endless_line_is_written_in_pieces(tmp_path: Path) -> None:
    run_log(tmp_path, [b"a " * 40_000])
    lines, _ = read_log(tmp_path)
    assert len(lines) >= 3 and sum(len(line) for line in lines[1:]) >= 79_000
