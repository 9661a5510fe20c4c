"""The notebook displays in a REAL ipykernel: the event tail, the session card, the timeline, the
plain-text forms of the widgets, and ``--wait`` (progress, ``-o json``, inline approvals on stdin).

Each test starts its own kernel (fixture ``kernel`` in conftest.py) with a fresh ``AGH_HOME`` and
drives the built-in demo agent (a real ACP subprocess). What is asserted is what a notebook shows:
the widget's HTML, the display messages of a cell, the ``input_request`` a front end gets.
"""

from __future__ import annotations

import html
import json
import os
import re
import signal
import shutil
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.kernel.conftest import CELL_TIMEOUT, KernelSession
from tests.kernel.test_magics_kernel import new_session, wait_done

pytestmark = pytest.mark.timeout(120)

ROW = re.compile(r"<span style='color:#999'>#(\d+)</span> <span style='color:[^']*;font-weight:bold'>(\w+)</span>")
TIMEOUT_2S = '[permissions]\napproval_timeout = "2s"\n'


@dataclass
class Messages:
    """Every IOPub message of one cell, plus the stdin prompts it sent."""

    iopub: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    status: str = ""

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [content for msg_type, content in self.iopub if msg_type == kind]

    def stream(self, name: str) -> str:
        return "".join(c["text"] for c in self.of("stream") if c["name"] == name)

    def progress(self) -> list[str]:
        """The progress line's texts: its first display, then every in-place update."""
        shown = self.of("display_data") + self.of("update_display_data")
        return [str(c["data"].get("text/plain", "")) for c in shown]


def run_cell(kernel: KernelSession, source: str, *, answers: list[str] | None = None) -> Messages:
    """Execute ``source``; with ``answers``, stdin is allowed and each input_request gets the next one."""
    got = Messages()
    client = kernel.client

    def on_stdin(msg: dict[str, Any]) -> None:
        got.prompts.append(msg["content"]["prompt"])
        assert answers, f"unexpected input request: {msg['content']['prompt']!r}"
        client.input(answers.pop(0))

    reply = client.execute_interactive(
        source,
        timeout=CELL_TIMEOUT,
        output_hook=lambda msg: got.iopub.append((msg["header"]["msg_type"], msg["content"])),
        allow_stdin=answers is not None,
        stdin_hook=on_stdin,
    )
    got.status = reply["content"]["status"]
    return got


def tail_rows(kernel: KernelSession, name: str = "tail") -> list[dict[str, Any]]:
    """``tail.rows()`` of the tail held in the kernel variable ``name`` (oldest first)."""
    rows = kernel.json(
        "import json as _j, dataclasses as _dc\n"
        f"print(_j.dumps([_dc.asdict(r) for r in {name}.rows()]))"
    )
    assert isinstance(rows, list)
    return rows


def tail_html(kernel: KernelSession, name: str = "tail") -> str:
    value = kernel.json(f"import json as _j\nprint(_j.dumps({name}._html.value))")
    assert isinstance(value, str)
    return value


