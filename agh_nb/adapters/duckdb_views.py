"""The analytical views of the agh_nb store (SPEC 4): ``turns``, ``tool_calls``, ``messages``,
``permission_requests`` and ``session_summary``, plain SQL views over ``events``,
``token_usage`` and ``sessions`` (nothing is copied; each query computes them afresh).

Owns: the views' SQL (``VIEWS``), their names (``VIEW_NAMES``), and ``prepare_analytics``, which
brings a store made before the derived columns of ``events`` existed up to date (adding and
filling them, once) and creates or replaces every view. Imports duckdb; must not import
core.session, runtime or kernel.

Why they are fast enough (figures: ``benchmarks/analytics.py``, 10 million events):

* Everything grouped or filtered over millions of rows reads plain columns: the derived columns
  of ``events`` (``text``, ``tool_call_id``, ``tool_name``, ``title``, ``status``, ``message_seq``,
  filled when a row is queued) and ``type``. ``content`` is parsed only for rare rows (``done``,
  ``usage``, ``permission``, ``error``) or for columns a query asks for (a call's ``paths`` and
  ``error``): DuckDB drops a view's unused columns, so an unused JSON field costs nothing. Rows
  of one type are picked with ``type = '...'``, never ``IN (...)``: only an equality reaches the
  scan as a filter, and a scan that reads ``content`` for every row costs seconds.
* ``messages`` needs no window: ``message_seq`` already says which message a chunk belongs to; and
  no sort inside an aggregate (``chunks_in_order``), nor to check a message's order (``in_sequence``).
* Days are cut with epoch arithmetic (the ``utc_day`` macro), never a TIMESTAMPTZ cast (ICU:
  eight times slower).

Cost (``turns.cost``): ACP reports cost as the running total of one agent session, and an agent
resumed after a stop starts counting again. A turn's own cost is its last report minus the last
report of the turn before it in the same ACP session and the same run (the stretch between two
``session_stopped`` events); a report lower than the one before (a counter that restarted
anyway) counts from zero. It is never negative.
"""

from __future__ import annotations

import logging

import duckdb

from agh_nb.adapters.derived_columns import DERIVED_COLUMNS

logger = logging.getLogger(__name__)

IN_SEQUENCE = """
CREATE OR REPLACE MACRO in_sequence(keys) AS
    list_reduce(keys, lambda a, b: CASE WHEN a < b THEN b ELSE 9223372036854775807 END, -1) < 9223372036854775807
"""
"""``in_sequence(keys)``: whether a list of distinct, non-negative keys is in ascending order (true
for zero or one key). One pass carries the last key while each key is greater than the one
before it and the largest BIGINT once one is not: no sort (``keys = list_sort(keys)`` sorts every
message's keys) and no list of pairs (``list_zip`` of two slices, which this replaced, cost three
times as much: 0.14 s of CPU over the 525,750 agent messages of ``benchmarks/analytics.py``'s
10-million-event store, against 0.045 s)."""

CHAR_PLACES = """
CREATE OR REPLACE MACRO char_places(keys) AS
    list_transform(flatten(list_transform(keys, lambda k: list_resize([]::BIGINT[], (k & 4294967295)::INTEGER, k >> 32))),
                   lambda place, i: (place << 32) | i)
"""
"""``char_places(keys)``: for each character of a message's joined chunks (in the order the
aggregate met them), the place of the chunk it came from in the high 32 bits and its own index in
the low 32: sorted, they give the message's characters in sequence order. Built in one pass over
the characters, with no sum per chunk."""

