"""Crash and transcript repair planning, over real sessions left by a crashed agent and a killed host."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import pytest

from agh_nb.core.record import Failure, SessionRecord
from agh_nb.core.repair import (
    INTERRUPTED_TOOL_ERROR,
    RecordRepair,
    plan_crash_repair,
    plan_interrupted_tool_results,
    plan_repair,
    plan_session_stopped,
    plan_transcript_repair,
    plan_turn_end_tool_results,
)
from agh_nb.core.state import FailureKind, SessionState, StopReason
from agh_nb.events import Event, EventDraft, EventType, build_content

GOLDEN = Path(__file__).parent / "golden"
NOW = datetime(2026, 11, 24, 1, 0, 0, tzinfo=timezone.utc)


def load(name: str) -> tuple[SessionRecord, list[Event]]:
    """The record and stored rows of a golden fixture."""
    doc = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    events = [
        Event(**{**row, "timestamp": datetime.fromisoformat(row["timestamp"].replace("Z", "+00:00"))})
        for row in doc["events"]
    ]
    return SessionRecord.from_dict(doc["record"]), events


def load_legacy_agent_crash() -> tuple[SessionRecord, list[Event]]:
    """``events_agent_crash`` as a host before the live fix stored it: the crashed turn's error +
    done with its tool call left open (the closing tool_result dropped, sequences kept gapless)."""
    record, events = load("events_agent_crash")
    kept = [e for e in events if not (e.type == "tool_result" and (e.content.get("runtime") or {}).get("repair"))]
    assert len(kept) == len(events) - 1
    return record, [e.replace(sequence=i) for i, e in enumerate(kept, start=1)]


def append(record: SessionRecord, events: Sequence[Event], drafts: Sequence[EventDraft]) -> list[Event]:
    """What the store would hold after appending ``drafts`` (next sequences, canonical content)."""
    out = list(events)
    for draft in drafts:
        sequence = out[-1].sequence + 1 if out else 1
        content = build_content(
            draft.type, acp_session_id=record.acp_session_id, turn_id=draft.turn_id, timestamp=draft.timestamp,
            fields=draft.fields,
        )  # fmt: skip
        out.append(
            Event(f"evt_r{sequence}", record.id, sequence, draft.turn_id, draft.type.value, record.agent_name,
                  record.workspace_id, record.workspace_path, content, draft.timestamp)  # fmt: skip
        )
    return out


def stopped(record: SessionRecord, reason: StopReason, detail: str | None = None) -> SessionRecord:
    return record.replace(state=SessionState.STOPPED, stop_reason=reason, stop_detail=detail)


def summary(drafts: Sequence[EventDraft]) -> list[tuple[str, str | None, str | None]]:
    return [(d.type.value, d.turn_id, d.fields.get("tool_call_id")) for d in drafts]


# -- crash repair ------------------------------------------------------------------------------

CRASH = [
    pytest.param(SessionState.ACTIVE, StopReason.AGENT_CRASHED, FailureKind.PROCESS_EXIT,
                 "daemon crashed while session active", id="stale-active"),
    pytest.param(SessionState.STOPPING, StopReason.AGENT_CRASHED, FailureKind.PROCESS_EXIT, "stop did not complete",
                 id="stale-stopping"),
    pytest.param(SessionState.STARTING, StopReason.ERROR, FailureKind.STARTUP_FAILURE, "start did not complete",
                 id="stale-starting"),
]  # fmt: skip


@pytest.mark.parametrize(("state", "reason", "kind", "detail"), CRASH)
def test_crash_repair_settles_a_stale_record(
    state: SessionState, reason: StopReason, kind: FailureKind, detail: str
) -> None:
    record, _ = load("events_host_died")
    record = record.replace(state=state)
    change = plan_crash_repair(record, NOW)
    assert change is not None
    repaired = change.apply(record)
    assert repaired.state is SessionState.STOPPED
    assert (repaired.stop_reason, repaired.stop_detail) == (reason, detail)
    assert repaired.failure == Failure(kind=kind, summary=detail)
    assert repaired.updated_at == NOW
    unchanged = ("id", "acp_session_id", "host_pid", "workspace_id", "created_at")
    assert all(getattr(repaired, name) == getattr(record, name) for name in unchanged)
    assert change.to_dict() == {
        "state": {"from": state.value, "to": "stopped"},
        "stop_reason": reason.value,
        "stop_detail": detail,
        "failure": {"kind": kind.value, "summary": detail, "crash_bundle_path": None},
        "updated_at": "2026-11-24T01:00:00.000000Z",
    }


def test_crash_repair_leaves_a_stopped_record_alone() -> None:
    record, _ = load("events_agent_crash")
    assert plan_crash_repair(record, NOW) is None


def test_record_repair_refuses_another_record() -> None:
    record, _ = load("events_host_died")
    change = plan_crash_repair(record, NOW)
    assert isinstance(change, RecordRepair)
    with pytest.raises(ValueError, match="applied to"):
        change.apply(record.replace(state=SessionState.STOPPING))


def test_session_stopped_draft_carries_reason_failure_and_detail() -> None:
    record, _ = load("events_host_died")
    change = plan_crash_repair(record, NOW)
    assert change is not None
    draft = plan_session_stopped(change.apply(record), NOW)
    assert draft == EventDraft(
        EventType.SESSION_STOPPED,
        None,
        {
            "stop_reason": "agent_crashed",
            "failure": {"kind": "process_exit", "summary": "daemon crashed while session active",
                        "crash_bundle_path": None},
            "runtime": {"stop_detail": "daemon crashed while session active", "repair": True},
        },  # fmt: skip
        NOW,
    )


def test_session_stopped_needs_a_stop_reason() -> None:
    record, _ = load("events_host_died")
    with pytest.raises(ValueError, match="no stop reason"):
        plan_session_stopped(record, NOW)


# -- transcript repair -------------------------------------------------------------------------


def test_host_died_mid_turn_closes_the_dangling_call_then_the_turn() -> None:
    record, events = load("events_host_died")
    record = stopped(record, StopReason.AGENT_CRASHED, "daemon crashed while session active")
    drafts = plan_transcript_repair(record, events, NOW)
    turn = "turn_a22baf997fbb"
    assert summary(drafts) == [("tool_result", turn, "demo-call-2-1"), ("error", turn, None)]
    result, error = drafts
    assert result.fields == {
        "tool_call_id": "demo-call-2-1",
        "title": "Write /tmp/tmpm0ognv0h/notes.txt",
        "tool_name": "edit",
        "tool_error": INTERRUPTED_TOOL_ERROR,
        "runtime": {"repair": True},
    }
    assert error.fields["error"] == "turn interrupted: agent_crashed (daemon crashed while session active)"
    assert error.fields["runtime"] == {"repair": True}
    assert {d.timestamp for d in drafts} == {NOW}


def test_a_live_crash_leaves_nothing_to_repair() -> None:
    # The live host closed the dangling call inside the turn, before its error + done.
    record, events = load("events_agent_crash")
    crashed = [e.type for e in events if e.turn_id == "turn_6b1908d41a34"]
    assert crashed[-3:] == ["tool_result", "error", "done"]
    assert plan_transcript_repair(record, events, NOW) == []
    assert plan_repair(record, events, NOW).empty
    assert plan_interrupted_tool_results(events, "turn_6b1908d41a34", NOW) == []


def test_a_crash_stored_by_an_older_host_closes_only_the_dangling_call() -> None:
    # Hosts before the live fix recorded error + done(error) and left the tool call open.
    record, events = load_legacy_agent_crash()
    drafts = plan_transcript_repair(record, events, NOW)
    assert summary(drafts) == [("tool_result", "turn_6b1908d41a34", "demo-call-2-1")]
    assert plan_transcript_repair(record, append(record, events, drafts), NOW) == []


def test_the_live_host_closes_a_turn_exactly_as_repair_would() -> None:
    record, events = load_legacy_agent_crash()
    live = plan_interrupted_tool_results(events, "turn_6b1908d41a34", NOW)
    assert live == plan_transcript_repair(record, events, NOW)
    (closed,) = live
    # ... and what it stored is that draft (the golden row was written by the live host).
    stored = next(e for e in load("events_agent_crash")[1] if e.type == "tool_result" and e.sequence == 10)
    assert {k: v for k, v in stored.content.items() if k in closed.fields} == closed.fields
    assert plan_interrupted_tool_results(events, "turn_8b1d8834c046", NOW) == [], "a finished turn has none"


@pytest.mark.parametrize("fixture", ["events_host_died", "events_agent_crash (older host)"])
def test_transcript_repair_is_idempotent(fixture: str) -> None:
    record, events = load_legacy_agent_crash() if fixture.endswith("(older host)") else load(fixture)
    record = stopped(record, StopReason.AGENT_CRASHED, record.stop_detail)
    first = plan_transcript_repair(record, events, NOW)
    assert first
    repaired = append(record, events, first)
    assert plan_transcript_repair(record, repaired, NOW) == []
    assert repaired[: len(events)] == events  # append-only: nothing rewritten or resequenced


@pytest.mark.parametrize(
    ("reason", "repairs"),
    [
        pytest.param(reason, reason in (StopReason.AGENT_CRASHED, StopReason.ERROR), id=reason.value)
        for reason in StopReason
    ],
)
def test_only_crashed_or_errored_sessions_are_repaired(reason: StopReason, repairs: bool) -> None:
    record, events = load("events_host_died")
    assert bool(plan_transcript_repair(stopped(record, reason), events, NOW)) is repairs


@pytest.mark.parametrize("state", [SessionState.ACTIVE, SessionState.STOPPING, SessionState.STARTING])
def test_a_record_not_yet_stopped_gets_no_transcript_repair(state: SessionState) -> None:
    record, events = load("events_host_died")
    assert plan_transcript_repair(record.replace(state=state, stop_reason=StopReason.ERROR), events, NOW) == []


def test_a_cleanly_finished_last_turn_needs_nothing() -> None:
    record, events = load("events_completed")
    assert plan_transcript_repair(stopped(record, StopReason.AGENT_CRASHED), events, NOW) == []
    assert plan_transcript_repair(stopped(record, StopReason.ERROR), events[:-1], NOW) == []


def test_no_turns_no_repair() -> None:
    record, events = load("events_host_died")
    assert plan_transcript_repair(stopped(record, StopReason.ERROR), [], NOW) == []


def test_queued_turns_a_dead_host_never_ran_are_closed_too() -> None:
    record, events = load("events_host_died")
    queued = EventDraft(EventType.USER_MESSAGE, "turn_queued", {"text": "and then?"}, NOW)
    events = append(record, events, [queued])
    drafts = plan_transcript_repair(stopped(record, StopReason.AGENT_CRASHED), events, NOW)
    assert summary(drafts) == [
        ("tool_result", "turn_a22baf997fbb", "demo-call-2-1"),
        ("error", "turn_a22baf997fbb", None),
        ("error", "turn_queued", None),
    ]


def test_turns_of_an_earlier_run_are_left_alone() -> None:
    # Stopped (crashed) earlier with demo-call-2-1 dangling, then resumed; the new run dies mid-turn.
    record, events = load_legacy_agent_crash()
    new_turn = [
        EventDraft(EventType.USER_MESSAGE, "turn_resumed", {"text": "hello again"}, NOW),
        EventDraft(EventType.AGENT_MESSAGE, "turn_resumed", {"text": "Hel"}, NOW),
    ]
    events = append(record, events, new_turn)
    drafts = plan_transcript_repair(stopped(record, StopReason.AGENT_CRASHED, "stop did not complete"), events, NOW)
    assert summary(drafts) == [("error", "turn_resumed", None)]
    assert drafts[0].fields["error"] == "turn interrupted: agent_crashed (stop did not complete)"


def test_error_message_falls_back_to_the_failure_summary() -> None:
    record, events = load("events_host_died")
    record = stopped(record, StopReason.ERROR).replace(failure=Failure(FailureKind.PROTOCOL_FAILURE, "bad frame"))
    error = plan_transcript_repair(record, events, NOW)[-1]
    assert error.fields["error"] == "turn interrupted: error (bad frame)"
    assert error.fields["failure"] == {"kind": "protocol_failure", "summary": "bad frame", "crash_bundle_path": None}


# -- the whole plan ----------------------------------------------------------------------------


def test_plan_for_a_killed_host_matches_the_golden_dry_run() -> None:
    record, events = load("events_host_died")
    plan = plan_repair(record, events, NOW)
    expected = json.loads((GOLDEN / "repair_plan_host_died.json").read_text(encoding="utf-8"))
    assert json.loads(json.dumps(plan.to_dict())) == expected
    assert summary(plan.events) == [
        ("tool_result", "turn_a22baf997fbb", "demo-call-2-1"),
        ("error", "turn_a22baf997fbb", None),
        ("session_stopped", None, None),
    ]


def test_applying_the_plan_leaves_nothing_to_repair() -> None:
    record, events = load("events_host_died")
    plan = plan_repair(record, events, NOW)
    assert plan.record is not None and not plan.empty
    repaired = plan.record.apply(record)
    after = append(repaired, events, plan.events)
    again = plan_repair(repaired, after, NOW)
    assert again.empty and again.to_dict()["events"] == [] and again.to_dict()["record"] is None


def test_plan_does_not_repeat_a_recorded_session_stopped() -> None:
    # The host died after recording session_stopped but before saving the stopped record.
    record, events = load("events_completed")
    plan = plan_repair(record.replace(state=SessionState.STOPPING, stop_reason=None), events, NOW)
    assert plan.record is not None and plan.record.stop_detail == "stop did not complete"
    assert plan.events == ()


def test_plan_for_a_settled_session_is_empty() -> None:
    record, events = load("events_completed")
    plan = plan_repair(record, events, NOW)
    assert plan.empty
    assert plan.to_dict() == {"session_id": record.id, "empty": True, "record": None, "events": []}


def test_a_turn_that_ends_closes_its_open_calls_with_their_last_status() -> None:
    # Issue 12: a refused call the agent then dropped, and one left in progress, both close at done.
    record, events = load("events_host_died")
    turn = "turn_refused"
    drafts = [
        EventDraft(EventType.USER_MESSAGE, turn, {"text": "edit config"}, NOW),
        EventDraft(EventType.TOOL_CALL, turn, {"tool_call_id": "c1", "title": "Edit", "tool_name": "edit", "raw": {"status": "pending"}}, NOW),
        EventDraft(EventType.PERMISSION, turn, {"request_id": "req_1", "tool_call_id": "c1", "decision": "reject-once"}, NOW),
        EventDraft(EventType.TOOL_CALL, turn, {"tool_call_id": "c2", "title": "Search", "tool_name": "search", "raw": {"status": "in_progress"}}, NOW),
        EventDraft(EventType.TOOL_CALL, turn, {"tool_call_id": "c3", "title": "Read", "raw": {"status": "pending"}}, NOW),
        EventDraft(EventType.TOOL_RESULT, turn, {"tool_call_id": "c3", "tool_result": "ok"}, NOW),
    ]
    events = append(record, events, drafts)
    closing = plan_turn_end_tool_results(events, turn, "end_turn", NOW)
    assert [(d.type.value, d.fields["tool_call_id"]) for d in closing] == [("tool_result", "c1"), ("tool_result", "c2")]
    refused, cut = closing
    assert refused.fields["tool_error"] == "not run: its permission request was refused (reject-once)"
    assert refused.fields["title"] == "Edit" and refused.fields["runtime"] == {"turn_end": "end_turn", "last_status": "pending"}
    assert cut.fields["tool_error"] == "the turn ended (end_turn) before the tool call completed"
    assert cut.fields["runtime"]["last_status"] == "in_progress"
    assert plan_turn_end_tool_results(append(record, events, closing), turn, "end_turn", NOW) == []
