"""Two kernels of one Jupyter server share sessions through the server host (SPEC 8).

The kernels are started by the server (REST), reached over its kernel websocket exactly as
JupyterLab reaches them, and run the ordinary magics: they find the server host on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from tornado.websocket import websocket_connect

from tests.server.harness import Server, wait_for

pytestmark = pytest.mark.timeout(240)


class Kernel:
    """A server-started kernel driven over ``/api/kernels/<id>/channels``."""

    def __init__(self, server: Server, kernel_id: str) -> None:
        self.server = server
        self.id = kernel_id
        self.session = uuid.uuid4().hex

    def run(self, code: str, timeout: float = 90.0) -> dict[str, str]:
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
        out = {"stdout": "", "stderr": "", "result": "", "error": ""}
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
        out = self.run(code)
        assert not out["error"] and "agh: error" not in out["stderr"], out
        return json.loads(out["stdout"])


def start_kernel(server: Server) -> Kernel:
    reply = server.request("POST", "/api/kernels", {"name": "python3"})
    assert reply.status == 201, reply.text
    kernel = Kernel(server, reply.body["id"])
    wait_for(lambda: not kernel.run("1")["error"], timeout=60)
    out = kernel.run("%load_ext agh_nb\nimport agh_nb\nprint(type(agh_nb.get_host()).__name__)")
    assert out["stdout"].strip() == "RemoteHost", out  # the kernel found the server host itself
    return kernel


def test_a_session_is_shared_by_two_kernels_and_outlives_a_restart(server: Server, tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    a, b = start_kernel(server), start_kernel(server)
    try:
        created = a.json(f"%agh session new --agent demo-fast --cwd {workspace} --name shared -o json")
        sid = created["id"]
        assert created["state"] == "active"

        listed = b.json("%agh session list -o json")
        assert sid in [row["id"] for row in listed]

        turn = b.json(f'%agh session prompt {sid} "write from-b.txt written via kernel B" -o json')
        pending = wait_for(lambda: b.json(f"%agh session inspect {sid} -o json")["pending_approvals"], timeout=30)
        request = pending[0]["request_id"]
        decided = b.json(f"%agh session approve {sid} --request {request} --decision allow-once -o json")
        assert decided["decision"] == "allow-once"
        wait_for(lambda: any(e["type"] == "done" and e["turn_id"] == turn["turn_id"] for e in server.events(sid)))
        assert (workspace / "from-b.txt").read_text() == "written via kernel B"

        restart = server.request("POST", f"/api/kernels/{a.id}/restart")
        assert restart.status == 200, restart.text
        wait_for(lambda: not a.run("1")["error"], timeout=60)
        status = b.json(f"%agh session status {sid} -o json")
        assert status["state"] == "active", status
        a.run("%load_ext agh_nb")
        again = a.json(f'%agh session prompt {sid} "after the restart" --wait -o json')
        assert again["stop_reason"] == "end_turn"
        stopped = b.json(f"%agh session stop {sid} -o json")
        assert stopped["stop_reason"] == "user_canceled"
    finally:
        for kernel in (a, b):
            server.request("DELETE", f"/api/kernels/{kernel.id}")
