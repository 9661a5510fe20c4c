"""read_text_file and write_text_file on real files: line windows, byte caps, decoding, atomic
replacement, modes and parent directories."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agh_nb.adapters.fs_ops import read_text_file, write_text_file

LINES = "one\ntwo\nthree\nfour\nfive\n"


@pytest.fixture
def five(tmp_path: Path) -> Path:
    path = tmp_path / "five.txt"
    path.write_bytes(LINES.encode())
    return path


@pytest.mark.parametrize(
    ("line", "limit", "expected"),
    [
        pytest.param(None, None, LINES, id="whole-file"),
        pytest.param(1, None, LINES, id="from-line-1"),
        pytest.param(0, None, LINES, id="line-0-means-start"),
        pytest.param(2, None, "two\nthree\nfour\nfive\n", id="from-line-2"),
        pytest.param(2, 2, "two\nthree\n", id="window"),
        pytest.param(None, 1, "one\n", id="limit-only"),
        pytest.param(5, 10, "five\n", id="limit-past-end"),
        pytest.param(6, None, "", id="start-just-past-end"),
        pytest.param(99, 3, "", id="start-far-past-end"),
        pytest.param(3, 0, "", id="limit-zero"),
    ],
)
def test_line_windows(five: Path, line: int | None, limit: int | None, expected: str) -> None:
    assert read_text_file(five.parent, five, line=line, limit=limit) == expected


def test_crlf_endings_are_kept_and_counted_as_lines(tmp_path: Path) -> None:
    path = tmp_path / "crlf.txt"
    path.write_bytes(b"a\r\nb\r\nc")
    assert read_text_file(tmp_path, path, line=2, limit=None) == "b\r\nc"
    assert read_text_file(tmp_path, path, line=None, limit=None) == "a\r\nb\r\nc"


def test_last_line_without_newline(tmp_path: Path) -> None:
    path = tmp_path / "tail.txt"
    path.write_bytes(b"x\ny")
    assert read_text_file(tmp_path, path, line=2, limit=1) == "y"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"line": -1, "limit": None}, "line must be >= 0, got -1", id="negative-line"),
        pytest.param({"line": None, "limit": -5}, "limit must be >= 0, got -5", id="negative-limit"),
        pytest.param({"line": "2", "limit": None}, "line must be an integer", id="string-line"),
        pytest.param({"line": True, "limit": None}, "line must be an integer", id="bool-line"),
        pytest.param({"line": None, "limit": 1.5}, "limit must be an integer", id="float-limit"),
        pytest.param({"line": None, "limit": None, "max_bytes": -1}, "max_bytes must be >= 0", id="negative-max-bytes"),
    ],
)
def test_invalid_arguments_raise_value_error(five: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_text_file(five.parent, five, **kwargs)  # type: ignore[arg-type]


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_text_file(tmp_path, tmp_path / "nope.txt", line=None, limit=None)


def test_directory_is_not_a_text_file(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        read_text_file(tmp_path, tmp_path, line=None, limit=None)


def test_invalid_utf8_is_replaced_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("café\n".encode("latin-1") + "ok é\n".encode())
    assert read_text_file(tmp_path, path, line=None, limit=None) == "caf\ufffd\nok é\n"


@pytest.mark.parametrize(
    ("line", "limit"),
    [pytest.param(None, None, id="whole-file"), pytest.param(2, None, id="window-to-end")],
)
def test_more_than_max_bytes_is_refused(tmp_path: Path, line: int | None, limit: int | None) -> None:
    path = tmp_path / "big.txt"
    path.write_bytes(b"header\n" + b"x" * 200 + b"\n")
    with pytest.raises(ValueError, match="more than 100 bytes.*fewer lines"):
        read_text_file(tmp_path, path, line=line, limit=limit, max_bytes=100)


def test_small_window_of_a_big_file_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    path.write_bytes(b"".join(b"line %d\n" % i for i in range(1, 20001)))
    assert read_text_file(tmp_path, path, line=10000, limit=2, max_bytes=100) == "line 10000\nline 10001\n"


def test_one_huge_line_can_be_skipped(tmp_path: Path) -> None:
    path = tmp_path / "minified.js"
    path.write_bytes(b"y" * (3 * 1024 * 1024) + b"\nsecond\n")
    assert read_text_file(tmp_path, path, line=2, limit=None, max_bytes=1024) == "second\n"


def test_exactly_max_bytes_is_allowed(tmp_path: Path) -> None:
    path = tmp_path / "exact.txt"
    path.write_bytes(b"a" * 10)
    assert read_text_file(tmp_path, path, line=None, limit=None, max_bytes=10) == "a" * 10
    assert read_text_file(tmp_path, path, line=1, limit=1, max_bytes=10) == "a" * 10


# -- write ------------------------------------------------------------------------------------


def test_write_creates_file_and_missing_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "new.txt"
    write_text_file(tmp_path, target, "héllo\r\nworld")
    assert target.read_bytes() == "héllo\r\nworld".encode()


def test_write_replaces_content_and_keeps_mode(tmp_path: Path) -> None:
    target = tmp_path / "script.sh"
    target.write_text("old content that is longer\n")
    os.chmod(target, 0o751)
    write_text_file(tmp_path, target, "new\n")
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o751


def test_write_new_file_follows_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_text_file(tmp_path, tmp_path / "fresh.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "fresh.txt").stat().st_mode) == 0o640


def test_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    write_text_file(tmp_path, tmp_path / "f.txt", "1")
    write_text_file(tmp_path, tmp_path / "f.txt", "2")
    assert os.listdir(tmp_path) == ["f.txt"]


def test_write_replaces_atomically_not_in_place(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_text("old")
    before = target.stat().st_ino
    with open(target, "rb") as reader:  # a reader holding the old file keeps seeing it whole
        write_text_file(tmp_path, target, "new")
        assert reader.read() == b"old"
    assert target.stat().st_ino != before
    assert target.read_text() == "new"


def test_write_through_a_symlink_keeps_the_link(tmp_path: Path) -> None:
    real = tmp_path / "real.txt"
    real.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    write_text_file(tmp_path, link, "new")
    assert link.is_symlink()
    assert real.read_text() == "new"


def test_write_refuses_lone_surrogates_before_touching_disk(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "bad.txt"
    with pytest.raises(UnicodeEncodeError):
        write_text_file(tmp_path, target, "a\ud800b")
    assert not (tmp_path / "sub").exists()


def test_write_failure_removes_the_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "dir-in-the-way"
    (target / "child").mkdir(parents=True)  # os.replace cannot put a file over a non-empty dir
    with pytest.raises(OSError):
        write_text_file(tmp_path, target, "x")
    assert sorted(os.listdir(tmp_path)) == ["dir-in-the-way"]


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    target = tmp_path / "round.txt"
    text = "α\nβ\nγ\n"
    write_text_file(tmp_path, target, text)
    assert read_text_file(tmp_path, target, line=2, limit=1) == "β\n"
