"""The command grammar shared by the ``%agh`` magic and the ``agh-nb`` CLI (SPEC 8).

Owns: the argparse grammar (one parser, errors raised as ``UsageError`` instead of exiting),
``execute`` (words -> a call on a ``ReaderProtocol``, or a ``HostProtocol`` for the live words ->
a ``Result`` holding the Python value and its JSON document). Knows nothing of IPython or of how
results are printed.
"""

from __future__ import annotations

import argparse
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from agh_nb import output
from agh_nb.api import Session, build_query
from agh_nb.core.handles import TurnHandle
from agh_nb.core.host import HostProtocol, ReaderProtocol, is_live
from agh_nb.core.session import TurnResult
from agh_nb.errors import UsageError
from agh_nb.events import JSON
from agh_nb.output import Record

if TYPE_CHECKING:
    import pandas

LIVE_COMMANDS = {"new", "create", "prompt", "stop", "approve", "resume", "set", "auth", "fork", "answer"}
FULL_HELP = "every column of the stored rows (the default shows what a person reads first)"
SecretPrompt = Callable[[str], str]
# What a surface lends ``execute``: ``events --follow`` and ``logs --follow`` print as things come
# and return how many lines; ``prompt --wait`` blocks on the turn; the widgets are the notebook's.
Follow = Callable[[HostProtocol, str, argparse.Namespace], int]
FollowLogs = Callable[[ReaderProtocol, str, argparse.Namespace], int]
Waiter = Callable[[TurnHandle, float | None], TurnResult]
Widgets = Callable[[HostProtocol, argparse.Namespace], object]


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises ``UsageError`` with one line instead of exiting."""

    def error(self, message: str) -> NoReturn:
        # The surface prints its own prefix ("agh-nb: error: "): name only the words after the
        # program, so the line never reads "agh-nb: error: agh-nb: ...".
        where = self.prog.split(" ", 1)[1] if " " in self.prog else ""
        raise UsageError(f"{where + ': ' if where else ''}{message} (try: {self.prog} --help)")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        # argparse has already printed the help (or version) text to stdout when it calls exit.
        raise _HelpShown(message or "")


class _HelpShown(Exception):
    """--help was asked for; carries the text to show."""


def build_parser(prog: str = "%agh") -> argparse.ArgumentParser:
    """Return the full command grammar."""
    root = _Parser(prog=prog, description="Drive durable ACP agent sessions.")
    root.add_argument("-o", "--output", choices=["json"], help="print exactly one JSON document instead")
    top = root.add_subparsers(dest="group", required=True, parser_class=_Parser)

    session = top.add_parser("session", help="session commands")
    session.add_argument("-o", "--output", choices=["json"], default=argparse.SUPPRESS)
    sub = session.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def cmd(name: str, help_text: str, aliases: Sequence[str] = ()) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, aliases=list(aliases))
        p.add_argument("-o", "--output", choices=["json"], default=argparse.SUPPRESS)
        return p

    new = cmd("new", "create a session and start its agent", aliases=["create"])
    new.add_argument("--agent", required=True, help="agent name (an AGENT.md definition)")
    new.add_argument("--cwd", help="workspace directory (default: the current directory)")
    new.add_argument("--name", help="a name for the session")
    new.add_argument("--permissions", help="deny-all | approve-reads | approve-all")
    new.add_argument("--type", dest="session_type", default="user", help="user | dream | system | coordinator | spawned")
    _agent_words(new, cmd)

    prompt = cmd("prompt", "send a prompt (queued while a turn runs)")
    prompt.add_argument("id")
    prompt.add_argument("text", nargs="*")
    prompt.add_argument("--wait", action="store_true", help="block until the turn finishes")
    prompt.add_argument("--interrupt", action="store_true", help="cancel the running turn and drop the queue")
    prompt.add_argument("--timeout", type=float, help="with --wait: give up waiting after this many seconds")

    stop = cmd("stop", "stop a session")
    stop.add_argument("id")

    listing = cmd("list", "list sessions")
    listing.add_argument("--include-health", action="store_true")
    listing.add_argument("--full", action="store_true", help=FULL_HELP)

    for name in ("status", "health", "inspect"):
        p = cmd(name, f"show a session's {name}")
        p.add_argument("id")

    events = cmd("events", "query a session's events")
    events.add_argument("id")
    events.add_argument("--last", type=int, help="the newest N events")
    events.add_argument("--type", action="append", dest="types", help="keep only this type (repeatable, or a,b)")
    events.add_argument("--turn", help="keep only this turn id")
    events.add_argument("--since", help="RFC3339 time or a duration like 5m")
    events.add_argument("--after-sequence", type=int)
    events.add_argument("--follow", action="store_true", help="keep printing new events (needs a live host)")
    events.add_argument("--full", action="store_true", help=FULL_HELP)

    history = cmd("history", "a session's events grouped by turn")
    history.add_argument("id")
    history.add_argument("--full", action="store_true", help=FULL_HELP)

    resume = cmd("resume", "resume a stopped session under the same id")
    resume.add_argument("id")
    resume.add_argument("--replay-transcript", action="store_true", help="send the transcript to a fresh ACP session")

    transcript = cmd("transcript", "the canonical transcript of a session")
    transcript.add_argument("id")

    repair = cmd("repair", "crash and transcript repair of a session left by a dead host")
    repair.add_argument("id")
    repair.add_argument("--dry-run", action="store_true", help="show the plan, write nothing")

    approve = cmd("approve", "decide a pending permission request")
    approve.add_argument("id")
    approve.add_argument("--request", required=True, help="the request id (req_...)")
    approve.add_argument("--decision", required=True, help="allow-once | allow-always | reject-once | reject-always")

    vault = top.add_parser("vault", help="the encrypted, write-only secret store")
    vault.add_argument("-o", "--output", choices=["json"], default=argparse.SUPPRESS)
    vsub = vault.add_subparsers(dest="command", required=True, parser_class=_Parser)
    vlist = vsub.add_parser("list", help="list secrets (metadata only)")
    vlist.add_argument("--namespace")
    vlist.add_argument("--prefix")
    vput = vsub.add_parser("put", help="store a secret; the value is asked for with a password prompt")
    vput.add_argument("ref", help="vault:<namespace>/<path>")
    vput.add_argument("--kind", help="what the secret is (kept on rotation when omitted)")
    vget = vsub.add_parser("get", help="a secret's metadata (never its value)")
    vget.add_argument("ref")
    vdelete = vsub.add_parser("delete", help="delete a secret")
    vdelete.add_argument("ref")
    for p in (vlist, vput, vget, vdelete):
        p.add_argument("-o", "--output", choices=["json"], default=argparse.SUPPRESS)

    tail = top.add_parser("tail", help="a live event tail widget (notebook only)")
    tail.add_argument("id")
    tail.add_argument("-o", "--output", choices=["json"], default=argparse.SUPPRESS)
    timeline = top.add_parser("timeline", help="a chart of a session's turns and tool calls (notebook only)")
    timeline.add_argument("id")
    timeline.add_argument("-o", "--output", choices=["json"], default=argparse.SUPPRESS)
    approvals = top.add_parser("approvals", help="the live approval panel widget (notebook only)")
    approvals.add_argument("id", nargs="?")
    approvals.add_argument("-o", "--output", choices=["json"], default=argparse.SUPPRESS)

    sql = top.add_parser("sql", help="run a SQL query over the store")
    sql.add_argument("-o", "--output", choices=["json"], default=argparse.SUPPRESS)
    sql.add_argument("query", nargs="*")

    # export: the store as Parquet for fleet analytics (agh_nb.adapters.parquet_export).
    export = top.add_parser("export", help="write the store as Parquet: events by date, sessions, token_usage")
    export.add_argument("-o", "--output", choices=["json"], default=argparse.SUPPRESS)
    export.add_argument("dir", help="the export directory; exporting again adds only what is new")
    export.add_argument("--since", help="only events at or after this RFC3339 time or duration (7d)")
    export.add_argument("--session", help="only this session id")
    return root


def _agent_words(new: argparse.ArgumentParser, cmd: Callable[..., argparse.ArgumentParser]) -> None:
    """The words about the agent itself: its mode, model, login, forks, forms and log (issue 10)."""
    new.add_argument("--mode", help="the agent mode to start in (one the agent offers)")
    new.add_argument("--model", help="the model to start with (one the agent offers)")
    new.add_argument("--auth", metavar="METHOD", help="run ACP authenticate with this method before the session opens")

    change = cmd("set", "set the agent's mode, model or config options")
    change.add_argument("id")
    change.add_argument("--mode", help="a mode the agent offers")
    change.add_argument("--model", help="a model the agent offers")
    change.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="a config option (repeatable)")

    auth = cmd("auth", "run ACP authenticate with a method and retry what failed")
    auth.add_argument("id")
    auth.add_argument("method", help="one of the agent's auth methods (see inspect)")

    fork = cmd("fork", "a new session on a fork of this session's ACP session")
    fork.add_argument("id")
    fork.add_argument("--name", help="a name for the new session")

    answer = cmd("answer", "answer the agent's form (an elicitation)")
    answer.add_argument("id")
    answer.add_argument("--request", required=True, help="the request id (eli_...)")
    answer.add_argument("values", nargs="*", metavar="KEY=VALUE", help="the form's fields")
    answer.add_argument("--decline", action="store_true", help="decline the form instead")
    answer.add_argument("--cancel", action="store_true", help="cancel the form instead")

    logs = cmd("logs", "the agent's stderr, redacted, as kept under the session directory")
    logs.add_argument("id")
    logs.add_argument("--last", type=int, help="the newest N lines")
    logs.add_argument("--follow", action="store_true", help="keep printing new lines")


def _parse_answer(parser: argparse.ArgumentParser, words: list[str]) -> argparse.Namespace:
    """``session answer ID --request R KEY=VALUE...``: argparse takes positionals only before the
    first option, so ``KEY=VALUE`` words after ``--request`` come back as extras and join ``values``."""
    args, extras = parser.parse_known_args(words)
    strays = [w for w in extras if w.startswith("-") or "=" not in w]
    if strays:
        parser.error(f"unrecognized arguments: {' '.join(strays)}")
    args.values = [*args.values, *extras]
    return args


def _pairs(words: Sequence[str], what: str) -> dict[str, str]:
    """``KEY=VALUE`` words as a dict (one line naming a word without ``=``)."""
    out: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise UsageError(f"{what}: expected KEY=VALUE, got {word!r}")
        out[key] = value
    return out


def _logs(args: argparse.Namespace, reader: ReaderProtocol, follow_logs: FollowLogs | None) -> Result:
    """``session logs``: the agent's log lines (a reader's word: the logs are files of their own)."""
    if args.follow:
        if follow_logs is None:
            raise UsageError("--follow needs a terminal or a notebook")
        return Result(follow_logs(reader, args.id, args), None)
    lines = reader.logs(args.id, last=args.last)
    return Result(lines, {"session_id": args.id, "lines": list(lines), "cursor": lines.cursor})


FOLLOW_POLL = 0.5
"""Seconds between looks at a followed log."""


def follow_logs(
    reader: ReaderProtocol,
    session_id: str,
    args: argparse.Namespace,
    *,
    say: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
    max_seconds: float | None = None,
) -> int:
    """``session logs ID --follow``: print the log (or its last N lines), then new lines as the
    agent writes them, until the session is stopped (and its last lines are printed), the user
    interrupts, or ``max_seconds`` pass. Returns the number of lines printed."""
    lines = reader.logs(session_id, last=args.last)
    printed = 0
    started = time.monotonic()
    try:
        while True:
            for line in lines:
                say(line)
            printed += len(lines)
            stopped = _session_state(reader, session_id) == "stopped"
            if stopped or (max_seconds is not None and time.monotonic() - started > max_seconds):
                if stopped:
                    for line in reader.logs(session_id, cursor=lines.cursor):
                        say(line)
                        printed += 1
                return printed
            sleep(FOLLOW_POLL)
            lines = reader.logs(session_id, cursor=lines.cursor)
    except KeyboardInterrupt:
        say("(stopped following; the session goes on)")
        return printed


def _session_state(reader: ReaderProtocol, session_id: str) -> str | None:
    from agh_nb.core.session_dir import read_meta

    home = reader.home
    if home is not None and not reader.live:
        meta = read_meta(home, session_id)  # the command line: no store needed
        return meta.state.value if meta else None
    return str(reader.get(session_id).state.value)


@dataclass
class Result:
    """A command's outcome: the Python value for the user and its JSON document."""

    value: object  # a frame, Session, Record, handle, widget...: each surface shows it by what it is
    document: JSON | list[JSON] | None  # None for words that print as they go, and for widgets


