"""A loopback TCP proxy in front of a JupyterLab, whose connections a test can cut.

Owns: ``CuttableProxy``. The browser talks to the proxy's port; every connection is relayed to
the server byte for byte (HTTP, server-sent events, websockets alike) until ``cut()`` closes all
of them at once, as a network blip would. New connections are relayed again right away, so a
client that reconnects (the sidebar's event streams) carries on. Loopback only.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType


class CuttableProxy:
    """Relay ``127.0.0.1:<port>`` to ``127.0.0.1:<target_port>``; ``cut()`` drops every connection."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._closed = False
        self.cuts = 0
        self._thread = threading.Thread(target=self._accept, name="cuttable-proxy", daemon=True)
        self._thread.start()

    def __enter__(self) -> CuttableProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._sockets.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), name="cuttable-proxy-pump", daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                self._drop(s)

    def _drop(self, s: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(s)
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()

    def cut(self) -> int:
        """Close every open connection (both ends); returns how many sockets were cut."""
        with self._lock:
            sockets = list(self._sockets)
            self.cuts += 1
        for s in sockets:
            self._drop(s)
        return len(sockets)

    def close(self) -> None:
        """Stop accepting and cut everything. Idempotent."""
        with self._lock:
            self._closed = True
        self._listener.close()
        self.cut()
