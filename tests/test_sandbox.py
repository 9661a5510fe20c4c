"""Sessions in the sandbox (issue 11): an untrusted agent, through its own shell and through
client terminals, against the vault key, the store, other sessions and the rest of the disk.

Every attack runs in a real session of the demo agent (``shell CMD`` runs ``sh -c CMD`` as the
agent process itself; ``run-direct CMD`` goes through ``terminal/create``) under approve-all.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import duckdb
import pytest

from agh_nb.api import Host
from agh_nb.errors import AgentStartError
from agh_nb.kernel.card import render_card
from agh_nb.runtime import Runtime
from tests.conftest import DEMO, write_agent

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox is Linux-only"),
]


def last_result(host: Host, sid: str) -> dict[str, object]:
    results = [e.content for e in host.events(sid) if e.type == "tool_result"]
    assert results, [e.type for e in host.events(sid)]
    raw = results[-1].get("tool_result") or {}
    assert isinstance(raw, dict), raw
    return raw


def attempt(host: Host, sid: str, word: str, command: str) -> dict[str, object]:
    """Run ``command`` through the agent's own shell (``shell``) or a terminal (``run-direct``)."""
    prompt = f"{word} {command}" if word == "shell" else f"{word} sh -c {json.dumps(command)}"
    assert host.prompt(sid, prompt).wait(60).stop_reason == "end_turn"
    return last_result(host, sid)


@pytest.fixture
def vault_key(agh_home: Path, host: Host) -> bytes:
    host.vault_put("vault:providers/demo", "a-provider-key-123456")
    key = (agh_home / "vault.key").read_bytes()
    assert key
    return key


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "file").write_text("outside contents\n")
    return directory


WAYS = [pytest.param("shell", id="own-shell"), pytest.param("run-direct", id="terminal")]


@pytest.mark.parametrize("word", WAYS)
def test_the_vault_key_store_and_other_sessions_are_invisible(
    host: Host, agh_home: Path, workspace: Path, vault_key: bytes, word: str
) -> None:
    other = host.create("demo-fast", cwd=str(workspace))
    host.stop(other.id)
    record = host.create("demo-fast", cwd=str(workspace), permissions="approve-all")
    assert record.sandboxed is True
    meta = agh_home / "sessions" / other.id / "meta.json"
    for target in (agh_home / "vault.key", agh_home / "agh.duckdb", meta, agh_home / "vault"):
        result = attempt(host, record.id, word, f"cat {target} | od -c | head -c 200; ls -la {target}")
        output = str(result["output"])
        assert "No such file" in output, (target, output)
    listing = str(attempt(host, record.id, word, f"ls -la {agh_home} {agh_home}/sessions")["output"])
    assert "vault.key" not in listing and other.id not in listing and "agh.duckdb" not in listing


@pytest.mark.parametrize("word", WAYS)
def test_nothing_outside_the_workspace_is_written(
    host: Host, workspace: Path, outside: Path, word: str
) -> None:
    record = host.create("demo-fast", cwd=str(workspace), permissions="approve-all")
    (workspace / "x").write_text("from the workspace\n")
    attempt(host, record.id, word, f"cp x {outside}/; echo y > {outside}/file; echo z > {outside}/new; rm -f {outside}/file")
    assert sorted(p.name for p in outside.iterdir()) == ["file"]
    assert (outside / "file").read_text() == "outside contents\n"
    # A file of the host outside /tmp (a checkout may itself live under /tmp, which is private).
    readable = Path("/etc/os-release")
    result = attempt(host, record.id, word, f"head -1 {readable}; cat {outside}/file; echo inside > made-here")
    assert (workspace / "made-here").read_text() == "inside\n"
    # The rest of the disk stays readable (the README says so), but /tmp is a private one.
    output = str(result["output"])
    first = readable.read_text().splitlines()[0]
    assert output.startswith(first + "\n") and "outside contents" not in output


def test_without_the_sandbox_the_same_attack_succeeds(agh_home: Path, workspace: Path, outside: Path) -> None:
    # The control: mode = off really runs the agent with the user's rights.
    (agh_home / "config.toml").write_text('[sandbox]\nmode = "off"\n')
    h = Host(Runtime.start(home=agh_home))
    try:
        record = h.create("demo-fast", cwd=str(workspace), permissions="approve-all")
        assert record.sandboxed is False
        attempt(h, record.id, "shell", f"echo escaped > {outside}/new")
        assert (outside / "new").read_text() == "escaped\n"
    finally:
        h.close()


