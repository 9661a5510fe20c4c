"""The REST routes of docs/http-api.md against a real Jupyter server and the demo agent."""

from __future__ import annotations

import json
import os
import urllib.parse

import pytest

from tests.server.harness import SSE, Server, quote_ref, wait_for

FAKE = "sess_0000000000000000"

# Every route of the contract (method, path); used for the auth and error-shape checks.
ROUTES = [
    ("GET", "/sessions"),
    ("POST", "/sessions"),
    ("GET", f"/sessions/{FAKE}"),
    ("GET", f"/sessions/{FAKE}/status"),
    ("GET", f"/sessions/{FAKE}/health"),
    ("GET", f"/sessions/{FAKE}/inspect"),
    ("GET", f"/sessions/{FAKE}/events"),
    ("GET", f"/sessions/{FAKE}/history"),
    ("GET", f"/sessions/{FAKE}/transcript"),
    ("POST", f"/sessions/{FAKE}/prompt"),
    ("GET", f"/sessions/{FAKE}/turns/turn_x"),
    ("POST", f"/sessions/{FAKE}/stop"),
    ("POST", f"/sessions/{FAKE}/resume"),
    ("POST", f"/sessions/{FAKE}/approve"),
    ("GET", f"/sessions/{FAKE}/approvals"),
    ("POST", f"/sessions/{FAKE}/repair"),
    ("GET", f"/sessions/{FAKE}/stream"),
    ("GET", "/approvals"),
    ("GET", "/approvals/stream"),
    ("POST", "/sql"),
    ("POST", "/export"),
    ("GET", "/vault"),
    ("GET", "/vault/vault%3Aproviders%2Fx"),
    ("PUT", "/vault/vault%3Aproviders%2Fx"),
    ("DELETE", "/vault/vault%3Aproviders%2Fx"),
    ("GET", "/no/such/route"),
]


def _ids(route: tuple[str, str]) -> str:
    return f"{route[0]} {route[1]}"


@pytest.mark.parametrize("route", ROUTES, ids=[_ids(r) for r in ROUTES])
@pytest.mark.parametrize("token", [None, "wrong-token"], ids=["no-token", "wrong-token"])
def test_every_route_refuses_requests_without_the_token(server: Server, route: tuple[str, str], token: str | None) -> None:
    method, path = route
    body = {"agent": "demo-fast"} if method in ("POST", "PUT") else None
    reply = server.api(method, path, body, token=token)
    assert reply.status in (401, 403), reply.text
    assert reply.error_type() in ("Forbidden", "Unauthorized"), reply.text


def test_cookie_sessions_need_the_xsrf_token(server: Server) -> None:
    # A browser session: the login cookie alone authenticates reads, but a write also needs _xsrf.
    login = server.request("GET", f"/api/status?token={server.token}", token=None)
    assert login.status == 200
    cookies = "; ".join(c.split(";", 1)[0] for c in login.headers.get("set-cookie", "").split(", ") if "=" in c)
    assert cookies, login.headers
    read = server.api("GET", "/sessions", token=None, headers={"Cookie": cookies})
    assert read.status == 200, read.text
    write = server.api("POST", "/sessions", {"agent": "demo-fast"}, token=None, headers={"Cookie": cookies})
    assert write.status == 403 and write.error_type() == "Forbidden", write.text
    xsrf = "agh-xsrf-value"
    allowed = server.api(
        "POST", "/sql", {"query": "SELECT 1 AS one"}, token=None,
        headers={"Cookie": f"{cookies}; _xsrf={xsrf}", "X-XSRFToken": xsrf},
    )
    assert allowed.status == 200, allowed.text


def test_errors_are_json_one_line_and_never_carry_tracebacks(server: Server) -> None:
    succeed = {("GET", "/sessions"), ("GET", "/approvals"), ("GET", "/approvals/stream"), ("GET", "/vault")}
    for method, path in ROUTES:
        if (method, path) in succeed:
            continue
        reply = server.api(method, path, {"bogus": 1} if method in ("POST", "PUT") else None)
        assert 400 <= reply.status < 500, (method, path, reply.status, reply.text)
        assert reply.headers["content-type"].startswith("application/json"), (method, path, reply.headers)
        error = reply.body["error"]
        assert set(error) >= {"type", "message"}, reply.text
        assert "\n" not in error["message"] and "Traceback" not in reply.text, reply.text
    assert server.api("GET", f"/sessions/{FAKE}").error_type() == "SessionNotFoundError"
    assert server.api("GET", f"/sessions/{FAKE}/stream").status == 404
    assert server.api("GET", "/no/such/route").status == 404


