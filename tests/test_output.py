"""What a person reads (``agh_nb.output``, the tail's rows, ``--follow`` filters), on the events of
real demo-agent sessions: readable tool results, one plan row marked final, spaced thoughts,
compact rows, dict results as escaped HTML tables that stay dicts (issue 12, sections 3, 5, 6)."""

from __future__ import annotations

import argparse
import html
import io
from datetime import timedelta
from pathlib import Path

import pytest

from agh_nb import output
from agh_nb.api import Host
from agh_nb.commands import execute, parse
from agh_nb.events import Event
from agh_nb.follow import follow_events
from agh_nb.kernel.tail_widget import TailRows
from agh_nb.waiting import TerminalLine

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def demo_events(host: Host, workspace: Path) -> tuple[Host, str, list[Event]]:
    """A demo-fast session (approve-all) after the default script and a command run."""
    record = host.create("demo-fast", cwd=str(workspace), permissions="approve-all", name="<b>readable</b>")
    host.prompt(record.id, "hello").wait(30)
    host.prompt(record.id, "run printf 'one\\ntwo\\nthree\\n'").wait(30)
    return host, record.id, host.events(record.id)


def test_tool_results_read_as_key_fields_not_json(demo_events: tuple[Host, str, list[Event]]) -> None:
    _host, _sid, events = demo_events
    results = [e for e in events if e.type == "tool_result"]
    titles: dict[str, str] = {}
    lines = [output.summary(e, titles) for e in events if e.type in ("tool_call", "tool_result")]
    think = output.summary(results[0], titles)
    assert think == "Think about the request → words=1 · characters=5", lines
    run = results[-1]
    assert run.content["tool_result"]["output"] == "one\ntwo\nthree\n"
    line = output.summary(run, titles)
    assert "exit_code=0" in line and "output: one (+2 lines)" in line and "{" not in line, line
    body = output.result_body(run.content["tool_result"])
    assert "output:\none\ntwo\nthree" in body and "exit_code: 0" in body, body
    assert not output.preview_is_whole(run.content["tool_result"])


def test_the_tail_folds_a_plan_into_one_row_marked_final_and_spaces_thoughts(
    demo_events: tuple[Host, str, list[Event]],
) -> None:
    _host, _sid, events = demo_events
    rows = TailRows(limit=100)
    first_turn = events[0].turn_id
    done_at = next(i for i, e in enumerate(events) if e.type == "done")
    for event in events[:done_at]:
        rows.add(event)
    (plan,) = [r for r in rows.rows() if r.type == "plan"]
    assert plan.turn_id == first_turn
    assert plan.headline().startswith("1/3 done: [done] Understand the request · [in progress] Look things up")
    rows.add(events[done_at])  # the turn ends: the same row now shows the plan's final state
    (plan_after,) = [r for r in rows.rows() if r.type == "plan"]
    assert plan_after.sequence == plan.sequence
    assert "[in progress]" not in plan_after.headline()
    assert plan_after.headline().startswith("1/3 done when the turn ended (end_turn): [done] Understand the request · [not finished] Look things up · [not started] Write the answer")

    (thoughts,) = [r for r in rows.rows() if r.type == "thought"]
    assert "answer briefly. Plan: understand" in thoughts.text, thoughts.text

    for event in events[done_at + 1 :]:
        rows.add(event)
    (run,) = [r for r in rows.rows() if r.kind == "execute"]
    assert run.finished and "output: one (+2 lines)" in run.headline()
    assert "output:\none\ntwo\nthree" in run.body()  # the whole output, folded in <details>
    assert "<details" in rows.render()
    (think,) = [r for r in rows.rows() if r.kind == "think"]
    assert think.body() == ""  # the headline shows the whole (short) result: nothing to unfold


def test_join_chunks_spaces_sentences_but_not_tokens() -> None:
    assert output.join_chunks("briefly.", "Plan: x") == "briefly. Plan: x"
    assert output.join_chunks("Hel", "lo") == "Hello"
    assert output.join_chunks("You said: ", "“hi”") == "You said: “hi”"
    assert output.join_chunks("3.", "14") == "3.14"


def test_compact_rows_lead_with_what_a_person_reads(demo_events: tuple[Host, str, list[Event]]) -> None:
    host, sid, events = demo_events
    args, _ = parse(f"session events {sid}", prog="agh-nb")
    assert args is not None
    frame = execute(args, host, prog="agh-nb").value
    assert list(frame.columns) == ["sequence", "time", "type", "summary", "turn_id"]
    assert list(frame["sequence"]) == [e.sequence for e in events]
    assert all("{" not in s for s in frame["summary"]), list(frame["summary"])
    full, _ = parse(f"session events {sid} --full", prog="agh-nb")
    result = execute(full, host, prog="agh-nb")  # type: ignore[arg-type]
    assert "content" in result.value.columns and result.document == [e.to_dict() for e in events]

    listing = execute(parse("session list")[0], host).value  # type: ignore[arg-type]
    assert list(listing.columns)[:4] == ["name", "agent", "state", "reason"]
    assert "acp_caps" not in listing.columns
    history = execute(parse(f"session history {sid}")[0], host).value  # type: ignore[arg-type]
    assert list(history.columns)[:3] == ["sequence", "time", "turn_id"] and list(history["prompt"])[0] == "hello"


