"""What an agent offers per session (issue 10): modes, models and config options, slash commands,
MCP servers, ``session/resume`` / ``/close`` / ``/fork`` and form elicitation, against the demo
agent with those features turned on."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from agh_nb.api import Host
from agh_nb.errors import AgentStartError, ApprovalError, CapabilityError, UsageError
from tests.conftest import DEMO, wait_until, write_agent

pytestmark = pytest.mark.timeout(90)


def demo_with(home: Path, name: str, *flags: str, extra: str = "") -> str:
    write_agent(home, name, [*DEMO, "--fast", *flags], extra=extra)
    return name


def system_texts(host: Host, session_id: str, title: str) -> list[str]:
    return [str(e.content.get("text")) for e in host.events(session_id) if e.type == "system" and e.content.get("title") == title]


def test_modes_models_and_options_are_kept_set_and_refused_in_one_line(host: Host, agh_home: Path, workspace: Path) -> None:
    agent = demo_with(agh_home, "moded", "--modes")
    record = host.create(agent, cwd=str(workspace), mode="plan", model="demo-large")
    view = host.inspect(record.id)["agent"]
    assert view["mode"] == {"current": "plan", "available": ["ask", "code", "plan"]}
    assert view["model"] == {"current": "demo-large", "available": ["demo-small", "demo-large"]}
    assert {o["id"]: o["current"] for o in view["config_options"]} == {"mode": "plan", "model": "demo-large", "verbose": False}
    # The agent confirmed each change with config_option_update: its own event type.
    assert [e.type for e in host.events(record.id)].count("config_changed") == 2

    changed = host.set(record.id, mode="code", options={"verbose": "true"})
    assert changed.acp_state["modes"]["currentModeId"] == "code"
    assert host.inspect(record.id)["agent"]["config_options"][2]["current"] is True
    assert system_texts(host, record.id, "set")[-2:] == ["set mode code", "set option verbose=true"]

    with pytest.raises(CapabilityError) as refused:
        host.set(record.id, mode="yolo")
    assert str(refused.value) == "agent 'moded' offers no mode 'yolo' (its modes: ask, code, plan)"
    with pytest.raises(CapabilityError, match=r"offers no config option 'colour' \(its options: mode, model, verbose\)"):
        host.set(record.id, options={"colour": "red"})
    with pytest.raises(CapabilityError, match="true or false"):
        host.set(record.id, options={"verbose": "maybe"})
    with pytest.raises(UsageError):
        host.set(record.id)

    # A resumed session gets its mode and model back (a new agent process starts in "ask").
    host.stop(record.id)
    resumed = host.resume(record.id)
    assert resumed.acp_state["modes"]["currentModeId"] == "code"
    assert host.inspect(record.id)["agent"]["model"]["current"] == "demo-large"
    assert system_texts(host, record.id, "restore")[-1] == "restored mode code, model demo-large"


def test_a_mode_the_agent_does_not_offer_at_start_stops_the_session_in_one_line(
    host: Host, agh_home: Path, workspace: Path
) -> None:
    agent = demo_with(agh_home, "moded", "--modes")
    with pytest.raises(AgentStartError, match=r"offers no mode 'turbo' \(its modes: ask, code, plan\)"):
        host.create(agent, cwd=str(workspace), mode="turbo")
    plain = demo_with(agh_home, "plain")
    with pytest.raises(AgentStartError, match="offers no models to choose from"):
        host.create(plain, cwd=str(workspace), model="demo-large")


def test_current_mode_update_is_its_own_event_and_set_mode_is_used_without_a_mode_option(
    host: Host, agh_home: Path, workspace: Path
) -> None:
    agent = demo_with(agh_home, "moded", "--modes")
    record = host.create(agent, cwd=str(workspace))
    # Through the driver directly: session/set_mode answers with current_mode_update.
    live = host.runtime.manager.live(record.id)
    assert live is not None
    host.runtime.call(lambda: live._driver.set_mode(record.acp_session_id or "", "plan"))  # noqa: SLF001
    event = wait_until(lambda: [e for e in host.events(record.id) if e.type == "mode_changed"])[0]
    assert event.content["text"] == "plan" and event.content["raw"]["currentModeId"] == "plan"
    assert wait_until(lambda: host.get(record.id).acp_state["modes"]["currentModeId"] == "plan")
    assert host.inspect(record.id)["agent"]["mode"]["current"] == "plan"


def test_slash_commands_are_listed_and_sent_as_the_prompt_text(host: Host, agh_home: Path, workspace: Path) -> None:
    agent = demo_with(agh_home, "commanded", "--commands")
    record = host.create(agent, cwd=str(workspace))
    listed = wait_until(lambda: [e for e in host.events(record.id) if e.type == "commands_available"])
    assert listed[0].content["text"] == "/echo /mode"
    assert host.inspect(record.id)["agent"]["commands"] == [
        {"name": "echo", "description": "Say the input back", "hint": "text to echo"},
        {"name": "mode", "description": "Say the current mode", "hint": None},
    ]
    result = host.prompt(record.id, "/echo agent client protocol").wait(30)
    assert result.stop_reason == "end_turn"
    turn = host.events(record.id, None)
    asked = [e for e in turn if e.type == "user_message"][-1]
    assert asked.content["text"] == "/echo agent client protocol"
    assert asked.content["runtime"] == {"command": "echo"}
    said = [e.content["text"] for e in turn if e.type == "agent_message" and e.turn_id == result.turn_id]
    assert said == ["/echo: agent client protocol\n"]


MCP_SERVERS = """mcp_servers:
  - name: files
    command: ["mcp-files", "--root", "."]
    args: ["--verbose"]
    env:
      FILES_TOKEN: env:MCP_TOKEN
      PLAIN: visible
