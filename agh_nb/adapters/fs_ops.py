"""Text-file reads and writes done for an agent (``fs/read_text_file``, ``fs/write_text_file``).

Owns: line-window reads with a byte cap, and atomic writes that keep the file's mode. Pure stdlib
plus ``core.boundary``; must not import acp, duckdb, core.session, runtime or kernel. The
permission mode is checked by the caller first; the workspace boundary is applied here again, by
opening the path with ``core.boundary``'s race-free openers (each component relative to the
directory before it, symlinks resolved by us), so a path swapped after the caller's check can
never lead outside. Both functions block: callers on the event loop use ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path
from typing import BinaryIO

from agh_nb.core.boundary import ATTEMPTS, open_file_in_workspace, open_parent_in_workspace
from agh_nb.errors import PathOutsideWorkspaceError

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
# Lines are skipped and collected in pieces of at most this size, so one gigantic line (a
# minified bundle, a binary blob) never has to sit in memory whole just to be counted.
_CHUNK = 1024 * 1024


def read_text_file(
    root: Path,
    path: str | Path,
    *,
    line: int | None,
    limit: int | None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> str:
    """Return a file's text, or the window of ``limit`` lines starting at line ``line``.

    Line endings are kept as they are in the file; bytes that are not UTF-8 become U+FFFD.
    A start line past the end of the file gives ``""``.

    Args:
        root: the session's workspace; the file must resolve inside it.
        path: the file, absolute or relative to ``root`` (normally the path the boundary
            check resolved).
        line: 1-based first line to return; None (and 0, which the ACP schema lets through) means 1.
        limit: how many lines to return; None means all remaining lines, 0 means none.
        max_bytes: the most bytes this call will return; guards memory and the agent's context.

    Returns:
        The decoded text.

    Raises:
        PathOutsideWorkspaceError: the path resolves outside ``root`` when it is opened.
        ValueError: ``line``/``limit``/``max_bytes`` out of range, or the requested text is larger
            than ``max_bytes`` (the message suggests asking for fewer lines).
        FileNotFoundError, IsADirectoryError, PermissionError, OSError: as the OS reports them
            (``OSError`` also for a FIFO or a device: only regular files are read).
    """
    # The ACP schema says "1-based" but allows 0 (ge=0); 0 is read as "from the start" rather than
    # failing an agent whose request is valid on the wire.
    _check_int("line", line, minimum=0)
    _check_int("limit", limit, minimum=0)
    _check_int("max_bytes", max_bytes, minimum=0)
    fd, resolved = open_file_in_workspace(root, path)
    with os.fdopen(fd, "rb") as fh:
        start = max(line or 1, 1)
        if start == 1 and limit is None:
            data = fh.read(max_bytes + 1)
        else:
            data = _read_window(fh, start=start, limit=limit, max_bytes=max_bytes)
    if len(data) > max_bytes:
        raise ValueError(
            f"{resolved} holds more than {max_bytes} bytes in the requested range; ask for fewer lines with line/limit"
        )
    return data.decode("utf-8", errors="replace")


def write_text_file(root: Path, path: str | Path, content: str) -> Path:
    """Replace a file's content with ``content`` (UTF-8, newlines untouched), atomically.

    Missing parent directories are created. The new content goes to a temporary file in the same
    directory which then replaces the target (``renameat`` within the directory descriptor the
    boundary walk opened), so readers see the old file or the new one, never half of it. An
    existing file keeps its permission bits; a new one gets the usual ``0o666`` minus the umask.
    A symlinked target (inside the workspace) stays a symlink: its target is replaced.

    Args:
        root: the session's workspace; the file must resolve inside it.
        path: the file, absolute or relative to ``root``.
        content: the full new text.

    Returns:
        The resolved path written.

    Raises:
        PathOutsideWorkspaceError: the path resolves outside ``root`` when it is opened.
        UnicodeEncodeError: ``content`` holds lone surrogates (checked before anything is created).
        OSError: as the OS reports it (the temporary file is removed on failure).
    """
    data = content.encode("utf-8")  # fail before touching the disk
    for _ in range(ATTEMPTS):
        directory, name, resolved = open_parent_in_workspace(root, path, create=True)
        try:
            try:
                st = os.stat(name, dir_fd=directory, follow_symlinks=False)
            except FileNotFoundError:
                mode: int | None = None
            else:
                if stat.S_ISLNK(st.st_mode):
                    continue  # became a symlink after the walk: resolve it again
                if stat.S_ISDIR(st.st_mode):
                    raise IsADirectoryError(f"{resolved} is a directory")
                mode = stat.S_IMODE(st.st_mode)
            _replace(directory, name, data, mode)
            return resolved
        finally:
            os.close(directory)
    raise PathOutsideWorkspaceError(
        f"invalid path '{path}': it kept changing while it was being written", path=str(path), reason="changed"
    )


def _replace(directory: int, name: str, data: bytes, mode: int | None) -> None:
    """Write ``data`` to a temporary file in ``directory`` and rename it over ``name``."""
    # A short name of our own: ".<name>.<hex>.tmp" would pass NAME_MAX for a long ``name``.
    tmp = f".agh-{secrets.token_hex(6)}.tmp"
    # A new file is created 0o666 so the kernel applies the umask for us (reading the umask is
    # racy across threads). Replacing a file: start private, then take its mode before any byte
    # is written, so a 0600 file's new content is never briefly readable by others.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o666 if mode is None else 0o600, dir_fd=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, name, src_dir_fd=directory, dst_dir_fd=directory)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=directory)
        raise
    with contextlib.suppress(OSError):  # durability of the rename; some file systems refuse it
        os.fsync(directory)


def _read_window(fh: BinaryIO, *, start: int, limit: int | None, max_bytes: int) -> bytes:
    """Skip ``start - 1`` lines, then collect up to ``limit`` lines and at most ``max_bytes + 1`` bytes."""
    # Binary readline splits on b"\n" only, so "\r\n" files count lines the same way and keep
    # their endings; a lone "\r" (old Mac) is not a line break, as in most editors' line numbers.
    skipped = 0
    while skipped < start - 1:
        piece = fh.readline(_CHUNK)
        if not piece:
            return b""
        if piece.endswith(b"\n"):
            skipped += 1
    parts: list[bytes] = []
    size = 0
    taken = 0
    while limit is None or taken < limit:
        # One byte over the cap is enough for the caller to know the cap was exceeded.
        piece = fh.readline(min(_CHUNK, max_bytes + 1 - size))
        if not piece:
            break
        parts.append(piece)
        size += len(piece)
        if size > max_bytes:
            break
        if piece.endswith(b"\n"):
            taken += 1
    return b"".join(parts)


def _check_int(name: str, value: int | None, *, minimum: int) -> None:
    """Refuse a non-integer or too-small argument with a message naming it."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


