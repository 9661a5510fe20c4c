"""The DuckDB schema of the agh_nb store and the conversions between its rows and our values.

Owns: the DDL of ``sessions``, ``events`` and ``token_usage``, the SQL statements the store runs,
the Arrow schema of an event batch, and row <-> ``Event``/``SessionRecord`` conversion.
Imports pyarrow and duckdb (for the insert helper); must not import core.session, runtime or kernel.

Design notes (measured with ``benchmarks/store_throughput.py``):

* ``events`` has no PRIMARY KEY. Uniqueness of ``(session_id, sequence)`` holds by construction:
  one writer process (the DuckDB file lock), one writer thread, and sequences assigned in memory
  from the stored maximum. A PRIMARY KEY (an ART index) cost 20-30% of insert throughput at
  1k-5k row batches and grows with the table, and it buys nothing DuckDB's zone maps do not
  already give the per-session scans.
* ``content`` is DuckDB ``JSON`` so users can use ``->>`` in SQL; the cast validates it once.
* Timestamps are read back as ``epoch_us(...)`` so reading never depends on pytz or on the
  connection's ``TimeZone``.
* ``events`` also stores a few fields of ``content`` as plain columns (``derived_columns``),
  filled when a row is queued: the analytical views (``duckdb_views``) group and filter on them
  instead of parsing ``content``. Parsing the JSON costs about 0.5 us per row and reading
  ``content`` at all (the raw ACP payload doubles it) dominates any query over millions of
  events; a plain column of chunk text reads a tenth of the bytes (benchmarks/analytics.py).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import duckdb
import pyarrow as pa

from agh_nb.adapters.derived_columns import DERIVED_COLUMNS
from agh_nb.core.record import SessionRecord
from agh_nb.events import JSON, Event, EventQuery, dumps

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_US = timedelta(microseconds=1)

DDL: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS sessions (
        id VARCHAR PRIMARY KEY,
        name VARCHAR,
        agent_name VARCHAR NOT NULL,
        type VARCHAR NOT NULL,
        workspace_id VARCHAR NOT NULL,
        workspace_path VARCHAR NOT NULL,
        permissions VARCHAR NOT NULL,
        state VARCHAR NOT NULL,
        stop_reason VARCHAR,
        stop_detail VARCHAR,
        failure JSON,
        failure_kind VARCHAR,
        acp_session_id VARCHAR,
        acp_caps JSON,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL,
        host_pid BIGINT,
        last_presence_at TIMESTAMPTZ,
        parent_id VARCHAR,
        acp_state JSON,
        failure_code BIGINT,
        sandboxed BOOLEAN
    )
    """,
    # Stores created before the heartbeat existed get its column.
    "ALTER TABLE sessions ADD COLUMN IF NOT EXISTS last_presence_at TIMESTAMPTZ",
    # ... and before fork lineage and the agent's modes/models/commands (issue 10).
    "ALTER TABLE sessions ADD COLUMN IF NOT EXISTS parent_id VARCHAR",
    "ALTER TABLE sessions ADD COLUMN IF NOT EXISTS acp_state JSON",
    "ALTER TABLE sessions ADD COLUMN IF NOT EXISTS failure_code BIGINT",
    # Stores created before the sandbox existed (issue 11): their sessions ran unconfined.
    "ALTER TABLE sessions ADD COLUMN IF NOT EXISTS sandboxed BOOLEAN",
    """
    CREATE TABLE IF NOT EXISTS events (
        id VARCHAR NOT NULL,
        session_id VARCHAR NOT NULL,
        sequence BIGINT NOT NULL,
        turn_id VARCHAR,
        type VARCHAR NOT NULL,
        agent_name VARCHAR NOT NULL,
        workspace_id VARCHAR NOT NULL,
        workspace_path VARCHAR NOT NULL,
        content JSON NOT NULL,
        timestamp TIMESTAMPTZ NOT NULL,
        text VARCHAR,
        tool_call_id VARCHAR,
        tool_name VARCHAR,
        title VARCHAR,
        status VARCHAR,
        message_seq BIGINT
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS token_usage (
        session_id VARCHAR NOT NULL,
        turn_id VARCHAR NOT NULL,
        agent_name VARCHAR,
        input_tokens BIGINT,
        output_tokens BIGINT,
        thought_tokens BIGINT,
        cached_read_tokens BIGINT,
        cached_write_tokens BIGINT,
        total_tokens BIGINT,
        context_used BIGINT,
        context_size BIGINT,
        cost_amount DOUBLE,
        cost_currency VARCHAR,
        updated_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (session_id, turn_id)
    )
    """,
)

