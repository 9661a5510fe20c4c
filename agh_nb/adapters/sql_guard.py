"""The user SQL surface's guard: one query at a time, and a clear line when DuckDB says no.

Owns: ``check_query`` (before a query runs) and ``refusal`` (after DuckDB refused one), both used
by ``user_sql``. Must not import core.session, runtime or kernel.

What keeps user SQL harmless is DuckDB itself, not this module (``DuckDBStore.open`` and
``user_sql.run_user_query``): the database instance runs with ``enable_external_access = false`` and
``lock_configuration = true`` (no file, URL, extension, ATTACH, COPY or setting is reachable,
whatever the query says), and every user query runs on its own cursor inside a ``READ ONLY``
transaction that is rolled back (a write fails in DuckDB's transaction manager). This guard only:

- splits the text with DuckDB's own parser: exactly one statement, and it must be a query
  (``SELECT``, ``FROM``-first, ``VALUES``, ``SHOW``, ``DESCRIBE``, ``SUMMARIZE``). This one is
  load-bearing: DuckDB runs ``CHECKPOINT``, ``FORCE CHECKPOINT`` (which aborts other
  transactions: the writer's) and ``VACUUM`` inside a read-only transaction;
- refuses the few table functions the sandbox lets through that are not questions about the
  store: ``checkpoint()``/``force_checkpoint()`` (maintenance that holds up the writer's commits),
  ``query()``/``query_table()`` (SQL text assembled while the query runs, which this check cannot
  see), ``truncate_duckdb_logs()``, and the file readers (DuckDB refuses them anyway; this names
  the reason in words);
- turns DuckDB's refusals into one readable line (``refusal``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import duckdb

from agh_nb.errors import QueryError

NOT_QUESTIONS = frozenset(
    {"checkpoint", "force_checkpoint", "query", "query_table", "json_execute_serialized_sql", "truncate_duckdb_logs"}
)
"""Table functions refused by name: maintenance, and SQL built at run time."""
FILE_READERS = frozenset(
    {
        "read_csv", "read_csv_auto", "read_single_csv_file", "sniff_csv", "read_json", "read_json_auto",
        "read_json_objects", "read_json_objects_auto", "read_ndjson", "read_ndjson_auto",
        "read_ndjson_objects", "read_single_json_file", "read_parquet", "parquet_scan",
        "read_single_parquet_file", "parquet_metadata", "parquet_schema", "parquet_file_metadata",
        "parquet_kv_metadata", "parquet_full_metadata", "parquet_bloom_probe", "parquet_page_index",
        "read_text", "read_blob", "read_duckdb", "glob",
    }
)
"""Table functions that read files: DuckDB's sandbox refuses them; the guard says why in words."""
NO_FILES = (
    "files, URLs, extensions, ATTACH and settings are not reachable from agh_nb's SQL: "
    "query the store's tables and views (sessions, events, token_usage, ...)"
)
READ_ONLY = "agh_nb's SQL is read-only: ask with SELECT; nothing in the store can be changed from here"


def check_query(con: duckdb.DuckDBPyConnection, query: str) -> duckdb.Statement:
    """Return the single query statement of ``query``, or raise a one-line ``QueryError``.

    Args:
        con: a cursor of the store (used only to ask DuckDB for the parse tree).
        query: the user's SQL text.

    Returns:
        The parsed statement, to be executed as it is (no second parse of the text).

    Raises:
        QueryError: the text does not parse, holds more or fewer than one statement, is not a
            query, or calls a table function refused here.
    """
    if not isinstance(query, str) or not query.strip():
        raise QueryError("the query is empty: write one SELECT over sessions, events or token_usage")
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise QueryError(_first_line(exc), query=query) from None
    if len(statements) != 1:
        raise QueryError("one SQL statement at a time, please (a single SELECT)", query=query)
    statement = statements[0]
    if statement.type == duckdb.StatementType.MULTI:  # PIVOT without IN first creates an ENUM type
        raise QueryError(
            "this PIVOT would create a type first: list its values (PIVOT events ON type IN ('done', 'error') ...)",
            query=query,
        )
    if statement.type != duckdb.StatementType.SELECT:
        raise QueryError(f"only SELECT queries are allowed here, not {statement.type.name}: {READ_ONLY}", query=query)
    try:
        row = con.execute("SELECT json_serialize_sql(?)", [query]).fetchone()
    except duckdb.Error as exc:
        raise QueryError(_first_line(exc), query=query) from None
    tree = json.loads(row[0]) if row else {"error": True}
    if tree.get("error"):
        message = str(tree.get("error_message") or "this query cannot be checked")
        raise QueryError(f"{message}; write a plain SELECT", query=query)
    for node in _walk(tree):
        if isinstance(node, dict) and node.get("type") == "TABLE_FUNCTION":
            function = str((node.get("function") or {}).get("function_name", "")).lower()
            if function in FILE_READERS:
                raise QueryError(f"{function}() reads files: {NO_FILES}", query=query)
            if function in NOT_QUESTIONS:
                raise QueryError(
                    f"table function {function}() is not allowed here: agh_nb's SQL asks questions about the store",
                    query=query,
                )
    return statement


def refusal(exc: duckdb.Error) -> str:
    """One line saying why DuckDB refused a user query (the sandbox's own errors in words)."""
    text = _first_line(exc)
    if isinstance(exc, duckdb.PermissionException):
        return f"{NO_FILES} (DuckDB: {text})"
    if isinstance(exc, duckdb.TransactionException) and "read-only" in text:
        return READ_ONLY
    if "configuration has been locked" in text:
        return f"settings cannot be changed from agh_nb's SQL (DuckDB: {text})"
    return text


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _walk(value: Any) -> Iterator[Any]:
    stack = [value]
    while stack:
        item = stack.pop()
        yield item
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
