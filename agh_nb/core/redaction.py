"""Redaction of secret values (SPEC 6): the registry of values and the functions that scrub them.

Owns: ``Redactor`` (a thread-safe registry of secret values, each with the ref that names it),
``RedactingFilter`` (a ``logging.Filter``) and ``install_log_redaction`` (scrubs every record of a
logger tree). Everything agh_nb writes -- failure summaries, crash bundles, error text, stderr
captures, logs -- passes through ``Redactor.redact`` or ``redact_json`` first.
Pure: must not import cryptography, duckdb, acp or any adapter; the vault (an adapter) registers
values here, the core only calls ``redact``.

Rules:
- Each registered value is replaced by ``[redacted:<label>]``, the label being the ref that names
  it (``[redacted:vault:providers/openai]``); the value is never shown, not even in part.
- Longer values are replaced first, so a value containing another is replaced whole.
- Values shorter than ``MIN_SECRET_LENGTH`` (4) characters are not registered: replacing every
  "ab" or "1" in a transcript would shred the text and would itself hint at the value. Such a
  short value is simply not redacted; ``register`` returns False so the caller can warn.
- A value's JSON-escaped form (quotes, backslashes, control characters escaped) is registered
  too, so the value is also caught inside JSON text such as a captured stderr line.
- ``redact_json`` runs on every stored event: when no registered text holds a character JSON
  escapes (the usual API key), it first searches the value's JSON text once, and walks the value
  only when that finds something.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import orjson

MIN_SECRET_LENGTH = 4
"""Values shorter than this are not redacted (see the module docstring)."""

T = TypeVar("T")


class Redactor:
    """A thread-safe registry of secret values and the labels (refs) that name them.

    ``redact`` reads an immutable snapshot without taking the lock, so it is cheap on hot paths
    and returns its argument untouched when nothing is registered. The same value may be
    registered under several labels (two refs holding one secret); it stays redacted until every
    label is unregistered, and is shown with the label registered first.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # value -> labels, in registration order
        self._labels: dict[str, list[str]] = {}
        # (compiled pattern, matched text -> replacement) or None when empty; swapped whole
        self._snapshot: tuple[re.Pattern[str], dict[str, str]] | None = None
        # The snapshot's pattern when every text it matches is one JSON writes as it is (no quote,
        # backslash or control character): redact_json may then search a value's JSON text
        # once instead of walking it (see _json_clean). None otherwise.
        self._json_pattern: re.Pattern[bytes] | None = None
        self._stream_view: StreamView | None = None  # built from the snapshot on first use

    def register(self, value: str, label: str) -> bool:
        """Register ``value`` to be replaced by ``[redacted:<label>]``.

        Args:
            value: the secret.
            label: the ref naming it (never the value).

        Returns:
            True when the value will be redacted; False when it is shorter than
            ``MIN_SECRET_LENGTH`` and is therefore ignored.
        """
        if len(value) < MIN_SECRET_LENGTH:
            return False
        with self._lock:
            labels = self._labels.setdefault(value, [])
            if label not in labels:
                labels.append(label)
            self._rebuild()
        return True

    def unregister(self, value: str, label: str | None = None) -> None:
        """Stop redacting ``value`` under ``label`` (or under every label when None).

        The value stays redacted while another label still holds it. Unknown values are ignored.
        """
        with self._lock:
            labels = self._labels.get(value)
            if labels is None:
                return
            if label is None:
                labels.clear()
            elif label in labels:
                labels.remove(label)
            if not labels:
                del self._labels[value]
            self._rebuild()

    def clear(self) -> None:
        """Unregister every value."""
        with self._lock:
            self._labels.clear()
            self._rebuild()

    def labels(self) -> list[str]:
        """Return the sorted labels with at least one registered value (never the values)."""
        with self._lock:
            return sorted({label for labels in self._labels.values() for label in labels})

    def __len__(self) -> int:
        """The number of distinct registered values."""
        return len(self._labels)

    def __bool__(self) -> bool:
        # An empty registry is still a registry: ``if redactor:`` must not mean "has values".
        return True

    def __repr__(self) -> str:
        return f"Redactor({len(self._labels)} values)"

    def redact(self, text: str) -> str:
        """Return ``text`` with every registered value replaced by ``[redacted:<label>]``."""
        snapshot = self._snapshot
        if snapshot is None or not text:
            return text
        pattern, replacements = snapshot
        return pattern.sub(lambda match: replacements[match.group(0)], text)

    def stream_view(self) -> StreamView | None:
        """What a streaming redactor needs (``core.stream_redaction``); None when nothing is
        registered. Built once per registry change."""
        snapshot = self._snapshot
        if snapshot is None:
            return None
        view = self._stream_view
        if view is None or view.pattern is not snapshot[0]:
            view = self._stream_view = StreamView.of(*snapshot)
        return view

    def redact_json(self, obj: T) -> T:
        """Return a copy of a JSON-like value with every string (keys included) redacted.

        Dicts, lists and tuples are walked; strings are redacted; other values are returned as
        they are. With nothing registered, ``obj`` itself is returned.
        """
        if self._snapshot is None:
            return obj
        json_pattern = self._json_pattern
        if json_pattern is not None and _json_clean(obj, json_pattern):
            return obj  # the common case: no string in it holds a secret; nothing walked or copied
        result: Any = redact_strings(obj, self.redact)
        return result  # type: ignore[no-any-return]

    def _rebuild(self) -> None:
        """Recompute the snapshot; called with the lock held."""
        replacements: dict[str, str] = {}
        for value, labels in self._labels.items():
            replacement = f"[redacted:{labels[0]}]"
            for variant in (value, json.dumps(value)[1:-1]):
                # A longer-registered variant wins over nothing; an exact value keeps its own label.
                replacements.setdefault(variant, replacement)
        if not replacements:
            self._snapshot = None
            self._json_pattern = None
            return
        ordered = sorted(replacements, key=len, reverse=True)
        pattern = re.compile("|".join(re.escape(value) for value in ordered))
        plain = not any(_JSON_ESCAPED.search(v) for v in ordered)
        self._json_pattern = re.compile(pattern.pattern.encode("utf-8")) if plain else None
        self._snapshot = (pattern, replacements)


