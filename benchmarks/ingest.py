"""End-to-end ingest: a real ACP agent firehose into agh_nb, next to a bare SDK client and SQLite.

Run: ``python benchmarks/ingest.py [--n 50000] [--quick] [--sqlite-n N] [--repeat K] [--profile]
[--with-secret] [--no-driver] [--no-kernel] [--no-slow]``

One run measures, against the built-in demo agent (``python -m agh_nb.agents.demo --fast``)
answering ``firehose N`` (N ``agent_message_chunk`` updates, each stamped with ``_meta``
``agh_demo_sent_at`` / ``agh_demo_index``):

1. agh_nb: an embedded ``Runtime`` + ``Host`` in a temporary ``AGH_HOME``; ``host.create`` a
   session of the ``demo-fast`` preset, ``host.store.subscribe`` to it, ``host.prompt(...)``.
   events/s = N / (prompt submission -> the last ``agent_message`` committed and delivered to the
   subscriber); latency = agent's ``agh_demo_sent_at`` -> subscriber delivery (stored and visible),
   split at the event's own ``timestamp`` (taken when the runtime mapped it) into ingest queueing
   and store (group commit + notify) time. Also checks every event arrived once, in order, gapless.
2. ceiling: a bare ``acp.spawn_agent_process`` client whose ``session_update`` only counts; same
   agent, same prompt, nothing persisted.
3. SQLite: the bare client again, but each update is mapped as agh_nb maps it (same ``content``
   envelope) and written in its own durable SQLite transaction (WAL, ``synchronous=FULL``) with
   the columns of agh_nb's ``events`` table: per-event durability. It runs on ``--sqlite-n``
   updates (default N/10) and reports its rate.
4. kernel: a real ipykernel (jupyter_client) with ``%load_ext agh_nb``; the turn is one cell,
   ``%agh session prompt ID firehose N --wait``, timed from sending the cell to its reply (the
   turn's ``done`` is answered only once every event is committed); the stored rows are counted.
5. paced: agh_nb again, with the agent sending ``PACED_RATE`` (2,000) updates a second on a fixed
   schedule for ``PACED_SECONDS``: the latency from the agent's write to stored-and-visible when
   the pipeline keeps up. (In the firehose the agent outruns every consumer, the ceiling
   included, so its latencies measure how long the backlog is, bounded by the pipe and our read
   buffer; they are printed too.)
6. slow subscriber: legs 1 (in every round) and 5 again with a second subscriber that sleeps
   ``SLOW_SUBSCRIBER_SECONDS`` (50 ms) on every batch it is handed: the probe's rate and p99 show
   whether commits (and other subscribers) wait for it; it must still get every event, in order.
7. ratios agh_nb/ceiling and kernel/ceiling (target >= 0.9), agh_nb/SQLite (target >= 5x), paced
   p99 < 50 ms, slow subscriber (>= 0.9 of the agh_nb rate, paced p99 < 50 ms), each with
   PASS/MISS. Informational only: the exit code is 0 whatever the figures.

Diagnostics: a "driver" leg (agh_nb's ``AcpDriver`` with a counting listener, nothing stored;
``--no-driver`` skips it) separates the ingest path's cost from the store's; every leg reports
CPU seconds and microseconds per event of each process (and, for agh_nb, of its runtime loop
and store writer threads), which stay meaningful on a busy machine where rates do not; a
"CPU-bound estimate" turns those into the rates an idle machine would allow. ``--repeat K``
interleaves K rounds and keeps the best rate of each leg; it also prints each round's own
ratios against that round's ceiling run (the legs compared with it run right after it), which a
machine whose speed drifts from round to round affects far less. ``--profile`` runs agh_nb once more
under per-thread cProfile and prints where each thread's time goes, by component.

The last line printed is one JSON object with every figure.

Clocks: latencies compare the agent's ``time.time()`` with ours (same machine, same clock).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import os
import pstats
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import acp  # noqa: E402
from acp import schema  # noqa: E402

from agh_nb.adapters.acp_driver import AcpDriver  # noqa: E402
from agh_nb.adapters.acp_transport import STREAM_LIMIT  # noqa: E402
from agh_nb.adapters.acp_mapping import map_update  # noqa: E402
from agh_nb.adapters.duckdb_schema import EVENT_COLUMNS  # noqa: E402
from agh_nb.api import Host  # noqa: E402
from agh_nb.core.ports import LaunchSpec  # noqa: E402
from agh_nb.events import Event, build_content, dumps, utcnow  # noqa: E402
from agh_nb.runtime import Runtime  # noqa: E402

AGENT_PRESET = "demo-fast"
AGENT_ARGV = (sys.executable, "-m", "agh_nb.agents.demo", "--fast")
TARGET_CEILING_RATIO = 0.9
TARGET_SQLITE_RATIO = 5.0
TARGET_P99_MS = 50.0
SLOW_SUBSCRIBER_SECONDS = 0.05
"""What the deliberately slow subscriber takes per batch it is handed (a heavy widget re-render)."""
PACED_RATE = 2000.0
"""Events/s of the latency leg: far above what a model streams, well below what saturates us."""
PACED_SECONDS = 5.0
DELIVERY_TIMEOUT = 600.0
RUNTIME_THREAD = "agh-runtime"
WRITER_THREAD = "agh-nb-store-writer"


def _stat_cpu(path: str) -> float | None:
    """utime + stime in seconds from a /proc ``stat`` file (None where /proc is unavailable)."""
    try:
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(name: str) -> float | None:
    """CPU seconds used so far by this process's thread called ``name`` (Linux only)."""
    for thread in threading.enumerate():
        if thread.name == name and thread.native_id is not None:
            return _stat_cpu(f"/proc/self/task/{thread.native_id}/stat")
    return None


def process_cpu(pid: int | None) -> float | None:
    """CPU seconds used so far by process ``pid`` (Linux only)."""
    return _stat_cpu(f"/proc/{pid}/stat") if pid else None


def demo_agent_pids() -> list[int]:
    """Pids of the demo agents this process spawned, found through /proc: every descendant whose
    command line runs the demo (sandboxed, the agent is a grandchild, under bubblewrap's processes)."""
    parents: dict[int, int] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    mine = {os.getpid()}
    changed = True
    while changed:  # the descendants of this process
        changed = False
        for pid, ppid in parents.items():
            if ppid in mine and pid not in mine:
                mine.add(pid)
                changed = True
    found = []
    for pid in sorted(mine - {os.getpid()}):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"agh_nb.agents.demo" in argv and b"bwrap" not in argv[0]:
            found.append(pid)
    return found


