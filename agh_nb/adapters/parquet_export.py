"""Parquet export of the store (``%agh export DIR``, ``agh-nb export DIR``) for fleet analytics.

Owns: ``export_store`` and the Parquet schemas it writes. The layout of ``DIR``::

    events/date=YYYY-MM-DD/part-<export>.parquet   the events of that UTC day (hive partitioning)
    token_usage/part-<export>.parquet              one row per finished turn, plus its own cost
    sessions/sessions.parquet                      the latest row of every exported session
    _agh_export.json                               the manifest: per session, the last sequence exported

DuckDB (``read_parquet('DIR/events/**/*.parquet', hive_partitioning = true)``), pyarrow and pandas
(``DIR/events`` as a dataset), Polars (``scan_parquet(..., hive_partitioning=True)``) and Spark
(``spark.read.parquet('DIR/events')``) read it as it is: plain types only (strings, 64-bit
integers, doubles, ``TIMESTAMP(MICROS, UTC)``), no nested or unsigned columns, Snappy
compression, and ``date`` as the one partition column (it is no column of the files).

Exporting again adds only what is new: events after each session's last exported sequence, the
usage of turns that finished among them, and a new sessions snapshot with those sessions' rows
replaced (a session stopped since shows as stopped). Rows already written are never rewritten or
repeated; files land whole (``export_files``). The files are written with pyarrow from rows the
store reads in one read-only transaction (never DuckDB's ``COPY``: the store's SQL connection has
no file access). Blocking: run it off the event loop.
Imports duckdb and pyarrow; must not import core.session, runtime or kernel.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from agh_nb.adapters.duckdb_schema import STORED_EVENT_COLUMNS
from agh_nb.adapters.export_files import ExportDir, Manifest
from agh_nb.errors import ExportError, StoreError
from agh_nb.events import JSON, format_timestamp, utcnow

logger = logging.getLogger(__name__)

_TS = pa.timestamp("us", tz="UTC")
EVENTS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("session_id", pa.string()),
        ("sequence", pa.int64()),
        ("turn_id", pa.string()),
        ("type", pa.string()),
        ("agent_name", pa.string()),
        ("workspace_id", pa.string()),
        ("workspace_path", pa.string()),
        ("content", pa.string()),
        ("timestamp", _TS),
        ("text", pa.string()),
        ("tool_call_id", pa.string()),
        ("tool_name", pa.string()),
        ("title", pa.string()),
        ("status", pa.string()),
        ("message_seq", pa.int64()),
    ]
)
"""The events files: the columns of ``events`` (``content`` as JSON text); ``date`` is the
partition directory."""

TOKEN_USAGE_SCHEMA = pa.schema(
    [
        ("session_id", pa.string()),
        ("turn_id", pa.string()),
        ("agent_name", pa.string()),
        ("input_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("thought_tokens", pa.int64()),
        ("cached_read_tokens", pa.int64()),
        ("cached_write_tokens", pa.int64()),
        ("total_tokens", pa.int64()),
        ("context_used", pa.int64()),
        ("context_size", pa.int64()),
        ("cost_amount", pa.float64()),
        ("cost_currency", pa.string()),
        ("updated_at", _TS),
        ("turn_cost", pa.float64()),
    ]
)
"""The token_usage files: the table's columns (``cost_amount`` is the agent's running total) and
``turn_cost``, the turn's own cost as the ``turns`` view computes it."""

SESSIONS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("name", pa.string()),
        ("agent_name", pa.string()),
        ("type", pa.string()),
        ("workspace_id", pa.string()),
        ("workspace_path", pa.string()),
        ("permissions", pa.string()),
        ("state", pa.string()),
        ("stop_reason", pa.string()),
        ("stop_detail", pa.string()),
        ("failure", pa.string()),
        ("failure_kind", pa.string()),
        ("acp_session_id", pa.string()),
        ("acp_caps", pa.string()),
        ("created_at", _TS),
        ("updated_at", _TS),
    ]
)
"""The sessions snapshot: the SPEC's session record (JSON fields as text) and ``failure_kind``."""

SESSIONS_FILE = "sessions/sessions.parquet"
BATCH_ROWS = 100_000
"""Rows per Arrow batch read from the store (and per Parquet row group): bounds the memory."""
_DAY_US = 86_400_000_000
_EPOCH_DAY = date(1970, 1, 1)
_PARQUET_OPTIONS: dict[str, Any] = {"compression": "snappy", "coerce_timestamps": "us", "version": "2.6"}


@dataclass(frozen=True)
class _Range:
    """The events of one session an export covers: sequences in (after, upto]."""

    session_id: str
    after: int
    upto: int


