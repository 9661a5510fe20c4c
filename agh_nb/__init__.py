"""agh_nb: durable ACP agent sessions native to Jupyter.

Load the magics with ``%load_ext agh_nb``; the Python API is ``agh_nb.get_host()``. Importing
this package is cheap: the runtime, DuckDB and the ACP SDK load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from agh_nb.api import Host, Session
    from agh_nb.core.host import HostProtocol

__all__ = ["Host", "Session", "__version__", "get_host", "load_ipython_extension", "unload_ipython_extension"]


def load_ipython_extension(ipython: Any) -> None:
    """Register the ``%agh`` magics and the session card (``%load_ext agh_nb``): every
    ``agh_nb.api.Session`` (from ``%agh`` or the Python API) shows as its card."""
    from agh_nb.kernel.magics import AghMagics, register_formatters

    ipython.register_magics(AghMagics)
    register_formatters(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """Stop the embedded host's sessions and close its store (``%unload_ext agh_nb``)."""
    from agh_nb.hosts import shutdown_host

    shutdown_host()


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    """Name the Jupyter server extension (``agh_nb.server``): the server host of the runtime."""
    from agh_nb.server.app import AghServerExtension

    return [{"module": "agh_nb.server.app", "app": AghServerExtension}]


def get_host() -> HostProtocol:
    """Return the process-wide host: the Jupyter server's when this kernel was started by a
    server running the agh_nb extension, else the embedded ``Host`` (started on first use)."""
    from agh_nb.hosts import get_host as _get_host

    return _get_host()


def __getattr__(name: str) -> Any:
    if name in ("Host", "Session"):
        from agh_nb import api

        return getattr(api, name)
    raise AttributeError(f"module 'agh_nb' has no attribute {name!r}")
