"""Opening the ACP session of a starting session, once the agent has answered ``initialize``.

Owns: ``StartOptions`` (what ``session new`` / ``resume`` / ``fork`` / ``auth`` ask of a start)
and ``SessionOpener``: the MCP servers checked against what the agent can take, ``authenticate``
by hand (``--auth``) or on demand (through ``core.auth.Authenticator``), then ``session/new``,
``session/resume`` (preferred when advertised), ``session/load`` or ``session/fork``, the
fallback to a fresh ACP session when the agent does not know the stored one, and the mode and
model the user asked for (or, on resume, the ones the session had). Imports nothing third-party.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agh_nb.config import McpServerDef
from agh_nb.core import acp_state
from agh_nb.core.auth import Authenticator
from agh_nb.core.ports import AgentDriver, DriverFailure, LaunchSpec, OpenedSession
from agh_nb.errors import CapabilityError
from agh_nb.events import JSON


@dataclass(frozen=True)
class StartOptions:
    """What a start asks beyond the agent definition.

    Attributes:
        mode, model: set right after the ACP session opens (``session new --mode/--model``).
        auth: a method to ``authenticate`` with before the session opens (``--auth``).
        fork_from: the ACP session id to fork instead of opening a new one.
    """

    mode: str | None = None
    model: str | None = None
    auth: str | None = None
    fork_from: str | None = None


@dataclass(frozen=True)
class Note:
    """A ``system`` event a start leaves in the session (resume fallback, fork, restored mode)."""

    title: str
    text: str
    runtime: JSON | None = None


@dataclass(frozen=True)
class Opened:
    """The opened ACP session: its id, the agent's state for it, and the notes to record."""

    acp_session_id: str
    state: JSON
    notes: list[Note]


def session_caps(caps: JSON) -> JSON:
    """The agent's ``sessionCapabilities`` (empty when it sent none)."""
    value = caps.get("sessionCapabilities")
    return value if isinstance(value, dict) else {}


def check_mcp_servers(servers: tuple[McpServerDef, ...], caps: JSON, agent_name: str) -> None:
    """Refuse an http/sse MCP server the agent's ``mcpCapabilities`` do not allow.

    Raises:
        CapabilityError: one line naming the server and its type.
    """
    mcp = caps.get("mcpCapabilities")
    mcp = mcp if isinstance(mcp, dict) else {}
    for server in servers:
        if server.transport != "stdio" and not mcp.get(server.transport):
            allowed = ["stdio", *(t for t in ("http", "sse") if mcp.get(t))]
            raise CapabilityError(
                f"agent {agent_name!r} cannot take MCP server {server.name!r} of type {server.transport} "
                f"(its mcpCapabilities allow: {', '.join(allowed)}); remove it from the AGENT.md mcp_servers"
            )


