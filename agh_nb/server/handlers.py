"""The REST handlers of the agh_nb HTTP API (docs/http-api.md) and its route table.

Owns: ``AghHandler`` (the base: Jupyter authentication and authorization on the ``agh_nb``
resource, XSRF through ``APIHandler``, JSON bodies validated by ``parse_body``, ``AghError`` ->
JSON error), one thin handler per route, and ``routes``. A handler declares its auth resource,
validates its body, calls the manager (live operations) or the store ``Reader`` (reads, in a
thread), and answers JSON; a bad body is refused before anything changes.
Must not import agh_nb.kernel.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import math
import os
from collections.abc import Awaitable, Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from agh_nb.api import build_query
from agh_nb.errors import AghError
from agh_nb.events import JSON, dumps
from agh_nb.server.errors import ApiError, api_error, bad_request, error_body, not_found
from agh_nb.server.validation import DECIMAL, MAX_DEPTH, MAX_INT, check_body_value, parse_count

if TYPE_CHECKING:
    import pandas

    from agh_nb.runtime import Runtime
    from agh_nb.server.app import AghServerExtension, ServerHost

AUTH_RESOURCE = "agh_nb"
"""The resource every route is authorized on (``Authorizer.is_authorized(..., resource)``)."""

Method = Callable[..., Awaitable[None]]


class PathText(str):
    """The ``parse_body`` kind of a field naming a file system path: a string without NUL bytes
    (no OS call accepts one; refused as a 400 before anything is created)."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}
def endpoint(method: Method) -> Method:
    """Authenticate, authorize on ``agh_nb``, and turn an ``AghError`` into its JSON status."""

    @functools.wraps(method)
    async def run(self: AghHandler, *args: Any, **kwargs: Any) -> None:
        try:
            await method(self, *args, **kwargs)
        except AghError as exc:
            raise api_error(exc, self.redact) from exc

    return cast(Method, web.authenticated(authorized(run)))


