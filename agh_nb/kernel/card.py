"""The rich display of a session in a notebook: a card with state, health, stop reason, failure
and pending approvals, plus ``timeline()`` (a chart of turns and tool calls).

Owns: ``NotebookSession`` (a ``Session`` handle that renders as a card). Every value that came
from an agent or a user is HTML-escaped.
"""

from __future__ import annotations

import html
from typing import Any

from agh_nb.api import Session

STATE_COLOURS = {"active": "#1a7f37", "starting": "#bf8700", "stopping": "#bf8700", "stopped": "#57606a"}
HEALTH_COLOURS = {"healthy": "#1a7f37", "degraded": "#bf8700", "stale": "#bc4c00", "dead": "#cf222e", "unknown": "#57606a"}


def _badge(text: str, colour: str) -> str:
    return (
        f"<span style='background:{colour};color:white;border-radius:3px;padding:1px 6px;"
        f"font-size:85%'>{html.escape(text)}</span>"
    )


def render_card(status: dict[str, Any], record: dict[str, Any], pending: int) -> str:
    """HTML for one session card (everything escaped)."""
    health = status.get("health") or {}
    rows = [
        ("agent", record.get("agent_name")),
        ("workspace", record.get("workspace_path")),
        ("permissions", record.get("permissions")),
        ("ACP session", record.get("acp_session_id")),
        ("active prompt", health.get("active_prompt")),
        ("last activity", health.get("last_activity_at")),
    ]
    if record.get("stop_reason"):
        rows.append(("stop reason", f"{record['stop_reason']}" + (f" ({record['stop_detail']})" if record.get("stop_detail") else "")))
    failure = record.get("failure")
    if failure:
        rows.append(("failure", f"{failure.get('kind')}: {failure.get('summary')}"))
    rows.append(("pending approvals", str(pending)))
    body = "".join(
        f"<tr><td style='color:#57606a;padding-right:12px'>{html.escape(k)}</td>"
        f"<td><code>{html.escape(str(v))}</code></td></tr>"
        for k, v in rows
        if v not in (None, "")
    )
    state = str(record.get("state"))
    title = html.escape(str(record.get("name") or record.get("id")))
    return (
        "<div style='border:1px solid #d0d7de;border-radius:6px;padding:8px;max-width:760px'>"
        f"<b>{title}</b> <span style='color:#57606a'>{html.escape(str(record.get('id')))}</span> "
        f"{_badge(state, STATE_COLOURS.get(state, '#57606a'))} "
        f"{_badge(str(health.get('health', 'unknown')), HEALTH_COLOURS.get(str(health.get('health')), '#57606a'))}"
        f"<table style='margin-top:6px'>{body}</table></div>"
    )


class NotebookSession(Session):
    """A session handle that shows itself as a card and can draw its timeline."""

    def _repr_html_(self) -> str:
        record = self.record.to_dict()
        status = self.status()
        pending = len(self._host.pending_approvals(self.id)) if record["state"] == "active" else 0
        return render_card(status, record, pending)

    def timeline(self) -> Any:
        """A chart of this session's turns and tool calls over time (``.figure``: matplotlib)."""
        from agh_nb.kernel.timeline import timeline_chart

        return timeline_chart(self.id, self._host.events(self.id))
