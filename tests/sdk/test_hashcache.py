"""The local hash cache: unchanged files are not read again; changed ones are, even when the
size stays the same; concurrent threads and processes share one database safely."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from satchel.sdk import hashcache
from satchel.sdk.hashcache import RACY_NS, FileStat, HashCache, hash_files

OLD = 1_600_000_000  # an mtime well in the past (seconds)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every file the hashing code actually reads."""
    seen: list[Path] = []
    real = hashcache.sha256_file

    def counting(path: Path, on_bytes: object = None) -> str:
        seen.append(Path(path))
        return real(path, on_bytes)  # type: ignore[arg-type]

    monkeypatch.setattr(hashcache, "sha256_file", counting)
    return seen


def _write(path: Path, data: bytes, mtime: int = OLD) -> Path:
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_unchanged_files_are_not_read_again(tmp_path: Path, reads: list[Path]) -> None:
    files = [_write(tmp_path / f"f{i}", f"file {i}".encode()) for i in range(5)]
    cache = HashCache(tmp_path / "c" / "hashes.db")
    first = hash_files(files, cache, workers=3)
    assert [h.sha256 for h in first] == [_sha(f"file {i}".encode()) for i in range(5)]
    assert sorted(reads) == sorted(files) and not any(h.from_cache for h in first)
    reads.clear()
    # A new HashCache on the same database (a later process) finds them all.
    again = hash_files(files, HashCache(tmp_path / "c" / "hashes.db"), workers=3)
    assert reads == []
    assert [h.sha256 for h in again] == [h.sha256 for h in first]
    assert all(h.from_cache for h in again)


def test_same_size_rewrite_with_new_mtime_is_hashed_again(tmp_path: Path,
                                                          reads: list[Path]) -> None:
    f = _write(tmp_path / "w.bin", b"AAAA")
    cache = HashCache(tmp_path / "hashes.db")
    assert hash_files([f], cache, workers=1)[0].sha256 == _sha(b"AAAA")
    # Rewritten in place, same size; the filesystem gives it a new mtime (set explicitly).
    with open(f, "r+b") as fh:
        fh.write(b"BBBB")
    os.utime(f, (OLD + 10, OLD + 10))
    reads.clear()
    (h,) = hash_files([f], cache, workers=1)
    assert reads == [f] and h.sha256 == _sha(b"BBBB") and not h.from_cache
    # ... and that new hash is cached in turn.
    reads.clear()
    assert hash_files([f], cache, workers=1)[0].sha256 == _sha(b"BBBB") and reads == []


def test_replaced_file_with_same_size_and_mtime_is_caught_by_the_inode(
        tmp_path: Path, reads: list[Path]) -> None:
    f = _write(tmp_path / "r.bin", b"one!")
    cache = HashCache(tmp_path / "hashes.db")
    hash_files([f], cache, workers=1)
    # Another file (other inode) renamed over it, with the very same size and mtime.
    other = _write(tmp_path / "other.bin", b"two!")
    keep = tmp_path / "keep"  # keep the old inode alive so the number is not reused at once
    os.link(f, keep)
    os.replace(other, f)
    assert os.stat(f).st_mtime_ns == OLD * 10**9
    reads.clear()
    assert hash_files([f], cache, workers=1)[0].sha256 == _sha(b"two!") and reads == [f]


def test_a_file_modified_right_when_it_was_hashed_is_not_trusted(tmp_path: Path,
                                                                 reads: list[Path]) -> None:
    """Racily clean (git's term): an mtime within RACY_NS of the hashing time could hide a
    second same-size write in the same timestamp tick, so the row is not trusted."""
    now = time.time_ns()
    f = tmp_path / "racy.bin"
    f.write_bytes(b"racy")
    os.utime(f, ns=(now, now))  # "just written"
    cache = HashCache(tmp_path / "hashes.db")
    hash_files([f], cache, workers=1)
    reads.clear()
    hash_files([f], cache, workers=1)
    assert reads == [f]
    # Once the mtime is older than the hashing time by more than RACY_NS, it is trusted.
    os.utime(f, ns=(now - 2 * RACY_NS, now - 2 * RACY_NS))
    hash_files([f], cache, workers=1)
    reads.clear()
    hash_files([f], cache, workers=1)
    assert reads == []


def test_threads_share_one_cache(tmp_path: Path) -> None:
    files = [_write(tmp_path / f"t{i}", os.urandom(1000)) for i in range(40)]
    expected = [hashlib.sha256(p.read_bytes()).hexdigest() for p in files]
    cache = HashCache(tmp_path / "hashes.db")
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append([h.sha256 for h in hash_files(files, cache, workers=4)])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and results == [expected] * 6
    assert cache.lookup([FileStat.of(p) for p in files]) == expected


WRITER = """
import os, sys
from pathlib import Path
from satchel.sdk.hashcache import HashCache, hash_files
db, root, tag = sys.argv[1:4]
cache = HashCache(Path(db))
paths = []
for i in range(200):
    p = Path(root) / f"{tag}-{i}"
    p.write_bytes(f"{tag} {i}".encode())
    os.utime(p, (1_600_000_000, 1_600_000_000))
    paths.append(p)
for i in range(0, 200, 10):  # many small transactions, interleaving with the other process
    hash_files(paths[i:i + 10], cache, workers=2)
"""


def test_two_processes_write_the_same_cache(tmp_path: Path) -> None:
    db = tmp_path / "hashes.db"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(tmp_path), tag],
                              stderr=subprocess.PIPE, text=True) for tag in ("a", "b")]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert "hash cache disabled" not in err, err  # neither process lost its cache
    cache = HashCache(db)
    for tag in ("a", "b"):
        stats = [FileStat.of(tmp_path / f"{tag}-{i}") for i in range(200)]
        assert cache.lookup(stats) == [_sha(f"{tag} {i}".encode()) for i in range(200)]


def test_an_unusable_cache_location_disables_the_cache_not_hashing(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    cache = HashCache(blocker / "hashes.db")
    assert not cache.enabled
    f = _write(tmp_path / "x", b"x")
    assert hash_files([f], cache, workers=1)[0].sha256 == _sha(b"x")
