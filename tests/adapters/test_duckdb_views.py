"""The analytical views (``turns``, ``tool_calls``, ``messages``, ``permission_requests``,
``session_summary``) on real DuckDB files: rows written through the store's own writer, in the
shapes the runtime writes (tests/core/golden, acp_mapping, the permission gate), and a store made
before the derived columns, migrated when opened."""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import pandas
import pytest

from agh_nb.adapters import duckdb_schema as schema
from agh_nb.adapters.duckdb_store import DuckDBStore
from agh_nb.adapters.derived_columns import DERIVED_COLUMNS
from agh_nb.adapters.duckdb_views import (
    CHAR_PLACES,
    CHUNKS_IN_ORDER,
    IN_SEQUENCE,
    SPACED_AT_CHUNKS,
    THOUGHT_IN_ORDER,
    VIEW_NAMES,
)
from agh_nb.core.record import SessionRecord
from agh_nb.core.state import SessionState
from agh_nb.events import EventDraft, EventType

GOLDEN = Path(__file__).resolve().parents[1] / "core" / "golden"
T0 = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)


def record(session_id: str = "sess_a", acp: str = "acp-1", agent: str = "demo") -> SessionRecord:
    return SessionRecord(
        id=session_id,
        name=session_id,
        agent_name=agent,
        type="user",
        workspace_id="ws_1",
        workspace_path="/ws",
        permissions="approve-reads",
        state=SessionState.ACTIVE,
        created_at=T0,
        updated_at=T0,
        acp_session_id=acp,
    )


class Writer:
    """Appends events to one session through the real store, one second apart."""

    def __init__(self, store: DuckDBStore, rec: SessionRecord) -> None:
        self.store = store
        self.record = rec
        self.clock = T0
        asyncio.run(store.save_session(rec))

    def __call__(self, type_: EventType, turn: str | None, at: float | None = None, **fields: Any) -> None:
        self.clock = T0 + timedelta(seconds=at) if at is not None else self.clock + timedelta(seconds=1)
        self.store.append(self.record, EventDraft(type_, turn, fields, self.clock))

    def acp(self, acp_session_id: str) -> None:
        self.record = self.record.replace(acp_session_id=acp_session_id)

    def flush(self) -> None:
        asyncio.run(self.store.flush())


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBStore]:
    with DuckDBStore.open(tmp_path / "agh.duckdb") as s:
        yield s


def clean(value: Any) -> Any:
    """A DataFrame cell as plain Python: NaN and NaT are None."""
    if value is pandas.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def rows(store: DuckDBStore, sql: str) -> list[dict[str, Any]]:
    frame = store.sql(sql)
    return [{c: clean(v) for c, v in zip(frame.columns, r, strict=True)} for r in frame.itertuples(index=False)]


def tool_update(call_id: str, status: str, **extra: Any) -> dict[str, Any]:
    raw = {"sessionUpdate": "tool_call_update", "toolCallId": call_id, "status": status} | extra
    return {"tool_call_id": call_id, "raw": raw}


# -- messages ----------------------------------------------------------------------------------


def test_messages_join_runs_of_chunks_per_type_and_turn(store: DuckDBStore) -> None:
    w = Writer(store, record())
    w(EventType.USER_MESSAGE, "t1", text="hello there")
    w(EventType.THOUGHT, "t1", text="The user wrote 2 word(s); I should answer briefly.")
    w(EventType.THOUGHT, "t1", text="Plan: look things up.")
    w(EventType.THOUGHT, "t1", text=" Then reply.")  # already spaced: kept as is
    w(EventType.AGENT_MESSAGE, "t1", text="You said: ")
    w(EventType.AGENT_MESSAGE, "t1", text="")  # empty chunk: neither ends nor starts a message
    w(EventType.AGENT_MESSAGE, "t1", text="“hello there”. ")
    w(EventType.THOUGHT, "t1", text="")  # an empty chunk of the other type ends nothing either
    w(EventType.AGENT_MESSAGE, "t1", text="Let me check.\n")
    w(EventType.TOOL_CALL, "t1", tool_call_id="c1", title="Read", tool_name="read")
    w(EventType.AGENT_MESSAGE, "t1", text="I found it.")  # after a tool call: a new message
    w(EventType.DONE, "t1", stop_reason="end_turn")
    w(EventType.AGENT_MESSAGE, "t2", text="un")  # a chunk of the next turn starts a new message
    w(EventType.AGENT_MESSAGE, "t2", text="der")
    w(EventType.AGENT_MESSAGE, "t2", text="stood")
    w.flush()
    got = rows(store, "SELECT turn_id, sequence, last_sequence, type, text, chunks FROM messages ORDER BY sequence")
    assert [(r["turn_id"], r["type"], r["text"], r["chunks"]) for r in got] == [
        ("t1", "user_message", "hello there", 1),
        ("t1", "thought", "The user wrote 2 word(s); I should answer briefly. Plan: look things up. Then reply.", 3),
        ("t1", "agent_message", "You said: “hello there”. Let me check.\n", 3),
        ("t1", "agent_message", "I found it.", 1),
        ("t2", "agent_message", "understood", 3),
    ]
    assert [(r["sequence"], r["last_sequence"]) for r in got] == [(1, 1), (2, 4), (5, 9), (11, 11), (13, 15)]