def test_dict_results_are_escaped_html_tables_and_stay_dicts(demo_events: tuple[Host, str, list[Event]]) -> None:
    host, sid, _events = demo_events
    status = execute(parse(f"session status {sid}")[0], host)  # type: ignore[arg-type]
    assert isinstance(status.value, dict) and status.value == status.document
    assert status.value["state"] == "active"
    page = status.value._repr_html_()
    assert "<table" in page and "&lt;b&gt;readable&lt;/b&gt;" in page and "<b>readable</b>" not in page, page
    assert page.index(">name<") < page.index(">state<") < page.index(">health<")
    stopped = execute(parse(f"session stop {sid}")[0], host)  # type: ignore[arg-type]
    assert stopped.value["stop_reason"] == "user_canceled" and stopped.document["state"] == "stopped"
    assert "acp_caps" in stopped.value._repr_html_()  # everything is there, folded where long
    text = output.record_text(stopped.value, stopped.value.title)
    assert any(line.split() == ["stop_reason", "user_canceled"] for line in text.splitlines()), text


def test_turn_results_read_as_one_line(demo_events: tuple[Host, str, list[Event]]) -> None:
    host, sid, _events = demo_events
    result = host.prompt(sid, "hello again").wait(30)
    text = output.turn_result_text(result)
    assert text == f"turn {result.turn_id} of {sid}: end_turn ({result.usage['total_tokens']} tokens)"  # type: ignore[index]
    assert "<table" in output.turn_result_html(result) and "TurnResult(" not in text


def _follow_args(line: str) -> argparse.Namespace:
    args, _ = parse(line)
    assert args is not None
    return args


def test_follow_honours_type_turn_since_and_last(demo_events: tuple[Host, str, list[Event]]) -> None:
    host, sid, events = demo_events
    first_turn = events[0].turn_id
    printed: list[str] = []
    count = follow_events(host, sid, _follow_args(f"session events {sid} --follow --type tool_result"), write=printed.append)
    assert count == 3 and all(" tool_result " in line for line in printed), printed

    printed.clear()
    follow_events(host, sid, _follow_args(f"session events {sid} --follow --turn {first_turn}"), write=printed.append)
    assert len(printed) == sum(1 for e in events if e.turn_id == first_turn)
    assert all(first_turn in line for line in printed)

    printed.clear()
    follow_events(host, sid, _follow_args(f"session events {sid} --follow --type done --last 1"), write=printed.append)
    assert len(printed) == 1 and printed[0].startswith(f"#{events[-1].sequence} ")

    # Live: a new turn's events arrive filtered; --since excludes everything stored before.
    since = (events[-1].timestamp + timedelta(microseconds=1)).isoformat()
    handle = host.prompt(sid, "hello once more")
    printed.clear()
    follow_events(host, sid, _follow_args(f"session events {sid} --follow --type done,user_message --since {since}"), write=printed.append)
    handle.wait(30)
    kinds = [line.split()[1] for line in printed]
    assert kinds == ["user_message", "done"], printed


def test_follow_refuses_json_and_full_in_one_line(demo_events: tuple[Host, str, list[Event]]) -> None:
    from agh_nb.errors import UsageError

    host, sid, _events = demo_events
    for extra in ("-o json", "--full"):
        with pytest.raises(UsageError) as caught:
            execute(_follow_args(f"session events {sid} --follow {extra}"), host, follow=follow_events)
        assert "--follow" in str(caught.value) and "\n" not in str(caught.value)


def test_a_terminal_progress_line_is_rewritten_in_place() -> None:
    stream = io.StringIO()
    line = TerminalLine(stream)
    line.update("turn t: running for 0.5s, waiting for the agent")
    line.update("turn t: running for 1.0s")
    line.close()
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.count("\r") == 2 and text.endswith("\n")
    assert text.split("\r")[-1].startswith("turn t: running for 1.0s ")  # padded over the longer text


def test_record_html_escapes_keys_and_nested_values() -> None:
    page = output.record_html({"failure": {"kind": "x", "summary": "<script>alert(1)</script>"}, "<k>": "v"}, "<t>")
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;k&gt;" in page and "&lt;t&gt;" in page
    assert html.unescape(page).count("alert(1)") == 1
