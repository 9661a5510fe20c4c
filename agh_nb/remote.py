"""Client mode: the same host words spoken over the Jupyter server's HTTP API (docs/http-api.md).

Owns: ``RemoteHost`` (the ``Host`` surface over HTTP + SSE), ``discover`` (the ``AGH_NB_SERVER``
variable the server extension leaves for the kernels it starts), ``error_from_body`` (an error
answer back into the ``AghError`` class the server raised) and a small SSE reader. Uses only the
standard library for HTTP, so a kernel needs nothing extra to talk to its server.

Parity with the embedded ``Host``: paths are resolved in this (the kernel's) process, remote
errors keep their class and identifying fields, and a subscription, like a store subscription,
delivers committed events only (never the stream's synthetic stop) and lasts until it is closed,
across stops and resumes of its session.
"""

from __future__ import annotations

import builtins

import concurrent.futures
import json
import logging
import os
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agh_nb import errors as _errors
from agh_nb.core.handles import LogLines, TurnHandle
from agh_nb.core.record import SessionRecord
from agh_nb.core.session import TurnResult
from agh_nb.errors import AghError, HostError, UsageError
from agh_nb.events import JSON, Event, EventQuery, format_timestamp

if TYPE_CHECKING:
    import pandas

log = logging.getLogger(__name__)

ENV_VAR = "AGH_NB_SERVER"
RECONNECT_DELAY = 1.0
"""Seconds between attempts to reopen a dropped event stream."""


def _error_classes() -> dict[str, type[AghError]]:
    """Every ``AghError`` class of ``agh_nb.errors`` by name (the whole tree, walked)."""
    found: dict[str, type[AghError]] = {}
    todo: builtins.list[type[AghError]] = [AghError]
    while todo:
        cls = todo.pop()
        if cls.__module__ == _errors.__name__ and cls.__name__ not in found:
            found[cls.__name__] = cls
            todo.extend(cls.__subclasses__())
    return found


_ERRORS = _error_classes()


def error_from_body(status: int, body: bytes) -> AghError:
    """Rebuild the ``AghError`` an error answer describes: the class it names (``AghError`` when it
    names none of ours, e.g. ``NotFound``), its one-line message, and its identifying fields
    (``session_id``, ``request_id``...) plus ``http_status``."""
    try:
        error = json.loads(body or b"{}").get("error")
    except (ValueError, AttributeError):
        error = None
    if not isinstance(error, dict):
        error = {}
    message = str(error.get("message") or f"the agh_nb server answered HTTP {status}")
    cls = _ERRORS.get(str(error.get("type")), AghError)
    fields = {str(k): v for k, v in error.items() if k not in ("type", "message")}
    fields["http_status"] = status
    return cls(message, **fields)


@dataclass(frozen=True)
class ServerInfo:
    """Where the server host is: base URL, token and pid."""

    url: str
    token: str
    pid: int | None = None


def discover(environ: dict[str, str] | None = None) -> ServerInfo | None:
    """Return the server named by ``AGH_NB_SERVER`` if it is set and its process is alive."""
    raw = (os.environ if environ is None else environ).get(ENV_VAR)
    if not raw:
        return None
    try:
        data = json.loads(raw)
        info = ServerInfo(
            url=str(data["url"]).rstrip("/") + "/", token=str(data.get("token") or ""), pid=data.get("pid")
        )
    except (ValueError, KeyError, TypeError):
        log.warning("ignoring a malformed %s variable", ENV_VAR)
        return None
    if info.pid:
        try:
            os.kill(int(info.pid), 0)
        except (ProcessLookupError, ValueError):
            return None
        except PermissionError:
            pass
    return info


