"""Private by default (SPEC 7, issue 11): under umask 022, everything agh_nb writes under $AGH_HOME
is owner-only after sessions ran, stopped, crashed and a host was killed; an older, wider home is
tightened when opened, with one log line."""

from __future__ import annotations

import logging
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agh_nb.api import Host
from agh_nb.runtime import Runtime

pytestmark = pytest.mark.timeout(180)

UMASK_022_HOST = textwrap.dedent(
    """
    import os, signal, sys, time
    os.umask(0o022)  # the usual umask: a file made with the default mode would be 0644
    from agh_nb.api import Host
    from agh_nb.runtime import Runtime
    phase, workspace = sys.argv[1], sys.argv[2]
    host = Host(Runtime.start())
    if phase == "run":
        host.vault_put("vault:providers/example", "value-of-the-secret-1234", kind="api_key")
        done = host.create("demo-fast", cwd=workspace, permissions="approve-all")
        host.prompt(done.id, "write notes/a.txt hello").wait(60)
        host.prompt(done.id, "hello").wait(60)
        host.stop(done.id)                               # ledger + digest
        crashed = host.create("demo", cwd=workspace)
        host.prompt(crashed.id, "crash").wait(60)        # agent crash: a crash bundle
        deadline = time.time() + 30
        while host.get(crashed.id).state.value != "stopped" and time.time() < deadline:
            time.sleep(0.05)
        host.close()
    else:                                                # a host killed with a session active
        live = host.create("demo", cwd=workspace)
        host.prompt(live.id, "hello").wait(60)
        host.runtime.call(host.store.flush)
        print(live.id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """
)


def run_host(home: Path, workspace: Path, phase: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", UMASK_022_HOST, phase, str(workspace)],
        env=dict(os.environ, AGH_HOME=str(home)),
        capture_output=True,
        text=True,
        timeout=150,
    )


def loose_paths(home: Path) -> list[str]:
    """Every path under ``home`` (itself included) that is not owner-only."""
    found = []
    for path in [home, *home.rglob("*")]:
        st = path.lstat()
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            ok = mode == 0o700
        elif path.name in ("ledger.jsonl", "ledger.sha256"):
            ok = mode in (0o400, 0o600)
        else:
            ok = mode == 0o600
        if not ok:
            found.append(f"{path.relative_to(home.parent)} {oct(mode)}")
    return found


def test_everything_under_home_is_owner_only_under_umask_022(tmp_path: Path) -> None:
    home = tmp_path / "home"  # created by agh_nb itself
    workspace = tmp_path / "ws"
    workspace.mkdir()
    ran = run_host(home, workspace, "run")
    assert ran.returncode == 0, ran.stderr[-3000:]
    killed = run_host(home, workspace, "kill")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    repaired = run_host(home, workspace, "run")  # repairs the killed host's session, runs again
    assert repaired.returncode == 0, repaired.stderr[-3000:]

    names = {p.name for p in home.rglob("*")}
    assert {"agh.duckdb", "vault.key", "vault.json", "meta.json", "ledger.jsonl", "ledger.sha256"} <= names
    assert list((home / "logs" / "crash-bundles").glob("*.json")), "the crash left a bundle"
    assert loose_paths(home) == []
    # The workspace is the user's: its files follow the umask as before.
    assert stat.S_IMODE((workspace / "notes" / "a.txt").stat().st_mode) == 0o644


def test_a_wider_home_is_tightened_when_opened_with_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "home"
    workspace = tmp_path / "ws"
    workspace.mkdir()
    host = Host(Runtime.start(home=home))
    try:
        record = host.create("demo-fast", cwd=str(workspace))
        host.prompt(record.id, "hello").wait(60)
        host.stop(record.id)
    finally:
        host.close()
    # As an older version (or a careless hand) left it: readable by everyone.
    for path in [home, *home.rglob("*")]:
        if path.is_dir():
            os.chmod(path, 0o755)
        elif path.name.startswith("ledger."):
            os.chmod(path, 0o444)
        else:
            os.chmod(path, 0o644)
    (home / "config.toml").write_text("[permissions]\nmode = \"approve-reads\"\n")
    os.chmod(home / "config.toml", 0o664)
    assert loose_paths(home)
    with caplog.at_level(logging.WARNING, logger="agh_nb.core.private"):
        Host(Runtime.start(home=home)).close()
    assert loose_paths(home) == []
    lines = [r for r in caplog.records if r.name == "agh_nb.core.private"]
    assert len(lines) == 1 and "tightened" in lines[0].getMessage() and str(home) in lines[0].getMessage()
    # Ledgers stay read-only; nothing else changed but the modes.
    ledger = next(home.rglob("ledger.jsonl"))
    assert stat.S_IMODE(ledger.stat().st_mode) == 0o400
    assert (home / "config.toml").read_text().startswith("[permissions]")
