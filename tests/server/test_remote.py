"""Client mode (``RemoteHost``) gives the words and results of the embedded ``Host`` (SPEC 8).

Each parity test runs the same calls on an embedded host in this process and on a ``RemoteHost``
speaking to a real Jupyter server (the demo agent as a real subprocess in both), and compares
what came back: records, delivered sequences, error classes and their identifying fields.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from agh_nb import errors
from agh_nb.api import Host
from agh_nb.events import Event
from agh_nb.remote import RemoteHost, ServerInfo, _SseReader
from tests.server.harness import Server, wait_for

pytestmark = pytest.mark.timeout(180)

FAKE = "sess_0000000000000000"
AGENT = "demo-fast"


@pytest.fixture(params=["embedded", "remote"])
def any_host(request: pytest.FixtureRequest, server: Server) -> Iterator[Any]:
    """The embedded host (fresh AGH_HOME) or a RemoteHost on the module's Jupyter server."""
    if request.param == "embedded":
        yield request.getfixturevalue("host")
    else:
        yield RemoteHost(ServerInfo(server.url, server.token))


@pytest.fixture
def both(server: Server, host: Host) -> tuple[Host, RemoteHost]:
    """Both hosts at once, for side-by-side comparisons."""
    return host, RemoteHost(ServerInfo(server.url, server.token))


