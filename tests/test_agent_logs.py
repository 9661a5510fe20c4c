"""The agent's log and supervision (issue 10): stderr kept redacted, bounded and owner-only under
the session directory; inspect and ``session logs`` show it; a silence warning quotes it;
supervision on by default; ``--wait --timeout`` says how long it waited; the handshake is kept
when ``session/new`` fails."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from agh_nb.api import Host
from agh_nb.cli import main as cli_main
from agh_nb.config import Settings
from agh_nb.errors import AghError, AgentStartError
from agh_nb.waiting import TurnWaiter
from agh_nb.runtime import Runtime
from tests.conftest import DEMO, wait_until, write_agent

pytestmark = pytest.mark.timeout(90)


def test_the_agents_stderr_is_kept_redacted_and_owner_only_and_survives_a_stop(
    host: Host, agh_home: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "stderr-secret-value-0123456789"
    monkeypatch.setenv("LEAKY", secret)
    write_agent(agh_home, "leaky", [*DEMO, "--fast"], extra="env:\n  LEAKY: env:LEAKY\n")
    record = host.create("leaky", cwd=str(workspace))
    host.prompt(record.id, "leak LEAKY").wait(30)  # writes the value to stderr, then exits 5
    wait_until(lambda: host.get(record.id).state.value == "stopped")
    directory = agh_home / "sessions" / record.id / "logs"
    log = directory / "agent.log"
    text = log.read_text()
    assert secret not in text and "[redacted:env:LEAKY@" in text
    assert "demo: INFO" in text and "--- agent leaky starting: " in text
    assert stat.S_IMODE(log.stat().st_mode) == 0o600 and stat.S_IMODE(directory.stat().st_mode) == 0o700

    lines = host.logs(record.id)
    assert lines == text.splitlines()
    assert host.logs(record.id, last=2) == lines[-2:]
    assert host.inspect(record.id)["agent"]["log_tail"] == lines[-20:]
    newer = host.logs(record.id, cursor=lines.cursor)
    assert list(newer) == []

    # The command line reads it without the store (a live host holds that).
    assert cli_main(["session", "logs", record.id, "--last", "1"]) == 0
    assert capsys.readouterr().out.strip() == lines[-1]
    assert cli_main(["session", "logs", record.id, "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["lines"] == lines


def test_a_user_stop_keeps_the_log_and_a_resume_appends_to_it(host: Host, workspace: Path) -> None:
    record = host.create("demo-fast", cwd=str(workspace))
    host.stop(record.id)
    first = list(host.logs(record.id))
    assert first and any("starting pid=" in line for line in first)
    host.resume(record.id)
    host.stop(record.id)
    both = host.logs(record.id)
    assert both[: len(first)] == first and sum("--- agent demo-fast starting" in line for line in both) == 2


def test_supervision_is_on_by_default_and_0_turns_each_off(tmp_path: Path) -> None:
    defaults = Settings()
    assert (defaults.inactivity_warning_after, defaults.progress_notify_interval, defaults.inactivity_timeout) == (120.0, 30.0, 600.0)
    from agh_nb.config import load_settings

    (tmp_path / "config.toml").write_text(
        '[session.supervision]\ninactivity_warning_after = "0"\nprogress_notify_interval = "0"\ninactivity_timeout = "0"\n'
    )
    off = load_settings(tmp_path)
    assert (off.inactivity_warning_after, off.progress_notify_interval, off.inactivity_timeout) == (0.0, 0.0, 0.0)


def test_a_silence_warning_quotes_the_agents_last_stderr_line(agh_home: Path, workspace: Path) -> None:
    settings = Settings(inactivity_warning_after=0.3, progress_notify_interval=0.0, inactivity_timeout=0.0)
    host = Host(Runtime.start(home=agh_home, settings=settings))
    try:
        record = host.create("demo-fast", cwd=str(workspace))
        wait_until(lambda: host.logs(record.id, last=1))
        host.prompt(record.id, "silent 2").wait(30)
        (warning,) = [e for e in host.events(record.id) if e.type == "runtime_warning"]
        last = warning.content["runtime"]["last_stderr_line"]
        assert "starting pid=" in last and warning.content["text"].endswith(f"; its last stderr line: {last}")
    finally:
        host.close()


def test_wait_with_a_timeout_reports_the_time_it_really_waited(host: Host, workspace: Path) -> None:
    record = host.create("demo-fast", cwd=str(workspace))
    handle = host.prompt(record.id, "silent 3")
    waiter = TurnWaiter(host, line=None, ask=None, say=lambda _text: None)
    with pytest.raises(AghError) as waited:
        waiter.wait(handle, 0.6)
    seconds = float(str(waited.value).split("still running after ")[1].split("s;")[0])
    assert seconds >= 0.6
    with pytest.raises(AghError, match=r"still running after 0\.[2-9]s"):
        handle.wait(0.2)
    assert handle.wait(30).stop_reason == "end_turn"


def test_a_failed_session_new_keeps_what_initialize_said(host: Host, agh_home: Path, workspace: Path) -> None:
    write_agent(agh_home, "refusing", [*DEMO, "--fast", "--fail-new"])
    with pytest.raises(AgentStartError):
        host.create("refusing", cwd=str(workspace))
    record = host.list()[-1]
    assert record.acp_caps["agent_info"]["name"] == "agh-demo" and "authMethods" in record.acp_caps
    assert record.failure is not None and record.failure.code == -32603 and record.failure.crash_bundle_path
    bundle = json.loads(Path(record.failure.crash_bundle_path).read_text())
    assert bundle["provider"]["agent_info"] == {"name": "agh-demo", "title": "AGH demo agent", "version": "0.1.0"}
    assert "demo: INFO" in bundle["stderr_tail"]



def test_wait_names_a_form_the_agent_asks_for_and_how_to_answer_it(host: Host, workspace: Path) -> None:
    import threading

    record = host.create("demo-fast", cwd=str(workspace))
    said: list[str] = []
    handle = host.prompt(record.id, "ask-form")

    def answer() -> None:
        (form,) = wait_until(lambda: host.pending_elicitations(record.id))
        wait_until(lambda: said)
        host.answer(record.id, form["request_id"], {"colour": "red"})

    answering = threading.Thread(target=answer)
    answering.start()
    result = TurnWaiter(host, line=None, ask=None, say=said.append).wait(handle, 30)
    answering.join()
    assert result.stop_reason == "end_turn"
    (hint,) = said
    assert f"%agh session answer {record.id} --request eli_" in hint and "colour=... count=... notify=..." in hint


def test_following_the_log_prints_new_lines_until_the_session_stops(
    host: Host, agh_home: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse
    import threading

    from agh_nb.commands import follow_logs

    monkeypatch.setenv("LEAKY", "followed-secret-0123456789")
    write_agent(agh_home, "leaky", [*DEMO, "--fast"], extra="env:\n  LEAKY: env:LEAKY\n")
    record = host.create("leaky", cwd=str(workspace))
    printed: list[str] = []
    later = threading.Timer(1.0, lambda: host.prompt(record.id, "leak LEAKY"))  # stderr, then exit 5
    later.start()
    count = follow_logs(host, record.id, argparse.Namespace(last=None), say=printed.append, max_seconds=60)
    later.join()
    assert host.get(record.id).state.value == "stopped"
    assert count == len(printed) and printed == list(host.logs(record.id))
    assert any("[redacted:env:LEAKY@" in line for line in printed)
    assert not any("followed-secret" in line for line in printed)
