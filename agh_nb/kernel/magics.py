"""The ``%agh`` line magic and ``%%agh`` cell magic.

Owns: parsing a magic line with the shared grammar, running it on the process-wide host, and
showing the outcome: the Python value, or exactly one JSON document with ``-o json``, or one
error line (never a traceback for a user mistake).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from IPython.core.magic import Magics, line_cell_magic, magics_class

from agh_nb.errors import AghError


def _secret_prompt(label: str) -> str:
    # getpass in a kernel goes through the front end's password box: the value never enters the
    # cell source, argv, history or outputs.
    import getpass

    from agh_nb.errors import UsageError

    try:
        return getpass.getpass(label)
    except Exception as exc:  # StdinNotImplementedError when the front end cannot prompt
        raise UsageError(
            "this front end cannot show a password prompt; use agh_nb.get_host().vault_put(ref, value) "
            "with a value read from a file or getpass"
        ) from exc


def _wait_with_progress(handle: Any, timeout: float | None) -> Any:
    """Wait for a turn while showing it is alive: elapsed time and events so far, updated in place."""
    import time

    from IPython.display import Pretty, display

    from agh_nb.api import build_query
    from agh_nb.hosts import get_host

    host = get_host()
    started = time.monotonic()
    line = display(Pretty(f"turn {handle.turn_id}: queued"), display_id=True)
    while not handle.done():
        elapsed = time.monotonic() - started
        if timeout is not None and elapsed > timeout:
            break
        try:
            count = len(host.events(handle.session_id, build_query(turn=handle.turn_id)))
        except Exception:  # progress is best effort; the wait itself must not fail on it
            count = 0
        if line is not None:
            line.update(Pretty(f"turn {handle.turn_id}: running for {elapsed:.1f}s, {count} events so far"))
        time.sleep(0.5)
    result = handle.wait(max(0.0, timeout - (time.monotonic() - started)) if timeout is not None else None)
    if line is not None:
        line.update(Pretty(f"turn {handle.turn_id}: {result.stop_reason} after {time.monotonic() - started:.1f}s"))
    return result


def _widget(host: Any, args: Any) -> Any:
    if args.group == "timeline":
        from agh_nb.kernel.timeline import timeline_chart

        return timeline_chart(args.id, host.events(args.id))
    if args.group == "approvals":
        from agh_nb.kernel.approvals_widget import ApprovalPanel

        return ApprovalPanel(host, args.id)
    from agh_nb.kernel.tail_widget import EventTail

    return EventTail(host, args.id)


def _for_notebook(value: Any) -> Any:
    from agh_nb.api import Session
    from agh_nb.kernel.card import NotebookSession

    if isinstance(value, Session) and not isinstance(value, NotebookSession):
        return NotebookSession(value._host, value.id)
    return value


@magics_class
class AghMagics(Magics):
    """``%agh session new|prompt|stop|list|status|events|history ...`` and ``%%agh sql``."""

    @line_cell_magic
    def agh(self, line: str, cell: str | None = None) -> Any:
        """Run an agh_nb command; see ``%agh --help``."""
        from agh_nb.hosts import get_host
        from agh_nb.commands import execute, parse
        from agh_nb.kernel.follow import follow_events

        try:
            args, help_text = parse(line)
            if args is None:
                if help_text:
                    print(help_text)
                return None
            result = execute(
                args,
                get_host(),
                cell=cell,
                follow=follow_events,
                secret_prompt=_secret_prompt,
                widgets=_widget,
                waiter=_wait_with_progress,
            )
        except AghError as exc:
            print(f"agh: error: {exc}", file=sys.stderr)
            return None
        if getattr(args, "output", None) == "json":
            print(json.dumps(result.document, indent=2, default=str, ensure_ascii=False))
            return None
        if getattr(args, "follow", False):
            return None  # the events were printed as they came
        return _for_notebook(result.value)
