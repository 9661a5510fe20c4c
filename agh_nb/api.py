"""The Python API: the same words as the magics, as methods returning Python values.

Owns: ``Reader`` (store-only reads: what works without a live host, used by the CLI),
``Host`` (a running embedded runtime: create, prompt, stop), ``TurnHandle`` and ``Session``
(handles returned to notebook users), and ``get_host`` (the process-wide embedded host).
"""

from __future__ import annotations

import builtins

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from agh_nb.config import agh_home, load_settings, parse_since
from agh_nb.core import acp_state
from agh_nb.core.agent_log import log_dir, read_log
from agh_nb.core.auth import methods_view
from agh_nb.core.history import group_by_turn
from agh_nb.core.repair import plan_crash_repair, plan_repair
from agh_nb.core.session_dir import read_meta, session_dir
from agh_nb.core.state import SessionState
from agh_nb.core.transcript import build_transcript
from agh_nb.core.handles import LogLines as LogLines, TurnHandle as TurnHandle
from agh_nb.core.host import HostProtocol
from agh_nb.core.overlay import LiveState, current_records, inspect_view, status_view
from agh_nb.core.ports import EventCallback, EventStore, Subscription
from agh_nb.core.record import SessionRecord
from agh_nb.core.session import Turn, TurnResult
from agh_nb.core.vault_refs import parse_vault_ref
from agh_nb.errors import AghError, SessionNotFoundError, UsageError
from agh_nb.events import JSON, Event, EventQuery, EventType
from agh_nb.runtime import Runtime, export_parquet, open_store, open_vault

if TYPE_CHECKING:
    import pandas

_J = TypeVar("_J")

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 20
"""Lines of the agent's log ``inspect`` shows."""


def agent_view(record: SessionRecord) -> JSON:
    """What ``inspect`` says about the agent: auth methods, mode, model, config options, commands."""
    caps = record.acp_caps if isinstance(record.acp_caps, dict) else {}
    methods = caps.get("authMethods")
    return {"auth_methods": methods_view(methods if isinstance(methods, builtins.list) else [])} | acp_state.summary(
        record.acp_state
    )


def build_query(
    *,
    last: int | None = None,
    types: Sequence[str] | str | None = None,
    turn: str | None = None,
    since: str | datetime | None = None,
    after_sequence: int | None = None,
    agent_name: str | None = None,
) -> EventQuery:
    """Validate event filters into an ``EventQuery``.

    Raises:
        UsageError: for an unknown type, a negative count or a bad ``since``.
    """
    if isinstance(types, str):
        types = [t for t in types.split(",") if t]
    known = {t.value for t in EventType}
    for t in types or ():
        if t not in known:
            raise UsageError(f"unknown event type {t!r}; known types: {', '.join(sorted(known))}")
    if last is not None and last < 1:
        raise UsageError(f"--last must be a positive number, got {last}")
    if after_sequence is not None and after_sequence < 0:
        raise UsageError(f"--after-sequence must be 0 or more, got {after_sequence}")
    when = since if isinstance(since, datetime) or since is None else _since(since)
    return EventQuery(
        types=tuple(types or ()),
        agent_name=agent_name,
        turn_id=turn,
        since=when,
        after_sequence=after_sequence,
        limit=last,
    )


def _since(value: str) -> datetime:
    try:
        return parse_since(value)
    except AghError as exc:
        raise UsageError(str(exc)) from None