def parse(line: str | Sequence[str], prog: str = "%agh") -> tuple[argparse.Namespace | None, str | None]:
    """Parse words; return ``(namespace, None)`` or ``(None, help_text)`` when help was asked.

    Raises:
        UsageError: for unknown words, flags or values.
    """
    try:
        words = shlex.split(line) if isinstance(line, str) else list(line)
    except ValueError as exc:
        raise UsageError(f"cannot parse the command line: {exc}") from None
    if not words:
        raise UsageError(f"{prog}: say what to do, e.g. {prog} session list (try: {prog} --help)")
    try:
        if words[:2] == ["session", "answer"]:
            return _parse_answer(build_parser(prog), words), None
        return build_parser(prog).parse_args(words), None
    except _HelpShown as shown:
        return None, str(shown)
    except UsageError as exc:
        if "vault" in words[:3] and "unrecognized arguments" in str(exc):
            # An extra word after a vault command may be a value typed by mistake: never echo it.
            raise UsageError(
                f"{prog} vault: unexpected words after the command (not shown, in case one is a secret); "
                f"a value is never given on the command line: {prog} vault put REF asks for it"
            ) from None
        raise


def execute(
    args: argparse.Namespace,
    reader: ReaderProtocol,
    *,
    cell: str | None = None,
    follow: Follow | None = None,
    secret_prompt: SecretPrompt | None = None,
    widgets: Widgets | None = None,
    waiter: Waiter | None = None,
    prog: str = "%agh",
    follow_logs: FollowLogs | None = None,
) -> Result:
    """Run a parsed command against ``reader``: a ``Reader`` (read-only words), or a live host
    (the embedded ``Host`` or a ``RemoteHost``; both are a ``HostProtocol``, told by ``live``).

    The value is what a person reads first (compact rows; dicts that show as small tables); the
    document (``-o json``) is the full JSON, unchanged by that. ``prog`` is the surface's own
    spelling (``%agh`` or ``agh-nb``), used in hints.

    Raises:
        UsageError: when a live command is run without a live host, or arguments conflict.
        AghError: whatever the operation raises (one line for the user).
    """
    if args.group == "sql":
        frame = reader.sql(cell if cell is not None else " ".join(args.query))
        return Result(frame, _frame_records(frame))
    if args.group == "vault":
        return _vault(args, reader, secret_prompt, prog)
    if args.group == "export":
        summary = reader.export(args.dir, since=args.since, session=args.session)
        return Result(summary, summary)
    if args.group in ("tail", "approvals", "timeline"):
        if not is_live(reader) or widgets is None:
            raise UsageError(f"'{args.group}' is a notebook widget: run %agh {args.group} in a notebook")
        if getattr(args, "id", None):
            reader.get(args.id)
        value = widgets(reader, args)
        return Result(value, reader.pending_approvals(args.id) if args.group == "approvals" else None)
    command = args.command
    if command in LIVE_COMMANDS:
        if not is_live(reader):
            raise UsageError(_needs_live_host(f"session {command}", prog))
        return _live_command(args, reader, cell=cell, waiter=waiter, prog=prog)
    if command == "logs":
        return _logs(args, reader, follow_logs)
    if command == "list":
        rows = []
        for record in reader.list():
            row = record.to_dict()
            if args.include_health:
                row["health"] = reader.status(record.id)["health"]
            rows.append(row)
        return Result(_frame(rows if args.full else output.session_rows(rows)), rows)
    if command in ("status", "health"):
        status = reader.status(args.id)
        doc = status["health"] if command == "health" else status
        return Result(Record(doc, f"{command} of {args.id}"), doc)
    if command == "inspect":
        doc = reader.inspect(args.id)
        return Result(Record(doc, f"session {args.id}"), doc)
    if command == "transcript":
        entries = reader.transcript(args.id)
        return Result(entries, entries)
    if command == "repair":
        plan = reader.repair(args.id, dry_run=args.dry_run)
        return Result(Record(plan, f"repair of {args.id}"), plan)
    if command == "events":
        filters = build_query(
            last=args.last,
            types=[t for spec in (args.types or []) for t in spec.split(",") if t],
            turn=args.turn,
            since=args.since,
            after_sequence=args.after_sequence,
        )
        if args.follow:
            if getattr(args, "output", None) == "json" or args.full:
                flag = "-o json" if getattr(args, "output", None) == "json" else "--full"
                raise UsageError(
                    f"session events: --follow prints one line per event as it arrives, so it does not "
                    f"take {flag}; drop --follow for {flag}, or {flag} to follow"
                )
            if not is_live(reader) or follow is None:
                raise UsageError(_needs_live_host("--follow", prog))
            return Result(follow(reader, args.id, args), None)
        events = reader.events(args.id, filters)
        rows = [e.to_dict() for e in events]
        return Result(_frame(rows if args.full else output.event_rows(events)), rows)
    if command == "history":
        turns = reader.history(args.id)
        return Result(_frame(turns if args.full else output.history_rows(turns)), turns)
    raise UsageError(f"unknown command session {command}")


