"""The session lifecycle (SPEC 2): states, stop reasons, failure kinds and the one transition table.

Owns: the enums whose values are persisted, and ``transition`` (the only function that decides
whether a move is legal). Imports only ``errors``.
"""

from __future__ import annotations

from enum import Enum

from agh_nb.errors import InvalidTransitionError


class SessionState(str, Enum):
    """Lifecycle state of a session."""

    STARTING = "starting"
    """ID allocated, session dir and store ready, agent spawning and handshaking."""
    ACTIVE = "active"
    """Accepts prompts and approvals; the only such state."""
    STOPPING = "stopping"
    """Stop accepted; draining the turn, the agent and the recorder."""
    STOPPED = "stopped"
    """Final metadata written; can be listed, inspected and resumed."""

    def __str__(self) -> str:
        return self.value


class StopReason(str, Enum):
    """Why a session is stopped, as persisted (a pure classification, see ``classify``)."""

    COMPLETED = "completed"
    USER_CANCELED = "user_canceled"
    MAX_ITERATIONS = "max_iterations"
    LOOP_DETECTED = "loop_detected"
    BUDGET_EXCEEDED = "budget_exceeded"
    TIMEOUT = "timeout"
    ERROR = "error"
    AGENT_CRASHED = "agent_crashed"
    HOOK_STOPPED = "hook_stopped"

    def __str__(self) -> str:
        return self.value


class FailureKind(str, Enum):
    """Closed set of failure kinds carried by a stopped session's ``failure`` object."""

    STARTUP_FAILURE = "startup_failure"
    HANDSHAKE_FAILURE = "handshake_failure"
    LOAD_SESSION_FAILURE = "load_session_failure"
    PROTOCOL_FAILURE = "protocol_failure"
    PROMPT_FAILURE = "prompt_failure"
    CANCELLATION = "cancellation"
    PERMISSION_FAILURE = "permission_failure"
    PROCESS_EXIT = "process_exit"
    TRANSPORT_FAILURE = "transport_failure"
    TIMEOUT = "timeout"
    AUTH_FAILURE = "auth_failure"
    """The agent needs a login or a key it did not get (the summary names its methods)."""
    UNKNOWN_FAILURE = "unknown_failure"

    def __str__(self) -> str:
        return self.value


class SessionType(str, Enum):
    """Kind of session; ``dream`` sessions always run ``approve-all``."""

    USER = "user"
    DREAM = "dream"
    SYSTEM = "system"
    COORDINATOR = "coordinator"
    SPAWNED = "spawned"

    def __str__(self) -> str:
        return self.value


_ALLOWED: frozenset[tuple[SessionState, SessionState]] = frozenset(
    {
        (SessionState.STARTING, SessionState.ACTIVE),
        (SessionState.STARTING, SessionState.STOPPED),
        (SessionState.ACTIVE, SessionState.STOPPING),
        (SessionState.STOPPING, SessionState.STOPPED),
        (SessionState.STOPPED, SessionState.STARTING),
    }
)
# The live path is starting -> active -> stopping -> stopped, and stopped -> starting on resume.
# A start that fails never became active, so there is nothing to drain: it goes starting ->
# stopped directly, after the same settling a stop does (kill the child, classify, record
# session_stopped, write the ledger), so the session is never half-made. Nothing goes back to
# active or starting from stopping, and stopping is entered only from active.


def transition(session_id: str, current: SessionState, target: SessionState) -> SessionState:
    """Return ``target`` if ``current -> target`` is a legal lifecycle move.

    Raises:
        InvalidTransitionError: naming "from -> to" when the move is not in the table.
    """
    if (current, target) not in _ALLOWED:
        raise InvalidTransitionError(
            f"session {session_id}: illegal lifecycle transition {current.value} -> {target.value}",
            session_id=session_id,
            current=current.value,
            target=target.value,
        )
    return target
