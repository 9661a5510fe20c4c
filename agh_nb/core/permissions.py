"""Permission policy (SPEC 5): static decisions by mode and mapping a decision to an agent's option.

Owns: the decision vocabulary, ``static_decision`` and ``choose_option``. Pure functions.
"""

from __future__ import annotations

from agh_nb.events import JSON

DECISIONS = ("allow-once", "allow-always", "reject-once", "reject-always")
READ_KINDS = frozenset({"read", "search", "fetch"})

# Closest-option preference for each decision, by ACP PermissionOptionKind.
_PREFERENCE = {
    "allow-once": ("allow_once", "allow_always"),
    "allow-always": ("allow_always", "allow_once"),
    "reject-once": ("reject_once", "reject_always"),
    "reject-always": ("reject_always", "reject_once"),
}


# SPEC 5 static coverage of the client methods agents call on us.
_ALLOWED_OPERATIONS = {
    "deny-all": frozenset(),
    "approve-reads": frozenset({"fs/read_text_file"}),
    "approve-all": frozenset({"fs/read_text_file", "fs/write_text_file", "terminal/create"}),
}


def operation_allowed(mode: str, operation: str) -> bool:
    """Return whether ``mode`` lets the agent call ``operation`` (fs/read_text_file, ...)."""
    return operation in _ALLOWED_OPERATIONS.get(mode, frozenset())


def static_decision(mode: str, tool_kind: str | None) -> str | None:
    """Decide a permission request from the mode alone, or None when the user must decide.

    ``approve-all`` allows once; ``deny-all`` rejects once; ``approve-reads`` allows reads
    and leaves everything else pending.
    """
    if mode == "approve-all":
        return "allow-once"
    if mode == "deny-all":
        return "reject-once"
    if (tool_kind or "") in READ_KINDS:
        return "allow-once"
    return None


def request_paths(tool_call: JSON) -> list[str]:
    """Return every path a permission request touches: its locations and its diffs' paths."""
    paths: list[str] = []
    for location in tool_call.get("locations") or []:
        if isinstance(location, dict) and location.get("path"):
            paths.append(str(location["path"]))
    for item in tool_call.get("content") or []:
        if isinstance(item, dict) and item.get("type") == "diff" and item.get("path"):
            paths.append(str(item["path"]))
    return list(dict.fromkeys(paths))


def choose_option(decision: str, options: list[JSON]) -> str | None:
    """Return the option id the agent offered that is closest to ``decision`` (None: cancelled)."""
    by_kind: dict[str, str] = {}
    for option in options:
        by_kind.setdefault(str(option.get("kind")), str(option.get("optionId")))
    for kind in _PREFERENCE[decision]:
        if kind in by_kind:
            return by_kind[kind]
    return None
