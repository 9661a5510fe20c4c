"""Transcript (SPEC 4, ``session transcript``): a session's events as a canonical chat log.

Owns: ``build_transcript`` (stored events -> role entries, a pure function) and
``transcript_text`` (those entries as a bounded plain-text document, used to replay a conversation
into an agent that cannot ``session/load``; earlier replays are left out of it). Pure: imports only ``events``; never acp, duckdb,
pyarrow, cryptography, IPython, widgets or tornado.

Entries (plain JSON dicts, key order as listed):

- ``user``: ``{role, turn_id, content}``, plus ``replay: true`` when the message is a transcript
  replay (``session resume --replay-transcript``; its ``runtime.replay_transcript``)
- ``assistant``: ``{role, turn_id, content, thinking}`` -- consecutive ``agent_message`` chunks
  joined into ``content`` and ``thought`` chunks into ``thinking`` (either may be ``""``)
- ``tool_call``: ``{role, turn_id, tool_call_id, title, tool_name, tool_input}``
- ``tool_result``: ``{role, turn_id, tool_call_id, result, error}``

Rules, applied in ``sequence`` order:

1. Empty message and thought chunks are dropped (they neither open nor end an entry).
2. An assistant entry runs until anything else is emitted, the turn changes, or a non-chat event
   (plan, usage, permission, runtime_*, system, done, error, session_stopped) arrives: those emit
   nothing but end the current assistant entry.
3. A tool call (a ``tool_call_id`` within a turn) gets one ``tool_call`` entry, at the position of
   its first row; later ``tool_call`` rows for it update its title, tool name and input in place
   (and end nothing).
4. A ``tool_result`` emits one ``tool_result`` entry at its own position (a result for an id
   never seen first emits its ``tool_call`` entry); a second result for the same id updates the
   first in place.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from agh_nb.events import JSON, Event, EventType

DEFAULT_MAX_CHARS = 100_000
"""Default bound of ``transcript_text`` (characters)."""

DEFAULT_MAX_FIELD_CHARS = 4_000
"""Default bound of one tool input or result inside ``transcript_text`` (characters)."""

_CHUNK_TYPES = {EventType.AGENT_MESSAGE.value: "content", EventType.THOUGHT.value: "thinking"}
_TOOL_FIELDS = (("title", "title"), ("tool_name", "tool_name"), ("tool_input", "tool_input"))


def build_transcript(events: Iterable[Event]) -> list[JSON]:
    """Build the canonical transcript of a session's events.

    Args:
        events: stored events of one session, in any order (they are sorted by ``sequence``).

    Returns:
        The entries, in conversation order (see the module docstring for shapes and rules).
        The same events always give an equal list.
    """
    builder = _Builder()
    for event in sorted(events, key=lambda e: e.sequence):
        builder.add(event)
    return builder.entries


class _Builder:
    """The transcript being built: entries plus the open assistant entry and tool-call index."""

    def __init__(self) -> None:
        self.entries: list[JSON] = []
        self._assistant: JSON | None = None
        # Keyed by (turn, id): ids are unique within an ACP session, but a resumed session may run
        # a fresh agent process that numbers its tool calls from the start again.
        self._calls: dict[tuple[str | None, str], JSON] = {}
        self._results: dict[tuple[str | None, str], JSON] = {}

    def add(self, event: Event) -> None:
        content = event.content
        if event.type == EventType.USER_MESSAGE.value:
            self._flush()
            entry: JSON = {"role": "user", "turn_id": event.turn_id, "content": _text(content)}
            if _is_replay(content):
                entry["replay"] = True
            self.entries.append(entry)
        elif event.type in _CHUNK_TYPES:
            self._chunk(event.turn_id, _CHUNK_TYPES[event.type], _text(content))
        elif event.type == EventType.TOOL_CALL.value:
            self._tool_call(event.turn_id, content)
        elif event.type == EventType.TOOL_RESULT.value:
            self._tool_result(event.turn_id, content)
        else:
            # plan, usage, permission, runtime_*, system, done, error, session_stopped, and any
            # type added later: not chat, but it separates what came before from what follows.
            self._flush()

    def _flush(self) -> None:
        self._assistant = None

    def _chunk(self, turn_id: str | None, key: str, text: str) -> None:
        if not text:
            return
        entry = self._assistant
        if entry is None or entry["turn_id"] != turn_id:
            entry = {"role": "assistant", "turn_id": turn_id, "content": "", "thinking": ""}
            self.entries.append(entry)
            self._assistant = entry
        entry[key] += text

    def _call_entry(self, turn_id: str | None, content: JSON) -> JSON:
        """Return the tool_call entry for this row, creating and emitting it when it is new."""
        call_id = _call_id(content)
        entry = self._calls.get((turn_id, call_id)) if call_id is not None else None
        if entry is not None:
            return entry
        entry = {
            "role": "tool_call",
            "turn_id": turn_id,
            "tool_call_id": call_id,
            "title": None,
            "tool_name": None,
            "tool_input": None,
        }
        self._flush()
        self.entries.append(entry)
        if call_id is not None:
            self._calls[(turn_id, call_id)] = entry
        return entry

    def _tool_call(self, turn_id: str | None, content: JSON) -> None:
        _update_call(self._call_entry(turn_id, content), content)

    def _tool_result(self, turn_id: str | None, content: JSON) -> None:
        self._flush()
        call = self._call_entry(turn_id, content)
        _update_call(call, content)
        call_id = call["tool_call_id"]
        result = self._results.get((turn_id, call_id)) if call_id is not None else None
        if result is None:
            result = {"role": "tool_result", "turn_id": turn_id, "tool_call_id": call_id, "result": None, "error": None}
            self.entries.append(result)
            if call_id is not None:
                self._results[(turn_id, call_id)] = result
        result["result"] = content.get("tool_result")
        result["error"] = content.get("tool_error")


def _is_replay(content: JSON) -> bool:
    runtime = content.get("runtime")
    return isinstance(runtime, dict) and bool(runtime.get("replay_transcript"))


def _text(content: JSON) -> str:
    text = content.get("text")
    return text if isinstance(text, str) else ""


def _call_id(content: JSON) -> str | None:
    value = content.get("tool_call_id")
    return None if value is None else str(value)


def _update_call(entry: JSON, content: JSON) -> None:
    # Later rows refine a call (ACP tool_call_update); a field a row leaves out keeps its value.
    for source, target in _TOOL_FIELDS:
        value = content.get(source)
        if value is not None:
            entry[target] = value


def transcript_text(
    entries: Sequence[JSON],
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    max_field_chars: int = DEFAULT_MAX_FIELD_CHARS,
    include_thinking: bool = False,
) -> str:
    """Render transcript entries as a plain-text document, keeping the most recent turns.

    Each entry is one paragraph: ``User: ...``, ``Assistant: ...`` (``Assistant (thinking): ...``
    first when ``include_thinking``), ``Tool call <title> [<id>]: <input JSON>``,
    ``Tool result [<id>]: <result JSON>`` or ``Tool error [<id>]: <error>``. Paragraphs are
    separated by a blank line. Tool inputs and results are cut to ``max_field_chars``.

    Replay turns (a user entry marked ``replay``, and everything else of its turn) are left out:
    they hold an earlier transcript, so replaying them again would nest one replay in the next.

    When the whole document exceeds ``max_chars``, the oldest turns are dropped whole and a
    ``[N earlier turn(s) omitted]`` line opens the document; if even the newest turn alone does not
    fit, its beginning is cut (marked ``[...]``) so its end survives.

    Args:
        entries: entries from ``build_transcript``.
        max_chars: upper bound on the result's length (at least 64).
        max_field_chars: upper bound on one rendered tool input or result.
        include_thinking: also render the assistant's thinking.

    Returns:
        The document (``""`` for no entries), never longer than ``max_chars``.

    Raises:
        ValueError: when ``max_chars`` is below 64.
    """
    if max_chars < 64:
        raise ValueError(f"max_chars must be at least 64, got {max_chars}")
    replayed = {e.get("turn_id") for e in entries if e.get("role") == "user" and e.get("replay")}
    turns: list[list[str]] = []
    last_turn: object = object()
    for entry in entries:
        if entry.get("turn_id") in replayed:
            continue
        paragraphs = _render(entry, max_field_chars, include_thinking)
        if not paragraphs:
            continue
        if not turns or entry.get("turn_id") != last_turn:
            turns.append([])
            last_turn = entry.get("turn_id")
        turns[-1].extend(paragraphs)
    blocks = ["\n\n".join(paragraphs) for paragraphs in turns]
    count = len(blocks)
    # Keep the largest number of newest turns that fits. Not a first-failure stop: keeping every
    # turn drops the omission marker, which can be longer than the oldest turn itself.
    keep = 0
    tail = 0
    for k in range(1, count + 1):
        tail += len(blocks[count - k]) + (2 if k > 1 else 0)
        omitted = count - k
        if tail + (len(_omitted(omitted)) + 2 if omitted else 0) <= max_chars:
            keep = k
    if keep == 0 and blocks:
        # The newest turn alone is too long: keep its end, the part the agent most needs.
        head = (_omitted(count - 1) + "\n\n" if count > 1 else "") + "[...] "
        return head + blocks[-1][len(blocks[-1]) - (max_chars - len(head)) :]
    kept = blocks[count - keep :]
    if count - keep:
        kept.insert(0, _omitted(count - keep))
    return "\n\n".join(kept)


def _omitted(count: int) -> str:
    return f"[{count} earlier turn(s) omitted]"


def _render(entry: JSON, max_field_chars: int, include_thinking: bool) -> list[str]:
    role = entry.get("role")
    call_id = entry.get("tool_call_id")
    ref = f" [{call_id}]" if call_id else ""
    if role == "user":
        return [f"User: {(entry.get('content') or '').strip()}"]
    if role == "assistant":
        paragraphs = []
        thinking = str(entry.get("thinking") or "").strip()
        text = str(entry.get("content") or "").strip()
        if include_thinking and thinking:
            paragraphs.append(f"Assistant (thinking): {thinking}")
        if text:
            paragraphs.append(f"Assistant: {text}")
        return paragraphs
    if role == "tool_call":
        name = entry.get("title") or entry.get("tool_name") or "tool"
        return [f"Tool call {name}{ref}: {_clip(_json(entry.get('tool_input')), max_field_chars)}"]
    if role == "tool_result":
        if entry.get("error"):
            return [f"Tool error{ref}: {_clip(str(entry['error']), max_field_chars)}"]
        return [f"Tool result{ref}: {_clip(_json(entry.get('result')), max_field_chars)}"]
    return []


def _json(value: Any) -> str:
    if value is None:
        return "{}"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(", ", ": "), default=str)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"
