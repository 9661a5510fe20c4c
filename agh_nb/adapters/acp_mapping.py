"""Mapping of ACP ``session/update`` payloads to agh_nb event types and envelope fields (SPEC 4).

Owns: ``map_update``. Pure functions over the SDK's pydantic models; keeps the payload as
received under ``raw``. Imports acp (schema only) and ``events``.
"""

from __future__ import annotations

from typing import Any

from acp import schema

from agh_nb.adapters.acp_transport import RAW_RESULT_KEY
from agh_nb.config import McpServerDef
from agh_nb.events import JSON, EventType

_DONE_STATUSES = {"completed", "failed"}


def dump(model: Any) -> JSON:
    """Return an SDK model as the wire JSON (camelCase aliases, unset fields omitted)."""
    data: JSON = model.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_unset=True)
    return data


def _block_text(block: Any) -> str | None:
    text = getattr(block, "text", None)
    if isinstance(text, str):
        return text
    uri = getattr(block, "uri", None)
    return f"[{getattr(block, 'type', 'content')}: {uri}]" if uri else None


def _tool_content_text(content: list[Any] | None) -> str | None:
    if not content:
        return None
    parts: list[str] = []
    for item in content:
        inner = getattr(item, "content", None)
        if inner is not None:
            text = _block_text(inner)
            if text:
                parts.append(text)
        elif getattr(item, "type", None) == "diff":
            parts.append(f"[diff: {getattr(item, 'path', '')}]")
        elif getattr(item, "type", None) == "terminal":
            parts.append(f"[terminal: {getattr(item, 'terminal_id', '')}]")
    return "\n".join(parts) if parts else None


def _plan_entries(entries: list[Any]) -> str:
    return "\n".join(f"[{e.status}] {e.content}" for e in entries)


def map_update(update: Any, raw: JSON | None = None) -> tuple[EventType, JSON]:
    """Map one ``session/update`` model to ``(event type, envelope fields)``.

    Every member of the SDK's ``SessionUpdate`` union, by ``sessionUpdate``:

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
    - ``user_message_chunk``, ``session_info_update`` and anything newer -> ``system``
      (title: the kind)

    ``raw`` is the payload as received when the caller has it (the driver does), else the model
    dumped back to its wire form.
    """
    if raw is None:
        raw = dump(update)
    kind = getattr(update, "session_update", None)
    if isinstance(update, schema.AgentMessageChunk):
        return EventType.AGENT_MESSAGE, {"text": _block_text(update.content), "raw": raw}
    if isinstance(update, schema.AgentThoughtChunk):
        return EventType.THOUGHT, {"text": _block_text(update.content), "raw": raw}
    if isinstance(update, (schema.ToolCallStart, schema.ToolCallProgress)):
        fields: JSON = {
            "tool_call_id": update.tool_call_id,
            "title": update.title,
            "tool_name": update.kind,
            "raw": raw,
        }
        if update.raw_input is not None:
            fields["tool_input"] = update.raw_input
        if update.status in _DONE_STATUSES:
            result = (
                update.raw_output
                if update.raw_output is not None
                else _tool_content_text(update.content)
            )
            if update.status == "failed":
                fields["tool_error"] = _tool_content_text(update.content) or "tool call failed"
                if update.raw_output is not None:
                    fields["tool_result"] = update.raw_output
            else:
                fields["tool_result"] = result
            return EventType.TOOL_RESULT, fields
        return EventType.TOOL_CALL, fields
    if isinstance(update, schema.AgentPlanUpdate):
        return EventType.PLAN, {"title": "plan", "text": _plan_entries(update.entries), "raw": raw}
    if isinstance(update, schema.AgentPlanContentUpdate):
        plan = update.plan
        if isinstance(plan, schema.PlanUpdateItems):
            text = _plan_entries(plan.entries)
        elif isinstance(plan, schema.PlanUpdateMarkdown):
            text = plan.content
        else:
            text = f"[plan file: {plan.uri}]"
        return EventType.PLAN, {"title": f"plan {plan.plan_id}", "text": text, "raw": raw}
    if isinstance(update, schema.AgentPlanRemovedUpdate):
        return EventType.PLAN, {"title": f"plan {update.plan_id}", "text": "(plan removed)", "raw": raw}
    if isinstance(update, schema.UsageUpdate):
        usage: JSON = {"used": update.used, "size": update.size}
        if update.cost is not None:
            usage["cost"] = {"amount": update.cost.amount, "currency": update.cost.currency}
        return EventType.USAGE, {"usage": usage, "raw": raw}
    if isinstance(update, schema.CurrentModeUpdate):
        return EventType.MODE_CHANGED, {"title": "mode", "text": update.current_mode_id, "raw": raw}
    if isinstance(update, schema.ConfigOptionUpdate):
        values = ", ".join(f"{o.id}={_option_value(o)}" for o in update.config_options)
        return EventType.CONFIG_CHANGED, {"title": "config", "text": values, "raw": raw}
    if isinstance(update, schema.AvailableCommandsUpdate):
        names = " ".join(f"/{c.name}" for c in update.available_commands)
        return EventType.COMMANDS_AVAILABLE, {"title": "commands", "text": names, "raw": raw}
    return EventType.SYSTEM, {"title": str(kind or type(update).__name__), "raw": raw}


def _option_value(option: Any) -> str:
    value = option.current_value
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def usage_from_prompt(usage: Any) -> JSON | None:
    """Return the token counts of a ``PromptResponse.usage`` (None when absent)."""
    if usage is None:
        return None
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "thought_tokens": usage.thought_tokens,
        "cached_read_tokens": usage.cached_read_tokens,
        "cached_write_tokens": usage.cached_write_tokens,
    }


def raw_result(response: Any) -> dict[str, Any]:
    """The result as the agent sent it (left by the transport under ``_meta``), else its dump."""
    meta = getattr(response, "field_meta", None)
    if isinstance(meta, dict):
        raw = meta.pop(RAW_RESULT_KEY, None)
        if isinstance(raw, dict):
            return raw
    return dump(response) if response is not None else {}


def mcp_servers(servers: tuple[McpServerDef, ...]) -> list[Any]:
    """AGENT.md MCP servers (refs already resolved) as the SDK's models."""
    out: list[Any] = []
    for server in servers:
        if server.transport == "stdio":
            out.append(
                schema.McpServerStdio(
                    name=server.name,
                    command=server.command,
                    args=list(server.args),
                    env=[schema.EnvVariable(name=k, value=v) for k, v in server.env],
                )
            )
        else:
            headers = [schema.HttpHeader(name=k, value=v) for k, v in server.headers]
            if server.transport == "http":
                out.append(schema.HttpMcpServer(type="http", name=server.name, url=server.url, headers=headers))
            else:
                out.append(schema.SseMcpServer(type="sse", name=server.name, url=server.url, headers=headers))
    return out
