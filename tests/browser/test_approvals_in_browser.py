"""The approvals notebook in a real browser: a person clicks "Allow once" in the panel.

JupyterLab runs as a subprocess (tests/browser/lab.py), Debian's Chromium is driven by Playwright,
and each test runs twice: with the agh_nb server extension hosting the runtime (kernels in client
mode) and with it switched off (each kernel embeds its runtime). What is asserted is what a person
sees: the rendered panel and tail, the file the agent wrote, the notebook's own outputs.

Screenshots: ``test-artifacts/browser/<mode>/`` under the repository root (gitignored).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.lab import Lab, NotebookPage, poll

pytestmark = pytest.mark.timeout(300)

ROW = re.compile(r"^#(\d+) (\w+) ?(.*)$")


def tail_rows(nb: NotebookPage, index: int) -> list[tuple[int, str, str]]:
    """The tail widget's rows as a person reads them: (sequence, type, summary), newest first."""
    rows = []
    for line in nb.output_text(index).splitlines():
        match = ROW.match(line.strip())
        if match:
            rows.append((int(match.group(1)), match.group(2), match.group(3)))
    return rows


def session_id_from(nb: NotebookPage, index: int) -> str:
    """The id printed by ``print(s.id, s.record.permissions)``."""
    words = nb.output_text(index).split()
    assert len(words) >= 2 and words[1] == "approve-reads", nb.output_text(index)
    return words[0]


def workspace_from(nb: NotebookPage, lab: Lab, index: int) -> Path:
    """The workspace the notebook printed (``tempfile.mkdtemp`` under the server's TMPDIR)."""
    ws = Path(nb.output_text(index).strip().splitlines()[0])
    assert ws.is_dir() and ws.resolve().is_relative_to(lab.tmp.resolve()), (ws, lab.tmp)
    return ws


def permission_json(nb: NotebookPage, session_id: str) -> list[dict[str, Any]]:
    """Run a last cell ``%agh session events ID --type permission -o json``; its parsed output."""
    text = nb.append_and_run(f"%agh session events {session_id} --type permission -o json")
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"the events cell did not print one JSON document ({exc}):\n{text[:3000]}") from None
    assert isinstance(rows, list), rows
    return rows


def test_click_allow_once_in_the_approvals_notebook(page: Page, lab: Lab, artifacts: Path) -> None:
    nb = NotebookPage(page, lab, "approvals.ipynb")
    ws_cell = nb.index_of("mkdtemp")
    new_cell = nb.index_of("%agh session new")
    tail_cell = nb.index_of("%agh tail")
    prompt_cell = nb.index_of("s.prompt('write ")
    panel_cell = nb.index_of("%agh approvals")
    auto_cell = nb.index_of("wait_for_request(turn)")
    assert ws_cell < new_cell < tail_cell < prompt_cell < panel_cell < auto_cell, "approvals.ipynb changed its order"
    file_name = re.search(r"write (\S+)", nb.source(prompt_cell)).group(1)  # type: ignore[union-attr]
    file_text = re.search(r"write \S+ ([^'\"]+)", nb.source(prompt_cell)).group(1)  # type: ignore[union-attr]

    nb.open()
    nb.select_first()
    nb.run_through(panel_cell)  # nothing up to the panel blocks: the prompt runs in the background
    assert nb.errors() == [], nb.errors()
    ws = workspace_from(nb, lab, ws_cell)
    session_id = session_id_from(nb, new_cell)

    # The panel shows the request: title, path, diff preview, four buttons.
    panel = nb.cell(panel_cell).locator(".jp-OutputArea-output")
    allow = panel.get_by_role("button", name="Allow once", exact=True)
    expect(allow).to_be_visible(timeout=60_000)
    expect(panel).to_be_visible()
    for label in ("Allow always", "Reject once", "Reject always"):
        expect(panel.get_by_role("button", name=label, exact=True)).to_be_visible()
    expect(panel).to_contain_text(f"Write {ws / file_name}")
    expect(panel).to_contain_text(f"+{file_text}")  # the diff preview
    expect(panel).to_contain_text(f"session {session_id}")
    tail = nb.cell(tail_cell).locator(".jp-OutputArea-output")
    expect(tail).to_be_visible()
    expect(tail).to_contain_text(re.compile(rf"Events — (\S+ )?{session_id}"))  # titled by name, then id
    pending = poll(
        lambda: [r for r in tail_rows(nb, tail_cell) if r[1] == "permission" and "pending" in r[2]],
        bool, 30, "the tail to show the pending permission request",
    )
    assert not (ws / file_name).exists(), "the agent wrote before anyone decided"
    nb.cell(tail_cell).evaluate("e => e.scrollIntoView({block: 'start'})")
    nb.screenshot(artifacts / "panel.png")

    allow.click()

    poll(lambda: (ws / file_name).exists(), bool, 60, f"the agent to write {ws / file_name}")
    assert (ws / file_name).read_text(encoding="utf-8") == file_text
    rows = poll(
        lambda: tail_rows(nb, tail_cell),
        lambda rows: any(t == "permission" and "allow-once" in s for _, t, s in rows) and any(t == "done" for _, t, _s in rows),
        30, "the tail to show the allow-once decision and the turn's done event",
    )
    decided = max(seq for seq, t, s in rows if t == "permission" and "allow-once" in s)
    done = max(seq for seq, t, _s in rows if t == "done")
    assert decided > pending[0][0] and done > decided, rows
    expect(panel).to_contain_text("No pending approvals.")
    expect(panel).to_contain_text(re.compile(r": allow-once \(user\)"))
    expect(allow).to_have_count(0)
    nb.cell(tail_cell).evaluate("e => e.scrollIntoView({block: 'start'})")
    nb.screenshot(artifacts / "after-click.png")

    nb.run_rest()
    auto_output = nb.output_text(auto_cell)
    assert "already decided" in auto_output and "turn ended: end_turn" in auto_output, auto_output
    assert file_text in nb.output_text(nb.index_of("read_text()")), "the file's text is not shown"
    assert "second.txt exists: False" in nb.output_text(nb.index_of("second.txt")), "the rejected write reached the disk"
    assert not (ws / "second.txt").exists()

    events = permission_json(nb, session_id)
    assert nb.errors() == [], nb.errors()
    decisions = [(e["content"].get("decision"), (e["content"].get("runtime") or {}).get("source")) for e in events]
    assert ("allow-once", "user") in decisions, events
    assert ("reject-once", "user") in decisions, events
    first = next(e for e in events if e["content"].get("decision") == "allow-once")
    assert first["sequence"] == decided, (first, decided)
    nb.screenshot(artifacts / "events.png", around=nb.panel.locator(".jp-Notebook .jp-Cell").last)
    if lab.mode == "extension":
        # Client mode for real: the server hosts the session the kernel created, and stored the click.
        status, record = lab.get(f"/agh/api/sessions/{session_id}")
        assert status == 200 and record["name"] == "approvals", (status, record)
        status, body = lab.get(f"/agh/api/sessions/{session_id}/events?type=permission")
        assert status == 200, (status, body)
        assert [e["sequence"] for e in body["events"]] == [e["sequence"] for e in events], (body, events)
    # The whole session as a person last sees it: the tail up to session_stopped, the panel's last word.
    expect(tail).to_contain_text("session_stopped")
    nb.cell(tail_cell).evaluate("e => e.scrollIntoView({block: 'start'})")
    nb.screenshot(artifacts / "final.png")


