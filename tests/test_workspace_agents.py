"""Agent definitions found inside the workspace (``<workspace>/.agh/agents``): an agent can write
them, and so can the authors of a repository one opens, so they may only tighten what the user
configured and are handed no secret. Real sessions of the demo agent on a real host."""

from __future__ import annotations

from pathlib import Path

import pytest

from agh_nb.api import Host
from agh_nb.config import AgentDefinition, Settings
from agh_nb.core.manager import resolve_permissions
from agh_nb.errors import AgentStartError
from tests.conftest import DEMO, write_agent

pytestmark = pytest.mark.timeout(120)

SECRET = "sk-workspace-test-0123456789abcdef"
REF = "vault:providers/workspace-test"


def workspace_agent(workspace: Path, name: str, extra: str) -> Path:
    """Write ``<workspace>/.agh/agents/<name>/AGENT.md`` running the demo agent."""
    directory = workspace / ".agh" / "agents" / name
    directory.mkdir(parents=True)
    argv = ", ".join(f'"{part}"' for part in [*DEMO, "--fast"])
    path = directory / "AGENT.md"
    path.write_text(f"---\nname: {name}\ncommand: [{argv}]\n{extra}---\n", encoding="utf-8")
    return path


def test_a_workspace_definition_cannot_raise_the_permission_mode(host: Host, agh_home: Path, workspace: Path) -> None:
    workspace_agent(workspace, "loose", "permissions: approve-all\n")
    write_agent(agh_home, "loose-at-home", [*DEMO, "--fast"], "permissions: approve-all\n")
    capped = host.create("loose", cwd=str(workspace))
    assert capped.permissions == "approve-reads"  # the default
    (note,) = [e for e in host.events(capped.id) if e.type == "system" and e.content.get("title") == "permissions"]
    assert "runs approve-reads, not the approve-all" in note.content["text"] and "\n" not in note.content["text"]
    at_home = host.create("loose-at-home", cwd=str(workspace))
    assert at_home.permissions == "approve-all"
    flagged = host.create("loose", cwd=str(workspace), permissions="approve-all")
    assert flagged.permissions == "approve-all"
    for obeyed in (at_home, flagged):  # nothing to say when the definition or the flag was obeyed
        assert not [e for e in host.events(obeyed.id) if e.content.get("title") == "permissions"]


def test_permissions_of_a_workspace_definition_only_tighten(tmp_path: Path) -> None:
    ws = str(tmp_path / "ws")
    inside = AgentDefinition(name="a", command=("x",), source=f"{ws}/.agh/agents/a/AGENT.md", permissions="approve-all")
    outside = AgentDefinition(name="a", command=("x",), source=str(tmp_path / "home/agents/a/AGENT.md"),
                              permissions="approve-all")
    tight = AgentDefinition(name="a", command=("x",), source=f"{ws}/.agh/agents/a/AGENT.md", permissions="deny-all")

    def mode(definition: AgentDefinition, configured: str | None) -> str:
        return resolve_permissions(None, definition, Settings(permission_mode=configured), "user", workspace=ws)

    assert mode(inside, None) == "approve-reads"
    assert mode(inside, "approve-all") == "approve-all"  # what the user configured anyway
    assert mode(inside, "deny-all") == "deny-all"
    assert mode(tight, "approve-all") == "deny-all"
    assert mode(outside, "deny-all") == "approve-all"  # $AGH_HOME's definitions are the user's own


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(f"env:\n  DEMO_TOKEN: {REF}\n", id="vault-ref"),
        pytest.param("env:\n  DEMO_TOKEN: env:AGH_TEST_WS_TOKEN\n", id="env-ref"),
        pytest.param("env:\n  DEMO_TOKEN: env:AGH_TEST_WS_TOKEN?\n", id="optional-ref"),
        pytest.param(f"mcp_servers:\n  - name: files\n    command: [\"true\"]\n    env:\n      T: {REF}\n", id="mcp-env"),
    ],
)
def test_a_workspace_definition_is_handed_no_secret(
    host: Host, agh_home: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch, extra: str
) -> None:
    host.vault_put(REF, SECRET)
    monkeypatch.setenv("AGH_TEST_WS_TOKEN", SECRET)
    workspace_agent(workspace, "keyed", extra)
    with pytest.raises(AgentStartError) as caught:
        host.create("keyed", cwd=str(workspace))
    message = str(caught.value)
    assert "\n" not in message and SECRET not in message
    assert "inside the workspace" in message and "$AGH_HOME/agents/keyed/AGENT.md" in message
    (record,) = host.list()
    assert record.state.value == "stopped" and record.failure is not None
    assert record.failure.kind.value == "startup_failure"
    said = host.sql(f"SELECT content::VARCHAR AS c FROM events WHERE session_id = '{record.id}'")["c"]
    assert not any(SECRET in c for c in said)


def test_the_same_definition_in_agh_home_gets_its_secret(host: Host, agh_home: Path, workspace: Path) -> None:
    # The control of the test above: the refusal is the workspace's, not the ref's.
    host.vault_put(REF, SECRET)
    write_agent(agh_home, "keyed", [*DEMO, "--fast"], f"env:\n  DEMO_TOKEN: {REF}\n")
    record = host.create("keyed", cwd=str(workspace))
    host.prompt(record.id, "echo-env DEMO_TOKEN").wait(30)
    said = host.sql(f"SELECT content::VARCHAR AS c FROM events WHERE session_id = '{record.id}'")["c"]
    assert any(f"DEMO_TOKEN=[redacted:{REF}" in c for c in said), said
    assert not any(SECRET in c for c in said)


def test_an_agent_cannot_plant_a_definition_that_takes_keys_or_approvals(
    host: Host, agh_home: Path, workspace: Path
) -> None:
    # What a session's agent writes into .agh/agents under approve-all applies to the next
    # session of that name: it gets neither approve-all nor the user's keys.
    host.vault_put(REF, SECRET)
    record = host.create("demo-fast", cwd=str(workspace), permissions="approve-all")
    argv = ", ".join(f'"{part}"' for part in [*DEMO, "--fast"])
    planted = (
        "mkdir -p .agh/agents/demo-fast && printf '%s\\n' '---' 'name: demo-fast' "
        f"'command: [{argv}]' 'permissions: approve-all' '---' > .agh/agents/demo-fast/AGENT.md"
    )
    assert host.prompt(record.id, f"shell {planted}").wait(60).stop_reason == "end_turn"
    assert (workspace / ".agh" / "agents" / "demo-fast" / "AGENT.md").exists()
    host.stop(record.id)
    assert host.create("demo-fast", cwd=str(workspace)).permissions == "approve-reads"
    planted_keys = workspace / ".agh" / "agents" / "demo-fast" / "AGENT.md"
    planted_keys.write_text(planted_keys.read_text().replace("permissions: approve-all", f"env:\n  K: {REF}"))
    with pytest.raises(AgentStartError, match="inside the workspace"):
        host.create("demo-fast", cwd=str(workspace))
