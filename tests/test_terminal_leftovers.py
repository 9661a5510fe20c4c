"""Terminals die with their session, and with a host that was SIGKILLed (issue 11, section 6).

A host in another process starts a long terminal command, records it, and is SIGKILLed; the
next host's crash repair kills what the dead host left, and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agh_nb.api import Host
from agh_nb.core.leftovers import BOOK_DIR, ProcessBook, ProcessEntry, is_zombie, kill_leftovers, start_time
from agh_nb.runtime import Runtime
from tests.conftest import wait_until

pytestmark = [pytest.mark.timeout(120), pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")]

DYING_HOST = textwrap.dedent(
    """
    import os, signal, sys, time
    from agh_nb.api import Host
    from agh_nb.runtime import Runtime
    host = Host(Runtime.start())
    record = host.create("demo-fast", cwd=sys.argv[1], permissions="approve-all")
    host.prompt(record.id, "run-direct sh -c " + repr("echo $$ > pid.txt; exec sleep 600"))
    deadline = time.time() + 30
    while not os.path.exists(os.path.join(sys.argv[1], "pid.txt")) and time.time() < deadline:
        time.sleep(0.05)
    print(record.id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(") ", 1)[1][0] not in "ZX"
    except OSError:
        return False


def sleepers(workspace: Path) -> list[int]:
    """The pids of the terminal's ``sleep 600`` (host-side pids: found by their cwd)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{name}/cmdline").read_bytes()
            cwd = os.readlink(f"/proc/{name}/cwd")
        except OSError:
            continue
        if cmd.startswith(b"sleep\x00600") and cwd == str(workspace) and alive(int(name)):
            found.append(int(name))
    return found


@pytest.mark.parametrize("mode", ["off", "auto"])
def test_a_terminal_left_by_a_killed_host_is_killed_by_the_next(agh_home: Path, workspace: Path, mode: str) -> None:
    (agh_home / "config.toml").write_text(f'[sandbox]\nmode = "{mode}"\n')
    proc = subprocess.run(
        [sys.executable, "-c", DYING_HOST, str(workspace)],
        env=dict(os.environ, AGH_HOME=str(agh_home)), capture_output=True, text=True, timeout=90,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    sid = proc.stdout.strip()
    book = agh_home / "sessions" / sid / BOOK_DIR
    kinds = sorted(json.loads(p.read_text())["kind"] for p in book.glob("*.json"))
    assert kinds == ["agent", "terminal"]
    if mode == "off":
        # Unconfined, the command outlives its host: only crash repair can end it.
        assert sleepers(workspace), "the terminal command should still run after the host died"
    host = Host(Runtime.start(home=agh_home))
    try:
        wait_until(lambda: not sleepers(workspace), timeout=20)
        assert host.get(sid).stop_reason is not None
        wait_until(lambda: not list(book.glob("*.json")), timeout=10)  # cleared right after the kill
    finally:
        host.close()


def test_terminals_die_with_their_session(host: Host, workspace: Path) -> None:
    record = host.create("demo-fast", cwd=str(workspace), permissions="approve-all")
    host.prompt(record.id, "run-direct sh -c 'echo $$ > pid.txt; exec sleep 600'")
    wait_until(lambda: sleepers(workspace), timeout=30)
    book = host.runtime.home / "sessions" / record.id / BOOK_DIR
    assert any(json.loads(p.read_text())["kind"] == "terminal" for p in book.glob("*.json"))
    host.stop(record.id)
    wait_until(lambda: not sleepers(workspace), timeout=20)
    # Every entry goes (the agent's was once left behind when the stop cancelled the watcher
    # that was removing it); the terminal's is removed just after its process is reaped.
    try:
        wait_until(lambda: not list(book.glob("*.json")), timeout=10)
    except AssertionError:
        raise AssertionError(f"entries left in the book: {[p.read_text() for p in book.glob('*.json')]}") from None


def test_a_recycled_pid_is_never_killed(tmp_path: Path) -> None:
    stranger = subprocess.Popen(["sleep", "60"])  # not ours: no tag, another start time
    try:
        book = ProcessBook(tmp_path)
        real = ProcessEntry.of(stranger.pid, kind="terminal", name="term_x")
        assert real.start_time == start_time(stranger.pid)
        book.add(ProcessEntry(stranger.pid, stranger.pid, (real.start_time or 0) - 1, real.boot_id, "terminal", "term_x"))
        assert kill_leftovers(tmp_path, "sess_nobody") == []
        assert stranger.poll() is None and not list((tmp_path / BOOK_DIR).glob("*.json"))
        book.add(real)  # the same pid with its true start time: ours, killed
        assert kill_leftovers(tmp_path, "sess_nobody") == [stranger.pid]
        assert stranger.wait(10) == -signal.SIGKILL
    finally:
        stranger.kill()
        stranger.wait()


def test_an_exited_process_not_yet_reaped_is_not_reported_as_left_running(tmp_path: Path) -> None:
    # Popen does not reap until wait(): after the kill the child is a zombie with its start time intact.
    dead = subprocess.Popen(["sleep", "60"])
    try:
        entry = ProcessEntry.of(dead.pid, kind="agent", name="agent")
        dead.kill()
        deadline = time.monotonic() + 10
        while not is_zombie(dead.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert is_zombie(dead.pid) and start_time(dead.pid) == entry.start_time
        ProcessBook(tmp_path).add(entry)
        assert kill_leftovers(tmp_path, "sess_nobody") == []
        assert not list((tmp_path / BOOK_DIR).glob("*.json"))
    finally:
        dead.kill()
        dead.wait()


def test_what_still_runs_in_the_group_of_an_exited_leader_is_killed(tmp_path: Path) -> None:
    # The leader (sh) exits at once and stays unreaped; the sleep it started runs on in its group.
    leader = subprocess.Popen(["sh", "-c", "sleep 60 & echo $!"], stdout=subprocess.PIPE, start_new_session=True)
    assert leader.stdout is not None
    with leader.stdout:
        member = int(leader.stdout.readline())
    try:
        entry = ProcessEntry.of(leader.pid, kind="terminal", name="term_x")
        wait_until(lambda: is_zombie(leader.pid), timeout=10)
        assert start_time(member) is not None and not is_zombie(member)
        ProcessBook(tmp_path).add(entry)
        assert kill_leftovers(tmp_path, "sess_nobody") == []  # the leader was not running
        wait_until(lambda: start_time(member) is None or is_zombie(member), timeout=10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)
        leader.kill()
        leader.wait()


def test_tagged_processes_are_found_even_when_unrecorded(tmp_path: Path) -> None:
    ours = subprocess.Popen(["sleep", "60"], env={"AGH_NB_SESSION": "sess_tagged", "PATH": os.environ["PATH"]})
    other = subprocess.Popen(["sleep", "60"], env={"AGH_NB_SESSION": "sess_someone_else", "PATH": os.environ["PATH"]})
    try:
        (tmp_path / BOOK_DIR).mkdir()
        assert kill_leftovers(tmp_path, "sess_tagged") == [ours.pid]
        assert ours.wait(10) == -signal.SIGKILL and other.poll() is None
    finally:
        for p in (ours, other):
            p.kill()
            p.wait()
