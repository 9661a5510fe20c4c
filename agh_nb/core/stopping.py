"""The stop path of one live session (SPEC 2): run once, first cause wins.

Owns: ``StopPath`` — ``active -> stopping`` (or ``starting -> stopped`` for a failed start),
ending the heartbeat, dropping the queue, cancelling the running turn and waiting a grace,
closing the agent (escalating), classifying the stop, the crash bundle, closing the transcript
of a failed session, the durable ``session_stopped`` event, ``stopped``, and the ledger.
Runs on the runtime loop. Imports no third-party library.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from agh_nb.core.approvals import ApprovalBroker
from agh_nb.core.classify import CauseKind, StopCause, classify, exit_summary
from agh_nb.core.crash_bundle import write_crash_bundle
from agh_nb.core.ports import AgentDriver, EventStore, ExitInfo
from agh_nb.core.record import Failure, SessionRecord, bound_summary
from agh_nb.core.repair import plan_transcript_repair
from agh_nb.core.session_dir import write_session_ledger
from agh_nb.core.state import FailureKind, SessionState, StopReason
from agh_nb.core.turns import TurnRunner
from agh_nb.events import JSON, EventDraft, EventQuery, EventType

log = logging.getLogger(__name__)

STOP_GRACE = 5.0
"""Seconds the running turn gets to end after ``session/cancel``; the agent then gets half of it
to exit after its stdin closes, and again after SIGTERM."""
SHUTDOWN_CANCEL_GRACE = 1.0
"""At host shutdown: seconds the running turn gets to end after ``session/cancel``."""
SHUTDOWN_EXIT_GRACE = 0.5
"""At host shutdown: seconds the agent gets to exit after its stdin closes, again after SIGTERM
of its process group, and again after SIGKILL (claude and codex ignore EOF: escalate soon)."""


@dataclass(frozen=True)
class StopBudget:
    """How long the steps of one stop may wait.

    Attributes:
        cancel: seconds the running turn gets to end after ``session/cancel``.
        exit: seconds the agent gets to exit after EOF, after SIGTERM and after SIGKILL.
        deadline: the loop time (``loop.time()``) by which the agent should be gone, shared by
            every stop of a host shutdown: a stop that gets there late cuts its cancel wait
            short so the escalation still fits. None: no deadline (a user stop).
    """

    cancel: float = STOP_GRACE
    exit: float = STOP_GRACE / 2
    deadline: float | None = None

    def cancel_wait(self, now: float) -> float:
        """How long the running turn may still take, at loop time ``now``."""
        if self.deadline is None:
            return self.cancel
        # Keep room for the agent's exit: EOF, SIGTERM and SIGKILL waits.
        return max(0.0, min(self.cancel, self.deadline - now - 3 * self.exit))


def shutdown_budget(deadline: float) -> StopBudget:
    """The budget of every stop of a host shutdown that must be over by ``deadline``."""
    return StopBudget(cancel=SHUTDOWN_CANCEL_GRACE, exit=SHUTDOWN_EXIT_GRACE, deadline=deadline)

_REPAIRABLE = frozenset({StopReason.AGENT_CRASHED, StopReason.ERROR})
"""Stop reasons after which the transcript is closed (dangling tool calls, unfinished turns)."""


class StoppingHost(Protocol):
    """What the stop path needs from its session."""

    @property
    def session_id(self) -> str: ...

    @property
    def record(self) -> SessionRecord: ...

    def now(self) -> datetime: ...

    def move(self, target: SessionState) -> None: ...

    def update(self, **changes: Any) -> None: ...

    async def save(self) -> None: ...

    async def end_heartbeat(self) -> None: ...

    def append_event(self, draft: EventDraft) -> None: ...

    async def append_event_durable(self, draft: EventDraft) -> None: ...

    async def end_background(self) -> None: ...

    def flush_all_streams(self) -> None: ...

    def stopped(self) -> None: ...


class StopPath:
    """Stops one session, once.

    Args:
        host: the session being stopped.
        turns: its turn runner.
        store: the event store.
        driver: its agent driver.
        approvals: the host's broker (the session's pending requests are cancelled).
        home: ``$AGH_HOME`` (crash bundles, the ledger).
        redact: scrubs secrets from failure text.
        grace: seconds for the running turn, then half of it for each step of the agent's exit
            (see ``STOP_GRACE``); a host shutdown passes its own ``StopBudget`` to ``begin``.
    """

    def __init__(
        self,
        host: StoppingHost,
        *,
        turns: TurnRunner,
        store: EventStore,
        driver: AgentDriver,
        approvals: ApprovalBroker,
        home: Path,
        redact: Callable[[str], str],
        grace: float = STOP_GRACE,
    ) -> None:
        self._host = host
        self._turns = turns
        self._store = store
        self._driver = driver
        self._approvals = approvals
        self._home = home
        self._redact = redact
        self._budget = StopBudget(cancel=grace, exit=grace / 2)
        self._task: asyncio.Task[SessionRecord] | None = None
        self.step = "not begun"
        self.ledger_deferred = False
        """True when a host shutdown left the ledger to ``SessionManager.stop_all`` (see below)."""
        """Where the stop is (named in the failure of a stop that could not finish in time)."""
        self._began = 0.0

    @property
    def started(self) -> bool:
        """True once the stop path began."""
        return self._task is not None

    @property
    def running(self) -> bool:
        """True while the stop path runs (begun, not finished)."""
        return self._task is not None and not self._task.done()

    @property
    def task(self) -> asyncio.Task[SessionRecord] | None:
        """The stop path's task, once begun."""
        return self._task

    def begin(self, cause: StopCause, budget: StopBudget | None = None) -> None:
        """Start the stop path in the background if it has not started yet (``budget``: how long
        its steps may wait; the session's own grace by default)."""
        if self._task is None and self._host.record.state is not SessionState.STOPPED:
            if budget is not None:
                self._budget = budget
            self._task = asyncio.get_running_loop().create_task(
                self._run(cause), name=f"stop[{self._host.session_id}]"
            )

    async def wait(self) -> SessionRecord:
        """Wait for the stop path (begun) to finish; return the final record."""
        if self._task is None:
            return self._host.record
        return await asyncio.shield(self._task)

    async def _run(self, cause: StopCause) -> SessionRecord:
        try:
            return await self._settle(cause)
        finally:
            # A turn whose failure stopped the session ends for its waiters only now, so whoever
            # waited on it sees the session stopped, its failure classified and recorded.
            self._turns.resolve_deferred()

    async def _settle(self, cause: StopCause) -> SessionRecord:
        host = self._host
        budget = self._budget
        loop = asyncio.get_running_loop()
        # A session that never became active has nothing to drain: starting -> stopped at the end.
        if host.record.state is not SessionState.STARTING:
            host.move(SessionState.STOPPING)
        # The cancel goes first: a busy agent keeps the loop (and the writer) busy until it
        # stops streaming, and every step below waits on them.
        self._at("cancelling the turn")
        running = await self._turns.cancel_for_stop()
        turn_ends_by = loop.time() + budget.cancel_wait(loop.time())  # the grace runs from the cancel
        self._at("ending the heartbeat")
        await host.end_heartbeat()
        if host.record.state is SessionState.STOPPING and budget.deadline is None:
            # Not at host shutdown: there, every write waits behind the others' (one writer,
            # one thread pool), and a host dying meanwhile leaves 'active' to repair just the same.
            await host.save()
        await self._turns.drop_queue("session stopped before the turn ran")
        await self._approvals.cancel_session(host.session_id)
        self._at("waiting for the turn to end")
        await self._turns.wait_for_end(running, max(0.0, turn_ends_by - loop.time()))
        self._at("closing the agent")
        exit_info = await self._driver.close(grace=budget.exit)
        await self._turns.stop_worker()
        if exit_info.running:
            return await self._leave_stopping(exit_info)
        self._at("recording the stop")
        if cause.kind is CauseKind.USER and self._turns.cancel_failure is not None:
            cause = self._turns.cancel_failure  # the stop's own session/cancel failed: a failed stop
        if cause.kind is CauseKind.AGENT_EXIT and not cause.summary:
            cause = StopCause(
                cause.kind, cause.failure_kind, exit_summary(host.record.agent_name, exit_info), cause.detail
            )
        verdict = classify(cause, exit_info, redact=self._redact)
        if running is not None:
            self._at("settling the turn")
            await self._turns.settle(running, interrupted=verdict.stop_reason in _REPAIRABLE)
        failure = verdict.failure
        if failure is not None:
            bundle = await asyncio.to_thread(self._write_crash_bundle, failure, exit_info, cause.summary)
            failure = dataclasses.replace(failure, crash_bundle_path=str(bundle)) if bundle else failure
        host.update(
            stop_reason=verdict.stop_reason,
            stop_detail=verdict.stop_detail,
            failure=failure,
            last_presence_at=host.now(),
        )
        if verdict.stop_reason in _REPAIRABLE:
            # A backstop: the failing turn closed its own tool calls, but an update that arrived
            # after that (or a turn no one finished) may still be open. Append-only.
            await self._store.flush()
            events = await asyncio.to_thread(self._store.query_events, host.session_id, EventQuery())
            settled = host.record.replace(state=SessionState.STOPPED)  # what the record is about to be
            for draft in plan_transcript_repair(settled, events, host.now()):
                host.append_event(draft)
        self._at("storing session_stopped")
        host.flush_all_streams()  # text held back from a stream (redaction) is stored before the end
        exit_json = {"pid": exit_info.pid, "returncode": exit_info.returncode, "signal": exit_info.signal}
        runtime: JSON = {"stop_detail": verdict.stop_detail, "exit": exit_json}
        if self._driver.discarded_updates:
            # Host shutdown: what the agent streamed after the stop began was read, not stored.
            runtime["discarded_updates"] = self._driver.discarded_updates
        await host.append_event_durable(
            EventDraft(
                EventType.SESSION_STOPPED,
                None,
                {
                    "stop_reason": verdict.stop_reason.value,
                    "failure": failure.to_dict() if failure else None,
                    "runtime": runtime,
                },
                host.now(),
            ),
        )
        host.move(SessionState.STOPPED)
        self._at("saving the record")
        await host.save()
        self._at("ending background work")
        await host.end_background()
        if budget.deadline is not None:
            # Host shutdown: a ledger costs time in proportion to the session's events (a read
            # of the store and a file), and the other sessions still have to be recorded, behind
            # the same store and thread pool. stop_all writes the ledgers once every session is
            # recorded, in what is left of the budget.
            self.ledger_deferred = True
        else:
            self._at("writing the ledger")
            try:
                await asyncio.to_thread(write_session_ledger, self._home, host.record, self._store)
            except OSError as exc:  # the session is stopped either way; the ledger can be rebuilt
                log.error("writing the ledger of %s failed: %s", host.session_id, exc)
        self._at("stopped")
        host.stopped()
        return host.record

    async def _leave_stopping(self, exit_info: ExitInfo) -> SessionRecord:
        """The agent outlived SIGKILL: the session stays ``stopping`` with a classified failure
        (no ``session_stopped``), so the next host start, or a resume, repairs it and ends the
        process its book still names."""
        host = self._host
        failure = self.unfinished_failure(
            f"agent {host.record.agent_name!r} (pid {exit_info.pid}) was still running after SIGKILL"
        )
        host.update(failure=failure, last_presence_at=host.now())
        await host.save()
        await host.end_background()
        self._at("left stopping")
        host.stopped()
        return host.record

    def _at(self, step: str) -> None:
        now = asyncio.get_running_loop().time()
        if self.step == "not begun":
            self._began = now
        self.step = step
        log.debug("stop of %s: %s (+%.3fs)", self._host.session_id, step, now - self._began)

    def unfinished_failure(self, why: str) -> Failure:
        """The failure of a stop that could not finish: ``timeout``, naming why and its step."""
        summary = f"the stop did not complete ({why}; step: {self.step}); the next host start repairs the session"
        return Failure(kind=FailureKind.TIMEOUT, summary=bound_summary(self._redact(summary)))

    def _write_crash_bundle(self, failure: Failure, exit_info: ExitInfo, error_text: str) -> Path | None:
        host = self._host
        try:
            return write_crash_bundle(
                self._home / "logs" / "crash-bundles",
                record=host.record,
                failure_kind=failure.kind.value,
                summary=failure.summary,
                exit_info=exit_info if exit_info.pid is not None else None,
                stderr_tail=exit_info.stderr_tail,
                error_text=error_text or None,
                redact=self._redact,
                now=host.now(),
                code=failure.code,
            )
        except OSError as exc:
            log.error("writing the crash bundle of %s failed: %s", host.session_id, exc)
            return None
