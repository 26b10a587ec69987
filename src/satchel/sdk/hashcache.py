"""Local hash cache: (absolute path, size, mtime_ns, inode) -> SHA-256, so an unchanged file is
not read again when a directory is logged a second time.

One small SQLite database (``<cache dir>/hashes.db``, WAL mode) shared by every thread of a
process (one connection behind a lock) and by concurrent processes (SQLite's own locking, with
a busy timeout). A row is trusted only when all four keys match, so a file rewritten in place
with the same size is hashed again because its mtime changed.

"Racily clean" files (after git's index): a file written twice within one filesystem timestamp
tick keeps its mtime. A row is therefore trusted only when the file's mtime lies at least
:data:`RACY_NS` before the moment it was hashed; a file modified right around the time it was
hashed is simply hashed again next time. Filesystems with coarser timestamps than that (FAT:
2 s) are not protected against same-size rewrites within one tick.

The cache is an accelerator, never a source of truth for what is uploaded: the bucket verifies
sizes (and SHA-256 where it can) at commit. Any database problem disables it for the process
with one warning instead of failing the upload.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from satchel.sdk.transfer import BLOCK

log = logging.getLogger(__name__)

# Longer than the coarse timestamp granularity of common Linux/macOS filesystems (a jiffy,
# 1-10 ms; APFS/ext4/XFS store nanoseconds but update them from a coarse clock).
RACY_NS = 100_000_000
OPEN_ATTEMPTS = 10
# Rows beyond this are pruned, least recently hashed first (paths from long-gone trees).
MAX_ROWS = 1_000_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS hashes (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    hashed_at_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS hashes_hashed_at ON hashes (hashed_at_ns);
"""


@dataclass(frozen=True, slots=True)
class FileStat:
    """What identifies one version of a file's bytes for the cache."""

    path: str  # absolute
    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> FileStat:
        absolute = os.path.abspath(path)
        st = os.stat(absolute)
        return cls(absolute, st.st_size, st.st_mtime_ns, st.st_ino)


def connect(path: Path) -> sqlite3.Connection:
    """A connection for the SDK's small state databases (hash cache, journal, download cache):
    WAL, a busy timeout for concurrent processes, usable from any thread behind a lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode: a committed transaction survives the process being killed (it is in
    # the OS's page cache); only a power loss can lose the last few, never corrupt the file.
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


class HashCache:
    """Thread-safe; one per process is enough (``Api`` keeps one)."""

    def __init__(self, db_path: Path) -> None:
        self.path = db_path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        for attempt in range(OPEN_ATTEMPTS):
            try:
                conn = connect(db_path)
                conn.executescript(_SCHEMA)
                self._conn = conn
                return
            except sqlite3.OperationalError as exc:
                # Two processes opening a new cache at once: switching it to WAL needs the
                # file to itself, and SQLite answers "locked" at once rather than waiting.
                if "locked" in str(exc) and attempt + 1 < OPEN_ATTEMPTS:
                    time.sleep(0.05 * (attempt + 1))
                    continue
                log.warning("hash cache disabled: cannot open %s (%s)", db_path, exc)
                return
            except (sqlite3.Error, OSError) as exc:
                log.warning("hash cache disabled: cannot open %s (%s)", db_path, exc)
                return

    @property
    def enabled(self) -> bool:
        return self._conn is not None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _disable(self, exc: Exception) -> None:
        log.warning("hash cache disabled for this process: %s", exc)
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def lookup(self, stats: Sequence[FileStat]) -> list[str | None]:
        """The cached SHA-256 of each file, or None where it must be (re)hashed."""
        out: list[str | None] = [None] * len(stats)
        with self._lock:
            if self._conn is None:
                return out
            try:
                for i, st in enumerate(stats):
                    row = self._conn.execute(
                        "SELECT size, mtime_ns, inode, sha256, hashed_at_ns FROM hashes "
                        "WHERE path = ?", (st.path,)).fetchone()
                    if row is None:
                        continue
                    size, mtime_ns, inode, sha, hashed_at = row
                    if (size, mtime_ns, inode) == (st.size, st.mtime_ns, st.inode) and \
                            st.mtime_ns < hashed_at - RACY_NS:
                        out[i] = str(sha)
            except sqlite3.Error as exc:
                self._disable(exc)
        return out

    def store(self, rows: Sequence[tuple[FileStat, str, int]]) -> None:
        """Remember ``(stat before hashing, sha256, time hashing started in ns)`` per file."""
        if not rows:
            return
        with self._lock:
            if self._conn is None:
                return
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany(
                    "INSERT OR REPLACE INTO hashes (path, size, mtime_ns, inode, sha256, "
                    "hashed_at_ns) VALUES (?, ?, ?, ?, ?, ?)",
                    [(st.path, st.size, st.mtime_ns, st.inode, sha, at) for st, sha, at in rows])
                (count,) = self._conn.execute("SELECT COUNT(*) FROM hashes").fetchone()
                if count > MAX_ROWS:
                    self._conn.execute(
                        "DELETE FROM hashes WHERE path IN (SELECT path FROM hashes "
                        "ORDER BY hashed_at_ns LIMIT ?)", (count - MAX_ROWS * 9 // 10,))
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._disable(exc)


def sha256_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    """SHA-256 of a file, read in blocks (memory stays bounded whatever the size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(BLOCK):
            digest.update(block)
            if on_bytes is not None:
                on_bytes(len(block))
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Hashed:
    sha256: str
    size: int
    from_cache: bool


def hash_files(paths: Sequence[Path], cache: HashCache | None, *, workers: int,
               on_file: Callable[[int], None] | None = None,
               on_bytes: Callable[[int], None] | None = None) -> list[Hashed]:
    """SHA-256 and size of each file, from the cache where it is current, else read in
    parallel (``workers`` threads). Progress: ``on_file(n)`` once per file, with ``n`` = its
    size for a cache hit and 0 for a file that was read, whose bytes went to ``on_bytes`` block
    by block. Both may be called from worker threads."""
    stats = [FileStat.of(p) for p in paths]
    cached = cache.lookup(stats) if cache is not None else [None] * len(stats)
    out: list[Hashed | None] = [None] * len(stats)
    todo: list[int] = []
    for i, (st, sha) in enumerate(zip(stats, cached, strict=True)):
        if sha is None:
            todo.append(i)
        else:
            out[i] = Hashed(sha, st.size, True)
            if on_file is not None:
                on_file(st.size)
    fresh: list[tuple[FileStat, str, int]] = []

    def one(i: int) -> None:
        started = time.time_ns()
        sha = sha256_file(Path(stats[i].path), on_bytes)
        after = FileStat.of(Path(stats[i].path))
        # Changed while being read: use what was read (the bucket checks it at commit), but do
        # not cache a hash that may not match any state of the file.
        if after == stats[i]:
            fresh.append((stats[i], sha, started))
        out[i] = Hashed(sha, after.size if after != stats[i] else stats[i].size, False)
        if on_file is not None:
            on_file(0)

    if todo:
        with ThreadPoolExecutor(max(1, min(workers, len(todo)))) as pool:
            list(pool.map(one, todo))
    if cache is not None:
        cache.store(fresh)
    result = [h for h in out if h is not None]
    assert len(result) == len(out)
    return result
