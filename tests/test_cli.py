"""``agh-nb``: the magics' read-only words on the command line, and the one-line lock message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agh_nb.api import Host
from agh_nb.runtime import Runtime

pytestmark = pytest.mark.timeout(90)


def cli(home: Path, *words: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, AGH_HOME=str(home))
    env.pop("AGH_NB_SERVER", None)
    return subprocess.run([sys.executable, "-m", "agh_nb.cli", *words], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def populated(agh_home: Path, workspace: Path) -> str:
    host = Host(Runtime.start(home=agh_home))
    record = host.create("demo-fast", cwd=str(workspace))
    host.prompt(record.id, "hello").wait(30)
    host.stop(record.id)
    host.close()
    return record.id


def test_read_words_work_on_a_closed_store(agh_home: Path, populated: str) -> None:
    listing = json.loads(cli(agh_home, "session", "list", "-o", "json").stdout)
    assert [row["id"] for row in listing] == [populated]
    status = json.loads(cli(agh_home, "session", "status", populated, "-o", "json").stdout)
    assert status["state"] == "stopped" and status["stop_reason"] == "user_canceled"
    events = json.loads(cli(agh_home, "session", "events", populated, "--type", "done", "-o", "json").stdout)
    assert [e["type"] for e in events] == ["done"]
    last = json.loads(cli(agh_home, "session", "events", populated, "--last", "1", "-o", "json").stdout)
    assert last[0]["type"] == "session_stopped"
    history = json.loads(cli(agh_home, "session", "history", populated, "-o", "json").stdout)
    assert history[0]["prompt"] == "hello" and history[0]["stop_reason"] == "end_turn"
    rows = json.loads(cli(agh_home, "sql", "SELECT count(*) AS n FROM sessions", "-o", "json").stdout)
    assert rows == [{"n": 1}]
    table = cli(agh_home, "session", "list")
    assert table.returncode == 0 and populated in table.stdout


@pytest.mark.parametrize(
    ("words", "code", "message"),
    [
        pytest.param(("session", "prompt", "sess_x", "hi"), 2, "needs a live host", id="live-word"),
        pytest.param(("session", "frobnicate"), 2, "invalid choice", id="unknown-word"),
        pytest.param(("session", "status", "sess_nope"), 1, "no session 'sess_nope'", id="unknown-session"),
        pytest.param(("session", "events", "x", "--type", "nope"), 2, "unknown event type", id="bad-type"),
        pytest.param(("sql", "DROP TABLE events"), 1, "only SELECT", id="write-sql"),
    ],
)
def test_mistakes_are_one_line(agh_home: Path, populated: str, words: tuple[str, ...], code: int, message: str) -> None:
    out = cli(agh_home, *words)
    assert out.returncode == code, out.stderr
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_a_live_host_is_named_instead_of_a_traceback(agh_home: Path, populated: str) -> None:
    host = Host(Runtime.start(home=agh_home))
    try:
        out = cli(agh_home, "session", "list")
        assert out.returncode == 1
        line = out.stderr.strip()
        assert "in use by another process" in line and f"pid {os.getpid()}" in line
        assert len(line.splitlines()) == 1 and "Traceback" not in line
    finally:
        host.close()
