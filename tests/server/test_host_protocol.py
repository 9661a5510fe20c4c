"""The host surface (core.host): the embedded host, the remote host and the server host speak the
same words. Strict mypy checks the classes against the protocols (hosts._conforms); this checks
at run time that each host has every word with the same parameters, and that every word the
remote host speaks reaches a route the server host serves (no word falls to the 404 route)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agh_nb.api import Host, Reader
from agh_nb.core.host import HOST_WORDS, HostProtocol, ReaderProtocol
from agh_nb.remote import RemoteHost, ServerInfo
from agh_nb.server.app import API_PREFIX
from agh_nb.server.handlers import NotFoundHandler, routes

READER_WORDS = sorted(n for n in vars(ReaderProtocol) if not n.startswith("_"))


def _parameters(cls: type, word: str) -> list[tuple[str, Any, Any]]:
    member = inspect.getattr_static(cls, word, None)
    if not callable(member):
        return []  # an attribute or property (live, home)
    return [(p.name, p.kind, p.default) for p in inspect.signature(member).parameters.values()]


def _has(cls: type, word: str, tmp_path: Path) -> bool:
    if hasattr(cls, word):
        return True
    # An attribute set by the constructor (``home``): look at an instance. The embedded host is a
    # Reader and sets its attributes through Reader's constructor.
    if cls is RemoteHost:
        return hasattr(RemoteHost(ServerInfo(url="http://127.0.0.1:1/", token="")), word)
    return issubclass(cls, Reader) and hasattr(Reader.open_vault_only(tmp_path), word)


@pytest.mark.parametrize("host", [Host, RemoteHost], ids=["embedded", "remote"])
@pytest.mark.parametrize("word", HOST_WORDS)
def test_each_live_host_has_every_word_with_the_protocols_parameters(host: type, word: str, tmp_path: Path) -> None:
    assert _has(host, word, tmp_path), f"{host.__name__} lacks {word}"
    assert _parameters(host, word) == _parameters(HostProtocol, word), word


@pytest.mark.parametrize("word", READER_WORDS)
def test_the_read_only_reader_has_every_store_word(word: str, tmp_path: Path) -> None:
    assert _has(Reader, word, tmp_path)
    assert _parameters(Reader, word) == _parameters(ReaderProtocol, word), word


class _Said(Exception):
    """Raised after recording a request: the word's reply is not needed here."""


class _Recording(RemoteHost):
    """A remote host whose requests are written down instead of sent."""

    def __init__(self) -> None:
        super().__init__(ServerInfo(url="http://127.0.0.1:1/", token=""))
        self.said: list[tuple[str, str]] = []

    def _request(self, method: str, path: str, body: Any = None, **_: Any) -> Any:
        self.said.append((method, path.split("?")[0]))
        raise _Said


SID = "sess_00ff"
CALLS: dict[str, Callable[[RemoteHost], Any]] = {
    "get": lambda h: h.get(SID),
    "list": lambda h: h.list(),
    "status": lambda h: h.status(SID),
    "inspect": lambda h: h.inspect(SID),
    "events": lambda h: h.events(SID),
    "history": lambda h: h.history(SID),
    "transcript": lambda h: h.transcript(SID),
    "repair": lambda h: h.repair(SID),
    "logs": lambda h: h.logs(SID),
    "sql": lambda h: h.sql("select 1"),
    "export": lambda h: h.export("out"),
    "vault_put": lambda h: h.vault_put("vault:global/k", "v"),
    "vault_list": lambda h: h.vault_list(),
    "vault_get": lambda h: h.vault_get("vault:global/k"),
    "vault_delete": lambda h: h.vault_delete("vault:global/k"),
    "create": lambda h: h.create("demo"),
    "set": lambda h: h.set(SID, mode="m"),
    "auth": lambda h: h.auth(SID, "login"),
    "fork": lambda h: h.fork(SID),
    "prompt": lambda h: h.prompt(SID, "hi"),
    "stop": lambda h: h.stop(SID),
    "resume": lambda h: h.resume(SID),
    "approve": lambda h: h.approve(SID, "perm_1", "allow"),
    "pending_approvals": lambda h: h.pending_approvals(SID),
    "answer": lambda h: h.answer(SID, "elic_1", {}),
    "pending_elicitations": lambda h: h.pending_elicitations(SID),
}
STREAMS = {"subscribe": f"sessions/{SID}/stream", "watch_approvals": "approvals/stream"}
"""Words answered by an event stream (read by an SSE reader thread, not ``_request``)."""
LOCAL = {"live", "home", "close"}
"""Words a remote host answers without the server."""


def _served(method: str, path: str) -> bool:
    url = f"/{API_PREFIX}/{path}"
    for pattern, handler in routes(API_PREFIX):
        if re.fullmatch(pattern, url):
            return handler is not NotFoundHandler and hasattr(handler, method.lower())
    return False


def test_every_word_of_the_remote_host_is_served_by_the_server_host() -> None:
    assert set(CALLS) | set(STREAMS) | LOCAL == set(HOST_WORDS)
    for word, call in CALLS.items():
        host = _Recording()
        with pytest.raises(_Said):
            call(host)
        assert host.said, word
        for method, path in host.said:
            assert _served(method, path), f"{word}: {method} {path} is not a route of the server host"
    for word, path in STREAMS.items():
        assert _served("GET", path), word
