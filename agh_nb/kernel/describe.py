"""One line of plain text per event, shared by the tail widget and ``--follow``.

Owns: ``summary`` and ``as_text``. The text is never markup: callers escape it where it becomes
HTML. Must not import ``agh_nb.server``.
"""

from __future__ import annotations

import json
from typing import Any

from agh_nb.events import Event


def as_text(value: Any) -> str:
    """A tool input or result as text: strings as they are, other JSON as JSON ('' for None)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def summary(event: Event, titles: dict[str, str] | None = None) -> str:
    """What a person wants to read about one event, in one line.

    Args:
        event: the event.
        titles: tool call titles seen so far by ``tool_call_id``: an update or result that does
            not repeat its call's title is named by it (the dict is updated).
    """
    c = event.content
    if event.type in ("tool_call", "tool_result"):
        call_id = str(c.get("tool_call_id") or "")
        title = str(c.get("title") or "")
        if titles is not None and call_id:
            if title:
                titles[call_id] = title
            else:
                title = titles.get(call_id, "")
        bits = [title or call_id]
        if c.get("tool_error"):
            bits.append(f"error: {as_text(c['tool_error'])}")
        elif event.type == "tool_result" and c.get("tool_result") is not None:
            bits.append(f"→ {as_text(c['tool_result'])}")
        return " ".join(bits)
    if event.type == "permission":
        return f"{c.get('action') or ''} {c.get('resource') or ''} {c.get('decision') or 'pending'} {c.get('error') or ''}"
    if event.type == "usage":
        return _usage(c.get("usage") or {})
    if event.type == "session_stopped":
        failure = c.get("failure") or {}
        return f"{c.get('stop_reason')} {failure.get('kind', '')} {failure.get('summary', '')}"
    for key in ("text", "error", "stop_reason", "title"):
        if c.get(key):
            return str(c[key])
    return ""


def _usage(usage: dict[str, object]) -> str:
    bits = []
    if usage.get("total_tokens") is not None:
        bits.append(f"{usage['total_tokens']} tokens")
    if usage.get("used") is not None:
        bits.append(f"context {usage['used']}/{usage.get('size') or '?'}")
    cost = usage.get("cost")
    if isinstance(cost, dict) and cost.get("amount") is not None:
        bits.append(f"cost so far {cost['amount']} {cost.get('currency') or ''}".rstrip())
    return ", ".join(bits)
