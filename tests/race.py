"""A symlink-swap attacker for the race tests: another process swapping a workspace directory
for a symlink to an outside directory as fast as it can (issue 11)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SWAPPER = textwrap.dedent(
    """
    import ctypes, os, signal, sys
    libc = ctypes.CDLL(None, use_errno=True)
    sub, link = os.fsencode(sys.argv[1]), os.fsencode(sys.argv[2])
    swaps = 0
    def done(*_):
        if os.path.islink(sub):  # leave the real directory in place
            libc.renameat2(-100, sub, -100, link, 2)
        print(swaps, flush=True)
        os._exit(0)
    signal.signal(signal.SIGTERM, done)
    print("ready", flush=True)
    while True:
        # renameat2(RENAME_EXCHANGE): the directory and the symlink trade names atomically.
        if libc.renameat2(-100, sub, -100, link, 2) != 0:
            sys.exit("renameat2: " + os.strerror(ctypes.get_errno()))
        swaps += 1
    """
)


class Swapper:
    """Another process swapping ``ws/<name>`` between its real directory and a symlink to
    ``outside`` as fast as it can, as an agent with its own shell would: no GIL shared with us.

    The swap is atomic (``renameat2(RENAME_EXCHANGE)``), so every lookup of ``ws/<name>`` meets
    one or the other, never a missing name.
    """

    def __init__(self, ws: Path, name: str, outside: Path) -> None:
        self.sub, self.link = ws / name, ws / f".{name}.swap"
        os.symlink(outside, self.link)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SWAPPER, str(self.sub), str(self.link)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"
        self.swaps = 0

    def finish(self) -> None:
        self.proc.terminate()
        out, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, err
        self.swaps = int(out.strip() or 0)
        assert not self.sub.is_symlink()
        self.link.unlink()
