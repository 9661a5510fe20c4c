"""A real JupyterLab for browser tests, and a driver for one notebook open in it.

``start_lab`` runs ``python -m jupyterlab`` as a subprocess on 127.0.0.1 with a random token, a
temporary root directory (notebooks are copied there, outputs stripped, so nothing JupyterLab saves
touches the repository), its own ``AGH_HOME``, ``TMPDIR``, Jupyter config/runtime/data directories
and JupyterLab user settings. ``mode`` decides where the agh_nb runtime lives:

* ``"extension"``: the agh_nb Jupyter server extension is switched on, so the server hosts the
  runtime and kernels are its HTTP clients (client mode, docs/http-api.md);
* ``"embedded"``: the extension is switched off; each kernel embeds its own runtime.

``Lab.stop`` terminates the server and then kills, by pid, whatever it left behind (kernels, agent
subprocesses): its descendants, and any process whose working directory lies inside the test's
temporary directory.

``NotebookPage`` drives one notebook the way a person does: waits for the kernel to be idle, selects
the first cell, presses Shift+Enter cell by cell, reads prompts and outputs from the DOM.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import Locator, Page, expect

START_TIMEOUT = 150.0
STOP_TIMEOUT = 40.0
KERNEL_TIMEOUT = 120.0
CELL_TIMEOUT = 90.0

CHROMIUM = "/usr/bin/chromium"
# The flags that work on these machines (see the environment notes): no sandbox as root, no GPU,
# and no background connections (the network is closed). Playwright adds --headless and its own
# new, empty --user-data-dir (we pass one too, via launch_persistent_context).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# JupyterLab user settings: every cell stays in the DOM (no windowing), no news/update checks.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"checkForUpdates": False, "fetchNews": "false"},
}


# -- processes (from /proc; psutil is not a declared dependency) -----------------------------------


def _proc_stat(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def _alive(pid: int) -> bool:
    fields = _proc_stat(pid)
    return fields is not None and fields[0] != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _pids() -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def descendants(root: int) -> list[int]:
    """Every live descendant of ``root`` (pids)."""
    children: dict[int, list[int]] = {}
    for pid in _pids():
        fields = _proc_stat(pid)
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(pid)
    found: list[int] = []
    frontier = [root]
    while frontier:
        kids = children.get(frontier.pop(), [])
        found.extend(kids)
        frontier.extend(kids)
    return found


def processes_in(directory: Path) -> list[int]:
    """Pids (not ours) whose working directory lies inside ``directory``."""
    out = []
    prefix = str(directory.resolve())
    for pid in _pids():
        if pid == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if cwd == prefix or cwd.startswith(prefix + os.sep):
            out.append(pid)
    return out


def kill_all(pids: dict[int, str]) -> list[str]:
    """SIGKILL each pid still alive and still running the same command line; returns what was killed."""
    killed = []
    for pid, cmd in pids.items():
        if _alive(pid) and _cmdline(pid) == cmd:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(f"{pid} {cmd[:120]}")
            except ProcessLookupError:
                pass
    return killed


# -- the server ------------------------------------------------------------------------------------


def extension_available() -> bool:
    """Whether agh_nb ships a Jupyter server extension (``agh_nb.server``)."""
    import importlib.util

    import agh_nb

    return hasattr(agh_nb, "_jupyter_server_extension_points") and importlib.util.find_spec("agh_nb.server") is not None


def strip_outputs(src: Path, dst: Path) -> None:
    """Copy a notebook, dropping stored outputs and execution counts (a fresh notebook)."""
    nb = json.loads(src.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    dst.write_text(json.dumps(nb, indent=1), encoding="utf-8")


@dataclass
class Lab:
    """A running JupyterLab subprocess and its directories."""

    proc: subprocess.Popen[bytes]
    mode: str
    base: Path
    root: Path
    home: Path
    tmp: Path
    log_path: Path
    token: str
    port: int = 0
    killed: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, Any]:
        """GET ``path`` with the token; returns (status, parsed JSON or text)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path, headers={"Authorization": f"token {self.token}"})
            resp = conn.getresponse()
            text = resp.read().decode("utf-8", "replace")
        finally:
            conn.close()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text

    def request(self, method: str, path: str, body: Any = None, timeout: float = 90.0) -> tuple[int, Any]:
        """``method`` ``path`` with the token and a JSON body; returns (status, parsed JSON or text)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            payload = None if body is None else json.dumps(body)
            conn.request(method, path, body=payload, headers={"Authorization": f"token {self.token}"})
            resp = conn.getresponse()
            text = resp.read().decode("utf-8", "replace")
        finally:
            conn.close()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def kernels(self) -> list[dict[str, Any]]:
        status, body = self.get("/api/kernels")
        assert status == 200, (status, body)
        return body  # type: ignore[no-any-return]

    def stop(self) -> None:
        """SIGTERM the server (it shuts its kernels down), then kill whatever is left, by pid."""
        left = {pid: _cmdline(pid) for pid in descendants(self.proc.pid)}
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        left.update({pid: _cmdline(pid) for pid in processes_in(self.base)})
        self.killed = kill_all(left)


def start_lab(base: Path, mode: str, notebooks: list[Path]) -> Lab:
    """Start JupyterLab (``mode`` = "extension" or "embedded") serving copies of ``notebooks``."""
    assert mode in ("extension", "embedded"), mode
    dirs = {name: base / name for name in ("root", "home", "tmp", "runtime", "config", "data", "settings", "workspaces")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    dirs["home"].chmod(0o700)  # private, as agh_nb makes it: an open home is tightened with a warning
    for nb in notebooks:
        strip_outputs(nb, dirs["root"] / nb.name)
    for rel, doc in LAB_SETTINGS.items():
        path = dirs["settings"] / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc), encoding="utf-8")
    # The user config dir outranks the environment's etc/jupyter, where installing agh_nb enabled it.
    (dirs["config"] / "jupyter_server_config.json").write_text(
        json.dumps({"ServerApp": {"jpserver_extensions": {"agh_nb": mode == "extension"}}}), encoding="utf-8"
    )
    token = secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "AGH_", "PYTEST_"))}
    env.update(
        AGH_HOME=str(dirs["home"]),
        TMPDIR=str(dirs["tmp"]),  # the notebooks' tempfile.mkdtemp() workspaces land here
        JUPYTER_CONFIG_DIR=str(dirs["config"]),
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        JUPYTER_DATA_DIR=str(dirs["data"]),
        JUPYTER_PLATFORM_DIRS="1",
        JUPYTERLAB_SETTINGS_DIR=str(dirs["settings"]),
        JUPYTERLAB_WORKSPACES_DIR=str(dirs["workspaces"]),
        PYTHONUNBUFFERED="1",
    )
    argv = [
        sys.executable, "-m", "jupyterlab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", "--ServerApp.port=0", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={dirs['root']}",
        "--ServerApp.allow_root=True",
        f"--LabApp.user_settings_dir={dirs['settings']}", f"--LabApp.workspaces_dir={dirs['workspaces']}",
    ]
    log_path = base / "jupyterlab.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=base)
    lab = Lab(proc, mode, base, dirs["root"], dirs["home"], dirs["tmp"], log_path, token)
    try:
        _wait_started(lab, dirs["runtime"] / f"jpserver-{proc.pid}.json")
    except BaseException:
        lab.stop()
        raise
    return lab


def _wait_started(lab: Lab, info: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT

    def check() -> None:
        if lab.proc.poll() is not None:
            raise AssertionError(f"jupyterlab exited with {lab.proc.returncode}:\n{lab.log()[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"jupyterlab did not start within {START_TIMEOUT}s:\n{lab.log()[-4000:]}")

    while not info.exists() or not info.read_text(encoding="utf-8").strip():
        check()
        time.sleep(0.1)
    lab.port = int(json.loads(info.read_text(encoding="utf-8"))["port"])
    while True:  # GET /api/status with the token
        check()
        try:
            if lab.get("/api/status")[0] == 200:
                break
        except OSError:
            pass
        time.sleep(0.1)
    # Kernels of a server with the extension would fall back to an embedded host (and fight the
    # server for the store) if the server host were still starting: wait until it answers.
    while True:
        check()
        status, body = lab.get("/agh/api/sessions")
        if lab.mode == "embedded":
            assert status == 404, f"agh_nb extension answers although switched off: {status} {body}"
            return
        if status == 200:
            return
        assert status == 503, f"GET /agh/api/sessions -> {status} {body}\n{lab.log()[-4000:]}"
        time.sleep(0.1)


# -- one notebook in the browser -------------------------------------------------------------------

PROMPT_DONE = re.compile(r"^\[(\d+)\]:$")


class NotebookPage:
    """One notebook open in JupyterLab; cells are addressed by their index in the notebook file."""

    def __init__(self, page: Page, lab: Lab, name: str) -> None:
        self.page = page
        self.lab = lab
        self.name = name
        self.cells_json: list[dict[str, Any]] = json.loads((lab.root / name).read_text(encoding="utf-8"))["cells"]
        self.next_index = 0
        self.executed = 0

    # -- locating ---------------------------------------------------------------------------------

    @property
    def panel(self) -> Locator:
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")

    def cell(self, index: int) -> Locator:
        return self.panel.locator(".jp-Notebook .jp-Cell").nth(index)

    def prompt(self, index: int) -> str:
        return self.cell(index).locator(".jp-InputArea-prompt").inner_text().strip()

    def outputs(self, index: int) -> Locator:
        return self.cell(index).locator(".jp-OutputArea-output")

    def output_text(self, index: int) -> str:
        return "\n".join(self.outputs(index).all_inner_texts())

    def index_of(self, needle: str) -> int:
        """Index of the first code cell whose source contains ``needle``."""
        for i, cell in enumerate(self.cells_json):
            if cell["cell_type"] == "code" and needle in "".join(cell["source"]):
                return i
        raise AssertionError(f"{self.name}: no code cell contains {needle!r}")

    def source(self, index: int) -> str:
        return "".join(self.cells_json[index]["source"])

    # -- opening ----------------------------------------------------------------------------------

    def open(self) -> None:
        """Open the notebook alone and wait until its cells are shown and its kernel is idle.

        Each opening gets a workspace of its own: JupyterLab would otherwise restore the notebooks
        an earlier test left open, and a restored tab hidden behind this one still matches
        ``.jp-NotebookPanel`` (its cells exist, but are not visible).
        """
        workspace = f"t{secrets.token_hex(6)}"
        self.page.goto(self.lab.url(f"lab/workspaces/{workspace}/tree/{self.name}?token={self.lab.token}"))
        n = len(self.cells_json)
        self.page.wait_for_function(
            "n => document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell').length >= n",
            arg=n,
            timeout=KERNEL_TIMEOUT * 1000,
        )
        expect(self.page.locator(".jp-NotebookPanel")).to_have_count(1)
        expect(self.page.locator("#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current")).to_contain_text(self.name)
        self.wait_kernel_idle()

    def wait_kernel_idle(self, timeout: float = KERNEL_TIMEOUT) -> None:
        """Until the status bar says 'Python 3 (ipykernel) | Idle' and the server agrees."""
        status_item = self.page.locator(".jp-StatusBar-TextItem", has_text=re.compile(r"\(ipykernel\) \| Idle"))
        status_item.first.wait_for(state="visible", timeout=timeout * 1000)
        deadline = time.monotonic() + timeout
        while True:
            kernels = self.lab.kernels()
            if kernels and all(k["execution_state"] == "idle" for k in kernels):
                return
            assert time.monotonic() < deadline, f"kernel not idle within {timeout}s: {kernels}"
            time.sleep(0.2)

    # -- running ----------------------------------------------------------------------------------

    def select(self, index: int) -> None:
        """Select cell ``index`` in command mode (a click on its prompt area), as a person does."""
        self.cell(index).locator(".jp-InputArea-prompt").click()
        self.page.keyboard.press("Escape")
        self.next_index = index
        expect(self.cell(index)).to_have_class(re.compile(r"\bjp-mod-active\b"))

    def select_first(self) -> None:
        """Select the first cell in command mode."""
        self.select(0)

    def run_next(self, *, wait: bool = True, timeout: float = CELL_TIMEOUT) -> int:
        """Shift+Enter on the active cell (the next one); wait for a code cell's execution count."""
        index = self.next_index
        if "jp-mod-active" not in (self.cell(index).get_attribute("class") or "").split():
            # A click elsewhere (a panel button) made another cell active: back to where we were.
            self.select(index)
        self.page.keyboard.press("Shift+Enter")
        self.next_index += 1
        if self.cells_json[index]["cell_type"] == "code":
            self.executed += 1
            if wait:
                self.wait_done(index, timeout)
        return index

    def wait_done(self, index: int, timeout: float = CELL_TIMEOUT) -> int:
        """Until cell ``index`` shows an execution count ``[N]:``; returns N."""
        prompt = self.cell(index).locator(".jp-InputArea-prompt")
        deadline = time.monotonic() + timeout
        while True:
            match = PROMPT_DONE.match(prompt.inner_text().strip())
            if match:
                return int(match.group(1))
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"cell {index} did not finish within {timeout}s (prompt {prompt.inner_text()!r}):\n"
                    f"{self.source(index)}\noutput so far:\n{self.output_text(index)}"
                )
            time.sleep(0.1)

    def run_through(self, last: int, *, blocking: frozenset[int] = frozenset()) -> None:
        """Run cells from the next one up to and including ``last`` (not waiting on ``blocking``)."""
        while self.next_index <= last:
            i = self.next_index
            self.run_next(wait=i not in blocking)

    def run_rest(self, *, blocking: frozenset[int] = frozenset()) -> None:
        self.run_through(len(self.cells_json) - 1, blocking=blocking)

    def append_and_run(self, source: str, timeout: float = CELL_TIMEOUT) -> str:
        """Add a code cell at the end, type ``source`` into it, run it; returns its output text."""
        self.page.keyboard.press("Escape")
        last = self.panel.locator(".jp-Notebook .jp-Cell").last
        last.locator(".jp-InputArea-prompt").click()
        self.page.keyboard.press("Escape")
        self.page.keyboard.press("b")  # insert below, in command mode
        count = len(self.cells_json) + 1
        self.page.wait_for_function(
            "n => document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell').length >= n",
            arg=count,
        )
        index = self.panel.locator(".jp-Notebook .jp-Cell").count() - 1
        self.page.keyboard.press("Enter")  # edit mode
        self.page.keyboard.insert_text(source)  # no key events: no auto-closed brackets
        self.cells_json.append({"cell_type": "code", "source": [source]})
        self.page.keyboard.press("Shift+Enter")
        self.executed += 1
        self.wait_done(index, timeout)
        return self.output_text(index)

    # -- looking ----------------------------------------------------------------------------------

    def errors(self) -> list[str]:
        """Texts of outputs that show a traceback or an ``agh: error:`` line."""
        found = []
        for i in range(self.panel.locator(".jp-Notebook .jp-Cell").count()):
            text = self.output_text(i)
            if "Traceback" in text or "agh: error:" in text or re.search(r"^\w+Error: ", text, re.MULTILINE):
                found.append(f"cell {i}: {text[-2000:]}")
        return found

    def screenshot(self, path: Path, around: Locator | None = None) -> Path:
        """A viewport screenshot (scrolled so ``around`` is in view)."""
        if around is not None:
            around.scroll_into_view_if_needed()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path))
        return path


def poll(fetch: Callable[[], Any], done: Callable[[Any], bool], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Call ``fetch`` until ``done(value)``; fail naming ``what`` (and the last value) after ``timeout``."""
    deadline = time.monotonic() + timeout
    value = fetch()
    while not done(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {value!r}"[:6000])
        time.sleep(interval)
        value = fetch()
    return value

