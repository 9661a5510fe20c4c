"""The vault from a real kernel (SPEC 6): the password prompt, and nothing a user keeps shows the value.

The value is typed into the front end's password box (jupyter's ``input_request`` with
``password: true``, answered here the way a front end answers it), handed to the demo agent
through its AGENT.md ``env``, echoed back by the agent, leaked into an error and a crash. Then
every place a user keeps something is searched for it: the cells' outputs (what a saved
notebook holds), the kernel's own history, the kernel process's log, and every file of
``$AGH_HOME`` (the DuckDB store included).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.kernel.conftest import KernelSession

pytestmark = pytest.mark.timeout(150)

SECRET = "kernel-S3CRET-value-71b0c2d9"
REF = "vault:providers/kernel-test"


def run_with_password(kernel: KernelSession, source: str, password: str) -> dict[str, Any]:
    """Run a cell that asks for a password; answer it as a front end does. Returns what it showed."""
    shown: dict[str, Any] = {"outputs": [], "prompts": []}

    def on_output(msg: dict[str, Any]) -> None:
        if msg["header"]["msg_type"] in ("stream", "execute_result", "display_data", "error"):
            shown["outputs"].append(msg["content"])

    def on_stdin(msg: dict[str, Any]) -> None:
        shown["prompts"].append(msg["content"])
        kernel.client.input(password)

    reply = kernel.client.execute_interactive(
        source, timeout=60, allow_stdin=True, output_hook=on_output, stdin_hook=on_stdin, store_history=True
    )
    shown["status"] = reply["content"]["status"]
    return shown


def every_file_bytes(root: Path) -> bytes:
    return b"\n".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


def test_a_secret_put_through_the_password_box_is_kept_out_of_everything(kernel: KernelSession) -> None:
    home, workspace = kernel.home, kernel.workspace
    agent_dir = home / "agents" / "keyed"
    agent_dir.mkdir(parents=True)
    (agent_dir / "AGENT.md").write_text(
        f'---\nname: keyed\ncommand: ["{{python}}", "-m", "agh_nb.agents.demo", "--fast"]\n'
        f"env:\n  DEMO_TOKEN: {REF}\n---\nA demo agent holding a credential.\n",
        encoding="utf-8",
    )
    put = run_with_password(kernel, f"%agh vault put {REF} --kind api_key -o json", SECRET)
    assert put["status"] == "ok", put
    (prompt,) = put["prompts"]
    assert prompt["password"] is True and REF in prompt["prompt"]
    (printed,) = [o["text"] for o in put["outputs"] if o.get("name") == "stdout"]
    assert json.loads(printed)["ref"] == REF and json.loads(printed)["present"] is True

    sid = kernel.agh(f"session new --agent keyed --cwd {workspace}")["id"]
    echoed = kernel.agh(f"session prompt {sid} 'echo-env DEMO_TOKEN' --wait")
    assert echoed["stop_reason"] == "end_turn"
    said = "".join(e["content"].get("text") or "" for e in kernel.events(sid, "--type agent_message"))
    assert f"DEMO_TOKEN=[redacted:{REF}]" in said, said  # the agent had the value
    kernel.run(f"%agh session prompt {sid} 'leak DEMO_TOKEN' --wait")
    status = kernel.poll(lambda: kernel.agh(f"session status {sid}"), lambda s: s["state"] == "stopped", 30, "the crash")
    assert status["stop_reason"] == "agent_crashed" and "[redacted:" in status["failure"]["summary"]
    shown = [
        kernel.run(f"%agh session inspect {sid}"),
        kernel.run(f"%agh session transcript {sid}"),
        kernel.run("%agh vault list"),
        kernel.run(f"%agh vault get {REF} -o json"),
        kernel.run("%%agh sql\nSELECT content FROM events"),
    ]
    history = kernel.run("print('\\n'.join(c for _, _, c in get_ipython().history_manager.get_range()))").stdout
    kernel.run("import agh_nb.hosts as h; h.shutdown_host()")  # flush and close the store

    outputs = json.dumps(put["outputs"]) + "".join(c.describe() for c in shown)
    assert SECRET not in outputs, "a cell's output (what a saved notebook keeps) shows the value"
    assert SECRET not in history and f"vault put {REF}" in history
    assert SECRET not in kernel.log_path.read_text(errors="replace")
    assert SECRET.encode() not in every_file_bytes(home)
    # The IPython history database lives outside AGH_HOME: the value never reached it either.
    for db in Path.home().glob(".ipython/profile_default/history.sqlite"):
        with sqlite3.connect(db) as con:
            rows = con.execute("SELECT source FROM history").fetchall()
        assert not any(SECRET in (r[0] or "") for r in rows)
