"""Fixtures for real-kernel tests: a live ipykernel per test, with its own ``AGH_HOME``.

The backbone is ``KernelSession.run(source)``: execute one cell in the kernel and return what a
notebook user would see (stdout text, stderr text, the execute_result data, an error if any).
Every kernel is shut down in a ``finally``, and any agent subprocess it left behind is killed by
pid (only descendants of the kernel we started, and only if they still run the demo agent).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import KernelManager

from agh_nb.core.private import make_private_dirs

KERNEL_NAME = "python3"
STARTUP_TIMEOUT = 60.0
CELL_TIMEOUT = 60.0
DEMO_MODULE = "agh_nb.agents.demo"


@dataclass
class CellResult:
    """What one executed cell showed: streams, the execute_result data, and any error."""

    source: str
    status: str = ""
    stdout: str = ""
    stderr: str = ""
    result: dict[str, Any] | None = None
    displays: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None

    def describe(self) -> str:
        """A readable dump for assertion messages."""
        return (
            f"cell: {self.source!r}\nstatus: {self.status}\nstdout: {self.stdout!r}\n"
            f"stderr: {self.stderr!r}\nresult: {self.result!r}\nerror: {self.error!r}"
        )


class KernelSession:
    """A started kernel plus a blocking client; run cells and read their outputs."""

    def __init__(self, km: KernelManager, home: Path, workspace: Path, log_path: Path) -> None:
        self.km = km
        self.home = home
        self.workspace = workspace
        self.log_path = log_path
        self.client = km.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=STARTUP_TIMEOUT)
        self.pid = int(self.ok("import os; print(os.getpid())").stdout.strip())
        self.seen_descendants: set[int] = set()

    def shutdown(self) -> None:
        """Shut the kernel down the way Jupyter does (a ``shutdown_request``, not a kill)."""
        self.seen_descendants.update(self.descendants())
        self.client.stop_channels()
        self.km.shutdown_kernel(now=False)

    # -- executing cells ------------------------------------------------------------------------

    def run(self, source: str, timeout: float = CELL_TIMEOUT) -> CellResult:
        """Execute ``source`` as one cell and collect its outputs."""
        cell = CellResult(source)

        def hook(msg: dict[str, Any]) -> None:
            kind = msg["header"]["msg_type"]
            content = msg["content"]
            if kind == "stream":
                if content["name"] == "stdout":
                    cell.stdout += content["text"]
                else:
                    cell.stderr += content["text"]
            elif kind == "execute_result":
                cell.result = content["data"]
            elif kind == "display_data":
                cell.displays.append(content["data"])
            elif kind == "error":
                cell.error = {k: content[k] for k in ("ename", "evalue", "traceback")}

        reply = self.client.execute_interactive(
            source, timeout=timeout, output_hook=hook, allow_stdin=False, store_history=True
        )
        cell.status = reply["content"]["status"]
        if cell.error is None and cell.status == "error":
            c = reply["content"]
            cell.error = {k: c.get(k) for k in ("ename", "evalue", "traceback")}
        return cell

    def ok(self, source: str, timeout: float = CELL_TIMEOUT) -> CellResult:
        """Run a cell that must succeed: no error, nothing on stderr."""
        cell = self.run(source, timeout)
        assert cell.status == "ok" and cell.error is None, cell.describe()
        assert cell.stderr == "", cell.describe()
        return cell

    def json(self, source: str, timeout: float = CELL_TIMEOUT) -> Any:
        """Run a cell that must print exactly one JSON document on stdout; return it parsed."""
        cell = self.ok(source, timeout)
        try:
            return json.loads(cell.stdout)
        except json.JSONDecodeError as exc:  # pragma: no cover - shown as a failure
            raise AssertionError(f"stdout is not one JSON document ({exc})\n{cell.describe()}") from None

    def agh(self, line: str, timeout: float = CELL_TIMEOUT) -> Any:
        """``%agh <line> -o json`` parsed."""
        return self.json(f"%agh {line} -o json", timeout)

    def events(self, session_id: str, extra: str = "") -> list[dict[str, Any]]:
        """The session's events as the magic shows them (``-o json``)."""
        rows = self.agh(f"session events {session_id} {extra}".strip())
        assert isinstance(rows, list), rows
        return rows

    def poll(self, fetch: Callable[[], Any], done: Callable[[Any], bool], timeout: float, what: str) -> Any:
        """Call ``fetch`` until ``done(value)``; fail naming ``what`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        value = fetch()
        while not done(value):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {value!r}")
            time.sleep(0.1)
            value = fetch()
        return value

    # -- processes --------------------------------------------------------------------------------

    def descendants(self) -> list[int]:
        """Pids of every live descendant of the kernel process (from /proc)."""
        return proc_descendants(self.pid)

    def demo_agent_pids(self) -> list[int]:
        """Pids of the kernel's child processes running the demo agent."""
        return [pid for pid in proc_children(self.pid) if DEMO_MODULE in proc_cmdline(pid)]


# -- /proc helpers (psutil is not installed) ------------------------------------------------------


