"""Configuration: ``AGH_HOME``, ``config.toml`` (SPEC 7) and agent definitions (SPEC 1).

Owns: ``Settings`` (validated config), ``parse_duration``, ``AgentDefinition`` and the lookup of
AGENT.md files (workspace wins over ``$AGH_HOME``, which wins over the built-ins shipped in
``agh_nb/agents/presets``). Imports only ``errors`` and ``events``; reads files, spawns nothing.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml

from agh_nb.errors import AgentNotFoundError, ConfigError

PERMISSION_MODES = ("deny-all", "approve-reads", "approve-all")
DEFAULT_PERMISSION_MODE = "approve-reads"

SANDBOX_MODES = ("auto", "off", "required")
"""``[sandbox] mode``: ``auto`` sandboxes wherever bubblewrap works, ``off`` never, ``required``
refuses to start an agent it cannot sandbox."""
AGENT_STATE_PATHS = ("~/.claude", "~/.claude.json", "~/.claude.json.backup", "~/.codex", "~/.gemini")
"""Where the agents we know keep their logins and sessions (REAL-AGENTS.md): writable inside the
sandbox when they exist. ``[sandbox] writable`` replaces the list; an AGENT.md adds to it."""

# [0-9], not \d: \d also matches other scripts' digits ("٣"), which float() would then accept.
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def agh_home(env: Mapping[str, str] | None = None) -> Path:
    """Return ``$AGH_HOME`` (default ``~/.agh-nb``) as an absolute path; it is not created."""
    env = os.environ if env is None else env
    raw = env.get("AGH_HOME") or "~/.agh-nb"
    return Path(raw).expanduser().resolve()


def parse_duration(value: str | int | float, *, name: str = "duration") -> float:
    """Parse ``"250ms"``, ``"30s"``, ``"5m"``, ``"1h"`` (or a number of seconds) into seconds.

    Raises:
        ConfigError: naming ``name`` when the value is not a duration.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{name}: expected a duration like \"30s\" or \"5m\", got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ConfigError(f"{name}: a duration cannot be negative, got {value!r}")
        return float(value)
    if value.strip() == "0":
        return 0.0
    match = _DURATION.match(value)
    if not match:
        raise ConfigError(f"{name}: expected a duration like \"250ms\", \"30s\" or \"5m\", got {value!r}")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_since(value: str, *, now: datetime | None = None) -> datetime:
    """Parse ``--since``: an RFC3339 timestamp or a duration back from now (``5m``).

    Raises:
        ConfigError: when the value is neither.
    """
    now = now or datetime.now(timezone.utc)
    try:
        return now - timedelta(seconds=parse_duration(value, name="--since"))
    except ConfigError:
        pass
    except (OverflowError, ValueError):  # a duration reaching back past year 1
        raise ConfigError(f"--since: {value!r} reaches back further than a date can") from None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        # In UTC, as stored: a time whose UTC falls outside years 1..9999 is refused here.
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise ConfigError(
            f"--since: expected an RFC3339 time (2026-01-02T15:04:05Z) or a duration (5m), got {value!r}"
        ) from None


@dataclass(frozen=True)
class Settings:
    """Validated ``config.toml``; durations in seconds (0 means off).

    Supervision is on by default (SPEC 7): a turn silent for 2 minutes gets one warning, every
    30 seconds a progress event, and after 10 minutes of silence it is cancelled.
    """

    permission_mode: str | None = None
    approval_timeout: float = 300.0
    session_timeout: float = 0.0
    inactivity_timeout: float = 600.0
    inactivity_warning_after: float = 120.0
    timeout_cancel_grace: float = 10.0
    progress_notify_interval: float = 30.0
    queue_cap: int = 16
    stale_after: float = 900.0
    sandbox_mode: str = "auto"
    sandbox_network: bool = True
    sandbox_bwrap: str | None = None
    """The bubblewrap binary (default: ``bwrap`` on the ``PATH``)."""
    sandbox_writable: tuple[str, ...] = AGENT_STATE_PATHS


