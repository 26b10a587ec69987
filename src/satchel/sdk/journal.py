"""Resume journal: what an artifact upload has already sent, so a run that was killed can
continue without sending finished files or finished multipart parts again.

Stored in ``<cache dir>/journal.db`` (SQLite, WAL; each record is one committed transaction, so
a SIGKILL loses at most the part in flight, never the file). One *upload* row per
``(server, team, project, name, manifest digest)`` holds the pending version id; below it:

* ``objects``:   SHA-256 of objects fully in the bucket (small PUTs, completed multipart);
* ``multipart``: per big object, the store's upload id and the part size;
* ``parts``:     per finished part, its number, ETag and size (written from the ``on_part``
  hook of :meth:`TransferClient.put_parts` as each part finishes).

The journal is a hint, never trusted for correctness: the server checks that the pending
version still exists, belongs to the caller and has the same digest, and that each multipart
upload still exists; commit HEAD-verifies every object. When the server cannot continue (the
version or upload was dropped, e.g. by garbage collection), the SDK starts fresh.

Two processes logging the same artifact at once: the first holds an advisory lock (``flock``)
on the entry for as long as it runs (the kernel drops it when the process dies, even on
SIGKILL); the second neither resumes nor journals (:meth:`Journal.claim` returns None).
Entries older than :data:`MAX_AGE_SECONDS` are dropped (pending versions that old are
likely gone). Lock files live in ``<cache dir>/locks/`` (at most 4,096 empty files).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, ParamSpec, TypeVar

from satchel.sdk.hashcache import connect

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

MAX_AGE_SECONDS = 7 * 24 * 3600

_SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    id INTEGER PRIMARY KEY,
    host TEXT NOT NULL, team TEXT NOT NULL, project TEXT NOT NULL, name TEXT NOT NULL,
    digest TEXT NOT NULL,
    pending_id INTEGER NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL,
    UNIQUE (host, team, project, name, digest)
);
CREATE TABLE IF NOT EXISTS objects (
    upload INTEGER NOT NULL REFERENCES uploads(id) ON DELETE CASCADE,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (upload, sha256)
);
CREATE TABLE IF NOT EXISTS multipart (
    upload INTEGER NOT NULL REFERENCES uploads(id) ON DELETE CASCADE,
    sha256 TEXT NOT NULL,
    upload_id TEXT NOT NULL,
    part_size INTEGER NOT NULL,
    PRIMARY KEY (upload, sha256)
);
CREATE TABLE IF NOT EXISTS parts (
    upload INTEGER NOT NULL REFERENCES uploads(id) ON DELETE CASCADE,
    sha256 TEXT NOT NULL,
    number INTEGER NOT NULL,
    etag TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (upload, sha256, number)
);
"""


def manifest_digest(entries: Sequence[tuple[str, str | None, int, str | None]]) -> str:
    """The version digest exactly as the server computes it (services/artifacts.py): SHA-256
    of ``[[path, sha256, size, ref], ...]`` sorted by path, as compact JSON."""
    rows = [list(e) for e in sorted(entries, key=lambda e: e[0])]
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class UploadKey:
    host: str
    team: str
    project: str
    name: str
    digest: str

    @property
    def lock_name(self) -> str:
        """One of 4,096 lock files: lock files are never deleted (deleting one another process
        has just opened would let two processes hold "the" lock), so their number is bounded;
        two different uploads sharing a slot at the same moment only cost one of them its
        journal."""
        raw = "\n".join((self.host, self.team, self.project, self.name, self.digest))
        return hashlib.sha256(raw.encode()).hexdigest()[:3]


@dataclass(frozen=True, slots=True)
class MultipartState:
    upload_id: str
    part_size: int
    parts: dict[int, tuple[str, int]]  # number -> (etag, size)


@dataclass(frozen=True, slots=True)
class UploadState:
    pending_id: int
    objects: frozenset[str]
    multipart: dict[str, MultipartState] = field(default_factory=dict)

    def resume_hint(self) -> dict[str, object]:
        """The ``resume`` body of ``POST .../versions`` (see docs/transfer.md)."""
        return {
            "pending_id": self.pending_id,
            "uploaded": sorted(self.objects),
            "multipart": [{"sha256": sha, "upload_id": mp.upload_id, "part_size": mp.part_size,
                           "parts_done": sorted(mp.parts)}
                          for sha, mp in sorted(self.multipart.items())],
        }


