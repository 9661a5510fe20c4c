"""The AghError tree: every error agh_nb raises on purpose.

Owns: exception classes only. Imports nothing from agh_nb.

    AghError                      base; ``str(err)`` is one line written for the user
    ├── ConfigError               config.toml or an AGENT.md is malformed (names the key/file)
    ├── AgentNotFoundError        no agent definition with that name
    ├── WorkspaceError            the workspace path is missing, not a directory, or unusable
    ├── SessionNotFoundError      no session with that id
    ├── InvalidTransitionError    a lifecycle move the state machine forbids ("from -> to"): a bug
    ├── SessionNotActiveError     prompt/approve on a session that is not ``active``
    ├── QueueFullError            the busy-input queue of a session is at its cap
    ├── StoreError                the event store cannot be opened or written
    │   ├── StoreLockedError      another live process holds the DuckDB store
    │   └── QueryError            a SQL query was refused by the guard or rejected by DuckDB
    ├── AgentStartError           spawning or handshaking with the agent failed (carries failure)
    ├── UsageError                a magic/CLI command was called with wrong words or flags
    ├── HostError                 the runtime host is not running or was closed
    ├── PathOutsideWorkspaceError an agent asked for a path that resolves outside the workspace
    ├── PermissionDeniedError     the session's permission mode blocks an operation
    ├── ApprovalError             a permission decision is unknown, late, or given twice
    ├── ResumeError               a session cannot be resumed (names the failed prerequisite)
    ├── CapabilityError           the agent does not offer what was asked (a mode, model, option,
    │                             auth method, fork, an MCP server type); names what it offers
    ├── ExportError               a Parquet export cannot be written (directory locked or unwritable)
    └── VaultError                the vault cannot be opened, read or written
        ├── VaultRefError         a ``vault:`` or ``env:`` ref is malformed or names an unknown namespace
        ├── VaultKeyError         the vault key is missing, malformed, or not the key the vault was written with
        ├── VaultTamperedError    a stored ciphertext failed authentication
        └── SecretNotFoundError   a ref names no stored secret (the ref, never a value, is named)
"""

from __future__ import annotations

from typing import Any


class AghError(Exception):
    """Base of every deliberate agh_nb error; its message is one line for the user."""

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields

    def __str__(self) -> str:
        return self.message


class ConfigError(AghError):
    """Raised when config.toml or an AGENT.md has an unknown key or a bad value."""


class AgentNotFoundError(AghError):
    """Raised when no agent definition with the requested name exists."""


class WorkspaceError(AghError):
    """Raised when the workspace directory does not exist or is not a directory."""


class SessionNotFoundError(AghError):
    """Raised when a session id is unknown to the store."""


class InvalidTransitionError(AghError):
    """Raised when code attempts a lifecycle transition the SPEC forbids; always a bug."""


class SessionNotActiveError(AghError):
    """Raised when an operation needs an ``active`` session and the session is not."""


class QueueFullError(AghError):
    """Raised when a prompt is sent while the session's FIFO queue is at its cap."""


class StoreError(AghError):
    """Raised when the DuckDB event store cannot be opened, read or written."""


class StoreLockedError(StoreError):
    """Raised when another live process holds the DuckDB store open for writing."""


class QueryError(StoreError):
    """Raised when a user's SQL query is refused (not a single SELECT over the store) or DuckDB
    rejects it (syntax, an unknown column, a value that cannot be shown): the user's mistake."""


class AgentStartError(AghError):
    """Raised when a session could not start; the session is left ``stopped`` with a failure."""


class UsageError(AghError):
    """Raised when a magic or CLI command is called with unknown words, flags or values."""


class HostError(AghError):
    """Raised when the runtime host is closed or cannot be reached."""


class PathOutsideWorkspaceError(AghError):
    """Raised when a path an agent asked for resolves outside the session's workspace."""


class PermissionDeniedError(AghError):
    """Raised when the session's permission mode blocks an operation outright."""


class ApprovalError(AghError):
    """Raised when a permission decision names an unknown request or comes after it was resolved."""


class ResumeError(AghError):
    """Raised when a session cannot be resumed; the message names the prerequisite that failed."""


class CapabilityError(AghError):
    """Raised when the agent does not offer what was asked: a mode, a model, a config option or
    value, an auth method, forking, or a kind of MCP server. The message lists what it offers."""


class VaultError(AghError):
    """Raised when the vault cannot be opened, read or written."""


class VaultRefError(VaultError):
    """Raised when a ``vault:``/``env:`` ref is malformed or names an unknown namespace."""


class VaultKeyError(VaultError):
    """Raised when the vault key is missing, malformed, or not the key the vault was written with."""


class VaultTamperedError(VaultError):
    """Raised when a stored ciphertext fails authentication (modified on disk)."""


class SecretNotFoundError(VaultError):
    """Raised when a ref names no stored secret; the message names the ref, never a value."""


class ExportError(AghError):
    """Raised when a Parquet export cannot be written (the directory is locked by another export,
    cannot be created, or a write failed)."""
