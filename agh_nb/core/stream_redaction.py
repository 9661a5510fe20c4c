"""Redaction across the chunks of a stream (issue 11): a secret split over several
``agent_message``, ``thought`` or tool-output chunks is never stored whole.

Owns: ``StreamRedaction`` (one per live session). Each chunk still becomes its own event, so the
tail of a stream stays live; what changes is where a chunk's text ends: when the end of the text
so far could be the start of a registered secret (it is a proper prefix of one), those characters
are held back and put in front of the next chunk of the same stream. A held tail is released at
the end of its turn (``flush``), as an event of its own, redacted. At most (longest secret - 1)
characters are ever held; with no secret registered nothing is held and the cost is one call.

The text of a chunk lives twice in its event: the envelope field (``text``, ``tool_result``...)
and the ACP payload under ``raw``; both get the same (shifted, redacted) text. Streams:
``agent_message`` and ``thought`` per turn, and each tool call's output (the text blocks of its
``content`` and a string ``rawOutput``, in order) per turn and tool call id.
Pure: imports only ``core.redaction`` and ``events``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agh_nb.core.redaction import StreamView
from agh_nb.events import JSON, EventType

StreamKey = tuple[str | None, str]
"""(turn id, stream name): ``agent_message``, ``thought`` or ``tool:<tool call id>``."""

HELD_BACK = {"redaction": "held_back_tail"}
"""The ``runtime`` of an event that releases a held-back tail."""

_TEXT_STREAMS = {
    EventType.AGENT_MESSAGE: ("agent_message", "agent_message_chunk"),
    EventType.THOUGHT: ("thought", "agent_thought_chunk"),
}


class StreamRedaction:
    """Holds back the tails of a session's text streams that may begin a secret.

    Args:
        view: returns the registry's ``StreamView`` (None when no secret is registered).
    """

    def __init__(self, view: Callable[[], StreamView | None]) -> None:
        self._view = view
        self._held: dict[StreamKey, str] = {}

    @property
    def holding(self) -> bool:
        """True while some stream has a tail held back."""
        return bool(self._held)

    def feed(self, turn_id: str | None, event_type: EventType, fields: JSON) -> list[tuple[EventType, JSON]]:
        """Return what to store for one chunk: its own event (fields changed where text moved),
        preceded by a released tail when a tool call ends with no text of its own."""
        view = self._view()
        if view is None and not self._held:
            return [(event_type, fields)]  # the hot path: no secret registered, nothing held
        stream = _TEXT_STREAMS.get(event_type)
        if stream is not None:
            text = fields.get("text")
            if not isinstance(text, str):
                return [(event_type, fields)]
            out = self._push((turn_id, stream[0]), text, view, final=False)
            return [(event_type, _with_text(fields, out))]
        if event_type in (EventType.TOOL_CALL, EventType.TOOL_RESULT) and isinstance(fields.get("tool_call_id"), str):
            return self._feed_tool(turn_id, event_type, fields, view)
        return [(event_type, fields)]

    def flush(self, turn_id: str | None) -> list[tuple[str | None, EventType, JSON]]:
        """Release the held tails of ``turn_id`` (and of updates outside any turn) as events."""
        return self._release(lambda key: key[0] == turn_id or key[0] is None)

    def flush_all(self) -> list[tuple[str | None, EventType, JSON]]:
        """Release every held tail (the session is stopping)."""
        return self._release(lambda key: True)

    # -- internals ----------------------------------------------------------------------------

    def _release(self, which: Callable[[StreamKey], bool]) -> list[tuple[str | None, EventType, JSON]]:
        view = self._view()
        drafts: list[tuple[str | None, EventType, JSON]] = []
        for key in [k for k in self._held if which(k)]:
            text = _redact(self._held.pop(key), view)
            turn_id, name = key
            if name.startswith("tool:"):
                call_id = name[5:]
                raw: JSON = {"sessionUpdate": "tool_call_update", "toolCallId": call_id, "content": [_block(text)]}
                drafts.append((turn_id, EventType.TOOL_CALL, {"tool_call_id": call_id, "raw": raw, "runtime": dict(HELD_BACK)}))
            else:
                event_type = EventType.AGENT_MESSAGE if name == "agent_message" else EventType.THOUGHT
                kind = _TEXT_STREAMS[event_type][1]
                raw = {"sessionUpdate": kind, "content": {"type": "text", "text": text}}
                drafts.append((turn_id, event_type, {"text": text, "raw": raw, "runtime": dict(HELD_BACK)}))
        return drafts

    def _push(self, key: StreamKey, text: str, view: StreamView | None, *, final: bool) -> str:
        """The text to store for this chunk; what may start a secret stays held under ``key``."""
        buffer = self._held.pop(key, "") + text
        if view is None:
            return buffer
        if final:
            return _redact(buffer, view)
        n = len(buffer)
        hold = _hold_start(buffer, view, 0)
        out: list[str] = []
        pos = 0
        for match in view.pattern.finditer(buffer):
            if match.start() >= hold:
                break
            out.append(buffer[pos : match.start()])
            out.append(view.replacements[match.group(0)])
            pos = match.end()
            if pos > hold:  # a whole secret ran past the first candidate: look again after it
                hold = _hold_start(buffer, view, pos)
        out.append(buffer[pos:hold])
        if hold < n:
            self._held[key] = buffer[hold:]
        return "".join(out)

    def _feed_tool(
        self, turn_id: str | None, event_type: EventType, fields: JSON, view: StreamView | None
    ) -> list[tuple[EventType, JSON]]:
        key: StreamKey = (turn_id, f"tool:{fields['tool_call_id']}")
        final = event_type is EventType.TOOL_RESULT  # the call is over: its stream ends here
        raw = fields.get("raw")
        if not isinstance(raw, dict):
            return [(event_type, fields)]
        content = raw.get("content")
        blocks = [item for item in content if _text_of(item) is not None] if isinstance(content, list) else []
        raw_output = raw.get("rawOutput")
        pieces = len(blocks) + (1 if isinstance(raw_output, str) else 0)
        if pieces == 0:
            if final and key in self._held:  # nothing left to carry the tail: it goes first, alone
                return [(t, f) for _, t, f in self._release(lambda k: k == key)] + [(event_type, fields)]
            return [(event_type, fields)]
        old_joined = "\n".join(t for item in blocks if (t := _text_of(item)) is not None)
        new_raw = dict(raw)
        new_content: list[Any] = []
        done = 0
        for item in content if isinstance(content, list) else []:
            text = _text_of(item)
            if text is None:
                new_content.append(item)
                continue
            done += 1
            new_text = self._push(key, text, view, final=final and done == pieces)
            new_content.append({**item, "content": {**item["content"], "text": new_text}})
        if isinstance(content, list):
            new_raw["content"] = new_content
        new_fields = dict(fields)
        if isinstance(raw_output, str):
            new_raw["rawOutput"] = self._push(key, raw_output, view, final=final)
            for name in ("tool_result", "tool_error"):
                if new_fields.get(name) == raw_output:
                    new_fields[name] = new_raw["rawOutput"]
        new_joined = "\n".join(t for item in new_content if (t := _text_of(item)) is not None)
        for name in ("tool_result", "tool_error"):
            if blocks and new_fields.get(name) == old_joined:
                new_fields[name] = new_joined
        new_fields["raw"] = new_raw
        return [(event_type, new_fields)]


def _hold_start(buffer: str, view: StreamView, lo: int) -> int:
    """The first position at or after ``lo`` from which the rest of ``buffer`` may begin a secret."""
    n = len(buffer)
    start = max(lo, n - view.longest + 1)
    best = n
    for first in view.by_first:  # one per distinct first character: few, and found by str.find
        i = buffer.find(first, start, best)
        while i != -1:
            if view.starts_secret(buffer[i:]):
                best = i
                break
            i = buffer.find(first, i + 1, best)
    return best


def _redact(text: str, view: StreamView | None) -> str:
    if view is None or not text:
        return text
    return view.pattern.sub(lambda match: view.replacements[match.group(0)], text)


def _text_of(item: Any) -> str | None:
    """The text of a tool call content item of type ``content`` with a text block."""
    if isinstance(item, dict) and item.get("type") == "content":
        inner = item.get("content")
        if isinstance(inner, dict) and isinstance(inner.get("text"), str):
            text: str = inner["text"]
            return text
    return None


def _block(text: str) -> JSON:
    return {"type": "content", "content": {"type": "text", "text": text}}


def _with_text(fields: JSON, text: str) -> JSON:
    """``fields`` with its ``text`` and its payload's ``content.text`` set to ``text``."""
    if text == fields.get("text"):
        return fields
    new = dict(fields)
    new["text"] = text
    raw = fields.get("raw")
    if isinstance(raw, dict) and isinstance(raw.get("content"), dict) and "text" in raw["content"]:
        new["raw"] = {**raw, "content": {**raw["content"], "text": text}}
    return new