EVENT_COLUMNS: tuple[str, ...] = (
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
)

STORED_EVENT_COLUMNS: tuple[str, ...] = EVENT_COLUMNS + DERIVED_COLUMNS
"""Every column of ``events``, in the order ``CREATE TABLE events`` declares them."""

EVENT_BATCH_SCHEMA = pa.schema(
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
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("text", pa.string()),
        ("tool_call_id", pa.string()),
        ("tool_name", pa.string()),
        ("title", pa.string()),
        ("status", pa.string()),
        ("message_seq", pa.int64()),
    ]
)

_TIMESTAMP_INDEX = EVENT_COLUMNS.index("timestamp")
assert _TIMESTAMP_INDEX == 9, "EventRow puts the timestamp tenth"
_PLAIN_TYPES = [f.type for i, f in enumerate(EVENT_BATCH_SCHEMA) if i != _TIMESTAMP_INDEX]
_TIMESTAMP_TYPE = EVENT_BATCH_SCHEMA.field("timestamp").type

STAGE_ALIASES = ("stage0", "stage1")
"""The names the store's two stage files are attached under (``duckdb_stage``)."""
STAGE_TABLES = tuple(f"{alias}.events" for alias in STAGE_ALIASES)
"""Where the writer commits new events, one file at a time: ``events``' columns, in its order,
then ``stage_id``. Batches go in with ``insert_into``, by position: ``EVENT_BATCH_SCHEMA`` lists
the columns in the order ``CREATE TABLE events`` declares them (``STORED_EVENT_COLUMNS``)."""
_EVENTS_DDL = next(s for s in DDL if "CREATE TABLE IF NOT EXISTS events (" in s)


def stage_ddl(slot: int) -> str:
    """``CREATE TABLE`` of a stage file's table: ``events``' columns, then ``stage_id`` (one per
    row, counting up from 1 in commit order across both files)."""
    return (
        _EVENTS_DDL.replace("events (", f"{STAGE_TABLES[slot]} (", 1).rstrip().removesuffix(")").rstrip()
        + ",\n        stage_id BIGINT NOT NULL\n    )"
    )

SESSION_COLUMNS: tuple[str, ...] = (
    "id",
    "name",
    "agent_name",
    "type",
    "workspace_id",
    "workspace_path",
    "permissions",
    "state",
    "stop_reason",
    "stop_detail",
    "failure",
    "failure_kind",
    "acp_session_id",
    "acp_caps",
    "created_at",
    "updated_at",
    "host_pid",
    "last_presence_at",
    "parent_id",
    "acp_state",
    "failure_code",
    "sandboxed",
)
_SESSION_TIMES = ("created_at", "updated_at", "last_presence_at")
UPSERT_SESSION = (
    f"INSERT OR REPLACE INTO sessions ({', '.join(SESSION_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in SESSION_COLUMNS)})"
)
_SESSION_SELECT = ", ".join(
    f"epoch_us({c})" if c in _SESSION_TIMES else c for c in SESSION_COLUMNS
)
SELECT_SESSION = f"SELECT {_SESSION_SELECT} FROM sessions WHERE id = ?"
SELECT_SESSIONS = f"SELECT {_SESSION_SELECT} FROM sessions ORDER BY created_at, id"

MAX_SEQUENCE = "SELECT coalesce(max(sequence), 0) FROM events WHERE session_id = ?"