# section -> key -> (Settings attribute, kind)
_SCHEMA: dict[str, dict[str, tuple[str, str]]] = {
    "permissions": {"mode": ("permission_mode", "mode"), "approval_timeout": ("approval_timeout", "duration")},
    "session.limits": {"timeout": ("session_timeout", "duration")},
    "session.supervision": {
        "inactivity_timeout": ("inactivity_timeout", "duration"),
        "inactivity_warning_after": ("inactivity_warning_after", "duration"),
        "timeout_cancel_grace": ("timeout_cancel_grace", "duration"),
        "progress_notify_interval": ("progress_notify_interval", "duration"),
    },
    "session.busy_input": {"queue_cap": ("queue_cap", "count")},
    "health": {"stale_after": ("stale_after", "duration")},
    "sandbox": {
        "mode": ("sandbox_mode", "sandbox_mode"),
        "network": ("sandbox_network", "bool"),
        "bwrap": ("sandbox_bwrap", "path"),
        "writable": ("sandbox_writable", "paths"),
    },
}


def load_settings(home: Path) -> Settings:
    """Read and validate ``home/config.toml``; a missing file gives the defaults.

    Raises:
        ConfigError: naming the file and key for a TOML error, an unknown key or a bad value.
    """
    path = home / "config.toml"
    if not path.exists():
        return Settings()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    values: dict[str, Any] = {}
    for section, keys in _flatten_sections(data, path).items():
        schema = _SCHEMA.get(section)
        if schema is None:
            raise ConfigError(f"{path}: unknown section [{section}]")
        for key, raw in keys.items():
            if key not in schema:
                raise ConfigError(f"{path}: unknown key {key!r} in [{section}]")
            attr, kind = schema[key]
            values[attr] = _convert(raw, kind, f"{path}: [{section}] {key}")
    return Settings(**values)


def _flatten_sections(data: dict[str, Any], path: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}

    def walk(prefix: str, table: dict[str, Any]) -> None:
        leaves = {k: v for k, v in table.items() if not isinstance(v, dict)}
        if leaves:
            if not prefix:
                raise ConfigError(f"{path}: unknown top-level key {next(iter(leaves))!r}")
            out[prefix] = leaves
        for k, v in table.items():
            if isinstance(v, dict):
                walk(f"{prefix}.{k}" if prefix else k, v)

    walk("", data)
    return out


def _convert(raw: Any, kind: str, label: str) -> Any:
    if kind == "duration":
        if not isinstance(raw, (str, int, float)):
            raise ConfigError(f"{label}: expected a duration string like \"30s\", got {raw!r}")
        return parse_duration(raw, name=label)
    if kind == "mode":
        if raw not in PERMISSION_MODES:
            raise ConfigError(f"{label}: expected one of {', '.join(PERMISSION_MODES)}, got {raw!r}")
        return raw
    if kind == "sandbox_mode":
        if raw not in SANDBOX_MODES:
            raise ConfigError(f"{label}: expected one of {', '.join(SANDBOX_MODES)}, got {raw!r}")
        return raw
    if kind == "bool":
        if not isinstance(raw, bool):
            raise ConfigError(f"{label}: expected true or false, got {raw!r}")
        return raw
    if kind == "path":
        if not isinstance(raw, str) or not raw.strip() or "\x00" in raw:
            raise ConfigError(f"{label}: expected a file path, got {raw!r}")
        return raw
    if kind == "paths":
        return _state_paths(raw, label)
    if kind == "count":
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
            raise ConfigError(f"{label}: expected a positive integer, got {raw!r}")
        return raw
    raise AssertionError(kind)


def _state_paths(raw: Any, label: str) -> tuple[str, ...]:
    """Validate a list of agent-state paths: each under the user's home (``~/...``)."""
    if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
        raise ConfigError(f"{label}: expected a list of paths like [\"~/.claude\"], got {raw!r}")
    for path in raw:
        parts = path.split("/")
        if not path.startswith("~/") or len(path) < 3 or ".." in parts or "\x00" in path:
            raise ConfigError(
                f"{label}: {path!r} is not a path under the home directory (write it as ~/NAME, no '..')"
            )
    return tuple(raw)


@dataclass(frozen=True)
class SandboxOverride:
    """An AGENT.md's ``sandbox:`` key: a mode, or a mapping of ``mode``, ``network``, ``writable``.

    Attributes:
        mode: overrides ``[sandbox] mode`` when set.
        network: overrides ``[sandbox] network`` when set.
        writable: agent-state paths (``~/...``) added to ``[sandbox] writable``; when missing,
            one with a trailing ``/`` is created as a directory (0700), one ending in ``.json``
            as a file holding ``{}`` (0600), before the agent starts.
    """

    mode: str | None = None
    network: bool | None = None
    writable: tuple[str, ...] = ()


