"""How fast the analytical views answer on a 10-million-event store, against the issue's target.

Run: ``python benchmarks/analytics.py [--events 10000000] [--path FILE] [--keep] [--repeat 3]``

1. Builds a store in the real schema (``DuckDBStore.open`` creates the tables, the derived
   columns and the views) and fills it in DuckDB, set-wise, not row by row: sessions of 25 turns,
   each turn 38 events shaped as the runtime writes them (a prompt, thought chunks, a plan,
   message chunks, three tool calls with updates and results, one permission request and its
   decision, a usage report, done), with the ACP payload under ``raw``. A quarter of the
   sessions are stopped and resumed mid-way (half with ``session/load``, half in a fresh ACP
   session) and their cost counters start again. Times spread over 90 days; rows go in in time
   order, sessions interleaved, as a host writes them. The derived columns are filled with the
   values the writer gives (``derived_columns.derived_fields``, ``place_in_message``).
2. Times each listed query (best of ``--repeat`` runs, wall clock) and prints it against the
   target, each query under 1 s on this project's 2-core machines, and next to the same question
   asked of the raw table the way the analytics notebook used to ask it (``content->>...``).
3. Times the store's macros on one long message whose chunks were met out of order (a parallel
   scan does that to a message that spans two threads' rows), against the expressions the
   ``messages`` view used before, in the same run: the text put back in order
   (``chunks_in_order``) and a thought's text with its spaces (``thought_in_order``).

Informational only: the exit code is 0 whatever the figures. The machine's load average is
printed with them: on a shared machine, figures rise with it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb  # noqa: E402

from agh_nb.adapters.duckdb_store import DuckDBStore  # noqa: E402

TARGET_S = 1.0
TURNS = 25
WORDS = (
    "the a module test failing function returns value error file path config build parser token "
    "stream session agent tool call result check update write read search index cache query table "
    "view export record event turn chunk message plan thought user answer because should would "
    "could then next first second fix change patch diff line column"
).split()
KINDS = ("read", "edit", "execute", "search", "think", "fetch")

# One turn: (event type, role in the template).
SLOTS: list[tuple[str, str]] = [("user_message", "prompt")]
SLOTS += [("thought", "thought")] * 3
SLOTS += [("plan", "plan")]
SLOTS += [("agent_message", "chunk")] * 8
for _c in range(3):
    SLOTS.append(("tool_call", f"call{_c}"))
    if _c == 1:
        SLOTS += [("permission", "ask"), ("permission", "decide")]
    SLOTS += [("tool_call", f"update{_c}"), ("tool_result", f"result{_c}")]
SLOTS += [("agent_message", "chunk")] * 12
SLOTS += [("usage", "usage"), ("done", "done")]
PER_TURN = len(SLOTS)
# The first slot of each run of chunks: what message_seq points at.
_RUN_START = {}
for _i, (_t, _r) in enumerate(SLOTS):
    if _t in ("agent_message", "thought"):
        _RUN_START[_i] = _RUN_START.get(_i - 1, _i) if SLOTS[_i - 1][0] == _t else _i
    elif _t == "user_message":
        _RUN_START[_i] = _i


def build(path: Path, events: int) -> float:
    """Create the store at ``path`` with about ``events`` events; return the seconds it took."""
    started = time.perf_counter()
    sessions = max(1, events // (TURNS * PER_TURN + 1))
    with DuckDBStore.open(path):  # the real schema: tables, derived columns, views
        pass
    con = duckdb.connect(str(path))
    con.execute("SET enable_progress_bar = false")
    con.execute("SET TimeZone = 'UTC'")
    words = "[" + ", ".join(f"'{w}'" for w in WORDS) + "]"
    con.execute(
        f"CREATE TEMP TABLE phrases AS SELECT i, array_to_string(list_transform(range(6), "
        f"lambda x: {words}[1 + (hash(i, x) % {len(WORDS)})::INTEGER]), ' ') AS p FROM range(4096) t(i)"
    )
    con.execute("CREATE TEMP TABLE slots (slot INTEGER, type VARCHAR, role VARCHAR, run_start INTEGER)")
    con.executemany(
        "INSERT INTO slots VALUES (?, ?, ?, ?)", [(i, t, r, _RUN_START.get(i)) for i, (t, r) in enumerate(SLOTS)]
    )
    kinds = "[" + ", ".join(f"'{k}'" for k in KINDS) + "]"
    span_us = 90 * 86_400_000_000
    # Rows of every session: the turns' slots, plus a stop and a resume note mid-way in resumed
    # sessions, plus the final stop. ``acp`` is the ACP session id of the envelope.
    con.execute(
        f"""
        CREATE TEMP TABLE gen AS
        WITH s AS (
            SELECT i AS s, 'sess_' || substr(md5('s' || i), 1, 16) AS sid,
                   TIMESTAMPTZ '2026-09-01 00:00:00+00' + to_microseconds((i::BIGINT * {span_us}) // {sessions}) AS t0,
                   'ws_' || substr(md5('w' || (i % 50)), 1, 16) AS wid, '/home/user/project' || (i % 50) AS wpath,
                   i % 4 = 0 AS resumed, 'acp-' || md5('a' || i) AS acp0
            FROM range({sessions}) r(i)
        ), t AS (
            SELECT s.*, j AS turn, 'turn_' || substr(md5(sid || j), 1, 12) AS tid,
                   CASE WHEN resumed AND j >= 12 AND s % 8 = 0 THEN acp0 || '-2' ELSE acp0 END AS acp,
                   CASE WHEN resumed AND j >= 12 THEN 2 ELSE 0 END AS shift
            FROM s, range({TURNS}) r(j)
        )
        SELECT sid, tid, turn, slot, type, role, acp, wid, wpath, resumed,
               turn * {PER_TURN} + slot + 1 + shift AS seq,
               CASE WHEN run_start IS NOT NULL THEN turn * {PER_TURN} + run_start + 1 + shift END AS message_seq,
               t0 + to_microseconds(turn::BIGINT * 120000000 + slot * 400000 + (hash(tid, slot) % 300000)::BIGINT) AS ts,
               hash(tid, slot) % 4096 AS phrase
        FROM t, slots
        UNION ALL
        SELECT sid, NULL, 12, x, CASE x WHEN 0 THEN 'session_stopped' ELSE 'system' END,
               CASE x WHEN 0 THEN 'stop' ELSE 'resume' END, acp0, wid, wpath, resumed,
               12 * {PER_TURN} + 1 + x, NULL, t0 + to_microseconds(12::BIGINT * 120000000 - 1000000 + x * 500000), 0
        FROM s, range(2) r(x) WHERE resumed
        UNION ALL
        SELECT sid, NULL, {TURNS}, 0, 'session_stopped', 'stop', acp0, wid, wpath, resumed,
               {TURNS} * {PER_TURN} + 1 + CASE WHEN resumed THEN 2 ELSE 0 END, NULL,
               t0 + to_microseconds({TURNS}::BIGINT * 120000000), 0
        FROM s
        """
    )
    # The envelope of each row, as the runtime writes it (raw: the ACP payload).
    cost = f"round((CASE WHEN resumed AND turn >= 12 THEN turn - 11 ELSE turn + 1 END) * 0.0042, 6)"
    call = "'call-' || turn || '-' || right(role, 1)"
    kind = f"{kinds}[1 + (hash(tid, right(role, 1)) % 6)::INTEGER]"
    path_ = "wpath || '/src/m' || (hash(tid, right(role, 1)) % 90) || '.py'"
    decision = "(['allow-once', 'allow-once', 'reject-once', 'allow-always'])[1 + (hash(tid, 'd') % 4)::INTEGER]"
    source = "(['user', 'mode:approve-all', 'boundary', 'user'])[1 + (hash(tid, 'd') % 4)::INTEGER]"
    failed = "hash(tid, role) % 10 = 0"
    con.execute(
        f"""
        CREATE TEMP TABLE rows AS
        SELECT g.*, p,
               CASE role WHEN 'prompt' THEN 'Please ' || p WHEN 'thought' THEN p || '.' WHEN 'chunk' THEN p || ' '
                         WHEN 'plan' THEN '[completed] Read the code\\n[in_progress] Fix it\\n[pending] Test'
                         WHEN 'resume' THEN 'resumed ACP session with session/load' END AS text,
               CASE WHEN type IN ('tool_call', 'tool_result') OR role IN ('ask', 'decide') THEN {call} END AS tool_call_id,
               CASE WHEN role LIKE 'call%' THEN {kind} END AS tool_name,
               CASE WHEN role LIKE 'call%' THEN p WHEN role IN ('ask', 'decide') THEN 'Write ' || {path_}
                    WHEN role = 'plan' THEN 'plan' WHEN role = 'resume' THEN 'resume' END AS title,
               CASE WHEN role LIKE 'call%' THEN 'pending' WHEN role LIKE 'update%' THEN 'in_progress'
                    WHEN role LIKE 'result%' THEN CASE WHEN {failed} THEN 'failed' ELSE 'completed' END END AS status
        FROM gen g JOIN phrases ON phrases.i = g.phrase
        ORDER BY ts  -- sort the narrow rows: the wide JSON is made after, in this order
        """
    )
    text = "replace(text, '\\n', '\\\\n')"
    content = f"""
        '{{"schema":"agh.session.event.v1","type":"' || type || '","session_id":"' || acp || '","turn_id":'
        || coalesce('"' || tid || '"', 'null') || ',"timestamp":"' || strftime(ts, '%Y-%m-%dT%H:%M:%S.%fZ') || '"' ||
        CASE
          WHEN role = 'prompt' THEN ',"text":"' || text || '"'
          WHEN role IN ('thought', 'chunk') THEN ',"text":"' || text || '","raw":{{"content":{{"text":"' || text
               || '","type":"text"}},"sessionUpdate":"agent_' || CASE WHEN role = 'thought' THEN 'thought' ELSE 'message' END || '_chunk"}}'
          WHEN role = 'plan' THEN ',"title":"plan","text":"' || {text} || '","raw":{{"entries":[{{"content":"Read the code","priority":"high","status":"completed"}}],"sessionUpdate":"plan"}}'
          WHEN role = 'usage' THEN ',"usage":{{"used":' || (turn * 900 + 500) || ',"size":200000,"cost":{{"amount":' || {cost}
               || ',"currency":"USD"}}}},"raw":{{"used":' || (turn * 900 + 500) || ',"size":200000,"cost":{{"amount":' || {cost}
               || ',"currency":"USD"}},"sessionUpdate":"usage_update"}}'
          WHEN role = 'done' THEN ',"stop_reason":"end_turn","usage":{{"input_tokens":' || (1000 + hash(tid) % 5000)
               || ',"output_tokens":' || (200 + hash(tid, 1) % 800) || ',"total_tokens":' || (1200 + hash(tid) % 5000 + hash(tid, 1) % 800)
               || ',"thought_tokens":' || (hash(tid, 2) % 300) || '}}'
          WHEN role = 'stop' THEN ',"stop_reason":"user_canceled","runtime":{{"stop_detail":null,"exit":{{"pid":1234,"returncode":0,"signal":null}}}}'
          WHEN role = 'resume' THEN ',"title":"resume","text":"' || text || '"'
          WHEN role IN ('ask', 'decide') THEN ',"request_id":"req_' || substr(md5(tid), 1, 10) || '","tool_call_id":"' || tool_call_id
               || '","title":"' || title || '","action":"edit","resource":"' || {path_} || '"'
               || CASE WHEN role = 'ask' THEN ',"raw":{{"toolCall":{{"toolCallId":"' || tool_call_id || '","kind":"edit","status":"pending"}},"options":[{{"optionId":"allow-once","name":"Allow once","kind":"allow_once"}},{{"optionId":"reject-once","name":"Reject","kind":"reject_once"}}]}}'
                       ELSE ',"decision":"' || {decision} || '","runtime":{{"source":"' || {source} || '"}}' END
          WHEN role LIKE 'call%' THEN ',"tool_call_id":"' || tool_call_id || '","title":"' || title || '","tool_name":"' || tool_name
               || '","raw":{{"toolCallId":"' || tool_call_id || '","title":"' || p || '","kind":"' || tool_name
               || '","status":"pending","locations":[{{"path":"' || {path_} || '"}}],"rawInput":{{"path":"' || {path_}
               || '"}},"sessionUpdate":"tool_call"}},"tool_input":{{"path":"' || {path_} || '"}}'
          WHEN role LIKE 'update%' THEN ',"tool_call_id":"' || tool_call_id || '","raw":{{"toolCallId":"' || tool_call_id
               || '","status":"in_progress","sessionUpdate":"tool_call_update"}}'
          WHEN {failed} THEN ',"tool_call_id":"' || tool_call_id || '","tool_error":"command failed: exit 1","raw":{{"toolCallId":"'
               || tool_call_id || '","status":"failed","sessionUpdate":"tool_call_update"}}'
          ELSE ',"tool_call_id":"' || tool_call_id || '","raw":{{"toolCallId":"' || tool_call_id
               || '","status":"completed","content":[{{"content":{{"text":"' || p || '","type":"text"}},"type":"content"}}],'
               || '"rawOutput":{{"lines":' || (hash(tid, role) % 400) || '}},"sessionUpdate":"tool_call_update"}},"tool_result":{{"lines":'
               || (hash(tid, role) % 400) || '}}'
        END || '}}'
    """
    con.execute(
        f"""
        INSERT INTO events
        SELECT 'evt_' || md5(sid || seq), sid, seq, tid, type, 'claude', wid, wpath, ({content})::JSON, ts,
               text, tool_call_id, tool_name, title, status, message_seq
        FROM rows
        """
    )
    con.execute(
        """
        INSERT INTO sessions (id, name, agent_name, type, workspace_id, workspace_path, permissions, state,
                              stop_reason, stop_detail, failure, failure_kind, acp_session_id, acp_caps,
                              created_at, updated_at, host_pid, last_presence_at)
        SELECT sid, 'session ' || substr(sid, 6, 6), 'claude', 'user', any_value(wid), any_value(wpath), 'approve-reads',
               'stopped', 'user_canceled', NULL, NULL, NULL, any_value(acp), '{}', min(ts), max(ts), NULL, max(ts)
        FROM rows GROUP BY sid
        """
    )
    con.execute(
        """
        INSERT INTO token_usage
        SELECT sid, tid, 'claude', 1000 + hash(tid) % 5000, 200 + hash(tid, 1) % 800, hash(tid, 2) % 300, NULL, NULL,
               1200 + hash(tid) % 5000 + hash(tid, 1) % 800, turn * 900 + 500, 200000, NULL, 'USD', ts
        FROM rows WHERE role = 'done'
        """
    )
    con.execute("CHECKPOINT")
    con.close()
    return time.perf_counter() - started


def queries(session_id: str, needle: str) -> list[tuple[str, str, str | None]]:
    """(label, query on the views, the same question on the raw table or None)."""
    raw_kind = "content->>'tool_name'"
    return [
        ("per-day counts", "SELECT utc_day(timestamp) AS day, count(*) FROM events GROUP BY day ORDER BY day",
         "SELECT timestamp::DATE AS day, count(*) FROM events GROUP BY day ORDER BY day"),
        ("per-day counts by type", "SELECT utc_day(timestamp) AS day, type, count(*) FROM events GROUP BY ALL", None),
        ("text search (chunks)", f"SELECT session_id, turn_id, sequence, text FROM events WHERE text ILIKE '%{needle}%'",
         f"SELECT session_id, turn_id, sequence, content->>'text' FROM events WHERE content->>'text' ILIKE '%{needle}%'"),
        ("text search (messages)", f"SELECT session_id, turn_id, type, text FROM messages WHERE text ILIKE '%{needle}%'", None),
        ("tool-call kinds", "SELECT kind, status, count(*), avg(duration_ms) FROM tool_calls GROUP BY ALL ORDER BY ALL",
         f"SELECT {raw_kind} AS kind, count(*) FROM events WHERE type = 'tool_call' AND {raw_kind} IS NOT NULL GROUP BY kind"),
        ("session list", "SELECT * FROM session_summary ORDER BY created_at DESC LIMIT 50",
         "SELECT * FROM sessions ORDER BY created_at DESC LIMIT 50"),
        ("turns: cost and tokens per day",
         "SELECT utc_day(started_at) AS day, count(*), sum(cost), sum(total_tokens), avg(duration_ms) FROM turns GROUP BY day ORDER BY day", None),
        ("turns of a session", f"SELECT * FROM turns WHERE session_id = '{session_id}' ORDER BY sequence", None),
        ("tool calls of a session", f"SELECT * FROM tool_calls WHERE session_id = '{session_id}' ORDER BY sequence", None),
        ("messages of a session", f"SELECT * FROM messages WHERE session_id = '{session_id}' ORDER BY sequence", None),
        ("permission decisions", "SELECT action, decision, decided_by, count(*), median(wait_ms) FROM permission_requests GROUP BY ALL", None),
        ("slowest tool calls", "SELECT session_id, kind, title, duration_ms FROM tool_calls ORDER BY duration_ms DESC NULLS LAST LIMIT 20", None),
    ]


def best_of(con: duckdb.DuckDBPyConnection, sql: str, repeat: int) -> tuple[float, float, int]:
    """The best wall-clock seconds of ``repeat`` runs, the CPU seconds of that run (every
    thread of this process: steadier than wall time on a shared machine), and the row count."""
    best, cpu, rows = float("inf"), 0.0, 0
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        rows = len(con.execute(sql).fetchall())
        wall = time.perf_counter() - start
        if wall < best:
            best, cpu = wall, time.process_time() - start_cpu
    return best, cpu, rows


LONG_CHUNKS = 10_000
# What ``messages`` did before (the baseline of step 3): cut each chunk out of the joined text at
# the sum of the lengths before it, and join a thought's chunks pairwise with the spacing rule.
FORMER_REORDER = """array_to_string(list_transform(list_grade_up(keys), lambda i: substring(
    joined, (1 + coalesce(list_sum(list_transform(keys[1:i - 1], lambda k: k & 4294967295)), 0))::BIGINT,
    (keys[i] & 4294967295)::BIGINT)), '')"""
FORMER_THOUGHT = """list_reduce(list_select(texts, list_grade_up(keys)), lambda a, b: a || CASE
    WHEN right(a, 1) IN ('.', '!', '?', ':', ';') AND left(b, 1) BETWEEN 'A' AND 'Z' THEN ' ' ELSE '' END || b)"""


def long_message(con: duckdb.DuckDBPyConnection) -> None:
    """Print step 3: one message of ``LONG_CHUNKS`` chunks met in reverse, now and before."""
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE long_message AS
        SELECT string_agg(t, '' ORDER BY i DESC) AS joined, list(t ORDER BY i DESC) AS texts,
               list((i::BIGINT << 32) | length(t) ORDER BY i DESC) AS keys
        FROM (SELECT i, CASE WHEN i % 3 = 0 THEN 'Word ' || i || '.' ELSE ' wört' || i END AS t
              FROM range({LONG_CHUNKS}) r(i))"""
    )
    print(f"\none message of {LONG_CHUNKS:,} chunks, met out of order: now vs before (same run)")
    for label, now, before in (
        ("text in sequence order", "chunks_in_order(joined, keys)", FORMER_REORDER),
        ("thought with its spaces", "thought_in_order(joined, keys, true)", FORMER_THOUGHT),
    ):
        seconds = {}
        texts = {}
        for which, expr in (("now", now), ("before", before)):
            start = time.perf_counter()
            texts[which] = con.execute(f"SELECT {expr} FROM long_message").fetchall()[0][0]
            seconds[which] = time.perf_counter() - start
        same = "same text" if texts["now"] == texts["before"] else "TEXTS DIFFER"
        print(f"{label:34} {seconds['now']:7.3f}s  before {seconds['before']:7.3f}s  "
              f"({seconds['before'] / seconds['now']:,.0f}x; {same})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--path", type=Path, help="reuse (or keep) the store here instead of a temporary file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary store")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="agh-analytics-"))
    path = args.path or directory / "agh.duckdb"
    if path.exists():
        with DuckDBStore.open(path):  # refresh the views to this code's
            pass
        print(f"store: {path} (reused)")
    else:
        seconds = build(path, args.events)
        print(f"store: {path}, built in {seconds:.1f} s")
    con = duckdb.connect(str(path), read_only=True)
    con.execute("SET enable_progress_bar = false")
    total = con.execute("SELECT count(*), count(DISTINCT session_id) FROM events").fetchall()[0]
    size = path.stat().st_size / 2**20
    print(f"{total[0]:,} events, {total[1]:,} sessions, {size:,.0f} MiB; {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.1f}")
    session_id = con.execute("SELECT max(session_id) FROM events").fetchall()[0][0]
    # Three words from the middle of a stored chunk: a phrase that exists, as a search would ask.
    sample = con.execute("SELECT text FROM events WHERE type = 'agent_message' LIMIT 1").fetchall()[0][0]
    needle = " ".join(sample.split()[1:4])
    print(f"search phrase: {needle!r}")
    print(f"\n{'query':34} {'views':>8} {'(cpu)':>8} {'raw table':>10} {'rows':>8}  target < {TARGET_S:g} s")
    misses = 0
    for label, sql, raw in queries(session_id, needle):
        seconds, cpu, rows = best_of(con, sql, args.repeat)
        raw_s = f"{best_of(con, raw, args.repeat)[0]:9.3f}s" if raw else f"{'':>10}"
        verdict = "PASS" if seconds < TARGET_S else "MISS"
        misses += verdict == "MISS"
        print(f"{label:34} {seconds:7.3f}s {cpu:7.3f}s {raw_s} {rows:8,}  {verdict}")
    print(f"\n{len(queries(session_id, needle)) - misses} of {len(queries(session_id, needle))} queries under {TARGET_S:g} s "
          f"(load average now {os.getloadavg()[0]:.1f})")
    long_message(con)
    con.close()
    if not args.keep and args.path is None:
        for leftover in directory.iterdir():
            leftover.unlink()
        directory.rmdir()
    elif args.path is None:
        print(f"kept: {path}")


if __name__ == "__main__":
    main()
