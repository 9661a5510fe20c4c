"""Two surfaces resuming one session at the same moment (two notebooks of a server, say)."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import pytest

from agh_nb.api import Host, build_query

pytestmark = pytest.mark.timeout(90)


def test_concurrent_resumes_start_one_agent(host: Host, workspace: Path) -> None:
    record = host.create("demo-fast", cwd=str(workspace))
    host.stop(record.id)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: host.resume(record.id), range(2)))
    assert [(r.id, r.state.value) for r in results] == [(record.id, "active")] * 2
    live = host.runtime.manager.live(record.id)
    assert live is not None and live.record.state.value == "active"
    notes = host.events(record.id, build_query(types="system"))
    assert len([e for e in notes if e.content.get("title") == "resume"]) == 1, notes
    assert host.prompt(record.id, "hello").wait(30).stop_reason == "end_turn"
    final = host.stop(record.id)
    events = host.events(record.id)
    assert [e.type for e in events].count("session_stopped") == 2
    assert final.state.value == "stopped"