def _live_command(
    args: argparse.Namespace, host: HostProtocol, *, cell: str | None, waiter: Waiter | None, prog: str
) -> Result:
    """Run one of ``LIVE_COMMANDS`` (the words that need a host running sessions)."""
    command = args.command
    if command in ("new", "create"):
        record = host.create(
            args.agent,
            cwd=args.cwd,
            name=args.name,
            permissions=args.permissions,
            session_type=args.session_type,
            mode=args.mode,
            model=args.model,
            auth=args.auth,
        )
        return Result(Session(host, record.id), record.to_dict())
    if command == "set":
        options = _pairs(args.option, "session set --option")
        record = host.set(args.id, mode=args.mode, model=args.model, options=options or None)
        return Result(record.to_dict(), record.to_dict())
    if command in ("auth", "fork", "resume"):
        if command == "auth":
            record = host.auth(args.id, args.method)
        elif command == "fork":
            record = host.fork(args.id, name=args.name)
        else:
            record = host.resume(args.id, replay_transcript=args.replay_transcript)
        return Result(Session(host, record.id), record.to_dict())
    if command == "answer":
        if args.decline and args.cancel:
            raise UsageError("session answer: --decline and --cancel cannot go together")
        action = "decline" if args.decline else "cancel" if args.cancel else "accept"
        if action != "accept" and args.values:
            raise UsageError(f"session answer: --{action} takes no KEY=VALUE")
        resolved = host.answer(args.id, args.request, _pairs(args.values, "session answer"), action=action)
        return Result(resolved, resolved)
    if command == "prompt":
        text = cell if cell is not None and cell.strip() else " ".join(args.text)
        if not text.strip():
            body = " (or use %%agh session prompt ID with a cell body)" if prog == "%agh" else ""
            raise UsageError(f"session prompt: give the prompt text{body}")
        handle = host.prompt(args.id, text, interrupt=args.interrupt)
        if args.wait:
            result: TurnResult = waiter(handle, args.timeout) if waiter else handle.wait(args.timeout)
            return Result(result, result.to_dict())
        return Result(handle, handle.to_dict())
    if command == "stop":
        doc = record_doc = host.stop(args.id).to_dict()
        return Result(Record(doc, f"session {args.id} stopped"), record_doc)
    if command == "approve":
        resolved = host.approve(args.id, args.request, args.decision)
        return Result(Record(resolved, f"request {args.request}"), resolved)
    raise UsageError(f"unknown command session {command}")