class Reader:
    """Reads over the store: sessions, events, history, status, SQL. Blocking; any thread."""

    live = False  # True for hosts that can run sessions (embedded or remote)

    def __init__(self, store: EventStore, *, home: Path, stale_after: float = 900.0, vault: Any = None) -> None:
        self.store = store
        self.home = home
        self._stale_after = stale_after
        self._vault_handle = vault
        self._repair_view = False

    # -- vault (metadata only on every surface) -----------------------------------------------

    def _vault(self) -> Any:
        if self._vault_handle is None:
            self._vault_handle = open_vault(self.home)
        return self._vault_handle

    def vault_put(self, ref: str, value: str, *, kind: str | None = None) -> JSON:
        """Store a secret under ``ref`` (never returned by any surface); returns its metadata."""
        parse_vault_ref(ref)
        if not value:
            raise UsageError(f"vault put {ref}: the value is empty; nothing was stored")
        entry: JSON = self._vault().put(ref, value, kind=kind).to_dict()
        return entry

    def vault_list(self, *, namespace: str | None = None, prefix: str | None = None) -> builtins.list[JSON]:
        """Return metadata of stored secrets (``ref``, ``namespace``, ``kind``, ``present``, times)."""
        return [e.to_dict() for e in self._vault().list(namespace=namespace, prefix=prefix)]

    def vault_get(self, ref: str) -> JSON:
        """Return one secret's metadata (never its value)."""
        parse_vault_ref(ref)
        entry: JSON = self._vault().get(ref).to_dict()
        return entry

    def vault_delete(self, ref: str) -> JSON:
        """Delete a secret; its value stops being redacted; returns the deleted metadata."""
        parse_vault_ref(ref)
        entry: JSON = self._vault().delete(ref).to_dict()
        return entry

    @classmethod
    def open(cls, home: Path | None = None) -> Reader:
        """Open ``$AGH_HOME``'s store read-only (for the CLI, when no host holds it)."""
        home = home or agh_home()
        if not (home / "agh.duckdb").exists():
            raise AghError(f"no agh_nb store at {home / 'agh.duckdb'}: create a session first (or set AGH_HOME)")
        reader = cls(open_store(home, read_only=True), home=home, stale_after=load_settings(home).stale_after)
        reader._repair_view = True
        return reader

    @classmethod
    def open_vault_only(cls, home: Path | None = None) -> Reader:
        """A reader for vault commands alone (the vault is a file of its own, not in the store);
        ``logs`` works on it too (the agent logs are files under the session directories)."""
        return cls(cast(EventStore, _NoStore()), home=home or agh_home())

    def close(self) -> None:
        """Close the store if this reader opened it."""
        close = getattr(self.store, "close", None)
        if close is not None:
            close()

    @property
    def stale_after(self) -> float:
        """Seconds of silence after which a session that is not stopped is ``stale``."""
        return self._stale_after

    def _live(self, session_id: str) -> LiveState | None:
        """The session as this host runs it; a reader runs none."""
        return None

    def get(self, session_id: str) -> SessionRecord:
        """Return a session's record (raises SessionNotFoundError)."""
        record = self.store.get_session(session_id)
        if record is None:
            raise SessionNotFoundError(
                f"no session {session_id!r}: list sessions with %agh session list", session_id=session_id
            )
        return self._view(record)

    def list(self) -> builtins.list[SessionRecord]:
        """Return every session, oldest first (live records overlaid on a live host)."""
        return current_records((self._view(r) for r in self.store.list_sessions()), self._live)

    def _view(self, record: SessionRecord) -> SessionRecord:
        # A read-only reader holds the store, so no host is alive: a session that is not stopped
        # was left by a dead host. Show it as crash repair will settle it (nothing is written).
        if self._repair_view and record.state is not SessionState.STOPPED:
            change = plan_crash_repair(record, datetime.now(timezone.utc))
            return change.apply(record) if change else record
        return record

    def transcript(self, session_id: str) -> builtins.list[JSON]:
        """Return the canonical transcript (user, assistant, tool_call, tool_result entries)."""
        return self._scrub_joined(build_transcript(self.events(session_id)))

    def _scrub_joined(self, value: _J) -> _J:
        # Each event was scrubbed when stored, but a secret an agent streamed across two chunks
        # is whole only once the chunks are joined: scrub what is joined again.
        try:
            vault = self._vault()
        except AghError:  # no readable vault here (no key): there is nothing known to scrub
            return value
        scrubbed: _J = vault.redactor.redact_json(value)
        return scrubbed

    def repair(self, session_id: str, *, dry_run: bool = True) -> JSON:
        """Show the repair plan of a session (a read-only reader can only plan)."""
        if not dry_run:
            raise UsageError("repair without --dry-run needs a live host: run %agh session repair in a notebook")
        record = self.store.get_session(session_id) or self.get(session_id)
        return plan_repair(record, self.events(session_id), datetime.now(timezone.utc)).to_dict() | {"applied": False}

    def events(self, session_id: str, query: EventQuery | None = None) -> builtins.list[Event]:
        """Return a session's events matching ``query`` (ascending sequence)."""
        self.get(session_id)
        return self.store.query_events(session_id, query or EventQuery())

    def history(self, session_id: str) -> builtins.list[JSON]:
        """Return a session's events grouped by turn."""
        return self._scrub_joined(group_by_turn(self.events(session_id)))

    def status(self, session_id: str) -> JSON:
        """Return state, stop reason, failure and health of a session (+ ``queue`` when live)."""
        return status_view(
            self.get(session_id), self._live(session_id), now=datetime.now(timezone.utc), stale_after=self._stale_after
        )

    def inspect(self, session_id: str) -> JSON:
        """Status plus ACP capabilities, queue, pending approvals and elicitations, the session's
        vault refs, and ``agent``: its auth methods, mode, model, config options, slash commands
        and the last lines of its log."""
        record = self.get(session_id)
        status = status_view(
            record, self._live(session_id), now=datetime.now(timezone.utc), stale_after=self._stale_after
        )
        return inspect_view(
            record,
            status,
            pending_approvals=self._pending_approvals(session_id),
            pending_elicitations=self._pending_elicitations(session_id),
            vault_refs=self.session_vault_refs(session_id),
            agent=self.agent(record),
        )

    def _pending_approvals(self, session_id: str) -> builtins.list[JSON]:
        return []  # nothing waits on a session no host runs

    def _pending_elicitations(self, session_id: str) -> builtins.list[JSON]:
        return []

    def session_vault_refs(self, session_id: str) -> builtins.list[JSON]:
        """Metadata of the secrets stored under the session's own vault namespace."""
        return self.vault_list(prefix=f"vault:sessions/{session_id}/")

    def agent(self, record: SessionRecord) -> JSON:
        """The ``agent`` part of ``inspect`` for ``record`` (its log's last lines included)."""
        lines, _ = read_log(log_dir(session_dir(self.home, record.id)), last=LOG_TAIL_LINES)
        return agent_view(record) | {"log_tail": lines}

    def logs(self, session_id: str, *, last: int | None = None, cursor: str | None = None) -> LogLines:
        """The agent's stderr as kept in its log (redacted): every line, the newest ``last``, or
        those written since ``cursor`` (``LogLines.cursor`` of an earlier call).

        Raises:
            SessionNotFoundError: no such session.
            UsageError: ``last`` below 1.
        """
        if last is not None and last < 1:
            raise UsageError(f"--last must be a positive number, got {last}")
        self._known(session_id)
        lines, next_cursor = read_log(log_dir(session_dir(self.home, session_id)), last=last, cursor=cursor)
        out = LogLines(lines)
        out.cursor = next_cursor
        return out

    def _known(self, session_id: str) -> None:
        if not isinstance(self.store, _NoStore):
            self.get(session_id)
        elif read_meta(self.home, session_id) is None:
            raise SessionNotFoundError(f"no session {session_id!r} in {self.home}", session_id=session_id)

    def sql(self, query: str) -> pandas.DataFrame:
        """Run a SQL query over the store and return a DataFrame."""
        if not query.strip():
            raise UsageError("the SQL cell is empty: write a query, e.g. SELECT * FROM sessions")
        result: pandas.DataFrame = self.store.sql(query)  # type: ignore[attr-defined]
        return result


    def export(
        self, directory: str | Path, *, since: str | datetime | None = None, session: str | None = None
    ) -> JSON:
        """Write what is new in the store into ``directory`` as Parquet (events by date, sessions,
        token_usage); exporting again adds only what is new. Blocking: reads and writes files.

        Args:
            directory: the export directory (``~`` and a relative path mean what they mean here).
            since: only events at or after this time (RFC3339, a duration like ``7d``, a datetime).
            session: only this session.

        Returns:
            ``{"dir", "events", "token_usage", "sessions", "files", "session_ids"}`` of this export.

        Raises:
            SessionNotFoundError: ``session`` is unknown.
            UsageError: a bad ``since``, or ``directory`` is not an export directory.
            ExportError: the directory is locked by another export or cannot be written.
        """
        if session is not None:
            self.get(session)
        when = since if isinstance(since, datetime) or since is None else _since(since)
        path = Path(os.path.abspath(os.path.expanduser(str(directory))))
        return export_parquet(self.store, path, since=when, session_id=session)


