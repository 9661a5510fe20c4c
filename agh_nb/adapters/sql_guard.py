"""The user SQL surface's guard: questions about the store, nothing else.

Owns: ``check_query``. ``%%agh sql`` runs inside the host that owns the store and the vault, so a
query must not read files (``read_text``, ``'/path.csv'``), attach databases, change settings or
read the environment (the vault key may live in ``AGH_VAULT_KEY``). A query is allowed when it
is a single SELECT whose tables are the store's own (or CTEs, or catalog views) and whose table
functions are on a short allowlist. DuckDB's own parser decides (``json_serialize_sql``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import duckdb

from agh_nb.adapters.duckdb_views import VIEW_NAMES
from agh_nb.errors import QueryError

STORE_TABLES = frozenset({"sessions", "events", "token_usage"}) | VIEW_NAMES  # views: duckdb_views
# The standard catalog views, by name: any other "information_schema.<name>" would make DuckDB
# fall back to reading a file of that name. (pg_catalog is left out: pg_settings shows paths.)
CATALOG_VIEWS = frozenset(
    {
        "character_sets", "check_constraints", "columns", "constraint_column_usage",
        "constraint_table_usage", "key_column_usage", "referential_constraints", "schemata",
        "tables", "table_constraints", "views",
    }
)
TABLE_FUNCTIONS = frozenset(
    {"range", "generate_series", "unnest", "duckdb_tables", "duckdb_columns", "duckdb_views", "json_each", "json_tree"}
)
DENIED_FUNCTIONS = frozenset({"getenv", "current_setting", "read_blob", "read_text"})


def check_query(con: duckdb.DuckDBPyConnection, query: str) -> None:
    """Raise ``QueryError`` (one line) unless ``query`` is a single read-only question about the store."""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise QueryError(str(exc).splitlines()[0]) from None
    if len(statements) != 1:
        raise QueryError("one SQL statement at a time, please (a single SELECT)")
    if statements[0].type != duckdb.StatementType.SELECT:
        raise QueryError(
            f"only SELECT queries are allowed here, not {statements[0].type.name}: the SQL surface is read-only"
        )
    row = con.execute("SELECT json_serialize_sql(?)", [query]).fetchone()
    tree = json.loads(row[0]) if row else {"error": True}
    if tree.get("error"):
        raise QueryError(str(tree.get("error_message") or "this query cannot be checked; write a plain SELECT"))
    database = str(con.execute("SELECT current_database()").fetchone()[0]).lower()  # type: ignore[index]
    ctes = {key for node in _walk(tree) if isinstance(node, dict) for key in _cte_names(node)}
    for node in _walk(tree):
        if not isinstance(node, dict):
            continue
        kind = node.get("type")
        if kind == "BASE_TABLE":
            catalog = str(node.get("catalog_name") or "").lower()
            schema = str(node.get("schema_name") or "").lower()
            name = str(node.get("table_name") or "")
            if catalog in ("", database) and (
                (schema in ("", "main") and name.lower() in STORE_TABLES)
                or (schema == "information_schema" and name.lower() in CATALOG_VIEWS)
                or (not catalog and not schema and name in ctes)
            ):
                continue
            raise QueryError(
                f"table {name!r} is not part of the store: query sessions, events, token_usage "
                "or a view (turns, tool_calls, messages, permission_requests, session_summary)"
            )
        if kind == "TABLE_FUNCTION":
            function = (node.get("function") or {}).get("function_name", "")
            if str(function).lower() not in TABLE_FUNCTIONS:
                raise QueryError(f"table function {function}() is not allowed here: the SQL surface reads only the store")
        if node.get("class") == "FUNCTION" and str(node.get("function_name", "")).lower() in DENIED_FUNCTIONS:
            raise QueryError(f"function {node['function_name']}() is not allowed here")


def _cte_names(node: dict[str, Any]) -> Iterator[str]:
    cte_map = node.get("cte_map")
    if isinstance(cte_map, dict):
        for entry in cte_map.get("map") or []:
            if isinstance(entry, dict) and entry.get("key"):
                yield str(entry["key"])


def _walk(value: Any) -> Iterator[Any]:
    stack = [value]
    while stack:
        item = stack.pop()
        yield item
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
