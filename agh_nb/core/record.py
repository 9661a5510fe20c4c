"""The session record (SPEC 1): what meta.json, the ``sessions`` table and every JSON surface hold.

Owns: ``SessionRecord`` and ``Failure`` (frozen values) and their JSON form. Imports only
``core.state`` and ``events``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agh_nb.core.state import FailureKind, SessionState, StopReason
from agh_nb.events import JSON, format_timestamp

SUMMARY_LIMIT = 2000


@dataclass(frozen=True)
class Failure:
    """Why a session failed: ``{kind, summary, crash_bundle_path, code}``; summary bounded and
    redacted; ``code`` is the JSON-RPC error code when an agent's error caused the failure."""

    kind: FailureKind
    summary: str
    crash_bundle_path: str | None = None
    code: int | None = None

    def to_dict(self) -> JSON:
        """Return the SPEC's JSON form of the failure (``code`` only when an agent's error caused it)."""
        doc: JSON = {
            "kind": self.kind.value,
            "summary": self.summary,
            "crash_bundle_path": self.crash_bundle_path,
        }
        if self.code is not None:
            doc["code"] = self.code
        return doc

    @classmethod
    def from_dict(cls, data: JSON | None) -> Failure | None:
        """Rebuild a failure from its JSON form (None stays None)."""
        if not data:
            return None
        return cls(
            kind=FailureKind(data["kind"]),
            summary=str(data.get("summary", "")),
            crash_bundle_path=data.get("crash_bundle_path"),
            code=data["code"] if isinstance(data.get("code"), int) else None,
        )


def bound_summary(text: str, limit: int = SUMMARY_LIMIT) -> str:
    """Cap a failure summary to ``limit`` characters and one logical paragraph."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class SessionRecord:
    """One session's metadata, field names exactly as the SPEC spells them."""

    id: str
    name: str | None
    agent_name: str
    type: str
    workspace_id: str
    workspace_path: str
    permissions: str
    state: SessionState
    created_at: datetime
    updated_at: datetime
    stop_reason: StopReason | None = None
    stop_detail: str | None = None
    failure: Failure | None = None
    acp_session_id: str | None = None
    acp_caps: JSON = field(default_factory=dict)
    host_pid: int | None = None
    last_presence_at: datetime | None = None
    """When the host running the session last said it is alive (its heartbeat, SPEC 3): metadata
    only, never an event. None for a session no host has run since this field existed."""
    parent_id: str | None = None
    """Lineage: the AGH session this one was forked from (``session fork``)."""
    acp_state: JSON = field(default_factory=dict)
    """What the agent said about its ACP session, kept current by its updates: ``modes``
    (``currentModeId``, ``availableModes``), ``models`` (``currentModelId``, ``availableModels``),
    ``configOptions`` and ``commands`` (``availableCommands``), each in the wire form received.
    Empty for sessions older than this field."""
    sandboxed: bool = False
    """True when the agent (and its terminals) last ran inside the sandbox (bubblewrap); False
    for one that ran unconfined, or never started, or was recorded before this field existed."""

    def replace(self, **changes: Any) -> SessionRecord:
        """Return a copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> JSON:
        """Return the JSON form used by meta.json, ``-o json`` and HTTP."""
        return {
            "id": self.id,
            "name": self.name,
            "agent_name": self.agent_name,
            "type": self.type,
            "workspace_id": self.workspace_id,
            "workspace_path": self.workspace_path,
            "permissions": self.permissions,
            "state": self.state.value,
            "stop_reason": self.stop_reason.value if self.stop_reason else None,
            "stop_detail": self.stop_detail,
            "failure": self.failure.to_dict() if self.failure else None,
            "acp_session_id": self.acp_session_id,
            "acp_caps": self.acp_caps,
            "created_at": format_timestamp(self.created_at),
            "updated_at": format_timestamp(self.updated_at),
            "host_pid": self.host_pid,
            "last_presence_at": format_timestamp(self.last_presence_at) if self.last_presence_at else None,
            "parent_id": self.parent_id,
            "acp_state": self.acp_state,
            "sandboxed": self.sandboxed,
        }

    @classmethod
    def from_dict(cls, data: JSON) -> SessionRecord:
        """Rebuild a record from its JSON form."""
        return cls(
            id=data["id"],
            name=data.get("name"),
            agent_name=data["agent_name"],
            type=data.get("type") or "user",
            workspace_id=data["workspace_id"],
            workspace_path=data["workspace_path"],
            permissions=data["permissions"],
            state=SessionState(data["state"]),
            created_at=_parse_ts(data["created_at"]),
            updated_at=_parse_ts(data["updated_at"]),
            stop_reason=StopReason(data["stop_reason"]) if data.get("stop_reason") else None,
            stop_detail=data.get("stop_detail"),
            failure=Failure.from_dict(data.get("failure")),
            acp_session_id=data.get("acp_session_id"),
            acp_caps=dict(data.get("acp_caps") or {}),
            host_pid=data.get("host_pid"),
            last_presence_at=_parse_ts(data["last_presence_at"]) if data.get("last_presence_at") else None,
            parent_id=data.get("parent_id"),
            acp_state=dict(data.get("acp_state") or {}),
            sandboxed=bool(data.get("sandboxed") or False),
        )


def _parse_ts(value: str | datetime) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
