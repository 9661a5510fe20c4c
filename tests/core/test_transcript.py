"""build_transcript and transcript_text over real demo-agent events (golden) and hand-made edge cases."""

from __future__ import annotations

import json
import random
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from agh_nb.core.transcript import build_transcript, transcript_text
from agh_nb.events import JSON, Event

GOLDEN = Path(__file__).parent / "golden"
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def load_events(name: str) -> list[Event]:
    """The stored rows of a golden fixture, as ``Event`` values."""
    doc = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    return [
        Event(**{**row, "timestamp": datetime.fromisoformat(row["timestamp"].replace("Z", "+00:00"))})
        for row in doc["events"]
    ]


def ev(sequence: int, type_: str, turn: str | None = "t1", **content: Any) -> Event:
    """A minimal stored event row."""
    return Event(
        id=f"evt_{sequence}",
        session_id="sess_test",
        sequence=sequence,
        turn_id=turn,
        type=type_,
        agent_name="demo",
        workspace_id="ws_test",
        workspace_path="/ws",
        content={"schema": "agh.session.event.v1", "type": type_, "turn_id": turn, **content},
        timestamp=T0,
    )


def user(content: str, turn: str = "t1") -> JSON:
    return {"role": "user", "turn_id": turn, "content": content}


def assistant(content: str = "", thinking: str = "", turn: str = "t1") -> JSON:
    return {"role": "assistant", "turn_id": turn, "content": content, "thinking": thinking}


# -- golden: real sessions ---------------------------------------------------------------------


def test_completed_session_matches_the_golden_transcript() -> None:
    expected = json.loads((GOLDEN / "transcript_completed.json").read_text(encoding="utf-8"))
    assert build_transcript(load_events("events_completed")) == expected


def test_crashed_session_keeps_the_failed_read_and_the_interrupted_call() -> None:
    entries = build_transcript(load_events("events_agent_crash"))
    assert [e["role"] for e in entries] == [
        "user", "tool_call", "tool_result", "assistant", "user", "assistant", "tool_call", "assistant", "tool_result",
    ]  # fmt: skip
    failed = entries[2]
    assert failed["tool_call_id"] == "demo-call-1-1"
    assert failed["result"] is None and failed["error"] == "read failed: Resource not found"
    assert entries[5] == assistant(thinking="Something is about to go badly wrong.", turn=entries[5]["turn_id"])
    call = entries[6]
    assert call["tool_call_id"] == "demo-call-2-1" and call["tool_input"] == {"risk": "high"}
    # The live host closed the call the crash left open, inside its turn.
    interrupted = entries[8]
    assert interrupted["tool_call_id"] == "demo-call-2-1" and interrupted["turn_id"] == call["turn_id"]
    assert interrupted["result"] is None and interrupted["error"].startswith("interrupted")


def test_a_dangling_call_has_no_result_entry() -> None:
    events = [e for e in load_events("events_agent_crash") if not (e.type == "tool_result" and e.sequence == 10)]
    entries = build_transcript(events)
    assert entries[-2]["role"] == "tool_call" and entries[-2]["tool_call_id"] == "demo-call-2-1"
    assert not any(e["role"] == "tool_result" and e["tool_call_id"] == "demo-call-2-1" for e in entries)


def test_order_is_by_sequence_not_by_input_order() -> None:
    events = load_events("events_completed")
    shuffled = list(events)
    random.Random(7).shuffle(shuffled)
    assert build_transcript(shuffled) == build_transcript(events)


# -- rules -------------------------------------------------------------------------------------

