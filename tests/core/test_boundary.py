"""resolve_in_workspace on real directories and symlinks: what is inside, what escapes, and why."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agh_nb.core.boundary import resolve_in_workspace
from agh_nb.errors import PathOutsideWorkspaceError


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """tmp/ws (the workspace, with files, dirs and symlinks) next to tmp/outside (a secret)."""
    tmp_path = tmp_path.resolve()  # where the temp dir itself sits behind a symlink (macOS /var)
    ws = tmp_path / "ws"
    outside = tmp_path / "outside"
    (ws / "src" / "pkg").mkdir(parents=True)
    (ws / "src" / "main.py").write_text("print()\n")
    outside.mkdir()
    (outside / "secret.txt").write_text("s3cret\n")
    (ws / "link_in_file").symlink_to(ws / "src" / "main.py")
    (ws / "link_in_dir").symlink_to(ws / "src")
    (ws / "link_relative_in").symlink_to("src/pkg")
    (ws / "link_out_file").symlink_to(outside / "secret.txt")
    (ws / "link_out_dir").symlink_to(outside)
    (ws / "link_out_relative").symlink_to("../outside")
    (ws / "dangling_out").symlink_to(outside / "not-yet")
    (ws / "loop_a").symlink_to(ws / "loop_b")
    (ws / "loop_b").symlink_to(ws / "loop_a")
    (tmp_path / "ws_link").symlink_to(ws)
    (tmp_path / "ws2").mkdir()
    return {"tmp": tmp_path, "ws": ws, "outside": outside}


INSIDE = [
    pytest.param("src/main.py", "src/main.py", id="relative-existing-file"),
    pytest.param("src", "src", id="relative-existing-dir"),
    pytest.param("./src/./main.py", "src/main.py", id="dot-components"),
    pytest.param("src/pkg/../main.py", "src/main.py", id="dotdot-staying-inside"),
    pytest.param("new/deeper/file.txt", "new/deeper/file.txt", id="missing-nested-path"),
    pytest.param("src/missing/../main.py", "src/main.py", id="dotdot-after-missing-component"),
    pytest.param("a/b/../../src/x", "src/x", id="missing-chain-back-to-root"),
    pytest.param("link_in_file", "src/main.py", id="symlink-file-inside"),
    pytest.param("link_in_dir/main.py", "src/main.py", id="symlink-dir-inside"),
    pytest.param("link_relative_in/new.py", "src/pkg/new.py", id="relative-symlink-inside-missing-child"),
    pytest.param("link_in_dir/..", "", id="dotdot-through-symlink-is-targets-parent"),
    pytest.param(".", "", id="root-itself-dot"),
    pytest.param("src/..", "", id="root-itself-via-dotdot"),
    pytest.param("src/main.py/x", "src/main.py/x", id="below-a-regular-file"),
]


@pytest.mark.parametrize(("given", "expected"), INSIDE)
def test_inside_paths_resolve_under_the_root(tree: dict[str, Path], given: str, expected: str) -> None:
    ws = tree["ws"]
    want = ws / expected if expected else ws
    assert resolve_in_workspace(ws, given) == want


def test_absolute_path_inside_is_accepted(tree: dict[str, Path]) -> None:
    ws = tree["ws"]
    assert resolve_in_workspace(ws, str(ws / "src" / "main.py")) == ws / "src" / "main.py"
    assert resolve_in_workspace(ws, ws / "brand-new.txt") == ws / "brand-new.txt"


def test_root_itself_counts_as_inside(tree: dict[str, Path]) -> None:
    ws = tree["ws"]
    assert resolve_in_workspace(ws, str(ws)) == ws
    assert resolve_in_workspace(ws, str(ws) + "/") == ws


OUTSIDE = [
    pytest.param("../outside/secret.txt", "outside/secret.txt", id="dotdot-chain-escaping"),
    pytest.param("../" * 40 + "etc/passwd", "/etc/passwd", id="dotdot-past-filesystem-root"),
    pytest.param("src/../../outside", "outside", id="dotdot-escape-via-existing-dir"),
    pytest.param("a/../../x", "x", id="missing-then-dotdot-escape"),
    pytest.param("a/b/../../../x", "x", id="deeper-missing-then-dotdot-escape"),
    pytest.param("link_out_file", "outside/secret.txt", id="symlink-file-pointing-outside"),
    pytest.param("link_out_dir", "outside", id="symlink-dir-pointing-outside"),
    pytest.param("link_out_dir/secret.txt", "outside/secret.txt", id="file-below-symlink-dir-outside"),
    pytest.param("link_out_relative/secret.txt", "outside/secret.txt", id="relative-symlink-pointing-outside"),
    pytest.param("link_out_dir/new/file.txt", "outside/new/file.txt", id="missing-below-symlink-dir-outside"),
    pytest.param("dangling_out", "outside/not-yet", id="dangling-symlink-pointing-outside"),
    # The naive "first existing ancestor + normalised tail" would call this ws/link_out_dir/x:
    # creating `missing` would then make the OS follow link_out_dir.
    pytest.param("missing/../link_out_dir/x", "outside/x", id="symlink-reached-after-missing-dotdot"),
    pytest.param("link_in_dir/../../outside", "outside", id="dotdot-from-symlink-target"),
    pytest.param("../ws2/file", "ws2/file", id="sibling-sharing-the-root-prefix"),
]


@pytest.mark.parametrize(("given", "escapes_to"), OUTSIDE)
def test_escaping_paths_are_refused(tree: dict[str, Path], given: str, escapes_to: str) -> None:
    ws = tree["ws"]
    with pytest.raises(PathOutsideWorkspaceError) as info:
        resolve_in_workspace(ws, given)
    want = Path(escapes_to) if escapes_to.startswith("/") else tree["tmp"] / escapes_to
    err = info.value
    assert err.fields == {"path": given, "resolved": str(want), "root": str(ws)}
    assert str(err) == f"path '{given}' resolves to '{want}', outside the workspace '{ws}'"
    assert "\n" not in str(err)


@pytest.mark.parametrize(
    "given",
    [pytest.param("/etc/passwd", id="system-file"), pytest.param("/", id="filesystem-root")],
)
def test_absolute_paths_outside_are_refused(tree: dict[str, Path], given: str) -> None:
    with pytest.raises(PathOutsideWorkspaceError, match="outside the workspace"):
        resolve_in_workspace(tree["ws"], given)


def test_absolute_path_into_a_sibling_is_refused(tree: dict[str, Path]) -> None:
    with pytest.raises(PathOutsideWorkspaceError, match="outside the workspace"):
        resolve_in_workspace(tree["ws"], tree["outside"] / "secret.txt")


def test_workspace_given_through_a_symlink_accepts_its_own_files(tree: dict[str, Path]) -> None:
    ws_link = tree["tmp"] / "ws_link"
    real = tree["ws"]
    assert resolve_in_workspace(ws_link, "src/main.py") == real / "src" / "main.py"
    assert resolve_in_workspace(ws_link, ws_link / "src" / "main.py") == real / "src" / "main.py"
    assert resolve_in_workspace(ws_link, real / "new.txt") == real / "new.txt"
    assert resolve_in_workspace(ws_link, ".") == real
    with pytest.raises(PathOutsideWorkspaceError, match=f"outside the workspace '{real}'"):
        resolve_in_workspace(ws_link, "link_out_file")


def test_relative_root_is_made_absolute(tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree["tmp"])
    assert resolve_in_workspace(Path("ws"), "src/main.py") == tree["ws"] / "src" / "main.py"


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param("src/\x00main.py", "nul", id="nul-byte"),
        pytest.param("loop_a", "symlink-loop", id="symlink-loop"),
        pytest.param("loop_a/x", "symlink-loop", id="below-symlink-loop"),
    ],
)
def test_invalid_paths_are_refused_clearly(tree: dict[str, Path], given: str, reason: str) -> None:
    with pytest.raises(PathOutsideWorkspaceError, match="^invalid path") as info:
        resolve_in_workspace(tree["ws"], given)
    assert info.value.fields["reason"] == reason
    assert "\n" not in str(info.value)


def test_nothing_is_created_while_resolving(tree: dict[str, Path]) -> None:
    before = sorted(os.listdir(tree["ws"]))
    resolve_in_workspace(tree["ws"], "new/deeper/file.txt")
    assert sorted(os.listdir(tree["ws"])) == before
