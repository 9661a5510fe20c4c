"""The grammar of secret refs (SPEC 1 and 6): ``vault:<namespace>/<path>`` and ``env:NAME``.

Owns: ``VaultRef``, ``EnvRef``, ``parse_ref`` and the namespace list. Pure string work, so every
surface (magics, CLI, HTTP, AGENT.md loading) can validate a ref before it prompts for a value or
touches the vault. Must not import cryptography, duckdb, acp or any adapter.

Grammar::

    vault:<namespace>/<segment>[/<segment>...]
        namespace   one of NAMESPACES
        segment     one or more of [A-Za-z0-9._-], never "." or ".."
        whole ref   at most MAX_REF_LENGTH characters, "vault:" included
        sessions    vault:sessions/<session_id>/<name>...: the first segment is a sess_ id
    env:NAME
        NAME        [A-Za-z_][A-Za-z0-9_]*

Error messages quote a ref only when it starts with ``vault:`` or ``env:`` (and then shortened), so
a secret pasted where a ref belongs is never echoed back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agh_nb.errors import VaultRefError

VAULT_SCHEME = "vault:"
ENV_SCHEME = "env:"

NAMESPACES: tuple[str, ...] = (
    "providers",
    "bridges",
    "automation",
    "mcp",
    "hooks",
    "extensions",
    "sandbox",
    "sessions",
)
"""The vault namespaces of SPEC 6, in the order error messages list them."""

MAX_REF_LENGTH = 256
"""The longest accepted ``vault:`` ref, counting the ``vault:`` prefix."""

VAULT_KIND = re.compile(r"[A-Za-z0-9._-]{1,64}")
"""What a secret's ``kind`` may be (``api_key``, ``token``...)."""
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_SESSION_ID = re.compile(r"sess_[A-Za-z0-9_-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_QUOTE_LIMIT = 80


@dataclass(frozen=True)
class VaultRef:
    """A parsed ``vault:<namespace>/<path>`` ref; ``str()`` gives the canonical text.

    Attributes:
        namespace: one of ``NAMESPACES``.
        path: the ``/``-separated segments after the namespace.
    """

    namespace: str
    path: str

    @property
    def text(self) -> str:
        """The ref as written: ``vault:<namespace>/<path>``."""
        return f"{VAULT_SCHEME}{self.namespace}/{self.path}"

    @property
    def segments(self) -> tuple[str, ...]:
        """The path's segments, in order."""
        return tuple(self.path.split("/"))

    @property
    def session_id(self) -> str | None:
        """The AGH session id of a ``vault:sessions/...`` ref, else None."""
        return self.segments[0] if self.namespace == "sessions" else None

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class EnvRef:
    """A parsed ``env:NAME`` ref: the value comes from the spawning process's environment."""

    name: str

    @property
    def text(self) -> str:
        """The ref as written: ``env:NAME``."""
        return f"{ENV_SCHEME}{self.name}"

    def __str__(self) -> str:
        return self.text


def is_ref(text: str) -> bool:
    """Return True when ``text`` claims to be a ref (starts with ``vault:`` or ``env:``).

    Claiming is not being valid: use ``parse_ref`` to validate. AGENT.md ``env`` values that are
    not refs are literal values and pass through unchanged.
    """
    return text.startswith(VAULT_SCHEME) or text.startswith(ENV_SCHEME)


def parse_ref(text: str) -> VaultRef | EnvRef:
    """Parse and validate a ``vault:`` or ``env:`` ref.

    Args:
        text: the ref, e.g. ``vault:providers/openai`` or ``env:OPENAI_API_KEY``.

    Returns:
        A ``VaultRef`` or an ``EnvRef``.

    Raises:
        VaultRefError: one line naming what is wrong (the scheme, the namespace, a segment, the
            length, the session id or the variable name).
    """
    if not isinstance(text, str):
        raise VaultRefError(f"a ref must be a string, got {type(text).__name__}")
    if text.startswith(VAULT_SCHEME):
        return _parse_vault(text)
    if text.startswith(ENV_SCHEME):
        return _parse_env(text)
    # Not quoted: a value pasted where a ref belongs may be the secret itself.
    raise VaultRefError(
        "not a ref: expected 'vault:<namespace>/<path>' or 'env:NAME' "
        "(the text is not shown in case it is a secret)"
    )


def parse_vault_ref(text: str) -> VaultRef:
    """Parse a ref that must be a ``vault:`` ref (what the vault stores under).

    Raises:
        VaultRefError: when ``text`` is malformed or is an ``env:`` ref.
    """
    ref = parse_ref(text)
    if isinstance(ref, EnvRef):
        raise VaultRefError(
            f"{_quote(text)} is an env: ref; the vault stores only vault:<namespace>/<path> refs",
            ref=ref.text,
        )
    return ref


def session_ref(session_id: str, name: str) -> VaultRef:
    """Build and validate ``vault:sessions/<session_id>/<name>``.

    Raises:
        VaultRefError: when the id is not a ``sess_`` id or the name is not a valid path.
    """
    return parse_vault_ref(f"{VAULT_SCHEME}sessions/{session_id}/{name}")


def _parse_vault(text: str) -> VaultRef:
    shown = _quote(text)
    if len(text) > MAX_REF_LENGTH:
        raise VaultRefError(
            f"vault ref {shown}: too long ({len(text)} characters, at most {MAX_REF_LENGTH})"
        )
    body = text[len(VAULT_SCHEME):]
    namespace, slash, path = body.partition("/")
    if not namespace:
        raise VaultRefError(f"vault ref {shown}: missing namespace (write vault:<namespace>/<path>)")
    if namespace not in NAMESPACES:
        raise VaultRefError(
            f"vault ref {shown}: unknown namespace {_quote(namespace)} (use one of {', '.join(NAMESPACES)})"
        )
    if not slash or not path:
        raise VaultRefError(f"vault ref {shown}: missing path after the namespace (write vault:{namespace}/<name>)")
    segments = path.split("/")
    for index, segment in enumerate(segments, start=1):
        if not segment:
            raise VaultRefError(f"vault ref {shown}: path segment {index} is empty (no '//' or trailing '/')")
        if segment in (".", ".."):
            raise VaultRefError(f"vault ref {shown}: path segment {index} is {segment!r}, which is not allowed")
        if not _SEGMENT.fullmatch(segment):
            raise VaultRefError(
                f"vault ref {shown}: path segment {index} has characters outside [A-Za-z0-9._-]"
            )
    if namespace == "sessions":
        if not _SESSION_ID.fullmatch(segments[0]):
            raise VaultRefError(
                f"vault ref {shown}: a sessions ref is vault:sessions/<session_id>/<name> "
                "and its first segment must be a session id starting with 'sess_'"
            )
        if len(segments) < 2:
            raise VaultRefError(
                f"vault ref {shown}: missing name after the session id (write vault:sessions/{segments[0]}/<name>)"
            )
    return VaultRef(namespace=namespace, path=path)


def _parse_env(text: str) -> EnvRef:
    name = text[len(ENV_SCHEME):]
    if not name:
        raise VaultRefError("env ref 'env:': missing variable name (write env:NAME)")
    if not _ENV_NAME.fullmatch(name):
        raise VaultRefError(
            f"env ref {_quote(text)}: {_quote(name)} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"
        )
    return EnvRef(name=name)


def _quote(text: str) -> str:
    """Quote user text for an error message, shortened so a long paste stays one short line."""
    if len(text) > _QUOTE_LIMIT:
        text = text[: _QUOTE_LIMIT - 3] + "..."
    return repr(text)
