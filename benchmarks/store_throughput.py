"""How fast the DuckDB event store commits and notifies, next to a naive SQLite baseline.

Run: ``python benchmarks/store_throughput.py [--events 200000] [--rate 14000]``

Prints, for ``DuckDBStore`` driven from an asyncio loop with a live subscriber per session:

* blast: every event appended as fast as the loop can; events/s from the first append to the
  last subscriber notification (the sustained store rate), and the append -> notified latency
  (dominated by queueing, since the producer outruns any disk);
* paced: events appended at ``--rate`` per second (the pipeline's target is ~14k/s with
  p99 < 100 ms from append to visible); p50/p99/max append -> notified latency;
* baseline: the same rows into SQLite (WAL, synchronous=FULL), one transaction per event, on
  ``--baseline-events`` events, extrapolated to a rate; and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agh_nb.adapters.duckdb_schema import EVENT_COLUMNS
from agh_nb.adapters.duckdb_store import FLUSH_INTERVAL, DuckDBStore
from agh_nb.core.record import SessionRecord
from agh_nb.core.state import SessionState
from agh_nb.events import Event, EventDraft, EventType, dumps

TEXT = "The quick brown fox jumps over the lazy dog; streaming one more chunk of the answer. "


def make_record(index: int) -> SessionRecord:
    """A session row like the runtime writes before its first append."""
    now = datetime.now(timezone.utc)
    return SessionRecord(
        id=f"sess_bench{index:04d}",
        name=f"bench {index}",
        agent_name="demo",
        type="user",
        workspace_id="ws_bench",
        workspace_path="/tmp/bench-workspace",
        permissions="approve-reads",
        state=SessionState.ACTIVE,
        created_at=now,
        updated_at=now,
        acp_session_id=f"acp-{index}",
    )


def make_draft(i: int) -> EventDraft:
    """An agent_message chunk with its raw ACP payload, ~400 bytes of content JSON."""
    return EventDraft(
        EventType.AGENT_MESSAGE,
        turn_id=f"turn_{i // 1000}",
        fields={
            "text": TEXT,
            "raw": {
                "sessionUpdate": "agent_message_chunk",
                "content": {"type": "text", "text": TEXT},
            },
        },
    )


class Probe:
    """Per-session append and notify clocks, indexed by sequence."""

    def __init__(self, sessions: int, per_session: int) -> None:
        self.appended = [[0.0] * (per_session + 2) for _ in range(sessions)]
        self.notified = [[0.0] * (per_session + 2) for _ in range(sessions)]
        self.count = 0
        self.last_notify = 0.0

    def callback(self, session: int):  # type: ignore[no-untyped-def]
        notified = self.notified[session]

        def on_events(events: Sequence[Event]) -> None:
            now = time.perf_counter()
            for event in events:
                notified[event.sequence] = now
            self.count += len(events)
            self.last_notify = now

        return on_events

    def latencies_ms(self) -> list[float]:
        out: list[float] = []
        for appended, notified in zip(self.appended, self.notified, strict=True):
            out.extend((n - a) * 1000.0 for a, n in zip(appended, notified, strict=True) if a and n)
        out.sort()
        return out


def pct(sorted_values: list[float], q: float) -> float:
    """The q-quantile of already sorted values."""
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


class Result:
    """What one run measured."""

    def __init__(
        self, rate: float, append_rate: float, latencies: list[float], cpu_us: float
    ) -> None:
        self.rate = rate  # events/s, first append -> last notification
        self.append_rate = append_rate  # events/s of the append calls alone
        self.latencies = latencies  # sorted append -> notified, ms
        self.cpu_us = cpu_us  # process CPU time per event, all threads


async def run_store(
    path: Path, events: int, sessions: int, rate: float | None, flush: float, batch: int
) -> Result:
    """Append ``events`` through a fresh store with one live subscriber per session."""
    records = [make_record(i) for i in range(sessions)]
    per_session = events // sessions + 1
    probe = Probe(sessions, per_session)
    store = DuckDBStore.open(path, flush_interval=flush, max_batch=batch)
    try:
        for record in records:
            await store.save_session(record)
        subs = [store.subscribe(r.id, 0, probe.callback(i)) for i, r in enumerate(records)]
        drafts = [make_draft(i) for i in range(1000)]
        cpu_start = time.process_time()
        start = time.perf_counter()
        chunk = 200
        for base in range(0, events, chunk):
            if rate is not None:
                delay = start + base / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            for i in range(base, min(base + chunk, events)):
                s = i % sessions
                t = time.perf_counter()
                event = store.append(records[s], drafts[i % 1000])
                probe.appended[s][event.sequence] = t
            await asyncio.sleep(0)  # let the loop breathe, as the runtime would
        appended = time.perf_counter()
        await store.flush()
        while probe.count < events:
            await asyncio.sleep(0.001)
        elapsed = probe.last_notify - start
        cpu = time.process_time() - cpu_start
        for sub in subs:
            sub.close()
    finally:
        await store.aclose()
    return Result(
        events / elapsed, events / (appended - start), probe.latencies_ms(), cpu / events * 1e6
    )


def run_sqlite(path: Path, events: int) -> float:
    """Write ``events`` rows to SQLite, one WAL + synchronous=FULL transaction each; rows/s."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute(
        "CREATE TABLE events (id TEXT, session_id TEXT, sequence INTEGER, turn_id TEXT, type TEXT,"
        " agent_name TEXT, workspace_id TEXT, workspace_path TEXT, content TEXT, timestamp TEXT,"
        " PRIMARY KEY (session_id, sequence))"
    )
    insert = f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' * 10)})"
    record = make_record(0)
    start = time.perf_counter()
    for i in range(events):
        draft = make_draft(i)
        con.execute("BEGIN")
        con.execute(
            insert,
            (
                f"evt_{i:032x}",
                record.id,
                i + 1,
                draft.turn_id,
                str(draft.type),
                record.agent_name,
                record.workspace_id,
                record.workspace_path,
                dumps(draft.fields),
                draft.timestamp.isoformat(),
            ),
        )
        con.execute("COMMIT")
    elapsed = time.perf_counter() - start
    con.close()
    return events / elapsed