class _NoStore:
    """Stands for the store where only the vault is needed (CLI vault commands)."""

    def close(self) -> None:
        return None


class Host(Reader):
    """The embedded host: a ``Reader`` plus live operations through the runtime thread."""

    live = True

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(
            runtime.store, home=runtime.home, stale_after=runtime.settings.stale_after, vault=runtime.vault
        )
        self.runtime = runtime

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
    ) -> SessionRecord:
        """Create a session and start its agent; returns the ``active`` record.

        ``mode`` / ``model`` are set once the ACP session is open; ``auth`` is an ``authenticate``
        method run before it opens."""
        return self.runtime.call(
            lambda: self.runtime.manager.create(
                agent_name=agent,
                cwd=cwd,
                name=name,
                permissions=permissions,
                session_type=session_type,
                mode=mode,
                model=model,
                auth=auth,
            )
        )

    def set(
        self,
        session_id: str,
        *,
        mode: str | None = None,
        model: str | None = None,
        options: dict[str, str] | None = None,
    ) -> SessionRecord:
        """Set the agent's mode, model or config options (``session/set_mode``,
        ``session/set_config_option``); a value it does not offer is a ``CapabilityError``."""
        return self.runtime.call(
            lambda: self.runtime.manager.change(session_id, mode=mode, model=model, options=options)
        )

    def auth(self, session_id: str, method: str) -> SessionRecord:
        """Run ``authenticate METHOD`` and retry what failed (a stopped session is resumed)."""
        return self.runtime.call(lambda: self.runtime.manager.auth(session_id, method))

    def fork(self, session_id: str, *, name: str | None = None) -> SessionRecord:
        """A new session on a fork of this one's ACP session (``session/fork``)."""
        return self.runtime.call(lambda: self.runtime.manager.fork(session_id, name=name))

    def answer(self, session_id: str, request_id: str, values: dict[str, str], *, action: str = "accept") -> JSON:
        """Answer a pending elicitation (``accept`` with ``values``, or ``decline`` / ``cancel``)."""
        return self.runtime.call(
            lambda: self.runtime.manager.answer(session_id, request_id, values, action=action)
        )

    def pending_elicitations(self, session_id: str | None = None) -> builtins.list[JSON]:
        """Forms agents wait on (of one session, or all), oldest first."""
        if session_id is not None:
            self.get(session_id)
        pending: builtins.list[JSON] = self.runtime.call(
            lambda: _now(self.runtime.manager.elicitations.pending(session_id))
        )
        return pending

    def watch_elicitations(self, callback: Callable[[str, JSON], None]) -> Callable[[], None]:
        """Call ``callback(change, request)`` (``added``/``resolved``) on the runtime thread; returns unwatch."""
        broker = self.runtime.manager.elicitations
        unwatch: Callable[[], None] = self.runtime.call(lambda: _now(broker.add_listener(callback)))
        return unwatch

    def prompt(self, session_id: str, text: str, *, interrupt: bool = False) -> TurnHandle:
        """Queue a prompt; returns at once with a handle (its ``user_message`` is durable)."""
        turn: Turn = self.runtime.call(lambda: self.runtime.manager.prompt(session_id, text, interrupt=interrupt))

        async def finished() -> TurnResult:
            return await asyncio.shield(turn.future)

        return TurnHandle(turn.to_dict(), self.runtime.submit(finished))

    def stop(self, session_id: str, *, detail: str | None = None) -> SessionRecord:
        """Stop a session and return its final record."""
        return self.runtime.call(lambda: self.runtime.manager.stop(session_id, detail=detail))

    def _live(self, session_id: str) -> LiveState | None:
        return self.runtime.manager.live(session_id)

    def get(self, session_id: str) -> SessionRecord:
        """Return the freshest record (live if running here)."""
        live = self._live(session_id)
        return live.record if live is not None else super().get(session_id)

    def resume(self, session_id: str, *, replay_transcript: bool = False) -> SessionRecord:
        """Resume a stopped session under the same id (``session/resume`` or ``session/load``,
        else a fresh ACP session)."""
        return self.runtime.call(
            lambda: self.runtime.manager.resume(session_id, replay_transcript=replay_transcript)
        )

    def repair(self, session_id: str, *, dry_run: bool = True) -> JSON:
        """Plan (``dry_run``) or apply crash and transcript repair of a session."""
        return self.runtime.call(lambda: self.runtime.manager.repair(session_id, dry_run=dry_run))

    def approve(self, session_id: str, request_id: str, decision: str) -> JSON:
        """Decide a pending permission request; the decision is durable when this returns."""
        return self.runtime.call(lambda: self.runtime.manager.approve(session_id, request_id, decision))

    def pending_approvals(self, session_id: str | None = None) -> builtins.list[JSON]:
        """Return pending permission requests (of one session, or all), oldest first."""
        if session_id is not None:
            self.get(session_id)
        pending: builtins.list[JSON] = self.runtime.call(
            lambda: _now(self.runtime.manager.approvals.pending(session_id))
        )
        return pending

    def watch_approvals(self, callback: Callable[[str, JSON], None]) -> Callable[[], None]:
        """Call ``callback(change, request)`` (``added``/``resolved``) on the runtime thread; returns unwatch."""
        broker = self.runtime.manager.approvals
        unwatch: Callable[[], None] = self.runtime.call(lambda: _now(broker.add_listener(callback)))
        return unwatch

    def _pending_approvals(self, session_id: str) -> builtins.list[JSON]:
        return self.pending_approvals(session_id)

    def _pending_elicitations(self, session_id: str) -> builtins.list[JSON]:
        return self.pending_elicitations(session_id)

    def subscribe(self, session_id: str | None, after_sequence: int, callback: EventCallback) -> Subscription:
        """Subscribe to committed events (backlog after ``after_sequence``, then live)."""
        if session_id is not None:
            super().get(session_id)
        return self.store.subscribe(session_id, after_sequence, callback)

    def close(self) -> None:
        """Stop live sessions and close the runtime."""
        self.runtime.close()


