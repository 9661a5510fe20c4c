"""An event's JSON row built from the store's own text of its content (``Event.to_json``, what
the SSE stream sends) is exactly the row encoded afresh: same text, same key order."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from agh_nb.adapters.duckdb_store import DuckDBStore
from agh_nb.events import Event, EventDraft, EventQuery, EventType, dumps, loads
from tests.adapters.test_duckdb_store import T0, flush, make_record, save

FIELDS = [
    {"text": "plain"},
    {"text": "line\nbreak, \"quotes\", back\\slash, tab\t"},
    {"text": "unicode: déjà vu ✓ 日本語 \U0001f600"},
    {"text": "", "raw": {"nested": [1, 2.5, None, True, {"k": "v"}], "_meta": {"agh_demo_sent_at": 1.5}}},
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBStore]:
    with DuckDBStore.open(tmp_path / "home" / "agh.duckdb") as opened:
        yield opened


def _check(events: Sequence[Event]) -> None:
    assert len(events) == len(FIELDS)
    for event in events:
        assert event.content_text is not None  # built from a stored row
        assert event.to_json() == dumps(event.to_dict())
        assert loads(event.to_json())["content"] == event.content


def test_stored_and_delivered_rows_frame_as_their_fresh_encoding(store: DuckDBStore) -> None:
    record = make_record()
    save(store, record)
    delivered: list[Event] = []
    got = threading.Event()

    def deliver(events: Sequence[Event]) -> None:
        delivered.extend(events)
        if len(delivered) >= len(FIELDS):
            got.set()

    sub = store.subscribe(record.id, 0, deliver)
    try:
        for fields in FIELDS:
            store.append(record, EventDraft(EventType.AGENT_MESSAGE, turn_id="turn_1", fields=fields, timestamp=T0))
        flush(store)
        assert got.wait(10)
    finally:
        sub.close()
    _check(delivered)
    _check(store.query_events(record.id, EventQuery()))


def test_an_event_without_stored_text_is_encoded_afresh() -> None:
    event = Event("evt_1", "sess", 1, None, "agent_message", "a", "w", "/w", {"text": "x"}, T0)
    assert event.content_text is None
    assert event.to_json() == dumps(event.to_dict())


def test_a_stored_event_decodes_its_content_only_when_read_and_stays_immutable(store: DuckDBStore) -> None:
    # The writer builds an Event for every committed row a subscriber listens to; SSE streams
    # frame it from the stored text, so its content is decoded only by a reader that asks.
    record = make_record()
    save(store, record)
    store.append(record, EventDraft(EventType.AGENT_MESSAGE, turn_id="turn_1", fields=FIELDS[2], timestamp=T0))
    flush(store)
    event = store.query_events(record.id, EventQuery())[0]
    assert not isinstance(event._content, dict)  # not decoded yet
    framed = event.to_json()
    assert not isinstance(event._content, dict)  # framing did not decode it either
    assert loads(framed)["content"]["text"] == FIELDS[2]["text"]
    assert event.content["text"] == FIELDS[2]["text"] and isinstance(event._content, dict)
    fresh = Event(*(getattr(event, f) for f in ("id", "session_id", "sequence", "turn_id", "type", "agent_name",
                                                 "workspace_id", "workspace_path", "content", "timestamp")))
    assert fresh == store.query_events(record.id, EventQuery())[0]  # equal, decoded or not
    with pytest.raises(AttributeError):
        event.sequence = 2  # type: ignore[misc]
    changed = event.replace(content={"text": "other"})
    assert changed.content_text is None and changed.to_json() == dumps(changed.to_dict())
    assert event.replace(sequence=5).content_text == event.content_text
