"""Permission policy (SPEC 5): static decisions by mode and mapping a decision to an agent's option.

Owns: the decision vocabulary, ``static_decision`` and ``choose_option``. Pure functions.
"""

from __future__ import annotations

from agh_nb.events import JSON

DECISIONS = ("allow-once", "allow-always", "reject-once", "reject-always")
READ_KINDS = frozenset({"read", "search", "fetch", "think"})

# Closest-option preference for each decision, by ACP PermissionOptionKind.
_PREFERENCE = {
    "allow-once": ("allow_once", "allow_always"),
    "allow-always": ("allow_always", "allow_once"),
    "reject-once": ("reject_once", "reject_always"),
    "reject-always": ("reject_always", "reject_once"),
}


def static_decision(mode: str, tool_kind: str | None) -> str:
    """Decide a request from the mode alone: approve-all allows, deny-all rejects, reads pass.

    Under ``approve-reads`` a non-read request would be pending for the user; until interactive
    approvals exist it is rejected once, which is the timeout outcome the SPEC prescribes.
    """
    if mode == "approve-all":
        return "allow-once"
    if mode == "approve-reads" and (tool_kind or "") in READ_KINDS:
        return "allow-once"
    return "reject-once"


def choose_option(decision: str, options: list[JSON]) -> str | None:
    """Return the option id the agent offered that is closest to ``decision`` (None: cancelled)."""
    by_kind: dict[str, str] = {}
    for option in options:
        by_kind.setdefault(str(option.get("kind")), str(option.get("optionId")))
    for kind in _PREFERENCE[decision]:
        if kind in by_kind:
            return by_kind[kind]
    return None
