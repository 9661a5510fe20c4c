"""``export DIR``: the store as Parquet (events by date, token_usage, sessions), read back by
DuckDB, pyarrow and Polars, exported again incrementally, filtered, and robust to an export that
died half way. Real DuckDB files and real Parquet files."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from agh_nb.adapters.duckdb_store import DuckDBStore
from agh_nb.adapters.export_files import LOCK, MANIFEST
from agh_nb.api import Reader
from agh_nb.core.record import SessionRecord
from agh_nb.core.state import SessionState, StopReason
from agh_nb.errors import ExportError, SessionNotFoundError, UsageError
from agh_nb.events import EventDraft, EventType

DAY1 = datetime(2026, 5, 1, 23, 59, 0, tzinfo=timezone.utc)


def make(session_id: str) -> SessionRecord:
    return SessionRecord(
        id=session_id, name=session_id, agent_name="demo", type="user", workspace_id="ws_1",
        workspace_path="/ws", permissions="approve-reads", state=SessionState.ACTIVE,
        created_at=DAY1, updated_at=DAY1, acp_session_id=f"acp-{session_id}",
    )


class Fleet:
    """Two sessions writing turns through the real store; times straddle midnight."""

    def __init__(self, store: DuckDBStore) -> None:
        self.store = store
        self.records = {sid: make(sid) for sid in ("sess_a", "sess_b")}
        for rec in self.records.values():
            asyncio.run(store.save_session(rec))
        self.turns = 0

    def turn(self, session_id: str, at: datetime, cost: float = 0.01) -> None:
        self.turns += 1
        turn_id = f"turn_{self.turns}"
        rec = self.records[session_id]
        drafts = [
            EventDraft(EventType.USER_MESSAGE, turn_id, {"text": f"prompt {self.turns}"}, at),
            EventDraft(EventType.AGENT_MESSAGE, turn_id, {"text": "ok "}, at + timedelta(seconds=30)),
            EventDraft(EventType.AGENT_MESSAGE, turn_id, {"text": "done"}, at + timedelta(seconds=61)),
            EventDraft(EventType.USAGE, turn_id, {"usage": {"cost": {"amount": cost * self.turns, "currency": "USD"}}}, at + timedelta(seconds=62)),
            EventDraft(EventType.DONE, turn_id, {"stop_reason": "end_turn"}, at + timedelta(seconds=63)),
        ]
        for draft in drafts:
            self.store.append(rec, draft)
        asyncio.run(self.store.merge_usage(session_id, turn_id, {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}))
        asyncio.run(self.store.flush())

    def stop(self, session_id: str, at: datetime) -> None:
        rec = self.records[session_id].replace(state=SessionState.STOPPED, stop_reason=StopReason.USER_CANCELED, updated_at=at)
        self.records[session_id] = rec
        self.store.append(rec, EventDraft(EventType.SESSION_STOPPED, None, {"stop_reason": "user_canceled"}, at))
        asyncio.run(self.store.save_session(rec))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBStore]:
    with DuckDBStore.open(tmp_path / "agh.duckdb") as s:
        yield s


@pytest.fixture
def reader(store: DuckDBStore, tmp_path: Path) -> Reader:
    return Reader(store, home=tmp_path)


def duck(sql: str) -> list[tuple[Any, ...]]:
    return duckdb.sql(sql).fetchall()


def events_glob(out: Path) -> str:
    return f"read_parquet('{out}/events/**/*.parquet', hive_partitioning = true)"


def test_export_is_read_back_with_equal_counts_by_duckdb_pyarrow_and_polars(
    store: DuckDBStore, reader: Reader, tmp_path: Path
) -> None:
    fleet = Fleet(store)
    fleet.turn("sess_a", DAY1)  # crosses midnight: rows on two dates
    fleet.turn("sess_b", DAY1 + timedelta(hours=5))
    fleet.stop("sess_a", DAY1 + timedelta(hours=6))
    out = tmp_path / "export"
    summary = reader.export(out)
    stored = int(store.sql("SELECT count(*) AS n FROM events")["n"][0])
    assert summary["events"] == stored == 11 and summary["token_usage"] == 2 and summary["sessions"] == 2
    assert sorted(p.name for p in (out / "events").iterdir()) == ["date=2026-05-01", "date=2026-05-02"]
    # DuckDB, with the date partition as a DATE column.
    by_date = duck(f"SELECT date, count(*) FROM {events_glob(out)} GROUP BY date ORDER BY date")
    assert [(d.isoformat(), n) for d, n in by_date] == [("2026-05-01", 2), ("2026-05-02", 9)]
    assert duck(f"SELECT typeof(timestamp), typeof(date) FROM {events_glob(out)} LIMIT 1") == [
        ("TIMESTAMP WITH TIME ZONE", "DATE")
    ]
    # pyarrow (and so pandas), as a hive-partitioned dataset.
    dataset = ds.dataset(out / "events", format="parquet", partitioning="hive")
    assert dataset.count_rows() == stored
    table = dataset.to_table()
    assert json.loads(table.column("content")[0].as_py())["schema"] == "agh.session.event.v1"
    assert str(table.schema.field("timestamp").type) == "timestamp[us, tz=UTC]"
    assert pq.read_table(out / "token_usage").num_rows == 2
    assert pq.read_table(out / "sessions" / "sessions.parquet").column("state").to_pylist() == ["stopped", "active"]
    # Polars (a test dependency).
    import polars

    frame = polars.read_parquet(str(out / "events" / "**" / "*.parquet"), hive_partitioning=True)
    assert frame.height == stored and "date" in frame.columns


def test_spark_safe_types_no_nested_unsigned_or_nanosecond_columns(store: DuckDBStore, reader: Reader, tmp_path: Path) -> None:
    Fleet(store).turn("sess_a", DAY1)
    out = tmp_path / "export"
    reader.export(out)
    for path in out.rglob("*.parquet"):
        schema = pq.read_schema(path)
        for field in schema:
            kind = str(field.type)
            assert kind in {"string", "int64", "double", "timestamp[us, tz=UTC]"}, (path.name, field.name, kind)
        metadata = pq.read_metadata(path)
        assert metadata.row_group(0).column(0).compression == "SNAPPY"
        assert "date" not in schema.names  # the partition column lives in the directory name only


def test_exporting_again_adds_only_what_is_new(store: DuckDBStore, reader: Reader, tmp_path: Path) -> None:
    fleet = Fleet(store)
    fleet.turn("sess_a", DAY1)
    out = tmp_path / "export"
    first = reader.export(out)
    assert (first["events"], first["token_usage"]) == (5, 1)
    again = reader.export(out)
    assert (again["events"], again["token_usage"], again["sessions"], again["files"]) == (0, 0, 0, [])
    fleet.turn("sess_a", DAY1 + timedelta(hours=3))
    fleet.turn("sess_b", DAY1 + timedelta(hours=4))
    fleet.stop("sess_a", DAY1 + timedelta(hours=5))  # sess_a's row changed: stopped
    third = reader.export(out)
    assert (third["events"], third["token_usage"], third["sessions"]) == (11, 2, 1)  # sess_b's row is unchanged
    # Every stored row once, none twice, and the earlier files untouched.
    exported = duck(f"SELECT session_id, sequence FROM {events_glob(out)} ORDER BY ALL")
    stored = [tuple(r) for r in store.sql("SELECT session_id, sequence FROM events ORDER BY ALL").itertuples(index=False)]
    assert exported == stored
    assert duck(f"SELECT count(*), count(DISTINCT turn_id) FROM '{out}/token_usage/*.parquet'") == [(3, 3)]
    sessions = duck(f"SELECT id, state FROM '{out}/sessions/sessions.parquet' ORDER BY id")
    assert sessions == [("sess_a", "stopped"), ("sess_b", "active")]
    costs = duck(f"SELECT turn_id, round(turn_cost, 6) FROM '{out}/token_usage/*.parquet' ORDER BY turn_id")
    assert costs == [("turn_1", 0.01), ("turn_2", 0.01), ("turn_3", 0.03)]  # the turn's own, not the total
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["sessions"]["sess_a"]["sequence"] == 11 and len(manifest["exports"]) == 3


def test_session_and_since_filters(store: DuckDBStore, reader: Reader, tmp_path: Path) -> None:
    fleet = Fleet(store)
    fleet.turn("sess_a", DAY1 - timedelta(days=2))
    fleet.turn("sess_a", DAY1 + timedelta(hours=2))
    fleet.turn("sess_b", DAY1 + timedelta(hours=3))
    only_b = reader.export(tmp_path / "b", session="sess_b")
    assert (only_b["events"], only_b["session_ids"]) == (5, ["sess_b"])
    assert duck(f"SELECT DISTINCT session_id FROM {events_glob(tmp_path / 'b')}") == [("sess_b",)]
    assert duck(f"SELECT id FROM '{tmp_path / 'b'}/sessions/sessions.parquet'") == [("sess_b",)]
    recent = reader.export(tmp_path / "recent", since=DAY1)
    assert recent["events"] == 10 and recent["token_usage"] == 2
    assert duck(f"SELECT min(timestamp) >= TIMESTAMPTZ '2026-05-01 23:59:00+00' FROM {events_glob(tmp_path / 'recent')}") == [(True,)]
    recent_str = reader.export(tmp_path / "recent2", since="2026-05-01T23:59:00Z")
    assert recent_str["events"] == 10
    with pytest.raises(SessionNotFoundError):
        reader.export(tmp_path / "x", session="sess_nope")
    with pytest.raises(UsageError, match="since"):
        reader.export(tmp_path / "x", since="yesterday-ish")


def test_an_export_that_died_leaves_no_duplicate_and_no_loss(store: DuckDBStore, reader: Reader, tmp_path: Path) -> None:
    fleet = Fleet(store)
    fleet.turn("sess_a", DAY1 + timedelta(hours=1))
    out = tmp_path / "export"
    reader.export(out)
    fleet.turn("sess_a", DAY1 + timedelta(hours=2))
    # Died before its manifest: a hidden file no manifest names. Its rows are exported again.
    orphan = out / "events" / "date=2026-05-02" / ".part-dead.parquet.tmp"
    orphan.write_bytes(b"half a file")
    # Died after its manifest, before its renames: the next export finishes them.
    manifest = json.loads((out / MANIFEST).read_text())
    done = out / "events" / "date=2026-05-02"
    first = next(done.glob("part-*.parquet"))
    hidden = first.with_name("." + first.name + ".tmp")
    first.rename(hidden)
    manifest["pending"] = [[hidden.relative_to(out).as_posix(), first.relative_to(out).as_posix()]]
    (out / MANIFEST).write_text(json.dumps(manifest))
    summary = reader.export(out)
    assert summary["events"] == 5
    assert not orphan.exists() and first.exists() and not hidden.exists()
    exported = duck(f"SELECT sequence FROM {events_glob(out)} ORDER BY 1")
    assert exported == [(i,) for i in range(1, 11)]


def test_a_directory_that_is_no_export_or_is_busy_is_refused(store: DuckDBStore, reader: Reader, tmp_path: Path) -> None:
    Fleet(store).turn("sess_a", DAY1)
    busy = tmp_path / "busy"
    (busy / "notes").mkdir(parents=True)
    with pytest.raises(UsageError, match="not empty"):
        reader.export(busy)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        reader.export(a_file)
    locked = tmp_path / "locked"
    locked.mkdir()
    fd = os.open(locked / LOCK, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(ExportError, match="another export"):
            reader.export(locked)
    finally:
        os.close(fd)
    assert reader.export(locked)["events"] == 5
