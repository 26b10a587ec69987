"""The presigned-URL data path: move bytes between local files and a bucket.

The server only signs; this module sends. It streams (memory stays bounded whatever the file
size), sends large uploads as parallel parts, reads large downloads as parallel ranged GETs
written in place with ``os.pwrite``, and retries transient failures (connection errors,
timeouts, 5xx, 429) with exponential backoff. When a URL expires mid-way, the caller-supplied
``refresh`` callback returns a new one instead of failing the transfer: before sending when the
URL's own ``expires_at`` has already passed (no body is sent in vain), and after the store
refused it as expired (a 403/400 naming expiry: clocks differ, or the URL expired in flight).
The artifact layer (sdk/uploads.py) supplies callbacks that ask the server for fresh URLs.

urllib3 is used directly (not httpx) on this path: it is what boto3 uses, sends file bodies
with a large block size and adds no per-chunk overhead.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error

from satchel.errors import (
    ChecksumMismatch,
    NotFound,
    PermissionDenied,
    StorageError,
    StorageUnavailable,
    UrlExpired,
)
from satchel.storage.base import PresignedRequest

MiB = 1024 * 1024
BLOCK = 1 * MiB
RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}
K = TypeVar("K")


class Refresh(Protocol):
    def __call__(self) -> PresignedRequest: ...


@dataclass(frozen=True)
class TransferConfig:
    max_workers: int = 8
    # Downloads at least this large are split into parallel ranged GETs.
    range_threshold: int = 32 * MiB
    range_size: int = 64 * MiB
    max_attempts: int = 5
    backoff_base: float = 0.2
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    # fsync a downloaded file before renaming it into place, so that it survives a power loss
    # the moment get_file returns. Off by default, as in boto3: a download can be fetched
    # again, and the flush makes every large download wait for the disk (about 2x slower for
    # 64-256 MiB files in bench/bench_transfer.py; see docs/benchmarks.md).
    fsync_downloads: bool = False
    # Wall clock used to decide that a URL has expired (injected by tests).
    clock: Callable[[], float] = time.time


class _FileSlice:
    """A read-only window [offset, offset+length) of a file, read in blocks (bounded memory)."""

    def __init__(self, path: Path, offset: int, length: int) -> None:
        self._fh = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._fh.seek(offset)
        self._left = length
        self.length = length

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        n = self._left if size < 0 else min(size, self._left)
        data = self._fh.read(n)
        self._left -= len(data)
        return data

    def __len__(self) -> int:
        return self.length

    def close(self) -> None:
        self._fh.close()


class TransferClient:
    """Thread-safe; share one per process (it holds the connection pools)."""

    def __init__(self, config: TransferConfig | None = None) -> None:
        self.config = config or TransferConfig()
        self._http = urllib3.PoolManager(
            num_pools=32,
            maxsize=max(self.config.max_workers * 2, 16),
            block=False,
            blocksize=BLOCK,
            retries=False,
            timeout=urllib3.Timeout(connect=self.config.connect_timeout,
                                    read=self.config.read_timeout),
        )
        self._pool = ThreadPoolExecutor(self.config.max_workers, thread_name_prefix="satchel-xfer")
        self._lock = threading.Lock()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._http.clear()

    def __enter__(self) -> TransferClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- core request loop

    def _send(
        self,
        req: PresignedRequest,
        *,
        body: Callable[[], _FileSlice | bytes | None] = lambda: None,
        extra_headers: dict[str, str] | None = None,
        refresh: Refresh | None = None,
        sink: Callable[[urllib3.BaseHTTPResponse], object] | None = None,
    ) -> tuple[urllib3.BaseHTTPResponse, object]:
        """Send one request with retries; ``sink`` consumes a streamed response body."""
        attempt = 0
        if refresh is not None and req.expires_at.timestamp() <= self.config.clock():
            req = refresh()
        while True:
            attempt += 1
            payload = body()
            headers = dict(req.headers)
            headers.update(extra_headers or {})
            if isinstance(payload, _FileSlice):
                headers["Content-Length"] = str(payload.length)
            try:
                resp = self._http.request(
                    req.method, req.url, body=payload,  # type: ignore[arg-type]  # file-like
                    headers=headers,
                    preload_content=sink is None, redirect=False,
                )
                if resp.status < 300 and sink is not None:
                    try:
                        result = sink(resp)
                    finally:
                        resp.release_conn()
                    return resp, result
            except (Urllib3Error, OSError) as exc:
                if attempt >= self.config.max_attempts:
                    raise StorageUnavailable(
                        f"transfer failed after {attempt} attempts: {type(exc).__name__}; "
                        "check the network path to the bucket"
                    ) from exc
                self._sleep(attempt)
                continue
            finally:
                if isinstance(payload, _FileSlice):
                    payload.close()
            status = resp.status
            if status < 300 or _chunk_accepted(req, status):
                return resp, None
            text = (resp.data or b"")[:2000].decode("utf-8", "replace") if sink is None else \
                resp.read(2000).decode("utf-8", "replace")
            if sink is not None:
                resp.release_conn()
            if status in RETRYABLE_STATUS and attempt < self.config.max_attempts:
                self._sleep(attempt)
                continue
            # GCS may answer an expired URL with 400 ExpiredToken instead of 403.
            expired = _looks_expired(text, req, self.config.clock())
            if status in {400, 403} and refresh is not None and expired and \
                    attempt < self.config.max_attempts:
                req = refresh()
                continue
            raise _status_error(status, text, req, expired)

    def _sleep(self, attempt: int) -> None:
        delay = self.config.backoff_base * (2 ** (attempt - 1))
        time.sleep(delay * (0.5 + random.random()))

    # ----------------------------------------------------------------- uploads

    def put_file(self, req: PresignedRequest, path: Path, *, offset: int = 0,
                 length: int | None = None, refresh: Refresh | None = None) -> str:
        """PUT a file (or a slice of it); returns the ETag the store answered."""
        size = path.stat().st_size - offset if length is None else length
        resp, _ = self._send(req, body=lambda: _FileSlice(path, offset, size), refresh=refresh)
        return (resp.headers.get("ETag") or "").strip('"')

    def put_bytes(self, req: PresignedRequest, data: bytes, *, refresh: Refresh | None = None
                  ) -> str:
        resp, _ = self._send(req, body=lambda: data, refresh=refresh)
        return (resp.headers.get("ETag") or "").strip('"')

    def put_parts(
        self,
        path: Path,
        part_requests: Sequence[PresignedRequest],
        part_size: int,
        *,
        refresh_part: Callable[[int], PresignedRequest] | None = None,
        on_part: Callable[[int, str, int], None] | None = None,
        parallel: bool = True,
        numbers: Sequence[int] | None = None,
    ) -> list[str]:
        """Upload ``path`` as parts (1-based numbering, ``part_size`` bytes each, last shorter).

        ``numbers[i]`` is the part number ``part_requests[i]`` is for (default 1, 2, ...: every
        part); a resumed upload passes only the parts still missing. Returns the ETags in the
        order of ``part_requests``. ``on_part(number, etag, size)`` is called as each part
        finishes (the resume journal hooks in here); ``refresh_part(number)`` returns a fresh
        URL for a part whose URL expired.
        """
        size = path.stat().st_size
        nums = list(numbers) if numbers is not None else list(range(1, len(part_requests) + 1))
        if len(nums) != len(part_requests):
            raise ValueError("numbers and part_requests differ in length")

        def one(index: int) -> str:
            number = nums[index]
            offset = (number - 1) * part_size
            length = min(part_size, size - offset)
            refresh = (lambda: refresh_part(number)) if refresh_part else None
            etag = self.put_file(part_requests[index], path, offset=offset, length=length,
                                 refresh=refresh)
            if on_part is not None:
                on_part(number, etag, length)
            return etag

        indexes = range(len(part_requests))
        if not parallel:
            return [one(i) for i in indexes]
        return list(self._pool.map(one, indexes))

    # ----------------------------------------------------------------- downloads

    def get_file(self, req: PresignedRequest, dest: Path, *, size: int | None = None,
                 refresh: Refresh | None = None, on_bytes: Callable[[int], None] | None = None,
                 digest: Digest | None = None) -> int:
        """Download to ``dest`` (written to a temp file, renamed when complete); returns bytes.

        Known sizes above the range threshold are fetched as parallel ranged GETs.
        ``on_bytes(n)`` is called as blocks arrive (progress; a retried request counts again).
        With ``digest``, the file's SHA-256 is computed *while* it downloads (ranges are hashed
        in order as soon as every range before them is complete) and left in
        ``digest.hexdigest``, so the caller can verify without reading the file again.
        """
        tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}-{threading.get_ident()}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            if size is not None and size >= self.config.range_threshold:
                written = self._get_ranges(req, tmp, size, refresh, on_bytes, digest)
            else:
                written = self._get_whole(req, tmp, refresh, on_bytes, digest)
            if size is not None and written != size:
                raise ChecksumMismatch(f"downloaded {written} bytes, expected {size}")
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return written

    def get_bytes(self, req: PresignedRequest, *, refresh: Refresh | None = None) -> bytes:
        resp, _ = self._send(req, refresh=refresh)
        return bytes(resp.data)

    def _get_whole(self, req: PresignedRequest, tmp: Path, refresh: Refresh | None,
                   on_bytes: Callable[[int], None] | None = None,
                   digest: Digest | None = None) -> int:
        def sink(resp: urllib3.BaseHTTPResponse) -> int:
            n = 0
            h = hashlib.sha256() if digest is not None else None  # fresh for each attempt
            with open(tmp, "wb") as fh:
                for chunk in resp.stream(BLOCK):
                    fh.write(chunk)
                    if h is not None:
                        h.update(chunk)
                    n += len(chunk)
                    if on_bytes is not None:
                        on_bytes(len(chunk))
                if self.config.fsync_downloads:
                    fh.flush()
                    os.fsync(fh.fileno())
            if digest is not None and h is not None:
                digest.hexdigest = h.hexdigest()
            return n

        _, written = self._send(req, refresh=refresh, sink=sink)
        assert isinstance(written, int)
        return written

    def _get_ranges(self, req: PresignedRequest, tmp: Path, size: int,
                    refresh: Refresh | None, on_bytes: Callable[[int], None] | None = None,
                    digest: Digest | None = None) -> int:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, size)
            step = self.config.range_size
            # Use at least max_workers ranges so every worker has something to do.
            step = min(step, max(BLOCK, -(-size // self.config.max_workers)))
            ranges = [(start, min(start + step, size) - 1) for start in range(0, size, step)]
            current = [req]

            def fresh() -> PresignedRequest:
                with self._lock:
                    if refresh is not None:
                        current[0] = refresh()
                    return current[0]

            def one(rng: tuple[int, int]) -> int:
                start, end = rng

                def sink(resp: urllib3.BaseHTTPResponse) -> int:
                    pos = start
                    for chunk in resp.stream(BLOCK):
                        os.pwrite(fd, chunk, pos)
                        pos += len(chunk)
                        if on_bytes is not None:
                            on_bytes(len(chunk))
                    return pos - start

                resp, got = self._send(current[0], extra_headers={"Range": f"bytes={start}-{end}"},
                                       refresh=fresh if refresh else None, sink=sink)
                assert isinstance(got, int)
                if resp.status != 206 and not (start == 0 and end == size - 1):
                    raise StorageError("the store ignored the Range header")
                if got != end - start + 1:
                    raise ChecksumMismatch(f"range {start}-{end}: got {got} bytes")
                if hashing is not None:
                    hashing.completed(ranges.index(rng))
                return got

            hashing = _InOrderHasher(fd, ranges) if digest is not None else None
            total = sum(self._pool.map(one, ranges))
            if hashing is not None and digest is not None:
                digest.hexdigest = hashing.result()
            if self.config.fsync_downloads:
                os.fsync(fd)
            return total
        finally:
            os.close(fd)


def _chunk_accepted(req: PresignedRequest, status: int) -> bool:
    """A GCS resumable session answers every chunk but the last with 308 "Resume Incomplete":
    the chunk was stored (storage/gcs.py). No store answers a presigned PUT with a redirect."""
    return status == 308 and req.method == "PUT"


class Digest:
    """Receives the SHA-256 (hex) of a file :meth:`TransferClient.get_file` downloaded."""

    hexdigest: str | None = None


class _InOrderHasher:
    """SHA-256 of a file written as parallel ranges, computed while the download runs.

    A range is hashed once it and every range before it are complete; the thread that
    completes the next range in order hashes forward (reading the bytes back from the page
    cache), the others go back to downloading. hashlib releases the GIL on large updates, so
    hashing overlaps the remaining ranges' network and write time."""

    def __init__(self, fd: int, ranges: Sequence[tuple[int, int]]) -> None:
        self._fd = fd
        self._ranges = ranges
        self._done = [False] * len(ranges)
        self._next = 0
        self._active = False
        self._lock = threading.Lock()
        self._hash = hashlib.sha256()

    def completed(self, index: int) -> None:
        with self._lock:
            self._done[index] = True
            if self._active:
                return  # the active hasher will get to it
            self._active = True
        while True:
            with self._lock:
                i = self._next
                if i >= len(self._ranges) or not self._done[i]:
                    self._active = False
                    return
            start, end = self._ranges[i]
            pos = start
            while pos <= end:
                chunk = os.pread(self._fd, min(4 * BLOCK, end + 1 - pos), pos)
                if not chunk:
                    raise ChecksumMismatch(f"range {start}-{end} is shorter than expected")
                self._hash.update(chunk)
                pos += len(chunk)
            with self._lock:
                self._next = i + 1

    def result(self) -> str:
        if self._next != len(self._ranges):
            raise ChecksumMismatch("not every downloaded range was hashed")
        return self._hash.hexdigest()


