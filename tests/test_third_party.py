"""ACP agents nobody on this project wrote, declared only through an AGENT.md ``command``.

They are installed from the npm registry by ``scripts/setup.sh`` into ``tests/third_party``:
the example agent shipped with Zed's TypeScript ACP SDK (a full offline turn with tool calls
and a permission request) and ``claude-agent-acp`` (handshakes without a key, then fails the
prompt with "Authentication required").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agh_nb.api import Host
from tests.conftest import wait_until, write_agent

pytestmark = pytest.mark.timeout(120)

NODE_MODULES = Path(__file__).parent / "third_party" / "node_modules"
ZED_EXAMPLE = NODE_MODULES / "@zed-industries" / "agent-client-protocol" / "typescript" / "examples" / "agent.ts"
TSX = NODE_MODULES / ".bin" / "tsx"
CLAUDE = NODE_MODULES / ".bin" / "claude-agent-acp"


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


def test_claude_agent_without_key_fails_the_prompt_cleanly(
    host: Host, agh_home: Path, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "claude-home"))  # it writes ~/.claude*
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    write_agent(agh_home, "claude-nokey", [str(require(CLAUDE))])
    record = host.create("claude-nokey", cwd=str(workspace))
    assert record.state.value == "active"
    assert record.acp_caps.get("loadSession") is True
    result = host.prompt(record.id, "hello").wait(60)
    assert result.stop_reason == "error"
    assert result.error and "Authentication required" in result.error
    final = wait_until(lambda: (r := host.get(record.id)).state.value == "stopped" and r, timeout=30)
    assert final.stop_reason is not None and final.stop_reason.value == "error"
    assert final.failure is not None and final.failure.kind.value == "prompt_failure"
    assert "-32000" in final.failure.summary
