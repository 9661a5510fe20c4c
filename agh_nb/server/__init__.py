"""The Jupyter server host of agh_nb: the runtime inside the Jupyter server, and its HTTP API.

Modules: ``app`` (the ``ExtensionApp`` and the hosted runtime's lifecycle), ``handlers`` (REST
routes of docs/http-api.md), ``sse`` (event streams), ``errors`` (AghError -> HTTP status, JSON
error bodies). The server loads it through ``agh_nb._jupyter_server_extension_points``; it is
enabled on install by ``etc/jupyter/jupyter_server_config.d/agh_nb.json``.
Must not import agh_nb.kernel (and the kernel never imports this package).
"""

from __future__ import annotations

__all__ = ["AghServerExtension"]


def __getattr__(name: str) -> object:
    if name == "AghServerExtension":
        from agh_nb.server.app import AghServerExtension

        return AghServerExtension
    raise AttributeError(f"module 'agh_nb.server' has no attribute {name!r}")