class Collector:
    """A subscription callback that records delivered sequences (any thread)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def __call__(self, events: Sequence[Event]) -> None:
        with self._lock:
            self.events.extend(events)

    def sequences(self) -> list[int]:
        with self._lock:
            return [e.sequence for e in self.events]


def _sequences(host: Any, sid: str) -> list[int]:
    return [e.sequence for e in host.events(sid)]


def _firehose(host: Any, sid: str, n: int = 3) -> None:
    assert host.prompt(sid, f"firehose {n}").wait(60).stop_reason == "end_turn"


def test_a_subscription_outlives_stops_and_resumes(any_host: Any, tmp_path: Path) -> None:
    # Regression (client mode): the SSE reader returned at the first session_stopped it saw, so a
    # tail or --follow on a resumed session stopped at the OLD stop replayed from the backlog, and
    # a tail opened before a stop never saw the events of the resume that followed.
    sid = any_host.create(AGENT, cwd=str(tmp_path)).id
    _firehose(any_host, sid)
    any_host.stop(sid)
    any_host.resume(sid)
    _firehose(any_host, sid)

    from_start = Collector()
    replayed = any_host.subscribe(sid, 0, from_start)  # the backlog holds the old stop
    live = Collector()
    after = len(_sequences(any_host, sid))
    following = any_host.subscribe(sid, after, live)  # opened before the next stop
    try:
        any_host.stop(sid)
        any_host.resume(sid)
        _firehose(any_host, sid)
        any_host.stop(sid)
        stored = _sequences(any_host, sid)
        wait_for(lambda: from_start.sequences()[-1:] == live.sequences()[-1:] == stored[-1:], timeout=30)
    finally:
        replayed.close()
        following.close()
    assert from_start.sequences() == stored
    assert live.sequences() == [s for s in stored if s > after]
    assert [e.type for e in from_start.events].count("session_stopped") == 3
    assert [e.type for e in live.events].count("session_stopped") == 2


def test_a_relative_cwd_means_the_callers_directory(any_host: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Regression: RemoteHost sent "proj" as given and the server joined it to its root_dir.
    (tmp_path / "proj").mkdir()
    monkeypatch.chdir(tmp_path)
    record = any_host.create(AGENT, cwd="proj")
    try:
        assert record.workspace_path == os.path.realpath(tmp_path / "proj")
    finally:
        any_host.stop(record.id)


def test_stop_records_the_detail(any_host: Any, tmp_path: Path) -> None:
    # Regression: RemoteHost.stop dropped ``detail``.
    sid = any_host.create(AGENT, cwd=str(tmp_path)).id
    stopped = any_host.stop(sid, detail="budget_exceeded")
    assert (stopped.stop_reason.value, stopped.stop_detail) == ("budget_exceeded", "budget_exceeded")
    assert any_host.get(sid).stop_detail == "budget_exceeded"


def _failure(call: Callable[[], Any]) -> errors.AghError:
    with pytest.raises(errors.AghError) as info:
        call()
    return info.value


def test_errors_keep_their_class_and_identifying_fields(both: tuple[Host, RemoteHost], tmp_path: Path) -> None:
    embedded, remote = both

    def ids(error: errors.AghError) -> dict[str, Any]:
        return {k: v for k, v in error.fields.items() if k in ("session_id", "request_id", "turn_id", "ref")}

    cases: list[tuple[str, Callable[[Any], Any]]] = [
        ("unknown session", lambda h: h.get(FAKE)),
        ("unknown session stream", lambda h: h.subscribe(FAKE, 0, lambda events: None)),
        ("bad sql", lambda h: h.sql("SELEC nonsense")),
        ("sql that writes", lambda h: h.sql("DELETE FROM events")),
        ("bad vault ref", lambda h: h.vault_get("vault:nowhere/x")),
        ("missing secret", lambda h: h.vault_get("vault:providers/none")),
        ("bad permissions", lambda h: h.create(AGENT, cwd=str(tmp_path), permissions="yolo")),
    ]
    for label, call in cases:
        want, got = _failure(lambda: call(embedded)), _failure(lambda: call(remote))
        assert type(got) is type(want), (label, type(want).__name__, type(got).__name__, str(got))
        assert ids(got) == ids(want), label
        assert "\n" not in str(got) and str(got), label
    assert isinstance(_failure(lambda: remote.sql("SELEC nonsense")), errors.QueryError)

    # Errors about sessions each host created: same class, the host's own id as a field.
    for host in (embedded, remote):
        failed = _failure(lambda: host.create("no-such-agent", cwd=str(tmp_path)))
        assert type(failed) is errors.AgentStartError and failed.fields["session_id"].startswith("sess_")
        sid = failed.fields["session_id"]
        refused = _failure(lambda: host.prompt(sid, "hello"))
        assert type(refused) is errors.SessionNotActiveError and refused.fields.get("session_id") == sid
        unknown = _failure(lambda: host.approve(sid, "perm_nope", "allow-once"))
        assert type(unknown) is errors.ApprovalError and unknown.fields.get("request_id") == "perm_nope"


def test_a_session_stream_ends_on_the_synthetic_stop_or_when_the_server_ends_it(server: Server, tmp_path: Path) -> None:
    # Without keep_open the server ends a stream after the latest stop, or sends a synthetic one
    # when nothing is newer: the reader ends then, not at an old stop, and delivers only stored rows.
    remote = RemoteHost(ServerInfo(server.url, server.token))
    sid = remote.create(AGENT, cwd=str(tmp_path)).id
    _firehose(remote, sid)
    remote.stop(sid)
    remote.resume(sid)
    _firehose(remote, sid)
    remote.stop(sid)
    stored = _sequences(remote, sid)

    def read(after: int) -> list[int]:
        got: list[int] = []
        reader = _SseReader(remote, f"sessions/{sid}/stream", after, lambda e, d, i: got.append(int(i or -1)), session=True)
        reader.start()
        assert reader.join(30), "the reader did not end with the stream"
        return got

    assert read(0) == stored  # past the old stop, to the end the server sets
    assert read(stored[-1]) == []  # the synthetic terminal stop ends it and is not delivered


def test_closing_a_quiet_subscription_ends_its_reader(server: Server, tmp_path: Path) -> None:
    remote = RemoteHost(ServerInfo(server.url, server.token))
    sid = remote.create(AGENT, cwd=str(tmp_path)).id
    remote.stop(sid)
    got = Collector()
    subscription = remote.subscribe(sid, len(_sequences(remote, sid)), got)
    wait_for(lambda: subscription._response is not None, timeout=10)
    subscription.close()
    assert subscription.join(5), "the reader thread outlived close()"
    subscription.close()  # twice is harmless
    assert got.sequences() == []
