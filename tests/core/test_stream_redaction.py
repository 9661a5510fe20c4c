"""Streaming redaction (issue 11): a secret split across chunks is never stored whole."""

from __future__ import annotations

import itertools

import pytest

from agh_nb.core.redaction import Redactor
from agh_nb.core.stream_redaction import HELD_BACK, StreamRedaction
from agh_nb.events import JSON, EventType

SECRET = "sk-live-0123456789abcdef"
TEXT = f"the key is {SECRET}, do not share {SECRET[:6]} or sk- anything"


def message(text: str) -> JSON:
    return {"text": text, "raw": {"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": text}}}


def split(text: str, cuts: tuple[int, ...]) -> list[str]:
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


def stored_text(redactor: Redactor, chunks: list[str], event_type: EventType = EventType.AGENT_MESSAGE) -> tuple[list[JSON], str]:
    streams = StreamRedaction(redactor.stream_view)
    out: list[JSON] = []
    for chunk in chunks:
        out += [f for _, f in streams.feed("turn_1", event_type, message(chunk))]
    out += [f for _, _, f in streams.flush("turn_1")]
    return out, "".join(f["text"] for f in out)


@pytest.fixture
def redactor() -> Redactor:
    r = Redactor()
    r.register(SECRET, "vault:providers/x")
    r.register("another-secret-value", "env:OTHER")
    return r


@pytest.mark.parametrize("pieces", [2, 3, 5])
def test_every_split_of_a_secret_is_caught(redactor: Redactor, pieces: int) -> None:
    start = TEXT.index(SECRET)
    positions = range(start - 1, start + len(SECRET) + 1)
    for cuts in itertools.combinations(positions, pieces - 1):
        events, joined = stored_text(redactor, split(TEXT, cuts))
        assert SECRET not in joined, cuts
        assert joined == redactor.redact(TEXT), cuts  # nothing lost, nothing doubled
        for event in events:
            assert event["raw"]["content"]["text"] == event["text"]  # the payload says the same
        assert SECRET not in "".join(e["raw"]["content"]["text"] for e in events)


def test_one_character_chunks(redactor: Redactor) -> None:
    events, joined = stored_text(redactor, list(TEXT))
    assert SECRET not in joined and joined == redactor.redact(TEXT)
    assert len([e for e in events if e.get("runtime") != HELD_BACK]) == len(TEXT)  # every chunk stays an event


def test_text_that_cannot_start_a_secret_is_not_held(redactor: Redactor) -> None:
    streams = StreamRedaction(redactor.stream_view)
    (_, fields), = streams.feed("t", EventType.AGENT_MESSAGE, message("plain text."))
    assert fields["text"] == "plain text." and not streams.holding
    (_, fields), = streams.feed("t", EventType.AGENT_MESSAGE, message("ends with sk-li"))
    assert fields["text"] == "ends with " and streams.holding
    ((turn, kind, tail),) = streams.flush("t")
    assert (turn, kind, tail["text"], tail["runtime"]) == ("t", EventType.AGENT_MESSAGE, "sk-li", HELD_BACK)


def test_nothing_registered_is_the_identity(redactor: Redactor) -> None:
    streams = StreamRedaction(Redactor().stream_view)
    fields = message("sk-live-0123")
    assert streams.feed("t", EventType.AGENT_MESSAGE, fields) == [(EventType.AGENT_MESSAGE, fields)]
    assert streams.feed("t", EventType.AGENT_MESSAGE, fields)[0][1] is fields


def test_streams_are_separate(redactor: Redactor) -> None:
    # A thought between two halves of a message neither completes nor breaks it.
    streams = StreamRedaction(redactor.stream_view)
    half = len(SECRET) // 2
    out = [
        streams.feed("t", EventType.AGENT_MESSAGE, message(SECRET[:half]))[0][1]["text"],
        streams.feed("t", EventType.THOUGHT, message(SECRET[half:]))[0][1]["text"],
        streams.feed("t", EventType.AGENT_MESSAGE, message(SECRET[half:] + " end"))[0][1]["text"],
    ]
    assert out[0] == "" and out[1] == SECRET[half:] and out[2] == "[redacted:vault:providers/x] end"


def tool_update(call_id: str, text: str | None, status: str = "in_progress") -> tuple[EventType, JSON]:
    raw: JSON = {"sessionUpdate": "tool_call_update", "toolCallId": call_id, "status": status}
    if text is not None:
        raw["content"] = [{"type": "content", "content": {"type": "text", "text": text}}]
    event_type = EventType.TOOL_RESULT if status == "completed" else EventType.TOOL_CALL
    fields: JSON = {"tool_call_id": call_id, "raw": raw}
    if status == "completed":
        fields["tool_result"] = text
    return event_type, fields


@pytest.mark.parametrize("final_text", [None, " done"], ids=["completion-without-text", "completion-with-text"])
def test_tool_output_split_across_updates(redactor: Redactor, final_text: str | None) -> None:
    streams = StreamRedaction(redactor.stream_view)
    stored: list[str] = []
    for chunk in split(f"out: {SECRET}", (7, 12, 20)):
        stored += [_tool_text(f) for _, f in streams.feed("t", *tool_update("c1", chunk))]
    final = streams.feed("t", *tool_update("c1", final_text, "completed"))
    stored += [_tool_text(f) for _, f in final]
    assert final[-1][0] is EventType.TOOL_RESULT and not streams.holding
    joined = "".join(stored)
    assert SECRET not in joined and "[redacted:vault:providers/x]" in joined
    if final_text:
        assert final[-1][1]["tool_result"] == final[-1][1]["raw"]["content"][0]["content"]["text"]


def _tool_text(fields: JSON) -> str:
    content = fields["raw"].get("content") or []
    return "".join(item["content"]["text"] for item in content)


def test_a_secret_registered_mid_stream_and_released(redactor: Redactor) -> None:
    r = Redactor()
    streams = StreamRedaction(r.stream_view)
    assert streams.feed("t", EventType.AGENT_MESSAGE, message("abc sk-li"))[0][1]["text"] == "abc sk-li"
    r.register(SECRET, "vault:x")
    assert streams.feed("t", EventType.AGENT_MESSAGE, message("x sk-live-01"))[0][1]["text"] == "x "
    r.unregister(SECRET)
    assert streams.feed("t", EventType.AGENT_MESSAGE, message("23"))[0][1]["text"] == "sk-live-0123"
