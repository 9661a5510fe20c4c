"""User SQL is sandboxed by DuckDB itself (issue 11): no file, extension, ATTACH, COPY or setting is
reachable whatever the query says, writes fail in a read-only transaction, and nothing a query
does can fail, stall or outlive the writer. Real DuckDB files, the real writer thread."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agh_nb.adapters import user_sql
from agh_nb.adapters.duckdb_store import DuckDBStore
from agh_nb.core.record import SessionRecord
from agh_nb.core.state import SessionState
from agh_nb.errors import QueryError
from agh_nb.events import EventDraft, EventType

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
SECRET = "s3cret-marker-9f2c"
"""Planted in every file a query must not reach; it must never come back in a result or message."""


def record(session_id: str = "sess_sql") -> SessionRecord:
    return SessionRecord(
        id=session_id, name=None, agent_name="demo", type="user", workspace_id="ws_1",
        workspace_path="/tmp/ws", permissions="approve-reads", state=SessionState.ACTIVE,
        created_at=T0, updated_at=T0, acp_session_id="acp-1",
    )


def append(store: DuckDBStore, n: int, rec: SessionRecord | None = None) -> None:
    """Append ``n`` events through the real writer and wait until they are committed."""
    rec = rec or record()

    async def go() -> None:
        await store.save_session(rec)
        for i in range(n):
            store.append(rec, EventDraft(EventType.AGENT_MESSAGE, "turn_1", {"text": f"chunk {i}"}, T0))
        await store.flush()

    asyncio.run(go())


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An AGH_HOME with files a query must not reach: the vault, its key, another session's ledger."""
    home = tmp_path / "home"
    (home / "vault").mkdir(parents=True)
    (home / "vault" / "vault.json").write_text(json.dumps({"entries": {"x": {"ciphertext": SECRET}}}))
    (home / "vault.key").write_text(SECRET + "\n")
    ledger = home / "sessions" / "ws_other" / "sess_other" / "ledger.jsonl"
    ledger.parent.mkdir(parents=True)
    ledger.write_text(json.dumps({"content": SECRET}) + "\n")
    (tmp_path / "loot.csv").write_text(f"a,b\n1,{SECRET}\n")
    (tmp_path / "loot.json").write_text(json.dumps({"a": SECRET}))
    pq.write_table(pa.table({"a": [SECRET]}), tmp_path / "loot.parquet")
    return home


@pytest.fixture
def store(home: Path) -> Iterator[DuckDBStore]:
    opened = DuckDBStore.open(home / "agh.duckdb", flush_interval=0.0)
    append(opened, 3)
    try:
        yield opened
    finally:
        opened.close()