def expected_rows(events: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """How the tail should fold ``events``: (newest sequence, type) per row, newest row first."""
    rows: dict[Any, tuple[int, str]] = {}
    last_key: Any = None
    for e in events:
        c = e["content"]
        if e["type"] in ("agent_message", "thought"):
            if last_key is not None and last_key[0] == "chunks" and last_key[1:3] == (e["type"], e["turn_id"]):
                rows[last_key] = (e["sequence"], e["type"])
                continue
            key: Any = ("chunks", e["type"], e["turn_id"], e["sequence"])
        elif e["type"] in ("tool_call", "tool_result") and c.get("tool_call_id"):
            key = ("tool", e["turn_id"], c["tool_call_id"])
        elif e["type"] == "plan":  # one row per plan of a turn, updated in place
            key = ("plan", e["turn_id"], c.get("title") or "plan")
        else:
            key = ("event", e["sequence"])
        rows.pop(key, None)
        rows[key] = (e["sequence"], e["type"])
        last_key = key
    return list(reversed(rows.values()))


# -- the event tail -----------------------------------------------------------------------------


def test_tail_folds_tool_calls_and_message_chunks_live(kernel: KernelSession) -> None:
    sid = new_session(kernel)["id"]
    kernel.ok(f"tail = %agh tail {sid}")
    assert "No events yet." in tail_html(kernel)
    prompt = "hello <b>bold</b> & <img src=x onerror=alert(1)>"
    turn = kernel.agh(f"session prompt {sid} {json.dumps(prompt)}")
    events = wait_done(kernel, sid, turn["turn_id"])
    rows = kernel.poll(
        lambda: tail_rows(kernel), lambda r: bool(r) and r[-1]["type"] == "done", 20, "the tail to show done"
    )
    page = kernel.poll(
        lambda: tail_html(kernel),
        lambda h: [int(s) for s, _t in ROW.findall(h)][:1] == [events[-1]["sequence"]],
        10,
        "the tail to render done",
    )

    # One row per tool call, one per run of message/thought chunks; newest first, by newest sequence.
    shown = [(int(seq), kind) for seq, kind in ROW.findall(page)]
    assert shown == expected_rows(events), (shown, [(e["sequence"], e["type"]) for e in events])
    sequences = [seq for seq, _kind in shown]
    assert sequences == sorted(sequences, reverse=True)

    call_ids = {e["content"]["tool_call_id"] for e in events if e["type"] in ("tool_call", "tool_result")}
    tool_rows = [r for r in rows if r["type"] in ("tool_call", "tool_result")]
    assert len(call_ids) >= 2 and len(tool_rows) == len(call_ids), tool_rows
    for row in tool_rows:
        assert row["finished"] and row["type"] == "tool_result" and row["events"] >= 2, row
        assert row["title"] and row["kind"], row
    first_call = next(e for e in events if e["type"] == "tool_call")
    assert any(r["title"] == first_call["content"]["title"] for r in tool_rows)

    # A run of consecutive message chunks is one row holding their joined text.
    chunk_runs = [r for r in rows if r["type"] == "agent_message"]
    assert any(r["events"] > 1 for r in chunk_runs), chunk_runs
    said = "".join(e["content"].get("text") or "" for e in events if e["type"] == "agent_message")
    assert "".join(r["text"] for r in chunk_runs) == said
    assert len(chunk_runs) < sum(e["type"] == "agent_message" for e in events)

    # Agent text (the echo of the prompt) and the prompt itself are text, never markup.
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "&lt;img src=x" in page, page[:2000]
    assert "<b>bold</b>" not in page and "<img" not in page, page[:2000]
    assert sum(1 for r in rows if r["type"] == "user_message") == 1
    # The plan is one row, and once the turn is done it shows its final state, not "in progress".
    (plan,) = [r for r in rows if r["type"] == "plan"]
    assert plan["ended"] == "end_turn" and "1/3 done when the turn ended (end_turn)" in page, page[:3000]
    assert "[in progress]" not in page


def test_tail_shows_tool_errors_and_keeps_bounded_scrollback(kernel: KernelSession) -> None:
    record = kernel.agh(f"session new --agent demo --cwd {kernel.workspace} --permissions approve-all")
    sid = record["id"]
    for prompt in ("write ../outside.txt <i>no</i>", "run ls missing-<b>dir</b>"):
        assert kernel.agh(f"session prompt {sid} '{prompt}' --wait")["stop_reason"] == "end_turn"
    events = kernel.events(sid)
    refused, failed_run = [e for e in events if e["type"] == "tool_result"]
    assert refused["content"].get("tool_error") and failed_run["content"].get("tool_error"), events
    assert failed_run["content"].get("tool_result"), failed_run

    kernel.ok(f"tail = %agh tail {sid}")
    page = tail_html(kernel)
    assert "<i>" not in page and "<b>" not in page, page
    # A short error fits its row: "<call> [kind] ✗ error: ..."; nothing to open.
    (short,) = [r for r in tail_rows(kernel) if r["sequence"] == refused["sequence"]]
    assert short["type"] == "tool_result" and short["error"] == refused["content"]["tool_error"], short
    assert f"[edit] ✗ error: {html.escape(refused['content']['tool_error'])}</div>" in page, page
    # The failed command: a <details> row whose summary is the call and whose body is the whole
    # error (the command's output) and result, escaped.
    (details,) = re.findall(r"<details.*?</details>", page, flags=re.S)
    match = re.match(r"<details[^>]*><summary[^>]*>(.*)</summary>(.*)</details>", details, flags=re.S)
    assert match is not None, details
    summary, body = match.groups()
    assert f"#{failed_run['sequence']}</span>" in summary and "tool_result" in summary, summary
    assert "Run ls missing-&lt;b&gt;dir&lt;/b&gt; [execute] ✗ error: ls: " in summary, summary
    assert html.escape(failed_run["content"]["tool_error"]) in body, body
    assert "\nexit_code: 2\n" in body and "&quot;" not in body, body  # key fields, not raw JSON

    kernel.ok(
        "import agh_nb, agh_nb.kernel.tail_widget\n"
        f"small = agh_nb.kernel.tail_widget.EventTail(agh_nb.get_host(), {sid!r}, scrollback=3)"
    )
    small = tail_rows(kernel, "small")
    assert len(small) == 3, small
    assert [r["sequence"] for r in small] == [seq for seq, _t in expected_rows(events)][:3][::-1], small
    assert kernel.ok("small.close(); tail.close()").stderr == ""


def test_plain_text_of_the_tail_and_the_panel(kernel: KernelSession) -> None:
    sid = new_session(kernel)["id"]
    turn = kernel.agh(f'session prompt {sid} "hello" --wait')
    last = kernel.events(sid)[-1]
    assert last["type"] == "done" and last["turn_id"] == turn["turn_id"]
    shown = kernel.ok(f"%agh tail {sid}")
    assert shown.result is not None
    assert shown.result["text/plain"] == f"Event tail of {sid}: {last['sequence']} events, last #{last['sequence']} done"

    empty = kernel.ok(f"%agh approvals {sid}")
    assert empty.result is not None and empty.result["text/plain"] == f"Approvals for session {sid}: none pending"
    kernel.agh(f'session prompt {sid} "write plain.txt hi"')
    (request,) = kernel.poll(
        lambda: kernel.agh(f"session inspect {sid}")["pending_approvals"], bool, 30, "a pending request"
    )
    panel = kernel.ok(f"%agh approvals {sid}")
    assert panel.result is not None
    text = panel.result["text/plain"]
    assert text == f"Approvals for session {sid}: 1 pending: {request['request_id']} ({request['title']} [edit])", text
    assert "<" not in text
    kernel.agh(f"session approve {sid} --request {request['request_id']} --decision reject-once")


# -- the session card ---------------------------------------------------------------------------


def test_a_plain_api_session_shows_its_card(kernel: KernelSession) -> None:
    record = kernel.agh(f"session new --agent demo --cwd {kernel.workspace} --name '<b>bold</b> name'")
    sid = record["id"]
    kernel.ok("import agh_nb, agh_nb.api\nhost = agh_nb.get_host()")
    plain = f"agh_nb.api.Session(host, {sid!r})"
    assert kernel.json(f"import json as _j\nprint(_j.dumps(type({plain}).__name__))") == "Session"

    card = kernel.ok(plain).result
    assert card is not None and "text/html" in card, card
    page = card["text/html"]
    assert "border:1px solid #d0d7de" in page
    assert ">active</span>" in page and ">healthy</span>" in page, page
    assert "&lt;b&gt;bold&lt;/b&gt; name" in page and "<b>bold</b>" not in page, page
    assert "pending approvals</td><td><code>0</code>" in page, page
    assert card["text/plain"].startswith(f"<Session {sid} ")

    kernel.agh(f'session prompt {sid} "write card.txt hi"')
    (request,) = kernel.poll(
        lambda: kernel.agh(f"session inspect {sid}")["pending_approvals"], bool, 30, "a pending request"
    )
    page = kernel.ok(plain).result["text/html"]  # type: ignore[index]
    assert f"pending approvals</td><td><code>1 — {request['request_id']}: {html.escape(request['title'])}</code>" in page, page
    kernel.agh(f"session approve {sid} --request {request['request_id']} --decision allow-once")
    kernel.agh(f"session stop {sid}")
    page = kernel.ok(plain).result["text/html"]  # type: ignore[index]
    assert ">stopped</span>" in page and "stop reason</td><td><code>user_canceled</code>" in page, page

    # A failed create: stopped, with a failure whose summary names the (markup) path, escaped.
    cell = kernel.run("%agh session new --agent demo --cwd '/does/not/<i>exist</i>' --name failing")
    assert cell.stderr.startswith("agh: error:"), cell.describe()
    (failed,) = [s for s in kernel.agh("session list") if s["name"] == "failing"]
    page = kernel.ok(f"agh_nb.api.Session(host, {failed['id']!r})").result["text/html"]  # type: ignore[index]
    assert "stop reason</td><td><code>error</code>" in page, page
    assert "failure</td><td><code>startup_failure: " in page, page
    assert "&lt;i&gt;exist&lt;/i&gt;" in page and "<i>exist</i>" not in page, page
    assert ">stopped</span>" in page


# -- the timeline -------------------------------------------------------------------------------


def test_timeline_shows_dollars_in_agent_text_as_text(kernel: KernelSession) -> None:
    record = kernel.agh(f"session new --agent demo --cwd {kernel.workspace} --permissions approve-all")
    sid = record["id"]
    for prompt in ("run echo $HOME costs $5", r"run $\frac{$"):
        assert kernel.agh(f"session prompt {sid} '{prompt}' --wait")["stop_reason"] == "end_turn"
    chart = kernel.ok(f"chart = %agh timeline {sid}\nchart")
    assert chart.result is not None and chart.result.get("image/png"), chart.describe()
    labels = kernel.json(
        "import json as _j\nprint(_j.dumps([t.get_text() for t in chart.figure.axes[0].get_yticklabels()]))"
    )
    assert "  Run echo $HOME costs $5" in labels and "  Run $\\frac{$" in labels, labels
    handle = kernel.ok(
        f"import agh_nb\nfrom agh_nb.kernel.card import NotebookSession\nNotebookSession(agh_nb.get_host(), {sid!r}).timeline()"
    )
    assert handle.result is not None and handle.result.get("image/png"), handle.describe()


@pytest.mark.skipif(shutil.which("latex") is not None, reason="needs a machine without LaTeX")
def test_a_timeline_that_cannot_be_drawn_is_one_error_line(kernel: KernelSession) -> None:
    sid = new_session(kernel)["id"]
    assert kernel.agh(f'session prompt {sid} "hello" --wait')["stop_reason"] == "end_turn"
    # TeX rendering switched on where no LaTeX is installed: matplotlib fails while drawing.
    cell = kernel.run(f"import matplotlib\nmatplotlib.rcParams['text.usetex'] = True\n%agh timeline {sid}")
    assert cell.status == "ok" and cell.error is None, cell.describe()
    assert cell.stderr.startswith(f"agh: error: cannot draw the timeline of {sid}:"), cell.describe()
    assert cell.stderr.strip().count("\n") == 0 and "Traceback" not in cell.stderr, cell.describe()
    assert cell.result is None


# -- --wait ---------------------------------------------------------------------------------------


def test_wait_shows_cheap_progress_updates(kernel: KernelSession) -> None:
    sid = new_session(kernel)["id"]
    got = run_cell(kernel, f'%agh session prompt {sid} "slow 6 0.5" --wait')
    assert got.status == "ok" and got.stream("stderr") == "", got.iopub
    texts = got.progress()
    running = [t for t in texts if "running for" in t]
    assert len(set(running)) >= 3, texts
    seen = [int(m) for t in running for m in re.findall(r"last #(\d+)", t)]
    assert len(set(seen)) >= 3 and seen == sorted(seen), texts
    assert re.search(r": end_turn after \d+\.\ds'?$", texts[-1]), texts
    (result,) = got.of("execute_result")
    assert ": end_turn" in result["data"]["text/plain"]
    # The count shown is right: "N events so far" at "last #S" is S - (the user_message's sequence) + 1.
    events = kernel.events(sid)
    start = next(e["sequence"] for e in events if e["type"] == "user_message")
    for text in running:
        match = re.search(r"(\d+) events? so far, last #(\d+)", text)
        if match:
            assert int(match.group(1)) == int(match.group(2)) - start + 1, text


def test_wait_with_json_output_is_one_document_and_no_progress(kernel: KernelSession) -> None:
    sid = new_session(kernel)["id"]
    got = run_cell(kernel, f'%agh session prompt {sid} "slow 4 0.3" --wait -o json')
    assert got.status == "ok", got.iopub
    assert got.progress() == [], got.iopub
    assert got.of("execute_result") == [] and got.stream("stderr") == ""
    doc = json.loads(got.stream("stdout"))
    assert doc["stop_reason"] == "end_turn" and doc["session_id"] == sid, doc


@pytest.mark.parametrize("output", ["", "-o json"], ids=["value", "json"])
def test_wait_asks_for_a_pending_decision_on_stdin(kernel: KernelSession, output: str) -> None:
    sid = new_session(kernel)["id"]
    target = kernel.workspace / "x.txt"
    got = run_cell(kernel, f'%agh session prompt {sid} "write x.txt hi" --wait {output}', answers=["1"])
    assert got.status == "ok", got.iopub
    (prompt,) = got.prompts
    events = kernel.events(sid)
    (arrival,) = [e for e in events if e["type"] == "permission" and "decision" not in e["content"]]
    request_id = arrival["content"]["request_id"]
    assert request_id in prompt and f"Write {target}" in prompt and "[edit]" in prompt, prompt
    for decision in ("allow-once", "allow-always", "reject-once", "reject-always"):
        assert decision in prompt, prompt
    assert "\n" not in prompt.rstrip()
    assert target.read_text() == "hi"
    (decided,) = [e for e in events if e["type"] == "permission" and e["content"].get("decision")]
    assert decided["content"]["decision"] == "allow-once" and decided["content"]["runtime"]["source"] == "user"
    assert got.stream("stderr") == "", got.iopub
    if output:
        assert got.progress() == []
        assert json.loads(got.stream("stdout"))["stop_reason"] == "end_turn"
    else:
        assert f"{request_id}: allow-once" in got.stream("stdout")
        (result,) = got.of("execute_result")
        assert ": end_turn" in result["data"]["text/plain"]


@pytest.mark.parametrize("kernel", [TIMEOUT_2S], ids=["approval_timeout=2s"], indirect=True)
def test_wait_without_stdin_names_the_request_once_and_keeps_waiting(kernel: KernelSession) -> None:
    sid = new_session(kernel)["id"]
    got = run_cell(kernel, f'%agh session prompt {sid} "write y.txt hi" --wait')
    assert got.status == "ok", got.iopub
    assert got.prompts == []
    events = kernel.events(sid)
    (arrival,) = [e for e in events if e["type"] == "permission" and "decision" not in e["content"]]
    request_id = arrival["content"]["request_id"]
    lines = got.stream("stdout").splitlines()
    assert len(lines) == 1, lines
    assert request_id in lines[0] and f"%agh session approve {sid} --request {request_id} --decision" in lines[0], lines
    (decided,) = [e for e in events if e["type"] == "permission" and e["content"].get("decision")]
    assert decided["content"]["runtime"]["source"] == "timeout", decided
    assert not (kernel.workspace / "y.txt").exists()
    (result,) = got.of("execute_result")
    assert ": end_turn" in result["data"]["text/plain"]


def test_interrupting_a_wait_is_one_line_and_the_turn_goes_on(kernel: KernelSession) -> None:
    sid = new_session(kernel)["id"]
    # What Jupyter's interrupt does to a local kernel (signal mode): SIGINT to the kernel process.
    timer = threading.Timer(2.0, os.kill, (kernel.pid, signal.SIGINT))
    timer.start()
    try:
        got = run_cell(kernel, f'%agh session prompt {sid} "slow 8 0.5" --wait')
    finally:
        timer.cancel()
    assert got.status == "ok" and not got.of("error"), got.iopub
    err = got.stream("stderr")
    assert err.startswith("agh: error: stopped waiting for turn ") and "keeps running" in err, err
    assert err.strip().count("\n") == 0 and "Traceback" not in err, err
    assert "stopped waiting after" in got.progress()[-1], got.progress()
    turn_id = re.search(r"turn (turn_\w+)", err).group(1)  # type: ignore[union-attr]
    events = wait_done(kernel, sid, turn_id)
    said = [e for e in events if e["type"] == "agent_message" and e["turn_id"] == turn_id]
    assert len(said) == 8, said  # the turn ran to its end after the cell stopped waiting


# -- the agent on the card, and its forms ------------------------------------------------------


def test_the_card_shows_the_agents_mode_model_commands_and_logins_escaped(kernel: KernelSession) -> None:
    import sys as _sys

    from tests.conftest import write_agent

    write_agent(kernel.home, "featured", [_sys.executable, "-m", "agh_nb.agents.demo", "--fast", "--modes", "--commands", "--auth", "agent"], extra="auth: demo-login\n")
    record = kernel.agh(f"session new --agent featured --cwd {kernel.workspace} --mode plan")
    sid = record["id"]
    kernel.poll(lambda: kernel.agh(f"session inspect {sid}")["agent"]["commands"], bool, 30, "the agent's commands")
    kernel.ok("import agh_nb, agh_nb.api\nhost = agh_nb.get_host()")
    page = kernel.ok(f"agh_nb.api.Session(host, {sid!r})").result["text/html"]  # type: ignore[index]
    assert "mode</td><td><code>plan (also: ask, code)</code>" in page, page
    assert "model</td><td><code>demo-small (also: demo-large)</code>" in page, page
    assert "commands</td><td><code>/echo /mode</code>" in page, page
    assert "auth methods</td><td><code>demo-login (agent)</code>" in page, page


def test_a_form_the_agent_asks_for_is_a_widget_in_the_approval_panel(kernel: KernelSession) -> None:
    record = kernel.agh(f"session new --agent demo --cwd {kernel.workspace}")
    sid = record["id"]
    turn = kernel.agh(f'session prompt {sid} "ask-form"')["turn_id"]
    (form,) = kernel.poll(lambda: kernel.agh(f"session inspect {sid}")["pending_elicitations"], bool, 30, "a form")
    kernel.ok(f"panel = %agh approvals {sid}")
    shown = kernel.json(
        "import json as _j\n(form,) = panel.forms.values()\n"
        "print(_j.dumps({'html': form.children[0].value, 'inputs': {k: type(w).__name__ for k, w in form.inputs.items()},"
        " 'choices': list(form.inputs['colour'].options)}))"
    )
    assert shown["html"].startswith("<b>Pick a colour</b>"), shown
    assert shown["inputs"] == {"colour": "Dropdown", "count": "Text", "notify": "Checkbox"}
    assert shown["choices"] == ["red", "green", "blue"]
    kernel.ok("form.inputs['colour'].value = 'green'\nform.inputs['notify'].value = True\nform.send('accept')")
    assert kernel.json("import json as _j\nprint(_j.dumps(form.status.value))") == f"{form['request_id']}: accept"
    events = wait_done(kernel, sid, turn)
    said = "".join(e["content"]["text"] for e in events if e["type"] == "agent_message" and e["turn_id"] == turn)
    assert json.loads(said) == {"action": "accept", "content": {"colour": "green", "notify": True}}
