"""End-to-end tests of the built-in demo ACP agent, spawned as a real subprocess.

Every test talks to ``python -m agh_nb.agents.demo`` through the official SDK's
``acp.spawn_agent_process`` with a small recording client, exactly as agh_nb will, and is bounded
by ``asyncio.wait_for`` so a misbehaving agent fails the test instead of hanging it.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import logging
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import acp
import pytest
import yaml
from acp import RequestError
from acp.helpers import ContentBlock
from acp.schema import (
    AgentMessageChunk,
    AgentPlanUpdate,
    AgentThoughtChunk,
    AllowedOutcome,
    ClientCapabilities,
    CreateTerminalResponse,
    DeniedOutcome,
    EnvVariable,
    FileSystemCapabilities,
    InitializeResponse,
    PermissionOption,
    ReadTextFileResponse,
    ReleaseTerminalResponse,
    RequestPermissionResponse,
    TerminalOutputResponse,
    ToolCallProgress,
    ToolCallStart,
    ToolCallUpdate,
    UsageUpdate,
    WaitForTerminalExitResponse,
    WriteTextFileResponse,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_TIMEOUT = 30.0
T = TypeVar("T")


def run(coro_fn: Callable[[], Awaitable[T]], timeout: float = TEST_TIMEOUT) -> T:
    """Run one async test body with a hard timeout (pytest-asyncio is not a dependency)."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro_fn(), timeout=timeout)

    return asyncio.run(bounded())