class StreamView:
    """The registered values seen from a stream: the pattern, and every proper prefix of a value.

    A stream's tail that is a proper prefix of some value may be the start of a secret the next
    chunk completes; ``core.stream_redaction`` holds such a tail back.
    """

    __slots__ = ("pattern", "replacements", "by_first", "longest")

    def __init__(self, pattern: re.Pattern[str], replacements: dict[str, str]) -> None:
        self.pattern = pattern
        self.replacements = replacements
        by_first: dict[str, list[str]] = {}
        for value in replacements:
            by_first.setdefault(value[0], []).append(value)
        self.by_first = {first: tuple(values) for first, values in by_first.items()}
        self.longest = max(len(value) for value in replacements)

    def starts_secret(self, tail: str) -> bool:
        """True when ``tail`` is a proper prefix of a registered value (its start, not all of it)."""
        return any(len(value) > len(tail) and value.startswith(tail) for value in self.by_first.get(tail[0], ()))

    @classmethod
    def of(cls, pattern: re.Pattern[str], replacements: dict[str, str]) -> StreamView:
        """Build the view of one registry snapshot."""
        return cls(pattern, replacements)


_JSON_ESCAPED = re.compile(r'["\\\x00-\x1f]')
"""The characters JSON writes escaped: a quote, a backslash, the control characters."""
def _json_clean(obj: Any, pattern: re.Pattern[bytes]) -> bool:
    """True when no string in ``obj`` (keys included) can contain a match of ``pattern``.

    Sound only for a pattern whose matches hold no character JSON escapes (``_json_pattern``):
    such a text inside a string is written unchanged in the string's JSON, so it is found in
    the JSON text of ``obj`` (UTF-8, searched as bytes) -- one C-speed encoding and one search,
    where walking the value costs a call per string. (A match found elsewhere in that text, across a quote or inside a
    number, only sends ``obj`` down the exact walk.) A value orjson cannot write (a lone
    surrogate, a huge integer) is walked too.
    """
    try:
        text = orjson.dumps(obj, default=_unwritten, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # orjson.JSONEncodeError
        return False
    return pattern.search(text) is None


def _unwritten(value: Any) -> None:
    # Objects that are not JSON are kept as they are by redact_strings: nothing to find in them.
    return None


def redact_strings(obj: Any, redact: Callable[[str], str]) -> Any:
    """A copy of a JSON-like value with every string (keys included) passed through ``redact``."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {(redact(k) if isinstance(k, str) else k): redact_strings(v, redact) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact_strings(item, redact) for item in obj]
    if isinstance(obj, tuple):
        return tuple(redact_strings(item, redact) for item in obj)
    return obj


class RedactingFilter(logging.Filter):
    """A logging filter that formats a record's message with its args, then redacts it.

    It also redacts the formatted exception and stack text. It never drops a record.

    Note how ``logging`` applies filters: a filter on a *logger* sees only records logged on that
    exact logger, not those of its children (``agh_nb.core.session`` records skip a filter on
    ``agh_nb``). Put this filter on a *handler*, or use ``install_log_redaction`` to cover a whole
    logger tree.
    """

    def __init__(self, redactor: Redactor, name: str = "") -> None:
        super().__init__(name)
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place; always returns True."""
        redact_record(record, self.redactor)
        return True


def redact_record(record: logging.LogRecord, redactor: Redactor) -> None:
    """Format ``record``'s message and exception text and redact both, in place."""
    if redactor._snapshot is None:  # the hot path: nothing registered, nothing to do
        return
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: keep what there is, still redacted
        message = f"{record.msg!s} {record.args!r}"
    record.msg = redactor.redact(message)
    record.args = None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redactor.redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redactor.redact(record.stack_info)


def install_log_redaction(redactor: Redactor, *, logger_name: str | None = None) -> Callable[[], None]:
    """Redact every record of ``logger_name`` and its descendants as the record is created.

    Wraps the process's log record factory (keeping whatever factory was installed before), so
    records are scrubbed before any handler -- ours, Jupyter's or the root's -- sees them. The
    default covers every logger of the process: the ACP SDK logs a notification it cannot
    validate on the root logger, payload (and so any secret an agent echoed) included.

    Args:
        redactor: the registry to redact with.
        logger_name: the root of the logger tree to cover; None for every logger.

    Returns:
        A function that uninstalls the redaction (idempotent).
    """
    previous = logging.getLogRecordFactory()
    prefix = f"{logger_name}." if logger_name is not None else ""
    active = True

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if active and (logger_name is None or record.name == logger_name or record.name.startswith(prefix)):
            redact_record(record, redactor)
        return record

    def uninstall() -> None:
        nonlocal active
        active = False
        if logging.getLogRecordFactory() is factory:
            logging.setLogRecordFactory(previous)

    logging.setLogRecordFactory(factory)
    return uninstall