class AghHandler(ExtensionHandlerMixin, APIHandler):
    """Base of every agh_nb route: JSON in, JSON out, errors as ``{"error": {type, message}}``."""

    auth_resource = AUTH_RESOURCE

    @property
    def app(self) -> AghServerExtension:
        """The extension app (its traits and its host)."""
        return cast("AghServerExtension", self.extensionapp)

    @property
    def host(self) -> ServerHost:
        """The server host of the extension."""
        return self.app.host

    async def runtime(self) -> Runtime:
        """The running runtime (a 503 ``ApiError`` when disabled)."""
        return await self.host.runtime()

    def redact(self, text: str) -> str:
        """Redact stored secret values from ``text`` (error messages)."""
        return self.host.redact(text)

    # -- requests ----------------------------------------------------------------------------

    def parse_body(self, fields: dict[str, tuple[type, bool]]) -> JSON:
        """Parse the JSON object body; ``fields`` maps name -> (type, required). Unknown names are refused.

        A ``PathText`` kind takes a string that holds no NUL byte.

        Raises:
            ApiError: 400 for malformed JSON, a non-object, an unknown, missing or mistyped field.
        """
        raw = self.request.body or b""
        data: Any = {}
        if raw.strip():
            try:
                data = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as exc:  # ValueError: also a 5000-digit number
                raise bad_request("the request body is not valid JSON") from exc
            except RecursionError:  # "[" x 100000: the parser's own recursion limit
                raise bad_request(f"the request body is nested too deeply (at most {MAX_DEPTH} levels)") from None
        if not isinstance(data, dict):
            raise bad_request("the request body must be a JSON object")
        check_body_value(data, "the request body")
        unknown = sorted(set(data) - set(fields))
        if unknown:
            known = ", ".join(fields) or "none"
            raise bad_request(f"unknown field(s) {', '.join(map(repr, unknown))}; this route takes: {known}")
        for name, (kind, required) in fields.items():
            value = data.get(name)
            if value is None:
                if required:
                    raise bad_request(f"missing field {name!r} ({_kind(kind)})")
                data.pop(name, None)
            elif kind is PathText:
                if not isinstance(value, str) or "\x00" in value:
                    raise bad_request(f"field {name!r} must be {_kind(kind)}")
            elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise bad_request(f"field {name!r} must be {_kind(kind)}")
            elif isinstance(value, int) and not -MAX_INT <= value <= MAX_INT:
                raise bad_request(f"field {name!r} must be a whole number from {-MAX_INT} to {MAX_INT}")
        return data

    def bool_arg(self, name: str, default: bool = False) -> bool:
        """A boolean query argument (``1``/``true``/``0``/``false``)."""
        raw = self.get_query_argument(name, None)
        if raw is None:
            return default
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise bad_request(f"query argument {name!r} must be true or false")

    def int_arg(self, name: str, minimum: int = 0) -> int | None:
        """An integer query argument (None when absent)."""
        raw = self.get_query_argument(name, None)
        if raw is None or raw == "":
            return None
        return parse_count(raw, f"query argument {name!r}", minimum=minimum)

    def float_arg(self, name: str) -> float:
        """A non-negative number query argument (0 when absent)."""
        raw = self.get_query_argument(name, None)
        if raw is None or raw == "":
            return 0.0
        if not DECIMAL.fullmatch(raw.strip()):
            raise bad_request(f"query argument {name!r} must be a number of seconds (0 or more, like 2.5)")
        return float(raw)

    # -- replies -----------------------------------------------------------------------------

    def reply(self, doc: Any, status: int = 200) -> None:
        """Answer ``doc`` as JSON."""
        self.set_status(status)
        self.finish(dumps(doc))

    async def reply_from_thread(self, build: Callable[[], Any]) -> None:
        """Build and serialise a large answer off the loop (event lists, SQL results)."""
        self.set_status(200)
        self.finish(await asyncio.to_thread(lambda: dumps(build())))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Every error is JSON ``{"error": {"type", "message"}}``; never a traceback."""
        exc_info = kwargs.get("exc_info")
        error = exc_info[1] if exc_info else None
        if isinstance(error, ApiError):
            self._agh_error_type = error.error_type
        self.set_header("Content-Type", "application/json")
        self.finish(dumps(error_body(status_code, error)))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """Expected API errors are in the access log already; only bugs get a traceback."""
        if isinstance(value, ApiError):
            self.log.debug("agh_nb API %s %s -> %d %s", self.request.method, self.request.path,
                           value.status_code, value.error_type)
        else:
            super().log_exception(typ, value, tb)

    def _log(self) -> None:
        # Jupyter's access log dumps the request headers at error level for every 5xx. An AghError
        # answered as 5xx (agh_nb disabled: 503, each request; a StoreError: 500) is an expected,
        # one-line condition whose cause is logged elsewhere: one warning line is enough.
        error_type = getattr(self, "_agh_error_type", None)
        if self.get_status() >= 500 and error_type is not None:
            self.log.warning("%d %s %s (%s)", self.get_status(), self.request.method, self.request.path, error_type)
        else:
            super()._log()


def _kind(kind: type) -> str:
    names = {
        str: "a string",
        bool: "true or false",
        int: "an integer",
        dict: "an object",
        PathText: "a path (a string without NUL bytes)",
    }
    return names.get(kind, kind.__name__)


# -- sessions ---------------------------------------------------------------------------------


class SessionsHandler(AghHandler):
    """``GET`` lists sessions; ``POST`` creates one (201, the record)."""

    @endpoint
    async def get(self) -> None:
        include_health = self.bool_arg("include_health")
        self.reply({"sessions": await self.host.sessions(include_health=include_health)})

    @endpoint
    async def post(self) -> None:
        body = self.parse_body(
            {
                "agent": (str, True),
                "cwd": (PathText, False),
                "name": (str, False),
                "permissions": (str, False),
                "type": (str, False),
                "mode": (str, False),
                "model": (str, False),
                "auth": (str, False),
            }
        )
        runtime = await self.runtime()
        record = await runtime.manager.create(
            agent_name=body["agent"],
            cwd=os.path.join(self.serverapp.root_dir, os.path.expanduser(body.get("cwd") or ".")),
            name=body.get("name"),
            permissions=body.get("permissions"),
            session_type=body.get("type") or "user",
            mode=body.get("mode"),
            model=body.get("model"),
            auth=body.get("auth"),
        )
        self.reply(record.to_dict(), 201)


class SessionHandler(AghHandler):
    """``GET`` a session's record."""

    @endpoint
    async def get(self, session_id: str) -> None:
        self.reply(await self.host.record(session_id))