def export_store(
    con: duckdb.DuckDBPyConnection,
    directory: Path,
    *,
    since: datetime | None = None,
    session_id: str | None = None,
    clock: Callable[[], datetime] = utcnow,
    batch_rows: int = BATCH_ROWS,
) -> JSON:
    """Export what is new in the store into ``directory`` (see the module docstring).

    Args:
        con: a cursor inside a read-only transaction of the store (one consistent snapshot).
        directory: the export directory (created when missing).
        since: only events at or after this time (the sessions' high-water marks still move past
            the older ones: they are not exported later).
        session_id: only this session.
        clock: the export's time (file names, manifest).
        batch_rows: rows per batch and row group.

    Returns:
        ``{"dir", "events", "token_usage", "sessions", "files", "session_ids"}``: the rows and
        files this export added, and the sessions it covered.

    Raises:
        UsageError: ``directory`` is not a directory, or not an export directory.
        ExportError: the directory is locked by another export or cannot be written.
        StoreError: the store could not be read.
    """
    now = clock()
    export_id = now.strftime("%Y%m%dT%H%M%S%fZ")
    with ExportDir.open(directory) as target:
        manifest = target.read_manifest()
        try:
            ranges = _ranges(con, manifest, session_id)
            events = _write_events(con, target, ranges, since, export_id, batch_rows)
            usage = _write_token_usage(con, target, ranges, since, export_id)
            sessions = _write_sessions(con, target, manifest, since, session_id)
        except duckdb.Error as exc:
            raise StoreError(f"export: cannot read the store: {_first_line(exc)}") from exc
        except (OSError, pa.ArrowException) as exc:
            raise ExportError(f"export: cannot write into {target.root}: {_first_line(exc)}", path=str(target.root)) from exc
        stamp = format_timestamp(now)
        for r in ranges:
            manifest.sessions.setdefault(r.session_id, {}).update(sequence=r.upto, exported_at=stamp)
        entry: JSON = {
            "id": export_id,
            "at": stamp,
            "since": format_timestamp(since) if since else None,
            "session": session_id,
            "events": events,
            "token_usage": usage,
            "sessions": sessions,
            "files": target.staged(),
        }
        manifest.exports.append(entry)
        try:
            files = target.commit(manifest)
        except OSError as exc:
            raise ExportError(f"export: cannot write into {target.root}: {exc.strerror or exc}", path=str(target.root)) from exc
    logger.info("exported %d events, %d turns of usage, %d sessions into %s", events, usage, sessions, directory)
    return {
        "dir": str(directory),
        "events": events,
        "token_usage": usage,
        "sessions": sessions,
        "files": files,
        "session_ids": [r.session_id for r in ranges],
    }


def _ranges(con: duckdb.DuckDBPyConnection, manifest: Manifest, session_id: str | None) -> list[_Range]:
    """Per session with events past its high-water mark: the sequences to export."""
    sql = "SELECT session_id, max(sequence) FROM events"
    params: list[Any] = []
    if session_id is not None:
        sql += " WHERE session_id = ?"
        params.append(session_id)
    rows = con.execute(sql + " GROUP BY session_id ORDER BY session_id", params).fetchall()
    ranges = [_Range(str(sid), manifest.high_water(str(sid)), int(top)) for sid, top in rows]
    return [r for r in ranges if r.upto > r.after]


def _range_join(ranges: list[_Range]) -> tuple[str, list[Any]]:
    # The ranges travel as list parameters: no temporary table, no registered Python object.
    sql = (
        "JOIN (SELECT unnest(?::VARCHAR[]) AS sid, unnest(?::BIGINT[]) AS lo, unnest(?::BIGINT[]) AS hi) m "
        "ON e.session_id = m.sid AND e.sequence > m.lo AND e.sequence <= m.hi"
    )
    return sql, [[r.session_id for r in ranges], [r.after for r in ranges], [r.upto for r in ranges]]


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'main' AND table_name = ?",
        [table],
    ).fetchall()
    return {str(r[0]) for r in rows}


def _write_events(
    con: duckdb.DuckDBPyConnection,
    target: ExportDir,
    ranges: list[_Range],
    since: datetime | None,
    export_id: str,
    batch_rows: int,
) -> int:
    if not ranges:
        return 0
    present = _columns(con, "events")
    # A store read-only and older than the derived columns has none: they are exported empty.
    select = ", ".join(
        f"e.{c}::VARCHAR AS content" if c == "content" else f"e.{c}" if c in present else f"NULL AS {c}"
        for c in STORED_EVENT_COLUMNS
    )
    join, params = _range_join(ranges)
    sql = f"SELECT {select}, epoch_us(e.timestamp) // {_DAY_US} AS day FROM events e {join}"
    if since is not None:
        sql += " WHERE e.timestamp >= ?"
        params.append(since)
    sql += " ORDER BY day, e.session_id, e.sequence"
    reader = _arrow_reader(con.sql(sql, params=params), batch_rows)
    count = 0
    writer: pq.ParquetWriter | None = None
    current: int | None = None
    try:
        for batch in reader:
            days = batch.column("day")
            unique = pc.unique(days).to_pylist()
            for day in unique:  # rows come ordered by day: one file open at a time
                rows = batch if len(unique) == 1 else batch.filter(pc.equal(days, day))
                if day != current:
                    if writer is not None:
                        writer.close()
                    stamp = (_EPOCH_DAY + timedelta(days=int(day))).isoformat()
                    path = target.stage(f"events/date={stamp}/part-{export_id}.parquet")
                    writer = pq.ParquetWriter(path, EVENTS_SCHEMA, **_PARQUET_OPTIONS)
                    current = int(day)
                assert writer is not None
                writer.write_batch(_conform(rows, EVENTS_SCHEMA))
                count += rows.num_rows
    finally:
        if writer is not None:
            writer.close()
    return count


