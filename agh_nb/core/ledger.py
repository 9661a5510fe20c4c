"""The session ledger (SPEC 2): a read-only, content-addressed JSONL copy of a stopped session's events.

Owns: the ledger's byte format (``render_ledger``), writing it idempotently and atomically
(``write_ledger``) and checking it (``verify_ledger``). Where the file lives is the caller's
business (``$AGH_HOME/sessions/<workspace_id or _unbound>/<session_id>/ledger.jsonl``).
``write_ledger`` and ``verify_ledger`` block on file I/O: call them off the event loop.
Imports only ``events``; never acp, duckdb, pyarrow, cryptography, IPython, widgets or tornado.

Format: one line per event, ascending ``sequence``, each ``\\n``-terminated. A line is the
canonical JSON (sorted keys, ``,``/``:`` separators, non-ASCII kept, UTF-8) of the event row
(``Event.to_dict()``) plus two fields:

- ``prev_hash``: the previous line's ``hash`` (``null`` on the first line);
- ``hash``: the sha256 hex digest of the line's canonical JSON *without* ``hash`` (so it covers
  ``prev_hash`` too, chaining every line to all before it).

The file's own sha256 goes to ``ledger.sha256`` beside it, in ``sha256sum`` format
(``<hex>  ledger.jsonl``), so ``sha256sum -c ledger.sha256`` checks it too. The same events always
render to the same bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agh_nb.core.files import fsync_directory
from agh_nb.core.private import FILE_MODE, READ_ONLY_MODE, make_private_dirs
from agh_nb.events import JSON, Event

LEDGER_MODE = READ_ONLY_MODE
"""File mode of the ledger and its digest: read-only, and owner-only like all of ``$AGH_HOME``."""

HASH_FIELD = "hash"
PREV_HASH_FIELD = "prev_hash"


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str)
# One encoder for every call: json.dumps with options builds a new one each time.


def canonical_json(value: Any) -> str:
    """Serialise ``value`` canonically: sorted keys, compact separators, non-ASCII kept."""
    return _CANONICAL.encode(value)


_CONTENT_KEY = '"content":'
_CONTENT_MARK = "\x00agh-ledger-content\x00"
_CONTENT_AT = _CONTENT_KEY + canonical_json(_CONTENT_MARK)


def _canonical_row(row: JSON, content: str) -> str:
    """``canonical_json(row)``, with ``content`` the canonical JSON of ``row["content"]``.

    A line is hashed without its ``hash`` and then written with it: encoding the content (most
    of a row) once for both halves the cost of a ledger. The row is encoded with a marker for
    its content and the marker replaced: ``"content":`` followed by the marker cannot occur inside
    a JSON string (its quotes would be escaped), so the one replaced is the key's value.
    """
    text = _CANONICAL.encode({**row, "content": _CONTENT_MARK})
    return text.replace(_CONTENT_AT, _CONTENT_KEY + content, 1)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def render_ledger(events: Iterable[Event]) -> tuple[bytes, str]:
    """Render events as ledger bytes.

    Args:
        events: the session's events, in any order (sorted by ``sequence``).

    Returns:
        ``(data, digest)``: the JSONL bytes and their sha256 hex digest.
    """
    lines: list[str] = []
    prev: str | None = None
    for event in sorted(events, key=lambda e: e.sequence):
        row: JSON = event.to_dict()
        content = canonical_json(row["content"])
        row[PREV_HASH_FIELD] = prev
        prev = row[HASH_FIELD] = _sha256(_canonical_row(row, content))
        lines.append(_canonical_row(row, content) + "\n")
    data = "".join(lines).encode("utf-8")
    return data, hashlib.sha256(data).hexdigest()


def digest_path(path: Path) -> Path:
    """Return where the digest of the ledger at ``path`` lives (``ledger.jsonl`` -> ``ledger.sha256``)."""
    return path.with_suffix(".sha256")


def write_ledger(path: Path, events: Iterable[Event]) -> str:
    """Write the ledger of ``events`` at ``path`` (and its digest beside it); blocking.

    Idempotent: a file that already holds exactly these bytes is left untouched (same inode, same
    mtime). A file holding other bytes (a resumed session stopped again with more events) is
    replaced atomically. Both files end read-only and owner-only (0400). The parent directory is created if needed.

    Args:
        path: the ledger file, e.g. ``.../<session_id>/ledger.jsonl``.
        events: the session's events.

    Returns:
        The ledger's sha256 hex digest.

    Raises:
        OSError: when the directory or a file cannot be written.
    """
    data, digest = render_ledger(events)
    make_private_dirs(path.parent)
    _write_readonly(path, data)
    _write_readonly(digest_path(path), f"{digest}  {path.name}\n".encode())
    return digest


def _write_readonly(path: Path, data: bytes) -> None:
    """Make ``path`` hold exactly ``data`` with mode 0400, touching nothing when it already does."""
    try:
        current = path.read_bytes()
    except FileNotFoundError:
        current = None
    if current == data:
        if (path.stat().st_mode & 0o777) != LEDGER_MODE:
            os.chmod(path, LEDGER_MODE)
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, LEDGER_MODE)
        if current is not None:
            # rename() over a read-only file works on POSIX, but not everywhere: make it writable.
            with contextlib.suppress(FileNotFoundError):
                os.chmod(path, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_directory(path.parent)


def verify_ledger(path: Path) -> bool:
    """Check a ledger: every line canonical and hashed, the chain intact, the digest matching.

    Args:
        path: the ledger file; its digest is read from ``digest_path(path)``.

    Returns:
        True when every line's ``hash`` matches its content, each ``prev_hash`` names the line
        before, sequences increase, every line is in canonical form, and the recorded digest is
        the file's sha256. False otherwise, including when either file is missing.
    """
    try:
        data = path.read_bytes()
        recorded = digest_path(path).read_text(encoding="utf-8").split()
    except (FileNotFoundError, UnicodeDecodeError):
        return False
    if not recorded or recorded[0] != hashlib.sha256(data).hexdigest():
        return False
    return _verify_lines(data)


def _verify_lines(data: bytes) -> bool:
    if data and not data.endswith(b"\n"):
        return False
    prev: str | None = None
    last_sequence: int | None = None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    # split("\n"), not splitlines(): canonical JSON keeps U+2028 and friends unescaped in strings.
    for line in text.split("\n")[:-1]:  # data ends with "\n" (checked above)
        try:
            row = json.loads(line)
        except ValueError:
            return False
        if not isinstance(row, dict) or "content" not in row:
            return False
        content = canonical_json(row["content"])
        if _canonical_row(row, content) != line:
            return False
        claimed = row.pop(HASH_FIELD, None)
        if row.get(PREV_HASH_FIELD, "missing") != prev or claimed != _sha256(_canonical_row(row, content)):
            return False
        sequence = row.get("sequence")
        if not isinstance(sequence, int) or (last_sequence is not None and sequence <= last_sequence):
            return False
        prev, last_sequence = claimed, sequence
    return True
