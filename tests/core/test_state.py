"""The lifecycle table (SPEC 2): exactly the allowed moves, everything else raises "from -> to"."""

from __future__ import annotations

import itertools

import pytest

from agh_nb.core.state import SessionState, transition
from agh_nb.errors import InvalidTransitionError

ALLOWED = {
    (SessionState.STARTING, SessionState.ACTIVE),
    (SessionState.STARTING, SessionState.STOPPING),
    (SessionState.ACTIVE, SessionState.STOPPING),
    (SessionState.STOPPING, SessionState.STOPPED),
    (SessionState.STOPPED, SessionState.STARTING),
}
PAIRS = list(itertools.product(SessionState, SessionState))


@pytest.mark.parametrize(("current", "target"), PAIRS, ids=[f"{a.value}->{b.value}" for a, b in PAIRS])
def test_transition_table(current: SessionState, target: SessionState) -> None:
    if (current, target) in ALLOWED:
        assert transition("sess_x", current, target) is target
    else:
        with pytest.raises(InvalidTransitionError, match=f"{current.value} -> {target.value}"):
            transition("sess_x", current, target)
