"""What an agent's JSON-RPC error answer means, decided in one place.

Owns: ``is_auth_required`` and ``is_unknown_session``. The protocol gives each condition a
code -- -32000 "authentication required", -32002 "resource not found" -- and most agents use
it. Some answer -32603 (internal error) for the same conditions; for those, and only those, a
short list of phrases in the error's message and ``data`` decides. Every phrase is here, next to
the agent that needs it. Pure: imports nothing third-party.
"""

from __future__ import annotations

import re
from typing import Any

AUTH_REQUIRED = -32000
RESOURCE_NOT_FOUND = -32002
INTERNAL_ERROR = -32603

_AUTH_PHRASES = re.compile(
    r"authentication required|not authenticated|api key is missing|missing api key|please log ?in|login required",
    re.IGNORECASE,
)
"""Seen as -32603 text from agents that do not use -32000 for a missing login or key."""

_UNKNOWN_SESSION_PHRASES = re.compile(
    r"no previous sessions? found"  # gemini-cli 0.61.0, session/load of a session it never saved
    r"|session (?:\S+ )?not found"  # "Session not found", "session abc not found"
    r"|unknown session|no such session",
    re.IGNORECASE,
)
"""Seen as -32603 text from agents that do not use -32002 for a session they do not know."""


def _texts(message: str, data: Any) -> str:
    parts = [message]
    if isinstance(data, dict):
        parts += [str(v) for k, v in data.items() if k in ("details", "message", "reason", "error") and v]
    elif isinstance(data, str):
        parts.append(data)
    return " ".join(parts)


def is_auth_required(code: int, message: str, data: Any) -> bool:
    """True when the error says the agent needs authentication first."""
    if code == AUTH_REQUIRED:
        return True
    return code == INTERNAL_ERROR and bool(_AUTH_PHRASES.search(_texts(message, data)))


def is_unknown_session(code: int, message: str, data: Any) -> bool:
    """True when a ``session/load`` or ``session/resume`` error says the agent does not know
    the session (so a fresh session is the right fallback, not a failed resume)."""
    if code == RESOURCE_NOT_FOUND:
        return True
    return code == INTERNAL_ERROR and bool(_UNKNOWN_SESSION_PHRASES.search(_texts(message, data)))