def attacks(tmp: Path) -> list[str]:
    home = tmp / "home"
    ledger = home / "sessions" / "ws_other" / "sess_other" / "ledger.jsonl"
    files = [str(ledger), str(home / "vault" / "vault.json"), str(home / "vault.key"), str(tmp / "loot.csv")]
    queries = []
    for f in files:
        queries += [
            # The reported bypass: a file named after a CTE defined elsewhere in the same query.
            f"WITH x AS (SELECT 1) SELECT * FROM '{f}'",
            f"WITH x AS (SELECT 1), y AS (SELECT * FROM '{f}') SELECT * FROM y",
            f"WITH x AS (SELECT * FROM x) SELECT * FROM x, '{f}'",
            f"SELECT * FROM (WITH '{f}' AS (SELECT 1) SELECT 1), '{f}'",
            f"SELECT * FROM \"{f}\"",
            f"FROM '{f}'",
            f"SELECT * FROM read_csv('{f}')",
            f"SELECT * FROM read_csv_auto('{f}', header=false)",
            f"SELECT * FROM read_json('{f}')",
            f"SELECT * FROM read_json_objects('{f}')",
            f"SELECT * FROM read_text('{f}')",
            f"SELECT content FROM read_blob('{f}')",
            f"SELECT * FROM sniff_csv('{f}')",
            f"SELECT * FROM system.main.read_text('{f}')",
            f"SELECT (SELECT content FROM read_text('{f}'))",
            f"SELECT * FROM events WHERE EXISTS (SELECT * FROM read_text('{f}'))",
        ]
    queries += [
        f"SELECT * FROM read_parquet('{tmp / 'loot.parquet'}')",
        f"SELECT * FROM '{tmp / 'loot.parquet'}'",
        f"SELECT * FROM '{tmp / 'loot.json'}'",
        f"SELECT * FROM glob('{home}/**')",
        f"SELECT * FROM glob('{home}/*')",
        f"SELECT * FROM information_schema.\"{home / 'vault.key'}\"",
        f"SELECT * FROM main.\"{home / 'vault.key'}\"",
        f"SELECT * FROM read_duckdb('{home / 'agh.duckdb'}')",
        "SELECT * FROM 'https://example.com/data.csv'",
        "SELECT * FROM read_csv('s3://bucket/x.csv')",
        f"ATTACH '{tmp / 'other.duckdb'}' AS other",
        f"ATTACH '{home / 'agh.duckdb'}' AS again (READ_ONLY)",
        "INSTALL httpfs",
        "LOAD httpfs",
        "FORCE INSTALL httpfs",
        "SET enable_external_access = true",
        "SET GLOBAL lock_configuration = false",
        "RESET lock_configuration",
        f"SET allowed_directories = ['{tmp}']",
        "SET threads = 1",
        "PRAGMA enable_profiling",
        "PRAGMA threads=1",
        f"COPY events TO '{tmp / 'out.csv'}'",
        f"COPY (SELECT 1) TO '{home / 'config.toml'}'",
        f"COPY events FROM '{tmp / 'loot.csv'}'",
        f"EXPORT DATABASE '{tmp / 'export'}'",
        f"IMPORT DATABASE '{tmp / 'export'}'",
        "CREATE SECRET s (TYPE s3, KEY_ID 'x', SECRET 'y')",
        "SELECT * FROM duckdb_secrets()",
        "SELECT getenv('AGH_VAULT_KEY')",
        "SELECT * FROM query('SELECT * FROM read_text(''" + str(home / "vault.key") + "'')')",
        f"SELECT * FROM query_table('{home / 'vault.key'}')",
        "SELECT * FROM enable_profiling()",
        "SELECT * FROM checkpoint()",
        "SELECT * FROM force_checkpoint()",
        "CHECKPOINT",
        "FORCE CHECKPOINT",
        "SELECT 1; SELECT * FROM read_text('/etc/hostname')",
        "DELETE FROM events",
        "UPDATE sessions SET name = 'x'",
        "INSERT INTO events SELECT * FROM events",
        "DROP TABLE events",
        "CREATE TABLE t AS SELECT 1",
        "CREATE MACRO m() AS 1",
        "DETACH agh",
        "USE system",
        "VACUUM",
        "CALL checkpoint()",
    ]
    return queries


def test_no_file_setting_or_write_is_reachable_whatever_the_query_says(store: DuckDBStore, tmp_path: Path) -> None:
    for query in attacks(tmp_path):
        with pytest.raises(QueryError) as caught:
            store.sql(query)
        message = str(caught.value)
        assert "\n" not in message and SECRET not in message, (query, message)
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "export").exists()
    assert not (tmp_path / "other.duckdb").exists()
    assert not (tmp_path / "home" / "config.toml").exists()
    # The store is whole and the writer still commits.
    assert store.sql("SELECT count(*) AS n FROM events")["n"].tolist() == [3]
    append(store, 2)
    assert store.last_sequence("sess_sql") == 5


