"""Interfaces the session core needs, defined where they are used (adapters implement them).

Owns: ``EventStore`` (durable, ordered event log + session rows), ``AgentDriver`` (one ACP agent
subprocess) and the small values crossing those seams. Imports no third-party library.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from agh_nb.config import McpServerDef
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

    def queue(self, record: SessionRecord, draft: EventDraft) -> None:
        """``append`` without building the ``Event`` it returns: the per-update hot path."""

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
        self, session_id: str | None, after_sequence: int, callback: EventCallback, *, inline: bool = False
    ) -> Subscription:
        """Deliver committed events with sequence > ``after_sequence`` (backlog, then live).

        ``session_id=None`` subscribes to every session (then ``after_sequence`` must be 0 and
        only live events are delivered). Live callbacks run on a delivery thread of the
        subscription's own, never on the thread that commits: a slow one delays only itself.
        ``inline``: for a callback that only hands the batch on and never blocks (the SSE feed's
        loop hop), live batches are given to it on the committing thread, which spares a
        thread wake-up per subscriber and commit.
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
    """``(ref, value)`` of every ``env`` value that came from a ``vault:`` or ``env:`` ref, and of
    every MCP server env or header value that did."""
    mcp_servers: tuple[McpServerDef, ...] = field(default=(), repr=False)
    """The AGENT.md ``mcp_servers``, refs resolved (so values may be secrets)."""
    auth_method: str | None = None
    """The AGENT.md ``auth``: the method to authenticate with when no ``env_var`` method fits."""
    session_id: str | None = None
    """The AGH session: every process spawned for it carries it (``PROCESS_TAG``)."""
    state_dir: str | None = None
    """The session's directory, where the processes spawned for it are recorded."""
    sandbox: SandboxPolicy | None = None
    """How the agent and its terminals are confined (None: not at all)."""


@dataclass(frozen=True)
class Handshake:
    """What ``initialize`` told us about the agent (``auth_methods`` in their wire form)."""

    protocol_version: int
    agent_caps: JSON
    agent_info: JSON | None
    auth_methods: list[JSON] = field(default_factory=list)
    sandboxed: bool = False
    """True when the agent (and so its terminals) runs inside the sandbox."""


@dataclass(frozen=True)
class OpenedSession:
    """What ``session/new``, ``/load``, ``/resume`` or ``/fork`` answered: the ACP session id and
    the session state the agent reported (``modes``, ``models``, ``configOptions``, wire form)."""

    session_id: str
    state: JSON = field(default_factory=dict)


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
    running: bool = False
    """True when the close gave up on the process: it had not exited even after SIGKILL (the
    process book still names it, so crash repair ends it later)."""


class DriverFailure(AghError):
    """Raised by a driver for a classified failure (kind from SPEC 2, summary for the user).

    Attributes:
        code: the JSON-RPC code of the agent's error answer, if one caused it.
        auth_required: the agent answered "authentication required" (decided by the driver from
            the code and the error's data, see ``adapters.acp_errors``).
        unknown_session: the agent answered that it does not know the ACP session asked for.
    """

    def __init__(
        self,
        kind: FailureKind,
        summary: str,
        *,
        code: int | None = None,
        auth_required: bool = False,
        unknown_session: bool = False,
        **fields: object,
    ) -> None:
        super().__init__(summary, kind=kind.value, code=code, **fields)
        self.kind = kind
        self.summary = summary
        self.code = code
        self.auth_required = auth_required
        self.unknown_session = unknown_session


class DriverListener(Protocol):
    """What a driver reports to its session, always on the runtime loop."""

    def on_update(self, event_type: EventType, fields: JSON) -> None:
        """One mapped ``session/update`` (fields include ``raw``, the payload as received)."""

    def on_protocol_error(self, kind: FailureKind, summary: str) -> None:
        """The agent broke the protocol (garbage on stdout: ``protocol_failure``) or its channel
        (closed stdout and lives on: ``transport_failure``); ``kind`` says which."""

    def on_exit(self, info: ExitInfo) -> None:
        """The agent process ended (for any reason)."""

    def on_stderr(self, data: bytes) -> None:
        """A chunk the agent wrote to its stderr (the session keeps its log)."""

    async def on_elicitation(self, message: str, schema: JSON, scope: JSON) -> JSON:
        """Answer a form-mode ``elicitation/create``: ``{"action": "accept", "content": {...}}``,
        ``{"action": "decline"}`` or ``{"action": "cancel"}``. ``scope`` holds ``sessionId`` /
        ``toolCallId`` or ``requestId`` as the agent sent them."""

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

    async def authenticate(self, method_id: str) -> None:
        """Run ``authenticate`` with one of the agent's methods (``auth_failure`` when refused)."""

    async def new_session(self, cwd: str, mcp_servers: tuple[McpServerDef, ...] = ()) -> OpenedSession:
        """Run ``session/new``."""

    async def load_session(
        self, acp_session_id: str, cwd: str, mcp_servers: tuple[McpServerDef, ...] = ()
    ) -> OpenedSession:
        """Run ``session/load`` for a stored ACP session id (the agent replays it)."""

    async def resume_session(
        self, acp_session_id: str, cwd: str, mcp_servers: tuple[McpServerDef, ...] = ()
    ) -> OpenedSession:
        """Run ``session/resume`` (like load, without replay)."""

    async def fork_session(
        self, acp_session_id: str, cwd: str, mcp_servers: tuple[McpServerDef, ...] = ()
    ) -> OpenedSession:
        """Run ``session/fork``: a new ACP session that starts as a copy of the given one."""

    async def set_mode(self, acp_session_id: str, mode_id: str) -> None:
        """Run ``session/set_mode``."""

    async def set_config_option(self, acp_session_id: str, config_id: str, value: str | bool) -> list[JSON] | None:
        """Run ``session/set_config_option``; returns the agent's config options when it says them."""

    async def set_model(self, acp_session_id: str, model_id: str) -> None:
        """Run ``session/set_model`` (for agents that report ``models`` but no model option)."""

    async def prompt(self, acp_session_id: str, text: str) -> TurnOutcome:
        """Run one ``session/prompt`` turn to completion."""

    async def cancel(self, acp_session_id: str) -> None:
        """Send ``session/cancel`` (a notification; returns at once)."""

    def quiesce(self) -> None:
        """Stop recording the agent's ``session/update`` notifications (host shutdown): they are
        read and dropped, so the answers a stop waits for are not queued behind them."""

    @property
    def discarded_updates(self) -> int:
        """How many ``session/update`` notifications were dropped since ``quiesce``."""

    async def close(self, grace: float) -> ExitInfo:
        """Close the agent's sessions (``session/close`` where advertised), close stdin, wait
        ``grace``, terminate the process group, wait ``grace``, kill it, wait ``grace``; kill
        what is left of the group; idempotent. Bounded: never waits much more than 5 x ``grace``
        (+ ``session/close``), and says ``running`` when the process outlived it."""


DriverFactory = Callable[[], AgentDriver]