def _best_effort(method: Callable[P, R]) -> Callable[P, R | None]:
    """A journal that cannot be written (disk full, database locked for too long) must not
    fail the upload it describes: warn once, stop journaling (the upload goes on)."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | None:
        self = args[0]
        assert isinstance(self, Journal)
        if self.broken:
            return None
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            self.broken = True
            log.warning("resume journal disabled for this process: %s", exc)
            return None

    return wrapper


class Journal:
    """Thread-safe (one connection behind a lock); safe across processes (SQLite locking)."""

    def __init__(self, db_path: Path) -> None:
        self.path = db_path
        self._lock = threading.Lock()
        self._conn = connect(db_path)
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.executescript(_SCHEMA)
        (db_path.parent / "locks").mkdir(parents=True, exist_ok=True)
        self.broken = False

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # ----------------------------------------------------------------- ownership

    @contextmanager
    def claim(self, key: UploadKey) -> Iterator[bool]:
        """Hold the entry for this process; yields False when another live process holds it
        (then the caller neither resumes nor journals)."""
        path = self.path.parent / "locks" / f"{key.lock_name}.lock"
        fh: IO[bytes] | None = None
        owned = True
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory lock, resume anyway
            fcntl = None  # type: ignore[assignment]
        if fcntl is not None:
            fh = open(path, "ab")  # noqa: SIM115 - closed below
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                owned = False
        try:
            yield owned
        finally:
            if fh is not None:
                fh.close()  # releases the lock

    # ----------------------------------------------------------------- reading

    @_best_effort
    def load(self, key: UploadKey) -> UploadState | None:
        cutoff = time.time() - MAX_AGE_SECONDS
        with self._tx() as db:
            db.execute("DELETE FROM uploads WHERE updated_at < ?", (cutoff,))
            row = db.execute(
                "SELECT id, pending_id FROM uploads WHERE host = ? AND team = ? AND project = ? "
                "AND name = ? AND digest = ?",
                (key.host, key.team, key.project, key.name, key.digest)).fetchone()
            if row is None:
                return None
            upload, pending_id = row
            objects = frozenset(s for (s,) in db.execute(
                "SELECT sha256 FROM objects WHERE upload = ?", (upload,)))
            multipart: dict[str, MultipartState] = {}
            for sha, upload_id, part_size in db.execute(
                    "SELECT sha256, upload_id, part_size FROM multipart WHERE upload = ?",
                    (upload,)).fetchall():
                parts = {int(n): (str(e), int(s)) for n, e, s in db.execute(
                    "SELECT number, etag, size FROM parts WHERE upload = ? AND sha256 = ?",
                    (upload, sha))}
                multipart[sha] = MultipartState(str(upload_id), int(part_size), parts)
        return UploadState(int(pending_id), objects, multipart)

    def entries(self) -> list[tuple[UploadKey, UploadState]]:
        """Every journaled upload (for tests and ``docs/transfer.md`` inspection)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT host, team, project, name, digest FROM uploads").fetchall()
        out = []
        for row in rows:
            key = UploadKey(*row)
            state = self.load(key)
            if state is not None:
                out.append((key, state))
        return out

    # ----------------------------------------------------------------- writing

    def _upload_id(self, db: sqlite3.Connection, key: UploadKey) -> int | None:
        row = db.execute(
            "SELECT id FROM uploads WHERE host = ? AND team = ? AND project = ? AND name = ? "
            "AND digest = ?", (key.host, key.team, key.project, key.name, key.digest)).fetchone()
        return None if row is None else int(row[0])

    @_best_effort
    def start(self, key: UploadKey, pending_id: int) -> None:
        """Begin (or continue) journaling ``pending_id``; a different pending id than the one
        journaled discards everything recorded for the old one."""
        now = time.time()
        with self._tx() as db:
            row = db.execute(
                "SELECT id, pending_id FROM uploads WHERE host = ? AND team = ? AND project = ? "
                "AND name = ? AND digest = ?",
                (key.host, key.team, key.project, key.name, key.digest)).fetchone()
            if row is not None and int(row[1]) == pending_id:
                db.execute("UPDATE uploads SET updated_at = ? WHERE id = ?", (now, row[0]))
                return
            if row is not None:
                db.execute("DELETE FROM uploads WHERE id = ?", (row[0],))
            db.execute(
                "INSERT INTO uploads (host, team, project, name, digest, pending_id, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (key.host, key.team, key.project, key.name, key.digest, pending_id, now, now))

    @_best_effort
    def object_done(self, key: UploadKey, sha256: str) -> None:
        """An object is entirely in the bucket (its multipart state, if any, is dropped)."""
        with self._tx() as db:
            upload = self._upload_id(db, key)
            if upload is None:
                return
            db.execute("INSERT OR IGNORE INTO objects (upload, sha256) VALUES (?, ?)",
                       (upload, sha256))
            db.execute("DELETE FROM parts WHERE upload = ? AND sha256 = ?", (upload, sha256))
            db.execute("DELETE FROM multipart WHERE upload = ? AND sha256 = ?", (upload, sha256))
            db.execute("UPDATE uploads SET updated_at = ? WHERE id = ?", (time.time(), upload))

    @_best_effort
    def multipart_started(self, key: UploadKey, sha256: str, upload_id: str, part_size: int
                          ) -> None:
        """Record the store's upload id; a different one than journaled drops its parts."""
        with self._tx() as db:
            upload = self._upload_id(db, key)
            if upload is None:
                return
            row = db.execute("SELECT upload_id, part_size FROM multipart WHERE upload = ? AND "
                             "sha256 = ?", (upload, sha256)).fetchone()
            if row is not None and (row[0], row[1]) == (upload_id, part_size):
                return
            db.execute("DELETE FROM parts WHERE upload = ? AND sha256 = ?", (upload, sha256))
            db.execute("INSERT OR REPLACE INTO multipart (upload, sha256, upload_id, part_size) "
                       "VALUES (?, ?, ?, ?)", (upload, sha256, upload_id, part_size))

    @_best_effort
    def part_done(self, key: UploadKey, sha256: str, number: int, etag: str, size: int) -> None:
        with self._tx() as db:
            upload = self._upload_id(db, key)
            if upload is None:
                return
            db.execute("INSERT OR REPLACE INTO parts (upload, sha256, number, etag, size) "
                       "VALUES (?, ?, ?, ?, ?)", (upload, sha256, number, etag, size))

    @_best_effort
    def clear(self, key: UploadKey) -> None:
        """Forget the upload (after its commit, or to start fresh)."""
        with self._tx() as db:
            db.execute("DELETE FROM uploads WHERE host = ? AND team = ? AND project = ? AND "
                       "name = ? AND digest = ?",
                       (key.host, key.team, key.project, key.name, key.digest))
