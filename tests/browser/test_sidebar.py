"""The "Agent sessions" sidebar (the extension/ JupyterLab extension) in a real browser.

JupyterLab runs as a subprocess with the agh_nb server extension (tests/browser/lab.py; kernels are
its clients), Debian's Chromium is driven by Playwright, and what is asserted is what a person
sees and what the server stored: a request answered from the sidebar while a cell sleeps (the file
on disk, the decision in the store), a decision made by the magic or in another tab removing the
request, the same state after a reload, Stop and Resume from the panel, the event tail resuming
with ``Last-Event-ID`` after its connection is cut, and the one line shown when the server side is
switched off. Agent text that looks like HTML is shown as text.

Screenshots: ``test-artifacts/browser/<mode>/sidebar-*.png`` (gitignored).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, Request, expect

from tests.browser.conftest import FIXTURES
from tests.browser.lab import Lab, NotebookPage, poll, strip_outputs
from tests.browser.proxy import CuttableProxy
from tests.browser.sidebar import NOT_ENABLED, Sidebar

pytestmark = pytest.mark.timeout(300)

SIDEBAR_NOTEBOOK = FIXTURES / "sidebar.ipynb"
DECISIONS = ("Allow once", "Allow always", "Reject once", "Reject always")
WITH_EXTENSION = pytest.mark.parametrize("lab", ["extension"], indirect=True)
WITHOUT_EXTENSION = pytest.mark.parametrize("lab", ["embedded"], indirect=True)


# -- the HTTP API, as the test's own client -------------------------------------------------------


def api(lab: Lab, method: str, path: str, body: Any = None, expected: int = 200) -> Any:
    status, answer = lab.request(method, f"/agh/api/{path.lstrip('/')}", body)
    assert status == expected, (method, path, status, answer)
    return answer


def create(lab: Lab, ws: Path, name: str) -> str:
    """A demo session under ``approve-reads``, made over HTTP (no kernel involved)."""
    record = api(lab, "POST", "sessions", {"agent": "demo", "cwd": str(ws), "name": name, "permissions": "approve-reads"}, 201)
    return str(record["id"])


def prompt(lab: Lab, session_id: str, text: str) -> str:
    return str(api(lab, "POST", f"sessions/{session_id}/prompt", {"text": text}, 202)["turn_id"])


def pending(lab: Lab, session_id: str) -> list[dict[str, Any]]:
    return list(api(lab, "GET", f"sessions/{session_id}/approvals")["pending"])


def decisions(lab: Lab, session_id: str) -> dict[str, tuple[str, str]]:
    """request_id -> (decision, source) of the session's stored ``permission`` events."""
    events = api(lab, "GET", f"sessions/{session_id}/events?type=permission")["events"]
    return {
        e["content"]["request_id"]: (e["content"]["decision"], (e["content"].get("runtime") or {}).get("source"))
        for e in events
        if e["content"].get("decision")
    }


def state(lab: Lab, session_id: str) -> tuple[str, str | None]:
    record = api(lab, "GET", f"sessions/{session_id}")
    return record["state"], record["stop_reason"]


def last_sequence(lab: Lab, session_id: str) -> int:
    events = api(lab, "GET", f"sessions/{session_id}/events?limit=1")["events"]
    return int(events[-1]["sequence"]) if events else 0


def workspace(lab: Lab, name: str) -> Path:
    ws = lab.tmp / name
    ws.mkdir(parents=True, exist_ok=True)
    return ws


# -- tests ----------------------------------------------------------------------------------------


