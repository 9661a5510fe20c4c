"""Collaborators the core takes as keyword arguments so tests can be deterministic: clock and ids."""

from __future__ import annotations

import secrets
from datetime import datetime, timezone


class SystemClock:
    """The real UTC clock."""

    def now(self) -> datetime:
        """Return the current aware UTC time."""
        return datetime.now(timezone.utc)


class IdGenerator:
    """Random, never-reused identifiers with the SPEC's prefixes."""

    def session_id(self) -> str:
        """Return a new AGH session id (``sess_`` + 16 hex digits)."""
        return "sess_" + secrets.token_hex(8)

    def turn_id(self) -> str:
        """Return a new turn id (``turn_`` + 12 hex digits)."""
        return "turn_" + secrets.token_hex(6)

    def request_id(self) -> str:
        """Return a new permission request id (``req_`` + 10 hex digits)."""
        return "req_" + secrets.token_hex(5)
