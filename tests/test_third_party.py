"""ACP agents nobody on this project wrote, declared only through an AGENT.md ``command``.

They are installed from the npm registry by ``scripts/setup.sh`` into ``tests/third_party``, at
the versions REAL-AGENTS.md describes: the example agent shipped with Zed's TypeScript ACP SDK (a
full offline turn with tool calls and a permission request), ``claude-agent-acp`` 0.23.1,
``codex-acp`` 0.16.0 and ``gemini-cli`` 0.61.0. The real agents run through agh_nb's own presets
(``claude``, ``codex``, ``gemini``) with ``node_modules/.bin`` on the PATH, a fresh HOME, no
network and no real key. A dummy-key agent is never prompted: it would retry the network for
minutes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agh_nb.api import Host
from agh_nb.errors import AgentStartError, CapabilityError
from tests.conftest import wait_until, write_agent

pytestmark = pytest.mark.timeout(180)

NODE_MODULES = Path(__file__).parent / "third_party" / "node_modules"
ZED_EXAMPLE = NODE_MODULES / "@zed-industries" / "agent-client-protocol" / "typescript" / "examples" / "agent.ts"
BIN = NODE_MODULES / ".bin"
TSX = BIN / "tsx"
CLAUDE = BIN / "claude-agent-acp"


def require(path: Path) -> Path:
    assert path.exists(), f"{path} is missing: run scripts/setup.sh (it installs tests/third_party with npm)"
    return path


def test_zed_example_agent_runs_a_turn_and_stops(host: Host, agh_home: Path, workspace: Path) -> None:
    write_agent(agh_home, "zed-example", [str(require(TSX)), str(require(ZED_EXAMPLE))])
    record = host.create("zed-example", cwd=str(workspace))
    assert record.state.value == "active"
    result = host.prompt(record.id, "hello from agh_nb").wait(60)
    assert result.stop_reason == "end_turn"
    kinds = [e.type for e in host.events(record.id)]
    assert kinds[0] == "user_message"
    for expected in ("agent_message", "tool_call", "tool_result", "permission", "done"):
        assert expected in kinds, expected
    decisions = [e.content.get("decision") for e in host.events(record.id) if e.type == "permission"]
    assert "reject-once" in decisions  # an edit under approve-reads is not allowed without a user
    # Refused, the example agent drops the call without a word: the turn's end closes it (issue 12).
    events = host.events(record.id)
    calls = {e.content["tool_call_id"] for e in events if e.type == "tool_call"}
    results = {e.content["tool_call_id"]: e for e in events if e.type == "tool_result"}
    assert calls and calls <= set(results), calls - set(results)
    refused = [e for e in results.values() if "refused" in (e.content.get("tool_error") or "")]
    assert refused and refused[0].sequence < [e for e in events if e.type == "done"][0].sequence
    stopped = host.stop(record.id)
    assert stopped.stop_reason is not None and stopped.stop_reason.value == "user_canceled"
    assert [e.type for e in host.events(record.id)][-1] == "session_stopped"


def test_zed_example_agent_cancel_mid_turn(host: Host, agh_home: Path, workspace: Path) -> None:
    write_agent(agh_home, "zed-example", [str(require(TSX)), str(require(ZED_EXAMPLE))])
    record = host.create("zed-example", cwd=str(workspace))
    turn = host.prompt(record.id, "first")
    wait_until(lambda: any(e.type == "agent_message" for e in host.events(record.id)))
    second = host.prompt(record.id, "second", interrupt=True)
    assert turn.wait(30).stop_reason == "cancelled"
    assert second.wait(60).stop_reason == "end_turn"


@pytest.fixture
def presets_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The real agents' commands on the PATH (as after ``npm install -g``) and a fresh HOME,
    where each agent keeps its state (``~/.claude``, ``~/.codex``, ``~/.gemini``)."""
    for name in ("claude-agent-acp", "codex-acp", "gemini"):
        require(BIN / name)
    monkeypatch.setenv("PATH", f"{BIN}:{os.environ['PATH']}")
    home = tmp_path / "user-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for key in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "CODEX_API_KEY", "GEMINI_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    return home


def system_texts(host: Host, session_id: str, title: str) -> list[str]:
    return [str(e.content.get("text")) for e in host.events(session_id) if e.type == "system" and e.content.get("title") == title]


