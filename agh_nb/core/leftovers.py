"""Processes spawned for a session, recorded so that a host starting after a crash can end them.

Owns: ``ProcessEntry`` (pid, process group, start time, boot id), ``ProcessBook`` (one small JSON
file per live process under ``sessions/<id>/processes/``: written when the agent or a terminal is
spawned, removed once it is reaped) and ``kill_leftovers`` (run by crash repair: SIGKILL what a
dead host left running). Blocking file and ``/proc`` I/O: callers on the loop use
``asyncio.to_thread``. Imports only the standard library and ``core.sandbox_policy``.

Killing only what is ours: a pid is recycled once its process is gone, so a recorded pid alone
proves nothing. A process is killed when either
- it is the recorded pid with the recorded start time (``/proc/<pid>/stat`` field 22) in the
  same boot (then its process group is ours too, since the leader still lives or at least is
  not yet reaped; an unreaped leader runs nothing and is not reported as killed), or
- its environment carries ``AGH_NB_SESSION=<this session id>`` (every agent and terminal process
  is spawned with it, and children inherit it).
Without ``/proc`` (macOS), nothing can be proven and nothing is killed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
from dataclasses import asdict, dataclass
from pathlib import Path

from agh_nb.core.sandbox_policy import PROCESS_TAG

log = logging.getLogger(__name__)

PROC = Path("/proc")
BOOK_DIR = "processes"


def boot_id(proc: Path = PROC) -> str | None:
    """This boot's id (start times are only comparable within one boot)."""
    try:
        return (proc / "sys" / "kernel" / "random" / "boot_id").read_text().strip()
    except OSError:
        return None


def _stat(pid: int, proc: Path = PROC) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` from field 3 on (state, ppid, ...), or None when gone."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces and ')'.
    return stat[stat.rfind(")") + 2 :].split()


def is_zombie(pid: int, proc: Path = PROC) -> bool:
    """Whether ``pid`` has exited and waits to be reaped (state ``Z``): dead, though /proc shows it."""
    fields = _stat(pid, proc)
    return fields is not None and fields[:1] == ["Z"]


def start_time(pid: int, proc: Path = PROC) -> int | None:
    """The start time of ``pid`` in clock ticks since boot, or None when it is gone (or no /proc)."""
    fields = _stat(pid, proc) or []
    try:
        return int(fields[19])  # field 22 overall; fields[0] is field 3
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class ProcessEntry:
    """One process spawned for a session.

    Attributes:
        pid: its pid (the bubblewrap process when sandboxed).
        pgid: its process group (its own: every spawn starts a new session).
        start_time: ``/proc/<pid>/stat`` start time, None where unknown.
        boot_id: the boot it started in.
        kind: ``agent`` or ``terminal``.
        name: the agent's name or the terminal's id.
    """

    pid: int
    pgid: int
    start_time: int | None
    boot_id: str | None
    kind: str
    name: str

    @classmethod
    def of(cls, pid: int, *, kind: str, name: str, proc: Path = PROC) -> ProcessEntry:
        """Describe a just-spawned process (its group is normally its own: ``start_new_session``)."""
        try:
            pgid = os.getpgid(pid)
        except OSError:
            pgid = pid
        return cls(pid=pid, pgid=pgid, start_time=start_time(pid, proc), boot_id=boot_id(proc), kind=kind, name=name)


class ProcessBook:
    """The processes of one session that may still run, one file each (no read-modify-write).

    Args:
        state_dir: the session's directory (``$AGH_HOME/sessions/<id>``).
    """

    def __init__(self, state_dir: Path) -> None:
        self._dir = state_dir / BOOK_DIR

    def add(self, entry: ProcessEntry) -> None:
        """Record a spawned process (0600, written whole then renamed into place)."""
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self._dir / f"{entry.pid}.json"
        tmp = self._dir / f".{entry.pid}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(asdict(entry), fh)
        os.replace(tmp, path)

    def remove(self, pid: int) -> None:
        """Forget a process once it is reaped (missing entries are fine)."""
        with contextlib.suppress(FileNotFoundError):
            (self._dir / f"{pid}.json").unlink()

    def entries(self) -> list[ProcessEntry]:
        """The recorded processes (unreadable entries are skipped)."""
        found = []
        try:
            paths = sorted(self._dir.glob("*.json"))
        except OSError:
            return []
        for path in paths:
            try:
                found.append(ProcessEntry(**json.loads(path.read_text(encoding="utf-8"))))
            except (OSError, ValueError, TypeError):
                log.warning("skipping unreadable process record %s", path)
        return found

    def clear(self) -> None:
        """Forget every recorded process."""
        for path in self._dir.glob("*.json") if self._dir.is_dir() else ():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def tagged_pids(session_id: str, proc: Path = PROC) -> list[int]:
    """Pids whose environment carries ``AGH_NB_SESSION=<session_id>`` (readable ones only)."""
    marker = f"{PROCESS_TAG}={session_id}".encode()
    own = os.getpid()
    found = []
    try:
        names = os.listdir(proc)
    except OSError:
        return []
    for name in names:
        if not name.isdigit() or int(name) == own:
            continue
        try:
            environ = (proc / name / "environ").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if marker in environ.split(b"\0"):
            found.append(int(name))
    return found


def kill_leftovers(state_dir: Path, session_id: str, *, proc: Path = PROC) -> list[int]:
    """SIGKILL the processes a dead host left for this session; return the pids signalled.

    Safe to call for any session that no live host runs: only processes proven ours (see the
    module docstring) are signalled. The book is cleared afterwards.
    """
    book = ProcessBook(state_dir)
    entries = book.entries()
    current_boot = boot_id(proc)
    killed: list[int] = []
    for entry in entries:
        if entry.start_time is None or entry.boot_id is None or entry.boot_id != current_boot:
            continue
        if start_time(entry.pid, proc) != entry.start_time:
            continue  # gone, or the pid now belongs to someone else
        # A zombie has exited but its new parent has not reaped it yet (a sandbox's bwrap dies
        # with its host and waits for init): it runs nothing and is not reported. While it is
        # unreaped its pid, and so its process group, cannot be reused: what still runs in that
        # group is ours and is killed with it.
        exited = is_zombie(entry.pid, proc)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if entry.pgid == entry.pid:
                os.killpg(entry.pgid, signal.SIGKILL)  # the leader is ours: the whole group is ours
            elif not exited:
                os.kill(entry.pid, signal.SIGKILL)
            if not exited:
                killed.append(entry.pid)
    if entries or (state_dir / BOOK_DIR).is_dir():
        for pid in tagged_pids(session_id, proc):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    book.clear()
    killed = list(dict.fromkeys(killed))
    if killed:
        log.warning("killed %d process(es) left running by a dead host for session %s", len(killed), session_id)
    return killed
