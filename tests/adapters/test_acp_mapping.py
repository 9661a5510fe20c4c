"""ACP ``session/update`` -> agh_nb events (SPEC 4), over golden wire payloads of every update kind.

The golden file holds payloads as an agent sends them; each is validated by the SDK's own models
(so a fixture that drifts from the schema fails here) and mapped by ``map_update``. The union of
update kinds is read from the installed SDK, so a kind added by an SDK upgrade fails the coverage
test until it has a fixture and a deliberate mapping.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import pytest
from acp import schema

from agh_nb.adapters.acp_mapping import map_update

GOLDEN = json.loads((Path(__file__).parent / "golden" / "session_updates.json").read_text(encoding="utf-8"))
CASES = GOLDEN["cases"]


def union_members() -> list[type[Any]]:
    """Every model of ``SessionNotification.update`` in the installed SDK."""
    annotation = schema.SessionNotification.model_fields["update"].annotation
    return list(typing.get_args(annotation))


def update_kind(model: type[Any]) -> str:
    """A member's ``sessionUpdate`` literal."""
    (kind,) = typing.get_args(model.model_fields["session_update"].annotation)
    return str(kind)


def parse(payload: dict[str, Any]) -> Any:
    """The update model the SDK builds from a ``session/update`` notification carrying ``payload``."""
    return schema.SessionNotification.model_validate({"sessionId": "sess-1", "update": payload}).update


def test_every_update_kind_of_the_sdk_has_a_golden_payload() -> None:
    kinds = {update_kind(m) for m in union_members()}
    covered = {case["update"]["sessionUpdate"] for case in CASES}
    assert kinds - covered == set(), "an update kind without a golden payload (and a decided mapping)"
    assert covered - kinds == set(), "a golden payload for a kind the SDK does not know"


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_golden_update_maps_to_its_event(case: dict[str, Any]) -> None:
    payload = case["update"]
    update = parse(payload)
    assert update.session_update == payload["sessionUpdate"]
    event_type, fields = map_update(update, payload)
    assert event_type.value == case["event"]["type"]
    assert fields["raw"] is payload, "raw is the payload as received, not a re-dump"
    assert {k: v for k, v in fields.items() if k != "raw"} == case["event"]["fields"]


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_without_the_received_payload_raw_is_the_wire_form(case: dict[str, Any]) -> None:
    event_type, fields = map_update(parse(case["update"]))
    assert event_type.value == case["event"]["type"]
    assert fields["raw"] == case["update"]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("plan", "plan"),
        ("plan_update", "plan"),
        ("plan_removed", "plan"),
        ("usage_update", "usage"),
        ("available_commands_update", "commands_available"),
        ("current_mode_update", "mode_changed"),
        ("config_option_update", "config_changed"),
        ("session_info_update", "system"),
        ("user_message_chunk", "system"),
    ],
)
def test_kind_to_event_type(kind: str, expected: str) -> None:
    mapped = {map_update(parse(case["update"]))[0].value for case in CASES if case["update"]["sessionUpdate"] == kind}
    assert mapped == {expected}
