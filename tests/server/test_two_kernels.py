"""Two kernels of one Jupyter server share sessions through the server host (SPEC 8).

The kernels are started by the server (REST), reached over its kernel websocket exactly as
JupyterLab reaches them, and run the ordinary magics: they find the server host on their own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.server.harness import Server, start_kernel, wait_for

pytestmark = pytest.mark.timeout(240)


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