CHUNKS_IN_ORDER = """
CREATE OR REPLACE MACRO chunks_in_order(joined, keys) AS
    CASE WHEN in_sequence(keys) THEN joined
    ELSE array_to_string(list_select(string_split(joined, ''), list_grade_up(char_places(keys))), '')
    END
"""
"""``chunks_in_order(joined, keys)``: a message's text in sequence order, from its chunks joined in
whatever order the aggregate met them and, in that same order, one key per chunk: its place in the
message (``sequence - message_seq``) in the high 32 bits, its length in the low 32. Nearly always
the keys are sorted already and ``joined`` is the answer; otherwise the characters are put in
order by the place of their chunk (``char_places``), in time that grows with the message's length,
not with its chunks squared: cutting each chunk out at the sum of the lengths before it, as this
did before, took 17 s for one 20,000-chunk message met out of order (0.07 s now). An ordered
``string_agg(text, '' ORDER BY sequence)`` gives the same text but sorts every message's chunks:
2.4x the time of this at 10 million events (a phrase search over ``messages``,
``benchmarks/analytics.py``). Both aggregates of one group meet its rows in the same order
(DuckDB updates and combines a group's aggregate states together), which is what makes the keys
describe ``joined``; a parallel scan does split a few messages out of order (18 of 525,750 at 10
million events), which is why the keys are checked."""

_SENTENCE_END = "('.', '!', '?', ':', ';')"

SPACED_AT_CHUNKS = """
CREATE OR REPLACE MACRO spaced_at_chunks(chars, chunk_of) AS
    array_to_string(list_transform(
        list_zip(chars, chunk_of, list_concat([NULL], chars[:-2]), list_concat([NULL], chunk_of[:-2])),
        lambda c: CASE WHEN c[2] <> c[4] AND c[3] IN {END} AND c[1] BETWEEN 'A' AND 'Z'
                       THEN ' ' || c[1] ELSE c[1] END), '')
""".replace("{END}", _SENTENCE_END)
"""``spaced_at_chunks(chars, chunk_of)``: a thought's characters joined with a space wherever a
chunk that ends a sentence meets one that starts with a capital; ``chunk_of`` says which chunk
each character came from. Each character is zipped with the one before it rather than looking it
up inside the lambda (a lambda that reads a list from outside itself re-reads it per element)."""

THOUGHT_IN_ORDER = """
CREATE OR REPLACE MACRO thought_in_order(joined, keys, stop_inside) AS
    CASE WHEN stop_inside
         THEN spaced_at_chunks(string_split(chunks_in_order(joined, keys), ''),
                               list_transform(list_sort(char_places(keys)), lambda x: x >> 32))
         ELSE regexp_replace(chunks_in_order(joined, keys), '([.!?:;])([A-Z])', '\\1 \\2', 'g')
    END
"""
"""``thought_in_order(joined, keys, stop_inside)``: a thought's text, its chunks in sequence order
with a space between a chunk that ends a sentence (``. ! ? : ;``) and one that starts with a capital
letter. When no chunk holds a sentence end followed by a capital (``stop_inside`` false, nearly
always), every such pair in the joined text lies where two chunks meet, and one regular expression
places the spaces; otherwise (``e.g.Foo`` inside a chunk) the chunk each character came from is
checked (``spaced_at_chunks``). Both take time linear in the thought's length: joining the chunks
pairwise with the rule, as this did before, took 2 s for one 20,000-chunk thought."""

_CHUNK_KEY = "((sequence - message_seq) << 32) | length(text)"