class RecordingClient:
    """A minimal but real ACP client: records updates, answers permissions, does fs and terminals."""

    def __init__(self, root: Path, *, permission: str = "allow_once") -> None:
        self.root = root
        self.permission = permission
        self.updates: list[tuple[str, Any, dict[str, Any]]] = []
        self.permission_requests: list[tuple[ToolCallUpdate, list[PermissionOption]]] = []
        self.changed = asyncio.Event()
        self._terminals: dict[str, tuple[asyncio.subprocess.Process, asyncio.Task[bytes]]] = {}
        self.commands: list[list[str]] = []  # argv of every terminal/create
        self.writes: list[str] = []  # path of every fs/write_text_file

    # -- recording ----------------------------------------------------------------------

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        """Record every notification (kwargs carry notification-level ``_meta``, if any)."""
        self.updates.append((session_id, update, kwargs))
        self.changed.set()

    def of(self, kind: type) -> list[Any]:
        """Recorded updates of one schema class, in arrival order."""
        return [u for _, u, _ in self.updates if isinstance(u, kind)]

    def message_text(self) -> str:
        """All agent message chunks joined."""
        return "".join(u.content.text for u in self.of(AgentMessageChunk))

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds, re-checking on every new update."""

        async def loop() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), timeout=timeout)

    # -- permissions and files ----------------------------------------------------------

    async def request_permission(
        self, session_id: str, tool_call: ToolCallUpdate, options: list[PermissionOption], **kwargs: Any
    ) -> RequestPermissionResponse:
        """Pick the option whose kind is ``self.permission`` ("hold": never answer on our own)."""
        self.permission_requests.append((tool_call, options))
        self.changed.set()
        if self.permission == "hold":
            await asyncio.Event().wait()
        for option in options:
            if option.kind == self.permission:
                return RequestPermissionResponse(outcome=AllowedOutcome(outcome="selected", option_id=option.option_id))
        return RequestPermissionResponse(outcome=DeniedOutcome(outcome="cancelled"))

    def _inside(self, path: str) -> Path:
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(self.root.resolve()):
            raise RequestError.invalid_params({"path": path, "reason": "outside workspace"})
        return resolved

    async def read_text_file(
        self, session_id: str, path: str, line: int | None = None, limit: int | None = None, **kwargs: Any
    ) -> ReadTextFileResponse:
        return ReadTextFileResponse(content=self._inside(path).read_text())

    async def write_text_file(self, session_id: str, path: str, content: str, **kwargs: Any) -> WriteTextFileResponse:
        target = self._inside(path)
        self.writes.append(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        return WriteTextFileResponse()

    # -- terminals ----------------------------------------------------------------------

    async def create_terminal(
        self,
        session_id: str,
        command: str,
        args: list[str] | None = None,
        env: list[EnvVariable] | None = None,
        cwd: str | None = None,
        output_byte_limit: int | None = None,
        **kwargs: Any,
    ) -> CreateTerminalResponse:
        self.commands.append([command, *(args or [])])
        proc = await asyncio.create_subprocess_exec(
            command, *(args or []), cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        assert proc.stdout is not None
        terminal_id = f"term-{uuid.uuid4().hex[:8]}"
        self._terminals[terminal_id] = (proc, asyncio.ensure_future(proc.stdout.read()))
        return CreateTerminalResponse(terminal_id=terminal_id)

    async def wait_for_terminal_exit(
        self, session_id: str, terminal_id: str, **kwargs: Any
    ) -> WaitForTerminalExitResponse:
        proc, _ = self._terminals[terminal_id]
        return WaitForTerminalExitResponse(exit_code=await proc.wait())

    async def terminal_output(self, session_id: str, terminal_id: str, **kwargs: Any) -> TerminalOutputResponse:
        proc, reader = self._terminals[terminal_id]
        output = (await reader).decode()
        return TerminalOutputResponse(output=output, truncated=False)

    async def release_terminal(self, session_id: str, terminal_id: str, **kwargs: Any) -> ReleaseTerminalResponse:
        proc, reader = self._terminals.pop(terminal_id)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        reader.cancel()
        return ReleaseTerminalResponse()

    async def kill_terminal(self, session_id: str, terminal_id: str, **kwargs: Any) -> None:
        proc, _ = self._terminals[terminal_id]
        if proc.returncode is None:
            proc.kill()


FULL_CAPS = ClientCapabilities(fs=FileSystemCapabilities(read_text_file=True, write_text_file=True), terminal=True)


@contextlib.asynccontextmanager
async def demo_agent(
    client: RecordingClient, *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[acp.core.ClientSideConnection, asyncio.subprocess.Process]]:
    """Spawn the demo agent; the SDK passes only a trimmed environment, so add PYTHONPATH."""
    full_env = {"PYTHONPATH": str(REPO_ROOT), **(env or {})}
    async with acp.spawn_agent_process(
        cast(acp.Client, client),  # implements the part of the Client protocol the demo uses
        sys.executable,
        "-m",
        "agh_nb.agents.demo",
        *args,
        env=full_env,
        cwd=client.root,
        transport_kwargs={"shutdown_timeout": 1.0},
    ) as (conn, proc):
        yield conn, proc


async def start_session(
    conn: acp.core.ClientSideConnection, client: RecordingClient, caps: ClientCapabilities = FULL_CAPS
) -> tuple[InitializeResponse, str]:
    """initialize + session/new; returns the handshake answer and the ACP session id."""
    init = await conn.initialize(protocol_version=acp.PROTOCOL_VERSION, client_capabilities=caps)
    session = await conn.new_session(cwd=str(client.root), mcp_servers=[])
    return init, session.session_id


def prompt_of(text: str) -> list[ContentBlock]:
    """A one-block text prompt."""
    return [acp.text_block(text)]


class _LogWatch(logging.Handler):
    """Sets an event when a log record containing ``needle`` is emitted (same thread, same loop)."""

    def __init__(self, needle: str) -> None:
        super().__init__()
        self.needle = needle
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage():
            self.seen.set()


# ---------------------------------------------------------------------------------------------


def test_initialize_advertises_load_session(tmp_path: Path) -> None:
    async def body() -> None:
        client = RecordingClient(tmp_path)
        async with demo_agent(client, "--fast") as (conn, _):
            init, session_id = await start_session(conn, client)
            assert init.protocol_version == acp.PROTOCOL_VERSION
            assert init.agent_capabilities is not None and init.agent_capabilities.load_session is True
            assert init.agent_info is not None and init.agent_info.name == "agh-demo"
            assert session_id.startswith("demo-") and len(session_id) == len("demo-") + 32
            other = await conn.new_session(cwd=str(tmp_path), mcp_servers=[])
            assert other.session_id != session_id

        client = RecordingClient(tmp_path)
        async with demo_agent(client, "--fast", "--no-load") as (conn, _):
            init, _ = await start_session(conn, client)
            assert init.agent_capabilities is not None and init.agent_capabilities.load_session is False
            with pytest.raises(RequestError) as info:
                await conn.load_session(cwd=str(tmp_path), session_id="demo-abc", mcp_servers=[])
            assert info.value.code == -32601  # method not found

    run(body)


def test_load_session(tmp_path: Path) -> None:
    async def body() -> None:
        client = RecordingClient(tmp_path)
        async with demo_agent(client, "--fast") as (conn, _):
            await start_session(conn, client)
            with pytest.raises(RequestError) as info:
                await conn.load_session(cwd=str(tmp_path), session_id="sess_unknown", mcp_servers=[])
            assert info.value.code == -32002
            # Any demo- id loads (the demo keeps no history), and the session then takes prompts.
            await conn.load_session(cwd=str(tmp_path), session_id="demo-from-an-earlier-process", mcp_servers=[])
            response = await conn.prompt(session_id="demo-from-an-earlier-process", prompt=prompt_of("echo-env HOME"))
            assert response.stop_reason == "end_turn"

    run(body)


def test_default_script(tmp_path: Path) -> None:
    text = "Please summarise the quarterly numbers"

    async def body() -> None:
        client = RecordingClient(tmp_path)
        async with demo_agent(client, "--fast") as (conn, _):
            _, session_id = await start_session(conn, client)
            response = await conn.prompt(session_id=session_id, prompt=prompt_of(text))

            assert response.stop_reason == "end_turn"
            assert response.usage is not None
            usage = response.usage
            assert usage.input_tokens > 0 and usage.output_tokens > 0 and usage.thought_tokens
            assert usage.total_tokens == usage.input_tokens + usage.output_tokens + usage.thought_tokens
            assert all(sid == session_id for sid, _, _ in client.updates)

            assert 1 <= len(client.of(AgentThoughtChunk)) <= 2
            plans = client.of(AgentPlanUpdate)
            assert len(plans) == 1 and len(plans[0].entries) == 3
            assert len(client.of(AgentMessageChunk)) >= 4
            assert text in client.message_text()

            starts = client.of(ToolCallStart)
            progress = client.of(ToolCallProgress)
            assert len(starts) == 2
            assert {s.kind for s in starts} == {"think", "search"}
            for start in starts:
                assert start.status == "in_progress" and start.raw_input is not None
                done = [p for p in progress if p.tool_call_id == start.tool_call_id]
                assert len(done) == 1 and done[0].status == "completed"
                assert done[0].raw_output is not None and done[0].content
            # Each tool call completes before the next one starts.
            kinds = [type(u).__name__ for _, u, _ in client.updates]
            assert kinds.index("ToolCallProgress") < len(kinds) - 1 - kinds[::-1].index("ToolCallStart")

            usage_updates = client.of(UsageUpdate)
            assert len(usage_updates) == 1
            assert usage_updates[0].used == usage.total_tokens and usage_updates[0].size > 0
            assert usage_updates[0].cost is not None and usage_updates[0].cost.amount > 0
            assert isinstance(client.updates[-1][1], UsageUpdate)

            # Deterministic: the same prompt in a fresh session gives the same usage and text.
            first_text = client.message_text()
            client.updates.clear()
            second = await conn.new_session(cwd=str(tmp_path), mcp_servers=[])
            again = await conn.prompt(session_id=second.session_id, prompt=prompt_of(text))
            assert again.usage == usage
            assert client.message_text() == first_text

    run(body)


def test_firehose_meta(tmp_path: Path) -> None:
    async def body() -> None:
        client = RecordingClient(tmp_path)
        async with demo_agent(client) as (conn, _):  # firehose ignores the step delay
            _, session_id = await start_session(conn, client)
            before = time.time()
            response = await conn.prompt(session_id=session_id, prompt=prompt_of("firehose 1000"))
            assert response.stop_reason == "end_turn"
            chunks = client.of(AgentMessageChunk)
            assert len(chunks) == 1000
            assert [c.field_meta["agh_demo_index"] for c in chunks] == list(range(1000))
            stamps = [c.field_meta["agh_demo_sent_at"] for c in chunks]
            assert stamps == sorted(stamps) and before - 1 <= stamps[0] <= stamps[-1] <= time.time()
            # The timing lives on the update's own _meta, not on the notification.
            assert all(kwargs == {} for _, _, kwargs in client.updates)

    run(body)


def test_rawhose_sends_what_firehose_sends(tmp_path: Path) -> None:
    async def body() -> None:
        client = RecordingClient(tmp_path)
        async with demo_agent(client) as (conn, _):
            _, session_id = await start_session(conn, client)
            before = time.time()
            response = await conn.prompt(session_id=session_id, prompt=prompt_of("rawhose 500"))
            assert response.stop_reason == "end_turn"
            raw = client.of(AgentMessageChunk)
            client.updates.clear()
            await conn.prompt(session_id=session_id, prompt=prompt_of("firehose 500"))
            sdk = client.of(AgentMessageChunk)
            # The SDK parses the hand-written frames into the same models, stamps aside.
            assert [c.content for c in raw] == [c.content for c in sdk]
            assert [c.field_meta["agh_demo_index"] for c in raw] == list(range(500))
            stamps = [c.field_meta["agh_demo_sent_at"] for c in raw]
            assert stamps == sorted(stamps) and before - 1 <= stamps[0] <= stamps[-1] <= time.time()

    run(body)


def test_cancel_during_slow(tmp_path: Path) -> None:
    async def body() -> None:
        client = RecordingClient(tmp_path)
        async with demo_agent(client, "--fast") as (conn, _):
            _, session_id = await start_session(conn, client)
            turn = asyncio.ensure_future(conn.prompt(session_id=session_id, prompt=prompt_of("slow 50 0.1")))
            await client.wait_for(lambda: len(client.of(AgentMessageChunk)) >= 3)
            cancelled_at = time.monotonic()
            await conn.cancel(session_id=session_id)
            response = await asyncio.wait_for(turn, timeout=2.0)
            elapsed = time.monotonic() - cancelled_at
            assert response.stop_reason == "cancelled"
            assert elapsed < 0.5, elapsed
            assert len(client.of(AgentMessageChunk)) < 10

            # The session stays usable after a cancelled turn.
            after = await conn.prompt(session_id=session_id, prompt=prompt_of("slow 2 0"))
            assert after.stop_reason == "end_turn"

    run(body)


def test_silent_then_one_chunk(tmp_path: Path) -> None:
    async def body() -> None:
        client = RecordingClient(tmp_path)
        async with demo_agent(client, "--fast") as (conn, _):
            _, session_id = await start_session(conn, client)
            started = time.monotonic()
            response = await conn.prompt(session_id=session_id, prompt=prompt_of("silent 0.3"))
            assert time.monotonic() - started >= 0.3
            assert response.stop_reason == "end_turn"
            assert len(client.updates) == 1 and len(client.of(AgentMessageChunk)) == 1

    run(body)


def test_crash_exits_with_code_3(tmp_path: Path) -> None:
    async def body() -> None:
        client = RecordingClient(tmp_path)
        async with demo_agent(client, "--fast") as (conn, proc):
            _, session_id = await start_session(conn, client)
            with pytest.raises(ConnectionError):
                await conn.prompt(session_id=session_id, prompt=prompt_of("crash"))
            assert await asyncio.wait_for(proc.wait(), timeout=5.0) == 3
            # Everything sent before the crash arrived: a thought, a dangling tool call, a chunk.
            assert len(client.of(AgentThoughtChunk)) == 1
            starts = client.of(ToolCallStart)
            assert len(starts) == 1 and starts[0].status == "in_progress"
            assert len(client.of(AgentMessageChunk)) == 1
            assert proc.stderr is not None
            assert b"crashing on purpose" in await proc.stderr.read()

    run(body)


def test_fail_raises_request_error(tmp_path: Path) -> None:
    async def body() -> None:
        client = RecordingClient(tmp_path)
        async with demo_agent(client, "--fast") as (conn, proc):
            _, session_id = await start_session(conn, client)
            with pytest.raises(RequestError) as info:
                await conn.prompt(session_id=session_id, prompt=prompt_of("fail"))
            assert info.value.code == -32603
            assert "on purpose" in str(info.value)
            # The agent survives a failed prompt.
            assert proc.returncode is None
            ok = await conn.prompt(session_id=session_id, prompt=prompt_of("echo-env NOPE_NOT_SET"))
            assert ok.stop_reason == "end_turn"
            assert "NOPE_NOT_SET=<unset>" in client.message_text()

    run(body)


def test_garbage_line_mid_turn(tmp_path: Path) -> None:
    async def body() -> None:
        client = RecordingClient(tmp_path)
        async with demo_agent(client, "--fast") as (conn, _):
            _, session_id = await start_session(conn, client)
            # The SDK's client logs and skips the non-JSON line; the turn still completes.
            watch = _LogWatch("Error parsing JSON-RPC message")
            logging.getLogger().addHandler(watch)
            try:
                response = await conn.prompt(session_id=session_id, prompt=prompt_of("garbage"))
            finally:
                logging.getLogger().removeHandler(watch)
            assert watch.seen.is_set()
            assert response.stop_reason == "end_turn"
            assert "Still here" in client.message_text()

    run(body)


def test_echo_env(tmp_path: Path) -> None:
    async def body() -> None:
        client = RecordingClient(tmp_path)
        async with demo_agent(client, "--fast", env={"DEMO_SECRET_THING": "s3cr3t"}) as (conn, _):
            _, session_id = await start_session(conn, client)
            await conn.prompt(session_id=session_id, prompt=prompt_of("ECHO-ENV DEMO_SECRET_THING"))
            assert client.message_text() == "DEMO_SECRET_THING=s3cr3t\n"

    run(body)


def test_fail_startup_exit(tmp_path: Path) -> None:
    async def body() -> None:
        client = RecordingClient(tmp_path)
        async with demo_agent(client, "--fail-startup", "exit") as (conn, proc):
            assert await asyncio.wait_for(proc.wait(), timeout=10.0) == 2
            assert proc.stderr is not None
            assert (await proc.stderr.read()).decode().strip() == "demo: refusing to start"
            with pytest.raises(ConnectionError):
                await conn.initialize(protocol_version=acp.PROTOCOL_VERSION)

    run(body)


def test_fail_startup_garbage(tmp_path: Path) -> None:
    async def body() -> None:
        # The SDK's reader logs (and skips) lines that are not JSON; that log is our signal.
        watch = _LogWatch("Error parsing JSON-RPC message")
        logging.getLogger().addHandler(watch)
        try:
            client = RecordingClient(tmp_path)
            async with demo_agent(client, "--fail-startup", "garbage") as (conn, proc):
                init = asyncio.ensure_future(conn.initialize(protocol_version=acp.PROTOCOL_VERSION))
                await asyncio.wait_for(watch.seen.wait(), timeout=10.0)
                assert not init.done() and proc.returncode is None
                init.cancel()
            # spawn_agent_process escalated (stdin close, then terminate) and the process is gone.
            assert proc.returncode is not None
        finally:
            logging.getLogger().removeHandler(watch)

    run(body)


def test_fail_startup_hang(tmp_path: Path) -> None:
    async def body() -> None:
        client = RecordingClient(tmp_path)
        async with demo_agent(client, "--fail-startup", "hang") as (conn, proc):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(conn.initialize(protocol_version=acp.PROTOCOL_VERSION), timeout=1.5)
            assert proc.returncode is None
        assert proc.returncode is not None

    run(body)


@pytest.mark.parametrize(("permission", "written"), [("allow_once", True), ("reject_once", False)])
def test_write_with_permission(tmp_path: Path, permission: str, written: bool) -> None:
    async def body() -> None:
        client = RecordingClient(tmp_path, permission=permission)
        async with demo_agent(client, "--fast") as (conn, _):
            _, session_id = await start_session(conn, client)
            response = await conn.prompt(
                session_id=session_id, prompt=prompt_of("write notes/out.txt hello demo world")
            )
            assert response.stop_reason == "end_turn"

            assert len(client.permission_requests) == 1
            tool_call, options = client.permission_requests[0]
            assert tool_call.kind == "edit"
            assert {o.kind for o in options} == {"allow_once", "allow_always", "reject_once", "reject_always"}
            start = client.of(ToolCallStart)[0]
            assert start.kind == "edit" and start.content and start.content[0].type == "diff"

            target = tmp_path / "notes" / "out.txt"
            final = client.of(ToolCallProgress)[-1]
            if written:
                assert target.read_text() == "hello demo world"
                assert final.status == "completed"
            else:
                assert not target.exists()
                assert final.status == "failed"
                assert "permission rejected, not writing" in client.message_text()

    run(body)


def test_write_allow_always_asks_once(tmp_path: Path) -> None:
    async def body() -> None:
        client = RecordingClient(tmp_path, permission="allow_always")
        async with demo_agent(client, "--fast") as (conn, _):
            _, session_id = await start_session(conn, client)
            await conn.prompt(session_id=session_id, prompt=prompt_of("write a.txt one"))
            await conn.prompt(session_id=session_id, prompt=prompt_of("write b.txt two"))
            assert len(client.permission_requests) == 1
            assert (tmp_path / "a.txt").read_text() == "one" and (tmp_path / "b.txt").read_text() == "two"

    run(body)


def test_cancel_while_permission_pending(tmp_path: Path) -> None:
    async def body() -> None:
        client = RecordingClient(tmp_path, permission="hold")
        async with demo_agent(client, "--fast") as (conn, _):
            _, session_id = await start_session(conn, client)
            turn = asyncio.ensure_future(conn.prompt(session_id=session_id, prompt=prompt_of("write held.txt x")))
            await client.wait_for(lambda: bool(client.permission_requests))
            await conn.cancel(session_id=session_id)
            # The agent gives up on the unanswered request instead of waiting for it.
            response = await asyncio.wait_for(turn, timeout=2.0)
            assert response.stop_reason == "cancelled"
            assert not (tmp_path / "held.txt").exists()

    run(body)


def test_file_errors_fail_the_tool_call(tmp_path: Path) -> None:
    async def body() -> None:
        workspace = tmp_path / "ws"
        workspace.mkdir()
        (tmp_path / "outside.txt").write_text("secret")
        client = RecordingClient(workspace)
        async with demo_agent(client, "--fast") as (conn, _):
            _, session_id = await start_session(conn, client)
            response = await conn.prompt(session_id=session_id, prompt=prompt_of("read ../outside.txt"))
            assert response.stop_reason == "end_turn"
            assert client.of(ToolCallProgress)[-1].status == "failed"
            assert "failed" in client.message_text()

    run(body)


def test_read_and_missing_capabilities(tmp_path: Path) -> None:
    async def body() -> None:
        (tmp_path / "data.txt").write_text("line one\nline two\n")
        client = RecordingClient(tmp_path)
        async with demo_agent(client, "--fast") as (conn, _):
            _, session_id = await start_session(conn, client)
            response = await conn.prompt(session_id=session_id, prompt=prompt_of("read data.txt"))
            assert response.stop_reason == "end_turn"
            start = client.of(ToolCallStart)[0]
            assert start.kind == "read"
            done = client.of(ToolCallProgress)[-1]
            assert done.status == "completed" and done.content[0].content.text == "line one\nline two\n"

        # A client without fs/terminal capabilities gets an explanation instead of a request.
        client = RecordingClient(tmp_path)
        async with demo_agent(client, "--fast") as (conn, _):
            _, session_id = await start_session(conn, client, caps=ClientCapabilities())
            for text in ("read data.txt", "write x.txt nope", "run echo hi"):
                response = await conn.prompt(session_id=session_id, prompt=prompt_of(text))
                assert response.stop_reason == "end_turn"
            assert client.of(ToolCallStart) == [] and client.permission_requests == []
            assert client.message_text().count("does not support") == 3
            assert not (tmp_path / "x.txt").exists()

    run(body)


def test_run_asks_then_runs_in_a_terminal(tmp_path: Path) -> None:
    async def body() -> None:
        client = RecordingClient(tmp_path)
        async with demo_agent(client, "--fast") as (conn, _):
            _, session_id = await start_session(conn, client)
            response = await conn.prompt(
                session_id=session_id, prompt=prompt_of(f"run {sys.executable} -c 'print(6 * 7)'")
            )
            assert response.stop_reason == "end_turn"
            start = client.of(ToolCallStart)[0]
            assert start.kind == "execute"
            ((request, options),) = client.permission_requests
            assert request.kind == "execute" and request.tool_call_id == start.tool_call_id
            assert request.raw_input == {"command": sys.executable, "args": ["-c", "print(6 * 7)"]}
            assert {o.kind for o in options} == {"allow_once", "allow_always", "reject_once", "reject_always"}
            assert client.commands == [[sys.executable, "-c", "print(6 * 7)"]]  # exactly what it asked for
            final = client.of(ToolCallProgress)[-1]
            assert final.status == "completed"
            assert final.raw_output["exit_code"] == 0 and final.raw_output["output"].strip() == "42"
            assert "exited with code 0" in client.message_text()

    run(body)


def test_rejected_run_creates_no_terminal(tmp_path: Path) -> None:
    async def body() -> None:
        client = RecordingClient(tmp_path, permission="reject_once")
        async with demo_agent(client, "--fast") as (conn, _):
            _, session_id = await start_session(conn, client)
            response = await conn.prompt(session_id=session_id, prompt=prompt_of("run touch ran.txt"))
            assert response.stop_reason == "end_turn"
            assert len(client.permission_requests) == 1
            assert client.commands == [] and not (tmp_path / "ran.txt").exists()
            assert client.of(ToolCallProgress)[-1].status == "failed"
            assert "permission rejected, not running touch" in client.message_text()

    run(body)


def test_run_direct_and_write_direct_do_not_ask(tmp_path: Path) -> None:
    async def body() -> None:
        client = RecordingClient(tmp_path, permission="reject_once")
        async with demo_agent(client, "--fast") as (conn, _):
            _, session_id = await start_session(conn, client)
            await conn.prompt(session_id=session_id, prompt=prompt_of("run-direct touch ran.txt"))
            await conn.prompt(session_id=session_id, prompt=prompt_of("write-direct out.txt no questions asked"))
            assert client.permission_requests == []
            assert client.commands == [["touch", "ran.txt"]] and (tmp_path / "ran.txt").exists()
            assert (tmp_path / "out.txt").read_text() == "no questions asked"
            assert [u.kind for u in client.of(ToolCallStart)] == ["execute", "edit"]

    run(body)


def test_run_swap_asks_for_one_command_and_runs_another(tmp_path: Path) -> None:
    async def body() -> None:
        client = RecordingClient(tmp_path)
        async with demo_agent(client, "--fast") as (conn, _):
            _, session_id = await start_session(conn, client)
            await conn.prompt(session_id=session_id, prompt=prompt_of("run-swap echo harmless -- touch sneaky.txt"))
            ((request, _),) = client.permission_requests
            assert request.raw_input == {"command": "echo", "args": ["harmless"]}
            assert client.commands == [["touch", "sneaky.txt"]]

    run(body)


@pytest.mark.parametrize(("permission", "edited"), [("allow_once", True), ("reject_once", False)])
def test_edit_proposes_a_diff_and_writes_on_allow(tmp_path: Path, permission: str, edited: bool) -> None:
    async def body() -> None:
        (tmp_path / "notes.txt").write_text("colour: red\nsize: big\n")
        client = RecordingClient(tmp_path, permission=permission)
        async with demo_agent(client, "--fast") as (conn, _):
            _, session_id = await start_session(conn, client)
            response = await conn.prompt(session_id=session_id, prompt=prompt_of("edit notes.txt 'colour: red' 'colour: blue'"))
            assert response.stop_reason == "end_turn"
            ((request, _),) = client.permission_requests
            assert request.kind == "edit"
            assert request.locations and request.locations[0].path == str(tmp_path / "notes.txt")
            (diff,) = request.content or []
            assert diff.type == "diff" and diff.path == str(tmp_path / "notes.txt")
            assert diff.old_text == "colour: red\nsize: big\n"
            assert diff.new_text == "colour: blue\nsize: big\n"
            after = (tmp_path / "notes.txt").read_text()
            if edited:
                assert after == "colour: blue\nsize: big\n"
                assert client.of(ToolCallProgress)[-1].status == "completed"
            else:
                assert after == "colour: red\nsize: big\n" and client.writes == []
                assert "permission rejected, not editing" in client.message_text()

    run(body)


def test_edit_of_missing_text_asks_nothing(tmp_path: Path) -> None:
    async def body() -> None:
        (tmp_path / "notes.txt").write_text("hello\n")
        client = RecordingClient(tmp_path)
        async with demo_agent(client, "--fast") as (conn, _):
            _, session_id = await start_session(conn, client)
            await conn.prompt(session_id=session_id, prompt=prompt_of("edit notes.txt absent present"))
            assert client.permission_requests == [] and client.writes == []
            assert client.of(ToolCallProgress)[-1].status == "failed"

    run(body)


def test_ask_empty_offers_no_options(tmp_path: Path) -> None:
    async def body() -> None:
        client = RecordingClient(tmp_path)
        async with demo_agent(client, "--fast") as (conn, _):
            _, session_id = await start_session(conn, client)
            response = await conn.prompt(session_id=session_id, prompt=prompt_of("ask-empty"))
            ((_, options),) = client.permission_requests
            assert options == []
            # No option can be picked, so the client's only answer is "cancelled": the turn unwinds.
            assert response.stop_reason == "cancelled"

    run(body)


@pytest.mark.parametrize("mode", ["garbage", "close-stdout"])
def test_on_cancel_misbehaves_and_the_turn_goes_on(tmp_path: Path, mode: str) -> None:
    async def body() -> None:
        client = RecordingClient(tmp_path)
        async with demo_agent(client, "--fast", "--on-cancel", mode) as (conn, proc):
            _, session_id = await start_session(conn, client)
            turn = asyncio.ensure_future(conn.prompt(session_id=session_id, prompt=prompt_of("slow 40 0.05")))
            await client.wait_for(lambda: len(client.of(AgentMessageChunk)) >= 2)
            watch = _LogWatch("Error parsing JSON-RPC message")
            logging.getLogger().addHandler(watch)
            try:
                await conn.cancel(session_id=session_id)
                if mode == "garbage":
                    # Waited on, not slept for: the non-JSON answer, then chunks that keep coming.
                    await asyncio.wait_for(watch.seen.wait(), 10)
                    sent = len(client.of(AgentMessageChunk))
                    await client.wait_for(lambda: len(client.of(AgentMessageChunk)) >= sent + 3)
            finally:
                logging.getLogger().removeHandler(watch)
            if mode == "garbage":
                assert proc.returncode is None, "the agent lives on"
                assert not turn.done(), "the cancel did not end the turn"
                turn.cancel()
            else:  # the protocol channel is gone: the client sees it closed, not a cancelled turn
                with pytest.raises(ConnectionError):
                    await asyncio.wait_for(turn, 5)
                assert proc.returncode is None, "the agent lives on with its stdout closed"
            with contextlib.suppress(BaseException):
                await turn

    run(body)


@pytest.mark.parametrize("module", ["demo", "demo_features", "demo_turn"])
def test_demo_imports_only_stdlib_and_acp(module: str) -> None:
    """The demo is a separate program: it must not import agh_nb (or anything but acp); its
    session features and its turns live in sibling modules under the same rule."""
    tree = ast.parse((REPO_ROOT / "agh_nb" / "agents" / f"{module}.py").read_text())
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative imports would pull in agh_nb"
            if node.module in ("agh_nb.agents.demo_features", "agh_nb.agents.demo_turn"):
                continue  # the demo's own siblings, held to the same rule
            roots.add((node.module or "").split(".")[0])
    assert roots - sys.stdlib_module_names == {"acp"}


PRESETS = REPO_ROOT / "agh_nb" / "agents" / "presets"


def read_agent_md(path: Path) -> dict[str, Any]:
    """The YAML front matter of an AGENT.md file."""
    _, front, body = path.read_text().split("---\n", 2)
    assert body.strip(), f"{path} has no description text"
    data = yaml.safe_load(front)
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("name", ["demo", "demo-fast", "claude", "gemini", "codex"])
def test_preset_front_matter(name: str) -> None:
    data = read_agent_md(PRESETS / name / "AGENT.md")
    assert set(data) <= {"name", "command", "env", "permissions", "description", "auth", "mcp_servers", "sandbox"}
    assert data["name"] == name
    assert isinstance(data["command"], list) and all(isinstance(arg, str) for arg in data["command"])
    for key, value in (data.get("env") or {}).items():
        # references only, never a literal secret; optional (``?``): the agent may be logged in another way
        assert value == f"env:{key}?"


def test_demo_fast_preset_command_starts_the_agent(tmp_path: Path) -> None:
    """The preset's argv, with {python} expanded as agh_nb does, is a working ACP agent."""
    command = [
        sys.executable if arg == "{python}" else arg
        for arg in read_agent_md(PRESETS / "demo-fast" / "AGENT.md")["command"]
    ]

    async def body() -> None:
        client = RecordingClient(tmp_path)
        async with acp.spawn_agent_process(
            cast(acp.Client, client), command[0], *command[1:], env={"PYTHONPATH": str(REPO_ROOT)}, cwd=tmp_path
        ) as (conn, _):
            _, session_id = await start_session(conn, client)
            started = time.monotonic()
            response = await conn.prompt(session_id=session_id, prompt=prompt_of("hello"))
            assert response.stop_reason == "end_turn"
            assert time.monotonic() - started < 1.0  # --fast: no pacing between the ~15 steps

    run(body)
