"""``session prompt ID TEXT --wait``: block until the turn ends, showing it is alive, and let a
person answer the turn's permission requests while the cell (or the command line) blocks.

Owns: ``TurnWaiter``, ``ProgressLine`` (what a surface gives it to show progress on: a notebook
display updated in place, or a terminal line rewritten with a carriage return) and
``TerminalLine``. Progress is cheap: every poll asks for the turn's newest event only
(``last=1``) and the pending requests, never the turn's whole event list. While a cell runs, the
kernel's shell thread is busy, so the approval panel's buttons cannot be clicked: a pending
request of the turn is asked about inline with ``input()`` when a person can answer, and
otherwise named in one line saying how to decide it (in the surface's own words: ``%agh`` in a
notebook, ``agh-nb`` in a terminal). Imports no IPython; must not import ``agh_nb.server``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol, TextIO

from agh_nb.core.handles import TurnHandle
from agh_nb.core.host import HostProtocol
from agh_nb.core.permissions import DECISIONS
from agh_nb.core.turn import TurnResult
from agh_nb.errors import AghError

POLL_INTERVAL = 0.5  # progress and pending requests are looked at this often
END_CHECK_INTERVAL = 0.1
ASK_ATTEMPTS = 3
# What a person may type at the inline question: the decision, its number, or a short word.
ANSWERS = {
    **{d: d for d in DECISIONS},
    **{str(i): d for i, d in enumerate(DECISIONS, start=1)},
    "a": "allow-once", "y": "allow-once", "yes": "allow-once", "allow": "allow-once",
    "r": "reject-once", "n": "reject-once", "no": "reject-once", "reject": "reject-once",
}


class ProgressLine(Protocol):
    """One line of progress that can be replaced in place."""

    def update(self, text: str) -> None:
        """Show ``text`` instead of what the line showed."""

    def close(self) -> None:
        """The wait is over: leave the last text shown."""


class TerminalLine:
    """A progress line in a terminal: rewritten in place with a carriage return (never one new
    line per poll), ended with a newline on ``close``."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._width = 0

    def update(self, text: str) -> None:
        """Rewrite the line (padding over a longer previous text)."""
        pad = max(0, self._width - len(text))
        self._stream.write("\r" + text + " " * pad)
        self._stream.flush()
        self._width = len(text)

    def close(self) -> None:
        """End the line."""
        if self._width:
            self._stream.write("\n")
            self._stream.flush()
            self._width = 0


def _one_line(text: Any) -> str:
    return " ".join(str(text or "").split())


def describe_request(request: dict[str, Any]) -> str:
    """``req_x (Write /ws/a.txt [edit]; paths: /ws/a.txt)``: one line naming a request."""
    title = _one_line(request.get("title")) or "(untitled tool call)"
    kind = _one_line(request.get("kind")) or "other"
    paths = [_one_line(p) for p in request.get("paths") or []]
    where = f"; paths: {', '.join(paths)}" if paths else ""
    return f"{request.get('request_id')} ({title} [{kind}]{where})"


