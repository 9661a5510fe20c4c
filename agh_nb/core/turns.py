"""The prompt turns of one live session (SPEC 2): a FIFO queue, one turn at a time.

Owns: ``TurnRunner`` — queueing prompts (``user_message`` durable first), running each turn
through the driver beside its supervisor, recording how each ends (``done``; a failing turn's
interrupted tool results and ``error`` first), cancelling the running turn cooperatively, and
what the stop path needs from the turns (drop the queue, wait for the running turn, settle it).
Runs on the runtime loop. Imports no third-party library.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable
from typing import Any, Protocol, TypeVar

from agh_nb.config import Settings
from agh_nb.core.approvals import ApprovalBroker
from agh_nb.core.auth import Authenticator
from agh_nb.core.classify import CauseKind, StopCause, turn_failure_cause, unexpected_failure_cause
from agh_nb.core.clock import IdGenerator, SystemClock
from agh_nb.core.ports import AgentDriver, DriverFailure, EventStore, TurnOutcome
from agh_nb.core.record import SessionRecord
from agh_nb.core.repair import TurnTally, interrupted_tool_results, turn_end_tool_results
from agh_nb.core.state import FailureKind, SessionState
from agh_nb.core.supervisor import SupervisedSession, supervise_turn
from agh_nb.core.tasks import TaskOwner
from agh_nb.core.turn import Turn, TurnResult, storable_usage
from agh_nb.errors import QueueFullError
from agh_nb.events import JSON, EventDraft, EventType

log = logging.getLogger(__name__)

T = TypeVar("T")

CANCEL_SEND_TIMEOUT = 2.0
"""Seconds ``session/cancel`` (a notification) may take to be handed to the agent."""


class TurnHost(SupervisedSession, Protocol):
    """What the turn runner needs from its session (and each turn's supervisor)."""

    @property
    def session_id(self) -> str: ...

    @property
    def record(self) -> SessionRecord: ...

    def require_active(self) -> None: ...

    async def append_event_durable(self, draft: EventDraft) -> None: ...

    def stop_started(self) -> bool: ...

    def end_turn_grants(self) -> None: ...

    def redact(self, text: str) -> str: ...

    @property
    def authenticator(self) -> Authenticator: ...

    def flush_streams(self, turn_id: str | None) -> None: ...


class TurnRunner:
    """Runs one session's prompt turns in order.

    Args:
        host: the session (record, event appends, the stop path).
        store: the event store (usage merges, reads of a turn's events).
        driver: the agent driver (``prompt``, ``cancel``).
        approvals: the host's broker (pending requests are cancelled with their turn).
        settings: queue cap and supervision limits.
        tasks: the session's task owner (the worker and each turn's supervisor).
        clock, ids: collaborators.
    """

    def __init__(
        self,
        host: TurnHost,
        *,
        store: EventStore,
        driver: AgentDriver,
        approvals: ApprovalBroker,
        settings: Settings,
        tasks: TaskOwner,
        clock: SystemClock,
        ids: IdGenerator,
    ) -> None:
        self._host = host
        self._store = store
        self._driver = driver
        self._approvals = approvals
        self._settings = settings
        self._tasks = tasks
        self._clock = clock
        self._ids = ids
        self._queue: deque[Turn] = deque()
        self._wake = asyncio.Event()
        self._current: Turn | None = None
        self._worker: asyncio.Task[None] | None = None
        self._cancelled_turn: str | None = None  # the running turn session/cancel was sent for
        self._cancel_failure: StopCause | None = None  # session/cancel itself failed
        self._turn_failure: StopCause | None = None  # what broke the running turn from our side
        self._turn_closed = asyncio.Event()  # the running turn failed and is recorded as such
        self._deferred: list[tuple[Turn, TurnResult]] = []  # failed turns, resolved once stopped
        self._abandon: asyncio.Future[None] | None = None  # set: end the running turn locally
        self._orphan: Turn | None = None  # ended locally; its session/prompt is still unanswered
        self._orphan_call: asyncio.Task[Any] | None = None
        # turn id -> its tool calls so far, fed by every event the session appends: a turn's end
        # closes its open calls without a flush and a read of the store (at a host shutdown that
        # read, for every session at once, took longer than the whole budget).
        self._tallies: dict[str, TurnTally] = {}

    # -- views --------------------------------------------------------------------------------

    @property
    def running(self) -> Turn | None:
        """The running turn, if any."""
        return self._current

    @property
    def update_turn_id(self) -> str | None:
        """The turn an agent's update belongs to: a turn ended locally while its prompt request is
        still unanswered keeps every update until that answer comes (its late updates never land
        in the next turn); otherwise the running turn."""
        orphan = self._orphan
        if orphan is not None:
            return orphan.turn_id
        return self._current.turn_id if self._current else None

    @property
    def cancel_failure(self) -> StopCause | None:
        """Set when a ``session/cancel`` could not be delivered (the stop is then a failure)."""
        return self._cancel_failure

    def snapshot(self) -> list[JSON]:
        """Return the running turn (position 0) and the queued ones, in order."""
        turns = ([self._current] if self._current else []) + list(self._queue)
        return [{"turn_id": t.turn_id, "position": i, "running": t is self._current} for i, t in enumerate(turns)]

    # -- queueing -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker that runs queued turns (once the session is ``active``)."""
        self._worker = self._tasks.spawn(self._run(), "turns")

    async def submit(self, text: str, *, interrupt: bool = False, replay: bool = False) -> Turn:
        """Queue a prompt turn; its ``user_message`` is durable before this returns.

        Raises:
            SessionNotActiveError: when the session is not ``active``.
            QueueFullError: when the FIFO queue is at ``[session.busy_input] queue_cap``.
        """
        host = self._host
        host.require_active()
        if not interrupt and len(self._queue) >= self._settings.queue_cap:
            raise QueueFullError(
                f"session {host.session_id} already has {len(self._queue)} queued prompts (the cap): wait for "
                "them, or send with --interrupt",
                session_id=host.session_id,
            )
        turn_id = self._ids.turn_id()
        fields: JSON = {"text": text, "runtime": {"replay_transcript": True}} if replay else {"text": text}
        command = slash_command(text)
        if command is not None:
            fields["runtime"] = {"command": command}
        await host.append_event_durable(EventDraft(EventType.USER_MESSAGE, turn_id, fields, self._clock.now()))
        host.require_active()
        # Tallied from here: nothing of the turn can be appended before it is queued below, and
        # a prompt refused above leaves no tally behind.
        self._tallies[turn_id] = TurnTally(turn_id)
        if interrupt:
            for stale in list(self._queue):
                await self.finish(stale, "cancelled", error="dropped by an interrupting prompt")
            self._queue.clear()
            if self._current is not None and host.record.acp_session_id:
                await self._approvals.cancel_session(host.session_id)
                await self.send_cancel(self._current)
                if self._settings.timeout_cancel_grace > 0:
                    self._tasks.spawn(self._cancel_grace(self._current), "cancel-grace")
        ahead = len(self._queue) + (1 if self._current is not None else 0)
        turn = Turn(host.session_id, turn_id, text, ahead)
        self._queue.append(turn)
        self._wake.set()
        return turn

    async def _run(self) -> None:
        host = self._host
        while host.record.state is SessionState.ACTIVE:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            turn = self._queue.popleft()
            self._current = turn
            self._cancelled_turn = self._turn_failure = None
            self._turn_closed.clear()
            host.last_activity_at = self._clock.now()
            acp_id = host.record.acp_session_id
            assert acp_id is not None
            # The watchdog ends by itself when the turn is done (or after it timed the turn out).
            self._tasks.spawn(supervise_turn(host, turn.turn_id, turn.future, self._settings), "supervise")
            try:
                outcome = await self._prompt(turn, acp_id)
                if outcome is None:  # the agent ignored session/cancel: ended locally, go on
                    self._current = None
                    continue
                if self._turn_failure is not None:
                    await self.fail(turn, self._turn_failure)
                    return
                usage = storable_usage(outcome.usage)
                if usage:
                    await self._store.merge_usage(host.session_id, turn.turn_id, usage)
                await self.finish(turn, outcome.stop_reason, usage=outcome.usage)
            except DriverFailure as failure:
                cause = self._turn_failure or turn_failure_cause(
                    failure.kind, failure.summary, cancel_sent=self._cancelled_turn == turn.turn_id, code=failure.code
                )
                await self.fail(turn, cause)
                return
            except Exception as exc:  # nothing classified it: a bug, or a collaborator's broken contract
                log.error("turn %s of session %s failed unexpectedly", turn.turn_id, host.session_id, exc_info=True)
                await self.fail(turn, unexpected_failure_cause(f"during turn {turn.turn_id}", exc))
                return
            self._current = None

    async def _prompt(self, turn: Turn, acp_id: str) -> TurnOutcome | None:
        """Run ``session/prompt`` for ``turn``; None when the turn was ended locally first.

        Raises what the driver raises (``DriverFailure``...).
        """
        # "Authentication required" at the prompt (claude-agent-acp without a key): one
        # authenticate and one retry when a method fits, else the turn fails as auth_failure.
        prompt = self._host.authenticator.run(lambda: self._driver.prompt(acp_id, turn.text), "session/prompt")
        call = self._tasks.spawn(_settled(prompt), "prompt")
        abandon = self._abandon = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait({call, abandon}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            call.cancel()
            raise
        finally:
            self._abandon = None
        if call.done():
            result = call.result()
            if isinstance(result, BaseException):
                raise result
            return result
        await self._end_locally(turn, call)
        return None

    async def _cancel_grace(self, turn: Turn) -> None:
        """After an interrupting ``session/cancel``: a turn still running ``timeout_cancel_grace``
        later is ended locally (the worker then runs the next turn)."""
        await asyncio.wait({turn.future}, timeout=self._settings.timeout_cancel_grace)
        abandon = self._abandon
        if turn is self._current and not turn.recorded and abandon is not None and not abandon.done():
            abandon.set_result(None)

    async def _end_locally(self, turn: Turn, call: asyncio.Task[Any]) -> None:
        """Record ``turn`` as cancelled by us, keep its unanswered prompt request as the orphan
        whose late updates stay in this turn, and give the agent one more grace to answer it; an
        agent that never does stops the session as ``cancellation``."""
        grace = self._settings.timeout_cancel_grace
        self._orphan, self._orphan_call = turn, call
        reason = (
            f"the agent did not end the turn within timeout_cancel_grace ({grace:g}s) after session/cancel: "
            "ended by agh_nb; its later updates stay in this turn"
        )
        await self.finish(turn, "cancelled", error=reason, runtime={"ended_locally": True})
        self._tasks.spawn(self._await_orphan(turn, call), "orphan-turn")

    async def _await_orphan(self, turn: Turn, call: asyncio.Task[Any]) -> None:
        host = self._host
        grace = self._settings.timeout_cancel_grace
        done, _ = await asyncio.wait({call}, timeout=grace)
        if not done:
            cause = StopCause(
                CauseKind.FAILURE,
                FailureKind.CANCELLATION,
                f"agent {host.record.agent_name!r} did not answer session/cancel: turn {turn.turn_id} was still "
                f"running {2 * grace:g}s after the cancel (timeout_cancel_grace {grace:g}s)",
            )
            if self._cancel_failure is None:
                self._cancel_failure = cause
            host.begin_stop(cause)
            return
        if self._orphan is turn:
            self._orphan = self._orphan_call = None
            host.flush_streams(turn.turn_id)

    # -- how turns end ------------------------------------------------------------------------

    def break_running(self, cause: StopCause) -> None:
        """Something broke the running turn from our side (e.g. a permission request that
        cannot be answered): the turn is recorded as failing with ``cause`` when it returns."""
        if self._current is not None and self._turn_failure is None:
            self._turn_failure = cause

    async def fail(self, turn: Turn, cause: StopCause) -> None:
        """End a turn that failed, then stop the session with ``cause``.

        In sequence order the turn gets: an interrupted ``tool_result`` for each of its tool calls
        still open, its ``error`` (with the failure), then its ``done``; ``session_stopped``
        follows from the stop path. Append-only, and what transcript repair would have added, so a
        later repair plans nothing.
        """
        host = self._host
        if cause.failure_kind is FailureKind.CANCELLATION and self._cancel_failure is None:
            self._cancel_failure = cause
        kind = cause.failure_kind or FailureKind.UNKNOWN_FAILURE
        summary = host.redact(cause.summary)
        try:
            host.flush_streams(turn.turn_id)  # held-back text first, in the turn it belongs to
            await self.close_dangling(turn.turn_id)
            host.append_event(
                EventDraft(
                    EventType.ERROR,
                    turn.turn_id,
                    {"error": summary, "failure": {"kind": kind.value, "summary": summary, "code": cause.code}},
                    self._clock.now(),
                ),
            )
            await self.finish(turn, "error", error=summary, resolve=False)
        except Exception:  # the store failed too: the stop path still settles the session
            log.error("recording the failure of turn %s of %s failed", turn.turn_id, host.session_id, exc_info=True)
        finally:
            self._current = None
            self._deferred.append((turn, TurnResult(host.session_id, turn.turn_id, "error", summary)))
            self._turn_closed.set()
            host.begin_stop(cause)
            if not host.stop_started():  # already stopped: nothing to wait for
                self.resolve_deferred()

    def observe(self, draft: EventDraft) -> None:
        """Take an event the session appends into its turn's tally (a tool call, a permission
        decision, a result, an error, a done; the session passes only those types)."""
        tally = self._tallies.get(draft.turn_id) if draft.turn_id is not None else None
        if tally is not None:
            tally.observe(draft.type.value, draft.fields)

    def _tally(self, turn_id: str) -> TurnTally:
        return self._tallies.get(turn_id) or TurnTally(turn_id)

    async def close_dangling(self, turn_id: str) -> None:
        """Append an interrupted ``tool_result`` for every tool call of ``turn_id`` still open."""
        for draft in interrupted_tool_results(self._tally(turn_id), self._clock.now()):
            self._host.append_event(draft)

    async def finish(
        self,
        turn: Turn,
        stop_reason: str,
        *,
        error: str | None = None,
        usage: JSON | None = None,
        resolve: bool = True,
        runtime: JSON | None = None,
    ) -> None:
        """Record the turn's durable ``done`` event (once), then resolve whoever waits on it.

        A turn that ran and ends (any stop reason but an error, whose tool calls ``fail`` closed)
        first closes every tool call it left open: a ``tool_result`` with the call's last status
        (SPEC 4), so no call stays ``pending`` after its turn, e.g. one whose permission the user
        refused and that the agent then abandoned without a word.
        """
        if turn.future.done() or turn.recorded:
            self._tallies.pop(turn.turn_id, None)
            return
        self._host.flush_streams(turn.turn_id)
        if turn is self._current and stop_reason != "error":
            for draft in turn_end_tool_results(self._tally(turn.turn_id), stop_reason, self._clock.now()):
                self._host.append_event(draft)
        fields: JSON = {"stop_reason": stop_reason, "usage": usage}
        if error:
            fields["error"] = error
        if runtime:
            fields["runtime"] = runtime
        await self._host.append_event_durable(EventDraft(EventType.DONE, turn.turn_id, fields, self._clock.now()))
        turn.recorded = True
        self._tallies.pop(turn.turn_id, None)
        if turn is self._current:
            self._host.end_turn_grants()
        if resolve:
            turn.resolve(TurnResult(self._host.session_id, turn.turn_id, stop_reason, error, usage))

    def resolve_deferred(self) -> None:
        """Resolve the failed turns held back until their session stopped."""
        deferred, self._deferred = self._deferred, []
        for turn, result in deferred:
            turn.resolve(result)

    # -- cancelling ---------------------------------------------------------------------------

    async def cancel_running(self) -> bool:
        """Cooperatively cancel the running turn (``session/cancel``); True if one was running."""
        if self._current is None or not self._host.record.acp_session_id:
            return False
        await self._approvals.cancel_session(self._host.session_id)
        await self.send_cancel(self._current)
        return True

    async def send_cancel(self, turn: Turn) -> None:
        """Send ``session/cancel`` for the running ``turn``; a cancel that cannot be sent (the
        driver fails, or hangs on a dead channel) stops the session as ``cancellation``."""
        host = self._host
        acp_id = host.record.acp_session_id
        if acp_id is None:
            return
        self._cancelled_turn = turn.turn_id
        try:
            await asyncio.wait_for(self._driver.cancel(acp_id), timeout=CANCEL_SEND_TIMEOUT)
            return
        except asyncio.TimeoutError:
            summary = (
                f"session/cancel could not be sent to agent {host.record.agent_name!r} "
                f"within {CANCEL_SEND_TIMEOUT:g}s"
            )
        except DriverFailure as failure:
            summary = f"session/cancel failed: {failure.summary}"
        cause = StopCause(CauseKind.FAILURE, FailureKind.CANCELLATION, summary)
        if self._cancel_failure is None:
            self._cancel_failure = cause
        host.begin_stop(cause)

    # -- what the stop path needs -------------------------------------------------------------

    async def drop_queue(self, error: str) -> None:
        """End every queued (not yet running) turn as ``cancelled``."""
        for turn in list(self._queue):
            await self.finish(turn, "cancelled", error=error)
        self._queue.clear()

    async def cancel_for_stop(self) -> Turn | None:
        """Send ``session/cancel`` for the running turn (the stop began); return that turn."""
        running = self._current
        if running is not None:
            await self.send_cancel(running)
        return running

    async def wait_for_end(self, running: Turn | None, grace: float) -> None:
        """Wait up to ``grace`` seconds for ``running`` (cancelled by ``cancel_for_stop``) to end.

        Whichever comes first: the turn ends (the agent honoured the cancel), or a failing turn
        has recorded its end and waits for the stop to resolve it.
        """
        if running is None:
            return
        closed: asyncio.Future[Any] = asyncio.ensure_future(self._turn_closed.wait())
        waiters: set[asyncio.Future[Any]] = {running.future, closed}
        try:
            await asyncio.wait(waiters, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()

    async def stop_worker(self) -> None:
        """End the worker task (no turn runs after this), and an orphan prompt request's wait."""
        orphan = self._orphan_call
        if orphan is not None and not orphan.done():
            orphan.cancel()
            await asyncio.wait({orphan})
        worker = self._worker
        if worker is not None and not worker.done():
            worker.cancel()
            await asyncio.wait({worker})

    async def settle(self, turn: Turn, *, interrupted: bool) -> None:
        """End a turn the stop interrupted: its open tool calls first when the session failed."""
        if turn.recorded or turn.future.done():
            return
        if interrupted:
            await self.close_dangling(turn.turn_id)  # inside the turn, before its done
        await self.finish(turn, "cancelled", error="session stopped during the turn")


def slash_command(text: str) -> str | None:
    """The command a prompt runs, when it is one: ``/web agent client protocol`` -> ``web``.

    ACP runs an advertised slash command as an ordinary prompt whose text starts with ``/name``
    (the text is sent exactly as typed); this only names it for the ``user_message`` event.
    """
    stripped = text.lstrip()
    if not stripped.startswith("/") or len(stripped) < 2 or stripped[1].isspace() or stripped[1] == "/":
        return None
    return stripped[1:].split(None, 1)[0]


async def _settled(call: Awaitable[T]) -> T | Exception:
    """Await ``call``; return its exception instead of raising it (a failed prompt is a result
    for the worker to classify, not a task failure to log)."""
    try:
        return await call
    except Exception as exc:
        return exc