"""


def test_mcp_servers_reach_the_agent_with_their_secrets_redacted_in_the_store(
    host: Host, agh_home: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "mcp-token-secret-0123456789"
    monkeypatch.setenv("MCP_TOKEN", secret)
    agent = demo_with(agh_home, "mcp", "--resume", extra=MCP_SERVERS)
    record = host.create(agent, cwd=str(workspace))

    def reported(turn_id: str) -> str:
        return "".join(e.content["text"] for e in host.events(record.id) if e.type == "agent_message" and e.turn_id == turn_id)

    first = host.prompt(record.id, "mcp").wait(30)
    stored = reported(first.turn_id)
    assert secret not in stored
    (server,) = json.loads(stored)
    assert server == {
        "name": "files",
        "command": "mcp-files",
        "args": ["--root", ".", "--verbose"],
        "env": [{"name": "FILES_TOKEN", "value": "[redacted:env:MCP_TOKEN@" + record.id + "]"}, {"name": "PLAIN", "value": "visible"}],
    }
    host.stop(record.id)
    host.resume(record.id)  # session/resume passes them again
    again = host.prompt(record.id, "mcp").wait(30)
    assert json.loads(reported(again.turn_id)) == [server]
    assert secret not in (agh_home / "sessions" / record.id / "meta.json").read_text()


@pytest.mark.parametrize("flags", [(), ("--mcp-http",)], ids=["agent-without-http", "agent-with-http"])
def test_an_http_mcp_server_needs_the_agents_http_capability(
    host: Host, agh_home: Path, workspace: Path, flags: tuple[str, ...]
) -> None:
    extra = 'mcp_servers:\n  - name: web\n    type: http\n    url: http://127.0.0.1:9/mcp\n    headers:\n      Authorization: "Bearer x"\n'
    agent = demo_with(agh_home, "http-mcp", *flags, extra=extra)
    if flags:
        assert host.create(agent, cwd=str(workspace)).state.value == "active"
        return
    with pytest.raises(AgentStartError) as refused:
        host.create(agent, cwd=str(workspace))
    assert "cannot take MCP server 'web' of type http (its mcpCapabilities allow: stdio)" in str(refused.value)


def test_resume_prefers_session_resume_and_falls_back_when_the_agent_does_not_know_the_session(
    host: Host, agh_home: Path, workspace: Path
) -> None:
    resumable = demo_with(agh_home, "resumable", "--resume")
    record = host.create(resumable, cwd=str(workspace))
    host.stop(record.id)
    assert host.resume(record.id).acp_session_id == record.acp_session_id
    assert system_texts(host, record.id, "resume")[-1] == f"resumed ACP session {record.acp_session_id} with session/resume"

    # gemini-cli answers -32603 "No previous sessions found for this project." for a session it never saved.
    forgetful = demo_with(agh_home, "forgetful", "--forget", "--forget-as", "internal")
    other = host.create(forgetful, cwd=str(workspace))
    host.stop(other.id)
    again = host.resume(other.id)
    assert again.state.value == "active" and again.acp_session_id != other.acp_session_id
    assert system_texts(host, other.id, "resume")[-1].startswith(
        f"the agent no longer knows ACP session {other.acp_session_id} (-32603)"
    )


def test_a_real_load_failure_is_still_a_load_session_failure(host: Host, agh_home: Path, workspace: Path) -> None:
    failing = demo_with(agh_home, "failing", "--fail-load")
    record = host.create(failing, cwd=str(workspace))
    host.stop(record.id)
    with pytest.raises(AgentStartError):
        host.resume(record.id)
    failure = host.get(record.id).failure
    assert failure is not None and failure.kind.value == "load_session_failure" and failure.code == -32603


def test_session_close_lets_an_agent_that_ignores_eof_exit_without_a_signal(
    host: Host, agh_home: Path, workspace: Path
) -> None:
    closing = demo_with(agh_home, "closing", "--close", "--ignore-eof")
    record = host.create(closing, cwd=str(workspace))
    host.stop(record.id)
    exit_info = [e for e in host.events(record.id) if e.type == "session_stopped"][-1].content["runtime"]["exit"]
    assert exit_info["signal"] is None and exit_info["returncode"] == 0

    stubborn = demo_with(agh_home, "stubborn", "--ignore-eof")  # no session/close: only a signal ends it
    other = host.create(stubborn, cwd=str(workspace))
    host.stop(other.id)
    exit_info = [e for e in host.events(other.id) if e.type == "session_stopped"][-1].content["runtime"]["exit"]
    assert exit_info["signal"] == signal.SIGTERM


def test_fork_makes_a_new_session_on_the_forked_acp_session(host: Host, agh_home: Path, workspace: Path) -> None:
    forking = demo_with(agh_home, "forking", "--fork", "--modes")
    parent = host.create(forking, cwd=str(workspace), name="main line", mode="plan")
    child = host.fork(parent.id, name="experiment")
    assert child.id != parent.id and child.parent_id == parent.id and child.name == "experiment"
    assert child.state.value == "active" and child.acp_session_id not in (None, parent.acp_session_id)
    assert child.agent_name == parent.agent_name and child.workspace_path == parent.workspace_path
    (note,) = [e for e in host.events(child.id) if e.type == "system" and e.content.get("title") == "fork"]
    assert note.content["runtime"] == {"parent_id": parent.id, "parent_acp_session_id": parent.acp_session_id}
    assert host.inspect(child.id)["agent"]["mode"]["current"] == "plan"  # the fork keeps the parent's mode
    assert host.prompt(child.id, "hello").wait(30).stop_reason == "end_turn"
    assert host.sql(f"SELECT parent_id FROM sessions WHERE id = '{child.id}'")["parent_id"][0] == parent.id

    plain = demo_with(agh_home, "plain")
    other = host.create(plain, cwd=str(workspace))
    with pytest.raises(CapabilityError) as refused:
        host.fork(other.id)
    assert str(refused.value) == (
        f"session {other.id} cannot be forked: agent 'plain' does not offer session/fork (no sessionCapabilities.fork)"
    )


def test_a_form_elicitation_is_answered_checked_and_recorded(host: Host, agh_home: Path, workspace: Path) -> None:
    record = host.create(demo_with(agh_home, "asking"), cwd=str(workspace))
    turn = host.prompt(record.id, "ask-form")
    (pending,) = wait_until(lambda: host.pending_elicitations(record.id))
    assert pending["message"] == "Pick a colour"
    assert [(f["name"], f["type"], f["required"], f["values"]) for f in pending["fields"]] == [
        ("colour", "string", True, ["red", "green", "blue"]),
        ("count", "integer", False, None),
        ("notify", "boolean", False, None),
    ]
    assert host.inspect(record.id)["pending_elicitations"][0]["request_id"] == pending["request_id"]
    with pytest.raises(UsageError, match="takes one of red, green, blue, got 'purple'"):
        host.answer(record.id, pending["request_id"], {"colour": "purple"})
    with pytest.raises(UsageError, match="needs colour"):
        host.answer(record.id, pending["request_id"], {"count": "2"})
    with pytest.raises(UsageError, match="takes a integer"):
        host.answer(record.id, pending["request_id"], {"colour": "red", "count": "two"})
    resolved = host.answer(record.id, pending["request_id"], {"colour": "green", "count": "3", "notify": "true"})
    assert resolved["action"] == "accept" and resolved["content"] == {"colour": "green", "count": 3, "notify": True}
    result = turn.wait(30)
    said = "".join(e.content["text"] for e in host.events(record.id) if e.type == "agent_message" and e.turn_id == result.turn_id)
    assert json.loads(said) == {"action": "accept", "content": {"colour": "green", "count": 3, "notify": True}}
    titles = [e.content.get("title") for e in host.events(record.id) if e.type == "system"]
    assert titles.count("elicitation") == 1 and titles.count("elicitation answered") == 1
    with pytest.raises(ApprovalError):
        host.answer(record.id, pending["request_id"], {"colour": "red"})

    # A URL-mode request gets the protocol's decline at once.
    url = host.prompt(record.id, "ask-url").wait(30)
    said = "".join(e.content["text"] for e in host.events(record.id) if e.type == "agent_message" and e.turn_id == url.turn_id)
    assert json.loads(said)["action"] == "decline"


def test_a_declined_or_abandoned_form_answers_the_agent(host: Host, agh_home: Path, workspace: Path) -> None:
    record = host.create(demo_with(agh_home, "asking"), cwd=str(workspace))
    turn = host.prompt(record.id, "ask-form")
    (pending,) = wait_until(lambda: host.pending_elicitations(record.id))
    host.answer(record.id, pending["request_id"], {}, action="decline")
    result = turn.wait(30)
    said = "".join(e.content["text"] for e in host.events(record.id) if e.type == "agent_message" and e.turn_id == result.turn_id)
    assert json.loads(said) == {"action": "decline", "content": None}
    host.prompt(record.id, "ask-form")
    wait_until(lambda: host.pending_elicitations(record.id))
    host.stop(record.id)  # a stop cancels what still waits
    assert host.pending_elicitations(record.id) == []


def test_the_words_drive_the_same_calls(host: Host, agh_home: Path, workspace: Path) -> None:
    from agh_nb.api import Session
    from agh_nb.commands import execute, parse

    def run(line: str) -> object:
        args, _ = parse(line)
        assert args is not None
        return execute(args, host).value

    demo_with(agh_home, "worded", "--modes", "--fork")
    session = run(f"session new --agent worded --cwd {workspace} --mode code --model demo-large")
    assert isinstance(session, Session)
    sid = session.id
    assert host.inspect(sid)["agent"]["mode"]["current"] == "code"
    record = run(f"session set {sid} --mode plan --option verbose=true")
    assert isinstance(record, dict) and record["acp_state"]["modes"]["currentModeId"] == "plan"
    with pytest.raises(UsageError, match="expected KEY=VALUE"):
        run(f"session set {sid} --option verbose")
    fork = run(f"session fork {sid} --name twig")
    assert isinstance(fork, Session) and fork.record.parent_id == sid

    turn = host.prompt(sid, "ask-form")
    (form,) = wait_until(lambda: host.pending_elicitations(sid))
    answered = run(f"session answer {sid} --request {form['request_id']} colour=blue notify=false")
    assert answered == answered | {"action": "accept", "content": {"colour": "blue", "notify": False}}
    assert turn.wait(30).stop_reason == "end_turn"
    lines = run(f"session logs {sid} --last 1")
    assert isinstance(lines, list) and len(lines) == 1
