"""The group-commit writer behind ``DuckDBStore``: one thread, one cursor, submission order.

Owns: the submission queue, the per-session sequence counters, the writer thread and its DuckDB
cursor, and the hand-back of results to asyncio loops. Must not import core.session, runtime or
kernel.

How a commit happens: producers put events (and session upserts, usage merges, barriers) on one
list under one lock, in the order they happened. An event waits there as an ``EventRow`` (a tuple,
its content already JSON text) rather than as dicts: rows pending a commit cost the garbage
collector nothing. The writer swaps the whole list out, cuts it into chunks of at most
``max_batch`` events, and runs each chunk as ONE transaction (events go in through one Arrow table
per run). Only after ``COMMIT`` returns does it hand the chunk's rows to ``publish`` (store first,
then notify: ``publish`` only posts them to each subscription's mailbox, it never runs a
subscriber) and then resolve the chunk's waiters. A failed commit fails every waiter
of that chunk and everything queued after it, and the writer refuses further writes: later
sequences would otherwise leave a gap or be acknowledged out of order.

Checkpoints: DuckDB blocks commits while it folds the WAL into the database file. The store
raises DuckDB's automatic threshold and the writer checkpoints by itself once it has been idle
for ``IDLE_CHECKPOINT_AFTER`` seconds, so the stall lands between turns rather than inside one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

import duckdb

from agh_nb.adapters import derived_columns as derived
from agh_nb.adapters import duckdb_schema as schema
from agh_nb.core.private import make_private_file
from agh_nb.core.record import SessionRecord
from agh_nb.errors import StoreError
from agh_nb.events import JSON, EventDraft, EventType, dumps

logger = logging.getLogger(__name__)

IDLE_CHECKPOINT_AFTER = 1.0
"""Seconds without work after which the writer checkpoints a grown WAL."""
IDLE_CHECKPOINT_MIN_WAL = 1 << 20
"""Smallest WAL (bytes) worth an idle checkpoint."""
OOM_RETRY_FOR = 150.0
"""Seconds a commit that ran out of memory is retried: longer than a user query may run
(``duckdb_store.QUERY_TIMEOUT``), whose memory it waits for."""


class WriterState(Enum):
    """Lifecycle of the writer."""

    OPEN = "open"
    """Accepting writes."""
    FAILED = "failed"
    """A commit failed; writes are refused with that failure, reads still work."""
    CLOSED = "closed"
    """``close()`` was called; what was queued before is committed, new writes are refused."""


class Waiter:
    """A future on some asyncio loop that the writer thread resolves thread-safely."""

    __slots__ = ("future", "loop")

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[None] = self.loop.create_future()

    def resolve(self) -> None:
        """Mark the awaited work committed."""
        self._call(_set_result, None)

    def fail(self, error: BaseException) -> None:
        """Report that the awaited work was not committed."""
        self._call(_set_exception, error)

    def _call(self, fn: Callable[[asyncio.Future[None], Any], None], arg: Any) -> None:
        # RuntimeError: the loop is closed, so nobody awaits this future any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(fn, self.future, arg)


def _set_result(future: asyncio.Future[None], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[None], error: Any) -> None:
    if not future.done():
        future.set_exception(error)


class Barrier:
    """Resolves once everything submitted before it is committed."""

    __slots__ = ("waiter",)

    def __init__(self) -> None:
        self.waiter = Waiter()


class SaveSession:
    """Upsert one session row; ``prime`` loads the session's stored max(sequence) first."""

    __slots__ = ("prime", "record", "waiter")

    def __init__(self, record: SessionRecord, prime: bool) -> None:
        self.record = record
        self.prime = prime
        self.waiter = Waiter()


class MergeUsage:
    """Merge one usage report into the ``token_usage`` row of a turn."""

    __slots__ = ("session_id", "turn_id", "updated_at", "values", "waiter")

    def __init__(
        self, session_id: str, turn_id: str, values: dict[str, Any], updated_at: datetime
    ) -> None:
        self.session_id = session_id
        self.turn_id = turn_id
        self.values = values
        self.updated_at = updated_at
        self.waiter = Waiter()


Op = Barrier | SaveSession | MergeUsage
_Step = list[schema.EventRow] | Op


