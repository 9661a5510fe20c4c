"""A kernel killed with SIGKILL mid-turn, and the next kernel that finds its session (SPEC 2-4).

Two real ipykernels share one ``AGH_HOME``. Kernel A starts a session whose turn waits on a
permission request (a tool call left open), then the kernel process is killed with SIGKILL: no
shutdown hook runs, ``meta.json`` still says ``active``. Kernel B, started on the same home, must
see the session repaired (``stopped`` / ``agent_crashed`` / ``process_exit`` /
``daemon crashed while session active``), with the repair events at the end of the transcript,
nothing left to repair, and a resume that gives the same id back.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable

import pytest

from tests.kernel.conftest import KernelSession, _alive, proc_cmdline

pytestmark = pytest.mark.timeout(180)


def test_a_session_of_a_killed_kernel_is_repaired_and_resumed_by_the_next(
    kernels: Callable[[str], KernelSession],
) -> None:
    a = kernels("a")
    record = a.agh(f"session new --agent demo --cwd {a.workspace}")
    sid = record["id"]
    a.agh(f'session prompt {sid} "write later.txt never written"')
    pending = a.poll(
        lambda: a.agh(f"session inspect {sid}")["pending_approvals"],
        bool,
        30,
        "the write to wait for a decision",
    )
    before = a.events(sid)
    assert before[-1]["type"] == "permission" and before[-1]["content"].get("decision") is None, before[-1]
    (agent,) = a.demo_agent_pids()
    agent_cmd = proc_cmdline(agent)

    os.kill(a.pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while _alive(a.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(a.pid), "kernel A survived SIGKILL"
    meta = json.loads((a.home / "sessions" / sid / "meta.json").read_text(encoding="utf-8"))
    assert meta["state"] == "active", "nothing ran after the kill: the record still says active"
    # The orphaned agent notices its stdin closed and exits by itself.
    deadline = time.monotonic() + 20
    while _alive(agent) and proc_cmdline(agent) == agent_cmd and time.monotonic() < deadline:
        time.sleep(0.1)
    orphan_lived = _alive(agent) and proc_cmdline(agent) == agent_cmd
    if orphan_lived:
        os.kill(agent, signal.SIGKILL)
    assert not orphan_lived, "the agent of a killed kernel kept running"

    b = kernels("b")
    cell = b.run("%agh session list --include-health -o json")
    assert cell.status == "ok" and cell.error is None, cell.describe()
    # The first use of the host repairs what the dead one left, and says so in one line.
    assert cell.stderr == f"repaired 1 session(s) left by a host that died: {sid}\n", cell.describe()
    (listed,) = json.loads(cell.stdout)
    assert listed["id"] == sid
    assert (listed["state"], listed["stop_reason"], listed["stop_detail"]) == (
        "stopped",
        "agent_crashed",
        "daemon crashed while session active",
    ), listed
    assert listed["failure"]["kind"] == "process_exit", listed
    assert listed["health"]["health"] == "dead" and listed["health"]["state"] == "stopped", listed["health"]
    status = b.agh(f"session status {sid}")
    assert status["failure"] == listed["failure"], status

    events = b.events(sid)
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert [e["id"] for e in events[: len(before)]] == [e["id"] for e in before], "an event of kernel A was lost"
    repaired = events[len(before) :]
    assert [e["type"] for e in repaired] == ["tool_result", "error", "session_stopped"], repaired
    assert all((e["content"].get("runtime") or {}).get("repair") for e in repaired[:2]), repaired
    assert repaired[0]["content"]["tool_error"].startswith("interrupted"), repaired[0]
    transcript = b.agh(f"session transcript {sid}")
    assert transcript[-1]["role"] == "tool_result" and transcript[-1]["error"].startswith("interrupted"), transcript
    assert transcript[-2]["role"] == "tool_call" and transcript[-2]["tool_call_id"] == transcript[-1]["tool_call_id"]
    plan = b.agh(f"session repair {sid} --dry-run")
    assert plan["empty"] is True and plan["events"] == [], plan
    assert pending[0]["request_id"] not in json.dumps(b.agh(f"session inspect {sid}")["pending_approvals"])

    resumed = b.agh(f"session resume {sid}")
    assert (resumed["id"], resumed["state"]) == (sid, "active"), resumed
    assert resumed["acp_session_id"] == record["acp_session_id"], "the demo agent loads its ACP session"
    done = b.agh(f'session prompt {sid} "after the crash" --wait')
    assert done["stop_reason"] == "end_turn", done
    assert b.agh(f"session stop {sid}")["stop_reason"] == "user_canceled"
    everything = b.events(sid)
    assert [e["sequence"] for e in everything] == list(range(1, len(everything) + 1))
    assert [e["type"] for e in everything].count("session_stopped") == 2
    assert everything[-1]["type"] == "session_stopped"
