"""The workspace boundary: where a path an agent names really points, and whether that is inside.

Owns: ``resolve_in_workspace`` (SPEC section 5, "Workspace boundary"). Pure stdlib plus
``agh_nb.errors``; must not import acp, duckdb, or any adapter. It touches the file system only to
read (``lstat``/``readlink`` through ``os.path.realpath``), so it blocks: callers on the event
loop use ``asyncio.to_thread``.

The rule: absolute paths as given, relative ones under the workspace root; every component that
exists is resolved through symlinks; components that do not exist yet are kept as names, and a
``..`` after them steps back to the *resolved* parent, after which resolution through symlinks
resumes. The root itself is resolved the same way, and the result must be the root or lie below it.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from agh_nb.errors import PathOutsideWorkspaceError


def resolve_in_workspace(root: Path, path: str | Path) -> Path:
    """Resolve ``path`` as an agent meant it and check that it stays inside the workspace.

    Args:
        root: the session's workspace directory (may itself be reached through a symlink).
        path: what the agent sent: absolute, or relative to ``root``; it need not exist yet.

    Returns:
        The fully resolved absolute path (no symlinks in its existing part, no ``.``/``..``).
        File operations should use this path, not the one the agent sent, so that what was
        checked is what gets opened.

    Raises:
        PathOutsideWorkspaceError: when the path is empty, contains a NUL byte, runs into a symlink
            loop (message starts with ``invalid path``), or resolves outside the resolved root.
            Fields: ``path``, ``resolved`` and ``root`` (``reason`` for invalid paths).
    """
    given = os.fspath(path)
    if isinstance(given, bytes):  # os.fspath of an exotic PathLike; agents only ever send text
        given = os.fsdecode(given)
    if given == "":
        raise PathOutsideWorkspaceError("invalid path: it is empty", path=given, reason="empty")
    if "\x00" in given:
        # The OS would reject it later; refusing here keeps the error the boundary's own.
        raise PathOutsideWorkspaceError(f"invalid path {given!r}: it contains a NUL byte", path=given, reason="nul")

    real_root = _resolve(os.path.abspath(os.fspath(root)), given=os.fspath(root))
    # os.path.join keeps an absolute ``given`` as is and puts a relative one under the root.
    # No lexical normalisation before resolving: ``link/..`` means the parent of the link's
    # *target*, which only component-wise resolution gets right.
    resolved = _resolve(os.path.join(real_root, given), given=given)
    if resolved != real_root and not resolved.startswith(_with_sep(real_root)):
        raise PathOutsideWorkspaceError(
            f"path '{given}' resolves to '{resolved}', outside the workspace '{real_root}'",
            path=given,
            resolved=resolved,
            root=real_root,
        )
    return Path(resolved)


def _resolve(absolute: str, *, given: str) -> str:
    """Resolve an absolute path component by component through symlinks; see the module docstring."""
    try:
        # strict: every component exists, symlink loops raise instead of being half-resolved.
        return os.path.realpath(absolute, strict=True)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PathOutsideWorkspaceError(
                f"invalid path '{given}': too many levels of symbolic links", path=given, reason="symlink-loop"
            ) from None
    # Something is missing (or unreadable): the non-strict walk resolves the existing prefix
    # through symlinks, keeps missing names as plain names, and on ``..`` pops back to the
    # resolved parent and carries on resolving. That last part matters: the naive "resolve the
    # first existing ancestor, then normalise the tail" would let ``missing/../link_out/x`` pass
    # as ``root/link_out/x`` while creating ``missing`` makes the OS follow ``link_out``.
    # A loop met after a missing component is left partly unresolved by the non-strict walk;
    # that is harmless, because the OS cannot traverse a loop either.
    return os.path.realpath(absolute)


def _with_sep(directory: str) -> str:
    """``directory`` with exactly one trailing separator, so ``/ws`` does not contain ``/ws2``."""
    return directory if directory.endswith(os.sep) else directory + os.sep
