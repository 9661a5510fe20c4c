"""Interactive approvals (SPEC 5) in a REAL ipykernel: the magics, the panel widget, the timeout.

Each test starts its own kernel (fixture ``kernel`` in conftest.py) with a fresh ``AGH_HOME``.
Pending requests are decided the ways a notebook user decides them: ``%agh session approve``,
the ``%agh approvals`` panel's buttons clicked through a front-end ``comm_msg`` while no cell
runs, or nobody at all (the approval timeout). Waits are polling loops with deadlines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_agent
from tests.kernel.conftest import KernelSession
from tests.kernel.test_magics_kernel import new_session, ts, wait_done
from tests.test_third_party import TSX, ZED_EXAMPLE, require

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

# What Zed's example agent (typescript/examples/agent.ts) says after the permission answer.
ZED_AFTER_ALLOW = "Perfect! I've successfully updated the configuration."
ZED_AFTER_REJECT = "I understand you prefer not to make that change. I'll skip the configuration update."
# The path its edit request names (hard-coded in agent.ts).
ZED_EDIT_PATH = Path("/home/user/project/config.json")


# -- helpers ---------------------------------------------------------------------------------------


def zed_workspace() -> Path:
    """A workspace that contains the path the Zed example asks to edit.

    The example hard-codes ``/home/user/project/config.json``; outside the workspace the boundary
    rejects the request at once (SPEC 5), so it would never be pending. Its deepest existing
    ancestor is the narrowest workspace that keeps the request inside (the agent writes nothing).
    """
    path = ZED_EDIT_PATH.parent
    while not path.exists():
        path = path.parent
    return path


def permission_events(kernel: KernelSession, session_id: str, request_id: str) -> list[dict[str, Any]]:
    """The stored ``permission`` events of one request, oldest first (contents only)."""
    rows = kernel.events(session_id, "--type permission")
    return [r["content"] for r in rows if r["content"].get("request_id") == request_id]


def wait_pending(kernel: KernelSession, session_id: str, timeout: float = 60) -> list[dict[str, Any]]:
    """Poll ``%agh session inspect ID -o json`` until ``pending_approvals`` is not empty."""
    doc = kernel.poll(
        lambda: kernel.agh(f"session inspect {session_id}"),
        lambda d: bool(d["pending_approvals"]),
        timeout,
        f"a pending approval in session {session_id}",
    )
    pending = doc["pending_approvals"]
    assert isinstance(pending, list)
    return pending


def panel_ids(kernel: KernelSession, name: str = "panel") -> list[str]:
    """``panel.pending_ids()`` of the panel held in the kernel variable ``name``."""
    ids = kernel.json(f"import json as _j\nprint(_j.dumps({name}.pending_ids()))")
    assert isinstance(ids, list)
    return ids


def panel_status(kernel: KernelSession, name: str = "panel") -> str:
    """The panel's status label text."""
    value = kernel.json(f"import json as _j\nprint(_j.dumps({name}.status.value))")
    assert isinstance(value, str)
    return value


def turn_text(events: list[dict[str, Any]], turn_id: str) -> str:
    """Everything the agent said in one turn (``agent_message`` texts joined)."""
    return "".join(
        e["content"].get("text") or "" for e in events if e["type"] == "agent_message" and e["turn_id"] == turn_id
    )


def said_after_decision(events: list[dict[str, Any]], request_id: str, text: str) -> bool:
    """True when an ``agent_message`` containing ``text`` comes after the request's decision event."""
    (decided,) = [
        e
        for e in events
        if e["type"] == "permission" and e["content"].get("request_id") == request_id and e["content"].get("decision")
    ]
    later = [e for e in events if e["sequence"] > decided["sequence"] and e["type"] == "agent_message"]
    return any(text in (e["content"].get("text") or "") for e in later)


def done_of(events: list[dict[str, Any]], turn_id: str) -> dict[str, Any]:
    (done,) = [e for e in events if e["type"] == "done" and e["turn_id"] == turn_id]
    return done