def test_the_sandbox_holds_without_the_guard(
    store: DuckDBStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hand-written guard only words refusals: with it reduced to "one statement", DuckDB's
    # own sandbox (external access off, configuration locked, read-only transaction) refuses
    # every file, setting and write by itself.
    monkeypatch.setattr(user_sql, "check_query", lambda con, query: duckdb.extract_statements(query)[0])
    only_the_statement_type_refuses = {
        # DuckDB runs these inside a read-only transaction; none reads or writes anything outside
        # the store, but the maintenance ones hold up (FORCE CHECKPOINT: abort) the writer's
        # transactions. DuckDB's own parser classifies them, and the guard takes only queries.
        "SELECT * FROM checkpoint()", "CHECKPOINT", "FORCE CHECKPOINT", "VACUUM", "USE system",
        "CALL checkpoint()", "SELECT * FROM query_table('" + str(tmp_path / "home" / "vault.key") + "')",
    }
    for query in attacks(tmp_path):
        if query in only_the_statement_type_refuses or query.startswith("SELECT 1;"):
            continue
        try:
            frame = store.sql(query)
        except QueryError as exc:
            assert SECRET not in str(exc), (query, str(exc))
            continue
        assert SECRET not in frame.to_string(), query
        raise AssertionError(f"DuckDB let this through: {query!r} -> {frame!r}")
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "export").exists()
    assert store.sql("SELECT count(*) AS n FROM events")["n"].tolist() == [3]
    assert store.sql("SELECT count(*) AS n FROM sessions WHERE name IS NULL")["n"].tolist() == [1]
    append(store, 1)
    assert store.last_sequence("sess_sql") == 4


def test_paths_and_settings_carry_no_secret(store: DuckDBStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # Decided: the catalog may show where the store lives (its owner knows), never a secret.
    monkeypatch.setenv("AGH_VAULT_KEY", SECRET)
    shown = "".join(
        store.sql(q).to_string()
        for q in (
            "SELECT * FROM duckdb_settings()",
            "SELECT * FROM pg_catalog.pg_settings",
            "SELECT * FROM duckdb_databases()",
            "SELECT current_setting('home_directory') AS h",
            "SELECT * FROM information_schema.schemata",
        )
    )
    assert SECRET not in shown
    assert store.sql(
        "SELECT value FROM duckdb_settings() WHERE name IN ('enable_external_access', 'lock_configuration')"
    )["value"].tolist() == ["false", "true"]


def test_every_table_and_view_of_the_store_is_readable(home: Path) -> None:
    # No hand-written list of names: a view another part of agh_nb adds is readable as is.
    path = home / "agh.duckdb"
    DuckDBStore.open(path).close()
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE VIEW recent_things AS SELECT 42 AS answer")
    with DuckDBStore.open(path) as store:
        assert store.sql("SELECT answer FROM recent_things")["answer"].tolist() == [42]
        assert store.sql("WITH t AS (SELECT * FROM main.recent_things) SELECT count(*) AS n FROM t")["n"].tolist() == [1]
        names = set(store.sql("SELECT table_name FROM information_schema.tables")["table_name"])
        assert {"sessions", "events", "token_usage", "recent_things"} <= names


def test_maintenance_and_runtime_sql_are_refused_in_words(store: DuckDBStore) -> None:
    for query, words in [
        ("SELECT * FROM checkpoint()", "checkpoint() is not allowed"),
        ("SELECT * FROM query('SELECT 1')", "query() is not allowed"),
        ("CHECKPOINT", "only SELECT queries"),
        ("PIVOT events ON type", "list its values"),
        ("SELECT * FROM read_text('/etc/hostname')", "not reachable"),
        ("", "empty"),
    ]:
        with pytest.raises(QueryError, match=re.escape(words)):
            store.sql(query)
    frame = store.sql("PIVOT events ON type IN ('agent_message', 'done') USING count(*) GROUP BY session_id")
    assert frame["agent_message"].tolist() == [3]


def test_user_queries_never_fail_stall_or_outlive_the_writer(store: DuckDBStore) -> None:
    # A runaway query is interrupted at its timeout; while it runs the writer keeps committing,
    # and no read-only transaction can make a commit fail (they never conflict).
    outcome: list[BaseException] = []

    def runaway() -> None:
        try:
            store.sql("SELECT count(*) FROM range(1000000000000) a, range(1000) b", timeout=1.0)
        except QueryError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=runaway)
    thread.start()
    commits = 0
    while thread.is_alive():
        append(store, 5)
        commits += 1
    thread.join()
    assert commits >= 1
    assert len(outcome) == 1 and "longer than 1 s" in str(outcome[0])
    assert store.last_sequence("sess_sql") == 3 + 5 * commits
    # The interrupted cursor left nothing open: an idle checkpoint (which waits for no reader) works.
    with duckdb_cursor(store) as cur:
        cur.execute("CHECKPOINT")