def test_agent_state_under_home_stays_writable(
    agh_home: Path, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "user-home"
    (home / ".agent-state").mkdir(parents=True)
    (home / ".profile").write_text("# not the agent's\n")
    monkeypatch.setenv("HOME", str(home))
    write_agent(agh_home, "stateful", [*DEMO, "--fast"], "sandbox:\n  writable: ['~/.agent-state', '~/.fresh-state/', '~/.fresh.json']\n")
    h = Host(Runtime.start(home=agh_home))
    try:
        record = h.create("stateful", cwd=str(workspace), permissions="approve-all")
        assert record.sandboxed
        result = attempt(
            h, record.id, "shell",
            "echo login > $HOME/.agent-state/token && echo a-ok; echo s > $HOME/.fresh-state/s && echo b-ok; "
            "echo x >> $HOME/.profile; echo y > $HOME/.other; cat $HOME/.fresh.json; echo '{\"a\": 1}' > $HOME/.fresh.json",
        )
        assert "a-ok" in str(result["output"]) and "b-ok" in str(result["output"]), result
        assert (home / ".agent-state" / "token").read_text() == "login\n"
        assert (home / ".fresh-state" / "s").read_text() == "s\n"  # created 0700 before the agent ran
        assert oct((home / ".fresh-state").stat().st_mode & 0o777) == "0o700"
        assert (home / ".profile").read_text() == "# not the agent's\n" and not (home / ".other").exists()
        assert "{}" in str(result["output"]) and (home / ".fresh.json").read_text() == '{"a": 1}\n'
        assert oct((home / ".fresh.json").stat().st_mode & 0o777) == "0o600"
    finally:
        h.close()


def test_network_false_cuts_the_network(agh_home: Path, workspace: Path) -> None:
    (agh_home / "config.toml").write_text("[sandbox]\nnetwork = false\n")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    h = Host(Runtime.start(home=agh_home))
    try:
        record = h.create("demo-fast", cwd=str(workspace), permissions="approve-all")
        probe = f"{sys.executable} -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 5); print('connected')\""
        for word in ("shell", "run-direct"):
            output = str(attempt(h, record.id, word, probe)["output"])
            assert "connected" not in output and "ConnectionRefusedError" in output, output
    finally:
        h.close()
        server.close()


def test_network_is_on_by_default(host: Host, workspace: Path) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        record = host.create("demo-fast", cwd=str(workspace), permissions="approve-all")
        probe = f"{sys.executable} -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 5); print('connected')\""
        assert "connected" in str(attempt(host, record.id, "shell", probe)["output"])
    finally:
        server.close()


def test_required_without_bubblewrap_refuses_to_start_in_one_line(agh_home: Path, workspace: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "bwrap"
    (agh_home / "config.toml").write_text(f'[sandbox]\nmode = "required"\nbwrap = "{missing}"\n')
    h = Host(Runtime.start(home=agh_home))
    try:
        with pytest.raises(AgentStartError) as caught:
            h.create("demo-fast", cwd=str(workspace))
        message = str(caught.value)
        assert "\n" not in message and "sandbox is required" in message and str(missing) in message
        (record,) = h.list()
        assert record.state.value == "stopped" and record.sandboxed is False
        assert record.failure is not None and record.failure.kind.value == "startup_failure"
        assert "apt-get install bubblewrap" in record.failure.summary
    finally:
        h.close()


def test_an_agent_md_can_turn_the_sandbox_off_or_require_it(agh_home: Path, workspace: Path, tmp_path: Path) -> None:
    (agh_home / "config.toml").write_text(f'[sandbox]\nbwrap = "{tmp_path / "missing-bwrap"}"\n')
    write_agent(agh_home, "strict", [*DEMO, "--fast"], "sandbox: required\n")
    h = Host(Runtime.start(home=agh_home))
    try:
        assert h.create("demo-fast", cwd=str(workspace)).sandboxed is False  # auto: none here
        with pytest.raises(AgentStartError, match="sandbox is required"):
            h.create("strict", cwd=str(workspace))
    finally:
        h.close()


def test_deny_all_workspace_is_read_only_for_the_agents_own_shell(host: Host, workspace: Path) -> None:
    (workspace / "keep").write_text("original\n")
    record = host.create("demo-fast", cwd=str(workspace), permissions="deny-all")
    result = attempt(host, record.id, "shell", "cat keep; echo changed > keep; echo new > new-file")
    assert "original" in str(result["output"]) and "Read-only file system" in str(result["output"])
    assert (workspace / "keep").read_text() == "original\n" and not (workspace / "new-file").exists()


def test_sandboxed_is_recorded_everywhere(host: Host, agh_home: Path, workspace: Path) -> None:
    record = host.create("demo-fast", cwd=str(workspace))
    assert host.inspect(record.id)["sandboxed"] is True
    assert json.loads((agh_home / "sessions" / record.id / "meta.json").read_text())["sandboxed"] is True
    host.stop(record.id)
    assert host.sql(f"SELECT sandboxed FROM sessions WHERE id = '{record.id}'")["sandboxed"].tolist() == [True]
    card = render_card(host.status(record.id), host.get(record.id).to_dict(), [])
    assert "sandbox" in card and "bubblewrap" in card


def test_an_older_store_gets_the_column(agh_home: Path, workspace: Path) -> None:
    con = duckdb.connect(str(agh_home / "agh.duckdb"))
    con.execute(
        "CREATE TABLE sessions (id VARCHAR PRIMARY KEY, name VARCHAR, agent_name VARCHAR NOT NULL, type VARCHAR NOT NULL,"
        " workspace_id VARCHAR NOT NULL, workspace_path VARCHAR NOT NULL, permissions VARCHAR NOT NULL,"
        " state VARCHAR NOT NULL, stop_reason VARCHAR, stop_detail VARCHAR, failure JSON, failure_kind VARCHAR,"
        " acp_session_id VARCHAR, acp_caps JSON, created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL,"
        " host_pid BIGINT)"
    )
    con.execute(
        "INSERT INTO sessions VALUES ('sess_old', NULL, 'demo', 'user', 'ws_x', ?, 'approve-reads', 'stopped',"
        " 'completed', NULL, NULL, NULL, NULL, '{}', now(), now(), NULL)",
        [str(workspace)],
    )
    con.close()
    h = Host(Runtime.start(home=agh_home))
    try:
        assert h.get("sess_old").sandboxed is False
        assert h.create("demo-fast", cwd=str(workspace)).sandboxed is True
    finally:
        h.close()


def test_agh_home_inside_the_workspace_stays_hidden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace = tmp_path / "project"
    home = workspace / ".agh-nb"
    home.mkdir(parents=True)
    monkeypatch.setenv("AGH_HOME", str(home))
    h = Host(Runtime.start(home=home))
    try:
        h.vault_put("vault:providers/demo", "a-provider-key-123456")
        record = h.create("demo-fast", cwd=str(workspace), permissions="approve-all")
        for word in ("shell", "run-direct"):
            output = str(attempt(h, record.id, word, f"ls -a {home}; cat {home}/vault.key")["output"])
            assert "No such file" in output and "agh.duckdb" not in output
        attempt(h, record.id, "shell", "echo fine > mine.txt")
        assert (workspace / "mine.txt").read_text() == "fine\n"
    finally:
        h.close()


def test_environment_of_the_host_does_not_reach_the_agent(host: Host, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_TOKEN", "server-token-abcdef")
    record = host.create("demo-fast", cwd=str(workspace), permissions="approve-all")
    for word in ("shell", "run-direct"):
        output = str(attempt(host, record.id, word, "env; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'")["output"])
        assert "server-token-abcdef" not in output and f"AGH_NB_SESSION={record.id}" in output
    assert os.environ["JUPYTER_TOKEN"] == "server-token-abcdef"


def test_a_workspace_agent_md_cannot_open_the_sandbox(
    host: Host, agh_home: Path, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An agent can write <workspace>/.agh/agents/...: what it writes there must not turn the
    # sandbox off, or make the user's home writable, for the next session.
    home = tmp_path / "user-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    record = host.create("demo-fast", cwd=str(workspace), permissions="approve-all")
    planted = (
        "mkdir -p .agh/agents/demo-fast && printf '%s\\n' '---' 'name: demo-fast' "
        f"'command: [\"{sys.executable}\", \"-m\", \"agh_nb.agents.demo\", \"--fast\"]' "
        "'sandbox:' '  mode: off' '  writable: [\"~/.ssh/\"]' '---' > .agh/agents/demo-fast/AGENT.md"
    )
    attempt(host, record.id, "shell", planted)
    assert (workspace / ".agh" / "agents" / "demo-fast" / "AGENT.md").exists()
    host.stop(record.id)
    again = host.create("demo-fast", cwd=str(workspace), permissions="approve-all")
    assert again.sandboxed is True
    assert not (home / ".ssh").exists()
    output = str(attempt(host, again.id, "shell", f"echo key > {home}/.ssh/authorized_keys; cat {agh_home}/vault.key")["output"])
    assert "No such file" in output and not (home / ".ssh").exists()
