"""Interfaces the session core needs, defined where they are used (adapters implement them).

Owns: ``EventStore`` (durable, ordered event log + session rows), ``AgentDriver`` (one ACP agent
subprocess) and the small values crossing those seams. Imports no third-party library.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from agh_nb.core.record import SessionRecord
from agh_nb.core.sandbox_policy import SandboxPolicy
from agh_nb.core.state import FailureKind
from agh_nb.errors import AghError
from agh_nb.events import JSON, Event, EventDraft, EventQuery, EventType


class Subscription(Protocol):
    """A live subscription; ``close()`` is idempotent."""

    def close(self) -> None:
        """Stop delivering events."""


EventCallback = Callable[[Sequence[Event]], None]


class EventStore(Protocol):
    """The append-only event log and session table (SPEC 4).

    ``append`` assigns the next gapless sequence and buffers the row; a background writer
    commits buffered rows in batches (group commit) in append order, then notifies subscribers
    (store first, then notify). Sync read methods may block and must be called off the loop.
    """

    def append(self, record: SessionRecord, draft: EventDraft) -> Event:
        """Assign a sequence to ``draft`` and buffer it for the next group commit."""

    async def append_durable(self, record: SessionRecord, draft: EventDraft) -> Event:
        """Append and return only once the row (and every earlier one) is committed."""

    async def flush(self) -> None:
        """Return once everything appended so far is committed."""

    async def save_session(self, record: SessionRecord) -> None:
        """Upsert the session row durably (ordered after earlier appends)."""

    async def merge_usage(self, session_id: str, turn_id: str, usage: JSON) -> None:
        """Merge a usage report into the turn's one ``token_usage`` row."""

    def get_session(self, session_id: str) -> SessionRecord | None:
        """Return the stored record or None (blocking)."""

    def list_sessions(self) -> list[SessionRecord]:
        """Return every stored session, oldest first (blocking)."""

    def query_events(self, session_id: str, query: EventQuery) -> list[Event]:
        """Return committed events of one session matching ``query``, ascending (blocking)."""

    def subscribe(
        self, session_id: str | None, after_sequence: int, callback: EventCallback
    ) -> Subscription:
        """Deliver committed events with sequence > ``after_sequence`` (backlog, then live).

        ``session_id=None`` subscribes to every session (then ``after_sequence`` must be 0 and
        only live events are delivered). Callbacks run on the writer thread; keep them short.
        """


@dataclass(frozen=True)
class LaunchSpec:
    """Everything needed to spawn one agent subprocess."""

    agent_name: str
    argv: tuple[str, ...]
    cwd: str
    # Resolved secrets may be among the values: never part of a repr, a log line or a traceback.
    env: dict[str, str] = field(default_factory=dict, repr=False)
    secrets: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    """``(ref, value)`` of every ``env`` value that came from a ``vault:`` or ``env:`` ref."""
    session_id: str | None = None
    """The AGH session: every process spawned for it carries it (``PROCESS_TAG``)."""
    state_dir: str | None = None
    """The session's directory, where the processes spawned for it are recorded."""
    sandbox: SandboxPolicy | None = None
    """How the agent and its terminals are confined (None: not at all)."""


@dataclass(frozen=True)
class Handshake:
    """What ``initialize`` told us about the agent."""

    protocol_version: int
    agent_caps: JSON
    agent_info: JSON | None
    sandboxed: bool = False
    """True when the agent (and so its terminals) runs inside the sandbox."""


@dataclass(frozen=True)
class TurnOutcome:
    """How a ``session/prompt`` call ended (ACP stop reason, e.g. ``end_turn``, ``cancelled``)."""

    stop_reason: str
    usage: JSON | None = None


@dataclass(frozen=True)
class ExitInfo:
    """How the agent process ended."""

    pid: int | None
    returncode: int | None
    signal: int | None
    stderr_tail: str = ""


class DriverFailure(AghError):
    """Raised by a driver for a classified failure (kind from SPEC 2, summary for the user)."""

    def __init__(self, kind: FailureKind, summary: str, **fields: object) -> None:
        super().__init__(summary, kind=kind.value, **fields)
        self.kind = kind
        self.summary = summary


class DriverListener(Protocol):
    """What a driver reports to its session, always on the runtime loop."""

    def on_update(self, event_type: EventType, fields: JSON) -> None:
        """One mapped ``session/update`` (fields include ``raw``, the payload as received)."""

    def on_protocol_error(self, kind: FailureKind, summary: str) -> None:
        """The agent broke the protocol (garbage on stdout: ``protocol_failure``) or its channel
        (closed stdout and lives on: ``transport_failure``); ``kind`` says which."""

    def on_exit(self, info: ExitInfo) -> None:
        """The agent process ended (for any reason)."""

    async def on_permission_request(self, tool_call: JSON, options: list[JSON]) -> str | None:
        """Decide a ``session/request_permission``: the chosen option id, or None (cancelled)."""

    async def authorize(self, operation: str, path: str | None, command: list[str] | None = None) -> Path:
        """Allow a client method (``fs/read_text_file``...) or raise; returns the resolved path.

        ``command`` is the argv a ``terminal/create`` would run."""


class AgentDriver(Protocol):
    """One ACP agent subprocess speaking to one session."""

    @property
    def pid(self) -> int | None:
        """The child's pid once spawned."""

    async def start(self, spec: LaunchSpec, listener: DriverListener) -> Handshake:
        """Spawn the agent and run ``initialize``; raise ``DriverFailure`` when that fails."""

    async def new_session(self, cwd: str) -> str:
        """Run ``session/new`` and return the ACP session id."""

    async def load_session(self, acp_session_id: str, cwd: str) -> None:
        """Run ``session/load`` for a stored ACP session id."""

    async def prompt(self, acp_session_id: str, text: str) -> TurnOutcome:
        """Run one ``session/prompt`` turn to completion."""

    async def cancel(self, acp_session_id: str) -> None:
        """Send ``session/cancel`` (a notification; returns at once)."""

    async def close(self, grace: float) -> ExitInfo:
        """Close stdin, wait ``grace``, terminate, then kill; idempotent."""


DriverFactory = Callable[[], AgentDriver]
