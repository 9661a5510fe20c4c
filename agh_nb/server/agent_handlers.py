"""The HTTP routes about the agent itself (docs/http-api.md): its mode, model and options
(``set``), its login (``auth``), forks, the forms it asks to fill (``answer``,
``elicitations``) and its log (``logs``).

Owns: one thin handler per route, on ``handlers.AghHandler`` (Jupyter auth, JSON bodies, errors
as JSON). Must not import agh_nb.kernel.
"""

from __future__ import annotations

import asyncio

from agh_nb.server.errors import bad_request
from agh_nb.server.handlers import AghHandler, endpoint



class SetHandler(AghHandler):
    """``POST {"mode"?, "model"?, "options"?: {KEY: VALUE}}``: set the agent's mode, model, options."""

    @endpoint
    async def post(self, session_id: str) -> None:
        body = self.parse_body({"mode": (str, False), "model": (str, False), "options": (dict, False)})
        options = body.get("options")
        if options is not None and not all(isinstance(v, str) for v in options.values()):
            raise bad_request("field 'options' must map option ids to string values")
        runtime = await self.runtime()
        record = await runtime.manager.change(session_id, mode=body.get("mode"), model=body.get("model"), options=options)
        self.reply(record.to_dict())


class AuthHandler(AghHandler):
    """``POST {"method"}``: run ACP ``authenticate`` and retry what failed."""

    @endpoint
    async def post(self, session_id: str) -> None:
        body = self.parse_body({"method": (str, True)})
        runtime = await self.runtime()
        self.reply((await runtime.manager.auth(session_id, body["method"])).to_dict())


class ForkHandler(AghHandler):
    """``POST {"name"?}``: a new session on a fork of this one's ACP session (201, its record)."""

    @endpoint
    async def post(self, session_id: str) -> None:
        body = self.parse_body({"name": (str, False)})
        runtime = await self.runtime()
        self.reply((await runtime.manager.fork(session_id, name=body.get("name"))).to_dict(), 201)


class AnswerHandler(AghHandler):
    """``POST {"request_id", "values"?: {KEY: VALUE}, "action"?}``: answer an elicitation."""

    @endpoint
    async def post(self, session_id: str) -> None:
        body = self.parse_body({"request_id": (str, True), "values": (dict, False), "action": (str, False)})
        values = body.get("values") or {}
        if not all(isinstance(v, str) for v in values.values()):
            raise bad_request("field 'values' must map field names to string values")
        runtime = await self.runtime()
        self.reply(
            await runtime.manager.answer(session_id, body["request_id"], values, action=body.get("action") or "accept")
        )


class ElicitationsHandler(AghHandler):
    """``GET`` the session's pending elicitations (forms the agent waits on)."""

    @endpoint
    async def get(self, session_id: str) -> None:
        runtime = await self.runtime()
        await runtime.manager.get(session_id)
        self.reply({"pending": runtime.manager.elicitations.pending(session_id)})


class LogsHandler(AghHandler):
    """``GET ?last=N&cursor=C``: the agent's stderr as kept (redacted) and the cursor for more."""

    @endpoint
    async def get(self, session_id: str) -> None:
        last = self.int_arg("last", minimum=1)
        cursor = self.get_query_argument("cursor", None) or None
        reader = await self.host.reader()
        lines = await asyncio.to_thread(reader.logs, session_id, last=last, cursor=cursor)
        self.reply({"session_id": session_id, "lines": list(lines), "cursor": lines.cursor})
