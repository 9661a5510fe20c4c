"""What a person reads: one-line event summaries, compact rows, readable tool results and plans,
and small key/value tables for dict results. Shared by the magics, the widgets and ``agh-nb``.

Owns: ``summary`` (one line per event), ``tool_result_fields`` / ``result_preview`` (a tool's
output as key fields instead of raw JSON), ``plan_entries`` / ``plan_line`` (a plan as one line),
``join_chunks`` (message or thought chunks joined with the spacing a reader expects),
``event_rows`` / ``session_rows`` / ``history_rows`` (the compact rows shown by default; the full
rows stay behind ``--full`` and ``-o json``), ``Record`` (a ``dict`` that shows itself as a small
HTML table in a notebook, every value escaped) and ``turn_result_text`` / ``turn_result_html``.

Nothing here is markup until a ``*_html`` function escapes it: agent text never becomes HTML.
Imports only ``events`` and the standard library (pandas lazily, for frames). Must not import
IPython, ``agh_nb.kernel`` or ``agh_nb.server``.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from agh_nb.events import JSON, Event

SUMMARY_CHARS = 160  # one line of a compact row or of ``--follow``
VALUE_CHARS = 300  # a value shown inline in a Record's table before it is folded
PREVIEW_CHARS = 80  # a tool result in a one-line summary

# The order a person reads a record in; the other keys follow in their own order.
_READ_FIRST = (
    "name", "id", "session_id", "turn_id", "agent_name", "state", "stop_reason", "stop_detail",
    "failure", "health", "status", "error", "decision", "request_id", "position", "usage",
)
_SENTENCE_END = ".!?:;"
_PLAN_WORDS = {"completed": "done", "in_progress": "in progress", "pending": "pending"}
_PLAN_WORDS_ENDED = {"completed": "done", "in_progress": "not finished", "pending": "not started"}


def one_line(text: Any, limit: int = SUMMARY_CHARS) -> str:
    """``text`` with every run of whitespace made one space, clipped to ``limit`` characters."""
    flat = " ".join(str(text if text is not None else "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def as_text(value: Any) -> str:
    """A tool input or result as text: strings as they are, other JSON as JSON ('' for None)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def join_chunks(previous: str, chunk: str) -> str:
    """Append a streamed chunk: token streams carry their own spaces, but chunks that are whole
    sentences ("...briefly." + "Plan: ...") need one between them."""
    if (
        previous
        and chunk
        and not previous[-1].isspace()
        and not chunk[0].isspace()
        and previous[-1] in _SENTENCE_END
        and chunk[0].isupper()
    ):
        return previous + " " + chunk
    return previous + chunk


# -- tool results -------------------------------------------------------------------------------


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def tool_result_fields(value: Any) -> list[tuple[str, str]]:
    """A tool's result (or input) as ``(key, text)`` pairs a person reads: a dict's fields in
    order (nulls and empty values left out, nested values as compact JSON), a list of ACP content
    blocks as their text, a string as itself under the key ``""``."""
    if value is None:
        return []
    if isinstance(value, str):
        return [("", value)] if value else []
    if isinstance(value, Mapping):
        fields = []
        for key, item in value.items():
            if item is None or item == "" or item == [] or item == {}:
                continue
            if isinstance(item, str):
                fields.append((str(key), item))
            elif isinstance(item, (int, float, bool)):
                fields.append((str(key), _scalar(item)))
            else:
                fields.append((str(key), as_text(item)))
        return fields
    if isinstance(value, list) and value and all(isinstance(b, Mapping) for b in value):
        texts = [_block_text(b) for b in value]
        if all(t is not None for t in texts):
            return [("", "\n".join(t for t in texts if t))]
    return [("", as_text(value))]


def _block_text(block: Mapping[str, Any]) -> str | None:
    # ACP tool-call content: {"type": "content", "content": {"type": "text", "text": ...}}, a diff,
    # or a terminal; anything else is not a content block.
    kind = block.get("type")
    if kind == "content" and isinstance(block.get("content"), Mapping):
        return str(block["content"].get("text") or "")
    if kind == "text":
        return str(block.get("text") or "")
    if kind == "diff":
        return f"diff of {block.get('path')}"
    if kind == "terminal":
        return f"terminal {block.get('terminalId')}"
    return None