def test_session_lifecycle_and_reads(server: Server) -> None:
    (server.root / "proj").mkdir()
    record = server.create(name="lifecycle", cwd="proj")
    sid = record["id"]
    assert record["workspace_path"] == os.path.realpath(server.root / "proj")
    assert {"id", "name", "agent_name", "type", "workspace_id", "permissions", "state", "failure"} <= set(record)

    listed = server.ok("GET", "/sessions?include_health=1")["sessions"]
    mine = next(s for s in listed if s["id"] == sid)
    assert mine["state"] == "active" and mine["health"]["health"] == "healthy"
    assert "health" not in server.ok("GET", "/sessions")["sessions"][0]
    assert server.ok("GET", f"/sessions/{sid}")["name"] == "lifecycle"

    turn = server.ok("POST", f"/sessions/{sid}/prompt", {"text": "hello there"}, status=202)
    assert turn["session_id"] == sid and turn["status"] in ("running", "queued") and turn["turn_id"]
    done = server.wait_turn(sid, turn["turn_id"])
    assert done["status"] == "done" and done["stop_reason"] == "end_turn", done

    status = server.ok("GET", f"/sessions/{sid}/status")
    assert status["state"] == "active" and status["queue"] == [] and status["health"]["state"] == "idle"
    assert server.ok("GET", f"/sessions/{sid}/health")["health"] == "healthy"
    inspect = server.ok("GET", f"/sessions/{sid}/inspect")
    assert inspect["id"] == sid and inspect["pending_approvals"] == [] and inspect["vault_refs"] == []
    assert inspect["acp_caps"]["loadSession"] is True

    events = server.events(sid)
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "user_message" and events[-1]["type"] == "done"
    assert server.events(sid, "?type=done")[0]["content"]["stop_reason"] == "end_turn"
    assert [e["sequence"] for e in server.events(sid, "?limit=2")] == [len(events) - 1, len(events)]
    assert [e["sequence"] for e in server.events(sid, f"?after_sequence={len(events) - 1}")] == [len(events)]
    assert len(server.events(sid, f"?turn={turn['turn_id']}&since=5m&agent_name=demo-fast")) == len(events)
    assert server.api("GET", f"/sessions/{sid}/events?type=nonsense").status == 400
    assert server.api("GET", f"/sessions/{sid}/events?limit=zero").status == 400

    history = server.ok("GET", f"/sessions/{sid}/history")["turns"]
    assert history[0]["turn_id"] == turn["turn_id"] and history[0]["prompt"] == "hello there"
    transcript = server.ok("GET", f"/sessions/{sid}/transcript")["transcript"]
    assert transcript and transcript[0]["role"] == "user"

    stopped = server.ok("POST", f"/sessions/{sid}/stop", {})
    assert stopped["state"] == "stopped" and stopped["stop_reason"] == "user_canceled"
    assert server.ok("POST", f"/sessions/{sid}/stop")["state"] == "stopped"  # stopping twice is harmless
    refused = server.api("POST", f"/sessions/{sid}/prompt", {"text": "more"})
    assert refused.status == 409 and refused.error_type() == "SessionNotActiveError"

    plan = server.ok("POST", f"/sessions/{sid}/repair", {})
    assert plan["session_id"] == sid and plan["applied"] is False
    assert server.ok("POST", f"/sessions/{sid}/repair", {"dry_run": False})["empty"] is True

    resumed = server.ok("POST", f"/sessions/{sid}/resume", {"replay_transcript": False})
    assert resumed["id"] == sid and resumed["state"] == "active"
    again = server.prompt_and_wait(sid, "firehose 10")
    assert again["stop_reason"] == "end_turn"
    server.ok("POST", f"/sessions/{sid}/stop")


def test_unknown_turns_and_long_poll_bounds(server: Server) -> None:
    sid = server.create()["id"]
    missing = server.api("GET", f"/sessions/{sid}/turns/turn_nope")
    assert missing.status == 404 and missing.error_type() == "NotFound"
    assert server.api("GET", f"/sessions/{sid}/turns/turn_nope?wait=-1").status == 400
    assert server.api("GET", f"/sessions/{FAKE}/turns/turn_nope").error_type() == "SessionNotFoundError"
    slow = server.ok("POST", f"/sessions/{sid}/prompt", {"text": "slow 3 0.3"}, status=202)
    queued = server.ok("POST", f"/sessions/{sid}/prompt", {"text": "firehose 3"}, status=202)
    assert queued["status"] == "queued" and queued["position"] == 1
    early = server.ok("GET", f"/sessions/{sid}/turns/{queued['turn_id']}?wait=0.05")
    assert early["status"] in ("queued", "running")
    assert server.wait_turn(sid, slow["turn_id"])["stop_reason"] == "end_turn"
    assert server.wait_turn(sid, queued["turn_id"])["stop_reason"] == "end_turn"
    server.ok("POST", f"/sessions/{sid}/stop")