class BatchRefresher(Generic[K]):
    """Fresh URLs for many keys (objects, parts, files), fetched from the server in batches.

    When one URL turns out expired, the others issued with it are about to expire too: the
    first refresh asks for up to ``batch`` outstanding keys at once, and the following ones are
    answered from that batch without another server call. Each fetched URL is handed out once
    (if the store refuses it too, the next refresh fetches again). Thread-safe.
    """

    def __init__(self, fetch: Callable[[list[K]], dict[K, PresignedRequest]],
                 outstanding: Iterable[K], *, batch: int = 500,
                 clock: Callable[[], float] = time.time) -> None:
        self._fetch = fetch
        self._outstanding: dict[K, None] = dict.fromkeys(outstanding)
        self._fresh: dict[K, PresignedRequest] = {}
        self._batch = batch
        self._clock = clock
        self._lock = threading.Lock()
        self.fetches = 0  # server calls made
        self.refreshed = 0  # URLs handed out

    def done(self, key: K) -> None:
        with self._lock:
            self._outstanding.pop(key, None)
            self._fresh.pop(key, None)

    def __call__(self, key: K) -> PresignedRequest:
        with self._lock:
            req = self._fresh.pop(key, None)
            if req is None or req.expires_at.timestamp() <= self._clock():
                others = [k for k in self._outstanding if k != key and k not in self._fresh]
                wanted = [key, *others[:self._batch - 1]]
                got = self._fetch(wanted)
                self.fetches += 1
                req = got.pop(key)
                self._fresh.update(got)
            self.refreshed += 1
            return req

    def for_key(self, key: K) -> Refresh:
        return lambda: self(key)


