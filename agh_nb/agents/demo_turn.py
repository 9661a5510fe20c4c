"""The demo agent's sessions and turns: what it remembers per ACP session (``DemoSession``) and
``Turn``, one running prompt turn that emits ``session/update`` notifications and pauses, both
honouring ``session/cancel`` (``Cancelled`` unwinds a cancelled turn), plus the content helpers the
scripts share. Like the demo itself it imports only the standard library and ``acp``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import acp
from acp.schema import (
    AgentMessageChunk,
    AgentPlanUpdate,
    AgentThoughtChunk,
    ContentToolCallContent,
    FileEditToolCallContent,
    PlanEntry,
    PlanEntryPriority,
    PlanEntryStatus,
    PromptResponse,
    TerminalToolCallContent,
    TextContentBlock,
    ToolCallLocation,
    ToolCallProgress,
    ToolCallStart,
    ToolCallStatus,
    ToolKind,
)

ToolContent = ContentToolCallContent | FileEditToolCallContent | TerminalToolCallContent
T = TypeVar("T")


class Cancelled(Exception):
    """Raised inside a turn to unwind it once the client has sent ``session/cancel``."""


@dataclass
class DemoSession:
    """What the demo agent remembers about one ACP session (in memory only)."""

    session_id: str
    cwd: str
    # One turn at a time per session: ACP clients should not overlap prompts, and if one does
    # the second simply waits instead of interleaving two scripts in one transcript.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    current: Turn | None = None
    turns: int = 0
    used_tokens: int = 0
    cost_usd: float = 0.0
    # Tool kind ("edit", "execute") -> an "allow always" / "reject always" answer, so later
    # requests of that kind do not ask again.
    policies: dict[str, str] = field(default_factory=dict)


class Turn:
    """One running prompt turn: emits updates and pauses, both of which honour cancel."""

    def __init__(self, conn: acp.Client, session: DemoSession, delay: float) -> None:
        self.conn = conn
        self.session = session
        self.delay = delay
        # A fresh event per turn, so a late cancel for an earlier turn cannot leak into this one.
        self.cancel = asyncio.Event()
        self._tool_calls = 0

    @property
    def session_id(self) -> str:
        """The ACP session id this turn belongs to."""
        return self.session.session_id

    def check(self) -> None:
        """Raise ``Cancelled`` if the client cancelled the turn."""
        if self.cancel.is_set():
            raise Cancelled

    async def emit(self, update: Any) -> None:
        """Send one ``session/update``; nothing more is emitted once the turn is cancelled."""
        self.check()
        await self.conn.session_update(session_id=self.session_id, update=update)

    async def pause(self, seconds: float | None = None) -> None:
        """Wait ``seconds`` (default: the step delay), returning early by raising on cancel."""
        seconds = self.delay if seconds is None else seconds
        if seconds <= 0:
            self.check()
            return
        try:
            await asyncio.wait_for(self.cancel.wait(), timeout=seconds)
        except TimeoutError:
            return
        raise Cancelled

    async def guard(self, awaitable: Awaitable[T]) -> T:
        """Await a client request, abandoning it (and the turn) as soon as cancel arrives.

        The request future is cancelled locally; the SDK drops the client's late answer.
        """
        task = asyncio.ensure_future(awaitable)
        if self.cancel.is_set():
            task.cancel()
            raise Cancelled
        waiter = asyncio.ensure_future(self.cancel.wait())
        try:
            done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            task.cancel()
            raise
        finally:
            waiter.cancel()
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise Cancelled

    # -- update helpers -------------------------------------------------------------------

    async def message(self, text: str, meta: dict[str, Any] | None = None) -> None:
        """Emit one ``agent_message_chunk``."""
        await self.emit(AgentMessageChunk(session_update="agent_message_chunk", content=text_block(text), field_meta=meta))

    async def thought(self, text: str) -> None:
        """Emit one ``agent_thought_chunk``."""
        await self.emit(AgentThoughtChunk(session_update="agent_thought_chunk", content=text_block(text)))

    async def plan(self, entries: Sequence[tuple[str, PlanEntryPriority, PlanEntryStatus]]) -> None:
        """Emit a ``plan`` update from ``(content, priority, status)`` triples."""
        await self.emit(
            AgentPlanUpdate(
                session_update="plan",
                entries=[
                    PlanEntry(content=content, priority=priority, status=status)
                    for content, priority, status in entries
                ],
            )
        )

    def new_tool_call_id(self) -> str:
        """A tool call id that is unique in the session and stable across identical runs."""
        self._tool_calls += 1
        return f"demo-call-{self.session.turns}-{self._tool_calls}"

    async def tool_start(
        self,
        tool_call_id: str,
        title: str,
        *,
        kind: ToolKind,
        status: ToolCallStatus = "in_progress",
        raw_input: Any = None,
        content: Sequence[ToolContent] | None = None,
        locations: Sequence[str] | None = None,
    ) -> None:
        """Emit a ``tool_call`` (ToolCallStart)."""
        await self.emit(
            ToolCallStart(
                session_update="tool_call",
                tool_call_id=tool_call_id,
                title=title,
                kind=kind,
                status=status,
                raw_input=raw_input,
                content=list(content) if content is not None else None,
                locations=[ToolCallLocation(path=p) for p in locations] if locations else None,
            )
        )

    async def tool_update(
        self,
        tool_call_id: str,
        *,
        status: ToolCallStatus | None = None,
        content: Sequence[ToolContent] | None = None,
        raw_output: Any = None,
    ) -> None:
        """Emit a ``tool_call_update`` (ToolCallProgress)."""
        await self.emit(
            ToolCallProgress(
                session_update="tool_call_update",
                tool_call_id=tool_call_id,
                status=status,
                content=list(content) if content is not None else None,
                raw_output=raw_output,
            )
        )


def text_block(text: str) -> TextContentBlock:
    """A text content block."""
    return TextContentBlock(type="text", text=text)


async def unless_allowed(turn: Turn, call_id: str, decision: str | None, refusal: str) -> PromptResponse | None:
    """End the turn unless the permission was granted: cancelled (None) ends it quietly, a
    rejection fails the tool call and says ``refusal``. None means: go ahead."""
    if decision is None:
        return PromptResponse(stop_reason="end_turn")
    if decision.startswith("allow"):
        return None
    await turn.tool_update(call_id, status="failed", content=[text_content("permission rejected")])
    await turn.message(refusal)
    return PromptResponse(stop_reason="end_turn")


def text_content(text: str) -> ContentToolCallContent:
    """Tool call content holding plain text."""
    return acp.tool_content(text_block(text))
