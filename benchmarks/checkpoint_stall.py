"""How long DuckDB's checkpoint holds up a steady stream of event commits, and what avoids it.

Run: ``python benchmarks/checkpoint_stall.py [--seconds 60] [--rate 5000] [--prefill 1000000]``

Why it exists: the server host's paced p99 (``benchmarks/server.py``, issue 14: 50 sessions x 100
events/s, target 250 ms) is set by stalls of 0.5-0.9 s that line up with DuckDB's automatic
checkpoint, which folds the write-ahead log into the database file once it passes
``CHECKPOINT_THRESHOLD``. This script reproduces that stall without the rest of agh_nb, on the
store's real ``events`` table (its DDL and threshold are imported), and measures two ways around
it, so that the next change to the store starts from figures rather than guesses. The store now
works the way leg 3 does, refined (``agh_nb/adapters/duckdb_stage.py``): two attached files in
turn, so the writer never commits to the file being emptied and checkpointed, and the session
rows written by the mover thread, away from the events (leg 4 shows why).

One writer thread commits ``--rate`` rows per second in commits of 100 (one every 20 ms, the
store's group-commit interval), with rows shaped like the server's ``agent_message`` events.
Four legs, each ``--seconds`` long, on a fresh file holding ``--prefill`` rows:

1. ``one table``: rows go into ``events``, as the store did before its stage files.
2. ``hot table, same file``: rows go into a second table of the same file, and a mover thread
   moves them into ``events`` once a second (one transaction). This shows whether a stall is
   confined to the table being checkpointed.
3. ``hot table, attached file``: rows go into a table of a second database file ``ATTACH``-ed to
   the first; the mover inserts them into ``events`` (one transaction on the main file) and then
   deletes them from the attached one (a second transaction: DuckDB lets one transaction write to
   one database only), then checkpoints the attached file, whose WAL then never holds more than
   a second of rows. Each file has its own WAL and checkpoint.
4. ``attached file + session rows``: leg 3, plus what the store's writer also does between event
   commits: after each one, a session row (a table with a primary key, like ``sessions``) is
   upserted in the main file, in a transaction of its own. DuckDB takes the checkpoint lock for
   writes to a keyed table, so this shows whether session rows could stay in the main file.

Printed per leg: the event commit latency p50/p99/max, how many commits took over 50 ms and how much
of the leg they covered, and the p99 as a ratio of leg 1's (same run); for leg 4 also the
session upserts' max and how many took over 50 ms. The last line is one JSON
object with every figure. Nothing here is a test: these machines are noisy; read the ratios.

Measured here (2 cores, 60 s legs, 5,000 rows/s; December 2026, DuckDB 2.0.1; two runs): one
table max 621-648 ms (a checkpoint stall every ~34 s); hot table in the same file max
1,196-1,357 ms (the checkpoint holds commits to every table of its file); hot table in an
attached file max 32-34 ms, no commit over 50 ms (left to the threshold instead of checkpointed
after each move, the attached file's own checkpoint stalled the writer 84-432 ms); with session
rows upserted in the main file, the events still never waited over 41 ms but an upsert waited
1,026 ms: session rows would have to move to the attached file as well.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import loadavg, pct  # noqa: E402

from agh_nb.adapters.duckdb_schema import DDL  # noqa: E402
from agh_nb.adapters.duckdb_store import CHECKPOINT_THRESHOLD  # noqa: E402

BATCH = 100
STALL_MS = 50.0

_EVENTS_DDL = next(s for s in DDL if "CREATE TABLE IF NOT EXISTS events (" in s)

# One agent_message row as the server stores it: derived columns filled, content a typical
# chunk's envelope (a few hundred bytes of JSON).
_ROWS = """
INSERT INTO {table}
SELECT 'evt_' || md5(range::VARCHAR), 'sess_' || (range % 50), range, 'turn_x', 'agent_message', 'demo-fast',
       'ws_x', '/work/x',
       ('{{"schema":"agh.session.event.v1","type":"agent_message","session_id":"acp-' || (range % 50)
        || '","turn_id":"turn_x","timestamp":"2026-12-03T12:00:00.000000Z","text":"' || range
        || ' ","raw":{{"content":{{"text":"' || range || ' ","type":"text"}},"sessionUpdate":"agent_message_chunk",'
        || '"_meta":{{"agh_demo_sent_at":1796303714.123456,"agh_demo_index":' || range || '}}}}}}')::JSON,
       now(), range || ' ', NULL, NULL, NULL, NULL, range - (range % 10)