def test_approval_from_http_writes_the_file(server: Server) -> None:
    (server.root / "approve").mkdir()
    record = server.create(cwd="approve", permissions="approve-reads")
    sid = record["id"]
    with SSE(server, "/approvals/stream") as stream:
        turn = server.ok("POST", f"/sessions/{sid}/prompt", {"text": "write x.txt hi"}, status=202)
        messages = iter(stream)
        added = next(m for m in messages if m["data"]["session_id"] == sid)
        assert added["event"] == "added" and added["data"]["decision"] is None
        pending = wait_for(lambda: server.ok("GET", f"/sessions/{sid}/approvals")["pending"])
        request_id = pending[0]["request_id"]
        assert request_id == added["data"]["request_id"]
        assert [p["request_id"] for p in server.ok("GET", "/approvals")["pending"]] == [request_id]
        assert server.ok("GET", f"/sessions/{sid}/inspect")["pending_approvals"][0]["request_id"] == request_id
        assert not (server.root / "approve" / "x.txt").exists()

        bad = server.api("POST", f"/sessions/{sid}/approve", {"request_id": request_id, "decision": 1})
        assert bad.status == 400 and server.ok("GET", f"/sessions/{sid}/approvals")["pending"], bad.text
        unknown = server.api("POST", f"/sessions/{sid}/approve", {"request_id": request_id, "decision": "maybe"})
        assert unknown.status == 409 and unknown.error_type() == "ApprovalError"

        resolved = server.ok("POST", f"/sessions/{sid}/approve", {"request_id": request_id, "decision": "allow-once"})
        assert resolved["request_id"] == request_id and resolved["decision"] == "allow-once"
        event = next(m for m in messages if m["event"] == "resolved")
        assert event["data"]["request_id"] == request_id and event["data"]["decision"] == "allow-once"
    assert server.wait_turn(sid, turn["turn_id"])["stop_reason"] == "end_turn"
    assert (server.root / "approve" / "x.txt").read_text() == "hi"
    twice = server.api("POST", f"/sessions/{sid}/approve", {"request_id": request_id, "decision": "allow-once"})
    assert twice.status == 409 and twice.error_type() == "ApprovalError"
    decisions = [e["content"].get("decision") for e in server.events(sid, "?type=permission")]
    assert decisions[-1] == "allow-once"
    server.ok("POST", f"/sessions/{sid}/stop")


def test_vault_values_never_leave_the_server(server: Server) -> None:
    secret = "sk-test-" + "9" * 24
    ref = "vault:providers/testprov"
    put = server.ok("PUT", f"/vault/{quote_ref(ref)}", {"value": secret, "kind": "api_key"})
    assert put == put | {"ref": ref, "namespace": "providers", "kind": "api_key", "present": True}
    bodies = [json.dumps(put)]
    got = server.ok("GET", f"/vault/{quote_ref(ref)}")
    listed = server.ok("GET", "/vault?namespace=providers")
    prefixed = server.ok("GET", "/vault?prefix=" + urllib.parse.quote("vault:providers/test"))
    assert got["ref"] == ref and [s["ref"] for s in listed["secrets"]] == [ref] == [s["ref"] for s in prefixed["secrets"]]
    bodies += [json.dumps(got), json.dumps(listed), json.dumps(prefixed)]
    sql = server.api("POST", "/sql", {"query": "SELECT * FROM duckdb_tables()"})
    bodies.append(sql.text)
    assert server.api("GET", "/vault/" + quote_ref("vault:nowhere/x")).status == 400
    bad = server.api("PUT", f"/vault/{quote_ref(ref)}", {"value": 12345})
    assert bad.status == 400 and bad.error_type() == "UsageError"
    empty = server.api("PUT", f"/vault/{quote_ref(ref)}", {"value": ""})
    assert empty.status == 400
    assert server.ok("GET", f"/vault/{quote_ref(ref)}")["updated_at"] == got["updated_at"]  # nothing changed
    deleted = server.ok("DELETE", f"/vault/{quote_ref(ref)}")
    assert deleted["ref"] == ref
    gone = server.api("GET", f"/vault/{quote_ref(ref)}")
    assert gone.status == 404 and gone.error_type() == "SecretNotFoundError"
    bodies += [json.dumps(deleted), gone.text, bad.text, empty.text]
    assert all(secret not in body for body in bodies)
    assert secret not in server.log()