def _yaml_mode(raw: Any) -> Any:
    # YAML 1.1 reads an unquoted off/no as false and on/yes as true.
    return {False: "off", True: "auto"}.get(raw, raw) if isinstance(raw, bool) else raw


def _sandbox_override(raw: Any, path: Path) -> SandboxOverride | None:
    label = f"{path}: 'sandbox'"
    raw = _yaml_mode(raw)
    if raw is None:
        return None
    if isinstance(raw, str):
        return SandboxOverride(mode=_convert(raw, "sandbox_mode", label))
    if not isinstance(raw, dict):
        raise ConfigError(f"{label} must be one of {', '.join(SANDBOX_MODES)} or a mapping (mode, network, writable)")
    unknown = set(raw) - {"mode", "network", "writable"}
    if unknown:
        raise ConfigError(f"{label}: unknown key {sorted(unknown)[0]!r} (known: mode, network, writable)")
    return SandboxOverride(
        mode=_convert(_yaml_mode(raw["mode"]), "sandbox_mode", f"{label} mode") if "mode" in raw else None,
        network=_convert(raw["network"], "bool", f"{label} network") if "network" in raw else None,
        writable=_state_paths(raw.get("writable") or [], f"{label} writable"),
    )


# ---------------------------------------------------------------------------------------------
# Agent definitions
# ---------------------------------------------------------------------------------------------

PRESETS_DIR = Path(__file__).parent / "agents" / "presets"
_AGENT_KEYS = {"name", "command", "env", "permissions", "description", "mcp_servers", "auth", "sandbox"}
OPTIONAL_SUFFIX = "?"
"""Ends an ``env:``/``vault:`` ref whose absence is no error: ``env:ANTHROPIC_API_KEY?`` is left out
of the agent's environment when the variable is unset (the agent may be logged in another way)."""
MCP_TRANSPORTS = ("stdio", "http", "sse")
_MCP_KEYS = {"name", "type", "command", "args", "env", "url", "headers"}


def optional_ref(value: str) -> tuple[str, bool]:
    """Split an AGENT.md value into ``(value, optional)``: a ``env:``/``vault:`` ref ending in
    ``?`` is optional, and the ``?`` is not part of the ref."""
    if value.startswith(("env:", "vault:")) and value.endswith(OPTIONAL_SUFFIX):
        return value[: -len(OPTIONAL_SUFFIX)], True
    return value, False