def main() -> None:
    """Parse arguments, run the three measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--rate", type=float, default=14_000.0, help="paced run, events/s")
    parser.add_argument("--paced-events", type=int, default=100_000)
    parser.add_argument("--baseline-events", type=int, default=5_000)
    parser.add_argument("--flush-interval", type=float, default=FLUSH_INTERVAL)
    parser.add_argument("--max-batch", type=int, default=5000)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the files")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"machine: {os.cpu_count()} CPUs, load average {load} (other work skews every rate)")
        knobs = f"flush_interval={args.flush_interval}s max_batch={args.max_batch}"
        blast = asyncio.run(
            run_store(
                root / "blast.duckdb",
                args.events,
                args.sessions,
                None,
                args.flush_interval,
                args.max_batch,
            )
        )
        print(f"DuckDBStore blast ({args.events} events, {args.sessions} sessions, {knobs})")
        print(
            f"  committed+notified: {blast.rate:12,.0f} events/s"
            f"   (append calls alone {blast.append_rate:,.0f}/s)"
        )
        print(
            f"  CPU per event:      {blast.cpu_us:12.1f} us (all threads; GIL-bound ceiling"
            f" ~{1e6 / blast.cpu_us:,.0f} events/s)"
        )
        print(f"  append->notified:   {latency(blast.latencies)}  (queueing: producer outruns)")
        paced = asyncio.run(
            run_store(
                root / "paced.duckdb",
                args.paced_events,
                args.sessions,
                args.rate,
                args.flush_interval,
                args.max_batch,
            )
        )
        print(f"DuckDBStore paced at {args.rate:,.0f}/s ({args.paced_events} events)")
        print(f"  achieved:           {paced.rate:12,.0f} events/s")
        print(f"  append->notified:   {latency(paced.latencies)}")
        base = run_sqlite(root / "baseline.sqlite", args.baseline_events)
        print(
            f"SQLite baseline (WAL, synchronous=FULL, 1 txn/event, {args.baseline_events} events)"
        )
        print(f"  {base:12,.0f} events/s")
        print(f"ratio DuckDBStore blast / SQLite: {blast.rate / base:,.1f}x")


def latency(sorted_ms: list[float]) -> str:
    """p50/p99/max of sorted latencies, formatted."""
    worst = sorted_ms[-1] if sorted_ms else float("nan")
    return (
        f"p50 {pct(sorted_ms, 0.5):8.1f} ms  p99 {pct(sorted_ms, 0.99):8.1f} ms"
        f"  max {worst:8.1f} ms"
    )


if __name__ == "__main__":
    main()
