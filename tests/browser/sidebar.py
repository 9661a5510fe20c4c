"""The "Agent sessions" sidebar (extension/src/panel.ts) as a person uses it, for browser tests.

Owns: ``Sidebar``, which opens JupyterLab (a workspace of its own, or a notebook's page), opens the
sidebar by its tab, and reads what it shows: session rows, approval cards, the opened session's
event rows. Elements are found by role and accessible name, as a person finds them ("Allow
once", "Stop"); the ``data-*`` attributes only tie a card or a row to its id.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from playwright.sync_api import Locator, Page, expect

from tests.browser.lab import KERNEL_TIMEOUT, Lab

TAB_NAME = "Agent sessions"
NOT_ENABLED = "agh_nb server extension not enabled"


@dataclass(frozen=True)
class SessionRow:
    """One session row as shown: id, name, agent, state badge, health, pending count."""

    id: str
    name: str
    agent: str
    state: str
    health: str
    pending: int


class Sidebar:
    """The sidebar of one JupyterLab page."""

    def __init__(self, page: Page) -> None:
        self.page = page

    @property
    def tab(self) -> Locator:
        return self.page.get_by_role("tab", name=TAB_NAME, exact=True)

    @property
    def panel(self) -> Locator:
        return self.page.locator(".jp-AghSidebar")

    def goto_lab(self, lab: Lab, base_url: str | None = None) -> str:
        """Open JupyterLab in a new workspace (no restored tabs); returns the workspace name."""
        workspace = f"t{secrets.token_hex(6)}"
        url = (base_url or lab.url("")).rstrip("/") + f"/lab/workspaces/{workspace}?token={lab.token}"
        self.page.goto(url)
        return workspace

    def open(self, timeout: float = KERNEL_TIMEOUT) -> None:
        """Show the sidebar: click its tab unless it is already the selected one.

        Clicking the selected tab would collapse the sidebar, and JupyterLab may still be
        restoring its layout (which selects a tab too), so this looks again until the panel shows.
        """
        self.tab.wait_for(timeout=timeout * 1000)
        deadline = time.monotonic() + timeout
        while not self.panel.is_visible():
            assert time.monotonic() < deadline, "the Agent sessions sidebar did not open"
            if self.tab.get_attribute("aria-selected") != "true":
                self.tab.click()
            self.page.wait_for_timeout(200)

    # -- sessions ---------------------------------------------------------------------------------

    def session_item(self, session_id: str) -> Locator:
        return self.panel.locator(f".jp-AghSidebar-session[data-session-id='{session_id}']")

    def sessions(self) -> list[SessionRow]:
        """Every session row, in the order shown (read in one go: the list is redrawn as it polls)."""
        rows = self.panel.locator(".jp-AghSidebar-session").evaluate_all(
            """items => items.map(item => {
                const text = cls => item.querySelector(cls).textContent;
                return [item.dataset.sessionId, text('.jp-AghSidebar-sessionName'), text('.jp-AghSidebar-agent'),
                        text('.jp-AghSidebar-badge'), text('.jp-AghSidebar-health'),
                        parseInt(text('.jp-AghSidebar-pendingCount'), 10)];
            })"""
        )
        return [SessionRow(*row) for row in rows]

    def open_session(self, session_id: str) -> None:
        """Click the session's name: its events show below the list."""
        self.session_item(session_id).locator(".jp-AghSidebar-sessionName").click()
        expect(self.detail).to_be_visible()

    # -- approvals --------------------------------------------------------------------------------

    def approval(self, request_id: str) -> Locator:
        return self.panel.get_by_role("group", name=f"Approval {request_id}", exact=True)

    @property
    def approval_cards(self) -> Locator:
        return self.panel.locator(".jp-AghSidebar-approval")

    def approval_ids(self) -> list[str]:
        return list(self.approval_cards.evaluate_all("cards => cards.map(c => c.dataset.requestId)"))

    def wait_for_approval(self, session_id: str, timeout: float = 60.0) -> Locator:
        """The first card of ``session_id``, once it is shown."""
        card = self.panel.locator(f".jp-AghSidebar-approval[data-session-id='{session_id}']").first
        expect(card).to_be_visible(timeout=timeout * 1000)
        return card

    # -- the opened session -----------------------------------------------------------------------

    @property
    def detail(self) -> Locator:
        return self.panel.get_by_role("region", name="Session events", exact=True)

    def button(self, name: str) -> Locator:
        return self.panel.get_by_role("button", name=name, exact=True)

    def tail_rows(self) -> list[tuple[int, str, str]]:
        """The opened session's rows, newest first: (sequence, type, text), read in one go."""
        rows = self.panel.locator(".jp-AghSidebar-tail li").evaluate_all(
            """items => items.map(item => {
                const text = cls => item.querySelector(cls).textContent;
                return [parseInt(text('.jp-AghSidebar-seq').slice(1), 10), text('.jp-AghSidebar-type'), text('.jp-AghSidebar-text')];
            })"""
        )
        return [(int(seq), str(kind), str(text)) for seq, kind, text in rows]

    def status(self) -> str:
        return self.panel.locator(".jp-AghSidebar-status").inner_text()
