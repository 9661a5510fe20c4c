"""``POST /agh/api/export`` and ``RemoteHost.export``: a client-mode kernel exports the server's
store as Parquet, written off the server's event loop (a real Jupyter server, the demo agent)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from agh_nb.remote import RemoteHost, ServerInfo
from tests.server.harness import Server

pytestmark = pytest.mark.timeout(180)


def test_a_client_exports_the_servers_store(server: Server, tmp_path: Path) -> None:
    remote = RemoteHost(ServerInfo(server.url, server.token))
    sid = remote.create("demo-fast", cwd=str(tmp_path)).id
    assert remote.prompt(sid, "hello").wait(60).stop_reason == "end_turn"
    remote.stop(sid)
    stored = int(remote.sql(f"SELECT count(*) AS n FROM events WHERE session_id = '{sid}'")["n"][0])
    out = tmp_path / "fleet"
    summary = remote.export(str(out), session=sid)
    assert (summary["events"], summary["token_usage"], summary["sessions"]) == (stored, 1, 1)
    glob = f"read_parquet('{out}/events/**/*.parquet', hive_partitioning = true)"
    assert duckdb.sql(f"SELECT count(*), min(session_id) FROM {glob}").fetchall() == [(stored, sid)]
    assert remote.export(str(out), session=sid)["events"] == 0
    # The views are part of the store's SQL surface over HTTP too.
    cost = remote.sql(f"SELECT cost FROM turns WHERE session_id = '{sid}'")["cost"].tolist()
    assert len(cost) == 1 and cost[0] > 0


def test_export_refuses_a_bad_body_in_one_line(server: Server, tmp_path: Path) -> None:
    missing = server.api("POST", "/export", {})
    assert missing.status == 400 and "'dir'" in missing.text
    foreign = tmp_path / "holds-something"
    (foreign / "x").mkdir(parents=True)
    refused = server.api("POST", "/export", {"dir": str(foreign)})
    assert refused.status == 400 and refused.error_type() == "UsageError", refused.text
    unknown = server.api("POST", "/export", {"dir": str(tmp_path / "new"), "session": "sess_nope"})
    assert unknown.status == 404 and unknown.error_type() == "SessionNotFoundError"