@WITH_EXTENSION
def test_allow_once_in_the_sidebar_while_a_cell_sleeps(page: Page, lab: Lab, artifacts: Path) -> None:
    strip_outputs(SIDEBAR_NOTEBOOK, lab.root / SIDEBAR_NOTEBOOK.name)
    nb = NotebookPage(page, lab, SIDEBAR_NOTEBOOK.name)
    ws_cell, new_cell = nb.index_of("mkdtemp"), nb.index_of("%agh session new")
    prompt_cell, sleep_cell = nb.index_of("s.prompt("), nb.index_of("time.sleep(60)")
    nb.open()
    sidebar = Sidebar(page)
    sidebar.open()
    nb.select_first()
    nb.run_through(new_cell)
    ws = Path(nb.output_text(ws_cell).strip())
    session_id, mode = nb.output_text(new_cell).split()[:2]
    assert mode == "approve-reads" and ws.is_dir(), (session_id, mode, ws)
    # The turn runs in the background; then the cell sleeps and the kernel is busy.
    nb.run_through(sleep_cell, blocking=frozenset({sleep_cell}))
    poll(lab.kernels, lambda ks: [k["execution_state"] for k in ks] == ["busy"], 30, "the kernel to be busy sleeping")

    card = sidebar.wait_for_approval(session_id)
    request_id = card.get_attribute("data-request-id")
    assert request_id and [r["request_id"] for r in pending(lab, session_id)] == [request_id]
    note = ws / "note.txt"
    expect(card).to_contain_text(f"Write {note}")
    expect(card.locator(".jp-AghSidebar-paths")).to_have_text(str(note))
    expect(card.locator(".jp-AghSidebar-diff")).to_contain_text("+written while the kernel slept")
    for label in DECISIONS:
        expect(card.get_by_role("button", name=label, exact=True)).to_be_enabled()
    row = poll(
        lambda: next(r for r in sidebar.sessions() if r.id == session_id),
        lambda r: "prompting" in r.health, 30, "the session row to show the turn (sessions are polled)",
    )
    assert (row.name, row.agent, row.state, row.pending) == ("sidebar", "demo", "active", 1), row
    # A request that arrives while the page is open raises a notification.
    toast = page.locator(".Toastify__toast", has_text=f"sidebar (demo) asks: Write {note}")
    expect(toast).to_be_visible()
    assert not note.exists(), "the agent wrote before anyone decided"
    page.screenshot(path=str(artifacts / "sidebar-pending.png"))

    card.get_by_role("button", name="Allow once", exact=True).click()

    poll(note.exists, bool, 60, f"the agent to write {note}")
    assert note.read_text(encoding="utf-8") == "written while the kernel slept"
    # ... while the cell still sleeps: the click never went through the kernel.
    assert nb.prompt(sleep_cell) == "[*]:", nb.prompt(sleep_cell)
    assert [k["execution_state"] for k in lab.kernels()] == ["busy"]
    assert poll(lambda: decisions(lab, session_id), lambda d: request_id in d, 30, "the stored decision")[request_id] == (
        "allow-once",
        "user",
    )
    expect(card).to_have_count(0)
    expect(toast).to_have_count(0)
    expect(sidebar.panel.get_by_text("No pending approvals.")).to_be_visible()
    expect(sidebar.panel.locator(".jp-AghSidebar-status")).to_have_text(f"{request_id}: allow-once (user)")
    page.screenshot(path=str(artifacts / "sidebar-allowed.png"))

    kernel = lab.kernels()[0]["id"]
    status, _ = lab.request("POST", f"/api/kernels/{kernel}/interrupt")
    assert status == 204, status
    nb.wait_done(sleep_cell)
    out = nb.output_text(sleep_cell)
    assert "KeyboardInterrupt" in out and not re.search(r"^slept$", out, re.MULTILINE), out


@WITH_EXTENSION
def test_a_decision_by_the_magic_removes_the_request(page: Page, lab: Lab, artifacts: Path) -> None:
    strip_outputs(SIDEBAR_NOTEBOOK, lab.root / SIDEBAR_NOTEBOOK.name)
    nb = NotebookPage(page, lab, SIDEBAR_NOTEBOOK.name)
    ws_cell, new_cell, prompt_cell = nb.index_of("mkdtemp"), nb.index_of("%agh session new"), nb.index_of("s.prompt(")
    nb.open()
    sidebar = Sidebar(page)
    sidebar.open()
    nb.select_first()
    nb.run_through(prompt_cell)
    ws = Path(nb.output_text(ws_cell).strip())
    session_id = nb.output_text(new_cell).split()[0]
    card = sidebar.wait_for_approval(session_id)
    request_id = card.get_attribute("data-request-id")
    assert request_id

    out = nb.append_and_run(f"%agh session approve {session_id} --request {request_id} --decision reject-once")

    assert "reject-once" in out, out
    expect(card).to_have_count(0)
    expect(sidebar.panel.locator(".jp-AghSidebar-status")).to_have_text(f"{request_id}: reject-once (user)")
    assert decisions(lab, session_id)[request_id] == ("reject-once", "user")
    assert not (ws / "note.txt").exists(), "the rejected write reached the disk"
    row = poll(
        lambda: next(r for r in sidebar.sessions() if r.id == session_id),
        # Sessions are polled (every 2 s): the row catches up with the store within a poll.
        lambda r: r.pending == 0 and r.state == "active", 10, "the session row to show 0 pending, active",
    )
    assert (row.pending, row.state) == (0, "active"), row
    page.screenshot(path=str(artifacts / "sidebar-decided-by-magic.png"))


