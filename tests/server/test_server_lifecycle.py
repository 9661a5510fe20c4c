"""The extension's life inside a real server: enabled by install, discovery, shutdown, a locked store."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from agh_nb.events import EventQuery
from agh_nb.runtime import open_store
from tests.server.harness import SSE, Server, wait_for

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _children(pid: int, needle: bytes) -> list[int]:
    """Pids of the live processes whose parent is ``pid`` and whose command line holds ``needle``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and needle in cmdline:
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_installing_the_package_enables_the_extension() -> None:
    config = Path(sys.prefix) / "etc" / "jupyter" / "jupyter_server_config.d" / "agh_nb.json"
    assert json.loads(config.read_text())["ServerApp"]["jpserver_extensions"]["agh_nb"] is True
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
    out = subprocess.run(
        [sys.executable, "-m", "jupyter", "server", "extension", "list"],
        capture_output=True, text=True, timeout=120, env=env, check=True,
    )
    text = ANSI.sub("", out.stdout + out.stderr)
    assert re.search(r"agh_nb\s+enabled", text), text
    assert re.search(r"agh_nb 0\.1\.0\s+OK", text), text


def test_kernels_started_by_the_server_inherit_agh_nb_server(server: Server) -> None:
    kernel = server.request("POST", "/api/kernels", {"name": "python3"})
    assert kernel.status == 201, kernel.text
    try:
        pids = wait_for(lambda: _children(server.proc.pid, b"ipykernel"), timeout=60)
        with open(f"/proc/{pids[0]}/environ", "rb") as f:
            environ = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
        discovery = json.loads(environ[b"AGH_NB_SERVER"])
        assert discovery == {"url": server.url, "token": server.token, "pid": server.proc.pid}
    finally:
        server.request("DELETE", f"/api/kernels/{kernel.body['id']}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint-no-tty"])
def test_shutdown_stops_sessions_and_frees_the_store(server_factory: Callable[..., Server], sig: int) -> None:
    first = server_factory("first")
    sid = first.create()["id"]
    first.prompt_and_wait(sid, "firehose 10")
    agents = _children(first.proc.pid, b"agh_nb.agents.demo")
    assert len(agents) == 1
    with SSE(first, f"/sessions/{sid}/stream", last_event_id=len(first.events(sid))) as stream:
        assert first.stop(sig) == 0, first.log()[-3000:]
        tail = list(stream)  # the stream saw the stop, then ended
    assert [m["event"] for m in tail] == ["session_stopped"]
    assert not any(_alive(pid) for pid in agents)
    log = first.log()
    assert "agh_nb: runtime stopped" in log and "Traceback" not in log, log[-3000:]

    store = open_store(first.home, read_only=True)  # the server closed the store: it opens again
    try:
        record = store.get_session(sid)
        assert record is not None and record.state.value == "stopped", record
        assert record.stop_reason is not None and record.stop_reason.value == "user_canceled"
        assert record.stop_detail == "host shutting down"
        events = store.query_events(sid, EventQuery())
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        assert events[-1].type == "session_stopped"
    finally:
        store.close()


def test_a_locked_store_disables_the_extension_with_one_line(server_factory: Callable[..., Server], tmp_path: Path) -> None:
    home = tmp_path / "locked-home"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from pathlib import Path; from agh_nb.runtime import open_store; "
         "s = open_store(Path(sys.argv[1])); print('held', flush=True); sys.stdin.read(); s.close()",
         str(home)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        server = server_factory(home=home)
        for method, path in [("GET", "/sessions"), ("POST", "/sessions"), ("GET", "/approvals/stream")]:
            reply = server.api(method, path, {"agent": "demo-fast"} if method == "POST" else None)
            assert reply.status == 503, reply.text
            assert reply.error_type() == "StoreLockedError", reply.text
            assert "in use by another process" in reply.body["error"]["message"]
            assert "Traceback" not in reply.text
        assert server.request("GET", "/api/status").status == 200  # the server itself is fine
        lines = [line for line in server.log().splitlines() if "server extension disabled" in line]
        assert len(lines) == 1, server.log()[-3000:]
        assert "in use by another process" in lines[0] and "Traceback" not in server.log()
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.wait(30)
        holder.stdout.close()

