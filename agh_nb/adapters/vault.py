"""``Vault``: the encrypted, write-only secret store of SPEC 6, in ``$AGH_HOME/vault/vault.json``.

Owns: the vault file (format, atomic writes, permissions), the vault key (``AGH_VAULT_KEY`` or
``$AGH_HOME/vault.key``), AES-GCM encryption of each value, and keeping the ``Redactor`` in step
with what is stored. The only agh_nb module that imports ``cryptography``. Must not import
duckdb, acp, runtime or kernel: the vault lives outside the DuckDB store so SQL cannot reach it.

Reads are metadata only: ``get``/``list`` return ``VaultEntry`` (ref, namespace, kind, present,
created_at, updated_at). ``resolve`` is the one method that returns a value, and it is called only
where an agent subprocess is spawned (through ``resolver``).

File format (``agh.vault.v1``; every byte string is urlsafe base64)::

    {"schema": "agh.vault.v1",
     "key_check": {"nonce": ..., "ciphertext": ...},      # KEY_CHECK_PLAINTEXT under the key
     "entries": {"vault:providers/openai": {"namespace", "kind", "created_at", "updated_at",
                                            "nonce", "ciphertext"}}}

Each value is sealed with AES-256-GCM under a fresh 96-bit random nonce, with the ref as
associated data so a ciphertext moved to another ref fails authentication. The key-check record
is sealed the same way under its own nonce: if it fails, the key is wrong (``VaultKeyError``); if
it passes and an entry fails, that entry was modified (``VaultTamperedError`` naming the ref).

Threads and processes: one lock serialises every call; mutations also hold an advisory ``flock``
on ``vault/vault.lock`` and re-read the file first, so two hosts (kernel and server) sharing an
``AGH_HOME`` do not lose each other's writes. Reads notice a file changed by another process
(by its stat signature) and reload it, registering any new values for redaction. All methods
block on file I/O and crypto: call them off the event loop (``asyncio.to_thread``).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agh_nb.core.clock import SystemClock
from agh_nb.core.private import make_private_dirs
from agh_nb.core.redaction import MIN_SECRET_LENGTH, Redactor
from agh_nb.core.vault_refs import (
    ENV_SCHEME,
    NAMESPACES,
    VAULT_KIND,
    VAULT_SCHEME,
    EnvRef,
    parse_ref,
    parse_vault_ref,
)
from agh_nb.errors import (
    SecretNotFoundError,
    VaultError,
    VaultKeyError,
    VaultRefError,
    VaultTamperedError,
)
from agh_nb.events import JSON, format_timestamp

try:  # advisory inter-process lock; absent on Windows, where the thread lock alone applies
    import fcntl
except ImportError:  # pragma: no cover - not on the platforms we test
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

SCHEMA = "agh.vault.v1"
KEY_ENV = "AGH_VAULT_KEY"
KEY_FILE = "vault.key"
VAULT_DIR = "vault"
VAULT_FILE = "vault.json"
LOCK_FILE = "vault.lock"
DEFAULT_KIND = "secret"
KEY_CHECK_PLAINTEXT = b"agh_nb vault key check v1"
KEY_CHECK_AAD = b"agh_nb:vault:key-check"  # not a valid ref, so no entry can be moved onto it

_KEY_BYTES = 32
_NONCE_BYTES = 12
_WRONG_KEY = (
    "the vault key does not match the key the vault was written with: set AGH_VAULT_KEY to the "
    "original key, or move $AGH_HOME/vault away to start a new vault"
)

SecretResolver = Callable[[str], str]


@dataclass(frozen=True)
class VaultEntry:
    """What any surface may know about a stored secret: metadata, never the value.

    Attributes:
        ref: the ``vault:`` ref.
        namespace: its namespace.
        kind: a free label such as ``secret`` or ``api_key`` (default ``secret``).
        present: True when a value is stored and authenticates under the current key; False when
            the stored ciphertext failed authentication (put a new value or delete the ref).
        created_at: when the ref was first put (UTC).
        updated_at: when its value was last put (UTC).
    """

    ref: str
    namespace: str
    kind: str
    present: bool
    created_at: datetime
    updated_at: datetime

    def to_dict(self) -> JSON:
        """Return the SPEC's JSON form (timestamps as RFC3339 UTC)."""
        return {
            "ref": self.ref,
            "namespace": self.namespace,
            "kind": self.kind,
            "present": self.present,
            "created_at": format_timestamp(self.created_at),
            "updated_at": format_timestamp(self.updated_at),
        }


