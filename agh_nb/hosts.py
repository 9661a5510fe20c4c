"""Which host a process talks to: the Jupyter server's (client mode) or its own embedded one.

Owns: ``get_host`` (the process-wide host), ``shutdown_host`` and the exit hook that stops an
embedded host's sessions while the interpreter can still run threads.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable
from typing import Any

from agh_nb.api import Host
from agh_nb.errors import AghError
from agh_nb.remote import RemoteHost, discover
from agh_nb.runtime import Runtime

log = logging.getLogger(__name__)

_host: Any = None
_host_lock = threading.Lock()


def get_host() -> Any:
    """Return the process-wide host: the Jupyter server's when this kernel was started by a
    server running the agh_nb extension (client mode), else the embedded host (started on first
    use)."""
    global _host
    with _host_lock:
        if _host is not None and not (isinstance(_host, Host) and _host.runtime.closed):
            return _host
        info = discover()
        if info is not None:
            remote = RemoteHost(info)
            try:
                remote.ping()
            except AghError as exc:
                log.warning("the agh_nb server host is not answering (%s); using the embedded host", exc)
            else:
                _host = remote
                return _host
        _host = Host(Runtime.start())
        _register_shutdown(_host.close)
        return _host


def _register_shutdown(close: Callable[[], None]) -> None:
    # Stop sessions while the interpreter can still run threads: plain atexit runs after
    # concurrent.futures has refused new work, which would break the stop path's file writes.
    # threading's own exit hooks run in reverse order of registration, so this runs first.
    import concurrent.futures.thread  # noqa: F401  # its exit hook must be registered before ours

    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        register(close)
    else:  # pragma: no cover - other interpreters
        atexit.register(close)


def shutdown_host() -> None:
    """Close the process-wide host if it was started (sessions are stopped)."""
    global _host
    with _host_lock:
        if _host is not None:
            _host.close()
            _host = None