_EVENT_SELECT = ", ".join(EVENT_COLUMNS[:-1]) + ", epoch_us(timestamp) AS ts_us"
# The oldest ``?`` events of a session after a sequence: one page of a subscriber's backlog.
BACKLOG_PAGE = (
    f"SELECT {_EVENT_SELECT} FROM events WHERE session_id = ? AND sequence > ? "
    "ORDER BY sequence LIMIT ?"
)

USAGE_COLUMNS: tuple[str, ...] = (
    "input_tokens",
    "output_tokens",
    "thought_tokens",
    "cached_read_tokens",
    "cached_write_tokens",
    "total_tokens",
    "context_used",
    "context_size",
    "cost_amount",
    "cost_currency",
)
MERGE_USAGE = (
    "INSERT INTO token_usage (session_id, turn_id, agent_name, "
    f"{', '.join(USAGE_COLUMNS)}, updated_at) "
    "SELECT ?, ?, (SELECT agent_name FROM sessions WHERE id = ?), "
    f"{', '.join('?' for _ in USAGE_COLUMNS)}, ? "
    "ON CONFLICT (session_id, turn_id) DO UPDATE SET "
    "agent_name = coalesce(excluded.agent_name, token_usage.agent_name), "
    + ", ".join(f"{c} = coalesce(excluded.{c}, token_usage.{c})" for c in USAGE_COLUMNS)
    + ", updated_at = excluded.updated_at"
)

# ACP spells usage fields in camelCase on the wire and snake_case in the SDK's models; both are
# accepted. ``used``/``size`` come from a ``usage_update`` (context window), ``cost`` likewise.
_USAGE_ALIASES: dict[str, str] = {
    "input_tokens": "input_tokens",
    "inputTokens": "input_tokens",
    "output_tokens": "output_tokens",
    "outputTokens": "output_tokens",
    "thought_tokens": "thought_tokens",
    "thoughtTokens": "thought_tokens",
    "cached_read_tokens": "cached_read_tokens",
    "cachedReadTokens": "cached_read_tokens",
    "cached_write_tokens": "cached_write_tokens",
    "cachedWriteTokens": "cached_write_tokens",
    "total_tokens": "total_tokens",
    "totalTokens": "total_tokens",
    "used": "context_used",
    "context_used": "context_used",
    "size": "context_size",
    "context_size": "context_size",
    "cost_amount": "cost_amount",
    "cost_currency": "cost_currency",
}


def usage_values(usage: Mapping[str, Any]) -> dict[str, Any]:
    """Map a usage report (PromptResponse.usage and/or usage_update) to ``token_usage`` columns.

    Args:
        usage: keys such as ``input_tokens`` (or ``inputTokens``), ``used``, ``size`` and
            ``cost: {amount, currency}``; unknown keys are ignored.

    Returns:
        Every column of ``USAGE_COLUMNS``, None where the report says nothing.
    """
    values: dict[str, Any] = dict.fromkeys(USAGE_COLUMNS)
    for key, value in usage.items():
        column = _USAGE_ALIASES.get(key)
        if column == "cost_amount":
            values[column] = _amount(value)
        elif column == "cost_currency":
            values[column] = str(value)[:64] if value is not None else None
        elif column is not None:
            values[column] = _bigint(value)
    cost = usage.get("cost")
    if isinstance(cost, Mapping):
        if cost.get("amount") is not None:
            values["cost_amount"] = _amount(cost["amount"])
        if cost.get("currency") is not None:
            values["cost_currency"] = str(cost["currency"])[:64]
    return values


