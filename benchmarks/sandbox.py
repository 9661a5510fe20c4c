"""Sandbox start overhead: agent spawns and terminal commands with and without bubblewrap.

Run: ``python benchmarks/sandbox.py [--spawns 20] [--terminals 30]``

Legs, interleaved round by round so machine load hits both alike:

1. agent spawn: agh_nb's ``AcpDriver.start`` on the built-in demo agent (``python -m
   agh_nb.agents.demo --fast``), from the call to the ``initialize`` answer: checking the command,
   deciding the sandbox (the bubblewrap probe is cached after the first spawn, which is not
   counted), planning it, spawning, the agent's interpreter start and the round trip. Once with
   ``[sandbox] mode = "off"``, once sandboxed (``auto``, the default), same workspace.
2. terminal: ``TerminalManager.create`` of ``true`` and its exit, unconfined and sandboxed.

Prints medians, p90s, minimums and the overhead per spawn (sandboxed - unconfined, medians); the
target is an agent-spawn overhead under 50 ms. On a loaded machine wall times swing by seconds
(the agent's interpreter start dominates), so each leg also reports the CPU its processes used per
spawn (``RUSAGE_CHILDREN``: bubblewrap, the sandbox's init and the command, once reaped), a
figure load does not inflate, and the overhead of the fastest runs (min - min).
The last line is one JSON object with every figure.
Informational: the exit code is 0 whatever the figures (2 when bubblewrap does not work here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agh_nb.adapters.acp_driver import AcpDriver  # noqa: E402
from agh_nb.adapters.sandbox import confinement  # noqa: E402
from agh_nb.adapters.terminals import TerminalManager  # noqa: E402
from agh_nb.config import Settings  # noqa: E402
from agh_nb.core.ports import ExitInfo, LaunchSpec  # noqa: E402
from agh_nb.core.sandbox_policy import SandboxPolicy, sandbox_policy  # noqa: E402

AGENT_ARGV = (sys.executable, "-m", "agh_nb.agents.demo", "--fast")
TARGET_MS = 50.0


class QuietListener:
    """A ``DriverListener`` that ignores everything (only the handshake is timed)."""

    def on_update(self, event_type: Any, fields: Any) -> None:
        return None

    def on_protocol_error(self, kind: Any, summary: str) -> None:
        return None

    def on_exit(self, info: ExitInfo) -> None:
        return None

    async def on_permission_request(self, tool_call: Any, options: Any) -> str | None:
        return None

    async def authorize(self, operation: str, path: str | None, command: list[str] | None = None) -> Path:
        raise PermissionError(operation)


def policy(mode: str, workspace: str, home: str) -> SandboxPolicy:
    return sandbox_policy(
        Settings(sandbox_mode=mode), None, workspace=workspace, permissions="approve-all", agh_home=home,
        home=os.path.expanduser("~"),
    )


def children_cpu_ms() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * 1000.0


async def spawn_once(mode: str, workspace: str, home: str, cpu: list[float] | None = None) -> tuple[float, bool]:
    spec = LaunchSpec(agent_name="bench", argv=AGENT_ARGV, cwd=workspace, sandbox=policy(mode, workspace, home))
    driver = AcpDriver()
    before = children_cpu_ms()
    try:
        start = time.perf_counter()
        handshake = await driver.start(spec, QuietListener())
        elapsed = time.perf_counter() - start
    finally:
        await driver.close(grace=2.0)
    if cpu is not None:
        cpu.append(children_cpu_ms() - before)
    return elapsed * 1000.0, handshake.sandboxed


async def terminal_once(terminals: TerminalManager, workspace: str, cpu: list[float]) -> float:
    before = children_cpu_ms()
    start = time.perf_counter()
    terminal_id = await terminals.create("true", [], cwd=Path(workspace), env={}, output_byte_limit=None)
    status = await terminals.wait_for_exit(terminal_id)
    elapsed = time.perf_counter() - start
    await terminals.release(terminal_id)
    cpu.append(children_cpu_ms() - before)
    assert status["exit_code"] == 0, status
    return elapsed * 1000.0


def figures(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered), 2),
        "p90_ms": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 2),
        "min_ms": round(ordered[0], 2),
    }


async def run(spawns: int, terminal_runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="agh-bench-sandbox-") as tmp:
        workspace, home = os.path.join(tmp, "ws"), os.path.join(tmp, "home")
        os.makedirs(workspace)
        os.makedirs(home)
        box = await confinement(policy("required", workspace, home), keep=[sys.prefix, sys.base_prefix])
        # Warm-up (not counted): the probe, the interpreter's files in the page cache.
        await spawn_once("off", workspace, home)
        _, sandboxed = await spawn_once("auto", workspace, home)
        if not sandboxed:
            raise SystemExit(2)
        agent: dict[str, list[float]] = {"off": [], "sandboxed": []}
        for _ in range(spawns):
            agent["off"].append((await spawn_once("off", workspace, home))[0])
            agent["sandboxed"].append((await spawn_once("auto", workspace, home))[0])
        plain, confined = TerminalManager(), TerminalManager()
        confined.confine(box)
        term: dict[str, list[float]] = {"off": [], "sandboxed": [], "off_cpu": [], "sandboxed_cpu": []}
        try:
            for _ in range(terminal_runs):
                term["off"].append(await terminal_once(plain, workspace, term["off_cpu"]))
                term["sandboxed"].append(await terminal_once(confined, workspace, term["sandboxed_cpu"]))
        finally:
            await plain.aclose()
            await confined.aclose()
    result: dict[str, Any] = {"spawns": spawns, "terminals": terminal_runs}
    for name, legs in (("agent_spawn", agent), ("terminal", term)):
        off, on = figures(legs["off"]), figures(legs["sandboxed"])
        leg: dict[str, Any] = {
            "off": off,
            "sandboxed": on,
            "overhead_ms": round(on["median_ms"] - off["median_ms"], 2),
            "overhead_min_ms": round(on["min_ms"] - off["min_ms"], 2),
        }
        if legs.get("off_cpu"):
            off_cpu, on_cpu = statistics.median(legs["off_cpu"]), statistics.median(legs["sandboxed_cpu"])
            leg["off"]["cpu_ms"], leg["sandboxed"]["cpu_ms"] = round(off_cpu, 2), round(on_cpu, 2)
            leg["overhead_cpu_ms"] = round(on_cpu - off_cpu, 2)
        result[name] = leg
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--spawns", type=int, default=20, help="agent spawns per leg (default 20)")
    parser.add_argument("--terminals", type=int, default=30, help="terminal commands per leg (default 30)")
    args = parser.parse_args()
    try:
        result = asyncio.run(run(args.spawns, args.terminals))
    except SystemExit as exc:
        print("bubblewrap does not work on this machine: nothing to compare", file=sys.stderr)
        return int(exc.code or 2)
    try:
        result["loadavg"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    for name, label in (("agent_spawn", "agent spawn (start -> initialize answered)"), ("terminal", "terminal `true` (create -> exit)")):
        leg = result[name]
        print(f"{label}:")
        for mode in ("off", "sandboxed"):
            f = leg[mode]
            cpu = f"   CPU {f['cpu_ms']:6.1f} ms" if "cpu_ms" in f else ""
            print(f"  {mode:<10} median {f['median_ms']:7.1f} ms   p90 {f['p90_ms']:7.1f} ms   min {f['min_ms']:7.1f} ms{cpu}")
        cpu_overhead = f", {leg['overhead_cpu_ms']:.1f} ms CPU" if "overhead_cpu_ms" in leg else ""
        print(f"  overhead   {leg['overhead_ms']:7.1f} ms per spawn (medians), {leg['overhead_min_ms']:.1f} ms (fastest runs){cpu_overhead}")
    overhead = result["agent_spawn"]["overhead_ms"]
    verdict = "PASS" if overhead < TARGET_MS else "MISS"
    print(f"agent-spawn overhead {overhead:.1f} ms (medians; target < {TARGET_MS:g} ms): {verdict}")
    print(f"sandbox setup alone (terminal `true`, fastest runs): {result['terminal']['overhead_min_ms']:.1f} ms")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