def test_a_huge_result_is_refused_not_loaded(store: DuckDBStore) -> None:
    with pytest.raises(QueryError, match="larger than 1 MiB"):
        store.sql("SELECT * FROM range(10000000)", max_bytes=1 << 20)
    assert len(store.sql("SELECT * FROM range(1000)", max_bytes=1 << 20)) == 1000


def test_the_writer_appends_arrow_batches_under_the_locked_sandbox(store: DuckDBStore) -> None:
    # Large commits go in as one Arrow scan; register()/append() (a future writer's path) work on
    # the same instance too: the sandbox forbids files, not Python objects handed to DuckDB.
    append(store, 500)
    assert store.last_sequence("sess_sql") == 503
    batch = pa.table({"n": pa.array([1, 2, 3], pa.int64())})
    with duckdb_cursor(store) as cur:
        cur.execute("CREATE TEMP TABLE scratch (n BIGINT)")
        cur.register("incoming", batch)
        cur.execute("INSERT INTO scratch SELECT n FROM incoming")
        cur.append("scratch", batch.to_pandas())
        assert cur.execute("SELECT sum(n) FROM scratch").fetchone() == (12,)
        cur.execute("CHECKPOINT")


def test_read_only_opener_is_sandboxed_too(store: DuckDBStore, home: Path, tmp_path: Path) -> None:
    store.close()
    with DuckDBStore.open(home / "agh.duckdb", read_only=True) as reader:
        assert reader.sql("SELECT count(*) AS n FROM events")["n"].tolist() == [3]
        for query in attacks(tmp_path)[:20]:
            with pytest.raises(QueryError):
                reader.sql(query)


def test_store_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = tmp_path / "fresh" / "home" / "agh.duckdb"
        store = DuckDBStore.open(path, flush_interval=0.0, move_interval=3600.0)  # moves by reads only
        try:
            append(store, 3)
            stage, stage_wal = path.with_name("agh.duckdb.stage0"), path.with_name("agh.duckdb.stage0.wal")
            assert stage_wal.exists()  # the writer commits to a stage file...
            assert mode(stage) == mode(stage_wal) == mode(path.with_name("agh.duckdb.stage1")) == 0o600
            store.last_sequence("s1")  # ...and a read of events has the rows moved to the main file
            wal = path.with_name("agh.duckdb.wal")
            assert wal.exists()
            assert mode(wal) == 0o600
            with duckdb_cursor(store) as cur:
                cur.execute("CHECKPOINT")  # DuckDB deletes the WAL; the next commit recreates it
            append(store, 1)  # into the other stage file, now
            assert mode(path.with_name("agh.duckdb.stage1.wal")) == 0o600
            store.last_sequence("s1")
            assert mode(wal) == 0o600
        finally:
            store.close()
        assert mode(path) == 0o600
        assert mode(path.parent) == 0o700 and mode(path.parent.parent) == 0o700
        assert mode(path.with_name("agh.duckdb.tmp")) == 0o700
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class duckdb_cursor:
    """A raw cursor of the store's own DuckDB instance (what agh_nb's writer gets)."""

    def __init__(self, store: DuckDBStore) -> None:
        self._cur = store._con.cursor()

    def __enter__(self) -> duckdb.DuckDBPyConnection:
        return self._cur

    def __exit__(self, *exc: object) -> None:
        self._cur.close()