def _needs_live_host(what: str, prog: str) -> str:
    if prog == "%agh":
        return f"'{what}' needs a live host: run it in a notebook with %agh"
    return (
        f"'{what}' needs a live host, and none holds this AGH_HOME's store: start Jupyter with it "
        f"(.venv/bin/jupyter lab) and {prog} sends every word there, or use %agh in a notebook"
    )


def _vault(args: argparse.Namespace, reader: ReaderProtocol, secret_prompt: SecretPrompt | None, prog: str) -> Result:
    if args.command == "list":
        rows = reader.vault_list(namespace=args.namespace, prefix=args.prefix)
        return Result(_frame(rows), rows)
    if args.command == "put":
        from agh_nb.core.vault_refs import VAULT_KIND, parse_vault_ref

        parse_vault_ref(args.ref)  # a bad ref or kind fails before anyone types a secret
        if args.kind is not None and not VAULT_KIND.fullmatch(args.kind):
            raise UsageError(f"vault put: --kind takes 1-64 characters from [A-Za-z0-9._-], got {args.kind[:64]!r}")
        if secret_prompt is None:
            raise UsageError("vault put needs an interactive password prompt; use host.vault_put(ref, value) in Python")
        entry = reader.vault_put(args.ref, secret_prompt(f"value for {args.ref}: "), kind=args.kind)
        return Result(Record(entry, f"stored {args.ref}"), entry)
    if args.command == "get":
        entry = reader.vault_get(args.ref)
        return Result(Record(entry, args.ref), entry)
    entry = reader.vault_delete(args.ref)
    return Result(Record(entry, f"deleted {args.ref}"), entry)


def _frame(rows: list[JSON]) -> pandas.DataFrame:
    import pandas

    return pandas.DataFrame(rows)


def _frame_records(frame: pandas.DataFrame) -> list[JSON]:
    import json

    return list(json.loads(frame.to_json(orient="records", date_format="iso")))
