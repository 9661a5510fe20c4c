"""Which host a process talks to: the Jupyter server's (client mode) or its own embedded one.

Owns: ``get_host`` (the process-wide host, typed as ``core.host.HostProtocol``), ``shutdown_host``,
the exit hook that stops an embedded host's sessions while the interpreter can still run threads,
and ``_conforms``, where strict mypy checks that every host class matches its protocol.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable
from agh_nb.api import Host, Reader
from agh_nb.core.host import HostProtocol, ReaderProtocol
from agh_nb.errors import AghError
from agh_nb.remote import RemoteHost, discover
from agh_nb.runtime import Runtime

log = logging.getLogger(__name__)

_host: HostProtocol | None = None
_host_lock = threading.Lock()


def get_host() -> HostProtocol:
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
        embedded = Host(Runtime.start())
        _host = embedded
        _register_shutdown(embedded.close)
        return embedded


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


def _conforms(reader: Reader, embedded: Host, remote: RemoteHost) -> tuple[ReaderProtocol, HostProtocol, HostProtocol]:
    """Never called: strict mypy checks here that the read-only reader, the embedded host and the
    remote host (the server host's words over HTTP) each match the protocol the surfaces use."""
    return reader, embedded, remote
