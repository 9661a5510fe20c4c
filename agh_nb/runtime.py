"""The runtime: one asyncio loop in a dedicated thread, wiring the core to the adapters.

Owns: ``Runtime`` (the embedded host's engine: the loop thread, the DuckDB store at
``$AGH_HOME/agh.duckdb``, the vault and its redactor, the session manager with ACP drivers). Cells in the kernel's main
thread call into it with ``call``; sessions keep running while a cell computes or sleeps,
because nothing here needs the kernel's own loop. The only module importing adapters.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from agh_nb.adapters.duckdb_store import DuckDBStore
from agh_nb.adapters.vault import Vault
from agh_nb.config import Settings, agh_home, load_settings
from agh_nb.core.manager import SessionManager
from agh_nb.core.private import make_private_dirs, tighten_home
from agh_nb.core.redaction import Redactor, install_log_redaction
from agh_nb.errors import HostError, UsageError
from agh_nb.events import JSON
from agh_nb.holder import remove_holder, this_process, write_holder

if TYPE_CHECKING:
    from agh_nb.adapters.acp_driver import AcpDriver

log = logging.getLogger(__name__)

T = TypeVar("T")

STORE_FILE = "agh.duckdb"
SHUTDOWN_DETAIL = "host shutting down"
"""The ``stop_detail`` of every session a host shutdown stops."""
EMBEDDED_BUDGET = 2.5
EMBEDDED_ALLOWANCE = 1.0
"""The embedded host's shutdown budget and recording allowance (``SessionManager.stop_all``).
Jupyter sends a kernel it asked to shut down (or restart) SIGTERM 2.5 s later and SIGKILL at
5 s (``shutdown_wait_time``); the host ignores SIGTERM while it closes and is done well before."""
LOOP_END_TIMEOUT = 2.0
"""Seconds the embedded host's loop may take, once its sessions are stopped, to end the tasks
still on it and to stop."""


def open_store(home: Path, *, read_only: bool = False) -> DuckDBStore:
    """Open the DuckDB store of ``home`` (raises StoreLockedError when another process holds it).

    The home is private (SPEC 7): created 0700 when missing, and any group or other access an
    older home had is taken away first (one log line says how many paths changed).
    """
    if not read_only:
        make_private_dirs(home)
    tighten_home(home)
    return DuckDBStore.open(home / STORE_FILE, read_only=read_only)


def export_parquet(
    store: object, directory: Path, *, since: datetime | None = None, session_id: str | None = None
) -> JSON:
    """Export what is new in ``store`` into ``directory`` as Parquet (``adapters.parquet_export``).

    Blocking (reads the store and writes files): call it off the event loop.

    Raises:
        UsageError: the store is not a DuckDB store, or ``directory`` is not an export directory.
        ExportError, StoreError: as ``export_store``.
    """
    if not isinstance(store, DuckDBStore):
        raise UsageError("export needs the DuckDB store of a host")
    # Imported here: pyarrow.parquet costs every kernel and command-line start a few hundred ms.
    from agh_nb.adapters.parquet_export import export_store

    with store.read_snapshot() as cur:
        return export_store(cur, directory, since=since, session_id=session_id)


def open_vault(home: Path, redactor: Redactor | None = None) -> Vault:
    """Open ``home``'s vault (metadata surfaces only; values resolve at agent spawn)."""
    return Vault.open(home, redactor=redactor)


