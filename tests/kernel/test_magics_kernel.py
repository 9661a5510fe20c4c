"""The ``%agh`` magics in a REAL ipykernel, as a notebook user sees them (SPEC 2, 4, 8).

Each test starts its own kernel from this venv (fixture ``kernel`` in conftest.py) with
``AGH_HOME`` set to a fresh directory, runs ``%load_ext agh_nb``, and drives the built-in demo
agent (a real ACP subprocess) through the magics. Assertions are on what the cells show: the
JSON documents printed by ``-o json``, the DataFrame of ``%%agh sql``, and the stderr line of
user errors. Waits are polling loops with deadlines, never fixed sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime
from typing import Any

import pytest

from tests.kernel.conftest import KernelSession, proc_cmdline

pytestmark = pytest.mark.timeout(120)


def ts(value: str) -> float:
    """An event timestamp (RFC3339 UTC, ``Z``) as POSIX seconds."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def new_session(kernel: KernelSession) -> dict[str, Any]:
    """``%agh session new --agent demo --cwd <workspace> -o json``; asserts it is active."""
    record = kernel.agh(f"session new --agent demo --cwd {kernel.workspace}")
    assert isinstance(record, dict), record
    assert record["state"] == "active", record
    assert record["id"].startswith("sess_"), record
    return record


def assert_gapless(events: list[dict[str, Any]]) -> None:
    """Sequences are exactly 1..N in order."""
    sequences = [e["sequence"] for e in events]
    assert sequences == list(range(1, len(events) + 1)), sequences


def wait_done(kernel: KernelSession, session_id: str, turn_id: str, timeout: float = 60) -> list[dict[str, Any]]:
    """Poll the session's events until ``turn_id`` has its ``done`` row; return all events."""
    return kernel.poll(
        lambda: kernel.events(session_id),
        lambda rows: any(r["type"] == "done" and r["turn_id"] == turn_id for r in rows),
        timeout,
        f"done of turn {turn_id}",
    )


# 1 ------------------------------------------------------------------------------------------------


def test_session_new_prints_one_active_json_document(kernel: KernelSession) -> None:
    cell = kernel.ok(f"%agh session new --agent demo --cwd {kernel.workspace} -o json")
    record = json.loads(cell.stdout)  # exactly one JSON document, nothing else on stdout
    assert cell.result is None, "with -o json the magic prints instead of returning a value"
    assert record["state"] == "active"
    assert record["id"].startswith("sess_")
    assert record["agent_name"] == "demo"
    assert record["workspace_path"] == os.path.realpath(kernel.workspace)
    assert (kernel.home / "sessions" / record["id"]).is_dir()


# 2 ------------------------------------------------------------------------------------------------


def test_prompt_wait_then_events_are_gapless(kernel: KernelSession) -> None:
    sid = new_session(kernel)["id"]
    turn = kernel.agh(f'session prompt {sid} "hello" --wait')
    assert turn["stop_reason"] == "end_turn", turn
    assert turn["session_id"] == sid

    events = kernel.events(sid)
    assert isinstance(events, list) and events
    assert events[0]["type"] == "user_message", events[0]
    assert events[0]["content"]["text"] == "hello"
    types = {e["type"] for e in events}
    for wanted in ("agent_message", "tool_call", "tool_result", "done"):
        assert wanted in types, (wanted, sorted(types))
    assert_gapless(events)
    assert all(e["session_id"] == sid for e in events)
    done = [e for e in events if e["type"] == "done"]
    assert [d["turn_id"] for d in done] == [turn["turn_id"]]
    assert done[0]["content"]["stop_reason"] == "end_turn"


# 3 ------------------------------------------------------------------------------------------------


def test_sql_cell_counts_match_events(kernel: KernelSession) -> None:
    sid = new_session(kernel)["id"]
    assert kernel.agh(f'session prompt {sid} "hello" --wait')["stop_reason"] == "end_turn"
    events = kernel.events(sid)
    expected: dict[str, int] = {}
    for e in events:
        expected[e["type"]] = expected.get(e["type"], 0) + 1

    cell = kernel.ok(
        f"%%agh sql\nSELECT type, count(*) AS n FROM events WHERE session_id='{sid}' GROUP BY type ORDER BY type"
    )
    assert cell.result is not None, cell.describe()
    assert "text/html" in cell.result or "text/plain" in cell.result, cell.result
    if "text/html" in cell.result:
        assert "<table" in cell.result["text/html"]
    for name in expected:
        assert name in cell.result["text/plain"], (name, cell.result["text/plain"])

    # The value the cell returned is a DataFrame (IPython keeps it in ``_``).
    shown = kernel.json(
        "import json as _j\n"
        "assert type(_).__name__ == 'DataFrame', type(_)\n"
        "print(_j.dumps({str(r.type): int(r.n) for r in _.itertuples()}))"
    )
    assert shown == expected


