"""Downloading an artifact version: presigned GETs straight from the bucket, every file verified
against its SHA-256, objects served from the local download cache when it has them.

Entries sharing one hash are fetched once and copied locally. Expired URLs are refreshed in
batches through the download endpoint (``POST .../versions/{ref}/download`` with ``paths``).
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from satchel.errors import ChecksumMismatch, InvalidInput
from satchel.sdk.cache import DownloadCache
from satchel.sdk.client import JSON, Client
from satchel.sdk.progress import ProgressCallback, Reporter
from satchel.sdk.transfer import BatchRefresher, Digest, TransferClient
from satchel.sdk.uploads import request_from_json
from satchel.storage.base import PresignedRequest

log = logging.getLogger(__name__)


@dataclass
class DownloadStats:
    files: int = 0
    bytes: int = 0
    objects_fetched: int = 0  # from the bucket
    bytes_fetched: int = 0
    objects_cached: int = 0  # copied from the local download cache
    bytes_cached: int = 0
    urls_refreshed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)


def download_version(
    client: Client, transfer: TransferClient, *, team: str, project: str, name: str,
    version: str, root: Path, workers: int, cache: DownloadCache | None,
    progress: ProgressCallback | None = None,
) -> DownloadStats:
    listing = client.artifact_download(team, project, name, version)
    entries = [e for e in listing["entries"] if e["url"] is not None]
    base = root.resolve()
    by_sha: dict[str, list[JSON]] = {}
    for e in entries:
        dest = (root / e["path"]).resolve()
        if base not in dest.parents:
            raise InvalidInput(f"entry {e['path']!r} would land outside {root}")
        by_sha.setdefault(e["sha256"], []).append(e)
    stats = DownloadStats(files=len(entries), bytes=sum(int(e["size"]) for e in entries))
    rep = Reporter(progress)
    rep.start("download", stats.files, stats.bytes)

    def fetch_urls(shas: list[str]) -> dict[str, PresignedRequest]:
        paths = [by_sha[s][0]["path"] for s in shas]
        res = client.artifact_download(team, project, name, version, paths=paths)
        return {e["sha256"]: request_from_json(e) for e in res["entries"] if e["url"]}

    refresher = BatchRefresher(fetch_urls, list(by_sha), clock=transfer.config.clock)
    on_bytes = rep.bytes("download")

    def one(sha: str) -> None:
        group = by_sha[sha]
        first = group[0]
        size = int(first["size"])
        dest = root / first["path"]
        if cache is not None and _from_cache(cache, sha, size, dest, on_bytes):
            stats.add(objects_cached=1, bytes_cached=size)
        else:
            digest = Digest()  # hashed while downloading: no second read of the file
            transfer.get_file(request_from_json(first), dest, size=size,
                              refresh=refresher.for_key(sha), on_bytes=on_bytes, digest=digest)
            if digest.hexdigest != sha:
                dest.unlink(missing_ok=True)
                raise ChecksumMismatch(f"{first['path']}: downloaded bytes do not match the "
                                       "recorded SHA-256; download again")
            stats.add(objects_fetched=1, bytes_fetched=size)
            if cache is not None:
                cache.add(sha, size, dest)
        refresher.done(sha)
        rep.advance("download", 1, 0)
        for other in group[1:]:  # same contents under another path: a local copy
            target = root / other["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(dest, target)
            rep.advance("download", 1, size)

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="satchel-get") as pool:
        list(pool.map(one, by_sha))
    stats.add(urls_refreshed=refresher.refreshed)
    if cache is not None:
        try:
            cache.prune()
        except (OSError, sqlite3.Error) as exc:
            log.warning("download cache: pruning failed (%s)", exc)
    rep.end("download")
    return stats


def _from_cache(cache: DownloadCache, sha: str, size: int, dest: Path,
                on_bytes: Callable[[int], None] | None) -> bool:
    try:
        return cache.copy_to(sha, size, dest, on_bytes)
    except (OSError, sqlite3.Error) as exc:  # a cache problem never fails a download
        log.warning("download cache: cannot read %s (%s)", sha[:12], exc)
        return False