def running_servers(runtime_dir: str | None = None) -> builtins.list[ServerInfo]:
    """The Jupyter servers running on this machine, found as Jupyter finds them: the
    ``jpserver-<pid>.json`` files of its runtime directory (``jupyter --runtime-dir``, or
    ``JUPYTER_RUNTIME_DIR``) whose process is alive. Unlike jupyter_server's
    ``list_running_servers`` this deletes nothing and does not import the server."""
    from jupyter_core.paths import jupyter_runtime_dir

    directory = Path(runtime_dir or jupyter_runtime_dir())
    found = []
    for path in sorted(directory.glob("jpserver-*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            info = ServerInfo(url=str(data["url"]).rstrip("/") + "/", token=str(data.get("token") or ""), pid=int(data["pid"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written, or not a server's file
        if info.pid and _alive(info.pid):
            found.append(info)
    return found


def find_server(home: Path, *, pids: Sequence[int] | None = None, timeout: float = 3.0) -> RemoteHost | None:
    """The running Jupyter server whose agh_nb host holds ``home``'s store (``GET /agh/api/host``
    names the same directory), or None. ``pids`` limits the candidates (the holder file's pid)."""
    wanted = home.resolve()
    for info in running_servers():
        if pids is not None and info.pid not in pids:
            continue
        remote = RemoteHost(info)
        try:
            described = remote.describe_host(timeout=timeout)
        except AghError:  # not an agh_nb server, another user's, or not answering
            continue
        if Path(str(described.get("home") or "")) == wanted and described.get("state") != "disabled":
            return remote
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RemoteHost:
    """The host surface over HTTP: sessions live in the Jupyter server and outlive this kernel."""

    live = True

    def __init__(self, info: ServerInfo, *, timeout: float = 60.0) -> None:
        self.info = info
        self._timeout = timeout
        self.home = None

    # -- plumbing -------------------------------------------------------------------------------

    def _url(self, path: str, query: dict[str, Any] | None = None) -> str:
        url = urllib.parse.urljoin(self.info.url, "agh/api/" + path.lstrip("/"))
        if query:
            clean = {k: v for k, v in query.items() if v is not None and v != ""}
            if clean:
                url += "?" + urllib.parse.urlencode(clean)
        return url

    def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self._url(path, query), data=data, method=method)
        request.add_header("Authorization", f"token {self.info.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout or self._timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            raise error_from_body(exc.code, exc.read()) from None
        except (urllib.error.URLError, OSError) as exc:
            raise HostError(
                f"the agh_nb server at {self.info.url} did not answer ({exc}); is Jupyter still running?"
            ) from None
        return json.loads(payload) if payload else None

    def ping(self) -> None:
        """Raise ``HostError`` unless the server's agh_nb API answers."""
        self._request("GET", "sessions", timeout=5)

    def describe_host(self, *, timeout: float = 5.0) -> JSON:
        """Which store the server holds: ``{"home", "store", "pid", "state"}``."""
        doc: JSON = self._request("GET", "host", timeout=timeout)
        if not isinstance(doc, dict):
            raise HostError(f"the server at {self.info.url} did not describe an agh_nb host")
        return doc

    # -- sessions -------------------------------------------------------------------------------

    def create(
        self,
        agent: str,
        *,
        cwd: str | None = None,
        name: str | None = None,
        permissions: str | None = None,
        session_type: str = "user",
        mode: str | None = None,
        model: str | None = None,
        auth: str | None = None,
    ) -> SessionRecord:
        """Create a session in the server and start its agent.

        ``cwd`` is resolved here, in the kernel (``~`` and a relative path mean what they mean in
        this process, as with the embedded host), and sent absolute.
        """
        body = {
            "agent": agent,
            "cwd": os.path.abspath(os.path.expanduser(cwd)) if cwd else os.getcwd(),
            "name": name,
            "permissions": permissions,
            "type": session_type,
            "mode": mode,
            "model": model,
            "auth": auth,
        }
        return SessionRecord.from_dict(
            self._request("POST", "sessions", {k: v for k, v in body.items() if v is not None})
        )

    # -- the agent itself (the same words as the embedded host) -----------------------------------

    def set(
        self,
        session_id: str,
        *,
        mode: str | None = None,
        model: str | None = None,
        options: dict[str, str] | None = None,
    ) -> SessionRecord:
        """Set the agent's mode, model or config options."""
        body = {k: v for k, v in {"mode": mode, "model": model, "options": options}.items() if v is not None}
        return SessionRecord.from_dict(self._request("POST", f"sessions/{_q(session_id)}/set", body))

    def auth(self, session_id: str, method: str) -> SessionRecord:
        """Run ``authenticate METHOD`` and retry what failed."""
        return SessionRecord.from_dict(self._request("POST", f"sessions/{_q(session_id)}/auth", {"method": method}))

    def fork(self, session_id: str, *, name: str | None = None) -> SessionRecord:
        """A new session on a fork of this one's ACP session."""
        body = {"name": name} if name is not None else {}
        return SessionRecord.from_dict(self._request("POST", f"sessions/{_q(session_id)}/fork", body))

    def answer(self, session_id: str, request_id: str, values: dict[str, str], *, action: str = "accept") -> JSON:
        """Answer a pending elicitation."""
        body = {"request_id": request_id, "values": values, "action": action}
        resolved: JSON = self._request("POST", f"sessions/{_q(session_id)}/answer", body)
        return resolved

    def pending_elicitations(self, session_id: str | None = None) -> builtins.list[JSON]:
        """Forms agents wait on: of one session, or of every active one (None)."""
        if session_id is None:
            return [p for r in self.list() if r.state.value == "active" for p in self.pending_elicitations(r.id)]
        pending: builtins.list[JSON] = self._request("GET", f"sessions/{_q(session_id)}/elicitations")["pending"]
        return pending

    def logs(self, session_id: str, *, last: int | None = None, cursor: str | None = None) -> LogLines:
        """The agent's log lines (redacted), as the embedded host returns them."""
        if last is not None and last < 1:
            raise UsageError(f"--last must be a positive number, got {last}")
        doc = self._request("GET", f"sessions/{_q(session_id)}/logs", query={"last": last, "cursor": cursor})
        lines = LogLines(doc["lines"])
        lines.cursor = doc["cursor"]
        return lines

    def prompt(self, session_id: str, text: str, *, interrupt: bool = False) -> TurnHandle:
        """Queue a prompt; the handle's ``wait()`` long-polls the server for the turn's end."""
        turn = self._request("POST", f"sessions/{_q(session_id)}/prompt", {"text": text, "interrupt": interrupt})
        future: concurrent.futures.Future[TurnResult] = concurrent.futures.Future()
        threading.Thread(
            target=self._watch_turn, args=(session_id, turn["turn_id"], future), daemon=True, name="agh-turn-poll"
        ).start()
        return TurnHandle(turn, future)

    def _watch_turn(self, session_id: str, turn_id: str, future: concurrent.futures.Future[TurnResult]) -> None:
        while True:
            try:
                state = self._request(
                    "GET", f"sessions/{_q(session_id)}/turns/{_q(turn_id)}", query={"wait": 30}, timeout=45
                )
            except AghError as exc:
                future.set_exception(exc)
                return
            if state.get("status") == "done":
                future.set_result(
                    TurnResult(
                        session_id, turn_id, state.get("stop_reason") or "", state.get("error"), state.get("usage")
                    )
                )
                return

    def stop(self, session_id: str, *, detail: str | None = None) -> SessionRecord:
        """Stop a session (``detail`` is recorded as its ``stop_detail``)."""
        body = {"detail": detail} if detail is not None else {}
        return SessionRecord.from_dict(self._request("POST", f"sessions/{_q(session_id)}/stop", body))

    def resume(self, session_id: str, *, replay_transcript: bool = False) -> SessionRecord:
        """Resume a stopped session under the same id."""
        body = {"replay_transcript": replay_transcript}
        return SessionRecord.from_dict(self._request("POST", f"sessions/{_q(session_id)}/resume", body))

    def repair(self, session_id: str, *, dry_run: bool = True) -> JSON:
        """Plan or apply repair of a session."""
        plan: JSON = self._request("POST", f"sessions/{_q(session_id)}/repair", {"dry_run": dry_run})
        return plan

    def get(self, session_id: str) -> SessionRecord:
        """Return a session's record."""
        return SessionRecord.from_dict(self._request("GET", f"sessions/{_q(session_id)}"))

    def list(self) -> builtins.list[SessionRecord]:
        """Return every session, oldest first."""
        return [SessionRecord.from_dict(r) for r in self._request("GET", "sessions")["sessions"]]

    def status(self, session_id: str) -> JSON:
        """State, stop reason, failure and health."""
        status: JSON = self._request("GET", f"sessions/{_q(session_id)}/status")
        return status

    def inspect(self, session_id: str) -> JSON:
        """Status plus capabilities, queue, pending approvals and vault refs."""
        doc: JSON = self._request("GET", f"sessions/{_q(session_id)}/inspect")
        return doc

    def events(self, session_id: str, query: EventQuery | None = None) -> builtins.list[Event]:
        """Events of a session (same filters as the embedded host)."""
        q = query or EventQuery()
        params = {
            "type": ",".join(q.types) or None,
            "turn": q.turn_id,
            "since": format_timestamp(q.since) if q.since else None,
            "after_sequence": q.after_sequence,
            "limit": q.limit,
            "agent_name": q.agent_name,
        }
        rows = self._request("GET", f"sessions/{_q(session_id)}/events", query=params)["events"]
        return [Event.from_dict(r) for r in rows]

    def history(self, session_id: str) -> builtins.list[JSON]:
        """Events grouped by turn."""
        turns: builtins.list[JSON] = self._request("GET", f"sessions/{_q(session_id)}/history")["turns"]
        return turns

    def transcript(self, session_id: str) -> builtins.list[JSON]:
        """The canonical transcript."""
        entries: builtins.list[JSON] = self._request("GET", f"sessions/{_q(session_id)}/transcript")["transcript"]
        return entries

    def sql(self, query: str) -> pandas.DataFrame:
        """Run SQL over the server's store; returns a DataFrame."""
        import pandas

        if not query.strip():
            raise UsageError("the SQL cell is empty: write a query, e.g. SELECT * FROM sessions")
        result = self._request("POST", "sql", {"query": query})
        frame = pandas.DataFrame(result["rows"], columns=result["columns"])
        for column in result.get("timestamps") or []:
            frame[column] = pandas.to_datetime(frame[column], utc=True, format="ISO8601")
        return frame

    def export(self, directory: str | Path, *, since: str | datetime | None = None, session: str | None = None) -> JSON:
        """Export the server's store as Parquet into ``directory`` (resolved here, in the kernel,
        and written by the server: the path must be one the server's process can write)."""
        body: JSON = {"dir": os.path.abspath(os.path.expanduser(str(directory)))}
        if since is not None:
            body["since"] = format_timestamp(since) if isinstance(since, datetime) else since
        if session is not None:
            body["session"] = session
        summary: JSON = self._request("POST", "export", body, timeout=max(self._timeout, 600.0))
        return summary

    # -- approvals --------------------------------------------------------------------------------

    def approve(self, session_id: str, request_id: str, decision: str) -> JSON:
        """Decide a pending permission request."""
        body = {"request_id": request_id, "decision": decision}
        resolved: JSON = self._request("POST", f"sessions/{_q(session_id)}/approve", body)
        return resolved

    def pending_approvals(self, session_id: str | None = None) -> builtins.list[JSON]:
        """Pending permission requests (of one session, or all)."""
        path = f"sessions/{_q(session_id)}/approvals" if session_id else "approvals"
        pending: builtins.list[JSON] = self._request("GET", path)["pending"]
        return pending

    def watch_approvals(self, callback: Callable[[str, JSON], None]) -> Callable[[], None]:
        """Call ``callback(change, request)`` for approval changes (an SSE reader thread)."""
        reader = _SseReader(self, "approvals/stream", None, lambda event, data, _id: callback(event, json.loads(data)))
        reader.start()
        return reader.close

    def subscribe(
        self, session_id: str | None, after_sequence: int, callback: Callable[[Sequence[Event]], None]
    ) -> _SseReader:
        """Committed events after ``after_sequence``, then live, until closed (an SSE reader thread).

        Like a store subscription it outlives stops: the stream is opened with ``keep_open`` so a
        later resume's events arrive too; an old ``session_stopped`` is just another event.
        """
        if session_id is None:
            raise UsageError("a remote subscription needs a session id")
        self.get(session_id)  # SessionNotFoundError here, as the embedded host raises it

        def deliver(event: str, data: str, _id: str | None) -> None:
            callback([Event.from_dict(json.loads(data))])

        reader = _SseReader(
            self, f"sessions/{_q(session_id)}/stream", after_sequence, deliver, query={"keep_open": 1}, session=True
        )
        reader.start()
        return reader

    # -- vault (metadata only) ---------------------------------------------------------------------

    def vault_put(self, ref: str, value: str, *, kind: str | None = None) -> JSON:
        """Store a secret in the server's vault; returns metadata."""
        body = {"value": value} | ({"kind": kind} if kind else {})
        entry: JSON = self._request("PUT", f"vault/{_q(ref)}", body)
        return entry

    def vault_list(self, *, namespace: str | None = None, prefix: str | None = None) -> builtins.list[JSON]:
        """Metadata of stored secrets."""
        secrets: builtins.list[JSON] = self._request("GET", "vault", query={"namespace": namespace, "prefix": prefix})["secrets"]
        return secrets

    def vault_get(self, ref: str) -> JSON:
        """One secret's metadata."""
        entry: JSON = self._request("GET", f"vault/{_q(ref)}")
        return entry

    def vault_delete(self, ref: str) -> JSON:
        """Delete a secret; returns its metadata."""
        entry: JSON = self._request("DELETE", f"vault/{_q(ref)}")
        return entry

    def close(self) -> None:
        """Nothing to close: the sessions belong to the server and outlive this kernel."""


def _q(value: str | None) -> str:
    return urllib.parse.quote(value or "", safe="")


class _SseReader:
    """Reads one SSE stream in a daemon thread, reconnecting with Last-Event-ID until closed.

    A session stream (``session=True``) ends for good when the server ends it (after the latest
    ``session_stopped``, or at shutdown) or sends its synthetic terminal stop, which is not a
    stored event and is not delivered. A ``session_stopped`` replayed from the backlog, older than
    a resume, ends nothing. A dropped connection is reopened after the last id received.
    """

    def __init__(
        self,
        host: RemoteHost,
        path: str,
        after: int | None,
        deliver: Callable[[str, str, str | None], None],
        *,
        query: dict[str, Any] | None = None,
        session: bool = False,
    ) -> None:
        self._host = host
        self._path = path
        self._query = query
        self._session = session
        self._last_id = str(after) if after is not None else None
        self._deliver = deliver
        self._closed = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="agh-sse")

    def start(self) -> None:
        """Start reading."""
        self._thread.start()

    def close(self) -> None:
        """Stop reading (idempotent); the reader thread ends at once, or at the next keep-alive."""
        self._closed.set()
        response = self._response
        if response is not None:
            try:  # shutting the socket down wakes a read blocked in the reader thread
                sock = response.fp.raw._sock
                sock.shutdown(socket.SHUT_RDWR)
            except Exception:  # not a plain socket response, or already closed
                pass
            try:
                response.close()
            except Exception:  # closing a socket another thread reads from may raise
                pass

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the reader thread to end; True once it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while not self._closed.is_set():
            request = urllib.request.Request(self._host._url(self._path, self._query))
            request.add_header("Authorization", f"token {self._host.info.token}")
            request.add_header("Accept", "text/event-stream")
            if self._last_id is not None:
                request.add_header("Last-Event-ID", self._last_id)
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    self._response = response
                    for event, data, event_id in _parse_sse(response):
                        if self._closed.is_set():
                            return
                        if event == _COMMENT:
                            continue  # a keep-alive: a chance to notice close()
                        if self._session and event == "session_stopped" and _synthetic(data):
                            return  # the terminal stop of a stopped session: nothing stored follows
                        if event_id is not None:
                            self._last_id = event_id
                        self._deliver(event, data, event_id)
                    if self._session:
                        return  # the server ended the stream: after the latest stop, or shutting down
            except urllib.error.HTTPError as exc:
                if exc.code < 500:  # refused (unknown session, bad token): retrying cannot help
                    refused = error_from_body(exc.code, exc.read())
                    log.warning("agh_nb: the event stream %s was refused: %s", self._path, refused)
                    return
                if self._closed.wait(RECONNECT_DELAY):  # the runtime is starting or going away
                    return
            except Exception:  # a dropped connection, or close() pulling the socket from under us
                if self._closed.is_set() or self._closed.wait(RECONNECT_DELAY):
                    return
            finally:
                self._response = None


def _synthetic(data: str) -> bool:
    try:
        row = json.loads(data)
    except ValueError:
        return False
    return isinstance(row, dict) and row.get("synthetic") is True


_COMMENT = ":"
"""The event name ``_parse_sse`` yields for a comment line (a keep-alive)."""


def _parse_sse(stream: Any) -> Iterator[tuple[str, str, str | None]]:
    """Yield ``(event, data, id)`` per message, and ``(_COMMENT, text, None)`` per comment line."""
    event: str = "message"
    data: builtins.list[str] = []
    event_id: str | None = None
    for raw in stream:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield event, "\n".join(data), event_id
            event, data, event_id = "message", [], None
            continue
        if line.startswith(":"):
            yield _COMMENT, line[1:].strip(), None
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            event_id = value
