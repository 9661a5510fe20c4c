"""A server host stopped while many sessions stream: every session stopped cleanly, nothing left.

Ten sessions of the demo agent run ``firehose`` (it streams until cancelled) when the server gets
SIGTERM or ``jupyter server stop``. Then the log, the process table and the store are read back:
the log holds none of the lines of an unclean shutdown, no process of any session survives its
host, every session is ``stopped`` with its ``session_stopped``, and the next host repairs nothing.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from agh_nb.core.leftovers import tagged_pids
from agh_nb.events import EventQuery
from agh_nb.runtime import Runtime, open_store
from tests.server.harness import Server, wait_for

SESSIONS = 10
ENDLESS = "firehose 1000000000"
UNCLEAN = (
    "Traceback",
    "Task was destroyed but it is pending",
    "TimeoutError",
    "ResourceInUse",
    "could not be stopped",
    "stopping sessions at shutdown failed",
    "never retrieved",
    "did not exit",
)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _streaming(server: Server, sid: str) -> bool:
    return bool(server.events(sid, "?type=agent_message&limit=1"))


def _stop_with_jupyter(server: Server) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
    env["JUPYTER_RUNTIME_DIR"] = str(server.root.parent / "runtime")
    out = subprocess.run(
        [sys.executable, "-m", "jupyter", "server", "stop", str(server.port)],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    server.proc.wait(40)


@pytest.mark.parametrize("how", ["sigterm", "jupyter-server-stop"])
def test_a_busy_server_host_stops_every_session_cleanly(
    server_factory: Callable[..., Server], how: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = server_factory(how)
    with ThreadPoolExecutor(SESSIONS) as pool:
        sids = [r["id"] for r in pool.map(lambda i: server.create("demo-fast", name=f"busy{i}"), range(SESSIONS))]
        for sid in sids:
            server.ok("POST", f"/sessions/{sid}/prompt", {"text": ENDLESS}, status=202)
        wait_for(lambda: all(pool.map(lambda sid: _streaming(server, sid), sids)), timeout=60, interval=0.2)
    processes = {sid: tagged_pids(sid) for sid in sids}
    assert all(processes.values()), processes  # every agent is found, so "none left" below means something

    if how == "sigterm":
        assert server.stop(signal.SIGTERM) == 0, server.log()[-3000:]
    else:
        _stop_with_jupyter(server)
    assert server.proc.returncode == 0, server.log()[-3000:]

    log = server.log()
    assert "agh_nb: runtime stopped" in log, log[-3000:]
    bad = [line for line in log.splitlines() if any(mark in line for mark in UNCLEAN)]
    assert not bad, "\n".join(bad)
    left = {sid: [pid for pid in pids if _alive(pid)] for sid, pids in processes.items()}
    assert not any(left.values()), left
    assert not any(tagged_pids(sid) for sid in sids)

    store = open_store(server.home, read_only=True)
    try:
        for sid in sids:
            record = store.get_session(sid)
            assert record is not None and record.state.value == "stopped", record
            assert record.stop_reason is not None and record.stop_reason.value == "user_canceled"
            assert record.stop_detail == "host shutting down" and record.failure is None
            events = store.query_events(sid, EventQuery())
            assert [e.sequence for e in events] == list(range(1, len(events) + 1))
            assert [e.type for e in events].count("session_stopped") == 1 and events[-1].type == "session_stopped"
            assert events[-1].content["runtime"]["exit"]["returncode"] is not None or events[-1].content["runtime"]["exit"]["signal"]
            done = [e for e in events if e.type == "done"]
            assert len(done) == 1 and done[0].content["stop_reason"] == "cancelled", done
    finally:
        store.close()

    caplog.set_level(logging.INFO, logger="agh_nb")
    runtime = Runtime.start(home=server.home)  # the next host
    try:
        assert not [r for r in caplog.records if "repaired" in r.getMessage()], caplog.text
        assert all(r.state.value == "stopped" for r in runtime.store.list_sessions())
    finally:
        runtime.close()