def _write_token_usage(
    con: duckdb.DuckDBPyConnection, target: ExportDir, ranges: list[_Range], since: datetime | None, export_id: str
) -> int:
    if not ranges:
        return 0
    join, params = _range_join(ranges)
    done = f"SELECT DISTINCT e.session_id, e.turn_id FROM events e {join} WHERE e.type = 'done'"
    if since is not None:
        done += " AND e.timestamp >= ?"
        params.append(since)
    has_turns = bool(con.execute("SELECT 1 FROM duckdb_views() WHERE view_name = 'turns' AND NOT internal").fetchall())
    cost = "t.cost" if has_turns else "NULL::DOUBLE"
    turns_join = "LEFT JOIN turns t ON t.session_id = u.session_id AND t.turn_id = u.turn_id" if has_turns else ""
    columns = ", ".join(f"u.{c}" for c in TOKEN_USAGE_SCHEMA.names[:-1])
    sql = (
        f"SELECT {columns}, {cost} AS turn_cost FROM token_usage u "
        f"JOIN ({done}) d ON d.session_id = u.session_id AND d.turn_id = u.turn_id {turns_join} "
        "ORDER BY u.session_id, u.updated_at, u.turn_id"
    )
    table = con.sql(sql, params=params).to_arrow_table()
    if table.num_rows == 0:
        return 0
    path = target.stage(f"token_usage/part-{export_id}.parquet")
    pq.write_table(_conform(table, TOKEN_USAGE_SCHEMA), path, **_PARQUET_OPTIONS)
    return int(table.num_rows)


def _write_sessions(
    con: duckdb.DuckDBPyConnection,
    target: ExportDir,
    manifest: Manifest,
    since: datetime | None,
    session_id: str | None,
) -> int:
    """Write a new sessions snapshot when a session's row changed since it was last exported
    (or was never exported): earlier rows, with those sessions' rows replaced."""
    columns = ", ".join(
        f"{c}::VARCHAR AS {c}" if c in ("failure", "acp_caps") else c for c in SESSIONS_SCHEMA.names
    )
    sql = f"SELECT {columns}, epoch_us(updated_at) AS updated_us FROM sessions"
    params: list[Any] = []
    if session_id is not None:
        sql += " WHERE id = ?"
        params.append(session_id)
    elif since is not None:
        sql += " WHERE updated_at >= ?"
        params.append(since)
    rows = con.sql(sql + " ORDER BY created_at, id", params=params).to_arrow_table()
    ids, stamps = rows.column("id").to_pylist(), rows.column("updated_us").to_pylist()
    changed = [manifest.sessions.get(i, {}).get("updated_us") != u for i, u in zip(ids, stamps, strict=True)]
    fresh = _conform(rows.filter(pa.array(changed, pa.bool_())), SESSIONS_SCHEMA)
    if fresh.num_rows == 0:
        return 0
    existing = target.root / SESSIONS_FILE
    if existing.exists():
        old = pq.read_table(existing, schema=SESSIONS_SCHEMA)
        keep = pc.invert(pc.is_in(old.column("id"), value_set=fresh.column("id")))
        merged = pa.concat_tables([old.filter(keep), fresh])
        snapshot = merged.take(pc.sort_indices(merged, sort_keys=[("created_at", "ascending"), ("id", "ascending")]))
    else:
        snapshot = fresh
    pq.write_table(snapshot, target.stage(SESSIONS_FILE), **_PARQUET_OPTIONS)
    for sid, stamp, is_new in zip(ids, stamps, changed, strict=True):
        if is_new:
            manifest.sessions.setdefault(sid, {"sequence": 0})["updated_us"] = stamp
    return int(fresh.num_rows)


def _conform(data: pa.Table | pa.RecordBatch, schema: pa.Schema) -> Any:
    """Select and cast ``data`` to ``schema`` (DuckDB's time zone name and JSON type differ)."""
    arrays = [data.column(name).cast(field.type) for name, field in zip(schema.names, schema, strict=True)]
    if isinstance(data, pa.RecordBatch):
        return pa.RecordBatch.from_arrays(arrays, schema=schema)
    return pa.Table.from_arrays(arrays, schema=schema)


def _arrow_reader(relation: duckdb.DuckDBPyRelation, rows: int) -> pa.RecordBatchReader:
    # DuckDB 1.4 names it to_arrow_reader; older releases only fetch_record_batch.
    method = getattr(relation, "to_arrow_reader", None) or relation.fetch_record_batch
    reader: pa.RecordBatchReader = method(rows)
    return reader


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
