"""Pieces of the server host that need no server: the error table, JSON-safe SQL values, the stream feed."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
from decimal import Decimal
from typing import Any

import pytest

from agh_nb import errors
from agh_nb.events import Event
from agh_nb.remote import _ERRORS, error_from_body
from agh_nb.server.errors import ApiError, api_error, error_body, status_for
from agh_nb.server.handlers import json_safe
from agh_nb.server.sse import _Feed, frame


@pytest.mark.parametrize(
    "error, status",
    [
        pytest.param(errors.QueryError("x"), 400, id="query"),
        pytest.param(errors.UsageError("x"), 400, id="usage"),
        pytest.param(errors.VaultRefError("x"), 400, id="vault-ref"),
        pytest.param(errors.ConfigError("x"), 400, id="config"),
        pytest.param(errors.WorkspaceError("x"), 400, id="workspace"),
        pytest.param(errors.AgentNotFoundError("x"), 404, id="agent-not-found"),
        pytest.param(errors.SessionNotFoundError("x"), 404, id="session-not-found"),
        pytest.param(errors.SecretNotFoundError("x"), 404, id="secret-not-found"),
        pytest.param(errors.SessionNotActiveError("x"), 409, id="not-active"),
        pytest.param(errors.ApprovalError("x"), 409, id="approval"),
        pytest.param(errors.ResumeError("x"), 409, id="resume"),
        pytest.param(errors.QueueFullError("x"), 409, id="queue-full"),
        pytest.param(errors.AgentStartError("x"), 422, id="agent-start"),
        pytest.param(errors.StoreError("x"), 500, id="store"),
        pytest.param(errors.StoreLockedError("x"), 500, id="store-locked"),
        pytest.param(errors.VaultKeyError("x"), 500, id="vault-key"),
        pytest.param(errors.AghError("x"), 500, id="base"),
    ],
)
def test_status_table_of_the_contract(error: errors.AghError, status: int) -> None:
    assert status_for(error) == status
    body = api_error(error).body()["error"]
    assert body == {"type": type(error).__name__, "message": "x"}


def _tree(cls: type[errors.AghError]) -> list[type[errors.AghError]]:
    return [cls] + [c for sub in cls.__subclasses__() for c in _tree(sub)]


ERROR_CLASSES = sorted({c for c in _tree(errors.AghError) if c.__module__ == errors.__name__}, key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=[c.__name__ for c in ERROR_CLASSES])
def test_a_remote_error_keeps_its_class_and_identifying_fields(cls: type[errors.AghError]) -> None:
    # Server side: the error the handler raised, answered as JSON; client side: the same class back.
    sent = api_error(cls("one line for the user", session_id="sess_1", request_id="perm_2", secret="v"))
    body = json.dumps(sent.body()).encode()
    got = error_from_body(sent.status_code, body)
    assert type(got) is cls and str(got) == "one line for the user"
    assert got.fields == {"session_id": "sess_1", "request_id": "perm_2", "http_status": sent.status_code}


def test_remote_error_map_is_the_whole_tree_and_odd_bodies_become_agh_errors() -> None:
    assert set(_ERRORS.values()) == set(ERROR_CLASSES)
    assert {errors.QueryError, errors.StoreLockedError, errors.VaultTamperedError} <= set(_ERRORS.values())
    for status, body in [(404, b'{"error": {"type": "NotFound", "message": "no such turn"}}'),
                         (502, b"<html>bad gateway</html>"), (403, b'{"error": "x"}'), (500, b"")]:
        got = error_from_body(status, body)
        assert type(got) is errors.AghError and got.fields["http_status"] == status and "\n" not in str(got)


def test_error_bodies_are_one_line_redacted_and_carry_ids_only() -> None:
    err = errors.AgentStartError("could not\nstart: sk-SECRET\ttrace", session_id="sess_1", secret="sk-SECRET")
    body = api_error(err, redact=lambda text: text.replace("sk-SECRET", "[redacted]")).body()["error"]
    assert body == {"type": "AgentStartError", "message": "could not start: [redacted] trace", "session_id": "sess_1"}
    assert error_body(500, RuntimeError("boom: /etc/passwd"))["error"]["type"] == "InternalError"
    assert "boom" not in str(error_body(500, RuntimeError("boom")))
    assert error_body(404, None)["error"]["type"] == "NotFound"
    assert error_body(400, ApiError(400, "UsageError", "bad"))["error"] == {"type": "UsageError", "message": "bad"}


def test_json_safe_values() -> None:
    import numpy as np
    import pandas as pd

    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    assert json_safe(float("nan")) is None and json_safe(float("inf")) is None and json_safe(1.5) == 1.5
    assert json_safe(pd.Timestamp(when)) == "2026-01-02T03:04:05+00:00" and json_safe(pd.NaT) is None
    assert json_safe(pd.NA) is None and json_safe(np.int64(3)) == 3 and json_safe(np.array([1, 2])) == [1, 2]
    assert json_safe(Decimal("1.25")) == 1.25 and json_safe(b"\x00\x01") == "AAE="
    assert json_safe(dt.date(2026, 1, 2)) == "2026-01-02" and json_safe(dt.timedelta(seconds=90)) == 90.0
    assert json_safe({"a": [np.float64("nan"), {"b": when}]}) == {"a": [None, {"b": when.isoformat()}]}


def test_sse_frames_are_single_lines_of_json() -> None:
    assert frame(3, "agent_message", '{"text":"a\\nb"}') == 'id: 3\nevent: agent_message\ndata: {"text":"a\\nb"}\n\n'
    assert frame(None, "added", "{}") == "event: added\ndata: {}\n\n"


def _events(first: int, count: int) -> list[Event]:
    when = dt.datetime.now(dt.timezone.utc)
    return [Event(f"evt_{i}", "sess", i, None, "agent_message", "a", "w", "/w", {}, when) for i in range(first, first + count)]


def test_feed_makes_the_catch_up_thread_wait_and_overflows_the_writer() -> None:
    async def scenario() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        wakes: list[int] = []
        feed = _Feed(loop, lambda: wakes.append(1), high_water=10)
        blocked = threading.Event()
        done = threading.Event()

        def catch_up() -> None:  # the backlog thread: the second page must wait for room
            feed.catchup_thread = threading.get_ident()
            feed.offer(_events(1, 10))
            blocked.set()
            feed.offer(_events(11, 5))
            feed.catchup_thread = None  # as the real catch-up thread does once subscribed
            done.set()

        thread = threading.Thread(target=catch_up)
        thread.start()
        await asyncio.to_thread(blocked.wait, 5)
        await asyncio.sleep(0.2)
        waited = not done.is_set()
        first = feed.take()
        feed.consumed(sum(len(b) for b in first))
        await asyncio.to_thread(done.wait, 5)
        thread.join(5)
        await asyncio.sleep(0.05)
        second = feed.take()
        # A writer-thread batch beyond the high water is dropped and flags an overflow instead.
        feed.offer(_events(16, 10))
        writer = threading.Thread(target=feed.offer, args=(_events(26, 3),))
        writer.start()
        writer.join(5)
        await asyncio.sleep(0.05)
        third = feed.take()
        feed.close()
        return {"waited": waited, "first": first, "second": second, "third": third,
                "overflowed": feed.overflowed, "wakes": len(wakes)}

    out = asyncio.run(scenario())
    assert out["waited"], "the catch-up thread did not wait for the client"
    assert [e.sequence for b in out["first"] for e in b] == list(range(1, 11))
    assert [e.sequence for b in out["second"] for e in b] == list(range(11, 16))
    assert [e.sequence for b in out["third"] for e in b] == list(range(16, 26))
    assert out["overflowed"] and out["wakes"] >= 4


def test_closing_the_feed_releases_a_waiting_catch_up_thread() -> None:
    async def scenario() -> bool:
        feed = _Feed(asyncio.get_running_loop(), lambda: None, high_water=1)
        finished = threading.Event()

        def catch_up() -> None:
            feed.catchup_thread = threading.get_ident()
            feed.offer(_events(1, 1))
            feed.offer(_events(2, 1))  # waits: nobody consumes
            finished.set()

        thread = threading.Thread(target=catch_up)
        thread.start()
        await asyncio.sleep(0.2)
        assert not finished.is_set()
        feed.close()
        await asyncio.to_thread(thread.join, 5)
        return finished.is_set()

    assert asyncio.run(scenario())
