"""The agent's modes, models, options and commands (core.acp_state) over the shapes real agents
send: claude-agent-acp (modes + models + config options), gemini-cli (modes + models), codex."""

from __future__ import annotations

from typing import Any

import pytest

from agh_nb.core import acp_state
from agh_nb.errors import CapabilityError
from agh_nb.events import EventType

CLAUDE: dict[str, Any] = {
    "modes": {"currentModeId": "default", "availableModes": [{"id": "default", "name": "Default"}, {"id": "plan", "name": "Plan"}]},
    "models": {"currentModelId": "default", "availableModels": [{"modelId": "default", "name": "D"}, {"modelId": "haiku", "name": "H"}]},
    "configOptions": [
        {"id": "mode", "name": "Mode", "category": "mode", "type": "select", "currentValue": "default",
         "options": [{"value": "default", "name": "Default"}, {"value": "plan", "name": "Plan"}]},
        {"id": "model", "name": "Model", "category": "model", "type": "select", "currentValue": "default",
         "options": [{"group": "g", "name": "G", "options": [{"value": "default", "name": "D"}, {"value": "haiku", "name": "H"}]}]},
    ],
}
GEMINI: dict[str, Any] = {
    "modes": {"currentModeId": "default", "availableModes": [{"id": "default", "name": "Default"}, {"id": "yolo", "name": "YOLO"}]},
    "models": {"currentModelId": "auto", "availableModels": [{"modelId": "auto", "name": "Auto"}, {"modelId": "gemini-2.5-pro", "name": "Pro"}]},
}


def test_a_mode_or_model_goes_through_the_option_of_its_category_when_there_is_one() -> None:
    changes = acp_state.plan_changes(CLAUDE, agent_name="claude", mode="plan", model="haiku")
    assert [(c.kind, c.target, c.value) for c in changes] == [("config", "mode", "plan"), ("config", "model", "haiku")]
    changes = acp_state.plan_changes(GEMINI, agent_name="gemini", mode="yolo", model="gemini-2.5-pro")
    assert [(c.kind, c.target, c.value) for c in changes] == [("mode", "yolo", "yolo"), ("model", "gemini-2.5-pro", "gemini-2.5-pro")]


def test_what_is_not_offered_is_refused_listing_what_is() -> None:
    with pytest.raises(CapabilityError, match=r"^agent 'gemini' offers no model 'gpt' \(its models: auto, gemini-2.5-pro\)$"):
        acp_state.plan_changes(GEMINI, agent_name="gemini", model="gpt")
    with pytest.raises(CapabilityError, match="offers no config options"):
        acp_state.plan_changes(GEMINI, agent_name="gemini", options={"x": "y"})


def test_updates_keep_the_state_current() -> None:
    state = acp_state.apply_update(CLAUDE, EventType.MODE_CHANGED, {"currentModeId": "plan"})
    assert state is not None and acp_state.modes(state) == ("plan", ["default", "plan"])
    options = [dict(CLAUDE["configOptions"][1], currentValue="haiku")]
    state = acp_state.apply_update(state, EventType.CONFIG_CHANGED, {"configOptions": options})
    assert state is not None and state["models"]["currentModelId"] == "haiku"
    state = acp_state.apply_update(state, EventType.COMMANDS_AVAILABLE, {"availableCommands": [{"name": "memory", "description": "M"}]})
    assert state is not None and acp_state.commands(state) == [{"name": "memory", "description": "M", "hint": None}]
    assert acp_state.apply_update(state, EventType.SYSTEM, {}) is None
    reopened = acp_state.from_opened(state, {"modes": GEMINI["modes"]})
    assert reopened["commands"] == state["commands"] and "configOptions" not in reopened
