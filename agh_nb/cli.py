"""``agh-nb``: the magics' words on the command line.

Owns: ``main`` and choosing what answers the words. When a Jupyter server host holds this
``AGH_HOME``'s store, every word (writes included: new, prompt, stop, approve, resume...) goes to
it over its HTTP API (``agh_nb.remote.RemoteHost``, as client-mode kernels do); the server is
found as Jupyter finds running servers and checked to hold this store (``GET /agh/api/host``).
Otherwise the store is opened read-only (list, status, health, inspect, events, history, sql;
``session logs`` and ``vault`` read files of their own, beside any holder),
and when a kernel holds it the one-line error says which notebook or kernel. Output: aligned
tables that fit the terminal (``rich``), NULL shown empty; ``-o json`` prints exactly one JSON
document, unchanged. Errors are one line with one prefix, suggesting ``agh-nb`` words.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agh_nb.errors import AghError, HostError, StoreLockedError, UsageError

if TYPE_CHECKING:
    from agh_nb.commands import Waiter
    from agh_nb.core.handles import TurnHandle
    from agh_nb.core.host import HostProtocol, ReaderProtocol
    from agh_nb.core.turn import TurnResult
    from agh_nb.holder import Holder
    from rich.console import Console
    from rich.table import Table

PROG = "agh-nb"
_MAGIC_WORDS = re.compile(r"%%?agh (?=session |vault |sql\b)")
_KEY_COLUMNS = {"id", "session_id", "turn_id", "request_id", "sequence", "state", "type", "ref", "time", "created"}
FLEX_MIN = 12  # a text column is never cut below this
GAP = 2  # spaces between columns


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the process exit code (0 ok, 1 error, 2 usage, 130 interrupted)."""
    from agh_nb.commands import execute, follow_logs, parse
    from agh_nb.core.host import is_live

    words = list(sys.argv[1:] if argv is None else argv)
    host: ReaderProtocol | None = None
    try:
        args, help_text = parse(words, prog=PROG)
        if args is None:
            if help_text:
                print(help_text)
            return 0
        host = _open_host(args)
        json_output = getattr(args, "output", None) == "json"
        result = execute(
            args,
            host,
            secret_prompt=_getpass,
            follow=_follow,
            follow_logs=follow_logs,
            # a reader runs no turn, so it has nothing to wait for (``execute`` refuses ``prompt``)
            waiter=_waiter(host, json_output) if is_live(host) else None,
            prog=PROG,
        )
        if json_output:
            print(json.dumps(result.document, indent=2, default=str, ensure_ascii=False))
        elif not getattr(args, "follow", False):
            show(result.value)
    except UsageError as exc:
        _error(exc)
        return 2
    except AghError as exc:
        _error(exc)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    finally:
        if host is not None:
            host.close()
    return 0


def cli_words(message: str) -> str:
    """A message as the command line says it: ``%agh session list`` -> ``agh-nb session list``
    (the core's hints name the magic; notebook-only words such as ``%agh tail`` are left as they are)."""
    return _MAGIC_WORDS.sub(f"{PROG} ", message)


def _error(exc: AghError) -> None:
    print(f"{PROG}: error: {cli_words(str(exc))}", file=sys.stderr)


# -- which host answers ---------------------------------------------------------------------------