def test_claude_without_a_key_fails_its_first_prompt_as_auth_failure_naming_its_login(
    host: Host, workspace: Path, presets_on_path: Path
) -> None:
    record = host.create("claude", cwd=str(workspace))  # the preset: ANTHROPIC_API_KEY is optional
    assert record.state.value == "active"
    assert record.acp_caps.get("loadSession") is True
    # We opt in to terminal auth, so claude-agent-acp lists its login.
    assert [m["id"] for m in record.acp_caps["authMethods"]] == ["claude-login"]
    result = host.prompt(record.id, "hello").wait(60)  # fails at once: no key, nothing to retry
    assert result.stop_reason == "error"
    final = wait_until(lambda: (r := host.get(record.id)).state.value == "stopped" and r, timeout=30)
    assert final.stop_reason is not None and final.stop_reason.value == "error"
    assert final.failure is not None and final.failure.kind.value == "auth_failure" and final.failure.code == -32000
    assert "session/prompt answered -32000" in final.failure.summary
    assert "claude-login (run `claude-agent-acp --cli` in a terminal and log in" in final.failure.summary
    assert "Run `claude /login` in the terminal" in final.failure.summary
    assert host.inspect(record.id)["agent"]["auth_methods"][0]["id"] == "claude-login"


def test_claude_with_a_dummy_key_lists_its_modes_and_models_and_switches_mode(
    host: Host, workspace: Path, presets_on_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-dummy-not-a-real-key-000")
    record = host.create("claude", cwd=str(workspace))
    view = host.inspect(record.id)["agent"]
    assert {"default", "acceptEdits", "plan"} <= set(view["mode"]["available"])
    assert {"haiku", "sonnet[1m]", "opus[1m]"} <= set(view["model"]["available"])
    assert "availableModels" in record.acp_state["models"]  # kept as claude sent it, beyond the SDK's schema
    changed = host.set(record.id, mode="plan")  # session/set_config_option: claude answers at once
    assert host.inspect(record.id)["agent"]["mode"]["current"] == "plan"
    assert changed.acp_state["modes"]["currentModeId"] == "plan"
    assert system_texts(host, record.id, "set") == ["set mode plan"]
    with pytest.raises(CapabilityError, match=r"offers no mode 'turbo' \(its modes: default, acceptEdits, plan"):
        host.set(record.id, mode="turbo")
    stopped = host.stop(record.id)
    assert stopped.stop_reason is not None and stopped.stop_reason.value == "user_canceled"
    # session/close at stop: claude-agent-acp exits on the EOF that follows, without a signal.
    exit_info = [e for e in host.events(record.id) if e.type == "session_stopped"][-1].content["runtime"]["exit"]
    assert exit_info["signal"] is None


def test_codex_with_a_dummy_key_reaches_active_through_authenticate(
    host: Host, workspace: Path, presets_on_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-dummy-not-a-real-key-000")
    record = host.create("codex", cwd=str(workspace))
    assert record.state.value == "active"
    assert system_texts(host, record.id, "auth") == ["authenticated with openai-api-key"]
    assert (presets_on_path / ".codex" / "auth.json").is_file()  # what codex-acp does on authenticate
    view = host.inspect(record.id)["agent"]
    assert {"read-only", "full-access"} <= set(view["mode"]["available"])
    assert view["model"]["current"]
    host.stop(record.id)


def test_codex_without_a_key_is_auth_failure_naming_its_three_methods(
    host: Host, workspace: Path, presets_on_path: Path
) -> None:
    with pytest.raises(AgentStartError):
        host.create("codex", cwd=str(workspace))
    failure = host.list()[-1].failure
    assert failure is not None and failure.kind.value == "auth_failure" and failure.code == -32000
    for needs in ("chatgpt (Login with ChatGPT", "codex-api-key (set CODEX_API_KEY", "openai-api-key (set OPENAI_API_KEY"):
        assert needs in failure.summary


def test_gemini_with_a_dummy_key_is_stopped_and_resumed(
    host: Host, workspace: Path, presets_on_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "dummy-gemini-key-not-real-000")
    record = host.create("gemini", cwd=str(workspace))
    assert record.state.value == "active"
    assert {"default", "yolo"} <= set(host.inspect(record.id)["agent"]["mode"]["available"])
    host.stop(record.id)
    # session/load answers -32000 until authenticate gemini-api-key (the preset's `auth`), then
    # -32603 "No previous sessions found" for a session never prompted: a fresh ACP session.
    resumed = host.resume(record.id)
    assert resumed.state.value == "active" and resumed.id == record.id
    assert resumed.acp_session_id != record.acp_session_id
    assert system_texts(host, record.id, "auth")[-1] == "authenticated with gemini-api-key"
    assert system_texts(host, record.id, "resume")[-1].startswith(
        f"the agent no longer knows ACP session {record.acp_session_id} (-32603)"
    )
    assert host.logs(record.id)  # gemini's stderr is kept
    host.stop(record.id)