@dataclass(frozen=True)
class McpServerDef:
    """One MCP server of an AGENT.md ``mcp_servers`` list (SPEC 7), passed to the agent on
    ``session/new``, ``session/load``, ``session/resume`` and ``session/fork``.

    Attributes:
        name: the server's name (what the agent calls it).
        transport: ``stdio`` (the agent spawns ``command``), ``http`` or ``sse`` (at ``url``).
        command, args: the stdio server's program and arguments.
        env: the stdio server's environment, ``(name, value)``; values may be refs.
        url: the http/sse server's address.
        headers: the http/sse server's headers, ``(name, value)``; values may be refs.
    """

    name: str
    transport: str = "stdio"
    command: str = ""
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    url: str = ""
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The definition as shown to users: names of env variables and headers, never values."""
        doc: dict[str, Any] = {"name": self.name, "type": self.transport}
        if self.transport == "stdio":
            doc |= {"command": self.command, "args": list(self.args), "env": [k for k, _ in self.env]}
        else:
            doc |= {"url": self.url, "headers": [k for k, _ in self.headers]}
        return doc


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # always fullmatch: "$" would let "a\n" in


def path_within(path: str, root: str) -> bool:
    """True when ``path`` is ``root`` or below it (both real paths: no ``..``, no symlink)."""
    root = root.rstrip("/") or "/"
    return path == root or path.startswith(root if root == "/" else root + "/")


@dataclass(frozen=True)
class AgentDefinition:
    """One agent definition parsed from an AGENT.md front matter.

    Attributes:
        name: the agent's name.
        command: argv to spawn (``{python}`` expands to this interpreter).
        env: extra environment; values may be ``env:NAME`` or ``vault:...`` refs.
        permissions: the definition's permission mode, if any.
        description: the free text after the front matter.
        source: the AGENT.md the definition came from.
        mcp_servers: MCP servers handed to the agent with each ACP session.
        auth: the ACP ``authenticate`` method id to use when the agent asks for authentication
            and none of its ``env_var`` methods fits (e.g. gemini's ``gemini-api-key``).
        sandbox: the definition's ``sandbox:`` override, if any.
    """

    name: str
    command: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    permissions: str | None = None
    description: str = ""
    source: str = ""
    mcp_servers: tuple[McpServerDef, ...] = ()
    auth: str | None = None
    sandbox: SandboxOverride | None = None

    def argv(self) -> tuple[str, ...]:
        """Return the command with ``{python}`` replaced by the running interpreter."""
        return tuple(sys.executable if part == "{python}" else part for part in self.command)

    def in_workspace(self, workspace: str) -> bool:
        """Whether this AGENT.md lies inside ``workspace`` (a real path).

        Agents can write there (and so can the authors of a repository one opens), so such a
        definition may only tighten what the user configured (its sandbox and its permission
        mode) and is handed no secret (its ``env:``/``vault:`` refs are refused).
        """
        return bool(self.source) and path_within(os.path.realpath(self.source), workspace)

    def secret_refs(self) -> list[str]:
        """The ``env:``/``vault:`` refs among this definition's values (its env, and its MCP
        servers' env and headers), in order; optional refs without their ``?``."""
        values = [*self.env.values()]
        for server in self.mcp_servers:
            values += [v for _, v in server.env] + [v for _, v in server.headers]
        refs = [optional_ref(v)[0] for v in values]
        return [ref for ref in refs if ref.startswith(("env:", "vault:"))]


def parse_agent_md(path: Path) -> AgentDefinition:
    """Parse one AGENT.md (YAML front matter between ``---`` lines, then free text).

    Raises:
        ConfigError: naming the file and the field that is missing or wrong.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read agent definition ({exc.strerror})") from exc
    if not text.startswith("---"):
        raise ConfigError(f"{path}: an AGENT.md must start with YAML front matter between '---' lines")
    parts = text.split("\n---", 1)
    if len(parts) != 2:
        raise ConfigError(f"{path}: the YAML front matter is not closed with a '---' line")
    try:
        meta = yaml.safe_load(parts[0][3:]) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: front matter is not valid YAML ({exc.__class__.__name__})") from exc
    if not isinstance(meta, dict):
        raise ConfigError(f"{path}: front matter must be a mapping of keys to values")
    unknown = set(meta) - _AGENT_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown key {sorted(unknown)[0]!r} in front matter")
    name = meta.get("name") or path.parent.name
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise ConfigError(f"{path}: 'name' must be letters, digits, '.', '_' or '-', got {name!r}")
    command = meta.get("command")
    if isinstance(command, str):
        argv = tuple(shlex.split(command))
    elif isinstance(command, list) and all(isinstance(c, str) for c in command):
        argv = tuple(command)
    else:
        raise ConfigError(f"{path}: 'command' must be a string or a list of strings")
    if not argv:
        raise ConfigError(f"{path}: 'command' is empty")
    env = meta.get("env") or {}
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise ConfigError(f"{path}: 'env' must map names to string values or env:/vault: refs")
    permissions = meta.get("permissions")
    if permissions is not None and permissions not in PERMISSION_MODES:
        raise ConfigError(f"{path}: 'permissions' must be one of {', '.join(PERMISSION_MODES)}, got {permissions!r}")
    auth = meta.get("auth")
    if auth is not None and (not isinstance(auth, str) or not auth.strip()):
        raise ConfigError(f"{path}: 'auth' must be the id of one of the agent's auth methods (a string)")
    return AgentDefinition(
        name=name,
        command=argv,
        env=dict(env),
        permissions=permissions,
        description=parts[1].lstrip("-").strip(),
        source=str(path),
        mcp_servers=_parse_mcp_servers(meta.get("mcp_servers"), path),
        auth=auth.strip() if auth else None,
        sandbox=_sandbox_override(meta.get("sandbox"), path),
    )


def _parse_mcp_servers(raw: Any, path: Path) -> tuple[McpServerDef, ...]:
    """Validate an AGENT.md ``mcp_servers`` list (names the entry and the field that is wrong)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"{path}: 'mcp_servers' must be a list of servers (name, command... or name, type, url)")
    servers: list[McpServerDef] = []
    for index, entry in enumerate(raw):
        where = f"{path}: mcp_servers[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a mapping (name, command, args, env; or name, type, url, headers)")
        unknown = set(entry) - _MCP_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(_MCP_KEYS))})")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where}: 'name' must be a non-empty string")
        if name in {s.name for s in servers}:
            raise ConfigError(f"{where}: a server named {name!r} is listed twice")
        transport = entry.get("type", "stdio")
        if transport not in MCP_TRANSPORTS:
            raise ConfigError(f"{where} ({name}): 'type' must be one of {', '.join(MCP_TRANSPORTS)}, got {transport!r}")
        if transport == "stdio":
            for key in ("url", "headers"):
                if key in entry:
                    raise ConfigError(f"{where} ({name}): {key!r} is for http/sse servers; a stdio server has command, args, env")
            command, args = _mcp_command(entry, where, name)
            servers.append(
                McpServerDef(name=name, command=command, args=args, env=_string_map(entry.get("env"), f"{where} ({name}) env"))
            )
        else:
            for key in ("command", "args", "env"):
                if key in entry:
                    raise ConfigError(f"{where} ({name}): {key!r} is for stdio servers; an {transport} server has url, headers")
            url = entry.get("url")
            if not isinstance(url, str) or not url.strip():
                raise ConfigError(f"{where} ({name}): an {transport} server needs a 'url'")
            servers.append(
                McpServerDef(
                    name=name, transport=transport, url=url.strip(),
                    headers=_string_map(entry.get("headers"), f"{where} ({name}) headers"),
                )
            )
    return tuple(servers)


