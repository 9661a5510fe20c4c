"""Per-session files: ``sessions/<session_id>/meta.json`` (the resume record) and the ledger
``sessions/<workspace_id or _unbound>/<session_id>/ledger.jsonl`` (SPEC 1, 2).

Owns: atomic write and read of meta.json, where the ledger lives, writing it (one at a time in
this process), and the ``ledger.pending`` marker: a stopped session whose ledger a host shutdown
had no time for is marked, and the next host start writes it (``pending_ledgers``). Blocking file
I/O; callers on the loop use ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path

from agh_nb.core.ledger import write_ledger
from agh_nb.core.private import make_private_dirs
from agh_nb.core.ports import EventStore
from agh_nb.core.record import SessionRecord
from agh_nb.events import EventQuery


def session_dir(home: Path, session_id: str) -> Path:
    """Return the session's directory (not created)."""
    return home / "sessions" / session_id


def make_session_dir(home: Path, session_id: str) -> Path:
    """Create the session's directory (and ``sessions/``) owner-only; returns it."""
    return make_private_dirs(session_dir(home, session_id))


def write_meta(home: Path, record: SessionRecord) -> Path:
    """Atomically write meta.json for ``record`` (0600) and return its path."""
    directory = make_session_dir(home, record.id)
    path = directory / "meta.json"
    tmp = directory / f".meta.json.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(record.to_dict(), fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def read_meta(home: Path, session_id: str) -> SessionRecord | None:
    """Return the record in meta.json, or None when absent or unreadable."""
    path = session_dir(home, session_id) / "meta.json"
    try:
        return SessionRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError):
        return None


def ledger_path(home: Path, record: SessionRecord) -> Path:
    """Return where the session's read-only ledger lives."""
    return home / "sessions" / (record.workspace_id or "_unbound") / record.id / "ledger.jsonl"


LEDGER_PENDING = "ledger.pending"
"""Marker in ``sessions/<session_id>/``: the session stopped but its ledger is not written yet."""

# One ledger at a time: a late catch-up of an old ledger must not land over the one a later stop
# of the same (resumed) session has just written.
_LEDGER_LOCK = threading.Lock()


def write_session_ledger(home: Path, record: SessionRecord, store: EventStore, *, only_pending: bool = False) -> str | None:
    """(Re)write the ledger of a stopped session from its stored events and clear its pending
    marker; returns the digest.

    ``only_pending``: write only if the session is still marked (a catch-up); None when it is not.
    """
    marker = session_dir(home, record.id) / LEDGER_PENDING
    with _LEDGER_LOCK:
        if only_pending and not marker.exists():
            return None
        events = store.query_events(record.id, EventQuery())
        digest = write_ledger(ledger_path(home, record), events)
        with contextlib.suppress(FileNotFoundError):
            marker.unlink()
        return digest


def mark_ledger_pending(home: Path, session_id: str) -> None:
    """Mark a stopped session whose ledger is left for later (owner-only, empty)."""
    path = make_session_dir(home, session_id) / LEDGER_PENDING
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def pending_ledgers(home: Path) -> list[str]:
    """The ids of sessions marked ``ledger.pending``, oldest mark first."""
    marks = []
    for path in (home / "sessions").glob(f"*/{LEDGER_PENDING}"):
        with contextlib.suppress(OSError):
            marks.append((path.stat().st_mtime, path.parent.name))
    return [session_id for _, session_id in sorted(marks)]
