"""The workspace boundary: where a path an agent names really points, and opening it there.

Owns: ``resolve_in_workspace`` (the check, SPEC 5 "Workspace boundary") and the race-free
openers the file operations use (``open_file_in_workspace``, ``open_parent_in_workspace``).
Pure stdlib plus ``agh_nb.errors``; must not import acp, duckdb, or any adapter. Blocking:
callers on the event loop use ``asyncio.to_thread``.

The rule: absolute paths as given, relative ones under the workspace root; every component that
exists is resolved through symlinks; components that do not exist yet are kept as names, and a
``..`` after them steps back to the *resolved* parent, after which resolution through symlinks
resumes. The root itself is resolved the same way, and the result must be the root or lie below it.

How it holds against a racing agent: the path is walked one component at a time with directory
file descriptors (``openat`` with ``O_NOFOLLOW``), reading each symlink ourselves and splicing
its target into the rest of the walk, so what is checked is exactly what was opened: a
directory swapped for a symlink between two steps is met as a symlink (and resolved, or refused)
at the next step, never followed by the kernel behind our back. The openers hand back the
descriptors of that same walk, and the file operations work relative to them (``openat``,
``renameat``). On Linux the deepest directory reached is also checked through
``/proc/self/fd``, which catches a directory moved out of the workspace during the walk. Any
error while resolving (permission denied, a symlink loop, a name too long) is a boundary
refusal, never an unexpected ``OSError``.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from agh_nb.errors import PathOutsideWorkspaceError

MAX_SYMLINKS = 40
"""Symlinks one resolution may follow (the Linux kernel's own limit), so loops end."""
ATTEMPTS = 8
"""How often an open is walked again when the path changed under it before it gives up."""
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # NONBLOCK: a FIFO never hangs us
_PROC_FD = "/proc/self/fd"
# Errors that mean "a component is not there (as a directory)": the rest of the path is a name.
_MISSING = (errno.ENOENT, errno.ENOTDIR)
# Errors from an open with O_NOFOLLOW that mean the component changed kind since it was looked at.
_CHANGED = (errno.ELOOP, errno.ENOTDIR, errno.ENOENT, errno.EMLINK)


class _Changed(Exception):
    """The path changed while it was being opened: walk it again."""


@dataclass
class _Walk:
    """Where a walk ended: canonical components from ``/`` and a descriptor for each prefix.

    ``fds[i]`` is the directory ``/`` + ``parts[:i]``, or None when that component is missing
    or is not a directory (``len(fds) == len(parts) + 1``).
    """

    parts: list[str] = field(default_factory=list)
    fds: list[int | None] = field(default_factory=list)

    @property
    def path(self) -> str:
        return "/" + "/".join(self.parts)

    def deepest(self) -> int:
        """Index in ``fds`` of the deepest directory that exists."""
        index = len(self.fds) - 1
        while self.fds[index] is None:
            index -= 1
        return index

    def close(self) -> None:
        for fd in self.fds:
            if fd is not None:
                os.close(fd)
        self.fds = []


def resolve_in_workspace(root: Path, path: str | Path) -> Path:
    """Resolve ``path`` as an agent meant it and check that it stays inside the workspace.

    Args:
        root: the session's workspace directory (may itself be reached through a symlink).
        path: what the agent sent: absolute, or relative to ``root``; it need not exist yet.

    Returns:
        The fully resolved absolute path (no symlinks in its existing part, no ``.``/``..``).
        This is a check: the file operations open the path again with
        ``open_file_in_workspace``/``open_parent_in_workspace``, which apply the same rule to
        what they open.

    Raises:
        PathOutsideWorkspaceError: when the path resolves outside the resolved root (fields
            ``path``, ``resolved``, ``root``), or cannot be resolved: it is empty, contains a NUL
            byte, runs into a symlink loop, or a component cannot be read (message starts with
            ``invalid path``; field ``reason``).
    """
    given, real_root = _prepare(root, path)
    walk = _walk_inside(given, real_root)
    walk.close()
    return Path(walk.path)


def open_file_in_workspace(root: Path, path: str | Path) -> tuple[int, Path]:
    """Open an existing file inside the workspace for reading, race-free.

    Returns:
        ``(fd, resolved)``: a read-only descriptor of a regular file (the caller closes it) and
        its resolved path.

    Raises:
        PathOutsideWorkspaceError: as ``resolve_in_workspace``, or the path kept changing.
        FileNotFoundError, IsADirectoryError: the file is missing, or is a directory.
        OSError: the file cannot be opened, or is not a regular file (a FIFO, a device).
    """
    given, real_root = _prepare(root, path)
    for _ in range(ATTEMPTS):
        walk = _walk_inside(given, real_root)
        try:
            parent = walk.fds[-2] if len(walk.fds) > 1 else None
            if walk.fds[-1] is not None:
                raise IsADirectoryError(errno.EISDIR, "Is a directory", walk.path)
            if parent is None:
                raise FileNotFoundError(errno.ENOENT, "No such file or directory", walk.path)
            try:
                fd = os.open(walk.parts[-1], _FILE_FLAGS, dir_fd=parent)
            except OSError as exc:
                if exc.errno == errno.ELOOP:  # became a symlink since the walk looked
                    continue
                raise
            try:
                st = os.fstat(fd)
                if stat.S_ISDIR(st.st_mode):
                    raise IsADirectoryError(errno.EISDIR, "Is a directory", walk.path)
                if not stat.S_ISREG(st.st_mode):
                    raise OSError(errno.EINVAL, "Not a regular file", walk.path)
                os.set_blocking(fd, True)
            except BaseException:
                os.close(fd)
                raise
            return fd, Path(walk.path)
        finally:
            walk.close()
    raise _kept_changing(given)


def open_parent_in_workspace(root: Path, path: str | Path, *, create: bool) -> tuple[int, str, Path]:
    """Open the directory a file inside the workspace lives in, race-free.

    The last component is resolved too: when it is a symlink (inside), the directory and name
    returned are those of its target. With ``create``, missing directories on the way are made
    (with the usual 0o777 minus the umask: these are the user's files).

    Returns:
        ``(dir_fd, name, resolved)``: a descriptor of the parent directory (the caller closes
        it), the file's name in it (which may not exist yet) and the resolved path.

    Raises:
        PathOutsideWorkspaceError: as ``resolve_in_workspace``, or the path kept changing.
        IsADirectoryError: the path names a directory (or the root itself).
        FileNotFoundError: a directory on the way is missing and ``create`` is false.
        OSError: a directory cannot be made (for instance a file is in the way).
    """
    given, real_root = _prepare(root, path)
    for _ in range(ATTEMPTS):
        walk = _walk_inside(given, real_root)
        try:
            if walk.fds[-1] is not None:
                raise IsADirectoryError(errno.EISDIR, "Is a directory", walk.path)
            try:
                _make_missing_parents(walk, create=create)
            except _Changed:
                continue
            parent = walk.fds[-2]
            assert parent is not None  # made above, or FileNotFoundError was raised
            walk.fds[-2] = None  # handed to the caller: not closed below
            return parent, walk.parts[-1], Path(walk.path)
        finally:
            walk.close()
    raise _kept_changing(given)


# -- the walk -------------------------------------------------------------------------------


def _prepare(root: Path, path: str | Path) -> tuple[str, str]:
    """Validate what the agent sent; return it as text and the resolved root."""
    given = os.fspath(path)
    if isinstance(given, bytes):  # os.fspath of an exotic PathLike; agents only ever send text
        given = os.fsdecode(given)
    if given == "":
        raise PathOutsideWorkspaceError("invalid path: it is empty", path=given, reason="empty")
    if "\x00" in given:
        # The OS would reject it later; refusing here keeps the error the boundary's own.
        raise PathOutsideWorkspaceError(f"invalid path {given!r}: it contains a NUL byte", path=given, reason="nul")
    root_text = os.path.abspath(os.fspath(root))
    walk = _walk(root_text, given=root_text)
    walk.close()
    return given, walk.path


def _walk_inside(given: str, real_root: str) -> _Walk:
    """Walk ``given`` (absolute, or relative to ``real_root``) and require the result inside."""
    # os.path.join keeps an absolute ``given`` as is and puts a relative one under the root.
    # No lexical normalisation before resolving: ``link/..`` means the parent of the link's
    # *target*, which only component-wise resolution gets right.
    walk = _walk(os.path.join(real_root, given), given=given)
    try:
        resolved = walk.path
        if resolved != real_root and not resolved.startswith(_with_sep(real_root)):
            raise PathOutsideWorkspaceError(
                f"path '{given}' resolves to '{resolved}', outside the workspace '{real_root}'",
                path=given,
                resolved=resolved,
                root=real_root,
            )
        _check_moved(walk, given, real_root)
    except BaseException:
        walk.close()
        raise
    return walk


def _walk(absolute: str, *, given: str) -> _Walk:
    """Resolve ``absolute`` component by component from ``/``; see the module docstring."""
    walk = _Walk()
    pending: deque[str] = deque(absolute.split("/"))
    links = 0
    try:
        walk.fds.append(os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        while pending:
            name = pending.popleft()
            if name in ("", "."):
                continue
            if name == "..":
                if walk.parts:  # ``/..`` is ``/``
                    walk.parts.pop()
                    fd = walk.fds.pop()
                    if fd is not None:
                        os.close(fd)
                continue
            parent = walk.fds[-1]
            if parent is None:  # below a missing component (or a file): a plain name
                walk.parts.append(name)
                walk.fds.append(None)
                continue
            try:
                st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in _MISSING:
                    raise _unresolvable(given, walk.path, name, exc) from None
                walk.parts.append(name)
                walk.fds.append(None)
                continue
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > MAX_SYMLINKS:
                    raise _loop(given)
                try:
                    target = os.readlink(name, dir_fd=parent)
                except OSError as exc:
                    if exc.errno in (errno.EINVAL, errno.ENOENT):  # no longer a symlink: look again
                        pending.appendleft(name)
                        continue
                    raise _unresolvable(given, walk.path, name, exc) from None
                if target.startswith("/"):
                    while len(walk.fds) > 1:
                        fd = walk.fds.pop()
                        if fd is not None:
                            os.close(fd)
                    walk.parts.clear()
                pending.extendleft(reversed(target.split("/")))
                continue
            if not stat.S_ISDIR(st.st_mode):
                walk.parts.append(name)  # a file: anything below it is a missing name
                walk.fds.append(None)
                continue
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            except OSError as exc:
                if exc.errno in _CHANGED:  # swapped since the stat (for a symlink, say): again
                    links += 1
                    if links > MAX_SYMLINKS:
                        raise _kept_changing(given) from None
                    pending.appendleft(name)
                    continue
                raise _unresolvable(given, walk.path, name, exc) from None
            walk.parts.append(name)
            walk.fds.append(fd)
    except BaseException:
        walk.close()
        raise
    return walk


def _make_missing_parents(walk: _Walk, *, create: bool) -> None:
    """Give ``walk.fds[-2]`` (the last component's directory) a descriptor, making directories."""
    for index in range(walk.deepest() + 1, len(walk.parts)):
        parent = walk.fds[index - 1]
        assert parent is not None
        name = walk.parts[index - 1]
        if not create:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/" + "/".join(walk.parts[:index]))
        try:
            os.mkdir(name, 0o777, dir_fd=parent)
        except FileExistsError:
            pass  # made meanwhile, or a file is in the way: the open below tells which
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            if exc.errno in _CHANGED and _is_symlink_or_gone(parent, name):
                raise _Changed from None
            raise
        walk.fds[index] = fd


def _is_symlink_or_gone(parent: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return True


def _check_moved(walk: _Walk, given: str, real_root: str) -> None:
    """Refuse when the deepest directory reached is no longer inside (moved during the walk)."""
    deepest = walk.deepest()
    if deepest < len(Path(real_root).parts) - 1:
        return  # the root itself is missing: nothing inside exists to have moved
    fd = walk.fds[deepest]
    try:
        where = os.readlink(f"{_PROC_FD}/{fd}")
    except OSError:  # no /proc (macOS, a container without it): the walk alone decides
        return
    if where != real_root and not where.startswith(_with_sep(real_root)):
        raise PathOutsideWorkspaceError(
            f"path '{given}' resolves to '{where}', outside the workspace '{real_root}'",
            path=given,
            resolved=where,
            root=real_root,
        )


def _unresolvable(given: str, where: str, name: str, exc: OSError) -> PathOutsideWorkspaceError:
    if exc.errno == errno.ELOOP:
        return _loop(given)
    at = os.path.join(where, name)
    reason = exc.strerror or type(exc).__name__
    return PathOutsideWorkspaceError(
        f"invalid path '{given}': cannot resolve '{at}' ({reason})", path=given, reason="unresolvable"
    )


def _loop(given: str) -> PathOutsideWorkspaceError:
    return PathOutsideWorkspaceError(
        f"invalid path '{given}': too many levels of symbolic links", path=given, reason="symlink-loop"
    )


def _kept_changing(given: str) -> PathOutsideWorkspaceError:
    return PathOutsideWorkspaceError(
        f"invalid path '{given}': it kept changing while it was being opened", path=given, reason="changed"
    )


def _with_sep(directory: str) -> str:
    """``directory`` with exactly one trailing separator, so ``/ws`` does not contain ``/ws2``."""
    return directory if directory.endswith(os.sep) else directory + os.sep
