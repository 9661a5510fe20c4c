"""``agh-nb``: the magics' words on the command line, for what works without a live host.

Owns: ``main``. Opens the store read-only (list, status, health, inspect, events, history, sql);
``session logs`` and ``vault`` read their own files; live commands (new, prompt, stop, set,
auth, fork, answer...) answer with one line saying to use a notebook.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from agh_nb.errors import AghError


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the process exit code (0 ok, 1 error, 2 usage)."""
    from agh_nb.api import Reader
    from agh_nb.commands import LIVE_COMMANDS, execute, follow_logs, parse
    from agh_nb.errors import UsageError

    words = list(sys.argv[1:] if argv is None else argv)
    try:
        args, help_text = parse(words, prog="agh-nb")
        if args is None:
            if help_text:
                print(help_text)
            return 0
        if getattr(args, "command", None) in LIVE_COMMANDS and args.group == "session":
            execute(args, _NoHost())  # raises the one-line "needs a live host"
        # The vault and the agent logs are files of their own: no need for the (maybe locked) store.
        files_only = args.group == "vault" or getattr(args, "command", None) == "logs"
        reader = Reader.open_vault_only() if files_only else Reader.open()
        try:
            result = execute(args, reader, secret_prompt=_getpass, follow_logs=follow_logs)
        finally:
            reader.close()
    except UsageError as exc:
        print(f"agh-nb: error: {exc}", file=sys.stderr)
        return 2
    except AghError as exc:
        print(f"agh-nb: error: {exc}", file=sys.stderr)
        return 1
    if getattr(args, "follow", False):
        return 0  # the lines were printed as they came
    if getattr(args, "output", None) == "json":
        print(json.dumps(result.document, indent=2, default=str, ensure_ascii=False))
    else:
        _print_value(result.value)
    return 0


def _getpass(label: str) -> str:
    import getpass

    from agh_nb.errors import UsageError

    try:
        return getpass.getpass(label)
    except (EOFError, KeyboardInterrupt):  # Ctrl-D, Ctrl-C, or stdin at its end: nothing stored
        raise UsageError("vault put: no value was entered; nothing was stored") from None


class _NoHost:
    """Stands for "no live host" so the grammar reports live commands uniformly."""

    live = False


def _print_value(value: object) -> None:
    to_string = getattr(value, "to_string", None)
    if callable(to_string):
        print(to_string(index=False) if getattr(value, "empty", True) is False else "(no rows)")
    else:
        print(json.dumps(value, indent=2, default=str, ensure_ascii=False))


if __name__ == "__main__":
    raise SystemExit(main())