MESSAGES = """
CREATE OR REPLACE VIEW messages AS
-- Three parts, because each message holds one type: a prompt is a message of its own (no
-- grouping), agent message chunks are joined as they are, and thought chunks, which are often
-- whole sentences with no space between them ("...briefly." then "Plan: ..."), get a space between
-- a sentence end and a capital letter (thought_in_order). No part sorts inside its aggregate (see
-- chunks_in_order).
SELECT session_id, turn_id, sequence, sequence AS last_sequence, type, text, 1::BIGINT AS chunks,
       timestamp AS started_at, timestamp AS ended_at, agent_name
FROM events
WHERE type = 'user_message' AND message_seq IS NOT NULL
UNION ALL
SELECT session_id, any_value(turn_id) AS turn_id, message_seq AS sequence, max(sequence) AS last_sequence,
       'agent_message' AS type, chunks_in_order(string_agg(text, ''), list({KEY})) AS text,
       count(*) AS chunks, min(timestamp) AS started_at, max(timestamp) AS ended_at,
       any_value(agent_name) AS agent_name
FROM events
WHERE type = 'agent_message' AND message_seq IS NOT NULL
GROUP BY session_id, message_seq
UNION ALL
SELECT session_id, any_value(turn_id) AS turn_id, message_seq AS sequence, max(sequence) AS last_sequence,
       'thought' AS type,
       thought_in_order(string_agg(text, ''), list({KEY}), bool_or(regexp_matches(text, '[.!?:;][A-Z]'))) AS text,
       count(*) AS chunks, min(timestamp) AS started_at, max(timestamp) AS ended_at,
       any_value(agent_name) AS agent_name
FROM events
WHERE type = 'thought' AND message_seq IS NOT NULL
GROUP BY session_id, message_seq
""".replace("{KEY}", _CHUNK_KEY)

TOOL_CALLS = """
CREATE OR REPLACE VIEW tool_calls AS
SELECT session_id, turn_id, tool_call_id,
       min(sequence) AS sequence,
       arg_max(tool_name, sequence) FILTER (WHERE tool_name IS NOT NULL) AS kind,
       arg_max(title, sequence) FILTER (WHERE title IS NOT NULL) AS title,
       coalesce(arg_min(status, sequence) FILTER (WHERE type = 'tool_result'),
                arg_max(status, sequence) FILTER (WHERE status IS NOT NULL),
                'pending') AS status,
       min(timestamp) AS started_at,
       min(timestamp) FILTER (WHERE type = 'tool_result') AS ended_at,
       (epoch_us(min(timestamp) FILTER (WHERE type = 'tool_result')) - epoch_us(min(timestamp))) / 1000.0
           AS duration_ms,
       list_sort(list_distinct(flatten(list(json_extract_string(content, '$.raw.locations[*].path'))
                             FILTER (WHERE json_type(content, '$.raw.locations') = 'ARRAY')))) AS paths,
       arg_min(json_extract_string(content, '$.tool_error'), sequence) FILTER (WHERE type = 'tool_result') AS error,
       any_value(agent_name) AS agent_name
FROM events
WHERE type IN ('tool_call', 'tool_result') AND tool_call_id IS NOT NULL
GROUP BY session_id, turn_id, tool_call_id
"""

PERMISSION_REQUESTS = """
CREATE OR REPLACE VIEW permission_requests AS
WITH rows AS (
    SELECT session_id, turn_id, sequence, timestamp, agent_name,
           json_extract_string(content, ['$.request_id', '$.tool_call_id', '$.title', '$.action',
                                         '$.resource', '$.decision', '$.runtime.source', '$.error']) AS f
    FROM events
    WHERE type = 'permission'
)
SELECT session_id,
       any_value(turn_id) AS turn_id,
       -- A client method the mode or the workspace boundary refused has no request id: one row each.
       any_value(f[1]) AS request_id,
       min(sequence) AS sequence,
       any_value(f[2]) AS tool_call_id,
       any_value(f[3]) AS title,
       any_value(f[4]) AS action,
       any_value(f[5]) AS resource,
       arg_min(f[6], sequence) FILTER (WHERE f[6] IS NOT NULL) AS decision,
       arg_min(f[7], sequence) FILTER (WHERE f[6] IS NOT NULL) AS decided_by,
       min(timestamp) AS requested_at,
       min(timestamp) FILTER (WHERE f[6] IS NOT NULL) AS decided_at,
       (epoch_us(min(timestamp) FILTER (WHERE f[6] IS NOT NULL)) - epoch_us(min(timestamp))) / 1000.0
           AS wait_ms,
       arg_min(f[8], sequence) FILTER (WHERE f[6] IS NOT NULL) AS error,
       any_value(agent_name) AS agent_name
FROM rows
GROUP BY session_id, coalesce(f[1], '#' || sequence)
"""