def _open_host(args: argparse.Namespace) -> ReaderProtocol:
    """The Jupyter server host that holds this AGH_HOME's store (a ``RemoteHost``), else a
    read-only ``Reader``.

    Raises:
        StoreLockedError: a kernel or another process holds the store (the message names it).
        AghError: there is no store yet.
    """
    from agh_nb.api import Reader
    from agh_nb.commands import LIVE_COMMANDS
    from agh_nb.config import agh_home
    from agh_nb.holder import read_holder
    from agh_nb.remote import find_server

    home = agh_home()
    holder = read_holder(home)
    if holder is not None and holder.kind == "server":
        remote = find_server(home, pids=[holder.pid])
        if remote is not None:
            return remote
    if args.group == "vault" or getattr(args, "command", None) == "logs":
        # The vault and the agent logs are files of their own, readable beside a kernel.
        return Reader.open_vault_only()
    if args.group == "session" and args.command in LIVE_COMMANDS:
        if holder is not None and holder.kind != "server":
            raise _held_by(home, holder)
        if holder is not None:  # a server holds the store, but not one agh-nb could reach
            raise HostError(
                f"the agh_nb store {home / 'agh.duckdb'} is held by {holder.describe()}, which did not answer "
                "GET /agh/api/host from Jupyter's runtime directory (still starting, or another JUPYTER_RUNTIME_DIR?): "
                "try again, or use it from JupyterLab"
            )
        # No server holds this store: a reader over no store (``live`` is False, nothing is opened)
        # stands for "no live host", so the grammar says what a live word needs.
        return Reader.open_vault_only(home)
    try:
        return Reader.open(home)
    except StoreLockedError as exc:
        lock_pid = exc.fields.get("pid")
        holder = read_holder(home, lock_pid=lock_pid if isinstance(lock_pid, int) else None)
        if holder is None or holder.kind == "server":
            # No holder file (or a server that did not answer yet): look among running servers.
            remote = find_server(home, pids=None if holder is None else [holder.pid])
            if remote is not None:
                return remote
        if holder is None:
            raise
        raise _held_by(home, holder) from None


def _held_by(home: Path, holder: Holder) -> StoreLockedError:
    """The one line naming the kernel (notebook) or process that holds the store."""
    there = " (in that notebook, as %agh)" if holder.kind == "kernel" else ""
    return StoreLockedError(
        f"the agh_nb store {home / 'agh.duckdb'} is in use by {holder.describe()}: run the command "
        f"there{there}, stop it, or set AGH_HOME to another directory",
        pid=holder.pid,
        path=str(home / "agh.duckdb"),
    )


def _getpass(label: str) -> str:
    import getpass

    try:
        return getpass.getpass(label)
    except (EOFError, KeyboardInterrupt):  # Ctrl-D, Ctrl-C, or stdin at its end: nothing stored
        raise UsageError("vault put: no value was entered; nothing was stored") from None


def _follow(host: HostProtocol, session_id: str, args: argparse.Namespace) -> int:
    from agh_nb.follow import follow_events

    return follow_events(host, session_id, args)


def _waiter(host: HostProtocol, json_output: bool) -> Waiter:
    """``--wait`` in a terminal: a progress line rewritten in place on stderr (when it is a
    terminal), the turn's permission requests asked about on stdin (when it is one)."""

    def wait(handle: TurnHandle, timeout: float | None) -> TurnResult:
        from agh_nb.waiting import ProgressLine, TerminalLine, TurnWaiter

        def line(text: str) -> ProgressLine:
            progress = TerminalLine(sys.stderr)
            progress.update(text)
            return progress

        def say(text: str) -> None:
            print(text, file=sys.stderr, flush=True)

        interactive = bool(sys.stdin and sys.stdin.isatty())
        show_progress = not json_output and bool(sys.stderr and sys.stderr.isatty())
        waiter = TurnWaiter(
            host, line=line if show_progress else None, ask=input if interactive else None, say=say, prog=PROG
        )
        return waiter.wait(handle, timeout)

    return wait


# -- printing -------------------------------------------------------------------------------------


