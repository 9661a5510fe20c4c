"""Validation of what HTTP callers send: whole numbers and JSON bodies (issue 11: never a 500).

Owns: ``parse_count`` (a whole number from a query argument or header), ``check_body_value``
(nesting depth and Unicode of a parsed JSON body) and their limits. Must not import agh_nb.kernel.
"""

from __future__ import annotations

import re
from typing import Any

from agh_nb.server.errors import bad_request

MAX_INT = 2**63 - 1
"""The largest whole number any route takes (DuckDB's BIGINT: sequences, limits)."""
MAX_DEPTH = 32
"""The deepest nesting a JSON body may have (the routes' bodies are flat objects)."""
# ASCII digits only: int() and float() also take other scripts' digits ("٣") and "1_000".
_WHOLE = re.compile(r"[0-9]{1,19}")
DECIMAL = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")


def parse_count(raw: str, what: str, *, minimum: int = 0, maximum: int = MAX_INT) -> int:
    """Parse a whole number sent by a client (query argument, header), or raise a 400.

    Only ASCII digits, no sign, within ``minimum..maximum``: anything else is the caller's
    mistake, answered in one line (never a 500 further down, in DuckDB or Python).

    Raises:
        ApiError: 400 naming ``what`` and the accepted range.
    """
    text = raw.strip()
    if not _WHOLE.fullmatch(text) or not minimum <= int(text) <= maximum:
        raise bad_request(f"{what} must be a whole number from {minimum} to {maximum}")
    return int(text)


def check_body_value(value: Any, where: str) -> None:
    """Refuse a body nested deeper than ``MAX_DEPTH`` or holding text that is not Unicode.

    A lone surrogate (``"\\ud800"`` is valid JSON) cannot be stored, written to a file or sent to
    an agent as UTF-8: it is the caller's mistake, refused here rather than failing later.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise bad_request(f"{where} is nested too deeply (at most {MAX_DEPTH} levels)")
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise bad_request(f"{where} holds text that is not valid Unicode (a lone surrogate)") from None
        elif isinstance(item, dict):
            stack.extend((k, depth) for k in item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
