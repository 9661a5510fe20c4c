"""DuckDBStore against real DuckDB files: schema, sequences, durability, queries, live tail,
locking, read-only mode, usage merging and the SQL surface."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas
import pytest

from agh_nb.adapters import duckdb_schema as schema
from agh_nb.adapters.duckdb_store import DuckDBStore
from agh_nb.core.record import Failure, SessionRecord
from agh_nb.core.state import FailureKind, SessionState, StopReason
from agh_nb.errors import QueryError, StoreError, StoreLockedError
from agh_nb.events import Event, EventDraft, EventQuery, EventType, format_timestamp
from tests.conftest import wait_until

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)


def make_record(
    session_id: str = "sess_a", *, agent: str = "demo", offset: int = 0
) -> SessionRecord:
    created = T0 + timedelta(seconds=offset)
    return SessionRecord(
        id=session_id,
        name=None,
        agent_name=agent,
        type="user",
        workspace_id="ws_1",
        workspace_path="/tmp/ws",
        permissions="approve-reads",
        state=SessionState.ACTIVE,
        created_at=created,
        updated_at=created,
        acp_session_id=f"acp-{session_id}",
    )


def draft(
    i: int = 0,
    *,
    type_: EventType = EventType.AGENT_MESSAGE,
    turn: str | None = "turn_1",
    at: datetime | None = None,
) -> EventDraft:
    return EventDraft(type_, turn_id=turn, fields={"text": f"chunk {i}"}, timestamp=at or T0)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "home" / "agh.duckdb"


@pytest.fixture
def store(db_path: Path) -> Iterator[DuckDBStore]:
    with DuckDBStore.open(db_path) as opened:
        yield opened


def save(store: DuckDBStore, *records: SessionRecord) -> None:
    async def go() -> None:
        for record in records:
            await store.save_session(record)

    asyncio.run(go())


def flush(store: DuckDBStore) -> None:
    asyncio.run(store.flush())


def sequences(events: Sequence[Event]) -> list[int]:
    return [e.sequence for e in events]


# -- schema and lifecycle -----------------------------------------------------------------------


def test_open_creates_parent_dir_and_schema(store: DuckDBStore, db_path: Path) -> None:
    assert db_path.exists()
    columns = store.sql(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_catalog = current_database() ORDER BY table_name, ordinal_position"
    )
    by_table = columns.groupby("table_name")["column_name"].apply(list).to_dict()
    assert by_table["events"] == [
        "id",
        "session_id",
        "sequence",
        "turn_id",
        "type",
        "agent_name",
        "workspace_id",
        "workspace_path",
        "content",
        "timestamp",
        # copied out of content when a row is queued, for the analytical views
        "text",
        "tool_call_id",
        "tool_name",
        "title",
        "status",
        "message_seq",
    ]
    assert {"failure", "failure_kind", "acp_caps", "state", "stop_reason"} <= set(
        by_table["sessions"]
    )
    assert {"input_tokens", "context_size", "cost_amount", "cost_currency", "agent_name"} <= set(
        by_table["token_usage"]
    )
    types = {(r.table_name, r.column_name): r.data_type for r in columns.itertuples()}
    assert types[("events", "content")] == "JSON"
    assert types[("events", "timestamp")] == "TIMESTAMP WITH TIME ZONE"
    assert types[("sessions", "failure")] == "JSON"


def test_close_is_idempotent_and_commits_pending_appends(db_path: Path) -> None:
    record = make_record()
    store = DuckDBStore.open(db_path, flush_interval=10.0)
    save(store, record)
    for i in range(10):
        store.append(record, draft(i))
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.append(record, draft())
    with DuckDBStore.open(db_path) as reopened:
        assert sequences(reopened.query_events(record.id, EventQuery())) == list(range(1, 11))


def test_async_context_manager_closes_and_refuses_reads(db_path: Path) -> None:
    async def go() -> DuckDBStore:
        async with DuckDBStore.open(db_path) as store:
            await store.save_session(make_record())
            store.append(make_record(), draft())
        await store.aclose()  # idempotent
        return store

    store = asyncio.run(go())
    with pytest.raises(StoreError, match="closed"):
        store.query_events("sess_a", EventQuery())
    with pytest.raises(StoreError, match="closed"):
        store.subscribe("sess_a", 0, lambda evs: None)
    with DuckDBStore.open(db_path, read_only=True) as ro:
        assert ro.last_sequence("sess_a") == 1


def test_open_rejects_an_empty_batch_size(db_path: Path) -> None:
    with pytest.raises(ValueError, match="max_batch"):
        DuckDBStore.open(db_path, max_batch=0)


def test_idle_writer_checkpoints_a_grown_wal(store: DuckDBStore, db_path: Path) -> None:
    record = make_record()
    save(store, record)
    for i in range(1500):
        store.append(record, EventDraft(EventType.AGENT_MESSAGE, "t", {"text": f"{i} " * 400}))
    flush(store)
    assert store.last_sequence(record.id) == 1500  # a read moves the staged rows into events
    wal = db_path.with_name(db_path.name + ".wal")
    assert wal.stat().st_size > 1 << 20
    deadline = time.monotonic() + 15
    while wal.exists() and wal.stat().st_size > 1 << 20:
        assert time.monotonic() < deadline, "no idle checkpoint"
        time.sleep(0.05)
    assert store.last_sequence(record.id) == 1500


def test_session_round_trip_and_list_oldest_first(store: DuckDBStore) -> None:
    newer = make_record("sess_new", offset=10)
    older = make_record("sess_old", offset=0).replace(
        state=SessionState.STOPPED,
        stop_reason=StopReason.AGENT_CRASHED,
        stop_detail="daemon crashed while session active",
        failure=Failure(FailureKind.PROCESS_EXIT, "exit 137", "/x/bundle.json"),
        acp_caps={"loadSession": True},
        host_pid=42,
    )
    save(store, newer, older)
    assert store.get_session("sess_old") == older
    assert store.get_session("sess_missing") is None
    assert [r.id for r in store.list_sessions()] == ["sess_old", "sess_new"]
    kind = store.sql(
        "SELECT failure_kind, failure->>'summary' AS s FROM sessions WHERE id='sess_old'"
    )
    assert kind.to_dict("records") == [{"failure_kind": "process_exit", "s": "exit 137"}]


# -- sequences ----------------------------------------------------------------------------------


def test_sequences_are_gapless_per_session_when_interleaved(store: DuckDBStore) -> None:
    a, b = make_record("sess_a"), make_record("sess_b")
    save(store, a, b)
    got = [store.append(a if i % 3 else b, draft(i)) for i in range(30)]
    flush(store)
    assert sequences([e for e in got if e.session_id == "sess_a"]) == list(range(1, 21))
    assert sequences(store.query_events("sess_a", EventQuery())) == list(range(1, 21))
    assert sequences(store.query_events("sess_b", EventQuery())) == list(range(1, 11))
    assert store.last_sequence("sess_a") == 20
    assert store.last_sequence("sess_unknown") == 0


def test_reopen_continues_at_max_plus_one(db_path: Path) -> None:
    a, b = make_record("sess_a"), make_record("sess_b")
    with DuckDBStore.open(db_path) as store:
        save(store, a, b)
        for i in range(5):
            store.append(a, draft(i))
            store.append(b, draft(i))
        store.append(a, draft(99))
    with DuckDBStore.open(db_path) as store:
        save(store, a)
        assert store.append(a, draft()).sequence == 7
        save(store, b)
        assert store.append(b, draft()).sequence == 6
        flush(store)
        assert sequences(store.query_events("sess_a", EventQuery())) == list(range(1, 8))


def test_append_before_save_session_is_a_bug(store: DuckDBStore) -> None:
    with pytest.raises(StoreError, match="save_session"):
        store.append(make_record("sess_unprimed"), draft())


def test_append_builds_the_canonical_row(store: DuckDBStore) -> None:
    record = make_record()
    save(store, record)
    event = store.append(
        record, EventDraft(EventType.TOOL_CALL, "turn_9", {"tool_name": "read"}, T0)
    )
    assert event.id.startswith("evt_") and len(event.id) == 36
    assert (event.type, event.turn_id, event.agent_name) == ("tool_call", "turn_9", "demo")
    assert event.content == {
        "schema": "agh.session.event.v1",
        "type": "tool_call",
        "session_id": "acp-sess_a",
        "turn_id": "turn_9",
        "timestamp": "2025-01-02T03:04:05.123456Z",
        "tool_name": "read",
    }
    flush(store)
    assert store.query_events(record.id, EventQuery()) == [event]


# -- durability ---------------------------------------------------------------------------------


def test_durable_append_is_visible_to_a_fresh_read_when_it_returns(db_path: Path) -> None:
    record = make_record()
    # A long linger would hold plain appends back; a durable append must not wait for it.
    with DuckDBStore.open(db_path, flush_interval=30.0) as store:
        save(store, record)

        async def go() -> tuple[float, Event]:
            store.append(record, draft(1))
            start = time.monotonic()
            event = await store.append_durable(record, draft(2, type_=EventType.USER_MESSAGE))
            return time.monotonic() - start, event

        elapsed, event = asyncio.run(go())
        assert elapsed < 5.0
        assert sequences(store.query_events(record.id, EventQuery())) == [1, 2]
        assert store.sql("SELECT count(*) AS n FROM events")["n"].tolist() == [2]
        assert event.sequence == 2


def test_failed_commit_fails_waiters_and_refuses_later_writes(
    store: DuckDBStore, caplog: pytest.LogCaptureFixture
) -> None:
    record = make_record()
    save(store, record)
    seen: list[Event] = []
    store.subscribe(record.id, 0, seen.extend)
    for stage in ("stage0", "stage1"):  # sabotage: the next commit cannot insert
        store._con.execute(f"DROP TABLE {stage}.events")
    with (
        caplog.at_level(logging.ERROR, logger="agh_nb.adapters.duckdb_writer"),
        pytest.raises(StoreError, match="could not commit"),
    ):
        asyncio.run(store.append_durable(record, draft()))
    assert "refusing further writes" in caplog.text
    with pytest.raises(StoreError, match="failed commit"):
        store.append(record, draft())
    with pytest.raises(StoreError, match="failed commit"):
        asyncio.run(store.flush())
    assert seen == []


@pytest.mark.parametrize("count", [1, schema.SMALL_BATCH + 1], ids=["values-insert", "arrow-insert"])
def test_unencodable_text_does_not_fail_the_commit(store: DuckDBStore, count: int) -> None:
    record = make_record()
    save(store, record)
    for i in range(count):
        store.append(record, EventDraft(EventType.AGENT_MESSAGE, "t", {"text": f"bad \ud800 surrogate {i}"}))
    flush(store)
    events = store.query_events(record.id, EventQuery())
    assert sequences(events) == list(range(1, count + 1))
    assert all(e.content["text"].startswith("bad ") and "\ud800" not in e.content["text"] for e in events)


@pytest.mark.parametrize("count", [schema.SMALL_BATCH, schema.SMALL_BATCH + 1], ids=["values-insert", "arrow-insert"])
def test_both_insert_paths_store_the_same_rows(db_path: Path, count: int) -> None:
    # A long linger puts every append into one commit, so each size takes the insert path it names.
    with DuckDBStore.open(db_path, flush_interval=5.0) as store:
        record = make_record()
        save(store, record)
        naive = datetime(2026, 1, 2, 3, 4, 5, 6)  # a naive timestamp is taken as UTC on both paths
        for i in range(count):
            store.append(record, draft(i, at=naive + timedelta(seconds=i)))
        flush(store)
        events = store.query_events(record.id, EventQuery())
    assert [e.content["text"] for e in events] == [f"chunk {i}" for i in range(count)]
    assert [e.timestamp for e in events] == [
        naive.replace(tzinfo=timezone.utc) + timedelta(seconds=i) for i in range(count)
    ]
    assert all(e.content["timestamp"] == format_timestamp(e.timestamp) for e in events)


def test_batches_insert_by_position_into_the_declared_columns(store: DuckDBStore) -> None:
    # insert_into() matches columns by position: the Arrow schema must follow CREATE TABLE events.
    cur = store._con.cursor()
    try:
        names = [row[1] for row in cur.execute("PRAGMA table_info('events')").fetchall()]
    finally:
        cur.close()
    assert names == list(schema.EVENT_BATCH_SCHEMA.names) == list(schema.STORED_EVENT_COLUMNS)


# -- queries ------------------------------------------------------------------------------------


@pytest.fixture
def populated(store: DuckDBStore) -> DuckDBStore:
    a, other = make_record("sess_a"), make_record("sess_b", agent="other")
    save(store, a, other)
    plan = [
        (EventType.USER_MESSAGE, "turn_1"),
        (EventType.AGENT_MESSAGE, "turn_1"),
        (EventType.TOOL_CALL, "turn_1"),
        (EventType.DONE, "turn_1"),
        (EventType.USER_MESSAGE, "turn_2"),
        (EventType.AGENT_MESSAGE, "turn_2"),
        (EventType.DONE, "turn_2"),
        (EventType.SYSTEM, None),
    ]
    for i, (type_, turn) in enumerate(plan):
        store.append(a, draft(i, type_=type_, turn=turn, at=T0 + timedelta(minutes=i)))
        store.append(other, draft(i, type_=type_, turn=turn, at=T0 + timedelta(minutes=i)))
    flush(store)
    return store


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param(EventQuery(), [1, 2, 3, 4, 5, 6, 7, 8], id="all"),
        pytest.param(EventQuery(types=("user_message", "done")), [1, 4, 5, 7], id="types"),
        pytest.param(EventQuery(types=(EventType.TOOL_CALL,)), [3], id="types-enum"),
        pytest.param(EventQuery(turn_id="turn_2"), [5, 6, 7], id="turn"),
        pytest.param(EventQuery(since=T0 + timedelta(minutes=6)), [7, 8], id="since"),
        pytest.param(EventQuery(after_sequence=5), [6, 7, 8], id="after-sequence"),
        pytest.param(EventQuery(limit=3), [6, 7, 8], id="limit-newest-ascending"),
        pytest.param(EventQuery(limit=0), [], id="limit-zero"),
        pytest.param(EventQuery(agent_name="demo"), [1, 2, 3, 4, 5, 6, 7, 8], id="agent"),
        pytest.param(EventQuery(agent_name="other"), [], id="agent-other"),
        pytest.param(
            EventQuery(types=("agent_message", "done"), after_sequence=2, limit=2),
            [6, 7],
            id="combined",
        ),
    ],
)
def test_query_filters(populated: DuckDBStore, query: EventQuery, expected: list[int]) -> None:
    events = populated.query_events("sess_a", query)
    assert sequences(events) == expected
    assert all(e.session_id == "sess_a" for e in events)


def test_query_returns_utc_timestamps(populated: DuckDBStore) -> None:
    [event] = populated.query_events("sess_a", EventQuery(after_sequence=1, limit=1))
    assert event.timestamp == T0 + timedelta(minutes=7)
    assert event.timestamp.utcoffset() == timedelta(0)


# -- subscriptions ------------------------------------------------------------------------------


def test_subscribe_mid_stream_during_concurrent_appends_sees_each_event_once(
    store: DuckDBStore,
) -> None:
    record, noise = make_record("sess_a"), make_record("sess_b")
    save(store, record, noise)
    for i in range(1000):
        store.append(record, draft(i))
    flush(store)

    total = 1000 + 5000
    received: dict[str, list[int]] = {"mid": [], "zero": [], "all": []}
    done = threading.Event()

    def collector(name: str):  # type: ignore[no-untyped-def]
        def on_events(events: Sequence[Event]) -> None:
            received[name].extend(e.sequence for e in events if e.session_id == "sess_a")
            if name == "mid" and received[name] and received[name][-1] == total:
                done.set()

        return on_events

    live_all = store.subscribe(None, 0, collector("all"))

    def produce() -> None:
        for i in range(5000):
            store.append(record, draft(i))
            if i % 7 == 0:
                store.append(noise, draft(i))
            if i % 500 == 0:
                time.sleep(0.001)

    producer = threading.Thread(target=produce)
    producer.start()
    mid = store.subscribe("sess_a", 500, collector("mid"))
    zero = store.subscribe("sess_a", 0, collector("zero"))
    producer.join()
    flush(store)
    assert done.wait(10)
    # Each subscription delivers on its own thread: wait for the other two to reach the end too.
    wait_until(lambda: all(r and r[-1] == total for r in received.values()), timeout=10)
    mid.close()
    mid.close()
    zero.close()
    live_all.close()
    assert received["mid"] == list(range(501, total + 1))
    assert received["zero"] == list(range(1, total + 1))
    # The all-sessions subscription is live only: a gapless, duplicate-free tail of the stream.
    tail = received["all"]
    assert tail == list(range(tail[0], total + 1))


def test_subscribe_after_the_end_gets_only_new_events(store: DuckDBStore) -> None:
    record = make_record()
    save(store, record)
    for i in range(3):
        store.append(record, draft(i))
    flush(store)
    got: list[int] = []
    sub = store.subscribe(record.id, 3, lambda evs: got.extend(sequences(evs)))
    assert got == []
    store.append(record, draft())
    flush(store)
    wait_until(lambda: got == [4], timeout=10)
    sub.close()
    store.append(record, draft())
    flush(store)
    time.sleep(0.2)  # a delivery after close would land now; none may
    assert got == [4]


def test_failing_callback_is_logged_and_does_not_stop_the_writer(
    store: DuckDBStore, caplog: pytest.LogCaptureFixture
) -> None:
    record = make_record()
    save(store, record)
    good: list[int] = []

    def bad(events: Sequence[Event]) -> None:
        raise RuntimeError("subscriber bug")

    store.subscribe(record.id, 0, bad)
    store.subscribe(record.id, 0, lambda evs: good.extend(sequences(evs)))
    with caplog.at_level(logging.ERROR, logger="agh_nb.adapters.duckdb_subscriptions"):
        store.append(record, draft())
        flush(store)
        store.append(record, draft())
        flush(store)
        wait_until(lambda: good == [1, 2] and "subscriber callback failed" in caplog.text, timeout=10)


def test_a_blocked_subscriber_never_holds_up_commits(store: DuckDBStore) -> None:
    # Issue 14: subscribers run off the writer thread. One stuck in its callback (a widget that
    # re-renders slowly, an SSE client that stopped reading) must not stop commits for anyone.
    record, other = make_record("sess_a"), make_record("sess_b")
    save(store, record, other)
    release = threading.Event()
    stuck_batches: list[list[int]] = []
    fast: list[int] = []

    def stuck(events: Sequence[Event]) -> None:
        stuck_batches.append(sequences(events))
        release.wait(30)

    store.subscribe(record.id, 0, stuck)
    store.subscribe(record.id, 0, lambda evs: fast.extend(sequences(evs)))
    for batch in range(5):
        for i in range(10):
            store.append(record, draft(i))
        flush(store)  # would hang here if the stuck callback ran on the writer thread
    asyncio.run(store.append_durable(other, draft()))
    wait_until(lambda: fast == list(range(1, 51)), timeout=10)
    assert stuck_batches and stuck_batches[0][0] == 1 and len(stuck_batches) == 1  # still inside the first
    release.set()
    wait_until(lambda: [s for b in stuck_batches for s in b] == list(range(1, 51)), timeout=10)
    # What piled up while it was stuck arrived joined, not one call per commit.
    assert len(stuck_batches) < 5, stuck_batches


def test_subscribe_to_every_session_is_live_only(store: DuckDBStore) -> None:
    with pytest.raises(ValueError, match="live only"):
        store.subscribe(None, 5, lambda evs: None)


# -- locking and read-only ----------------------------------------------------------------------

_HOLDER = """
import sys
from pathlib import Path
from agh_nb.adapters.duckdb_store import DuckDBStore
store = DuckDBStore.open(Path(sys.argv[1]))
print("ready", flush=True)
sys.stdin.read()
store.close()
"""


def test_second_process_holding_the_file_gives_store_locked_error(db_path: Path) -> None:
    DuckDBStore.open(db_path).close()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(db_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        for read_only in (False, True):
            with pytest.raises(StoreLockedError) as caught:
                DuckDBStore.open(db_path, read_only=read_only)
            message = str(caught.value)
            assert "\n" not in message
            assert f"pid {holder.pid}" in message
            assert str(db_path) in message
            assert "set AGH_HOME" in message
            assert caught.value.fields["pid"] == holder.pid
            assert caught.value.fields["path"] == str(db_path)
    finally:
        holder.communicate(timeout=30)  # closes stdin (the holder exits) and stdout
    DuckDBStore.open(db_path).close()  # the lock went with the process


def test_open_on_an_unusable_path_gives_one_line_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StoreError) as caught:
        DuckDBStore.open(tmp_path / "file" / "agh.duckdb")
    assert "\n" not in str(caught.value)
    with pytest.raises(StoreError, match="cannot open"):
        DuckDBStore.open(tmp_path / "missing" / "agh.duckdb", read_only=True)


def test_read_only_mode_reads_and_refuses_writes(db_path: Path) -> None:
    record = make_record()
    with DuckDBStore.open(db_path) as store:
        save(store, record)
        store.append(record, draft())
    with DuckDBStore.open(db_path, read_only=True) as ro:
        assert ro.get_session(record.id) == record
        assert sequences(ro.query_events(record.id, EventQuery())) == [1]
        with pytest.raises(StoreError, match="read-only"):
            ro.append(record, draft())
        with pytest.raises(StoreError, match="read-only"):
            asyncio.run(ro.save_session(record))
        with pytest.raises(StoreError, match="read-only"):
            asyncio.run(ro.flush())


# -- usage and SQL ------------------------------------------------------------------------------


def test_merge_usage_merges_partial_reports_into_one_row(store: DuckDBStore) -> None:
    record = make_record()
    save(store, record)

    async def go() -> None:
        await store.merge_usage(record.id, "turn_1", {"used": 1200, "size": 200000})
        await store.merge_usage(
            record.id,
            "turn_1",
            {"input_tokens": 10, "output_tokens": 20, "total_tokens": 30, "thought_tokens": None},
        )
        await store.merge_usage(
            record.id, "turn_1", {"used": 1500, "cost": {"amount": 0.25, "currency": "USD"}}
        )
        await store.merge_usage(record.id, "turn_2", {"inputTokens": 3, "cachedReadTokens": 2})

    asyncio.run(go())
    rows = store.sql("SELECT * FROM token_usage ORDER BY turn_id").to_dict("records")
    assert len(rows) == 2
    first = rows[0]
    assert first["agent_name"] == "demo"
    assert (first["input_tokens"], first["output_tokens"], first["total_tokens"]) == (10, 20, 30)
    assert (first["context_used"], first["context_size"]) == (1500, 200000)
    assert (first["cost_amount"], first["cost_currency"]) == (0.25, "USD")
    assert pandas.isna(first["thought_tokens"])
    assert (rows[1]["input_tokens"], rows[1]["cached_read_tokens"]) == (3, 2)


def test_usage_no_column_can_hold_is_dropped_and_the_writer_goes_on(store: DuckDBStore) -> None:
    # An agent's counts are its own: 2^64, a float, a string or a bool must not fail the commit
    # (a failed commit stops every session's writes).
    record = make_record()
    save(store, record)

    async def go() -> None:
        await store.merge_usage(
            record.id,
            "turn_1",
            {"input_tokens": 2**64, "output_tokens": 7.0, "total_tokens": "lots", "thought_tokens": True,
             "used": -(2**70), "size": 1.5, "cost": {"amount": float("nan"), "currency": "USD" * 40}},
        )
        store.append(record, draft(1))
        await store.flush()

    asyncio.run(go())
    (row,) = store.sql("SELECT * FROM token_usage").to_dict("records")
    assert row["output_tokens"] == 7 and row["cost_currency"] == ("USD" * 40)[:64]
    for column in ("input_tokens", "total_tokens", "thought_tokens", "context_used", "context_size", "cost_amount"):
        assert pandas.isna(row[column]), column
    assert sequences(store.query_events(record.id, EventQuery())) == [1]


def test_presence_is_stored_and_an_older_store_gains_its_column(db_path: Path) -> None:
    import duckdb

    db_path.parent.mkdir(parents=True)
    with duckdb.connect(str(db_path)) as con:  # a store made before the heartbeat existed
        con.execute(schema.DDL[0].replace(",\n        last_presence_at TIMESTAMPTZ", ""))
        assert "last_presence_at" not in [r[1] for r in con.execute("PRAGMA table_info('sessions')").fetchall()]
    seen = T0 + timedelta(seconds=5)
    with DuckDBStore.open(db_path) as store:
        record = make_record()
        save(store, record, record.replace(last_presence_at=seen))
        stored = store.get_session(record.id)
    assert stored is not None and stored.last_presence_at == seen


def test_sql_returns_a_dataframe(populated: DuckDBStore) -> None:
    frame = populated.sql(
        "SELECT type, count(*) AS n FROM events WHERE session_id = 'sess_a' "
        "GROUP BY type ORDER BY type"
    )
    assert isinstance(frame, pandas.DataFrame)
    assert dict(zip(frame["type"], frame["n"], strict=True))["user_message"] == 2


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        pytest.param("SELECT * FROM no_such_table", "no_such_table", id="unknown-table"),
        pytest.param("SELEC 1", "syntax", id="syntax"),
        pytest.param("DELETE FROM events", "read-only", id="write-refused"),
        pytest.param("SELECT * FROM read_text('/etc/hostname')", "not reachable", id="file-function"),
        pytest.param("SELECT * FROM other.main.events", "does not exist", id="other-catalog"),
        pytest.param("SELECT * FROM information_schema.\"vault.key\"", "does not exist", id="file-behind-catalog"),
        pytest.param("SELECT '5877642-06-25'::DATE AS d", "cannot be shown as a dataframe", id="unshowable-value"),
    ],
)
def test_sql_errors_are_one_line_query_errors(
    populated: DuckDBStore, query: str, needle: str
) -> None:
    with pytest.raises(QueryError) as caught:
        populated.sql(query)
    assert "\n" not in str(caught.value)
    assert needle in str(caught.value).lower()
    assert populated.sql("SELECT count(*) AS n FROM events")["n"].tolist() == [16]


def test_catalog_views_and_ctes_stay_queryable(populated: DuckDBStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A file next to the process named like a catalog view must not be what a query reads.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "information_schema.tables").write_text("leaked\n")
    names = set(populated.sql("SELECT table_name FROM information_schema.tables")["table_name"])
    assert {"sessions", "events", "token_usage"} <= names and "leaked" not in names
    frame = populated.sql("WITH t AS (SELECT type FROM main.events) SELECT count(*) AS n FROM t")
    assert frame["n"].tolist() == [16]


def test_text_duckdb_cannot_hold_never_fails_the_writer(store: DuckDBStore) -> None:
    # A workspace path that is not UTF-8 (surrogate-escaped by Python) or a name sent as "\ud800"
    # must not fail the commit: a failed commit makes the writer refuse every later write.
    odd = make_record("sess_odd")
    odd = odd.__class__(**{**odd.__dict__, "name": "bad \ud800 name", "workspace_path": "/tmp/caf\udce9"})
    save(store, odd)
    store.append(odd, draft(1))
    flush(store)
    row = store.sql("SELECT name, workspace_path FROM sessions WHERE id = 'sess_odd'").to_dict("records")
    (stored,) = row
    assert stored["name"].startswith("bad \ufffd") and stored["name"].endswith(" name")
    assert stored["workspace_path"].startswith("/tmp/caf\ufffd")
    assert store.last_sequence("sess_odd") == 1
