"""Stop classification (SPEC 2): why a stop began -> persisted stop reason, detail and failure.

Owns: ``StopCause`` (why a stop began), ``classify`` (a pure function) and the helpers that name
the cause of a failed turn. Three ideas kept apart, as AGH does: the cause, the persisted reason,
and the bounded, redacted failure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from agh_nb.core.ports import ExitInfo
from agh_nb.core.record import Failure, bound_summary
from agh_nb.core.state import FailureKind, StopReason


class CauseKind(str, Enum):
    """Why a stop began."""

    USER = "user"
    """The user (or host shutdown) asked to stop."""
    STARTUP = "startup"
    """Create or resume failed before the session became active."""
    AGENT_EXIT = "agent_exit"
    """The agent process ended while the session was active."""
    FAILURE = "failure"
    """The driver reported a classified failure (protocol, transport, prompt, load...)."""
    TIMEOUT = "timeout"
    """Inactivity timeout whose cooperative cancel did not finish within grace."""


@dataclass(frozen=True)
class StopCause:
    """The cause of a stop, with what is known about it."""

    kind: CauseKind
    failure_kind: FailureKind | None = None
    summary: str = ""
    detail: str | None = None
    code: int | None = None
    """The JSON-RPC error code, when an agent's error answer caused the stop."""


@dataclass(frozen=True)
class Classification:
    """The persisted outcome of a stop."""

    stop_reason: StopReason
    stop_detail: str | None
    failure: Failure | None


def classify(cause: StopCause, exit_info: ExitInfo | None, *, redact: Callable[[str], str] = str) -> Classification:
    """Map a stop cause (and how the agent ended) to the stop reason, detail and failure.

    A user stop is ``user_canceled`` (``budget_exceeded`` when that is the detail); an agent
    that died on its own is ``agent_crashed`` unless it exited cleanly (code 0), which is
    ``error``; startup and driver failures are ``error``; an inactivity stop is ``timeout``.
    """

    def failure(kind: FailureKind, summary: str) -> Failure:
        return Failure(kind=kind, summary=bound_summary(redact(summary)), code=cause.code)

    if cause.kind is CauseKind.USER:
        if cause.detail == StopReason.BUDGET_EXCEEDED.value:
            return Classification(StopReason.BUDGET_EXCEEDED, cause.detail, None)
        return Classification(StopReason.USER_CANCELED, cause.detail, None)
    if cause.kind is CauseKind.TIMEOUT:
        return Classification(
            StopReason.TIMEOUT, cause.detail or "activity_timeout", failure(FailureKind.TIMEOUT, cause.summary)
        )
    if cause.kind is CauseKind.AGENT_EXIT:
        crashed = exit_info is None or exit_info.signal is not None or (exit_info.returncode or 0) != 0
        reason = StopReason.AGENT_CRASHED if crashed else StopReason.ERROR
        return Classification(reason, cause.detail, failure(FailureKind.PROCESS_EXIT, cause.summary))
    kind = cause.failure_kind or FailureKind.UNKNOWN_FAILURE
    if kind is FailureKind.PROCESS_EXIT:
        return classify(StopCause(CauseKind.AGENT_EXIT, kind, cause.summary, cause.detail), exit_info, redact=redact)
    if kind is FailureKind.TIMEOUT:
        return Classification(StopReason.TIMEOUT, cause.detail, failure(kind, cause.summary))
    return Classification(StopReason.ERROR, cause.detail, failure(kind, cause.summary))


_CANCEL_BREAKERS = frozenset({FailureKind.PROTOCOL_FAILURE, FailureKind.TRANSPORT_FAILURE})


def turn_failure_cause(
    kind: FailureKind, summary: str, *, cancel_sent: bool, code: int | None = None
) -> StopCause:
    """Why a session stops when its running turn failed with a classified driver failure.

    A dead agent is an ``AGENT_EXIT``; any other failure keeps its kind, except that a protocol
    or transport failure after ``session/cancel`` was sent for the turn is the cancel itself
    failing (the agent answered it with garbage, or closed the channel): ``cancellation``.
    """
    if kind is FailureKind.PROCESS_EXIT:
        return StopCause(CauseKind.AGENT_EXIT, kind, summary)
    if cancel_sent and kind in _CANCEL_BREAKERS:
        return StopCause(CauseKind.FAILURE, FailureKind.CANCELLATION, f"session/cancel failed: {summary}")
    return StopCause(CauseKind.FAILURE, kind, summary, code=code)


def unexpected_failure_cause(where: str, exc: BaseException) -> StopCause:
    """The stop cause of an exception nothing classified (a bug, or a collaborator breaking its
    contract): ``unknown_failure``, naming where it happened and the exception."""
    detail = str(exc).strip()
    summary = f"unexpected error {where}: {type(exc).__name__}" + (f": {detail}" if detail else "")
    return StopCause(CauseKind.FAILURE, FailureKind.UNKNOWN_FAILURE, summary)


def exit_summary(agent_name: str, info: ExitInfo, when: str = "") -> str:
    """Describe how an agent process ended, with the last stderr line, for a failure summary."""
    how = f"signal {info.signal}" if info.signal else f"exit code {info.returncode}"
    summary = f"agent {agent_name!r} (pid {info.pid}) exited with {how}{when}"
    lines = info.stderr_tail.strip().splitlines()
    if lines:
        summary += f"; stderr: {lines[-1][:300]}"
    return summary
