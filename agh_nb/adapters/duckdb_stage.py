"""The store's stage files and the thread that empties them into ``events`` (``StageMover``).

Why other files: DuckDB holds every commit to a database file while it checkpoints that file,
0.6-1.4 s at the store's 64 MB threshold on 2 cores (``benchmarks/checkpoint_stall.py``). With 50
sessions streaming, that stall was the server's stored -> delivered p99. So the writer commits new
events to one of two small files, ``<store>.stage0`` and ``<store>.stage1``, attached as
``stage0`` and ``stage1``; each has its own WAL and its own checkpoints. About once a second the
mover switches the writer to the other file (after the commit under way), copies the rows of the
file it left into ``events``, empties that file and checkpoints it, all on its own thread: the
writer never waits for a move, a delete or a checkpoint. A checkpoint of the main file holds up
only the mover and the writes that must go to the main file (session rows, usage merges), which
the mover also runs, in the order the writer received them, so none of them holds up an event.

Reads of events see moved rows: the store asks the mover to move everything committed so far
(``drain``) before each such read. A DuckDB transaction writes to one file only, so a move is
two commits: the rows together with ``stage_mark`` in the main file, then the emptying of the
stage file. Rows a crash left in a stage file at or below the mark are already in ``events``;
the next open (``recover_stage``) drops them and moves the rest.

Must not import core.session, runtime or kernel.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import duckdb

from agh_nb.adapters import duckdb_schema as schema
from agh_nb.adapters.duckdb_ops import (
    Barrier,
    MergeUsage,
    Op,
    SaveSession,
    WriterState,
    commit_retrying,
    first_line,
    keep_private,
    transaction,
)
from agh_nb.errors import StoreError

logger = logging.getLogger(__name__)

MOVE_INTERVAL = 1.0
"""Seconds between moves while rows wait in the stage (a read moves them at once)."""
IDLE_CHECKPOINT_AFTER = 1.0
"""Seconds without work after which the mover checkpoints a grown main WAL."""
IDLE_CHECKPOINT_MIN_WAL = 1 << 20
"""Smallest main WAL (bytes) worth an idle checkpoint."""

MARK_DDL = (
    "CREATE TABLE IF NOT EXISTS stage_mark (moved_through BIGINT NOT NULL)",
    "INSERT INTO stage_mark SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM stage_mark)",
)
"""The main file's record of the highest ``stage_id`` copied into ``events``."""
_MOVE = tuple(
    f"INSERT INTO events BY NAME SELECT * EXCLUDE (stage_id) FROM {table} "
    "WHERE stage_id > ? AND stage_id <= ?"
    for table in schema.STAGE_TABLES
)
_SET_MARK = "UPDATE stage_mark SET moved_through = ?"
_EMPTY = tuple(f"DELETE FROM {table}" for table in schema.STAGE_TABLES)
_CHECKPOINT = tuple(f"CHECKPOINT {alias}" for alias in schema.STAGE_ALIASES)


def stage_paths(path: Path) -> tuple[Path, Path]:
    """Where the two stage files of the store at ``path`` live (attached in this order)."""
    return (path.with_name(path.name + ".stage0"), path.with_name(path.name + ".stage1"))


def recover_stage(con: duckdb.DuckDBPyConnection) -> int:
    """Move what an earlier process left in the stage files into ``events``, then empty them.

    Runs at open, before the writer starts; the stage tables are made anew in the current
    layout and numbering starts again from 1 in file 0. Returns how many rows were moved.
    """
    for ddl in MARK_DDL:
        con.execute(ddl)
    for slot in (0, 1):
        con.execute(schema.stage_ddl(slot))
    moved = int(con.execute("SELECT moved_through FROM stage_mark").fetchall()[0][0])
    left = " UNION ALL ".join(f"SELECT * FROM {table}" for table in schema.STAGE_TABLES)
    count, top = con.execute(
        f"SELECT count(*), max(stage_id) FROM ({left}) WHERE stage_id > ?", [moved]
    ).fetchall()[0]
    if count:
        with transaction(con):
            for move in _MOVE:
                con.execute(move, [moved, top])
            con.execute(_SET_MARK, [top])
    # Empty first, then reset the mark: a crash between the two leaves empty files and a stale
    # mark, which the next open resets; the other order could copy rows twice.
    for slot, table in enumerate(schema.STAGE_TABLES):
        con.execute(f"DROP TABLE {table}")
        con.execute(schema.stage_ddl(slot))
    con.execute(_SET_MARK, [0])
    for checkpoint in _CHECKPOINT:
        con.execute(checkpoint)
    return int(count)


