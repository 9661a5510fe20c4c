"""config.toml (SPEC 7) and AGENT.md (SPEC 1): bad input is reported by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from agh_nb.config import find_agent, load_settings, optional_ref, parse_agent_md, parse_duration
from agh_nb.errors import AgentNotFoundError, ConfigError


@pytest.mark.parametrize(("text", "seconds"), [("250ms", 0.25), ("30s", 30), ("5m", 300), ("1h", 3600), ("0", 0)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_full_config_loads(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        '[permissions]\nmode = "deny-all"\napproval_timeout = "2m"\n'
        '[session.limits]\ntimeout = "1h"\n'
        '[session.supervision]\ninactivity_timeout = "5m"\ninactivity_warning_after = "1m"\n'
        'timeout_cancel_grace = "10s"\nprogress_notify_interval = "30s"\n'
        "[session.busy_input]\nqueue_cap = 4\n"
        '[health]\nstale_after = "10m"\n'
    )
    s = load_settings(tmp_path)
    assert (s.permission_mode, s.approval_timeout, s.session_timeout, s.queue_cap, s.stale_after) == (
        "deny-all", 120, 3600, 4, 600
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param('[permissions]\nmode = "yolo"\n', "mode", id="bad-mode"),
        pytest.param('[permissions]\nmood = "x"\n', "unknown key 'mood'", id="unknown-key"),
        pytest.param('[sessions]\nx = 1\n', r"unknown section \[sessions\]", id="unknown-section"),
        pytest.param('[health]\nstale_after = "soon"\n', "stale_after", id="bad-duration"),
        pytest.param("[session.busy_input]\nqueue_cap = 0\n", "queue_cap", id="bad-count"),
        pytest.param("[permissions\n", "not valid TOML", id="not-toml"),
    ],
)
def test_bad_config_is_named(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(tmp_path)
    assert str(tmp_path / "config.toml") in str(caught.value)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_agent_md_and_lookup_order(tmp_path: Path) -> None:
    home, ws = tmp_path / "home", tmp_path / "ws"
    write(home / "agents" / "a" / "AGENT.md", "---\nname: a\ncommand: home-cmd\n---\n")
    write(ws / ".agh" / "agents" / "a" / "AGENT.md", "---\nname: a\ncommand: [ws-cmd, --x]\npermissions: deny-all\n---\nbody")
    found = find_agent("a", home=home, workspace=ws)
    assert found.command == ("ws-cmd", "--x") and found.permissions == "deny-all" and found.description == "body"
    assert find_agent("demo", home=home, workspace=ws).argv()[1:] == ("-m", "agh_nb.agents.demo")
    with pytest.raises(AgentNotFoundError, match="known: .*a"):
        find_agent("zzz", home=home, workspace=ws)


def test_agent_md_auth_mcp_servers_and_optional_refs(tmp_path: Path) -> None:
    path = write(
        tmp_path / "x" / "AGENT.md",
        "---\ncommand: x\nauth: my-login\nenv:\n  K: env:K?\nmcp_servers:\n"
        "  - name: files\n    command: [mcp-files, --root]\n    args: [.]\n    env: {T: 'vault:mcp/files'}\n"
        "  - name: web\n    type: sse\n    url: http://127.0.0.1:9/sse\n    headers: {Authorization: env:H}\n---\n",
    )
    agent = parse_agent_md(path)
    assert agent.auth == "my-login" and optional_ref(agent.env["K"]) == ("env:K", True)
    assert optional_ref("literal?") == ("literal?", False)
    files, web = agent.mcp_servers
    assert (files.transport, files.command, files.args, files.env) == ("stdio", "mcp-files", ("--root", "."), (("T", "vault:mcp/files"),))
    assert (web.transport, web.url, web.headers) == ("sse", "http://127.0.0.1:9/sse", (("Authorization", "env:H"),))
    assert web.to_dict() == {"name": "web", "type": "sse", "url": "http://127.0.0.1:9/sse", "headers": ["Authorization"]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("name: x\n", "front matter", id="no-front-matter"),
        pytest.param("---\nname: x\n", "not closed", id="unclosed"),
        pytest.param("---\nname: x\n---\n", "'command'", id="no-command"),
        pytest.param("---\ncommand: x\ncolour: red\n---\n", "unknown key 'colour'", id="unknown-key"),
        pytest.param("---\ncommand: x\npermissions: all\n---\n", "'permissions'", id="bad-permissions"),
        pytest.param("---\ncommand: x\nenv: [a]\n---\n", "'env'", id="bad-env"),
        pytest.param("---\ncommand: x\nauth: [a]\n---\n", "'auth'", id="bad-auth"),
        pytest.param("---\ncommand: x\nmcp_servers: {a: 1}\n---\n", "'mcp_servers' must be a list", id="mcp-not-a-list"),
        pytest.param("---\ncommand: x\nmcp_servers:\n  - command: y\n---\n", r"mcp_servers\[0\]: 'name'", id="mcp-no-name"),
        pytest.param("---\ncommand: x\nmcp_servers:\n  - name: s\n    type: ws\n    url: u\n---\n", r"\(s\): 'type' must be one of stdio, http, sse", id="mcp-bad-type"),
        pytest.param("---\ncommand: x\nmcp_servers:\n  - name: s\n    type: http\n---\n", "needs a 'url'", id="mcp-http-no-url"),
        pytest.param("---\ncommand: x\nmcp_servers:\n  - name: s\n---\n", "needs a 'command'", id="mcp-stdio-no-command"),
        pytest.param("---\ncommand: x\nmcp_servers:\n  - name: s\n    command: y\n    url: u\n---\n", "'url' is for http/sse", id="mcp-stdio-with-url"),
        pytest.param("---\ncommand: x\nmcp_servers:\n  - name: s\n    command: y\n    env: {A: 1}\n---\n", r"\(s\) env must map", id="mcp-bad-env"),
        pytest.param("---\ncommand: x\nmcp_servers:\n  - name: s\n    command: y\n  - name: s\n    command: z\n---\n", "listed twice", id="mcp-twice"),
    ],
)
def test_bad_agent_md_is_named(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "x" / "AGENT.md", text)
    with pytest.raises(ConfigError, match=message):
        parse_agent_md(path)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("../../../evil", id="parent-steps-to-a-real-agent"),
        pytest.param("{tmp}/evil", id="absolute-path-to-a-real-agent"),
        pytest.param("..", id="dotdot"),
        pytest.param("a/b", id="slash"),
        pytest.param("a\\b", id="backslash"),
        pytest.param("a..b", id="dotdot-inside"),
        pytest.param(".hidden", id="leading-dot"),
        pytest.param("demo\n", id="trailing-newline"),
        pytest.param("de mo", id="space"),
        pytest.param("démo", id="non-ascii"),
        pytest.param("", id="empty"),
        pytest.param("x" * 65, id="too-long"),
    ],
)
def test_an_agent_name_that_could_be_a_path_is_refused(tmp_path: Path, name: str) -> None:
    name = name.format(tmp=tmp_path)
    # A definition a path-joining lookup would reach from <ws>/.agh/agents/<name>: refusing must
    # happen before any path is built from the name.
    write(tmp_path / "evil" / "AGENT.md", "---\nname: evil\ncommand: evil-cmd\n---\n")
    (tmp_path / "ws" / ".agh" / "agents").mkdir(parents=True)
    (tmp_path / "home" / "agents").mkdir(parents=True)
    with pytest.raises(AgentNotFoundError, match="invalid agent name") as caught:
        find_agent(name, home=tmp_path / "home", workspace=tmp_path / "ws")
    message = str(caught.value)
    assert "letters, digits" in message and "\n" not in message.replace(repr(name), "")


@pytest.mark.parametrize("name", ["demo", "demo-fast", "a.b_c-1", "X" * 64])
def test_valid_agent_names_are_looked_up(tmp_path: Path, name: str) -> None:
    home = tmp_path / "home"
    write(home / "agents" / name / "AGENT.md", f"---\nname: {name}\ncommand: cmd\n---\n")
    assert find_agent(name, home=home, workspace=None).name == name


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param('[sandbox]\nmode = "maybe"\n', r"\[sandbox\] mode: expected one of auto, off, required, got 'maybe'", id="bad-mode"),
        pytest.param('[sandbox]\nnetwork = "no"\n', r"\[sandbox\] network: expected true or false", id="bad-network"),
        pytest.param('[sandbox]\nwritable = ["/etc"]\n', "not a path under the home directory", id="writable-outside-home"),
        pytest.param('[sandbox]\nwritable = ["~/../x"]\n', "not a path under the home directory", id="writable-dotdot"),
        pytest.param('[sandbox]\nbwrap = 3\n', r"\[sandbox\] bwrap: expected a file path", id="bad-bwrap"),
        pytest.param('[sandbox]\nnetwrk = false\n', "unknown key 'netwrk' in \\[sandbox\\]", id="unknown-key"),
    ],
)
def test_bad_sandbox_config_is_named(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(tmp_path)


def test_sandbox_config_and_agent_override(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('[sandbox]\nmode = "required"\nnetwork = false\nwritable = ["~/.x"]\nbwrap = "/opt/bwrap"\n')
    s = load_settings(tmp_path)
    assert (s.sandbox_mode, s.sandbox_network, s.sandbox_writable, s.sandbox_bwrap) == ("required", False, ("~/.x",), "/opt/bwrap")
    agent = write(tmp_path / "a" / "AGENT.md", "---\nname: a\ncommand: x\nsandbox: off\n---\n")
    definition = parse_agent_md(agent)
    assert definition.sandbox is not None and definition.sandbox.mode == "off"
    write(agent, "---\nname: a\ncommand: x\nsandbox:\n  network: false\n  writable: ['~/.a/']\n---\n")
    definition = parse_agent_md(agent)
    assert definition.sandbox is not None and (definition.sandbox.mode, definition.sandbox.network) == (None, False)
    for bad, message in (("sandbox: sometimes", "'sandbox'.*expected one of"), ("sandbox:\n  mood: x", "unknown key 'mood'")):
        write(agent, f"---\nname: a\ncommand: x\n{bad}\n---\n")
        with pytest.raises(ConfigError, match=message):
            parse_agent_md(agent)