def test_agent_text_is_escaped_in_panel_and_tail(page: Page, lab: Lab, artifacts: Path) -> None:
    nb = NotebookPage(page, lab, "escaping.ipynb")
    ws_cell = nb.index_of("mkdtemp")
    new_cell = nb.index_of("%agh session new")
    tail_cell = nb.index_of("%agh tail")
    panel_cell = nb.index_of("%agh approvals")
    prompt_cell = nb.index_of("s.prompt(")
    nb.open()
    nb.select_first()
    nb.run_through(prompt_cell)
    ws = workspace_from(nb, lab, ws_cell)
    session_id = session_id_from(nb, new_cell)

    panel = nb.cell(panel_cell).locator(".jp-OutputArea-output")
    tail = nb.cell(tail_cell).locator(".jp-OutputArea-output")
    allow = panel.get_by_role("button", name="Allow once", exact=True)
    expect(allow).to_be_visible(timeout=60_000)  # the request arrived after the panel was shown
    expect(tail).to_contain_text(re.compile(rf"Events — (\S+ )?{session_id}"))  # titled by name, then id
    expect(panel).to_contain_text(f"Write {ws}/<b>x</b>.txt")  # shown as text...
    expect(tail).to_contain_text("<b>x</b>.txt")
    outputs = nb.panel.locator(".jp-OutputArea-output")

    def no_element_from_agent() -> None:
        # No element made of the agent's text: no <b>x</b>, no <img src=x>, no script ran.
        assert outputs.locator("b", has_text=re.compile(r"^x$")).count() == 0
        assert page.locator("img[src='x']").count() == 0
        assert outputs.locator("script").count() == 0
        assert page.evaluate("() => window.__aghPwned") is None

    panel_html = panel.inner_html()
    assert "&lt;b&gt;x&lt;/b&gt;.txt" in panel_html and "+&lt;img src=x" in panel_html, panel_html[:3000]
    assert "&lt;b&gt;x&lt;/b&gt;.txt" in tail.inner_html(), tail.inner_html()[:3000]
    no_element_from_agent()
    nb.cell(tail_cell).evaluate("e => e.scrollIntoView({block: 'start'})")
    nb.screenshot(artifacts / "escaping-panel.png")

    allow.click()
    written = ws / "<b>x</b>.txt"
    poll(written.exists, bool, 60, f"the agent to write {written}")
    poll(
        lambda: tail_rows(nb, tail_cell),
        lambda rows: any(t == "done" for _, t, _s in rows),
        30, "the tail to show the turn's done event",
    )
    expect(panel).to_contain_text("No pending approvals.")
    nb.run_rest()
    assert "turn ended: end_turn" in nb.output_text(prompt_cell + 1)
    assert "&lt;b&gt;x&lt;/b&gt;.txt" in tail.inner_html(), tail.inner_html()[:3000]
    no_element_from_agent()
    assert nb.errors() == [], nb.errors()
    nb.screenshot(artifacts / "escaping-after-click.png", around=tail)