def test_thought_chunks_get_a_space_only_between_a_sentence_end_and_a_capital(store: DuckDBStore) -> None:
    w = Writer(store, record())
    for text in ("Version 3.", "14 is out.", "Then", " more.", "Done:", "Next"):
        w(EventType.THOUGHT, "t1", text=text)
    w(EventType.TOOL_CALL, "t1", tool_call_id="c1", title="Read", tool_name="read")
    # A sentence end and a capital inside one chunk stay as they are (this thought takes the
    # character-by-character path; the first one, with none inside, the regular expression).
    for text in ("See e.g.Foo.", "Then", " I.O.U.", "Done"):
        w(EventType.THOUGHT, "t1", text=text)
    w.flush()
    assert [r["text"] for r in rows(store, "SELECT text FROM messages ORDER BY sequence")] == [
        "Version 3.14 is out. Then more. Done: Next",
        "See e.g.Foo. Then I.O.U. Done",
    ]


def test_messages_are_in_sequence_order_whatever_order_the_rows_are_stored_in(tmp_path: Path) -> None:
    # The view joins chunks without sorting them and puts a message back in order only when its
    # chunks were met out of order (chunks_in_order). A parallel scan does that to a few messages
    # of a big store; rows stored in reverse make every message take that path here.
    path = tmp_path / "agh.duckdb"
    with DuckDBStore.open(path) as s:
        w = Writer(s, record())
        w(EventType.USER_MESSAGE, "t1", text="go")
        for text in ("Grüße, ", "naïve ", "", "café ", "日本語 ", "done."):
            w(EventType.AGENT_MESSAGE, "t1", text=text)
        for text in ("First thought.", "Second one", " ends here."):
            w(EventType.THOUGHT, "t1", text=text)
        w(EventType.TOOL_CALL, "t1", tool_call_id="c1", title="Read", tool_name="read")
        for text in ("Über e.g.Foo.", "Then", " ünd."):
            w(EventType.THOUGHT, "t1", text=text)
        w(EventType.TOOL_CALL, "t1", tool_call_id="c2", title="Read", tool_name="read")
        # A long message: putting it back in order takes time linear in its length.
        for i in range(2000):
            w(EventType.AGENT_MESSAGE, "t1", text=f"{i}é ")
        w.flush()
        in_order = rows(s, "SELECT type, text, chunks FROM messages ORDER BY sequence")
    con = duckdb.connect(str(path))
    con.execute("CREATE TEMP TABLE copy AS SELECT * FROM events ORDER BY sequence DESC")
    con.execute("DELETE FROM events")
    con.execute("INSERT INTO events SELECT * FROM copy")
    assert [r[0] for r in con.execute("SELECT sequence FROM events").fetchall()] == list(range(2015, 0, -1))
    con.close()
    with DuckDBStore.open(path) as s:
        reversed_rows = rows(s, "SELECT type, text, chunks FROM messages ORDER BY sequence")
        macro = rows(s, "SELECT chunks_in_order('worldhello, ', [(1::BIGINT << 32) | 5, 7]) AS t")[0]["t"]
        # Out of order only in the middle, and the one-key and no-key lists that have no pair.
        mid = rows(s, "SELECT chunks_in_order('acb', [1::BIGINT, (2::BIGINT << 32) | 1, (1::BIGINT << 32) | 1]) AS t")
        ordered = rows(s, "SELECT [in_sequence([1, 2, 5]), in_sequence([1, 5, 2]), in_sequence([7]), "
                          "in_sequence([]::BIGINT[])] AS t")
    expected = [
        {"type": "user_message", "text": "go", "chunks": 1},
        {"type": "agent_message", "text": "Grüße, naïve café 日本語 done.", "chunks": 5},
        {"type": "thought", "text": "First thought. Second one ends here.", "chunks": 3},
        {"type": "thought", "text": "Über e.g.Foo. Then ünd.", "chunks": 3},
        {"type": "agent_message", "text": "".join(f"{i}é " for i in range(2000)), "chunks": 2000},
    ]
    assert in_order == expected
    assert reversed_rows == expected
    assert macro == "hello, world"
    assert mid[0]["t"] == "abc"
    assert [bool(b) for b in ordered[0]["t"]] == [True, False, True, True]