def agents_cpu(pids: Sequence[int]) -> float | None:
    """CPU seconds used so far by the processes ``pids`` together (None without /proc)."""
    values = [process_cpu(pid) for pid in pids]
    return sum(v for v in values if v is not None) if pids and None not in values else None


def delta(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


def fmt_cpu(cpu: dict[str, float | None], wall: float, n: int) -> str:
    """``name 1.23 s = 45% of wall, 61 us/event`` for each known figure."""
    parts = [
        f"{k:<15s}{v:6.2f} s  {100 * v / wall:4.0f}% of wall  {1e6 * v / n:5.0f} us/event"
        for k, v in cpu.items()
        if v is not None
    ]
    return "\n                 ".join(parts) if parts else "n/a (no /proc)"


def rate_figures(n: int, seconds: float, latencies: list[float]) -> dict[str, float]:
    """The figures every leg reports: count, time, rate and p50/p99 latency (ms)."""
    lat = sorted(latencies)
    return {"n": n, "seconds": seconds, "events_per_s": n / seconds, "p50_ms": pct(lat, 0.50), "p99_ms": pct(lat, 0.99)}


def pct(sorted_values: Sequence[float], q: float) -> float:
    """The q-quantile (nearest rank) of already sorted values; NaN when empty."""
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


# -- 1. agh_nb ------------------------------------------------------------------------------



_SENT = re.compile(r'"agh_demo_sent_at":([0-9.eE+-]+)')
_INDEX = re.compile(r'"agh_demo_index":(-?[0-9]+)')


def _stamps(event: Event) -> tuple[float | None, int]:
    """The agent's send time and index of a chunk. Read from the stored text when the event has
    it, as the server benchmark's SSE clients do: like the bare client, which only counts, the
    probe should not spend more per event than the host it measures (decoding every row's
    content cost the probe ~3 us an event on the subscriber thread, under the same GIL)."""
    if event.content_text is not None:
        sent = _SENT.search(event.content_text)
        index = _INDEX.search(event.content_text)
        return (float(sent.group(1)) if sent else None), (int(index.group(1)) if index else -1)
    meta = (event.content.get("raw") or {}).get("_meta") or {}
    sent_at = meta.get("agh_demo_sent_at")
    return (float(sent_at) if sent_at is not None else None), int(meta.get("agh_demo_index", -1))


class Probe:
    """The subscriber: runs on its subscription's delivery thread; it only stamps and extracts numbers.

    It keeps no event: holding 50,000 rows (and their content dicts) alive would make every
    full garbage collection of the process walk them, a cost of the benchmark, not of agh_nb.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.sizes: list[int] = []
        self.sequences: list[int] = []
        self.indexes: list[int] = []
        self.latencies: list[float] = []  # sent -> stored and delivered
        self.ingest: list[float] = []  # sent -> mapped on the runtime loop (the event's own timestamp)
        self.store: list[float] = []  # mapped -> committed and delivered
        self.messages = 0
        self.last_delivery: float | None = None  # perf_counter of the N-th agent_message
        self.last_message_sequence = 0  # the newest sequence delivered with it
        self.complete = threading.Event()
        self.on_first: Any = None
        self.on_last: Any = None

    def __call__(self, events: Sequence[Event]) -> None:
        wall, perf = time.time(), time.perf_counter()
        if self.on_first is not None:
            hook, self.on_first = self.on_first, None
            hook()
        self.sizes.append(len(events))
        for e in events:
            self.sequences.append(e.sequence)
            if e.type != "agent_message":
                continue
            self.messages += 1
            sent, index = _stamps(e)
            if sent is not None:
                mapped = e.timestamp.timestamp()
                self.latencies.append((wall - sent) * 1000.0)
                self.ingest.append((mapped - sent) * 1000.0)
                self.store.append((wall - mapped) * 1000.0)
                self.indexes.append(index)
        if self.messages >= self.n and self.last_delivery is None:
            self.last_delivery = perf
            self.last_message_sequence = self.sequences[-1]
            if self.on_last is not None:
                self.on_last()
            self.complete.set()

    def analyse(self) -> dict[str, Any]:
        """Latencies of every agent_message, and order/gap checks on what was delivered."""
        latencies, ingest, store = sorted(self.latencies), sorted(self.ingest), sorted(self.store)
        sequences, sizes = self.sequences, self.sizes
        gapless = sequences == list(range(sequences[0], sequences[0] + len(sequences))) if sequences else False
        return {
            "latencies": latencies,
            "ingest_p50_ms": pct(ingest, 0.50),
            "ingest_p99_ms": pct(ingest, 0.99),
            "store_p50_ms": pct(store, 0.50),
            "store_p99_ms": pct(store, 0.99),
            "in_order": self.indexes == list(range(len(self.indexes))),
            "gapless": gapless,
            "batches": len(sizes),
            "mean_batch": sum(sizes) / len(sizes) if sizes else 0.0,
        }


class ThreadProfiles:
    """cProfile on the runtime loop thread and on the store writer thread (Python 3.11: per thread).

    The writer's profile covers its commits (each ``_process`` call runs under the profiler, on
    the writer thread): its idle waits are not work.
    """

    def __init__(self, runtime: Runtime, writer: Any) -> None:
        self.runtime = runtime
        self.loop_prof = cProfile.Profile()
        self.writer_prof = cProfile.Profile()
        self.writer = writer
        self.writer_process = writer._process
        self.writer_on = False

        def profiled(ops: Any) -> None:
            if self.writer_on:
                self.writer_prof.runcall(self.writer_process, ops)
            else:
                self.writer_process(ops)

        writer._process = profiled

    def start_loop(self) -> None:
        async def enable() -> None:
            self.loop_prof.enable()

        self.runtime.call(enable)

    def stop_loop(self) -> None:
        async def disable() -> None:
            self.loop_prof.disable()

        self.runtime.call(disable)

    def start_writer(self) -> None:
        self.writer_on = True

    def stop_writer(self) -> None:
        self.writer_on = False

    @staticmethod
    def report(prof: cProfile.Profile, title: str, top: int) -> str:
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out)
        total = stats.total_tt  # type: ignore[attr-defined]
        out.write(f"--- {title}: {total:.2f} s of Python time under cProfile ---\n")
        out.write(
            "by component (own time + the C functions it calls; json.loads/dumps shown apart as [json];\n"
            " DuckDB's pybind11 calls are invisible to cProfile: their wall time, GIL waits included,\n"
            " is the own time of the agh_nb function that calls execute()):\n"
        )
        for name, seconds in grouped_times(stats):
            out.write(f"  {name:<44s}{seconds:7.2f} s  {100 * seconds / total:5.1f}%\n")
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
        return out.getvalue()


# Where a function's own time is charged, by the file it is defined in (first match wins).
COMPONENTS = (
    ("agh_nb/adapters/acp_transport", "agh_nb acp_transport (framing, session/update)"),
    ("agh_nb/adapters/acp_updates", "agh_nb acp_updates (map_raw_update)"),
    ("agh_nb/adapters/acp_client", "agh_nb acp_client (Client)"),
    ("agh_nb/adapters/acp_driver", "agh_nb acp_driver"),
    ("agh_nb/adapters/acp_mapping", "agh_nb acp_mapping (map_update, dump)"),
    ("agh_nb/adapters/derived_columns", "agh_nb derived_columns"),
    ("agh_nb/adapters/duckdb_writer", "agh_nb duckdb_writer"),
    ("agh_nb/adapters/duckdb_schema", "agh_nb duckdb_schema (Arrow batch)"),
    ("agh_nb/adapters/duckdb_store", "agh_nb duckdb_store"),
    ("agh_nb/events", "agh_nb events (content envelope)"),
    ("agh_nb/core/redaction", "agh_nb core redaction"),
    ("agh_nb/core/stream_redaction", "agh_nb core stream_redaction"),
    ("agh_nb/core", "agh_nb core (session, turns, clock)"),
    ("benchmarks/", "benchmark subscriber"),
    ("site-packages/acp/", "acp SDK (framing, routing, tasks)"),
    ("pydantic", "pydantic (SDK validation)"),
    ("site-packages/duckdb", "duckdb python glue"),
    ("site-packages/pyarrow", "pyarrow python glue"),
    ("asyncio/", "asyncio (loop, streams, tasks)"),
    ("/selectors.py", "idle (the loop's epoll wait)"),
    ("uuid", "uuid"),
    ("threading", "threading"),
)
_JSON_ENTRIES = ("loads", "dumps")


def _component(file: str) -> str | None:
    if file == "~" or "/json/" in file:
        return None  # charged to the caller
    for needle, name in COMPONENTS:
        if needle in file:
            return name
    return "other Python"


def grouped_times(stats: pstats.Stats) -> list[tuple[str, float]]:
    """Own time per component; C functions and json's entry points are charged to their caller."""
    totals: dict[str, float] = {}
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (file, _line, func), (_cc, _nc, tt, _ct, callers) in raw.items():
        name = _component(file)
        if name is not None:
            totals[name] = totals.get(name, 0.0) + tt
            continue
        json_entry = "/json/" in file and func in _JSON_ENTRIES
        if file != "~" and not json_entry:
            continue  # json internals: inside an entry point's cumulative time
        for (cfile, _cl, _cf), edge in callers.items():
            owner = _component(cfile)
            if owner is None:
                continue  # called from json internals or another C function: already counted
            seconds = edge[3] if json_entry else edge[2]
            label = f"{owner} [json]" if json_entry else owner
            totals[label] = totals.get(label, 0.0) + seconds
    return sorted(totals.items(), key=lambda kv: -kv[1])


