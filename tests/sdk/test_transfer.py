"""The transfer engine against real HTTP: the local bucket's blob endpoint and a flaky server."""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from satchel.config import Settings
from satchel.errors import UrlExpired
from satchel.sdk.transfer import Digest, TransferClient, TransferConfig
from satchel.server.app import build_context, create_app
from satchel.storage.base import CompletedPart, PresignedRequest
from satchel.storage.local import LocalStore
from satchel.storage.scoped import ScopedStore
from tests.live import free_port, serve_in_thread

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStore]:
    home = tmp_path_factory.mktemp("xfer")
    port = free_port()
    settings = Settings(home=home, secret_key=secrets.token_urlsafe(32),
                        base_url=f"http://127.0.0.1:{port}",
                        database_url=f"sqlite:///{home / 'db.sqlite'}")
    ctx = build_context(settings)
    (store,) = ctx.local_stores.values()
    with serve_in_thread(create_app(settings, context=ctx), port):
        yield store
    ctx.db.dispose()


def _random_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        left = size
        while left:
            chunk = os.urandom(min(left, 4 * MiB))
            digest.update(chunk)
            fh.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def test_parallel_parts_up_and_ranged_download(local: LocalStore, tmp_path: Path) -> None:
    store = ScopedStore(local, "xfer")
    src = tmp_path / "big.bin"
    size = 21 * MiB + 123
    sha = _random_file(src, size)
    part = 5 * MiB
    upload = store.create_multipart("big.bin")
    reqs = [store.presign_part(upload, n + 1, expires_in=300)
            for n in range(-(-size // part))]
    done: list[int] = []
    with TransferClient(TransferConfig(max_workers=4, range_threshold=4 * MiB,
                                       range_size=3 * MiB)) as xfer:
        etags = xfer.put_parts(src, reqs, part, on_part=lambda n, _e, _s: done.append(n))
        store.complete_multipart(upload, [CompletedPart(i + 1, e) for i, e in enumerate(etags)])
        dest = tmp_path / "out" / "big.bin"
        digest = Digest()
        got = xfer.get_file(store.presign_get("big.bin", expires_in=300), dest, size=size,
                            digest=digest)
    assert sorted(done) == [1, 2, 3, 4, 5]
    assert got == size and _sha(dest) == sha
    assert digest.hexdigest == sha  # hashed in order while the 8 ranges arrived
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")]


def test_single_put_and_whole_get(local: LocalStore, tmp_path: Path) -> None:
    store = ScopedStore(local, "xfer")
    src = tmp_path / "small.bin"
    sha = _random_file(src, 300_000)
    with TransferClient() as xfer:
        xfer.put_file(store.presign_put("small.bin", expires_in=60, size=300_000, sha256=sha),
                      src)
        dest = tmp_path / "small.out"
        digest = Digest()
        xfer.get_file(store.presign_get("small.bin", expires_in=60), dest, digest=digest)
    assert _sha(dest) == sha and digest.hexdigest == sha


def test_expired_url_is_refreshed_not_fatal(local: LocalStore, tmp_path: Path) -> None:
    # A store identical to the served one (same signing key) whose clock is in the past, so
    # the URL it signs has a valid signature but has already expired when it arrives.
    past = LocalStore(Path(local.bucket), public_url=local._base.split("/blob/")[0],
                      instance_secret=b"unused", clock=lambda: 1_000_000_000.0)
    past._sign_key = local._sign_key
    src = tmp_path / "f.bin"
    src.write_bytes(b"refresh me")
    stale = past.presign_put("xfer/refresh.bin", expires_in=60)
    calls: list[int] = []

    def refresh() -> PresignedRequest:
        calls.append(1)
        return local.presign_put("xfer/refresh.bin", expires_in=60)

    with TransferClient(TransferConfig(max_attempts=3)) as xfer:
        with pytest.raises(UrlExpired):
            xfer.put_file(stale, src)
        assert local.head("xfer/refresh.bin") is None
        xfer.put_file(stale, src, refresh=refresh)
    assert calls == [1]
    assert local.get_bytes("xfer/refresh.bin") == b"refresh me"


class _Flaky(BaseHTTPRequestHandler):
    fail_first = 2
    seen: list[str] = []
    stored: dict[str, bytes] = {}
    lock = threading.Lock()

    def log_message(self, *args: object) -> None:
        pass

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            self.seen.append(self.path)
            failing = len(self.seen) <= self.fail_first
        if failing:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.stored[self.path] = body
        self.send_response(200)
        self.send_header("ETag", '"abc"')
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_retries_5xx_with_backoff(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        src = tmp_path / "x.bin"
        src.write_bytes(b"x" * 5000)
        url = f"http://127.0.0.1:{server.server_address[1]}/obj"
        req = PresignedRequest(url, "PUT", {}, datetime.now(UTC) + timedelta(minutes=5))
        with TransferClient(TransferConfig(backoff_base=0.01)) as xfer:
            assert xfer.put_file(req, src) == "abc"
    finally:
        server.shutdown()
        server.server_close()
    assert _Flaky.seen == ["/obj", "/obj", "/obj"]
    assert _Flaky.stored["/obj"] == b"x" * 5000


def test_batch_refresher_asks_once_for_many_and_hands_each_url_out_once() -> None:
    from datetime import UTC, datetime, timedelta

    from satchel.sdk.transfer import BatchRefresher

    asked: list[list[str]] = []
    now = datetime.now(UTC)

    def fetch(keys: list[str]) -> dict[str, PresignedRequest]:
        asked.append(list(keys))
        return {k: PresignedRequest(f"http://x/{k}/{len(asked)}", "PUT", {},
                                    now + timedelta(minutes=10)) for k in keys}

    refresher = BatchRefresher(fetch, ["a", "b", "c", "d"], batch=3)
    refresher.done("d")  # finished objects are not asked for
    assert refresher("b").url == "http://x/b/1"
    assert asked == [["b", "a", "c"]]
    assert refresher("a").url == "http://x/a/1"  # from the batch: no server call
    assert refresher("a").url == "http://x/a/2"  # a second refresh of a: fetched again
    # ... along with b (still outstanding, its URL handed out); not c (fresh in the batch).
    assert asked[1] == ["a", "b"]
    assert (refresher.fetches, refresher.refreshed) == (2, 3)


def test_an_already_expired_url_is_refreshed_before_anything_is_sent(
        local: LocalStore, tmp_path: Path) -> None:
    """The URL says it has expired (client clock): refresh first, send the body once."""
    past = LocalStore(Path(local.bucket), public_url=local._base.split("/blob/")[0],
                      instance_secret=b"unused", clock=lambda: 1_000_000_000.0)
    past._sign_key = local._sign_key
    src = tmp_path / "f.bin"
    src.write_bytes(b"proactive")
    stale = past.presign_put("xfer/proactive.bin", expires_in=60)
    sent: list[str] = []

    def refresh() -> PresignedRequest:
        sent.append("refresh")
        return local.presign_put("xfer/proactive.bin", expires_in=60)

    # A client whose clock agrees with the stale URL does send it, and the bucket refuses it.
    with TransferClient(TransferConfig(max_attempts=1, clock=lambda: 999_999_000.0)) as xfer, \
            pytest.raises(UrlExpired):
        xfer.put_file(stale, src)
    with TransferClient(TransferConfig(max_attempts=1)) as xfer:
        xfer.put_file(stale, src, refresh=refresh)  # one attempt suffices: refreshed first
    assert sent == ["refresh"]
    assert local.get_bytes("xfer/proactive.bin") == b"proactive"


class _CutRanges(BaseHTTPRequestHandler):
    """Serves ``blob`` with Range support; the first answer for each range is cut off half
    way (the connection drops), so every range is retried once."""

    blob = b""
    served: dict[str, int] = {}

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        rng = self.headers.get("Range", "")
        start, end = (int(x) for x in rng.removeprefix("bytes=").split("-"))
        body = self.blob[start:end + 1]
        first = _CutRanges.served.get(rng, 0) == 0
        _CutRanges.served[rng] = _CutRanges.served.get(rng, 0) + 1
        self.send_response(206)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(self.blob)}")
        self.end_headers()
        self.wfile.write(body[:len(body) // 2] if first else body)
        if first:
            self.close_connection = True


def test_ranges_retried_mid_stream_still_hash_right(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    _CutRanges.blob = os.urandom(9 * MiB + 77)
    _CutRanges.served = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CutRanges)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        req = PresignedRequest(f"http://127.0.0.1:{server.server_address[1]}/obj", "GET", {},
                               datetime.now(UTC) + timedelta(minutes=5))
        digest = Digest()
        with TransferClient(TransferConfig(max_workers=3, range_threshold=1 * MiB,
                                           range_size=2 * MiB, backoff_base=0.01)) as xfer:
            got = xfer.get_file(req, tmp_path / "o.bin", size=len(_CutRanges.blob),
                                digest=digest)
    finally:
        server.shutdown()
        server.server_close()
    assert got == len(_CutRanges.blob)
    assert all(n == 2 for n in _CutRanges.served.values()) and len(_CutRanges.served) == 5
    assert digest.hexdigest == hashlib.sha256(_CutRanges.blob).hexdigest()
    assert (tmp_path / "o.bin").read_bytes() == _CutRanges.blob
