"""Failure kinds (SPEC 2) that need a misbehaving agent: cancellation, permission_failure and
unknown_failure, each from a real demo-agent subprocess, each visible in status, list, the terminal
``session_stopped`` event and the crash bundle."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from agh_nb.adapters.acp_driver import AcpDriver
from agh_nb.api import Host, Reader, build_query
from agh_nb.config import Settings
from agh_nb.core.manager import SessionManager
from agh_nb.core.ports import TurnOutcome
from agh_nb.runtime import open_store
from tests.conftest import DEMO, wait_until, write_agent

pytestmark = pytest.mark.timeout(90)


def settled(host: Host, session_id: str) -> Any:
    return wait_until(lambda: (r := host.get(session_id)).state.value == "stopped" and r)


def assert_failure_everywhere(reader: Reader, session_id: str, kind: str) -> dict[str, Any]:
    """The failure kind in status, list, the last event (session_stopped) and the crash bundle."""
    status = reader.status(session_id)
    assert status["state"] == "stopped" and status["stop_reason"] == "error"
    assert status["failure"]["kind"] == kind
    assert status["health"]["health"] == "dead" and status["health"]["last_error"] == status["failure"]["summary"]
    (listed,) = [r for r in reader.list() if r.id == session_id]
    assert listed.failure is not None and listed.failure.kind.value == kind
    last = reader.events(session_id)[-1]
    assert last.type == "session_stopped"
    assert last.content["stop_reason"] == "error" and last.content["failure"]["kind"] == kind
    bundle_path = Path(status["failure"]["crash_bundle_path"])
    assert last.content["failure"]["crash_bundle_path"] == str(bundle_path)
    bundle = json.loads(bundle_path.read_text())
    assert bundle["schema"] == "agh.session_crash_bundle.v1" and bundle["failure"]["kind"] == kind
    assert reader.repair(session_id, dry_run=True)["empty"] is True
    sequences = [e.sequence for e in reader.events(session_id)]
    assert sequences == list(range(1, len(sequences) + 1))
    return status


# -- permission_failure --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["approve-reads", "approve-all"])
def test_a_permission_request_with_no_options_is_a_permission_failure(
    host: Host, workspace: Path, mode: str
) -> None:
    record = host.create("demo-fast", cwd=str(workspace), permissions=mode)
    result = host.prompt(record.id, "ask-empty").wait(30)
    assert result.stop_reason == "error" and result.error and "no option" in result.error
    settled(host, record.id)
    status = assert_failure_everywhere(host, record.id, "permission_failure")
    assert "cannot be answered" in status["failure"]["summary"]
    assert host.pending_approvals(record.id) == [], "nothing a user could never answer is left pending"
    (refusal,) = [p.content for p in host.events(record.id, build_query(types="permission"))]
    assert refusal["decision"] == "cancelled" and refusal["runtime"]["source"] == "permission_failure"
    assert refusal["raw"]["options"] == []
    turn = [e for e in host.events(record.id) if e.turn_id == result.turn_id]
    # The tool call the request was about is closed inside the turn, before its error and done.
    assert [e.type for e in turn[-3:]] == ["tool_result", "error", "done"]
    assert turn[-2].content["failure"]["kind"] == "permission_failure"


# -- cancellation ---------------------------------------------------------------------------------


@pytest.fixture
def bad_cancel(agh_home: Path) -> str:
    write_agent(agh_home, "bad-cancel", [*DEMO, "--fast", "--on-cancel", "garbage"])
    return "bad-cancel"


def test_a_stop_whose_cancel_is_answered_with_garbage_is_a_cancellation_failure(
    host: Host, workspace: Path, bad_cancel: str
) -> None:
    record = host.create(bad_cancel, cwd=str(workspace))
    turn = host.prompt(record.id, "slow 400 0.05")
    wait_until(lambda: len(host.events(record.id, build_query(types="agent_message"))) >= 3)
    stopped = host.stop(record.id)
    assert stopped.state.value == "stopped" and stopped.stop_reason and stopped.stop_reason.value == "error"
    assert stopped.failure and stopped.failure.kind.value == "cancellation"
    assert stopped.failure.summary.startswith("session/cancel failed")
    assert "non-ACP output" in stopped.failure.summary
    assert turn.wait(10).stop_reason == "error"
    assert_failure_everywhere(host, record.id, "cancellation")
    errors = host.events(record.id, build_query(types="error", turn=turn.turn_id))
    assert [e.content["failure"]["kind"] for e in errors] == ["cancellation"]


def test_an_interrupt_whose_cancel_is_answered_with_garbage_is_a_cancellation_failure(
    host: Host, workspace: Path, bad_cancel: str
) -> None:
    record = host.create(bad_cancel, cwd=str(workspace))
    running = host.prompt(record.id, "slow 400 0.05")
    wait_until(lambda: len(host.events(record.id, build_query(types="agent_message"))) >= 3)
    urgent = host.prompt(record.id, "hello", interrupt=True)
    assert running.wait(30).stop_reason == "error"
    assert urgent.wait(30).stop_reason == "cancelled"  # the session stopped before it could run
    settled(host, record.id)
    assert_failure_everywhere(host, record.id, "cancellation")


def test_a_cancel_answered_by_closing_stdout_is_a_cancellation_failure(
    host: Host, agh_home: Path, workspace: Path
) -> None:
    write_agent(agh_home, "closes-on-cancel", [*DEMO, "--fast", "--on-cancel", "close-stdout"])
    record = host.create("closes-on-cancel", cwd=str(workspace))
    host.prompt(record.id, "slow 400 0.05")
    wait_until(lambda: len(host.events(record.id, build_query(types="agent_message"))) >= 3)
    stopped = host.stop(record.id)
    assert stopped.failure and stopped.failure.kind.value == "cancellation"
    assert "closed its stdout" in stopped.failure.summary
    assert_failure_everywhere(host, record.id, "cancellation")


def test_a_well_behaved_cancel_is_still_a_plain_user_stop(host: Host, workspace: Path) -> None:
    record = host.create("demo-fast", cwd=str(workspace))
    turn = host.prompt(record.id, "slow 400 0.05")
    wait_until(lambda: len(host.events(record.id, build_query(types="agent_message"))) >= 3)
    stopped = host.stop(record.id)
    assert stopped.stop_reason and stopped.stop_reason.value == "user_canceled" and stopped.failure is None
    assert turn.wait(10).stop_reason == "cancelled"


# -- unknown_failure ------------------------------------------------------------------------------


class ContractBreakingDriver(AcpDriver):
    """The real ACP driver, except that a turn whose prompt starts with "hello" ends in a plain
    ``RuntimeError`` after the agent answered: what a driver breaking the ``AgentDriver``
    contract (only ``DriverFailure`` may come out) does. Through the real driver no agent
    behaviour gets there: it classifies everything, an invalid ``session/prompt`` result
    included (a ``protocol_failure``)."""

    async def prompt(self, acp_session_id: str, text: str) -> TurnOutcome:
        outcome = await super().prompt(acp_session_id, text)
        if text.startswith("hello"):
            raise RuntimeError("the driver lost the outcome")
        return outcome


def test_an_unexpected_error_in_the_turn_runner_is_an_unknown_failure(agh_home: Path, workspace: Path) -> None:
    async def scenario() -> tuple[str, str, str, str | None]:
        store = open_store(agh_home)
        try:
            manager = SessionManager(
                store=store, driver_factory=ContractBreakingDriver, settings=Settings(), home=agh_home
            )
            record = await manager.create(agent_name="demo-fast", cwd=str(workspace))
            first = await manager.prompt(record.id, "read nothing.txt")
            assert (await asyncio.wait_for(first.future, 30)).stop_reason == "end_turn"
            turn = await manager.prompt(record.id, "hello there")
            result = await asyncio.wait_for(turn.future, 30)  # resolved: the turn does not hang
            for _ in range(600):
                if manager.live(record.id) is None:
                    break
                await asyncio.sleep(0.05)
            assert manager.live(record.id) is None, "the session stopped"
            return record.id, turn.turn_id, result.stop_reason, result.error
        finally:
            store.close()

    session_id, turn_id, stop_reason, error = asyncio.run(scenario())
    assert stop_reason == "error"
    assert error == f"unexpected error during turn {turn_id}: RuntimeError: the driver lost the outcome"
    reader = Reader.open(agh_home)
    try:
        status = assert_failure_everywhere(reader, session_id, "unknown_failure")
        assert status["failure"]["summary"] == error
        done = reader.events(session_id, build_query(types="done"))
        assert [d.content["stop_reason"] for d in done] == ["end_turn", "error"]
    finally:
        reader.close()
