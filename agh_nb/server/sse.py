"""Server-sent event streams of the agh_nb HTTP API (docs/http-api.md, "Streams").

Owns: ``SessionStreamHandler`` (committed events of one session: backlog after ``Last-Event-ID``
or ``?after_sequence``, then live, no gap and no duplicate; ends after a terminal
``session_stopped``, real or synthetic, unless ``?keep_open=1`` asks it to stay open across stops
and resumes, as a store subscription does), ``ApprovalStreamHandler`` (``added``/``resolved``
permission requests of every session) and ``_Feed``, the bounded hand-over of committed batches
from the store's threads to the server's loop.

Threads: the store delivers a subscription's backlog on the thread that subscribes (here a
dedicated catch-up thread per subscription, which may wait for the client: flow control) and
live batches on the store's writer thread (an ``inline`` subscription: ``_Feed.offer`` never
waits there, it only queues the batch and schedules one loop callback per drained group). The
feed is bounded: a client too slow for the live rate overflows it, and the stream re-subscribes
from the last sequence it sent, so memory stays bounded whatever the client does.

Cost per event, which decides how many streams a server carries (``benchmarks/server.py``): a
row's content is framed from the store's own JSON text (``Event.to_json``), never decoded and
encoded again; a live stream writes and flushes once per drained group and then lingers
``LINGER`` seconds so that slow streams flush groups, not single events.
Must not import agh_nb.kernel.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from tornado.iostream import StreamClosedError

from agh_nb.core.state import SessionState
from agh_nb.errors import AghError
from agh_nb.events import JSON, Event, EventType, dumps
from agh_nb.runtime import Runtime
from agh_nb.server.handlers import AghHandler, endpoint
from agh_nb.server.validation import parse_count

log = logging.getLogger(__name__)

KEEPALIVE = ": keep-alive\n\n"
SHUTDOWN_GRACE = 3.0
LINGER = 0.02
"""Seconds a live stream waits after a write before draining again (a bound on added latency)."""
SESSION_STOPPED = EventType.SESSION_STOPPED.value


def frame(event_id: int | None, event_type: str, data: str) -> str:
    """One SSE message: ``id:`` (when given), ``event:``, ``data:`` (one line of JSON)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event_type}\ndata: {data}\n\n"


