"""Who holds the store: a small owner-only file, ``$AGH_HOME/holder.json``, written by the process
that opened the store for writing and removed when it closes it.

Owns: ``Holder`` (pid, kind, notebook, kernel connection file, server pid, start time),
``write_holder`` / ``remove_holder`` (the writer's side) and ``read_holder`` (anyone's side; a
file whose process is gone, or that names another process than the one DuckDB says holds the
lock, is ignored). DuckDB's own lock message names only an interpreter ("python3.11"); this file
lets ``agh-nb`` say which notebook, kernel or Jupyter server it is, and find that server.
Never holds a token or any secret. Imports only the standard library.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HOLDER_FILE = "holder.json"


@dataclass(frozen=True)
class Holder:
    """The process holding a store.

    Attributes:
        pid: its process id.
        kind: ``server`` (a Jupyter server host), ``kernel`` (an embedded host in a kernel) or
            ``process`` (any other Python process, e.g. a script using the Python API).
        started_at: when it opened the store (RFC3339 UTC).
        notebook: the notebook path Jupyter gave the kernel (``JPY_SESSION_NAME``), if any.
        kernel: the kernel's connection file name, if it is a kernel.
    """

    pid: int
    kind: str
    started_at: str
    notebook: str | None = None
    kernel: str | None = None

    def describe(self) -> str:
        """``the kernel of notebook analysis.ipynb (pid 4242, kernel-ab12.json, since 2026-12-02 14:02 UTC)``."""
        since = self.started_at[:16].replace("T", " ") + " UTC" if self.started_at else ""
        details = ", ".join(x for x in (f"pid {self.pid}", self.kernel, f"since {since}" if since else "") if x)
        if self.kind == "server":
            return f"the Jupyter server host ({details})"
        if self.kind == "kernel":
            what = f"the kernel of notebook {self.notebook}" if self.notebook else "a Jupyter kernel"
            return f"{what} ({details})"
        return f"a Python process ({details})"


def this_process(kind: str | None = None) -> Holder:
    """Describe the current process (``kind`` None: a kernel when it looks like one, else a process)."""
    kernel = _connection_file()
    notebook = os.environ.get("JPY_SESSION_NAME") or None
    if kind is None:
        kind = "kernel" if kernel or notebook else "process"
    started = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return Holder(os.getpid(), kind, started, notebook=notebook, kernel=kernel)


def _connection_file() -> str | None:
    # ipykernel is started as "python -m ipykernel_launcher -f /run/.../kernel-<id>.json".
    argv = sys.argv
    for i, word in enumerate(argv[:-1]):
        if word == "-f" and argv[i + 1].endswith(".json"):
            return os.path.basename(argv[i + 1])
    if any("ipykernel" in a for a in argv[:1]):
        return "ipykernel"
    return None


def write_holder(home: Path, holder: Holder) -> None:
    """Write ``home/holder.json`` (0600, replaced atomically). Best effort: a failure is ignored,
    since the file only improves a message."""
    path = home / HOLDER_FILE
    tmp = home / f".{HOLDER_FILE}.{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(asdict(holder), f)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


def remove_holder(home: Path, pid: int | None = None) -> None:
    """Remove ``home/holder.json`` if it names ``pid`` (default: this process)."""
    path = home / HOLDER_FILE
    current = _load(path)
    if current is not None and current.pid == (pid if pid is not None else os.getpid()):
        with contextlib.suppress(OSError):
            path.unlink()


def read_holder(home: Path, *, lock_pid: int | None = None) -> Holder | None:
    """The holder named by ``home/holder.json``, or None when there is none, it is malformed, its
    process is gone (a kernel that was killed), or it is not ``lock_pid`` (the pid DuckDB names
    as the lock holder, when known)."""
    holder = _load(home / HOLDER_FILE)
    if holder is None or not _alive(holder.pid):
        return None
    if lock_pid is not None and holder.pid != lock_pid:
        return None
    return holder


def _load(path: Path) -> Holder | None:
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
        return Holder(
            pid=int(data["pid"]),
            kind=str(data.get("kind") or "process"),
            started_at=str(data.get("started_at") or ""),
            notebook=str(data["notebook"]) if data.get("notebook") else None,
            kernel=str(data["kernel"]) if data.get("kernel") else None,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    return True
