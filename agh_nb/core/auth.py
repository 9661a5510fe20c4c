"""Authentication with an agent (ACP ``authenticate``): which method to use, and what to tell
the user when none fits.

Owns: ``choose_method`` (an ``env_var`` method whose variables the agent's environment has, else
the AGENT.md ``auth`` method), ``describe_method`` and ``auth_failure_summary`` (the one line of
an ``auth_failure``: every method the agent offers and what it needs), and ``Authenticator``,
which runs a call and, when the agent answers "authentication required", authenticates and
runs it once more. Works on the auth methods as the agent sent them (``authMethods`` of
``initialize``, wire form). Imports nothing third-party.
"""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import TypeVar

from agh_nb.core.ports import AgentDriver, DriverFailure
from agh_nb.core.state import FailureKind
from agh_nb.errors import CapabilityError
from agh_nb.events import JSON

T = TypeVar("T")


def method_type(method: JSON) -> str:
    """``env_var``, ``terminal`` or ``agent`` (a method without ``type`` is the agent's own)."""
    kind = method.get("type")
    return kind if isinstance(kind, str) and kind else "agent"


def method_ids(methods: Sequence[JSON]) -> list[str]:
    """The ids of ``methods``, in the agent's order."""
    return [str(m.get("id")) for m in methods if m.get("id")]


def required_vars(method: JSON) -> list[str]:
    """The variables an ``env_var`` method needs (its optional ones left out)."""
    names = []
    for var in method.get("vars") or []:
        if isinstance(var, dict) and isinstance(var.get("name"), str) and not var.get("optional"):
            names.append(var["name"])
    return names


def choose_method(methods: Sequence[JSON], env_names: Collection[str], configured: str | None) -> str | None:
    """The method to call ``authenticate`` with, or None when none fits.

    An ``env_var`` method qualifies when every variable it needs is in the agent's environment
    (``env_names``: the AGENT.md ``env`` as resolved, vault refs included); the first such method
    in the agent's order wins. Otherwise the AGENT.md ``auth`` method (``configured``), if the
    agent offers it: some agents describe their key only in ``_meta`` (gemini's
    ``gemini-api-key``), so only the definition can say that method fits.
    """
    for method in methods:
        needed = required_vars(method)
        if method_type(method) == "env_var" and needed and all(name in env_names for name in needed):
            return str(method["id"])
    if configured and configured in method_ids(methods):
        return configured
    return None


def describe_method(method: JSON, argv: Sequence[str]) -> str:
    """What one method needs, in a few words: the variables to set, or the command to run."""
    ident = str(method.get("id"))
    kind = method_type(method)
    if kind == "env_var":
        needed = required_vars(method) or ["(no variable named)"]
        return f"{ident} (set {' and '.join(needed)} in its AGENT.md env)"
    if kind == "terminal":
        args = [str(a) for a in method.get("args") or []]
        env = method.get("env")
        env = env if isinstance(env, dict) else {}
        prefix = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in env.items())
        command = (prefix + " " if prefix else "") + shlex.join([*argv, *args])
        hint = _words(method.get("description"))
        return f"{ident} (run `{command}` in a terminal and log in" + (f"; the agent says: {hint}" if hint else "") + ")"
    label = _words(method.get("name")) or ident
    return f"{ident} ({label}: name it in its AGENT.md `auth`, or run %agh session auth ID {ident})"


def auth_failure_summary(agent_name: str, methods: Sequence[JSON], argv: Sequence[str], reason: str) -> str:
    """The one line of an ``auth_failure``: why, then every method offered and what it needs."""
    if not methods:
        return (
            f"agent {agent_name!r} needs authentication ({reason}) and offers no auth method: log in with the "
            "agent's own tool, or give it its key through the AGENT.md env"
        )
    offered = "; ".join(describe_method(m, argv) for m in methods)
    return f"agent {agent_name!r} needs authentication ({reason}); it offers: {offered}"


def _words(text: object) -> str:
    return " ".join(str(text).split()) if text else ""


class Authenticator:
    """Authenticates one agent when it asks, at most once per call it answered that way.

    Args:
        driver: the session's agent driver.
        agent_name: for messages.
        argv: the agent's command (a terminal method is run as this plus its ``args``).
        methods: the agent's ``authMethods`` (wire form).
        env_names: the variables the AGENT.md ``env`` gave the agent.
        configured: the AGENT.md ``auth`` method, if any.
    """

    def __init__(
        self,
        driver: AgentDriver,
        *,
        agent_name: str,
        argv: Sequence[str],
        methods: Sequence[JSON],
        env_names: Collection[str],
        configured: str | None,
    ) -> None:
        self._driver = driver
        self._agent_name = agent_name
        self._argv = list(argv)
        self._methods = list(methods)
        self._env_names = set(env_names)
        self._configured = configured
        self.used: str | None = None
        """The last method ``authenticate`` succeeded with."""

    async def run(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        """Run ``call``; when the agent answers "authentication required", authenticate with a
        fitting method and run it once more.

        Raises:
            DriverFailure: ``auth_failure`` (naming every method and what it needs) when no method
                fits, ``authenticate`` is refused, or the retry still needs authentication; any
                other failure of ``call`` as it is.
        """
        try:
            return await call()
        except DriverFailure as failure:
            if not failure.auth_required:
                raise
            first = failure
        method = choose_method(self._methods, self._env_names, self._configured)
        if method is None:
            raise self.failure(first, what)
        await self.authenticate(method, what)
        try:
            return await call()
        except DriverFailure as again:
            if again.auth_required:
                raise self.failure(again, what, tried=method) from None
            raise

    async def authenticate(self, method: str, what: str = "authenticate") -> None:
        """Call ``authenticate`` with ``method`` (offered by the agent).

        Raises:
            CapabilityError: the agent offers no such method (the line lists its methods).
            DriverFailure: ``auth_failure`` when the agent refuses it.
        """
        if method not in method_ids(self._methods):
            offered = ", ".join(method_ids(self._methods)) or "none"
            raise CapabilityError(f"agent {self._agent_name!r} offers no auth method {method!r} (its methods: {offered})")
        try:
            await self._driver.authenticate(method)
        except DriverFailure as refused:
            raise self.failure(refused, what, tried=method) from None
        self.used = method

    def failure(self, cause: DriverFailure, what: str, *, tried: str | None = None) -> DriverFailure:
        """The ``auth_failure`` for ``cause`` (the agent's error answer), one line."""
        detail = str(cause.fields.get("detail") or "").strip()
        reason = f"{what} answered {cause.code}" + (f" {detail}" if detail else "") if cause.code is not None else cause.summary
        if tried:
            reason += f", after authenticate {tried}"
        summary = auth_failure_summary(self._agent_name, self._methods, self._argv, reason)
        return DriverFailure(FailureKind.AUTH_FAILURE, summary, code=cause.code)


def methods_view(methods: Sequence[JSON]) -> list[JSON]:
    """The auth methods as ``inspect`` and the card show them: id, name, type and what each needs."""
    out = []
    for method in methods:
        if not isinstance(method, dict) or not method.get("id"):
            continue
        kind = method_type(method)
        view: JSON = {"id": method["id"], "name": method.get("name"), "type": kind}
        if kind == "env_var":
            view["vars"] = required_vars(method)
        elif kind == "terminal":
            view["args"] = list(method.get("args") or [])
        if method.get("description"):
            view["description"] = method["description"]
        out.append(view)
    return out
