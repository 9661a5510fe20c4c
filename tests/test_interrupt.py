"""``--interrupt`` against an agent that ignores ``session/cancel`` (issue 11, section 6).

The demo agent started with ``--on-cancel ignore`` keeps streaming the cancelled turn. After
``timeout_cancel_grace`` the turn is ended locally (``done``: cancelled, ``runtime.ended_locally``),
the next turn runs, and the old turn's late updates stay in the old turn. An agent that is still
on the old turn another grace later stops the session as ``cancellation``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agh_nb.api import Host
from agh_nb.runtime import Runtime
from tests.conftest import DEMO, wait_until, write_agent

pytestmark = pytest.mark.timeout(120)


def stubborn_host(agh_home: Path, grace: str) -> Host:
    (agh_home / "config.toml").write_text(f'[session.supervision]\ntimeout_cancel_grace = "{grace}"\n')
    write_agent(agh_home, "stubborn", [*DEMO, "--fast", "--on-cancel", "ignore"])
    return Host(Runtime.start(home=agh_home))


def test_an_ignored_cancel_ends_the_turn_locally_and_the_next_one_runs(agh_home: Path, workspace: Path) -> None:
    host = stubborn_host(agh_home, "2s")
    try:
        sid = host.create("stubborn", cwd=str(workspace)).id
        first = host.prompt(sid, "slow 15 0.2")  # 3 s of chunks, whatever the cancel says
        wait_until(lambda: any(e.type == "agent_message" for e in host.events(sid)))
        second = host.prompt(sid, "hello after the interrupt", interrupt=True)
        ended = first.wait(30)
        assert ended.stop_reason == "cancelled" and ended.error and "timeout_cancel_grace" in ended.error
        result = second.wait(60)
        assert result.stop_reason == "end_turn"
        events = host.events(sid)
        (done,) = [e for e in events if e.type == "done" and e.turn_id == first.turn_id]
        assert done.content["runtime"] == {"ended_locally": True}
        slow = [e for e in events if e.type == "agent_message" and "slow chunk" in (e.content.get("text") or "")]
        assert len(slow) == 15  # the agent streamed on; every chunk was kept...
        assert {e.turn_id for e in slow} == {first.turn_id}  # ...in the old turn
        late = [e for e in slow if e.sequence > done.sequence]
        assert late, "some chunks arrived after the turn was ended locally"
        mine = [e for e in events if e.turn_id == second.turn_id]
        assert [e.type for e in mine][0] == "user_message" and mine[-1].type == "done"
        assert not any("slow chunk" in (e.content.get("text") or "") for e in mine)
        assert host.get(sid).state.value == "active"
    finally:
        host.close()


def test_an_agent_that_never_answers_the_cancel_stops_as_cancellation(agh_home: Path, workspace: Path) -> None:
    host = stubborn_host(agh_home, "500ms")
    try:
        sid = host.create("stubborn", cwd=str(workspace)).id
        first = host.prompt(sid, "slow 1000 0.1")
        wait_until(lambda: any(e.type == "agent_message" for e in host.events(sid)))
        second = host.prompt(sid, "next", interrupt=True)
        assert first.wait(30).stop_reason == "cancelled"
        record = wait_until(lambda: (r := host.get(sid)).state.value == "stopped" and r, timeout=30)
        assert record.failure is not None and record.failure.kind.value == "cancellation"
        assert "did not answer session/cancel" in record.failure.summary
        assert second.wait(30).stop_reason in ("cancelled", "error")
        assert host.events(sid)[-1].type == "session_stopped"
    finally:
        host.close()
