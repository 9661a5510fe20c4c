"""Malformed input over HTTP (issue 11) against a real Jupyter server: every caller mistake (deep
nesting, numbers out of range, other scripts' digits, lone surrogates, wrong types, hostile SQL)
is a one-line 4xx JSON error; nothing is a 500, nothing changes, and the server keeps working."""

from __future__ import annotations

import json
import urllib.parse

import pytest

from tests.server.harness import Server

BIG = "9" * 40
ARABIC = "\u0663\u0664"  # "34" in Arabic-Indic digits: int() and float() take them
DEVANAGARI = "\u0967"


def assert_refused(reply: object, status: int = 400) -> None:
    assert reply.status == status, reply.text[:300]  # type: ignore[attr-defined]
    assert reply.headers["content-type"].startswith("application/json"), reply.headers  # type: ignore[attr-defined]
    error = reply.body["error"]  # type: ignore[attr-defined]
    assert set(error) >= {"type", "message"} and "\n" not in error["message"], reply.text  # type: ignore[attr-defined]
    assert "Traceback" not in reply.text  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def sid(server: Server) -> str:
    session = server.create()["id"]
    server.prompt_and_wait(session, "hello")
    return session


@pytest.mark.parametrize(
    "query",
    [
        f"after_sequence={BIG}",
        f"limit={BIG}",
        f"after_sequence={ARABIC}",
        f"limit={ARABIC}",
        f"limit={DEVANAGARI}",
        "limit=1_000",
        "limit=%2B5",
        "limit=-1",
        "limit=0",
        "limit=1e3",
        "limit=0x10",
        "after_sequence=9223372036854775808",
        f"since={BIG}h",
        f"since={ARABIC}m",
        "since=1e400s",
        "since=0001-01-01T00:00:00%2B14:00",
        "since=9999-12-31T23:59:59-14:00",
        "type=%FF",
        "type=nonsense",
    ],
)
def test_bad_event_filters_are_400(server: Server, sid: str, query: str) -> None:
    name, _, value = query.partition("=")
    quoted = urllib.parse.quote(value, safe="%")  # other scripts' digits travel as UTF-8
    assert_refused(server.api("GET", f"/sessions/{sid}/events?{name}={quoted}"))


def test_bad_numbers_elsewhere_are_400(server: Server, sid: str) -> None:
    turn = server.ok("POST", f"/sessions/{sid}/prompt", {"text": "hi"}, status=202)["turn_id"]
    for wait in (ARABIC, "1e400", "nan", "inf", "-1", BIG, "1_0"):
        assert_refused(server.api("GET", f"/sessions/{sid}/turns/{turn}?wait={urllib.parse.quote(wait)}"))
    for header in (BIG, ARABIC, "-3", "1.5", "9223372036854775808"):
        # http.client sends str headers as latin-1; a real client sends other digits as UTF-8.
        value: str | bytes = header.encode() if not header.isascii() else header
        reply = server.api("GET", f"/sessions/{sid}/stream", headers={"Last-Event-ID": value})  # type: ignore[dict-item]
        assert_refused(reply)
    arabic = urllib.parse.quote(ARABIC)
    assert_refused(server.api("GET", f"/sessions/{sid}/stream?after_sequence={arabic}"))
    assert_refused(server.api("GET", f"/sessions/{sid}/stream?after_sequence={BIG}"))
    assert_refused(server.api("GET", "/sessions?include_health=maybe"))


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        pytest.param("/sql", b"[" * 100000, id="brackets-100000"),
        pytest.param("/sql", b'{"query": ' + b"[" * 100000 + b"]" * 100000 + b"}", id="deep-value-closed"),
        pytest.param("/sessions", b'{"agent": ' + b'{"a": ' * 60 + b"1" + b"}" * 60 + b"}", id="nested-objects-60"),
        pytest.param("/sql", b'{"query": ' + b"9" * 5000 + b"}", id="5000-digit-number"),
        pytest.param("/sql", b'{"query": 1e999}', id="infinite-number"),
        pytest.param("/sql", b'{"query": NaN}', id="nan"),
        pytest.param("/sql", b'{"query": "SELECT \\ud800"}', id="lone-surrogate-in-sql"),
        pytest.param("/sessions", b'{"agent": "demo-fast", "name": "\\udfff"}', id="lone-surrogate-in-name"),
        pytest.param("/sessions", b'{"agent": "demo-fast", "cwd": "\\ud800"}', id="lone-surrogate-in-cwd"),
        pytest.param("/sql", b"\xff\xfe\x00garbage", id="not-utf8"),
        pytest.param("/sql", b'"just a string"', id="not-an-object"),
        pytest.param("/sql", b'{"query": ["SELECT 1"]}', id="query-wrong-type"),
        pytest.param("/sql", b'{"query": null}', id="query-null"),
    ],
)
def test_malformed_bodies_are_400(server: Server, path: str, raw: bytes) -> None:
    before = server.ok("GET", "/sessions")["sessions"]
    assert_refused(server.api("POST", path, raw=raw))
    assert server.ok("GET", "/sessions")["sessions"] == before


def test_bad_bodies_on_a_session_are_400(server: Server, sid: str) -> None:
    before = server.events(sid)
    for path, raw in [
        ("/prompt", b'{"text": "hi \\ud800 there"}'),
        ("/prompt", b'{"text": ' + b"[" * 100000),
        ("/prompt", b'{"text": "hi", "interrupt": 1e999}'),
        ("/stop", b'{"detail": "\\udc00"}'),
        ("/approve", b'{"request_id": "\\ud800", "decision": "allow-once"}'),
    ]:
        assert_refused(server.api("POST", f"/sessions/{sid}{path}", raw=raw))
    assert server.events(sid) == before


def test_hostile_sql_is_a_400_query_error(server: Server, sid: str) -> None:
    key = server.home / "vault.key"
    server.ok("PUT", "/vault/" + urllib.parse.quote("vault:providers/x", safe=""), {"value": "v" * 20})
    assert key.exists()
    for query in (
        f"WITH x AS (SELECT 1) SELECT * FROM '{key}'",
        f"SELECT * FROM read_text('{key}')",
        f"SELECT * FROM read_csv('{server.home / 'vault' / 'vault.json'}')",
        f"ATTACH '{server.home / 'other.duckdb'}'",
        "SET enable_external_access = true",
        "DELETE FROM events",
        "SELECT * FROM range(1000000000000) a, range(2) b ORDER BY 1 LIMIT 1; SELECT 1",
    ):
        reply = server.api("POST", "/sql", {"query": query})
        assert_refused(reply)
        assert reply.error_type() == "QueryError", reply.text
        assert key.read_text().strip() not in reply.text
    rows = server.ok("POST", "/sql", {"query": f"SELECT count(*) AS n FROM events WHERE session_id = '{sid}'"})["rows"]
    assert rows[0][0] == len(server.events(sid))


def test_no_500_anywhere_and_the_server_still_works(server: Server, sid: str) -> None:
    # Runs last in this module: everything above was refused without a server error.
    log = server.log()
    assert " 500 " not in log and "Traceback" not in log, log[-3000:]
    done = server.prompt_and_wait(sid, "hello again")
    assert done["stop_reason"] == "end_turn"
    assert json.dumps(server.events(sid)[-1])
