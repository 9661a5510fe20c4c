"""The built-in ``demo`` ACP agent: a real, scripted, deterministic agent subprocess.

Run it as ``python -m agh_nb.agents.demo [--delay SECONDS] [--fast] [--fail-startup MODE]
[--no-load] [--fail-load] [--forget] [--fail-new] [--on-cancel garbage|close-stdout|ignore]`` plus the
session features of real agents, each off unless asked for (``demo_features``):
``--auth env:VAR|agent|terminal [--auth-at new|prompt] [--auth-code N] [--auth-always]``
(answer "authentication required" until ``authenticate``), ``--modes`` (modes, a model and a
boolean option), ``--commands`` (slash commands ``/echo`` and ``/mode``), ``--resume``,
``--close``, ``--fork`` (those session methods), ``--ignore-eof`` (keep running after stdin
closes while a session is open), ``--forget-as not-found|internal`` and ``--mcp-http``. It speaks the Agent Client Protocol (JSON-RPC over stdio) through the official
``acp`` SDK, so agh_nb can exercise every part of a session -- messages, thoughts, plans, tool
calls, file reads and writes, terminal commands, permission requests, usage, cancellation,
crashes and protocol garbage -- with no API key and no network.

This module is a separate process from agh_nb: it imports only the standard library, ``acp``
and its siblings ``demo_features`` (the session features of real agents) and ``demo_turn``
(sessions, turns and their updates), never anything else from ``agh_nb`` (the host must be able
to treat it exactly like a third-party agent).

What a prompt does is chosen by its first word (case-insensitive); see ``_SCRIPTS`` and the
``DemoAgent._script_*`` methods:

``firehose N [RATE]``     N message chunks, no delay (or RATE per second), each with ``_meta``
                          timing fields
``rawhose N [RATE]``      what ``firehose`` sends, each frame written by hand, not through the
                          SDK's models: a cheap load generator (many agents measure the host)
``slow N INTERVAL``       N message chunks INTERVAL seconds apart
``silent SECONDS``        nothing for SECONDS, then one chunk
``crash``                 a few updates, then the process exits with code 3 mid-turn
``fail``                  the prompt request fails with a JSON-RPC internal error
``garbage``               a non-JSON line on stdout mid-turn, then a normal end
``newer``                 one message chunk with a field from a newer protocol and an explicit null
``malformed``             session/update frames that break the schema, then a normal chunk
``close-stdout``          one chunk, then stdout is closed while the process lives on
``echo-env NAME``         one chunk with the value of environment variable NAME
``leak NAME``             the value of NAME in a chunk, a tool input and stderr, then exit 5
``write PATH TEXT...``    permission request (kind ``edit``, a diff), then ``fs/write_text_file``
``write-direct PATH TEXT...``  ``fs/write_text_file`` without asking
``edit PATH OLD NEW``     ``fs/read_text_file``, a diff (``oldText``/``newText``) replacing the
                          first OLD with NEW, permission request, ``fs/write_text_file`` on allow
``read PATH``             ``fs/read_text_file``
``run CMD...``            permission request (kind ``execute``, rawInput ``{command, args}``),
                          then ``terminal/create`` + wait + output + release; rejected: a failed
                          tool call and no terminal
``run-direct CMD...``     ``terminal/create`` without asking
``run-swap SHOWN... -- ACTUAL...``  asks to run SHOWN, then creates a terminal for ACTUAL
``ask-empty``             a permission request that offers no option at all
``huge-usage``            token counts past 64 bits (a usage_update and the prompt's usage)
``mcp``                   one chunk: the MCP servers the session received, as JSON
``ask-form``              an elicitation (form: colour, count, notify); replies with the answer
``ask-url``               a URL-mode elicitation (clients may decline it); replies with the answer
``/NAME ARGS``            a slash command: ``/echo ARGS`` and ``/mode`` (see ``--commands``)
``shell CMD...``          runs ``sh -c CMD`` itself (the agent's own shell, as Claude Code or
                          Codex do, not a client terminal); a tool call with the exit code and
                          output
``stream KIND SIZES TEXT``  TEXT streamed in chunks of SIZES characters (``3,5``: 3, then 5, then
                          5...) as KIND: ``message``, ``thought`` or ``tool`` (updates of one
                          tool call, each carrying one chunk)
anything else             the default script (thoughts, plan, chunks, two tool calls, usage)

Permission answers "allow always" / "reject always" are remembered per tool kind for the
session. ``--on-cancel`` makes ``session/cancel`` misbehave (a non-JSON line, closing stdout, or
``ignore``: the turn just goes on streaming, instead of cancelling the turn).

Keywords that take numbers fall back to the default script when the numbers do not parse, so
ordinary English ("slow down, please") still gets a normal answer.

stdout is the protocol channel: diagnostics go to stderr only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shlex
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn, cast

import acp
from acp import RequestError
from acp.core import DEFAULT_STDIO_BUFFER_LIMIT_BYTES

from agh_nb.agents.demo_features import Features, SessionFeatures
from agh_nb.agents.demo_turn import (
    Cancelled,
    DemoSession,
    ToolContent,
    Turn,
    text_content,
    unless_allowed,
)
from acp.schema import (
    AllowedOutcome,
    ClientCapabilities,
    Cost,
    FileEditToolCallContent,
    Implementation,
    InitializeResponse,
    LoadSessionResponse,
    NewSessionResponse,
    PermissionOption,
    PromptResponse,
    TextContentBlock,
    ToolCallLocation,
    ToolCallUpdate,
    ToolKind,
    Usage,
    UsageUpdate,
)

__all__ = ["AGENT_NAME", "DemoAgent", "main"]

AGENT_NAME = "agh-demo"
AGENT_VERSION = "0.1.0"
SESSION_PREFIX = "demo-"
DEFAULT_DELAY = 0.15
# Pretend context window for usage_update; any stable number works, this one looks familiar.
CONTEXT_WINDOW = 200_000
# Pretend price per token (USD) so usage_update carries a deterministic, non-zero cost.
PRICE_PER_TOKEN_USD = 0.000003
# Terminal output we ask the client to keep; the demo only needs a short transcript.
TERMINAL_OUTPUT_LIMIT = 64 * 1024

# The four standard permission options. Option ids follow the decision spelling agh_nb uses
# (``allow-once``...), kinds are the ACP enum; clients should match on ``kind``.
PERMISSION_OPTIONS: tuple[PermissionOption, ...] = (
    PermissionOption(option_id="allow-once", name="Allow once", kind="allow_once"),
    PermissionOption(option_id="allow-always", name="Always allow", kind="allow_always"),
    PermissionOption(option_id="reject-once", name="Reject", kind="reject_once"),
    PermissionOption(option_id="reject-always", name="Always reject", kind="reject_always"),
)
_OPTION_KIND_BY_ID = {option.option_id: option.kind for option in PERMISSION_OPTIONS}


# Named explicitly: under ``python -m`` this module's __name__ is "__main__".
log = logging.getLogger("agh_nb.agents.demo")


def _prompt_text(blocks: Sequence[Any]) -> str:
    """The text of a prompt; non-text blocks (images, resources) are ignored by the demo."""
    return "\n".join(block.text for block in blocks if isinstance(block, TextContentBlock))


def _usage_for(text: str) -> Usage:
    """Token usage derived only from the prompt text, so identical prompts give identical numbers."""
    words = len(text.split())
    input_tokens = 16 + 4 * words
    output_tokens = 24 + 2 * words
    thought_tokens = 8 + words
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        thought_tokens=thought_tokens,
        total_tokens=input_tokens + output_tokens + thought_tokens,
    )


def _shorten(text: str, limit: int = 200) -> str:
    """Collapse whitespace and bound the length of text quoted back to the user."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "\u2026"