class Vault:
    """The encrypted secret store of one ``$AGH_HOME``; build it with ``Vault.open``.

    Thread-safe. Every stored value is registered with ``redactor`` under its ref, and
    unregistered when the ref is deleted or its value replaced.
    """

    def __init__(
        self,
        home: Path,
        *,
        environ: Mapping[str, str],
        redactor: Redactor,
        clock: SystemClock,
    ) -> None:
        """Prefer ``Vault.open``; this constructor reads nothing."""
        self._home = home
        self._dir = home / VAULT_DIR
        self._path = self._dir / VAULT_FILE
        self._key_path = home / KEY_FILE
        self._environ = environ
        self._redactor = redactor
        self._clock = clock
        self._lock = threading.RLock()
        self._aead: AESGCM | None = None
        self._key_check: JSON | None = None
        self._entries: dict[str, JSON] = {}  # ref -> stored record (ciphertext included)
        self._values: dict[str, str] = {}  # ref -> plaintext, for resolve and redaction
        self._signature: tuple[int, int, int] | None = None

    @classmethod
    def open(
        cls,
        home: Path,
        *,
        environ: Mapping[str, str] | None = None,
        redactor: Redactor | None = None,
        clock: SystemClock | None = None,
    ) -> Vault:
        """Open the vault of ``home``, decrypting every stored value once to register it.

        Nothing is created on disk until the first ``put``: a fresh home gets its key and vault
        file then. A key that is present (``AGH_VAULT_KEY`` or ``vault.key``) is validated now.

        Args:
            home: ``$AGH_HOME``.
            environ: where ``AGH_VAULT_KEY`` is looked up (default ``os.environ``).
            redactor: the registry to keep in step (default: a new one, see ``redactor``).
            clock: gives ``created_at``/``updated_at`` (default: the system clock).

        Raises:
            VaultKeyError: the key is malformed, missing while a vault exists, or not the key the
                vault was written with.
            VaultError: the vault file is unreadable or not an agh_nb vault.
        """
        vault = cls(
            Path(home),
            environ=os.environ if environ is None else environ,
            redactor=redactor if redactor is not None else Redactor(),
            clock=clock or SystemClock(),
        )
        with vault._lock:
            vault._refresh(force=True)
            if vault._aead is None and (vault._environ.get(KEY_ENV) or vault._key_path.exists()):
                vault._require_key(
                    create=False
                )  # a malformed key is reported now, not at first put
        return vault

    @property
    def redactor(self) -> Redactor:
        """The redactor this vault registers its values with."""
        return self._redactor

    @property
    def path(self) -> Path:
        """The vault file, ``$AGH_HOME/vault/vault.json``."""
        return self._path

    def __repr__(self) -> str:
        return f"Vault({str(self._path)!r}, {len(self._entries)} entries)"

    # -- metadata ---------------------------------------------------------------------------

    def get(self, ref: str) -> VaultEntry:
        """Return the metadata of ``ref`` (never its value).

        Raises:
            VaultRefError: ``ref`` is malformed.
            SecretNotFoundError: nothing is stored at ``ref``.
        """
        text = parse_vault_ref(ref).text
        with self._lock:
            self._refresh()
            record = self._entries.get(text)
            if record is None:
                raise _not_found(text)
            return self._entry(text, record)

    def list(self, *, namespace: str | None = None, prefix: str | None = None) -> list[VaultEntry]:
        """Return the metadata of stored refs, sorted by ref.

        Args:
            namespace: keep only this namespace.
            prefix: keep refs starting with it; ``providers/open`` and ``vault:providers/open``
                are the same prefix.

        Raises:
            VaultRefError: ``namespace`` is not one of the SPEC's namespaces.
        """
        if namespace is not None and namespace not in NAMESPACES:
            raise VaultRefError(
                f"unknown namespace {namespace!r} (use one of {', '.join(NAMESPACES)})"
            )
        if prefix is not None and not prefix.startswith(VAULT_SCHEME):
            prefix = VAULT_SCHEME + prefix
        with self._lock:
            self._refresh()
            return [
                self._entry(ref, record)
                for ref, record in sorted(self._entries.items())
                if (namespace is None or record["namespace"] == namespace)
                and (prefix is None or ref.startswith(prefix))
            ]

    # -- writes -----------------------------------------------------------------------------

    def put(self, ref: str, value: str, *, kind: str | None = None) -> VaultEntry:
        """Store ``value`` at ``ref``, replacing any value there, and register it for redaction.

        Args:
            ref: a ``vault:`` ref.
            value: the secret (non-empty). Take it from a password prompt, never from argv or a
                cell's source.
            kind: a label (``[A-Za-z0-9._-]``, at most 64 characters); omitted, a replaced entry
                keeps its kind and a new one gets ``secret``.

        Returns:
            The entry's metadata.

        Raises:
            VaultRefError: ``ref`` is malformed.
            VaultError: the value is empty, the kind malformed, or the vault cannot be written.
            VaultKeyError: the key is malformed or wrong.
        """
        text = parse_vault_ref(ref).text
        if not isinstance(value, str) or not value:
            raise VaultError(f"the value for {text} is empty: give a non-empty secret", ref=text)
        if len(value) < MIN_SECRET_LENGTH:
            # Such a value could not be scrubbed from what agh_nb writes (see core.redaction).
            raise VaultError(
                f"the value for {text} is shorter than {MIN_SECRET_LENGTH} characters: too short to keep "
                "out of logs and events; nothing was stored",
                ref=text,
            )
        if kind is not None and not VAULT_KIND.fullmatch(kind):
            raise VaultError(
                f"kind {kind[:64]!r} for {text}: use 1-64 characters from [A-Za-z0-9._-]", ref=text
            )
        with self._lock, self._exclusive():
            self._refresh(force=True)
            aead = self._require_key(create=True)
            now = format_timestamp(self._clock.now())
            old = self._entries.get(text)
            nonce = secrets.token_bytes(_NONCE_BYTES)
            record: JSON = {
                "namespace": text[len(VAULT_SCHEME) :].split("/", 1)[0],
                "kind": kind or (old["kind"] if old else DEFAULT_KIND),
                "created_at": old["created_at"] if old else now,
                "updated_at": now,
                "nonce": _b64(nonce),
                "ciphertext": _b64(
                    aead.encrypt(nonce, value.encode("utf-8"), text.encode("utf-8"))
                ),
            }
            entries = dict(self._entries)
            entries[text] = record
            self._write(entries)
            self._entries = entries
            previous = self._values.get(text)
            if previous is not None and previous != value:
                self._redactor.unregister(previous, text)
            self._values[text] = value
            self._redactor.register(value, text)
            return self._entry(text, record)

    def delete(self, ref: str) -> VaultEntry:
        """Remove ``ref`` and unregister its value from the redactor.

        Returns:
            The metadata the entry had.

        Raises:
            VaultRefError: ``ref`` is malformed.
            SecretNotFoundError: nothing is stored at ``ref``.
        """
        text = parse_vault_ref(ref).text
        with self._lock, self._exclusive():
            self._refresh(force=True)
            record = self._entries.get(text)
            if record is None:
                raise _not_found(text)
            entry = self._entry(text, record)
            entries = dict(self._entries)
            del entries[text]
            self._write(entries)
            self._entries = entries
            previous = self._values.pop(text, None)
            if previous is not None:
                self._redactor.unregister(previous, text)
            return entry

    # -- values -----------------------------------------------------------------------------

    def resolve(self, ref: str) -> str:
        """Return the value stored at ``ref``: ONLY where an agent subprocess is spawned.

        No surface (magic, CLI, HTTP, widget, event) may call this to show a value.

        Raises:
            VaultRefError: ``ref`` is malformed.
            SecretNotFoundError: nothing is stored at ``ref``.
            VaultTamperedError: the stored ciphertext of ``ref`` failed authentication.
        """
        text = parse_vault_ref(ref).text
        with self._lock:
            self._refresh()
            if text not in self._entries:
                raise _not_found(text)
            value = self._values.get(text)
            if value is None:
                raise _tampered(text)
            return value

    def resolver(self, environ: Mapping[str, str]) -> SecretResolver:
        """Return the spawn-time resolver of AGENT.md ``env`` values (``SecretResolver``).

        The resolver maps ``vault:...`` through ``resolve``, ``env:NAME`` through ``environ``,
        and returns any other string unchanged (a literal value).

        Raises (from the resolver):
            VaultRefError: a ``vault:``/``env:`` value is malformed.
            SecretNotFoundError: the ref names no stored secret or unset variable (names the ref).
            VaultTamperedError: the stored value failed authentication.
        """

        def resolve(value: str) -> str:
            if not value.startswith((VAULT_SCHEME, ENV_SCHEME)):
                return value
            ref = parse_ref(value)
            if isinstance(ref, EnvRef):
                if ref.name not in environ:
                    raise SecretNotFoundError(
                        f"{ref.text}: environment variable {ref.name} is not set (export it before starting the session)",
                        ref=ref.text,
                    )
                return environ[ref.name]
            return self.resolve(ref.text)

        return resolve

    # -- internals (call with self._lock held) ----------------------------------------------

    def _entry(self, ref: str, record: JSON) -> VaultEntry:
        return VaultEntry(
            ref=ref,
            namespace=record["namespace"],
            kind=record["kind"],
            present=ref in self._values,
            created_at=_parse_ts(record["created_at"]),
            updated_at=_parse_ts(record["updated_at"]),
        )

    def _refresh(self, *, force: bool = False) -> None:
        """Load the file if it changed since last read (or always, with ``force``)."""
        signature = self._stat()
        if not force and signature == self._signature:
            return
        if signature is None:
            document: JSON = {"schema": SCHEMA, "key_check": None, "entries": {}}
        else:
            document = self._read()
        key_check = document.get("key_check")
        entries: dict[str, JSON] = document["entries"]
        values: dict[str, str] = {}
        if key_check is not None:
            aead = self._require_key(create=False)
            try:
                aead.decrypt(
                    _unb64(key_check["nonce"]), _unb64(key_check["ciphertext"]), KEY_CHECK_AAD
                )
            except (InvalidTag, ValueError, KeyError, TypeError) as exc:
                raise VaultKeyError(_WRONG_KEY) from exc
            for ref, record in entries.items():
                try:
                    plain = aead.decrypt(
                        _unb64(record["nonce"]), _unb64(record["ciphertext"]), ref.encode("utf-8")
                    )
                    values[ref] = plain.decode("utf-8")
                except (InvalidTag, ValueError, KeyError, TypeError):
                    logger.warning(
                        "vault entry %s failed authentication; put a new value or delete it", ref
                    )
        elif entries:
            raise VaultError(
                f"vault file {self._path} has entries but no key check: move it away to start a new vault"
            )
        self._sync_redactor(entries, values)
        self._key_check = key_check
        self._entries = entries
        self._values = values
        self._signature = signature

    def _sync_redactor(self, entries: dict[str, JSON], values: dict[str, str]) -> None:
        """Register values new to this process; unregister those deleted or replaced elsewhere.

        A value whose ciphertext stopped authenticating stays registered: it was a secret, and
        leaving it redacted is the safe side.
        """
        for ref, old in self._values.items():
            if ref not in entries or (ref in values and values[ref] != old):
                self._redactor.unregister(old, ref)
        for ref, value in values.items():
            if self._values.get(ref) != value and not self._redactor.register(value, ref):
                logger.warning(
                    "the value of %s is shorter than 4 characters and will not be redacted", ref
                )

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self._path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise VaultError(f"cannot read the vault file {self._path}: {exc.strerror}") from exc
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _read(self) -> JSON:
        try:
            raw = self._path.read_bytes()
        except OSError as exc:
            raise VaultError(f"cannot read the vault file {self._path}: {exc.strerror}") from exc
        try:
            document = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise VaultError(
                f"vault file {self._path} is not valid JSON: restore it from a backup or move it away"
            ) from exc
        if not isinstance(document, dict) or document.get("schema") != SCHEMA:
            raise VaultError(
                f"vault file {self._path} is not an {SCHEMA} vault: move it away to start a new vault"
            )
        key_check = document.get("key_check")
        if key_check is not None and not isinstance(key_check, dict):
            raise VaultError(f"vault file {self._path} has a malformed 'key_check' record")
        entries = document.get("entries")
        if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
            raise VaultError(f"vault file {self._path} has a malformed 'entries' table")
        for ref, record in entries.items():
            try:
                parse_vault_ref(ref)
            except VaultRefError:
                raise VaultError(
                    f"vault file {self._path} holds an entry with a malformed ref"
                ) from None
            if not all(
                isinstance(record.get(k), str)
                for k in ("namespace", "kind", "created_at", "updated_at")
            ):
                raise VaultError(f"vault file {self._path}: entry {ref} has malformed metadata")
        return document

    def _write(self, entries: dict[str, JSON]) -> None:
        """Write the vault atomically: a 0600 temp file, fsync, rename, fsync the directory."""
        aead = self._require_key(create=True)
        key_check = self._key_check
        if key_check is None:
            nonce = secrets.token_bytes(_NONCE_BYTES)
            key_check = {
                "nonce": _b64(nonce),
                "ciphertext": _b64(aead.encrypt(nonce, KEY_CHECK_PLAINTEXT, KEY_CHECK_AAD)),
            }
        document = {"schema": SCHEMA, "key_check": key_check, "entries": entries}
        data = json.dumps(document, indent=1, sort_keys=True).encode("utf-8") + b"\n"
        self._ensure_dir()
        tmp = self._dir / f".{VAULT_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self._path)
            _fsync_dir(self._dir)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise VaultError(f"cannot write the vault file {self._path}: {exc.strerror}") from exc
        self._key_check = key_check
        self._signature = self._stat()

    def _ensure_dir(self) -> None:
        try:
            make_private_dirs(self._dir)
            os.chmod(self._dir, 0o700)  # an older vault directory too
        except OSError as exc:
            raise VaultError(
                f"cannot create the vault directory {self._dir}: {exc.strerror}"
            ) from exc

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold the advisory inter-process lock on ``vault/vault.lock``."""
        self._ensure_dir()
        if fcntl is None:  # pragma: no cover
            yield
            return
        try:
            fd = os.open(self._dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise VaultError(f"cannot lock the vault in {self._dir}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _require_key(self, *, create: bool) -> AESGCM:
        """Return the cipher, loading (or, with ``create`` and no vault yet, making) the key."""
        if self._aead is None:
            self._aead = AESGCM(self._load_key(create=create))
        return self._aead

    def _load_key(self, *, create: bool) -> bytes:
        raw = self._environ.get(KEY_ENV)
        if raw:
            return _decode_key(raw, source=f"the environment variable {KEY_ENV}")
        try:
            text = self._key_path.read_text(encoding="ascii")
        except FileNotFoundError:
            pass
        except (OSError, UnicodeDecodeError) as exc:
            raise VaultKeyError(
                f"cannot read the vault key file {self._key_path}: set {KEY_ENV} or fix the file"
            ) from exc
        else:
            _warn_if_loose(self._key_path)
            return _decode_key(text, source=f"the key file {self._key_path}")
        if not create or self._key_check is not None:
            raise VaultKeyError(
                f"the vault at {self._path} needs its key: set {KEY_ENV} or restore {self._key_path}"
            )
        return self._create_key_file()

    def _create_key_file(self) -> bytes:
        """Create ``vault.key`` (0600) with a new random key; never overwrite an existing one."""
        key = AESGCM.generate_key(bit_length=256)
        try:
            make_private_dirs(self._home)
            fd = os.open(self._key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process won the race: use its key
            return _decode_key(
                self._key_path.read_text(encoding="ascii"), source=f"the key file {self._key_path}"
            )
        except OSError as exc:
            raise VaultKeyError(
                f"cannot create the vault key file {self._key_path}: {exc.strerror}"
            ) from exc
        try:
            os.write(fd, base64.urlsafe_b64encode(key) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(self._home)
        logger.info("created the vault key %s", self._key_path)
        return key


def _decode_key(text: str, *, source: str) -> bytes:
    """Decode a urlsafe base64 key of 32 bytes; the message names ``source``, never the key."""
    text = text.strip()
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise VaultKeyError(
            f"{source} is not a vault key: expected the urlsafe base64 of {_KEY_BYTES} random bytes"
        ) from None
    if len(key) != _KEY_BYTES:
        raise VaultKeyError(
            f"{source} is not a vault key: it decodes to {len(key)} bytes, expected {_KEY_BYTES}"
        )
    return key


def _warn_if_loose(path: Path) -> None:
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return
    if mode & 0o077:
        logger.warning(
            "the vault key file %s is readable by others (mode %o); chmod 600 it", path, mode
        )


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _not_found(ref: str) -> SecretNotFoundError:
    return SecretNotFoundError(
        f"no secret is stored at {ref} (store one with: vault put {ref})", ref=ref
    )


def _tampered(ref: str) -> VaultTamperedError:
    return VaultTamperedError(
        f"the stored value of {ref} failed authentication (the vault file was modified): "
        f"put a new value with: vault put {ref}",
        ref=ref,
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not base64 text")
    return base64.b64decode(text, altchars=b"-_", validate=True)


def _parse_ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
