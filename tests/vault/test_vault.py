"""The encrypted vault on real files (SPEC 6): write-only, authenticated, and redaction-aware."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from agh_nb.adapters.vault import KEY_ENV, Vault, VaultEntry
from agh_nb.core.clock import SystemClock
from agh_nb.core.redaction import Redactor
from agh_nb.errors import (
    SecretNotFoundError,
    VaultError,
    VaultKeyError,
    VaultRefError,
    VaultTamperedError,
)

SECRET = "sk-live-4f9a8b7c6d5e4f3a2b1c"
OTHER = "ghp_0000111122223333444455556666"
REF = "vault:providers/openai"
WRONG_KEY_MESSAGE = (
    "the vault key does not match the key the vault was written with: set AGH_VAULT_KEY to the "
    "original key, or move $AGH_HOME/vault away to start a new vault"
)


class FakeClock(SystemClock):
    """A clock that moves one second per reading."""

    def __init__(self) -> None:
        self._now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)

    def now(self) -> datetime:
        self._now += timedelta(seconds=1)
        return self._now


def new_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def key() -> str:
    return new_key()


@pytest.fixture
def environ(key: str) -> dict[str, str]:
    return {KEY_ENV: key}


@pytest.fixture
def redactor() -> Redactor:
    return Redactor()


@pytest.fixture
def vault(home: Path, environ: dict[str, str], redactor: Redactor) -> Vault:
    return Vault.open(home, environ=environ, redactor=redactor, clock=FakeClock())


def all_bytes(home: Path) -> Iterator[tuple[Path, bytes]]:
    for path in home.rglob("*"):
        if path.is_file():
            yield path, path.read_bytes()


def flip_ciphertext_byte(vault_file: Path, ref: str) -> None:
    document = json.loads(vault_file.read_text())
    raw = bytearray(base64.urlsafe_b64decode(document["entries"][ref]["ciphertext"]))
    raw[0] ^= 0x01
    document["entries"][ref]["ciphertext"] = base64.urlsafe_b64encode(bytes(raw)).decode()
    vault_file.write_text(json.dumps(document))


# -- put / get / list / delete / resolve -------------------------------------------------------


def test_put_get_list_resolve_delete_round_trip(vault: Vault) -> None:
    entry = vault.put(REF, SECRET, kind="api_key")
    assert (entry.ref, entry.namespace, entry.kind, entry.present) == (REF, "providers", "api_key", True)
    assert entry.created_at == entry.updated_at
    assert vault.get(REF) == entry
    vault.put("vault:mcp/github/token", OTHER)
    assert [e.ref for e in vault.list()] == ["vault:mcp/github/token", REF]
    assert vault.resolve(REF) == SECRET
    assert vault.delete(REF) == entry
    with pytest.raises(SecretNotFoundError, match="no secret is stored at vault:providers/openai"):
        vault.get(REF)
    with pytest.raises(SecretNotFoundError):
        vault.resolve(REF)
    with pytest.raises(SecretNotFoundError):
        vault.delete(REF)
    assert [e.ref for e in vault.list()] == ["vault:mcp/github/token"]


def test_list_filters_by_namespace_and_prefix(vault: Vault) -> None:
    for ref in ("vault:providers/openai", "vault:providers/anthropic", "vault:mcp/openai", "vault:sessions/sess_1/k"):
        vault.put(ref, SECRET)
    assert [e.ref for e in vault.list(namespace="providers")] == ["vault:providers/anthropic", "vault:providers/openai"]
    assert [e.ref for e in vault.list(prefix="providers/o")] == ["vault:providers/openai"]
    assert [e.ref for e in vault.list(prefix="vault:sessions/sess_1/")] == ["vault:sessions/sess_1/k"]
    assert vault.list(namespace="mcp", prefix="vault:providers") == []
    with pytest.raises(VaultRefError, match="unknown namespace 'nope'"):
        vault.list(namespace="nope")


@pytest.mark.parametrize(
    ("ref", "error"),
    [
        pytest.param("env:HOME", VaultRefError, id="env-ref"),
        pytest.param("vault:nope/x", VaultRefError, id="unknown-namespace"),
        pytest.param("providers/openai", VaultRefError, id="no-scheme"),
    ],
)
def test_put_refuses_bad_refs(vault: Vault, ref: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        vault.put(ref, SECRET)


def test_put_refuses_an_empty_value_and_a_bad_kind(vault: Vault) -> None:
    with pytest.raises(VaultError, match="empty"):
        vault.put(REF, "")
    with pytest.raises(VaultError, match="kind"):
        vault.put(REF, SECRET, kind="api key!")
    assert vault.list() == []


def test_rotation_keeps_kind_and_created_at_and_swaps_redaction(vault: Vault, redactor: Redactor) -> None:
    first = vault.put(REF, SECRET, kind="api_key")
    second = vault.put(REF, OTHER)
    assert second.kind == "api_key"
    assert second.created_at == first.created_at
    assert second.updated_at > first.updated_at
    assert vault.resolve(REF) == OTHER
    assert redactor.redact(f"{SECRET} {OTHER}") == f"{SECRET} [redacted:{REF}]"
    assert vault.put(REF, OTHER, kind="token").kind == "token"


def test_new_entries_default_to_kind_secret(vault: Vault) -> None:
    assert vault.put(REF, SECRET).kind == "secret"


def test_put_registers_and_delete_unregisters(vault: Vault, redactor: Redactor) -> None:
    vault.put(REF, SECRET)
    assert redactor.redact(f"key={SECRET}") == f"key=[redacted:{REF}]"
    vault.delete(REF)
    assert redactor.redact(f"key={SECRET}") == f"key={SECRET}"


def test_one_value_under_two_refs_stays_redacted_until_both_are_deleted(vault: Vault, redactor: Redactor) -> None:
    vault.put("vault:providers/a", SECRET)
    vault.put("vault:providers/b", SECRET)
    vault.delete("vault:providers/a")
    assert SECRET not in redactor.redact(SECRET)
    vault.delete("vault:providers/b")
    assert redactor.redact(SECRET) == SECRET


# -- metadata only -----------------------------------------------------------------------------


def test_entries_carry_exactly_the_spec_metadata(vault: Vault) -> None:
    entry = vault.put(REF, SECRET)
    assert [f.name for f in dataclasses.fields(VaultEntry)] == [
        "ref", "namespace", "kind", "present", "created_at", "updated_at",
    ]
    assert SECRET not in repr(entry) and SECRET not in repr(vault)
    data = entry.to_dict()
    assert data == {
        "ref": REF,
        "namespace": "providers",
        "kind": "secret",
        "present": True,
        "created_at": "2026-01-02T03:04:06.000000Z",
        "updated_at": "2026-01-02T03:04:06.000000Z",
    }
    assert SECRET not in json.dumps(data)
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.kind = "x"  # type: ignore[misc]


# -- files, permissions, plaintext -------------------------------------------------------------


def test_opening_a_fresh_home_creates_nothing(home: Path) -> None:
    Vault.open(home, environ={})
    assert list(home.iterdir()) == []


def test_first_put_creates_key_and_vault_owner_only(home: Path) -> None:
    vault = Vault.open(home, environ={})
    vault.put(REF, SECRET)
    assert stat.S_IMODE((home / "vault.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "vault").stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "vault" / "vault.json").stat().st_mode) == 0o600
    assert len(base64.urlsafe_b64decode((home / "vault.key").read_text().strip())) == 32
    assert not [p for p in (home / "vault").iterdir() if p.name.endswith(".tmp")]


def test_an_existing_key_file_is_never_overwritten(home: Path) -> None:
    key = new_key()
    (home / "vault.key").write_text(key + "\n")
    os.chmod(home / "vault.key", 0o600)
    vault = Vault.open(home, environ={})
    vault.put(REF, SECRET)
    assert (home / "vault.key").read_text().strip() == key
    assert Vault.open(home, environ={KEY_ENV: key}).resolve(REF) == SECRET


def test_the_plaintext_appears_in_no_file_under_the_home(home: Path) -> None:
    vault = Vault.open(home, environ={})
    vault.put(REF, SECRET)
    vault.put("vault:mcp/x", OTHER)
    vault.put(REF, SECRET + "-rotated")
    needles = [SECRET.encode(), OTHER.encode(), base64.b64encode(SECRET.encode()), base64.urlsafe_b64encode(OTHER.encode())]
    for path, data in all_bytes(home):
        for needle in needles:
            assert needle not in data, f"{needle!r} found in {path}"


def test_the_vault_file_is_not_the_duckdb_store(home: Path, vault: Vault) -> None:
    vault.put(REF, SECRET)
    assert vault.path == home / "vault" / "vault.json"
    assert json.loads(vault.path.read_text())["schema"] == "agh.vault.v1"


# -- keys --------------------------------------------------------------------------------------


def test_a_wrong_key_is_a_key_error(home: Path, vault: Vault) -> None:
    vault.put(REF, SECRET)
    with pytest.raises(VaultKeyError) as info:
        Vault.open(home, environ={KEY_ENV: new_key()})
    assert str(info.value) == WRONG_KEY_MESSAGE


def test_a_missing_key_for_an_existing_vault_is_a_key_error_and_no_key_is_made(home: Path, vault: Vault) -> None:
    vault.put(REF, SECRET)
    with pytest.raises(VaultKeyError, match="needs its key: set AGH_VAULT_KEY or restore"):
        Vault.open(home, environ={})
    assert not (home / "vault.key").exists()


@pytest.mark.parametrize(
    ("bad_key", "message"),
    [
        pytest.param("not base64 at all!!", "is not a vault key: expected the urlsafe base64", id="bad-base64"),
        pytest.param(base64.urlsafe_b64encode(b"short").decode(), "decodes to 5 bytes, expected 32", id="short"),
        pytest.param(base64.urlsafe_b64encode(os.urandom(48)).decode(), "decodes to 48 bytes", id="long"),
    ],
)
def test_a_malformed_env_key_names_the_variable_never_the_key(home: Path, bad_key: str, message: str) -> None:
    with pytest.raises(VaultKeyError) as info:
        Vault.open(home, environ={KEY_ENV: bad_key})
    assert "the environment variable AGH_VAULT_KEY" in str(info.value)
    assert message in str(info.value)
    assert bad_key not in str(info.value)


def test_a_malformed_key_file_names_the_file_never_the_key(home: Path) -> None:
    (home / "vault.key").write_text("abc$%^\n")
    with pytest.raises(VaultKeyError) as info:
        Vault.open(home, environ={})
    assert str(home / "vault.key") in str(info.value)
    assert "abc$%^" not in str(info.value)


def test_the_environment_key_wins_over_the_key_file(home: Path) -> None:
    (home / "vault.key").write_text(new_key() + "\n")
    env_key = new_key()
    Vault.open(home, environ={KEY_ENV: env_key}).put(REF, SECRET)
    assert Vault.open(home, environ={KEY_ENV: env_key}).resolve(REF) == SECRET
    with pytest.raises(VaultKeyError):
        Vault.open(home, environ={})  # the file's key is not the one the vault was written with


def test_unpadded_and_standard_alphabet_keys_are_accepted(home: Path) -> None:
    raw = os.urandom(32)
    Vault.open(home, environ={KEY_ENV: base64.urlsafe_b64encode(raw).decode().rstrip("=")}).put(REF, SECRET)
    assert Vault.open(home, environ={KEY_ENV: base64.b64encode(raw).decode()}).resolve(REF) == SECRET


# -- tampering ---------------------------------------------------------------------------------


def test_a_flipped_ciphertext_byte_is_tampering_named_by_ref(home: Path, environ: dict[str, str], vault: Vault) -> None:
    vault.put(REF, SECRET)
    vault.put("vault:mcp/ok", OTHER)
    flip_ciphertext_byte(vault.path, REF)
    reopened = Vault.open(home, environ=environ)
    assert reopened.get(REF).present is False
    assert reopened.get("vault:mcp/ok").present is True
    with pytest.raises(VaultTamperedError) as info:
        reopened.resolve(REF)
    assert REF in str(info.value) and SECRET not in str(info.value)
    assert reopened.resolve("vault:mcp/ok") == OTHER
    # the running vault notices the change on disk as well
    with pytest.raises(VaultTamperedError, match="vault:providers/openai"):
        vault.resolve(REF)
    # and a new value repairs the entry
    reopened.put(REF, SECRET)
    assert reopened.resolve(REF) == SECRET


def test_a_ciphertext_moved_to_another_ref_fails_authentication(home: Path, environ: dict[str, str], vault: Vault) -> None:
    vault.put(REF, SECRET)
    vault.put("vault:providers/other", OTHER)
    document = json.loads(vault.path.read_text())
    moved = document["entries"][REF]
    document["entries"]["vault:providers/other"].update(nonce=moved["nonce"], ciphertext=moved["ciphertext"])
    vault.path.write_text(json.dumps(document))
    with pytest.raises(VaultTamperedError, match="vault:providers/other"):
        Vault.open(home, environ=environ).resolve("vault:providers/other")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param("{not json", "is not valid JSON", id="not-json"),
        pytest.param('{"schema": "other"}', "is not an agh.vault.v1 vault", id="wrong-schema"),
        pytest.param('{"schema": "agh.vault.v1", "entries": []}', "malformed 'entries'", id="bad-entries"),
    ],
)
def test_a_malformed_vault_file_is_a_vault_error(home: Path, environ: dict[str, str], content: str, message: str) -> None:
    (home / "vault").mkdir()
    (home / "vault" / "vault.json").write_text(content)
    with pytest.raises(VaultError, match=message):
        Vault.open(home, environ=environ)


# -- other processes, other threads -----------------------------------------------------------

CHILD = """
import sys
from pathlib import Path
from agh_nb.adapters.vault import Vault
vault = Vault.open(Path(sys.argv[1]))
print(vault.redactor.redact(sys.stdin.read()))
print(",".join(e.ref for e in vault.list()))
"""


def test_a_new_process_with_the_same_key_registers_old_values(home: Path, key: str, vault: Vault) -> None:
    vault.put(REF, SECRET)
    vault.put("vault:mcp/github", OTHER)
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV} | {KEY_ENV: key}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(home)],
        input=f"error: {SECRET} / {OTHER}",
        capture_output=True, text=True, env=env, timeout=60, check=True,
    )
    lines = proc.stdout.splitlines()
    assert lines == [
        f"error: [redacted:{REF}] / [redacted:vault:mcp/github]",
        f"vault:mcp/github,{REF}",
    ]


def test_two_vaults_on_one_home_see_each_others_writes(home: Path, environ: dict[str, str]) -> None:
    first_redactor, second_redactor = Redactor(), Redactor()
    first = Vault.open(home, environ=environ, redactor=first_redactor)
    second = Vault.open(home, environ=environ, redactor=second_redactor)
    first.put(REF, SECRET)
    second.put("vault:mcp/x", OTHER)  # re-reads the file first: the first write is kept
    assert [e.ref for e in first.list()] == ["vault:mcp/x", REF]
    assert second.resolve(REF) == SECRET
    assert SECRET not in second_redactor.redact(SECRET)
    first.delete(REF)
    second.list()
    assert second_redactor.redact(SECRET) == SECRET


def test_concurrent_puts_from_threads_all_land(vault: Vault, home: Path, environ: dict[str, str]) -> None:
    def put(i: int) -> None:
        vault.put(f"vault:automation/job{i}", f"value-{i:04d}-secret")

    threads = [threading.Thread(target=put, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reopened = Vault.open(home, environ=environ)
    assert len(reopened.list(namespace="automation")) == 16
    assert reopened.resolve("vault:automation/job7") == "value-0007-secret"


# -- the spawn-time resolver -------------------------------------------------------------------


def test_resolver_maps_vault_env_and_literal_values(vault: Vault) -> None:
    vault.put(REF, SECRET)
    resolve = vault.resolver({"HOME_DIR": "/home/x"})
    assert resolve(REF) == SECRET
    assert resolve("env:HOME_DIR") == "/home/x"
    assert resolve("plain value") == "plain value"


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        pytest.param("env:MISSING_VAR", SecretNotFoundError, "env:MISSING_VAR: environment variable MISSING_VAR is not set", id="env-missing"),
        pytest.param("vault:providers/absent", SecretNotFoundError, "no secret is stored at vault:providers/absent", id="vault-missing"),
        pytest.param("vault:nope/x", VaultRefError, "unknown namespace 'nope'", id="vault-malformed"),
        pytest.param("env:1BAD", VaultRefError, "is not a variable name", id="env-malformed"),
    ],
)
def test_resolver_errors_name_the_ref(vault: Vault, value: str, error: type[Exception], message: str) -> None:
    vault.put(REF, SECRET)
    with pytest.raises(error) as info:
        vault.resolver({})(value)
    assert message in str(info.value)
    assert SECRET not in str(info.value)
