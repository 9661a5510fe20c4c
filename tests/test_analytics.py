"""The analytical views and the Parquet export end to end: a real demo agent subprocess over real
ACP, a stop and a resume, a person's approval, then the views through the SQL surface, the
``export`` word of the shared grammar, and ``agh-nb export`` on the closed store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from agh_nb.api import Host
from agh_nb.commands import execute, parse
from agh_nb.runtime import Runtime
from tests.conftest import wait_until

pytestmark = pytest.mark.timeout(180)

AGENT = "demo-fast"
DEMO_TURN_COST = 0.000186  # the demo agent's price of its default script's 62 tokens


def cli(home: Path, *words: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, AGH_HOME=str(home))
    env.pop("AGH_NB_SERVER", None)
    return subprocess.run([sys.executable, "-m", "agh_nb.cli", *words], env=env, capture_output=True, text=True, timeout=90)


def rows(host: Host, sql: str) -> list[dict[str, object]]:
    frame = host.sql(sql)
    return [dict(zip(frame.columns, r, strict=True)) for r in frame.astype(object).where(frame.notna(), None).itertuples(index=False)]


@pytest.fixture
def session(host: Host, workspace: Path) -> str:
    (workspace / "README.md").write_text("# hi\n")
    sid = host.create(AGENT, cwd=str(workspace), name="analysed", permissions="approve-reads").id
    assert host.prompt(sid, "hello there").wait(60).stop_reason == "end_turn"
    assert host.prompt(sid, "read README.md").wait(60).stop_reason == "end_turn"
    write = host.prompt(sid, "write notes.txt some text")
    pending = wait_until(lambda: host.pending_approvals(sid))
    host.approve(sid, pending[0]["request_id"], "allow-once")  # type: ignore[index]
    assert write.wait(60).stop_reason == "end_turn"
    host.stop(sid)
    host.resume(sid)  # session/load: the demo agent's cost counter starts again
    assert host.prompt(sid, "hello again").wait(60).stop_reason == "end_turn"
    host.stop(sid)
    return sid


def test_the_views_answer_basic_questions_about_a_real_session(host: Host, session: str, workspace: Path) -> None:
    turns = rows(host, f"SELECT prompt, stop_reason, cost, total_tokens FROM turns WHERE session_id = '{session}' ORDER BY sequence")
    assert [t["prompt"] for t in turns] == ["hello there", "read README.md", "write notes.txt some text", "hello again"]
    assert {t["stop_reason"] for t in turns} == {"end_turn"}
    # Regression (issue 12): the resumed turn's cost was 0 or negative (its counter restarted).
    assert [t["cost"] for t in turns] == [pytest.approx(DEMO_TURN_COST), None, None, pytest.approx(DEMO_TURN_COST)]
    assert turns[0]["total_tokens"] == 62

    calls = rows(host, f"SELECT kind, status, paths, duration_ms FROM tool_calls WHERE session_id = '{session}' ORDER BY sequence")
    assert [c["kind"] for c in calls] == ["think", "search", "read", "edit", "think", "search"]
    assert {c["status"] for c in calls} == {"completed"}
    assert list(calls[2]["paths"]) == [str(workspace / "README.md")]  # type: ignore[arg-type]
    assert all(c["duration_ms"] is not None and c["duration_ms"] >= 0 for c in calls)  # type: ignore[operator]

    asked = rows(host, f"SELECT action, resource, decision, decided_by, wait_ms FROM permission_requests WHERE session_id = '{session}'")
    assert len(asked) == 1
    assert (asked[0]["action"], asked[0]["decision"], asked[0]["decided_by"]) == ("edit", "allow-once", "user")
    assert asked[0]["resource"] == str(workspace / "notes.txt") and asked[0]["wait_ms"] > 0  # type: ignore[operator]

    thoughts = rows(host, f"SELECT text FROM messages WHERE session_id = '{session}' AND type = 'thought' ORDER BY sequence")
    assert thoughts[0]["text"] == (
        "The user wrote 2 word(s); I should answer briefly. "
        "Plan: understand the request, look a couple of things up, then reply."
    )
    said = rows(host, f"SELECT text FROM messages WHERE session_id = '{session}' AND type = 'agent_message' ORDER BY sequence")
    assert said[0]["text"] == "You said: “hello there”. Let me check a couple of things.\n"

    summary = rows(host, f"SELECT name, state, stop_reason, turns, tool_calls, cost FROM session_summary WHERE session_id = '{session}'")
    assert summary[0] | {"cost": round(summary[0]["cost"], 6)} == {  # type: ignore[arg-type]
        "name": "analysed", "state": "stopped", "stop_reason": "user_canceled", "turns": 4, "tool_calls": 6,
        "cost": round(2 * DEMO_TURN_COST, 6),
    }
    # %%agh sql reads the views like the tables.
    args, _ = parse("sql SELECT count(*) AS n FROM messages")
    assert args is not None and execute(args, host, cell=None).document[0]["n"] > 4


def test_export_from_the_grammar_then_from_the_command_line(
    host: Host, session: str, agh_home: Path, tmp_path: Path
) -> None:
    stored = int(host.sql(f"SELECT count(*) AS n FROM events WHERE session_id = '{session}'")["n"][0])
    args, _ = parse(["export", str(tmp_path / "fleet"), "--session", session])
    assert args is not None
    summary = execute(args, host).value
    assert (summary["events"], summary["token_usage"], summary["sessions"]) == (stored, 2, 1)
    glob = f"read_parquet('{tmp_path / 'fleet'}/events/**/*.parquet', hive_partitioning = true)"
    assert duckdb.sql(f"SELECT count(*) FROM {glob}").fetchall() == [(stored,)]
    host.close()  # the store is free: the command line opens it read-only
    out = tmp_path / "cli"
    first = cli(agh_home, "export", str(out), "-o", "json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["events"] == stored
    again = cli(agh_home, "export", str(out), "-o", "json")
    assert json.loads(again.stdout)["events"] == 0
    turns = duckdb.sql(f"SELECT round(sum(turn_cost), 6) FROM '{out}/token_usage/*.parquet'").fetchall()
    assert turns == [(round(2 * DEMO_TURN_COST, 6),)]
    wrong = cli(agh_home, "export", str(out), "--since", "last tuesday")
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1 and "--since" in wrong.stderr
