"""The host surface: what the magics, the command line and the Python API ask of a host.

Owns: ``ReaderProtocol`` (the words that need only the store: reads, SQL, export, logs, the vault)
and ``HostProtocol`` (those plus the live words: create, prompt, stop, resume, approvals...).
Implemented by ``api.Reader`` (read-only, the command line without a server), ``api.Host`` (the
embedded host of a kernel) and ``remote.RemoteHost`` (the same words over the HTTP API of the
server host, ``server.app.ServerHost``, which answers them with the same core functions).
``hosts.py`` checks each class against these protocols under strict mypy. ``is_live`` narrows a
reader to a live host by its ``live`` word (how the surfaces refuse live words without one).
"""

from __future__ import annotations

import builtins

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeGuard

from agh_nb.core.handles import LogLines, TurnHandle
from agh_nb.core.ports import EventCallback, Subscription
from agh_nb.core.record import SessionRecord
from agh_nb.events import JSON, Event, EventQuery

if TYPE_CHECKING:
    import pandas


class ReaderProtocol(Protocol):
    """The words that need only the store (what the command line answers without a server)."""

    @property
    def live(self) -> bool:
        """True when this host can run sessions (the live words below work)."""

    @property
    def home(self) -> Path | None:
        """``$AGH_HOME`` of this process's store; None for a remote host (the server's)."""

    def get(self, session_id: str) -> SessionRecord: ...

    def list(self) -> builtins.list[SessionRecord]: ...

    def status(self, session_id: str) -> JSON: ...

    def inspect(self, session_id: str) -> JSON: ...

    def events(self, session_id: str, query: EventQuery | None = None) -> builtins.list[Event]: ...

    def history(self, session_id: str) -> builtins.list[JSON]: ...

    def transcript(self, session_id: str) -> builtins.list[JSON]: ...

    def repair(self, session_id: str, *, dry_run: bool = True) -> JSON: ...

    def logs(self, session_id: str, *, last: int | None = None, cursor: str | None = None) -> LogLines: ...

    def sql(self, query: str) -> pandas.DataFrame: ...

    def export(
        self, directory: str | Path, *, since: str | datetime | None = None, session: str | None = None
    ) -> JSON: ...

    def vault_put(self, ref: str, value: str, *, kind: str | None = None) -> JSON: ...

    def vault_list(self, *, namespace: str | None = None, prefix: str | None = None) -> builtins.list[JSON]: ...

    def vault_get(self, ref: str) -> JSON: ...

    def vault_delete(self, ref: str) -> JSON: ...

    def close(self) -> None: ...


class HostProtocol(ReaderProtocol, Protocol):
    """A live host: the store words plus the ones that run sessions (embedded or remote)."""

    def create(
        self,
        agent: str,
        *,
        cwd: str | None = None,
        name: str | None = None,
        permissions: str | None = None,
        session_type: str = "user",
        mode: str | None = None,
        model: str | None = None,
        auth: str | None = None,
    ) -> SessionRecord: ...

    def set(
        self,
        session_id: str,
        *,
        mode: str | None = None,
        model: str | None = None,
        options: dict[str, str] | None = None,
    ) -> SessionRecord: ...

    def auth(self, session_id: str, method: str) -> SessionRecord: ...

    def fork(self, session_id: str, *, name: str | None = None) -> SessionRecord: ...

    def prompt(self, session_id: str, text: str, *, interrupt: bool = False) -> TurnHandle: ...

    def stop(self, session_id: str, *, detail: str | None = None) -> SessionRecord: ...

    def resume(self, session_id: str, *, replay_transcript: bool = False) -> SessionRecord: ...

    def approve(self, session_id: str, request_id: str, decision: str) -> JSON: ...

    def pending_approvals(self, session_id: str | None = None) -> builtins.list[JSON]: ...

    def watch_approvals(self, callback: Callable[[str, JSON], None]) -> Callable[[], None]: ...

    def answer(self, session_id: str, request_id: str, values: dict[str, str], *, action: str = "accept") -> JSON: ...

    def pending_elicitations(self, session_id: str | None = None) -> builtins.list[JSON]: ...

    def subscribe(self, session_id: str | None, after_sequence: int, callback: EventCallback) -> Subscription: ...


def is_live(host: ReaderProtocol) -> TypeGuard[HostProtocol]:
    """True when ``host`` runs sessions, and then mypy treats it as a ``HostProtocol``.

    ``live`` is each class's promise that the live words work; mypy cannot follow a bool to a
    type, so this is the one place that trusts it (``hosts.py`` checks that the live classes,
    ``api.Host`` and ``remote.RemoteHost``, match ``HostProtocol``).
    """
    return host.live


HOST_WORDS: tuple[str, ...] = tuple(
    sorted(name for name in vars(HostProtocol) | vars(ReaderProtocol) if not name.startswith("_"))
)
"""Every public member of ``HostProtocol``, for the runtime check that hosts expose the same words."""
