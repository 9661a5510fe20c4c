"""Twenty sessions driven at once through the HTTP API: every event stored once, gapless, in order."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.server.harness import SSE, Server

SESSIONS = 20
FIREHOSE = 1000
STREAMED = 4  # sessions also followed live over SSE while they run


def _follow(server: Server, sid: str) -> list[int]:
    with SSE(server, f"/sessions/{sid}/stream", timeout=120) as stream:
        return [msg["id"] for msg in stream]  # ends after session_stopped


def test_twenty_concurrent_firehose_sessions_lose_and_duplicate_nothing(server: Server) -> None:
    with ThreadPoolExecutor(max_workers=SESSIONS + STREAMED) as pool:
        records = list(pool.map(lambda i: server.create(name=f"c{i}"), range(SESSIONS)))
        ids = [r["id"] for r in records]
        follows = [pool.submit(_follow, server, sid) for sid in ids[:STREAMED]]
        turns = list(pool.map(lambda sid: server.prompt_and_wait(sid, f"firehose {FIREHOSE}", timeout=120), ids))
        assert all(t["stop_reason"] == "end_turn" for t in turns), turns
        stopped = list(pool.map(lambda sid: server.ok("POST", f"/sessions/{sid}/stop"), ids))
        assert all(r["state"] == "stopped" for r in stopped)
        streamed = [f.result(timeout=120) for f in follows]

    for sid in ids:
        events = server.events(sid)
        sequences = [e["sequence"] for e in events]
        assert sequences == list(range(1, len(sequences) + 1)), f"{sid}: gap or duplicate"
        chunks = [e for e in events if e["type"] == "agent_message"]
        indexes = [c["content"]["raw"]["_meta"]["agh_demo_index"] for c in chunks]
        assert indexes == list(range(FIREHOSE)), f"{sid}: {len(indexes)} chunks, not in order"
        assert events[-1]["type"] == "session_stopped"
    for sid, got in zip(ids[:STREAMED], streamed, strict=True):
        assert got == [e["sequence"] for e in server.events(sid)], f"{sid}: the live stream differs from the store"
    counts = server.ok(
        "POST", "/sql", {"query": "SELECT count(DISTINCT session_id), count(*) FROM events WHERE type = 'agent_message'"}
    )["rows"][0]
    assert counts[0] >= SESSIONS and counts[1] >= SESSIONS * FIREHOSE