class GroupCommitWriter:
    """Commits submitted work in order, in batches, on its own thread.

    Args:
        cursor: a DuckDB cursor used only by the writer thread.
        flush_interval: the shortest time from waking up, or from the start of the previous
            commit, to the next commit, so a burst or a stream shares commits; durability
            waiters (``submit``) skip the wait.
        max_batch: the most events one transaction holds.
        publish: called on the writer thread with each committed chunk's rows, in order.
        wal_path: the database's write-ahead log; when given, the writer checkpoints after
            ``IDLE_CHECKPOINT_AFTER`` seconds of idleness if the log holds at least
            ``IDLE_CHECKPOINT_MIN_WAL`` bytes.
    """

    def __init__(
        self,
        cursor: duckdb.DuckDBPyConnection,
        *,
        flush_interval: float,
        max_batch: int,
        publish: Callable[[Sequence[schema.EventRow]], None],
        wal_path: Path | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._cursor = cursor
        self._flush_interval = max(flush_interval, 0.0)
        self._max_batch = max_batch
        self._publish = publish
        self._cond = threading.Condition()
        self._queue: list[schema.EventRow | Op] = []
        self._last_seq: dict[str, int] = {}
        # Per session, the agent message or thought that the next chunk may continue (its
        # ``message_seq``); unknown after a restart, which never falls inside a message.
        self._open_message: dict[str, derived.OpenMessage | None] = {}
        self._state = WriterState.OPEN
        self._failure: StoreError | None = None
        self._idle = False  # the writer waits for work: the next submission must wake it
        self._lingering = False  # the writer gathers a burst: wake it only when the batch is full
        self._urgent = False  # a waiter is queued: do not linger
        self._wal_path = wal_path
        self._wal_grew = False  # committed since the last idle checkpoint
        self._last_commit = 0.0  # monotonic time the last commit began
        self._thread = threading.Thread(target=self._run, name="agh-nb-store-writer", daemon=True)
        self._thread.start()
        # pyarrow imports pandas on its first list conversion: pay that now, not in the first
        # commit's latency. On a thread of its own that close() does not wait for: the import
        # takes seconds on a busy machine, and a kernel restarted meanwhile has only a few.
        threading.Thread(target=schema.warm_up, name="agh-nb-store-warm-up", daemon=True).start()

    # -- producer side (any thread; append is the hot path) ---------------------------------

    def append(
        self, record: SessionRecord, draft: EventDraft, content: JSON, event_id: str
    ) -> schema.EventRow:
        """Assign the next sequence of ``record.id``, build the event row, queue it and return it.

        Sequence assignment and queueing happen under one lock, so queue order is sequence
        order even when several threads append to the same session. The content is encoded
        here, once: the queued row carries the JSON text that is stored.

        Raises:
            StoreError: the writer is not open, or the session was never primed (a bug).
            ValueError: ``draft.type`` is not an event type of the SPEC (a bug).
        """
        session_id = record.id
        kind = draft.type
        # _value_: a plain attribute, where ``.value`` is a Python-level property (0.2 us a call).
        event_type: str = kind._value_ if type(kind) is EventType else EventType(kind)._value_
        encoded = dumps(content)
        text, call_id, tool_name, title, status = derived.derived_fields(event_type, content)
        with self._cond:
            if self._state is not WriterState.OPEN:
                raise self._refusal()
            last = self._last_seq.get(session_id)
            if last is None:
                raise StoreError(
                    f"session {session_id}: append before save_session primed its sequence "
                    "(a bug in the caller)",
                    session_id=session_id,
                )
            sequence = last + 1
            self._last_seq[session_id] = sequence
            message_seq, self._open_message[session_id] = derived.place_in_message(
                self._open_message.get(session_id), event_type, draft.turn_id, text, sequence
            )
            row: schema.EventRow = (
                event_id,
                session_id,
                sequence,
                draft.turn_id,
                event_type,
                record.agent_name,
                record.workspace_id,
                record.workspace_path,
                encoded,
                draft.timestamp,
                text,
                call_id,
                tool_name,
                title,
                status,
                message_seq,
            )
            self._queue.append(row)
            if self._idle or (self._lingering and len(self._queue) >= self._max_batch):
                self._cond.notify()
        return row

    def submit(self, op: Op) -> None:
        """Queue ``op`` after everything submitted so far; its waiter resolves after commit."""
        with self._cond:
            if self._state is not WriterState.OPEN:
                raise self._refusal()
            self._queue.append(op)
            self._urgent = True
            if self._idle or self._lingering:
                self._cond.notify()

    def backlog(self) -> int:
        """Rows and operations queued and not yet taken by the writer (read without the lock:
        a hint for producers that can wait, never a count to rely on)."""
        return len(self._queue)

    def knows(self, session_id: str) -> bool:
        """Return True once ``session_id`` has a sequence counter in this process."""
        with self._cond:
            return session_id in self._last_seq

    def close(self) -> None:
        """Refuse new work, commit what is queued, and stop the thread (idempotent)."""
        with self._cond:
            if self._state is WriterState.OPEN:
                self._state = WriterState.CLOSED
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _refusal(self) -> StoreError:
        if self._state is WriterState.FAILED and self._failure is not None:
            return StoreError(
                f"the store refuses writes after a failed commit: {self._failure}",
                cause=str(self._failure),
            )
        return StoreError("the store is closed", state=self._state.value)

    # -- writer thread -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException:  # a bug: never leave an awaiting caller hanging
            logger.exception("event store writer crashed")
            self._fail_rest(StoreError("the event store writer crashed"), [])
        finally:
            with contextlib.suppress(duckdb.Error):
                self._cursor.close()

    def _loop(self) -> None:
        while True:
            with self._cond:
                woke_from_idle = checkpoint = False
                while not self._queue and self._state is WriterState.OPEN:
                    self._idle = woke_from_idle = True
                    timeout = IDLE_CHECKPOINT_AFTER if self._wal_grew else None
                    if not self._cond.wait(timeout) and not self._queue:
                        checkpoint = True  # idle for a while: checkpoint outside the lock
                        break
                self._idle = False
                if not checkpoint:
                    # Gather a burst: commit no sooner than flush_interval after waking up, or
                    # after the previous commit began (a steady stream then shares commits
                    # instead of paying DuckDB's per-commit cost for a handful of rows each).
                    since = time.monotonic() if woke_from_idle else self._last_commit
                    self._linger(since + self._flush_interval)
                ops, self._queue = self._queue, []
                self._last_commit = time.monotonic()
                self._urgent = False
                done = self._state is not WriterState.OPEN
            if checkpoint:
                self._idle_checkpoint()
            if ops:
                try:
                    self._process(ops)
                except Exception:  # a bug here must not leave awaiting callers hanging
                    logger.exception("event store writer crashed")
                    self._fail_rest(StoreError("the event store writer crashed"), ops)
            if done:
                with self._cond:
                    if not self._queue:
                        return

    def _idle_checkpoint(self) -> None:
        # DuckDB folds the WAL into the database file at a checkpoint and blocks commits while
        # it runs (100-600 ms for a 16 MB WAL on a slow machine). Doing it once the writer has
        # been idle for a while keeps that stall out of a streaming turn; the (raised)
        # automatic threshold remains the backstop under sustained load.
        self._wal_grew = False
        try:
            if self._wal_path is None or self._wal_path.stat().st_size < IDLE_CHECKPOINT_MIN_WAL:
                return
        except OSError:  # no WAL (nothing to fold) or unreadable: not worth failing for
            return
        try:
            self._cursor.execute("CHECKPOINT").fetchall()
        except duckdb.Error as exc:  # e.g. a user's read transaction is open: try next time
            self._wal_grew = True
            logger.debug("idle checkpoint skipped: %s", _first_line(exc))

    def _private_wal(self) -> None:
        # DuckDB deletes the WAL at each checkpoint and creates the next one with the umask's
        # mode; the store's files are owner-only (SPEC 7). One lstat per commit, about 1 us.
        if self._wal_path is not None:
            with contextlib.suppress(OSError):
                make_private_file(self._wal_path)

    def _linger(self, deadline: float) -> None:
        # Called with the lock held: wait until ``deadline`` for a burst to gather, unless a
        # durability waiter is queued or a batch is full.
        if self._flush_interval <= 0 or time.monotonic() >= deadline:
            return
        self._lingering = True
        try:
            while (
                not self._urgent
                and len(self._queue) < self._max_batch
                and self._state is WriterState.OPEN
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
        finally:
            self._lingering = False

    def _process(self, ops: list[schema.EventRow | Op]) -> None:
        steps: list[_Step] = []
        run: list[schema.EventRow] | None = None
        count = 0
        for index, op in enumerate(ops):
            if type(op) is tuple:
                if run is None:
                    run = []
                    steps.append(run)
                run.append(op)
                count += 1
                if count < self._max_batch:
                    continue
            else:
                run = None
                steps.append(op)  # type: ignore[arg-type]
                continue
            if not self._commit_or_fail(steps, ops[index + 1 :]):
                return
            steps, run, count = [], None, 0
        if steps:
            self._commit_or_fail(steps, [])

    def _commit_or_fail(self, steps: list[_Step], rest: list[schema.EventRow | Op]) -> bool:
        try:
            self._commit_retrying(steps)
        except Exception as exc:
            error = StoreError(
                f"the event store could not commit: {_first_line(exc)}", cause=_first_line(exc)
            )
            # A DuckDB error is an environment problem (disk full, I/O); anything else is a bug.
            logger.error(
                "event store commit failed; refusing further writes: %s",
                error,
                exc_info=not isinstance(exc, duckdb.Error),
            )
            self._fail_rest(error, [*steps, *rest])
            return False
        self._private_wal()
        rows: list[schema.EventRow] = []
        for step in steps:
            if type(step) is list:
                rows.extend(step)
        if rows:
            self._publish(rows)
        # Waiters resolve after the chunk was posted to the subscriptions: nothing is shown
        # before it is durable, and nothing durable is left unposted when ``flush()`` returns.
        for step in steps:
            if type(step) is not list:
                step.waiter.resolve()  # type: ignore[union-attr]
        return True

    def _commit_retrying(self, steps: list[_Step]) -> None:
        # Memory is shared by the whole DuckDB instance: a user's query holding most of it (a
        # huge aggregate) can make a commit fail for want of a few KiB. That commit was rolled
        # back and nothing is lost yet, so it is tried again once memory frees (the query ends
        # or is interrupted), rather than failing the writer for good.
        deadline = time.monotonic() + OOM_RETRY_FOR
        pause = 0.01
        while True:
            try:
                self._commit(steps)
                return
            except duckdb.OutOfMemoryException as exc:
                if time.monotonic() + pause > deadline:
                    raise
                level = logging.WARNING if pause == 0.01 else logging.DEBUG  # one line per commit
                logger.log(level, "event store commit out of memory, retrying: %s", _first_line(exc))
                time.sleep(pause)
                pause = min(pause * 2, 0.5)
                self._roll_back(deadline)

    def _roll_back(self, deadline: float) -> None:
        # The failed transaction stays open (aborted) until rolled back, and the ROLLBACK can
        # itself run out of memory while the query still holds it: repeat it until it goes.
        pause = 0.01
        while True:
            try:
                self._cursor.execute("ROLLBACK")
                return
            except duckdb.TransactionException:
                return  # no transaction open: nothing to roll back
            except duckdb.OutOfMemoryException:
                if time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.5)

    def _commit(self, steps: list[_Step]) -> None:
        if all(type(step) is Barrier for step in steps):
            return  # nothing to write: the barrier only orders after earlier commits
        cur = self._cursor
        if len(steps) == 1 and type(steps[0]) is list:
            # Only events (a streaming turn): one statement is one transaction. Each DuckDB call
            # waits for the GIL afresh, and while the runtime thread is busy each wait is up to
            # a switch interval long, so fewer calls mean shorter commits.
            schema.insert_events(cur, steps[0])
            self._wal_grew = True
            return
        cur.execute("BEGIN TRANSACTION")
        try:
            for step in steps:
                if type(step) is list:
                    schema.insert_events(cur, step)
                elif type(step) is SaveSession:
                    self._save_session(step)
                elif type(step) is MergeUsage:
                    params: list[Any] = [step.session_id, step.turn_id, step.session_id]
                    params += [step.values[c] for c in schema.USAGE_COLUMNS]
                    params.append(step.updated_at)
                    cur.execute(schema.MERGE_USAGE, params)
            cur.execute("COMMIT")
            self._wal_grew = True
        except BaseException:
            # The transaction may already be aborted; the original error is the one to report.
            with contextlib.suppress(duckdb.Error):
                cur.execute("ROLLBACK")
            raise

    def _save_session(self, op: SaveSession) -> None:
        cur = self._cursor
        if op.prime:
            # fetchall, not fetchone: DuckDB refuses register() while a result is unfinished.
            rows = cur.execute(schema.MAX_SEQUENCE, [op.record.id]).fetchall()
            with self._cond:
                self._last_seq.setdefault(op.record.id, int(rows[0][0]) if rows else 0)
        cur.execute(schema.UPSERT_SESSION, schema.session_params(op.record))

    def _fail_rest(self, error: StoreError, pending: Sequence[_Step | schema.EventRow]) -> None:
        with self._cond:
            if self._state is WriterState.OPEN:
                self._state = WriterState.FAILED
            self._failure = error
            queued, self._queue = self._queue, []
        for item in [*pending, *queued]:
            waiter = getattr(item, "waiter", None)
            if isinstance(waiter, Waiter):
                waiter.fail(error)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
