"""The lifecycle table (SPEC 2): exactly the allowed moves, everything else raises "from -> to"."""

from __future__ import annotations

import itertools

import pytest

from agh_nb.core.state import SessionState, transition
from agh_nb.errors import InvalidTransitionError

ALLOWED = {
    (SessionState.STARTING, SessionState.ACTIVE),
    (SessionState.ACTIVE, SessionState.STOPPING),
    (SessionState.STOPPING, SessionState.STOPPED),
    (SessionState.STOPPED, SessionState.STARTING),
    # A failed start: it never became active, so it settles without passing through stopping.
    (SessionState.STARTING, SessionState.STOPPED),
}
PAIRS = list(itertools.product(SessionState, SessionState))


@pytest.mark.parametrize(("current", "target"), PAIRS, ids=[f"{a.value}->{b.value}" for a, b in PAIRS])
def test_transition_table(current: SessionState, target: SessionState) -> None:
    if (current, target) in ALLOWED:
        assert transition("sess_x", current, target) is target
    else:
        with pytest.raises(InvalidTransitionError, match=f"{current.value} -> {target.value}") as caught:
            transition("sess_x", current, target)
        assert caught.value.fields["current"] == current.value and caught.value.fields["target"] == target.value


def test_a_start_can_no_longer_pass_through_stopping() -> None:
    # Regression: the table used to allow starting -> stopping (SPEC 2 has no such move).
    with pytest.raises(InvalidTransitionError, match="starting -> stopping"):
        transition("sess_x", SessionState.STARTING, SessionState.STOPPING)