def result_preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """One line for a tool result: short fields as ``key=value``, then the first line of the
    longest text field (``output``, ``content``...)."""
    fields = tool_result_fields(value)
    if not fields:
        return ""
    short = [(k, v) for k, v in fields if "\n" not in v.strip() and len(v) <= 40]
    long = [(k, v) for k, v in fields if (k, v) not in short]
    bits = [f"{k}={v}" if k else v for k, v in short]
    if long:
        key, text = max(long, key=lambda kv: len(kv[1]))
        lines = [line for line in text.strip().splitlines() if line.strip()]
        first = lines[0].strip() if lines else ""
        more = f" (+{len(lines) - 1} lines)" if len(lines) > 1 else ""
        bits.append(f"{key}: {first}{more}" if key else f"{first}{more}")
    return one_line(" · ".join(bits), limit)


def preview_is_whole(value: Any, limit: int = PREVIEW_CHARS) -> bool:
    """True when ``result_preview`` shows all of the result (nothing folded or clipped)."""
    fields = tool_result_fields(value)
    if any("\n" in v.strip() or len(v) > 40 for _, v in fields):
        return False
    return len(" · ".join(f"{k}={v}" if k else v for k, v in fields)) <= limit


def result_body(value: Any) -> str:
    """The whole result as plain text, one ``key: value`` per field, long text set on its own lines."""
    out = []
    for key, text in tool_result_fields(value):
        if not key:
            out.append(text.rstrip("\n"))
        elif "\n" in text.strip() or len(text) > PREVIEW_CHARS:
            out.append(f"{key}:\n{text.rstrip()}")
        else:
            out.append(f"{key}: {text}")
    return "\n".join(out)


# -- plans --------------------------------------------------------------------------------------


