"""Handles the hosts return to notebook users: ``TurnHandle`` (a submitted prompt turn) and
``LogLines`` (an agent's log lines). Every host returns these same types (``core.host``).
"""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any

from agh_nb.core.turn import TurnResult
from agh_nb.errors import AghError
from agh_nb.events import JSON


class LogLines(list[str]):
    """The lines of an agent's log (``session logs``): a list of strings that prints as the log."""

    cursor: str = ""

    @property
    def empty(self) -> bool:
        """True when there is no line (printed as ``(no rows)`` by the command line)."""
        return not self

    def to_string(self, index: bool = False) -> str:
        """The lines joined, as the command line prints them."""
        return "\n".join(self)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.to_string() if self else "(the agent has written nothing to stderr)")


class TurnHandle:
    """A submitted prompt turn; ``wait()`` blocks until it finishes."""

    def __init__(self, turn: JSON, future: concurrent.futures.Future[TurnResult]) -> None:
        self.session_id: str = turn["session_id"]
        self.turn_id: str = turn["turn_id"]
        self.position: int = turn["position"]
        self._future = future

    def done(self) -> bool:
        """True once the turn finished."""
        return self._future.done()

    def wait(self, timeout: float | None = None) -> TurnResult:
        """Block until the turn finishes and return how it ended.

        Raises:
            AghError: when ``timeout`` seconds pass first (the turn keeps running).
        """
        started = time.monotonic()
        try:
            return self._future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise AghError(
                f"turn {self.turn_id} still running after {time.monotonic() - started:.1f}s; "
                "it continues in the background"
            ) from None

    def to_dict(self) -> JSON:
        """JSON form: the queued turn, or the finished turn when done."""
        base: JSON = {"session_id": self.session_id, "turn_id": self.turn_id, "position": self.position}
        if self._future.done() and not self._future.cancelled() and self._future.exception() is None:
            return base | self._future.result().to_dict() | {"status": "done"}
        return base | {"status": "running" if self.position == 0 else "queued"}

    def __repr__(self) -> str:
        return f"<TurnHandle {self.turn_id} of {self.session_id} position={self.position} done={self.done()}>"
