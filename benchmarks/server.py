"""The server host under load: N concurrent sessions over HTTP + SSE, next to one embedded session.

Run: ``python benchmarks/server.py [--sessions 50] [--seconds 60] [--rate 100] [--n 2000]
[--baseline-n 20000] [--quick] [--repeat K] [--paced-only]``

The default is issue 14's scenario: 50 concurrent sessions on one Jupyter server.

Every leg uses the built-in ``demo-fast`` agent and the same word: ``rawhose`` (default) sends
what ``firehose`` sends, each ``session/update`` frame written by hand instead of built through
the ACP SDK's models, so that 50 agents on 2 cores leave the CPU to the host being measured
(``--script firehose`` for the SDK's own path).

1. baseline: one session of the built-in ``demo-fast`` agent answering ``rawhose N`` on the
   embedded host (``Runtime.start`` + ``Host`` in this process, a temporary ``AGH_HOME``), one
   store subscriber: the single-session embedded rate.
2. firehose: ``--sessions`` sessions on a real ``python -m jupyter_server`` subprocess (the agh_nb
   extension, a temporary ``AGH_HOME``, a loopback port), each answering ``rawhose N`` at once;
   one SSE stream (``GET .../stream``, plain ``http.client``) per session. The rate summed across
   sessions is compared with the baseline (target: at least 1.0).
3. paced: the same server, each session streaming ``--rate`` events/s for ``--seconds``
   (``rawhose K RATE``, a fixed schedule), read over SSE: every sequence delivered once, no gap
   (checked on the stream and in the store), and stored -> delivered p50/p99 (target p99 under
   250 ms).

Each ``agent_message_chunk`` is stamped with ``_meta.agh_demo_sent_at``. Rates = events /
(all prompts submitted -> the last session's N-th ``agent_message`` delivered; delivery implies
it is committed). Latency is also split at the row's own ``timestamp`` (taken when the runtime
mapped the update): "stored -> delivered" is group commit + notify + SSE framing, TCP and the
client. A firehose saturates the machine, so its latencies are mostly queueing. CPU seconds of
the host process over the window are reported as microseconds per event, which stay meaningful
on a busy machine where rates do not. The agents and the SSE clients (cheap: regexes, not JSON)
share the same CPUs as the host: on 2 cores, 50 agents streaming 100 events/s each take a large
part of the machine themselves.

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import loadavg, pct, process_cpu  # noqa: E402

from agh_nb.api import Host  # noqa: E402
from agh_nb.events import Event  # noqa: E402
from agh_nb.runtime import Runtime  # noqa: E402

AGENT = "demo-fast"
TIMEOUT = 600.0
QUIET_EXTENSIONS = {"jupyterlab": False, "jupyter_lsp": False, "notebook_shim": False, "jupyter_server_terminals": False}


class Tally:
    """Latencies and sequences of one session's deliveries (any thread)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.latencies: list[float] = []
        self.delivery: list[float] = []  # mapped on the runtime loop (the row's timestamp) -> delivered
        self.sequences: list[int] = []
        self.messages = 0
        self.last_at: float | None = None  # perf_counter of the N-th agent_message
        self.complete = threading.Event()

    def take(self, sequence: int, event_type: str, content: dict[str, Any], now: float, mapped: float | None) -> None:
        self.sequences.append(sequence)
        if event_type != "agent_message":
            return
        sent = ((content.get("raw") or {}).get("_meta") or {}).get("agh_demo_sent_at")
        if sent is not None:
            self.latencies.append((now - sent) * 1000.0)
        if mapped is not None:
            self.delivery.append((now - mapped) * 1000.0)
        self.messages += 1
        if self.messages >= self.n and self.last_at is None:
            self.last_at = time.perf_counter()
            self.complete.set()

    def gapless(self) -> bool:
        s = self.sequences
        return bool(s) and s == list(range(s[0], s[0] + len(s)))


def summarise(label: str, tallies: list[Tally], start: float, cpu: float | None, n: int, extra: dict[str, Any]) -> dict[str, Any]:
    ends = [t.last_at for t in tallies]
    if any(e is None for e in ends):
        raise RuntimeError(f"{label}: only {sum(t.messages for t in tallies)} of {n * len(tallies)} events arrived")
    elapsed = max(e for e in ends if e is not None) - start
    latencies = sorted(x for t in tallies for x in t.latencies)
    delivery = sorted(x for t in tallies for x in t.delivery)
    total = n * len(tallies)
    return {
        "host": label,
        "sessions": len(tallies),
        "events": total,
        "seconds": elapsed,
        "events_per_s": total / elapsed,
        "p50_ms": pct(latencies, 0.50),
        "p99_ms": pct(latencies, 0.99),
        "max_ms": latencies[-1] if latencies else float("nan"),
        "delivery_p50_ms": pct(delivery, 0.50),
        "delivery_p99_ms": pct(delivery, 0.99),
        "cpu_us_per_event": (1e6 * cpu / total) if cpu is not None else None,
        "delivered_gapless": all(t.gapless() for t in tallies),
        **extra,
    }


