"""The ``%agh`` line magic and ``%%agh`` cell magic.

Owns: parsing a magic line with the shared grammar, running it on the process-wide host, and
showing the outcome: the Python value, or exactly one JSON document with ``-o json``, or one
error line (never a traceback for a user mistake).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from IPython.core.magic import Magics, line_cell_magic, magics_class

from agh_nb.errors import AghError

if TYPE_CHECKING:
    from agh_nb.commands import Waiter
    from agh_nb.core.handles import TurnHandle
    from agh_nb.core.host import HostProtocol
    from agh_nb.core.turn import TurnResult


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


def _waiter(host: HostProtocol, json_output: bool) -> Waiter:
    """The ``--wait`` of this cell: a progress line (none under ``-o json``) and inline decisions
    on the turn's permission requests when the front end can take an answer on stdin."""

    def wait(handle: TurnHandle, timeout: float | None) -> TurnResult:
        from agh_nb.kernel.wait import progress_line, stdin_allowed
        from agh_nb.waiting import TurnWaiter

        def say(text: str) -> None:
            print(text, file=sys.stderr if json_output else sys.stdout, flush=True)

        # ``input`` is looked up now: inside a cell, ipykernel routes it to the front end.
        line = None if json_output else progress_line()
        waiter = TurnWaiter(host, line=line, ask=input if stdin_allowed() else None, say=say)
        return waiter.wait(handle, timeout)

    return wait


def register_formatters(ipython: Any) -> None:
    """Show every ``agh_nb.api.Session`` as its card (``kernel.card``) and every finished turn
    (``TurnResult``, from ``--wait`` or ``.wait()``) as a small table with a one-line plain text.

    Registered by module and class name, so loading the extension does not import the API.
    """

    def card(session: Any) -> str | None:
        from agh_nb.kernel.card import session_card_html

        return session_card_html(session)

    def turn_html(result: Any) -> str:
        from agh_nb.output import turn_result_html

        return turn_result_html(result)

    def turn_text(result: Any, printer: Any, cycle: bool) -> None:
        from agh_nb.output import turn_result_text

        printer.text(turn_result_text(result))

    formatters = ipython.display_formatter.formatters
    formatters["text/html"].for_type_by_name("agh_nb.api", "Session", card)
    formatters["text/html"].for_type_by_name("agh_nb.core.turn", "TurnResult", turn_html)
    formatters["text/plain"].for_type_by_name("agh_nb.core.turn", "TurnResult", turn_text)


def _widget(host: HostProtocol, args: argparse.Namespace) -> object:
    if args.group == "timeline":
        from agh_nb.kernel.timeline import timeline_chart

        return timeline_chart(args.id, host.events(args.id), name=host.get(args.id).name)
    if args.group == "approvals":
        from agh_nb.kernel.approvals_widget import ApprovalPanel

        return ApprovalPanel(host, args.id)
    from agh_nb.kernel.tail_widget import EventTail

    return EventTail(host, args.id)


def _for_notebook(value: object) -> object:
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
        from agh_nb.commands import execute, follow_logs, parse
        from agh_nb.follow import follow_events

        try:
            args, help_text = parse(line)
            if args is None:
                if help_text:
                    print(help_text)
                return None
            host = get_host()
            result = execute(
                args,
                host,
                cell=cell,
                follow=follow_events,
                secret_prompt=_secret_prompt,
                widgets=_widget,
                waiter=_waiter(host, getattr(args, "output", None) == "json"),
                follow_logs=follow_logs,
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