# 4 ------------------------------------------------------------------------------------------------


def test_stop_is_user_canceled_and_ends_with_session_stopped(kernel: KernelSession) -> None:
    sid = new_session(kernel)["id"]
    assert kernel.agh(f'session prompt {sid} "hello" --wait')["stop_reason"] == "end_turn"
    record = kernel.agh(f"session stop {sid}")
    assert record["id"] == sid
    assert record["state"] == "stopped", record
    assert record["stop_reason"] == "user_canceled", record

    events = kernel.events(sid)
    assert events[-1]["type"] == "session_stopped", events[-1]
    assert events[-1]["content"]["stop_reason"] == "user_canceled"
    assert_gapless(events)
    status = kernel.agh(f"session status {sid}")
    assert status["state"] == "stopped" and status["stop_reason"] == "user_canceled", status


# 5 ------------------------------------------------------------------------------------------------


def test_second_prompt_is_queued_fifo(kernel: KernelSession) -> None:
    sid = new_session(kernel)["id"]
    # The magic without -o json returns a TurnHandle (it does not block the cell).
    first = kernel.json(
        f'h1 = %agh session prompt {sid} "slow 6 0.2"\n'
        "import json as _j\n"
        "assert type(h1).__name__ == 'TurnHandle', type(h1)\n"
        "print(_j.dumps(h1.to_dict()))"
    )
    assert first["position"] == 0, first
    assert first["status"] in ("running", "queued"), first
    second = kernel.agh(f'session prompt {sid} "second"')
    assert second["position"] == 1, second
    assert second["status"] == "queued", second
    t1, t2 = first["turn_id"], second["turn_id"]
    assert t1 != t2

    result1 = kernel.json("r1 = h1.wait(60)\nprint(_j.dumps(r1.to_dict()))", timeout=70)
    assert result1["turn_id"] == t1 and result1["stop_reason"] == "end_turn", result1
    events = wait_done(kernel, sid, t2)
    assert_gapless(events)

    seq = {e["id"]: e["sequence"] for e in events}
    turn1_rows = [e for e in events if e["turn_id"] == t1]
    done1 = next(e for e in events if e["type"] == "done" and e["turn_id"] == t1)
    done2 = next(e for e in events if e["type"] == "done" and e["turn_id"] == t2)
    assert sum(1 for e in turn1_rows if e["type"] == "agent_message") >= 6
    assert all(seq[e["id"]] < done2["sequence"] for e in turn1_rows)
    assert done1["sequence"] < done2["sequence"]
    assert done1["content"]["stop_reason"] == "end_turn"
    assert done2["content"]["stop_reason"] == "end_turn"
    # One turn at a time: nothing the agent said for turn 2 precedes turn 1's end.
    turn2_agent_rows = [e for e in events if e["turn_id"] == t2 and e["type"] != "user_message"]
    assert turn2_agent_rows and all(e["sequence"] > done1["sequence"] for e in turn2_agent_rows)


# 6 ------------------------------------------------------------------------------------------------


def test_session_keeps_running_while_cells_sleep_or_compute(kernel: KernelSession) -> None:
    sid = new_session(kernel)["id"]
    turn = kernel.agh(f'session prompt {sid} "slow 20 0.5"')
    assert turn["position"] == 0
    window = kernel.json(
        "import time, json as _j\n"
        "_t0 = time.time(); time.sleep(10); _t1 = time.time()\n"
        "print(_j.dumps([_t0, _t1]))",
        timeout=30,
    )
    start, end = window
    cpu = kernel.json(
        "busy = time.time()\nwhile time.time() - busy < 3: pass\nprint(_j.dumps([busy, time.time()]))",
        timeout=30,
    )
    assert cpu[1] - cpu[0] >= 3

    events = wait_done(kernel, sid, turn["turn_id"])
    messages = [e for e in events if e["type"] == "agent_message" and e["turn_id"] == turn["turn_id"]]
    assert len(messages) == 20, len(messages)
    inside = sorted(ts(e["timestamp"]) for e in messages if start <= ts(e["timestamp"]) <= end)
    assert len(inside) >= 10, (start, end, [e["timestamp"] for e in messages])
    assert len(set(inside)) == len(inside)
    # Spread across the window, not bunched up when the cell returned.
    assert inside[-1] - inside[0] >= 5.0, inside


# 7 ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        'session prompt sess_nope "x"',
        "session new --agent no-such-agent",
        "session new --agent demo --cwd /does/not/exist",
        "session frobnicate",
    ],
)
def test_user_errors_are_one_line(kernel: KernelSession, line: str) -> None:
    cell = kernel.run(f"%agh {line}")
    assert cell.error is None and cell.status == "ok", cell.describe()
    assert cell.stderr.startswith("agh: error:"), cell.describe()
    assert "Traceback" not in cell.stderr, cell.describe()
    assert cell.stderr.strip().count("\n") == 0, cell.describe()
    assert cell.stdout == "" and cell.result is None, cell.describe()


