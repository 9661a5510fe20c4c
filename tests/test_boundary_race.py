"""The workspace boundary against a real agent subprocess (issue 11): a symlink-swap race while the
demo agent reads and writes under approve-all, and paths whose resolution fails with a permission
error. Zero escapes, and every refusal is a clean JSON-RPC error, never a traceback in the log."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from agh_nb.api import Host, build_query
from tests.race import Swapper

pytestmark = pytest.mark.timeout(120)

SECRET = "outside-secret-agent-51b0"
RACE_SECONDS = 3.0


def stored_text(host: Host, session_id: str) -> str:
    rows = host.sql(f"SELECT content::VARCHAR AS c FROM events WHERE session_id = '{session_id}'")
    return "\n".join(rows["c"])


def test_a_swap_race_under_approve_all_never_escapes(host: Host, tmp_path: Path) -> None:
    workspace, outside = tmp_path / "ws", tmp_path / "outside"
    (workspace / "sub").mkdir(parents=True)
    (workspace / "sub" / "secret.txt").write_text("inside copy\n")
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    record = host.create("demo-fast", cwd=str(workspace), permissions="approve-all")
    swapper = Swapper(workspace, "sub", outside)
    turns = 0
    try:
        deadline, give_up = time.monotonic() + RACE_SECONDS, time.monotonic() + 90
        while time.monotonic() < deadline or not _both_sides_seen(host, record.id):
            assert time.monotonic() < give_up
            turns += 1
            host.prompt(record.id, "read sub/secret.txt").wait(30)
            host.prompt(record.id, f"write-direct sub/new-{turns}.txt written {turns}").wait(30)
    finally:
        swapper.finish()
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"], "nothing is written outside"
    assert (outside / "secret.txt").read_text() == SECRET
    assert SECRET not in stored_text(host, record.id), "nothing outside is read"
    assert swapper.swaps > 0 and host.get(record.id).state.value == "active"


def _both_sides_seen(host: Host, session_id: str) -> bool:
    """The race was real: some operations went through, some were refused at the boundary."""
    results = [e.content for e in host.events(session_id, build_query(types="tool_result"))]
    done = any(r.get("tool_error") is None for r in results)
    refused = any("path-outside-workspace" in str(r) for r in results)
    return done and refused


def test_an_unresolvable_path_is_a_clean_refusal(host: Host, workspace: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The reported case: READ /proc/1/root/... made realpath raise PermissionError, which left
    # the client method as an unhandled -32603 with a traceback in the log.
    (workspace / "loop").symlink_to(workspace / "loop")
    record = host.create("demo-fast", cwd=str(workspace), permissions="approve-all")
    with caplog.at_level(logging.DEBUG):
        for prompt in ("read /proc/1/root/etc/hostname", "read loop/x", "write-direct loop/x text", "read " + "x" * 300 + "/y"):
            assert host.prompt(record.id, prompt).wait(30).stop_reason == "end_turn"
    failures = [
        e.content for e in host.events(record.id, build_query(types="tool_result")) if e.content.get("tool_error")
    ]
    assert len(failures) == 4, failures
    for failure in failures:
        text = str(failure["tool_error"]) + str(failure.get("raw"))
        assert "path-outside-workspace" in text and "-32603" not in text, failure
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]
    assert host.get(record.id).state.value == "active"