class StatusHandler(AghHandler):
    """``GET`` state, stop reason, failure, health (and queue when live)."""

    @endpoint
    async def get(self, session_id: str) -> None:
        self.reply(await self.host.status(session_id))


class HealthHandler(AghHandler):
    """``GET`` the health object."""

    @endpoint
    async def get(self, session_id: str) -> None:
        self.reply((await self.host.status(session_id))["health"])


class InspectHandler(AghHandler):
    """``GET`` record + status + queue + pending approvals + vault refs."""

    @endpoint
    async def get(self, session_id: str) -> None:
        self.reply(await self.host.inspect(session_id))


class EventsHandler(AghHandler):
    """``GET`` events, filtered (``type``, ``turn``, ``since``, ``after_sequence``, ``limit``, ``agent_name``)."""

    @endpoint
    async def get(self, session_id: str) -> None:
        query = build_query(
            last=self.int_arg("limit", minimum=1),
            types=self.get_query_argument("type", None),
            turn=self.get_query_argument("turn", None) or None,
            since=self.get_query_argument("since", None) or None,
            after_sequence=self.int_arg("after_sequence"),
            agent_name=self.get_query_argument("agent_name", None) or None,
        )
        reader = await self.host.reader()
        await self.reply_from_thread(lambda: {"events": [e.to_dict() for e in reader.events(session_id, query)]})


class HistoryHandler(AghHandler):
    """``GET`` events grouped by turn."""

    @endpoint
    async def get(self, session_id: str) -> None:
        reader = await self.host.reader()
        await self.reply_from_thread(lambda: {"turns": reader.history(session_id)})


class TranscriptHandler(AghHandler):
    """``GET`` the canonical transcript."""

    @endpoint
    async def get(self, session_id: str) -> None:
        reader = await self.host.reader()
        await self.reply_from_thread(lambda: {"transcript": reader.transcript(session_id)})


class PromptHandler(AghHandler):
    """``POST {"text", "interrupt"?}``: queue a turn (202; its ``user_message`` is durable)."""

    @endpoint
    async def post(self, session_id: str) -> None:
        body = self.parse_body({"text": (str, True), "interrupt": (bool, False)})
        runtime = await self.runtime()
        turn = await runtime.manager.prompt(session_id, body["text"], interrupt=body.get("interrupt", False))
        self.host.turns.add(turn)
        self.reply(turn.to_dict() | {"status": "running" if turn.position == 0 else "queued"}, 202)


