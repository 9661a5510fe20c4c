"""One line of plain text per event, shared by the tail widget and ``--follow``.

Owns: ``summary``. The text is never markup: callers escape it where it becomes HTML.
"""

from __future__ import annotations

from agh_nb.events import Event


def summary(event: Event) -> str:
    """What a person wants to read about one event, in one line."""
    c = event.content
    if event.type in ("tool_call", "tool_result"):
        bits = [str(c.get("title") or c.get("tool_call_id") or "")]
        if c.get("tool_error"):
            bits.append(f"error: {c['tool_error']}")
        elif event.type == "tool_result" and c.get("tool_result") is not None:
            bits.append(f"→ {c['tool_result']}")
        return " ".join(bits)
    if event.type == "permission":
        return f"{c.get('action') or ''} {c.get('resource') or ''} {c.get('decision') or 'pending'} {c.get('error') or ''}"
    if event.type == "session_stopped":
        failure = c.get("failure") or {}
        return f"{c.get('stop_reason')} {failure.get('kind', '')} {failure.get('summary', '')}"
    for key in ("text", "error", "stop_reason", "title"):
        if c.get(key):
            return str(c[key])
    return ""
