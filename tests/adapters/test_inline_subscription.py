"""An ``inline`` subscription (the SSE feed's): backlog on the subscribing thread, then live
batches on the store's writer thread, each event once and in order."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from agh_nb.adapters.duckdb_store import DuckDBStore
from agh_nb.events import Event
from tests.adapters.test_duckdb_store import draft, flush, make_record, save


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBStore]:
    with DuckDBStore.open(tmp_path / "home" / "agh.duckdb") as opened:
        yield opened


def test_inline_subscription_delivers_backlog_then_live_on_the_writer(store: DuckDBStore) -> None:
    record = make_record()
    save(store, record)
    for i in range(5):
        store.append(record, draft(i))
    flush(store)
    seen: list[tuple[int, str]] = []
    done = threading.Event()

    def deliver(events: Sequence[Event]) -> None:
        seen.extend((e.sequence, threading.current_thread().name) for e in events)
        if len(seen) >= 12:
            done.set()

    subscriber = threading.current_thread().name
    sub = store.subscribe(record.id, 2, deliver, inline=True)
    try:
        for i in range(5, 14):
            store.append(record, draft(i))
        flush(store)
        assert done.wait(10)
    finally:
        sub.close()
    assert [s for s, _ in seen] == list(range(3, 15))  # after 2: no gap, no duplicate
    backlog = {t for s, t in seen if s <= 5}
    live = {t for s, t in seen if s > 5}
    assert backlog == {subscriber}
    assert live and all(t != subscriber and "writer" in t for t in live), live
    # No delivery thread was started for it.
    assert not [t for t in threading.enumerate() if t.name.startswith("agh-nb-subscriber")]
