"""The stage files new events go through (duckdb_stage), on real DuckDB files: what a crash leaves
there reaches ``events`` exactly once, reads see staged rows, the writer alternates between the
two files, and a clean close leaves no stage file."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

from agh_nb.adapters.duckdb_stage import stage_paths
from agh_nb.adapters.duckdb_store import DuckDBStore, wal_path
from agh_nb.errors import StoreError
from agh_nb.events import EventDraft, EventQuery, EventType
from tests.adapters.test_duckdb_store import draft, make_record, save

REPO = Path(__file__).resolve().parents[2]

# A process that commits events (durable: in the stage) and dies before the mover's first move
# (a second later): what a killed kernel leaves behind.
_DIES_AFTER_COMMIT = """
import asyncio, os, sys
from agh_nb.adapters.duckdb_store import DuckDBStore
from tests.adapters.test_duckdb_store import draft, make_record, save
store = DuckDBStore.open(sys.argv[1])
record = make_record()
save(store, record)
for i in range(40):
    store.append(record, draft(i))
asyncio.run(store.flush())
os._exit(0)
"""


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "home" / "agh.duckdb"


def _die_after_commit(db_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", _DIES_AFTER_COMMIT, str(db_path)], env=env, check=True, timeout=60)


def _main_events(db_path: Path) -> list[tuple[str, int]]:
    with duckdb.connect(str(db_path), read_only=True) as con:
        return con.execute("SELECT session_id, sequence FROM events ORDER BY sequence").fetchall()


def test_events_left_in_the_stage_by_a_dead_process_reach_events_on_next_open(db_path: Path) -> None:
    _die_after_commit(db_path)
    assert stage_paths(db_path)[0].exists()
    assert _main_events(db_path) == []  # committed, but only in the stage
    with DuckDBStore.open(db_path) as store:
        assert [e.sequence for e in store.query_events("sess_a", EventQuery())] == list(range(1, 41))
        # numbering restarts in an emptied stage, and new events follow the recovered ones
        record = make_record()
        save(store, record)
        store.append(record, draft(99))
        asyncio.run(store.flush())
        assert store.last_sequence("sess_a") == 41
    assert _main_events(db_path) == [("sess_a", s) for s in range(1, 42)]
    for stage in stage_paths(db_path):
        assert not stage.exists()
        assert not wal_path(stage).exists()


def test_a_read_only_open_moves_what_a_dead_process_left_first(db_path: Path) -> None:
    _die_after_commit(db_path)
    with DuckDBStore.open(db_path, read_only=True) as ro:
        assert ro.last_sequence("sess_a") == 40
        assert len(ro.sql("SELECT * FROM events")) == 40
    assert not any(stage.exists() for stage in stage_paths(db_path))


def test_rows_already_moved_before_a_crash_are_not_copied_twice(db_path: Path) -> None:
    # A crash between a move's two commits: rows 1-3 are in events and under the mark, but still
    # in stage file 0; rows 4-5 were staged in file 1 after that move.
    with DuckDBStore.open(db_path) as store:
        record = make_record()
        save(store, record)
        for i in range(3):
            store.append(record, draft(i))
    with duckdb.connect(str(db_path)) as con:
        con.execute(f"ATTACH '{stage_paths(db_path)[0]}' AS stage0")
        con.execute(f"ATTACH '{stage_paths(db_path)[1]}' AS stage1")
        con.execute("CREATE TABLE stage0.events AS SELECT *, sequence AS stage_id FROM events")
        con.execute(
            "CREATE TABLE stage1.events AS SELECT * REPLACE (sequence + 2 AS sequence, id || 'x' AS id), "
            "sequence + 2 AS stage_id FROM events WHERE sequence >= 2"
        )
        con.execute("UPDATE stage_mark SET moved_through = 3")
    with DuckDBStore.open(db_path) as store:
        assert [e.sequence for e in store.query_events("sess_a", EventQuery())] == [1, 2, 3, 4, 5]
    assert _main_events(db_path) == [("sess_a", s) for s in range(1, 6)]


def test_a_read_sees_events_committed_a_moment_ago(db_path: Path) -> None:
    with DuckDBStore.open(db_path) as store:
        record = make_record()
        save(store, record)
        for i in range(25):
            store.append(record, draft(i))
        asyncio.run(store.flush())
        # well inside the mover's interval: the read itself has the rows moved
        assert store.sql("SELECT count(*) AS n FROM events")["n"].tolist() == [25]
        assert store.sql("SELECT count(*) AS n FROM stage0.events")["n"].tolist() == [0]
        assert store.last_sequence(record.id) == 25


def test_the_writer_alternates_stage_files_and_no_row_is_lost_or_doubled(db_path: Path) -> None:
    # Each read moves what is staged and points the writer at the other file; reads between
    # bursts make many switches while appends keep coming from another thread.
    with DuckDBStore.open(db_path) as store:
        record = make_record()
        save(store, record)
        done = threading.Event()

        def produce() -> None:
            for i in range(3000):
                store.append(record, draft(i))
                if i % 50 == 0:
                    time.sleep(0.002)
            done.set()

        producer = threading.Thread(target=produce)
        producer.start()
        used = set()
        while not done.is_set():
            store.last_sequence(record.id)
            used |= {
                alias
                for alias in ("stage0", "stage1")
                if stage_wal_exists(db_path, alias)
            }
        producer.join()
        asyncio.run(store.flush())
        counts = store.sql("SELECT count(*) AS n, count(DISTINCT sequence) AS d, max(sequence) AS m FROM events")
        assert counts.to_dict("records") == [{"n": 3000, "d": 3000, "m": 3000}]
        assert used == {"stage0", "stage1"}


def stage_wal_exists(db_path: Path, alias: str) -> bool:
    return db_path.with_name(f"{db_path.name}.{alias}.wal").exists()


def test_the_stage_moves_by_itself_while_nobody_reads(db_path: Path) -> None:
    with DuckDBStore.open(db_path) as store:
        record = make_record()
        save(store, record)
        store.append(record, EventDraft(EventType.AGENT_MESSAGE, "t", {"text": "x"}))
        asyncio.run(store.flush())
        cur = store._con.cursor()  # a raw look, which does not ask for a move
        deadline_rows = None
        for _ in range(100):
            deadline_rows = cur.execute("SELECT count(*) FROM events").fetchall()[0][0]
            if deadline_rows == 1:
                break
            asyncio.run(asyncio.sleep(0.05))
        cur.close()
        assert deadline_rows == 1


def test_a_failed_move_refuses_later_writes_and_keeps_the_staged_rows(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = DuckDBStore.open(db_path)
    record = make_record()
    save(store, record)
    store.append(record, draft(1))
    asyncio.run(store.flush())  # durable in the stage
    store._con.execute("ALTER TABLE events RENAME TO events_gone")  # sabotage: no move can land
    with caplog.at_level(logging.ERROR, logger="agh_nb.adapters.duckdb_stage"):
        with pytest.raises(StoreError):
            store.query_events(record.id, EventQuery())
    assert "refusing further writes" in caplog.text
    with pytest.raises(StoreError, match="failed commit"):
        store.append(record, draft(2))
    store._con.execute("ALTER TABLE events_gone RENAME TO events")
    store.close()
    assert stage_paths(db_path)[0].exists()  # the row is still there, and the next open moves it
    with DuckDBStore.open(db_path) as again:
        assert [e.sequence for e in again.query_events(record.id, EventQuery())] == [1]


def test_the_stage_file_is_owner_only(db_path: Path) -> None:
    with DuckDBStore.open(db_path) as store:
        record = make_record()
        save(store, record)
        store.append(record, draft(1))
        asyncio.run(store.flush())
        for stage in stage_paths(db_path):
            assert stage.stat().st_mode & 0o077 == 0
            if wal_path(stage).exists():
                assert wal_path(stage).stat().st_mode & 0o077 == 0
