"""A prompt turn (SPEC 2): ``Turn`` (queued, running, done), ``TurnResult`` (how it ended) and
``storable_usage`` (what of a turn's usage report the store can merge).

Owns only these values; ``core.session`` runs turns. Imports only ``events`` and the standard
library.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from agh_nb.events import JSON

log = logging.getLogger(__name__)

_INT64 = (-(2**63), 2**63 - 1)


def storable_usage(usage: JSON | None) -> JSON | None:
    """A usage report without the counts the store cannot hold (None when nothing is left).

    ACP token counts are unbounded non-negative integers; the ``token_usage`` columns are 64-bit.
    A count beyond that (an agent's bug, or a very long-lived session) is dropped from the merge,
    with a warning, instead of failing the store's commit; the turn's ``done`` event keeps it.
    """
    if not usage:
        return None
    kept = {
        key: value
        for key, value in usage.items()
        if not (isinstance(value, int) and not isinstance(value, bool) and not _INT64[0] <= value <= _INT64[1])
    }
    if len(kept) != len(usage):
        log.warning("usage values out of the store's range were not merged: %s", sorted(set(usage) - set(kept)))
    return kept or None


@dataclass(frozen=True)
class TurnResult:
    """How a prompt turn ended: the ACP stop reason (``end_turn``, ``cancelled``...) or ``error``."""

    session_id: str
    turn_id: str
    stop_reason: str
    error: str | None = None
    usage: JSON | None = None

    def to_dict(self) -> JSON:
        """Return the JSON form."""
        return {
            "session_id": self.session_id,
            "turn_id": self.turn_id,
            "stop_reason": self.stop_reason,
            "error": self.error,
            "usage": self.usage,
        }


class Turn:
    """A submitted prompt: queued, then running, then done (``future`` resolves)."""

    def __init__(self, session_id: str, turn_id: str, text: str, position: int) -> None:
        self.session_id = session_id
        self.turn_id = turn_id
        self.text = text
        self.position = position
        self.future: asyncio.Future[TurnResult] = asyncio.get_running_loop().create_future()
        self.recorded = False
        """True once the turn's ``done`` event is stored (a failed turn resolves only later, once
        the session it stopped has settled)."""

    def resolve(self, result: TurnResult) -> None:
        """Finish the turn (first result wins)."""
        if not self.future.done():
            self.future.set_result(result)

    def to_dict(self) -> JSON:
        """Return the queued turn as JSON (``turn_id``, queue ``position``)."""
        return {"session_id": self.session_id, "turn_id": self.turn_id, "position": self.position}
