"""An embedded host whose kernel is restarted, or shut down, while many sessions stream.

Jupyter asks the kernel to shut down and kills it ``shutdown_wait_time`` (5 s) later. The host
must be done by then: every session ``stopped`` with its ``session_stopped``, no process of any
session left, and the next kernel's host repairs nothing.
"""

from __future__ import annotations

import json

import pytest

from agh_nb.core.leftovers import tagged_pids
from agh_nb.events import EventQuery
from agh_nb.runtime import open_store
from tests.kernel.conftest import KernelSession, _alive

SESSIONS = 8
START = f"""
import json
from concurrent.futures import ThreadPoolExecutor
import agh_nb
host = agh_nb.get_host()
with ThreadPoolExecutor({SESSIONS}) as pool:
    ids = [r.id for r in pool.map(lambda i: host.create("demo-fast", name=f"busy{{i}}"), range({SESSIONS}))]
turns = [host.prompt(sid, "firehose 1000000000") for sid in ids]
print(json.dumps(ids))
"""
STREAMING = """
from agh_nb.events import EventQuery
print(json.dumps(all(host.events(sid, EventQuery(types=("agent_message",), limit=1)) for sid in ids)))
"""


def _start_busy_sessions(kernel: KernelSession) -> tuple[list[str], dict[str, list[int]]]:
    ids = kernel.json(START, timeout=120)
    kernel.poll(lambda: kernel.json(STREAMING), bool, 60, "every session to stream")
    processes = {sid: tagged_pids(sid) for sid in ids}
    assert all(processes.values()), processes
    return ids, processes


def _check_stopped_cleanly(kernel: KernelSession, ids: list[str], processes: dict[str, list[int]]) -> None:
    left = {sid: [pid for pid in pids if _alive(pid)] for sid, pids in processes.items()}
    assert not any(left.values()), left
    assert not any(tagged_pids(sid) for sid in ids)
    store = open_store(kernel.home, read_only=True)  # the old kernel let go of the store
    try:
        for sid in ids:
            record = store.get_session(sid)
            assert record is not None and record.state.value == "stopped", record
            assert record.stop_reason is not None and record.stop_reason.value == "user_canceled"
            assert record.stop_detail == "host shutting down" and record.failure is None
            events = store.query_events(sid, EventQuery())
            assert [e.type for e in events].count("session_stopped") == 1 and events[-1].type == "session_stopped"
    finally:
        store.close()


@pytest.mark.timeout(120)
def test_a_kernel_restart_stops_every_session_and_the_next_host_repairs_nothing(kernel: KernelSession) -> None:
    ids, processes = _start_busy_sessions(kernel)
    old_pid = kernel.pid
    kernel.km.restart_kernel(now=False)
    assert not _alive(old_pid)
    log = kernel.log_path.read_text(errors="replace")
    assert "Task was destroyed" not in log and "TimeoutError" not in log and "Traceback" not in log, log[-3000:]
    _check_stopped_cleanly(kernel, ids, processes)

    kernel.client.wait_for_ready(timeout=60)
    kernel.pid = int(kernel.ok("import os; print(os.getpid())").stdout.strip())
    cell = kernel.run("%load_ext agh_nb\nimport agh_nb, json\nh = agh_nb.get_host()\nprint(json.dumps([s.state.value for s in h.list()]))")
    assert cell.status == "ok" and cell.error is None, cell.describe()
    assert "repaired" not in cell.stderr, cell.describe()
    assert json.loads(cell.stdout) == ["stopped"] * len(ids)


@pytest.mark.timeout(120)
def test_a_kernel_shutdown_stops_every_session(kernel: KernelSession) -> None:
    ids, processes = _start_busy_sessions(kernel)
    old_pid = kernel.pid
    kernel.shutdown()
    assert not _alive(old_pid)
    log = kernel.log_path.read_text(errors="replace")
    assert "Task was destroyed" not in log and "TimeoutError" not in log and "Traceback" not in log, log[-3000:]
    _check_stopped_cleanly(kernel, ids, processes)
