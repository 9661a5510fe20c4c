"""Crash bundles: schema, owner-only files, bounded size, and secrets redacted before anything is cut."""

from __future__ import annotations

import json
import os
import re
import stat
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from agh_nb.core.crash_bundle import (
    CRASH_BUNDLE_SCHEMA,
    MIN_MAX_BYTES,
    STDERR_TAIL_BYTES,
    write_crash_bundle,
)
from agh_nb.core.ports import ExitInfo
from agh_nb.core.record import SessionRecord
from agh_nb.core.redaction import Redactor

GOLDEN = Path(__file__).parent / "golden"
NOW = datetime(2026, 11, 24, 0, 30, 4, 370814, tzinfo=timezone.utc)
SECRET = "sk-live-9f8e7d6c5b4a"
LABEL = "vault:providers/openai"
STDERR = "demo: ERROR agh_nb.agents.demo: crashing on purpose (exit code 3)\n"


def crashed_record() -> SessionRecord:
    doc = json.loads((GOLDEN / "events_agent_crash.json").read_text(encoding="utf-8"))
    return SessionRecord.from_dict(doc["record"])


@pytest.fixture
def redactor() -> Redactor:
    redactor = Redactor()
    assert redactor.register(SECRET, LABEL)
    return redactor


def write(directory: Path, redactor: Redactor, **overrides: Any) -> Path:
    kwargs: dict[str, Any] = {
        "record": crashed_record(),
        "failure_kind": "process_exit",
        "summary": "agent 'demo' (pid 30983) exited with exit code 3",
        "exit_info": ExitInfo(pid=30983, returncode=3, signal=None, stderr_tail=STDERR),
        "stderr_tail": STDERR,
        "error_text": "agent 'demo' (pid 30983) exited with exit code 3",
        "redact": redactor.redact,
        "now": NOW,
    }
    kwargs.update(overrides)
    return write_crash_bundle(directory, **kwargs)


def test_bundle_schema_and_identity(tmp_path: Path, redactor: Redactor) -> None:
    path = write(tmp_path / "logs" / "crash-bundles", redactor)
    bundle = json.loads(path.read_text(encoding="utf-8"))
    assert bundle == {
        "schema": CRASH_BUNDLE_SCHEMA,
        "created_at": "2026-11-24T00:30:04.370814Z",
        "session": {
            "id": "sess_81a4ed31ee5990af",
            "name": None,
            "type": "user",
            "agent_name": "demo",
            "state": "stopped",
            "workspace_id": "ws_c1128514da7dce2b",
            "workspace_path": "/tmp/tmpyuid72gr",
            "acp_session_id": "demo-a4598f4a87284cd293008131609e8efb",
        },
        "provider": {
            "agent_name": "demo",
            "agent_info": {"name": "agh-demo", "title": "AGH demo agent", "version": "0.1.0"},
            "auth_methods": [],
        },
        "failure": {"kind": "process_exit", "summary": "agent 'demo' (pid 30983) exited with exit code 3", "code": None},
        "process": {"pid": 30983, "exit_code": 3, "signal": None},
        "error_text": "agent 'demo' (pid 30983) exited with exit code 3",
        "stderr_tail": STDERR,
        "truncated": {"stderr_tail": False, "error_text": False, "agent_info": False},
    }
    assert path.name == "sess_81a4ed31ee5990af-20261124T003004.370814Z-process_exit.json"


def test_bundle_is_owner_only(tmp_path: Path, redactor: Redactor) -> None:
    old = os.umask(0o022)
    try:
        path = write(tmp_path / "logs" / "crash-bundles", redactor)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_bundles_never_overwrite_each_other(tmp_path: Path, redactor: Redactor) -> None:
    first = write(tmp_path, redactor)
    second = write(tmp_path, redactor, error_text="second")
    assert first != second and second.name.endswith("-process_exit-1.json")
    assert json.loads(first.read_text())["error_text"] != "second"
    assert not [p for p in tmp_path.iterdir() if p not in (first, second)]


def test_unknown_process_and_stderr_from_exit_info(tmp_path: Path, redactor: Redactor) -> None:
    bundle = json.loads(write(tmp_path, redactor, exit_info=None, stderr_tail="", error_text=None).read_text())
    assert bundle["process"] == {"pid": None, "exit_code": None, "signal": None}
    assert bundle["stderr_tail"] == "" and bundle["error_text"] is None
    info = ExitInfo(pid=7, returncode=None, signal=9, stderr_tail="killed\n")
    bundle = json.loads(write(tmp_path, redactor, exit_info=info, stderr_tail="").read_text())
    assert bundle["process"] == {"pid": 7, "exit_code": None, "signal": 9}
    assert bundle["stderr_tail"] == "killed\n"


