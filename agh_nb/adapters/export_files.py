"""The export directory of ``export``: its manifest, its lock, and files that appear whole or not at all.

Owns: ``ExportDir`` -- the lock that keeps two exports out of one directory, the manifest
(``_agh_export.json``: per session, the last sequence exported), and the two-phase way files
land: every file is written under a hidden temporary name (``.<name>.tmp``, which DuckDB, Spark,
pyarrow and Polars all skip), then the manifest records the export and its renames, then the
files are renamed into place. A crash before the manifest is written leaves only hidden files
(deleted by the next export, which exports those rows again); a crash after it leaves renames
the next export finishes. Either way no row is lost or written twice.
Imports no duckdb or pyarrow; must not import core.session, runtime or kernel.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agh_nb.errors import ExportError, UsageError

MANIFEST = "_agh_export.json"
"""The manifest's file name (a leading ``_``: dataset readers skip it)."""
MANIFEST_SCHEMA = "agh.export.v1"
LOCK = ".agh_export.lock"
TMP_SUFFIX = ".tmp"


@dataclass
class Manifest:
    """What earlier exports into a directory wrote.

    Attributes:
        sessions: per AGH session id, ``{"sequence": last exported, "exported_at": RFC3339,
            "updated_us": the exported row's updated_at (epoch microseconds)}``.
        exports: one entry per export: ``{"id", "at", "events", "token_usage", "sessions", "files"}``.
        pending: ``[temporary, final]`` renames an export recorded but may not have finished.
    """

    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    exports: list[dict[str, Any]] = field(default_factory=list)
    pending: list[list[str]] = field(default_factory=list)

    def high_water(self, session_id: str) -> int:
        """The last sequence of ``session_id`` already exported (0: none)."""
        entry = self.sessions.get(session_id)
        return int(entry.get("sequence", 0)) if isinstance(entry, dict) else 0

    def to_json(self) -> dict[str, Any]:
        """The manifest document."""
        return {
            "schema": MANIFEST_SCHEMA,
            "sessions": self.sessions,
            "exports": self.exports,
            "pending": self.pending,
        }


class ExportDir:
    """One export directory, held (locked) for the duration of an export.

    Use ``with ExportDir.open(path) as target:``; paths given to ``stage`` are relative to the
    directory.

    Raises (``open``):
        UsageError: the path exists and is not a directory, or holds files that are not an export.
        ExportError: the directory cannot be created or locked, or another export holds it.
    """

    def __init__(self, root: Path, lock_fd: int) -> None:
        """Wrap a locked directory; use ``open`` instead."""
        self.root = root
        self._lock_fd = lock_fd
        self._staged: list[tuple[Path, Path]] = []

    @classmethod
    @contextlib.contextmanager
    def open(cls, path: Path) -> Iterator[ExportDir]:
        """Create (if needed) and lock ``path``; finish what an interrupted export left."""
        root = Path(path)
        if root.exists() and not root.is_dir():
            raise UsageError(f"export: {root} exists and is not a directory")
        try:
            root.mkdir(parents=True, exist_ok=True)
            fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ExportError(f"export: cannot use {root}: {exc.strerror or exc}", path=str(root)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ExportError(f"export: another export into {root} is running; try again when it ends", path=str(root)) from None
        target = cls(root, fd)
        try:
            target._recover()
            yield target
        finally:
            target._discard_staged()
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # -- manifest ----------------------------------------------------------------------------

    def read_manifest(self) -> Manifest:
        """The directory's manifest (empty for a new directory).

        Raises:
            UsageError: the directory holds something else (files but no manifest, or a manifest
                of another format).
        """
        path = self.root / MANIFEST
        if not path.exists():
            foreign = [p.name for p in self.root.iterdir() if p.name not in (LOCK,)]
            if foreign:
                raise UsageError(
                    f"export: {self.root} is not empty and holds no {MANIFEST}; "
                    "export into a new directory or one an earlier export made"
                )
            return Manifest()
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"export: cannot read {path}: {exc}") from None
        if not isinstance(doc, dict) or doc.get("schema") != MANIFEST_SCHEMA:
            raise UsageError(f"export: {path} is not an agh_nb export manifest ({MANIFEST_SCHEMA})")
        return Manifest(
            sessions=dict(doc.get("sessions") or {}),
            exports=list(doc.get("exports") or []),
            pending=[list(p) for p in doc.get("pending") or []],
        )

    def _write_manifest(self, manifest: Manifest) -> None:
        path = self.root / MANIFEST
        tmp = path.with_name("." + path.name + TMP_SUFFIX)
        data = json.dumps(manifest.to_json(), indent=1, sort_keys=True).encode("utf-8")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(self.root)

    # -- files -------------------------------------------------------------------------------

    def stage(self, relative: str) -> Path:
        """Return the hidden temporary path to write the file ``relative`` to (dirs created)."""
        final = self.root / relative
        tmp = final.with_name("." + final.name + TMP_SUFFIX)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        self._staged.append((tmp, final))
        return tmp

    def staged(self) -> list[str]:
        """The files staged so far, relative to the directory (their final names)."""
        return [_rel(self.root, final) for tmp, final in self._staged if tmp.exists()]

    def commit(self, manifest: Manifest) -> list[str]:
        """Record ``manifest`` with the staged renames, then make the staged files visible.

        Returns:
            The files now in place, relative to the directory.
        """
        written = [(tmp, final) for tmp, final in self._staged if tmp.exists()]
        manifest.pending = [[_rel(self.root, t), _rel(self.root, f)] for t, f in written]
        self._write_manifest(manifest)  # from here on, the export happened
        self._staged = []
        self._finish(manifest)
        return [_rel(self.root, final) for _, final in written]

    def _finish(self, manifest: Manifest) -> None:
        for tmp, final in manifest.pending:
            source, target = self.root / tmp, self.root / final
            if source.exists():
                os.replace(source, target)
        if manifest.pending:
            manifest.pending = []
            self._write_manifest(manifest)

    def _recover(self) -> None:
        # Renames a recorded export did not finish are finished; hidden files no manifest names
        # are what an export that never recorded itself left: its rows are exported again.
        if (self.root / MANIFEST).exists():
            manifest = self.read_manifest()
            if manifest.pending:
                self._finish(manifest)
        for tmp in self.root.rglob("." + "*" + TMP_SUFFIX):
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _discard_staged(self) -> None:
        for tmp, _ in self._staged:
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._staged = []


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
