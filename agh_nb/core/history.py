"""History (SPEC 4): a session's events grouped by prompt turn.

Owns: ``group_by_turn``, a pure function over stored events.
"""

from __future__ import annotations

from collections.abc import Iterable

from agh_nb.events import JSON, Event, format_timestamp


def group_by_turn(events: Iterable[Event]) -> list[JSON]:
    """Group events by ``turn_id`` (turns in order of their first event; session-level events skipped).

    Each turn: ``turn_id``, ``prompt``, ``response`` (agent_message chunks joined), ``thoughts``,
    ``tool_calls`` (distinct ids), ``stop_reason``, ``error``, ``started_at``, ``ended_at``,
    ``first_sequence``, ``last_sequence``, ``event_count``.
    """
    turns: dict[str, JSON] = {}
    tools: dict[str, set[str]] = {}
    for event in events:
        if not event.turn_id:
            continue
        turn = turns.get(event.turn_id)
        if turn is None:
            turn = turns[event.turn_id] = {
                "turn_id": event.turn_id,
                "prompt": None,
                "response": "",
                "thoughts": 0,
                "tool_calls": 0,
                "stop_reason": None,
                "error": None,
                "started_at": format_timestamp(event.timestamp),
                "ended_at": None,
                "first_sequence": event.sequence,
                "last_sequence": event.sequence,
                "event_count": 0,
            }
            tools[event.turn_id] = set()
        turn["event_count"] += 1
        turn["last_sequence"] = event.sequence
        turn["ended_at"] = format_timestamp(event.timestamp)
        content = event.content
        if event.type == "user_message":
            turn["prompt"] = content.get("text")
        elif event.type == "agent_message" and content.get("text"):
            turn["response"] += content["text"]
        elif event.type == "thought":
            turn["thoughts"] += 1
        elif event.type in ("tool_call", "tool_result") and content.get("tool_call_id"):
            tools[event.turn_id].add(str(content["tool_call_id"]))
            turn["tool_calls"] = len(tools[event.turn_id])
        elif event.type == "done":
            turn["stop_reason"] = content.get("stop_reason")
            turn["error"] = content.get("error")
        elif event.type == "error":
            turn["error"] = content.get("error")
    return list(turns.values())
