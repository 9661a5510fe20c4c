"""The Jupyter server extension: the agh_nb runtime hosted in the Jupyter server's event loop.

Owns: ``AghServerExtension`` (the ``ExtensionApp``: configuration traits, the routes, the start
hook that builds the runtime once the server's loop runs, the stop hook that stops sessions and
closes the store), ``ServerHost`` (the runtime as the server hosts it: its lifecycle, readiness,
the live-aware reads that routes answer with, the turn registry behind the long poll, and the open
streams) and the ``AGH_NB_SERVER`` discovery variable that kernels started by the server inherit.

Loop discipline: everything here runs on the server's loop; store reads and vault calls go
through ``asyncio.to_thread``; live sessions and the approval broker are only touched on the loop.
Must not import agh_nb.kernel.
"""

from __future__ import annotations

import asyncio
import concurrent.futures.thread  # noqa: F401  # its exit hook must be registered before ours
import enum
import json
import logging
import os
import signal
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Float, Int, Unicode

from agh_nb.api import Reader
from agh_nb.config import agh_home
from agh_nb.core.overlay import current_record, inspect_view, status_view
from agh_nb.core.record import SessionRecord
from agh_nb.core.session import Turn, TurnResult
from agh_nb.errors import AghError, HostError
from agh_nb.events import JSON, EventQuery, EventType
from agh_nb.runtime import STORE_FILE, Runtime
from agh_nb.server.errors import ApiError, not_found, one_line

log = logging.getLogger(__name__)

ENV_VAR = "AGH_NB_SERVER"
"""The discovery variable kernels inherit: ``{"url", "token", "pid"}`` (docs/http-api.md)."""

API_PREFIX = "agh/api"
TURN_WAIT_MAX = 60.0
EXIT_TIMEOUT = 30.0


class HostState(str, enum.Enum):
    """Where the server host is in its life."""

    STARTING = "starting"
    """The runtime is being built on the server's loop; requests wait for it."""
    RUNNING = "running"
    """The runtime serves the routes."""
    DISABLED = "disabled"
    """The runtime could not start (e.g. the store is locked by another process): routes answer 503."""
    STOPPED = "stopped"
    """The server is shutting down: sessions were stopped and the store closed."""


class TurnRegistry:
    """Turns submitted through this server, by id, for ``GET .../turns/<turn_id>`` (bounded)."""

    def __init__(self, limit: int = 4096) -> None:
        self._limit = limit
        self._turns: OrderedDict[str, Turn] = OrderedDict()

    def add(self, turn: Turn) -> None:
        """Remember ``turn``; the oldest finished turns are forgotten past the limit."""
        self._turns[turn.turn_id] = turn
        while len(self._turns) > self._limit:
            done = next((tid for tid, t in self._turns.items() if t.future.done()), None)
            self._turns.pop(done if done is not None else next(iter(self._turns)))

    def get(self, turn_id: str) -> Turn | None:
        """The turn, if this server still remembers it."""
        return self._turns.get(turn_id)