class Runtime:
    """The embedded host engine. Use ``Runtime.start()``; ``close()`` is idempotent.

    Args:
        home: ``$AGH_HOME`` (default from the environment).
        settings: configuration (default: ``home/config.toml``).
    """

    def __init__(
        self,
        *,
        home: Path | None = None,
        settings: Settings | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.home = home or agh_home()
        make_private_dirs(self.home)
        self.settings = settings or load_settings(self.home)
        self.redactor = Redactor()
        self.store = open_store(self.home)
        try:
            self.vault = open_vault(self.home, self.redactor)
        except BaseException:
            self.store.close()
            raise
        self._uninstall_log_redaction = install_log_redaction(self.redactor)
        # Embedded in a kernel: our own loop in a thread. Inside the Jupyter server: its loop.
        self._attached = loop is not None
        # Says who holds the store (agh-nb names the notebook, or finds the server, from it).
        write_holder(self.home, this_process("server" if self._attached else None))
        self._loop = loop or asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run_loop, name="agh-runtime", daemon=True)
        self._closed = False
        self._close_lock = threading.Lock()
        # Imported here, by a live host, and not with this module: readers (agh-nb's read words,
        # Reader.open) import runtime for open_store, and acp's schema costs 0.5 s to import.
        from agh_nb.adapters.acp_driver import AcpDriver

        def driver() -> AcpDriver:
            return AcpDriver(redact=self.redactor.redact, backlog=self.store.backlog)

        self.manager = SessionManager(
            store=self.store,
            driver_factory=driver,
            settings=self.settings,
            home=self.home,
            resolve_secret=self.vault.resolver(os.environ),
            redact=self.redactor.redact,
            redact_json=self.redactor.redact_json,
            host_pid=os.getpid(),
            redactor=self.redactor,
        )

    @classmethod
    def start(cls, *, home: Path | None = None, settings: Settings | None = None) -> Runtime:
        """Open the store and start the runtime thread."""
        runtime = cls(home=home, settings=settings)
        runtime._thread.start()
        runtime._ready.wait()
        # Sessions left active by a dead host are settled before anyone reads them.
        repaired = runtime.call(runtime.manager.repair_stale)
        if repaired:
            log.warning("repaired %d session(s) left by a host that died: %s", len(repaired), ", ".join(repaired))
        runtime._loop.call_soon_threadsafe(runtime.manager.start_ledger_catch_up)
        return runtime

    @classmethod
    async def start_attached(cls, *, home: Path | None = None, settings: Settings | None = None) -> Runtime:
        """Build the runtime on the running loop (the Jupyter server's); no thread of its own."""
        runtime = await asyncio.to_thread(cls, home=home, settings=settings, loop=asyncio.get_running_loop())
        repaired = await runtime.manager.repair_stale()
        if repaired:
            log.warning("repaired %d session(s) left by a host that died: %s", len(repaired), ", ".join(repaired))
        runtime.manager.start_ledger_catch_up()
        return runtime

    async def aclose(self) -> None:
        """Close an attached runtime from its own loop: stop sessions, close the store.

        Bounded (``SessionManager.stop_all``): Jupyter kills a server that takes long to stop.
        """
        if self._closed:
            return
        self._closed = True
        await self.manager.stop_all(detail=SHUTDOWN_DETAIL)
        await asyncio.to_thread(self._close_store)

    def _close_store(self) -> None:
        self.store.close()
        remove_holder(self.home)
        self._uninstall_log_redaction()

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(self._ready.set)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The runtime's event loop (runs in its own thread)."""
        return self._loop

    @property
    def closed(self) -> bool:
        """True once ``close()`` ran."""
        return self._closed

    def submit(self, factory: Callable[[], Awaitable[T]]) -> concurrent.futures.Future[T]:
        """Schedule ``factory()`` on the runtime loop and return a thread-safe future."""
        if self._closed:
            raise HostError("the agh_nb host is closed: run %reload_ext agh_nb or restart the kernel")

        async def run() -> T:
            return await factory()

        return asyncio.run_coroutine_threadsafe(run(), self._loop)

    def call(self, factory: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
        """Run ``factory()`` on the runtime loop and wait for its result (from another thread)."""
        if threading.current_thread() is self._thread or (self._attached and _on_loop(self._loop)):
            raise HostError("Runtime.call() cannot be used from the runtime thread itself")
        return self.submit(factory).result(timeout)

    def close(self) -> None:
        """Stop live sessions, end the loop's tasks, stop the loop, flush and close the store.

        Safe to call twice. Bounded (``SessionManager.stop_all``), so it fits in the few seconds
        Jupyter gives a kernel that is shut down or restarted before it kills it.
        """
        if self._attached:
            raise HostError("an attached runtime is closed with 'await runtime.aclose()' on its loop")
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            with _sigterm_deferred():
                if self._thread.is_alive():
                    try:
                        asyncio.run_coroutine_threadsafe(self._shut_down(), self._loop).result()
                    except Exception as exc:  # shutdown must go on: the store still has to close
                        log.warning("stopping sessions at shutdown failed: %r", exc)
                    self._loop.call_soon_threadsafe(self._loop.stop)
                    self._thread.join(LOOP_END_TIMEOUT)
                self._close_store()

    async def _shut_down(self) -> None:
        """On the loop: stop every session, then end every task still on the loop (none should
        be left; one that is would otherwise be destroyed pending when the loop closes)."""
        await self.manager.stop_all(detail=SHUTDOWN_DETAIL, budget=EMBEDDED_BUDGET, allowance=EMBEDDED_ALLOWANCE)
        current = asyncio.current_task()
        rest = [t for t in asyncio.all_tasks() if t is not current]
        for task in rest:
            task.cancel()
        if rest:
            await asyncio.wait(rest, timeout=LOOP_END_TIMEOUT)


@contextlib.contextmanager
def _sigterm_deferred() -> Iterator[None]:
    """Ignore SIGTERM while the host closes (from the main thread): Jupyter sends it to a kernel
    2.5 s into its shutdown, which would cut a close that is bounded anyway short of recording
    its sessions. SIGKILL, at 5 s, still ends a host that overran."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    except (ValueError, OSError):  # no signals here (an embedding interpreter)
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(ValueError, OSError, TypeError):
            signal.signal(signal.SIGTERM, previous)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