_COSTS = """reports AS MATERIALIZED (  -- measured: half the CPU of letting DuckDB inline it
    SELECT session_id, turn_id, sequence, f[1] AS acp_session_id, TRY_CAST(f[2] AS DOUBLE) AS amount, f[3] AS currency
    FROM (SELECT session_id, turn_id, sequence,
                 json_extract_string(content, ['$.session_id', '$.usage.cost.amount', '$.usage.cost.currency']) AS f
          FROM events WHERE type = 'usage')
), stops AS (
    SELECT session_id, list(sequence) AS stops FROM events WHERE type = 'session_stopped' GROUP BY session_id
), runs AS (
    -- Each cost report with its run: how many stops came before it in its session. (An equi-join
    -- on the session: a correlated subquery would materialize the reports and stop a session filter.)
    SELECT r.session_id, r.turn_id, r.sequence, r.acp_session_id, r.amount, r.currency,
           coalesce(len(list_filter(s.stops, lambda x: x < r.sequence)), 0) AS run
    FROM reports r LEFT JOIN stops s ON s.session_id = r.session_id
    WHERE r.amount IS NOT NULL
), totals AS (
    -- Each turn's last report.
    SELECT session_id, turn_id, acp_session_id, run,
           max(sequence) AS last, arg_max(amount, sequence) AS total, arg_max(currency, sequence) AS currency
    FROM runs
    GROUP BY session_id, turn_id, acp_session_id, run
), costs AS (
    SELECT session_id, turn_id, currency,
           CASE WHEN lag(total) OVER w IS NULL OR total < lag(total) OVER w THEN total
                ELSE total - lag(total) OVER w END AS cost
    FROM totals
    WINDOW w AS (PARTITION BY session_id, acp_session_id, run ORDER BY last)
)"""
"""The cost CTEs shared by ``turns`` and ``session_summary``: ``costs(session_id, turn_id, currency,
cost)``, each turn's own cost (module docstring)."""

TURNS = """
CREATE OR REPLACE VIEW turns AS
WITH prompts AS (
    SELECT session_id, turn_id, sequence, text AS prompt, timestamp AS started_at, agent_name
    FROM events
    WHERE type = 'user_message'
), ends AS (
    SELECT session_id, turn_id, max(timestamp) AS ended_at,
           arg_max(f[1], sequence) AS stop_reason, arg_max(f[2], sequence) AS error
    FROM (SELECT session_id, turn_id, sequence, timestamp,
                 json_extract_string(content, ['$.stop_reason', '$.error']) AS f  -- one parse per row
          FROM events WHERE type = 'done')
    GROUP BY session_id, turn_id
), errors AS (
    SELECT session_id, turn_id, arg_max(json_extract_string(content, '$.error'), sequence) AS error
    FROM events
    WHERE type = 'error' AND turn_id IS NOT NULL
    GROUP BY session_id, turn_id
), {COSTS}
SELECT p.session_id, p.turn_id, p.sequence, p.prompt, p.started_at, e.ended_at,
       (epoch_us(e.ended_at) - epoch_us(p.started_at)) / 1000.0 AS duration_ms,
       e.stop_reason, coalesce(e.error, x.error) AS error,
       u.input_tokens, u.output_tokens, u.thought_tokens, u.total_tokens,
       c.cost, c.currency,
       p.agent_name
FROM prompts p
LEFT JOIN ends e ON e.session_id = p.session_id AND e.turn_id = p.turn_id
LEFT JOIN errors x ON x.session_id = p.session_id AND x.turn_id = p.turn_id
LEFT JOIN token_usage u ON u.session_id = p.session_id AND u.turn_id = p.turn_id
LEFT JOIN costs c ON c.session_id = p.session_id AND c.turn_id = p.turn_id
""".replace("{COSTS}", _COSTS.strip())