class _Drain:
    """A reader waiting for every row staged so far to be in ``events``."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class StageMover:
    """Runs the main file's writes in order and moves staged rows into ``events``, on its thread.

    Args:
        cursor: a DuckDB cursor used only by the mover thread.
        switch: points the writer at the other stage file once its commit under way (if any)
            is done; returns the file it left and the last ``stage_id`` committed there.
        prime: called with a session id and its stored max(sequence) when a ``SaveSession``
            asks for it.
        on_failure: called once, on the mover thread, when a commit to the main file failed.
        main_wal: the main file's WAL, checkpointed after ``IDLE_CHECKPOINT_AFTER`` seconds idle
            once it holds ``IDLE_CHECKPOINT_MIN_WAL`` bytes, and kept owner-only.
        stage_wals: the stage files' WALs, kept owner-only.
        move_interval: seconds between moves while rows wait.
    """

    def __init__(
        self,
        cursor: duckdb.DuckDBPyConnection,
        *,
        switch: Callable[[], tuple[int, int]],
        prime: Callable[[str, int], None],
        on_failure: Callable[[StoreError], None],
        main_wal: Path | None = None,
        stage_wals: tuple[Path, Path] | None = None,
        move_interval: float = MOVE_INTERVAL,
    ) -> None:
        self._cursor = cursor
        self._switch = switch
        self._prime = prime
        self._on_failure = on_failure
        self._main_wal = main_wal
        self._stage_wals = stage_wals
        self._move_interval = move_interval
        self._cond = threading.Condition()
        self._queue: list[Op | _Drain] = []
        self._staged = 0  # the highest stage_id the writer has committed
        self._moved = 0  # the highest stage_id copied into events
        self._state = WriterState.OPEN
        self._failure: StoreError | None = None
        self._main_grew = False
        self._thread = threading.Thread(target=self._run, name="agh-nb-store-mover", daemon=True)
        self._thread.start()

    # -- the writer's side -------------------------------------------------------------------

    def staged(self, through: int) -> None:
        """Record that rows up to ``through`` are committed in the stage."""
        with self._cond:
            self._staged = through

    def submit(self, ops: Sequence[Op]) -> None:
        """Run ``ops`` on the main file after everything submitted before; their waiters
        resolve after that commit (at once for barriers after earlier ones)."""
        with self._cond:
            if self._state is not WriterState.FAILED:
                self._queue.extend(ops)
                self._cond.notify()
                return
            error = self._failure
        for op in ops:
            op.waiter.fail(error or StoreError("the event store failed"))

    def drain(self) -> None:
        """Block until every row staged so far is in ``events`` (at once when closed or failed)."""
        if threading.current_thread() is self._thread:
            return
        request = _Drain()
        with self._cond:
            if self._state is not WriterState.OPEN or self._staged <= self._moved:
                return
            self._queue.append(request)
            self._cond.notify()
        request.done.wait()

    def close(self) -> bool:
        """Run what is queued, move every staged row, stop the thread (idempotent).

        Returns:
            True when the stage holds no row that is missing from ``events``.
        """
        with self._cond:
            if self._state is WriterState.OPEN:
                self._state = WriterState.CLOSED
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        with self._cond:
            return self._moved >= self._staged

    # -- the mover thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException:  # a bug: never leave a waiter hanging
            logger.exception("event store mover crashed")
            self._fail(StoreError("the event store mover crashed"), [])
        finally:
            with self._cond:
                drains, self._queue = [q for q in self._queue if type(q) is _Drain], []
            for request in drains:
                request.done.set()
            try:
                self._cursor.close()
            except duckdb.Error:
                pass

    def _loop(self) -> None:
        last_move = last_work = time.monotonic()
        while True:
            with self._cond:
                while not self._queue and self._state is WriterState.OPEN:
                    timeout = self._timeout(last_move, last_work)
                    if timeout is not None and timeout <= 0:
                        break
                    self._cond.wait(timeout)
                items, self._queue = self._queue, []
                closing = self._state is not WriterState.OPEN
                staged = self._staged
            drains = [item for item in items if type(item) is _Drain]
            ops: list[Op] = [item for item in items if type(item) is not _Drain]  # type: ignore[misc]
            now = time.monotonic()
            try:
                if ops and not self._run_ops(ops):
                    return
                if staged > self._moved and (drains or closing or now >= last_move + self._move_interval):
                    if not self._move():
                        return
                    last_move = now
            finally:  # a reader waits for these whether the move worked or not
                for request in drains:
                    request.done.set()
            if items or staged > self._moved:
                last_work = now
            elif self._main_grew and now >= last_work + IDLE_CHECKPOINT_AFTER:
                self._idle_checkpoint()
                last_work = now  # a checkpoint that could not run is tried a while later
            if closing:
                with self._cond:
                    if not self._queue and self._staged <= self._moved:
                        return

    def _timeout(self, last_move: float, last_work: float) -> float | None:
        # Called with the lock held.
        now = time.monotonic()
        if self._staged > self._moved:
            return last_move + self._move_interval - now
        if self._main_grew:
            return last_work + IDLE_CHECKPOINT_AFTER - now
        return None

    def _run_ops(self, ops: list[Op]) -> bool:
        if any(type(op) is not Barrier for op in ops):
            try:
                commit_retrying(self._cursor, lambda: self._commit_ops(ops))
            except Exception as exc:
                self._fail(_commit_error(exc), ops)
                return False
            self._main_grew = True
            keep_private(self._main_wal)
        for op in ops:
            op.waiter.resolve()
        return True

    def _commit_ops(self, ops: list[Op]) -> None:
        with transaction(self._cursor) as cur:
            for op in ops:
                if type(op) is SaveSession:
                    if op.prime:
                        # fetchall, not fetchone: no result may stay unfinished in the cursor.
                        rows = cur.execute(schema.MAX_SEQUENCE, [op.record.id]).fetchall()
                        self._prime(op.record.id, int(rows[0][0]) if rows else 0)
                    cur.execute(schema.UPSERT_SESSION, schema.session_params(op.record))
                elif type(op) is MergeUsage:
                    params: list[Any] = [op.session_id, op.turn_id, op.session_id]
                    params += [op.values[c] for c in schema.USAGE_COLUMNS]
                    params.append(op.updated_at)
                    cur.execute(schema.MERGE_USAGE, params)

    def _move(self) -> bool:
        cur = self._cursor
        slot, through = self._switch()  # from here on the writer commits to the other file
        moved = self._moved
        if through <= moved:
            return True

        def commit() -> None:
            with transaction(cur):
                cur.execute(_MOVE[slot], [moved, through])
                cur.execute(_SET_MARK, [through])

        try:
            commit_retrying(cur, commit)
        except Exception as exc:
            self._fail(_commit_error(exc), [])
            return False
        with self._cond:
            self._moved = through
        self._main_grew = True
        keep_private(self._main_wal)
        try:
            # Nobody writes to this file until the next switch. Checkpointed now, its WAL holds
            # about a second of rows; left to the threshold, its checkpoint would come due with
            # the main file's (the same volume goes through both).
            cur.execute(_EMPTY[slot])
            cur.execute(_CHECKPOINT[slot])
        except duckdb.Error as exc:  # the rows are in events (the mark says so): empty next time
            logger.debug("emptying stage file %d: %s", slot, first_line(exc))
        if self._stage_wals is not None:
            keep_private(self._stage_wals[slot])
        return True

    def _idle_checkpoint(self) -> None:
        # DuckDB folds the WAL into the database file at a checkpoint and blocks commits to
        # that file while it runs. Doing it once the store has been idle for a while keeps that
        # stall out of a streaming turn; the automatic threshold remains the backstop.
        self._main_grew = False
        try:
            if self._main_wal is None or self._main_wal.stat().st_size < IDLE_CHECKPOINT_MIN_WAL:
                return
        except OSError:  # no WAL (nothing to fold) or unreadable: not worth failing for
            return
        try:
            self._cursor.execute("CHECKPOINT").fetchall()
        except duckdb.Error as exc:  # e.g. a user's read transaction is open: try next time
            self._main_grew = True
            logger.debug("idle checkpoint skipped: %s", first_line(exc))

    def _fail(self, error: StoreError, pending: Sequence[Op]) -> None:
        logger.error("event store commit failed; refusing further writes: %s", error)
        with self._cond:
            if self._state is WriterState.OPEN or self._state is WriterState.CLOSED:
                self._state = WriterState.FAILED
            self._failure = error
            queued, self._queue = self._queue, []
        for item in [*pending, *queued]:
            if type(item) is _Drain:
                item.done.set()
            else:
                item.waiter.fail(error)  # type: ignore[union-attr]
        self._on_failure(error)


def _commit_error(exc: BaseException) -> StoreError:
    if not isinstance(exc, duckdb.Error):  # anything but DuckDB's own errors is a bug
        logger.error("event store commit failed unexpectedly", exc_info=exc)
    return StoreError(
        f"the event store could not commit: {first_line(exc)}", cause=first_line(exc)
    )