def _amount(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


_BIGINT_MAX = 2**63 - 1


def _bigint(value: Any) -> int | None:
    # What an agent reports is only stored when a BIGINT column can hold it: a count past 2^63,
    # a float or a string would fail the commit, and with it every session's writes.
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and -_BIGINT_MAX - 1 <= value <= _BIGINT_MAX:
        return value
    return None


def session_params(record: SessionRecord) -> list[Any]:
    """Return the ``UPSERT_SESSION`` parameters for ``record``.

    Text is scrubbed of lone surrogates (a workspace path that is not UTF-8, a name sent as
    ``"\\ud800"``): DuckDB refuses them, and one refused row would fail the writer for good.
    """
    return [_scrub(value) for value in _session_values(record)]


def _session_values(record: SessionRecord) -> list[Any]:
    return [
        record.id,
        record.name,
        record.agent_name,
        record.type,
        record.workspace_id,
        record.workspace_path,
        record.permissions,
        record.state.value,
        record.stop_reason.value if record.stop_reason else None,
        record.stop_detail,
        dumps(record.failure.to_dict()) if record.failure else None,
        record.failure.kind.value if record.failure else None,
        record.acp_session_id,
        dumps(record.acp_caps),
        _aware(record.created_at),
        _aware(record.updated_at),
        record.host_pid,
        _aware(record.last_presence_at) if record.last_presence_at else None,
        record.parent_id,
        dumps(record.acp_state),
        record.failure.code if record.failure else None,
        record.sandboxed,
    ]


def session_from_row(row: Sequence[Any]) -> SessionRecord:
    """Rebuild a ``SessionRecord`` from a ``SELECT_SESSION(S)`` row."""
    data = dict(zip(SESSION_COLUMNS, row, strict=True))
    data["failure"] = json.loads(data["failure"]) if data["failure"] else None
    data["acp_caps"] = json.loads(data["acp_caps"]) if data["acp_caps"] else {}
    data["acp_state"] = json.loads(data["acp_state"]) if data["acp_state"] else {}
    for column in _SESSION_TIMES:
        if data[column] is not None:
            data[column] = from_epoch_us(data[column])
    del data["failure_kind"], data["failure_code"]  # both are in ``failure`` already
    return SessionRecord.from_dict(data)


EventRow = tuple[
    str, str, int, str | None, str, str, str, str, str, datetime,
    str | None, str | None, str | None, str | None, str | None, int | None,
]
"""One event as the writer queues it: the ``events`` columns in order (``STORED_EVENT_COLUMNS``),
``content`` as JSON text, then the derived columns.

A tuple of strings, numbers and a datetime holds no reference the garbage collector tracks, so a
backlog of rows waiting for their commit costs collections nothing (dicts would)."""


def event_from_queued(row: EventRow, content: JSON | None = None) -> Event:
    """The ``Event`` of a queued row: ``content`` when given, else decoded from the row's text
    when first read (a subscriber that only frames the row never decodes it)."""
    if content is None:
        return Event.stored((row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7]), row[8], row[9])
    return Event(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], content, row[9], row[8])


