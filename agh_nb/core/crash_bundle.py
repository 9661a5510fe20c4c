"""Crash bundles (SPEC 2): one owner-only, bounded, redacted JSON file per session failure.

Owns: the bundle's schema (``agh.session_crash_bundle.v1``), its file name, and
``write_crash_bundle``, which builds and writes it (blocking: call it off the event loop). The
caller chooses the directory (``$AGH_HOME/logs/crash-bundles/``) and passes the redaction
function; every string that goes into the bundle passes through it.
Imports only ``core.ports``, ``core.record`` and ``events``; never acp, duckdb, pyarrow,
cryptography, IPython, widgets or tornado.

Document shape::

    {"schema": "agh.session_crash_bundle.v1", "created_at": "...Z",
     "session": {"id", "name", "type", "agent_name", "state", "workspace_id", "workspace_path",
                 "acp_session_id"},
     "provider": {"agent_name", "agent_info", "auth_methods"},
     "failure": {"kind", "summary", "code"},
     "process": {"pid", "exit_code", "signal"},
     "error_text": str | null,
     "stderr_tail": str,
     "truncated": {"stderr_tail": bool, "error_text": bool, "agent_info": bool}}
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agh_nb.core.ports import ExitInfo
from agh_nb.core.private import make_private_dirs
from agh_nb.core.record import SessionRecord, bound_summary
from agh_nb.events import JSON, format_timestamp

CRASH_BUNDLE_SCHEMA = "agh.session_crash_bundle.v1"
"""The ``schema`` value of every crash bundle."""

DEFAULT_MAX_BYTES = 64 * 1024
"""Default bound on a bundle file's size."""

STDERR_TAIL_BYTES = 16 * 1024
"""At most this many bytes of the end of the agent's stderr are kept."""

ERROR_TEXT_CHARS = 8 * 1024
"""At most this many characters of the error text are kept."""

AGENT_INFO_CHARS = 2 * 1024
"""An ``agent_info`` whose JSON is longer than this is kept as a cut JSON string."""

MIN_MAX_BYTES = 4 * 1024
"""The smallest ``max_bytes`` accepted: room for identity, failure and process metadata."""

IDENTITY_CHARS = 64
"""Last resort when only identity is left and it does not fit: every identity string is cut to this."""

FILE_MODE = 0o600
DIR_MODE = 0o700

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def write_crash_bundle(
    directory: Path,
    *,
    record: SessionRecord,
    failure_kind: str,
    summary: str,
    exit_info: ExitInfo | None,
    stderr_tail: str,
    error_text: str | None,
    redact: Callable[[str], str],
    now: datetime,
    max_bytes: int = DEFAULT_MAX_BYTES,
    code: int | None = None,
) -> Path:
    """Write a crash bundle for one failure of ``record``'s session; blocking.

    Every string is redacted *before* it is cut, so a cut can never leave part of a secret behind.
    Then the stderr tail keeps its last ``STDERR_TAIL_BYTES`` and the error text its first
    ``ERROR_TEXT_CHARS``; if the file would still exceed ``max_bytes``, the stderr tail shrinks
    first (its end kept), then the error text, then ``agent_info`` is dropped, and as a last
    resort every identity string is cut to ``IDENTITY_CHARS``. ``truncated`` says what was cut.

    Args:
        directory: where bundles go; created (0700) when missing.
        record: the failing session.
        failure_kind: the failure kind (a ``FailureKind`` value).
        summary: the failure summary.
        exit_info: how the agent process ended, if known.
        stderr_tail: captured agent stderr (``exit_info.stderr_tail`` is used when empty).
        error_text: the error text, if any.
        redact: the redaction function (``Redactor.redact``).
        now: creation time (``created_at`` and the file name).
        max_bytes: bound on the file's size; at least ``MIN_MAX_BYTES``.
        code: the JSON-RPC code of the agent's error that caused the failure, if one did.

    Returns:
        The path of the new file: ``<session_id>-<UTC time>-<kind>.json``, mode 0600 (a ``-N``
        suffix is added if that name exists; an existing bundle is never overwritten).

    Raises:
        ValueError: when ``max_bytes`` is below ``MIN_MAX_BYTES`` (or, pathologically, when the
            identity cut to ``IDENTITY_CHARS`` per string still does not fit).
        OSError: when the directory or the file cannot be written.
    """
    if max_bytes < MIN_MAX_BYTES:
        raise ValueError(f"max_bytes must be at least {MIN_MAX_BYTES}, got {max_bytes}")
    stderr = redact(stderr_tail or (exit_info.stderr_tail if exit_info else "") or "")
    error = redact(error_text) if error_text is not None else None
    bundle = build_crash_bundle(
        record=record,
        failure_kind=failure_kind,
        summary=summary,
        exit_info=exit_info,
        redact=redact,
        now=now,
        code=code,
    )
    data = _bounded(bundle, stderr, error, max_bytes)
    _ensure_directory(directory)
    stem = f"{_safe(record.id)}-{now.astimezone(timezone.utc).strftime('%Y%m%dT%H%M%S.%fZ')}-{_safe(failure_kind)}"
    return _create_exclusive(directory, stem, data)


