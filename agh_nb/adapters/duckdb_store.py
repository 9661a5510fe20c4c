"""``DuckDBStore``: the agh_nb event store (SPEC 4) on one DuckDB file, ``$AGH_HOME/agh.duckdb``.

Owns: opening the file (and turning DuckDB's lock conflict into ``StoreLockedError``), the
``EventStore`` port (append, durable writes, reads, SQL) and live subscriptions. The batching
writer lives in ``duckdb_writer``, the two stage files new events go through (``agh.duckdb.stage0``
and ``.stage1``) in ``duckdb_stage``, the tables in ``duckdb_schema``. Must not import
core.session, runtime or kernel.

Threads: ``append`` runs on the runtime loop and never touches DuckDB; one writer thread commits
events to a stage file, one mover thread does every write to the main file; reads open a
short-lived cursor on the calling thread and see committed rows only (a read of events first has
the mover move what is staged). Subscriber callbacks run after the commit they report, on each
subscription's own delivery thread (``duckdb_subscriptions``), never on the writer's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import duckdb

from agh_nb.adapters import duckdb_schema as schema
from agh_nb.adapters.duckdb_ops import Barrier, MergeUsage, Op, SaveSession
from agh_nb.adapters.duckdb_stage import MOVE_INTERVAL, recover_stage, stage_paths
from agh_nb.adapters.duckdb_subscriptions import Subscription, SubscriptionHub
from agh_nb.adapters.duckdb_views import prepare_analytics
from agh_nb.adapters.duckdb_writer import GroupCommitWriter
from agh_nb.adapters.user_sql import QUERY_TIMEOUT, RESULT_MAX_BYTES, run_user_query
from agh_nb.core.ports import EventCallback
from agh_nb.core.private import make_private_dirs, make_private_file
from agh_nb.core.record import SessionRecord
from agh_nb.errors import StoreError, StoreLockedError
from agh_nb.events import JSON, Event, EventDraft, EventQuery, build_content, utcnow

if TYPE_CHECKING:
    import pandas

logger = logging.getLogger(__name__)

_BACKLOG_PAGE_SIZE = 5000
FLUSH_INTERVAL = 0.02
"""Seconds between group commits of a stream. A DuckDB commit costs milliseconds of CPU however
few rows it holds: at 20 ms an agent streaming 2,000 events/s costs the writer a quarter of a
core and each event waits 20-30 ms (p99) to be stored and visible; durable writes do not wait
(benchmarks/ingest.py, paced leg)."""
READ_DRAIN_TIMEOUT = 2.0
"""Seconds ``close`` waits for reads under way to end, then again after interrupting them."""
CHECKPOINT_THRESHOLD = "64MB"
"""DuckDB's automatic checkpoint threshold (default 16MB); measured in store_throughput.py."""
SANDBOX_CONFIG: dict[str, str | bool] = {
    # No file, URL, ATTACH, COPY, EXPORT, INSTALL or LOAD for any query on this instance.
    # DuckDB still reaches its own files (the database, its WAL, its temp directory).
    "enable_external_access": False,
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
    # A query must not read the calling Python frame's variables as tables.
    "python_enable_replacements": False,
    "checkpoint_threshold": CHECKPOINT_THRESHOLD,
}
"""Settings every agh_nb store instance opens with; ``open`` then locks the configuration.
A writable open leaves ``enable_external_access`` on only until it has attached the two stage
files, then switches it off (DuckDB refuses ``ATTACH`` without external access), before the DDL
and before any cursor but the opening one exists.

They hold for the whole DuckDB instance: one process has one instance of a file, so the writer's
cursor runs under them too (it needs none of what they forbid: inserts, Arrow scans of registered
tables, checkpoints). agh_nb itself reaches no folder through DuckDB, so no
``allowed_directories``: anything written outside the store (an export) goes through pyarrow."""

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
        move_interval: float,
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
        # Cursors in use by reads: the connection cannot close under them (DuckDB refuses with
        # ResourceInUseException), so close() waits for them, interrupting the slow ones.
        self._readers: set[duckdb.DuckDBPyConnection] = set()
        self._readers_done = threading.Condition()
        self._hub = SubscriptionHub()
        self._writer: GroupCommitWriter | None = None
        if not read_only:
            stage0, stage1 = stage_paths(path)
            self._writer = GroupCommitWriter(
                con.cursor(),
                flush_interval=flush_interval,
                max_batch=max_batch,
                publish=self._publish,
                mover_cursor=con.cursor(),
                wal_path=wal_path(path),
                stage_wal_paths=(wal_path(stage0), wal_path(stage1)),
                move_interval=move_interval,
            )

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        read_only: bool = False,
        flush_interval: float = FLUSH_INTERVAL,
        max_batch: int = 5000,
        move_interval: float = MOVE_INTERVAL,
        clock: Callable[[], datetime] = utcnow,
        new_id: Callable[[], str] = new_event_id,
    ) -> DuckDBStore:
        """Open (and when writable, create) the store at ``path``.

        Args:
            path: the DuckDB file, normally ``$AGH_HOME/agh.duckdb``.
            read_only: open without a writer (the CLI when no host is live); writes then raise.
            flush_interval: the shortest time between commits (after idling, or from the start of
                the previous one) unless a durable write waits; see ``FLUSH_INTERVAL``.
            max_batch: the most events one commit holds.
            move_interval: seconds between moves of staged events into ``events`` while nobody
                reads them (a read moves them at once); see ``duckdb_stage``.
            clock: returns aware UTC datetimes (``token_usage.updated_at``).
            new_id: returns event ids.

        Returns:
            The open store.

        Raises:
            StoreLockedError: another process holds the file.
            StoreError: the file or its directory cannot be opened or created.
            ValueError: ``max_batch`` is below 1.
        """
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        path = Path(path)
        if read_only and any(stage.exists() for stage in stage_paths(path)):
            # An earlier process ended without moving its last events out of the stage: a
            # writable open moves them (a read-only one could not, and would not show them).
            cls.open(path).close()
        config: dict[str, str | bool | int | float | list[str]] = dict(SANDBOX_CONFIG)
        if not read_only:
            # The stage files are attached first; external access goes off right after, below.
            config.pop("enable_external_access")
        try:
            if not read_only:
                make_private_dirs(path.parent)
            con = duckdb.connect(str(path), read_only=read_only, config=config)
        except duckdb.Error as exc:
            raise _open_error(path, exc) from exc
        except OSError as exc:
            raise StoreError(
                f"cannot open the agh_nb store {path}: {exc.strerror or exc}", path=str(path)
            ) from exc
        try:
            # The SQL surface shows the SPEC's zone (UTC) whatever the machine's zone is. (ICU's
            # option is unknown to connect(config=...), hence a SET before the lock.)
            con.execute("SET GLOBAL TimeZone = 'UTC'")
            if not read_only:
                for alias, stage in zip(schema.STAGE_ALIASES, stage_paths(path), strict=True):
                    quoted = str(stage).replace("'", "''")
                    con.execute(f"ATTACH '{quoted}' AS {alias}")
                con.execute("SET GLOBAL enable_external_access = false")
                for ddl in schema.DDL:
                    con.execute(ddl)
                prepare_analytics(con)  # derived columns on older stores, and the views
                moved = recover_stage(con)
                if moved:
                    logger.info("moved %d events an earlier process left in %s's stage", moved, path)
            # From here on no statement on any cursor of this instance (the writer's included)
            # can change a setting: the sandbox above holds for every user query.
            con.execute("SET GLOBAL lock_configuration = true")
        except duckdb.Error as exc:
            con.close()
            raise StoreError(
                f"cannot prepare the agh_nb store {path}: {_first_line(exc)}", path=str(path)
            ) from exc
        if not read_only:
            private_store_files(path)
        return cls(
            path,
            con,
            read_only=read_only,
            flush_interval=flush_interval,
            max_batch=max_batch,
            move_interval=move_interval,
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
        moved_all = self._writer.close() if self._writer is not None else False
        self._hub.close_all()
        self._wait_for_readers()
        try:
            self._con.close()
        except duckdb.Error as exc:  # a read began and would not end: the process exits anyway
            logger.warning("closing the agh_nb store %s: %s", self.path, _first_line(exc))
            return
        if moved_all:  # every event is in the main file: the (empty) stage files can go
            for stage in stage_paths(self.path):
                for leftover in (stage, wal_path(stage)):
                    with contextlib.suppress(OSError):
                        leftover.unlink()

    def _wait_for_readers(self) -> None:
        """Let the reads under way end (new ones are refused); interrupt those still running
        after ``READ_DRAIN_TIMEOUT``, and wait as long again."""
        with self._readers_done:
            if self._readers_done.wait_for(lambda: not self._readers, READ_DRAIN_TIMEOUT):
                return
            for cur in list(self._readers):
                with contextlib.suppress(duckdb.Error):
                    cur.interrupt()
            self._readers_done.wait_for(lambda: not self._readers, READ_DRAIN_TIMEOUT)

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

    def _publish(self, rows: Sequence[schema.EventRow]) -> None:
        # Writer thread, after a commit: rebuild events only for sessions someone listens to.
        wanted = self._hub.wanted()
        if not wanted:
            return
        if None in wanted:
            events = [schema.event_from_queued(r) for r in rows]
        else:
            events = [schema.event_from_queued(r) for r in rows if r[1] in wanted]
        if events:
            self._hub.publish(events)

    # -- writes ------------------------------------------------------------------------------

    def append(self, record: SessionRecord, draft: EventDraft) -> Event:
        """Assign the next sequence of ``record.id`` to ``draft`` and queue it for commit.

        Cheap and in-memory (call it on the runtime loop); the row is durable after the next
        group commit, and subscribers see it only then.

        Raises:
            StoreError: the store is read-only, closed or failed, or ``save_session`` was never
                awaited for this session (a bug).
        """
        content = self._content(record, draft)
        return schema.event_from_queued(self._require_writer().append(record, draft, content, self._new_id()), content)

    def backlog(self) -> int:
        """How far the writer is behind: rows and operations queued, not yet being committed."""
        writer = self._writer
        return writer.backlog() if writer is not None else 0

    def queue(self, record: SessionRecord, draft: EventDraft) -> None:
        """``append`` without building the returned ``Event`` (a session's updates: nobody reads
        it, and it was a sixth of the runtime's cost per update).

        Raises:
            StoreError: as ``append``.
        """
        self._require_writer().append(record, draft, self._content(record, draft), self._new_id())

    @staticmethod
    def _content(record: SessionRecord, draft: EventDraft) -> JSON:
        return build_content(
            draft.type,
            acp_session_id=record.acp_session_id,
            turn_id=draft.turn_id,
            timestamp=draft.timestamp,
            fields=draft.fields,
        )

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
        return [schema.event_from_row(r) for r in self._fetch(sql, params, events=True)]

    def last_sequence(self, session_id: str) -> int:
        """Return the highest committed sequence of ``session_id`` (0 when it has none)."""
        rows = self._fetch(schema.MAX_SEQUENCE, [session_id], one=True, events=True)
        return int(rows[0][0]) if rows else 0

    def sql(
        self, query: str, *, timeout: float | None = QUERY_TIMEOUT, max_bytes: int = RESULT_MAX_BYTES
    ) -> pandas.DataFrame:
        """Run a user's SQL query in DuckDB's sandbox and return a DataFrame (see ``user_sql``).

        Args:
            query: one query (SELECT, FROM-first, VALUES, SHOW, DESCRIBE, SUMMARIZE).
            timeout: seconds after which the query is interrupted (None: never).
            max_bytes: the largest result (Arrow bytes) returned; a larger one is refused.

        Raises:
            QueryError: the query is not a single query over the store, DuckDB refused or
                rejected it (one line), it ran past ``timeout``, its result is larger than
                ``max_bytes``, or the result cannot be shown as a DataFrame.
            StoreError: the store itself failed.
        """
        with self._reading(events=True) as cur:
            return run_user_query(cur, query, timeout=timeout, max_bytes=max_bytes)

    @contextlib.contextmanager
    def read_snapshot(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor inside a read-only transaction: one consistent view of the store across
        several queries (the Parquet export). Blocking; any thread; the caller only reads.

        Raises:
            StoreError: the store is closed, or the transaction cannot begin.
        """
        with self._reading(events=True) as cur:
            try:
                cur.execute("BEGIN TRANSACTION READ ONLY")
            except duckdb.Error as exc:
                raise StoreError(f"cannot read the agh_nb store: {_first_line(exc)}") from exc
            try:
                yield cur
            finally:
                with contextlib.suppress(duckdb.Error):
                    cur.execute("ROLLBACK")

    def _fetch(self, sql: str, params: list[Any], *, one: bool = False, events: bool = False) -> list[Any]:
        with self._reading(events=events) as cur:
            try:
                result = cur.execute(sql, params)
                if one:
                    row = result.fetchone()
                    return [row] if row is not None else []
                return result.fetchall()
            except duckdb.Error as exc:
                raise StoreError(f"cannot read the agh_nb store: {_first_line(exc)}") from exc

    @contextlib.contextmanager
    def _reading(self, *, events: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A fresh cursor for one read, closed at the end; ``close`` waits for it. With
        ``events``, every event committed so far is first moved out of the stage.

        Raises:
            StoreError: the store is closed (or closing), or no cursor can be opened.
        """
        if events and self._writer is not None and not self._closed:
            self._writer.drain()
        with self._readers_done:
            if self._closed:
                raise StoreError("the store is closed", path=str(self.path))
            try:
                cur = self._con.cursor()
            except duckdb.Error as exc:
                raise StoreError(f"cannot read the agh_nb store: {_first_line(exc)}") from exc
            self._readers.add(cur)
        try:
            yield cur
        finally:
            with contextlib.suppress(duckdb.Error):
                cur.close()
            with self._readers_done:
                self._readers.discard(cur)
                self._readers_done.notify_all()

    # -- subscriptions -----------------------------------------------------------------------

    def subscribe(
        self, session_id: str | None, after_sequence: int, callback: EventCallback, *, inline: bool = False
    ) -> Subscription:
        """Deliver committed events with sequence > ``after_sequence``: backlog, then live.

        Registration comes first (live batches are buffered), then the backlog is read and
        delivered on the calling thread, then the buffer, then live batches on the
        subscription's delivery thread (on the writer thread when ``inline``: the callback must
        not block); each event is delivered exactly once, in order. ``session_id=None`` means
        every session, live only (``after_sequence`` must be 0). Blocking: call off the loop.

        Raises:
            ValueError: ``session_id`` is None and ``after_sequence`` is not 0.
            StoreError: the store is closed, or the backlog cannot be read.
        """
        if session_id is None and after_sequence != 0:
            raise ValueError("a subscription to every session is live only (after_sequence=0)")
        if self._closed:
            raise StoreError("the store is closed", path=str(self.path))
        if session_id is None:
            return self._hub.subscribe(None, 0, callback, tuple, inline=inline)
        return self._hub.subscribe(
            session_id,
            after_sequence,
            callback,
            lambda: self._backlog_pages(session_id, after_sequence),
            inline=inline,
        )

    def _backlog_pages(self, session_id: str, after_sequence: int) -> Iterator[list[Event]]:
        # Pages keep a reconnect after a long session from loading every row at once.
        last = after_sequence
        while True:
            rows = self._fetch(schema.BACKLOG_PAGE, [session_id, last, _BACKLOG_PAGE_SIZE], events=True)
            if not rows:
                return
            page = [schema.event_from_row(r) for r in rows]
            yield page
            if len(rows) < _BACKLOG_PAGE_SIZE:
                return
            last = page[-1].sequence


def wal_path(path: Path) -> Path:
    """Where DuckDB keeps the write-ahead log of the database at ``path``."""
    return path.with_name(path.name + ".wal")


def private_store_files(path: Path) -> None:
    """Make DuckDB's files of ``path`` owner-only; DuckDB creates them as the umask says.

    The database file, the stage files and their WALs become 0600 (the writer threads re-tighten a
    WAL that DuckDB recreates after a checkpoint), and the spill directory DuckDB would create for queries
    larger than memory is made 0700 in advance.
    """
    make_private_file(path)
    make_private_file(wal_path(path))
    for stage in stage_paths(path):
        make_private_file(stage)
        make_private_file(wal_path(stage))
    make_private_dirs(path.with_name(path.name + ".tmp"))


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
