"""Health (SPEC 3) from metadata only: presence (the heartbeat), activity and the stale threshold."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from agh_nb.core.health import compute_health, heartbeat_interval, heartbeat_phase
from agh_nb.core.record import Failure, SessionRecord
from agh_nb.core.state import FailureKind, SessionState

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=timezone.utc)
STALE_AFTER = 900.0


def record(state: SessionState = SessionState.ACTIVE, *, presence_age: float | None = 1.0, **changes: object) -> SessionRecord:
    base = SessionRecord(
        id="sess_h",
        name=None,
        agent_name="demo",
        type="user",
        workspace_id="ws_h",
        workspace_path="/ws",
        permissions="approve-reads",
        state=state,
        created_at=NOW - timedelta(hours=1),
        updated_at=NOW - timedelta(seconds=5),
        last_presence_at=None if presence_age is None else NOW - timedelta(seconds=presence_age),
    )
    return base.replace(**changes)


def health(rec: SessionRecord, *, live: bool = True, prompt: str | None = None, activity_age: float = 1.0) -> dict:
    return compute_health(
        rec,
        live=live,
        active_prompt=prompt,
        last_activity_at=NOW - timedelta(seconds=activity_age),
        now=NOW,
        stale_after=STALE_AFTER,
    )


def test_presence_is_the_recorded_heartbeat_not_now() -> None:
    doc = health(record(presence_age=42.0))
    assert doc["last_presence_at"] == "2026-11-24T11:59:18.000000Z"
    assert health(record(presence_age=None))["last_presence_at"] is None


@pytest.mark.parametrize(
    ("live", "prompt", "presence_age", "activity_age", "expected"),
    [
        pytest.param(True, None, 1.0, 1.0, "healthy", id="live-idle-fresh"),
        pytest.param(True, "turn_1", STALE_AFTER + 1, 1.0, "stale", id="live-presence-stale-even-while-prompting"),
        pytest.param(True, None, STALE_AFTER + 1, 1.0, "stale", id="live-presence-stale"),
        pytest.param(True, None, 1.0, STALE_AFTER + 1, "stale", id="live-idle-past-threshold"),
        pytest.param(True, "turn_1", 1.0, STALE_AFTER + 1, "healthy", id="long-prompt-is-not-idle"),
        pytest.param(False, None, STALE_AFTER + 1, 1.0, "stale", id="detached-presence-stale"),
        pytest.param(False, None, 1.0, 1.0, "unknown", id="detached-fresh"),
        pytest.param(False, None, None, 1.0, "unknown", id="detached-never-seen"),
    ],
)
def test_not_stopped_sessions(
    live: bool, prompt: str | None, presence_age: float | None, activity_age: float, expected: str
) -> None:
    doc = health(record(presence_age=presence_age), live=live, prompt=prompt, activity_age=activity_age)
    assert doc["health"] == expected
    if expected == "stale" and not prompt and live:
        assert doc["ineligibility_reason"] == "session_unhealthy" and not doc["eligible_for_wake"]


def test_a_stopped_session_is_never_stale() -> None:
    old = record(SessionState.STOPPED, presence_age=STALE_AFTER * 10)
    assert health(old, live=False)["health"] == "unknown"
    failed = old.replace(failure=Failure(FailureKind.PROCESS_EXIT, "boom"))
    assert health(failed, live=False)["health"] == "dead"


def test_stale_after_zero_turns_staleness_off() -> None:
    doc = compute_health(
        record(presence_age=10**6), live=True, active_prompt=None, last_activity_at=NOW - timedelta(days=3),
        now=NOW, stale_after=0,
    )  # fmt: skip
    assert doc["health"] == "healthy"


@pytest.mark.parametrize(("stale_after", "interval"), [(900.0, 30.0), (60.0, 20.0), (0.6, 0.2), (0.0, 30.0)])
def test_heartbeat_interval_is_a_third_of_stale_after_at_most_30s(stale_after: float, interval: float) -> None:
    assert heartbeat_interval(stale_after) == pytest.approx(interval)


def test_heartbeat_phases_spread_sessions_over_the_interval() -> None:
    phases = sorted(heartbeat_phase(f"sess_{i:032x}", 30.0) for i in range(50))
    assert all(0 < p <= 30.0 for p in phases)
    assert heartbeat_phase("sess_a", 30.0) == heartbeat_phase("sess_a", 30.0)  # stable for a session
    gaps = [b - a for a, b in zip([0.0, *phases], [*phases, 30.0], strict=True)]
    assert max(gaps) < 6.0, "fifty sessions leave no long stretch without a heartbeat"
    assert max(sum(1 for p in phases if lo <= p < lo + 3.0) for lo in range(0, 30, 3)) <= 12, "no burst"
