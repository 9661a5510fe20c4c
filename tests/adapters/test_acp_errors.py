"""What an agent's error answer means (adapters.acp_errors): the protocol's codes, and the few
words agents that answer -32603 use instead."""

from __future__ import annotations

from typing import Any

import pytest

from agh_nb.adapters.acp_errors import is_auth_required, is_unknown_session


@pytest.mark.parametrize(
    ("code", "message", "data", "expected"),
    [
        (-32000, "Authentication required", None, True),
        (-32000, "Gemini API key is missing", None, True),
        (-32603, "Internal error", {"details": "Authentication required: log in first"}, True),
        (-32603, "Internal error", {"details": "demo agent refuses new sessions"}, False),
        (-32602, "Invalid params", {"details": "authentication required"}, False),
    ],
    ids=["code", "code-other-words", "internal-with-words", "internal-other", "other-code-ignores-words"],
)
def test_is_auth_required(code: int, message: str, data: Any, expected: bool) -> None:
    assert is_auth_required(code, message, data) is expected


@pytest.mark.parametrize(
    ("code", "message", "data", "expected"),
    [
        (-32002, "Resource not found", {"uri": "sess-1"}, True),
        (-32603, "Internal error", {"details": "No previous sessions found for this project."}, True),
        (-32603, "Session not found: abc", None, True),
        (-32603, "demo agent cannot load sessions today", {"details": "--fail-load"}, False),
        (-32603, "Internal error", {"details": "disk full while loading the session"}, False),
        (-32000, "Authentication required", None, False),
    ],
    ids=["resource-not-found", "gemini-no-previous-sessions", "session-not-found", "real-load-failure", "io-failure", "auth"],
)
def test_is_unknown_session(code: int, message: str, data: Any, expected: bool) -> None:
    assert is_unknown_session(code, message, data) is expected