@WITH_EXTENSION
def test_reload_another_tab_stop_and_resume(page: Page, lab: Lab, browser_context: BrowserContext, artifacts: Path) -> None:
    # No kernel at all: the sessions are the server's, made over HTTP.
    ws = workspace(lab, "sidebar-http")
    (ws / "<b>x<").mkdir()  # the parent of the file below
    asking = create(lab, ws, "asks <i>first</i>")
    idle = create(lab, ws, "idle")
    stopped = create(lab, ws, "stopped")
    prompt(lab, idle, "hello sidebar")
    api(lab, "POST", f"sessions/{stopped}/stop", {})
    prompt(lab, asking, 'write <b>x</b>.txt <img src=x onerror="window.__aghPwned=1"><script>window.__aghPwned=2</script>')
    request_id = poll(lambda: pending(lab, asking), bool, 60, "the write to be pending")[0]["request_id"]
    assert lab.kernels() == []

    sidebar = Sidebar(page)
    workspace_name = sidebar.goto_lab(lab)
    sidebar.open()
    card = sidebar.approval(request_id)
    expect(card).to_be_visible(timeout=30_000)
    # Agent text is text: the name and the diff are shown as written, no element made of them.
    expect(card).to_contain_text(f"Write {ws}/<b>x</b>.txt")
    expect(card.locator(".jp-AghSidebar-diff")).to_contain_text('+<img src=x onerror="window.__aghPwned=1">')
    assert sidebar.panel.locator("b, i, img, script").count() == 0
    assert page.evaluate("() => window.__aghPwned") is None

    def shown() -> tuple[list[tuple[str, str, str, str, int]], list[str]]:
        return [(r.id, r.name, r.agent, r.state, r.pending) for r in sidebar.sessions()], sidebar.approval_ids()

    mine = {
        (asking, "asks <i>first</i>", "demo", "active", 1),
        (idle, "idle", "demo", "active", 0),
        (stopped, "stopped", "demo", "stopped", 0),
    }
    # Every session of the server is listed (earlier tests' too); these three as they are.
    before = poll(shown, lambda v: mine <= set(v[0]) and v[1] == [request_id], 30, "the sessions and the request")
    assert {r[0] for r in before[0]} == {s["id"] for s in api(lab, "GET", "sessions")["sessions"]}
    page.screenshot(path=str(artifacts / "sidebar-before-reload.png"))

    # A reload shows the same state (the sidebar stores nothing; JupyterLab restores the open panel).
    page.reload()
    sidebar.open()
    poll(shown, lambda v: v == before, 30, "the same sessions and request after the reload")

    # A decision made in another tab removes the request here at once.
    other = browser_context.new_page()
    try:
        other_sidebar = Sidebar(other)
        other.goto(lab.url(f"lab/workspaces/{workspace_name}x?token={lab.token}"))
        other_sidebar.open()
        other_sidebar.approval(request_id).get_by_role("button", name="Reject once", exact=True).click()
        expect(sidebar.approval(request_id)).to_have_count(0)
        expect(other_sidebar.approval(request_id)).to_have_count(0)
    finally:
        other.close()
    assert decisions(lab, asking)[request_id] == ("reject-once", "user")
    assert not (ws / "<b>x</b>.txt").exists()

    # Stop and Resume from the panel, on the session opened.
    sidebar.open_session(idle)
    expect(sidebar.detail).to_contain_text(idle)
    poll(sidebar.tail_rows, lambda rows: any(t == "done" for _, t, _x in rows), 30, "the tail to show the turn's done event")
    assert sidebar.tail_rows()[-1][:2] == (1, "user_message") and sidebar.tail_rows()[-1][2] == "hello sidebar"
    expect(sidebar.button("Resume")).to_be_disabled()
    sidebar.button("Stop").click()
    poll(lambda: state(lab, idle), lambda s: s == ("stopped", "user_canceled"), 60, "the session to be stopped")
    poll(sidebar.tail_rows, lambda rows: rows[0][1] == "session_stopped", 30, "the tail to show session_stopped")
    poll(lambda: next(r.state for r in sidebar.sessions() if r.id == idle), lambda s: s == "stopped", 30, "the badge to say stopped")
    expect(sidebar.button("Stop")).to_be_disabled()
    page.screenshot(path=str(artifacts / "sidebar-stopped.png"))

    sidebar.button("Resume").click()
    poll(lambda: state(lab, idle), lambda s: s[0] == "active", 60, "the session to be active again")
    expect(sidebar.button("Stop")).to_be_enabled(timeout=30_000)
    # The tail stays on the session across the stop and the resume: a new turn shows up.
    prompt(lab, idle, "after the resume")
    poll(
        sidebar.tail_rows,
        lambda rows: any(t == "user_message" and x == "after the resume" for _, t, x in rows) and rows[0][1] == "done",
        60, "the new turn in the tail",
    )
    rows = sidebar.tail_rows()
    assert [s for s, _t, _x in rows] == sorted({s for s, _t, _x in rows}, reverse=True), rows
    assert rows[0][0] == last_sequence(lab, idle)
    page.screenshot(path=str(artifacts / "sidebar-resumed.png"))


