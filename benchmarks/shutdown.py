"""Time to exit of a host whose sessions are all streaming: the server host and the embedded host.

Run: ``python benchmarks/shutdown.py [--sessions 10 50] [--quick]``

For each host and each session count N, N sessions of the built-in ``demo-fast`` agent are
created and each sent ``firehose 1000000000`` (it streams until cancelled); once every session has
streamed, the host is told to stop, the way Jupyter does it:

1. server: a real ``python -m jupyter_server`` (the agh_nb extension, a temporary ``AGH_HOME``)
   gets SIGTERM; time to exit = SIGTERM -> the process has exited.
2. embedded: a real ipykernel (``jupyter_client.KernelManager``) whose cell created the sessions
   through ``agh_nb.get_host()`` is shut down with ``shutdown_kernel(now=False)`` (a
   ``shutdown_request``, then a kill ``shutdown_wait_time`` = 5 s later if it still lives, as for
   a restart); time to exit = the request -> the kernel process has exited.

The baseline, measured in the same run, is the same host with no session (N = 0). After each exit
the store is read back: how many sessions it left in each state (``stopped/user_canceled`` is a
clean stop; anything else was cut short or repaired), plus how many processes tagged with one of
its sessions are still alive (should be 0). Targets: under 5 s for 50 busy sessions; the kernel
well within Jupyter's 5 s. A busy machine slows everything: the load average is printed.

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agh_nb.core.leftovers import tagged_pids  # noqa: E402
from agh_nb.runtime import open_store  # noqa: E402

AGENT = "demo-fast"
ENDLESS = "firehose 1000000000"
QUIET_EXTENSIONS = {"jupyterlab": False, "jupyter_lsp": False, "notebook_shim": False, "jupyter_server_terminals": False}
TARGET_S = 5.0
TIMEOUT = 300.0


def loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 1)
    except OSError:
        return None


def read_back(home: Path) -> tuple[dict[str, int], int]:
    """The sessions left in each ``state/stop_reason``, and the live processes tagged with one."""
    store = open_store(home, read_only=True)
    try:
        records = store.list_sessions()
    finally:
        store.close()
    states = Counter(f"{r.state.value}/{r.stop_reason.value if r.stop_reason else '-'}" for r in records)
    return dict(states), sum(len(tagged_pids(r.id)) for r in records)


# -- 1. server host --------------------------------------------------------------------------------


class Server:
    """``python -m jupyter_server`` on loopback with a temporary AGH_HOME."""

    def __init__(self, base: Path) -> None:
        self.token = secrets.token_hex(16)
        self.home = base / "home"
        for d in ("home", "root", "runtime", "config"):
            (base / d).mkdir(parents=True, exist_ok=True)
        self.home.chmod(0o700)
        (base / "config" / "jupyter_server_config.json").write_text(
            json.dumps({"ServerApp": {"jpserver_extensions": QUIET_EXTENSIONS}}), encoding="utf-8"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "AGH_"))}
        env.update(AGH_HOME=str(self.home), JUPYTER_RUNTIME_DIR=str(base / "runtime"),
                   JUPYTER_CONFIG_DIR=str(base / "config"), JUPYTER_DATA_DIR=str(base / "data"))
        self.log_path = base / "server.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jupyter_server", "--ServerApp.ip=127.0.0.1", "--ServerApp.port=0",
                 f"--IdentityProvider.token={self.token}", "--ServerApp.open_browser=False",
                 "--ServerApp.allow_root=True", f"--ServerApp.root_dir={base / 'root'}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=base,
            )
        info = base / "runtime" / f"jpserver-{self.proc.pid}.json"
        deadline = time.monotonic() + 120
        while not (info.exists() and info.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"jupyter server did not start; see {self.log_path}")
            time.sleep(0.05)
        self.port = int(json.loads(info.read_text())["port"])
        while True:
            try:
                if self.call("GET", "/sessions")[0] == 200:
                    break
            except ConnectionRefusedError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("agh_nb did not start in the server")
            time.sleep(0.05)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
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


def run_server(sessions: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="agh-bench-shutdown-server-") as tmp:
        server = Server(Path(tmp))
        try:
            with ThreadPoolExecutor(max(sessions, 1)) as pool:
                ids = [r["id"] for r in pool.map(lambda i: server.ok("POST", "/sessions", {"agent": AGENT, "name": f"s{i}"}), range(sessions))]
                for sid in ids:
                    server.ok("POST", f"/sessions/{sid}/prompt", {"text": ENDLESS})
                deadline = time.monotonic() + TIMEOUT
                while not all(pool.map(lambda sid: server.ok("GET", f"/sessions/{sid}/events?type=agent_message&limit=1")["events"], ids)):
                    if time.monotonic() > deadline:
                        raise RuntimeError("the sessions did not all stream")
                    time.sleep(0.2)
            start = time.perf_counter()
            server.proc.send_signal(signal.SIGTERM)
            server.proc.wait(TIMEOUT)
            seconds = time.perf_counter() - start
        finally:
            if server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait()
        log = server.log_path.read_text(errors="replace")
        bad = sum(log.count(mark) for mark in ("Traceback", "Task was destroyed", "TimeoutError", "ResourceInUse"))
        states, left = read_back(server.home)
    return {"host": "server", "sessions": sessions, "exit_s": seconds, "returncode": server.proc.returncode,
            "states": states, "processes_left": left, "bad_log_lines": bad}


# -- 2. embedded host in a kernel ------------------------------------------------------------------

START = """
from concurrent.futures import ThreadPoolExecutor
import agh_nb
from agh_nb.events import EventQuery
host = agh_nb.get_host()
with ThreadPoolExecutor(max({n}, 1)) as pool:
    ids = [r.id for r in pool.map(lambda i: host.create("demo-fast", name=f"k{{i}}"), range({n}))]