SESSION_SUMMARY = """
CREATE OR REPLACE VIEW session_summary AS
WITH ev AS (
    SELECT session_id, count(*) AS events, max(timestamp) AS last_event_at
    FROM events
    GROUP BY session_id
), calls AS (
    SELECT session_id, count(DISTINCT (turn_id, tool_call_id)) AS tool_calls
    FROM events
    WHERE type IN ('tool_call', 'tool_result') AND tool_call_id IS NOT NULL
    GROUP BY session_id
), prompts AS (
    SELECT session_id, count(*) AS turns FROM events WHERE type = 'user_message' GROUP BY session_id
), tokens AS (
    SELECT session_id,
           sum(input_tokens)::BIGINT AS input_tokens, sum(output_tokens)::BIGINT AS output_tokens,
           sum(thought_tokens)::BIGINT AS thought_tokens, sum(total_tokens)::BIGINT AS total_tokens
    FROM token_usage GROUP BY session_id
), {COSTS}, spent AS (
    SELECT session_id, sum(cost) AS cost, any_value(currency) AS currency FROM costs GROUP BY session_id
)
SELECT s.id AS session_id, s.name, s.agent_name, s.type, s.permissions, s.state, s.stop_reason,
       s.failure_kind, s.created_at, s.updated_at,
       coalesce(prompts.turns, 0) AS turns,
       coalesce(calls.tool_calls, 0) AS tool_calls,
       coalesce(ev.events, 0) AS events,
       tokens.input_tokens, tokens.output_tokens, tokens.thought_tokens, tokens.total_tokens,
       spent.cost, spent.currency,
       ev.last_event_at,
       (epoch_us(coalesce(ev.last_event_at, s.updated_at)) - epoch_us(s.created_at)) / 1000.0 AS duration_ms
FROM sessions s
LEFT JOIN ev ON ev.session_id = s.id
LEFT JOIN calls ON calls.session_id = s.id
LEFT JOIN prompts ON prompts.session_id = s.id
LEFT JOIN tokens ON tokens.session_id = s.id
LEFT JOIN spent ON spent.session_id = s.id
""".replace("{COSTS}", _COSTS.strip())

UTC_DAY = """
CREATE OR REPLACE MACRO utc_day(ts) AS DATE '1970-01-01' + CAST(epoch_us(ts) // 86400000000 AS INTEGER)
"""
"""``utc_day(timestamp)``: the UTC date of a timestamp, for per-day questions. The same as
``timestamp::DATE`` in the store's UTC zone, without ICU's zone arithmetic (8x faster)."""

VIEWS: tuple[tuple[str, str], ...] = (
    ("messages", MESSAGES),
    ("tool_calls", TOOL_CALLS),
    ("permission_requests", PERMISSION_REQUESTS),
    ("turns", TURNS),
    ("session_summary", SESSION_SUMMARY),
)
VIEW_NAMES: frozenset[str] = frozenset(name for name, _ in VIEWS)
"""The views users may query next to the store's tables (``%%agh sql``)."""

# -- stores made before the derived columns -----------------------------------------------------

