"""Download cache by content: an object with a given SHA-256 is fetched from the bucket once;
later downloads of the same hash (from any artifact, version or team) copy it from disk.

Layout under ``<cache dir>/objects/``::

    sha256/<aa>/<bb>/<sha256>   the bytes (verified against the hash when stored)
    index.db                    SQLite: sha256, size, last_used (oldest-first pruning)
    tmp/                        copies in progress (renamed into place when complete)

Storing is cheap: the freshly downloaded and verified file is hard-linked into the cache
(copied when the cache is on another filesystem). Reading is never a link: a cache hit is
*copied* to the destination while its SHA-256 is computed, and a mismatch (someone edited a
downloaded file in place, which edits its cache twin too, or disk corruption) evicts the entry
and the caller downloads from the bucket instead. So downloads stay verified either way.

The total size is capped (``SATCHEL_DOWNLOAD_CACHE_MAX_BYTES``); the least recently used
entries go first. Several processes may share the cache (SQLite locking; files are published
with an atomic rename and read through an open descriptor, so pruning under a reader is safe).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from satchel.sdk.hashcache import connect
from satchel.sdk.transfer import BLOCK

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    sha256 TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    last_used_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS objects_last_used ON objects (last_used_ns);
"""
# Temp files older than this are left-overs of killed processes.
STALE_TMP_SECONDS = 3600


class DownloadCache:
    """Thread-safe; shared by processes through the filesystem and SQLite."""

    def __init__(self, root: Path, *, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        (root / "tmp").mkdir(parents=True, exist_ok=True)
        self._conn = connect(root / "index.db")
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def path_of(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256[:2] / sha256[2:4] / sha256

    def _tmp(self) -> Path:
        return self.root / "tmp" / f"{uuid.uuid4().hex}.part"

    def _execute(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    # ----------------------------------------------------------------- reading

    def copy_to(self, sha256: str, size: int, dest: Path,
                on_bytes: Callable[[int], None] | None = None) -> bool:
        """Copy the cached object to ``dest`` (temp file + rename), verifying its SHA-256.
        False when it is not cached or fails verification (then it is evicted)."""
        src = self.path_of(sha256)
        try:
            fh = open(src, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.cache-{uuid.uuid4().hex[:8]}")
        digest = hashlib.sha256()
        n = 0
        try:
            with fh, open(tmp, "wb") as out:
                while block := fh.read(BLOCK):
                    digest.update(block)
                    out.write(block)
                    n += len(block)
                    if on_bytes is not None:
                        on_bytes(len(block))
            if n != size or digest.hexdigest() != sha256:
                log.warning("download cache: %s failed verification; evicted", sha256[:12])
                tmp.unlink(missing_ok=True)
                self.evict(sha256)
                return False
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._execute("UPDATE objects SET last_used_ns = ? WHERE sha256 = ?",
                      (time.time_ns(), sha256))
        return True

    # ----------------------------------------------------------------- writing

    def add(self, sha256: str, size: int, verified: Path) -> None:
        """Keep ``verified`` (a file whose SHA-256 the caller has just checked) as the cached
        copy of ``sha256``. Objects larger than the whole cache are not kept."""
        if size > self.max_bytes:
            return
        final = self.path_of(sha256)
        if final.exists():
            self._execute("INSERT OR REPLACE INTO objects (sha256, size, last_used_ns) "
                          "VALUES (?, ?, ?)", (sha256, size, time.time_ns()))
            return
        tmp = self._tmp()
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(verified, tmp)
            except OSError:  # another filesystem, or links not supported: copy
                _copy(verified, tmp)
            # Row first, then the file: a crash in between leaves a row without a file (a
            # miss, evicted in its turn by prune), never an uncounted file.
            self._execute("INSERT OR REPLACE INTO objects (sha256, size, last_used_ns) "
                          "VALUES (?, ?, ?)", (sha256, size, time.time_ns()))
            os.replace(tmp, final)
        except (OSError, sqlite3.Error) as exc:  # a cache problem never fails a download
            log.warning("download cache: cannot store %s (%s)", sha256[:12], exc)
        finally:
            tmp.unlink(missing_ok=True)

    def evict(self, sha256: str) -> None:
        self._execute("DELETE FROM objects WHERE sha256 = ?", (sha256,))
        self.path_of(sha256).unlink(missing_ok=True)

    def size(self) -> int:
        ((total,),) = self._execute("SELECT COALESCE(SUM(size), 0) FROM objects")
        assert isinstance(total, int)
        return total

    def prune(self, max_bytes: int | None = None) -> int:
        """Delete least recently used objects until the total is at most ``max_bytes``
        (default: the cache's cap); returns the bytes freed. Also removes stale temp files."""
        cap = self.max_bytes if max_bytes is None else max_bytes
        freed = 0
        total = self.size()
        while total > cap:
            rows = self._execute("SELECT sha256, size FROM objects ORDER BY last_used_ns "
                                 "LIMIT 100")
            if not rows:
                break
            for sha, size in rows:
                assert isinstance(sha, str) and isinstance(size, int)
                self.evict(sha)
                freed += size
                total -= size
                if total <= cap:
                    break
        cutoff = time.time() - STALE_TMP_SECONDS
        for tmp in (self.root / "tmp").iterdir():
            try:
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink(missing_ok=True)
            except FileNotFoundError:
                continue
        return freed


def _copy(src: Path, dest: Path) -> None:
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        while block := fin.read(BLOCK):
            fout.write(block)
