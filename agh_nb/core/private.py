"""Owner-only files under ``$AGH_HOME`` (SPEC 7): directories 0700, files 0600, ledgers 0400.

Owns: ``make_private_dirs`` (create directories owner-only), ``make_private_file`` (tighten one
file another program created, such as DuckDB's), and ``tighten_home`` (the walk that takes
group and other access away from a home made by an older version or by hand). Pure stdlib;
blocking: callers on the event loop use ``asyncio.to_thread``.

Modes are set explicitly rather than trusted to the umask: a creation mode is filtered by the
process umask (any value, set by whoever started the kernel), and ``Path.mkdir(parents=True)``
ignores ``mode`` for the parents it makes. The umask itself is never changed: it belongs to
the whole process (the user's own notebook code included) and changing it is racy across
threads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

logger = logging.getLogger(__name__)

DIR_MODE = 0o700
"""Every directory under ``$AGH_HOME``."""
FILE_MODE = 0o600
"""Every file under ``$AGH_HOME`` but the ledgers."""
READ_ONLY_MODE = 0o400
"""Ledgers and their digests: read-only, and owner-only like the rest."""
_OTHERS = 0o077


def make_private_dirs(directory: Path) -> Path:
    """Create ``directory`` and its missing parents, each new one 0700 whatever the umask.

    Directories that already exist are left as they are (``tighten_home`` handles old ones).

    Returns:
        ``directory``.

    Raises:
        OSError: a component cannot be created, or exists and is not a directory.
    """
    missing: list[Path] = []
    current = Path(directory)
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            if not path.is_dir():
                raise
            continue  # another thread or process made it first: its creator set its mode
        os.chmod(path, DIR_MODE)
    return Path(directory)


def make_private_file(path: Path, mode: int = FILE_MODE) -> bool:
    """Set ``path``'s mode to ``mode`` if it exists and grants more; returns whether it changed.

    For files created by code that honours the umask (DuckDB's database and WAL).
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) == mode:
        return False
    os.chmod(path, mode)
    return True


def tighten_home(home: Path) -> int:
    """Take group and other access away from ``home`` and everything below it.

    Directories and files keep their owner bits (a ledger stays read-only); symlinks are not
    followed (what they point to is not the home's). One warning line names how many paths
    changed. Paths that cannot be changed (owned by someone else) are skipped.

    Returns:
        How many paths were tightened.
    """
    home = Path(home)
    if not home.is_dir():
        return 0
    changed = 0
    if _tighten(home):
        changed += 1
    for root, dirs, files in os.walk(home, followlinks=False):
        for name in (*dirs, *files):
            if _tighten(Path(root, name)):
                changed += 1
    if changed:
        logger.warning(
            "tightened %d path(s) under %s to owner-only access (they were open to group or others)",
            changed,
            home,
        )
    return changed


def _tighten(path: Path) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)) or not st.st_mode & _OTHERS:
        return False
    with contextlib.suppress(OSError):  # not ours to change: leave it and go on
        os.chmod(path, stat.S_IMODE(st.st_mode) & ~_OTHERS)
        return True
    return False
