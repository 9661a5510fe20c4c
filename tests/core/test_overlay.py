"""The overlays every host answers ``list``, ``status`` and ``inspect`` with (core.overlay):
a live session's record, turn and queue laid over the stored row."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from agh_nb.core.overlay import LiveState, current_record, current_records, inspect_view, status_view
from agh_nb.core.record import Failure, SessionRecord
from agh_nb.core.state import FailureKind, SessionState, StopReason
from agh_nb.events import JSON

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=timezone.utc)
STALE_AFTER = 900.0


def stored(session_id: str, state: SessionState = SessionState.STOPPED, **changes: object) -> SessionRecord:
    base = SessionRecord(
        id=session_id,
        name=f"name-{session_id}",
        agent_name="demo",
        type="user",
        workspace_id="ws",
        workspace_path="/ws",
        permissions="approve-reads",
        state=state,
        created_at=NOW - timedelta(hours=1),
        updated_at=NOW - timedelta(minutes=30),
        last_presence_at=NOW - timedelta(minutes=30),
    )
    return base.replace(**changes)


@dataclass
class Running:
    """A session as a host runs it: the values ``LiveSession`` exposes to the overlays."""

    record: SessionRecord
    active_turn_id: str | None = None
    last_activity_at: datetime | None = None
    queue: list[JSON] = field(default_factory=list)

    def queue_snapshot(self) -> list[JSON]:
        return list(self.queue)


def running(session_id: str, turn: str | None = "turn_1", queued: int = 0) -> Running:
    record = stored(session_id, SessionState.ACTIVE, updated_at=NOW, last_presence_at=NOW)
    queue = ([{"turn_id": turn, "position": 0}] if turn else []) + [
        {"turn_id": f"turn_q{i}", "position": i + 1} for i in range(queued)
    ]
    return Running(record, active_turn_id=turn, last_activity_at=NOW, queue=queue)


def test_the_live_record_wins_over_the_stored_one_in_order() -> None:
    rows = [stored("a"), stored("b", SessionState.ACTIVE), stored("c")]
    live: dict[str, LiveState] = {"b": running("b")}
    out = current_records(rows, live.get)
    assert [r.id for r in out] == ["a", "b", "c"]
    assert out[1] is live["b"].record
    assert out[0] is rows[0] and out[2] is rows[2]
    assert current_record(rows[0], None) is rows[0]


def test_status_of_a_stored_session_has_no_queue_and_is_not_live() -> None:
    rec = stored(
        "s1",
        stop_reason=StopReason.AGENT_CRASHED,
        stop_detail="agent exited",
        failure=Failure(kind=FailureKind.PROCESS_EXIT, summary="exit 3"),
    )
    doc = status_view(rec, None, now=NOW, stale_after=STALE_AFTER)
    assert "queue" not in doc
    assert doc["id"] == "s1" and doc["name"] == "name-s1" and doc["agent_name"] == "demo"
    assert doc["state"] == "stopped"
    assert doc["stop_reason"] == "agent_crashed" and doc["stop_detail"] == "agent exited"
    assert doc["failure"]["kind"] == FailureKind.PROCESS_EXIT.value
    assert doc["health"]["state"] == "stopped" and doc["health"]["health"] == "dead"
    assert doc["health"]["active_prompt"] is None and doc["health"]["attachable"] is False


def test_status_of_a_live_session_describes_the_live_record_turn_and_queue() -> None:
    old = stored("s2")  # the stored row still says stopped: the live one wins
    live = running("s2", turn="turn_7", queued=2)
    doc = status_view(old, live, now=NOW, stale_after=STALE_AFTER)
    assert doc["state"] == "active"
    assert doc["health"]["state"] == "prompting" and doc["health"]["health"] == "healthy"
    assert doc["health"]["active_prompt"] == "turn_7" and doc["health"]["attachable"] is True
    assert [q["turn_id"] for q in doc["queue"]] == ["turn_7", "turn_q0", "turn_q1"]


def test_a_session_not_stopped_and_not_run_here_is_not_healthy() -> None:
    left = stored("s3", SessionState.ACTIVE)  # left by another host, its heartbeat 30 min old
    doc = status_view(left, None, now=NOW, stale_after=STALE_AFTER)
    assert doc["health"]["state"] == "detached" and doc["health"]["health"] == "stale"
    assert "queue" not in doc


def test_inspect_joins_record_status_queue_pending_refs_and_agent() -> None:
    live = running("s4", turn="turn_1", queued=1)
    status = status_view(live.record, live, now=NOW, stale_after=STALE_AFTER)
    approvals = [{"request_id": "perm_1", "session_id": "s4"}]
    forms = [{"request_id": "elic_1", "session_id": "s4"}]
    refs = [{"ref": "vault:sessions/s4/token"}]
    agent = {"auth_methods": [], "log_tail": ["hello"]}
    doc = inspect_view(
        live.record, status, pending_approvals=approvals, pending_elicitations=forms, vault_refs=refs, agent=agent
    )
    assert {k: doc[k] for k in live.record.to_dict()} == live.record.to_dict()
    assert doc["status"] is status
    assert doc["queue"] == status["queue"] and len(doc["queue"]) == 2
    assert doc["pending_approvals"] == approvals
    assert doc["pending_elicitations"] == forms
    assert doc["vault_refs"] == refs
    assert doc["agent"] == agent


def test_inspect_of_a_stored_session_has_an_empty_queue() -> None:
    rec = stored("s5")
    doc = inspect_view(
        rec,
        status_view(rec, None, now=NOW, stale_after=STALE_AFTER),
        pending_approvals=[],
        pending_elicitations=[],
        vault_refs=[],
        agent={},
    )
    assert doc["queue"] == [] and doc["state"] == "stopped"