def show(value: Any, console: Console | None = None) -> None:
    """Print a command's value for a person: tables for rows, key/value tables for dicts.

    ``value`` is ``Any`` on purpose: it is told apart by its type's name (a DataFrame, a
    TurnResult...) so that printing imports neither pandas nor the API to ask ``isinstance``.
    """
    from rich.console import Console

    from agh_nb import output

    console = console or Console(soft_wrap=False, highlight=False)
    # A terminal gets tables that fit it; a pipe or file gets whole rows (nothing cut).
    width = console.width if console.is_terminal else None
    if width is None:
        console = Console(soft_wrap=False, highlight=False, width=100_000, file=console.file)
    to_dict = getattr(value, "to_dict", None)
    kind = type(value).__name__
    if kind == "DataFrame":
        if value.empty:
            console.print("(no rows)")
        else:
            console.print(rows_table(list(value.columns), value.itertuples(index=False, name=None), width))
    elif kind == "TurnResult":
        console.print(output.turn_result_text(value), markup=False)
    elif kind == "TurnHandle":
        doc = value.to_dict()
        where = "running" if doc.get("status") == "running" else f"queued at position {doc.get('position')}"
        console.print(f"turn {doc['turn_id']} of {doc['session_id']}: {where}", markup=False)
    elif kind == "Session":
        record = value.to_dict()
        keep = ("name", "id", "agent_name", "state", "stop_reason", "failure", "workspace_path", "permissions")
        console.print(dict_table({k: record.get(k) for k in keep}, f"session {record.get('id')}"))
    elif isinstance(value, dict):
        console.print(dict_table(value, getattr(value, "title", None)))
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        columns = list(dict.fromkeys(k for row in value for k in row))
        console.print(rows_table(columns, ([row.get(c) for c in columns] for row in value), width))
    elif isinstance(value, list) and not value:
        console.print("(none)")
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        # Lines of text (``session logs``): printed as they are, one per line, never cut.
        for line in value:
            print(line, file=console.file)
    elif callable(to_dict):
        console.print(dict_table(to_dict()))
    else:
        console.print(str(value), markup=False)


def cell(value: object) -> str:
    """One table cell: NULL, NaN and NaT are empty; nested values compact JSON."""
    from agh_nb.output import value_text

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if type(value).__name__ in ("NaTType", "NAType"):
        return ""
    return value_text(value)


def rows_table(columns: Sequence[object], rows: Iterable[Sequence[object]], width: int | None = None) -> Table:
    """An aligned table that fits ``width`` columns (None: no limit, e.g. a pipe).

    Text columns (summaries, names, reasons) shrink, cut with an ellipsis; key columns (ids,
    sequence, type, state) are kept whole. When even that does not fit, the right-most key
    columns are left out and a last line names them.
    """
    from rich import box
    from rich.table import Table
    from rich.text import Text

    names = [str(c) for c in columns]
    texts = [[cell(v) for v in row] for row in rows]
    natural = [max([len(n)] + [len(r[i]) for r in texts]) for i, n in enumerate(names)]
    keys = [n in _KEY_COLUMNS for n in names]
    shown = list(range(len(names)))
    if width is not None:
        def needed(idx: list[int]) -> int:
            return sum(natural[i] if keys[i] else min(natural[i], FLEX_MIN) for i in idx) + GAP * (len(idx) - 1)

        while len(shown) > 1 and needed(shown) > width:
            shown.pop()
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, GAP // 2, 0, GAP - GAP // 2), expand=width is not None)
    for i in shown:
        if keys[i]:
            table.add_column(names[i], no_wrap=True, min_width=natural[i], max_width=natural[i])
        else:
            table.add_column(names[i], no_wrap=True, overflow="ellipsis", min_width=min(natural[i], FLEX_MIN), ratio=1 if width is not None and natural[i] > FLEX_MIN else None)
    for row in texts:
        table.add_row(*(Text(row[i]) for i in shown))
    if len(shown) < len(names):
        hidden = ", ".join(names[i] for i in range(len(names)) if i not in shown)
        table.caption = f"(not shown, for the terminal's width: {hidden}; -o json has everything)"
        table.caption_justify = "left"
    return table


def dict_table(doc: Mapping[str, object], title: str | None = None) -> Table:
    """A two-column ``key  value`` table (one level of nesting flattened to ``key.sub``)."""
    from rich.table import Table
    from rich.text import Text

    from agh_nb.output import flat_items

    table = Table(box=None, show_header=False, title=title, title_justify="left", pad_edge=False)
    table.add_column(style="dim", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in flat_items(doc):
        table.add_row(Text(key), Text(value))
    return table


if __name__ == "__main__":
    raise SystemExit(main())