# -- 1. embedded host -----------------------------------------------------------------------------


def run_embedded(sessions: int, n: int, prompt: str) -> dict[str, Any]:
    """N firehose sessions on the embedded runtime of this process."""
    with tempfile.TemporaryDirectory(prefix="agh-bench-embedded-") as tmp:
        workspace = Path(tmp) / "ws"
        workspace.mkdir()
        host = Host(Runtime.start(home=Path(tmp) / "home"))
        subs = []
        try:
            with ThreadPoolExecutor(sessions) as pool:
                records = list(pool.map(lambda i: host.create(AGENT, cwd=str(workspace), name=f"e{i}"), range(sessions)))
            tallies = [Tally(n) for _ in records]
            for record, tally in zip(records, tallies, strict=True):
                def deliver(events: Any, tally: Tally = tally) -> None:
                    now = time.time()
                    for e in events:
                        tally.take(e.sequence, e.type, e.content, now, e.timestamp.timestamp())
                subs.append(host.store.subscribe(record.id, 0, deliver))
            cpu0 = process_cpu(os.getpid())
            start = time.perf_counter()
            # Submitted concurrently, as the server leg's HTTP prompts are: one after another, each
            # waiting for its user_message to commit, the last session would start late.
            with ThreadPoolExecutor(sessions) as pool:
                handles = list(pool.map(lambda r: host.prompt(r.id, prompt), records))
            for tally in tallies:
                tally.complete.wait(TIMEOUT)
            cpu1 = process_cpu(os.getpid())
            for h in handles:
                h.wait(TIMEOUT)
            stored_ok = all(_gapless_store(host.events(r.id)) for r in records)
        finally:
            for sub in subs:
                sub.close()
            host.close()
    cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    return summarise("embedded", tallies, start, cpu, n, {"stored_gapless": stored_ok})


def _gapless_store(events: list[Event]) -> bool:
    return [e.sequence for e in events] == list(range(1, len(events) + 1))


# -- 2. server host -------------------------------------------------------------------------------


