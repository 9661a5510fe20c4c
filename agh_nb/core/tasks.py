"""Owned background tasks: the one way agh_nb starts a task it does not await on the spot.

Owns: ``TaskOwner``. Every task it spawns has a name (``<what>[<owner>]``), is kept until it
ends, has its failure logged (never the silent "exception was never retrieved"), and is
cancelled and awaited by ``aclose``. Imports only the standard library.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class TaskOwner:
    """Owns the background tasks of one component (a session, a driver, a host).

    Args:
        owner: names the component in task names and log lines (e.g. a session id).
        logger: where failures are logged (default: this module's logger).
    """

    def __init__(self, owner: str, *, logger: logging.Logger | None = None) -> None:
        self._owner = owner
        self._log = logger or log
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    @property
    def owner(self) -> str:
        """The name of the owning component."""
        return self._owner

    def rename(self, owner: str) -> None:
        """Name later tasks after ``owner`` (an agent name known only once it starts)."""
        self._owner = owner

    def spawn(self, coro: Coroutine[Any, Any, T], what: str) -> asyncio.Task[T]:
        """Start ``coro`` as a task named ``what[owner]`` and keep it until it ends.

        A task spawned after ``aclose`` is cancelled at once (its owner is gone).
        """
        task = asyncio.get_running_loop().create_task(coro, name=f"{what}[{self._owner}]")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        if self._closed:
            task.cancel()
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._log.error("task %s failed: %r", task.get_name(), exc, exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def aclose(self) -> None:
        """Cancel every task and wait until each has ended; idempotent."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