def _looks_expired(text: str, req: PresignedRequest, now: float) -> bool:
    return "expired" in text.lower() or req.expires_at.timestamp() <= now + 5


def _status_error(status: int, text: str, req: PresignedRequest, expired: bool
                  ) -> StorageError | Exception:
    code = _xml_code(text)
    what = f"{req.method} to the bucket failed with HTTP {status}" + (f" ({code})" if code else "")
    if status == 403 and expired:
        return UrlExpired(f"{what}: the presigned URL expired; ask the server for a new one")
    if status in {401, 403}:
        return PermissionDenied(f"{what}: the store refused the request")
    if status == 404:
        return NotFound(f"{what}: no such object or bucket")
    if status in {400, 409, 412, 416} and ("checksum" in text.lower() or "digest" in text.lower()
                                           or "md5" in text.lower()):
        return ChecksumMismatch(f"{what}: the store rejected the checksum")
    if status >= 500:
        return StorageUnavailable(f"{what}: the store is failing")
    return StorageError(what)


def _xml_code(text: str) -> str | None:
    start = text.find("<Code>")
    if start < 0:
        if '"code"' in text:
            import json

            try:
                return str(json.loads(text)["error"]["code"])
            except (ValueError, KeyError, TypeError):
                return None
        return None
    end = text.find("</Code>", start)
    return text[start + 6:end] if end > start else None
