"""The test harness of the server host: a real Jupyter server driven over loopback HTTP.

``start_server`` runs ``python -m jupyter_server`` as a subprocess with a known token, port 0,
its own ``AGH_HOME``, runtime and user config directories; ``start_kernel`` asks it for a kernel
and drives it over the kernel websocket as JupyterLab does (client mode). The agh_nb extension is NOT enabled
here: it must come from the ``etc/jupyter/jupyter_server_config.d/agh_nb.json`` that installing
the package put into the environment (the user config only switches the other extensions off,
for a faster start). ``Server.api`` speaks HTTP with ``http.client``; ``SSE`` reads a stream
line by line and can be cut at any point. Every server is stopped (SIGTERM, then kill) and its
agent subprocesses die with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tornado.websocket import websocket_connect

TOKEN = "agh-test-token"
START_TIMEOUT = 90.0
STOP_TIMEOUT = 40.0
API = "/agh/api"
QUIET_EXTENSIONS = {"jupyterlab": False, "jupyter_lsp": False, "notebook_shim": False, "jupyter_server_terminals": False}


@dataclass
class Reply:
    """One HTTP answer: status, parsed JSON body (None if not JSON), raw text, headers."""

    status: int
    body: Any
    text: str
    headers: dict[str, str]

    def error_type(self) -> str | None:
        """``body["error"]["type"]`` when the body is an error document."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return self.body["error"].get("type")
        return None


