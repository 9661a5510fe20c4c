"""One live session: its record and lifecycle, and what its agent reports.

Owns: ``LiveSession`` — the driver's listener and the only code that changes a live record's
state: start (spawn, handshake, then ``core.opening.SessionOpener`` opens the ACP session), the
heartbeat, the agent's state (modes, models, options, commands: ``core.acp_state``) and its
changes, the agent log, and the listener callbacks. Its turns run in ``core.turns.TurnRunner``,
its stop path in ``core.stopping.StopPath`` and its permission decisions in
``core.gate.PermissionGate``; ``Turn`` and ``TurnResult`` live in ``core.turn`` and are
re-exported here. Runs entirely on the runtime's event loop; blocking work
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
from agh_nb.core import acp_state
from agh_nb.core.agent_log import AgentLog, log_dir
from agh_nb.core.approvals import ApprovalBroker
from agh_nb.core.auth import Authenticator
from agh_nb.core.classify import CauseKind, StopCause
from agh_nb.core.clock import IdGenerator, SystemClock
from agh_nb.core.elicitations import ElicitationBroker, elicit
from agh_nb.core.gate import PermissionGate
from agh_nb.core.health import heartbeat_interval, heartbeat_phase
from agh_nb.core.opening import Note, SessionOpener, StartOptions, apply_change
from agh_nb.core.ports import AgentDriver, DriverFailure, EventStore, ExitInfo, LaunchSpec
from agh_nb.core.record import SessionRecord
from agh_nb.core.session_dir import session_dir, write_meta
from agh_nb.core.redaction import StreamView
from agh_nb.core.repair import TALLIED_TYPES
from agh_nb.core.state import FailureKind, SessionState, transition
from agh_nb.core.stream_redaction import StreamRedaction
from agh_nb.core.stopping import STOP_GRACE as STOP_GRACE, StopBudget, StopPath
from agh_nb.core.tasks import TaskOwner
from agh_nb.core.turn import Turn as Turn, TurnResult as TurnResult, storable_usage
from agh_nb.core.turns import TurnRunner
from agh_nb.errors import AgentStartError, CapabilityError, SessionNotActiveError
from agh_nb.events import JSON, EventDraft, EventType

log = logging.getLogger(__name__)

ABANDON_WAIT = 1.0
"""Seconds each step of giving up on a stop (host shutdown, out of time) may take."""

STATE_EVENTS = frozenset({EventType.MODE_CHANGED, EventType.CONFIG_CHANGED, EventType.COMMANDS_AVAILABLE})
"""Updates about the session's state, not its conversation: kept (and recorded) even while
``session/load`` replays the conversation."""


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
        elicitations: the host's broker of pending elicitations (a private one by default).
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
        elicitations: ElicitationBroker | None = None,
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
        self._elicitations = elicitations or ElicitationBroker(timeout=settings.approval_timeout)
        self._auth: Authenticator | None = None
        self._changing = asyncio.Lock()  # one set of mode/model/options at a time
        self._log = AgentLog(log_dir(session_dir(home, record.id)), redact=redact, spawn=self._tasks.spawn)
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

    async def start(
        self, spec: LaunchSpec, *, resume: bool = False, options: StartOptions | None = None
    ) -> SessionRecord:
        """Spawn the agent, handshake, open (or reopen, or fork) an ACP session, become ``active``.

        What ``initialize`` said (capabilities, ``authMethods``, ``agent_info``) is kept in the
        record at once, so a later failure still shows it. The ACP session is opened by
        ``SessionOpener``: with ``resume``, ``session/resume`` or ``session/load`` of the stored
        ACP session (a fresh ``session/new`` when the agent no longer knows it, with a ``system``
        event saying so), and the mode and model the session had; an "authentication required"
        answer is retried once after ``authenticate`` when a method fits.

        Raises:
            AgentStartError: after the session has been stopped with a classified failure.
        """
        opts = options or StartOptions()
        verb = "be resumed" if resume else "start"
        self._log.header(f"agent {spec.agent_name} starting: {spec.argv[0]}", self._clock.now())
        try:
            handshake = await self._driver.start(spec, self)
            caps = dict(handshake.agent_caps) | {"authMethods": handshake.auth_methods}
            if handshake.agent_info:
                caps["agent_info"] = handshake.agent_info
            self._update(acp_caps=caps, sandboxed=handshake.sandboxed)
            self._auth = Authenticator(
                self._driver,
                agent_name=spec.agent_name,
                argv=spec.argv,
                methods=handshake.auth_methods,
                env_names=[k for k, v in spec.env.items() if v],
                configured=spec.auth_method,
            )
            opener = SessionOpener(
                self._driver, spec=spec, caps=caps, auth=self._auth, set_loading=self._set_loading, replayed=lambda: self._replayed
            )
            opened = await opener.open(
                stored=self._record.acp_session_id, resume=resume, previous=self._record.acp_state, options=opts
            )
        except DriverFailure as failure:
            await self.fail_start(failure.kind, failure.summary, code=failure.code)
            summary = self._record.failure.summary if self._record.failure else failure.summary
            raise AgentStartError(
                f"session {self.session_id} could not {verb}: {summary}", session_id=self.session_id
            ) from None
        except CapabilityError as refused:
            await self.fail_start(FailureKind.STARTUP_FAILURE, str(refused))
            raise AgentStartError(f"session {self.session_id} could not {verb}: {refused}", session_id=self.session_id) from None
        if self._stop.started:  # stopped (host shutdown) while the agent was starting
            await self._stop.wait()
            raise AgentStartError(
                f"session {self.session_id} was stopped while it was starting", session_id=self.session_id
            )
        state = dict(opened.state)
        if "commands" in self._record.acp_state:
            # Sent while the session opened (gemini announces them during session/load).
            state.setdefault("commands", self._record.acp_state["commands"])
        self._update(
            acp_session_id=opened.acp_session_id,
            acp_state=self._redact_json(state),
            last_presence_at=self._clock.now(),
        )
        self.move(SessionState.ACTIVE)
        await self._save()
        if self._auth.used:
            await self.note(Note("auth", f"authenticated with {self._auth.used}", {"method": self._auth.used}))
        for note in opened.notes:
            await self.note(note)
        self._turns.start()
        self._heartbeat = self._tasks.spawn(self._beat(), "heartbeat")
        return self._record

    async def note(self, note: Note) -> None:
        """Record a ``system`` event of the session (durable when this returns)."""
        fields: JSON = {"title": note.title, "text": note.text}
        if note.runtime:
            fields["runtime"] = note.runtime
        await self._append_durable(EventDraft(EventType.SYSTEM, None, fields, self._clock.now()))

    def _set_loading(self, loading: bool) -> None:
        self._loading = loading

    async def prepare_resume(self) -> None:
        """Move a stopped session back to ``starting`` and clear its stop outcome."""
        self.move(SessionState.STARTING)
        self._update(stop_reason=None, stop_detail=None, failure=None, host_pid=os.getpid(), sandboxed=False)
        await self._save()

    def set_permissions(self, mode: str) -> None:
        """Settle the permission mode once the agent definition is known (only while starting)."""
        if self._record.state is SessionState.STARTING:
            self._update(permissions=mode)

    async def fail_start(self, kind: FailureKind, summary: str, *, code: int | None = None) -> SessionRecord:
        """Stop a session whose start failed (unknown agent, bad cwd, spawn or handshake error).

        The session never became active, so it goes ``starting -> stopped`` directly, through the
        same settling as any stop: classified failure, crash bundle, ``session_stopped``, ledger.
        """
        return await self.stop(StopCause(CauseKind.STARTUP, kind, summary, code=code))

    async def stop(self, cause: StopCause | None = None) -> SessionRecord:
        """Run the stop path once (first cause wins) and return the final record."""
        self.begin_stop(cause or StopCause(CauseKind.USER))
        return await self._stop.wait()

    def begin_stop(self, cause: StopCause, budget: StopBudget | None = None) -> None:
        """Start the stop path in the background if it has not started yet (``budget``: how long
        its steps may wait, see ``StopBudget``)."""
        self._stop.begin(cause, budget)

    @property
    def stop_task(self) -> asyncio.Task[SessionRecord] | None:
        """The stop path's task, once begun."""
        return self._stop.task

    @property
    def ledger_deferred(self) -> bool:
        """True when a host shutdown's stop left this session's ledger to ``stop_all``."""
        return self._stop.ledger_deferred

    def quiesce(self) -> None:
        """Host shutdown: stop recording what the agent streams (see ``AgentDriver.quiesce``)."""
        self._driver.quiesce()

    async def abandon_stop(self, why: str) -> SessionRecord:
        """Host shutdown, out of time: end a stop path that did not finish, kill the agent and
        leave the session for repair at the next start, with a classified failure.

        A session already recorded ``stopped`` stays so (only its ledger, or the rest of its
        clean-up, was cut short).
        """
        task = self._stop.task
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + ABANDON_WAIT
        while task is not None and not task.done() and loop.time() < give_up_at:
            # Repeated: Python 3.11's wait_for drops a cancellation that lands as its inner call
            # completes, and the stop path is made of those.
            task.cancel()
            await asyncio.wait({task}, timeout=0.05)
        if self._record.state is not SessionState.STOPPED:
            if self._record.state is SessionState.ACTIVE:  # cancelled before its first step
                self.move(SessionState.STOPPING)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._driver.close(grace=ABANDON_WAIT / 4), timeout=ABANDON_WAIT)
            self._update(failure=self._stop.unfinished_failure(why), last_presence_at=self._clock.now())
            try:
                await asyncio.wait_for(self._save(), timeout=ABANDON_WAIT)
            except Exception as exc:  # the stale record is repaired at the next start anyway
                log.warning("recording the unfinished stop of %s failed: %r", self.session_id, exc)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.end_background(), timeout=ABANDON_WAIT)
        self._on_stopped(self)
        return self._record

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

    # -- the agent's settings -----------------------------------------------------------------

    @property
    def authenticator(self) -> Authenticator:
        """Authenticates the agent when it asks (set once the agent answered ``initialize``)."""
        assert self._auth is not None, "the agent has not started"
        return self._auth

    async def change(
        self, *, mode: str | None = None, model: str | None = None, options: dict[str, str] | None = None
    ) -> SessionRecord:
        """Set the agent's mode, model and config options (``session set``).

        Raises:
            SessionNotActiveError: the session is not ``active``.
            CapabilityError: a value the agent does not offer (the line lists what it offers).
            AghError: the agent refused the change (its error, one line).
        """
        self.require_active()
        async with self._changing:
            acp_id = self._record.acp_session_id
            assert acp_id is not None
            changes = acp_state.plan_changes(
                self._record.acp_state, agent_name=self._record.agent_name, mode=mode, model=model, options=options
            )
            for change in changes:
                try:
                    state = await apply_change(self._driver, acp_id, self._record.acp_state, change)
                except DriverFailure as refused:
                    raise CapabilityError(f"agent {self._record.agent_name!r} refused {change.label}: {refused.summary}") from None
                self._update(acp_state=self._redact_json(state))
                await self.note(Note("set", f"set {change.label}", {"kind": change.kind, "target": change.target}))
            await self._save()
        return self._record

    async def authenticate(self, method: str) -> SessionRecord:
        """Run ``authenticate`` by hand on an active session (``session auth``).

        Raises:
            CapabilityError: the agent offers no such method.
            AghError: the agent refused it (an ``auth_failure`` summary, one line).
        """
        self.require_active()
        try:
            await self.authenticator.authenticate(method)
        except DriverFailure as refused:
            raise CapabilityError(refused.summary) from None
        await self.note(Note("auth", f"authenticated with {method}", {"method": method}))
        return self._record

    @property
    def last_stderr_line(self) -> str | None:
        """The agent's last stderr line (redacted), for a silence warning."""
        return self._log.last_line

    # -- DriverListener -----------------------------------------------------------------------

    def on_update(self, event_type: EventType, fields: JSON) -> None:
        """Record one mapped ``session/update`` under the running turn; a mode, config or
        commands update also changes the session's ``acp_state`` (saved in the background)."""
        if event_type in STATE_EVENTS and self._record.state is not SessionState.STOPPED:
            raw = fields.get("raw")
            state = acp_state.apply_update(self._record.acp_state, event_type, raw if isinstance(raw, dict) else {})
            if state is not None:
                self._update(acp_state=self._redact_json(state))
                if self._record.state is SessionState.ACTIVE:
                    self._tasks.spawn(self._save(), "save-acp-state")
            if self._loading:  # state, not conversation: recorded even while a load replays
                self._append(EventDraft(event_type, None, fields, self._clock.now()))
                return
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

    def on_stderr(self, data: bytes) -> None:
        """Keep what the agent wrote to stderr in its log (redacted, bounded)."""
        self._log.feed(data)

    async def on_elicitation(self, message: str, schema: JSON, scope: JSON) -> JSON:
        """Ask the user to fill the agent's form (see ``core.elicitations.elicit``)."""
        self.touch()
        return await elicit(self, self._elicitations, message, schema, scope)

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
        """True while a permission request or a form of this session waits for the user."""
        return bool(self._approvals.pending(self.session_id) or self._elicitations.pending(self.session_id))

    def now(self) -> datetime:
        """The session's clock."""
        return self._clock.now()

    def touch(self) -> None:
        """Record activity now (prompt activity keeps a session healthy)."""
        self.last_activity_at = self._clock.now()

    def redact(self, text: str) -> str:
        """Scrub the secrets this host knows from ``text``."""
        return self._redact(text)

    def redact_json(self, value: Any) -> Any:
        """Scrub the secrets this host knows from a JSON-like value."""
        return self._redact_json(value)

    def new_request_id(self) -> str:
        """A fresh request id (``req_...``)."""
        return self._ids.request_id()
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
        """The stop began: end the heartbeat (a save under way finishes first) and cancel the
        forms the agent is still waiting on."""
        self._halt.set()
        await self._elicitations.cancel_session(self.session_id)
        if self._heartbeat is not None:
            await asyncio.wait({self._heartbeat})

    async def end_background(self) -> None:
        """Write the rest of the agent log, then cancel and await every task this session still
        owns (supervisors, usage merges)."""
        await self._log.aclose()
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
        draft = self._scrub(draft)
        if draft.type in TALLIED_TYPES:
            self._turns.observe(draft)
        self._store.queue(self._record, draft)

    async def _append_durable(self, draft: EventDraft) -> None:
        draft = self._scrub(draft)
        if draft.type in TALLIED_TYPES:
            self._turns.observe(draft)
        await self._store.append_durable(self._record, draft)

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
        wait = heartbeat_phase(self.session_id, interval)  # sessions started together beat apart
        while not self._halt.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._halt.wait(), timeout=wait)
            wait = interval
            if self._halt.is_set():
                return
            # Presence only: updated_at stays the time the session last changed.
            self._record = self._record.replace(last_presence_at=self._clock.now())
            try:
                await self._save()
            except Exception as exc:  # a missed heartbeat is not worth stopping the agent for
                log.warning("the heartbeat of session %s could not be saved: %s", self.session_id, exc)
