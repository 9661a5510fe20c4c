"""One live session: its record and lifecycle, and what its agent reports.

Owns: ``LiveSession`` — the driver's listener and the only code that changes a live record's
state: start (spawn, handshake, open or load the ACP session), the heartbeat, and the listener
callbacks. Its turns run in ``core.turns.TurnRunner``, its stop path in ``core.stopping.StopPath``
and its permission decisions in ``core.gate.PermissionGate``; ``Turn`` and ``TurnResult`` live in
``core.turn`` and are re-exported here. Runs entirely on the runtime's event loop; blocking work
(DuckDB, files) goes through the store's writer thread or ``asyncio.to_thread``. Imports no
third-party library.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from agh_nb.config import Settings
from agh_nb.core.approvals import ApprovalBroker
from agh_nb.core.classify import CauseKind, StopCause
from agh_nb.core.clock import IdGenerator, SystemClock
from agh_nb.core.gate import PermissionGate
from agh_nb.core.health import heartbeat_interval
from agh_nb.core.ports import AgentDriver, DriverFailure, EventStore, ExitInfo, LaunchSpec
from agh_nb.core.record import SessionRecord
from agh_nb.core.session_dir import write_meta
from agh_nb.core.redaction import StreamView
from agh_nb.core.state import FailureKind, SessionState, transition
from agh_nb.core.stream_redaction import StreamRedaction
from agh_nb.core.stopping import STOP_GRACE as STOP_GRACE, StopPath
from agh_nb.core.tasks import TaskOwner
from agh_nb.core.turn import Turn as Turn, TurnResult as TurnResult, storable_usage
from agh_nb.core.turns import TurnRunner
from agh_nb.errors import AgentStartError, SessionNotActiveError
from agh_nb.events import JSON, EventDraft, EventType

log = logging.getLogger(__name__)

RESOURCE_NOT_FOUND = -32002


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
        stream_view: the secrets as a stream sees them (``Redactor.stream_view``), so a secret
            split across chunks is never stored whole (``core.stream_redaction``).
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
        stream_view: Callable[[], StreamView | None] = lambda: None,
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
        self._streams = StreamRedaction(stream_view)
        self._loading = False
        self._replayed = 0
        self._save_lock = asyncio.Lock()  # one meta.json + sessions-row write at a time
        self._halt = asyncio.Event()  # set when the stop path begins: the heartbeat ends
        self._heartbeat: asyncio.Task[None] | None = None
        self._tasks = TaskOwner(record.id, logger=log)
        self._gate = PermissionGate(
            self, approvals=approvals, clock=self._clock, ids=self._ids, redact_json=redact_json
        )
        self._turns = TurnRunner(
            self,
            store=store,
            driver=driver,
            approvals=approvals,
            settings=settings,
            tasks=self._tasks,
            clock=self._clock,
            ids=self._ids,
        )
        self._stop = StopPath(
            self, turns=self._turns, store=store, driver=driver, approvals=approvals, home=home, redact=redact
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
        running = self._turns.running
        return running.turn_id if running else None

    def queue_snapshot(self) -> list[JSON]:
        """Return the running turn (position 0) and the queued ones, in order."""
        return self._turns.snapshot()

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
        if self._stop.started:  # stopped (host shutdown) while the agent was starting
            await self._stop.wait()
            raise AgentStartError(
                f"session {self.session_id} was stopped while it was starting", session_id=self.session_id
            )
        if handshake.agent_info:
            caps["agent_info"] = handshake.agent_info
        self._update(
            acp_session_id=acp_session_id, acp_caps=caps, last_presence_at=self._clock.now(), sandboxed=handshake.sandboxed
        )
        self.move(SessionState.ACTIVE)
        await self._save()
        for note in notes:
            await self._append_durable(
                EventDraft(EventType.SYSTEM, None, {"title": "resume", "text": note}, self._clock.now())
            )
        self._turns.start()
        self._heartbeat = self._tasks.spawn(self._beat(), "heartbeat")
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
        self.move(SessionState.STARTING)
        self._update(stop_reason=None, stop_detail=None, failure=None, host_pid=os.getpid(), sandboxed=False)
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
        return await self._stop.wait()

    def begin_stop(self, cause: StopCause) -> None:
        """Start the stop path in the background if it has not started yet."""
        self._stop.begin(cause)

    def stop_started(self) -> bool:
        """True while the stop path runs (a failed turn is then resolved by it)."""
        return self._stop.running

    # -- prompting ----------------------------------------------------------------------------

    async def submit(self, text: str, *, interrupt: bool = False, replay: bool = False) -> Turn:
        """Queue a prompt turn (see ``TurnRunner.submit``)."""
        return await self._turns.submit(text, interrupt=interrupt, replay=replay)

    async def cancel_turn(self) -> bool:
        """Cooperatively cancel the running turn (``session/cancel``); True if one was running."""
        return await self._turns.cancel_running()

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
        turn_id = self._turns.update_turn_id
        for stored_type, stored in self._streams.feed(turn_id, event_type, fields):
            self._append(EventDraft(stored_type, turn_id, stored, now))
        if event_type is EventType.USAGE and turn_id is not None:
            usage = storable_usage(fields.get("usage"))
            if usage:
                self._tasks.spawn(self._store.merge_usage(self.session_id, turn_id, usage), "merge-usage")

    def on_protocol_error(self, kind: FailureKind, summary: str) -> None:
        """Stop an active, idle session whose agent broke the protocol or its channel (a running
        turn fails on its own, through the driver)."""
        if self._record.state is SessionState.ACTIVE and self._turns.running is None:
            self.begin_stop(StopCause(CauseKind.FAILURE, kind, summary))

    def on_exit(self, info: ExitInfo) -> None:
        """Stop an active, idle session whose agent process ended on its own."""
        if self._record.state is SessionState.ACTIVE and self._turns.running is None:
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
        self._turns.break_running(cause)  # the turn runner records it as the turn's error
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

    def redact(self, text: str) -> str:
        """Scrub the secrets this host knows from ``text``."""
        return self._redact(text)

    def flush_streams(self, turn_id: str | None) -> None:
        """Store the text held back from the streams of ``turn_id`` (its end has come)."""
        now = self._clock.now()
        for held_turn, event_type, fields in self._streams.flush(turn_id):
            self._append(EventDraft(event_type, held_turn, fields, now))

    def flush_all_streams(self) -> None:
        """Store every text still held back (the session is stopping)."""
        now = self._clock.now()
        for held_turn, event_type, fields in self._streams.flush_all():
            self._append(EventDraft(event_type, held_turn, fields, now))

    def end_turn_grants(self) -> None:
        """The running turn ended: its once-approvals end with it."""
        self._gate.end_turn()

    def require_active(self) -> None:
        """Raise ``SessionNotActiveError`` unless the session is ``active``."""
        if self._record.state is not SessionState.ACTIVE:
            raise SessionNotActiveError(
                f"session {self.session_id} is {self._record.state.value}, not active: "
                f"resume it first (%agh session resume {self.session_id})",
                session_id=self.session_id,
                state=self._record.state.value,
            )

    # -- what the stop path uses --------------------------------------------------------------

    def move(self, target: SessionState) -> None:
        """Change the lifecycle state (the transition table refuses an illegal move)."""
        state = transition(self.session_id, self._record.state, target)
        self._update(state=state)

    def update(self, **changes: Any) -> None:
        """Change fields of the record (``updated_at`` becomes now)."""
        self._update(**changes)

    async def save(self) -> None:
        """Write the record to the store and meta.json."""
        await self._save()

    async def end_heartbeat(self) -> None:
        """Stop the heartbeat (a save under way finishes first)."""
        self._halt.set()
        if self._heartbeat is not None:
            await asyncio.wait({self._heartbeat})

    async def end_background(self) -> None:
        """Cancel and await every task this session still owns (supervisors, usage merges)."""
        await self._tasks.aclose()

    def stopped(self) -> None:
        """The stop path finished: the manager forgets this session."""
        self._on_stopped(self)

    # -- internals ----------------------------------------------------------------------------

    def _scrub(self, draft: EventDraft) -> EventDraft:
        # Secrets never reach the store: every field (agent text and raw payloads included).
        fields = self._redact_json(draft.fields)
        return draft if fields is draft.fields else EventDraft(draft.type, draft.turn_id, fields, draft.timestamp)

    def _append(self, draft: EventDraft) -> None:
        self._store.append(self._record, self._scrub(draft))

    async def _append_durable(self, draft: EventDraft) -> None:
        await self._store.append_durable(self._record, self._scrub(draft))

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