WITH_SECRET = False
"""``--with-secret``: a vault value is registered for redaction during the agh_nb legs."""


class SlowSubscriber:
    """A deliberately slow subscriber (a widget that takes ``SLOW_SUBSCRIBER_SECONDS`` to re-render
    each batch it is handed): it only sleeps, so what it could slow down is the pipeline's flow,
    not the CPU. Records sequences, to check it still gets every event once, in order."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.sequences: list[int] = []
        self.calls = 0
        self.last_delivery: float | None = None

    def __call__(self, events: Sequence[Event]) -> None:
        self.calls += 1
        self.sequences.extend(e.sequence for e in events)
        time.sleep(self.seconds)
        self.last_delivery = time.perf_counter()

    def caught_up(self, sequence: int) -> bool:
        return bool(self.sequences) and self.sequences[-1] >= sequence


def run_agh(
    n: int, *, rate: float = 0.0, profile: bool = False, top: int = 25, slow_subscriber: float = 0.0
) -> dict[str, Any]:
    """Firehose ``n`` updates (at ``rate`` a second; 0 = as fast as possible) through the embedded
    runtime; return rate and latencies. ``slow_subscriber`` > 0: a ``SlowSubscriber`` taking that
    many seconds per batch is subscribed first, next to the probe."""
    with tempfile.TemporaryDirectory(prefix="agh-bench-home-") as tmp:
        home = Path(tmp) / "home"
        workspace = Path(tmp) / "workspace"
        workspace.mkdir()
        saved_home = os.environ.get("AGH_HOME")
        os.environ["AGH_HOME"] = str(home)  # belt and braces: nothing may touch the user's store
        host = Host(Runtime.start(home=home))
        if WITH_SECRET:  # a registered secret: every chunk goes through streaming redaction
            host.vault_put("vault:providers/bench", "bench-secret-" + "7" * 40)
        profiles: ThreadProfiles | None = None
        try:
            record = host.create(AGENT_PRESET, cwd=str(workspace), name="ingest-bench")
            probe = Probe(n)
            if profile:
                profiles = ThreadProfiles(host.runtime, host.store._writer)
                profiles.start_writer()
            slow = SlowSubscriber(slow_subscriber) if slow_subscriber > 0 else None
            slow_sub = host.store.subscribe(record.id, 0, slow) if slow is not None else None
            sub = host.store.subscribe(record.id, 0, probe)
            try:
                if profiles is not None:
                    profiles.start_loop()
                agent_pids = demo_agent_pids()
                cpu0 = (time.process_time(), thread_cpu(RUNTIME_THREAD), thread_cpu(WRITER_THREAD), agents_cpu(agent_pids))
                start = time.perf_counter()
                handle = host.prompt(record.id, f"firehose {n} {rate:g}" if rate else f"firehose {n}")
                submitted = time.perf_counter()
                result = handle.wait(DELIVERY_TIMEOUT)
                turn_done = time.perf_counter()
                if not probe.complete.wait(DELIVERY_TIMEOUT):
                    raise RuntimeError(f"only {probe.messages}/{n} agent_message events were delivered")
                cpu1 = (time.process_time(), thread_cpu(RUNTIME_THREAD), thread_cpu(WRITER_THREAD), agents_cpu(agent_pids))
                if profiles is not None:
                    profiles.stop_loop()
                    profiles.stop_writer()
                if slow is not None:  # let it catch up: it must still get everything
                    deadline = time.monotonic() + DELIVERY_TIMEOUT
                    while not slow.caught_up(probe.last_message_sequence) and time.monotonic() < deadline:
                        time.sleep(0.01)
            finally:
                sub.close()
                if slow_sub is not None:
                    slow_sub.close()
            host.stop(record.id)
        finally:
            host.close()
            if saved_home is None:
                os.environ.pop("AGH_HOME", None)
            else:
                os.environ["AGH_HOME"] = saved_home
    assert probe.last_delivery is not None
    elapsed = probe.last_delivery - start
    stats = probe.analyse()
    lat = stats.pop("latencies")
    out = {
        "n": n,
        "seconds": elapsed,
        "events_per_s": n / elapsed,
        "p50_ms": pct(lat, 0.50),
        "p99_ms": pct(lat, 0.99),
        "max_ms": lat[-1] if lat else float("nan"),
        "submit_ms": (submitted - start) * 1000.0,
        "turn_done_s": turn_done - start,
        "stop_reason": result.stop_reason,
        "delivered": len(lat),
        "cpu": {
            "host": delta(cpu1[0], cpu0[0]),
            "runtime_thread": delta(cpu1[1], cpu0[1]),
            "writer_thread": delta(cpu1[2], cpu0[2]),
            "agent": delta(cpu1[3], cpu0[3]),
        },
        **stats,
    }
    if slow is not None:
        seqs = slow.sequences
        out["slow"] = {
            "seconds_per_batch": slow.seconds,
            "batches": slow.calls,
            "delivered": len(seqs),
            # once each, in order, from the same first event through the N-th agent message
            "complete": bool(seqs)
            and seqs == list(range(seqs[0], seqs[0] + len(seqs)))
            and seqs[0] == probe.sequences[0]
            and seqs[-1] >= probe.last_message_sequence,
            "lag_s": (slow.last_delivery - probe.last_delivery) if slow.last_delivery is not None else None,
        }
    if profiles is not None:
        out["profile_text"] = ThreadProfiles.report(
            profiles.loop_prof, "runtime loop thread (agh-runtime)", top
        ) + ThreadProfiles.report(profiles.writer_prof, "store writer thread (agh-nb-store-writer)", top)
    return out


# -- 1b. agh_nb driven by the magic in a real kernel ----------------------------------------


KERNEL_STARTUP_TIMEOUT = 120.0


class KernelCell:
    """What one executed cell printed, and how it ended."""

    def __init__(self) -> None:
        self.stdout = ""
        self.stderr = ""
        self.error: str | None = None
        self.status = ""

    def hook(self, msg: dict[str, Any]) -> None:
        kind, content = msg["header"]["msg_type"], msg["content"]
        if kind == "stream":
            if content["name"] == "stdout":
                self.stdout += content["text"]
            else:
                self.stderr += content["text"]
        elif kind == "error":
            self.error = f"{content['ename']}: {content['evalue']}"


def kernel_cell(client: Any, source: str, timeout: float = DELIVERY_TIMEOUT) -> KernelCell:
    """Execute ``source`` as one cell in the kernel; fail loudly unless it ran cleanly."""
    cell = KernelCell()
    reply = client.execute_interactive(source, timeout=timeout, output_hook=cell.hook, allow_stdin=False)
    cell.status = reply["content"]["status"]
    if cell.status != "ok" or cell.error or "agh: error" in cell.stderr:
        raise RuntimeError(f"kernel cell {source!r} failed: {cell.error or cell.stderr or cell.status}")
    return cell


def run_kernel(n: int) -> dict[str, Any]:
    """A real ipykernel (jupyter_client), ``%load_ext agh_nb``, a ``demo-fast`` session, and the turn
    driven as a person would: one cell ``%agh session prompt ID firehose N --wait`` (its progress
    line included). events/s = N / (the cell sent -> its reply), a turn whose ``done`` is only
    answered once every event is committed; then the stored ``agent_message`` rows are counted."""
    from jupyter_client.manager import KernelManager

    with tempfile.TemporaryDirectory(prefix="agh-bench-kernel-") as tmp:
        home, workspace = Path(tmp) / "home", Path(tmp) / "workspace"
        home.mkdir(mode=0o700)
        workspace.mkdir()
        env = dict(os.environ)
        env["AGH_HOME"] = str(home)
        env.pop("JPY_PARENT_PID", None)
        env.pop("AGH_NB_SERVER", None)
        km = KernelManager(kernel_name="python3")
        km.start_kernel(env=env, cwd=str(workspace), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = km.client()
        agent_pids: list[int] = []
        try:
            client.start_channels()
            client.wait_for_ready(timeout=KERNEL_STARTUP_TIMEOUT)
            kernel_pid = int(kernel_cell(client, "import os; print(os.getpid())").stdout)
            kernel_cell(client, "%load_ext agh_nb")
            created = json.loads(kernel_cell(client, "%agh session new --agent demo-fast --name kernel-bench -o json").stdout)
            session_id = created["id"]
            agent_pids = demo_agent_pids()
            cpu0 = (process_cpu(kernel_pid), agents_cpu(agent_pids))
            start = time.perf_counter()
            cell = kernel_cell(client, f"%agh session prompt {session_id} firehose {n} --wait")
            seconds = time.perf_counter() - start
            cpu1 = (process_cpu(kernel_pid), agents_cpu(agent_pids))
            counted = json.loads(kernel_cell(
                client,
                f"%%agh sql -o json\nSELECT count(*) AS n FROM events WHERE session_id = '{session_id}'"
                " AND type = 'agent_message'",
            ).stdout)
            kernel_cell(client, f"%agh session stop {session_id}", timeout=60)
        finally:
            with contextlib.suppress(Exception):
                client.stop_channels()
            km.shutdown_kernel(now=False)
            for pid in agent_pids:  # only the demo agents this benchmark started, if still running
                if pid in demo_agent_pids():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
    stored = int(counted[0]["n"]) if counted else 0
    return {
        "n": n,
        "seconds": seconds,
        "events_per_s": n / seconds,
        "stored": stored,
        "progress_chars": len(cell.stdout),
        "cpu": {"kernel": delta(cpu1[0], cpu0[0]), "agent": delta(cpu1[1], cpu0[1])},
    }


# -- 2./3. bare ACP SDK client --------------------------------------------------------------


class CountingClient:
    """The minimal ACP client: ``session_update`` counts, nothing else."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.last: float | None = None
        self.complete: asyncio.Event | None = None
        self.cpu: dict[str, float | None] = {}

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        self.count += 1
        if self.count == self.n:
            self.last = time.perf_counter()
            assert self.complete is not None
            self.complete.set()

    async def request_permission(self, session_id: str, tool_call: Any, options: Any, **kwargs: Any) -> Any:
        return schema.RequestPermissionResponse(outcome=schema.DeniedOutcome(outcome="cancelled"))

    async def ext_method(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        raise acp.RequestError.method_not_found(method)

    async def ext_notification(self, method: str, params: dict[str, Any]) -> None:
        return None

    def on_connect(self, conn: Any) -> None:
        return None


SQLITE_DDL = (
    "CREATE TABLE events (id TEXT NOT NULL, session_id TEXT NOT NULL, sequence INTEGER NOT NULL,"
    " turn_id TEXT, type TEXT NOT NULL, agent_name TEXT NOT NULL, workspace_id TEXT NOT NULL,"
    " workspace_path TEXT NOT NULL, content TEXT NOT NULL, timestamp TEXT NOT NULL)"
)


class SQLiteClient(CountingClient):
    """Maps each update as agh_nb does and commits it in its own durable SQLite transaction."""

    def __init__(self, n: int, path: Path, workspace: str) -> None:
        super().__init__(n)
        self.con = sqlite3.connect(path, isolation_level=None)
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA synchronous=FULL")
        self.con.execute(SQLITE_DDL)
        self.insert = f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
        self.workspace = workspace
        self.sequence = 0
        self.latencies: list[float] = []

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        event_type, fields = map_update(update)
        now = utcnow()
        content = build_content(event_type, acp_session_id=session_id, turn_id="turn_bench", timestamp=now, fields=fields)
        self.sequence += 1
        con = self.con
        con.execute("BEGIN")
        con.execute(
            self.insert,
            (
                f"evt_{self.sequence:032x}",
                "sess_bench",
                self.sequence,
                "turn_bench",
                str(event_type),
                "bench",
                "ws_bench",
                self.workspace,
                dumps(content),
                now.isoformat(),
            ),
        )
        con.execute("COMMIT")
        meta = (fields.get("raw") or {}).get("_meta") or {}
        sent = meta.get("agh_demo_sent_at")
        if sent is not None:
            self.latencies.append((time.time() - sent) * 1000.0)
        await super().session_update(session_id, update, **kwargs)


async def drive_bare(client: CountingClient, n: int, cwd: str) -> tuple[float, str]:
    """Spawn the agent with the SDK, run ``firehose n``; return (seconds to the n-th update, stop)."""
    client.complete = asyncio.Event()
    async with acp.spawn_agent_process(
        client, *AGENT_ARGV, cwd=cwd, transport_kwargs={"limit": STREAM_LIMIT}
    ) as (conn, proc):
        await conn.initialize(protocol_version=acp.PROTOCOL_VERSION)
        session = await conn.new_session(cwd=cwd, mcp_servers=[])
        cpu0 = (time.process_time(), process_cpu(proc.pid))
        start = time.perf_counter()
        response = await conn.prompt(session_id=session.session_id, prompt=[acp.text_block(f"firehose {n}")])
        await asyncio.wait_for(client.complete.wait(), DELIVERY_TIMEOUT)
        cpu1 = (time.process_time(), process_cpu(proc.pid))
    assert client.last is not None
    client.cpu = {"client": delta(cpu1[0], cpu0[0]), "agent": delta(cpu1[1], cpu0[1])}
    return client.last - start, str(response.stop_reason)


def run_ceiling(n: int) -> dict[str, Any]:
    """The bare SDK client: nothing but counting."""
    with tempfile.TemporaryDirectory(prefix="agh-bench-ceiling-") as tmp:
        client = CountingClient(n)
        seconds, stop = asyncio.run(drive_bare(client, n, tmp))
    return {"n": n, "seconds": seconds, "events_per_s": n / seconds, "stop_reason": stop, "cpu": client.cpu}


def run_sqlite(n: int) -> dict[str, Any]:
    """The bare SDK client with one durable SQLite transaction per update."""
    with tempfile.TemporaryDirectory(prefix="agh-bench-sqlite-") as tmp:
        client = SQLiteClient(n, Path(tmp) / "events.sqlite", tmp)
        try:
            seconds, stop = asyncio.run(drive_bare(client, n, tmp))
            rows = client.con.execute("SELECT count(*) FROM events").fetchone()[0]
        finally:
            client.con.close()
    return {
        **rate_figures(n, seconds, client.latencies),
        "rows": rows,
        "stop_reason": stop,
        "cpu": client.cpu,
    }


# -- diagnostic: agh_nb's ACP driver alone (stdout tap + mapping), nothing stored ------------


class CountingListener:
    """A ``DriverListener`` that only counts mapped agent_message updates."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.last: float | None = None
        self.complete = asyncio.Event()
        self.errors: list[str] = []
        self.latencies: list[float] = []

    def on_update(self, event_type: Any, fields: Any) -> None:
        if str(event_type) == "agent_message":
            sent = ((fields.get("raw") or {}).get("_meta") or {}).get("agh_demo_sent_at")
            if sent is not None:
                self.latencies.append((time.time() - sent) * 1000.0)
            self.count += 1
            if self.count == self.n:
                self.last = time.perf_counter()
                self.complete.set()

    def on_protocol_error(self, kind: Any, summary: str) -> None:
        self.errors.append(summary)

    def on_exit(self, info: Any) -> None:
        return None

    def on_stderr(self, data: bytes) -> None:
        return None

    async def on_elicitation(self, message: str, schema: Any, scope: Any) -> Any:
        return {"action": "decline"}

    async def on_permission_request(self, tool_call: Any, options: Any) -> str | None:
        return None

    async def authorize(self, operation: str, path: str | None, command: list[str] | None = None) -> Path:
        raise PermissionError(operation)


async def drive_driver(n: int, cwd: str) -> dict[str, Any]:
    listener = CountingListener(n)
    driver = AcpDriver()
    try:
        await driver.start(LaunchSpec(agent_name="bench", argv=AGENT_ARGV, cwd=cwd), listener)
        session_id = (await driver.new_session(cwd)).session_id
        cpu0 = (time.process_time(), process_cpu(driver.pid))
        start = time.perf_counter()
        outcome = await driver.prompt(session_id, f"firehose {n}")
        await asyncio.wait_for(listener.complete.wait(), DELIVERY_TIMEOUT)
        cpu1 = (time.process_time(), process_cpu(driver.pid))
    finally:
        await driver.close(grace=2.0)
    assert listener.last is not None
    return {
        **rate_figures(n, listener.last - start, listener.latencies),
        "stop_reason": outcome.stop_reason,
        "errors": listener.errors,
        "cpu": {"client": delta(cpu1[0], cpu0[0]), "agent": delta(cpu1[1], cpu0[1])},
    }


def run_driver(n: int) -> dict[str, Any]:
    """agh_nb's ``AcpDriver`` with a counting listener: the ingest cost before the store."""
    with tempfile.TemporaryDirectory(prefix="agh-bench-driver-") as tmp:
        return asyncio.run(drive_driver(n, tmp))


# -- report ---------------------------------------------------------------------------------


def loadavg() -> float | None:
    """The 1-minute load average (None where unavailable)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def _round_all(values: dict[str, float | None]) -> dict[str, float | None]:
    return {k: None if v is None else round(v, 3) for k, v in values.items()}


def same_round_ratios(runs: list[dict[str, Any]], ceilings: list[dict[str, Any]]) -> list[float]:
    """Each run's rate over the ceiling's rate of the same round."""
    return [run["events_per_s"] / ceiling["events_per_s"] for run, ceiling in zip(runs, ceilings, strict=False)]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_ceiling(res: dict[str, Any], label: str = "ceiling") -> None:
    print(f"{label:<12s}bare ACP SDK client, counting:   {res['events_per_s']:10,.0f} events/s"
          f"  ({res['n']} in {res['seconds']:.2f} s)", flush=True)
    print(f"            CPU  {fmt_cpu(res['cpu'], res['seconds'], res['n'])}", flush=True)


def print_agh(res: dict[str, Any], label: str = "agh_nb") -> None:
    print(f"{label:<12s}runtime + DuckDB, subscriber:    {res['events_per_s']:10,.0f} events/s"
          f"  ({res['n']} in {res['seconds']:.2f} s; turn done at {res['turn_done_s']:.2f} s)", flush=True)
    print(f"            sent -> stored+delivered:       p50 {res['p50_ms']:8.1f} ms  p99 {res['p99_ms']:8.1f} ms"
          f"  max {res['max_ms']:8.1f} ms", flush=True)
    print(f"              of which sent -> mapped:      p50 {res['ingest_p50_ms']:8.1f} ms"
          f"  p99 {res['ingest_p99_ms']:8.1f} ms  (pipe + read buffers + ACP parsing)", flush=True)
    print(f"              and mapped -> delivered:      p50 {res['store_p50_ms']:8.1f} ms"
          f"  p99 {res['store_p99_ms']:8.1f} ms  (group commit + notify)", flush=True)
    print(f"            {res['batches']} delivery batches (one per group commit), {res['mean_batch']:.0f} events each;"
          f" in order: {res['in_order']}, gapless: {res['gapless']}", flush=True)
    print(f"            CPU  {fmt_cpu(res['cpu'], res['seconds'], res['n'])}", flush=True)


def print_driver(res: dict[str, Any], label: str = "driver") -> None:
    print(f"{label:<12s}AcpDriver only, no store:        {res['events_per_s']:10,.0f} events/s"
          f"  ({res['n']} in {res['seconds']:.2f} s; diagnostic: transport + map_raw_update, nothing appended)",
          flush=True)
    print(f"            sent -> mapped:                 p50 {res['p50_ms']:8.1f} ms  p99 {res['p99_ms']:8.1f} ms"
          "  (queueing floor of the ingest path alone)", flush=True)
    print(f"            CPU  {fmt_cpu(res['cpu'], res['seconds'], res['n'])}", flush=True)


def print_kernel(res: dict[str, Any], label: str = "kernel") -> None:
    print(f"{label:<12s}%agh session prompt --wait cell: {res['events_per_s']:10,.0f} events/s"
          f"  ({res['n']} in {res['seconds']:.2f} s, cell sent -> reply; {res['stored']} agent_message rows stored)",
          flush=True)
    print(f"            CPU  {fmt_cpu(res['cpu'], res['seconds'], res['n'])}", flush=True)


def print_slow(res: dict[str, Any], label: str) -> None:
    print_agh(res, label)
    slow = res["slow"]
    print(f"            slow subscriber ({1000 * slow['seconds_per_batch']:.0f} ms a batch): {slow['batches']} batches,"
          f" {slow['delivered']} events, complete and in order: {slow['complete']},"
          f" caught up {slow['lag_s']:.2f} s after the probe", flush=True)


def print_sqlite(res: dict[str, Any], label: str = "sqlite") -> None:
    print(f"{label:<12s}bare client, 1 durable txn/event: {res['events_per_s']:9,.0f} events/s"
          f"  ({res['n']} in {res['seconds']:.2f} s; p50 {res['p50_ms']:.1f} ms, p99 {res['p99_ms']:.1f} ms)",
          flush=True)
    print(f"            CPU  {fmt_cpu(res['cpu'], res['seconds'], res['n'])}", flush=True)


def us_per_event(res: dict[str, Any], *keys: str) -> float | None:
    """Summed CPU microseconds per event of ``keys`` (None when /proc gave nothing)."""
    values = [res["cpu"].get(k) for k in keys]
    if any(v is None for v in values):
        return None
    return 1e6 * sum(v for v in values if v is not None) / res["n"]


def projection(ceiling: dict[str, Any], agh: dict[str, Any]) -> dict[str, float | None]:
    """Rates if each pipeline's busiest serial part had a CPU to itself (load-independent estimate).

    Ceiling: the slower of client and agent (two processes, in parallel). agh_nb: the slower of the
    agent and the host's runtime + writer threads together (they share the GIL). DuckDB's own time
    in the writer thread runs without the GIL, so the agh_nb figure leans slightly pessimistic.
    """
    c_client, c_agent = us_per_event(ceiling, "client"), us_per_event(ceiling, "agent")
    a_host, a_agent = us_per_event(agh, "runtime_thread", "writer_thread"), us_per_event(agh, "agent")
    if None in (c_client, c_agent, a_host, a_agent):
        return {"ceiling_events_per_s": None, "agh_events_per_s": None, "ratio": None}
    ceiling_rate = 1e6 / max(c_client, c_agent)  # type: ignore[type-var]
    agh_rate = 1e6 / max(a_host, a_agent)  # type: ignore[type-var]
    return {"ceiling_events_per_s": ceiling_rate, "agh_events_per_s": agh_rate, "ratio": agh_rate / ceiling_rate}


def best(results: list[dict[str, Any]]) -> dict[str, Any]:
    return max(results, key=lambda r: r["events_per_s"])


def main() -> int:
    """Parse arguments, run the three legs and print the figures, then one JSON line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help="updates per run (default 50000; 5000 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a ~10 s smoke run (N=5000)")
    parser.add_argument("--sqlite-n", type=int, default=None, help="updates for the SQLite leg (default N/10)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the three legs K times, interleaved, and report the best of each (noisy machines)")
    parser.add_argument("--no-driver", action="store_true",
                        help="skip the diagnostic leg (agh_nb's AcpDriver alone, nothing stored)")
    parser.add_argument("--no-kernel", action="store_true",
                        help="skip the leg driven by %%agh session prompt --wait in a real kernel")
    parser.add_argument("--no-slow", action="store_true", help="skip the legs with a deliberately slow subscriber")
    parser.add_argument("--profile", action="store_true", help="also profile an extra agh_nb run per thread")
    parser.add_argument("--with-secret", action="store_true",
                        help="register a vault secret first (the cost of streaming redaction)")
    parser.add_argument("--profile-top", type=int, default=25, help="functions listed per profile table")
    args = parser.parse_args()
    global WITH_SECRET
    WITH_SECRET = args.with_secret
    n = args.n if args.n is not None else (5_000 if args.quick else 50_000)
    if n < 1 or args.repeat < 1:
        parser.error("--n and --repeat must be positive")
    sqlite_n = args.sqlite_n if args.sqlite_n is not None else max(1, n // 10)

    load_before = loadavg()
    print(f"ingest benchmark: firehose {n} from `{' '.join(AGENT_ARGV[1:])}`, {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}, load average {load_before}", flush=True)
    if load_before is not None and os.cpu_count() and load_before > 0.5 * os.cpu_count():
        print("note: the machine is busy; every leg shares the CPUs with it, so rates will be noisy"
              " (the CPU us/event figures much less so)", flush=True)

    ceilings: list[dict[str, Any]] = []
    aghs: list[dict[str, Any]] = []
    sqlites: list[dict[str, Any]] = []
    drivers: list[dict[str, Any]] = []
    kernels: list[dict[str, Any]] = []
    slow_fires: list[dict[str, Any]] = []
    for round_ in range(args.repeat):
        tag = f" #{round_ + 1}" if args.repeat > 1 else ""
        # The legs compared with the ceiling run right after it, so that a round's own ratios
        # (same_round) see the machine at nearly one speed.
        ceilings.append(run_ceiling(n))
        print_ceiling(ceilings[-1], "ceiling" + tag)
        aghs.append(run_agh(n))
        print_agh(aghs[-1], "agh_nb" + tag)
        if not args.no_kernel:
            kernels.append(run_kernel(n))
            print_kernel(kernels[-1], "kernel" + tag)
        if not args.no_driver:
            drivers.append(run_driver(n))
            print_driver(drivers[-1], "driver" + tag)
        if not args.no_slow:
            slow_fires.append(run_agh(n, slow_subscriber=SLOW_SUBSCRIBER_SECONDS))
            print_slow(slow_fires[-1], "slow sub" + tag)
        sqlites.append(run_sqlite(sqlite_n))
        print_sqlite(sqlites[-1], "sqlite" + tag)
    paced_n = max(1, int(PACED_RATE * PACED_SECONDS * (0.2 if args.quick else 1.0)))
    paced = run_agh(paced_n, rate=PACED_RATE)
    print_agh(paced, f"paced {PACED_RATE:g}/s")
    slow_fire = best(slow_fires) if slow_fires else None
    slow_paced = None
    if not args.no_slow:
        slow_paced = run_agh(paced_n, rate=PACED_RATE, slow_subscriber=SLOW_SUBSCRIBER_SECONDS)
        print_slow(slow_paced, "slow paced")
    ceiling, agh, sqlite = best(ceilings), best(aghs), best(sqlites)
    kernel = best(kernels) if kernels else None
    if args.repeat > 1:
        print(f"best of {args.repeat}: ceiling {ceiling['events_per_s']:,.0f}/s, agh_nb {agh['events_per_s']:,.0f}/s"
              f" (p99 {agh['p99_ms']:.1f} ms), SQLite {sqlite['events_per_s']:,.0f}/s"
              + (f", kernel {kernel['events_per_s']:,.0f}/s" if kernel else ""))

    r_ceiling = agh["events_per_s"] / ceiling["events_per_s"]
    r_sqlite = agh["events_per_s"] / sqlite["events_per_s"]
    checks = {
        "ceiling_ratio": r_ceiling >= TARGET_CEILING_RATIO,
        "sqlite_ratio": r_sqlite >= TARGET_SQLITE_RATIO,
        "p99": paced["p99_ms"] < TARGET_P99_MS,
        "correct": all(r["in_order"] and r["gapless"] and r["delivered"] == n for r in aghs)
        and paced["in_order"] and paced["gapless"] and paced["delivered"] == paced_n
        and all(r["stored"] == n for r in kernels)
        and all(r["in_order"] and r["gapless"] and r["slow"]["complete"] for r in [*slow_fires, slow_paced] if r),
    }
    print(f"agh_nb / ceiling = {r_ceiling:5.2f}   (target >= {TARGET_CEILING_RATIO})     {verdict(checks['ceiling_ratio'])}")
    print(f"agh_nb / SQLite  = {r_sqlite:5.1f}x  (target >= {TARGET_SQLITE_RATIO:g}x)      {verdict(checks['sqlite_ratio'])}")
    print(f"agh_nb p99       = {paced['p99_ms']:5.1f} ms (target < {TARGET_P99_MS:g} ms)  {verdict(checks['p99'])}"
          f"   agent write -> stored and visible at {PACED_RATE:g} events/s (p50 {paced['p50_ms']:.1f} ms);"
          f" saturated by the firehose, events queue behind the backlog instead (p99 {agh['p99_ms']:.0f} ms)")
    r_kernel = kernel["events_per_s"] / ceiling["events_per_s"] if kernel else None
    if r_kernel is not None:
        checks["kernel_ratio"] = r_kernel >= TARGET_CEILING_RATIO
        print(f"kernel / ceiling = {r_kernel:5.2f}   (target >= {TARGET_CEILING_RATIO})     {verdict(checks['kernel_ratio'])}"
              "   the turn driven by %agh session prompt --wait in a real kernel")
    if slow_fire is not None and slow_paced is not None:
        r_slow = slow_fire["events_per_s"] / agh["events_per_s"]
        checks["slow_subscriber"] = r_slow >= TARGET_CEILING_RATIO and slow_paced["p99_ms"] < TARGET_P99_MS
        print(f"slow subscriber  = {r_slow:5.2f}   of the agh_nb rate (best of each), paced p99 {slow_paced['p99_ms']:.1f} ms"
              f" (targets >= {TARGET_CEILING_RATIO}, < {TARGET_P99_MS:g} ms)  {verdict(checks['slow_subscriber'])}"
              "   commits do not wait for a subscriber")
    if not checks["correct"]:
        print("WARNING: a delivery check failed (missing, out-of-order or gapped events); see the lines above")
    same_round = {"agh": same_round_ratios(aghs, ceilings), "kernel": same_round_ratios(kernels, ceilings)}
    if args.repeat > 1:
        print("same-round ratios (informational; each against the ceiling run just before it, so a machine"
              " whose speed drifts between rounds moves both):"
              + "".join(f" {name}/ceiling {', '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f});"
                        for name, ratios in same_round.items() if ratios))
    proj = projection(ceiling, agh)
    if proj["ratio"] is not None:
        print(f"CPU-bound estimate (each serial stage on its own CPU, no other load): ceiling"
              f" {proj['ceiling_events_per_s']:,.0f}/s, agh_nb {proj['agh_events_per_s']:,.0f}/s,"
              f" ratio {proj['ratio']:.2f}  (informational)")

    profile_text = None
    if args.profile:
        print("\nprofiling another agh_nb run (cProfile per thread; its timings are inflated) ...", flush=True)
        prof = run_agh(n, profile=True, top=args.profile_top)
        profile_text = prof.pop("profile_text")
        print(f"profiled run: {prof['events_per_s']:,.0f} events/s, p99 {prof['p99_ms']:.1f} ms")
        print(profile_text)

    load_after = loadavg()
    figures = {
        "benchmark": "agh_nb.ingest",
        "n": n,
        "sqlite_n": sqlite_n,
        "repeat": args.repeat,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "load_before": load_before,
        "load_after": load_after,
        "ceiling_events_per_s": round(ceiling["events_per_s"], 1),
        "agh_events_per_s": round(agh["events_per_s"], 1),
        "agh_p50_ms": round(agh["p50_ms"], 2),
        "agh_p99_ms": round(agh["p99_ms"], 2),
        "agh_max_ms": round(agh["max_ms"], 2),
        "agh_ingest_p50_ms": round(agh["ingest_p50_ms"], 2),
        "agh_ingest_p99_ms": round(agh["ingest_p99_ms"], 2),
        "agh_store_p50_ms": round(agh["store_p50_ms"], 2),
        "agh_store_p99_ms": round(agh["store_p99_ms"], 2),
        "paced_rate": PACED_RATE,
        "paced_n": paced_n,
        "paced_events_per_s": round(paced["events_per_s"], 1),
        "paced_p50_ms": round(paced["p50_ms"], 2),
        "paced_p99_ms": round(paced["p99_ms"], 2),
        "paced_max_ms": round(paced["max_ms"], 2),
        "agh_commits": agh["batches"],
        "agh_mean_batch": round(agh["mean_batch"], 1),
        "agh_delivery_ok": checks["correct"],
        "agh_cpu_s": _round_all(agh["cpu"]),
        "ceiling_cpu_s": _round_all(ceiling["cpu"]),
        "sqlite_cpu_s": _round_all(sqlite["cpu"]),
        "sqlite_events_per_s": round(sqlite["events_per_s"], 1),
        "sqlite_p50_ms": round(sqlite["p50_ms"], 2),
        "sqlite_p99_ms": round(sqlite["p99_ms"], 2),
        "ratio_agh_ceiling": round(r_ceiling, 3),
        "ratio_agh_sqlite": round(r_sqlite, 2),
        "target_ceiling_ratio": TARGET_CEILING_RATIO,
        "target_sqlite_ratio": TARGET_SQLITE_RATIO,
        "target_p99_ms": TARGET_P99_MS,
        "pass_ceiling_ratio": checks["ceiling_ratio"],
        "pass_sqlite_ratio": checks["sqlite_ratio"],
        "pass_p99": checks["p99"],
        "all_runs_events_per_s": {
            "ceiling": [round(r["events_per_s"], 1) for r in ceilings],
            "agh": [round(r["events_per_s"], 1) for r in aghs],
            "sqlite": [round(r["events_per_s"], 1) for r in sqlites],
        },
        "cpu_bound_estimate": _round_all(proj),
        "same_round_ratios": {name: [round(r, 3) for r in ratios] for name, ratios in same_round.items() if ratios},
    }
    if kernel is not None:
        figures["kernel_events_per_s"] = round(kernel["events_per_s"], 1)
        figures["kernel_cpu_s"] = _round_all(kernel["cpu"])
        figures["ratio_kernel_ceiling"] = round(kernel["events_per_s"] / ceiling["events_per_s"], 3)
        figures["pass_kernel_ratio"] = checks["kernel_ratio"]
        figures["all_runs_events_per_s"]["kernel"] = [round(r["events_per_s"], 1) for r in kernels]
    if slow_fire is not None and slow_paced is not None:
        figures["slow_subscriber_seconds_per_batch"] = SLOW_SUBSCRIBER_SECONDS
        figures["slow_events_per_s"] = round(slow_fire["events_per_s"], 1)
        figures["ratio_slow_agh"] = round(slow_fire["events_per_s"] / agh["events_per_s"], 3)
        figures["slow_paced_p99_ms"] = round(slow_paced["p99_ms"], 2)
        figures["slow_lag_s"] = round(slow_fire["slow"]["lag_s"], 3)
        figures["all_runs_events_per_s"]["slow"] = [round(r["events_per_s"], 1) for r in slow_fires]
        figures["slow_cpu_s"] = _round_all(slow_fire["cpu"])
        figures["pass_slow_subscriber"] = checks["slow_subscriber"]
    if drivers:
        driver = best(drivers)
        figures["driver_only_events_per_s"] = round(driver["events_per_s"], 1)
        figures["driver_only_cpu_s"] = _round_all(driver["cpu"])
        figures["driver_only_p50_ms"] = round(driver["p50_ms"], 2)
        figures["driver_only_p99_ms"] = round(driver["p99_ms"], 2)
        figures["all_runs_events_per_s"]["driver"] = [round(r["events_per_s"], 1) for r in drivers]
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