class TurnWaiter:
    """Waits for one turn in a blocking cell.

    Args:
        host: the process-wide host (embedded or remote).
        line: makes the progress line from its first text, or None for no progress (``-o json``).
        ask: called with a one-line question to get a person's answer (``input``), or None
            when nobody can answer here.
        say: where notes go (one line each): stdout normally, stderr under ``-o json``.
        prog: the surface's command word in hints (``%agh`` or ``agh-nb``).
        clock, sleep: collaborators (real defaults).
    """

    def __init__(
        self,
        host: HostProtocol,
        *,
        line: Callable[[str], ProgressLine] | None,
        ask: Callable[[str], str] | None,
        say: Callable[[str], None],
        prog: str = "%agh",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._host = host
        self._line = line
        self._progress = line is not None
        self._prog = prog
        self._ask = ask
        self._say = say
        self._clock = clock
        self._sleep = sleep
        self._seen: set[str] = set()  # requests already asked about or named
        self._first_sequence: int | None = None

    # -- the wait ------------------------------------------------------------------------------

    def wait(self, handle: TurnHandle, timeout: float | None) -> TurnResult:
        """Block until the turn of ``handle`` ends (or ``timeout`` seconds pass); return its result.

        Raises:
            AghError: the timeout passed, or the user interrupted the cell (the turn goes on).
        """
        started = self._clock()
        queued = getattr(handle, "position", 0)
        first = f"turn {handle.turn_id}: {'queued' if queued else 'starting'}"
        line = self._line(first) if self._line is not None else None
        shown = ""
        try:
            while not handle.done():
                elapsed = self._clock() - started
                if timeout is not None and elapsed > timeout:
                    break
                pending = self._pending(handle)
                if line is not None:
                    text = self._progress_text(handle, elapsed, pending)
                    if text != shown:
                        line.update(text)
                        shown = text
                for request in pending:
                    if request["request_id"] not in self._seen:
                        self._seen.add(request["request_id"])
                        self._handle_request(handle, request)
                for form in self._forms(handle):
                    if form["request_id"] not in self._seen:
                        self._seen.add(form["request_id"])
                        self._say(self._form_hint(handle, form))
                self._pause(handle)
            if not handle.done():
                # The timeout passed: say how long we really waited (the handle's own wait would
                # only know the remainder, 0s).
                raise AghError(
                    f"turn {handle.turn_id} still running after {self._clock() - started:.1f}s; it continues "
                    f"in the background ({self._prog} session events {handle.session_id} --follow shows it)"
                )
            result = handle.wait(None)
        except KeyboardInterrupt:
            if line is not None:
                line.update(f"turn {handle.turn_id}: stopped waiting after {self._clock() - started:.1f}s")
                line.close()
            raise AghError(
                f"stopped waiting for turn {handle.turn_id}; it keeps running in the background "
                f"({self._prog} session events {handle.session_id} --follow shows it)"
            ) from None
        except AghError:
            if line is not None:
                line.update(f"turn {handle.turn_id}: still running after {self._clock() - started:.1f}s")
                line.close()
            raise
        if line is not None:
            line.update(f"turn {handle.turn_id}: {result.stop_reason} after {self._clock() - started:.1f}s")
            line.close()
        return result

    def _pause(self, handle: TurnHandle) -> None:
        # Poll every POLL_INTERVAL, but notice the end of the turn within a tenth of a second.
        for _ in range(round(POLL_INTERVAL / END_CHECK_INTERVAL)):
            if handle.done():
                return
            self._sleep(END_CHECK_INTERVAL)

    # -- cheap progress ---------------------------------------------------------------------------

    def _progress_text(self, handle: TurnHandle, elapsed: float, pending: list[dict[str, Any]]) -> str:
        from agh_nb.api import build_query

        try:
            newest = self._host.events(handle.session_id, build_query(last=1, turn=handle.turn_id))
            if self._first_sequence is None:
                first = self._host.events(
                    handle.session_id, build_query(last=1, turn=handle.turn_id, types=["user_message"])
                )
                self._first_sequence = first[0].sequence if first else None
        except AghError:  # progress is best effort; the wait itself must not fail on it
            newest = []
        if newest and newest[-1].type in ("done", "session_stopped"):
            # The turn has ended; a failed turn resolves once its session has stopped.
            reason = newest[-1].content.get("stop_reason") or "ended"
            return f"turn {handle.turn_id}: {reason} after {elapsed:.1f}s, the session is stopping"
        text = f"turn {handle.turn_id}: running for {elapsed:.1f}s"
        if newest and newest[-1].type != "user_message":
            last = newest[-1]
            if self._first_sequence is not None:
                count = last.sequence - self._first_sequence + 1
                text += f", {count} event{'s' if count != 1 else ''} so far"
            text += f", last #{last.sequence} {last.type}"
        else:
            text += ", waiting for the agent"
        if pending:
            text += f", waiting for a decision on {', '.join(p['request_id'] for p in pending)}"
        return text

    def _forms(self, handle: TurnHandle) -> list[dict[str, Any]]:
        try:
            forms: list[dict[str, Any]] = self._host.pending_elicitations(handle.session_id)
        except AghError:
            return []
        return [f for f in forms if f.get("turn_id") in (None, handle.turn_id)]

    def _form_hint(self, handle: TurnHandle, form: dict[str, Any]) -> str:
        names = " ".join(f"{f['name']}=..." for f in form.get("fields") or [])
        where = " (or --decline) from another cell, or in the %agh approvals panel" if self._prog == "%agh" else " (or --decline) from another terminal"
        return (
            f"agh: the agent asks you to fill a form ({form['request_id']}: {_one_line(form.get('message'))}); answer it "
            f"with {self._prog} session answer {handle.session_id} --request {form['request_id']} {names}{where}. "
            "Still waiting."
        )

    def _pending(self, handle: TurnHandle) -> list[dict[str, Any]]:
        try:
            requests = self._host.pending_approvals(handle.session_id)
        except AghError:
            return []
        return [r for r in requests if r.get("turn_id") in (None, handle.turn_id)]

    # -- deciding inline --------------------------------------------------------------------------

    def _handle_request(self, handle: TurnHandle, request: dict[str, Any]) -> None:
        if self._ask is None:
            self._say(self._hint(handle, request))
            return
        question = (
            f"agh: the agent asks permission: {describe_request(request)}. Decide: "
            f"1 allow-once, 2 allow-always, 3 reject-once, 4 reject-always (empty: decide later): "
        )
        for _attempt in range(ASK_ATTEMPTS):
            try:
                answer = self._ask(question).strip().lower()
            except (EOFError, RuntimeError, OSError, NotImplementedError):
                # ipykernel's StdinNotImplementedError is a NotImplementedError
                self._ask = None
                self._say(self._hint(handle, request))
                return
            if not answer:
                self._say(self._hint(handle, request))
                return
            decision = ANSWERS.get(answer)
            if decision is None:
                question = f"agh: {answer!r} is not a decision; type 1-4 or allow-once, allow-always, reject-once, reject-always: "
                continue
            try:
                resolved = self._host.approve(handle.session_id, request["request_id"], decision)
            except AghError as exc:
                self._say(f"agh: {request['request_id']} was not decided here: {exc}")
                return
            if self._progress:  # under -o json the document is the only output
                self._say(f"agh: {request['request_id']}: {resolved.get('decision', decision)}")
            return
        self._say(self._hint(handle, request))

    def _hint(self, handle: TurnHandle, request: dict[str, Any]) -> str:
        sid, rid = handle.session_id, request["request_id"]
        command = f"{self._prog} session approve {sid} --request {rid} --decision allow-once (or allow-always, reject-once, reject-always)"
        if self._prog != "%agh":  # a terminal: another terminal can decide it
            how = f"decide it from another terminal with {command}"
        elif getattr(self._host, "runtime", None) is None:  # the Jupyter server's host
            how = (
                f"decide it from another notebook of this Jupyter server with {command}, "
                f"or with the HTTP API: POST /agh/api/sessions/{sid}/approve"
            )
        else:
            how = (
                f"interrupt the cell (the turn keeps running) and decide it with the approval panel or {command}; "
                "undecided, it is rejected after [permissions] approval_timeout"
            )
        where = "this busy cell cannot take by click" if self._prog == "%agh" else "nobody can type here"
        return f"agh: {describe_request(request)} is waiting for a decision, which {where}: {how}. Still waiting."
