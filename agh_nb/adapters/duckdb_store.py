"""``DuckDBStore``: the agh_nb event store (SPEC 4) on one DuckDB file, ``$AGH_HOME/agh.duckdb``.

Owns: opening the file (and turning DuckDB's lock conflict into ``StoreLockedError``), the
``EventStore`` port (append, durable writes, reads, SQL) and live subscriptions. The batching
writer lives in ``duckdb_writer``, the tables in ``duckdb_schema``.
Must not import core.session, runtime or kernel.

Threads: ``append`` runs on the runtime loop and never touches DuckDB; one writer thread owns the
only write cursor; reads open a short-lived cursor on the calling thread and see committed rows
only. Subscriber callbacks run on the writer thread after the commit they report.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import duckdb

from agh_nb.adapters import duckdb_schema as schema
from agh_nb.adapters.duckdb_writer import (
    Barrier,
    GroupCommitWriter,
    MergeUsage,
    Op,
    SaveSession,
)
from agh_nb.core.ports import EventCallback
from agh_nb.core.record import SessionRecord
from agh_nb.errors import StoreError, StoreLockedError
from agh_nb.events import JSON, Event, EventDraft, EventQuery, build_content, utcnow

if TYPE_CHECKING:
    import pandas

logger = logging.getLogger(__name__)

_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<exe>.*?) \(PID (?P<pid>\d+)\)")


# Event ids are uuid4-shaped but drawn from a private generator: ``uuid.uuid4()`` makes one
# getrandom syscall and one UUID object per event, a third of ``append``'s cost. The generator is
# seeded from os.urandom, reseeded in forked children, and untouched by user ``random.seed``.
_ID_RANDOM = random.Random()
os.register_at_fork(after_in_child=_ID_RANDOM.seed)
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))  # version and variant bits
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant


def new_event_id() -> str:
    """Return a fresh event id: ``evt_`` + the 32 hex digits of a random UUID4."""
    return f"evt_{_ID_RANDOM.getrandbits(128) & _UUID4_CLEAR | _UUID4_SET:032x}"


class DuckDBStore:
    """The durable, ordered event log and session table of agh_nb (implements ``EventStore``).

    Build it with ``DuckDBStore.open(path)``; close it with ``close()`` (or ``with``/``async
    with``). ``append`` is cheap and in-memory; rows become durable at the next group commit.
    """

    def __init__(
        self,
        path: Path,
        con: duckdb.DuckDBPyConnection,
        *,
        read_only: bool,
        flush_interval: float,
        max_batch: int,
        clock: Callable[[], datetime],
        new_id: Callable[[], str],
    ) -> None:
        """Wrap an open connection; use ``open`` instead."""
        self.path = path
        self.read_only = read_only
        self._con = con
        self._clock = clock
        self._new_id = new_id
        self._closed = False
        self._close_lock = threading.Lock()
        self._subs_lock = threading.Lock()
        # Copy-on-write: the writer reads this dict without the lock.
        self._subs: dict[str | None, tuple[_Subscription, ...]] = {}
        self._writer: GroupCommitWriter | None = None
        if not read_only:
            self._writer = GroupCommitWriter(
                con.cursor(),
                flush_interval=flush_interval,
                max_batch=max_batch,
                publish=self._publish,
            )

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        read_only: bool = False,
        flush_interval: float = 0.005,
        max_batch: int = 5000,
        clock: Callable[[], datetime] = utcnow,
        new_id: Callable[[], str] = new_event_id,
    ) -> DuckDBStore:
        """Open (and when writable, create) the store at ``path``.

        Args:
            path: the DuckDB file, normally ``$AGH_HOME/agh.duckdb``.
            read_only: open without a writer (the CLI when no host is live); writes then raise.
            flush_interval: seconds the writer lingers after idling so a burst shares a commit.
            max_batch: the most events one commit holds.
            clock: returns aware UTC datetimes (``token_usage.updated_at``).
            new_id: returns event ids.

        Returns:
            The open store.

        Raises:
            StoreLockedError: another process holds the file.
            StoreError: the file or its directory cannot be opened or created.
        """
        path = Path(path)
        try:
            if not read_only:
                path.parent.mkdir(parents=True, exist_ok=True)
            con = duckdb.connect(str(path), read_only=read_only)
        except duckdb.Error as exc:
            raise _open_error(path, exc) from exc
        except OSError as exc:
            raise StoreError(
                f"cannot open the agh_nb store {path}: {exc.strerror or exc}", path=str(path)
            ) from exc
        try:
            # The SQL surface shows the SPEC's zone (UTC) whatever the machine's zone is.
            con.execute("SET GLOBAL TimeZone = 'UTC'")
            if not read_only:
                for ddl in schema.DDL:
                    con.execute(ddl)
        except duckdb.Error as exc:
            con.close()
            raise StoreError(
                f"cannot prepare the agh_nb store {path}: {_first_line(exc)}", path=str(path)
            ) from exc
        return cls(
            path,
            con,
            read_only=read_only,
            flush_interval=flush_interval,
            max_batch=max_batch,
            clock=clock,
            new_id=new_id,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Commit everything pending, stop the writer and close the file; idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if self._writer is not None:
            self._writer.close()
        with self._subs_lock:
            subs = [s for group in self._subs.values() for s in group]
            self._subs = {}
        for sub in subs:
            sub.close()
        self._con.close()

    async def aclose(self) -> None:
        """Close the store off the event loop (the final commit may take a moment)."""
        await asyncio.to_thread(self.close)

    def __enter__(self) -> DuckDBStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> DuckDBStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- writes ------------------------------------------------------------------------------

    def append(self, record: SessionRecord, draft: EventDraft) -> Event:
        """Assign the next sequence of ``record.id`` to ``draft`` and queue it for commit.

        Cheap and in-memory (call it on the runtime loop); the row is durable after the next
        group commit, and subscribers see it only then.

        Raises:
            StoreError: the store is read-only, closed or failed, or ``save_session`` was never
                awaited for this session (a bug).
        """
        writer = self._require_writer()
        content = build_content(
            draft.type,
            acp_session_id=record.acp_session_id,
            turn_id=draft.turn_id,
            timestamp=draft.timestamp,
            fields=draft.fields,
        )
        event_id = self._new_id()
        event_type = str(draft.type)

        def build(sequence: int) -> Event:
            return Event(
                id=event_id,
                session_id=record.id,
                sequence=sequence,
                turn_id=draft.turn_id,
                type=event_type,
                agent_name=record.agent_name,
                workspace_id=record.workspace_id,
                workspace_path=record.workspace_path,
                content=content,
                timestamp=draft.timestamp,
            )

        return writer.append(record.id, build)

    async def append_durable(self, record: SessionRecord, draft: EventDraft) -> Event:
        """Append ``draft`` and return once it (and every earlier row) is committed.

        Raises:
            StoreError: as ``append``, or the commit failed.
        """
        event = self.append(record, draft)
        await self._wait(Barrier())
        return event

    async def flush(self) -> None:
        """Return once everything appended so far is committed.

        Raises:
            StoreError: the store is read-only, closed, or a commit failed.
        """
        await self._wait(Barrier())

    async def save_session(self, record: SessionRecord) -> None:
        """Upsert the session row, ordered after earlier appends, and wait for the commit.

        The first save of a session in this process also loads its stored max(sequence), so
        appends continue at max + 1 after a restart.

        Raises:
            StoreError: the store is read-only, closed, or the commit failed.
        """
        writer = self._require_writer()
        await self._wait(SaveSession(record, prime=not writer.knows(record.id)))

    async def merge_usage(self, session_id: str, turn_id: str, usage: JSON) -> None:
        """Merge a usage report into the turn's one ``token_usage`` row; latest non-null wins.

        Args:
            session_id: the AGH session id (its ``agent_name`` is copied from ``sessions``).
            turn_id: the turn the report belongs to.
            usage: token counts (``input_tokens`` ... ``total_tokens``), and/or the context
                window ``used``/``size`` and ``cost: {amount, currency}``.

        Raises:
            StoreError: the store is read-only, closed, or the commit failed.
        """
        values = schema.usage_values(usage)
        await self._wait(MergeUsage(session_id, turn_id, values, self._clock()))

    async def _wait(self, op: Op) -> None:
        self._require_writer().submit(op)
        await op.waiter.future

    def _require_writer(self) -> GroupCommitWriter:
        if self._writer is None:
            raise StoreError("the store is open read-only", path=str(self.path))
        return self._writer

    # -- reads (blocking; any thread) --------------------------------------------------------

    def get_session(self, session_id: str) -> SessionRecord | None:
        """Return the stored record of ``session_id``, or None."""
        row = self._fetch(schema.SELECT_SESSION, [session_id], one=True)
        return schema.session_from_row(row[0]) if row else None

    def list_sessions(self) -> list[SessionRecord]:
        """Return every stored session, oldest first."""
        return [schema.session_from_row(r) for r in self._fetch(schema.SELECT_SESSIONS, [])]

    def query_events(self, session_id: str, query: EventQuery) -> list[Event]:
        """Return the committed events of ``session_id`` matching ``query``, ascending.

        ``query.limit`` keeps the newest N (still returned oldest first).
        """
        if query.limit is not None and query.limit <= 0:
            return []
        sql, params = schema.events_select(session_id, query)
        return [schema.event_from_row(r) for r in self._fetch(sql, params)]

    def last_sequence(self, session_id: str) -> int:
        """Return the highest committed sequence of ``session_id`` (0 when it has none)."""
        rows = self._fetch(schema.MAX_SEQUENCE, [session_id], one=True)
        return int(rows[0][0]) if rows else 0

    def sql(self, query: str) -> pandas.DataFrame:
        """Run a user's SQL query in a read-only transaction and return a DataFrame.

        Raises:
            StoreError: DuckDB rejected the query (its one-line message), or it tried to write.
        """
        cur = self._cursor()
        try:
            cur.execute("SET python_enable_replacements = false")  # no Python locals as tables
            cur.execute("BEGIN TRANSACTION READ ONLY")
            relation = cur.sql(query)
            table = relation.to_arrow_table() if relation is not None else None
            cur.execute("ROLLBACK")
        except duckdb.Error as exc:
            raise StoreError(_first_line(exc), query=query) from exc
        finally:
            cur.close()
        if table is None:
            import pandas

            return pandas.DataFrame()
        return table.to_pandas()

    def _fetch(self, sql: str, params: list[Any], *, one: bool = False) -> list[Any]:
        cur = self._cursor()
        try:
            result = cur.execute(sql, params)
            if one:
                row = result.fetchone()
                return [row] if row is not None else []
            return result.fetchall()
        except duckdb.Error as exc:
            raise StoreError(f"cannot read the agh_nb store: {_first_line(exc)}") from exc
        finally:
            cur.close()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        if self._closed:
            raise StoreError("the store is closed", path=str(self.path))
        try:
            return self._con.cursor()
        except duckdb.Error as exc:
            raise StoreError(f"cannot read the agh_nb store: {_first_line(exc)}") from exc

    # -- subscriptions -----------------------------------------------------------------------

    def subscribe(
        self, session_id: str | None, after_sequence: int, callback: EventCallback
    ) -> _Subscription:
        """Deliver committed events with sequence > ``after_sequence``: backlog, then live.

        Registration comes first (live batches are buffered), then the backlog is read and
        delivered on the calling thread, then the buffer, then live batches on the writer
        thread; each event is delivered exactly once, in order. ``session_id=None`` means
        every session, live only (``after_sequence`` must be 0). Blocking: call off the loop.

        Raises:
            ValueError: ``session_id`` is None and ``after_sequence`` is not 0.
            StoreError: the store is closed, or the backlog cannot be read.
        """
        if session_id is None and after_sequence != 0:
            raise ValueError("a subscription to every session is live only (after_sequence=0)")
        if self._closed:
            raise StoreError("the store is closed", path=str(self.path))
        sub = _Subscription(self, session_id, after_sequence, callback)
        with self._subs_lock:
            subs = dict(self._subs)
            subs[session_id] = (*subs.get(session_id, ()), sub)
            self._subs = subs
        if session_id is None:
            sub.go_live([])
            return sub
        try:
            backlog = self.query_events(session_id, EventQuery(after_sequence=after_sequence))
        except BaseException:
            sub.close()
            raise
        sub.go_live(backlog)
        return sub

    def _unsubscribe(self, sub: _Subscription) -> None:
        with self._subs_lock:
            group = tuple(s for s in self._subs.get(sub.session_id, ()) if s is not sub)
            subs = dict(self._subs)
            if group:
                subs[sub.session_id] = group
            else:
                subs.pop(sub.session_id, None)
            self._subs = subs

    def _publish(self, events: Sequence[Event]) -> None:
        # Writer thread, after the commit of ``events``.
        subs = self._subs
        if not subs:
            return
        everyone = subs.get(None)
        if everyone:
            batch = tuple(events)
            for sub in everyone:
                sub.offer(batch)
        if len(subs) > (1 if everyone else 0):
            by_session: dict[str, list[Event]] = {}
            for event in events:
                if event.session_id in subs:
                    by_session.setdefault(event.session_id, []).append(event)
            for sid, group in by_session.items():
                batch = tuple(group)
                for sub in subs.get(sid, ()):
                    sub.offer(batch)


class _Subscription:
    """One subscriber: buffers live batches until its backlog is delivered, then goes live."""

    def __init__(
        self,
        store: DuckDBStore,
        session_id: str | None,
        after_sequence: int,
        callback: EventCallback,
    ) -> None:
        self.session_id = session_id
        self._store = store
        self._callback = callback
        self._last = after_sequence
        self._lock = threading.Lock()
        self._catching_up = True
        self._buffer: list[Event] = []
        self._closed = False

    def close(self) -> None:
        """Stop delivering events; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._buffer = []
        self._store._unsubscribe(self)

    def offer(self, events: Sequence[Event]) -> None:
        """Take a committed batch (writer thread): buffer it while catching up, else deliver."""
        with self._lock:
            if self._closed:
                return
            if self._catching_up:
                self._buffer.extend(events)
                return
        self._deliver(events)

    def go_live(self, backlog: Sequence[Event]) -> None:
        """Deliver the backlog, then whatever was buffered meanwhile, then switch to live."""
        pending: Sequence[Event] = backlog
        while True:
            self._deliver(pending)
            with self._lock:
                if not self._buffer or self._closed:
                    self._catching_up = False
                    self._buffer = []
                    return
                pending, self._buffer = self._buffer, []

    def _deliver(self, events: Sequence[Event]) -> None:
        if not events or self._closed:
            return
        if self.session_id is not None:
            last = self._last
            if events[0].sequence <= last:
                events = [e for e in events if e.sequence > last]
                if not events:
                    return
            self._last = events[-1].sequence
        try:
            self._callback(events)
        except Exception:
            logger.exception("event subscriber callback failed (session %s)", self.session_id)


def _open_error(path: Path, exc: duckdb.Error) -> StoreError:
    text = str(exc)
    if isinstance(exc, duckdb.IOException) and "lock" in text.lower():
        match = _LOCK_HOLDER.search(text)
        if match:
            exe, pid = os.path.basename(match["exe"]), int(match["pid"])
            holder = f" ({exe}, pid {pid})"
        else:
            pid, holder = None, ""
        return StoreLockedError(
            f"the agh_nb store {path} is in use by another process{holder}: "
            "stop that kernel or server, or set AGH_HOME to another directory",
            pid=pid,
            path=str(path),
        )
    return StoreError(f"cannot open the agh_nb store {path}: {_first_line(exc)}", path=str(path))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
