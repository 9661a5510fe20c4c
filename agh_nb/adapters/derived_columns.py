"""The derived columns of ``events``: fields of ``content`` stored as plain columns when a row is
queued, so the analytical views (``duckdb_views``) group and filter without parsing JSON.

Owns: ``DERIVED_COLUMNS``, ``derived_fields`` (a row's ``text``, ``tool_call_id``, ``tool_name``,
``title`` and ``status``) and ``place_in_message`` (its ``message_seq``, which needs the session's
previous row). ``duckdb_views`` fills the same values into a store made before they existed; the
two must agree (tests/adapters/test_duckdb_views.py checks). Pure functions; imports nothing but
the standard library.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DERIVED_COLUMNS: tuple[str, ...] = ("text", "tool_call_id", "tool_name", "title", "status", "message_seq")
"""Columns of ``events`` copied out of ``content`` when a row is queued (``derived_fields``), after
the SPEC's columns. Stores made before they existed get them when opened (``duckdb_views``)."""


_CHUNK_TYPES = frozenset({"agent_message", "thought"})
_TOOL_TYPES = frozenset({"tool_call", "tool_result"})


def derived_fields(
    event_type: str, content: Mapping[str, Any]
) -> tuple[str | None, str | None, str | None, str | None, str | None]:
    """The ``text``, ``tool_call_id``, ``tool_name``, ``title`` and ``status`` columns of one event.

    The first four are the envelope fields of those names when they are strings
    (``tool_call_id`` also when it is a number). ``status`` belongs to tool calls: the ACP status
    of the update (``raw.status``: ``pending``, ``in_progress``, ``completed``, ``failed``); a
    ``tool_result`` agh_nb wrote itself has no ACP payload and gets ``interrupted`` when it closes
    a call cut off by a stop (``runtime.repair``), else ``failed`` (it carries a ``tool_error``) or
    ``completed``. ``message_seq`` is the writer's: it needs the session's previous row
    (``place_in_message``).
    """
    text = content.get("text")
    call_id = content.get("tool_call_id")
    name = content.get("tool_name")
    title = content.get("title")
    status = None
    if event_type in _TOOL_TYPES:
        raw = content.get("raw")
        if isinstance(raw, Mapping) and isinstance(raw.get("status"), str):
            status = raw["status"]
        elif event_type == "tool_result":
            runtime = content.get("runtime")
            if isinstance(runtime, Mapping) and runtime.get("repair") is True:
                status = "interrupted"
            else:
                status = "failed" if content.get("tool_error") is not None else "completed"
    return (
        text if isinstance(text, str) else None,
        str(call_id) if isinstance(call_id, (str, int)) and not isinstance(call_id, bool) else None,
        name if isinstance(name, str) else None,
        title if isinstance(title, str) else None,
        status,
    )


OpenMessage = tuple[str, str | None, int]
"""The message a session's next chunk may continue: its chunk type, turn and ``message_seq``."""


def place_in_message(
    open_message: OpenMessage | None, event_type: str, turn_id: str | None, text: str | None, sequence: int
) -> tuple[int | None, OpenMessage | None]:
    """Return a row's ``message_seq`` and the message left open after it.

    A message is a prompt (``user_message``, a message of its own) or a run of consecutive agent
    message chunks, or of thought chunks, of one turn: the ``messages`` view joins the rows that
    share a ``message_seq`` (the sequence of the run's first chunk). Any other event ends the run;
    an empty chunk neither starts nor ends one (as in the transcript) and belongs to none.
    """
    if event_type == "user_message":
        return sequence, None
    if event_type in _CHUNK_TYPES:
        if not text:
            return None, open_message
        if open_message is not None and open_message[0] == event_type and open_message[1] == turn_id:
            return open_message[2], open_message
        return sequence, (event_type, turn_id, sequence)
    return None, None


