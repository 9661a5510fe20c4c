"""One live session: its lifecycle, its prompt turns (one at a time, FIFO queue) and its stop path.

Owns: ``LiveSession`` (the driver's listener; the only code that changes a live record's state):
start, the turn runner (and how a failing turn is closed), the stop path, the heartbeat. ``Turn``
and ``TurnResult`` live in ``core.turn`` and are re-exported here. Runs entirely on the runtime's
event loop; blocking work (DuckDB, files) goes through the store's writer thread or
``asyncio.to_thread``. Imports no third-party library.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections import deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from agh_nb.config import Settings
from agh_nb.core.approvals import ApprovalBroker
from agh_nb.core.classify import (
    CauseKind,
    StopCause,
    classify,
    exit_summary,
    turn_failure_cause,
    unexpected_failure_cause,
)
from agh_nb.core.clock import IdGenerator, SystemClock
from agh_nb.core.crash_bundle import write_crash_bundle
from agh_nb.core.gate import PermissionGate
from agh_nb.core.health import heartbeat_interval
from agh_nb.core.session_dir import write_session_ledger
from agh_nb.core.supervisor import supervise_turn
from agh_nb.core.ports import AgentDriver, DriverFailure, EventStore, ExitInfo, LaunchSpec
from agh_nb.core.record import Failure, SessionRecord
from agh_nb.core.session_dir import write_meta
from agh_nb.core.repair import plan_interrupted_tool_results, plan_transcript_repair
from agh_nb.core.state import FailureKind, SessionState, StopReason, transition
from agh_nb.core.turn import Turn as Turn, TurnResult as TurnResult, storable_usage
from agh_nb.errors import (
    AgentStartError,
    QueueFullError,
    SessionNotActiveError,
)
from agh_nb.events import JSON, EventDraft, EventQuery, EventType

log = logging.getLogger(__name__)

STOP_GRACE = 5.0
CANCEL_SEND_TIMEOUT = 2.0
"""Seconds ``session/cancel`` (a notification) may take to be handed to the agent."""
RESOURCE_NOT_FOUND = -32002
_REPAIRABLE = frozenset({StopReason.AGENT_CRASHED, StopReason.ERROR})
"""Stop reasons after which the transcript is closed (dangling tool calls, unfinished turns)."""


class LiveSession:
    """A session with a running (or starting) agent, owned by the manager.

    Args:
        record: the session's record in state ``starting``.
        store: the event store.
        driver: the agent driver for this session.
        settings: validated configuration.
        home: ``$AGH_HOME``.
        on_stopped: called once the session is ``stopped`` (the manager forgets it).
        approvals: the host's broker of pending permission requests.
        clock, ids, redact, redact_json: collaborators with real defaults (redaction: none).
    """

    def __init__(
        self,
        record: SessionRecord,
        *,
        store: EventStore,
        driver: AgentDriver,
        settings: Settings,
        home: Path,
        on_stopped: Callable[[LiveSession], None],
        approvals: ApprovalBroker,
        clock: SystemClock | None = None,
        ids: IdGenerator | None = None,
        redact: Callable[[str], str] = str,
        redact_json: Callable[[Any], Any] = lambda value: value,
    ) -> None:
        self._record = record
        self._store = store
        self._driver = driver
        self._settings = settings
        self._home = home
        self._on_stopped = on_stopped
        self._approvals = approvals
        self._clock = clock or SystemClock()
        self._ids = ids or IdGenerator()
        self._redact = redact
        self._redact_json = redact_json
        self._queue: deque[Turn] = deque()
        self._wake = asyncio.Event()
        self._current: Turn | None = None
        self._worker: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Task[SessionRecord] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._loading = False
        self._replayed = 0
        self._cancelled_turn: str | None = None  # the running turn session/cancel was sent for
        self._cancel_failure: StopCause | None = None  # session/cancel itself failed
        self._turn_failure: StopCause | None = None  # what broke the running turn from our side
        self._save_lock = asyncio.Lock()  # one meta.json + sessions-row write at a time
        self._halt = asyncio.Event()  # set when the stop path begins: the heartbeat ends
        self._heartbeat: asyncio.Task[None] | None = None
        self._turn_closed = asyncio.Event()  # the running turn failed and is recorded as such
        self._deferred: list[tuple[Turn, TurnResult]] = []  # failed turns, resolved once stopped
        self._gate = PermissionGate(
            self, approvals=approvals, clock=self._clock, ids=self._ids, redact_json=redact_json
        )
        self.last_activity_at: datetime = self._clock.now()

    # -- read-only views ----------------------------------------------------------------------

    @property
    def record(self) -> SessionRecord:
        """The current record."""
        return self._record

    @property
    def session_id(self) -> str:
        """The AGH session id."""
        return self._record.id

    @property
    def active_turn_id(self) -> str | None:
        """The running turn's id, if a turn runs."""
        return self._current.turn_id if self._current else None

    def queue_snapshot(self) -> list[JSON]:
        """Return the running turn (position 0) and the queued ones, in order."""
        turns = ([self._current] if self._current else []) + list(self._queue)
        return [{"turn_id": t.turn_id, "position": i, "running": t is self._current} for i, t in enumerate(turns)]

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self, spec: LaunchSpec, *, resume: bool = False) -> SessionRecord:
        """Spawn the agent, handshake, open (or load) an ACP session and become ``active``.

        With ``resume``, a stored ACP session id is loaded with ``session/load`` when the agent
        advertises ``loadSession``; an agent that answers -32002 (resource not found), or cannot
        load at all, gets a fresh ``session/new`` under the same AGH id, and a ``system`` event
        says so. Any other load failure stops the session as ``load_session_failure``.

        Raises:
            AgentStartError: after the session has been stopped with a classified failure.
        """
        notes: list[str] = []
        try:
            handshake = await self._driver.start(spec, self)
            caps = dict(handshake.agent_caps)
            acp_session_id = await self._open_acp_session(spec, caps, resume=resume, notes=notes)
        except DriverFailure as failure:
            await self.fail_start(failure.kind, failure.summary)
            summary = self._record.failure.summary if self._record.failure else failure.summary
            verb = "be resumed" if resume else "start"
            raise AgentStartError(
                f"session {self.session_id} could not {verb}: {summary}", session_id=self.session_id
            ) from None
        if self._stop_task is not None:  # stopped (host shutdown) while the agent was starting
            await asyncio.shield(self._stop_task)
            raise AgentStartError(
                f"session {self.session_id} was stopped while it was starting", session_id=self.session_id
            )
        if handshake.agent_info:
            caps["agent_info"] = handshake.agent_info
        self._update(acp_session_id=acp_session_id, acp_caps=caps, last_presence_at=self._clock.now())
        self._move(SessionState.ACTIVE)
        await self._save()
        for note in notes:
            await self._append_durable(
                EventDraft(EventType.SYSTEM, None, {"title": "resume", "text": note}, self._clock.now())
            )
        self._worker = asyncio.create_task(self._run_turns(), name=f"turns[{self.session_id}]")
        self._heartbeat = asyncio.create_task(self._beat(), name=f"heartbeat[{self.session_id}]")
        return self._record

    async def _open_acp_session(self, spec: LaunchSpec, caps: JSON, *, resume: bool, notes: list[str]) -> str:
        stored = self._record.acp_session_id
        if resume and stored and caps.get("loadSession"):
            self._loading = True
            try:
                await self._driver.load_session(stored, spec.cwd)
                notes.append(
                    f"resumed ACP session {stored} with session/load"
                    + (f" ({self._replayed} replayed updates not recorded again)" if self._replayed else "")
                )
                return stored
            except DriverFailure as failure:
                if failure.fields.get("code") != RESOURCE_NOT_FOUND:
                    raise
                self._update(acp_session_id=None)
                notes.append(
                    f"the agent no longer knows ACP session {stored} (-32002 resource not found): "
                    "started a fresh ACP session under the same AGH session id"
                )
            finally:
                self._loading = False
        elif resume:
            notes.append(
                "the agent cannot load sessions (no loadSession capability): started a fresh ACP session "
                "under the same AGH session id"
            )
        return await self._driver.new_session(spec.cwd)

    async def prepare_resume(self) -> None:
        """Move a stopped session back to ``starting`` and clear its stop outcome."""
        self._move(SessionState.STARTING)
        self._update(stop_reason=None, stop_detail=None, failure=None, host_pid=os.getpid())
        await self._save()

    def set_permissions(self, mode: str) -> None:
        """Settle the permission mode once the agent definition is known (only while starting)."""
        if self._record.state is SessionState.STARTING:
            self._update(permissions=mode)

    async def fail_start(self, kind: FailureKind, summary: str) -> SessionRecord:
        """Stop a session whose start failed (unknown agent, bad cwd, spawn or handshake error).

        The session never became active, so it goes ``starting -> stopped`` directly, through the
        same settling as any stop: classified failure, crash bundle, ``session_stopped``, ledger.
        """
        return await self.stop(StopCause(CauseKind.STARTUP, kind, summary))

    async def stop(self, cause: StopCause | None = None) -> SessionRecord:
        """Run the stop path once (first cause wins) and return the final record."""
        self.begin_stop(cause or StopCause(CauseKind.USER))
        assert self._stop_task is not None
        return await asyncio.shield(self._stop_task)

    def begin_stop(self, cause: StopCause) -> None:
        """Start the stop path in the background if it has not started yet."""
        if self._stop_task is None and self._record.state is not SessionState.STOPPED:
            self._stop_task = asyncio.create_task(self._run_stop(cause), name=f"stop[{self.session_id}]")

    async def _run_stop(self, cause: StopCause) -> SessionRecord:
        try:
            return await self._settle(cause)
        finally:
            # A turn whose failure stopped the session ends for its waiters only now, so whoever
            # waited on it sees the session stopped, its failure classified and recorded.
            deferred, self._deferred = self._deferred, []
            for turn, result in deferred:
                turn.resolve(result)

    async def _settle(self, cause: StopCause) -> SessionRecord:
        # A session that never became active has nothing to drain: starting -> stopped at the end.
        if self._record.state is not SessionState.STARTING:
            self._move(SessionState.STOPPING)
        self._halt.set()
        if self._heartbeat is not None:
            await asyncio.wait({self._heartbeat})  # it ends at once; a save under way finishes first
        if self._record.state is SessionState.STOPPING:
            await self._save()
        for turn in list(self._queue):
            await self._finish_turn(turn, "cancelled", error="session stopped before the turn ran")
        self._queue.clear()
        running = self._current
        await self._approvals.cancel_session(self.session_id)
        if running is not None:
            await self._send_cancel(running)
            closed = asyncio.ensure_future(self._turn_closed.wait())
            waiters: set[asyncio.Future[Any]] = {running.future, closed}
            try:
                # Whichever comes first: the turn ends (the agent honoured the cancel), or a
                # failing turn has recorded its end and waits for this stop to resolve it.
                await asyncio.wait(waiters, timeout=STOP_GRACE, return_when=asyncio.FIRST_COMPLETED)
            finally:
                closed.cancel()
        exit_info = await self._driver.close(grace=STOP_GRACE / 2)
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if cause.kind is CauseKind.USER and self._cancel_failure is not None:
            cause = self._cancel_failure  # the stop's own session/cancel failed: a failed stop
        if cause.kind is CauseKind.AGENT_EXIT and not cause.summary:
            cause = StopCause(
                cause.kind, cause.failure_kind, exit_summary(self._record.agent_name, exit_info), cause.detail
            )
        verdict = classify(cause, exit_info, redact=self._redact)
        if running is not None and not running.recorded and not running.future.done():
            if verdict.stop_reason in _REPAIRABLE:
                await self._close_dangling(running.turn_id)  # inside the turn, before its done
            await self._finish_turn(running, "cancelled", error="session stopped during the turn")
        failure = verdict.failure
        if failure is not None:
            bundle = await asyncio.to_thread(self._write_crash_bundle, failure, exit_info, cause.summary)
            failure = dataclasses.replace(failure, crash_bundle_path=str(bundle)) if bundle else failure
        self._update(
            stop_reason=verdict.stop_reason,
            stop_detail=verdict.stop_detail,
            failure=failure,
            last_presence_at=self._clock.now(),
        )
        if verdict.stop_reason in _REPAIRABLE:
            # A backstop: the failing turn closed its own tool calls, but an update that arrived
            # after that (or a turn no one finished) may still be open. Append-only.
            await self._store.flush()
            events = await asyncio.to_thread(self._store.query_events, self.session_id, EventQuery())
            settled = self._record.replace(state=SessionState.STOPPED)  # what the record is about to be
            for draft in plan_transcript_repair(settled, events, self._clock.now()):
                self._append(draft)
        exit_json = {"pid": exit_info.pid, "returncode": exit_info.returncode, "signal": exit_info.signal}
        await self._append_durable(
            EventDraft(
                EventType.SESSION_STOPPED,
                None,
                {
                    "stop_reason": verdict.stop_reason.value,
                    "failure": failure.to_dict() if failure else None,
                    "runtime": {"stop_detail": verdict.stop_detail, "exit": exit_json},
                },
                self._clock.now(),
            ),
        )
        self._move(SessionState.STOPPED)
        await self._save()
        for task in list(self._background):
            task.cancel()
        try:
            await asyncio.to_thread(write_session_ledger, self._home, self._record, self._store)
        except OSError as exc:  # the session is stopped either way; the ledger can be rebuilt
            log.error("writing the ledger of %s failed: %s", self.session_id, exc)
        self._on_stopped(self)
        return self._record

    def _write_crash_bundle(self, failure: Failure, exit_info: ExitInfo, error_text: str) -> Path | None:
        try:
            return write_crash_bundle(
                self._home / "logs" / "crash-bundles",
                record=self._record,
                failure_kind=failure.kind.value,
                summary=failure.summary,
                exit_info=exit_info if exit_info.pid is not None else None,
                stderr_tail=exit_info.stderr_tail,
                error_text=error_text or None,
                redact=self._redact,
                now=self._clock.now(),
            )
        except OSError as exc:
            log.error("writing the crash bundle of %s failed: %s", self.session_id, exc)
            return None

    # -- prompting ----------------------------------------------------------------------------

    async def submit(self, text: str, *, interrupt: bool = False, replay: bool = False) -> Turn:
        """Queue a prompt turn; its ``user_message`` is durable before this returns.

        Raises:
            SessionNotActiveError: when the session is not ``active``.
            QueueFullError: when the FIFO queue is at ``[session.busy_input] queue_cap``.
        """
        self._require_active()
        if not interrupt and len(self._queue) >= self._settings.queue_cap:
            raise QueueFullError(
                f"session {self.session_id} already has {len(self._queue)} queued prompts (the cap): wait for "
                "them, or send with --interrupt",
                session_id=self.session_id,
            )
        turn_id = self._ids.turn_id()
        fields: JSON = {"text": text, "runtime": {"replay_transcript": True}} if replay else {"text": text}
        await self._append_durable(EventDraft(EventType.USER_MESSAGE, turn_id, fields, self._clock.now()))
        self._require_active()
        if interrupt:
            for stale in list(self._queue):
                await self._finish_turn(stale, "cancelled", error="dropped by an interrupting prompt")
            self._queue.clear()
            if self._current is not None and self._record.acp_session_id:
                await self._approvals.cancel_session(self.session_id)
                await self._send_cancel(self._current)
        ahead = len(self._queue) + (1 if self._current is not None else 0)
        turn = Turn(self.session_id, turn_id, text, ahead)
        self._queue.append(turn)
        self._wake.set()
        return turn

    async def _run_turns(self) -> None:
        while self._record.state is SessionState.ACTIVE:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            turn = self._queue.popleft()
            self._current = turn
            self._cancelled_turn = self._turn_failure = None
            self._turn_closed.clear()
            self.last_activity_at = self._clock.now()
            acp_id = self._record.acp_session_id
            assert acp_id is not None
            # The watchdog ends by itself when the turn is done (or after it timed the turn out).
            self._own(supervise_turn(self, turn.turn_id, turn.future, self._settings))
            try:
                outcome = await self._driver.prompt(acp_id, turn.text)
                if self._turn_failure is not None:
                    await self._fail_turn(turn, self._turn_failure)
                    return
                usage = storable_usage(outcome.usage)
                if usage:
                    await self._store.merge_usage(self.session_id, turn.turn_id, usage)
                await self._finish_turn(turn, outcome.stop_reason, usage=outcome.usage)
            except DriverFailure as failure:
                cause = self._turn_failure or turn_failure_cause(
                    failure.kind, failure.summary, cancel_sent=self._cancelled_turn == turn.turn_id
                )
                await self._fail_turn(turn, cause)
                return
            except Exception as exc:  # nothing classified it: a bug, or a collaborator's broken contract
                log.error("turn %s of session %s failed unexpectedly", turn.turn_id, self.session_id, exc_info=True)
                await self._fail_turn(turn, unexpected_failure_cause(f"during turn {turn.turn_id}", exc))
                return
            self._current = None

    async def _fail_turn(self, turn: Turn, cause: StopCause) -> None:
        """End a turn that failed, then stop the session with ``cause``.

        In sequence order the turn gets: an interrupted ``tool_result`` for each of its tool calls
        still open, its ``error`` (with the failure), then its ``done``; ``session_stopped``
        follows from the stop path. Append-only, and what transcript repair would have added, so a
        later repair plans nothing.
        """
        if cause.failure_kind is FailureKind.CANCELLATION and self._cancel_failure is None:
            self._cancel_failure = cause
        kind = cause.failure_kind or FailureKind.UNKNOWN_FAILURE
        summary = self._redact(cause.summary)
        try:
            await self._close_dangling(turn.turn_id)
            self._append(
                EventDraft(
                    EventType.ERROR,
                    turn.turn_id,
                    {"error": summary, "failure": {"kind": kind.value, "summary": summary}},
                    self._clock.now(),
                ),
            )
            await self._finish_turn(turn, "error", error=summary, resolve=False)
        except Exception:  # the store failed too: the stop path still settles the session
            log.error("recording the failure of turn %s of %s failed", turn.turn_id, self.session_id, exc_info=True)
        finally:
            self._current = None
            self._deferred.append((turn, TurnResult(self.session_id, turn.turn_id, "error", summary)))
            self._turn_closed.set()
            self.begin_stop(cause)
            if self._stop_task is None or self._stop_task.done():  # already stopped: nothing to wait for
                for deferred, result in self._deferred:
                    deferred.resolve(result)
                self._deferred.clear()

    async def _close_dangling(self, turn_id: str) -> None:
        """Append an interrupted ``tool_result`` for every tool call of ``turn_id`` still open."""
        await self._store.flush()
        events = await asyncio.to_thread(self._store.query_events, self.session_id, EventQuery(turn_id=turn_id))
        for draft in plan_interrupted_tool_results(events, turn_id, self._clock.now()):
            self._append(draft)

    async def _finish_turn(
        self,
        turn: Turn,
        stop_reason: str,
        *,
        error: str | None = None,
        usage: JSON | None = None,
        resolve: bool = True,
    ) -> None:
        """Record the turn's durable ``done`` event (once), then resolve whoever waits on it."""
        if turn.future.done() or turn.recorded:
            return
        fields: JSON = {"stop_reason": stop_reason, "usage": usage}
        if error:
            fields["error"] = error
        await self._append_durable(EventDraft(EventType.DONE, turn.turn_id, fields, self._clock.now()))
        turn.recorded = True
        if turn is self._current:
            self._gate.end_turn()
        if resolve:
            turn.resolve(TurnResult(self.session_id, turn.turn_id, stop_reason, error, usage))

    async def cancel_turn(self) -> bool:
        """Cooperatively cancel the running turn (``session/cancel``); True if one was running."""
        if self._current is None or not self._record.acp_session_id:
            return False
        await self._approvals.cancel_session(self.session_id)
        await self._send_cancel(self._current)
        return True

    async def _send_cancel(self, turn: Turn) -> None:
        """Send ``session/cancel`` for the running ``turn``; a cancel that cannot be sent (the
        driver fails, or hangs on a dead channel) stops the session as ``cancellation``."""
        acp_id = self._record.acp_session_id
        if acp_id is None:
            return
        self._cancelled_turn = turn.turn_id
        try:
            await asyncio.wait_for(self._driver.cancel(acp_id), timeout=CANCEL_SEND_TIMEOUT)
            return
        except asyncio.TimeoutError:
            summary = (
                f"session/cancel could not be sent to agent {self._record.agent_name!r} "
                f"within {CANCEL_SEND_TIMEOUT:g}s"
            )
        except DriverFailure as failure:
            summary = f"session/cancel failed: {failure.summary}"
        cause = StopCause(CauseKind.FAILURE, FailureKind.CANCELLATION, summary)
        if self._cancel_failure is None:
            self._cancel_failure = cause
        self.begin_stop(cause)

    # -- DriverListener -----------------------------------------------------------------------

    def on_update(self, event_type: EventType, fields: JSON) -> None:
        """Record one mapped ``session/update`` under the running turn."""
        if self._loading:
            # session/load replays the conversation; those events are already stored.
            self._replayed += 1
            return
        if self._record.state is SessionState.STOPPED:
            log.debug("dropping update for stopped session %s", self.session_id)
            return
        self.last_activity_at = now = self._clock.now()
        turn_id = self._current.turn_id if self._current else None
        self._append(EventDraft(event_type, turn_id, fields, now))
        if event_type is EventType.USAGE and turn_id is not None:
            usage = storable_usage(fields.get("usage"))
            if usage:
                self._own(self._store.merge_usage(self.session_id, turn_id, usage))

    def on_protocol_error(self, summary: str) -> None:
        """Stop an active session whose agent broke the protocol."""
        if self._record.state is SessionState.ACTIVE:
            kind = FailureKind.TRANSPORT_FAILURE if "closed its stdout" in summary else FailureKind.PROTOCOL_FAILURE
            if self._current is None:
                self.begin_stop(StopCause(CauseKind.FAILURE, kind, summary))

    def on_exit(self, info: ExitInfo) -> None:
        """Stop an active, idle session whose agent process ended on its own."""
        if self._record.state is SessionState.ACTIVE and self._current is None:
            self.begin_stop(StopCause(CauseKind.AGENT_EXIT, FailureKind.PROCESS_EXIT, ""))

    async def on_permission_request(self, tool_call: JSON, options: list[JSON]) -> str | None:
        """Answer ``session/request_permission`` (see ``PermissionGate``).

        A request that cannot be answered -- it offers no option to choose, or deciding it
        failed -- breaks the agent's turn: it gets the ``cancelled`` outcome (the only answer
        that picks no option), the turn ends in error and the session stops as
        ``permission_failure``.
        """
        if not options:
            self._permission_failure(tool_call, options, "it offers no option to choose from")
            return None
        try:
            return await self._gate.on_permission_request(tool_call, options)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("answering a permission request of %s failed", self.session_id, exc_info=True)
            self._permission_failure(tool_call, options, f"deciding it failed ({type(exc).__name__}: {exc})")
            return None

    def _permission_failure(self, tool_call: JSON, options: list[JSON], reason: str) -> None:
        title = tool_call.get("title")
        summary = f"the permission request {title!r} of agent {self._record.agent_name!r} cannot be answered: {reason}"
        self._append(
            EventDraft(
                EventType.PERMISSION,
                self.active_turn_id,
                {
                    "tool_call_id": tool_call.get("toolCallId"),
                    "title": title,
                    "action": tool_call.get("kind"),
                    "decision": "cancelled",
                    "error": summary,
                    "raw": {"toolCall": tool_call, "options": options},
                    "runtime": {"source": "permission_failure"},
                },
                self._clock.now(),
            )
        )
        cause = StopCause(CauseKind.FAILURE, FailureKind.PERMISSION_FAILURE, summary)
        if self._current is not None and self._turn_failure is None:
            self._turn_failure = cause  # the turn runner records it as the turn's error
        self.begin_stop(cause)

    async def authorize(self, operation: str, path: str | None, command: list[str] | None = None) -> Path:
        """Allow a client method the agent calls on us, or raise (see ``PermissionGate``)."""
        return await self._gate.authorize(operation, path, command)

    # -- what the permission gate and supervisor use ------------------------------------------

    def append_event(self, draft: EventDraft) -> None:
        """Buffer an event of this session (scrubbed of secrets) for the next group commit."""
        self._append(draft)

    async def append_event_durable(self, draft: EventDraft) -> None:
        """Append an event and return once it is committed."""
        await self._append_durable(draft)

    def has_pending_approvals(self) -> bool:
        """True while a permission request of this session waits for the user."""
        return bool(self._approvals.pending(self.session_id))

    def now(self) -> datetime:
        """The session's clock."""
        return self._clock.now()

    def touch(self) -> None:
        """Record activity now (prompt activity keeps a session healthy)."""
        self.last_activity_at = self._clock.now()

    # -- internals ----------------------------------------------------------------------------

    def _scrub(self, draft: EventDraft) -> EventDraft:
        # Secrets never reach the store: every field (agent text and raw payloads included).
        fields = self._redact_json(draft.fields)
        return draft if fields is draft.fields else EventDraft(draft.type, draft.turn_id, fields, draft.timestamp)

    def _append(self, draft: EventDraft) -> None:
        self._store.append(self._record, self._scrub(draft))

    async def _append_durable(self, draft: EventDraft) -> None:
        await self._store.append_durable(self._record, self._scrub(draft))

    def _require_active(self) -> None:
        if self._record.state is not SessionState.ACTIVE:
            raise SessionNotActiveError(
                f"session {self.session_id} is {self._record.state.value}, not active: "
                f"resume it first (%agh session resume {self.session_id})",
                session_id=self.session_id,
                state=self._record.state.value,
            )

    def _move(self, target: SessionState) -> None:
        state = transition(self.session_id, self._record.state, target)
        self._update(state=state)

    def _update(self, **changes: Any) -> None:
        self._record = self._record.replace(updated_at=self._clock.now(), **changes)

    async def _save(self) -> None:
        # One at a time: two meta.json writes racing could leave the older record on disk.
        async with self._save_lock:
            record = self._record
            await self._store.save_session(record)
            await asyncio.to_thread(write_meta, self._home, record)

    async def _beat(self) -> None:
        """The heartbeat: refresh ``last_presence_at`` in the metadata (never an event) while live."""
        interval = heartbeat_interval(self._settings.stale_after)
        while not self._halt.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._halt.wait(), timeout=interval)
            if self._halt.is_set():
                return
            # Presence only: updated_at stays the time the session last changed.
            self._record = self._record.replace(last_presence_at=self._clock.now())
            try:
                await self._save()
            except Exception as exc:  # a missed heartbeat is not worth stopping the agent for
                log.warning("the heartbeat of session %s could not be saved: %s", self.session_id, exc)

    def _own(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