def test_the_ordering_macros_give_the_text_of_the_chunks_in_sequence_whatever_order_they_were_met() -> None:
    # chunks_in_order and thought_in_order against the rule written out in Python, on chunks met in
    # shuffled order (as a parallel scan may meet them), with multi-byte characters, chunks of one
    # character, and sentence ends followed by capitals both inside chunks and where chunks meet.
    def spaced(chunks: list[str]) -> str:
        out = chunks[0]
        for chunk in chunks[1:]:
            out += (" " if out[-1] in ".!?:;" and "A" <= chunk[0] <= "Z" else "") + chunk
        return out

    con = duckdb.connect()
    for macro in (IN_SEQUENCE, CHAR_PLACES, CHUNKS_IN_ORDER, SPACED_AT_CHUNKS, THOUGHT_IN_ORDER):
        con.execute(macro)
    pool = ["Ab.", "Cd. ", "é日.", "x", "Yz:", "e.g.Foo", "ü ", "Q", "?"]
    shuffle = random.Random(7)
    for n in (1, 2, 3, 7, 60, 600):
        for _ in range(10):
            chunks = [shuffle.choice(pool) for _ in range(n)]
            met = list(range(n))
            shuffle.shuffle(met)
            joined = "".join(chunks[i] for i in met)
            keys = [(i << 32) | len(chunks[i]) for i in met]
            inside = any(re.search(r"[.!?:;][A-Z]", chunk) for chunk in chunks)
            text, thought = con.execute(
                "SELECT chunks_in_order(?, ?::BIGINT[]), thought_in_order(?, ?::BIGINT[], ?)",
                [joined, keys, joined, keys, inside],
            ).fetchall()[0]
            assert text == "".join(chunks)
            assert thought == spaced(chunks)
    con.close()


# -- tool calls --------------------------------------------------------------------------------


def test_tool_calls_one_row_per_call_with_kind_status_duration_paths_and_error(store: DuckDBStore) -> None:
    w = Writer(store, record())
    w(EventType.USER_MESSAGE, "t1", at=0, text="go")
    start = {"sessionUpdate": "tool_call", "toolCallId": "c1", "title": "Read a.py", "kind": "read",
             "status": "pending", "locations": [{"path": "/ws/a.py"}, {"path": "/ws/b.py"}]}
    w(EventType.TOOL_CALL, "t1", at=1, tool_call_id="c1", title="Read a.py", tool_name="read", raw=start)
    w(EventType.TOOL_CALL, "t1", at=1.5, **tool_update("c1", "in_progress"))
    w(EventType.TOOL_RESULT, "t1", at=3.25, tool_result={"lines": 2}, **tool_update("c1", "completed"))
    w(EventType.TOOL_CALL, "t1", at=4, tool_call_id="c2", title="Run make", tool_name="execute",
      raw={"sessionUpdate": "tool_call", "toolCallId": "c2", "status": "pending"})
    w(EventType.TOOL_RESULT, "t1", at=5, tool_error="make: no rule", **tool_update("c2", "failed"))
    w(EventType.TOOL_CALL, "t1", at=6, tool_call_id="c3", title="Think", tool_name="think",
      raw={"sessionUpdate": "tool_call", "toolCallId": "c3", "status": "in_progress"})
    w(EventType.TOOL_CALL, "t1", at=7, tool_call_id="c4", title="Doing something risky", tool_name="other")
    # A call cut off by a crash gets an interrupted result from agh_nb (no ACP payload).
    w(EventType.TOOL_RESULT, "t1", at=9, tool_call_id="c4", tool_error="interrupted: the session stopped",
      runtime={"repair": True})
    # A second turn may number its calls from the start again (a resumed agent): another call.
    w(EventType.TOOL_CALL, "t2", at=20, tool_call_id="c1", title="Search", tool_name="search",
      raw={"sessionUpdate": "tool_call", "toolCallId": "c1", "status": "pending"})
    w(EventType.TOOL_RESULT, "t2", at=20.5, tool_result="[diff: /ws/a.txt]", **tool_update("c1", "completed"))
    w.flush()
    got = {(r["turn_id"], r["tool_call_id"]): r for r in rows(store, "SELECT * FROM tool_calls")}
    assert len(got) == 5
    c1 = got[("t1", "c1")]
    assert (c1["kind"], c1["title"], c1["status"], c1["error"]) == ("read", "Read a.py", "completed", None)
    assert c1["duration_ms"] == 2250.0 and c1["sequence"] == 2
    assert list(c1["paths"]) == ["/ws/a.py", "/ws/b.py"]
    assert (got[("t1", "c2")]["status"], got[("t1", "c2")]["error"]) == ("failed", "make: no rule")
    assert (got[("t1", "c3")]["status"], got[("t1", "c3")]["ended_at"], got[("t1", "c3")]["duration_ms"]) == (
        "in_progress", None, None,
    )
    assert got[("t1", "c4")]["status"] == "interrupted" and got[("t1", "c4")]["duration_ms"] == 2000.0
    assert (got[("t2", "c1")]["kind"], got[("t2", "c1")]["status"]) == ("search", "completed")
    kinds = rows(store, "SELECT kind, count(*) AS n FROM tool_calls GROUP BY kind ORDER BY kind")
    assert [(r["kind"], r["n"]) for r in kinds] == [("execute", 1), ("other", 1), ("read", 1), ("search", 1), ("think", 1)]


