"""HTTP errors of the agh_nb API: the AghError -> status table and the JSON error body.

Owns: ``STATUS_BY_ERROR`` (docs/http-api.md's table), ``ApiError`` (a tornado ``HTTPError`` whose
body is ``{"error": {"type", "message", ...}}``), ``api_error`` (an ``AghError`` -> ``ApiError``),
``error_body`` (what ``write_error`` sends for any exception). Bodies never carry exception text
from third-party code, tracebacks or secrets: an ``AghError``'s message is ours (one line, and it
is passed through the vault redactor again); anything else becomes a fixed phrase.
Must not import agh_nb.kernel.
"""

from __future__ import annotations

import http
from collections.abc import Callable
from typing import Any

from tornado.web import HTTPError

from agh_nb.errors import (
    AgentNotFoundError,
    AgentStartError,
    AghError,
    ApprovalError,
    CapabilityError,
    ConfigError,
    QueryError,
    QueueFullError,
    ResumeError,
    SecretNotFoundError,
    SessionNotActiveError,
    SessionNotFoundError,
    UsageError,
    VaultRefError,
    WorkspaceError,
)
from agh_nb.events import JSON

MESSAGE_LIMIT = 1000
"""Longest message a body carries (an AghError's message is one line; this is a backstop)."""

STATUS_BY_ERROR: tuple[tuple[type[AghError], int], ...] = (
    (QueryError, 400),  # a StoreError, but the user's query: before any StoreError entry
    (UsageError, 400),
    (VaultRefError, 400),
    (ConfigError, 400),
    (WorkspaceError, 400),
    (SessionNotFoundError, 404),
    (AgentNotFoundError, 404),
    (SecretNotFoundError, 404),
    (SessionNotActiveError, 409),
    (ApprovalError, 409),
    (ResumeError, 409),
    (QueueFullError, 409),
    (CapabilityError, 409),  # the agent does not offer it: the message lists what it does
    (AgentStartError, 422),
)
"""Status of each AghError class (first match wins; a subclass before its base); any other
AghError (``StoreError``, ``VaultKeyError``, ...: not the caller's mistake) is a 500."""

PUBLIC_FIELDS = ("session_id", "request_id", "turn_id", "ref")
"""Error fields that may be echoed in a body (identifiers, never values)."""

INTERNAL_MESSAGE = "internal error in the agh_nb server extension; the server log has the details"

_HINTS = {
    401: "authentication required: send 'Authorization: token <token>' (or log in)",
    403: "forbidden: send 'Authorization: token <token>' (cookie sessions also need the _xsrf token)",
    404: "no such agh_nb API route",
    405: "method not allowed on this agh_nb API route",
}


def status_for(error: AghError) -> int:
    """Return the HTTP status of an ``AghError`` (docs/http-api.md)."""
    for cls, status in STATUS_BY_ERROR:
        if isinstance(error, cls):
            return status
    return 500


class ApiError(HTTPError):
    """An HTTP error answered as ``{"error": {"type": ..., "message": ..., <fields>}}``.

    Args:
        status: the HTTP status.
        error_type: the ``AghError`` class name (or a status phrase such as ``NotFound``).
        message: one line for the client; must not hold third-party exception text or secrets.
        fields: identifiers to include (``session_id``...).
    """

    def __init__(self, status: int, error_type: str, message: str, **fields: Any) -> None:
        super().__init__(status, "%s", one_line(message))
        self.error_type = error_type
        self.message = one_line(message)
        self.fields = fields

    def body(self) -> JSON:
        """Return the JSON body."""
        error: JSON = {"type": self.error_type, "message": self.message}
        error.update({k: v for k, v in self.fields.items() if v is not None})
        return {"error": error}


def api_error(error: AghError, redact: Callable[[str], str] = str) -> ApiError:
    """Turn an ``AghError`` into the ``ApiError`` of its status (raise it ``from`` the cause)."""
    fields = {k: error.fields[k] for k in PUBLIC_FIELDS if isinstance(error.fields.get(k), str)}
    return ApiError(status_for(error), type(error).__name__, redact(str(error)), **fields)


def bad_request(message: str, **fields: Any) -> ApiError:
    """A 400 for a malformed body or a bad query argument (typed ``UsageError``)."""
    return ApiError(400, UsageError.__name__, message, **fields)


def not_found(message: str, **fields: Any) -> ApiError:
    """A 404 that is not about a session (an unknown turn or route)."""
    return ApiError(404, "NotFound", message, **fields)


def error_body(status: int, error: BaseException | None) -> JSON:
    """The JSON body ``write_error`` sends for ``error`` (any exception, or None)."""
    if isinstance(error, ApiError):
        return error.body()
    if status >= 500 and not isinstance(error, HTTPError):
        return {"error": {"type": "InternalError", "message": INTERNAL_MESSAGE}}
    return {"error": {"type": phrase_type(status), "message": _HINTS.get(status, _phrase(status))}}


def phrase_type(status: int) -> str:
    """``404`` -> ``NotFound``: the error type of a plain HTTP status."""
    return _phrase(status).replace(" ", "").replace("-", "")


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def one_line(text: str) -> str:
    """Collapse whitespace to one line and cap its length."""
    text = " ".join(str(text).split())
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"