@WITH_EXTENSION
def test_the_tail_resumes_after_its_connection_is_cut(page: Page, lab: Lab) -> None:
    ws = workspace(lab, "sidebar-cut")
    session_id = create(lab, ws, "cut")
    prompt(lab, session_id, "before the cut")
    poll(lambda: api(lab, "GET", f"sessions/{session_id}/events?limit=1")["events"], lambda e: e[-1]["type"] == "done", 60, "the first turn to end")
    streams: list[str | None] = []

    def on_request(request: Request) -> None:
        if re.search(rf"/agh/api/sessions/{session_id}/stream\b", request.url):
            streams.append(request.headers.get("last-event-id"))

    page.on("request", on_request)
    with CuttableProxy(lab.port) as proxy:
        sidebar = Sidebar(page)
        sidebar.goto_lab(lab, base_url=proxy.url(""))
        sidebar.open()
        sidebar.open_session(session_id)
        rows = poll(sidebar.tail_rows, lambda r: bool(r) and r[0][1] == "done", 60, "the first turn in the tail")
        seen = rows[0][0]
        assert seen == last_sequence(lab, session_id)
        assert streams == [str(seen)], streams  # opened after the backlog it showed

        assert proxy.cut() > 0
        prompt(lab, session_id, "after the cut")
        rows = poll(
            sidebar.tail_rows,
            lambda r: any(t == "user_message" and x == "after the cut" for _, t, x in r) and r[0][1] == "done",
            60, "the second turn in the tail after the reconnect",
        )
    assert len(streams) >= 2 and streams[1] == str(seen), streams  # resumed after the last event shown
    assert rows[0][0] == last_sequence(lab, session_id)
    sequences = [s for s, _t, _x in rows]
    assert sequences == sorted(set(sequences), reverse=True), rows


@WITHOUT_EXTENSION
def test_without_the_server_extension_one_line(page: Page, lab: Lab, artifacts: Path) -> None:
    status, _ = lab.get("/agh/api/sessions")
    assert status == 404, status
    sidebar = Sidebar(page)
    sidebar.goto_lab(lab)
    sidebar.open()
    expect(sidebar.panel).to_have_text(NOT_ENABLED)
    assert sidebar.panel.inner_text().strip() == NOT_ENABLED
    assert sidebar.panel.get_by_role("button").count() == 0
    page.screenshot(path=str(artifacts / "sidebar-not-enabled.png"))
