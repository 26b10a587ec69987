"""The download cache by hash: verified reads, eviction of corrupt entries, LRU pruning."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from satchel.sdk.cache import DownloadCache


def _file(path: Path, data: bytes) -> tuple[Path, str]:
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_a_stored_object_is_copied_out_verified(tmp_path: Path) -> None:
    cache = DownloadCache(tmp_path / "objects", max_bytes=10_000)
    src, sha = _file(tmp_path / "downloaded.bin", b"payload" * 10)
    assert not cache.copy_to(sha, 70, tmp_path / "out" / "x.bin")
    cache.add(sha, 70, src)
    dest = tmp_path / "out" / "x.bin"
    assert cache.copy_to(sha, 70, dest)
    assert dest.read_bytes() == b"payload" * 10
    # A copy, not a link: editing the result cannot reach the cache.
    assert os.stat(dest).st_ino != os.stat(cache.path_of(sha)).st_ino
    assert cache.size() == 70


def test_an_entry_that_no_longer_matches_its_hash_is_evicted(tmp_path: Path) -> None:
    """The first download is hard-linked into the cache; if the user edits that file in place
    the cache twin changes too, and the next read notices and refuses it."""
    cache = DownloadCache(tmp_path / "objects", max_bytes=10_000)
    src, sha = _file(tmp_path / "mine.bin", b"original")
    cache.add(sha, 8, src)
    with open(src, "r+b") as fh:  # in-place edit, same size
        fh.write(b"ORIGINAL")
    dest = tmp_path / "out.bin"
    assert cache.copy_to(sha, 8, dest) is False
    assert not dest.exists() and not cache.path_of(sha).exists() and cache.size() == 0
    assert list((tmp_path / "objects" / "tmp").iterdir()) == []


def test_prune_removes_least_recently_used_first(tmp_path: Path) -> None:
    cache = DownloadCache(tmp_path / "objects", max_bytes=10_000)
    shas = {}
    for name in ("a", "b", "c"):
        src, sha = _file(tmp_path / name, name.encode() * 100)
        cache.add(sha, 100, src)
        shas[name] = sha
    assert cache.copy_to(shas["a"], 100, tmp_path / "use-a")  # a is now the most recent
    assert cache.prune(max_bytes=250) == 100  # b goes first
    assert not cache.path_of(shas["b"]).exists()
    assert cache.path_of(shas["a"]).exists() and cache.path_of(shas["c"]).exists()
    assert cache.prune(max_bytes=100) == 100  # then c
    assert [n for n in shas if cache.path_of(shas[n]).exists()] == ["a"]
    assert cache.size() == 100


def test_objects_larger_than_the_cap_are_not_kept_and_the_cap_applies(tmp_path: Path) -> None:
    cache = DownloadCache(tmp_path / "objects", max_bytes=150)
    big, big_sha = _file(tmp_path / "big", b"x" * 200)
    cache.add(big_sha, 200, big)
    assert not cache.path_of(big_sha).exists()
    for name in ("a", "b"):
        src, sha = _file(tmp_path / name, name.encode() * 100)
        cache.add(sha, 100, src)
    assert cache.prune() == 100 and cache.size() == 100
