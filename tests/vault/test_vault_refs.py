"""The ref grammar: ``vault:<namespace>/<path>`` and ``env:NAME`` (SPEC 1 and 6)."""

from __future__ import annotations

import pytest

from agh_nb.core.vault_refs import (
    MAX_REF_LENGTH,
    NAMESPACES,
    EnvRef,
    VaultRef,
    is_ref,
    parse_ref,
    parse_vault_ref,
    session_ref,
)
from agh_nb.errors import VaultError, VaultRefError

VALID = [
    pytest.param("vault:providers/openai", VaultRef("providers", "openai"), id="provider"),
    pytest.param("vault:mcp/github/token", VaultRef("mcp", "github/token"), id="nested-path"),
    pytest.param("vault:hooks/a.b_c-D9", VaultRef("hooks", "a.b_c-D9"), id="segment-charset"),
    pytest.param("vault:sandbox/...x", VaultRef("sandbox", "...x"), id="dots-inside-segment"),
    pytest.param("vault:sessions/sess_0123abcd/api_key", VaultRef("sessions", "sess_0123abcd/api_key"), id="session"),
    pytest.param("env:OPENAI_API_KEY", EnvRef("OPENAI_API_KEY"), id="env"),
    pytest.param("env:_x1", EnvRef("_x1"), id="env-underscore"),
    pytest.param("vault:bridges/" + "a" * (MAX_REF_LENGTH - len("vault:bridges/")), None, id="exactly-max-length"),
]


@pytest.mark.parametrize(("text", "expected"), VALID)
def test_valid_refs_parse(text: str, expected: VaultRef | EnvRef | None) -> None:
    ref = parse_ref(text)
    if expected is not None:
        assert ref == expected
    assert ref.text == text == str(ref)


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_every_spec_namespace_is_accepted(namespace: str) -> None:
    path = "sess_1/x" if namespace == "sessions" else "x"
    assert parse_ref(f"vault:{namespace}/{path}") == VaultRef(namespace, path)


INVALID = [
    pytest.param("openai", "not a ref", id="no-scheme"),
    pytest.param("", "not a ref", id="empty"),
    pytest.param("vault:", "missing namespace", id="scheme-only"),
    pytest.param("vault:/x", "missing namespace", id="empty-namespace"),
    pytest.param("vault:providers", "missing path", id="no-path"),
    pytest.param("vault:providers/", "missing path", id="empty-path"),
    pytest.param("vault:nope/x", "unknown namespace 'nope' (use one of providers, bridges,", id="unknown-namespace"),
    pytest.param("vault:Providers/x", "unknown namespace 'Providers'", id="namespace-case"),
    pytest.param("vault:mcp/a//b", "path segment 2 is empty", id="empty-segment"),
    pytest.param("vault:mcp/a/", "path segment 2 is empty", id="trailing-slash"),
    pytest.param("vault:mcp/../x", "path segment 1 is '..'", id="dotdot"),
    pytest.param("vault:mcp/a/.", "path segment 2 is '.'", id="dot"),
    pytest.param("vault:mcp/a b", "characters outside [A-Za-z0-9._-]", id="space"),
    pytest.param("vault:mcp/tökén", "characters outside", id="non-ascii"),
    pytest.param("vault:mcp/" + "a" * MAX_REF_LENGTH, f"too long ({MAX_REF_LENGTH + 10} characters, at most {MAX_REF_LENGTH})", id="too-long"),
    pytest.param("vault:sessions/abc/key", "must be a session id starting with 'sess_'", id="session-without-sess-id"),
    pytest.param("vault:sessions/sess_/key", "starting with 'sess_'", id="session-bare-prefix"),
    pytest.param("vault:sessions/sess_abc", "missing name after the session id", id="session-without-name"),
    pytest.param("env:", "missing variable name", id="env-empty"),
    pytest.param("env:1ABC", "is not a variable name", id="env-leading-digit"),
    pytest.param("env:A-B", "is not a variable name", id="env-dash"),
]


@pytest.mark.parametrize(("text", "message"), INVALID)
def test_invalid_refs_name_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(VaultRefError) as info:
        parse_ref(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, VaultError)


def test_unknown_namespace_message_reads_as_specified() -> None:
    with pytest.raises(VaultRefError) as info:
        parse_ref("vault:nope/x")
    assert str(info.value) == (
        "vault ref 'vault:nope/x': unknown namespace 'nope' "
        "(use one of providers, bridges, automation, mcp, hooks, extensions, sandbox, sessions)"
    )


def test_text_that_is_not_a_ref_is_never_echoed() -> None:
    secret = "sk-live-THIS-LOOKS-LIKE-A-KEY"
    with pytest.raises(VaultRefError) as info:
        parse_ref(secret)
    assert secret not in str(info.value)


def test_long_refs_are_shortened_in_messages() -> None:
    with pytest.raises(VaultRefError) as info:
        parse_ref("vault:mcp/" + "z" * 400)
    assert len(str(info.value)) < 200


def test_parse_vault_ref_refuses_env_refs() -> None:
    with pytest.raises(VaultRefError, match="is an env: ref"):
        parse_vault_ref("env:HOME")


def test_session_ref_builds_and_validates() -> None:
    ref = session_ref("sess_00ff", "token")
    assert ref.text == "vault:sessions/sess_00ff/token"
    assert ref.session_id == "sess_00ff"
    assert parse_vault_ref("vault:mcp/x").session_id is None
    with pytest.raises(VaultRefError):
        session_ref("run_1", "token")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("vault:whatever", True, id="vault"),
        pytest.param("env:X", True, id="env"),
        pytest.param("literal", False, id="literal"),
        pytest.param("VAULT:providers/x", False, id="scheme-is-case-sensitive"),
    ],
)
def test_is_ref(text: str, expected: bool) -> None:
    assert is_ref(text) is expected
