"""The session ledger: byte-identical reruns, read-only files, and a hash chain that catches edits."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from agh_nb.core.ledger import canonical_json, digest_path, render_ledger, verify_ledger, write_ledger
from agh_nb.events import Event

GOLDEN = Path(__file__).parent / "golden"

# sha256 of the ledger of events_completed.json: pins the line format (a wire format). If this
# changes, every existing ledger stops re-rendering identically -- change it only on purpose.
COMPLETED_DIGEST = "37d57d5eb807dc37b79e757b9a35a4e7863572e59b90674ef92e7b3d76d073ca"


def load_events(name: str) -> list[Event]:
    doc = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    return [
        Event(**{**row, "timestamp": datetime.fromisoformat(row["timestamp"].replace("Z", "+00:00"))})
        for row in doc["events"]
    ]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def events() -> list[Event]:
    return load_events("events_completed")


@pytest.fixture
def ledger(tmp_path: Path, events: list[Event]) -> Path:
    path = tmp_path / "ws_x" / "sess_x" / "ledger.jsonl"
    write_ledger(path, events)
    return path


# -- format ------------------------------------------------------------------------------------


def test_render_is_deterministic_and_order_insensitive(events: list[Event]) -> None:
    first = render_ledger(events)
    assert render_ledger(events) == first
    assert render_ledger(list(reversed(events))) == first
    assert first[1] == hashlib.sha256(first[0]).hexdigest()


def test_render_matches_the_pinned_digest(events: list[Event]) -> None:
    assert render_ledger(events)[1] == COMPLETED_DIGEST


def test_each_line_is_the_canonical_row_plus_a_chained_hash(events: list[Event]) -> None:
    data, _ = render_ledger(events)
    lines = data.decode("utf-8").split("\n")
    assert lines[-1] == "" and len(lines) - 1 == len(events)
    prev = None
    for line, event in zip(lines, events, strict=False):
        row = json.loads(line)
        assert line == json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        claimed = row.pop("hash")
        assert row.pop("prev_hash") == prev
        assert row == event.to_dict()
        row["prev_hash"] = prev
        assert claimed == hashlib.sha256(canonical_json(row).encode("utf-8")).hexdigest()
        prev = claimed
    assert "“hello there”" in data.decode("utf-8")  # UTF-8, not \u escapes


def test_lines_stay_canonical_when_values_look_like_the_content_key() -> None:
    # A row's content is encoded once and put in its place by text replacement: values that
    # quote the key, hold the marker, or nest a "content" of their own must not move it.
    def dumps(value: object) -> str:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    contents: list[object] = [
        {"content": '"content":x', "é": "naïve\u2028x\x00y", "big": 2**70, "f": 1e-05, "g": 1e16},
        {"nested": {"content": {"content": 1}}},
        "\x00agh-ledger-content\x00",
        [1, "two"],
        None,
        {},
    ]
    events = [
        Event(id=f"evt_{i}", session_id='s"content":"', sequence=i + 1, turn_id=None, type="system",
              agent_name='"content":"\x00agh-ledger-content\x00"', workspace_id="ws",
              workspace_path='/w/"content":', content=content, timestamp=datetime(2026, 1, 2, 3, 4, 5))
        for i, content in enumerate(contents)
    ]
    data, _ = render_ledger(events)
    prev = None
    for line, event in zip(data.decode("utf-8").split("\n"), events, strict=False):
        row = json.loads(line)
        assert line == dumps(row)
        claimed = row.pop("hash")
        assert claimed == hashlib.sha256(dumps(row).encode("utf-8")).hexdigest()
        assert row.pop("prev_hash") == prev
        assert row == event.to_dict()
        prev = claimed


def test_empty_ledger() -> None:
    assert render_ledger([]) == (b"", hashlib.sha256(b"").hexdigest())


# -- writing -----------------------------------------------------------------------------------


def test_write_is_read_only_and_records_the_digest(ledger: Path, events: list[Event]) -> None:
    data, digest = render_ledger(events)
    assert ledger.read_bytes() == data
    assert digest_path(ledger).name == "ledger.sha256"
    assert digest_path(ledger).read_text() == f"{digest}  ledger.jsonl\n"
    assert mode(ledger) == 0o400 and mode(digest_path(ledger)) == 0o400
    assert verify_ledger(ledger)
    assert not list(ledger.parent.glob(".*.tmp"))


def test_rewrite_of_the_same_events_touches_nothing(ledger: Path, events: list[Event]) -> None:
    before = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (ledger, digest_path(ledger))]
    assert write_ledger(ledger, events) == render_ledger(events)[1]
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (ledger, digest_path(ledger))] == before


def test_rewrite_with_more_events_replaces_the_file(ledger: Path, events: list[Event]) -> None:
    extra = events[-1].replace(id="evt_more", sequence=events[-1].sequence + 1)
    more = [*events, extra]
    digest = write_ledger(ledger, more)
    assert digest == render_ledger(more)[1] != render_ledger(events)[1]
    assert ledger.read_bytes() == render_ledger(more)[0]
    assert mode(ledger) == 0o400 and mode(digest_path(ledger)) == 0o400
    assert verify_ledger(ledger)


def test_rewrite_restores_a_loosened_mode_without_rewriting(ledger: Path, events: list[Event]) -> None:
    os.chmod(ledger, 0o644)
    inode = ledger.stat().st_ino
    write_ledger(ledger, events)
    assert mode(ledger) == 0o400 and ledger.stat().st_ino == inode


# -- verification ------------------------------------------------------------------------------


def edit_text(lines: list[str]) -> list[str]:
    assert "You said" in lines[4]
    lines[4] = lines[4].replace("You said", "We said")
    return lines


def edit_and_rehash_line(lines: list[str]) -> list[str]:
    row = json.loads(lines[3])
    row["content"]["text"] = "forged"
    row.pop("hash")
    row["hash"] = hashlib.sha256(canonical_json(row).encode("utf-8")).hexdigest()
    lines[3] = canonical_json(row)
    return lines


def rehash_whole_chain(lines: list[str]) -> list[str]:
    # A forger who recomputes every hash still cannot match the recorded digest.
    prev = None
    out = []
    for index, line in enumerate(lines):
        row = json.loads(line)
        row.pop("hash")
        if index == 3:
            row["content"]["text"] = "forged"
        row["prev_hash"] = prev
        prev = row["hash"] = hashlib.sha256(canonical_json(row).encode("utf-8")).hexdigest()
        out.append(canonical_json(row))
    return out


TAMPER: list[object] = [
    pytest.param(edit_text, id="edit-a-line"),
    pytest.param(edit_and_rehash_line, id="edit-and-rehash-one-line"),
    pytest.param(rehash_whole_chain, id="rehash-the-whole-chain"),
    pytest.param(lambda lines: lines[:2] + lines[3:], id="delete-a-line"),
    pytest.param(lambda lines: [lines[1], lines[0], *lines[2:]], id="swap-two-lines"),
    pytest.param(lambda lines: [*lines, lines[-1]], id="duplicate-the-last-line"),
    pytest.param(lambda lines: [lines[0].replace('":', '": ', 1), *lines[1:]], id="non-canonical-spacing"),
]


@pytest.mark.parametrize("tamper", TAMPER)
def test_tampering_breaks_verification(ledger: Path, tamper: Callable[[list[str]], list[str]]) -> None:
    lines = ledger.read_text(encoding="utf-8").split("\n")[:-1]
    os.chmod(ledger, 0o644)
    ledger.write_text("\n".join(tamper(lines)) + "\n", encoding="utf-8")
    assert not verify_ledger(ledger)


@pytest.mark.parametrize("tamper", TAMPER)
def test_tampering_is_caught_by_the_chain_even_with_a_matching_digest(
    ledger: Path, tamper: Callable[[list[str]], list[str]]
) -> None:
    lines = ledger.read_text(encoding="utf-8").split("\n")[:-1]
    forged = ("\n".join(tamper(lines)) + "\n").encode("utf-8")
    os.chmod(ledger, 0o644)
    ledger.write_bytes(forged)
    os.chmod(digest_path(ledger), 0o644)
    digest_path(ledger).write_text(f"{hashlib.sha256(forged).hexdigest()}  ledger.jsonl\n")
    # Only a full re-chain with a new digest passes: the ledger proves integrity against the
    # digest recorded elsewhere (the session's metadata), not against someone who rewrites both.
    assert verify_ledger(ledger) is (tamper is rehash_whole_chain)


def wrong_digest(path: Path) -> None:
    os.chmod(digest_path(path), 0o644)
    digest_path(path).write_text("0" * 64)


def drop_final_newline(path: Path) -> None:
    os.chmod(path, 0o644)
    path.write_bytes(path.read_bytes()[:-1])


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: digest_path(p).unlink(), id="digest-missing"),
        pytest.param(lambda p: p.unlink(), id="ledger-missing"),
        pytest.param(wrong_digest, id="wrong-digest"),
        pytest.param(drop_final_newline, id="no-final-newline"),
    ],
)
def test_missing_or_damaged_files_fail_verification(ledger: Path, damage: Callable[[Path], object]) -> None:
    damage(ledger)
    assert not verify_ledger(ledger)


def test_line_separators_inside_strings_survive(tmp_path: Path, events: list[Event]) -> None:
    # Canonical JSON keeps U+2028/U+2029/U+0085 unescaped; the ledger splits on "\n" only.
    odd = events[0].replace(content={**events[0].content, "text": "a\u2028b\u2029c\x85d"})
    path = tmp_path / "ledger.jsonl"
    write_ledger(path, [odd, *events[1:]])
    assert "\u2028" in path.read_text(encoding="utf-8")
    assert verify_ledger(path)
