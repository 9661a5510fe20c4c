"""The stage files new events go through (duckdb_stage), on real DuckDB files: what a crash leaves
there reaches ``events`` exactly once, reads see staged rows, the writer alternates between the
two files, and a clean close leaves no stage file."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pytest

from agh_nb.adapters.duckdb_stage import stage_paths
from agh_nb.adapters.duckdb_store import DuckDBStore, wal_path
from agh_nb.errors import StoreError
from agh_nb.events import EventQuery
from tests.adapters.test_duckdb_store import draft, make_record, save
from tests.conftest import wait_until

REPO = Path(__file__).resolve().parents[2]
NEVER = 3600.0
"""A move interval no test outlasts: rows stay staged until a read, a close or an open moves them."""

# A process that commits events (durable: in the stage) and dies without a move: what a killed
# kernel leaves behind.
_DIES_AFTER_COMMIT = f"""
import os, sys
from agh_nb.adapters.duckdb_store import DuckDBStore
from tests.adapters.test_duckdb_stage import stage_events
stage_events(DuckDBStore.open(sys.argv[1], move_interval={NEVER}), 40)
os._exit(0)
"""


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "home" / "agh.duckdb"


def stage_events(store: DuckDBStore, count: int, start: int = 0) -> None:
    """Append ``count`` events of session ``sess_a`` and wait until they are committed."""
    record = make_record()
    save(store, record)
    for i in range(start, start + count):
        store.append(record, draft(i))
    asyncio.run(store.flush())


def staged_rows(store: DuckDBStore) -> list[int]:
    """How many rows each stage file holds, read on a raw cursor (which asks for no move)."""
    cur = store._con.cursor()
    try:
        return [cur.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in ("stage0.events", "stage1.events")]
    finally:
        cur.close()


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
    with DuckDBStore.open(db_path, move_interval=NEVER) as store:
        assert staged_rows(store) == [0, 0]  # moved at open, before any read
        assert [e.sequence for e in store.query_events("sess_a", EventQuery())] == list(range(1, 41))
        # numbering restarts in an emptied stage, and new events follow the recovered ones
        stage_events(store, 1, start=99)
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
        stage_events(store, 3)
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


def test_a_read_moves_what_is_staged_and_switches_the_writer_to_the_other_file(db_path: Path) -> None:
    with DuckDBStore.open(db_path, move_interval=NEVER) as store:
        stage_events(store, 25)
        assert staged_rows(store) == [25, 0]
        assert store.sql("SELECT count(*) AS n FROM events")["n"].tolist() == [25]
        assert staged_rows(store) == [0, 0]
        stage_events(store, 10, start=25)
        assert staged_rows(store) == [0, 10]  # file 1 now
        assert store.last_sequence("sess_a") == 35
        stage_events(store, 5, start=35)
        assert staged_rows(store) == [5, 0]  # and back
        assert [e.sequence for e in store.query_events("sess_a", EventQuery())] == list(range(1, 41))


def test_no_row_is_lost_or_doubled_while_reads_switch_files_under_a_stream(db_path: Path) -> None:
    with DuckDBStore.open(db_path, move_interval=NEVER) as store:
        record = make_record()
        save(store, record)
        read = threading.Event()
        done = threading.Event()

        def produce() -> None:
            # 60 bursts of 50, each after a read: every burst lands while switches go on
            for i in range(3000):
                store.append(record, draft(i))
                if i % 50 == 49:
                    assert read.wait(30), "no read came"
                    read.clear()
            done.set()

        producer = threading.Thread(target=produce)
        producer.start()
        reads = 0
        while not done.is_set():
            store.last_sequence(record.id)
            reads += 1
            read.set()
        producer.join()
        asyncio.run(store.flush())
        counts = store.sql("SELECT count(*) AS n, count(DISTINCT sequence) AS d, max(sequence) AS m FROM events")
        assert counts.to_dict("records") == [{"n": 3000, "d": 3000, "m": 3000}]
        assert reads >= 60


def test_the_stage_moves_by_itself_while_nobody_reads(db_path: Path) -> None:
    with DuckDBStore.open(db_path, move_interval=0.05) as store:
        stage_events(store, 1)
        wait_until(lambda: staged_rows(store) == [0, 0], timeout=10)
        cur = store._con.cursor()  # a raw look, which does not ask for a move
        assert cur.execute("SELECT count(*) FROM events").fetchall() == [(1,)]
        cur.close()


def test_a_failed_move_refuses_later_writes_and_keeps_the_staged_rows(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = DuckDBStore.open(db_path, move_interval=NEVER)
    stage_events(store, 1)  # durable in the stage
    store._con.execute("ALTER TABLE events RENAME TO events_gone")  # sabotage: no move can land
    with caplog.at_level(logging.ERROR, logger="agh_nb.adapters.duckdb_stage"):
        with pytest.raises(StoreError):
            store.query_events("sess_a", EventQuery())
    assert "refusing further writes" in caplog.text
    with pytest.raises(StoreError, match="failed commit"):
        store.append(make_record(), draft(2))
    store._con.execute("ALTER TABLE events_gone RENAME TO events")
    store.close()
    assert stage_paths(db_path)[0].exists()  # the row is still there, and the next open moves it
    with DuckDBStore.open(db_path) as again:
        assert [e.sequence for e in again.query_events("sess_a", EventQuery())] == [1]


def test_the_stage_files_are_owner_only(db_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with DuckDBStore.open(db_path, move_interval=NEVER) as store:
            stage_events(store, 1)
            files = [*stage_paths(db_path), wal_path(stage_paths(db_path)[0])]
            assert [stat.S_IMODE(f.stat().st_mode) for f in files] == [0o600, 0o600, 0o600]
    finally:
        os.umask(old)
