"""The vault end to end (SPEC 6): a secret reaches the agent and nothing agh_nb writes."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agh_nb.api import Host, build_query
from agh_nb.errors import StoreError, VaultKeyError, VaultRefError
from agh_nb.runtime import Runtime
from tests.conftest import DEMO, wait_until, write_agent

pytestmark = pytest.mark.timeout(90)

SECRET = "s3cr3t-TOKEN-9f8e7d6c5b4a"
REF = "vault:providers/demo-key"


def every_file_bytes(root: Path) -> bytes:
    chunks = []
    for path in root.rglob("*"):
        if path.is_file():
            chunks.append(path.read_bytes())
    return b"\n".join(chunks)


def test_secret_reaches_the_agent_and_is_scrubbed_everywhere(
    host: Host, agh_home: Path, workspace: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    meta = host.vault_put(REF, SECRET, kind="api_key")
    assert set(meta) == {"ref", "namespace", "kind", "present", "created_at", "updated_at"}
    assert SECRET not in json.dumps(meta)
    write_agent(agh_home, "keyed", [*DEMO, "--fast"], extra=f"env:\n  DEMO_TOKEN: {REF}\n")
    record = host.create("keyed", cwd=str(workspace))

    host.prompt(record.id, "echo-env DEMO_TOKEN").wait(30)
    said = "".join(e.content.get("text") or "" for e in host.events(record.id, build_query(types="agent_message")))
    assert "DEMO_TOKEN=[redacted:vault:providers/demo-key]" in said  # the agent had the value

    host.prompt(record.id, "leak DEMO_TOKEN").wait(30)
    final = wait_until(lambda: (r := host.get(record.id)).state.value == "stopped" and r)
    assert final.stop_reason is not None and final.stop_reason.value == "agent_crashed"
    assert final.failure is not None and "[redacted:" in final.failure.summary
    assert final.failure.crash_bundle_path

    stored = host.sql("SELECT content::VARCHAR AS c FROM events")
    assert not any(SECRET in c for c in stored["c"])
    assert any("[redacted:vault:providers/demo-key]" in c for c in stored["c"])
    sessions = host.sql("SELECT * FROM sessions").to_json(date_format="iso")
    assert SECRET not in sessions
    host.store.close()  # flush everything to disk before grepping the files
    assert SECRET.encode() not in every_file_bytes(agh_home)
    bundle = Path(final.failure.crash_bundle_path).read_text()
    assert "cannot use credential [redacted:" in bundle
    assert SECRET not in caplog.text


def test_every_surface_returns_metadata_only(host: Host, agh_home: Path) -> None:
    host.vault_put(REF, SECRET)
    for doc in (host.vault_get(REF), *host.vault_list(), *host.vault_list(namespace="providers"), host.vault_delete(REF)):
        assert SECRET not in json.dumps(doc)
        assert set(doc) == {"ref", "namespace", "kind", "present", "created_at", "updated_at"}
    tables = host.sql("SELECT table_name FROM information_schema.tables")["table_name"].tolist()
    assert not any("vault" in t for t in tables)
    for query in (
        f"SELECT * FROM read_text('{agh_home}/vault/vault.json')",
        f"SELECT * FROM '{agh_home}/vault/vault.json'",
        f"ATTACH '{agh_home}/other.duckdb'",
        "SELECT getenv('AGH_VAULT_KEY')",
        "SELECT 1; SELECT 2",
    ):
        with pytest.raises(StoreError):
            host.sql(query)
    assert len(host.sql("WITH s AS (SELECT * FROM sessions) SELECT count(*) AS n FROM s")) == 1


def test_cli_vault_words_show_metadata_only(agh_home: Path) -> None:
    host = Host(Runtime.start(home=agh_home))
    host.vault_put(REF, SECRET, kind="api_key")
    host.close()
    env = dict(os.environ, AGH_HOME=str(agh_home))
    for words in (["vault", "list"], ["vault", "get", REF]):
        out = subprocess.run([sys.executable, "-m", "agh_nb.cli", *words, "-o", "json"], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert SECRET not in out.stdout and REF in out.stdout


def test_rotation_keeps_kind_and_delete_unregisters(host: Host) -> None:
    host.vault_put(REF, SECRET, kind="api_key")
    assert host.vault_put(REF, SECRET + "-v2")["kind"] == "api_key"
    assert host.runtime.redactor.redact(f"x {SECRET}-v2 y") == "x [redacted:vault:providers/demo-key] y"
    host.vault_delete(REF)
    assert host.runtime.redactor.redact(f"{SECRET}-v2") == f"{SECRET}-v2"


def test_tampering_is_detected(agh_home: Path) -> None:
    host = Host(Runtime.start(home=agh_home))
    host.vault_put(REF, SECRET)
    host.close()
    vault_file = agh_home / "vault" / "vault.json"
    data = json.loads(vault_file.read_text())
    text = json.dumps(data)
    entries = data.get("entries") or data
    assert REF in text
    # Flip one character of the stored ciphertext.
    raw = vault_file.read_text()
    entry = entries[REF] if isinstance(entries, dict) and REF in entries else None
    assert entry is not None, "the vault file lists entries by ref"
    field = next(k for k in ("ciphertext", "ct", "data") if k in entry)
    ciphertext = entry[field]
    flipped = ciphertext[:10] + ("A" if ciphertext[10] != "A" else "B") + ciphertext[11:]
    vault_file.write_text(raw.replace(ciphertext, flipped))
    host = Host(Runtime.start(home=agh_home))
    try:
        assert host.vault_get(REF)["present"] is False
        from agh_nb.errors import VaultTamperedError

        with pytest.raises(VaultTamperedError, match="providers/demo-key"):
            host.runtime.vault.resolve(REF)
    finally:
        host.close()


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        pytest.param("providers/x", "vault:", id="missing-scheme"),
        pytest.param("vault:nope/x", "unknown namespace 'nope'", id="unknown-namespace"),
        pytest.param("vault:providers//x", "empty", id="empty-segment"),
        pytest.param("vault:providers/../x", r"\.\.", id="dotdot"),
    ],
)
def test_malformed_refs_are_one_clear_line(host: Host, ref: str, message: str) -> None:
    with pytest.raises(VaultRefError, match=message) as caught:
        host.vault_put(ref, SECRET)
    assert "\n" not in str(caught.value) and SECRET not in str(caught.value)


def test_a_wrong_key_is_a_clear_error(agh_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = Host(Runtime.start(home=agh_home))
    host.vault_put(REF, SECRET)
    host.close()
    import base64

    monkeypatch.setenv("AGH_VAULT_KEY", base64.urlsafe_b64encode(b"\x01" * 32).decode())
    with pytest.raises(VaultKeyError, match="does not match"):
        Runtime.start(home=agh_home)


def test_missing_ref_at_spawn_names_the_ref(host: Host, agh_home: Path, workspace: Path) -> None:
    write_agent(agh_home, "needs-key", [*DEMO, "--fast"], extra="env:\n  DEMO_TOKEN: vault:providers/absent\n")
    from agh_nb.errors import AgentStartError

    with pytest.raises(AgentStartError, match="vault:providers/absent"):
        host.create("needs-key", cwd=str(workspace))


def test_a_running_agent_keeps_its_secret_redacted_after_rotation(host: Host, agh_home: Path, workspace: Path) -> None:
    host.vault_put(REF, SECRET)
    write_agent(agh_home, "keyed", [*DEMO, "--fast"], extra=f"env:\n  DEMO_TOKEN: {REF}\n")
    record = host.create("keyed", cwd=str(workspace))
    host.vault_put(REF, SECRET + "-rotated")  # the agent still holds the old value
    host.vault_delete(REF)
    host.prompt(record.id, "echo-env DEMO_TOKEN").wait(30)
    said = host.sql(f"SELECT content::VARCHAR AS c FROM events WHERE session_id = '{record.id}'")["c"]
    assert not any(SECRET in c for c in said)
    assert any(f"[redacted:{REF}@{record.id}]" in c for c in said)
    host.stop(record.id)
    assert host.runtime.redactor.redact(SECRET) == SECRET  # pinned only while the session ran


def test_env_refs_are_secrets_too(host: Host, agh_home: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGH_TEST_PLAIN_TOKEN", SECRET)
    write_agent(agh_home, "env-keyed", [*DEMO, "--fast"], extra="env:\n  DEMO_TOKEN: env:AGH_TEST_PLAIN_TOKEN\n")
    record = host.create("env-keyed", cwd=str(workspace))
    host.prompt(record.id, "echo-env DEMO_TOKEN").wait(30)
    texts = [e.content.get("text") or "" for e in host.events(record.id, build_query(types="agent_message"))]
    assert any("DEMO_TOKEN=[redacted:env:AGH_TEST_PLAIN_TOKEN@" in t for t in texts), texts
    assert not any(SECRET in t for t in texts)


def test_a_pending_write_shows_no_secret(host: Host, agh_home: Path, workspace: Path) -> None:
    host.vault_put(REF, SECRET)
    record = host.create("demo-fast", cwd=str(workspace))  # approve-reads: the write waits
    turn = host.prompt(record.id, f"write token.txt key={SECRET}")
    (pending,) = wait_until(lambda: host.pending_approvals(record.id))  # type: ignore[misc]
    assert SECRET not in json.dumps(pending) and "[redacted:" in json.dumps(pending)
    assert SECRET not in json.dumps(host.inspect(record.id))
    host.approve(record.id, pending["request_id"], "reject-once")
    assert turn.wait(30).stop_reason == "end_turn"


def test_a_secret_split_across_chunks_is_scrubbed_where_chunks_are_joined(host: Host, workspace: Path) -> None:
    from agh_nb.events import EventDraft, EventType

    host.vault_put(REF, SECRET)
    record = host.create("demo-fast", cwd=str(workspace))
    result = host.prompt(record.id, "hello").wait(30)
    # An agent streaming the value token by token: no single chunk holds it.
    live = host.runtime.manager.live(record.id)
    assert live is not None
    for piece in ("the key is ", SECRET[:7], SECRET[7:], " ok"):
        host.runtime.call(lambda piece=piece: live.append_event_durable(EventDraft(EventType.AGENT_MESSAGE, result.turn_id, {"text": piece})))
    transcript = json.dumps(host.transcript(record.id))
    history = json.dumps(host.history(record.id))
    for joined in (transcript, history):
        assert SECRET not in joined and f"the key is [redacted:{REF}] ok" in joined


def test_values_too_short_to_scrub_are_refused(host: Host) -> None:
    from agh_nb.errors import VaultError

    with pytest.raises(VaultError, match="shorter than 4 characters"):
        host.vault_put(REF, "abc")
    assert host.vault_list() == []


@pytest.mark.parametrize(
    "words",
    [["vault", "put", REF, SECRET], ["vault", "get", REF, SECRET], ["-o", "json", "vault", "put", REF, "--", SECRET]],
    ids=["put", "get", "put-after-dashes"],
)
def test_a_value_typed_on_the_command_line_is_never_echoed(agh_home: Path, words: list[str]) -> None:
    env = dict(os.environ, AGH_HOME=str(agh_home))
    out = subprocess.run([sys.executable, "-m", "agh_nb.cli", *words], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert SECRET not in out.stdout + out.stderr
    assert out.stderr.startswith("agh-nb: error: ") and out.stderr.count("\n") == 1, out.stderr


def test_cli_vault_put_without_a_value_is_one_line(agh_home: Path) -> None:
    env = dict(os.environ, AGH_HOME=str(agh_home))
    out = subprocess.run(
        [sys.executable, "-m", "agh_nb.cli", "vault", "put", REF], env=env, capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=60,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "no value was entered" in out.stderr