def test_kind_is_made_safe_for_a_file_name(tmp_path: Path, redactor: Redactor) -> None:
    path = write(tmp_path, redactor, failure_kind="../weird kind")
    assert path.parent == tmp_path and re.fullmatch(r"sess_\w+-\d{8}T\d{6}\.\d{6}Z-weird_kind\.json", path.name)


# -- redaction ---------------------------------------------------------------------------------

REDACTED = f"[redacted:{LABEL}]"


@pytest.mark.parametrize(
    "field",
    ["stderr_tail", "error_text", "summary", "workspace_path", "agent_info"],
)
def test_registered_secret_is_redacted_everywhere(tmp_path: Path, redactor: Redactor, field: str) -> None:
    text = f"token={SECRET} rejected"
    record = crashed_record()
    overrides: dict[str, Any] = {}
    if field == "workspace_path":
        overrides["record"] = record.replace(workspace_path=f"/home/{SECRET}/ws")
    elif field == "agent_info":
        overrides["record"] = record.replace(acp_caps={"agent_info": {"name": "x", "build": SECRET}})
    else:
        overrides[field] = text
    raw = write(tmp_path, redactor, **overrides).read_text(encoding="utf-8")
    assert SECRET not in raw
    assert REDACTED in raw


def test_secret_cut_by_the_tail_leaves_no_fragment(tmp_path: Path, redactor: Redactor) -> None:
    # Cutting first would keep "…9f8e7d6c5b4a"'s end; redacting first leaves no part of it.
    stderr = "x" * 1000 + SECRET + "y" * (STDERR_TAIL_BYTES - 8)
    raw = write(tmp_path, redactor, stderr_tail=stderr).read_text(encoding="utf-8")
    for size in range(4, len(SECRET)):
        assert SECRET[-size:] not in raw
    bundle = json.loads(raw)
    assert bundle["truncated"]["stderr_tail"] is True
    assert len(bundle["stderr_tail"].encode()) <= STDERR_TAIL_BYTES


# -- bounds ------------------------------------------------------------------------------------


def test_stderr_keeps_its_last_bytes(tmp_path: Path, redactor: Redactor) -> None:
    lines = "".join(f"line {i:06d}\n" for i in range(20_000))
    bundle = json.loads(write(tmp_path, redactor, stderr_tail=lines).read_text())
    tail = bundle["stderr_tail"]
    assert len(tail.encode()) <= STDERR_TAIL_BYTES and tail.endswith("line 019999\n")
    assert lines.endswith(tail)


@pytest.mark.parametrize("max_bytes", [MIN_MAX_BYTES, 8 * 1024, 20 * 1024, 64 * 1024], ids=lambda n: f"max-{n}")
def test_file_is_bounded(tmp_path: Path, redactor: Redactor, max_bytes: int) -> None:
    stderr = "é\t\x01" * 200_000 + "END-OF-STDERR\n"  # multibyte and escaped characters
    error = "E" * 50_000
    path = write(tmp_path, redactor, stderr_tail=stderr, error_text=error, max_bytes=max_bytes)
    assert path.stat().st_size <= max_bytes
    bundle = json.loads(path.read_text(encoding="utf-8"))
    assert bundle["schema"] == CRASH_BUNDLE_SCHEMA and bundle["truncated"]["stderr_tail"]
    assert bundle["failure"]["kind"] == "process_exit"
    if bundle["stderr_tail"]:
        assert bundle["stderr_tail"].endswith("END-OF-STDERR\n")
    if max_bytes >= 20 * 1024:
        assert bundle["stderr_tail"] and bundle["error_text"].startswith("EEE")


def test_stderr_shrinks_before_the_error_text(tmp_path: Path, redactor: Redactor) -> None:
    path = write(tmp_path, redactor, stderr_tail="s" * 100_000, error_text="e" * 4000, max_bytes=8 * 1024)
    bundle = json.loads(path.read_text())
    assert bundle["error_text"] == "e" * 4000
    assert 0 < len(bundle["stderr_tail"]) < 8 * 1024
    assert bundle["truncated"] == {"stderr_tail": True, "error_text": False, "agent_info": False}


def test_oversized_identity_is_cut_rather_than_breaking_the_bound(tmp_path: Path, redactor: Redactor) -> None:
    record = crashed_record().replace(
        workspace_path="/" + "p" * 20_000, acp_caps={"agent_info": {"blob": "b" * 20_000}}
    )
    path = write(tmp_path, redactor, record=record, summary="s" * 5000, max_bytes=MIN_MAX_BYTES)
    assert path.stat().st_size <= MIN_MAX_BYTES
    bundle = json.loads(path.read_text())
    assert bundle["session"]["id"] == record.id and bundle["truncated"]["agent_info"]


def test_rejects_a_bound_too_small_for_identity(tmp_path: Path, redactor: Redactor) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        write(tmp_path, redactor, max_bytes=100)
    assert not tmp_path.exists() or not list(tmp_path.iterdir())
