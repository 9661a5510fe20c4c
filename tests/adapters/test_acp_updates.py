"""The hot-path mapper: ``session/update`` payloads straight from the wire dict (issue 14).

It must give exactly what the golden file says for every update kind (the same cases the
model-based mapping is checked against), keep the payload itself as ``raw``, and turn a payload
that breaks its kind's shape into a ``system`` event instead of raising or dropping it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agh_nb.adapters.acp_updates import map_raw_update

GOLDEN = json.loads((Path(__file__).parent / "golden" / "session_updates.json").read_text(encoding="utf-8"))
CASES = GOLDEN["cases"]


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_golden_payload_maps_to_its_event(case: dict[str, Any]) -> None:
    payload = case["update"]
    event_type, fields = map_raw_update(payload)
    assert event_type.value == case["event"]["type"]
    assert fields["raw"] is payload, "raw is the payload as received"
    assert {k: v for k, v in fields.items() if k != "raw"} == case["event"]["fields"]


@pytest.mark.parametrize(
    ("payload", "title", "error"),
    [
        ({"sessionUpdate": "tool_call", "title": "x"}, "invalid tool_call", "toolCallId must be a string"),
        ({"sessionUpdate": "tool_call", "toolCallId": 7, "title": "x"}, "invalid tool_call", "toolCallId must be a string"),
        ({"sessionUpdate": "tool_call_update", "toolCallId": "c", "status": 3}, "invalid tool_call_update", "status must be a string"),
        ({"sessionUpdate": "tool_call_update", "toolCallId": "c", "status": "completed", "content": "text"}, "invalid tool_call_update", "content must be a list"),
        ({"sessionUpdate": "agent_message_chunk"}, "invalid agent_message_chunk", "content must be an object"),
        ({"sessionUpdate": "agent_thought_chunk", "content": "hi"}, "invalid agent_thought_chunk", "content must be an object"),
        ({"sessionUpdate": "plan", "entries": [{"content": "a"}]}, "invalid plan", "status must be a string"),
        ({"sessionUpdate": "plan", "entries": {}}, "invalid plan", "entries must be a list"),
        ({"sessionUpdate": "plan_update", "plan": {"planId": "p", "type": "video"}}, "invalid plan_update", "plan.type must be items, markdown or file"),
        ({"sessionUpdate": "plan_removed"}, "invalid plan_removed", "planId must be a string"),
        ({"sessionUpdate": "usage_update", "used": -1, "size": 5}, "invalid usage_update", "used must be a non-negative integer"),
        ({"sessionUpdate": "usage_update", "used": True, "size": 5}, "invalid usage_update", "used must be a non-negative integer"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_payload_that_breaks_its_kind_is_kept_as_a_system_event(payload: dict[str, Any], title: str, error: str) -> None:
    event_type, fields = map_raw_update(payload)
    assert (event_type.value, fields["title"], fields["error"]) == ("system", title, error)
    assert fields["raw"] is payload


@pytest.mark.parametrize("update", [None, 3, "text", ["a"]], ids=repr)
def test_an_update_that_is_not_an_object_is_kept(update: Any) -> None:
    event_type, fields = map_raw_update(update)
    assert event_type.value == "system" and fields["title"] == "invalid session/update"
    assert fields["raw"] == {"update": update}


def test_a_kind_newer_than_this_sdk_is_a_system_event_titled_by_its_kind() -> None:
    payload = {"sessionUpdate": "hologram_update", "frames": 3}
    assert map_raw_update(payload) == (map_raw_update(payload)[0], {"title": "hologram_update", "raw": payload})
    assert map_raw_update(payload)[0].value == "system"
