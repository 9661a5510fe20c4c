"""Race-free file operations (issue 11): a directory swapped for a symlink to an outside directory,
in a loop, while reads and writes run through the same check-then-open path the ACP client
methods use. Zero escapes: nothing read from outside, nothing written outside. Also the errors a
walk can meet (permission denied, loops, FIFOs) come out as boundary refusals or plain OS errors."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agh_nb.adapters.fs_ops import read_text_file, write_text_file
from agh_nb.core.boundary import open_parent_in_workspace, resolve_in_workspace
from agh_nb.errors import PathOutsideWorkspaceError
from tests.race import Swapper

SECRET = "outside-secret-7d1e"
RACE_SECONDS = 1.5


_LIBC = ctypes.CDLL(None, use_errno=True)

def outside_snapshot(outside: Path) -> dict[str, bytes]:
    return {str(p.relative_to(outside)): p.read_bytes() for p in sorted(outside.rglob("*")) if p.is_file()}


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    tmp = tmp_path.resolve()
    ws, outside = tmp / "ws", tmp / "outside"
    (ws / "sub").mkdir(parents=True)
    (ws / "sub" / "secret.txt").write_text("inside copy\n")
    (ws / "d1" / "d2").mkdir(parents=True)
    (ws / "d1" / "d2" / "secret.txt").write_text("inside copy\n")
    (outside / "d2").mkdir(parents=True)
    (outside / "secret.txt").write_text(SECRET)
    (outside / "d2" / "secret.txt").write_text(SECRET)
    return {"ws": ws, "outside": outside}


@pytest.mark.parametrize(
    ("swapped", "target"),
    [
        pytest.param("sub", "sub", id="the-file-s-own-directory"),
        pytest.param("d1", "d1/d2", id="a-directory-two-levels-up"),
    ],
)
def test_a_symlink_swap_race_never_escapes(layout: dict[str, Path], swapped: str, target: str) -> None:
    ws, outside = layout["ws"], layout["outside"]
    before = outside_snapshot(outside)
    swapper = Swapper(ws, swapped, outside)
    counts = {"read": 0, "wrote": 0, "refused": 0}
    escapes: list[str] = []
    # At least RACE_SECONDS, and on until the race showed both sides (a loaded machine is slow).
    deadline, give_up = time.monotonic() + RACE_SECONDS, time.monotonic() + 60
    i = 0
    try:
        while time.monotonic() < deadline or not (counts["refused"] and counts["read"] and counts["wrote"]):
            assert time.monotonic() < give_up, counts
            i += 1
            for relative, op in ((f"{target}/secret.txt", "read"), (f"{target}/new-{i}.txt", "write")):
                try:
                    # What the ACP client methods do: check, then open relative to the root.
                    resolved = resolve_in_workspace(ws, relative)
                    if op == "read":
                        text = read_text_file(ws, resolved, line=None, limit=None)
                        if SECRET in text:
                            escapes.append(f"read {relative}")
                        counts["read"] += 1
                    else:
                        write_text_file(ws, resolved, f"written {i}")
                        counts["wrote"] += 1
                except PathOutsideWorkspaceError:
                    counts["refused"] += 1
    finally:
        swapper.finish()
    assert escapes == []
    assert outside_snapshot(outside) == before, "nothing may be written outside the workspace"
    assert swapper.swaps > 0 and all(counts.values()), (swapper.swaps, counts)


def test_a_parent_swapped_after_the_walk_is_not_followed(layout: dict[str, Path]) -> None:
    # Deterministic form of the race: the parent directory is opened, then swapped for a symlink
    # to outside; the write lands in the directory that was opened (still the workspace's).
    ws, outside = layout["ws"], layout["outside"]
    directory, name, resolved = open_parent_in_workspace(ws, "sub/late.txt", create=True)
    try:
        os.rename(ws / "sub", ws / "sub.parked")
        os.symlink(outside, ws / "sub")
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=directory)
        os.close(fd)
    finally:
        os.close(directory)
    assert resolved == ws / "sub" / "late.txt"
    assert (ws / "sub.parked" / "late.txt").exists() and not (outside / "late.txt").exists()
    # And the next walk meets the symlink and refuses.
    with pytest.raises(PathOutsideWorkspaceError, match="outside the workspace"):
        write_text_file(ws, ws / "sub" / "late.txt", "again")
    with pytest.raises(PathOutsideWorkspaceError):
        read_text_file(ws, ws / "sub" / "secret.txt", line=None, limit=None)


def test_a_fifo_is_refused_without_blocking(layout: dict[str, Path]) -> None:
    ws = layout["ws"]
    os.mkfifo(ws / "pipe")
    with pytest.raises(OSError) as caught:
        read_text_file(ws, "pipe", line=None, limit=None)
    assert caught.value.errno == errno.EINVAL and "regular file" in str(caught.value)


def test_symlinks_inside_are_followed_race_free(layout: dict[str, Path]) -> None:
    ws = layout["ws"]
    (ws / "alias").symlink_to(ws / "sub")
    (ws / "abs-alias").symlink_to(str(ws / "d1"))
    assert read_text_file(ws, "alias/secret.txt", line=None, limit=None) == "inside copy\n"
    assert read_text_file(ws, "abs-alias/d2/secret.txt", line=None, limit=None) == "inside copy\n"
    assert write_text_file(ws, "alias/made/deep.txt", "x") == ws / "sub" / "made" / "deep.txt"
    assert (ws / "sub" / "made" / "deep.txt").read_text() == "x"


UNPRIVILEGED = textwrap.dedent(
    """
    import json, sys
    from agh_nb.core.boundary import resolve_in_workspace
    from agh_nb.adapters.fs_ops import read_text_file
    from agh_nb.errors import PathOutsideWorkspaceError
    ws, out = sys.argv[1], []
    for path in sys.argv[2:]:
        try:
            resolve_in_workspace(ws, path)
            read_text_file(ws, path, line=None, limit=None)
            out.append([path, "allowed", ""])
        except PathOutsideWorkspaceError as exc:
            out.append([path, "refused", str(exc), exc.fields.get("reason", "outside")])
        except OSError as exc:
            out.append([path, "oserror", type(exc).__name__])
    print(json.dumps(out))
    """
)


def _without_dac_override() -> None:
    # In the child, before exec: drop the capabilities that let root ignore file modes, so a
    # directory without search permission really refuses the walk (EACCES), as for any user.
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if _LIBC.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            os._exit(77)


def test_permission_errors_while_resolving_are_boundary_refusals(tmp_path: Path) -> None:
    # /proc/1/root (EACCES for a user; for root a symlink to "/") and a directory without search
    # permission: the walk's errors must be refusals, never an OSError escaping to the agent.
    ws = tmp_path / "ws"
    (ws / "locked").mkdir(parents=True)
    (ws / "locked" / "f.txt").write_text("x")
    (ws / "open.txt").write_text("fine")
    os.chmod(ws / "locked", 0o000)
    argv = [sys.executable, "-c", UNPRIVILEGED, str(ws), "/proc/1/root/etc/hostname", "locked/f.txt", "open.txt"]
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=60,
            preexec_fn=_without_dac_override if os.geteuid() == 0 else None,
        )
    finally:
        os.chmod(ws / "locked", 0o755)
    if proc.returncode == 77:
        pytest.skip("cannot drop CAP_DAC_OVERRIDE here")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr

    results = {row[0]: row[1:] for row in json.loads(proc.stdout)}
    assert results["open.txt"] == ["allowed", ""]
    proc_root = results["/proc/1/root/etc/hostname"]
    assert proc_root[0] == "refused" and "\n" not in proc_root[1], proc_root
    locked = results["locked/f.txt"]
    assert locked[0] == "refused" and locked[2] == "unresolvable" and "Permission denied" in locked[1], locked
