"""Repair planning (SPEC 2, ``session repair``): settling a session a dead host left behind.

Owns: the pure planning of crash repair (a stale ``starting``/``active``/``stopping`` record ->
``stopped`` with a stop reason and failure) and transcript repair (append-only events closing an
interrupted turn), and ``RepairPlan``, the plan ``repair --dry-run`` prints. Nothing here reads or
writes anything: the caller decides the host is dead, applies ``RecordRepair.apply`` to the record,
appends the drafts in order, and saves. Imports only ``core.record``, ``core.state`` and
``events``; never acp, duckdb, pyarrow, cryptography, IPython, widgets or tornado.

Transcript repair never rewrites or resequences: it only plans new events, and planning again over
the events it produced plans nothing (it is idempotent). The live host closes a failing turn the
same way, with ``plan_interrupted_tool_results``, before recording its ``error`` and ``done``: the
dangling calls of a crashed turn are closed inside the turn, and repair then has nothing to add.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from agh_nb.core.record import Failure, SessionRecord, bound_summary
from agh_nb.core.state import FailureKind, SessionState, StopReason
from agh_nb.events import JSON, Event, EventDraft, EventType, build_content, format_timestamp

INTERRUPTED_TOOL_ERROR = "interrupted: the session stopped before the tool call finished"
"""The ``tool_error`` of a repaired (interrupted) tool call."""

REPAIR_RUNTIME: JSON = {"repair": True}
"""The ``runtime`` marker carried by every event repair appends."""

_REPAIRABLE_REASONS = frozenset({StopReason.AGENT_CRASHED, StopReason.ERROR})
TALLIED_TYPES: frozenset[EventType] = frozenset(
    {EventType.TOOL_CALL, EventType.PERMISSION, EventType.TOOL_RESULT, EventType.DONE, EventType.ERROR}
)
"""The only event types a ``TurnTally`` reads: a live session passes just these to its turn
runner (a streaming turn's thousands of chunks are not needed)."""
_DETAIL_LIMIT = 500

# Stale state -> (stop reason, failure kind, detail); the detail doubles as the failure summary.
_CRASH_OUTCOMES: dict[SessionState, tuple[StopReason, FailureKind, str]] = {
    SessionState.ACTIVE: (StopReason.AGENT_CRASHED, FailureKind.PROCESS_EXIT, "daemon crashed while session active"),
    SessionState.STOPPING: (StopReason.AGENT_CRASHED, FailureKind.PROCESS_EXIT, "stop did not complete"),
    SessionState.STARTING: (StopReason.ERROR, FailureKind.STARTUP_FAILURE, "start did not complete"),
}


@dataclass(frozen=True)
class RecordRepair:
    """The metadata change that settles a stale record as ``stopped``.

    Attributes:
        session_id: the session.
        from_state: the stale state found in the record.
        stop_reason: the stop reason to persist.
        stop_detail: the stop detail to persist.
        failure: the failure to persist (kind and summary).
        updated_at: the new ``updated_at``.
    """

    session_id: str
    from_state: SessionState
    stop_reason: StopReason
    stop_detail: str
    failure: Failure
    updated_at: datetime

    @property
    def state(self) -> SessionState:
        """The state after repair: always ``stopped``."""
        return SessionState.STOPPED

    def apply(self, record: SessionRecord) -> SessionRecord:
        """Return ``record`` settled as ``stopped``.

        This is not a live lifecycle move (those go through ``state.transition``): it records
        that a host died mid-lifecycle, so it may jump straight from any state to ``stopped``.

        Raises:
            ValueError: when ``record`` is not the one this repair was planned for.
        """
        if record.id != self.session_id or record.state is not self.from_state:
            raise ValueError(
                f"repair planned for {self.session_id} in state {self.from_state.value}, "
                f"applied to {record.id} in state {record.state.value}"
            )
        return record.replace(
            state=self.state,
            stop_reason=self.stop_reason,
            stop_detail=self.stop_detail,
            failure=self.failure,
            updated_at=self.updated_at,
        )

    def to_dict(self) -> JSON:
        """Return the change as JSON: ``state`` (from/to), ``stop_reason``, ``stop_detail``, ``failure``."""
        return {
            "state": {"from": self.from_state.value, "to": self.state.value},
            "stop_reason": self.stop_reason.value,
            "stop_detail": self.stop_detail,
            "failure": self.failure.to_dict(),
            "updated_at": format_timestamp(self.updated_at),
        }


def plan_crash_repair(record: SessionRecord, now: datetime) -> RecordRepair | None:
    """Plan settling a record left by a dead host (the caller has established the host is dead).

    Stale ``active`` -> ``agent_crashed``, failure ``process_exit``, "daemon crashed while session
    active"; stale ``stopping`` -> the same with "stop did not complete"; stale ``starting`` ->
    ``error``, ``startup_failure``, "start did not complete". The detail is also the failure summary,
    except where the host recorded why its stop could not complete (a ``stopping`` record with a
    failure, left by a shutdown that ran out of time): that failure is kept.

    Args:
        record: the stored record.
        now: the repair time (becomes ``updated_at``).

    Returns:
        The change, or None when the record is already ``stopped``.
    """
    outcome = _CRASH_OUTCOMES.get(record.state)
    if outcome is None:
        return None
    reason, kind, detail = outcome
    failure = Failure(kind=kind, summary=detail)
    if record.state is SessionState.STOPPING and record.failure is not None:
        failure = record.failure
    return RecordRepair(
        session_id=record.id,
        from_state=record.state,
        stop_reason=reason,
        stop_detail=detail,
        failure=failure,
        updated_at=now,
    )


def plan_session_stopped(record: SessionRecord, now: datetime) -> EventDraft:
    """Plan the terminal ``session_stopped`` event crash repair appends.

    Args:
        record: the repaired record (``RecordRepair.apply``'s result).
        now: the event time.

    Returns:
        A session-level draft carrying ``stop_reason``, ``failure`` and
        ``runtime {stop_detail, repair: true}``.

    Raises:
        ValueError: when the record has no stop reason (it was not repaired).
    """
    if record.stop_reason is None:
        raise ValueError(f"session {record.id} has no stop reason; plan the record repair first")
    return EventDraft(
        EventType.SESSION_STOPPED,
        None,
        {
            "stop_reason": record.stop_reason.value,
            "failure": record.failure.to_dict() if record.failure else None,
            "runtime": {"stop_detail": record.stop_detail, **REPAIR_RUNTIME},
        },
        now,
    )


@dataclass
class TurnTally:
    """What the events of one turn say about how it ended: its tool calls, their last status,
    refusals and results. Built from stored events (repair) or kept up to date as a live turn's
    events are appended (``TurnRunner``), so a turn's end needs no read of the store."""

    turn_id: str
    calls: dict[str, JSON] = field(default_factory=dict)  # id -> latest title/tool_name, first-seen order
    statuses: dict[str, str] = field(default_factory=dict)  # id -> the last ACP status the agent sent
    refusals: dict[str, str] = field(default_factory=dict)  # id -> the refusing permission decision
    results: set[str] = field(default_factory=set)
    done: bool = False
    done_error: bool = False
    error: bool = False

    @property
    def interrupted(self) -> bool:
        """No ``done``, or it ended in an error (the live crash path records error + done)."""
        return not self.done or self.done_error or self.error

    def dangling(self) -> list[tuple[str, JSON]]:
        """Tool calls with no ``tool_result``, in first-seen order."""
        return [(call_id, info) for call_id, info in self.calls.items() if call_id not in self.results]

    def add(self, event: Event) -> None:
        """Take one stored event of this turn into account."""
        self.observe(event.type, event.content)

    def observe(self, event_type: str, content: JSON) -> None:
        """Take one event of this turn into account, stored (its ``content``) or about to be (a
        draft's ``fields``: the same keys, ``None`` for what the envelope leaves out)."""
        call_id = content.get("tool_call_id")
        if event_type == EventType.TOOL_CALL.value and call_id is not None:
            info = self.calls.setdefault(str(call_id), {})
            for key in ("title", "tool_name"):
                if content.get(key) is not None:
                    info[key] = content[key]
            raw = content.get("raw")
            status = raw.get("status") if isinstance(raw, dict) else None
            if isinstance(status, str):
                self.statuses[str(call_id)] = status
        elif event_type == EventType.PERMISSION.value and call_id is not None:
            decision = content.get("decision")
            if isinstance(decision, str) and decision.startswith(("reject", "cancelled")):
                self.refusals[str(call_id)] = decision
        elif event_type == EventType.TOOL_RESULT.value and call_id is not None:
            self.results.add(str(call_id))
        elif event_type == EventType.DONE.value:
            self.done = True
            self.done_error = bool(content.get("error")) or content.get("stop_reason") == "error"
        elif event_type == EventType.ERROR.value:
            self.error = True


def plan_transcript_repair(record: SessionRecord, events: Sequence[Event], now: datetime) -> list[EventDraft]:
    """Plan the events that close an interrupted turn of a crashed session (append-only).

    Applies only to a record stopped ``agent_crashed`` or ``error`` whose last turn was
    interrupted: it has no ``done`` event, or it ended in an error (``done`` carrying an error, or
    an ``error`` event). Every interrupted turn since the session last started (the events after
    the previous ``session_stopped``; queued turns a dead host never ran are interrupted too) gets,
    in turn order:

    - one ``tool_result`` per dangling tool call (a ``tool_call`` id with no ``tool_result``),
      ``tool_error`` ``INTERRUPTED_TOOL_ERROR``, ``runtime {"repair": true}``;
    - then, when the turn has neither ``done`` nor ``error``, one terminal ``error``:
      "turn interrupted: <stop reason> (<detail>)", ``runtime {"repair": true}``.

    Idempotent: once those events exist, nothing is planned.

    Args:
        record: the (repaired) record; its stop reason is quoted in the error.
        events: the session's stored events, in any order.
        now: the time of the planned events.

    Returns:
        Drafts to append in order; empty when nothing needs repair.
    """
    if record.state is not SessionState.STOPPED or record.stop_reason not in _REPAIRABLE_REASONS:
        return []
    turns = _last_run_turns(sorted(events, key=lambda e: e.sequence))
    if not turns or not turns[-1].interrupted:
        return []
    message = _interrupted_message(record)
    failure = record.failure.to_dict() if record.failure else None
    drafts: list[EventDraft] = []
    for turn in turns:
        if not turn.interrupted:
            continue
        drafts.extend(_close_dangling(turn, now))
        if not turn.done and not turn.error:
            fields: JSON = {"error": message, "failure": failure, "runtime": dict(REPAIR_RUNTIME)}
            drafts.append(EventDraft(EventType.ERROR, turn.turn_id, fields, now))
    return drafts


def plan_interrupted_tool_results(events: Sequence[Event], turn_id: str, now: datetime) -> list[EventDraft]:
    """Plan the interrupted ``tool_result`` of every tool call of one turn that is still open.

    The live host calls this when a turn fails (the agent died, the driver failed) *before* it
    records the turn's ``error`` and ``done``, so a crashed turn reads, in sequence order:
    ``tool_call ... tool_result (interrupted) ... error, done``. The drafts are exactly those
    transcript repair would plan for the turn (same fields, ``runtime {"repair": true}``), so a
    later ``plan_transcript_repair`` over the stored events plans nothing for it.

    Args:
        events: stored events (any order; only those of ``turn_id`` are read).
        turn_id: the failing turn.
        now: the time of the planned events.

    Returns:
        One draft per dangling tool call, in first-seen order; empty when none is open.
    """
    return interrupted_tool_results(tally_turn(events, turn_id), now)


def interrupted_tool_results(tally: TurnTally, now: datetime) -> list[EventDraft]:
    """``plan_interrupted_tool_results`` over a turn's tally (the live host keeps one)."""
    return _close_dangling(tally, now)


def tally_turn(events: Sequence[Event], turn_id: str) -> TurnTally:
    """The tally of ``turn_id`` from stored events (any order; other turns' are skipped)."""
    turn = TurnTally(turn_id)
    for event in sorted(events, key=lambda e: e.sequence):
        if event.turn_id == turn_id:
            turn.add(event)
    return turn


def plan_turn_end_tool_results(
    events: Sequence[Event], turn_id: str, stop_reason: str, now: datetime
) -> list[EventDraft]:
    """Plan the ``tool_result`` that closes each tool call a turn leaves open when it ends.

    A turn that ends normally (``end_turn``, ``cancelled``...) can still leave calls the agent
    never finished: one whose permission was refused and that it then dropped without a word, or
    one a cancel cut short. Each gets a ``tool_result`` carrying its last ACP status
    (``runtime.last_status``) and a ``tool_error`` saying why it did not complete, so no call of a
    finished turn stays open. Marked ``runtime.turn_end`` (not ``repair``: nothing crashed).

    Args:
        events: stored events (any order; only those of ``turn_id`` are read).
        turn_id: the turn that is ending.
        stop_reason: how it ends (quoted in the error).
        now: the time of the planned events.
    """
    return turn_end_tool_results(tally_turn(events, turn_id), stop_reason, now)


def turn_end_tool_results(turn: TurnTally, stop_reason: str, now: datetime) -> list[EventDraft]:
    """``plan_turn_end_tool_results`` over a turn's tally (the live host keeps one)."""
    turn_id = turn.turn_id
    drafts = []
    for call_id, info in turn.dangling():
        refused = turn.refusals.get(call_id)
        error = (
            f"not run: its permission request was refused ({refused})"
            if refused
            else f"the turn ended ({stop_reason}) before the tool call completed"
        )
        runtime: JSON = {"turn_end": stop_reason, "last_status": turn.statuses.get(call_id, "pending")}
        fields: JSON = {"tool_call_id": call_id, **info, "tool_error": error, "runtime": runtime}
        drafts.append(EventDraft(EventType.TOOL_RESULT, turn_id, fields, now))
    return drafts


def _close_dangling(turn: TurnTally, now: datetime) -> list[EventDraft]:
    drafts = []
    for call_id, info in turn.dangling():
        fields: JSON = {"tool_call_id": call_id, **info, "tool_error": INTERRUPTED_TOOL_ERROR}
        fields["runtime"] = dict(REPAIR_RUNTIME)
        drafts.append(EventDraft(EventType.TOOL_RESULT, turn.turn_id, fields, now))
    return drafts


def _last_run_turns(events: Sequence[Event]) -> list[TurnTally]:
    """The turns of the session's last run (after the session_stopped preceding the last prompt)."""
    last_prompt = max(
        (i for i, e in enumerate(events) if e.type == EventType.USER_MESSAGE.value and e.turn_id), default=None
    )
    if last_prompt is None:
        return []
    start = 1 + max(
        (i for i, e in enumerate(events[:last_prompt]) if e.type == EventType.SESSION_STOPPED.value), default=-1
    )
    turns: dict[str, TurnTally] = {}
    for event in events[start:]:
        if event.turn_id:
            turns.setdefault(event.turn_id, TurnTally(event.turn_id)).add(event)
    return list(turns.values())


def _interrupted_message(record: SessionRecord) -> str:
    reason = record.stop_reason.value if record.stop_reason else "stopped"
    detail = record.stop_detail or (record.failure.summary if record.failure else None)
    text = f"turn interrupted: {reason}" + (f" ({detail})" if detail else "")
    return bound_summary(text, _DETAIL_LIMIT)


@dataclass(frozen=True)
class RepairPlan:
    """Everything ``session repair`` would do to one session, in order.

    Attributes:
        session_id: the session.
        acp_session_id: the ACP session id (the envelope's ``session_id`` of planned events).
        record: the metadata change, or None when the record is already settled.
        events: the drafts to append, in order (transcript repair, then ``session_stopped``).
    """

    session_id: str
    acp_session_id: str | None
    record: RecordRepair | None
    events: tuple[EventDraft, ...]

    @property
    def empty(self) -> bool:
        """True when there is nothing to repair."""
        return self.record is None and not self.events

    def to_dict(self) -> JSON:
        """Return the plan as JSON for ``repair --dry-run``: ``session_id``, ``empty``, ``record``, ``events``.

        Each planned event is rendered as the ``content`` envelope it would be stored with.
        """
        return {
            "session_id": self.session_id,
            "empty": self.empty,
            "record": self.record.to_dict() if self.record else None,
            "events": [
                build_content(
                    draft.type,
                    acp_session_id=self.acp_session_id,
                    turn_id=draft.turn_id,
                    timestamp=draft.timestamp,
                    fields=draft.fields,
                )
                for draft in self.events
            ],
        }


def plan_repair(record: SessionRecord, events: Sequence[Event], now: datetime) -> RepairPlan:
    """Plan crash repair and transcript repair of one session left by a dead host.

    The record repair (if the record is stale) comes first; transcript repair is planned against
    the repaired record; a stale record also gets a terminal ``session_stopped`` unless the stored
    events already end with one (the host died after recording it, before saving ``stopped``).

    Args:
        record: the stored record (the caller has established its host is dead).
        events: the session's stored events.
        now: the repair time.

    Returns:
        The plan; ``plan.empty`` when the session needs nothing.
    """
    change = plan_crash_repair(record, now)
    repaired = change.apply(record) if change else record
    drafts = plan_transcript_repair(repaired, events, now)
    if change is not None:
        last = max(events, key=lambda e: e.sequence, default=None)
        if last is None or last.type != EventType.SESSION_STOPPED.value:
            drafts.append(plan_session_stopped(repaired, now))
    return RepairPlan(record.id, record.acp_session_id, change, tuple(drafts))