RULES = [
    pytest.param(
        [ev(1, "user_message", text="hi"), ev(2, "agent_message", text="a"), ev(3, "agent_message", text="b")],
        [user("hi"), assistant("ab")],
        id="consecutive-message-chunks-join",
    ),
    pytest.param(
        [ev(1, "thought", text="x"), ev(2, "agent_message", text="a"), ev(3, "thought", text="y")],
        [assistant("a", "xy")],
        id="thoughts-and-messages-share-one-entry",
    ),
    pytest.param(
        [ev(1, "agent_message", text="a"), ev(2, "agent_message", text=""), ev(3, "agent_message"),
         ev(4, "thought", text=""), ev(5, "agent_message", text="b")],
        [assistant("ab")],
        id="empty-chunks-dropped",
    ),
    pytest.param(
        [ev(1, "agent_message", text=""), ev(2, "thought")],
        [],
        id="only-empty-chunks-emit-nothing",
    ),
    pytest.param(
        [ev(1, "agent_message", text="a", turn="t1"), ev(2, "agent_message", text="b", turn="t2")],
        [assistant("a", turn="t1"), assistant("b", turn="t2")],
        id="turn-change-ends-the-entry",
    ),
    pytest.param(
        [ev(1, "agent_message", text="a"), ev(2, "user_message", text="next", turn="t2"),
         ev(3, "agent_message", text="b", turn="t2")],
        [assistant("a"), user("next", "t2"), assistant("b", turn="t2")],
        id="user-message-ends-the-entry",
    ),
    pytest.param(
        [ev(1, "tool_call", tool_call_id="c1", title="Read", tool_name="read", tool_input={"path": "a"}),
         ev(2, "tool_call", tool_call_id="c1", title="Read a.txt"),
         ev(3, "tool_call", tool_call_id="c1", tool_input={"path": "a.txt"}),
         ev(4, "tool_result", tool_call_id="c1", tool_result="text")],
        [{"role": "tool_call", "turn_id": "t1", "tool_call_id": "c1", "title": "Read a.txt", "tool_name": "read",
          "tool_input": {"path": "a.txt"}},
         {"role": "tool_result", "turn_id": "t1", "tool_call_id": "c1", "result": "text", "error": None}],
        id="tool-call-updated-in-place",
    ),
    pytest.param(
        [ev(1, "agent_message", text="a"), ev(2, "tool_call", tool_call_id="c1", title="T"),
         ev(3, "agent_message", text="b"), ev(4, "tool_call", tool_call_id="c1", title="T2"),
         ev(5, "agent_message", text="c")],
        [assistant("a"),
         {"role": "tool_call", "turn_id": "t1", "tool_call_id": "c1", "title": "T2", "tool_name": None,
          "tool_input": None},
         assistant("bc")],
        id="tool-call-update-does-not-split-a-message",
    ),
    pytest.param(
        [ev(1, "agent_message", text="a"),
         ev(2, "tool_result", tool_call_id="c9", title="Quick", tool_name="fetch", tool_input={"u": 1},
            tool_error="boom"),
         ev(3, "agent_message", text="b")],
        [assistant("a"),
         {"role": "tool_call", "turn_id": "t1", "tool_call_id": "c9", "title": "Quick", "tool_name": "fetch",
          "tool_input": {"u": 1}},
         {"role": "tool_result", "turn_id": "t1", "tool_call_id": "c9", "result": None, "error": "boom"},
         assistant("b")],
        id="result-without-call-emits-both",
    ),
    pytest.param(
        [ev(1, "tool_call", tool_call_id="c1", title="T"), ev(2, "agent_message", text="x"),
         ev(3, "tool_result", tool_call_id="c1", tool_result=1),
         ev(4, "tool_result", tool_call_id="c1", tool_result=2)],
        [{"role": "tool_call", "turn_id": "t1", "tool_call_id": "c1", "title": "T", "tool_name": None,
          "tool_input": None},
         assistant("x"),
         {"role": "tool_result", "turn_id": "t1", "tool_call_id": "c1", "result": 2, "error": None}],
        id="result-at-its-own-position-one-per-id",
    ),
]


RULES.append(
    pytest.param(
        [ev(1, "tool_call", tool_call_id="c1", title="old", turn="t1"),
         ev(2, "tool_call", tool_call_id="c1", title="new", turn="t2"),
         ev(3, "tool_result", tool_call_id="c1", tool_result="r", turn="t2")],
        [{"role": "tool_call", "turn_id": "t1", "tool_call_id": "c1", "title": "old", "tool_name": None,
          "tool_input": None},
         {"role": "tool_call", "turn_id": "t2", "tool_call_id": "c1", "title": "new", "tool_name": None,
          "tool_input": None},
         {"role": "tool_result", "turn_id": "t2", "tool_call_id": "c1", "result": "r", "error": None}],
        id="same-id-in-another-turn-is-another-call",  # a resumed agent may number its calls anew
    )
)


@pytest.mark.parametrize(("events", "expected"), RULES)
def test_rules(events: list[Event], expected: list[JSON]) -> None:
    assert build_transcript(events) == expected


NON_CHAT = ["plan", "usage", "permission", "runtime_progress", "runtime_warning", "system", "done", "error",
            "session_stopped"]  # fmt: skip


@pytest.mark.parametrize("event_type", NON_CHAT)
def test_non_chat_events_emit_nothing_but_end_the_assistant_entry(event_type: str) -> None:
    events = [ev(1, "agent_message", text="a"), ev(2, event_type, text="ignored", tool_call_id="c1"),
              ev(3, "agent_message", text="b")]  # fmt: skip
    assert build_transcript(events) == [assistant("a"), assistant("b")]


# -- transcript_text ---------------------------------------------------------------------------