turns = [host.prompt(sid, "{endless}") for sid in ids]
"""
STREAMING = "print(all(host.events(sid, EventQuery(types=('agent_message',), limit=1)) for sid in ids))"


def run_kernel(sessions: int) -> dict[str, Any]:
    from jupyter_client.manager import KernelManager

    with tempfile.TemporaryDirectory(prefix="agh-bench-shutdown-kernel-") as tmp:
        home, workspace = Path(tmp) / "home", Path(tmp) / "ws"
        home.mkdir(mode=0o700)
        workspace.mkdir()
        env = {k: v for k, v in os.environ.items() if k not in ("AGH_NB_SERVER", "JPY_PARENT_PID")}
        env["AGH_HOME"] = str(home)
        km = KernelManager(kernel_name="python3")
        with (Path(tmp) / "kernel.log").open("wb") as log:
            km.start_kernel(env=env, cwd=str(workspace), stdout=log, stderr=log)
        client = km.client()
        client.start_channels()
        try:
            client.wait_for_ready(timeout=120)

            def run(code: str) -> str:
                out: list[str] = []

                def hook(msg: dict[str, Any]) -> None:
                    if msg["header"]["msg_type"] == "stream":
                        out.append(msg["content"]["text"])
                    elif msg["header"]["msg_type"] == "error":
                        out.append("\n".join(msg["content"]["traceback"]))

                reply = client.execute_interactive(code, timeout=TIMEOUT, output_hook=hook)
                if reply["content"]["status"] != "ok":
                    raise RuntimeError("".join(out))
                return "".join(out)

            pid = int(run("import os; print(os.getpid())"))
            run(START.format(n=sessions, endless=ENDLESS))
            deadline = time.monotonic() + TIMEOUT
            while sessions and run(STREAMING).strip() != "True":
                if time.monotonic() > deadline:
                    raise RuntimeError("the sessions did not all stream")
                time.sleep(0.2)
            client.stop_channels()
            start = time.perf_counter()
            km.shutdown_kernel(now=False)  # as Jupyter does: a request, a kill 5 s later
            while _alive(pid):
                time.sleep(0.01)
            seconds = time.perf_counter() - start
        finally:
            if km.has_kernel:
                km.shutdown_kernel(now=True)
        log_text = (Path(tmp) / "kernel.log").read_text(errors="replace")
        bad = sum(log_text.count(mark) for mark in ("Traceback", "Task was destroyed", "TimeoutError", "ResourceInUse"))
        states, left = read_back(home) if sessions else ({}, 0)
    return {"host": "kernel", "sessions": sessions, "exit_s": seconds, "states": states,
            "processes_left": left, "bad_log_lines": bad}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def line(res: dict[str, Any], baseline: dict[str, Any]) -> str:
    states = ", ".join(f"{k} {v}" for k, v in sorted(res["states"].items())) or "-"
    over = res["exit_s"] - baseline["exit_s"]
    return (f"{res['host']:<7s}{res['sessions']:3d} busy sessions: exit {res['exit_s']:5.2f} s"
            f" (idle host {baseline['exit_s']:4.2f} s, +{over:4.2f} s)   states: {states}"
            f"   processes left {res['processes_left']}   bad log lines {res['bad_log_lines']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=None, help="session counts (default: 10 50)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (3 sessions)")
    parser.add_argument("--hosts", nargs="+", default=["server", "kernel"], choices=["server", "kernel"])
    args = parser.parse_args()
    counts = args.sessions or ([3] if args.quick else [10, 50])
    load = loadavg()
    print(f"shutdown benchmark: {counts} busy sessions ({AGENT} '{ENDLESS}') per host; {os.cpu_count()} CPUs,"
          f" Python {sys.version.split()[0]}, load average {load}", flush=True)
    if load is not None and load > 0.5 * (os.cpu_count() or 1):
        print("note: the machine is busy; times will be noisy", flush=True)
    runners = {"server": run_server, "kernel": run_kernel}
    results: list[dict[str, Any]] = []
    clean = True
    for host in args.hosts:
        baseline = runners[host](0)
        for n in counts:
            res = runners[host](n)
            results.append(res)
            print(line(res, baseline), flush=True)
            clean &= res["states"] == {"stopped/user_canceled": n} and not res["processes_left"] and not res["bad_log_lines"]
            if n >= 50 and res["exit_s"] >= TARGET_S:
                print(f"  above the {TARGET_S:g} s target for {n} busy sessions", flush=True)
        results.append(baseline | {"baseline": True})
    print(json.dumps({"benchmark": "agh_nb.shutdown", "cpus": os.cpu_count(), "load_before": load,
                      "load_after": loadavg(), "target_s": TARGET_S,
                      "runs": [r | {"exit_s": round(r["exit_s"], 3)} for r in results]}))
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
