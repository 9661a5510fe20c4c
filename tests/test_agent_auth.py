"""ACP ``authenticate`` (issue 10, SPEC 2): the demo agent asking for authentication as real
agents do, and a hostile one that never accepts it. Sessions end ``active`` or ``auth_failure``,
the failure naming every method and what it needs, its JSON-RPC ``code`` kept on every surface."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agh_nb.api import Host
from agh_nb.errors import AgentStartError
from tests.conftest import DEMO, wait_until, write_agent

pytestmark = pytest.mark.timeout(90)

KEY = "demo-secret-key-0123456789"
OPTIONAL_KEY = "env:\n  DEMO_KEY: env:DEMO_KEY?\n"


def demo_with(home: Path, name: str, *flags: str, extra: str = OPTIONAL_KEY) -> str:
    write_agent(home, name, [*DEMO, "--fast", *flags], extra=extra)
    return name


def start_failure(host: Host, agent: str, workspace: Path, **kwargs: object) -> str:
    with pytest.raises(AgentStartError) as raised:
        host.create(agent, cwd=str(workspace), **kwargs)  # type: ignore[arg-type]
    record = [r for r in host.list() if r.agent_name == agent][-1]  # the newest: the one that failed
    assert record.state.value == "stopped"
    assert str(raised.value).endswith(record.failure.summary if record.failure else "")
    return record.id


def test_an_env_var_method_whose_variable_is_set_authenticates_and_the_session_opens(
    host: Host, agh_home: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEMO_KEY", KEY)
    agent = demo_with(agh_home, "keyed", "--auth", "env:DEMO_KEY")
    record = host.create(agent, cwd=str(workspace))
    assert record.state.value == "active"
    methods = record.acp_caps["authMethods"]
    assert methods == [{"id": "demo-key", "name": "Demo key", "type": "env_var", "vars": [{"name": "DEMO_KEY"}]}]
    assert host.prompt(record.id, "hello").wait(30).stop_reason == "end_turn"
    assert host.inspect(record.id)["agent"]["auth_methods"] == [
        {"id": "demo-key", "name": "Demo key", "type": "env_var", "vars": ["DEMO_KEY"]}
    ]


@pytest.mark.parametrize("code", ["-32000", "-32603"], ids=["auth-required-code", "internal-error-with-words"])
def test_without_the_variable_the_session_stops_as_auth_failure_naming_the_method(
    host: Host, agh_home: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch, code: str
) -> None:
    monkeypatch.delenv("DEMO_KEY", raising=False)  # optional (env:DEMO_KEY?): its absence is no start error
    agent = demo_with(agh_home, "keyless", "--auth", "env:DEMO_KEY", "--auth-code", code)
    sid = start_failure(host, agent, workspace)
    record = host.get(sid)
    assert record.stop_reason is not None and record.stop_reason.value == "error"
    failure = record.failure
    assert failure is not None and failure.kind.value == "auth_failure" and failure.code == int(code)
    assert "demo-key (set DEMO_KEY in its AGENT.md env)" in failure.summary
    assert "\n" not in failure.summary
    # The handshake survives the failure: inspect, the crash bundle and every JSON surface show it.
    assert record.acp_caps["agent_info"]["name"] == "agh-demo"
    assert host.inspect(sid)["agent"]["auth_methods"][0]["id"] == "demo-key"
    assert failure.crash_bundle_path
    bundle = json.loads(Path(failure.crash_bundle_path).read_text())
    assert bundle["provider"]["agent_info"]["name"] == "agh-demo"
    assert bundle["provider"]["auth_methods"] == [{"id": "demo-key", "name": "Demo key", "type": "env_var", "vars": [{"name": "DEMO_KEY"}]}]
    assert bundle["failure"]["code"] == int(code)
    meta = json.loads((agh_home / "sessions" / sid / "meta.json").read_text())
    assert meta["failure"]["code"] == int(code) and meta["failure"]["kind"] == "auth_failure"
    row = host.sql(f"SELECT failure_kind, failure_code FROM sessions WHERE id = '{sid}'")
    assert (row["failure_kind"][0], int(row["failure_code"][0])) == ("auth_failure", int(code))
    stopped = [e for e in host.events(sid) if e.type == "session_stopped"][-1]
    assert stopped.content["failure"]["code"] == int(code)


def test_a_hostile_agent_that_never_accepts_authenticate_ends_as_auth_failure(
    host: Host, agh_home: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEMO_KEY", KEY)
    agent = demo_with(agh_home, "hostile", "--auth", "env:DEMO_KEY", "--auth-always")
    sid = start_failure(host, agent, workspace)
    failure = host.get(sid).failure
    assert failure is not None and failure.kind.value == "auth_failure"
    assert "after authenticate demo-key" in failure.summary and "demo-key (set DEMO_KEY" in failure.summary
    assert KEY not in failure.summary


def test_a_method_known_only_by_name_is_used_when_the_agent_md_names_it(
    host: Host, agh_home: Path, workspace: Path
) -> None:
    named = demo_with(agh_home, "named", "--auth", "agent", extra="auth: demo-login\n")
    assert host.create(named, cwd=str(workspace)).state.value == "active"
    unnamed = demo_with(agh_home, "unnamed", "--auth", "agent", extra="")
    sid = start_failure(host, unnamed, workspace)
    failure = host.get(sid).failure
    assert failure is not None and failure.kind.value == "auth_failure"
    assert "demo-login (Demo login: name it in its AGENT.md `auth`" in failure.summary


def test_a_terminal_login_is_offered_to_us_and_named_as_the_command_to_run(
    host: Host, agh_home: Path, workspace: Path
) -> None:
    agent = demo_with(agh_home, "terminal", "--auth", "terminal", extra="")
    sid = start_failure(host, agent, workspace)
    failure = host.get(sid).failure
    assert failure is not None and failure.kind.value == "auth_failure"
    # We opted in to terminal auth, so the agent listed its login; the line says what to run.
    assert "demo-terminal (run `" in failure.summary and "-m agh_nb.agents.demo --fast --auth terminal --login` in a terminal" in failure.summary
    assert "Run `demo --login` in the terminal" in failure.summary


def test_session_new_auth_runs_authenticate_first_and_an_unknown_method_is_one_line(
    host: Host, agh_home: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEMO_KEY", KEY)
    agent = demo_with(agh_home, "manual", "--auth", "env:DEMO_KEY")
    record = host.create(agent, cwd=str(workspace), auth="demo-key")
    assert record.state.value == "active"
    sid = start_failure(host, agent, workspace, auth="no-such-method")
    failure = host.get(sid).failure
    assert failure is not None and failure.kind.value == "startup_failure"
    assert failure.summary.endswith("offers no auth method 'no-such-method' (its methods: demo-key)")


def test_a_prompt_that_needs_authentication_fails_as_auth_failure_and_session_auth_retries_it(
    host: Host, agh_home: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DEMO_KEY", raising=False)
    agent = demo_with(agh_home, "late", "--auth", "env:DEMO_KEY", "--auth-at", "prompt")
    record = host.create(agent, cwd=str(workspace))
    result = host.prompt(record.id, "hello after login").wait(30)
    assert result.stop_reason == "error" and result.error and "needs authentication" in result.error
    stopped = wait_until(lambda: (r := host.get(record.id)).state.value == "stopped" and r)
    assert stopped.failure is not None and stopped.failure.kind.value == "auth_failure"
    assert stopped.failure.code == -32000
    assert "session/prompt answered -32000" in stopped.failure.summary

    monkeypatch.setenv("DEMO_KEY", KEY)  # the user fixes the key, then logs in by hand
    resumed = host.auth(record.id, "demo-key")
    assert resumed.state.value == "active" and resumed.id == record.id
    retried = wait_until(
        lambda: [e for e in host.events(record.id) if e.type == "done" and e.content.get("stop_reason") == "end_turn"]
    )
    assert retried
    asked = [e.content["text"] for e in host.events(record.id) if e.type == "user_message"]
    assert asked == ["hello after login", "hello after login"]
    assert any(e.type == "system" and "resumed" in (e.content.get("text") or "") for e in host.events(record.id))


def test_a_prompt_that_needs_authentication_is_retried_once_when_the_key_is_there(
    host: Host, agh_home: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEMO_KEY", KEY)
    agent = demo_with(agh_home, "late-keyed", "--auth", "env:DEMO_KEY", "--auth-at", "prompt")
    record = host.create(agent, cwd=str(workspace))
    assert host.prompt(record.id, "hello").wait(30).stop_reason == "end_turn"
    assert host.get(record.id).state.value == "active"