class Session:
    """A notebook handle on one session: ``s.prompt("hi").wait()``, ``s.events()``, ``s.stop()``."""

    def __init__(self, host: HostProtocol, session_id: str) -> None:
        self._host = host
        self.id = session_id

    @property
    def record(self) -> SessionRecord:
        """The freshest record."""
        return self._host.get(self.id)

    @property
    def state(self) -> str:
        """The lifecycle state."""
        return self.record.state.value

    def prompt(self, text: str, *, wait: bool = False, interrupt: bool = False) -> TurnHandle | TurnResult:
        """Send a prompt; with ``wait=True`` block until the turn finishes."""
        handle = self._host.prompt(self.id, text, interrupt=interrupt)
        return handle.wait() if wait else handle

    def stop(self) -> SessionRecord:
        """Stop the session."""
        return self._host.stop(self.id)

    def events(self, **filters: Any) -> builtins.list[Event]:
        """Return events (filters: last, types, turn, since, after_sequence)."""
        return self._host.events(self.id, build_query(**filters))

    def history(self) -> builtins.list[JSON]:
        """Return the events grouped by turn."""
        return self._host.history(self.id)

    def status(self) -> JSON:
        """Return state, stop reason, failure and health."""
        return self._host.status(self.id)

    def set(self, *, mode: str | None = None, model: str | None = None, options: dict[str, str] | None = None) -> SessionRecord:
        """Set the agent's mode, model or config options."""
        return self._host.set(self.id, mode=mode, model=model, options=options)

    def logs(self, last: int | None = None) -> LogLines:
        """The agent's stderr as kept in its log (redacted)."""
        return self._host.logs(self.id, last=last)

    def to_dict(self) -> JSON:
        """The record's JSON form."""
        return self.record.to_dict()

    def __repr__(self) -> str:
        r = self.record
        extra = f" stop_reason={r.stop_reason.value}" if r.stop_reason else ""
        return f"<Session {r.id} agent={r.agent_name} state={r.state.value}{extra}>"


async def _now(value: Any) -> Any:
    return value