class _Feed:
    """One store subscription's committed batches on their way to the loop (bounded).

    ``offer`` runs on the store's threads; everything else on the loop.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, wake: Callable[[], None], high_water: int) -> None:
        self._loop = loop
        self._wake = wake
        self._high_water = high_water
        self._cond = threading.Condition()
        self._inflight = 0
        self._closed = False
        self.overflowed = False
        self.catchup_thread: int | None = None
        self.last_at_subscribe: int | None = None
        self.batches: deque[Sequence[Event]] = deque()
        # Batches offered since the loop last looked: one loop callback carries them all, so 50
        # streams at 100 events/s cost the loop a wake-up per drained group, not per batch.
        self._incoming: list[Sequence[Event]] = []
        self._scheduled = False

    def offer(self, events: Sequence[Event]) -> None:
        """Take a committed batch (store thread). The catch-up thread waits for room; the writer never does."""
        with self._cond:
            if self._closed or self.overflowed:
                return
            if self._inflight >= self._high_water:
                if threading.get_ident() != self.catchup_thread:
                    self.overflowed = True
                    self._call(self._wake)
                    return
                while self._inflight >= self._high_water and not self._closed:
                    self._cond.wait(0.5)
                if self._closed:
                    return
            self._inflight += len(events)
            self._incoming.append(events)
            if not self._scheduled:
                self._scheduled = True
                self._call(self._arrive)

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: the server is gone
            self._closed = True

    def _arrive(self) -> None:
        with self._cond:
            incoming, self._incoming = self._incoming, []
            self._scheduled = False
        if not self._closed:
            self.batches.extend(incoming)
            self._wake()

    def take(self) -> list[Sequence[Event]]:
        """Every batch that arrived (loop)."""
        batches = list(self.batches)
        self.batches.clear()
        return batches

    def consumed(self, count: int) -> None:
        """``count`` events were written: make room (loop)."""
        with self._cond:
            self._inflight -= count
            self._cond.notify_all()

    def close(self) -> None:
        """Drop everything; wake a waiting catch-up thread. Idempotent."""
        with self._cond:
            self._closed = True
            self._incoming = []
            self._cond.notify_all()
        self.batches.clear()


class _StreamHandler(AghHandler):
    """An open ``text/event-stream`` response: keep-alives, client-gone and shutdown signals."""

    def initialize(self, *args: Any, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self._wake = asyncio.Event()
        self._gone = False
        self._ending = False
        self._done = asyncio.Event()

    def on_connection_close(self) -> None:
        self._gone = True
        self._wake.set()

    async def _shutdown(self) -> None:
        self._ending = True
        self._wake.set()
        try:
            await asyncio.wait_for(self._done.wait(), SHUTDOWN_GRACE)
        except TimeoutError:
            pass

    @property
    def _interval(self) -> float:
        return float(self.app.keepalive_interval)

    def _open(self) -> Callable[[], None]:
        self.set_status(200)
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        return self.host.add_stream(self._shutdown)

    async def _send(self, text: str) -> None:
        self.write(text)
        await self.flush()

    async def _idle(self) -> bool:
        """Wait for a wake-up; on a quiet interval send a keep-alive. Returns True on a keep-alive."""
        try:
            await asyncio.wait_for(self._wake.wait(), self._interval)
            return False
        except TimeoutError:
            await self._send(KEEPALIVE)
            return True

    async def _run(self, pump: Callable[[], Any]) -> None:
        untrack = self._open()
        try:
            await self.flush()  # the headers: the client knows the stream is open
            await pump()
        except StreamClosedError:
            pass  # the client went away
        except AghError as exc:  # e.g. the store closed under a stream at shutdown
            log.info("agh_nb: event stream %s ended: %s", self.request.path, exc)
        except Exception:
            log.exception("agh_nb: event stream %s failed", self.request.path)
        finally:
            untrack()
            self._done.set()


class SessionStreamHandler(_StreamHandler):
    """``GET .../sessions/<id>/stream``: one session's committed events as SSE."""

    @endpoint
    async def get(self, session_id: str) -> None:
        after = self._resume_point()
        keep_open = self.bool_arg("keep_open")
        runtime = await self.runtime()
        await runtime.manager.get(session_id)  # 404 before the stream opens
        await self._run(lambda: self._pump(runtime, session_id, after, keep_open=keep_open))

    def _resume_point(self) -> int:
        raw = self.request.headers.get("Last-Event-ID") or self.get_query_argument("after_sequence", None) or "0"
        return parse_count(raw, "Last-Event-ID / after_sequence (a sequence number)")

    async def _pump(self, runtime: Runtime, session_id: str, last: int, *, keep_open: bool = False) -> None:
        """Send the events after ``last``, then live ones; end after the terminal stop unless ``keep_open``."""
        loop = asyncio.get_running_loop()
        high_water = max(1, int(self.app.stream_high_water))
        while True:  # one pass per store subscription; a new one only after an overflow
            feed = _Feed(loop, self._wake.set, high_water)
            pending = self._subscribe(runtime, session_id, last, feed)
            sub: Any = None
            checked = False
            try:
                while True:
                    batches = feed.take()
                    if batches:
                        # keep_open: no stop is terminal (a resume may follow); only the client ends it.
                        terminal_from = None if keep_open else feed.last_at_subscribe or 0
                        text, count, last, stopped = self._frames(batches, last, terminal_from)
                        if text:
                            await self._send(text)  # one write and flush per drained group
                        feed.consumed(count)
                        if stopped:
                            return
                        if sub is not None and text:
                            # Live: let the next commits gather, so that many slow streams each
                            # flush a group, not every small commit (the flush is most of a
                            # stream's cost); a backlog is sent without pause.
                            await asyncio.sleep(LINGER)
                        continue
                    if self._gone or self._ending:
                        return
                    if sub is None and pending.done():
                        sub = pending.result()  # the backlog is all in: it arrived before this
                        continue
                    if sub is not None:
                        if feed.overflowed:  # the client fell behind the live rate: catch up from the store
                            log.info("agh_nb: a stream of %s fell behind; catching up from sequence %d", session_id, last)
                            break
                        if not checked and not keep_open:
                            checked = True
                            if await self._end_if_stopped(runtime, session_id, last):
                                return
                            continue
                    self._wake.clear()
                    if feed.batches or self._gone or self._ending or (sub is None and pending.done()):
                        continue
                    if await self._idle():
                        checked = False  # re-check on each quiet interval
            finally:
                feed.close()
                if sub is not None:
                    sub.close()
                elif not pending.done():
                    pending.cancel()  # the catch-up thread closes what it opened

    @staticmethod
    def _frames(
        batches: list[Sequence[Event]], last: int, terminal_from: int | None
    ) -> tuple[str, int, int, bool]:
        """Format the events after ``last``: (text, events taken, new last, a terminal stop was met).

        A ``session_stopped`` is terminal when its sequence is ``terminal_from`` or more (the newest
        row when the subscription opened: an older one was followed by a resume); with
        ``terminal_from`` None, none is.
        """
        parts: list[str] = []
        count = 0
        stopped = False
        for batch in batches:
            count += len(batch)
            if stopped:
                continue
            for event in batch:
                if event.sequence <= last:
                    continue
                last = event.sequence
                parts.append(frame(event.sequence, event.type, event.to_json()))
                # A session_stopped older than the newest row at subscribe time was followed by a
                # resume: only the latest one ends the stream.
                if event.type == SESSION_STOPPED and terminal_from is not None and event.sequence >= terminal_from:
                    stopped = True
                    break
        return "".join(parts), count, last, stopped

    async def _end_if_stopped(self, runtime: Runtime, session_id: str, last: int) -> bool:
        """Send the synthetic terminal ``session_stopped`` if the session is stopped with nothing newer."""
        if runtime.manager.live(session_id) is not None:
            return False
        store = runtime.store

        def read() -> tuple[Any, int]:
            return store.get_session(session_id), store.last_sequence(session_id)

        record, last_sequence = await asyncio.to_thread(read)
        if record is None or record.state is not SessionState.STOPPED or runtime.manager.live(session_id) is not None:
            return False
        if last_sequence > last:
            return False  # committed rows are still on their way to this stream
        row = self.host.synthetic_stop(record.to_dict(), last_sequence)
        await self._send(frame(last_sequence, SESSION_STOPPED, dumps(row)))
        return True

    def _subscribe(self, runtime: Runtime, session_id: str, after: int, feed: _Feed) -> asyncio.Future[Any]:
        """Subscribe on a dedicated catch-up thread (it delivers the backlog, waiting for room)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        future.add_done_callback(lambda _: self._wake.set())
        store = runtime.store

        def settle(sub: Any, error: BaseException | None) -> None:
            if future.cancelled():
                if sub is not None:
                    sub.close()
            elif error is not None:
                future.set_exception(error)
            else:
                future.set_result(sub)

        def run() -> None:
            feed.catchup_thread = threading.get_ident()
            sub, error = None, None
            try:
                feed.last_at_subscribe = store.last_sequence(session_id)
                sub = store.subscribe(session_id, after, feed.offer, inline=True)
            except BaseException as exc:  # handed to the loop, raised there
                error = exc
            finally:
                feed.catchup_thread = None
            try:
                loop.call_soon_threadsafe(settle, sub, error)
            except RuntimeError:  # the loop is closed
                if sub is not None:
                    sub.close()

        threading.Thread(target=run, name=f"agh-sse-catchup[{session_id}]", daemon=True).start()
        return future


class ApprovalStreamHandler(_StreamHandler):
    """``GET /agh/api/approvals/stream``: ``added``/``resolved`` requests of every session.

    The requests pending when the stream opens come first, as ``added``.
    """

    @endpoint
    async def get(self) -> None:
        runtime = await self.runtime()
        await self._run(lambda: self._pump(runtime))

    async def _pump(self, runtime: Runtime) -> None:
        broker = runtime.manager.approvals
        queue: deque[tuple[str, JSON]] = deque(("added", r) for r in broker.pending())

        def listen(change: str, request: JSON) -> None:
            queue.append((change, request))
            self._wake.set()

        remove = broker.add_listener(listen)
        try:
            while True:
                if queue:
                    items = list(queue)
                    queue.clear()
                    await self._send("".join(frame(None, change, dumps(req)) for change, req in items))
                    continue
                if self._gone or self._ending:
                    return
                self._wake.clear()
                if not queue and not self._gone and not self._ending:
                    await self._idle()
        finally:
            remove()
