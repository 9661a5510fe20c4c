"""Durability (SPEC 2-4): a dead host's sessions repaired, resume, failure kinds, supervision, ledger."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agh_nb.api import Host, Reader, build_query
from agh_nb.events import Event, format_timestamp as format_ts
from agh_nb.core.health import heartbeat_phase
from agh_nb.core.ledger import verify_ledger
from agh_nb.core.session_dir import ledger_path, write_session_ledger
from agh_nb.errors import AgentStartError, ResumeError
from agh_nb.runtime import Runtime
from tests.conftest import DEMO, wait_until, write_agent

pytestmark = pytest.mark.timeout(120)

NODE_MODULES = Path(__file__).parent / "third_party" / "node_modules"
CLAUDE = NODE_MODULES / ".bin" / "claude-agent-acp"

DYING_HOST = textwrap.dedent(
    """
    import os, signal, sys, time
    from agh_nb.api import Host, build_query
    from agh_nb.runtime import Runtime
    host = Host(Runtime.start())
    record = host.create("demo", cwd=sys.argv[1])
    host.prompt(record.id, "write later.txt text")     # leaves a pending permission + tool call
    deadline = time.time() + 30
    while not host.pending_approvals(record.id) and time.time() < deadline:
        time.sleep(0.05)
    host.runtime.call(host.store.flush)
    print(record.id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def kill_a_host_mid_turn(agh_home: Path, workspace: Path) -> str:
    """Run a host in another process, leave a turn running, SIGKILL it; return the session id."""
    proc = subprocess.run(
        [sys.executable, "-c", DYING_HOST, str(workspace)],
        env=dict(os.environ, AGH_HOME=str(agh_home)),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    return proc.stdout.strip()


def test_a_dead_hosts_session_is_repaired_and_resumed(agh_home: Path, workspace: Path) -> None:
    sid = kill_a_host_mid_turn(agh_home, workspace)
    meta = json.loads((agh_home / "sessions" / sid / "meta.json").read_text())
    assert meta["state"] == "active"

    # A read-only reader (the CLI) already shows the settled view, writing nothing.
    reader = Reader.open(agh_home)
    try:
        view = reader.get(sid)
        assert (view.state.value, view.stop_reason.value) == ("stopped", "agent_crashed")
        assert reader.repair(sid, dry_run=True)["empty"] is False
    finally:
        reader.close()

    host = Host(Runtime.start(home=agh_home))  # "kernel B": repairs at start
    try:
        (record,) = host.list()
        assert record.id == sid
        assert record.state.value == "stopped"
        assert record.stop_reason is not None and record.stop_reason.value == "agent_crashed"
        assert record.failure is not None and record.failure.kind.value == "process_exit"
        assert record.stop_detail == "daemon crashed while session active"
        events = host.events(sid)
        tail = [e.type for e in events[-3:]]
        assert tail == ["tool_result", "error", "session_stopped"], tail
        assert events[-3].content["tool_error"].startswith("interrupted")
        transcript = host.transcript(sid)
        assert transcript[-1]["role"] == "tool_result" and transcript[-1]["error"]
        assert host.repair(sid, dry_run=True)["empty"] is True

        resumed = host.resume(sid)
        assert resumed.id == sid and resumed.state.value == "active"
        assert resumed.acp_session_id == record.acp_session_id  # the demo agent loads it
        assert host.prompt(sid, "after resume").wait(30).stop_reason == "end_turn"
        host.stop(sid)
        everything = host.events(sid)
        assert [e.sequence for e in everything] == list(range(1, len(everything) + 1))
        assert [e.type for e in everything].count("session_stopped") == 2
        assert any(e.type == "system" and "session/load" in (e.content.get("text") or "") for e in everything)
    finally:
        host.close()


def test_resume_is_idempotent_and_validates(host: Host, agh_home: Path, workspace: Path, tmp_path: Path) -> None:
    record = host.create("demo-fast", cwd=str(workspace))
    assert host.resume(record.id).state.value == "active"  # live: nothing happens
    host.stop(record.id)

    moved = tmp_path / "moved"
    workspace.rename(moved)
    with pytest.raises(ResumeError, match="workspace .* no longer exists"):
        host.resume(record.id)
    moved.rename(workspace)

    write_agent(agh_home, "temporary", [*DEMO, "--fast"])
    other = host.create("temporary", cwd=str(workspace))
    host.stop(other.id)
    shutil.rmtree(agh_home / "agents" / "temporary")
    with pytest.raises(ResumeError, match="unknown agent 'temporary'"):
        host.resume(other.id)

    meta = agh_home / "sessions" / record.id / "meta.json"
    meta.unlink()
    with pytest.raises(ResumeError, match="metadata"):
        host.resume(record.id)


def test_resume_without_load_support_starts_fresh_and_says_so(host: Host, agh_home: Path, workspace: Path) -> None:
    write_agent(agh_home, "noload", [*DEMO, "--fast", "--no-load"])
    record = host.create("noload", cwd=str(workspace))
    host.prompt(record.id, "remember this").wait(30)
    host.stop(record.id)
    resumed = host.resume(record.id, replay_transcript=True)
    assert resumed.id == record.id and resumed.acp_session_id != record.acp_session_id
    notes = [e.content["text"] for e in host.events(record.id, build_query(types="system"))]
    assert any("cannot load sessions" in n for n in notes)
    replay = wait_until(
        lambda: [e for e in host.events(record.id, build_query(types="user_message")) if (e.content.get("runtime") or {}).get("replay_transcript")]
    )
    assert "remember this" in replay[0].content["text"]


def test_failing_session_load_is_a_load_session_failure(host: Host, agh_home: Path, workspace: Path) -> None:
    write_agent(agh_home, "badload", [*DEMO, "--fast", "--fail-load"])
    record = host.create("badload", cwd=str(workspace))
    host.stop(record.id)
    with pytest.raises(AgentStartError, match="could not be resumed"):
        host.resume(record.id)
    final = host.get(record.id)
    assert final.state.value == "stopped" and final.stop_reason is not None and final.stop_reason.value == "error"
    assert final.failure is not None and final.failure.kind.value == "load_session_failure"
    assert "-32603" in final.failure.summary


def test_third_party_agent_answering_32002_keeps_the_aghid(
    host: Host, agh_home: Path, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert CLAUDE.exists(), "run scripts/setup.sh (installs tests/third_party)"
    monkeypatch.setenv("HOME", str(tmp_path / "claude-home"))
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    write_agent(agh_home, "claude-nokey", [str(CLAUDE)])
    record = host.create("claude-nokey", cwd=str(workspace))
    before = [e.id for e in host.events(record.id)]
    host.stop(record.id)
    resumed = host.resume(record.id)
    assert resumed.id == record.id and resumed.state.value == "active"
    assert resumed.acp_session_id and resumed.acp_session_id != record.acp_session_id
    after = host.events(record.id)
    assert [e.id for e in after][: len(before)] == before
    assert any("-32002" in (e.content.get("text") or "") for e in after if e.type == "system")
    host.stop(record.id)


def test_an_agent_that_forgot_its_session_starts_fresh_under_the_same_aghid(
    host: Host, agh_home: Path, workspace: Path
) -> None:
    # A restarted agent that advertises loadSession but no longer knows the id: -32002.
    write_agent(agh_home, "forgetful", [*DEMO, "--fast", "--forget"])
    record = host.create("forgetful", cwd=str(workspace))
    host.prompt(record.id, "remember this").wait(30)
    host.stop(record.id)
    before = [e.id for e in host.events(record.id)]
    resumed = host.resume(record.id)
    assert resumed.id == record.id and resumed.state.value == "active"
    assert resumed.acp_session_id and resumed.acp_session_id != record.acp_session_id
    assert host.store.get_session(record.id).acp_session_id == resumed.acp_session_id  # type: ignore[union-attr]
    after = host.events(record.id)
    assert [e.id for e in after][: len(before)] == before, "every old event is kept, in place"
    (note,) = [e for e in after[len(before):] if e.type == "system"]
    assert "-32002" in note.content["text"] and record.acp_session_id in note.content["text"]
    assert host.prompt(record.id, "and now?").wait(30).stop_reason == "end_turn"
    host.stop(record.id)


def test_agent_closing_stdout_is_a_transport_failure(host: Host, workspace: Path) -> None:
    record = host.create("demo-fast", cwd=str(workspace))
    result = host.prompt(record.id, "close-stdout").wait(30)
    assert result.stop_reason == "error"
    final = wait_until(lambda: (r := host.get(record.id)).state.value == "stopped" and r)
    assert final.failure is not None and final.failure.kind.value == "transport_failure"


def test_crash_bundle_is_owner_only_and_names_the_failure(host: Host, workspace: Path) -> None:
    record = host.create("demo", cwd=str(workspace))
    host.prompt(record.id, "crash").wait(30)
    final = wait_until(lambda: (r := host.get(record.id)).state.value == "stopped" and r)
    assert final.failure is not None and final.failure.crash_bundle_path
    bundle = Path(final.failure.crash_bundle_path)
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    data = json.loads(bundle.read_text())
    assert data["schema"] == "agh.session_crash_bundle.v1"
    assert data["failure"]["kind"] == "process_exit"
    assert data["process"]["exit_code"] == 3
    last = host.events(record.id)[-1]
    assert last.content["failure"]["crash_bundle_path"] == str(bundle)
    status = host.status(record.id)
    assert status["failure"]["kind"] == "process_exit" and status["health"]["health"] == "dead"


def test_ledger_is_read_only_and_rebuilds_byte_identical(host: Host, agh_home: Path, workspace: Path) -> None:
    record = host.create("demo-fast", cwd=str(workspace))
    host.prompt(record.id, "hello").wait(30)
    stopped = host.stop(record.id)
    path = ledger_path(agh_home, stopped)
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o400
    first = path.read_bytes()
    digest = (path.parent / "ledger.sha256").read_text().split()[0]
    assert verify_ledger(path)
    assert len(first.splitlines()) == len(host.events(record.id))
    rebuilt = write_session_ledger(agh_home, stopped, host.store)
    assert rebuilt == digest and path.read_bytes() == first


def write_config(home: Path, text: str) -> None:
    (home / "config.toml").write_text(textwrap.dedent(text))


def test_activity_keeps_a_long_turn_alive_and_silence_times_out(agh_home: Path, workspace: Path) -> None:
    write_config(
        agh_home,
        """
        [session.supervision]
        inactivity_timeout = "1500ms"
        inactivity_warning_after = "700ms"
        timeout_cancel_grace = "1s"
        progress_notify_interval = "500ms"
        """,
    )
    host = Host(Runtime.start(home=agh_home))
    try:
        record = host.create("demo-fast", cwd=str(workspace))
        busy = host.prompt(record.id, "slow 12 0.3")  # 3.6 s of steady activity
        assert busy.wait(30).stop_reason == "end_turn"
        assert host.get(record.id).state.value == "active"
        progress = host.events(record.id, build_query(types="runtime_progress", turn=busy.turn_id))
        assert len(progress) >= 3
        assert not host.events(record.id, build_query(types="runtime_warning"))

        quiet = host.prompt(record.id, "silent 60")
        assert quiet.wait(30).stop_reason == "cancelled"
        final = wait_until(lambda: (r := host.get(record.id)).state.value == "stopped" and r)
        assert final.stop_reason is not None and final.stop_reason.value == "timeout"
        assert final.stop_detail == "activity_timeout"
        assert final.failure is not None and final.failure.kind.value == "timeout"
        warnings = host.events(record.id, build_query(types="runtime_warning", turn=quiet.turn_id))
        assert len(warnings) == 1, "SPEC 2: inactivity_warning_after gives ONE runtime_warning"
        assert "no activity" in warnings[0].content["text"]
        (notice,) = host.events(record.id, build_query(types="system", turn=quiet.turn_id))
        assert notice.content["title"] == "inactivity timeout"
        assert notice.content["runtime"]["detail"] == "activity_timeout"
        assert warnings[0].sequence < notice.sequence
        assert host.events(record.id)[-1].content["stop_reason"] == "timeout"
    finally:
        host.close()


def test_the_first_heartbeat_comes_at_the_sessions_own_phase(agh_home: Path, workspace: Path) -> None:
    # Sessions started together must not all refresh their presence at the same instant (fifty
    # session rows in one commit held every stream back for a second): the first heartbeat comes
    # at a share of the interval taken from the session id, then every interval.
    write_config(agh_home, '[health]\nstale_after = "9s"\n')  # a heartbeat every 3 s
    host = Host(Runtime.start(home=agh_home))
    try:
        for _ in range(20):  # a session whose phase is well before the interval's end
            record = host.create("demo-fast", cwd=str(workspace))
            phase = heartbeat_phase(record.id, 3.0)
            if phase < 1.2:
                break
            host.stop(record.id)
        assert phase < 1.2
        first = record.last_presence_at
        assert first is not None
        beat = wait_until(lambda: (p := host.get(record.id).last_presence_at) is not None and p > first and p, 10)
        assert (beat - first).total_seconds() < 2.4, "without a phase the first heartbeat would come at 3 s"
    finally:
        host.close()


def test_heartbeat_advances_presence_and_adds_no_event(agh_home: Path, workspace: Path) -> None:
    write_config(agh_home, '[health]\nstale_after = "600ms"\n')  # a heartbeat every 200 ms
    host = Host(Runtime.start(home=agh_home))
    try:
        record = host.create("demo-fast", cwd=str(workspace))
        first = record.last_presence_at
        assert first is not None
        count = len(host.events(record.id))
        meta = agh_home / "sessions" / record.id / "meta.json"
        later = wait_until(lambda: (p := host.get(record.id).last_presence_at) is not None and p > first and p)
        assert len(host.events(record.id)) == count, "heartbeats never append events"
        assert host.get(record.id).updated_at == record.updated_at, "presence is not a change of the session"
        on_disk = wait_until(lambda: json.loads(meta.read_text())["last_presence_at"] > format_ts(first) and meta)
        assert json.loads(on_disk.read_text())["state"] == "active"
        health = host.status(record.id)["health"]
        assert health["last_presence_at"] is not None and health["last_presence_at"] >= format_ts(later)
        live = host.runtime.manager.live(record.id)
        assert live is not None and live._heartbeat is not None and not live._heartbeat.done()
        stopped = host.stop(record.id)
        assert json.loads(meta.read_text())["state"] == "stopped"
        settled = json.loads(meta.read_text())["last_presence_at"]
        assert settled == format_ts(stopped.last_presence_at)
        # No waiting for a heartbeat that should not come: the stop path has ended the task itself.
        assert live._heartbeat.done() and not live._heartbeat.cancelled(), "a stopped session has no heartbeat"
        assert json.loads(meta.read_text())["last_presence_at"] == settled
    finally:
        host.close()


def test_a_second_replay_does_not_nest_the_first(host: Host, agh_home: Path, workspace: Path) -> None:
    write_agent(agh_home, "noload", [*DEMO, "--fast", "--no-load"])
    record = host.create("noload", cwd=str(workspace))
    host.prompt(record.id, "remember this").wait(30)
    host.stop(record.id)

    def replays() -> list[Event]:
        return [
            e
            for e in host.events(record.id, build_query(types="user_message"))
            if (e.content.get("runtime") or {}).get("replay_transcript")
        ]

    host.resume(record.id, replay_transcript=True)
    (first,) = wait_until(replays)
    wait_until(lambda: any(e.turn_id == first.turn_id for e in host.events(record.id, build_query(types="done"))))
    host.stop(record.id)
    host.resume(record.id, replay_transcript=True)
    second = wait_until(lambda: (r := replays()) and len(r) == 2 and r[1])
    text = second.content["text"]
    assert text.count("This session was resumed") == 1, "the first replay is not replayed again"
    assert text.count("User: ") == 1 and "User: remember this" in text
    assert first.content["text"].count("User: ") == 1
    host.stop(record.id)


def test_list_include_health(host: Host, workspace: Path) -> None:
    record = host.create("demo-fast", cwd=str(workspace))
    status = host.status(record.id)["health"]
    assert status["state"] == "idle" and status["health"] == "healthy" and status["attachable"]
    turn = host.prompt(record.id, "slow 3 0.3")
    busy = host.status(record.id)["health"]
    assert busy["state"] == "prompting" and busy["active_prompt"] == turn.turn_id
    assert busy["ineligibility_reason"] == "session_prompt_active"
    turn.wait(30)
    host.stop(record.id)
    after = host.status(record.id)["health"]
    assert after["state"] == "stopped" and not after["attachable"]
    assert after["ineligibility_reason"] == "session_not_attachable"
