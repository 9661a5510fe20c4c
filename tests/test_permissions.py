"""Permissions (SPEC 5) against the real demo agent: the mode matrix, approvals and what they cover,
where the mode comes from, the workspace boundary, and the busy-input queue cap."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agh_nb.api import Host, build_query
from agh_nb.errors import ApprovalError, QueueFullError
from agh_nb.runtime import Runtime
from tests.conftest import DEMO, wait_until, write_agent

pytestmark = pytest.mark.timeout(90)


def permission_events(host: Host, session_id: str) -> list[dict]:
    return [e.content for e in host.events(session_id, build_query(types="permission"))]


def tool_results(host: Host, session_id: str) -> list[dict]:
    return [e.content for e in host.events(session_id, build_query(types="tool_result"))]


def run(host: Host, session_id: str, prompt: str) -> None:
    assert host.prompt(session_id, prompt).wait(30).stop_reason == "end_turn"


# -- the static matrix: each cell against a real agent -------------------------------------------

# What each demo prompt does, and how to see that it happened. ``write``/``edit``/``run`` ask
# session/request_permission first; ``write-direct``/``run-direct`` call the client method without
# asking, so only the mode stands between them and the workspace.
PROMPTS = {
    "read": "read notes.txt",
    "write": "write out.txt written by the agent",
    "write-direct": "write-direct out.txt written by the agent",
    "edit": "edit notes.txt hello edited",
    "run": "run touch ran.txt",
    "run-direct": "run-direct touch ran.txt",
}

MATRIX = [
    ("deny-all", "read", False),
    ("deny-all", "write", False),
    ("deny-all", "write-direct", False),
    ("deny-all", "edit", False),
    ("deny-all", "run", False),
    ("deny-all", "run-direct", False),
    ("approve-reads", "read", True),
    ("approve-reads", "write-direct", False),  # fs/write_text_file without an approval
    ("approve-reads", "run-direct", False),  # terminal/create without an approval
    ("approve-all", "read", True),
    ("approve-all", "write", True),
    ("approve-all", "write-direct", True),
    ("approve-all", "edit", True),
    ("approve-all", "run", True),
    ("approve-all", "run-direct", True),
]


def effect(host: Host, session_id: str, workspace: Path, operation: str) -> bool:
    if operation == "read":
        return any("hello notes" in str(r.get("raw")) for r in tool_results(host, session_id))
    if operation in ("write", "write-direct"):
        return (workspace / "out.txt").exists()
    if operation == "edit":
        return (workspace / "notes.txt").read_text() == "edited notes\n"
    return (workspace / "ran.txt").exists()


@pytest.mark.parametrize(("mode", "operation", "allowed"), MATRIX, ids=[f"{m}-{o}" for m, o, _ in MATRIX])
def test_mode_matrix(host: Host, workspace: Path, mode: str, operation: str, allowed: bool) -> None:
    (workspace / "notes.txt").write_text("hello notes\n")
    record = host.create("demo-fast", cwd=str(workspace), permissions=mode)
    run(host, record.id, PROMPTS[operation])
    assert effect(host, record.id, workspace, operation) is allowed
    assert host.pending_approvals(record.id) == [], "the mode alone decided"
    refusals = [p for p in permission_events(host, record.id) if p.get("decision") == "reject-once"]
    if allowed:
        assert refusals == []
    else:
        assert refusals, "a refusal is recorded as a permission event"
        assert all(r["runtime"]["source"] == f"mode:{mode}" for r in refusals)
    if operation.endswith("-direct") and not allowed:
        (refusal,) = refusals  # the client method itself was refused, no request was made
        assert refusal["action"] == ("fs/write_text_file" if operation == "write-direct" else "terminal/create")
        assert "blocked by permission mode" in refusal["error"]


# -- approve-reads: an approval covers exactly what it showed, in its own turn -------------------


def approve_next(host: Host, session_id: str, decision: str) -> dict:
    (request,) = wait_until(lambda: host.pending_approvals(session_id))
    host.approve(session_id, request["request_id"], decision)
    return request


def terminal_refusals(host: Host, session_id: str) -> list[dict]:
    return [
        p for p in permission_events(host, session_id) if p.get("action") == "terminal/create" and p.get("decision")
    ]


def test_approve_reads_an_approved_run_executes_exactly_that_command(host: Host, workspace: Path) -> None:
    record = host.create("demo-fast", cwd=str(workspace))
    assert record.permissions == "approve-reads"
    turn = host.prompt(record.id, "run touch ran.txt")
    request = approve_next(host, record.id, "allow-once")
    assert request["kind"] == "execute" and request["title"] == "Run touch ran.txt"
    assert turn.wait(30).stop_reason == "end_turn"
    assert (workspace / "ran.txt").exists()
    assert terminal_refusals(host, record.id) == []
    (decided,) = [p for p in permission_events(host, record.id) if p.get("decision")]
    assert (decided["decision"], decided["runtime"]["source"]) == ("allow-once", "user")
    (result,) = tool_results(host, record.id)
    assert result["tool_result"]["exit_code"] == 0 and "tool_error" not in result


def test_approve_reads_a_different_command_after_the_approval_is_refused(host: Host, workspace: Path) -> None:
    record = host.create("demo-fast", cwd=str(workspace))
    turn = host.prompt(record.id, "run-swap touch shown.txt -- touch sneaky.txt")
    request = approve_next(host, record.id, "allow-once")
    assert request["title"] == "Run touch shown.txt"
    assert turn.wait(30).stop_reason == "end_turn"
    assert not (workspace / "sneaky.txt").exists() and not (workspace / "shown.txt").exists()
    (refusal,) = terminal_refusals(host, record.id)
    assert refusal["decision"] == "reject-once" and "no approved request covers it" in refusal["error"]


def test_approve_reads_a_rejected_run_runs_nothing(host: Host, workspace: Path) -> None:
    record = host.create("demo-fast", cwd=str(workspace))
    turn = host.prompt(record.id, "run touch ran.txt")
    approve_next(host, record.id, "reject-once")
    assert turn.wait(30).stop_reason == "end_turn"
    assert not (workspace / "ran.txt").exists()
    assert terminal_refusals(host, record.id) == [], "the agent did not even try terminal/create"
    texts = "".join(e.content.get("text") or "" for e in host.events(record.id, build_query(types="agent_message")))
    assert "permission rejected, not running touch" in texts
    (failed,) = tool_results(host, record.id)
    assert failed["tool_error"] == "permission rejected"


def test_a_once_approval_does_not_carry_into_the_next_turn(host: Host, workspace: Path) -> None:
    record = host.create("demo-fast", cwd=str(workspace))
    # Turn 1 is approved to run `touch a.txt` but runs something else: the grant goes unused.
    first = host.prompt(record.id, "run-swap touch a.txt -- touch b.txt")
    approve_next(host, record.id, "allow-once")
    assert first.wait(30).stop_reason == "end_turn"
    assert not (workspace / "a.txt").exists() and not (workspace / "b.txt").exists()
    # Turn 2 runs exactly the approved command, without asking: turn 1's approval is over.
    run(host, record.id, "run-direct touch a.txt")
    assert not (workspace / "a.txt").exists()
    assert [r["decision"] for r in terminal_refusals(host, record.id)] == ["reject-once", "reject-once"]


def test_approve_reads_an_approved_edit_writes_the_diff_it_showed(host: Host, workspace: Path) -> None:
    (workspace / "notes.txt").write_text("hello notes\n")
    record = host.create("demo-fast", cwd=str(workspace))
    turn = host.prompt(record.id, "edit notes.txt hello edited")
    request = approve_next(host, record.id, "allow-once")
    assert request["kind"] == "edit" and request["paths"] == [str(workspace / "notes.txt")]
    (diff,) = request["diff"]
    assert (diff["oldText"], diff["newText"]) == ("hello notes\n", "edited notes\n")
    assert turn.wait(30).stop_reason == "end_turn"
    assert (workspace / "notes.txt").read_text() == "edited notes\n"


# -- where the mode comes from -------------------------------------------------------------------

PRECEDENCE = [
    # config.toml mode, AGENT.md permissions, --permissions, session type -> resolved mode
    pytest.param("deny-all", None, None, "user", "deny-all", id="config-alone"),
    pytest.param(None, None, None, "user", "approve-reads", id="nothing-set-is-approve-reads"),
    pytest.param("deny-all", "approve-all", None, "user", "approve-all", id="agent-md-over-config"),
    pytest.param("deny-all", "approve-all", "approve-reads", "user", "approve-reads", id="flag-over-agent-md"),
    pytest.param("deny-all", None, "approve-all", "user", "approve-all", id="flag-over-config"),
    pytest.param("deny-all", "deny-all", "deny-all", "dream", "approve-all", id="dream-forced-approve-all"),
]


@pytest.mark.parametrize(("config", "agent_md", "flag", "session_type", "expected"), PRECEDENCE)
def test_permission_mode_precedence(
    agh_home: Path,
    workspace: Path,
    config: str | None,
    agent_md: str | None,
    flag: str | None,
    session_type: str,
    expected: str,
) -> None:
    if config:
        (agh_home / "config.toml").write_text(f'[permissions]\nmode = "{config}"\n')
    write_agent(agh_home, "moded", [*DEMO, "--fast"], f"permissions: {agent_md}\n" if agent_md else "")
    (workspace / "notes.txt").write_text("hello notes\n")
    host = Host(Runtime.start(home=agh_home))
    try:
        record = host.create("moded", cwd=str(workspace), permissions=flag, session_type=session_type)
        assert record.permissions == expected
        # The resolved mode is the one enforced: a direct write lands only under approve-all,
        # a read is refused only under deny-all.
        run(host, record.id, "write-direct out.txt hi")
        run(host, record.id, "read notes.txt")
        assert (workspace / "out.txt").exists() is (expected == "approve-all")
        assert effect(host, record.id, workspace, "read") is (expected != "deny-all")
        meta = host.get(record.id).to_dict()
        assert meta["permissions"] == expected
    finally:
        host.close()


# -- the busy-input queue -----------------------------------------------------------------------


def test_the_prompt_queue_is_capped(agh_home: Path, workspace: Path) -> None:
    (agh_home / "config.toml").write_text("[session.busy_input]\nqueue_cap = 2\n")
    host = Host(Runtime.start(home=agh_home))
    try:
        record = host.create("demo-fast", cwd=str(workspace))
        running = host.prompt(record.id, "slow 100 0.05")
        wait_until(lambda: host.events(record.id, build_query(types="agent_message")))
        queued = [host.prompt(record.id, f"queued {i}") for i in range(2)]
        assert [q.position for q in queued] == [1, 2]
        before = len(host.events(record.id, build_query(types="user_message")))
        with pytest.raises(QueueFullError, match="2 queued prompts") as caught:
            host.prompt(record.id, "one too many")
        assert "\n" not in str(caught.value) and "--interrupt" in str(caught.value)
        assert len(host.events(record.id, build_query(types="user_message"))) == before, "nothing recorded"
        # An interrupting prompt is not refused: it drops the queue instead.
        urgent = host.prompt(record.id, "urgent", interrupt=True)
        assert urgent.wait(30).stop_reason == "end_turn"
        assert running.wait(10).stop_reason == "cancelled"
        assert [q.wait(10).stop_reason for q in queued] == ["cancelled", "cancelled"]
    finally:
        host.close()


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
    # The agent dropped the call without a word: the turn's end closed it (no call stays pending),
    # before the turn's done, saying why.
    events = host.events(record.id, build_query(turn=turn.turn_id))
    (closed,) = [e for e in events if e.type == "tool_result"]
    (call,) = [e for e in events if e.type == "tool_call"]
    assert closed.content["tool_call_id"] == call.content["tool_call_id"]
    assert closed.content["tool_error"] == "not run: its permission request was refused (cancelled)"
    assert closed.content["runtime"]["turn_end"] == "cancelled"
    assert [e.type for e in events][-1] == "done" and closed.sequence < events[-1].sequence


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