def proc_ppid(pid: int) -> int | None:
    """Parent pid of ``pid`` from /proc/<pid>/stat, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[1])


def proc_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` (``Z`` = zombie), or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[0]


def proc_cmdline(pid: int) -> str:
    """The command line of ``pid`` joined by spaces ('' when it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def proc_children(parent: int) -> list[int]:
    """Pids whose parent is ``parent``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and proc_ppid(int(entry)) == parent:
            out.append(int(entry))
    return out


def proc_descendants(root: int) -> list[int]:
    """Every live descendant of ``root``."""
    found: list[int] = []
    frontier = [root]
    while frontier:
        children = proc_children(frontier.pop())
        found.extend(children)
        frontier.extend(children)
    return found


def _alive(pid: int) -> bool:
    state = proc_state(pid)
    return state is not None and state != "Z"


# -- fixtures --------------------------------------------------------------------------------------


def write_demo_agent(home: Path) -> Path:
    """``$AGH_HOME/agents/demo/AGENT.md`` running the built-in demo agent with this interpreter."""
    directory = make_private_dirs(home / "agents" / "demo")  # as agh_nb keeps its home (SPEC 7)
    path = directory / "AGENT.md"
    path.write_text(
        '---\nname: demo\ncommand: ["{python}", "-m", "agh_nb.agents.demo"]\n---\nThe scripted demo agent.\n',
        encoding="utf-8",
    )
    path.chmod(0o600)
    return path


@contextlib.contextmanager
def open_kernel(home: Path, workspace: Path, log_path: Path) -> Iterator[KernelSession]:
    """Start a real ipykernel with ``AGH_HOME=home`` in ``workspace``; ``%load_ext agh_nb`` has run.

    On exit the embedded host is shut down and the kernel too (if it still lives), and every demo
    agent it left behind is killed by pid.
    """
    env = dict(os.environ)
    env["AGH_HOME"] = str(home)
    env.pop("JPY_PARENT_PID", None)
    env.pop("AGH_NB_SERVER", None)
    log = open(log_path, "wb")  # noqa: SIM115 - closed in finally
    km = KernelManager(kernel_name=KERNEL_NAME)
    session: KernelSession | None = None
    kernel_pid: int | None = None
    leftovers: set[int] = set()
    try:
        km.start_kernel(env=env, cwd=str(workspace), stdout=log, stderr=log)
        session = KernelSession(km, home, workspace, log_path)
        kernel_pid = session.pid
        session.ok("%load_ext agh_nb")
        yield session
    finally:
        try:
            if session is not None:
                leftovers |= session.seen_descendants
            if session is not None and km.is_alive():
                leftovers |= set(session.descendants())
                # Stop the embedded host's sessions cleanly before the kernel goes away.
                try:
                    session.run("import agh_nb.hosts as _agh_hosts; _agh_hosts.shutdown_host()", timeout=40)
                except Exception as exc:  # teardown must go on
                    print(f"host shutdown in kernel failed: {exc!r}", file=sys.stderr)
                leftovers |= set(session.descendants())
            if session is not None:
                session.client.stop_channels()
        finally:
            if km.has_kernel:
                km.shutdown_kernel(now=not km.is_alive())
            log.close()
            for pid in leftovers:
                if _alive(pid) and DEMO_MODULE in proc_cmdline(pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            text = log_path.read_text(errors="replace") if log_path.exists() else ""
            if text.strip():
                print(f"--- kernel process output (pid {kernel_pid}) ---\n{text}")


@pytest.fixture
def kernel(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[KernelSession]:
    """A real ipykernel (from this venv) with ``AGH_HOME`` set to a fresh directory.

    ``%load_ext agh_nb`` has already run. The kernel's cwd is an empty workspace.
    Indirect parametrization (``@pytest.mark.parametrize("kernel", [TOML], indirect=True)``)
    writes ``$AGH_HOME/config.toml`` with that text before the kernel starts.
    """
    home = tmp_path / "agh_home"
    home.mkdir(mode=0o700)  # private, as agh_nb makes it: an open home is tightened with a warning
    workspace = tmp_path / "ws"
    workspace.mkdir()
    write_demo_agent(home)
    config_toml = getattr(request, "param", None)
    if config_toml is not None:
        (home / "config.toml").write_text(config_toml, encoding="utf-8")
        (home / "config.toml").chmod(0o600)
    with open_kernel(home, workspace, tmp_path / "kernel.log") as session:
        yield session


@pytest.fixture
def kernels(tmp_path: Path) -> Iterator[Callable[[str], KernelSession]]:
    """Start real kernels on demand, all sharing one fresh ``AGH_HOME`` and workspace.

    ``kernels("a")`` starts a kernel (its log is ``<tmp>/kernel-a.log``); every one is shut down
    (or found dead) and its agents killed at teardown.
    """
    home = tmp_path / "agh_home"
    home.mkdir(mode=0o700)  # private, as agh_nb makes it: an open home is tightened with a warning
    workspace = tmp_path / "ws"
    workspace.mkdir()
    write_demo_agent(home)
    with contextlib.ExitStack() as stack:

        def start(name: str) -> KernelSession:
            return stack.enter_context(open_kernel(home, workspace, tmp_path / f"kernel-{name}.log"))

        yield start
