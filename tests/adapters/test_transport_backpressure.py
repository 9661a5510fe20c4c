"""Backpressure in the ACP transport: while the store writer is far behind, an agent's updates
wait in its pipe instead of piling up in the writer's queue (a backlog that every later save,
such as a stop's record at host shutdown, would wait behind). A real child process writes the
frames; the transport reads them from its real pipe.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agh_nb.adapters.acp_transport import BACKLOG_HIGH, YIELD_EVERY, CheckedTransport

UPDATES = 500
WRITER = (
    "import json, sys\n"
    f"for i in range({UPDATES}):\n"
    "    sys.stdout.write(json.dumps({'jsonrpc': '2.0', 'method': 'session/update',"
    " 'params': {'sessionId': 's', 'update': {'sessionUpdate': 'agent_message_chunk', 'n': i}}}) + '\\n')\n"
    "sys.stdout.write(json.dumps({'jsonrpc': '2.0', 'id': 1, 'result': {}}) + '\\n')\n"
)


async def _reading(backlog: list[int], *, discard: bool = False) -> tuple[list[Any], asyncio.Task[Any], CheckedTransport]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRITER, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stdin is not None
    updates: list[Any] = []
    transport = CheckedTransport(
        proc.stdout, proc.stdin, on_garbage=lambda line: None, on_eof=lambda: None,
        on_update=updates.append, backlog=lambda: backlog[0],
    )
    if discard:
        transport.discard_updates()
    await proc.wait()  # every frame is in the pipe (50 KiB, less than a pipe holds)
    task = asyncio.create_task(transport.receive())
    await asyncio.sleep(0.3)  # ample time to read them all, were nothing holding the reader back
    return updates, task, transport


@pytest.mark.timeout(30)
def test_updates_wait_while_the_store_is_behind_and_flow_once_it_catches_up() -> None:
    async def main() -> None:
        backlog = [BACKLOG_HIGH + 1]
        updates, task, _ = await _reading(backlog)
        assert not task.done(), "the transport read past a store that is far behind"
        assert 0 < len(updates) < YIELD_EVERY, len(updates)
        backlog[0] = 0  # the writer caught up
        answer = await asyncio.wait_for(task, 10)
        assert answer["id"] == 1 and "result" in answer
        assert [u["update"]["n"] for u in updates] == list(range(UPDATES)), "every update, in order"

    asyncio.run(main())


@pytest.mark.timeout(30)
def test_updates_dropped_at_shutdown_do_not_wait_for_the_store() -> None:
    async def main() -> None:
        backlog = [10 * BACKLOG_HIGH]  # never catches up
        updates, task, transport = await _reading(backlog, discard=True)
        answer = await asyncio.wait_for(task, 10)  # the answer a stop waits for still arrives
        assert answer["id"] == 1 and updates == [] and transport.discarded == UPDATES

    asyncio.run(main())


AHEAD = 900 * 1024
"""What the agent writes before anyone reads: more than Linux's default 64 KiB pipe holds."""
WRITE_AHEAD = (
    f"import pathlib, sys\nsys.stdout.buffer.write(b'x' * {AHEAD})\nsys.stdout.buffer.flush()\n"
    "pathlib.Path(sys.argv[1]).write_text('written')\n"
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="F_SETPIPE_SZ is Linux's")
@pytest.mark.parametrize("sandboxed", [False, True], ids=["unconfined", "sandboxed"])
@pytest.mark.timeout(60)
def test_an_agent_can_write_far_ahead_of_a_reader_that_waits(tmp_path: Path, sandboxed: bool) -> None:
    # While the runtime waits for the GIL (the store writer holds it), the agent keeps writing
    # into its widened pipe instead of blocking on a full one; it exits here before a single read.
    from agh_nb.adapters.acp_transport import PIPE_BYTES, spawn_agent
    from agh_nb.adapters.sandbox import confinement
    from agh_nb.config import Settings
    from agh_nb.core.sandbox_policy import sandbox_policy

    async def main() -> None:
        box = None
        if sandboxed:
            policy = sandbox_policy(Settings(), None, workspace=str(tmp_path), permissions="approve-all",
                                    agh_home=str(tmp_path / "agh"), home=str(tmp_path))
            keep = [sys.executable, os.path.realpath(sys.executable), sys.prefix, sys.base_prefix]
            box = await confinement(replace(policy, mode="required"), keep=keep)
        done = tmp_path / "written"
        proc = await spawn_agent(
            [sys.executable, "-c", WRITE_AHEAD, str(done)], env=dict(os.environ), cwd=str(tmp_path), confinement=box
        )
        assert proc.stdout is not None
        try:
            for _ in range(300):  # nothing is read meanwhile beyond the reader's own read-ahead
                if done.exists():
                    break
                await asyncio.sleep(0.1)
            assert done.exists(), f"the agent blocked on a full pipe (asked for {PIPE_BYTES} bytes)"
            assert len(await proc.stdout.readexactly(AHEAD)) == AHEAD
            assert await asyncio.wait_for(proc.wait(), 30) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    asyncio.run(main())
