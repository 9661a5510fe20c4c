"""Stop classification (SPEC 2): cause + exit -> stop reason, detail and a bounded, redacted failure."""

from __future__ import annotations

import pytest

from agh_nb.core.classify import CauseKind, StopCause, classify, turn_failure_cause, unexpected_failure_cause
from agh_nb.core.ports import ExitInfo
from agh_nb.core.state import FailureKind

KILLED = ExitInfo(pid=1, returncode=None, signal=9)
CLEAN = ExitInfo(pid=1, returncode=0, signal=None)
FAILED = ExitInfo(pid=1, returncode=3, signal=None)

CASES = [
    ("user", StopCause(CauseKind.USER), CLEAN, "user_canceled", None),
    ("budget", StopCause(CauseKind.USER, detail="budget_exceeded"), CLEAN, "budget_exceeded", None),
    ("killed", StopCause(CauseKind.AGENT_EXIT, FailureKind.PROCESS_EXIT, "x"), KILLED, "agent_crashed", "process_exit"),
    ("exit-3", StopCause(CauseKind.AGENT_EXIT, FailureKind.PROCESS_EXIT, "x"), FAILED, "agent_crashed", "process_exit"),
    ("exit-0", StopCause(CauseKind.AGENT_EXIT, FailureKind.PROCESS_EXIT, "x"), CLEAN, "error", "process_exit"),
    ("startup", StopCause(CauseKind.STARTUP, FailureKind.STARTUP_FAILURE, "x"), None, "error", "startup_failure"),
    ("handshake", StopCause(CauseKind.STARTUP, FailureKind.HANDSHAKE_FAILURE, "x"), FAILED, "error", "handshake_failure"),
    ("protocol", StopCause(CauseKind.FAILURE, FailureKind.PROTOCOL_FAILURE, "x"), CLEAN, "error", "protocol_failure"),
    ("transport", StopCause(CauseKind.FAILURE, FailureKind.TRANSPORT_FAILURE, "x"), CLEAN, "error", "transport_failure"),
    ("prompt", StopCause(CauseKind.FAILURE, FailureKind.PROMPT_FAILURE, "x"), CLEAN, "error", "prompt_failure"),
    ("timeout", StopCause(CauseKind.TIMEOUT, FailureKind.TIMEOUT, "x", "activity_timeout"), CLEAN, "timeout", "timeout"),
    ("cancellation", StopCause(CauseKind.FAILURE, FailureKind.CANCELLATION, "x"), CLEAN, "error", "cancellation"),
    ("permission", StopCause(CauseKind.FAILURE, FailureKind.PERMISSION_FAILURE, "x"), CLEAN, "error", "permission_failure"),
    ("unknown", StopCause(CauseKind.FAILURE, FailureKind.UNKNOWN_FAILURE, "x"), CLEAN, "error", "unknown_failure"),
    ("no-kind", StopCause(CauseKind.FAILURE, None, "x"), CLEAN, "error", "unknown_failure"),
]


@pytest.mark.parametrize(("cause", "exit_info", "reason", "kind"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_classification(cause: StopCause, exit_info: ExitInfo | None, reason: str, kind: str | None) -> None:
    verdict = classify(cause, exit_info)
    assert verdict.stop_reason.value == reason
    assert (verdict.failure.kind.value if verdict.failure else None) == kind


def test_failure_summary_is_bounded_and_redacted() -> None:
    cause = StopCause(CauseKind.FAILURE, FailureKind.PROMPT_FAILURE, "token=hunter2hunter2 " + "x" * 5000)
    verdict = classify(cause, None, redact=lambda s: s.replace("hunter2hunter2", "[redacted]"))
    assert verdict.failure is not None
    assert "hunter2" not in verdict.failure.summary and len(verdict.failure.summary) <= 2000


@pytest.mark.parametrize(
    ("kind", "cancel_sent", "cause_kind", "failure_kind"),
    [
        (FailureKind.PROCESS_EXIT, False, CauseKind.AGENT_EXIT, FailureKind.PROCESS_EXIT),
        (FailureKind.PROCESS_EXIT, True, CauseKind.AGENT_EXIT, FailureKind.PROCESS_EXIT),
        (FailureKind.PROTOCOL_FAILURE, False, CauseKind.FAILURE, FailureKind.PROTOCOL_FAILURE),
        (FailureKind.PROTOCOL_FAILURE, True, CauseKind.FAILURE, FailureKind.CANCELLATION),
        (FailureKind.TRANSPORT_FAILURE, True, CauseKind.FAILURE, FailureKind.CANCELLATION),
        (FailureKind.PROMPT_FAILURE, True, CauseKind.FAILURE, FailureKind.PROMPT_FAILURE),
    ],
    ids=lambda v: getattr(v, "value", str(v)),
)
def test_turn_failure_cause(kind: FailureKind, cancel_sent: bool, cause_kind: CauseKind, failure_kind: FailureKind) -> None:
    cause = turn_failure_cause(kind, "agent said nonsense", cancel_sent=cancel_sent)
    assert (cause.kind, cause.failure_kind) == (cause_kind, failure_kind)
    assert cause.summary.endswith("agent said nonsense")
    assert cause.summary.startswith("session/cancel failed") == (failure_kind is FailureKind.CANCELLATION)


def test_unexpected_failure_names_where_and_what() -> None:
    cause = unexpected_failure_cause("during turn turn_1", RuntimeError("lost the outcome"))
    assert cause.failure_kind is FailureKind.UNKNOWN_FAILURE
    assert cause.summary == "unexpected error during turn turn_1: RuntimeError: lost the outcome"