class TurnHandler(AghHandler):
    """``GET ?wait=SECONDS``: a turn's status, long-polling up to 60 s for it to finish."""

    def initialize(self, *args: Any, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self._gone = asyncio.Event()

    def on_connection_close(self) -> None:
        self._gone.set()

    @endpoint
    async def get(self, session_id: str, turn_id: str) -> None:
        wait = self.float_arg("wait")
        doc = await self.host.turn(session_id, turn_id, wait=wait, gone=self._gone)
        if not self._gone.is_set():
            self.reply(doc)


class StopHandler(AghHandler):
    """``POST {"detail"?}``: stop the session (``detail`` becomes its ``stop_detail``); answers the final record."""

    @endpoint
    async def post(self, session_id: str) -> None:
        body = self.parse_body({"detail": (str, False)})
        runtime = await self.runtime()
        record = await runtime.manager.stop(session_id, detail=body.get("detail"))
        self.reply(record.to_dict())


class ResumeHandler(AghHandler):
    """``POST {"replay_transcript"?}``: resume a stopped session under the same id."""

    @endpoint
    async def post(self, session_id: str) -> None:
        body = self.parse_body({"replay_transcript": (bool, False)})
        runtime = await self.runtime()
        record = await runtime.manager.resume(session_id, replay_transcript=body.get("replay_transcript", False))
        self.reply(record.to_dict())


class ApproveHandler(AghHandler):
    """``POST {"request_id", "decision"}``: decide a pending permission request."""

    @endpoint
    async def post(self, session_id: str) -> None:
        body = self.parse_body({"request_id": (str, True), "decision": (str, True)})
        runtime = await self.runtime()
        self.reply(await runtime.manager.approve(session_id, body["request_id"], body["decision"]))


class SessionApprovalsHandler(AghHandler):
    """``GET`` the session's pending permission requests."""

    @endpoint
    async def get(self, session_id: str) -> None:
        self.reply({"pending": await self.host.pending(session_id)})


class RepairHandler(AghHandler):
    """``POST {"dry_run"?}`` (default true): the repair plan, applied when ``dry_run`` is false."""

    @endpoint
    async def post(self, session_id: str) -> None:
        body = self.parse_body({"dry_run": (bool, False)})
        runtime = await self.runtime()
        self.reply(await runtime.manager.repair(session_id, dry_run=body.get("dry_run", True)))


class ApprovalsHandler(AghHandler):
    """``GET`` pending permission requests of every session."""

    @endpoint
    async def get(self) -> None:
        self.reply({"pending": await self.host.pending(None)})


class SqlHandler(AghHandler):
    """``POST {"query"}``: a read-only SQL query; ``{"columns", "rows"}`` with JSON-safe values."""

    @endpoint
    async def post(self) -> None:
        body = self.parse_body({"query": (str, True)})
        reader = await self.host.reader()
        await self.reply_from_thread(lambda: frame_to_json(reader.sql(body["query"])))


class ExportHandler(AghHandler):
    """``POST {"dir", "since"?, "session"?}``: write what is new in the store as Parquet into
    ``dir`` (relative to the server's root), off the event loop; answers the export's summary."""

    @endpoint
    async def post(self) -> None:
        body = self.parse_body({"dir": (PathText, True), "since": (str, False), "session": (str, False)})
        reader = await self.host.reader()
        directory = os.path.join(self.serverapp.root_dir, os.path.expanduser(body["dir"]))
        summary = await asyncio.to_thread(
            reader.export, directory, since=body.get("since"), session=body.get("session")
        )
        self.reply(summary)


# -- vault (metadata only; values are write-only) -----------------------------------------------


class VaultListHandler(AghHandler):
    """``GET ?namespace=&prefix=``: metadata of stored secrets."""

    @endpoint
    async def get(self) -> None:
        namespace = self.get_query_argument("namespace", None) or None
        prefix = self.get_query_argument("prefix", None) or None
        reader = await self.host.reader()
        secrets = await asyncio.to_thread(reader.vault_list, namespace=namespace, prefix=prefix)
        self.reply({"secrets": secrets})


class VaultEntryHandler(AghHandler):
    """``GET``/``PUT {"value", "kind"?}``/``DELETE`` one secret by its (URL-encoded) ref; never the value."""

    @endpoint
    async def get(self, ref: str) -> None:
        reader = await self.host.reader()
        self.reply(await asyncio.to_thread(reader.vault_get, ref))

    @endpoint
    async def put(self, ref: str) -> None:
        body = self.parse_body({"value": (str, True), "kind": (str, False)})
        reader = await self.host.reader()
        self.reply(await asyncio.to_thread(reader.vault_put, ref, body["value"], kind=body.get("kind")))

    @endpoint
    async def delete(self, ref: str) -> None:
        reader = await self.host.reader()
        self.reply(await asyncio.to_thread(reader.vault_delete, ref))


class HostHandler(AghHandler):
    """``GET`` which store this server host holds (``home``, ``store``, ``pid``, ``state``);
    answers even while the runtime is disabled. Read-only."""

    @endpoint
    async def get(self) -> None:
        self.reply(self.host.describe())


class NotFoundHandler(AghHandler):
    """Any other path under the prefix: a JSON 404 (after authentication, like every route)."""

    async def _not_found(self, *args: Any) -> None:
        raise not_found(f"no agh_nb API route {self.request.method} {self.request.path}")

    # One wrapper per method: jupyter_server's ``authorized`` remembers the action it first saw.
    get = endpoint(_not_found)
    post = endpoint(_not_found)
    put = endpoint(_not_found)
    delete = endpoint(_not_found)
    patch = endpoint(_not_found)


# -- helpers ------------------------------------------------------------------------------------


def frame_to_json(frame: pandas.DataFrame) -> JSON:
    """``{"columns": [...], "rows": [[...]]}`` with every value JSON-safe (NaN/NaT -> null)."""
    return {
        "columns": [str(c) for c in frame.columns],
        # Lets a client rebuild timestamp columns as timestamps, as the embedded host returns them.
        "timestamps": [str(c) for c, dtype in frame.dtypes.items() if str(dtype).startswith("datetime64")],
        "rows": [[json_safe(v) for v in row] for row in frame.itertuples(index=False, name=None)],
    }


def json_safe(value: Any) -> Any:
    """Turn a DuckDB/pandas/numpy value into plain JSON data."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, datetime):
        return None if value != value else value.isoformat()  # NaT is not equal to itself
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [json_safe(v) for v in value]
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars
    if callable(tolist):
        return json_safe(tolist())
    if type(value).__name__ in ("NaTType", "NAType"):
        return None
    return str(value)


def routes(prefix: str) -> list[tuple[str, type[AghHandler]]]:
    """The route table of docs/http-api.md under ``/<prefix>`` (the server adds its base_url)."""
    from agh_nb.server.agent_handlers import (
        AnswerHandler,
        AuthHandler,
        ElicitationsHandler,
        ForkHandler,
        LogsHandler,
        SetHandler,
    )
    from agh_nb.server.sse import ApprovalStreamHandler, SessionStreamHandler

    p = "/" + prefix.strip("/")
    sid = r"(?P<session_id>[^/]+)"
    return [
        (rf"{p}/sessions/?", SessionsHandler),
        (rf"{p}/sessions/{sid}/?", SessionHandler),
        (rf"{p}/sessions/{sid}/status", StatusHandler),
        (rf"{p}/sessions/{sid}/health", HealthHandler),
        (rf"{p}/sessions/{sid}/inspect", InspectHandler),
        (rf"{p}/sessions/{sid}/events", EventsHandler),
        (rf"{p}/sessions/{sid}/history", HistoryHandler),
        (rf"{p}/sessions/{sid}/transcript", TranscriptHandler),
        (rf"{p}/sessions/{sid}/prompt", PromptHandler),
        (rf"{p}/sessions/{sid}/turns/(?P<turn_id>[^/]+)", TurnHandler),
        (rf"{p}/sessions/{sid}/stop", StopHandler),
        (rf"{p}/sessions/{sid}/resume", ResumeHandler),
        (rf"{p}/sessions/{sid}/approve", ApproveHandler),
        (rf"{p}/sessions/{sid}/approvals", SessionApprovalsHandler),
        (rf"{p}/sessions/{sid}/repair", RepairHandler),
        (rf"{p}/sessions/{sid}/set", SetHandler),
        (rf"{p}/sessions/{sid}/auth", AuthHandler),
        (rf"{p}/sessions/{sid}/fork", ForkHandler),
        (rf"{p}/sessions/{sid}/answer", AnswerHandler),
        (rf"{p}/sessions/{sid}/elicitations", ElicitationsHandler),
        (rf"{p}/sessions/{sid}/logs", LogsHandler),
        (rf"{p}/sessions/{sid}/stream", SessionStreamHandler),
        (rf"{p}/approvals/?", ApprovalsHandler),
        (rf"{p}/approvals/stream", ApprovalStreamHandler),
        (rf"{p}/sql", SqlHandler),
        (rf"{p}/host", HostHandler),
        (rf"{p}/export", ExportHandler),
        (rf"{p}/vault/?", VaultListHandler),
        (rf"{p}/vault/(?P<ref>.+)", VaultEntryHandler),
        (rf"{p}(?:/.*)?", NotFoundHandler),
    ]