_ADD_DERIVED = (
    "ALTER TABLE events ADD COLUMN IF NOT EXISTS text VARCHAR",
    "ALTER TABLE events ADD COLUMN IF NOT EXISTS tool_call_id VARCHAR",
    "ALTER TABLE events ADD COLUMN IF NOT EXISTS tool_name VARCHAR",
    "ALTER TABLE events ADD COLUMN IF NOT EXISTS title VARCHAR",
    "ALTER TABLE events ADD COLUMN IF NOT EXISTS status VARCHAR",
    "ALTER TABLE events ADD COLUMN IF NOT EXISTS message_seq BIGINT",
)
# The same values as ``derived_columns.derived_fields`` gives a row when it is queued.
_FILL_FIELDS = """
UPDATE events SET
    text = CASE WHEN json_type(content, '$.text') = 'VARCHAR' THEN json_extract_string(content, '$.text') END,
    tool_call_id = CASE WHEN json_type(content, '$.tool_call_id') IN ('VARCHAR', 'BIGINT', 'UBIGINT')
                        THEN json_extract_string(content, '$.tool_call_id') END,
    tool_name = CASE WHEN json_type(content, '$.tool_name') = 'VARCHAR' THEN json_extract_string(content, '$.tool_name') END,
    title = CASE WHEN json_type(content, '$.title') = 'VARCHAR' THEN json_extract_string(content, '$.title') END,
    status = CASE WHEN type NOT IN ('tool_call', 'tool_result') THEN NULL
                  WHEN json_type(content, '$.raw.status') = 'VARCHAR' THEN json_extract_string(content, '$.raw.status')
                  WHEN type = 'tool_call' THEN NULL
                  WHEN json_extract_string(content, '$.runtime.repair') = 'true' THEN 'interrupted'
                  WHEN coalesce(json_type(content, '$.tool_error'), 'NULL') <> 'NULL'
                       THEN 'failed'
                  ELSE 'completed' END
"""
# The same runs as ``derived_columns.place_in_message``: an empty chunk is left out (it neither
# starts nor ends a message); a chunk continues the message of the row before it when that row is
# a chunk of the same type and turn; a prompt is a message of its own.
_FILL_MESSAGES = """
UPDATE events SET message_seq = m.message_seq
FROM (
    SELECT session_id, sequence,
           CASE WHEN type IN ('user_message', 'agent_message', 'thought')
                THEN min(sequence) OVER (PARTITION BY session_id, run) END AS message_seq
    FROM (
        SELECT session_id, sequence, type,
               sum(starts) OVER (PARTITION BY session_id ORDER BY sequence ROWS UNBOUNDED PRECEDING) AS run
        FROM (
            SELECT session_id, sequence, type,
                   CASE WHEN type IN ('agent_message', 'thought')
                             AND lag(type) OVER w = type
                             AND lag(turn_id) OVER w IS NOT DISTINCT FROM turn_id
                        THEN 0 ELSE 1 END AS starts
            FROM events
            WHERE NOT (type IN ('agent_message', 'thought') AND coalesce(text, '') = '')
            WINDOW w AS (PARTITION BY session_id ORDER BY sequence)
        )
    )
) m
WHERE events.session_id = m.session_id AND events.sequence = m.sequence AND m.message_seq IS NOT NULL
"""


def prepare_analytics(con: duckdb.DuckDBPyConnection) -> None:
    """Bring ``events`` up to date and create or replace every view (a writable store, on open).

    A store made before the derived columns existed gets them, filled from ``content`` in one
    transaction (about five seconds per million events, once). Views are replaced every time, so
    a store always has the views of the code that opens it.

    Raises:
        duckdb.Error: the migration or a view failed (the caller reports the store as unusable).
    """
    present = {
        row[0]
        for row in con.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'main' AND table_name = 'events'"
        ).fetchall()
    }
    if not present >= set(DERIVED_COLUMNS):
        count = int(con.execute("SELECT count(*) FROM events").fetchall()[0][0])
        logger.info("adding the derived columns to %d stored events (once)", count)
        con.execute("BEGIN TRANSACTION")
        try:
            for ddl in _ADD_DERIVED:
                con.execute(ddl)
            if count:
                con.execute(_FILL_FIELDS)
                con.execute(_FILL_MESSAGES)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    con.execute(UTC_DAY)
    for macro in (IN_SEQUENCE, CHAR_PLACES, CHUNKS_IN_ORDER, SPACED_AT_CHUNKS, THOUGHT_IN_ORDER):
        con.execute(macro)  # in this order: a macro is created after those it calls
    for _, ddl in VIEWS:
        con.execute(ddl)
