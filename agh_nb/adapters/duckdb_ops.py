"""What the store's writer threads pass around: operations with waiters, and the writer states.

Owns: ``Waiter`` (a future on some asyncio loop, resolved from a writer thread), the operations a
caller can wait for (``Barrier``, ``SaveSession``, ``MergeUsage``), ``WriterState``, one explicit
transaction, the retry of a commit that ran out of memory, and keeping a WAL owner-only. Shared
by ``duckdb_writer`` (the event thread) and ``duckdb_stage`` (the main-file thread). Must not
import core.session, runtime or kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

import duckdb

from agh_nb.core.private import make_private_file
from agh_nb.core.record import SessionRecord

logger = logging.getLogger(__name__)

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


@contextlib.contextmanager
def transaction(cursor: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """``BEGIN`` ... ``COMMIT`` on ``cursor``; rolled back if the body or the commit raises."""
    cursor.execute("BEGIN TRANSACTION")
    try:
        yield cursor
        cursor.execute("COMMIT")
    except BaseException:
        # The transaction may already be aborted; the original error is the one to report.
        with contextlib.suppress(duckdb.Error):
            cursor.execute("ROLLBACK")
        raise


def keep_private(wal: Path | None) -> None:
    """Make a WAL owner-only again: DuckDB deletes a WAL at each checkpoint and creates the next
    one with the umask's mode, and the store's files are owner-only (SPEC 7). About 1 us."""
    if wal is not None:
        with contextlib.suppress(OSError):
            make_private_file(wal)


def commit_retrying(cursor: duckdb.DuckDBPyConnection, commit: Callable[[], None]) -> None:
    """Run ``commit`` (one transaction on ``cursor``), again while it runs out of memory.

    Memory is shared by the whole DuckDB instance: a user's query holding most of it (a huge
    aggregate) can make a commit fail for want of a few KiB. That commit was rolled back and
    nothing is lost yet, so it is tried again once memory frees (the query ends or is
    interrupted), rather than failing the writer for good.
    """
    deadline = time.monotonic() + OOM_RETRY_FOR
    pause = 0.01
    while True:
        try:
            commit()
            return
        except duckdb.OutOfMemoryException as exc:
            if time.monotonic() + pause > deadline:
                raise
            level = logging.WARNING if pause == 0.01 else logging.DEBUG  # one line per commit
            logger.log(level, "event store commit out of memory, retrying: %s", first_line(exc))
            time.sleep(pause)
            pause = min(pause * 2, 0.5)
            _roll_back(cursor, deadline)


def _roll_back(cursor: duckdb.DuckDBPyConnection, deadline: float) -> None:
    # The failed transaction stays open (aborted) until rolled back, and the ROLLBACK can
    # itself run out of memory while the query still holds it: repeat it until it goes.
    pause = 0.01
    while True:
        try:
            cursor.execute("ROLLBACK")
            return
        except duckdb.TransactionException:
            return  # no transaction open: nothing to roll back
        except duckdb.OutOfMemoryException:
            if time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.5)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text (DuckDB's errors run on for lines)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
