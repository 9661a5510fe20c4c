"""A secret streamed in pieces (issue 11): never whole in a stored row, the ledger, or any file.

The demo agent's ``stream KIND SIZES TEXT`` sends TEXT in chunks of the given sizes; the secret
is an ``env:`` value handed to the agent (so it is registered for redaction while the session
runs), and a vault value.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agh_nb.api import Host
from agh_nb.core.session_dir import ledger_path
from agh_nb.runtime import Runtime
from tests.conftest import DEMO, write_agent

pytestmark = pytest.mark.timeout(180)

ENV_SECRET = "envtok-5f3a9c1e7b2d4068aa"
VAULT_SECRET = "vaulttok-93b1c7e5d2f4a6081b"

SIZES = ["1", "2", "3,5", "4,1,7", "9", "13", str(len(ENV_SECRET) - 1)]


def every_file(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.mark.parametrize("kind", ["message", "thought", "tool"])
def test_a_split_secret_is_never_stored_whole(
    agh_home: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.setenv("AGH_TEST_SPLIT_TOKEN", ENV_SECRET)
    write_agent(
        agh_home, "streamer", [*DEMO, "--fast"],
        "env:\n  SPLIT_TOKEN: env:AGH_TEST_SPLIT_TOKEN\n  OTHER: vault:providers/split\n",
    )
    host = Host(Runtime.start(home=agh_home))
    try:
        host.vault_put("vault:providers/split", VAULT_SECRET)
        record = host.create("streamer", cwd=str(workspace))
        sid = record.id
        for sizes in SIZES:
            text = f"a{sizes} {ENV_SECRET} then {VAULT_SECRET}. {ENV_SECRET[:5]} trailing s"
            assert host.prompt(sid, f"stream {kind} {sizes} {text}").wait(60).stop_reason == "end_turn"
        events = host.events(sid)
        wanted = {"message": "agent_message", "thought": "thought", "tool": "tool_call"}[kind]
        chunks = [e for e in events if e.type == wanted]
        assert len(chunks) > 3 * len(SIZES)  # the chunks stayed separate events
        pieces = [e.content.get("text") or "" for e in chunks] if kind != "tool" else [
            "".join(item["content"]["text"] for item in (e.content["raw"].get("content") or [])) for e in chunks
        ]
        joined = "".join(pieces)
        assert ENV_SECRET not in joined and VAULT_SECRET not in joined
        assert "[redacted:env:AGH_TEST_SPLIT_TOKEN" in joined and "[redacted:vault:providers/split" in joined
        assert "trailing s" in joined  # what was held back at the end of each turn was stored
        host.stop(sid)
        for column in ("content->>'text'", "content->'raw'->'content'->>'text'", "CAST(content AS VARCHAR)"):
            frame = host.sql(f"SELECT string_agg({column}, '' ORDER BY sequence) AS s FROM events WHERE session_id = '{sid}'")
            aggregated = str(frame["s"][0])
            assert ENV_SECRET not in aggregated and VAULT_SECRET not in aggregated, column
        ledger = ledger_path(agh_home, host.get(sid))
        assert ledger.exists()
    finally:
        host.close()
    for path in every_file(agh_home):
        data = path.read_bytes()
        assert ENV_SECRET.encode() not in data and VAULT_SECRET.encode() not in data, path
    ledger_text = ledger.read_text()
    assert "[redacted:" in ledger_text and ENV_SECRET not in ledger_text.replace("\\", "")