class JupyterServer:
    """``python -m jupyter_server`` on loopback with a temporary AGH_HOME; ``close()`` stops it."""

    def __init__(self, base: Path) -> None:
        self.token = secrets.token_hex(16)
        for d in ("home", "root", "runtime", "config"):
            (base / d).mkdir(parents=True, exist_ok=True)
        (base / "config" / "jupyter_server_config.json").write_text(
            json.dumps({"ServerApp": {"jpserver_extensions": QUIET_EXTENSIONS}}), encoding="utf-8"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "AGH_"))}
        env.update(AGH_HOME=str(base / "home"), JUPYTER_RUNTIME_DIR=str(base / "runtime"),
                   JUPYTER_CONFIG_DIR=str(base / "config"), JUPYTER_DATA_DIR=str(base / "data"))
        self.log = (base / "server.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", "--ServerApp.ip=127.0.0.1", "--ServerApp.port=0",
             f"--IdentityProvider.token={self.token}", "--ServerApp.open_browser=False",
             "--ServerApp.allow_root=True", f"--ServerApp.root_dir={base / 'root'}"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=base,
        )
        self.root = base / "root"
        info = base / "runtime" / f"jpserver-{self.proc.pid}.json"
        deadline = time.monotonic() + 120
        while not (info.exists() and info.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"jupyter server did not start; see {base / 'server.log'}")
            time.sleep(0.05)
        self.port = int(json.loads(info.read_text())["port"])
        while True:
            try:
                status, _ = self.call("GET", "/sessions")
                if status == 200:
                    break
            except ConnectionRefusedError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("agh_nb did not start in the server")
            time.sleep(0.05)

    def call(self, method: str, path: str, body: Any = None, timeout: float = TIMEOUT) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            headers = {"Authorization": f"token {self.token}", "Content-Type": "application/json"}
            conn.request(method, "/agh/api" + path, body=None if body is None else json.dumps(body), headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, json.loads(data) if data else None
        finally:
            conn.close()

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, doc = self.call(method, path, body)
        if not 200 <= status < 300:
            raise RuntimeError(f"{method} {path} -> {status} {doc}")
        return doc

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


_FRAME = re.compile(rb"id: (\d+)\nevent: (\w+)\ndata: ")
_SENT = re.compile(rb'"agh_demo_sent_at":([0-9.eE+-]+)')
_STAMP = re.compile(rb'"timestamp":"([^"]+)"}$')  # the row's own timestamp is its last field


def follow(server: JupyterServer, session_id: str, tally: Tally, opened: threading.Event) -> None:
    """Read the session's SSE stream until the N-th agent_message.

    The client must not be the bottleneck it measures: it reads large chunks and picks ``id``,
    ``event`` and ``agh_demo_sent_at`` out of each frame with regular expressions (the frames are
    the server's exact format) instead of parsing every row's JSON.
    """
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        conn.request("GET", f"/agh/api/sessions/{session_id}/stream",
                     headers={"Authorization": f"token {server.token}", "Last-Event-ID": "0"})
        resp = conn.getresponse()
        opened.set()
        pending = b""
        while not tally.complete.is_set():
            chunk = resp.read1(1 << 16)
            if not chunk:
                return
            now = time.time()
            frames = (pending + chunk).split(b"\n\n")
            pending = frames.pop()
            for frame in frames:
                head = _FRAME.match(frame)
                if head is None:
                    continue  # a keep-alive comment
                sent = _SENT.search(frame)
                content = {"raw": {"_meta": {"agh_demo_sent_at": float(sent.group(1))}}} if sent else {}
                stamp = _STAMP.search(frame)
                mapped = _parse_ts(stamp.group(1).decode()) if stamp else None
                tally.take(int(head.group(1)), head.group(2).decode(), content, now, mapped)
    finally:
        conn.close()


def _parse_ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def run_server(sessions: int, n: int, prompt: str) -> dict[str, Any]:
    """N firehose sessions through the HTTP API of a real Jupyter server."""
    with tempfile.TemporaryDirectory(prefix="agh-bench-server-") as tmp:
        t0 = time.perf_counter()
        server = JupyterServer(Path(tmp))
        started_in = time.perf_counter() - t0
        try:
            with ThreadPoolExecutor(sessions * 2) as pool:
                ids = [r["id"] for r in pool.map(
                    lambda i: server.ok("POST", "/sessions", {"agent": AGENT, "name": f"s{i}"}), range(sessions))]
                tallies = [Tally(n) for _ in ids]
                opened = [threading.Event() for _ in ids]
                readers = [pool.submit(follow, server, sid, t, o) for sid, t, o in zip(ids, tallies, opened, strict=True)]
                for o in opened:
                    o.wait(60)
                cpu0 = process_cpu(server.proc.pid)
                start = time.perf_counter()
                turns = list(pool.map(lambda sid: server.ok("POST", f"/sessions/{sid}/prompt", {"text": prompt}), ids))
                for tally in tallies:
                    tally.complete.wait(TIMEOUT)
                cpu1 = process_cpu(server.proc.pid)
                for r in readers:
                    r.result(TIMEOUT)
                for sid, turn in zip(ids, turns, strict=True):
                    while server.ok("GET", f"/sessions/{sid}/turns/{turn['turn_id']}?wait=30")["status"] != "done":
                        pass
                stored_ok = all(
                    _gapless_rows(server.ok("GET", f"/sessions/{sid}/events")["events"]) for sid in ids
                )
                list(pool.map(lambda sid: server.ok("POST", f"/sessions/{sid}/stop", {}), ids))
        finally:
            server.close()
    cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    return summarise("server", tallies, start, cpu, n, {"stored_gapless": stored_ok, "server_start_s": started_in})


def _gapless_rows(rows: list[dict[str, Any]]) -> bool:
    return [r["sequence"] for r in rows] == list(range(1, len(rows) + 1))


# -- report ---------------------------------------------------------------------------------------


def line(res: dict[str, Any], label: str) -> str:
    cpu = f"{res['cpu_us_per_event']:5.0f} us/event host CPU" if res["cpu_us_per_event"] is not None else ""
    ok = "ok" if res["delivered_gapless"] and res["stored_gapless"] else "GAP/DUPLICATE!"
    e2e = (f"sent -> delivered p50 {res['p50_ms']:7.1f} ms p99 {res['p99_ms']:7.1f} ms; "
           if res["p50_ms"] == res["p50_ms"] else "")  # NaN when the agent did not stamp its chunks
    return (f"{label:<9s}{res['host']:<9s}{res['sessions']:3d} x {res['events'] // res['sessions']:<6d}"
            f"{res['events_per_s']:9,.0f} events/s   {e2e}stored -> delivered p50 {res['delivery_p50_ms']:6.1f} ms"
            f" p99 {res['delivery_p99_ms']:6.1f} ms   {cpu}   {ok}")


def _round(res: dict[str, Any]) -> dict[str, Any]:
    # NaN (no stamped chunks) becomes null: the last line stays strict JSON.
    return {k: ((round(v, 2) if v == v else None) if isinstance(v, float) else v) for k, v in res.items()}


def _clean(res: dict[str, Any]) -> bool:
    return bool(res["delivered_gapless"] and res["stored_gapless"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=None, help="concurrent sessions (default 50; 4 with --quick)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="length of the paced run: each session streams --rate events/s this long (default 60; 5 with --quick; 0 skips it)")
    parser.add_argument("--rate", type=float, default=100.0, help="events/s per session in the paced run (default 100)")
    parser.add_argument("--n", type=int, default=None, help="firehose chunks per server session (default 2000; 500 with --quick)")
    parser.add_argument("--baseline-n", type=int, default=None,
                        help="firehose chunks of the single embedded session, the rate baseline (default 20000; 5000 with --quick)")
    parser.add_argument("--script", choices=("rawhose", "firehose"), default="rawhose",
                        help="the demo agent's word for every leg: rawhose (frames written by hand, cheap for the"
                             " agents, the default) or firehose (through the ACP SDK's models)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--repeat", type=int, default=1, help="interleave K firehose rounds; report the best of each host")
    parser.add_argument("--paced-only", action="store_true", help="skip the firehose legs (the paced run alone)")
    args = parser.parse_args()
    sessions = args.sessions or (4 if args.quick else 50)
    n = args.n or (500 if args.quick else 2000)
    baseline_n = args.baseline_n or (5000 if args.quick else 20000)
    seconds = args.seconds if args.seconds is not None else (5.0 if args.quick else 60.0)
    paced = int(round(seconds * args.rate))
    if sessions < 1 or n < 1 or baseline_n < 1 or seconds < 0 or args.rate <= 0 or args.repeat < 1:
        parser.error("--sessions, --n, --baseline-n, --rate and --repeat must be positive")
    load = loadavg()
    print(f"server benchmark: {sessions} sessions x {args.script} {n} ({AGENT}) vs 1 embedded session x {args.script} {baseline_n};"
          f" then {sessions} sessions x {args.rate:g} events/s for {seconds:g} s over SSE;"
          f" {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, load average {load}", flush=True)
    if load is not None and os.cpu_count() and load > 0.5 * (os.cpu_count() or 1):
        print("note: the machine is busy; rates will be noisy (CPU us/event much less so)", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {"embedded_single": [], "server": [], "paced_server": []}
    for _ in range(0 if args.paced_only else args.repeat):
        runs["embedded_single"].append(run_embedded(1, baseline_n, f"{args.script} {baseline_n}"))
        print(line(runs["embedded_single"][-1], "firehose"), flush=True)
        runs["server"].append(run_server(sessions, n, f"{args.script} {n}"))
        print(line(runs["server"][-1], "firehose"), flush=True)
    if paced:
        runs["paced_server"].append(run_server(sessions, paced, f"{args.script} {paced} {args.rate:g}"))
        print(line(runs["paced_server"][-1], "paced"), flush=True)
    best = {k: max(v, key=lambda r: r["events_per_s"]) for k, v in runs.items() if v}
    ratio = best["server"]["events_per_s"] / best["embedded_single"]["events_per_s"] if not args.paced_only else float("nan")
    if not args.paced_only:
        print(f"firehose: {sessions} server sessions summed {best['server']['events_per_s']:,.0f} events/s"
              f" / 1 embedded session {best['embedded_single']['events_per_s']:,.0f} events/s = {ratio:.2f} (target >= 1.0)"
              f" (server start {best['server']['server_start_s']:.1f} s)")
    if paced:
        ps = best["paced_server"]
        expected = sessions * paced
        print(f"paced: {sessions} sessions x {args.rate:g} events/s x {seconds:g} s = {expected} events over SSE:"
              f" {'no loss, no duplicate' if _clean(ps) else 'LOSS OR DUPLICATE'} (checked by sequence);"
              f" stored -> delivered p50/p99 {ps['delivery_p50_ms']:.1f}/{ps['delivery_p99_ms']:.1f} ms (target p99 < 250);"
              f" delivered {ps['events_per_s']:,.0f} events/s")
    figures = {
        "benchmark": "agh_nb.server",
        "sessions": sessions,
        "n": n,
        "baseline_n": baseline_n,
        "paced_seconds": seconds,
        "paced_rate": args.rate,
        "script": args.script,
        "repeat": args.repeat,
        "cpus": os.cpu_count(),
        "load_before": load,
        "load_after": loadavg(),
        **{k: _round(v) for k, v in best.items()},
        "ratio_server_sessions_to_single_embedded": None if args.paced_only else round(ratio, 3),
        "all_runs_events_per_s": {k: [round(r["events_per_s"], 1) for r in v] for k, v in runs.items()},
    }
    print(json.dumps(figures))
    clean = all(_clean(r) for v in runs.values() for r in v)
    if not clean:
        print("FAILED: an event was lost or duplicated (see GAP/DUPLICATE above)", file=sys.stderr)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
