"""Permissions (SPEC 5) against the real demo agent: the mode matrix, the workspace boundary, approvals."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agh_nb.api import Host, build_query
from agh_nb.errors import ApprovalError
from agh_nb.runtime import Runtime
from tests.conftest import wait_until

pytestmark = pytest.mark.timeout(90)


def permission_events(host: Host, session_id: str) -> list[dict]:
    return [e.content for e in host.events(session_id, build_query(types="permission"))]


def tool_results(host: Host, session_id: str) -> list[dict]:
    return [e.content for e in host.events(session_id, build_query(types="tool_result"))]


def run(host: Host, session_id: str, prompt: str) -> None:
    assert host.prompt(session_id, prompt).wait(30).stop_reason == "end_turn"


# -- the static matrix: each cell against a real agent -------------------------------------------

MATRIX = [
    ("deny-all", "read", False),
    ("deny-all", "write", False),
    ("deny-all", "run", False),
    ("approve-reads", "read", True),
    ("approve-reads", "run", False),
    ("approve-all", "read", True),
    ("approve-all", "write", True),
    ("approve-all", "run", True),
]


@pytest.mark.parametrize(("mode", "operation", "allowed"), MATRIX, ids=[f"{m}-{o}" for m, o, _ in MATRIX])
def test_mode_matrix(host: Host, workspace: Path, mode: str, operation: str, allowed: bool) -> None:
    (workspace / "notes.txt").write_text("hello notes\n")
    record = host.create("demo-fast", cwd=str(workspace), permissions=mode)
    prompt = {
        "read": "read notes.txt",
        "write": "write out.txt written by the agent",
        "run": "run touch ran.txt",
    }[operation]
    run(host, record.id, prompt)
    effect = {
        "read": lambda: any("hello notes" in str(r.get("raw")) for r in tool_results(host, record.id)),
        "write": lambda: (workspace / "out.txt").exists(),
        "run": lambda: (workspace / "ran.txt").exists(),
    }[operation]
    assert bool(effect()) is allowed
    if not allowed:
        refusals = [p for p in permission_events(host, record.id) if p.get("decision") == "reject-once"]
        assert refusals, "a refusal is recorded as a permission event"


def test_approve_reads_write_waits_for_a_decision_then_writes(host: Host, workspace: Path) -> None:
    record = host.create("demo-fast", cwd=str(workspace))  # default mode: approve-reads
    assert record.permissions == "approve-reads"
    turn = host.prompt(record.id, "write approved.txt yes please")
    pending = wait_until(lambda: host.pending_approvals(record.id))
    (request,) = pending
    assert request["kind"] == "edit"
    assert request["paths"] == [str(workspace / "approved.txt")]
    assert request["diff"] and request["diff"][0]["newText"] == "yes please"
    assert host.inspect(record.id)["pending_approvals"][0]["request_id"] == request["request_id"]
    arrivals = [p for p in permission_events(host, record.id) if p.get("request_id") == request["request_id"]]
    assert len(arrivals) == 1 and "decision" not in arrivals[0]
    assert not turn.done()

    resolved = host.approve(record.id, request["request_id"], "allow-once")
    assert resolved["decision"] == "allow-once"
    assert turn.wait(30).stop_reason == "end_turn"
    assert (workspace / "approved.txt").read_text() == "yes please"
    decisions = [p for p in permission_events(host, record.id) if p.get("decision")]
    assert [d["decision"] for d in decisions] == ["allow-once"]
    assert decisions[0]["runtime"]["source"] == "user"
    with pytest.raises(ApprovalError, match="already resolved"):
        host.approve(record.id, request["request_id"], "reject-once")
    assert host.pending_approvals(record.id) == []


def test_reject_makes_the_agent_take_its_reject_path(host: Host, workspace: Path) -> None:
    record = host.create("demo-fast", cwd=str(workspace))
    turn = host.prompt(record.id, "write nope.txt should not exist")
    (request,) = wait_until(lambda: host.pending_approvals(record.id))
    host.approve(record.id, request["request_id"], "reject-once")
    assert turn.wait(30).stop_reason == "end_turn"
    assert not (workspace / "nope.txt").exists()
    texts = "".join(e.content.get("text") or "" for e in host.events(record.id, build_query(types="agent_message")))
    assert "permission rejected" in texts


def test_unknown_decision_and_unknown_request_are_clear_errors(host: Host, workspace: Path) -> None:
    record = host.create("demo-fast", cwd=str(workspace))
    with pytest.raises(ApprovalError, match="unknown decision"):
        host.approve(record.id, "req_x", "maybe")
    with pytest.raises(ApprovalError, match="no pending permission request"):
        host.approve(record.id, "req_nope", "allow-once")


def test_an_undecided_request_times_out_as_reject_once(agh_home: Path, workspace: Path) -> None:
    (agh_home / "config.toml").write_text('[permissions]\napproval_timeout = "1s"\n')
    host = Host(Runtime.start(home=agh_home))
    try:
        record = host.create("demo-fast", cwd=str(workspace))
        assert host.prompt(record.id, "write late.txt too late").wait(30).stop_reason == "end_turn"
        assert not (workspace / "late.txt").exists()
        decisions = [p for p in permission_events(host, record.id) if p.get("decision")]
        assert [(d["decision"], d["runtime"]["source"]) for d in decisions] == [("reject-once", "timeout")]
    finally:
        host.close()


def test_interrupting_the_turn_cancels_pending_requests(host: Host, workspace: Path) -> None:
    record = host.create("demo-fast", cwd=str(workspace))
    turn = host.prompt(record.id, "write pending.txt text")
    (request,) = wait_until(lambda: host.pending_approvals(record.id))
    host.prompt(record.id, "hello", interrupt=True).wait(30)
    assert turn.wait(10).stop_reason == "cancelled"
    decisions = [p for p in permission_events(host, record.id) if p.get("decision")]
    assert [d["decision"] for d in decisions] == ["cancelled"]
    with pytest.raises(ApprovalError, match="already resolved"):
        host.approve(record.id, request["request_id"], "allow-once")


def test_allow_always_covers_later_writes(host: Host, workspace: Path) -> None:
    record = host.create("demo-fast", cwd=str(workspace))
    turn = host.prompt(record.id, "write a.txt first")
    (request,) = wait_until(lambda: host.pending_approvals(record.id))
    host.approve(record.id, request["request_id"], "allow-always")
    turn.wait(30)
    run(host, record.id, "write b.txt second")  # the agent remembers allow_always and asks nothing
    assert (workspace / "a.txt").read_text() == "first"
    assert (workspace / "b.txt").read_text() == "second"


# -- the workspace boundary ----------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    secret_dir = tmp_path / "outside"
    secret_dir.mkdir()
    (secret_dir / "secret.txt").write_text("TOP-SECRET-CONTENT\n")
    return secret_dir


ESCAPES = [
    pytest.param("read ../outside/secret.txt", id="read-dotdot-chain"),
    pytest.param("read {outside}/secret.txt", id="read-absolute-outside"),
    pytest.param("read link/secret.txt", id="read-through-symlinked-dir"),
    pytest.param("read filelink", id="read-symlink-file"),
    pytest.param("write link/new/deeper.txt pwned", id="write-missing-below-symlinked-dir"),
    pytest.param("write ../outside/evil.txt pwned", id="write-dotdot"),
    pytest.param("write {outside}/evil2.txt pwned", id="write-absolute-outside"),
]


@pytest.mark.parametrize("prompt", ESCAPES)
def test_escape_attempts_are_refused(host: Host, tmp_path: Path, outside: Path, prompt: str) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    os.symlink(outside, workspace / "link")
    os.symlink(outside / "secret.txt", workspace / "filelink")
    before = sorted(p.name for p in outside.rglob("*"))
    record = host.create("demo-fast", cwd=str(workspace), permissions="approve-all")
    run(host, record.id, prompt.format(outside=outside))
    assert sorted(p.name for p in outside.rglob("*")) == before, "nothing is written outside"
    stored = host.sql(f"SELECT content::VARCHAR AS c FROM events WHERE session_id = '{record.id}'")
    assert not any("TOP-SECRET-CONTENT" in c for c in stored["c"]), "nothing outside is read"
    refusals = [p for p in permission_events(host, record.id) if p.get("decision") == "reject-once"]
    assert refusals and "outside the workspace" in refusals[0]["error"]
    assert record.id and host.get(record.id).state.value == "active"