# -- permission requests -----------------------------------------------------------------------


def test_permission_requests_pair_request_and_decision_and_keep_refusals(store: DuckDBStore) -> None:
    w = Writer(store, record())
    ask = {"request_id": "req_1", "tool_call_id": "c1", "title": "Write notes.txt", "action": "edit",
           "resource": "/ws/notes.txt"}
    w(EventType.PERMISSION, "t1", at=10, **ask, raw={"toolCall": {}, "options": []})
    w(EventType.PERMISSION, "t1", at=12.5, **ask, decision="allow-once", runtime={"source": "user"})
    out = ask | {"request_id": "req_2", "resource": "/etc/passwd"}
    w(EventType.PERMISSION, "t1", at=13, **out)
    w(EventType.PERMISSION, "t1", at=13.001, **out, decision="reject-once", error="outside the workspace",
      runtime={"source": "boundary"})
    w(EventType.PERMISSION, "t1", at=14, **(ask | {"request_id": "req_3"}))  # still pending
    # A client method the mode refused: no request id, one row of its own each time.
    for at in (15, 16):
        w(EventType.PERMISSION, "t1", at=at, action="fs/write_text_file", resource="/ws/x", decision="reject-once",
          error="blocked by deny-all", runtime={"source": "mode:deny-all"})
    w.flush()
    got = rows(store, "SELECT * FROM permission_requests ORDER BY sequence")
    assert [(r["request_id"], r["action"], r["decision"], r["decided_by"]) for r in got] == [
        ("req_1", "edit", "allow-once", "user"),
        ("req_2", "edit", "reject-once", "boundary"),
        ("req_3", "edit", None, None),
        (None, "fs/write_text_file", "reject-once", "mode:deny-all"),
        (None, "fs/write_text_file", "reject-once", "mode:deny-all"),
    ]
    assert got[0]["wait_ms"] == 2500.0 and got[0]["tool_call_id"] == "c1" and got[0]["title"] == "Write notes.txt"
    assert got[1]["error"] == "outside the workspace" and got[1]["resource"] == "/etc/passwd"
    assert got[2]["decided_at"] is None and got[2]["wait_ms"] is None
    assert got[3]["wait_ms"] == 0.0


# -- turns and cost ----------------------------------------------------------------------------


def usage(w: Writer, turn: str, amount: float) -> None:
    w(EventType.USAGE, turn, usage={"used": 10, "size": 100, "cost": {"amount": amount, "currency": "USD"}})


