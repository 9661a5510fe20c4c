"""The agent's view of one ACP session: modes, models, config options and slash commands.

Owns: the ``acp_state`` of a session record (SPEC 1, 4) -- built from what ``session/new``,
``/load``, ``/resume`` or ``/fork`` answered, kept current by ``mode_changed``,
``config_changed`` and ``commands_available`` updates -- and ``plan_changes``, which turns
``--mode`` / ``--model`` / ``--option KEY=VALUE`` into the ACP calls that make them, refusing a
value the agent does not offer in one line that lists what it offers. Values stay in the wire
form the agent sent (``currentModeId``, ``configOptions``...). Pure: no I/O, no third party.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agh_nb.errors import CapabilityError
from agh_nb.events import JSON, EventType

STATE_KEYS = ("modes", "models", "configOptions")
"""What a session-opening answer may carry (``commands`` arrive only as updates)."""


@dataclass(frozen=True)
class Change:
    """One ACP call that sets something: ``kind`` is ``config`` (``session/set_config_option``),
    ``mode`` (``session/set_mode``) or ``model`` (``session/set_model``)."""

    kind: str
    target: str
    value: str | bool
    label: str
    """What the user asked for, e.g. ``mode plan``."""


def from_opened(previous: JSON, opened: JSON) -> JSON:
    """The state after a session was opened: what the agent answered replaces what it said
    before; commands (only ever sent as updates) are kept until the agent sends new ones."""
    state = {k: v for k, v in previous.items() if k == "commands"}
    for key in STATE_KEYS:
        if opened.get(key) is not None:
            state[key] = opened[key]
    return state


def apply_update(state: JSON, event_type: EventType, raw: JSON) -> JSON | None:
    """The state after one ``session/update`` (None when the update changes nothing we keep)."""
    if event_type is EventType.MODE_CHANGED and isinstance(raw.get("currentModeId"), str):
        new = copy.deepcopy(state)
        modes = new.setdefault("modes", {})
        if isinstance(modes, dict):
            modes["currentModeId"] = raw["currentModeId"]
        for option in new.get("configOptions") or []:
            if isinstance(option, dict) and option.get("category") == "mode":
                option["currentValue"] = raw["currentModeId"]
        return new
    if event_type is EventType.CONFIG_CHANGED and isinstance(raw.get("configOptions"), list):
        new = copy.deepcopy(state)
        new["configOptions"] = raw["configOptions"]
        _sync_from_options(new)
        return new
    if event_type is EventType.COMMANDS_AVAILABLE and isinstance(raw.get("availableCommands"), list):
        new = dict(state)
        new["commands"] = raw["availableCommands"]
        return new
    return None


def _sync_from_options(state: JSON) -> None:
    # An agent that reports modes (or models) both ways keeps one current value: the option's.
    mode = _option(state, category="mode")
    if mode is not None and isinstance(state.get("modes"), dict):
        state["modes"]["currentModeId"] = mode.get("currentValue")
    model = _option(state, category="model")
    if model is not None and isinstance(state.get("models"), dict):
        state["models"]["currentModelId"] = model.get("currentValue")


def _option(state: JSON, *, category: str | None = None, ident: str | None = None) -> JSON | None:
    for option in state.get("configOptions") or []:
        if not isinstance(option, dict):
            continue
        if (category is not None and option.get("category") == category) or (ident is not None and option.get("id") == ident):
            return option
    return None


def option_values(option: Mapping[str, Any]) -> list[str]:
    """The values a select option offers (groups flattened); ``true``/``false`` for a boolean."""
    if option.get("type") == "boolean":
        return ["true", "false"]
    values: list[str] = []
    for entry in option.get("options") or []:
        if not isinstance(entry, dict):
            continue
        if "group" in entry:
            values += [str(o.get("value")) for o in entry.get("options") or [] if isinstance(o, dict)]
        else:
            values.append(str(entry.get("value")))
    return values


def modes(state: JSON) -> tuple[str | None, list[str]]:
    """``(current, available)`` mode ids (from a ``mode`` config option when there is one)."""
    option = _option(state, category="mode")
    if option is not None:
        return _str(option.get("currentValue")), option_values(option)
    raw = _dict(state.get("modes"))
    ids = [str(m.get("id")) for m in raw.get("availableModes") or [] if isinstance(m, dict)]
    return _str(raw.get("currentModeId")), ids


def models(state: JSON) -> tuple[str | None, list[str]]:
    """``(current, available)`` model ids (from a ``model`` config option when there is one)."""
    option = _option(state, category="model")
    if option is not None:
        return _str(option.get("currentValue")), option_values(option)
    raw = _dict(state.get("models"))
    ids = [str(m.get("modelId")) for m in raw.get("availableModels") or [] if isinstance(m, dict)]
    return _str(raw.get("currentModelId")), ids


def commands(state: JSON) -> list[JSON]:
    """The slash commands the agent advertised: ``{name, description, hint}``."""
    out = []
    for command in state.get("commands") or []:
        if isinstance(command, dict) and command.get("name"):
            hint = _dict(command.get("input")).get("hint")
            out.append({"name": command["name"], "description": command.get("description"), "hint": hint})
    return out


def summary(state: JSON) -> JSON:
    """What ``inspect`` and the card show: current and available mode and model, the config
    options with their values, and the slash commands."""
    mode, mode_ids = modes(state)
    model, model_ids = models(state)
    options = [
        {
            "id": o.get("id"),
            "name": o.get("name"),
            "category": o.get("category"),
            "current": o.get("currentValue"),
            "values": option_values(o),
        }
        for o in state.get("configOptions") or []
        if isinstance(o, dict)
    ]
    return {
        "mode": {"current": mode, "available": mode_ids},
        "model": {"current": model, "available": model_ids},
        "config_options": options,
        "commands": commands(state),
    }


def plan_changes(
    state: JSON,
    *,
    agent_name: str,
    mode: str | None = None,
    model: str | None = None,
    options: Mapping[str, str] | None = None,
) -> list[Change]:
    """The ACP calls that set ``mode``, ``model`` and each ``options`` key.

    A mode or model is set through the agent's config option of that category when it has one
    (``session/set_config_option``, the protocol's newer way, which claude-agent-acp answers at
    once), else through ``session/set_mode`` / ``session/set_model``.

    Raises:
        CapabilityError: one line naming what the agent does not offer and what it does.
    """
    changes: list[Change] = []
    if mode is not None:
        option = _option(state, category="mode")
        current, offered = modes(state)
        _require(mode, offered, agent_name, "mode", "modes")
        changes.append(
            Change("config", str(option["id"]), mode, f"mode {mode}") if option else Change("mode", mode, mode, f"mode {mode}")
        )
    if model is not None:
        option = _option(state, category="model")
        current, offered = models(state)
        _require(model, offered, agent_name, "model", "models")
        changes.append(
            Change("config", str(option["id"]), model, f"model {model}") if option else Change("model", model, model, f"model {model}")
        )
    for key, value in (options or {}).items():
        option = _option(state, ident=key)
        if option is None:
            known = [str(o.get("id")) for o in state.get("configOptions") or [] if isinstance(o, dict)]
            raise CapabilityError(
                f"agent {agent_name!r} offers no config option {key!r} "
                + (f"(its options: {', '.join(known)})" if known else "(it offers no config options)")
            )
        offered = option_values(option)
        if option.get("type") == "boolean":
            lowered = value.strip().lower()
            if lowered not in ("true", "false"):
                raise CapabilityError(f"config option {key!r} of agent {agent_name!r} is true or false, got {value!r}")
            changes.append(Change("config", key, lowered == "true", f"option {key}={lowered}"))
        else:
            _require(value, offered, agent_name, f"value for option {key!r}", f"values of {key!r}")
            changes.append(Change("config", key, value, f"option {key}={value}"))
    return changes


def apply_change(state: JSON, change: Change, answered: list[JSON] | None) -> JSON:
    """The state once ``change`` succeeded: the config options the agent answered with, else the
    requested value set where the state keeps it (an agent need not confirm with an update)."""
    new = copy.deepcopy(state)
    if answered is not None:
        new["configOptions"] = answered
        _sync_from_options(new)
        return new
    if change.kind == "config":
        option = _option(new, ident=change.target)
        if option is not None:
            option["currentValue"] = change.value
        _sync_from_options(new)
    elif change.kind == "mode" and isinstance(new.get("modes"), dict):
        new["modes"]["currentModeId"] = change.value
    elif change.kind == "model" and isinstance(new.get("models"), dict):
        new["models"]["currentModelId"] = change.value
    return new


def _require(value: str, offered: list[str], agent_name: str, what: str, plural: str) -> None:
    if value in offered:
        return
    if not offered:
        raise CapabilityError(f"agent {agent_name!r} offers no {plural} to choose from, so {what} {value!r} cannot be set")
    raise CapabilityError(f"agent {agent_name!r} offers no {what} {value!r} (its {plural}: {', '.join(offered)})")


def _dict(value: object) -> JSON:
    return value if isinstance(value, dict) else {}


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