def build_crash_bundle(
    *,
    record: SessionRecord,
    failure_kind: str,
    summary: str,
    exit_info: ExitInfo | None,
    redact: Callable[[str], str],
    now: datetime,
    code: int | None = None,
) -> JSON:
    """Return the bundle's identity, failure and process parts (redacted), without text payloads.

    ``write_crash_bundle`` adds ``error_text``, ``stderr_tail`` and ``truncated``.
    """
    caps = record.acp_caps if isinstance(record.acp_caps, dict) else {}
    agent_info = caps.get("agent_info", caps.get("agentInfo"))
    methods = caps.get("authMethods")
    methods = methods if isinstance(methods, list) else []
    # What each login needs, never more: a method's _meta may hold anything.
    auth_methods = [
        {k: m[k] for k in ("id", "name", "type", "vars", "args") if k in m} for m in methods if isinstance(m, dict)
    ]
    bundle: JSON = {
        "schema": CRASH_BUNDLE_SCHEMA,
        "created_at": format_timestamp(now),
        "session": {
            "id": record.id,
            "name": record.name,
            "type": record.type,
            "agent_name": record.agent_name,
            "state": record.state.value,
            "workspace_id": record.workspace_id,
            "workspace_path": record.workspace_path,
            "acp_session_id": record.acp_session_id,
        },
        "provider": {"agent_name": record.agent_name, "agent_info": agent_info, "auth_methods": auth_methods},
        "failure": {"kind": str(failure_kind), "summary": bound_summary(redact(summary)), "code": code},
        "process": {
            "pid": exit_info.pid if exit_info else None,
            "exit_code": exit_info.returncode if exit_info else None,
            "signal": exit_info.signal if exit_info else None,
        },
    }
    redacted: JSON = _redact_json(bundle, redact)
    return redacted


def _bounded(bundle: JSON, stderr: str, error: str | None, max_bytes: int) -> bytes:
    """Add the text payloads to ``bundle`` and shrink them until the JSON fits ``max_bytes``."""
    truncated = {"stderr_tail": False, "error_text": False, "agent_info": False}
    encoded = stderr.encode("utf-8")
    if len(encoded) > STDERR_TAIL_BYTES:
        stderr = _tail(encoded, STDERR_TAIL_BYTES)
        truncated["stderr_tail"] = True
    if error is not None and len(error) > ERROR_TEXT_CHARS:
        error = error[: ERROR_TEXT_CHARS - 1] + "…"
        truncated["error_text"] = True
    provider = bundle["provider"]
    info_json = json.dumps(provider["agent_info"], ensure_ascii=False, default=str)
    if provider["agent_info"] is not None and len(info_json) > AGENT_INFO_CHARS:
        provider["agent_info"] = info_json[: AGENT_INFO_CHARS - 1] + "…"
        truncated["agent_info"] = True
    identity_cut = False
    while True:
        document = {**bundle, "error_text": error, "stderr_tail": stderr, "truncated": truncated}
        data = (json.dumps(document, ensure_ascii=False, indent=1, default=str) + "\n").encode("utf-8")
        excess = len(data) - max_bytes
        if excess <= 0:
            return data
        # Escaping makes JSON longer than the text (a control character costs 6 bytes), so cut in
        # proportion to the text's encoded size; every round cuts at least one unit, so it ends.
        if stderr:
            raw = stderr.encode("utf-8")
            stderr = _tail(raw, len(raw) - _share(excess, len(raw), _json_size(stderr)))
            truncated["stderr_tail"] = True
        elif error:
            error = error[: len(error) - _share(excess, len(error), _json_size(error))]
            truncated["error_text"] = True
        elif provider["agent_info"] is not None:
            provider["agent_info"] = None
            truncated["agent_info"] = True
        elif not identity_cut:
            # Only identity is left and it still does not fit (huge paths or summary): cut every
            # string to a short prefix rather than break the bound.
            identity_cut = True
            for part in ("session", "provider", "failure"):
                bundle[part] = {
                    key: _clip(value, IDENTITY_CHARS) if isinstance(value, str) else value
                    for key, value in bundle[part].items()
                }
        else:
            raise ValueError(f"a crash bundle's identity alone exceeds max_bytes={max_bytes}")


def _json_size(text: str) -> int:
    return len(json.dumps(text, ensure_ascii=False).encode("utf-8"))


def _share(excess: int, units: int, encoded: int) -> int:
    """How many of ``units`` to cut to save ``excess`` bytes of an ``encoded``-byte JSON string."""
    return max(1, -(-(excess + 16) * units // max(encoded, 1)))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _tail(data: bytes, limit: int) -> str:
    """The last ``limit`` bytes of ``data`` as text (a character split by the cut is dropped)."""
    if limit <= 0:
        return ""
    return data[-limit:].decode("utf-8", errors="ignore")


def _redact_json(value: Any, redact: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {(redact(k) if isinstance(k, str) else k): _redact_json(v, redact) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_json(item, redact) for item in value]
    return value


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("_.")[:80] or "unknown"


def _ensure_directory(directory: Path) -> None:
    if directory.is_dir():
        return
    # Every directory made on the way (``logs/`` too) is owner-only, whatever the umask.
    make_private_dirs(directory)


def _create_exclusive(directory: Path, stem: str, data: bytes) -> Path:
    """Create a new 0600 file named after ``stem`` (never replacing one) holding ``data``."""
    for attempt in range(1000):
        path = directory / (f"{stem}.json" if attempt == 0 else f"{stem}-{attempt}.json")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileExistsError:
            continue
        try:
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), FILE_MODE)
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            raise
        return path
    raise FileExistsError(f"too many crash bundles named {stem}*.json in {directory}")