def turn(w: Writer, turn_id: str, prompt: str, *costs: float, stop: str = "end_turn", error: str | None = None) -> None:
    w(EventType.USER_MESSAGE, turn_id, text=prompt)
    w(EventType.AGENT_MESSAGE, turn_id, text="ok")
    for amount in costs:
        usage(w, turn_id, amount)
    w(EventType.DONE, turn_id, stop_reason=stop, error=error)


def test_turn_cost_is_the_turns_own_across_resumes_and_never_negative(store: DuckDBStore) -> None:
    # Regression (issue 12): ACP cost is a running total per ACP session, and a resumed agent
    # starts it again; "a session's cost is its largest value" lost the resumed run, and the
    # difference from the turn before went negative after a resume.
    w = Writer(store, record(acp="acp-1"))
    turn(w, "t1", "first", 0.10)
    turn(w, "t2", "second", 0.20, 0.30)  # two reports in one turn: the last one counts
    turn(w, "t3", "no usage at all")
    turn(w, "t4", "fourth", 0.45)
    w(EventType.SESSION_STOPPED, None, stop_reason="user_canceled")
    w(EventType.SYSTEM, None, title="resume", text="resumed ACP session acp-1 with session/load")
    turn(w, "t5", "after session/load", 0.05)  # same ACP session, a new process: counts again
    turn(w, "t6", "and again", 0.12)
    w(EventType.SESSION_STOPPED, None, stop_reason="user_canceled")
    w.acp("acp-2")  # resumed in a fresh ACP session
    turn(w, "t7", "fresh session", 0.02)
    turn(w, "t8", "counter restarted by itself", 0.01)  # lower than before without a stop
    w.flush()
    asyncio.run(store.merge_usage("sess_a", "t1", {"input_tokens": 5, "output_tokens": 7, "total_tokens": 12}))
    got = rows(store, "SELECT turn_id, prompt, cost, currency, total_tokens, stop_reason FROM turns ORDER BY sequence")
    costs = {r["turn_id"]: r["cost"] for r in got}
    assert _same(costs, {"t1": 0.10, "t2": 0.20, "t3": None, "t4": 0.15, "t5": 0.05, "t6": 0.07, "t7": 0.02, "t8": 0.01})
    assert all(c is None or c >= 0 for c in costs.values())
    assert got[0]["prompt"] == "first" and got[0]["total_tokens"] == 12 and got[0]["currency"] == "USD"
    summary = rows(store, "SELECT cost, turns FROM session_summary")[0]
    assert summary["cost"] == pytest.approx(0.10 + 0.20 + 0.15 + 0.05 + 0.07 + 0.02 + 0.01)
    assert summary["turns"] == 8


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(
        (a[k] is None and b[k] is None) or (a[k] is not None and b[k] is not None and abs(a[k] - b[k]) < 1e-9) for k in a
    )


def test_turns_carry_prompt_times_stop_reason_and_error(store: DuckDBStore) -> None:
    w = Writer(store, record())
    w(EventType.USER_MESSAGE, "t1", at=0, text="crash")
    w(EventType.ERROR, "t1", at=1, error="agent exited with code 3")
    w(EventType.DONE, "t1", at=1.5, stop_reason="error")
    w(EventType.USER_MESSAGE, "t2", at=2, text="fail")
    w(EventType.DONE, "t2", at=2.25, stop_reason="error", error="prompt failed: internal error")
    w(EventType.USER_MESSAGE, "t3", at=3, text="still running")
    w.flush()
    got = rows(store, "SELECT * FROM turns ORDER BY sequence")
    assert [(r["prompt"], r["stop_reason"], r["error"], r["duration_ms"]) for r in got] == [
        ("crash", "error", "agent exited with code 3", 1500.0),
        ("fail", "error", "prompt failed: internal error", 250.0),
        ("still running", None, None, None),
    ]


def test_session_summary_counts_a_golden_session(store: DuckDBStore) -> None:
    golden = json.loads((GOLDEN / "events_completed.json").read_text())
    rec = SessionRecord.from_dict(golden["record"]).replace(state=SessionState.ACTIVE, stop_reason=None)
    w = Writer(store, rec)
    for event in golden["events"]:
        fields = {k: v for k, v in event["content"].items() if k not in ("schema", "type", "session_id", "turn_id", "timestamp")}
        w(EventType(event["type"]), event["turn_id"], **fields)
    w.flush()
    got = rows(store, "SELECT * FROM session_summary")[0]
    types = [e["type"] for e in golden["events"]]
    assert (got["turns"], got["events"]) == (types.count("user_message"), len(types))
    assert got["tool_calls"] == len({e["content"].get("tool_call_id") for e in golden["events"] if e["type"] == "tool_call"})
    assert got["agent_name"] == rec.agent_name and got["cost"] == pytest.approx(0.000186)


