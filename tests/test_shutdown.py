"""Host shutdown when a stop cannot finish in time: recorded as such, and repaired alone.

``stop_all`` gives every stop one shared deadline; a stop still running when it (and the time
allowed to record) has passed is given up: its agent is killed, its session stays ``stopping``
with a ``timeout`` failure naming the step, and the next host start repairs that session only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from agh_nb.core.leftovers import tagged_pids
from agh_nb.core import manager as manager_module
from agh_nb.core.ledger import verify_ledger
from agh_nb.core.record import SessionRecord
from agh_nb.core.session_dir import LEDGER_PENDING, ledger_path, session_dir
from agh_nb.events import EventQuery
from agh_nb.runtime import Runtime
from tests.conftest import wait_until, write_agent

STUBBORN = [sys.executable, "-m", "agh_nb.agents.demo", "--fast", "--ignore-eof", "--on-cancel", "ignore"]


def shut_down_streaming(agh_home: Path, workspace: Path, *, sessions: int) -> list[SessionRecord]:
    """Start a host, give it ``sessions`` sessions streaming without end, then shut it down the
    way a kernel does (``stop_all`` with the embedded budget); return their records."""
    runtime = Runtime.start(home=agh_home)
    manager = runtime.manager
    try:
        records = [runtime.call(lambda: manager.create(agent_name="demo-fast", cwd=str(workspace))) for _ in range(sessions)]
        for record in records:
            runtime.call(lambda r=record: manager.prompt(r.id, "firehose 1000000000"))
        for record in records:
            wait_until(lambda r=record: runtime.store.query_events(r.id, EventQuery(types=("agent_message",), limit=1)))
    finally:
        runtime.close()
    return records


@pytest.mark.timeout(120)
def test_a_stop_that_cannot_finish_in_time_is_recorded_and_repaired_alone(agh_home: Path, workspace: Path) -> None:
    write_agent(agh_home, "stubborn", STUBBORN)
    runtime = Runtime.start(home=agh_home)
    manager = runtime.manager
    try:
        calm = runtime.call(lambda: manager.create(agent_name="demo-fast", cwd=str(workspace)))
        runtime.call(lambda: manager.stop(calm.id))  # stopped cleanly before the shutdown
        stuck = runtime.call(lambda: manager.create(agent_name="stubborn", cwd=str(workspace)))
        runtime.call(lambda: manager.prompt(stuck.id, "firehose 1000000000"))
        wait_until(lambda: runtime.store.query_events(stuck.id, EventQuery(types=("agent_message",), limit=1)))
        pids = tagged_pids(stuck.id)
        assert pids
        # No time at all: the stop is given up at once.
        unstopped = runtime.call(lambda: manager.stop_all(detail="host shutting down", budget=0.0, allowance=0.0))
        assert unstopped == [stuck.id]
        assert not tagged_pids(stuck.id), "the agent of a stop given up is killed all the same"
    finally:
        runtime.close()

    reopened = Runtime.start(home=agh_home)  # the next host: its crash repair settles the session
    try:
        record = reopened.store.get_session(stuck.id)
        assert record is not None and record.state.value == "stopped"
        assert record.stop_detail == "stop did not complete"
        assert record.failure is not None and record.failure.kind.value == "timeout", record.failure
        assert "did not complete" in record.failure.summary and "budget" in record.failure.summary
        events = reopened.store.query_events(stuck.id, EventQuery())
        assert events[-1].type == "session_stopped" and events[-1].content["runtime"].get("repair") is True
        calm_events = reopened.store.query_events(calm.id, EventQuery())
        assert [e.type for e in calm_events].count("session_stopped") == 1, "the clean session is not repaired"
    finally:
        reopened.close()


@pytest.mark.timeout(120)
def test_a_clean_shutdown_writes_every_ledger_once_every_session_is_recorded(agh_home: Path, workspace: Path) -> None:
    records = shut_down_streaming(agh_home, workspace, sessions=3)

    reopened = Runtime.start(home=agh_home)
    try:
        for record in records:
            stored = reopened.store.get_session(record.id)
            assert stored is not None and stored.state.value == "stopped" and stored.failure is None, stored
            events = reopened.store.query_events(record.id, EventQuery())
            # The ledger was deferred by the stop and written by stop_all (or, when the budget had
            # no room for it, by this host's catch-up): whole, ending where the store ends.
            marker = session_dir(agh_home, record.id) / LEDGER_PENDING
            wait_until(lambda m=marker: not m.exists(), timeout=30)
            ledger = ledger_path(agh_home, stored).read_text().splitlines()
            assert len(ledger) == len(events), (len(ledger), len(events))
            assert json.loads(ledger[-1])["type"] == "session_stopped"
            assert [e.type for e in events].count("session_stopped") == 1, "nothing to repair after a clean shutdown"
    finally:
        reopened.close()


@pytest.mark.timeout(120)
def test_ledgers_a_shutdown_has_no_time_for_are_written_by_the_next_host(
    agh_home: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every ledger priced out of the budget, as with 50 firehose sessions (about 50 us an event).
    monkeypatch.setattr(manager_module, "LEDGER_SECONDS_PER_EVENT", 1000.0)
    records = shut_down_streaming(agh_home, workspace, sessions=2)
    for record in records:
        assert (session_dir(agh_home, record.id) / LEDGER_PENDING).exists(), "left for later, and marked so"
        assert not ledger_path(agh_home, record).exists()

    monkeypatch.undo()
    reopened = Runtime.start(home=agh_home)
    try:
        for record in records:
            wait_until(lambda r=record: not (session_dir(agh_home, r.id) / LEDGER_PENDING).exists(), timeout=30)
            path = ledger_path(agh_home, record)
            events = reopened.store.query_events(record.id, EventQuery())
            lines = path.read_text().splitlines()
            assert len(lines) == len(events) and json.loads(lines[-1])["type"] == "session_stopped"
            assert verify_ledger(path)
            assert [e.type for e in events].count("session_stopped") == 1, "stopped cleanly: nothing repaired"
    finally:
        reopened.close()
