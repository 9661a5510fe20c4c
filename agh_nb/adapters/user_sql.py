"""Running one user SQL query on the store: read-only, bounded in time and size, one line on error.

Owns: ``run_user_query`` and its limits (``QUERY_TIMEOUT``, ``RESULT_MAX_BYTES``). Must not import
core.session, runtime or kernel.

What keeps a query harmless is DuckDB: the store's instance runs with external access off and its
configuration locked (``duckdb_store.SANDBOX_CONFIG``), and here each query gets a cursor of its
own inside a ``READ ONLY`` transaction that is always rolled back (a write fails in DuckDB's
transaction manager, whatever the text says). ``sql_guard`` takes exactly one query statement and
words DuckDB's refusals. Read-only transactions never conflict with the writer's, and an
interrupted or failed query leaves nothing open behind it.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from agh_nb.adapters.sql_guard import check_query, refusal
from agh_nb.errors import QueryError, StoreError

if TYPE_CHECKING:
    import pandas

QUERY_TIMEOUT = 120.0
"""Seconds a user query may run before it is interrupted: a runaway query otherwise holds a
thread (a server worker, for HTTP) and keeps DuckDB from checkpointing for as long as it runs."""
RESULT_MAX_BYTES = 512 * 1024 * 1024
"""The largest user query result, in Arrow bytes: ``SELECT * FROM range(1e12)`` must not take the
host's memory (the DataFrame made from it costs about as much again)."""
_RESULT_BATCH_ROWS = 65536


def run_user_query(
    cur: duckdb.DuckDBPyConnection,
    query: str,
    *,
    timeout: float | None = QUERY_TIMEOUT,
    max_bytes: int = RESULT_MAX_BYTES,
) -> pandas.DataFrame:
    """Run ``query`` on ``cur`` (a fresh cursor of the store, closed here) and return a DataFrame.

    Args:
        cur: a cursor of its own; this function closes it.
        query: the user's text: one query (SELECT, FROM-first, VALUES, SHOW, DESCRIBE, SUMMARIZE).
        timeout: seconds after which the query is interrupted (None: never).
        max_bytes: the largest result (Arrow bytes) returned; a larger one is refused.

    Raises:
        QueryError: refused by the guard or by DuckDB (one line), interrupted at ``timeout``,
            larger than ``max_bytes``, or not showable as a DataFrame.
        StoreError: DuckDB failed internally (the store, not the query).
    """
    interrupted = threading.Event()

    def interrupt() -> None:
        interrupted.set()
        cur.interrupt()

    timer = threading.Timer(timeout, interrupt) if timeout is not None else None
    try:
        statement = check_query(cur, query)
        cur.execute("BEGIN TRANSACTION READ ONLY")
        if timer is not None:
            timer.daemon = True
            timer.start()
        relation = cur.sql(statement)
        table = _collect(relation, max_bytes, query) if relation is not None else None
    except (duckdb.InternalException, duckdb.FatalException) as exc:
        raise StoreError(f"the agh_nb store failed: {_first_line(exc)}", query=query) from exc
    except (duckdb.Error, OSError, pa.ArrowException) as exc:
        # OSError/ArrowException: an error raised while Arrow pulled the result's batches.
        if interrupted.is_set():
            raise QueryError(
                f"the query ran longer than {timeout:g} s and was stopped: narrow it (WHERE, LIMIT)",
                query=query,
            ) from None
        message = refusal(exc) if isinstance(exc, duckdb.Error) else _first_line(exc)
        raise QueryError(message, query=query) from None
    finally:
        if timer is not None:
            timer.cancel()
        with contextlib.suppress(duckdb.Error):
            cur.execute("ROLLBACK")
        cur.close()
    if table is None:
        import pandas

        return pandas.DataFrame()
    try:
        return table.to_pandas()
    except (ValueError, TypeError, NotImplementedError, pa.ArrowException) as exc:
        # A value pandas cannot hold (a date past year 9999, a UNION): name it, no traceback.
        raise QueryError(
            f"the result cannot be shown as a DataFrame ({type(exc).__name__}: {_first_line(exc)}); "
            "cast that column to VARCHAR in the query",
            query=query,
        ) from exc


def _collect(relation: duckdb.DuckDBPyRelation, max_bytes: int, query: str) -> pa.Table:
    """Pull a result batch by batch, refusing it once it grows past ``max_bytes``."""
    reader = relation.to_arrow_reader(_RESULT_BATCH_ROWS)
    batches: list[pa.RecordBatch] = []
    size = 0
    for batch in reader:
        size += batch.nbytes
        if size > max_bytes:
            raise QueryError(
                f"the result is larger than {max_bytes // (1 << 20)} MiB: select fewer columns or rows "
                "(WHERE, LIMIT) or aggregate",
                query=query,
            )
        batches.append(batch)
    return pa.Table.from_batches(batches, schema=reader.schema)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
