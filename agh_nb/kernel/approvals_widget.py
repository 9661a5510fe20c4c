"""``%agh approvals [ID]``: a live panel of pending permission requests with decision buttons.

Owns: ``ApprovalPanel``. Requests appear when an agent asks and leave when resolved from any
surface (this panel, ``%agh session approve``, HTTP, the timeout). Forms an agent asks to fill
(elicitations) are shown below them as ``ElicitationForm`` widgets. Everything an agent wrote
(titles, paths, diffs) is HTML-escaped before it is shown.
"""

from __future__ import annotations

import html
import threading
from typing import Any

import ipywidgets as widgets

from agh_nb.core.host import HostProtocol
from agh_nb.core.permissions import DECISIONS
from agh_nb.errors import AghError
from agh_nb.kernel.elicitation_widget import ElicitationForm
from agh_nb.events import JSON

_LABELS = {"allow-once": "Allow once", "allow-always": "Allow always", "reject-once": "Reject once", "reject-always": "Reject always"}
_STYLES = {"allow-once": "success", "allow-always": "info", "reject-once": "warning", "reject-always": "danger"}
DIFF_PREVIEW_CHARS = 4000


def _diff_html(diff: list[JSON]) -> str:
    parts = []
    for item in diff:
        old = str(item.get("oldText") or "")
        new = str(item.get("newText") or "")
        lines = [f"--- {item.get('path', '')}", f"+++ {item.get('path', '')}"]
        lines += [f"-{line}" for line in old.splitlines()] + [f"+{line}" for line in new.splitlines()]
        text = "\n".join(lines)
        if len(text) > DIFF_PREVIEW_CHARS:
            text = text[:DIFF_PREVIEW_CHARS] + "\n… (preview truncated)"
        parts.append(
            "<pre style='max-height:16em;overflow:auto;background:#f6f8fa;padding:4px;margin:2px 0'>"
            + html.escape(text)
            + "</pre>"
        )
    return "".join(parts)


class _RequestRow(widgets.VBox):  # type: ignore[misc]
    """One pending request: what, where, a diff preview, and the four decision buttons."""

    def __init__(self, panel: ApprovalPanel, request: JSON) -> None:
        self.request_id: str = request["request_id"]
        self.session_id: str = request["session_id"]
        self.summary = " ".join(
            f"{request.get('title') or '(untitled tool call)'} [{request.get('kind') or 'other'}]".split()
        )
        title = html.escape(str(request.get("title") or "(untitled tool call)"))
        kind = html.escape(str(request.get("kind") or "other"))
        paths = "".join(f"<li><code>{html.escape(p)}</code></li>" for p in request.get("paths") or [])
        header = widgets.HTML(
            f"<b>{title}</b> <span style='color:#666'>[{kind}]</span> "
            f"<span style='color:#999;font-size:85%'>{html.escape(self.request_id)} · {html.escape(self.session_id)}</span>"
            + (f"<ul style='margin:2px 0'>{paths}</ul>" if paths else "")
            + _diff_html(request.get("diff") or [])
        )
        self.buttons: dict[str, widgets.Button] = {}
        for decision in DECISIONS:
            button = widgets.Button(description=_LABELS[decision], button_style=_STYLES[decision], tooltip=decision)
            button.on_click(lambda _b, d=decision: panel.decide(self.request_id, self.session_id, d))
            self.buttons[decision] = button
        super().__init__([header, widgets.HBox(list(self.buttons.values()))], layout=widgets.Layout(border="1px solid #ddd", padding="4px", margin="2px 0"))


class ApprovalPanel(widgets.VBox):  # type: ignore[misc]
    """Pending permission requests of one session (or all), kept current from any surface.

    Args:
        host: the process-wide host (embedded or remote).
        session_id: show only this session's requests (None: every session).
    """

    def __init__(self, host: HostProtocol, session_id: str | None = None) -> None:
        self._host = host
        self._session_id = session_id
        self._lock = threading.Lock()
        self.rows: dict[str, _RequestRow] = {}
        self.status = widgets.Label(value="")
        self._empty = widgets.HTML("<i>No pending approvals.</i>")
        scope = f"session {html.escape(session_id)}" if session_id else "all sessions"
        self._header = widgets.HTML(f"<b>Approvals</b> — {scope}")
        self.forms: dict[str, ElicitationForm] = {}
        super().__init__([self._header, self._empty, self.status])
        for request in host.pending_approvals(session_id):
            self._add(request)
        for form in host.pending_elicitations(session_id):
            self._on_form("added", form)
        self._unwatch = host.watch_approvals(self._on_change)
        # The embedded host says when forms come and go; a remote one is asked once, above.
        watch = getattr(host, "watch_elicitations", None)
        self._unwatch_forms = watch(self._on_form) if watch is not None else (lambda: None)
        self._refresh()

    def _on_form(self, change: str, request: JSON) -> None:
        if self._session_id is not None and request["session_id"] != self._session_id:
            return
        with self._lock:
            if change == "added" and request["request_id"] not in self.forms:
                self.forms[request["request_id"]] = ElicitationForm(self._host, request)
            elif change != "added" and request["request_id"] in self.forms:
                self.forms.pop(request["request_id"]).done(str(request.get("action")))
        self._refresh()

    def _on_change(self, change: str, request: JSON) -> None:
        if self._session_id is not None and request["session_id"] != self._session_id:
            return
        if change == "added":
            self._add(request)
        else:
            with self._lock:
                self.rows.pop(request["request_id"], None)
            self.status.value = f"{request['request_id']}: {request.get('decision')} ({request.get('source')})"
        self._refresh()

    def _add(self, request: JSON) -> None:
        with self._lock:
            if request["request_id"] not in self.rows:
                self.rows[request["request_id"]] = _RequestRow(self, request)

    def _refresh(self) -> None:
        with self._lock:
            rows: list[Any] = [*self.rows.values(), *self.forms.values()]
        self.children = [self._header, *(rows or [self._empty]), self.status]

    def decide(self, request_id: str, session_id: str, decision: str) -> None:
        """Resolve a request (what the buttons call); errors show in the status line."""
        try:
            self._host.approve(session_id, request_id, decision)
        except AghError as exc:
            self.status.value = f"error: {exc}"

    def text_summary(self) -> str:
        """Plain text for front ends that cannot show widgets, e.g.
        ``Approvals for session sess_x: 1 pending: req_ab (Write /ws/a.txt [edit])``."""
        with self._lock:
            rows = list(self.rows.values())
        scope = f"session {self._session_id}" if self._session_id else "all sessions"
        if not rows:
            return f"Approvals for {scope}: none pending"
        shown = "; ".join(f"{r.request_id} ({r.summary})" for r in rows[:5])
        more = f"; and {len(rows) - 5} more" if len(rows) > 5 else ""
        return f"Approvals for {scope}: {len(rows)} pending: {shown}{more}"

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):
            bundle["text/plain"] = self.text_summary()
        return bundle

    def pending_ids(self) -> list[str]:
        """The request ids currently shown."""
        with self._lock:
            return list(self.rows)

    def close(self) -> None:
        """Stop watching and close the widget."""
        self._unwatch()
        self._unwatch_forms()
        super().close()