def event_batch_table(rows: Sequence[EventRow]) -> pa.Table:
    """Build the Arrow table of one group commit (``events``' columns)."""
    columns = list(zip(*rows, strict=True))
    stamps = columns.pop(_TIMESTAMP_INDEX)
    arrays = [_array(list(values), t) for values, t in zip(columns, _PLAIN_TYPES, strict=True)]
    # Timestamps go in as epoch microseconds: pyarrow's datetime conversion imports pandas on
    # first use (half a second on the writer thread) and this is faster anyway.
    try:
        micros = [(ts - EPOCH) // _ONE_US for ts in stamps]
    except TypeError:  # a naive datetime: taken as UTC
        micros = [(_aware(ts) - EPOCH) // _ONE_US for ts in stamps]
    arrays.insert(_TIMESTAMP_INDEX, pa.array(micros, pa.int64()).view(_TIMESTAMP_TYPE))
    return pa.Table.from_arrays(arrays, schema=EVENT_BATCH_SCHEMA)


SMALL_BATCH = 16
"""Up to this many rows, one multi-row ``VALUES`` insert costs DuckDB less than an Arrow scan
(about 1.7 against 3.7 ms of CPU per commit here): the common case of a slowly streaming agent,
where every commit holds a few events."""


@functools.lru_cache(maxsize=2 * SMALL_BATCH)
def _values_insert(rows: int, slot: int) -> str:
    one = "(" + ", ".join("?" for _ in range(len(STORED_EVENT_COLUMNS) + 1)) + ")"
    columns = ", ".join((*STORED_EVENT_COLUMNS, "stage_id"))
    return f"INSERT INTO {STAGE_TABLES[slot]} ({columns}) VALUES " + ", ".join([one] * rows)


def stage_events(cur: duckdb.DuckDBPyConnection, rows: Sequence[EventRow], first_id: int, slot: int) -> None:
    """Insert one commit's rows into stage file ``slot``, numbered from ``first_id`` (in the
    cursor's current transaction, if any)."""
    if len(rows) > SMALL_BATCH:
        table = event_batch_table(rows)
        ids = pa.array(range(first_id, first_id + len(rows)), pa.int64())
        cur.from_arrow(table.append_column("stage_id", ids)).insert_into(STAGE_TABLES[slot])
        return
    params: list[Any] = []
    for stage_id, row in enumerate(rows, first_id):
        params.extend(row[:9])
        params.append(_aware(row[9]))  # the timestamp (_TIMESTAMP_INDEX), naive taken as UTC
        params.extend(row[10:])
        params.append(stage_id)
    try:
        cur.execute(_values_insert(len(rows), slot), params)
    except duckdb.InvalidInputException as exc:
        if "surrogate" not in str(exc):
            raise
        # As in the Arrow path: a lone surrogate is replaced rather than failing the commit.
        cur.execute(_values_insert(len(rows), slot), [_scrub(v) for v in params])


def warm_up() -> None:
    """Run one tiny batch conversion so pyarrow's lazy imports happen before the first commit."""
    pa.array(["warm"], pa.string())


def _array(values: list[Any], type_: pa.DataType) -> pa.Array:
    try:
        return pa.array(values, type=type_)
    except UnicodeEncodeError:
        # A lone surrogate (a non-UTF-8 path, a "\ud800" escape in an agent's JSON) cannot be
        # stored as UTF-8; one such string must not fail the whole commit, so it is replaced.
        return pa.array([_scrub(v) for v in values], type=type_)


def _scrub(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def events_select(session_id: str, query: EventQuery) -> tuple[str, list[Any]]:
    """Build the SQL and parameters returning the events of ``query``, ascending by sequence."""
    where = ["session_id = ?"]
    params: list[Any] = [session_id]
    if query.types:
        where.append(f"type IN ({', '.join('?' for _ in query.types)})")
        params.extend(str(t) for t in query.types)
    if query.agent_name is not None:
        where.append("agent_name = ?")
        params.append(query.agent_name)
    if query.turn_id is not None:
        where.append("turn_id = ?")
        params.append(query.turn_id)
    if query.since is not None:
        where.append("timestamp >= ?")
        params.append(_aware(query.since))
    if query.after_sequence is not None:
        where.append("sequence > ?")
        params.append(query.after_sequence)
    sql = f"SELECT {_EVENT_SELECT} FROM events WHERE {' AND '.join(where)}"
    if query.limit is not None:
        sql = f"SELECT * FROM ({sql} ORDER BY sequence DESC LIMIT ?) ORDER BY sequence"
        params.append(max(query.limit, 0))
    else:
        sql += " ORDER BY sequence"
    return sql, params


def event_from_row(row: Sequence[Any]) -> Event:
    """Rebuild an ``Event`` from an ``events_select`` or ``BACKLOG_PAGE`` row (``content`` is
    decoded when first read)."""
    return Event.stored(
        (row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7]), row[8], from_epoch_us(row[9])
    )


def from_epoch_us(micros: int) -> datetime:
    """Return the aware UTC datetime ``micros`` microseconds after the epoch (exact)."""
    return EPOCH + timedelta(microseconds=micros)


def _aware(ts: datetime) -> datetime:
    # A naive datetime is taken as UTC (the SPEC's only zone), never as the machine's local time.
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=timezone.utc)