@dataclass
class Server:
    """A running Jupyter server subprocess."""

    proc: subprocess.Popen[bytes]
    port: int
    home: Path
    root: Path
    log_path: Path
    token: str = TOKEN
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = "default",
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        timeout: float = 60.0,
    ) -> Reply:
        """One request; ``path`` is absolute (``/api/status``); ``token=None`` sends none."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            hdrs = dict(headers or {})
            if token is not None:
                hdrs["Authorization"] = f"token {self.token if token == 'default' else token}"
            data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
            if data is not None:
                hdrs.setdefault("Content-Type", "application/json")
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            text = resp.read().decode("utf-8", "replace")
            try:
                parsed = json.loads(text) if text else None
            except ValueError:
                parsed = None
            return Reply(resp.status, parsed, text, {k.lower(): v for k, v in resp.getheaders()})
        finally:
            conn.close()

    def api(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Reply:
        """A request under ``/agh/api``."""
        return self.request(method, API + path, body, **kwargs)

    def ok(self, method: str, path: str, body: Any = None, status: int | None = None, **kwargs: Any) -> Any:
        """A request that must succeed (2xx, or exactly ``status``); returns the JSON body."""
        reply = self.api(method, path, body, **kwargs)
        good = reply.status == status if status is not None else 200 <= reply.status < 300
        assert good, f"{method} {path} -> {reply.status} {reply.text[:500]}"
        return reply.body

    def create(self, agent: str = "demo-fast", **fields: Any) -> dict[str, Any]:
        """Create a session (201) in a fresh workspace under the server's root."""
        record = self.ok("POST", "/sessions", {"agent": agent, **fields}, status=201)
        assert record["state"] == "active", record
        return record

    def prompt_and_wait(self, session_id: str, text: str, timeout: float = 60.0) -> dict[str, Any]:
        """Prompt and long-poll until the turn is done; returns the finished turn."""
        turn = self.ok("POST", f"/sessions/{session_id}/prompt", {"text": text}, status=202)
        return self.wait_turn(session_id, turn["turn_id"], timeout)

    def wait_turn(self, session_id: str, turn_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Long-poll a turn until it is done."""
        deadline = time.monotonic() + timeout
        while True:
            doc = self.ok("GET", f"/sessions/{session_id}/turns/{turn_id}?wait=20")
            if doc["status"] == "done":
                return doc
            assert time.monotonic() < deadline, f"turn {turn_id} not done within {timeout}s: {doc}"

    def events(self, session_id: str, query: str = "") -> list[dict[str, Any]]:
        """The session's events (``query`` like ``?type=done``)."""
        return self.ok("GET", f"/sessions/{session_id}/events{query}")["events"]

    def log(self) -> str:
        """The server's combined stdout/stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Signal the server and wait for it to exit (kill it after ``timeout``); returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def _default_sigint() -> None:
    # A server started from a shell's background job inherits an ignored SIGINT; the shutdown
    # tests interrupt it like Ctrl-C would, so give it Python's default disposition back.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_server(base: Path, *, home: Path | None = None, args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> Server:
    """Start ``python -m jupyter_server`` on 127.0.0.1, port 0; wait until agh_nb answers."""
    base.mkdir(parents=True, exist_ok=True)
    home = home or base / "home"
    root = base / "root"
    for d in (home, root, base / "runtime", base / "config"):
        d.mkdir(parents=True, exist_ok=True)
    (base / "config" / "jupyter_server_config.json").write_text(
        json.dumps({"ServerApp": {"jpserver_extensions": QUIET_EXTENSIONS}}), encoding="utf-8"
    )
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "AGH_"))}
    child_env.update(
        AGH_HOME=str(home),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        JUPYTER_CONFIG_DIR=str(base / "config"),
        JUPYTER_DATA_DIR=str(base / "data"),
        JUPYTER_PLATFORM_DIRS="1",
        PYTHONUNBUFFERED="1",
    )
    child_env.update(env or {})
    log_path = base / "server.log"
    argv = [
        sys.executable, "-m", "jupyter_server",
        "--ServerApp.ip=127.0.0.1", "--ServerApp.port=0", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={TOKEN}", "--ServerApp.open_browser=False",
        "--ServerApp.allow_root=True", f"--ServerApp.root_dir={root}",
        "--AghServerExtension.keepalive_interval=0.5",
        *args,
    ]
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env, cwd=base,
            preexec_fn=_default_sigint,
        )
    server = Server(proc=proc, port=0, home=home, root=root, log_path=log_path)
    deadline = time.monotonic() + START_TIMEOUT
    info = base / "runtime" / f"jpserver-{proc.pid}.json"
    try:
        while not info.exists() or not info.read_text(encoding="utf-8").strip():
            if proc.poll() is not None:
                raise AssertionError(f"jupyter server exited with {proc.returncode}:\n{server.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"jupyter server did not start:\n{server.log()[-3000:]}")
            time.sleep(0.05)
        server.port = int(json.loads(info.read_text(encoding="utf-8"))["port"])
        while True:  # the runtime is up once agh_nb answers anything but 503-while-starting
            try:
                reply = server.api("GET", "/sessions")
            except ConnectionRefusedError:  # the info file is written before the socket listens
                reply = None
            if reply is not None and (reply.status != 503 or "starting" not in reply.text):
                return server
            if proc.poll() is not None:
                raise AssertionError(f"jupyter server exited with {proc.returncode}:\n{server.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"agh_nb did not start:\n{server.log()[-3000:]}")
            time.sleep(0.05)
    except BaseException:
        server.stop()
        raise


def quote_ref(ref: str) -> str:
    """URL-encode a vault ref for ``/vault/<ref>``."""
    return urllib.parse.quote(ref, safe="")


class SSE:
    """A plain HTTP/1.1 client for one ``text/event-stream`` response, read line by line."""

    def __init__(
        self, server: Server, path: str, *, last_event_id: int | None = None, timeout: float = 30.0, rcvbuf: int | None = None
    ) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
        if rcvbuf is not None:  # a small receive window: the server's writes back up quickly
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.settimeout(timeout)
            sock.connect(("127.0.0.1", server.port))
            self.conn.sock = sock
        headers = {"Authorization": f"token {server.token}", "Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self.conn.request("GET", API + path, headers=headers)
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.comments = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.messages()

    def messages(self, *, comments: bool = False) -> Iterator[dict[str, Any]]:
        """Yield ``{"id", "event", "data"}`` messages (and ``{"comment"}`` lines if asked) until the stream ends."""
        msg: dict[str, Any] = {}
        data: list[str] = []
        while True:
            line = self.resp.readline()
            if not line:
                return
            text = line.decode("utf-8").rstrip("\r\n")
            if not text:
                if data or msg:
                    msg["data"] = json.loads("\n".join(data)) if data else None
                    yield msg
                msg, data = {}, []
            elif text.startswith(":"):
                self.comments += 1
                if comments:
                    yield {"comment": text[1:].strip()}
            else:
                name, _, value = text.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data":
                    data.append(value)
                elif name == "id":
                    msg["id"] = int(value)
                else:
                    msg[name] = value

    def close(self) -> None:
        """Cut the connection (the server must notice and unsubscribe)."""
        self.resp.close()
        self.conn.close()

    def __enter__(self) -> SSE:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_agent(home: Path, name: str, command: list[str]) -> None:
    """``$AGH_HOME/agents/<name>/AGENT.md`` with the given argv."""
    directory = home / "agents" / name
    directory.mkdir(parents=True, exist_ok=True)
    argv = ", ".join(json.dumps(part) for part in command)
    (directory / "AGENT.md").write_text(f"---\nname: {name}\ncommand: [{argv}]\n---\nTest agent {name}.\n", encoding="utf-8")


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll until ``predicate()`` is truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"condition not met within {timeout}s"
        time.sleep(interval)


# -- kernels started by the server (client mode) ----------------------------------------------------


class Kernel:
    """A server-started kernel driven over ``/api/kernels/<id>/channels``."""

    def __init__(self, server: Server, kernel_id: str) -> None:
        self.server = server
        self.id = kernel_id
        self.session = uuid.uuid4().hex

    def run(self, code: str, timeout: float = 90.0) -> dict[str, str]:
        """Execute ``code``; returns its ``stdout``, ``stderr``, ``result`` (text/plain), ``display``
        (text/plain of displayed data) and ``error`` (``ename: evalue``) as text."""
        return asyncio.run(asyncio.wait_for(self._run(code), timeout))

    async def _run(self, code: str) -> dict[str, str]:
        url = f"ws://127.0.0.1:{self.server.port}/api/kernels/{self.id}/channels?token={self.server.token}"
        ws = await websocket_connect(url)
        msg_id = uuid.uuid4().hex
        ws.write_message(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "msg_type": "execute_request",
                        "username": "test",
                        "session": self.session,
                        "date": "",
                        "version": "5.3",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "content": {
                        "code": code,
                        "silent": False,
                        "store_history": True,
                        "user_expressions": {},
                        "allow_stdin": False,
                        "stop_on_error": True,
                    },
                    "channel": "shell",
                    "buffers": [],
                }
            )
        )
        out = {"stdout": "", "stderr": "", "result": "", "display": "", "error": ""}
        try:
            while True:
                raw = await ws.read_message()
                if raw is None:
                    raise AssertionError("the kernel websocket closed")
                msg = json.loads(raw)
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = msg["msg_type"], msg["content"]
                if kind == "stream":
                    out[content["name"]] += content["text"]
                elif kind == "execute_result":
                    out["result"] += content["data"].get("text/plain", "")
                elif kind in ("display_data", "update_display_data"):
                    out["display"] += content["data"].get("text/plain", "") + "\n"
                elif kind == "error":
                    out["error"] += f"{content['ename']}: {content['evalue']}"
                elif kind == "status" and content["execution_state"] == "idle":
                    return out
        finally:
            ws.close()
            # Wait for the close handshake so no socket outlives the test's event loop.
            with contextlib.suppress(Exception):
                while await asyncio.wait_for(ws.read_message(), 5) is not None:
                    pass

    def json(self, code: str) -> Any:
        """Execute ``code`` that must succeed and print one JSON document; returns it."""
        out = self.run(code)
        assert not out["error"] and "agh: error" not in out["stderr"], out
        return json.loads(out["stdout"])


def start_kernel(server: Server) -> Kernel:
    """A kernel started by ``server`` with agh_nb loaded; it must have found the server host itself."""
    reply = server.request("POST", "/api/kernels", {"name": "python3"})
    assert reply.status == 201, reply.text
    kernel = Kernel(server, reply.body["id"])
    wait_for(lambda: not kernel.run("1")["error"], timeout=60)
    out = kernel.run("%load_ext agh_nb\nimport agh_nb\nprint(type(agh_nb.get_host()).__name__)")
    assert out["stdout"].strip() == "RemoteHost", out  # the kernel found the server host itself
    return kernel
