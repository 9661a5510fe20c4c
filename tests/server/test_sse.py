"""Server-sent event streams read with a plain HTTP client: resume, no gap, no duplicate, terminal stop."""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.server.harness import SSE, Server, start_server, write_agent

HIGH_WATER = 64


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose streams hold few events for a slow client: falling behind and catching up is routine."""
    srv = start_server(tmp_path_factory.mktemp("sse"), args=(f"--AghServerExtension.stream_high_water={HIGH_WATER}",))
    try:
        yield srv
    finally:
        srv.stop()


def _read_with_cuts(server: Server, sid: str, seed: int, received: list[int], errors: list[BaseException]) -> None:
    """Follow the stream to its terminal ``session_stopped``, cutting it after a random number of messages."""
    rng = random.Random(seed)
    last = 0
    try:
        while True:
            budget = rng.randint(1, 300)
            resume = rng.random() < 0.9  # else reconnect without Last-Event-ID: the stream starts over
            with SSE(server, f"/sessions/{sid}/stream", last_event_id=last if resume else None) as stream:
                assert stream.status == 200
                for msg in stream:
                    if not resume and msg["id"] <= last:
                        continue  # replayed because we did not say where we were
                    assert msg["id"] > last, f"resumed after {last} (Last-Event-ID sent), got {msg['id']} again"
                    received.append(msg["id"])
                    last = msg["id"]
                    if msg["event"] == "session_stopped":
                        return
                    budget -= 1
                    if budget == 0:
                        break  # cut: the client goes away mid-stream
    except BaseException as exc:  # reported by the test thread
        errors.append(exc)


@pytest.mark.parametrize(
    "prompt, seed",
    [pytest.param("firehose 3000", 1, id="firehose-3000"), pytest.param("slow 40 0.05", 2, id="slow-40")],
)
def test_cut_and_resumed_streams_deliver_every_sequence_once(server: Server, prompt: str, seed: int) -> None:
    sid = server.create()["id"]
    received: list[int] = []
    errors: list[BaseException] = []
    reader = threading.Thread(target=_read_with_cuts, args=(server, sid, seed, received, errors), daemon=True)
    reader.start()
    server.prompt_and_wait(sid, prompt)
    server.ok("POST", f"/sessions/{sid}/stop")
    reader.join(60)
    assert not reader.is_alive(), f"the reader did not reach session_stopped (got {len(received)} events)"
    assert not errors, errors
    stored = [e["sequence"] for e in server.events(sid)]
    assert stored == list(range(1, len(stored) + 1))
    missing, extra = sorted(set(stored) - set(received)), len(received) - len(set(received))
    assert received == stored, f"missing {missing[:10]}, {extra} duplicates"


def test_a_client_slower_than_the_live_rate_catches_up_without_gap(server: Server) -> None:
    sid = server.create()["id"]
    with SSE(server, f"/sessions/{sid}/stream", rcvbuf=4096, timeout=60) as stream:
        messages = iter(stream)
        server.ok("POST", f"/sessions/{sid}/prompt", {"text": "firehose 15000"}, status=202)
        first = next(messages)
        # Stop reading while the firehose runs: the socket backs up, more than the stream may
        # hold piles up (HIGH_WATER), and the stream must fall back to the store, then go live.
        # 15,000 rows (~8 MB) outgrow the most Linux lets a socket buffer (tcp_wmem max 4 MiB
        # here): with 3,000 the kernel could absorb the whole turn and nothing ever backed up.
        turn = server.events(sid, "?type=user_message")[0]["turn_id"]
        assert server.wait_turn(sid, turn)["stop_reason"] == "end_turn"
        server.ok("POST", f"/sessions/{sid}/stop")
        got = [first["id"]] + [m["id"] for m in messages]
    stored = [e["sequence"] for e in server.events(sid)]
    assert got == stored, f"{len(got)} delivered, {len(stored)} stored"
    assert "fell behind; catching up" in server.log()


def test_stream_is_backlog_then_live_and_ends_after_session_stopped(server: Server) -> None:
    sid = server.create()["id"]
    server.prompt_and_wait(sid, "firehose 20")
    backlog = len(server.events(sid))
    seen: list[dict[str, Any]] = []
    with SSE(server, f"/sessions/{sid}/stream?after_sequence=5") as stream:
        messages = iter(stream)
        for msg in messages:
            seen.append(msg)
            if msg["id"] == backlog:
                break
        server.ok("POST", f"/sessions/{sid}/prompt", {"text": "firehose 5"}, status=202)
        for msg in messages:
            seen.append(msg)
            if msg["event"] == "done":
                break
        server.ok("POST", f"/sessions/{sid}/stop")
        rest = list(messages)  # the server ends the stream after session_stopped
    seen += rest
    assert [m["id"] for m in seen] == list(range(6, seen[-1]["id"] + 1))
    assert seen[-1]["event"] == "session_stopped" and "synthetic" not in seen[-1]["data"]
    row = seen[0]["data"]
    assert row["sequence"] == 6 and row["session_id"] == sid and row["content"]["schema"] == "agh.session.event.v1"
    assert all(m["event"] == m["data"]["type"] for m in seen)


def test_last_event_id_wins_and_bad_values_are_400(server: Server) -> None:
    sid = server.create()["id"]
    server.prompt_and_wait(sid, "firehose 3")
    server.ok("POST", f"/sessions/{sid}/stop")
    with SSE(server, f"/sessions/{sid}/stream?after_sequence=1", last_event_id=3) as stream:
        assert [m["id"] for m in stream] == [4, 5, 6]
    for bad in ("?after_sequence=x", "?after_sequence=-2"):
        reply = server.api("GET", f"/sessions/{sid}/stream{bad}")
        assert reply.status == 400 and reply.error_type() == "UsageError", reply.text


def test_stopped_session_with_nothing_new_gets_a_synthetic_terminal_stop(server: Server) -> None:
    write_agent(server.home, "refuser", [sys.executable, "-m", "agh_nb.agents.demo", "--fail-startup", "exit"])
    reply = server.api("POST", "/sessions", {"agent": "refuser"})
    assert reply.status == 422, reply.text
    sid = reply.body["error"]["session_id"]
    record = server.ok("GET", f"/sessions/{sid}")
    last = server.events(sid)[-1]["sequence"]

    with SSE(server, f"/sessions/{sid}/stream", last_event_id=last) as stream:
        messages = list(stream)
    assert len(messages) == 1, messages
    synthetic = messages[0]
    assert synthetic["event"] == "session_stopped" and synthetic["id"] == last
    data = synthetic["data"]
    assert data["synthetic"] is True and data["session_id"] == sid and data["sequence"] == last
    assert data["content"]["failure"] == record["failure"] and record["failure"]["kind"] == "handshake_failure"
    assert data["content"]["stop_reason"] == record["stop_reason"]

    with SSE(server, f"/sessions/{sid}/stream") as stream:  # from the start: the real stop ends it
        full = list(stream)
    assert [m["id"] for m in full] == list(range(1, last + 1))
    assert full[-1]["event"] == "session_stopped" and "synthetic" not in full[-1]["data"]


def test_a_resumed_session_streams_past_its_old_stop(server: Server) -> None:
    sid = server.create()["id"]
    server.prompt_and_wait(sid, "firehose 2")
    server.ok("POST", f"/sessions/{sid}/stop")
    server.ok("POST", f"/sessions/{sid}/resume", {})
    server.prompt_and_wait(sid, "firehose 2")
    old_stop = server.events(sid, "?type=session_stopped")[0]["sequence"]
    with SSE(server, f"/sessions/{sid}/stream") as stream:
        messages = iter(stream)
        first = [next(messages) for _ in range(old_stop + 1)]
        assert first[old_stop - 1]["event"] == "session_stopped"  # the old stop did not end the stream
        server.ok("POST", f"/sessions/{sid}/stop")
        rest = list(messages)
    assert rest[-1]["event"] == "session_stopped" and rest[-1]["id"] == server.events(sid)[-1]["sequence"]


def test_keep_open_streams_stay_open_across_a_stop_and_a_resume(server: Server) -> None:
    sid = server.create()["id"]
    server.prompt_and_wait(sid, "firehose 2")
    got: list[dict[str, Any]] = []
    with SSE(server, f"/sessions/{sid}/stream?keep_open=1") as stream:
        messages = iter(stream)
        got.append(next(messages))
        server.ok("POST", f"/sessions/{sid}/stop")
        for msg in messages:
            got.append(msg)
            if msg["event"] == "session_stopped":
                break
        server.ok("POST", f"/sessions/{sid}/resume", {})  # the same stream carries the second life
        server.prompt_and_wait(sid, "firehose 2")
        server.ok("POST", f"/sessions/{sid}/stop")
        last = server.events(sid)[-1]["sequence"]
        for msg in messages:
            got.append(msg)
            if msg["id"] == last:
                break
    assert [m["id"] for m in got] == list(range(1, last + 1))
    assert [m["event"] for m in got].count("session_stopped") == 2 and not any("synthetic" in m["data"] for m in got)
    # A stopped session with nothing new: no synthetic stop, the stream just stays open (keep-alives).
    with SSE(server, f"/sessions/{sid}/stream?keep_open=true", last_event_id=last) as stream:
        quiet = []
        for msg in stream.messages(comments=True):
            quiet.append(msg)
            if len(quiet) == 2:
                break
    assert quiet == [{"comment": "keep-alive"}] * 2
    assert server.api("GET", f"/sessions/{sid}/stream?keep_open=maybe").status == 400


def test_keep_alives_on_a_quiet_stream_and_a_client_that_leaves(server: Server) -> None:
    sid = server.create()["id"]
    started = time.monotonic()
    with SSE(server, f"/sessions/{sid}/stream") as stream:
        kinds = []
        for msg in stream.messages(comments=True):
            kinds.append(msg.get("comment") or msg["event"])
            if kinds.count("keep-alive") >= 2:
                break
    assert time.monotonic() - started < 10 and kinds.count("keep-alive") == 2, kinds
    # Many clients that leave at once: the server notices, and keeps serving everyone else.
    streams = [SSE(server, f"/sessions/{sid}/stream") for _ in range(10)]
    for s in streams:
        s.close()
    turn = server.prompt_and_wait(sid, "firehose 50")
    assert turn["stop_reason"] == "end_turn"
    with SSE(server, f"/sessions/{sid}/stream", last_event_id=0) as stream:
        got = []
        for msg in stream:
            got.append(msg["id"])
            if msg["event"] == "done":
                break
    assert got == list(range(1, len(got) + 1))
    server.ok("POST", f"/sessions/{sid}/stop")
    assert "Traceback" not in server.log() and "event stream" not in server.log()
