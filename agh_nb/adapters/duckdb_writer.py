"""The group-commit writer behind ``DuckDBStore``: one thread, one cursor, submission order.

Owns: the submission queue, the per-session sequence counters, the writer thread and its DuckDB
cursor, and the ``StageMover`` it hands the main file's work to. Must not import core.session,
runtime or kernel.

How a commit happens: producers put events (and session upserts, usage merges, barriers) on one
list under one lock, in the order they happened. An event waits there as an ``EventRow`` (a tuple,
its content already JSON text) rather than as dicts: rows pending a commit cost the garbage
collector nothing. The writer swaps the whole list out, cuts it into chunks of at most
``max_batch`` events, and commits each chunk's events as ONE transaction into the current stage
file (``duckdb_stage``: events go in through one Arrow table per run). Only after ``COMMIT`` returns
does it hand the chunk's rows to ``publish`` (store first, then notify: ``publish`` only posts
them to each subscription's mailbox, it never runs a subscriber) and then pass the chunk's other
operations to the mover, which commits them to the main file in the same order and resolves
their waiters. A failed commit fails every waiter of that chunk and everything queued after it,
and the writer refuses further writes: later sequences would otherwise leave a gap or be
acknowledged out of order.

Checkpoints: DuckDB blocks commits to a file while it folds that file's WAL into it. The writer
commits only to the stage file the mover is not emptying or checkpointing; the main file's
checkpoints hold up the mover alone.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import duckdb

from agh_nb.adapters import derived_columns as derived
from agh_nb.adapters import duckdb_schema as schema
from agh_nb.adapters.duckdb_ops import (
    Op,
    Waiter,
    WriterState,
    commit_retrying,
    first_line,
    keep_private,
    transaction,
)
from agh_nb.adapters.duckdb_stage import MOVE_INTERVAL, StageMover
from agh_nb.core.record import SessionRecord
from agh_nb.errors import StoreError
from agh_nb.events import JSON, EventDraft, EventType, dumps

logger = logging.getLogger(__name__)

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
        mover_cursor: a second cursor, for the mover thread (the main file's writes).
        wal_path: the main file's write-ahead log (see ``StageMover``).
        stage_wal_paths: the stage files' write-ahead logs, kept owner-only.
        move_interval: seconds between the mover's moves while rows wait (see ``StageMover``).
    """

    def __init__(
        self,
        cursor: duckdb.DuckDBPyConnection,
        *,
        flush_interval: float,
        max_batch: int,
        publish: Callable[[Sequence[schema.EventRow]], None],
        mover_cursor: duckdb.DuckDBPyConnection,
        wal_path: Path | None = None,
        stage_wal_paths: tuple[Path, Path] | None = None,
        move_interval: float = MOVE_INTERVAL,
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
        self._stage_wal_paths = stage_wal_paths
        # Held by the writer thread for each commit, and by a switch: the mover empties a stage
        # file only once no commit to it is under way. recover_stage left both files empty.
        self._stage_lock = threading.Lock()
        self._slot = 0
        self._next_stage_id = 1
        self._last_commit = 0.0  # monotonic time the last commit began
        self._mover = StageMover(
            mover_cursor,
            switch=self._switch,
            prime=self._prime,
            on_failure=self._mover_failed,
            main_wal=wal_path,
            stage_wals=stage_wal_paths,
            move_interval=move_interval,
        )
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

    def drain(self) -> None:
        """Block until every event committed so far is in ``events`` (see ``StageMover.drain``)."""
        self._mover.drain()

    def close(self) -> bool:
        """Refuse new work, commit what is queued, move it into ``events`` and stop both
        threads (idempotent).

        Returns:
            True when every committed event is in ``events`` (the stage file can go).
        """
        with self._cond:
            if self._state is WriterState.OPEN:
                self._state = WriterState.CLOSED
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        return self._mover.close()

    def _refusal(self) -> StoreError:
        if self._state is WriterState.FAILED and self._failure is not None:
            return StoreError(
                f"the store refuses writes after a failed commit: {self._failure}",
                cause=str(self._failure),
            )
        return StoreError("the store is closed", state=self._state.value)

    def _switch(self) -> tuple[int, int]:
        # Mover thread: after the commit under way, later commits go to the other stage file.
        with self._stage_lock:
            left = self._slot
            self._slot = 1 - left
            return left, self._next_stage_id - 1

    def _prime(self, session_id: str, last_sequence: int) -> None:
        # Mover thread: a session's first save in this process loaded its stored max(sequence).
        with self._cond:
            self._last_seq.setdefault(session_id, last_sequence)

    def _mover_failed(self, error: StoreError) -> None:
        self._fail_rest(error, [])

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
                woke_from_idle = False
                while not self._queue and self._state is WriterState.OPEN:
                    self._idle = woke_from_idle = True
                    self._cond.wait()
                self._idle = False
                # Gather a burst: commit no sooner than flush_interval after waking up, or after
                # the previous commit began (a steady stream then shares commits instead of
                # paying DuckDB's per-commit cost for a handful of rows each).
                since = time.monotonic() if woke_from_idle else self._last_commit
                self._linger(since + self._flush_interval)
                ops, self._queue = self._queue, []
                self._last_commit = time.monotonic()
                self._urgent = False
                done = self._state is not WriterState.OPEN
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
        runs: list[list[schema.EventRow]] = [step for step in steps if type(step) is list]
        others: list[Op] = [step for step in steps if type(step) is not list]  # type: ignore[misc]
        if runs:
            failure: Exception | None = None
            with self._stage_lock:
                slot = self._slot
                try:
                    commit_retrying(self._cursor, lambda: self._commit(runs, slot))
                    self._next_stage_id += sum(len(run) for run in runs)
                except Exception as exc:
                    failure = exc
            if failure is not None:
                error = StoreError(
                    f"the event store could not commit: {first_line(failure)}", cause=first_line(failure)
                )
                # A DuckDB error is an environment problem (disk full, I/O); anything else is a bug.
                logger.error(
                    "event store commit failed; refusing further writes: %s",
                    error,
                    exc_info=failure if not isinstance(failure, duckdb.Error) else None,
                )
                self._fail_rest(error, [*steps, *rest])
                return False
            self._mover.staged(self._next_stage_id - 1)
            if self._stage_wal_paths is not None:
                keep_private(self._stage_wal_paths[slot])
            rows = runs[0] if len(runs) == 1 else [row for run in runs for row in run]
            self._publish(rows)
        # The other operations go to the main file after the chunk was posted to the
        # subscriptions: nothing is shown before it is durable, and nothing durable is left
        # unposted when ``flush()`` returns.
        if others:
            self._mover.submit(others)
        return True

    def _commit(self, runs: list[list[schema.EventRow]], slot: int) -> None:
        cur = self._cursor
        first = self._next_stage_id
        if len(runs) == 1:
            # Only events (a streaming turn): one statement is one transaction. Each DuckDB call
            # waits for the GIL afresh, and while the runtime thread is busy each wait is up to
            # a switch interval long, so fewer calls mean shorter commits.
            schema.stage_events(cur, runs[0], first, slot)
            return
        with transaction(cur):
            for run in runs:
                schema.stage_events(cur, run, first, slot)
                first += len(run)

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