class SessionOpener:
    """Opens one session's ACP session on a driver that has run ``initialize``.

    Args:
        driver: the agent driver.
        spec: the launch spec (cwd, MCP servers).
        caps: the agent's capabilities as stored in the record (``loadSession``,
            ``sessionCapabilities``, ``mcpCapabilities``).
        auth: the session's authenticator.
        set_loading: told True while ``session/load`` replays the conversation.
        replayed: how many replayed updates were dropped (for the resume note).
    """

    def __init__(
        self,
        driver: AgentDriver,
        *,
        spec: LaunchSpec,
        caps: JSON,
        auth: Authenticator,
        set_loading: Callable[[bool], None],
        replayed: Callable[[], int],
    ) -> None:
        self._driver = driver
        self._spec = spec
        self._caps = caps
        self._auth = auth
        self._set_loading = set_loading
        self._replayed = replayed

    async def open(self, *, stored: str | None, resume: bool, previous: JSON, options: StartOptions) -> Opened:
        """Open the ACP session and bring it to the mode and model wanted.

        Raises:
            DriverFailure: classified (``auth_failure``, ``load_session_failure``...).
            CapabilityError: an MCP server type, an auth method, a mode or model the agent does
                not offer.
        """
        name = self._spec.agent_name
        check_mcp_servers(self._spec.mcp_servers, self._caps, name)
        if options.auth:
            await self._auth.authenticate(options.auth, f"authenticate {options.auth}")
        notes: list[Note] = []
        if options.fork_from:
            opened = await self._fork(options.fork_from)
        elif resume and stored:
            opened = await self._reopen(stored, notes)
        else:
            if resume:
                notes.append(Note("resume", "the session had no ACP session yet: started a fresh one"))
            opened = await self._auth.run(self._new, "session/new")
        state = acp_state.from_opened(previous if resume or options.fork_from else {}, opened.state)
        if resume or options.fork_from:
            state = await self._restore(opened.session_id, previous, state, notes)
        state = await self._apply(opened.session_id, state, mode=options.mode, model=options.model)
        return Opened(opened.session_id, state, notes)

    async def _new(self) -> OpenedSession:
        return await self._driver.new_session(self._spec.cwd, self._spec.mcp_servers)

    async def _fork(self, parent: str) -> OpenedSession:
        if session_caps(self._caps).get("fork") is None:
            raise CapabilityError(
                f"agent {self._spec.agent_name!r} cannot fork sessions (no sessionCapabilities.fork)"
            )
        return await self._auth.run(
            lambda: self._driver.fork_session(parent, self._spec.cwd, self._spec.mcp_servers), "session/fork"
        )

    async def _reopen(self, stored: str, notes: list[Note]) -> OpenedSession:
        """``session/resume`` when advertised (no replay), else ``session/load``, else a fresh
        session; a fresh one too when the agent says it does not know the stored session."""
        cwd, servers = self._spec.cwd, self._spec.mcp_servers
        if session_caps(self._caps).get("resume") is not None:
            method = "session/resume"
            call = lambda: self._driver.resume_session(stored, cwd, servers)  # noqa: E731
        elif self._caps.get("loadSession"):
            method = "session/load"
            call = lambda: self._driver.load_session(stored, cwd, servers)  # noqa: E731
        else:
            notes.append(
                Note(
                    "resume",
                    "the agent cannot load sessions (no loadSession or sessionCapabilities.resume): started a "
                    "fresh ACP session under the same AGH session id",
                )
            )
            return await self._auth.run(self._new, "session/new")
        self._set_loading(method == "session/load")
        try:
            opened: OpenedSession | None = await self._auth.run(call, method)
        except DriverFailure as failure:
            if not failure.unknown_session:
                raise
            opened = None
            code = f" ({failure.code})" if failure.code is not None else ""
            notes.append(
                Note(
                    "resume",
                    f"the agent no longer knows ACP session {stored}{code}: started a fresh ACP session under "
                    "the same AGH session id",
                    {"acp_session_id": stored, "code": failure.code},
                )
            )
        finally:
            self._set_loading(False)
        if opened is None:
            return await self._auth.run(self._new, "session/new")
        replayed = self._replayed()
        notes.append(
            Note(
                "resume",
                f"resumed ACP session {stored} with {method}"
                + (f" ({replayed} replayed updates not recorded again)" if replayed else ""),
            )
        )
        return opened

    async def _restore(self, acp_id: str, previous: JSON, state: JSON, notes: list[Note]) -> JSON:
        """Bring a resumed (or forked) session back to the mode and model it had; a value the
        agent no longer offers, or a set it refuses, leaves a note instead of failing the start."""
        wanted: dict[str, str] = {}
        for what, getter in (("mode", acp_state.modes), ("model", acp_state.models)):
            had, _ = getter(previous)
            now, offered = getter(state)
            if had and had != now:
                if had in offered:
                    wanted[what] = had
                else:
                    notes.append(Note("restore", f"the session's {what} {had!r} is no longer offered; it is now {now!r}"))
        if not wanted:
            return state
        try:
            state = await self._apply(acp_id, state, **wanted)
        except (DriverFailure, CapabilityError) as exc:
            notes.append(Note("restore", f"could not restore {', '.join(f'{k} {v}' for k, v in wanted.items())}: {exc}"))
            return state
        notes.append(Note("restore", "restored " + ", ".join(f"{k} {v}" for k, v in wanted.items())))
        return state

    async def _apply(self, acp_id: str, state: JSON, *, mode: str | None = None, model: str | None = None) -> JSON:
        changes = acp_state.plan_changes(state, agent_name=self._spec.agent_name, mode=mode, model=model)
        for change in changes:
            state = await apply_change(self._driver, acp_id, state, change)
        return state


async def apply_change(driver: AgentDriver, acp_id: str, state: JSON, change: acp_state.Change) -> JSON:
    """Make one change through the driver; returns the state it leaves."""
    answered = None
    if change.kind == "config":
        answered = await driver.set_config_option(acp_id, change.target, change.value)
    elif change.kind == "mode":
        await driver.set_mode(acp_id, str(change.value))
    else:
        await driver.set_model(acp_id, str(change.value))
    return acp_state.apply_change(state, change, answered)