def test_the_sql_surface_reads_every_view(store: DuckDBStore) -> None:
    for name in sorted(VIEW_NAMES):
        frame = store.sql(f"SELECT * FROM {name}")
        assert frame.empty and len(frame.columns) > 3, name


# -- derived columns: the writer and the migration of an older store agree ----------------------


def _script(w: Writer) -> None:
    golden = json.loads((GOLDEN / "events_agent_crash.json").read_text())
    for event in golden["events"]:
        fields = {k: v for k, v in event["content"].items() if k not in ("schema", "type", "session_id", "turn_id", "timestamp")}
        w(EventType(event["type"]), event["turn_id"], **fields)
    w(EventType.THOUGHT, "t9", text="a")
    w(EventType.THOUGHT, "t9", text="")
    w(EventType.AGENT_MESSAGE, "t9", text="")
    w(EventType.THOUGHT, "t9", text="b")
    w(EventType.TOOL_CALL, "t9", tool_call_id=7, raw={"status": "pending"})
    w(EventType.TOOL_RESULT, "t9", tool_call_id=7, tool_result="x")


def test_an_older_store_gets_the_same_derived_columns_when_opened(tmp_path: Path) -> None:
    with DuckDBStore.open(tmp_path / "new.duckdb") as new:
        w = Writer(new, record())
        _script(w)
        w.flush()
        columns = ", ".join(("sequence", *DERIVED_COLUMNS))
        written = new.sql(f"SELECT {columns} FROM events ORDER BY sequence").to_dict("records")
    # The same rows in a store made before the derived columns: the old table, no views.
    old = tmp_path / "old.duckdb"
    con = duckdb.connect(str(old))
    def ddl(start: str) -> str:
        return next(d for d in schema.DDL if d.strip().startswith(start))

    con.execute(ddl("CREATE TABLE IF NOT EXISTS sessions"))
    events = ddl("CREATE TABLE IF NOT EXISTS events")
    con.execute(events.split("timestamp TIMESTAMPTZ NOT NULL,")[0] + "timestamp TIMESTAMPTZ NOT NULL)")
    con.execute(ddl("CREATE TABLE IF NOT EXISTS token_usage"))
    con.execute(f"ATTACH '{tmp_path / 'new.duckdb'}' AS src (READ_ONLY)")
    con.execute(f"INSERT INTO events SELECT {', '.join(schema.EVENT_COLUMNS)} FROM src.events")
    con.execute("DETACH src")
    con.close()
    with DuckDBStore.open(old) as migrated:
        again = migrated.sql(f"SELECT {columns} FROM events ORDER BY sequence").to_dict("records")
        assert rows(migrated, "SELECT count(*) AS n FROM messages")[0]["n"] > 0
    assert _nan_free(again) == _nan_free(written)
    statuses = [r["status"] for r in _nan_free(written) if r["status"] is not None]
    assert "interrupted" in statuses and "failed" in statuses


def _nan_free(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: clean(v) for k, v in r.items()} for r in records]


@pytest.mark.parametrize("count", [schema.SMALL_BATCH, schema.SMALL_BATCH + 1], ids=["values-insert", "arrow-insert"])
def test_both_insert_paths_store_the_derived_columns(tmp_path: Path, count: int) -> None:
    with DuckDBStore.open(tmp_path / "agh.duckdb", flush_interval=5.0) as store:
        w = Writer(store, record())
        for i in range(count - 2):
            w(EventType.AGENT_MESSAGE, "t1", text=f"c{i}")
        w(EventType.TOOL_CALL, "t1", tool_call_id="c1", tool_name="read", raw={"status": "pending"})
        w(EventType.TOOL_RESULT, "t1", tool_call_id="c1", tool_error="boom")
        w.flush()
        got = rows(store, "SELECT sequence, text, tool_call_id, tool_name, title, status, message_seq FROM events ORDER BY sequence")
    assert [r["message_seq"] for r in got[: count - 2]] == [1] * (count - 2)
    assert got[-2] == {
        "sequence": count - 1, "text": None, "tool_call_id": "c1", "tool_name": "read", "title": None,
        "status": "pending", "message_seq": None,
    }
    assert got[-1]["status"] == "failed"