def test_failed_creates_leave_stopped_startup_failures(kernel: KernelSession) -> None:
    lines = {}
    for line in ("session new --agent no-such-agent", "session new --agent demo --cwd /does/not/exist"):
        cell = kernel.run(f"%agh {line}")
        assert cell.stderr.startswith("agh: error:") and "Traceback" not in cell.stderr, cell.describe()
        lines[line] = cell.stderr
    sessions = kernel.agh("session list")
    assert isinstance(sessions, list) and len(sessions) == 2, sessions
    unknown = [s for s in sessions if s["agent_name"] == "no-such-agent"]
    bad_cwd = [s for s in sessions if s["workspace_path"] == "/does/not/exist"]
    assert len(unknown) == 1 and len(bad_cwd) == 1, sessions
    for record in unknown + bad_cwd:
        assert record["id"].startswith("sess_")
        assert record["state"] == "stopped", record
        assert record["stop_reason"] == "error", record
        assert record["failure"] and record["failure"]["kind"] == "startup_failure", record
        assert record["failure"]["summary"], record
    # Each error line names the session that was left behind.
    assert unknown[0]["id"] in lines["session new --agent no-such-agent"]
    assert bad_cwd[0]["id"] in lines["session new --agent demo --cwd /does/not/exist"]
    for record in unknown + bad_cwd:
        status = kernel.agh(f"session status {record['id']}")
        assert status["state"] == "stopped" and status["failure"]["kind"] == "startup_failure", status


# 8 ------------------------------------------------------------------------------------------------


def test_agent_killed_mid_turn_is_agent_crashed(kernel: KernelSession) -> None:
    sid = new_session(kernel)["id"]
    turn = kernel.agh(f'session prompt {sid} "slow 50 0.1"')
    seen = kernel.poll(
        lambda: kernel.events(sid, "--type agent_message"),
        lambda rows: len(rows) >= 5,
        30,
        "5 agent_message rows",
    )
    agents = kernel.demo_agent_pids()
    assert len(agents) == 1, [(p, proc_cmdline(p)) for p in agents]
    pid = agents[0]
    os.kill(pid, signal.SIGKILL)

    status = kernel.poll(
        lambda: kernel.agh(f"session status {sid}"),
        lambda s: s["state"] == "stopped",
        30,
        "the session to stop after its agent was killed",
    )
    assert status["stop_reason"] == "agent_crashed", status
    assert status["failure"] and status["failure"]["kind"] == "process_exit", status

    events = kernel.events(sid)
    assert_gapless(events)
    assert events[-1]["type"] == "session_stopped", events[-1]
    assert events[-1]["content"]["stop_reason"] == "agent_crashed"
    kept = {(e["id"], e["sequence"]) for e in events if e["type"] == "agent_message"}
    assert {(e["id"], e["sequence"]) for e in seen} <= kept
    assert len(kept) < 50, "the agent was killed mid-turn"
    assert any(e["type"] == "done" and e["turn_id"] == turn["turn_id"] for e in events)
    assert pid not in kernel.demo_agent_pids()


# extra --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("line", ["--help", "session --help", "session new --help"])
def test_help_is_shown_once(kernel: KernelSession, line: str) -> None:
    cell = kernel.ok(f"%agh {line}")
    assert cell.stdout.count("usage: %agh") == 1, cell.describe()
    assert cell.result is None


def test_kernel_shutdown_stops_sessions(kernel: KernelSession) -> None:
    """Shutting the kernel down (Jupyter's shutdown_request) stops its sessions cleanly."""
    sid = new_session(kernel)["id"]
    turn = kernel.agh(f'session prompt {sid} "slow 100 0.1"')
    kernel.poll(
        lambda: kernel.events(sid, "--type agent_message"), lambda rows: len(rows) >= 2, 30, "the turn to run"
    )
    kernel.shutdown()

    meta = json.loads((kernel.home / "sessions" / sid / "meta.json").read_text())
    assert meta["state"] == "stopped", meta
    # Read the store back through the CLI (a separate process, read-only), as an operator would.
    status = cli_json(kernel, "session", "status", sid)
    assert status["state"] == "stopped", status
    events = cli_json(kernel, "session", "events", sid)
    assert_gapless(events)
    assert events[-1]["type"] == "session_stopped", events[-1]
    assert any(e["type"] == "done" and e["turn_id"] == turn["turn_id"] for e in events)


def cli_json(kernel: KernelSession, *words: str) -> Any:
    """``agh-nb <words> -o json`` against the kernel's AGH_HOME, parsed."""
    env = dict(os.environ, AGH_HOME=str(kernel.home))
    proc = subprocess.run(
        [sys.executable, "-m", "agh_nb.cli", *words, "-o", "json"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    return json.loads(proc.stdout)
