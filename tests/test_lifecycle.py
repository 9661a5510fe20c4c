"""Session lifecycle against real demo-agent subprocesses (SPEC 2): create, prompt, queue, stop, fail."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from agh_nb.agents.demo import MALFORMED_PARAMS, NEWER_UPDATE
from agh_nb.api import Host, build_query
from agh_nb.core.session_dir import ledger_path
from agh_nb.errors import AgentStartError, SessionNotActiveError, SessionNotFoundError, UsageError
from tests.conftest import DEMO, wait_until, write_agent

pytestmark = pytest.mark.timeout(90)


def types_of(host: Host, session_id: str) -> list[str]:
    return [e.type for e in host.events(session_id)]


def assert_gapless(host: Host, session_id: str) -> None:
    sequences = [e.sequence for e in host.events(session_id)]
    assert sequences == list(range(1, len(sequences) + 1))


def test_create_prompt_stop_records_the_whole_turn(host: Host, workspace: Path) -> None:
    record = host.create("demo", cwd=str(workspace), name="first")
    assert record.state.value == "active"
    assert record.id.startswith("sess_")
    assert record.acp_session_id and record.acp_session_id.startswith("demo-")
    assert record.acp_caps.get("loadSession") is True
    meta = host.home / "sessions" / record.id / "meta.json"
    assert meta.is_file()

    result = host.prompt(record.id, "hello world").wait(30)
    assert result.stop_reason == "end_turn"
    assert result.usage and result.usage["total_tokens"] > 0

    kinds = types_of(host, record.id)
    assert kinds[0] == "user_message"
    for expected in ("thought", "plan", "agent_message", "tool_call", "tool_result", "usage", "done"):
        assert expected in kinds, expected
    assert kinds[-1] == "done"
    events = host.events(record.id)
    assert {e.turn_id for e in events} == {result.turn_id}
    first = events[0].content
    assert first["schema"] == "agh.session.event.v1"
    assert first["session_id"] == record.acp_session_id
    assert first["text"] == "hello world"
    tool_result = next(e for e in events if e.type == "tool_result")
    assert tool_result.content["raw"]["sessionUpdate"] == "tool_call_update"
    assert tool_result.content["tool_call_id"]

    usage = host.sql(f"SELECT * FROM token_usage WHERE session_id = '{record.id}'")
    assert len(usage) == 1 and int(usage["total_tokens"][0]) == result.usage["total_tokens"]

    stopped = host.stop(record.id)
    assert stopped.state.value == "stopped"
    assert stopped.stop_reason is not None and stopped.stop_reason.value == "user_canceled"
    assert stopped.failure is None
    assert types_of(host, record.id)[-1] == "session_stopped"
    assert_gapless(host, record.id)
    # Stopping twice is harmless and changes nothing.
    assert host.stop(record.id).updated_at == stopped.updated_at
    assert types_of(host, record.id).count("session_stopped") == 1


def test_raw_keeps_the_update_exactly_as_the_agent_sent_it(host: Host, workspace: Path) -> None:
    # A field from a newer protocol and an explicit null: the SDK's models have no place for
    # either, so only the payload as received can keep them (SPEC 4: ``raw``).
    record = host.create("demo-fast", cwd=str(workspace))
    assert host.prompt(record.id, "newer").wait(30).stop_reason == "end_turn"
    (message,) = host.events(record.id, build_query(types="agent_message"))
    assert message.content["raw"] == NEWER_UPDATE
    assert message.content["text"] == NEWER_UPDATE["content"]["text"]
    host.stop(record.id)


def test_a_malformed_update_is_kept_as_a_readable_system_event(host: Host, workspace: Path) -> None:
    # session/update is mapped from the frame itself, with no SDK model: an update that breaks
    # the schema is neither dropped nor fatal; it is stored, saying what is wrong, and the turn
    # goes on (the SDK used to log it and drop it).
    record = host.create("demo-fast", cwd=str(workspace))
    assert host.prompt(record.id, "malformed").wait(30).stop_reason == "end_turn"
    rows = host.events(record.id, build_query(types="system"))
    shown = [(e.content["title"], e.content.get("error")) for e in rows if e.turn_id is not None]
    assert shown == [
        ("invalid agent_message_chunk", "content must be an object"),
        ("invalid tool_call", "toolCallId must be a string"),
        ("invalid session/update", "the update is not an object"),
        ("invalid session/update", "the update is not an object"),
    ]
    assert [e.content["raw"] for e in rows if e.turn_id is not None][-1] == {"update": MALFORMED_PARAMS[-1]}
    (message,) = host.events(record.id, build_query(types="agent_message"))
    assert message.content["text"] == "Still here after the malformed updates.\n"
    assert host.get(record.id).state.value == "active"
    assert_gapless(host, record.id)
    host.stop(record.id)


def test_prompts_sent_while_a_turn_runs_are_queued_fifo(host: Host, workspace: Path) -> None:
    record = host.create("demo", cwd=str(workspace))
    first = host.prompt(record.id, "slow 5 0.1")
    second = host.prompt(record.id, "second prompt")
    third = host.prompt(record.id, "third prompt")
    assert (first.position, second.position, third.position) == (0, 1, 2)
    assert third.wait(60).stop_reason == "end_turn"
    assert first.done() and second.done()
    events = host.events(record.id, build_query(types="done"))
    assert [e.turn_id for e in events] == [first.turn_id, second.turn_id, third.turn_id]
    # Every agent_message of turn 1 precedes turn 2's first agent_message.
    rows = host.events(record.id, build_query(types="agent_message"))
    last_first = max(e.sequence for e in rows if e.turn_id == first.turn_id)
    first_second = min(e.sequence for e in rows if e.turn_id == second.turn_id)
    assert last_first < first_second


def test_interrupt_cancels_the_running_turn_and_drops_the_queue(host: Host, workspace: Path) -> None:
    record = host.create("demo", cwd=str(workspace))
    running = host.prompt(record.id, "slow 200 0.05")
    queued = host.prompt(record.id, "never runs")
    wait_until(lambda: len(host.events(record.id, build_query(types="agent_message"))) >= 3)
    urgent = host.prompt(record.id, "urgent", interrupt=True)
    assert urgent.wait(30).stop_reason == "end_turn"
    assert running.wait(5).stop_reason == "cancelled"
    dropped = queued.wait(5)
    assert dropped.stop_reason == "cancelled" and dropped.error
    history = {t["turn_id"]: t for t in host.history(record.id)}
    assert history[queued.turn_id]["response"] == ""


def test_unknown_agent_leaves_a_stopped_session(host: Host, workspace: Path) -> None:
    with pytest.raises(AgentStartError, match="unknown agent 'nope'"):
        host.create("nope", cwd=str(workspace))
    (record,) = host.list()
    assert record.state.value == "stopped"
    assert record.stop_reason and record.stop_reason.value == "error"
    assert record.failure and record.failure.kind.value == "startup_failure"
    assert types_of(host, record.id) == ["session_stopped"]


def test_bad_cwd_leaves_a_stopped_session(host: Host, tmp_path: Path) -> None:
    with pytest.raises(AgentStartError, match="does not exist"):
        host.create("demo", cwd=str(tmp_path / "missing"))
    (record,) = host.list()
    assert record.failure and record.failure.kind.value == "startup_failure"


@pytest.mark.parametrize(
    ("command", "kind", "message"),
    [
        pytest.param(["/nonexistent/agent-binary"], "startup_failure", "not found", id="missing-binary"),
        pytest.param([*DEMO, "--fail-startup", "exit"], "handshake_failure", "before answering initialize", id="exit-before-initialize"),
        pytest.param([*DEMO, "--fail-startup", "garbage"], "protocol_failure", "non-ACP output", id="garbage-before-initialize"),
        pytest.param([*DEMO, "--fail-new"], "handshake_failure", "session/new with error -32603", id="jsonrpc-error-outside-a-prompt"),
    ],
)
def test_startup_failures_are_classified(
    host: Host, agh_home: Path, workspace: Path, command: list[str], kind: str, message: str
) -> None:
    write_agent(agh_home, "broken", command)
    with pytest.raises(AgentStartError, match=message) as caught:
        host.create("broken", cwd=str(workspace))
    assert "\n" not in str(caught.value)
    (record,) = host.list()
    assert record.state.value == "stopped"
    assert record.stop_reason and record.stop_reason.value == "error"
    assert record.failure and record.failure.kind.value == kind
    last = host.events(record.id)[-1]
    assert last.type == "session_stopped"
    assert last.content["failure"]["kind"] == kind


def test_exit_before_initialize_keeps_the_stderr_line(host: Host, agh_home: Path, workspace: Path) -> None:
    write_agent(agh_home, "refuser", [*DEMO, "--fail-startup", "exit"])
    with pytest.raises(AgentStartError):
        host.create("refuser", cwd=str(workspace))
    (record,) = host.list()
    assert record.failure is not None
    assert "exit code 2" in record.failure.summary
    assert "demo: refusing to start" in record.failure.summary


def test_sigkill_mid_turn_is_agent_crashed_and_keeps_events(host: Host, workspace: Path) -> None:
    record = host.create("demo", cwd=str(workspace))
    turn = host.prompt(record.id, "slow 100 0.05")
    wait_until(lambda: len(host.events(record.id, build_query(types="agent_message"))) >= 5)
    before = [e.id for e in host.events(record.id)]
    live = host.runtime.manager.live(record.id)
    assert live is not None
    pid = live._driver.pid  # the real child process
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    result = turn.wait(30)
    assert result.stop_reason == "error"
    final = wait_until(lambda: (r := host.get(record.id)).state.value == "stopped" and r)
    assert final.stop_reason and final.stop_reason.value == "agent_crashed"
    assert final.failure and final.failure.kind.value == "process_exit"
    assert "signal 9" in final.failure.summary
    after = host.events(record.id)
    assert [e.id for e in after][: len(before)] == before
    assert after[-1].type == "session_stopped"
    assert "error" in [e.type for e in after]
    assert_gapless(host, record.id)


def test_agent_crash_mid_turn_with_exit_code(host: Host, workspace: Path) -> None:
    record = host.create("demo", cwd=str(workspace))
    assert host.prompt(record.id, "crash").wait(30).stop_reason == "error"
    final = wait_until(lambda: (r := host.get(record.id)).state.value == "stopped" and r)
    assert final.stop_reason and final.stop_reason.value == "agent_crashed"
    assert final.failure and "exit code 3" in final.failure.summary


def test_a_crashed_turn_closes_its_tool_calls_before_its_error_and_done(host: Host, workspace: Path) -> None:
    # Regression: the interrupted tool_result used to land after the turn's done (error, done,
    # tool_result, session_stopped), i.e. outside the turn it belongs to.
    record = host.create("demo-fast", cwd=str(workspace))
    result = host.prompt(record.id, "crash").wait(30)
    assert result.stop_reason == "error"
    final = wait_until(lambda: (r := host.get(record.id)).state.value == "stopped" and r)
    assert final.stop_reason and final.stop_reason.value == "agent_crashed"
    events = host.events(record.id)
    turn = [e for e in events if e.turn_id == result.turn_id]
    assert [e.type for e in turn[-3:]] == ["tool_result", "error", "done"]
    closed, error, done = turn[-3:]
    (call,) = [e for e in turn if e.type == "tool_call"]
    assert closed.content["tool_call_id"] == call.content["tool_call_id"]
    assert closed.content["tool_error"].startswith("interrupted")
    assert error.content["failure"]["kind"] == "process_exit"
    assert done.content["stop_reason"] == "error"
    assert [e.type for e in events[len(events) - 4 :]] == ["tool_result", "error", "done", "session_stopped"]
    assert_gapless(host, record.id)
    assert host.repair(record.id, dry_run=True)["empty"] is True, "nothing is left for repair"
    assert host.transcript(record.id)[-1]["role"] == "tool_result"


def test_a_failed_start_is_settled_without_passing_through_stopping(
    host: Host, agh_home: Path, workspace: Path
) -> None:
    # The table has no starting -> stopping: were the stop path to take it, create would raise
    # InvalidTransitionError instead of a classified AgentStartError.
    write_agent(agh_home, "refuser", [*DEMO, "--fail-startup", "exit"])
    with pytest.raises(AgentStartError, match="could not start"):
        host.create("refuser", cwd=str(workspace))
    (record,) = host.list()
    assert record.state.value == "stopped" and record.stop_reason and record.stop_reason.value == "error"
    assert record.failure and record.failure.kind.value == "handshake_failure"
    bundle = Path(record.failure.crash_bundle_path or "")
    assert bundle.is_file() and json.loads(bundle.read_text())["failure"]["kind"] == "handshake_failure"
    (stopped,) = host.events(record.id)
    assert stopped.type == "session_stopped"
    assert stopped.content["failure"]["crash_bundle_path"] == str(bundle)
    meta = json.loads((agh_home / "sessions" / record.id / "meta.json").read_text())
    assert meta["state"] == "stopped" and meta["failure"]["kind"] == "handshake_failure"
    assert ledger_path(agh_home, record).is_file()


def test_prompt_error_is_a_prompt_failure(host: Host, workspace: Path) -> None:
    record = host.create("demo", cwd=str(workspace))
    result = host.prompt(record.id, "fail").wait(30)
    assert result.stop_reason == "error" and result.error
    final = wait_until(lambda: (r := host.get(record.id)).state.value == "stopped" and r)
    assert final.stop_reason and final.stop_reason.value == "error"
    assert final.failure and final.failure.kind.value == "prompt_failure"


def test_garbage_mid_session_is_a_protocol_failure(host: Host, workspace: Path) -> None:
    record = host.create("demo", cwd=str(workspace))
    host.prompt(record.id, "garbage").wait(30)
    final = wait_until(lambda: (r := host.get(record.id)).state.value == "stopped" and r)
    assert final.failure and final.failure.kind.value == "protocol_failure"
    assert "this is not json" in final.failure.summary


def test_prompting_a_stopped_or_unknown_session_is_one_clear_error(host: Host, workspace: Path) -> None:
    record = host.create("demo", cwd=str(workspace))
    host.stop(record.id)
    with pytest.raises(SessionNotActiveError, match="stopped, not active"):
        host.prompt(record.id, "hi")
    with pytest.raises(SessionNotFoundError):
        host.prompt("sess_doesnotexist", "hi")
    with pytest.raises(UsageError):
        host.prompt(record.id, "   ")


def test_bad_permissions_flag_creates_nothing(host: Host, workspace: Path) -> None:
    with pytest.raises(UsageError, match="--permissions"):
        host.create("demo", cwd=str(workspace), permissions="yolo")
    assert host.list() == []


def test_dream_sessions_run_approve_all(host: Host, workspace: Path) -> None:
    record = host.create("demo", cwd=str(workspace), permissions="deny-all", session_type="dream")
    assert record.permissions == "approve-all"


def test_third_party_style_agent_declared_only_by_command(host: Host, agh_home: Path, workspace: Path) -> None:
    """An agent defined purely by an AGENT.md ``command`` string in the workspace works the same."""
    agents = workspace / ".agh" / "agents" / "custom"
    agents.mkdir(parents=True)
    (agents / "AGENT.md").write_text(
        f"---\nname: custom\ncommand: {sys.executable} -m agh_nb.agents.demo --fast\npermissions: deny-all\n---\n",
        encoding="utf-8",
    )
    record = host.create("custom", cwd=str(workspace))
    assert record.permissions == "deny-all"
    assert host.prompt(record.id, "hi").wait(30).stop_reason == "end_turn"
    host.stop(record.id)


def test_token_counts_past_64_bits_do_not_break_the_store(host: Host, workspace: Path) -> None:
    # Regression: a count the BIGINT token_usage columns cannot hold failed the store's commit,
    # after which the store refused every write (this session's and every other's).
    record = host.create("demo-fast", cwd=str(workspace))
    result = host.prompt(record.id, "huge-usage").wait(30)
    assert result.stop_reason == "end_turn"
    assert result.usage and result.usage["input_tokens"] == 2**63
    assert host.prompt(record.id, "hello").wait(30).stop_reason == "end_turn"
    assert host.get(record.id).state.value == "active"
    (done, _) = host.events(record.id, build_query(types="done"))
    assert done.content["usage"]["input_tokens"] == 2**63, "the event keeps what the agent reported"
    rows = host.sql(
        "SELECT input_tokens IS NULL AS dropped, output_tokens, context_used IS NULL AS no_context "
        f"FROM token_usage WHERE turn_id = '{result.turn_id}'"
    ).to_dict("records")
    assert rows == [{"dropped": True, "output_tokens": 5, "no_context": True}], "what fits is merged"
    host.stop(record.id)
    assert types_of(host, record.id)[-1] == "session_stopped"
