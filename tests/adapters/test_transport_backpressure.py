"""Backpressure in the ACP transport: while the store writer is far behind, an agent's updates
wait in its pipe instead of piling up in the writer's queue (a backlog that every later save,
such as a stop's record at host shutdown, would wait behind). A real child process writes the
frames; the transport reads them from its real pipe.
"""

from __future__ import annotations

import asyncio
import json
import sys
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