def _mcp_command(entry: dict[str, Any], where: str, name: str) -> tuple[str, tuple[str, ...]]:
    command = entry.get("command")
    if isinstance(command, str) and command.strip():
        argv = shlex.split(command)
    elif isinstance(command, list) and command and all(isinstance(c, str) for c in command):
        argv = list(command)
    else:
        raise ConfigError(f"{where} ({name}): a stdio server needs a 'command' (a string or a list of strings)")
    args = entry.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ConfigError(f"{where} ({name}): 'args' must be a list of strings")
    return argv[0], tuple(argv[1:]) + tuple(args)


def _string_map(raw: Any, where: str) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise ConfigError(f"{where} must map names to string values or env:/vault: refs")
    return tuple(raw.items())


def agent_search_dirs(home: Path, workspace: Path | None) -> list[Path]:
    """Return the directories searched for ``<name>/AGENT.md``, highest priority first."""
    dirs = []
    if workspace is not None:
        dirs.append(workspace / ".agh" / "agents")
    dirs.append(home / "agents")
    dirs.append(PRESETS_DIR)
    return dirs


def check_agent_name(name: str) -> str:
    """Return ``name`` if it can name an agent directory, before any path is built from it.

    A name is letters, digits, ``.``, ``_`` and ``-`` (at most 64, starting with a letter or
    digit), without ``..``: no path separator, no parent step, nothing that could make
    ``<dir>/<name>/AGENT.md`` point outside ``<dir>``.

    Raises:
        AgentNotFoundError: one line naming the name and what is allowed.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise AgentNotFoundError(
            f"invalid agent name {name!r}: an agent name is letters, digits, '.', '_' or '-' "
            "(up to 64, no path separators or '..'); list the agents in $AGH_HOME/agents",
            agent_name=str(name),
        )
    return name


def find_agent(name: str, *, home: Path, workspace: Path | None) -> AgentDefinition:
    """Resolve an agent by name (workspace, then ``$AGH_HOME``, then built-ins).

    Raises:
        AgentNotFoundError: for a name that is not a valid agent name (checked before any path
            is joined), or listing the known names when none matches.
        ConfigError: when the matching AGENT.md is malformed.
    """
    check_agent_name(name)
    for base in agent_search_dirs(home, workspace):
        candidate = base / name / "AGENT.md"
        if candidate.is_file():
            return parse_agent_md(candidate)
    known = ", ".join(sorted(list_agent_names(home=home, workspace=workspace))) or "none"
    raise AgentNotFoundError(
        f"unknown agent {name!r}: no {name}/AGENT.md in the workspace, $AGH_HOME/agents or the "
        f"built-ins (known: {known})",
        agent_name=name,
    )


def list_agent_names(*, home: Path, workspace: Path | None) -> set[str]:
    """Return every agent name visible from ``workspace``."""
    names: set[str] = set()
    for base in agent_search_dirs(home, workspace):
        if base.is_dir():
            names.update(p.parent.name for p in base.glob("*/AGENT.md"))
    return names
