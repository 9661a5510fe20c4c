"""Session features of the ``demo`` agent that real agents have: authentication, modes, models
and config options, slash commands, MCP servers, ``session/resume`` / ``/close`` / ``/fork`` and
elicitation. Each is off unless a command-line option of ``agh_nb.agents.demo`` turns it on
(see ``Features``), so the plain demo behaves as before.

Owns: ``Features`` (the options) and ``SessionFeatures``, a mixin of ``DemoAgent`` holding what
each feature remembers per ACP session. Like the demo itself it imports only the standard library
and ``acp``, never ``agh_nb``.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from typing import Any

import acp
from acp import RequestError
from acp.schema import (
    AgentCapabilities,
    AuthEnvVar,
    AuthMethodAgent,
    AvailableCommand,
    AvailableCommandInput,
    AvailableCommandsUpdate,
    ClientCapabilities,
    ConfigOptionUpdate,
    CurrentModeUpdate,
    ElicitationFormSessionMode,
    ElicitationSchema,
    ElicitationUrlSessionMode,
    EnvVarAuthMethod,
    McpCapabilities,
    SessionCapabilities,
    SessionCloseCapabilities,
    SessionConfigOptionBoolean,
    SessionConfigOptionSelect,
    SessionConfigSelectOption,
    SessionForkCapabilities,
    SessionMode,
    SessionModeState,
    SessionResumeCapabilities,
    TerminalAuthMethod,
    UnstructuredCommandInput,
)

MODES = (("ask", "Ask", "Asks before it edits"), ("code", "Code", "Edits freely"), ("plan", "Plan", "Plans only"))
MODELS = (("demo-small", "Demo small"), ("demo-large", "Demo large"))
COMMANDS = (("echo", "Say the input back", "text to echo"), ("mode", "Say the current mode", None))
FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Preferences",
    "properties": {
        "colour": {"type": "string", "title": "Colour", "enum": ["red", "green", "blue"]},
        "count": {"type": "integer", "title": "How many", "minimum": 1},
        "notify": {"type": "boolean", "title": "Notify me"},
    },
    "required": ["colour"],
}
"""The form ``ask-form`` sends (tests answer it)."""
UNKNOWN_SESSION_DETAILS = "No previous sessions found for this project."
"""What ``--forget-as internal`` answers with -32603 (gemini-cli 0.61.0's words)."""


@dataclass
class Features:
    """Which session features the demo offers (command-line options of the demo).

    Attributes:
        auth: ``env:VAR`` (an ``env_var`` method ``demo-key`` needing VAR), ``agent`` (a method
            ``demo-login`` described only by its name, like gemini's), or ``terminal`` (a
            ``demo-terminal`` login, listed only to clients that opt in to terminal auth).
        auth_at: where "authentication required" is answered until ``authenticate``:
            ``new`` (session/new, load, resume, fork) or ``prompt``.
        auth_code: the JSON-RPC code of that answer (-32000, or -32603 with the words in data).
        auth_always: a hostile agent: ``authenticate`` succeeds, yet it still needs it.
        modes: modes, a model and a boolean option (as ``modes`` and ``configOptions``).
        commands: slash commands ``/echo`` and ``/mode`` (``available_commands_update``).
        resume, close, fork: advertise and serve ``session/resume``, ``/close``, ``/fork``.
        ignore_eof: keep running after stdin closes while a session is open (not closed).
        forget_as: how an unknown session is refused on load/resume: ``not-found`` (-32002) or
            ``internal`` (-32603, gemini's words).
        mcp_http: advertise ``mcpCapabilities.http`` (the demo never connects to one).
    """

    auth: str | None = None
    auth_at: str = "new"
    auth_code: int = -32000
    auth_always: bool = False
    modes: bool = False
    commands: bool = False
    resume: bool = False
    close: bool = False
    fork: bool = False
    ignore_eof: bool = False
    forget_as: str = "not-found"
    mcp_http: bool = False


@dataclass
class _Settings:
    """The mode, model and options of one ACP session."""

    mode: str = MODES[0][0]
    model: str = MODELS[0][0]
    verbose: bool = False
    mcp_servers: list[Any] = field(default_factory=list)
    closed: bool = False


class SessionFeatures:
    """The ``DemoAgent`` side of the features (a mixin: ``DemoAgent`` calls its hooks)."""

    features: Features
    _client_caps: ClientCapabilities

    def _init_features(self, features: Features | None) -> None:
        self.features = features or Features()
        self._settings: dict[str, _Settings] = {}
        self._authenticated = False
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def conn(self) -> acp.Client:  # provided by DemoAgent
        raise NotImplementedError

    # -- initialize ---------------------------------------------------------------------------

    def capabilities(self, *, load_session: bool) -> AgentCapabilities:
        """The agent capabilities for the features turned on."""
        f = self.features
        return AgentCapabilities(
            load_session=load_session,
            mcp_capabilities=McpCapabilities(http=f.mcp_http, sse=False),
            session_capabilities=SessionCapabilities(
                resume=SessionResumeCapabilities() if f.resume else None,
                close=SessionCloseCapabilities() if f.close else None,
                fork=SessionForkCapabilities() if f.fork else None,
            ),
        )

    def auth_methods(self) -> list[Any] | None:
        """The ``authMethods`` of ``initialize`` (terminal login only for clients that opt in)."""
        auth = self.features.auth
        if auth is None:
            return None
        if auth.startswith("env:"):
            var = auth[4:]
            return [EnvVarAuthMethod(type="env_var", id="demo-key", name="Demo key", vars=[AuthEnvVar(name=var)])]
        if auth == "agent":
            return [AuthMethodAgent(id="demo-login", name="Demo login", description="The demo's own login")]
        caps = self._client_caps.auth
        if auth == "terminal" and caps is not None and caps.terminal:
            return [
                TerminalAuthMethod(
                    type="terminal", id="demo-terminal", name="Log in to the demo", args=["--login"],
                    description="Run `demo --login` in the terminal",
                )
            ]
        return []

    async def authenticate(self, method_id: str, **kwargs: Any) -> None:
        """``authenticate``: ``demo-key`` needs its variable set in the agent's environment."""
        auth = self.features.auth or ""
        if auth.startswith("env:") and method_id == "demo-key":
            var = auth[4:]
            if not os.environ.get(var):
                raise RequestError(-32000, f"{var} is not set", {"details": f"set {var} in the agent's environment"})
        elif not (auth == "agent" and method_id == "demo-login"):
            raise RequestError.invalid_params({"details": f"unknown auth method {method_id}"})
        self._authenticated = True

    def require_auth(self, where: str) -> None:
        """Answer "authentication required" at ``where`` until ``authenticate`` succeeded."""
        f = self.features
        if f.auth is None or f.auth_at != where or (self._authenticated and not f.auth_always):
            return
        if f.auth_code == -32000:
            raise RequestError(-32000, "Authentication required")
        raise RequestError(f.auth_code, "Internal error", {"details": "Authentication required: log in first"})

    # -- sessions -----------------------------------------------------------------------------

    def opened(self, session_id: str, mcp_servers: list[Any] | None, *, known: bool = True) -> dict[str, Any]:
        """Remember a session's MCP servers; return its ``modes``/``configOptions`` answer fields."""
        settings = self._settings.setdefault(session_id, _Settings())
        settings.mcp_servers = [_dump(s) for s in mcp_servers or []]
        settings.closed = False
        if self.features.commands:
            self._later(self._announce_commands(session_id))
        return self.state_fields(session_id)

    def state_fields(self, session_id: str) -> dict[str, Any]:
        """``modes`` and ``config_options`` of a session (empty without ``--modes``)."""
        if not self.features.modes:
            return {}
        s = self._settings.setdefault(session_id, _Settings())
        return {
            "modes": SessionModeState(
                current_mode_id=s.mode,
                available_modes=[SessionMode(id=i, name=n, description=d) for i, n, d in MODES],
            ),
            "config_options": self._options(s),
        }

    def _options(self, s: _Settings) -> list[Any]:
        return [
            SessionConfigOptionSelect(
                type="select", id="mode", name="Mode", category="mode", current_value=s.mode,
                options=[SessionConfigSelectOption(value=i, name=n) for i, n, _ in MODES],
            ),
            SessionConfigOptionSelect(
                type="select", id="model", name="Model", category="model", current_value=s.model,
                options=[SessionConfigSelectOption(value=i, name=n) for i, n in MODELS],
            ),
            SessionConfigOptionBoolean(type="boolean", id="verbose", name="Verbose", current_value=s.verbose),
        ]

    def unknown_session(self, session_id: str) -> RequestError:
        """How this agent says it does not know a session (``--forget-as``)."""
        if self.features.forget_as == "internal":
            return RequestError(-32603, "Internal error", {"details": UNKNOWN_SESSION_DETAILS})
        return RequestError.resource_not_found(session_id)

    async def set_session_mode(self, session_id: str, mode_id: str, **kwargs: Any) -> None:
        """``session/set_mode``; confirms with ``current_mode_update``."""
        s = self._known(session_id)
        if mode_id not in {m[0] for m in MODES}:
            raise RequestError.invalid_params({"details": f"no mode {mode_id}"})
        s.mode = mode_id
        await self.conn.session_update(
            session_id=session_id, update=CurrentModeUpdate(session_update="current_mode_update", current_mode_id=mode_id)
        )

    async def set_config_option(self, config_id: str, session_id: str, value: str | bool, **kwargs: Any) -> Any:
        """``session/set_config_option``; confirms with ``config_option_update`` and answers the options."""
        from acp.schema import SetSessionConfigOptionResponse

        s = self._known(session_id)
        if config_id == "mode" and value in {m[0] for m in MODES}:
            s.mode = str(value)
        elif config_id == "model" and value in {m[0] for m in MODELS}:
            s.model = str(value)
        elif config_id == "verbose" and isinstance(value, bool):
            s.verbose = value
        else:
            raise RequestError.invalid_params({"details": f"cannot set {config_id} to {value!r}"})
        options = self._options(s)
        await self.conn.session_update(
            session_id=session_id, update=ConfigOptionUpdate(session_update="config_option_update", config_options=options)
        )
        return SetSessionConfigOptionResponse(config_options=options)

    async def close_session(self, session_id: str, **kwargs: Any) -> None:
        """``session/close``: the session ends (with ``--ignore-eof``, the last one lets us exit)."""
        self._known(session_id).closed = True

    def open_sessions(self) -> int:
        """Sessions opened and not closed (``--ignore-eof`` keeps running while there are any)."""
        return sum(1 for s in self._settings.values() if not s.closed)

    def _known(self, session_id: str) -> _Settings:
        settings = self._settings.get(session_id)
        if settings is None:
            raise RequestError.resource_not_found(session_id)
        return settings

    async def _announce_commands(self, session_id: str) -> None:
        await asyncio.sleep(0)  # after the answer that opened the session
        commands = [
            AvailableCommand(
                name=name, description=description, input=AvailableCommandInput(UnstructuredCommandInput(hint=hint)) if hint else None
            )
            for name, description, hint in COMMANDS
        ]
        await self.conn.session_update(
            session_id=session_id,
            update=AvailableCommandsUpdate(session_update="available_commands_update", available_commands=commands),
        )

    def _later(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- what prompts can use -----------------------------------------------------------------

    def slash_reply(self, session_id: str, text: str) -> str:
        """The reply to a prompt starting with ``/`` (the text as the client sent it)."""
        name, _, rest = text.strip()[1:].partition(" ")
        if name == "echo":
            return f"/echo: {rest}"
        if name == "mode":
            settings = self._settings.get(session_id)
            return f"/mode: {settings.mode if settings else MODES[0][0]}"
        return f"unknown command /{name}"

    def mcp_report(self, session_id: str) -> str:
        """``mcp``: the MCP servers this session received, as JSON."""
        settings = self._settings.get(session_id)
        return json.dumps(settings.mcp_servers if settings else [], sort_keys=True)

    async def ask_form(self, session_id: str, url: bool = False) -> str:
        """``ask-form`` / ``ask-url``: an elicitation (form, or URL mode); returns the answer."""
        caps = self._client_caps.elicitation
        if caps is None:
            return "the client does not support elicitation"
        if url:
            mode: Any = ElicitationUrlSessionMode.model_validate(
                {"sessionId": session_id, "elicitationId": "demo-url", "url": "https://example.invalid/login"}
            )
        else:
            mode = ElicitationFormSessionMode(session_id=session_id, requested_schema=ElicitationSchema.model_validate(FORM_SCHEMA))
        response = await self.conn.create_elicitation(message="Pick a colour", mode=mode)
        content = getattr(response, "content", None)
        return json.dumps({"action": response.action, "content": content}, sort_keys=True)


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True) if hasattr(model, "model_dump") else model
