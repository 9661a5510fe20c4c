"""``agh-nb`` beside a running Jupyter server host (issue 12, section 4): every word, writes
included, goes to the server that holds the store of its ``AGH_HOME``, found as Jupyter finds
running servers (the runtime dir's ``jpserver-*.json``) and checked with ``GET /agh/api/host``;
a server holding another store is left alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.server.harness import Server

pytestmark = pytest.mark.timeout(240)


def cli(server: Server, *words: str, home: Path | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``agh-nb WORDS`` with the server's runtime dir (as a user's shell has it) and ``AGH_HOME``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "AGH_"))}
    env.update(AGH_HOME=str(home or server.home), JUPYTER_RUNTIME_DIR=str(server.home.parent / "runtime"))
    return subprocess.run(
        [sys.executable, "-m", "agh_nb.cli", *words], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def cli_json(server: Server, *words: str, **kwargs: Any) -> Any:
    out = cli(server, *words, "-o", "json", **kwargs)
    assert out.returncode == 0, (words, out.stdout, out.stderr)
    return json.loads(out.stdout)


def poll(fetch: Callable[[], Any], done: Callable[[Any], bool], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    value = fetch()
    while not done(value):
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {value!r}"
        time.sleep(0.2)
        value = fetch()
    return value


def test_the_host_route_names_the_store(server: Server) -> None:
    doc = server.ok("GET", "/host")
    assert doc["home"] == str(server.home.resolve()) and doc["state"] == "running"
    assert doc["store"] == str(server.home.resolve() / "agh.duckdb") and doc["pid"] == server.proc.pid
    holder = json.loads((server.home / "holder.json").read_text())
    assert holder["kind"] == "server" and holder["pid"] == server.proc.pid and "token" not in json.dumps(holder)


def test_every_word_goes_to_the_server_writes_included(server: Server, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    record = cli_json(server, "session", "new", "--agent", "demo-fast", "--name", "from-the-cli", cwd=ws)
    sid = record["id"]
    assert record["state"] == "active" and record["workspace_path"] == str(ws.resolve())
    assert server.ok("GET", f"/sessions/{sid}")["name"] == "from-the-cli", "the server runs it"

    # A write the agent must ask for: approve-reads keeps it pending until the CLI decides.
    turn = cli_json(server, "session", "prompt", sid, "write", "from-cli.txt", "hello from the terminal")
    pending = poll(
        lambda: cli_json(server, "session", "inspect", sid)["pending_approvals"], bool, 60, "a pending request"
    )
    request = pending[0]["request_id"]
    resolved = cli_json(server, "session", "approve", sid, "--request", request, "--decision", "allow-once")
    assert resolved["decision"] == "allow-once"
    done = server.wait_turn(sid, turn["turn_id"])
    assert done["stop_reason"] == "end_turn"
    assert (ws / "from-cli.txt").read_text() == "hello from the terminal"

    waited = cli(server, "session", "prompt", sid, "hello", "--wait")
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.startswith("turn turn_") and ": end_turn (" in waited.stdout and "TurnResult(" not in waited.stdout

    follow = cli(server, "session", "events", sid, "--follow", "--type", "done")
    assert follow.returncode == 0, follow.stderr
    assert [line.split()[1] for line in follow.stdout.splitlines()] == ["done", "done"], follow.stdout

    table = cli(server, "session", "list")
    assert "from-the-cli" in table.stdout and table.stdout.splitlines()[0].split()[:4] == ["name", "agent", "state", "reason"]
    count = cli_json(server, "sql", f"SELECT count(*) AS n FROM events WHERE session_id = '{sid}'")
    assert count[0]["n"] == len(server.events(sid))

    stopped = cli_json(server, "session", "stop", sid)
    assert stopped["state"] == "stopped" and stopped["stop_reason"] == "user_canceled"
    assert server.ok("GET", f"/sessions/{sid}/status")["state"] == "stopped"

    unknown = cli(server, "session", "status", "sess_nope")
    assert unknown.returncode == 1 and unknown.stderr.count("agh-nb:") == 1
    assert "agh-nb session list" in unknown.stderr and "%agh" not in unknown.stderr, unknown.stderr


def test_a_server_of_another_store_is_left_alone(server: Server, tmp_path: Path) -> None:
    other = tmp_path / "other-home"
    other.mkdir()
    out = cli(server, "session", "list", home=other)
    assert out.returncode == 1 and "no agh_nb store" in out.stderr, out.stderr
    live = cli(server, "session", "new", "--agent", "demo-fast", home=other)
    assert live.returncode == 2 and "needs a live host" in live.stderr and "%agh session" not in live.stderr, live.stderr
    assert not (other / "agh.duckdb").exists()
