"""Readable output in a REAL ipykernel and in terminal IPython (issue 12, sections 3-6): compact
DataFrames by default and full rows behind ``--full``, dict results as escaped HTML tables that
stay dicts, ``--wait`` ending in a readable turn (no ``TurnResult(...)`` repr) and rewriting one
line in a terminal, ``--follow`` filters, the card of a stopped session, the timeline's title,
and ``agh-nb`` naming the notebook whose kernel holds the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kernel.conftest import KernelSession, open_kernel, write_demo_agent
from tests.kernel.test_magics_kernel import new_session

pytestmark = pytest.mark.timeout(150)


def test_tables_lead_with_what_a_person_reads(kernel: KernelSession) -> None:
    record = kernel.agh(f"session new --agent demo --cwd {kernel.workspace} --name '<i>tidy</i>'")
    sid = record["id"]
    turn = kernel.agh(f'session prompt {sid} "hello" --wait')
    columns = kernel.json(f"ev = %agh session events {sid}\nimport json as _j\nprint(_j.dumps(list(ev.columns)))")
    assert columns == ["sequence", "time", "type", "summary", "turn_id"]
    full = kernel.json(f"fu = %agh session events {sid} --full\nprint(_j.dumps(list(fu.columns)))")
    assert full[:3] == ["id", "session_id", "sequence"] and "content" in full
    assert kernel.events(sid)[0]["content"]["text"] == "hello", "-o json stays the full rows"
    listing = kernel.json("ls = %agh session list\nprint(_j.dumps(list(ls.columns)))")
    assert listing[:4] == ["name", "agent", "state", "reason"]

    status = kernel.ok(f"%agh session status {sid}").result
    assert status is not None and "<table" in status["text/html"], status
    assert "&lt;i&gt;tidy&lt;/i&gt;" in status["text/html"] and "<i>tidy</i>" not in status["text/html"]
    assert "state" in status["text/plain"] and "{" not in status["text/plain"].splitlines()[0], status["text/plain"]
    assert kernel.json(f"st = %agh session status {sid}\nprint(_j.dumps(st['state']))") == "active", "still a dict"

    waited = kernel.ok(f'%agh session prompt {sid} "again" --wait').result
    assert waited is not None
    assert waited["text/plain"].startswith("turn turn_") and ": end_turn (" in waited["text/plain"], waited
    assert "TurnResult(" not in waited["text/plain"] and "<table" in waited["text/html"]
    assert turn["stop_reason"] == "end_turn"


def test_follow_in_a_cell_honours_the_filters(kernel: KernelSession) -> None:
    sid = new_session(kernel)["id"]
    first = kernel.agh(f'session prompt {sid} "hello" --wait')["turn_id"]
    kernel.agh(f'session prompt {sid} "again" --wait')
    shown = kernel.ok(f"%agh session events {sid} --follow --type tool_result --turn {first}").stdout
    lines = shown.splitlines()
    assert len(lines) == 2 and all(" tool_result " in l and first in l for l in lines), shown
    assert "→ words=1 · characters=5" in lines[0], "a tool result reads as its key fields"
    refused = kernel.run(f"%agh session events {sid} --follow -o json")
    assert refused.stderr.startswith("agh: error: session events: --follow") and refused.stdout == "", refused.describe()


def test_a_stopped_card_shows_how_it_ended_and_the_timeline_its_name(kernel: KernelSession) -> None:
    record = kernel.agh(f"session new --agent demo --cwd {kernel.workspace} --name 'nightly $run'")
    sid = record["id"]
    kernel.agh(f'session prompt {sid} "hello" --wait')
    kernel.agh(f"session stop {sid}")
    kernel.ok("import agh_nb, agh_nb.api\nhost = agh_nb.get_host()")
    page = kernel.ok(f"agh_nb.api.Session(host, {sid!r})").result["text/html"]  # type: ignore[index]
    assert ">stopped</span>" in page and ">user_canceled</span>" in page, page
    assert ">unknown</span>" not in page, "a stopped session's card shows its final state, not health"
    title = kernel.json(f"tl = %agh timeline {sid}\nimport json as _j\nprint(_j.dumps(tl.figure.axes[0].get_title()))")
    assert title == f"nightly $run ({sid}): turns and tool calls", title


def test_the_cli_names_the_notebook_whose_kernel_holds_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, ws = tmp_path / "home", tmp_path / "ws"
    home.mkdir(mode=0o700)  # private, as agh_nb makes it (an open home is tightened, with a warning)
    ws.mkdir()
    write_demo_agent(home)
    monkeypatch.setenv("JPY_SESSION_NAME", str(ws / "analysis.ipynb"))
    with open_kernel(home, ws, tmp_path / "kernel.log") as kernel:
        kernel.agh(f"session new --agent demo --cwd {ws}")  # the embedded host now holds the store
        holder = json.loads((home / "holder.json").read_text())
        assert holder["kind"] == "kernel" and holder["pid"] == kernel.pid and holder["kernel"].endswith(".json")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AGH_", "JPY_"))}
        env["AGH_HOME"] = str(home)
        for words in (["session", "list"], ["session", "prompt", "sess_x", "hi"]):
            out = subprocess.run(
                [sys.executable, "-m", "agh_nb.cli", *words], env=env, capture_output=True, text=True, timeout=60
            )
            line = out.stderr.strip()
            assert out.returncode == 1 and len(line.splitlines()) == 1, (words, out.stderr)
            assert f"in use by the kernel of notebook {ws / 'analysis.ipynb'} (pid {kernel.pid}, {holder['kernel']}, since " in line, line
            assert "python3" not in line and "(in that notebook, as %agh)" in line
    assert not (home / "holder.json").exists(), "the kernel's host removed it when it closed"


def test_wait_in_terminal_ipython_rewrites_one_line(tmp_path: Path) -> None:
    home, ws = tmp_path / "home", tmp_path / "ws"
    home.mkdir(mode=0o700)  # private, as agh_nb makes it (an open home is tightened, with a warning)
    ws.mkdir()
    write_demo_agent(home)
    code = (
        "%load_ext agh_nb\n"
        f"s = %agh session new --agent demo --cwd {ws}\n"
        "r = %agh session prompt {s.id} 'slow 8 0.4' --wait\n"
        "print('RESULT', r.stop_reason)\n"
        "import agh_nb.hosts; agh_nb.hosts.shutdown_host()\n"
    )
    script = tmp_path / "wait.ipy"
    script.write_text(code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGH_", "JPY_"))}
    env["AGH_HOME"] = str(home)
    ipython = Path(sys.executable).with_name("ipython")
    out = subprocess.run(
        [str(ipython), "--no-banner", "--colors=NoColor", str(script)],
        env=env, capture_output=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # bytes: text mode would turn every carriage return into a newline
    stdout = out.stdout.decode()
    assert out.returncode == 0, out.stderr.decode()
    progress = stdout.split("RESULT")[0].lstrip("\n")
    assert progress.count("\r") >= 3, repr(progress)  # several updates, each rewriting the line
    assert progress.count("\n") == 1, repr(progress)  # ... and one line in the end
    assert "end_turn after" in progress.split("\r")[-1] and "RESULT end_turn" in stdout
