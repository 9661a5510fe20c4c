"""ACP ``session/update`` payloads -> agh_nb event types and envelope fields, from the wire dict.

Owns: ``map_raw_update``. The hot path of ingest: the transport hands each ``session/update``
notification's ``update`` object here as parsed from the frame, with no SDK model built and no
task started for it (issue 14: pydantic validation and a task per notification were most of a
bare client's cost). The mapping is the one SPEC 4 gives; the payload is kept under ``raw`` as
received. A payload that is not what its kind says (a missing field, a wrong type) is never
dropped: it becomes a ``system`` event titled ``invalid <kind>`` with the problem in ``error``.
Imports only ``events``.
"""

from __future__ import annotations

from typing import Any

from agh_nb.events import JSON, EventType

_DONE_STATUSES = frozenset({"completed", "failed"})


class _Invalid(Exception):
    """The payload does not have the shape its ``sessionUpdate`` kind requires."""


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Invalid(f"{what} must be an object")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"{what} must be a string")
    return value


def _opt_str(value: Any, what: str) -> str | None:
    return None if value is None else _str(value, what)


def _block_text(block: Any) -> str | None:
    """A content block's text, or ``[<type>: <uri>]`` for a block that points at a resource."""
    block = _obj(block, "content")
    text = block.get("text")
    if isinstance(text, str):
        return text
    uri = block.get("uri")
    return f"[{block.get('type') or 'content'}: {uri}]" if isinstance(uri, str) and uri else None


def _tool_content_text(content: Any) -> str | None:
    if content is None:
        return None
    if not isinstance(content, list):
        raise _Invalid("content must be a list")
    parts: list[str] = []
    for item in content:
        item = _obj(item, "a content item")
        kind = item.get("type")
        if kind == "content":
            text = _block_text(item.get("content"))
            if text:
                parts.append(text)
        elif kind == "diff":
            parts.append(f"[diff: {item.get('path', '')}]")
        elif kind == "terminal":
            parts.append(f"[terminal: {item.get('terminalId', '')}]")
    return "\n".join(parts) if parts else None


def _plan_entries(entries: Any) -> str:
    if not isinstance(entries, list):
        raise _Invalid("entries must be a list")
    lines = []
    for entry in entries:
        entry = _obj(entry, "a plan entry")
        lines.append(f"[{_str(entry.get('status'), 'status')}] {_str(entry.get('content'), 'content')}")
    return "\n".join(lines)


def _tool_call(update: dict[str, Any], raw: JSON, *, start: bool) -> tuple[EventType, JSON]:
    fields: JSON = {
        "tool_call_id": _str(update.get("toolCallId"), "toolCallId"),
        "title": _str(update.get("title"), "title") if start else _opt_str(update.get("title"), "title"),
        "tool_name": _opt_str(update.get("kind"), "kind"),
        "raw": raw,
    }
    raw_input = update.get("rawInput")
    if raw_input is not None:
        fields["tool_input"] = raw_input
    status = update.get("status")
    if status in _DONE_STATUSES:
        raw_output = update.get("rawOutput")
        text = _tool_content_text(update.get("content"))
        if status == "failed":
            fields["tool_error"] = text or "tool call failed"
            if raw_output is not None:
                fields["tool_result"] = raw_output
        else:
            fields["tool_result"] = raw_output if raw_output is not None else text
        return EventType.TOOL_RESULT, fields
    _opt_str(status, "status")
    return EventType.TOOL_CALL, fields


def _plan_update(update: dict[str, Any], raw: JSON) -> tuple[EventType, JSON]:
    plan = _obj(update.get("plan"), "plan")
    plan_id = _str(plan.get("planId"), "planId")
    kind = plan.get("type")
    if kind == "items":
        text = _plan_entries(plan.get("entries"))
    elif kind == "markdown":
        text = _str(plan.get("content"), "content")
    elif kind == "file":
        text = f"[plan file: {_str(plan.get('uri'), 'uri')}]"
    else:
        raise _Invalid("plan.type must be items, markdown or file")
    return EventType.PLAN, {"title": f"plan {plan_id}", "text": text, "raw": raw}


