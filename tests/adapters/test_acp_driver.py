"""The ACP driver against the real demo agent: what it reads, and how much it reads ahead."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agh_nb.adapters.acp_driver import AcpDriver
from agh_nb.adapters.acp_transport import READ_AHEAD, BoundedReader
from agh_nb.core.ports import LaunchSpec
from agh_nb.events import EventType

pytestmark = pytest.mark.timeout(120)

AGENT = (sys.executable, "-m", "agh_nb.agents.demo", "--fast")
# asyncio reads a pipe in chunks of at most 256 KiB; reading pauses once the buffer passes the bound.
MAX_CHUNK = 256 * 1024


class SlowListener:
    """Maps nothing further: records the indexes of agent messages, taking a while over each."""

    def __init__(self, driver: AcpDriver, n: int, seconds_per_update: float) -> None:
        self.driver = driver
        self.n = n
        self.seconds = seconds_per_update
        self.indexes: list[int] = []
        self.max_buffered = 0
        self.done = asyncio.Event()

    def on_update(self, event_type: EventType, fields: Any) -> None:
        if event_type is not EventType.AGENT_MESSAGE:
            return
        reader = self.driver._proc.stdout  # type: ignore[union-attr]
        assert isinstance(reader, BoundedReader)
        self.max_buffered = max(self.max_buffered, len(reader._buffer))
        self.indexes.append(fields["raw"]["_meta"]["agh_demo_index"])
        time.sleep(self.seconds)  # a consumer slower than the agent, on the loop as the store's would be
        if len(self.indexes) == self.n:
            self.done.set()

    def on_protocol_error(self, kind: Any, summary: str) -> None:
        raise AssertionError(summary)

    def on_exit(self, info: Any) -> None:
        return None

    def on_stderr(self, data: bytes) -> None:
        return None

    async def on_elicitation(self, message: str, schema: Any, scope: Any) -> Any:
        return {"action": "decline"}

    async def on_permission_request(self, tool_call: Any, options: Any) -> str | None:
        return None

    async def authorize(self, operation: str, path: str | None, command: list[str] | None = None) -> Path:
        raise PermissionError(operation)


def test_an_agent_faster_than_its_consumer_waits_on_the_pipe(tmp_path: Path) -> None:
    n = 20_000  # about 3 MB of frames: far more than the read-ahead bound

    async def go() -> SlowListener:
        driver = AcpDriver()
        listener = SlowListener(driver, n, 0.0002)
        try:
            await driver.start(LaunchSpec(agent_name="demo", argv=AGENT, cwd=str(tmp_path)), listener)
            session = (await driver.new_session(str(tmp_path))).session_id
            outcome = await asyncio.wait_for(driver.prompt(session, f"firehose {n}"), 90)
            assert outcome.stop_reason == "end_turn"
            await asyncio.wait_for(listener.done.wait(), 30)
        finally:
            await driver.close(grace=2.0)
        return listener

    listener = asyncio.run(go())
    assert listener.indexes == list(range(n)), "every update once, in order"
    # Without the bound, the whole stream would sit in our memory while the consumer caught up.
    assert 0 < listener.max_buffered <= READ_AHEAD + MAX_CHUNK, listener.max_buffered
