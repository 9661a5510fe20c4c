"""The agent words over HTTP (issue 10): ``set``, ``auth``, ``fork``, ``answer``, ``elicitations``
and ``logs`` give a ``RemoteHost`` the results of the embedded host, against a real Jupyter server
and the demo agent with its session features on."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agh_nb.errors import CapabilityError, UsageError
from agh_nb.remote import RemoteHost, ServerInfo
from tests.conftest import DEMO, wait_until, write_agent
from tests.server.harness import Server

pytestmark = pytest.mark.timeout(180)

FLAGS = ["--fast", "--modes", "--commands", "--fork", "--auth", "agent"]


@pytest.fixture(params=["embedded", "remote"])
def any_host(request: pytest.FixtureRequest, server: Server, agh_home: Path) -> Iterator[Any]:
    """The embedded host or a RemoteHost, each with the ``featured`` demo agent defined."""
    for home in (agh_home, server.home):
        write_agent(home, "featured", [*DEMO, *FLAGS], extra="auth: demo-login\n")
    if request.param == "embedded":
        yield request.getfixturevalue("host")
    else:
        yield RemoteHost(ServerInfo(server.url, server.token))


def test_set_fork_answer_and_logs_give_the_same_results_on_both_hosts(any_host: Any, tmp_path: Path) -> None:
    record = any_host.create("featured", cwd=str(tmp_path), mode="plan")
    assert record.acp_state["modes"]["currentModeId"] == "plan"
    view = any_host.inspect(record.id)["agent"]
    assert view["mode"] == {"current": "plan", "available": ["ask", "code", "plan"]}
    assert [m["id"] for m in view["auth_methods"]] == ["demo-login"]
    assert wait_until(lambda: any_host.inspect(record.id)["agent"]["commands"])

    changed = any_host.set(record.id, model="demo-large", options={"verbose": "true"})
    assert changed.acp_state["models"] if "models" in changed.acp_state else True
    assert any_host.inspect(record.id)["agent"]["model"]["current"] == "demo-large"
    with pytest.raises(CapabilityError) as refused:
        any_host.set(record.id, mode="turbo")
    assert str(refused.value) == "agent 'featured' offers no mode 'turbo' (its modes: ask, code, plan)"

    assert any_host.auth(record.id, "demo-login").state.value == "active"
    with pytest.raises(CapabilityError, match=r"offers no auth method 'nope' \(its methods: demo-login\)"):
        any_host.auth(record.id, "nope")

    child = any_host.fork(record.id, name="branch")
    assert child.parent_id == record.id and child.name == "branch" and child.state.value == "active"

    turn = any_host.prompt(record.id, "ask-form")
    (form,) = wait_until(lambda: any_host.pending_elicitations(record.id))
    with pytest.raises(UsageError, match="takes one of red, green, blue"):
        any_host.answer(record.id, form["request_id"], {"colour": "pink"})
    answered = any_host.answer(record.id, form["request_id"], {"colour": "blue"})
    assert answered["action"] == "accept" and answered["content"] == {"colour": "blue"}
    assert turn.wait(60).stop_reason == "end_turn"

    lines = any_host.logs(record.id)
    assert any("starting pid=" in line for line in lines)
    assert list(any_host.logs(record.id, last=1)) == lines[-1:]
    any_host.stop(child.id)
    any_host.stop(record.id)


def test_bad_bodies_are_refused_before_anything_changes(server: Server, tmp_path: Path) -> None:
    write_agent(server.home, "featured", [*DEMO, *FLAGS], extra="auth: demo-login\n")
    remote = RemoteHost(ServerInfo(server.url, server.token))
    record = remote.create("featured", cwd=str(tmp_path))

    def post(path: str, body: object) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            f"{server.url}agh/api/sessions/{record.id}/{path}", data=json.dumps(body).encode(), method="POST"
        )
        request.add_header("Authorization", f"token {server.token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    assert post("set", {"options": {"verbose": True}})[0] == 400
    assert post("set", {"colour": "red"})[0] == 400
    assert post("answer", {"request_id": "eli_x", "values": {"a": 1}})[0] == 400
    status, body = post("answer", {"request_id": "eli_unknown"})
    assert status == 409 and body["error"]["type"] == "ApprovalError"
    status, body = post("set", {"mode": "turbo"})
    assert status == 409 and body["error"]["type"] == "CapabilityError"
    assert remote.get(record.id).acp_state["modes"]["currentModeId"] == "ask"
    remote.stop(record.id)