def _usage(update: dict[str, Any], raw: JSON) -> tuple[EventType, JSON]:
    used, size = update.get("used"), update.get("size")
    for name, value in (("used", used), ("size", size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _Invalid(f"{name} must be a non-negative integer")
    usage: JSON = {"used": used, "size": size}
    cost = update.get("cost")
    if cost is not None:
        cost = _obj(cost, "cost")
        usage["cost"] = {"amount": cost.get("amount"), "currency": cost.get("currency")}
    return EventType.USAGE, {"usage": usage, "raw": raw}


def _config_values(update: dict[str, Any]) -> str:
    options = update.get("configOptions")
    if not isinstance(options, list):
        raise _Invalid("configOptions must be a list")
    values = []
    for option in options:
        option = _obj(option, "a config option")
        value = option.get("currentValue")
        shown = ("true" if value else "false") if isinstance(value, bool) else str(value)
        values.append(f"{_str(option.get('id'), 'id')}={shown}")
    return ", ".join(values)


def _command_names(update: dict[str, Any]) -> str:
    commands = update.get("availableCommands")
    if not isinstance(commands, list):
        raise _Invalid("availableCommands must be a list")
    return " ".join(f"/{_str(_obj(c, 'a command').get('name'), 'name')}" for c in commands)


def map_raw_update(update: Any) -> tuple[EventType, JSON]:
    """Map one ``session/update`` payload (the notification's ``update``) to an event.

    By ``sessionUpdate``:

    - ``agent_message_chunk`` -> ``agent_message``; ``agent_thought_chunk`` -> ``thought``
      (``text``: the block's text, or ``[<type>: <uri>]`` for a resource)
    - ``tool_call`` / ``tool_call_update`` -> ``tool_call`` until their status is ``completed``
      or ``failed``, which makes them ``tool_result`` (``tool_result`` / ``tool_error``)
    - ``plan`` -> ``plan`` (title ``plan``); ``plan_update`` / ``plan_removed`` -> ``plan``
      (title ``plan <planId>``; text: the entries, the markdown, ``[plan file: <uri>]``, or
      ``(plan removed)``)
    - ``usage_update`` -> ``usage`` (``usage {used, size, cost?}``)
    - ``current_mode_update`` -> ``mode_changed`` (``text``: the mode id)
    - ``config_option_update`` -> ``config_changed`` (``text``: ``id=value`` of each option)
    - ``available_commands_update`` -> ``commands_available`` (``text``: ``/name`` of each)
    - every other kind, known or newer -> ``system`` (title: the kind)

    A payload that breaks its kind's shape -> ``system``, title ``invalid <kind>``, ``error``
    saying what is wrong. ``raw`` is always the payload itself.
    """
    if not isinstance(update, dict):
        return EventType.SYSTEM, {
            "title": "invalid session/update",
            "error": "the update is not an object",
            "raw": {"update": update},
        }
    kind = update.get("sessionUpdate")
    try:
        if kind == "agent_message_chunk":
            return EventType.AGENT_MESSAGE, {"text": _block_text(update.get("content")), "raw": update}
        if kind == "agent_thought_chunk":
            return EventType.THOUGHT, {"text": _block_text(update.get("content")), "raw": update}
        if kind == "tool_call":
            return _tool_call(update, update, start=True)
        if kind == "tool_call_update":
            return _tool_call(update, update, start=False)
        if kind == "plan":
            return EventType.PLAN, {"title": "plan", "text": _plan_entries(update.get("entries")), "raw": update}
        if kind == "plan_update":
            return _plan_update(update, update)
        if kind == "plan_removed":
            plan_id = _str(update.get("planId"), "planId")
            return EventType.PLAN, {"title": f"plan {plan_id}", "text": "(plan removed)", "raw": update}
        if kind == "usage_update":
            return _usage(update, update)
        if kind == "current_mode_update":
            mode = _str(update.get("currentModeId"), "currentModeId")
            return EventType.MODE_CHANGED, {"title": "mode", "text": mode, "raw": update}
        if kind == "config_option_update":
            return EventType.CONFIG_CHANGED, {"title": "config", "text": _config_values(update), "raw": update}
        if kind == "available_commands_update":
            return EventType.COMMANDS_AVAILABLE, {"title": "commands", "text": _command_names(update), "raw": update}
    except _Invalid as problem:
        return EventType.SYSTEM, {"title": f"invalid {kind}", "error": str(problem), "raw": update}
    title = kind if isinstance(kind, str) and kind else "session/update"
    return EventType.SYSTEM, {"title": title, "raw": update}