def zed_turn_until_pending(kernel: KernelSession) -> tuple[str, str, dict[str, Any]]:
    """Create a Zed example session, prompt it without --wait and wait for its pending edit request.

    Returns the session id, the turn id and the pending request (as ``inspect`` shows it).
    """
    workspace = zed_workspace()
    record = kernel.agh(f"session new --agent zed-example --cwd {workspace}")
    assert record["state"] == "active", record
    assert record["permissions"] == "approve-reads", record  # the default mode
    sid = record["id"]
    turn = kernel.agh(f'session prompt {sid} "hello from a notebook"')
    assert turn["position"] == 0 and turn["status"] in ("running", "queued"), turn
    (request,) = wait_pending(kernel, sid)
    assert request["kind"] == "edit", request
    assert request["session_id"] == sid and request["turn_id"] == turn["turn_id"], request
    assert request["paths"] == [str(ZED_EDIT_PATH)], request
    assert {o["option_id"] for o in request["options"]} == {"allow", "reject"}, request
    assert request["decision"] is None, request
    # Stored on arrival, without a decision yet (a group commit may lag the in-memory pending
    # list by a few milliseconds, hence the short poll); the turn is still running.
    arrivals = kernel.poll(
        lambda: permission_events(kernel, sid, request["request_id"]),
        bool,
        5,
        f"the arrival event of {request['request_id']}",
    )
    assert len(arrivals) == 1, arrivals
    assert "decision" not in arrivals[0], arrivals
    assert [p["request_id"] for p in kernel.agh(f"session inspect {sid}")["pending_approvals"]] == [
        request["request_id"]
    ]
    events = kernel.events(sid)
    assert not any(e["type"] == "done" and e["turn_id"] == turn["turn_id"] for e in events), events
    return sid, turn["turn_id"], request


# 1 ------------------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_third_party_agent_waits_for_a_magic_decision(kernel: KernelSession) -> None:
    write_agent(kernel.home, "zed-example", [str(require(TSX)), str(require(ZED_EXAMPLE))])

    # -- allow-once --------------------------------------------------------------------------------
    sid, turn_id, request = zed_turn_until_pending(kernel)
    req = request["request_id"]

    shown = kernel.ok(f"%agh approvals {sid}")
    assert shown.result is not None and WIDGET_MIME in shown.result, shown.describe()
    kernel.ok("panel = _")
    assert kernel.json("import json as _j\nprint(_j.dumps(type(panel).__name__))") == "ApprovalPanel"
    assert req in panel_ids(kernel)
    # The JSON form of the same command is the pending list.
    assert [p["request_id"] for p in kernel.agh(f"approvals {sid}")] == [req]

    resolved = kernel.agh(f"session approve {sid} --request {req} --decision allow-once")
    assert resolved["request_id"] == req and resolved["decision"] == "allow-once", resolved
    assert resolved["source"] == "user", resolved

    events = wait_done(kernel, sid, turn_id)
    assert done_of(events, turn_id)["content"]["stop_reason"] == "end_turn"
    said = turn_text(events, turn_id)
    assert ZED_AFTER_ALLOW in said, said
    assert ZED_AFTER_REJECT not in said, said
    assert said_after_decision(events, req, ZED_AFTER_ALLOW), events
    stored = permission_events(kernel, sid, req)
    assert [p.get("decision") for p in stored] == [None, "allow-once"], stored
    assert stored[1]["runtime"]["source"] == "user", stored
    assert kernel.agh(f"session inspect {sid}")["pending_approvals"] == []
    kernel.poll(lambda: panel_ids(kernel), lambda ids: ids == [], 10, "the panel to drop the allowed request")
    assert "allow-once" in panel_status(kernel)
    # A second decision is refused with one error line.
    again = kernel.run(f"%agh session approve {sid} --request {req} --decision reject-once")
    assert again.stderr.startswith("agh: error:") and "already resolved" in again.stderr, again.describe()

    # -- reject-once (a second session, same agent) ------------------------------------------------
    sid2, turn2, request2 = zed_turn_until_pending(kernel)
    req2 = request2["request_id"]
    assert req2 != req
    resolved2 = kernel.agh(f"session approve {sid2} --request {req2} --decision reject-once")
    assert resolved2["decision"] == "reject-once", resolved2

    events2 = wait_done(kernel, sid2, turn2)
    assert done_of(events2, turn2)["content"]["stop_reason"] == "end_turn"
    said2 = turn_text(events2, turn2)
    assert ZED_AFTER_REJECT in said2, said2
    assert ZED_AFTER_ALLOW not in said2, said2
    assert said_after_decision(events2, req2, ZED_AFTER_REJECT), events2
    stored2 = permission_events(kernel, sid2, req2)
    assert [p.get("decision") for p in stored2] == [None, "reject-once"], stored2
    assert stored2[1]["runtime"]["source"] == "user", stored2


# 2 ------------------------------------------------------------------------------------------------