def test_text_renders_each_role() -> None:
    text = transcript_text(build_transcript(load_events("events_agent_crash")))
    assert text.split("\n\n") == [
        "User: read missing.txt",
        'Tool call Read /tmp/tmpyuid72gr/missing.txt [demo-call-1-1]: {"path": "/tmp/tmpyuid72gr/missing.txt"}',
        "Tool error [demo-call-1-1]: read failed: Resource not found",
        "Assistant: Reading /tmp/tmpyuid72gr/missing.txt failed: Resource not found",
        "User: crash",
        'Tool call Doing something risky [demo-call-2-1]: {"risk": "high"}',
        "Assistant: Crashing now.",
        "Tool error [demo-call-2-1]: interrupted: the session stopped before the tool call finished",
    ]


def test_text_thinking_only_on_request() -> None:
    entries = [user("q"), assistant("answer", "pondering")]
    assert transcript_text(entries) == "User: q\n\nAssistant: answer"
    assert transcript_text(entries, include_thinking=True) == (
        "User: q\n\nAssistant (thinking): pondering\n\nAssistant: answer"
    )


def test_text_tool_result_json_and_field_bound() -> None:
    entries = [{"role": "tool_result", "turn_id": "t1", "tool_call_id": "c1", "result": {"b": 1, "a": "x" * 50},
                "error": None}]  # fmt: skip
    text = transcript_text(entries, max_field_chars=20)
    assert text.startswith('Tool result [c1]: {"a": "xxx') and text.endswith("…")
    assert len(text) == len("Tool result [c1]: ") + 20


def turns(count: int, size: int = 100) -> list[JSON]:
    entries: list[JSON] = []
    for index in range(count):
        entries += [user(f"question {index}", f"t{index}"), assistant(f"{index}:" + "z" * size, turn=f"t{index}")]
    return entries


@pytest.mark.parametrize("max_chars", [64, 100, 300, 1000, 5000], ids=lambda n: f"max-{n}")
def test_text_is_bounded_and_keeps_the_newest_turn(max_chars: int) -> None:
    entries = turns(50)
    assert len(transcript_text(entries)) > 5000
    text = transcript_text(entries, max_chars=max_chars)
    assert len(text) <= max_chars
    assert text.endswith("z" * min(100, max_chars // 3))  # the newest turn's end always survives
    assert "question 0" not in text


def test_text_drops_whole_oldest_turns_with_a_marker() -> None:
    full = transcript_text(turns(5))
    block = len(full.split("\n\nUser: question 1")[0])  # one turn's text
    text = transcript_text(turns(5), max_chars=3 * block + 2 * 2 + len("[2 earlier turn(s) omitted]") + 2)
    assert text.startswith("[2 earlier turn(s) omitted]\n\nUser: question 2\n\n")
    assert "question 1" not in text


def test_text_keeps_everything_that_fits() -> None:
    entries = turns(3)
    assert transcript_text(entries, max_chars=10_000) == transcript_text(entries)
    assert not transcript_text(entries).startswith("[")


def test_text_cuts_the_head_of_a_too_long_newest_turn() -> None:
    text = transcript_text(turns(2, size=1000), max_chars=200)
    assert len(text) == 200
    assert text.startswith("[1 earlier turn(s) omitted]\n\n[...] ") and text.endswith("z" * 50)


def test_text_of_nothing_is_empty() -> None:
    assert transcript_text([]) == ""


def test_text_rejects_a_tiny_bound() -> None:
    with pytest.raises(ValueError, match="at least 64"):
        transcript_text([], max_chars=10)


# -- replays (session resume --replay-transcript) -------------------------------------------------


def replay_session() -> list[Event]:
    """A turn, a replay of it (and the agent's answer to the replay), then one more turn."""
    return [
        ev(1, "user_message", "t1", text="remember this"),
        ev(2, "agent_message", "t1", text="noted"),
        ev(3, "done", "t1", stop_reason="end_turn"),
        ev(4, "session_stopped", None, stop_reason="user_canceled"),
        ev(5, "user_message", "t2", text="PREAMBLE\n\nUser: remember this", runtime={"replay_transcript": True}),
        ev(6, "agent_message", "t2", text="You said: PREAMBLE"),
        ev(7, "done", "t2", stop_reason="end_turn"),
        ev(8, "user_message", "t3", text="and now?"),
        ev(9, "agent_message", "t3", text="now this"),
    ]


def test_a_replayed_message_is_marked_in_the_transcript() -> None:
    entries = build_transcript(replay_session())
    assert entries[2] == {"role": "user", "turn_id": "t2", "content": "PREAMBLE\n\nUser: remember this", "replay": True}
    assert "replay" not in entries[0] and "replay" not in entries[4]


def test_replay_turns_are_left_out_of_the_text() -> None:
    # Regression: a second resume with --replay-transcript nested the first replay in the second.
    text = transcript_text(build_transcript(replay_session()))
    assert text == "User: remember this\n\nAssistant: noted\n\nUser: and now?\n\nAssistant: now this"
    assert "PREAMBLE" not in text