def plan_entries(content: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A plan event's entries as ``(status, text)``: from the ACP payload when it is there, else
    from the stored ``[status] text`` lines."""
    raw = content.get("raw")
    entries = raw.get("entries") if isinstance(raw, Mapping) else None
    if isinstance(entries, list) and all(isinstance(e, Mapping) for e in entries):
        return [(str(e.get("status") or "pending"), str(e.get("content") or "")) for e in entries]
    out = []
    for line in str(content.get("text") or "").splitlines():
        line = line.strip()
        if line.startswith("[") and "]" in line:
            status, _, text = line[1:].partition("]")
            out.append((status.strip(), text.strip()))
        elif line:
            out.append(("", line))
    return out


def plan_line(entries: Sequence[tuple[str, str]], *, ended: str | None = None) -> str:
    """A plan in one line: ``1/3 done: [done] A · [in progress] B · [pending] C``.

    Args:
        entries: ``(status, text)`` pairs as ``plan_entries`` returns them.
        ended: the turn's stop reason once the turn is over: entries left open then read
            ``not finished`` / ``not started`` instead of staying ``in progress`` forever.
    """
    if not entries:
        return "(empty plan)"
    words = _PLAN_WORDS_ENDED if ended is not None else _PLAN_WORDS
    done = sum(1 for status, _ in entries if status == "completed")
    items = " · ".join(f"[{words.get(status, status) or '-'}] {text}" for status, text in entries)
    head = f"{done}/{len(entries)} done"
    if ended is not None:
        head += f" when the turn ended ({ended})"
    return f"{head}: {items}"


# -- one line per event ---------------------------------------------------------------------------


def summary(event: Event, titles: dict[str, str] | None = None) -> str:
    """What a person wants to read about one event, in one line (never markup).

    Args:
        event: the event.
        titles: tool call titles seen so far by ``tool_call_id``: an update or result that does
            not repeat its call's title is named by it (the dict is updated).
    """
    c = event.content
    if event.type in ("tool_call", "tool_result"):
        call_id = str(c.get("tool_call_id") or "")
        title = str(c.get("title") or "")
        if titles is not None and call_id:
            if title:
                titles[call_id] = title
            else:
                title = titles.get(call_id, "")
        bits = [title or call_id]
        raw = c.get("raw")
        if event.type == "tool_call" and isinstance(raw, Mapping) and raw.get("status"):
            bits.append(f"({raw['status']})")
        if c.get("tool_error"):
            bits.append(f"✗ {one_line(as_text(c['tool_error']), PREVIEW_CHARS)}")
        elif event.type == "tool_result":
            preview = result_preview(c.get("tool_result"))
            bits.append(f"→ {preview}" if preview else "✓")
        return " ".join(bits)
    if event.type == "permission":
        bits = [str(c.get(k)) for k in ("title", "action", "resource") if c.get(k)]
        bits.append(str(c.get("decision") or "pending"))
        if c.get("error"):
            bits.append(str(c["error"]))
        return " ".join(bits)
    if event.type == "plan":
        return plan_line(plan_entries(c))
    if event.type == "usage":
        return _usage(c.get("usage") or {})
    if event.type == "done":
        usage = c.get("usage") if isinstance(c.get("usage"), Mapping) else {}
        tokens = f", {usage['total_tokens']} tokens" if usage and usage.get("total_tokens") is not None else ""
        error = f": {c['error']}" if c.get("error") else ""
        return f"{c.get('stop_reason') or ''}{error}{tokens}"
    if event.type == "session_stopped":
        failure = c.get("failure") or {}
        bits = [str(c.get("stop_reason") or "")]
        if failure:
            bits.append(f"{failure.get('kind', '')}: {failure.get('summary', '')}")
        return " ".join(bits)
    for key in ("text", "error", "stop_reason", "title"):
        if c.get(key):
            return str(c[key])
    return ""


def _usage(usage: Mapping[str, Any]) -> str:
    bits = []
    if usage.get("total_tokens") is not None:
        bits.append(f"{usage['total_tokens']} tokens")
    if usage.get("used") is not None:
        bits.append(f"context {usage['used']}/{usage.get('size') or '?'}")
    cost = usage.get("cost")
    if isinstance(cost, Mapping) and cost.get("amount") is not None:
        bits.append(f"cost so far {cost['amount']} {cost.get('currency') or ''}".rstrip())
    return ", ".join(bits)


# -- compact rows ---------------------------------------------------------------------------------


def _when(value: Any) -> str:
    """An RFC3339 timestamp as ``YYYY-MM-DD HH:MM:SS`` (UTC), '' for none."""
    text = str(value or "")
    return text[:19].replace("T", " ") if text else ""


def event_rows(events: Iterable[Event]) -> list[JSON]:
    """The events as a person reads them: ``sequence``, ``time`` (UTC), ``type``, ``summary``
    (one line), ``turn_id`` ('' for session-level events)."""
    titles: dict[str, str] = {}
    return [
        {
            "sequence": e.sequence,
            "time": _when(e.to_dict()["timestamp"]),
            "type": e.type,
            "summary": one_line(summary(e, titles)),
            "turn_id": e.turn_id or "",  # shown empty, not as NaN
        }
        for e in events
    ]


def reason(row: Mapping[str, Any]) -> str:
    """A stopped session's reason in a few words: ``error (startup_failure)``, or ''."""
    stop = str(row.get("stop_reason") or "")
    failure = row.get("failure")
    kind = failure.get("kind") if isinstance(failure, Mapping) else None
    return f"{stop} ({kind})" if stop and kind else stop


def session_rows(rows: Iterable[Mapping[str, Any]]) -> list[JSON]:
    """Sessions as a person reads them: ``name``, ``agent``, ``state``, ``reason``, ``id``,
    ``created`` (and ``health`` when the rows carry it)."""
    out = []
    for row in rows:
        compact: JSON = {
            "name": row.get("name") or "",
            "agent": row.get("agent_name"),
            "state": row.get("state"),
            "reason": reason(row),
            "id": row.get("id"),
            "created": _when(row.get("created_at")),
        }
        health = row.get("health")
        if isinstance(health, Mapping):
            compact["health"] = health.get("health")
        out.append(compact)
    return out


def history_rows(turns: Iterable[Mapping[str, Any]]) -> list[JSON]:
    """Turns as a person reads them: first ``sequence``, ``time``, ``turn_id``, ``stop_reason``,
    ``prompt`` and ``response`` (one line each), ``tool_calls``."""
    return [
        {
            "sequence": t.get("first_sequence"),
            "time": _when(t.get("started_at")),
            "turn_id": t.get("turn_id"),
            "stop_reason": t.get("stop_reason") or ("error" if t.get("error") else ""),
            "prompt": one_line(t.get("prompt") or "", 60),
            "response": one_line(t.get("error") or t.get("response") or "", 100),
            "tool_calls": t.get("tool_calls"),
        }
        for t in turns
    ]


# -- dict results ---------------------------------------------------------------------------------


def ordered_items(doc: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """``doc``'s items, the ones a person reads first leading."""
    first = [(k, doc[k]) for k in _READ_FIRST if k in doc]
    return first + [(str(k), v) for k, v in doc.items() if k not in _READ_FIRST]


def value_text(value: Any) -> str:
    """A value as one readable string: '' for null, nested values as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return _scalar(value)
    return as_text(value)


def record_html(doc: Mapping[str, Any], title: str | None = None) -> str:
    """``doc`` as a small HTML table (every key and value escaped); one level of nested dicts is
    shown as an inner table, and long values are folded in a ``<details>``."""
    head = f"<div style='font-weight:bold;margin-bottom:4px'>{html.escape(title)}</div>" if title else ""
    return (
        "<div style='max-width:820px'>" + head
        + "<table style='border-collapse:collapse;font-size:90%'>" + _rows_html(doc, nested=True) + "</table></div>"
    )


def _rows_html(doc: Mapping[str, Any], *, nested: bool) -> str:
    out = []
    for key, value in ordered_items(doc):
        if value is None or value == "" or value == [] or value == {}:
            continue
        if nested and isinstance(value, Mapping):
            cell = f"<table style='border-collapse:collapse'>{_rows_html(value, nested=False)}</table>"
        else:
            cell = _value_html(value_text(value))
        out.append(
            "<tr><td style='color:#57606a;padding:1px 12px 1px 0;vertical-align:top;text-align:left'>"
            f"{html.escape(str(key))}</td><td style='text-align:left'>{cell}</td></tr>"
        )
    return "".join(out)


def _value_html(text: str) -> str:
    if len(text) <= VALUE_CHARS and "\n" not in text:
        return f"<code>{html.escape(text)}</code>"
    return (
        f"<details><summary><code>{html.escape(one_line(text, 80))}</code></summary>"
        f"<pre style='white-space:pre-wrap;max-height:16em;overflow:auto'>{html.escape(text)}</pre></details>"
    )


def record_text(doc: Mapping[str, Any], title: str | None = None) -> str:
    """``doc`` as aligned ``key  value`` lines (nested dicts as ``key.sub``; nulls left out)."""
    pairs = flat_items(doc)
    width = max((len(k) for k, _ in pairs), default=0)
    lines = [title] if title else []
    lines += [f"{k.ljust(width)}  {one_line(v, VALUE_CHARS)}" for k, v in pairs]
    return "\n".join(lines)


def flat_items(doc: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``doc``'s non-empty items as text, one level of nested dicts flattened to ``key.sub``."""
    pairs = []
    for key, value in ordered_items(doc):
        if value is None or value == "" or value == [] or value == {}:
            continue
        if isinstance(value, Mapping):
            pairs += [(f"{key}.{k}", value_text(v)) for k, v in ordered_items(value) if v not in (None, "", [], {})]
        else:
            pairs.append((key, value_text(value)))
    return pairs


class Record(dict[str, Any]):
    """A command's dict result (status, stop, inspect, approve...): still a plain ``dict`` for
    code, shown as a small HTML table in a notebook and as aligned lines in a terminal."""

    def __init__(self, doc: Mapping[str, Any], title: str | None = None) -> None:
        super().__init__(doc)
        self.title = title

    def _repr_html_(self) -> str:
        return record_html(self, self.title)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text("Record(...)" if cycle else record_text(self, self.title))


def turn_result_text(result: Any) -> str:
    """``turn turn_x of sess_y: end_turn (55 tokens)`` (+ the error when it failed)."""
    doc = result.to_dict() if hasattr(result, "to_dict") else dict(result)
    usage = doc.get("usage") if isinstance(doc.get("usage"), Mapping) else None
    tokens = f" ({usage['total_tokens']} tokens)" if usage and usage.get("total_tokens") is not None else ""
    error = f": {one_line(doc['error'], VALUE_CHARS)}" if doc.get("error") else ""
    return f"turn {doc.get('turn_id')} of {doc.get('session_id')}: {doc.get('stop_reason')}{tokens}{error}"


def turn_result_html(result: Any) -> str:
    """A finished turn as a small HTML table (escaped)."""
    doc = result.to_dict() if hasattr(result, "to_dict") else dict(result)
    return record_html(doc, f"turn {doc.get('turn_id')}: {doc.get('stop_reason')}")
