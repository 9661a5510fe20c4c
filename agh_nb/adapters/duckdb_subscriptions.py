"""Live subscriptions of ``DuckDBStore``: registration, backlog hand-over and fan-out.

Owns: ``SubscriptionHub`` (the registry the writer publishes committed batches to) and
``Subscription`` (one subscriber's no-gap/no-duplicate delivery). Imports no duckdb; must not
import core.session, runtime or kernel.

The hand-over from backlog to live: a subscription is registered first, so every batch committed
from then on is buffered; then the backlog (committed rows after ``after_sequence``) is read and
delivered on the subscribing thread; then the buffer; then live batches. Delivery keeps the last
sequence handed over and drops anything at or below it, so a row that is both in the backlog and
in a buffered batch is delivered once.

No subscriber runs on the writer thread: ``publish`` only drops a committed batch into each
interested subscription's mailbox, and each live subscription has a delivery thread of its own
that hands the callback everything waiting, joined into one batch. A slow subscriber (a widget
re-rendering, a slow SSE client) therefore delays only itself and catches up in bigger batches;
commits never wait for it. An ``inline`` subscription is the exception made for a callback that
only hands the batch on and never blocks (the SSE feed, whose hop to the server's loop is its
queue): it is called on the writer thread, which spares a thread wake-up per commit.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence

from agh_nb.core.ports import EventCallback
from agh_nb.events import Event

logger = logging.getLogger(__name__)


class Subscription:
    """One subscriber; ``close()`` is idempotent and stops delivery."""

    def __init__(
        self,
        hub: SubscriptionHub,
        session_id: str | None,
        after_sequence: int,
        callback: EventCallback,
        *,
        inline: bool = False,
    ) -> None:
        self.session_id = session_id
        self._inline = inline
        self._hub = hub
        self._callback = callback
        self._last = after_sequence
        self._lock = threading.Condition()
        self._catching_up = True
        self._buffer: list[Event] = []
        self._mailbox: deque[Sequence[Event]] = deque()
        self._thread: threading.Thread | None = None
        self._closed = False

    def close(self) -> None:
        """Stop delivering events; idempotent (a batch being delivered finishes first)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._buffer = []
            self._mailbox.clear()
            self._lock.notify_all()
        self._hub._remove(self)

    def offer(self, events: Sequence[Event]) -> None:
        """Take a committed batch (writer thread): buffer it while catching up, else post it to
        this subscription's delivery thread. Never waits for the subscriber; calls it only when
        ``inline``."""
        with self._lock:
            if self._closed:
                return
            if self._catching_up:
                self._buffer.extend(events)
                return
            if not self._inline:
                self._post(events)
                return
        # Inline: the writer delivers; only it delivers once catching up has ended.
        self._deliver(events)

    def _post(self, events: Sequence[Event]) -> None:
        # Under the lock: hand the batch to the delivery thread (started on first use).
        self._mailbox.append(events)
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._deliver_live, name=f"agh-nb-subscriber[{self.session_id or '*'}]", daemon=True
            )
            self._thread.start()
        else:
            self._lock.notify()

    def _deliver_live(self) -> None:
        # The delivery thread: everything waiting goes to the subscriber as one batch, in order.
        while True:
            with self._lock:
                while not self._mailbox and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
                batches = list(self._mailbox)
                self._mailbox.clear()
            events: Sequence[Event] = batches[0] if len(batches) == 1 else [e for b in batches for e in b]
            self._deliver(events)

    def go_live(self, backlog: Iterable[Sequence[Event]]) -> None:
        """Deliver the backlog pages, then what was buffered meanwhile, then go live."""
        for page in backlog:
            if self._closed:
                return
            self._deliver(page)
        pending: Sequence[Event] = ()
        while True:
            self._deliver(pending)
            with self._lock:
                if not self._buffer or self._closed:
                    self._catching_up = False
                    self._buffer = []
                    return
                pending, self._buffer = self._buffer, []

    def _deliver(self, events: Sequence[Event]) -> None:
        # Only one thread delivers at a time: the subscribing thread while catching up, the
        # delivery thread (the writer, when inline) afterwards.
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


class SubscriptionHub:
    """The registry of live subscriptions and the fan-out of committed batches."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Copy-on-write: ``publish`` (writer thread) reads it without the lock.
        self._subs: dict[str | None, tuple[Subscription, ...]] = {}

    def subscribe(
        self,
        session_id: str | None,
        after_sequence: int,
        callback: EventCallback,
        backlog: Callable[[], Iterable[Sequence[Event]]],
        *,
        inline: bool = False,
    ) -> Subscription:
        """Register a subscriber, deliver ``backlog()`` on this thread, then go live.

        Args:
            session_id: the session, or None for every session (live only).
            after_sequence: the last sequence the subscriber already has.
            callback: receives batches of events, in order.
            backlog: yields pages of the committed events after ``after_sequence``, in order;
                called after registration so nothing committed in between is missed.
            inline: call ``callback`` with live batches on the publishing (writer) thread; for
                a callback that never blocks.

        Raises:
            Whatever ``backlog`` raises (the subscription is closed first).
        """
        sub = Subscription(self, session_id, after_sequence, callback, inline=inline)
        with self._lock:
            subs = dict(self._subs)
            subs[session_id] = (*subs.get(session_id, ()), sub)
            self._subs = subs
        try:
            sub.go_live(backlog())
        except BaseException:
            sub.close()
            raise
        return sub

    def wanted(self) -> Collection[str | None]:
        """The sessions someone subscribes to (``None`` among them: every session)."""
        return self._subs.keys()

    def publish(self, events: Sequence[Event]) -> None:
        """Hand a committed batch (in commit order) to every interested subscriber."""
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
            for session_id, group in by_session.items():
                batch = tuple(group)
                for sub in subs.get(session_id, ()):
                    sub.offer(batch)

    def close_all(self) -> None:
        """Close every subscription (the store is closing)."""
        with self._lock:
            subs = [s for group in self._subs.values() for s in group]
        for sub in subs:
            sub.close()

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            group = tuple(s for s in self._subs.get(sub.session_id, ()) if s is not sub)
            subs = dict(self._subs)
            if group:
                subs[sub.session_id] = group
            else:
                subs.pop(sub.session_id, None)
            self._subs = subs
