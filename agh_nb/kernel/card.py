"""The rich display of a session in a notebook: a card with state, health, stop reason, failure
and pending approvals, plus ``timeline()`` (a chart of turns and tool calls).

Owns: ``session_card_html`` (the card of any ``agh_nb.api.Session``; ``load_ipython_extension``
registers it as the HTML formatter of ``Session``, so a handle made with the Python API shows the
same card as one returned by ``%agh``) and ``NotebookSession`` (a ``Session`` that can also draw
its timeline). Every value that came from an agent or a user is HTML-escaped. Must not import
``agh_nb.server``.
"""

from __future__ import annotations

import html
import logging
from typing import Any

from agh_nb.api import Session, agent_view
from agh_nb.core.record import SessionRecord
from agh_nb.errors import AghError
from agh_nb.events import JSON

log = logging.getLogger(__name__)

STATE_COLOURS = {"active": "#1a7f37", "starting": "#bf8700", "stopping": "#bf8700", "stopped": "#57606a"}
HEALTH_COLOURS = {"healthy": "#1a7f37", "degraded": "#bf8700", "stale": "#bc4c00", "dead": "#cf222e", "unknown": "#57606a"}
STOP_COLOURS = {"completed": "#1a7f37", "user_canceled": "#57606a", "budget_exceeded": "#bc4c00", "timeout": "#bc4c00"}
FAILED_COLOUR = "#cf222e"  # error, agent_crashed, and any stop that carries a failure
PENDING_SHOWN = 5  # pending requests listed by title on the card
NAMES_SHOWN = 8  # modes, models, commands listed by name on the card


def _choice(part: dict[str, Any]) -> str | None:
    current, available = part.get("current"), part.get("available") or []
    if not current and not available:
        return None
    others = [a for a in available if a != current][:NAMES_SHOWN]
    return f"{current or '?'}" + (f" (also: {', '.join(others)})" if others else "")


def _agent_rows(record: dict[str, Any]) -> list[tuple[str, Any]]:
    """Mode, model, slash commands and auth methods of the session's agent."""
    view = agent_view(SessionRecord.from_dict(record))
    commands = [f"/{c['name']}" for c in view["commands"]]
    methods = [
        f"{m['id']} ({m['type']}" + (f": {', '.join(m['vars'])}" if m.get("vars") else "") + ")"
        for m in view["auth_methods"]
    ]
    return [
        ("mode", _choice(view["mode"])),
        ("model", _choice(view["model"])),
        ("commands", " ".join(commands[:NAMES_SHOWN]) + (f" and {len(commands) - NAMES_SHOWN} more" if len(commands) > NAMES_SHOWN else "") or None),
        ("auth methods", "; ".join(methods) or None),
    ]


def _badge(text: str, colour: str) -> str:
    return (
        f"<span style='background:{colour};color:white;border-radius:3px;padding:1px 6px;"
        f"font-size:85%'>{html.escape(text)}</span>"
    )


def _pending_text(pending: list[JSON]) -> str:
    if not pending:
        return "0"
    titles = [
        f"{p.get('request_id')}: " + " ".join(str(p.get("title") or "(untitled tool call)").split())
        for p in pending[:PENDING_SHOWN]
    ]
    more = [f"and {len(pending) - PENDING_SHOWN} more"] if len(pending) > PENDING_SHOWN else []
    return f"{len(pending)} — " + "; ".join(titles + more)


def _sandbox_text(record: dict[str, Any]) -> str | None:
    if record.get("sandboxed"):
        return "bubblewrap (workspace writable, $AGH_HOME hidden)" if record.get("permissions") != "deny-all" else "bubblewrap (workspace read-only, $AGH_HOME hidden)"
    if record.get("state") in ("active", "stopping") or record.get("acp_session_id"):
        return "none: the agent runs with your rights"
    return None


def render_card(status: dict[str, Any], record: dict[str, Any], pending: list[JSON]) -> str:
    """HTML for one session card (everything escaped).

    Args:
        status: the session's status (``host.status``: state, stop reason, failure, health).
        record: the session record's JSON form.
        pending: its pending permission requests.
    """
    health = status.get("health") or {}
    rows: list[tuple[str, Any]] = [
        ("agent", record.get("agent_name")),
        ("workspace", record.get("workspace_path")),
        ("permissions", record.get("permissions")),
        ("sandbox", _sandbox_text(record)),
        ("ACP session", record.get("acp_session_id")),
        ("forked from", record.get("parent_id")),
        *_agent_rows(record),
        ("active prompt", health.get("active_prompt")),
        ("queued turns", len(status.get("queue") or []) or None),
        ("last activity", health.get("last_activity_at")),
    ]
    if record.get("stop_reason"):
        rows.append(("stop reason", f"{record['stop_reason']}" + (f" ({record['stop_detail']})" if record.get("stop_detail") else "")))
    failure = record.get("failure")
    if failure:
        code = f" (code {failure['code']})" if failure.get("code") is not None else ""
        rows.append(("failure", f"{failure.get('kind')}{code}: {failure.get('summary')}"))
    if health.get("last_error") and not failure:
        rows.append(("last error", health.get("last_error")))
    rows.append(("pending approvals", _pending_text(pending)))
    body = "".join(
        f"<tr><td style='color:#57606a;padding-right:12px;vertical-align:top'>{html.escape(k)}</td>"
        f"<td><code>{html.escape(str(v))}</code></td></tr>"
        for k, v in rows
        if v not in (None, "")
    )
    state = str(record.get("state"))
    if state == "stopped":
        # A stopped session has no health to speak of ("unknown"): its final state is how it ended.
        final = str(record.get("stop_reason") or "stopped")
        second = _badge(final, STOP_COLOURS.get(final, FAILED_COLOUR if record.get("failure") else "#57606a"))
    else:
        health_word = str(health.get("health") or "unknown")
        second = _badge(health_word, HEALTH_COLOURS.get(health_word, "#57606a"))
    title = html.escape(str(record.get("name") or record.get("id")))
    return (
        "<div style='border:1px solid #d0d7de;border-radius:6px;padding:8px;max-width:760px'>"
        f"<b>{title}</b> <span style='color:#57606a'>{html.escape(str(record.get('id')))}</span> "
        f"{_badge(state, STATE_COLOURS.get(state, '#57606a'))} {second}"
        f"<table style='margin-top:6px'>{body}</table></div>"
    )


def session_card_html(session: Session) -> str | None:
    """The card of ``session`` (the HTML formatter of every ``Session``); None when the host
    cannot say (the plain-text form is shown instead)."""
    host = session._host
    try:
        record = session.record.to_dict()
        status = host.status(session.id)
        pending = host.pending_approvals(session.id) if record["state"] == "active" else []
    except AghError as exc:
        log.warning("cannot show the card of %s: %s", session.id, exc)
        return None
    return render_card(status, record, list(pending))


class NotebookSession(Session):
    """A session handle that shows itself as a card and can draw its timeline."""

    def _repr_html_(self) -> str | None:
        return session_card_html(self)

    def timeline(self) -> Any:
        """A chart of this session's turns and tool calls over time (``.figure``: matplotlib).

        Raises:
            AghError: when the chart cannot be drawn.
        """
        from agh_nb.kernel.timeline import timeline_chart

        return timeline_chart(self.id, self._host.events(self.id), name=self.record.name)