class ServerHost:
    """The runtime hosted by the Jupyter server (one per server process).

    Args:
        home: ``$AGH_HOME`` (None: from the environment).
        ready_timeout: seconds a request waits for the runtime to finish starting.
    """

    def __init__(self, *, home: Path | None, ready_timeout: float = 60.0) -> None:
        self.home = home
        self.ready_timeout = ready_timeout
        self.state = HostState.STARTING
        self.turns = TurnRegistry()
        self._runtime: Runtime | None = None
        self._reader: Reader | None = None
        self._started = asyncio.Event()
        self._failure: tuple[str, str] | None = None  # (error type, message) answered with 503
        self._streams: set[Callable[[], Awaitable[None]]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._close_task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Build the runtime on the running loop; on failure log one line and disable the routes."""
        self._loop = asyncio.get_running_loop()
        try:
            runtime = await Runtime.start_attached(home=self.home)
        except AghError as exc:
            self._disable(type(exc).__name__, str(exc))
            log.error("agh_nb: server extension disabled (its routes answer 503): %s", one_line(str(exc)))
        except Exception as exc:  # a bug: keep the server up, say so once, keep the traceback
            self._disable(HostError.__name__, "the agh_nb runtime failed to start; see the server log")
            log.exception("agh_nb: server extension disabled: the runtime failed to start: %r", exc)
        else:
            if self.state is HostState.STOPPED:  # the server stopped while we were starting
                await runtime.aclose()
            else:
                self._runtime = runtime
                self._reader = Reader(
                    runtime.store, home=runtime.home, stale_after=runtime.settings.stale_after, vault=runtime.vault
                )
                self.state = HostState.RUNNING
                _register_exit_hook(self._close_at_exit)
                log.info("agh_nb: runtime started (AGH_HOME=%s, store %s)", runtime.home, runtime.store.path)
        finally:
            self._started.set()

    def _disable(self, error_type: str, message: str) -> None:
        self.state = HostState.DISABLED
        self._failure = (error_type, f"agh_nb is disabled in this Jupyter server: {one_line(message)}")

    async def aclose(self) -> None:
        """End open streams, stop live sessions, close the store. Idempotent."""
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._close())
        await asyncio.shield(self._close_task)

    async def _close(self) -> None:
        previous, self.state = self.state, HostState.STOPPED
        if previous is HostState.STARTING:
            await self._started.wait()
        if self._failure is None:
            self._failure = (HostError.__name__, "the Jupyter server is shutting down")
        runtime, self._runtime = self._runtime, None
        try:
            if runtime is not None:
                await runtime.aclose()  # session_stopped events still reach open streams
        finally:
            streams, self._streams = list(self._streams), set()
            await asyncio.gather(*(close() for close in streams), return_exceptions=True)
        log.info("agh_nb: runtime stopped")

    def _close_at_exit(self) -> None:
        # The process is exiting but the server's shutdown hooks never ran (the loop was broken
        # out of): stop the sessions on that loop if it still can run, else at least commit and
        # close the store; sessions left active are settled by crash repair at the next start.
        runtime, loop = self._runtime, self._loop
        if runtime is None or loop is None or loop.is_running():
            return
        try:
            if not loop.is_closed():
                loop.run_until_complete(asyncio.wait_for(self.aclose(), EXIT_TIMEOUT))
            else:
                log.warning("agh_nb: the server exited without its shutdown hooks; live sessions will be repaired at the next start")
                runtime.store.close()
        except Exception as exc:
            log.warning("agh_nb: closing the runtime at exit failed: %r", exc)

    async def runtime(self) -> Runtime:
        """Return the running runtime, waiting while it starts.

        Raises:
            ApiError: 503 when it is disabled, stopped, or still starting after ``ready_timeout``.
        """
        if self.state is HostState.STARTING:
            try:
                await asyncio.wait_for(self._started.wait(), self.ready_timeout)
            except TimeoutError:
                raise ApiError(503, HostError.__name__, "the agh_nb runtime is still starting; retry") from None
        if self._runtime is not None and self.state is HostState.RUNNING:
            return self._runtime
        error_type, message = self._failure or (HostError.__name__, "the agh_nb runtime is not running")
        raise ApiError(503, error_type, message)  # a fresh error per request: raising grows tracebacks

    async def reader(self) -> Reader:
        """The store reader (``Reader`` of agh_nb.api) of the running runtime."""
        await self.runtime()
        assert self._reader is not None
        return self._reader

    def redact(self, text: str) -> str:
        """Remove stored secret values from ``text`` (an error message on its way out)."""
        runtime = self._runtime
        return runtime.redactor.redact(text) if runtime is not None else text

    def describe(self) -> JSON:
        """Which store this host holds, for ``GET /agh/api/host``: ``agh-nb`` checks it found the
        server of its own ``AGH_HOME`` before sending it any word (docs/http-api.md)."""
        home = (self._runtime.home if self._runtime is not None else self.home or agh_home()).resolve()
        return {"home": str(home), "store": str(home / STORE_FILE), "pid": os.getpid(), "state": self.state.value}

    def add_stream(self, close: Callable[[], Awaitable[None]]) -> Callable[[], None]:
        """Track an open stream; ``await close()`` ends it at shutdown. Returns the untrack function."""
        self._streams.add(close)
        return lambda: self._streams.discard(close)

    # -- reads that know about live sessions (docs/http-api.md) ------------------------------

    async def record(self, session_id: str) -> JSON:
        """The freshest record of a session (live if it runs here)."""
        return (await self._current(session_id)).to_dict()

    async def _current(self, session_id: str) -> SessionRecord:
        runtime = await self.runtime()
        live = runtime.manager.live(session_id)
        if live is not None:
            return live.record
        reader = await self.reader()
        return await asyncio.to_thread(reader.get, session_id)

    async def sessions(self, *, include_health: bool) -> list[JSON]:
        """Every session, oldest first, live records overlaid (+ ``health`` when asked)."""
        runtime = await self.runtime()
        reader = await self.reader()
        stored = await asyncio.to_thread(reader.list)
        now = datetime.now(timezone.utc)
        out = []
        for record in stored:
            live = runtime.manager.live(record.id)
            doc = current_record(record, live).to_dict()
            if include_health:
                doc["health"] = status_view(record, live, now=now, stale_after=reader.stale_after)["health"]
            out.append(doc)
        return out

    async def status(self, session_id: str) -> JSON:
        """State, stop reason, failure and health (+ ``queue`` for a live session)."""
        runtime = await self.runtime()
        reader = await self.reader()
        record = await self._current(session_id)
        live = runtime.manager.live(session_id)
        return status_view(record, live, now=datetime.now(timezone.utc), stale_after=reader.stale_after)

    async def inspect(self, session_id: str) -> JSON:
        """Record + status + queue + pending approvals and elicitations + the session's vault refs."""
        runtime = await self.runtime()
        reader = await self.reader()
        record = await self._current(session_id)
        live = runtime.manager.live(session_id)
        record = current_record(record, live)
        status = status_view(record, live, now=datetime.now(timezone.utc), stale_after=reader.stale_after)
        agent, vault_refs = await asyncio.to_thread(
            lambda: (reader.agent(record), reader.session_vault_refs(session_id))
        )
        return inspect_view(
            record,
            status,
            pending_approvals=runtime.manager.approvals.pending(session_id),
            pending_elicitations=runtime.manager.elicitations.pending(session_id),
            vault_refs=vault_refs,
            agent=agent,
        )

    async def pending(self, session_id: str | None) -> list[JSON]:
        """Pending permission requests of one session (checked to exist) or of all."""
        runtime = await self.runtime()
        if session_id is not None:
            await runtime.manager.get(session_id)
        return runtime.manager.approvals.pending(session_id)

    async def turn(self, session_id: str, turn_id: str, *, wait: float, gone: asyncio.Event) -> JSON:
        """A turn's status; with ``wait`` seconds, wait (until done or ``gone`` is set) first.

        Raises:
            SessionNotFoundError: no such session.
            ApiError: 404 when the session has no such turn.
        """
        runtime = await self.runtime()
        await runtime.manager.get(session_id)
        turn = self.turns.get(turn_id)
        if turn is not None and turn.session_id == session_id:
            if wait > 0 and not turn.future.done():
                await _first(asyncio.shield(turn.future), gone.wait(), timeout=min(wait, TURN_WAIT_MAX))
            return self._turn_doc(runtime, turn.session_id, turn.turn_id, turn.future)
        return await self._stored_turn(runtime, session_id, turn_id)

    @staticmethod
    def _turn_doc(
        runtime: Runtime, session_id: str, turn_id: str, future: asyncio.Future[TurnResult]
    ) -> JSON:
        doc: JSON = {"session_id": session_id, "turn_id": turn_id}
        if future.done():
            if future.cancelled() or future.exception() is not None:
                return doc | {"status": "done", "stop_reason": "cancelled", "error": "the turn did not finish"}
            result = future.result().to_dict()
            return doc | {"status": "done", **{k: result[k] for k in ("stop_reason", "error", "usage")}}
        live = runtime.manager.live(session_id)
        queue = live.queue_snapshot() if live is not None else []
        entry = next((q for q in queue if q["turn_id"] == turn_id), None)
        position = entry["position"] if entry else 0
        return doc | {"status": "running" if position == 0 else "queued", "position": position}

    async def _stored_turn(self, runtime: Runtime, session_id: str, turn_id: str) -> JSON:
        # A turn this server does not remember (a replayed transcript, or forgotten): the store knows.
        query = EventQuery(types=(EventType.USER_MESSAGE.value, EventType.DONE.value), turn_id=turn_id)
        events = await asyncio.to_thread(runtime.store.query_events, session_id, query)
        if not events:
            raise not_found(f"session {session_id} has no turn {turn_id!r}", session_id=session_id, turn_id=turn_id)
        doc: JSON = {"session_id": session_id, "turn_id": turn_id}
        done = next((e for e in events if e.type == EventType.DONE.value), None)
        if done is not None:
            c = done.content
            return doc | {"status": "done", "stop_reason": c.get("stop_reason"), "error": c.get("error"), "usage": c.get("usage")}
        live = runtime.manager.live(session_id)
        if live is None:
            return doc | {"status": "done", "stop_reason": "cancelled", "error": "the session stopped during the turn"}
        running = live.active_turn_id == turn_id
        return doc | {"status": "running" if running else "queued"}

    def synthetic_stop(self, record: JSON, last_sequence: int) -> JSON:
        """The synthetic terminal ``session_stopped`` row of a stopped session (SSE)."""
        ts = record.get("updated_at") or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return {
            "id": None,
            "session_id": record["id"],
            "sequence": last_sequence,
            "turn_id": None,
            "type": EventType.SESSION_STOPPED.value,
            "agent_name": record.get("agent_name"),
            "workspace_id": record.get("workspace_id"),
            "workspace_path": record.get("workspace_path"),
            "content": {
                "schema": "agh.session.event.v1",
                "type": EventType.SESSION_STOPPED.value,
                "session_id": record.get("acp_session_id"),
                "turn_id": None,
                "timestamp": ts,
                "stop_reason": record.get("stop_reason"),
                "failure": record.get("failure"),
            },
            "timestamp": ts,
            "synthetic": True,
        }


async def _first(*aws: Any, timeout: float) -> None:
    """Wait until the first of ``aws`` finishes or ``timeout`` passes; cancel the rest."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def _stop_on_sigint(serverapp: Any) -> None:
    """Make an interrupt without a terminal stop the server through its shutdown hooks.

    With a terminal, Jupyter asks for confirmation and then stops cleanly. Without one (a service,
    a container, a CI job) it installs nothing: the interrupt breaks out of the loop and the
    shutdown hooks never run, so live sessions would be left for crash repair. Only when nobody
    installed a handler, the first interrupt asks the server to stop, as SIGTERM does; a second
    one interrupts at once.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return

    def stop(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        serverapp.log.critical("received signal %s, stopping", signum)
        serverapp.stop(from_signal=True)

    signal.signal(signal.SIGINT, stop)


def _register_exit_hook(hook: Callable[[], None]) -> None:
    # Like agh_nb.api: threading's exit hooks run before concurrent.futures refuses new work,
    # which the runtime's close path (asyncio.to_thread) still needs.
    register = getattr(threading, "_register_atexit", None)
    try:
        if register is not None:
            register(hook)
    except RuntimeError:  # the interpreter is already shutting down
        pass


class AghServerExtension(ExtensionApp):
    """The agh_nb Jupyter server extension: routes under ``<base_url>agh/api/`` (docs/http-api.md).

    Enabled on install by ``etc/jupyter/jupyter_server_config.d/agh_nb.json``; configure with
    ``--AghServerExtension.home=...`` and friends.
    """

    name = "agh_nb"
    load_other_extensions = True

    home = Unicode("", help="AGH_HOME of the server host (default: $AGH_HOME, else ~/.agh-nb).").tag(config=True)
    keepalive_interval = Float(15.0, help="Seconds between ': keep-alive' comments on open streams.").tag(config=True)
    ready_timeout = Float(60.0, help="Seconds a request waits for the runtime to finish starting.").tag(config=True)
    stream_high_water = Int(
        20_000, help="Events an event stream holds for a slow client before it catches up from the store instead."
    ).tag(config=True)

    def initialize_settings(self) -> None:
        """Create the (not yet started) host; it starts once the server's loop runs."""
        self._route_logs()
        self.host = ServerHost(home=Path(self.home).expanduser() if self.home else None, ready_timeout=self.ready_timeout)

    def _route_logs(self) -> None:
        # agh_nb's module loggers (session warnings, repairs, this extension) go to the server's
        # log, formatted like it, unless the embedding process configured them already.
        package = logging.getLogger("agh_nb")
        assert self.serverapp is not None
        server_log = self.serverapp.log
        if package.handlers or not server_log.handlers:
            return
        for handler in server_log.handlers:
            package.addHandler(handler)
        package.setLevel(server_log.getEffectiveLevel())
        package.propagate = False

    def initialize_handlers(self) -> None:
        """Add the routes of docs/http-api.md under ``<base_url>agh/api/``."""
        from agh_nb.server.handlers import routes

        self.handlers.extend(routes(API_PREFIX))

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        """Advertise the server to kernels it starts, then build the runtime on its loop."""
        self._discovery = json.dumps(
            {"url": serverapp.connection_url, "token": serverapp.identity_provider.token, "pid": os.getpid()}
        )
        os.environ[ENV_VAR] = self._discovery
        await self.host.start()
        if self.host.state is not HostState.RUNNING:
            self._forget_discovery()
        else:
            _stop_on_sigint(serverapp)

    async def stop_extension(self) -> None:
        """Stop the sessions this server runs and close the store (server shutdown)."""
        self._forget_discovery()
        await self.host.aclose()

    def _forget_discovery(self) -> None:
        if os.environ.get(ENV_VAR) == getattr(self, "_discovery", None):
            os.environ.pop(ENV_VAR, None)