FROM range(?, ?)
"""


def run_leg(leg: str, parent: Path, seconds: float, rate: float, prefill: int) -> dict[str, Any]:
    """One leg on fresh files (removed afterwards); returns its figures."""
    directory = parent / leg
    directory.mkdir()
    main_path = directory / "store.duckdb"
    stage_path = directory / "stage.duckdb"
    con = duckdb.connect(str(main_path))
    con.execute(f"SET checkpoint_threshold = '{CHECKPOINT_THRESHOLD}'")
    con.execute(_EVENTS_DDL)
    if prefill:
        con.execute(_ROWS.format(table="events"), [-prefill, 0])
        con.execute("CHECKPOINT")
    target = "events"
    if leg == "same-file":
        con.execute(_EVENTS_DDL.replace("events (", "events_hot (", 1))
        target = "events_hot"
    elif leg in ("attached", "sessions"):
        con.execute(f"ATTACH '{stage_path}' AS stage")
        con.execute(_EVENTS_DDL.replace("events (", "stage.events_hot (", 1))
        target = "stage.events_hot"
    if leg == "sessions":
        con.execute("CREATE TABLE sessions (id VARCHAR PRIMARY KEY, state VARCHAR NOT NULL, updated_at TIMESTAMPTZ)")
        con.execute("INSERT INTO sessions SELECT 'sess_' || range, 'running', now() FROM range(50)")

    stop = threading.Event()
    commits: list[tuple[float, float]] = []  # (start, seconds)
    upserts: list[float] = []
    moves: list[float] = []
    errors: list[str] = []

    def writer() -> None:
        cur = con.cursor()
        period = BATCH / rate
        next_at = time.perf_counter()
        first = 0
        try:
            while not stop.is_set():
                start = time.perf_counter()
                cur.execute(_ROWS.format(table=target), [first, first + BATCH])
                commits.append((start, time.perf_counter() - start))
                if leg == "sessions":
                    start = time.perf_counter()
                    cur.execute("INSERT OR REPLACE INTO sessions VALUES (?, 'running', now())",
                                [f"sess_{(first // BATCH) % 50}"])
                    upserts.append(time.perf_counter() - start)
                first += BATCH
                next_at += period
                time.sleep(max(0.0, next_at - time.perf_counter()))
        except duckdb.Error as exc:
            errors.append(f"writer: {exc}")

    def mover() -> None:
        cur = con.cursor()
        try:
            while not stop.wait(1.0):
                start = time.perf_counter()
                through = cur.execute(f"SELECT max(sequence) FROM {target}").fetchall()[0][0]
                if through is None:
                    continue
                if leg == "same-file":
                    cur.execute("BEGIN TRANSACTION")
                    cur.execute(f"INSERT INTO events SELECT * FROM {target} WHERE sequence <= ?", [through])
                    cur.execute(f"DELETE FROM {target} WHERE sequence <= ?", [through])
                    cur.execute("COMMIT")
                else:
                    cur.execute(f"INSERT INTO events SELECT * FROM {target} WHERE sequence <= ?", [through])
                    cur.execute(f"DELETE FROM {target} WHERE sequence <= ?", [through])
                    # Left to the threshold, the attached file's own checkpoint comes due with
                    # the main file's (same volume) and stalls the writer 0.1-0.4 s; folded
                    # after every move, its WAL holds a second of rows and costs milliseconds.
                    cur.execute("CHECKPOINT stage")
                moves.append(time.perf_counter() - start)
        except duckdb.Error as exc:
            errors.append(f"mover: {exc}")

    threads = [threading.Thread(target=writer)]
    if leg != "one-table":
        threads.append(threading.Thread(target=mover))
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    stored = con.execute("SELECT count(*) FROM events").fetchall()[0][0]
    if leg != "one-table":
        stored += con.execute(f"SELECT count(*) FROM {target}").fetchall()[0][0]
    con.close()
    shutil.rmtree(directory)  # the next leg starts with the disk as this one found it
    latencies = sorted(d * 1000.0 for _, d in commits)
    upsert_ms = sorted(u * 1000.0 for u in upserts)
    stalls = [d * 1000.0 for _, d in commits if d * 1000.0 > STALL_MS]
    return {
        "leg": leg,
        "commits": len(commits),
        "rows_expected": len(commits) * BATCH + prefill,
        "rows_stored": stored,
        "p50_ms": round(pct(latencies, 0.50), 2),
        "p99_ms": round(pct(latencies, 0.99), 2),
        "max_ms": round(latencies[-1], 1) if latencies else float("nan"),
        "stalls_over_50ms": len(stalls),
        "stalled_share": round(sum(stalls) / 1000.0 / seconds, 4),
        "upsert_max_ms": round(upsert_ms[-1], 1) if upsert_ms else None,
        "upserts_over_50ms": sum(u > STALL_MS for u in upsert_ms) if upsert_ms else None,
        "move_p50_ms": round(pct(sorted(m * 1000.0 for m in moves), 0.5), 1) if moves else None,
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each leg (default 60)")
    parser.add_argument("--rate", type=float, default=5000.0, help="rows per second (default 5000: 50 sessions x 100)")
    parser.add_argument("--prefill", type=int, default=1_000_000, help="rows in events before each leg")
    args = parser.parse_args()
    print(f"checkpoint stall: {args.rate:,.0f} rows/s in commits of {BATCH} for {args.seconds:g} s per leg, "
          f"checkpoint_threshold {CHECKPOINT_THRESHOLD}, {args.prefill:,} rows before; DuckDB {duckdb.__version__}, "
          f"{os.cpu_count()} cores, load average {loadavg()}")
    results = []
    labels = {"one-table": "one table (before)", "same-file": "hot table, same file",
              "attached": "hot table, attached file", "sessions": "attached + session rows"}
    with tempfile.TemporaryDirectory(prefix="agh-checkpoint-") as temporary:
        for leg in labels:
            results.append(run_leg(leg, Path(temporary), args.seconds, args.rate, args.prefill))
            report(labels[leg], results[-1], results[0]["p99_ms"])
    print(json.dumps({"benchmark": "agh_nb.checkpoint_stall", "duckdb": duckdb.__version__,
                      "threshold": CHECKPOINT_THRESHOLD, "seconds": args.seconds, "rate": args.rate,
                      "prefill": args.prefill, "legs": results}))


def report(label: str, res: dict[str, Any], base: float) -> None:
    """Print one leg's line (and its session upserts' line, if it has any)."""
    lost = "" if res["rows_stored"] == res["rows_expected"] else f"  ROWS {res['rows_stored']:,} of {res['rows_expected']:,}"
    errors = "  " + "; ".join(res["errors"]) if res["errors"] else ""
    print(f"{label:26} commit p50 {res['p50_ms']:6.1f} ms  p99 {res['p99_ms']:6.1f} ms "
          f"(x{res['p99_ms'] / base:4.2f} of one table)  max {res['max_ms']:7.1f} ms  "
          f"{res['stalls_over_50ms']:3} commits over {STALL_MS:g} ms ({res['stalled_share']:.1%} of the time)"
          f"{lost}{errors}", flush=True)
    if res["upsert_max_ms"] is not None:
        print(f"{'':26} session upserts: max {res['upsert_max_ms']:7.1f} ms, "
              f"{res['upserts_over_50ms']} over {STALL_MS:g} ms", flush=True)


if __name__ == "__main__":
    main()