def test_sql_returns_json_safe_columns_and_rows(server: Server) -> None:
    sid = server.create()["id"]
    server.prompt_and_wait(sid, "firehose 5")
    doc = server.ok(
        "POST",
        "/sql",
        {"query": f"SELECT sequence, type, timestamp, NULL::DOUBLE AS nothing, 'nan'::DOUBLE AS nan, [1, 2] AS xs, "
                  f"{{'a': 1}} AS st FROM events WHERE session_id = '{sid}' ORDER BY sequence"},
    )
    assert doc["columns"] == ["sequence", "type", "timestamp", "nothing", "nan", "xs", "st"]
    assert doc["rows"][0][:2] == [1, "user_message"] and doc["rows"][0][3:] == [None, None, [1, 2], {"a": 1}]
    assert isinstance(doc["rows"][0][2], str) and doc["rows"][0][2].startswith("20")
    for query in ("SELEC nonsense", "SELECT no_such_column FROM events", "DELETE FROM events"):
        bad = server.api("POST", "/sql", {"query": query})  # the user's query: a 400, not a server fault
        assert bad.status == 400 and bad.error_type() == "QueryError", (query, bad.text)
        assert "\n" not in bad.body["error"]["message"] and "Traceback" not in bad.text
    assert server.api("POST", "/sql", {"query": ""}).status == 400
    assert server.api("POST", "/sql", raw=b"{not json").status == 400
    assert len(server.events(sid)) == 7
    server.ok("POST", f"/sessions/{sid}/stop")


@pytest.mark.parametrize(
    "path, body",
    [
        pytest.param("/sessions", {"agent": 7}, id="create-agent-int"),
        pytest.param("/sessions", {"agent": "demo-fast", "permissions": True}, id="create-permissions-bool"),
        pytest.param("/sessions", {"agent": "demo-fast", "permissions": "yolo"}, id="create-permissions-unknown"),
        pytest.param("/sessions", {"agent": "demo-fast", "type": "nightly"}, id="create-type-unknown"),
        pytest.param("/sessions", {"agent": "demo-fast", "colour": "red"}, id="create-unknown-field"),
        pytest.param("/sessions", [], id="create-not-object"),
        pytest.param("/sessions", {}, id="create-missing-agent"),
        pytest.param("/sessions", {"agent": "demo-fast", "cwd": "proj\x00/x"}, id="create-cwd-nul"),
        pytest.param("/sessions", {"agent": "demo-fast", "cwd": 5}, id="create-cwd-int"),
        pytest.param("/sessions", {"agent": "demo-fast", "cwd": ["/tmp"]}, id="create-cwd-list"),
    ],
)
def test_bad_create_bodies_are_refused_and_create_nothing(server: Server, path: str, body: object) -> None:
    before = server.ok("GET", "/sessions")["sessions"]
    reply = server.api("POST", path, body)
    assert reply.status == 400 and reply.error_type() == "UsageError", reply.text
    assert "Traceback" not in reply.text and "\n" not in reply.body["error"]["message"]
    assert server.ok("GET", "/sessions")["sessions"] == before


def test_bad_bodies_on_a_live_session_change_nothing(server: Server) -> None:
    sid = server.create()["id"]
    before = server.events(sid)
    for path, body in [
        ("/prompt", {"text": 5}),
        ("/prompt", {"text": "hi", "interrupt": "yes"}),
        ("/prompt", {"text": "   "}),
        ("/prompt", {}),
        ("/stop", {"detail": 3}),
        ("/stop", {"now": True}),
        ("/resume", {"replay_transcript": "true"}),
        ("/repair", {"dry_run": 0}),
        ("/approve", {"request_id": 3, "decision": "allow-once"}),
    ]:
        reply = server.api("POST", f"/sessions/{sid}{path}", body)
        assert reply.status == 400 and reply.error_type() == "UsageError", (path, body, reply.text)
    malformed = server.api("POST", f"/sessions/{sid}/prompt", raw=b'{"text": "hi"')
    assert malformed.status == 400 and "JSON" in malformed.body["error"]["message"]
    assert server.events(sid) == before
    assert server.ok("GET", f"/sessions/{sid}")["state"] == "active"
    server.ok("POST", f"/sessions/{sid}/stop")


def test_a_failed_start_is_422_with_the_stopped_session(server: Server) -> None:
    reply = server.api("POST", "/sessions", {"agent": "no-such-agent"})
    assert reply.status == 422 and reply.error_type() == "AgentStartError", reply.text
    sid = reply.body["error"]["session_id"]
    record = server.ok("GET", f"/sessions/{sid}")
    assert record["state"] == "stopped" and record["failure"]["kind"] == "startup_failure"
    missing_ws = server.api("POST", "/sessions", {"agent": "demo-fast", "cwd": "/definitely/not/here"})
    assert missing_ws.status == 422