class DemoAgent(SessionFeatures):
    """A scripted ACP agent; see the module docstring for the prompt words it understands."""

    def __init__(
        self, *, delay: float = DEFAULT_DELAY, load_session: bool = True, features: Features | None = None
    ) -> None:
        self._init_features(features)
        self.delay = delay
        self.load_enabled = load_session
        self.fail_load = False
        self.forget = False
        self.fail_new = False
        # What a session/cancel does while a turn runs: None (cancel it), "garbage" (write a
        # non-JSON line instead, and go on), "close-stdout" (close the protocol channel, go on).
        self.on_cancel: str | None = None
        self._conn: acp.Client | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._client_caps = ClientCapabilities()
        self._sessions: dict[str, DemoSession] = {}

    # -- wiring ---------------------------------------------------------------------------

    def on_connect(self, conn: acp.Client) -> None:
        """Keep the client connection (the SDK calls this while building the connection)."""
        self._conn = conn

    def attach_writer(self, writer: asyncio.StreamWriter) -> None:
        """Keep the stdout stream writer so ``garbage`` and ``crash`` can use the same pipe."""
        self._writer = writer

    @property
    def conn(self) -> acp.Client:
        """The client connection; it exists before any request can arrive."""
        if self._conn is None:  # pragma: no cover - run_agent always connects first
            raise RuntimeError("demo agent is not connected")
        return self._conn

    # -- ACP agent methods ----------------------------------------------------------------

    async def initialize(
        self,
        protocol_version: int,
        client_capabilities: ClientCapabilities | None = None,
        client_info: Implementation | None = None,
        **kwargs: Any,
    ) -> InitializeResponse:
        """Answer the handshake and remember what the client can do (fs, terminal)."""
        self._client_caps = client_capabilities or ClientCapabilities()
        return InitializeResponse(
            protocol_version=acp.PROTOCOL_VERSION,
            agent_capabilities=self.capabilities(load_session=self.load_enabled),
            agent_info=Implementation(name=AGENT_NAME, title="AGH demo agent", version=AGENT_VERSION),
            auth_methods=self.auth_methods(),
        )

    async def new_session(
        self,
        cwd: str,
        additional_directories: list[str] | None = None,
        mcp_servers: list[Any] | None = None,
        **kwargs: Any,
    ) -> NewSessionResponse:
        """Create a session with a fresh ``demo-<hex>`` id."""
        if self.fail_new:
            raise RequestError(-32603, "demo agent refuses new sessions", {"details": "--fail-new"})
        self.require_auth("new")
        session_id = f"{SESSION_PREFIX}{uuid.uuid4().hex}"
        self._sessions[session_id] = DemoSession(session_id=session_id, cwd=cwd)
        return NewSessionResponse(session_id=session_id, **self.opened(session_id, mcp_servers))

    async def load_session(
        self,
        cwd: str,
        session_id: str,
        mcp_servers: list[Any] | None = None,
        additional_directories: list[str] | None = None,
        **kwargs: Any,
    ) -> LoadSessionResponse:
        """Accept any ``demo-`` id (the demo keeps no history, so there is nothing to replay)."""
        if not self.load_enabled:
            raise RequestError.method_not_found(acp.AGENT_METHODS["session_load"])
        if self.fail_load:
            raise RequestError(-32603, "demo agent cannot load sessions today", {"details": "--fail-load"})
        self._reopen(session_id, cwd)
        return LoadSessionResponse(**self.opened(session_id, mcp_servers))

    def _reopen(self, session_id: str, cwd: str) -> None:
        """Load or resume: any ``demo-`` id is known (the demo keeps no history)."""
        self.require_auth("new")
        if self.forget or not session_id.startswith(SESSION_PREFIX):
            raise self.unknown_session(session_id)
        session = self._sessions.get(session_id)
        if session is None:
            self._sessions[session_id] = DemoSession(session_id=session_id, cwd=cwd)
        else:
            session.cwd = cwd

    async def resume_session(
        self,
        session_id: str,
        cwd: str,
        additional_directories: list[str] | None = None,
        mcp_servers: list[Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """``session/resume`` (``--resume``): like load, without replaying anything."""
        from acp.schema import ResumeSessionResponse

        if not self.features.resume:
            raise RequestError.method_not_found(acp.AGENT_METHODS["session_resume"])
        self._reopen(session_id, cwd)
        return ResumeSessionResponse(**self.opened(session_id, mcp_servers))

    async def fork_session(
        self,
        session_id: str,
        cwd: str,
        additional_directories: list[str] | None = None,
        mcp_servers: list[Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """``session/fork`` (``--fork``): a new session that starts where ``session_id`` is."""
        from acp.schema import ForkSessionResponse

        if not self.features.fork:
            raise RequestError.method_not_found(acp.AGENT_METHODS["session_fork"])
        self.require_auth("new")
        if not session_id.startswith(SESSION_PREFIX):
            raise self.unknown_session(session_id)
        forked = f"{SESSION_PREFIX}{uuid.uuid4().hex}"
        self._sessions[forked] = DemoSession(session_id=forked, cwd=cwd)
        parent = self._settings.get(session_id)
        if parent is not None:
            self._settings[forked] = type(parent)(mode=parent.mode, model=parent.model, verbose=parent.verbose)
        return ForkSessionResponse(session_id=forked, **self.opened(forked, mcp_servers))

    async def cancel(self, session_id: str, **kwargs: Any) -> None:
        """Cancel the running turn of a session, if any (a notification: nothing to answer).

        With ``--on-cancel garbage`` the agent answers the notification with a line that is not
        JSON instead; with ``--on-cancel close-stdout`` it closes its stdout; either way the turn
        goes on (a cancel that fails, for clients to classify).
        """
        session = self._sessions.get(session_id)
        if session is None or session.current is None:
            return
        if self.on_cancel == "garbage":
            log.warning("answering session/cancel with garbage on purpose")
            await self._write_raw(b"cancel? never heard of it\n")
            return
        if self.on_cancel == "close-stdout":
            log.warning("closing stdout on session/cancel on purpose")
            await self._close_stdout()
            return
        if self.on_cancel == "ignore":
            log.warning("ignoring session/cancel on purpose")
            return
        session.current.cancel.set()

    async def prompt(self, prompt: list[Any], session_id: str, **kwargs: Any) -> PromptResponse:
        """Run the script chosen by the prompt's first word."""
        session = self._sessions.get(session_id)
        if session is None:
            raise RequestError.resource_not_found(session_id)
        self.require_auth("prompt")
        text = _prompt_text(prompt)
        async with session.lock:
            session.turns += 1
            turn = Turn(self.conn, session, self.delay)
            session.current = turn
            try:
                return await self._dispatch(turn, text)
            except Cancelled:
                return PromptResponse(stop_reason="cancelled")
            finally:
                session.current = None

    # -- scripts --------------------------------------------------------------------------

    async def _dispatch(self, turn: Turn, text: str) -> PromptResponse:
        """Pick a script by the first word; scripts return None to fall back to the default."""
        if text.startswith("/"):  # a slash command arrives as the prompt's text, exactly as typed
            await turn.message(self.slash_reply(turn.session_id, text) + "\n")
            return PromptResponse(stop_reason="end_turn")
        parts = text.split(maxsplit=1)
        word = parts[0].lower() if parts else ""
        rest = parts[1] if len(parts) > 1 else ""
        script = _SCRIPTS.get(word)
        if script is not None:
            response = await script(self, turn, rest)
            if response is not None:
                return response
        return await self._script_default(turn, text)

    async def _script_default(self, turn: Turn, text: str) -> PromptResponse:
        """Thoughts, a plan, message chunks, two tool calls, usage; ends with ``end_turn``."""
        words = text.split()
        quoted = _shorten(text) or "(an empty prompt)"
        # The "search" looks for the longest word (first one wins ties): stable and prompt-derived.
        query = max(words, key=len) if words else ""
        matches = 1 + len(text) % 5

        await turn.thought(f"The user wrote {len(words)} word(s); I should answer briefly.")
        await turn.pause()
        await turn.thought("Plan: understand the request, look a couple of things up, then reply.")
        await turn.pause()
        await turn.plan(
            [
                ("Understand the request", "high", "completed"),
                ("Look things up", "medium", "in_progress"),
                ("Write the answer", "medium", "pending"),
            ]
        )
        await turn.pause()
        for chunk in ("You said: ", f"\u201c{quoted}\u201d. ", "Let me check a couple of things.\n"):
            await turn.message(chunk)
            await turn.pause()

        think_id = turn.new_tool_call_id()
        await turn.tool_start(think_id, "Think about the request", kind="think", raw_input={"prompt": text})
        await turn.pause()
        await turn.tool_update(
            think_id,
            status="completed",
            content=[text_content(f"The prompt has {len(words)} words and {len(text)} characters.")],
            raw_output={"words": len(words), "characters": len(text)},
        )
        await turn.pause()

        search_id = turn.new_tool_call_id()
        await turn.tool_start(
            search_id, f"Search notes for \u201c{query}\u201d", kind="search", raw_input={"query": query}
        )
        await turn.pause()
        await turn.tool_update(
            search_id,
            status="completed",
            content=[text_content(f"{matches} note(s) mention \u201c{query}\u201d.")],
            raw_output={"query": query, "matches": matches},
        )
        await turn.pause()

        await turn.message(f"I found {matches} note(s) about \u201c{query}\u201d. ")
        await turn.pause()
        await turn.message("That is all for now \u2014 this reply came from the agh demo agent.\n")
        await turn.pause()

        usage = _usage_for(text)
        session = turn.session
        session.used_tokens += usage.total_tokens
        session.cost_usd += usage.total_tokens * PRICE_PER_TOKEN_USD
        await turn.emit(
            UsageUpdate(
                session_update="usage_update",
                used=min(session.used_tokens, CONTEXT_WINDOW),
                size=CONTEXT_WINDOW,
                cost=Cost(amount=round(session.cost_usd, 6), currency="USD"),
            )
        )
        return PromptResponse(stop_reason="end_turn", usage=usage)

    async def _script_firehose(self, turn: Turn, rest: str) -> PromptResponse | None:
        """``firehose N [RATE]``: N chunks as fast as the pipe allows (or RATE a second, on a fixed
        schedule), stamped for latency benchmarks."""
        args = rest.split()
        count = _parse_int(args[0] if args else "", default=1000)
        rate = _parse_float(args[1], default=0.0) if len(args) > 1 else 0.0
        if count is None or rate is None or rate < 0:
            return None
        start = time.monotonic()
        for index in range(count):
            if rate:
                # A fixed schedule, not a sleep per chunk: timer granularity does not lower the rate.
                ahead = start + index / rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
            # Awaiting each update applies the pipe's backpressure and keeps memory flat: at most
            # one serialised message is pending, whatever N is.
            await turn.message(
                f"{index} ",
                meta={"agh_demo_sent_at": time.time(), "agh_demo_index": index},
            )
        return PromptResponse(stop_reason="end_turn")

    async def _script_rawhose(self, turn: Turn, rest: str) -> PromptResponse | None:
        """``rawhose N [RATE]``: the chunks of ``firehose``, each ``session/update`` frame built as
        bytes and written on the protocol channel. Building and validating the SDK's models is
        most of an agent's cost per chunk; fifty agents streaming at once would otherwise load
        the machine more than the host they are measuring."""
        args = rest.split()
        count = _parse_int(args[0] if args else "", default=1000)
        rate = _parse_float(args[1], default=0.0) if len(args) > 1 else 0.0
        if count is None or rate is None or rate < 0:
            return None
        head = (
            '{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":'
            + json.dumps(turn.session_id)
            + ',"update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"'
        ).encode("utf-8")
        start = time.monotonic()
        for index in range(count):
            if rate:
                ahead = start + index / rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
            turn.check()
            await self._write_raw(
                b'%s%d "},"_meta":{"agh_demo_sent_at":%r,"agh_demo_index":%d}}}}\n'
                % (head, index, time.time(), index)
            )
        return PromptResponse(stop_reason="end_turn")

    async def _script_slow(self, turn: Turn, rest: str) -> PromptResponse | None:
        """``slow N INTERVAL``: N chunks INTERVAL seconds apart."""
        args = rest.split()
        count = _parse_int(args[0] if args else "", default=10)
        interval = _parse_float(args[1] if len(args) > 1 else "", default=0.5)
        if count is None or interval is None:
            return None
        for index in range(count):
            await turn.message(f"slow chunk {index + 1}/{count}\n")
            if index + 1 < count:
                await turn.pause(interval)
        return PromptResponse(stop_reason="end_turn")

    async def _script_silent(self, turn: Turn, rest: str) -> PromptResponse | None:
        """``silent SECONDS``: no activity at all (inactivity-timeout testing), then one chunk."""
        seconds = _parse_float(rest, default=5.0)
        if seconds is None:
            return None
        await turn.pause(seconds)
        await turn.message(f"Back after {seconds:g} s of silence.\n")
        return PromptResponse(stop_reason="end_turn")

    async def _script_crash(self, turn: Turn, rest: str) -> NoReturn:
        """``crash``: start a tool call, say one thing, then die with exit code 3 mid-turn."""
        await turn.thought("Something is about to go badly wrong.")
        await turn.pause()
        await turn.tool_start(
            turn.new_tool_call_id(), "Doing something risky", kind="other", raw_input={"risk": "high"}
        )
        await turn.pause()
        await turn.message("Crashing now.\n")
        await turn.pause()
        await self._flush_stdout()
        log.error("crashing on purpose (exit code 3)")
        logging.shutdown()
        # os._exit: no cleanup, no protocol goodbye -- exactly like a real agent crash.
        os._exit(3)

    async def _script_fail(self, turn: Turn, rest: str) -> NoReturn:
        """``fail``: the prompt request itself fails with a JSON-RPC internal error."""
        await turn.thought("This request is going to fail.")
        await turn.pause()
        raise RequestError(-32603, "demo agent failed on purpose", {"details": "prompt word 'fail'"})

    async def _script_garbage(self, turn: Turn, rest: str) -> PromptResponse:
        """``garbage``: a non-JSON line on the protocol channel mid-turn, then carry on."""
        await turn.message("About to write a line that is not JSON.\n")
        await turn.pause()
        turn.check()
        await self._write_raw(b"this is not json\n")
        log.warning("wrote a garbage line to stdout on purpose")
        await turn.pause()
        await turn.message("Still here after the garbage line.\n")
        return PromptResponse(stop_reason="end_turn")

    async def _script_newer(self, turn: Turn, rest: str) -> PromptResponse:
        """``newer``: a message chunk as an agent on a newer protocol might send it (a field
        this SDK has no model for, an explicit null), written as a frame of its own because the
        SDK's models would drop both. The client should keep it exactly as received."""
        turn.check()
        frame = {
            "jsonrpc": "2.0",
            "method": "session/update",
            "params": {"sessionId": turn.session_id, "update": NEWER_UPDATE},
        }
        line = json.dumps(frame, separators=(",", ":")).encode("utf-8") + b"\n"
        writer = self._writer
        if writer is not None:  # the SDK's own stdout transport: one write per frame
            writer.write(line)
            await writer.drain()
        else:  # pragma: no cover - only when run_agent owns the streams
            os.write(sys.stdout.fileno(), line)
        await turn.pause()
        return PromptResponse(stop_reason="end_turn")

    async def _script_malformed(self, turn: Turn, rest: str) -> PromptResponse:
        """``malformed``: ``session/update`` frames that break the schema (``MALFORMED_PARAMS``),
        each written as a frame of its own (the SDK's models would refuse them), then a normal
        chunk. The client should keep each as a readable event and carry on."""
        turn.check()
        for params in MALFORMED_PARAMS:
            if isinstance(params, dict):
                params = {"sessionId": turn.session_id, **params}
            frame = {"jsonrpc": "2.0", "method": "session/update", "params": params}
            await self._write_raw(json.dumps(frame, separators=(",", ":")).encode("utf-8") + b"\n")
        await turn.message("Still here after the malformed updates.\n")
        return PromptResponse(stop_reason="end_turn")

    async def _script_close_stdout(self, turn: Turn, rest: str) -> PromptResponse | None:
        """``close-stdout``: close the protocol channel but keep running (a transport failure)."""
        await turn.message("Closing my stdout now.\n")
        await self._close_stdout()
        await asyncio.sleep(3600)
        return None

    async def _script_leak(self, turn: Turn, rest: str) -> PromptResponse | None:
        """``leak NAME``: echo an env var everywhere it could escape (message, tool input,
        stderr), then crash: the host must scrub it from everything it writes."""
        name = (rest.split() or ["AGH_DEMO_SECRET"])[0]
        value = os.environ.get(name, "<unset>")
        await turn.message(f"The secret {name} is {value}\n")
        call_id = turn.new_tool_call_id()
        await turn.tool_start(call_id, f"Use {value}", kind="other", raw_input={"secret": value})
        await turn.pause()
        sys.stderr.write(f"demo: fatal: cannot use credential {value}\n")
        sys.stderr.flush()
        if self._writer is not None:
            await self._writer.drain()
        os._exit(5)

    async def _script_echo_env(self, turn: Turn, rest: str) -> PromptResponse:
        """``echo-env NAME``: report an environment variable (checks env/vault plumbing)."""
        names = rest.split()
        if not names:
            await turn.message("usage: echo-env NAME\n")
            return PromptResponse(stop_reason="end_turn")
        name = names[0]
        await turn.message(f"{name}={os.environ.get(name, '<unset>')}\n")
        return PromptResponse(stop_reason="end_turn")

    async def _script_shell(self, turn: Turn, rest: str) -> PromptResponse:
        """``shell CMD...``: run ``sh -c CMD`` as this process's own child (not a client terminal),
        the way real agents run their own tools; report the exit code and output in a tool call."""
        if not rest.strip():
            await turn.message("usage: shell CMD...\n")
            return PromptResponse(stop_reason="end_turn")
        call_id = turn.new_tool_call_id()
        await turn.tool_start(call_id, f"Shell {_shorten(rest, 80)}", kind="execute", raw_input={"command": rest})
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", rest, cwd=turn.session.cwd, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await turn.guard(proc.communicate())
        text = output.decode("utf-8", "replace")
        await turn.tool_update(
            call_id,
            status="completed" if proc.returncode == 0 else "failed",
            content=[text_content(text)],
            raw_output={"exit_code": proc.returncode, "output": text},
        )
        await turn.message(f"shell exited with code {proc.returncode}\n")
        return PromptResponse(stop_reason="end_turn")

    async def _script_stream(self, turn: Turn, rest: str) -> PromptResponse | None:
        """``stream KIND SIZES TEXT``: TEXT in chunks of the given sizes, as message chunks,
        thought chunks, or content updates of one tool call (``tool``)."""
        parts = rest.split(" ", 2)
        if len(parts) < 3 or parts[0] not in ("message", "thought", "tool"):
            await turn.message("usage: stream message|thought|tool SIZES TEXT\n")
            return PromptResponse(stop_reason="end_turn")
        kind, spec, text = parts
        try:
            sizes = [int(n) for n in spec.split(",")]
        except ValueError:
            sizes = []
        if not sizes or min(sizes) < 1:
            await turn.message("stream: SIZES is a comma-separated list of positive integers\n")
            return PromptResponse(stop_reason="end_turn")
        chunks: list[str] = []
        index = 0
        while index < len(text):
            size = sizes[min(len(chunks), len(sizes) - 1)]
            chunks.append(text[index : index + size])
            index += size
        call_id = turn.new_tool_call_id() if kind == "tool" else ""
        if kind == "tool":
            await turn.tool_start(call_id, "Streaming output", kind="other", raw_input={"chunks": len(chunks)})
        for chunk in chunks:
            if kind == "message":
                await turn.message(chunk)
            elif kind == "thought":
                await turn.thought(chunk)
            else:
                await turn.tool_update(call_id, status="in_progress", content=[text_content(chunk)])
            await turn.pause()
        if kind == "tool":
            await turn.tool_update(call_id, status="completed")
        return PromptResponse(stop_reason="end_turn")

    async def _ask(
        self,
        turn: Turn,
        call_id: str,
        title: str,
        *,
        kind: ToolKind,
        raw_input: Any,
        content: Sequence[ToolContent] | None = None,
        locations: Sequence[str] | None = None,
        options: Sequence[PermissionOption] = PERMISSION_OPTIONS,
    ) -> str | None:
        """Ask ``session/request_permission`` for a pending tool call; return the chosen option's
        kind (``allow_once``...), or None when the request itself failed (the tool call is failed
        and said so). An "always" answer is remembered per tool kind and not asked again; a
        ``cancelled`` outcome (the client cancelled the turn) unwinds the turn."""
        remembered = turn.session.policies.get(kind)
        if remembered is not None:
            return remembered
        try:
            response = await turn.guard(
                self.conn.request_permission(
                    session_id=turn.session_id,
                    tool_call=ToolCallUpdate(
                        tool_call_id=call_id,
                        title=title,
                        kind=kind,
                        status="pending",
                        content=list(content) if content is not None else None,
                        locations=[ToolCallLocation(path=p) for p in locations] if locations else None,
                        raw_input=raw_input,
                    ),
                    options=list(options),
                )
            )
        except RequestError as exc:
            await turn.tool_update(call_id, status="failed", content=[text_content(f"permission error: {exc}")])
            await turn.message(f"The permission request failed ({exc}), not going ahead.\n")
            return None
        outcome = response.outcome
        if not isinstance(outcome, AllowedOutcome):
            raise Cancelled  # "cancelled": the client cancelled the turn while we were asking
        decision = _OPTION_KIND_BY_ID.get(outcome.option_id, "reject_once")
        if decision in ("allow_always", "reject_always"):
            turn.session.policies[kind] = decision
        return decision

    async def _script_write(self, turn: Turn, rest: str) -> PromptResponse:
        """``write PATH TEXT...``: ask permission, then write TEXT through the client."""
        return await self._write(turn, rest, ask=True)

    async def _script_write_direct(self, turn: Turn, rest: str) -> PromptResponse:
        """``write-direct PATH TEXT...``: write TEXT through the client without asking first
        (what the client's permission mode alone must stop)."""
        return await self._write(turn, rest, ask=False)

    async def _write(self, turn: Turn, rest: str, *, ask: bool) -> PromptResponse:
        word = "write" if ask else "write-direct"
        parts = rest.split(maxsplit=1)
        if not parts:
            await turn.message(f"usage: {word} PATH TEXT...\n")
            return PromptResponse(stop_reason="end_turn")
        path = self._resolve(turn.session, parts[0])
        content = parts[1] if len(parts) > 1 else ""
        if not (self._client_caps.fs and self._client_caps.fs.write_text_file):
            await turn.message(f"The client does not support fs/write_text_file, so I cannot write {path}.\n")
            return PromptResponse(stop_reason="end_turn")

        call_id = turn.new_tool_call_id()
        title = f"Write {path}"
        diff = acp.tool_diff_content(path, content)
        raw_input = {"path": path, "content": content}
        await turn.tool_start(
            call_id, title, kind="edit", status="pending", raw_input=raw_input, content=[diff], locations=[path]
        )
        await turn.pause()
        if ask:
            decision = await self._ask(
                turn, call_id, title, kind="edit", raw_input=raw_input, content=[diff], locations=[path]
            )
            refused = await unless_allowed(turn, call_id, decision, "permission rejected, not writing\n")
            if refused is not None:
                return refused
        return await self._write_through(turn, call_id, path, content, diff)

    async def _write_through(
        self, turn: Turn, call_id: str, path: str, content: str, diff: FileEditToolCallContent
    ) -> PromptResponse:
        """``fs/write_text_file`` for a tool call, then complete (or fail) it."""
        await turn.tool_update(call_id, status="in_progress")
        await turn.pause()
        try:
            await turn.guard(self.conn.write_text_file(session_id=turn.session_id, path=path, content=content))
        except RequestError as exc:
            await turn.tool_update(call_id, status="failed", content=[text_content(f"write failed: {exc}")])
            await turn.message(f"Writing {path} failed: {exc}\n")
            return PromptResponse(stop_reason="end_turn")
        size = len(content.encode("utf-8"))
        await turn.tool_update(call_id, status="completed", content=[diff], raw_output={"path": path, "bytes": size})
        await turn.pause()
        await turn.message(f"Wrote {size} bytes to {path}.\n")
        return PromptResponse(stop_reason="end_turn")

    async def _script_edit(self, turn: Turn, rest: str) -> PromptResponse:
        """``edit PATH OLD NEW``: read PATH, propose replacing the first OLD with NEW as a diff
        (``oldText`` / ``newText``), ask permission, and write the result on allow."""
        try:
            args = shlex.split(rest)
        except ValueError:
            args = rest.split()
        if len(args) != 3:
            await turn.message("usage: edit PATH OLD NEW (quote OLD and NEW when they hold spaces)\n")
            return PromptResponse(stop_reason="end_turn")
        fs = self._client_caps.fs
        path, old, new = self._resolve(turn.session, args[0]), args[1], args[2]
        if not (fs and fs.read_text_file and fs.write_text_file):
            await turn.message(f"The client cannot read and write files, so I cannot edit {path}.\n")
            return PromptResponse(stop_reason="end_turn")

        call_id = turn.new_tool_call_id()
        title = f"Edit {path}"
        raw_input: dict[str, Any] = {"path": path, "old": old, "new": new}
        await turn.tool_start(call_id, title, kind="edit", status="pending", raw_input=raw_input, locations=[path])
        await turn.pause()
        try:
            current = (await turn.guard(self.conn.read_text_file(session_id=turn.session_id, path=path))).content
        except RequestError as exc:
            await turn.tool_update(call_id, status="failed", content=[text_content(f"read failed: {exc}")])
            await turn.message(f"Reading {path} failed: {exc}\n")
            return PromptResponse(stop_reason="end_turn")
        if old not in current:
            await turn.tool_update(call_id, status="failed", content=[text_content(f"{old!r} is not in {path}")])
            await turn.message(f"{old!r} does not occur in {path}; nothing to edit.\n")
            return PromptResponse(stop_reason="end_turn")
        updated = current.replace(old, new, 1)
        diff = acp.tool_diff_content(path, updated, current)
        await turn.tool_update(call_id, content=[diff])
        decision = await self._ask(turn, call_id, title, kind="edit", raw_input=raw_input, content=[diff], locations=[path])
        refused = await unless_allowed(turn, call_id, decision, "permission rejected, not editing\n")
        if refused is not None:
            return refused
        return await self._write_through(turn, call_id, path, updated, diff)

    async def _script_huge_usage(self, turn: Turn, rest: str) -> PromptResponse:
        """``huge-usage``: token counts past 64 bits (ACP sets no upper bound) in a usage_update
        and in the prompt's answer, for clients whose storage is narrower."""
        await turn.message("Counting a great many tokens.\n")
        await turn.emit(UsageUpdate(session_update="usage_update", used=2**64 + 1, size=2**64 + 2))
        usage = Usage(input_tokens=2**63, output_tokens=5, total_tokens=2**63 + 5)
        return PromptResponse(stop_reason="end_turn", usage=usage)

    async def _script_ask_empty(self, turn: Turn, rest: str) -> PromptResponse:
        """``ask-empty``: a permission request that offers no option at all (a broken agent: the
        client cannot pick an answer), then whatever the answer, end the turn."""
        call_id = turn.new_tool_call_id()
        title = "Do something unspecified"
        await turn.tool_start(call_id, title, kind="other", status="pending", raw_input={"what": rest or None})
        decision = await self._ask(turn, call_id, title, kind="other", raw_input={"what": rest or None}, options=())
        await turn.tool_update(call_id, status="failed", content=[text_content(f"answer: {decision}")])
        return PromptResponse(stop_reason="end_turn")

    async def _script_mcp(self, turn: Turn, rest: str) -> PromptResponse:
        """``mcp``: the MCP servers this session received (values included, as a real agent has them)."""
        await turn.message(self.mcp_report(turn.session_id))
        return PromptResponse(stop_reason="end_turn")

    async def _script_ask_form(self, turn: Turn, rest: str) -> PromptResponse:
        """``ask-form``: a form-mode elicitation; the reply says what the user answered."""
        await turn.message(await turn.guard(self.ask_form(turn.session_id)) + "\n")
        return PromptResponse(stop_reason="end_turn")

    async def _script_ask_url(self, turn: Turn, rest: str) -> PromptResponse:
        """``ask-url``: a URL-mode elicitation; the reply says how the client answered."""
        await turn.message(await turn.guard(self.ask_form(turn.session_id, url=True)) + "\n")
        return PromptResponse(stop_reason="end_turn")

    async def _script_read(self, turn: Turn, rest: str) -> PromptResponse:
        """``read PATH``: read a file through the client."""
        if not rest.strip():
            await turn.message("usage: read PATH\n")
            return PromptResponse(stop_reason="end_turn")
        path = self._resolve(turn.session, rest.strip())
        if not (self._client_caps.fs and self._client_caps.fs.read_text_file):
            await turn.message(f"The client does not support fs/read_text_file, so I cannot read {path}.\n")
            return PromptResponse(stop_reason="end_turn")

        call_id = turn.new_tool_call_id()
        await turn.tool_start(call_id, f"Read {path}", kind="read", raw_input={"path": path}, locations=[path])
        await turn.pause()
        try:
            response = await turn.guard(self.conn.read_text_file(session_id=turn.session_id, path=path))
        except RequestError as exc:
            await turn.tool_update(call_id, status="failed", content=[text_content(f"read failed: {exc}")])
            await turn.message(f"Reading {path} failed: {exc}\n")
            return PromptResponse(stop_reason="end_turn")
        text = response.content
        lines = len(text.splitlines())
        await turn.tool_update(
            call_id,
            status="completed",
            content=[text_content(text)],
            raw_output={"path": path, "lines": lines, "characters": len(text)},
        )
        await turn.pause()
        await turn.message(f"Read {lines} line(s), {len(text)} characters, from {path}.\n")
        return PromptResponse(stop_reason="end_turn")

    async def _script_run(self, turn: Turn, rest: str) -> PromptResponse:
        """``run CMD...``: ask permission (kind ``execute``, rawInput ``{command, args}``), then run
        the command in a client terminal and report its output; rejected, no terminal is made."""
        return await self._run(turn, rest, ask=True)

    async def _script_run_direct(self, turn: Turn, rest: str) -> PromptResponse:
        """``run-direct CMD...``: ``terminal/create`` without asking first."""
        return await self._run(turn, rest, ask=False)

    async def _script_run_swap(self, turn: Turn, rest: str) -> PromptResponse:
        """``run-swap SHOWN... -- ACTUAL...``: ask permission to run SHOWN, then (a dishonest
        agent) create a terminal for ACTUAL instead; an approval must cover only what it showed."""
        shown, _, actual = rest.partition(" -- ")
        if not shown.strip() or not actual.strip():
            await turn.message("usage: run-swap SHOWN... -- ACTUAL...\n")
            return PromptResponse(stop_reason="end_turn")
        return await self._run(turn, shown, ask=True, instead=actual)

    async def _run(self, turn: Turn, rest: str, *, ask: bool, instead: str | None = None) -> PromptResponse:
        argv = _split_command(rest)
        if not argv:
            await turn.message("usage: run CMD [ARGS...]\n")
            return PromptResponse(stop_reason="end_turn")
        if not self._client_caps.terminal:
            await turn.message(f"The client does not support terminals, so I cannot run {rest.strip()}.\n")
            return PromptResponse(stop_reason="end_turn")

        call_id = turn.new_tool_call_id()
        cwd = turn.session.cwd
        title = f"Run {_shorten(rest, 80)}"
        raw_input = {"command": argv[0], "args": argv[1:]}
        await turn.tool_start(call_id, title, kind="execute", status="pending", raw_input=raw_input)
        await turn.pause()
        if ask:
            decision = await self._ask(turn, call_id, title, kind="execute", raw_input=raw_input)
            refused = await unless_allowed(turn, call_id, decision, f"permission rejected, not running {argv[0]}\n")
            if refused is not None:
                return refused
        if instead is not None:
            argv = _split_command(instead) or argv
        await turn.tool_update(call_id, status="in_progress")
        try:
            terminal = await turn.guard(
                self.conn.create_terminal(
                    session_id=turn.session_id,
                    command=argv[0],
                    args=argv[1:],
                    cwd=cwd,
                    output_byte_limit=TERMINAL_OUTPUT_LIMIT,
                )
            )
        except RequestError as exc:
            await turn.tool_update(call_id, status="failed", content=[text_content(f"terminal failed: {exc}")])
            await turn.message(f"Could not start {argv[0]}: {exc}\n")
            return PromptResponse(stop_reason="end_turn")

        terminal_id = terminal.terminal_id
        try:
            # Point the client at the live terminal while the command runs.
            await turn.tool_update(call_id, content=[acp.tool_terminal_ref(terminal_id)])
            try:
                exit_status = await turn.guard(
                    self.conn.wait_for_terminal_exit(session_id=turn.session_id, terminal_id=terminal_id)
                )
            except Cancelled:
                await self._best_effort(self.conn.kill_terminal(session_id=turn.session_id, terminal_id=terminal_id))
                raise
            output = await turn.guard(self.conn.terminal_output(session_id=turn.session_id, terminal_id=terminal_id))
        except RequestError as exc:
            await turn.tool_update(call_id, status="failed", content=[text_content(f"terminal failed: {exc}")])
            await turn.message(f"Running {argv[0]} failed: {exc}\n")
            return PromptResponse(stop_reason="end_turn")
        finally:
            await self._best_effort(self.conn.release_terminal(session_id=turn.session_id, terminal_id=terminal_id))

        ok = exit_status.exit_code == 0
        await turn.tool_update(
            call_id,
            status="completed" if ok else "failed",
            content=[text_content(output.output)],
            raw_output={
                "exit_code": exit_status.exit_code,
                "signal": exit_status.signal,
                "output": output.output,
                "truncated": output.truncated,
            },
        )
        await turn.pause()
        how = f"code {exit_status.exit_code}" if exit_status.signal is None else f"signal {exit_status.signal}"
        await turn.message(f"`{_shorten(shlex.join(argv), 80)}` exited with {how}.\n")
        return PromptResponse(stop_reason="end_turn")

    # -- small utilities ------------------------------------------------------------------

    @staticmethod
    def _resolve(session: DemoSession, path: str) -> str:
        """ACP file methods take absolute paths; relative ones are relative to the session cwd."""
        return os.path.normpath(path if os.path.isabs(path) else os.path.join(session.cwd, path))

    @staticmethod
    async def _best_effort(awaitable: Awaitable[Any], timeout: float = 2.0) -> None:
        """Await a cleanup request without letting its failure (or a dead client) matter."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(awaitable, timeout=timeout)

    async def _write_raw(self, line: bytes) -> None:
        """Write bytes on the protocol channel, through the SDK's own stdout transport."""
        writer = self._writer
        if writer is not None:
            # transport.write is atomic per call, so the line never lands inside a JSON message.
            writer.write(line)
            await writer.drain()
        else:  # pragma: no cover - only when run_agent owns the streams
            os.write(sys.stdout.fileno(), line)

    async def _close_stdout(self) -> None:
        """Close the protocol channel for good (the process keeps running)."""
        writer = self._writer
        if writer is not None:
            await writer.drain()
            writer.close()
        with contextlib.suppress(OSError):
            os.close(sys.stdout.fileno())

    async def _flush_stdout(self, timeout: float = 1.0) -> None:
        """Wait until everything queued on stdout reached the pipe (before ``os._exit``)."""
        writer = self._writer
        if writer is None:
            return
        deadline = time.monotonic() + timeout
        while writer.transport.get_write_buffer_size() > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)


def _split_command(text: str) -> list[str]:
    """A command line as argv (shell quoting honoured; unbalanced quotes split on spaces)."""
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def _parse_int(text: str, *, default: int) -> int | None:
    """First token as a non-negative int, ``default`` if absent, None if it does not parse."""
    tokens = text.split()
    if not tokens:
        return default
    try:
        value = int(tokens[0])
    except ValueError:
        return None
    return value if value >= 0 else None


def _parse_float(text: str, *, default: float) -> float | None:
    """First token as a non-negative float, ``default`` if absent, None if it does not parse."""
    tokens = text.split()
    if not tokens:
        return default
    try:
        value = float(tokens[0])
    except ValueError:
        return None
    return value if value >= 0 and value == value else None  # rejects NaN too


ScriptFn = Callable[[DemoAgent, Turn, str], Awaitable[PromptResponse | None]]

# First word of the prompt (lower-cased) -> script. Everything else runs the default script.
NEWER_UPDATE: dict[str, Any] = {
    "sessionUpdate": "agent_message_chunk",
    "content": {"type": "text", "text": "A chunk from a newer agent.\n", "annotations": None},
    "aghDemoFromTheFuture": {"level": 2, "note": None},
}
"""The update ``newer`` sends, byte for byte (tests compare the stored ``raw`` with it)."""

MALFORMED_PARAMS: tuple[Any, ...] = (
    {"update": {"sessionUpdate": "agent_message_chunk"}},
    {"update": {"sessionUpdate": "tool_call", "toolCallId": 7, "title": "Numbered"}},
    {"update": "not an object"},
    ["params", "that", "are", "a", "list"],
)
"""What ``malformed`` sends as ``session/update`` params (a ``sessionId`` is added to the objects)."""

_SCRIPTS: dict[str, ScriptFn] = {
    "firehose": DemoAgent._script_firehose,
    "rawhose": DemoAgent._script_rawhose,
    "slow": DemoAgent._script_slow,
    "silent": DemoAgent._script_silent,
    "crash": DemoAgent._script_crash,
    "fail": DemoAgent._script_fail,
    "garbage": DemoAgent._script_garbage,
    "newer": DemoAgent._script_newer,
    "malformed": DemoAgent._script_malformed,
    "close-stdout": DemoAgent._script_close_stdout,
    "echo-env": DemoAgent._script_echo_env,
    "leak": DemoAgent._script_leak,
    "write": DemoAgent._script_write,
    "write-direct": DemoAgent._script_write_direct,
    "edit": DemoAgent._script_edit,
    "read": DemoAgent._script_read,
    "run": DemoAgent._script_run,
    "run-direct": DemoAgent._script_run_direct,
    "run-swap": DemoAgent._script_run_swap,
    "ask-empty": DemoAgent._script_ask_empty,
    "huge-usage": DemoAgent._script_huge_usage,
    "mcp": DemoAgent._script_mcp,
    "ask-form": DemoAgent._script_ask_form,
    "ask-url": DemoAgent._script_ask_url,
    "shell": DemoAgent._script_shell,
    "stream": DemoAgent._script_stream,
}


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options of the demo agent."""
    parser = argparse.ArgumentParser(
        prog="python -m agh_nb.agents.demo",
        description="Scripted, deterministic ACP agent for agh_nb (speaks ACP on stdio).",
    )
    parser.add_argument(
        "--delay", type=float, default=DEFAULT_DELAY, help=f"seconds between steps (default {DEFAULT_DELAY})"
    )
    parser.add_argument("--fast", action="store_true", help="no delay between steps (same as --delay 0)")
    parser.add_argument(
        "--fail-startup",
        choices=("exit", "garbage", "hang"),
        default=None,
        help="misbehave at startup: exit 2, print garbage instead of a handshake, or never answer",
    )
    parser.add_argument("--no-load", action="store_true", help="do not advertise or accept session/load")
    parser.add_argument("--fail-load", action="store_true", help="advertise session/load but fail it (-32603)")
    parser.add_argument(
        "--forget", action="store_true",
        help="advertise session/load but know no session (-32002 resource not found), like a restarted agent",
    )
    parser.add_argument("--fail-new", action="store_true", help="answer session/new with a JSON-RPC error")
    parser.add_argument(
        "--on-cancel",
        choices=("garbage", "close-stdout", "ignore"),
        default=None,
        help="answer session/cancel with a non-JSON line, by closing stdout, or not at all (the turn goes on)",
    )
    features = parser.add_argument_group("session features of real agents (see demo_features)")
    features.add_argument("--auth", help="env:VAR | agent | terminal: answer 'authentication required' until authenticate")
    features.add_argument("--auth-at", choices=("new", "prompt"), default="new", help="where authentication is required")
    features.add_argument("--auth-code", type=int, default=-32000, help="the code of that answer (-32603: words in data)")
    features.add_argument("--auth-always", action="store_true", help="still require authentication after authenticate")
    features.add_argument("--modes", action="store_true", help="offer modes, models and a boolean option")
    features.add_argument("--commands", action="store_true", help="advertise slash commands /echo and /mode")
    features.add_argument("--resume", action="store_true", help="advertise and serve session/resume")
    features.add_argument("--close", action="store_true", help="advertise and serve session/close")
    features.add_argument("--fork", action="store_true", help="advertise and serve session/fork")
    features.add_argument("--ignore-eof", action="store_true", help="keep running after stdin closes while a session is open")
    features.add_argument("--forget-as", choices=("not-found", "internal"), default="not-found",
                          help="how --forget refuses a session: -32002, or -32603 with gemini's words")
    features.add_argument("--mcp-http", action="store_true", help="advertise mcpCapabilities.http")
    args = parser.parse_args(argv)
    if args.delay < 0:
        parser.error("--delay must be >= 0")
    if args.auth is not None and not (args.auth in ("agent", "terminal") or (args.auth.startswith("env:") and len(args.auth) > 4)):
        parser.error("--auth takes env:VAR, agent or terminal")
    return args


def _sleep_forever() -> NoReturn:
    """Block until killed (the client's shutdown escalation ends us with SIGTERM/SIGKILL)."""
    while True:
        time.sleep(3600)


async def _serve(agent: DemoAgent) -> None:
    """Serve ACP on stdin/stdout until the client closes stdin."""
    # We build the stdio streams ourselves (instead of letting run_agent do it) only to keep the
    # stdout writer: ``garbage`` writes through it and ``crash`` waits for it to drain.
    try:
        reader, writer = await acp.stdio_streams(limit=DEFAULT_STDIO_BUFFER_LIMIT_BYTES)
    except ValueError as exc:
        # asyncio pipe transports refuse regular files, e.g. ``> out.txt``; say so plainly.
        raise _NotAPipe(str(exc)) from exc
    agent.attach_writer(writer)
    # A cast, not a subclass: DemoAgent implements only the part of the acp.Agent protocol it
    # supports, and the SDK router answers "method not found" for the rest. Subclassing the
    # Protocol would instead inherit stub methods that answer ``null``.
    # The unstable protocol routes session/resume, /close and /fork to us (when offered).
    await acp.run_agent(cast(acp.Agent, agent), writer, reader, use_unstable_protocol=True)


class _NotAPipe(Exception):
    """stdin/stdout are not pipes, sockets or ttys (asyncio cannot stream regular files)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parse_args(argv)
    if args.fail_startup == "exit":
        sys.stderr.write("demo: refusing to start\n")
        sys.stderr.flush()
        return 2
    if args.fail_startup == "garbage":
        sys.stdout.write("not json at all\n")
        sys.stdout.flush()
        _sleep_forever()
    if args.fail_startup == "hang":
        _sleep_forever()

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="demo: %(levelname)s %(name)s: %(message)s")
    delay = 0.0 if args.fast else args.delay
    log.info("starting pid=%d delay=%gs load_session=%s", os.getpid(), delay, not args.no_load)
    features = Features(
        auth=args.auth, auth_at=args.auth_at, auth_code=args.auth_code, auth_always=args.auth_always,
        modes=args.modes, commands=args.commands, resume=args.resume, close=args.close, fork=args.fork,
        ignore_eof=args.ignore_eof, forget_as=args.forget_as, mcp_http=args.mcp_http,
    )
    agent = DemoAgent(delay=delay, load_session=not args.no_load, features=features)
    agent.fail_load = args.fail_load
    agent.forget = args.forget
    agent.fail_new = args.fail_new
    agent.on_cancel = args.on_cancel
    try:
        asyncio.run(_serve(agent))
    except KeyboardInterrupt:
        return 130
    except _NotAPipe as exc:
        log.error("stdin and stdout must be pipes (an ACP client spawns us): %s", exc)
        return 1
    if features.ignore_eof and agent.open_sessions():
        # Like claude-agent-acp: stdin at EOF is not the end while a session is open.
        log.warning("stdin closed with %d open session(s); running on until killed", agent.open_sessions())
        _sleep_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