TIMEOUT_2S = '[permissions]\napproval_timeout = "2s"\n'


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kernel", [TIMEOUT_2S], ids=["approval_timeout=2s"], indirect=True)
def test_an_undecided_request_times_out_and_leaves_the_panel(kernel: KernelSession) -> None:
    assert (kernel.home / "config.toml").exists()
    sid = new_session(kernel)["id"]
    # The panel exists before the request arrives; record every list it showed.
    kernel.ok(
        f"panel = %agh approvals {sid}\n"
        "shown = []\n"
        "panel.observe(lambda _c: shown.append(panel.pending_ids()), names='children')"
    )
    assert panel_ids(kernel) == []
    turn = kernel.agh(f'session prompt {sid} "write late.txt too late"')
    turn_id = turn["turn_id"]

    events = wait_done(kernel, sid, turn_id)
    assert done_of(events, turn_id)["content"]["stop_reason"] == "end_turn"
    assert not (kernel.workspace / "late.txt").exists()
    assert "permission rejected" in turn_text(events, turn_id)
    permission_rows = [e for e in events if e["type"] == "permission"]
    (arrival,) = [e for e in permission_rows if "decision" not in e["content"]]
    req = arrival["content"]["request_id"]
    (decision,) = [e for e in permission_rows if e["content"].get("decision")]
    assert decision["content"]["request_id"] == req
    assert decision["content"]["decision"] == "reject-once", decision
    assert decision["content"]["runtime"]["source"] == "timeout", decision
    waited = ts(decision["timestamp"]) - ts(arrival["timestamp"])
    assert 1.5 <= waited < 30, waited

    shown = kernel.json("import json as _j\nprint(_j.dumps(shown))")
    assert [req] in shown, f"the panel never listed the request: {shown}"
    kernel.poll(lambda: panel_ids(kernel), lambda ids: ids == [], 10, "the panel to drop the timed-out request")
    status = panel_status(kernel)
    assert req in status and "reject-once" in status and "timeout" in status, status
    assert kernel.agh(f"session inspect {sid}")["pending_approvals"] == []


# 3 ------------------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_a_button_click_from_the_front_end_decides(kernel: KernelSession) -> None:
    sid = new_session(kernel)["id"]
    kernel.ok(f"panel = %agh approvals {sid}")
    turn = kernel.agh(f'session prompt {sid} "write clicked.txt hello from the button"')
    turn_id = turn["turn_id"]
    ids = kernel.poll(lambda: panel_ids(kernel), lambda v: len(v) == 1, 60, "the panel to list the request")
    req = ids[0]
    model_id = kernel.ok(f"print(panel.rows[{req!r}].buttons['allow-once'].model_id)").stdout.strip()
    assert model_id, "the button has a comm"
    assert kernel.json(
        f"import json as _j\nprint(_j.dumps(panel.rows[{req!r}].buttons['allow-once'].description))"
    ) == "Allow once"

    # Just before the click: still pending, the turn still running, nothing written.
    before = kernel.events(sid)
    assert not any(e["type"] == "done" and e["turn_id"] == turn_id for e in before), before
    assert [p["request_id"] for p in kernel.agh(f"session inspect {sid}")["pending_approvals"]] == [req]
    assert not (kernel.workspace / "clicked.txt").exists()

    # What JupyterLab sends when the button is clicked; no cell is executing.
    kc = kernel.client
    content = {"comm_id": model_id, "data": {"method": "custom", "content": {"event": "click"}}}
    msg = kc.session.msg("comm_msg", content)
    kc.shell_channel.send(msg)

    events = wait_done(kernel, sid, turn_id)
    assert done_of(events, turn_id)["content"]["stop_reason"] == "end_turn"
    target = kernel.workspace / "clicked.txt"
    assert target.exists() and target.read_text() == "hello from the button"
    stored = permission_events(kernel, sid, req)
    assert [p.get("decision") for p in stored] == [None, "allow-once"], stored
    assert stored[1]["runtime"]["source"] == "user", stored
    kernel.poll(lambda: panel_ids(kernel), lambda v: v == [], 10, "the panel to drop the clicked request")
    status = panel_status(kernel)
    assert "allow-once" in status and not status.startswith("error"), status

    # Agent text is escaped in the panel: a path with markup in it.
    turn2 = kernel.agh(f'session prompt {sid} "write <b>x</b>.txt hi"')
    ids2 = kernel.poll(lambda: panel_ids(kernel), lambda v: len(v) == 1, 60, "the panel to list the markup request")
    req2 = ids2[0]
    assert req2 != req
    header = kernel.json(f"import json as _j\nprint(_j.dumps(panel.rows[{req2!r}].children[0].value))")
    assert "&lt;b&gt;" in header, header
    assert "<b>x</b>" not in header, header
    kernel.agh(f"session approve {sid} --request {req2} --decision reject-once")
    events2 = wait_done(kernel, sid, turn2["turn_id"])
    assert done_of(events2, turn2["turn_id"])["content"]["stop_reason"] == "end_turn"
    assert not list(kernel.workspace.glob("<b>x*"))
