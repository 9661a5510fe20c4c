"""``agh-nb`` on a store no host holds: the read-only words, readable tables (NULL empty, nothing
cut in a pipe), ``-o json`` unchanged, one-line errors with one prefix and CLI words, and the
lock message naming what holds the store (issue 12, sections 3 and 4)."""

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
    header = table.stdout.splitlines()[0].split()
    assert header[:4] == ["name", "agent", "state", "reason"], table.stdout
    assert "acp_caps" not in table.stdout and "{" not in table.stdout
    assert max(len(line) for line in table.stdout.splitlines()) < 120, table.stdout


def test_tables_show_null_as_empty_and_keep_whole_rows_in_a_pipe(agh_home: Path, populated: str) -> None:
    out = cli(agh_home, "sql", "SELECT 1 AS n, NULL::DOUBLE AS x, NULL AS s, 'a' AS t UNION ALL SELECT 2, 2.5, 'b', 'c' ORDER BY n")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["n", "x", "s", "t"], out.stdout
    assert lines[2].split() == ["1", "a"] and lines[3].split() == ["2", "2.5", "b", "c"], out.stdout
    assert "NaN" not in out.stdout and "None" not in out.stdout
    events = cli(agh_home, "session", "events", populated)
    rows = events.stdout.splitlines()
    assert rows[0].split() == ["sequence", "time", "type", "summary", "turn_id"], events.stdout
    assert not any("…" in row for row in rows), "a pipe gets whole rows"
    status = cli(agh_home, "session", "status", populated)
    assert any(line.split() == ["stop_reason", "user_canceled"] for line in status.stdout.splitlines()), status.stdout
    assert "health.health" in status.stdout


@pytest.mark.parametrize(
    ("words", "code", "message"),
    [
        pytest.param(("session", "prompt", "sess_x", "hi"), 2, "needs a live host", id="live-word"),
        pytest.param(("session", "events", "sess_x", "--follow"), 2, "'--follow' needs a live host", id="follow"),
        pytest.param(("session", "frobnicate"), 2, "session: argument command: invalid choice", id="unknown-word"),
        pytest.param(("session", "events"), 2, "session events: the following arguments are required: id", id="missing-id"),
        pytest.param(("session", "status", "sess_nope"), 1, "list sessions with agh-nb session list", id="unknown-session"),
        pytest.param(("session", "events", "x", "--type", "nope"), 2, "unknown event type", id="bad-type"),
        pytest.param(("sql", "DROP TABLE events"), 1, "only SELECT", id="write-sql"),
    ],
)
def test_mistakes_are_one_line(agh_home: Path, populated: str, words: tuple[str, ...], code: int, message: str) -> None:
    out = cli(agh_home, *words)
    assert out.returncode == code, out.stderr
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith("agh-nb: error: ") and out.stderr.count("agh-nb:") == 1, out.stderr
    assert "%agh session" not in out.stderr, "the command line suggests its own words"


def test_a_live_host_is_named_instead_of_a_traceback(agh_home: Path, populated: str) -> None:
    host = Host(Runtime.start(home=agh_home))
    try:
        holder = json.loads((agh_home / "holder.json").read_text())
        assert holder["pid"] == os.getpid() and holder["kind"] == "process"
        assert (agh_home / "holder.json").stat().st_mode & 0o777 == 0o600
        out = cli(agh_home, "session", "list")
        assert out.returncode == 1
        line = out.stderr.strip()
        assert f"is in use by a Python process (pid {os.getpid()}, since " in line, line
        assert "python3" not in line
        assert len(line.splitlines()) == 1 and "Traceback" not in line
    finally:
        host.close()
    assert not (agh_home / "holder.json").exists(), "closing the store removes the holder file"


def test_a_stale_holder_file_is_ignored(agh_home: Path, populated: str) -> None:
    # A kernel killed with SIGKILL leaves its holder file: its pid is gone, so it names nothing.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (agh_home / "holder.json").write_text(json.dumps({"pid": int(dead.stdout), "kind": "server", "started_at": ""}))
    out = cli(agh_home, "session", "list", "-o", "json")
    assert out.returncode == 0 and [r["id"] for r in json.loads(out.stdout)] == [populated], out.stderr


def test_a_server_holder_that_does_not_answer_is_named(
    agh_home: Path, populated: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The holder file names a live process as the server host, but no Jupyter runtime file
    # leads to it: live words say so in one line; reads still work on the unlocked store.
    (agh_home / "holder.json").write_text(json.dumps({"pid": os.getpid(), "kind": "server", "started_at": ""}))
    env_dir = tmp_path / "empty-runtime"
    env_dir.mkdir()
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(env_dir))
    out = cli(agh_home, "session", "prompt", populated, "hi")
    reads = cli(agh_home, "session", "list", "-o", "json")
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert f"is held by the Jupyter server host (pid {os.getpid()}" in out.stderr and "did not answer" in out.stderr
    assert reads.returncode == 0 and json.loads(reads.stdout)[0]["id"] == populated
