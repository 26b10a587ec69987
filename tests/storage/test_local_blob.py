"""The local bucket's blob endpoint, over real HTTP, the way a client of presigned URLs sees it.

Each test gets its own bucket whose clock the test controls (``LocalStore(clock=...)``),
registered with the running server. Every refusal must come back in the one JSON error shape and
leave the bucket byte-for-byte as it was, with no temp file behind in ``.satchel/tmp``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from satchel.config import Settings
from satchel.errors import InvalidKey
from satchel.server.app import build_context, create_app
from satchel.server.deps import AppContext
from satchel.storage.base import PresignedRequest
from satchel.storage.local import LocalStore, SignedParams
from tests.live import free_port, serve_in_thread
from tests.storage.conformance import send, swap_key, tamper_signature

T0 = 2_000_000_000  # 2033: far from the real clock, so only the injected clock can matter
MiB = 1024 * 1024


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Live:
    url: str
    ctx: AppContext


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    home = tmp_path_factory.mktemp("blob-home")
    port = free_port()
    settings = Settings(home=home, secret_key=secrets.token_urlsafe(32),
                        base_url=f"http://127.0.0.1:{port}",
                        database_url=f"sqlite:///{home / 'db.sqlite'}")
    ctx = build_context(settings)
    with serve_in_thread(create_app(settings, context=ctx), port) as url:
        yield Live(url, ctx)
    ctx.db.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _register(live: Live, root: Path, clock: FakeClock) -> LocalStore:
    store = LocalStore(root, public_url=live.url, instance_secret=live.ctx.instance_secret,
                       clock=clock)
    live.ctx.local_stores[store.store_id] = store
    return store


@pytest.fixture
def store(live: Live, tmp_path: Path, clock: FakeClock) -> Iterator[LocalStore]:
    s = _register(live, tmp_path / "bucket", clock)
    yield s
    del live.ctx.local_stores[s.store_id]


@pytest.fixture
def other_store(live: Live, tmp_path: Path, clock: FakeClock) -> Iterator[LocalStore]:
    s = _register(live, tmp_path / "other-bucket", clock)
    yield s
    del live.ctx.local_stores[s.store_id]


@pytest.fixture
def access_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="satchel.access")
    return caplog


# --------------------------------------------------------------------------- helpers


def root_of(store: LocalStore) -> Path:
    return Path(store.bucket)


def snapshot(store: LocalStore) -> dict[str, bytes]:
    """Every file in the bucket directory, Satchel's own .satchel/ area included."""
    root = root_of(store)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def temp_files(store: LocalStore) -> list[str]:
    return sorted(p.name for p in (root_of(store) / ".satchel" / "tmp").iterdir())


def assert_error(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, (resp.status_code, resp.text[:300])
    assert resp.headers["content-type"].startswith("application/json")
    error = resp.json()["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)


def with_query(url: str, **changes: str | None) -> str:
    """The URL with query parameters replaced (value) or removed (None)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    for name, value in changes.items():
        if value is None:
            query.pop(name, None)
        else:
            query[name] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


def swap_store(url: str, old_id: str, new_id: str) -> str:
    assert f"/blob/{old_id}/" in url
    return url.replace(f"/blob/{old_id}/", f"/blob/{new_id}/", 1)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- expiry


def test_presigned_urls_work_until_they_expire(store: LocalStore, clock: FakeClock) -> None:
    data = os.urandom(1000)
    put = store.presign_put("runs/r1/a.bin", expires_in=60, size=len(data), sha256=sha(data))
    assert put.expires_at == datetime.fromtimestamp(T0 + 60, tz=UTC)
    clock.now = T0 + 59
    assert send(put, data).status_code == 200

    get = store.presign_get("runs/r1/a.bin", expires_in=60)
    head = store.presign_head("runs/r1/a.bin", expires_in=60)
    clock.now = T0 + 59 + 59
    assert send(get).content == data
    assert send(head).status_code == 200

    clock.now = T0 + 59 + 61
    assert_error(send(get), 403, "url_expired")
    assert send(head).status_code == 403
    # The upload URL has long expired too: a late upload changes nothing.
    before = snapshot(store)
    resp = send(put, os.urandom(1000))
    assert_error(resp, 403, "url_expired")
    assert snapshot(store) == before
    assert store.get_bytes("runs/r1/a.bin") == data


# --------------------------------------------------------------------------- refused uploads

EVIL = b"evil bytes that must never land"


def _tampered(kind: str, store: LocalStore, other: LocalStore, clock: FakeClock
              ) -> tuple[str, str, bytes, str]:
    """(method, url, body, expected error code) for one way of misusing an upload URL."""
    good = store.presign_put("target.bin", expires_in=300, size=len(EVIL), sha256=sha(EVIL))
    if kind == "signature":
        return "PUT", tamper_signature(good.url), EVIL, "signature_invalid"
    if kind == "no signature":
        return "PUT", with_query(good.url, **{"X-Satchel-Signature": None}), EVIL, \
            "signature_invalid"
    if kind == "expiry extended":
        return "PUT", with_query(good.url, **{"X-Satchel-Expires": str(T0 + 10**6)}), EVIL, \
            "signature_invalid"
    if kind == "size altered":
        body = EVIL + b"!"
        return "PUT", with_query(good.url, **{"X-Satchel-Size": str(len(body))}), body, \
            "signature_invalid"
    if kind == "size removed":
        return "PUT", with_query(good.url, **{"X-Satchel-Size": None}), EVIL, "signature_invalid"
    if kind == "sha256 altered":
        body = EVIL.upper()
        return "PUT", with_query(good.url, **{"X-Satchel-Sha256": sha(body)}), body, \
            "signature_invalid"
    if kind == "sha256 removed":
        return "PUT", with_query(good.url, **{"X-Satchel-Sha256": None}), EVIL, \
            "signature_invalid"
    if kind == "other key":
        return "PUT", swap_key(good.url, "target.bin", "victim.bin"), EVIL, "signature_invalid"
    if kind == "other store":
        return "PUT", swap_store(good.url, store.store_id, other.store_id), EVIL, \
            "signature_invalid"
    if kind == "GET URL used to PUT":
        return "PUT", store.presign_get("victim.bin", expires_in=300).url, EVIL, \
            "signature_invalid"
    if kind == "HEAD URL used to PUT":
        return "PUT", store.presign_head("victim.bin", expires_in=300).url, EVIL, \
            "signature_invalid"
    if kind == "expired":
        clock.now = T0 + 301
        return "PUT", good.url, EVIL, "url_expired"
    raise AssertionError(kind)


TAMPERING = ["signature", "no signature", "expiry extended", "size altered", "size removed",
             "sha256 altered", "sha256 removed", "other key", "other store",
             "GET URL used to PUT", "HEAD URL used to PUT", "expired"]


@pytest.mark.parametrize("kind", TAMPERING)
def test_misused_upload_url_is_refused_and_writes_nothing(
    kind: str, store: LocalStore, other_store: LocalStore, clock: FakeClock
) -> None:
    store.put_bytes("victim.bin", b"original")
    before, before_other = snapshot(store), snapshot(other_store)
    method, url, body, code = _tampered(kind, store, other_store, clock)
    with httpx.Client(timeout=60) as http:
        resp = http.request(method, url, content=body)
    assert_error(resp, 403, code)
    assert snapshot(store) == before
    assert snapshot(other_store) == before_other
    assert temp_files(store) == [] and temp_files(other_store) == []
    assert store.head("target.bin") is None
    assert store.get_bytes("victim.bin") == b"original"


# --------------------------------------------------------------------------- refused downloads


def _misused_download(kind: str, store: LocalStore, clock: FakeClock) -> tuple[str, str, str]:
    get = store.presign_get("mine.bin", expires_in=300, download_name="mine.bin")
    if kind == "signature":
        return "GET", tamper_signature(get.url), "signature_invalid"
    if kind == "filename altered":
        return "GET", with_query(get.url, filename="evil.exe"), "signature_invalid"
    if kind == "other key":
        return "GET", swap_key(get.url, "mine.bin", "secret.bin"), "signature_invalid"
    if kind == "PUT URL used to GET":
        put = store.presign_put("secret.bin", expires_in=300)
        return "GET", put.url, "signature_invalid"
    if kind == "HEAD URL used to GET":
        return "GET", store.presign_head("secret.bin", expires_in=300).url, "signature_invalid"
    if kind == "expired":
        clock.now = T0 + 301
        return "GET", get.url, "url_expired"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["signature", "filename altered", "other key",
                                  "PUT URL used to GET", "HEAD URL used to GET", "expired"])
def test_misused_download_url_is_refused(kind: str, store: LocalStore, clock: FakeClock
                                         ) -> None:
    store.put_bytes("mine.bin", b"mine")
    store.put_bytes("secret.bin", b"top secret contents")
    method, url, code = _misused_download(kind, store, clock)
    with httpx.Client(timeout=60) as http:
        resp = http.request(method, url)
    assert_error(resp, 403, code)
    assert b"top secret" not in resp.content
    assert "content-disposition" not in resp.headers


def test_get_url_cannot_head_and_head_url_cannot_get(store: LocalStore) -> None:
    store.put_bytes("h.bin", b"12345")
    get = store.presign_get("h.bin", expires_in=60)
    head = store.presign_head("h.bin", expires_in=60)
    assert send(get, method="HEAD").status_code == 403
    assert_error(send(head, method="GET"), 403, "signature_invalid")


# --------------------------------------------------------------------------- checksums


@pytest.mark.parametrize(("declared", "body"), [
    (10, b"123456789"),                  # shorter than declared
    (10, b"12345678901"),                # longer than declared
    (0, b"x"),
    (MiB, os.urandom(3 * MiB)),          # far longer: refused while streaming
])
def test_body_size_must_match_declared_size(store: LocalStore, declared: int, body: bytes
                                            ) -> None:
    put = store.presign_put("sized.bin", expires_in=60, size=declared)
    before = snapshot(store)
    resp = send(put, body)
    assert_error(resp, 400, "checksum_mismatch")
    assert snapshot(store) == before
    assert temp_files(store) == []


def test_sha256_mismatch_is_refused_and_writes_nothing(store: LocalStore) -> None:
    data = b"the bytes the client promised"
    put = store.presign_put("c.bin", expires_in=60, size=len(data), sha256=sha(data))
    before = snapshot(store)
    resp = send(put, data.replace(b"promised", b"delivered"[:8]))
    assert_error(resp, 400, "checksum_mismatch")
    assert snapshot(store) == before
    assert temp_files(store) == []
    # The same URL still works with the right bytes.
    assert send(put, data).status_code == 200
    assert store.get_bytes("c.bin") == data


def test_declared_sha256_is_served_back(store: LocalStore) -> None:
    data = os.urandom(4096)
    assert send(store.presign_put("s.bin", expires_in=60, size=len(data), sha256=sha(data)),
                data).status_code == 200
    got = send(store.presign_get("s.bin", expires_in=60))
    assert got.content == data
    if "x-satchel-sha256" in got.headers:  # only where the filesystem keeps user xattrs
        assert got.headers["x-satchel-sha256"] == sha(data)


# --------------------------------------------------------------------------- interrupted uploads


def _wait_for_access_log(caplog: pytest.LogCaptureFixture, method: str, path: str) -> str:
    """The server's access-log line for a request, once the server has finished handling it."""
    deadline = time.monotonic() + 30  # hang guard only
    while time.monotonic() < deadline:
        for record in caplog.records:
            message = record.getMessage()
            if record.name == "satchel.access" and message.startswith(f"{method} {path} "):
                return message
        time.sleep(0.02)
    raise AssertionError(f"the server never finished {method} {path}")


@pytest.mark.parametrize("sent", ["half the bytes", "every declared byte"])
def test_client_that_disconnects_midway_leaves_nothing(
    store: LocalStore, access_log: pytest.LogCaptureFixture, sent: str
) -> None:
    store.put_bytes("big.bin", b"previous version")
    data = os.urandom(3 * MiB)
    put = store.presign_put("big.bin", expires_in=60, size=len(data), sha256=sha(data))
    cut = len(data) // 2 if sent == "half the bytes" else len(data)

    def body() -> Iterator[bytes]:
        for i in range(0, cut, 256 * 1024):
            yield data[i:min(i + 256 * 1024, cut)]
        raise ConnectionAbortedError("client crashed")

    with pytest.raises((ConnectionAbortedError, httpx.HTTPError)):
        send(put, body())
    line = _wait_for_access_log(access_log, "PUT", urlsplit(put.url).path)
    # An interrupted upload is a client-side event: no 5xx, no error with a traceback.
    assert line.split()[2].startswith("4"), line
    assert not [r for r in access_log.records if r.levelno >= logging.ERROR]
    assert store.get_bytes("big.bin") == b"previous version"
    assert temp_files(store) == []
    assert set(snapshot(store)) == {"big.bin"}


# --------------------------------------------------------------------------- ranges and HEAD


@pytest.fixture
def ten_k(store: LocalStore) -> bytes:
    data = os.urandom(10_000)
    store.put_bytes("r.bin", data)
    return data


@pytest.mark.parametrize(("header", "start", "end"), [
    ("bytes=100-199", 100, 199),
    ("bytes=0-0", 0, 0),
    ("bytes=-100", 9900, 9999),        # suffix: the last 100 bytes
    ("bytes=9990-", 9990, 9999),       # open-ended
    ("bytes=9990-20000", 9990, 9999),  # end past the object: clamped
])
def test_single_range_gets_206(store: LocalStore, ten_k: bytes, header: str, start: int,
                               end: int) -> None:
    got = send(store.presign_get("r.bin", expires_in=60), headers={"Range": header})
    assert got.status_code == 206
    assert got.content == ten_k[start:end + 1]
    assert got.headers["content-range"] == f"bytes {start}-{end}/10000"


@pytest.mark.parametrize("header", ["bytes=10000-", "bytes=10000-10005", "bytes=20000-30000",
                                    "bytes=-0"])
def test_range_beyond_the_object_is_416(store: LocalStore, ten_k: bytes, header: str) -> None:
    got = send(store.presign_get("r.bin", expires_in=60), headers={"Range": header})
    assert_error(got, 416, "range_not_satisfiable")
    assert got.json()["error"]["details"]["size"] == 10_000


@pytest.mark.parametrize("header", ["bytes=0-", "bytes=-5"])
def test_any_range_of_an_empty_object_is_416(store: LocalStore, header: str) -> None:
    store.put_bytes("empty.bin", b"")
    got = send(store.presign_get("empty.bin", expires_in=60), headers={"Range": header})
    assert_error(got, 416, "range_not_satisfiable")
    assert got.json()["error"]["details"]["size"] == 0
    assert send(store.presign_get("empty.bin", expires_in=60)).status_code == 200


def test_suffix_longer_than_the_object_returns_all_of_it(store: LocalStore, ten_k: bytes
                                                         ) -> None:
    got = send(store.presign_get("r.bin", expires_in=60), headers={"Range": "bytes=-20000"})
    assert got.status_code == 206
    assert got.content == ten_k


def test_head_with_a_head_url(store: LocalStore, ten_k: bytes) -> None:
    resp = send(store.presign_head("r.bin", expires_in=60))
    assert resp.status_code == 200
    assert resp.content == b""
    assert int(resp.headers["content-length"]) == 10_000
    assert resp.headers["etag"]
    missing = send(store.presign_head("nope.bin", expires_in=60))
    assert missing.status_code == 404


def test_get_of_a_missing_key_is_404_json(store: LocalStore) -> None:
    assert_error(send(store.presign_get("nope.bin", expires_in=60)), 404, "not_found")


def test_unknown_store_id_is_404(store: LocalStore) -> None:
    store.put_bytes("x.bin", b"x")
    get = store.presign_get("x.bin", expires_in=60)
    resp = send(get, url=swap_store(get.url, store.store_id, "0" * 16))
    assert_error(resp, 404, "not_found")


# --------------------------------------------------------------------------- reserved keys


@pytest.mark.parametrize("key", [".satchel/tmp/evil", ".satchel/multipart/x/meta.json",
                                 ".satchel"])
def test_keys_under_dot_satchel_cannot_be_presigned(store: LocalStore, key: str) -> None:
    with pytest.raises(InvalidKey):
        store.presign_put(key, expires_in=60, size=1)
    with pytest.raises(InvalidKey):
        store.presign_get(key, expires_in=60)
    with pytest.raises(InvalidKey):
        store.put_bytes(key, b"x")


def _forge(store: LocalStore, method: str, key: str, clock: FakeClock) -> PresignedRequest:
    """A correctly signed URL for a key the public API refuses to sign (a bug elsewhere)."""
    return store._presign(SignedParams(method, key, int(clock()) + 60))


@pytest.mark.parametrize("key", [".satchel/tmp/planted", ".satchel/multipart/abc/00001",
                                 "a/../../outside.bin"])
def test_blob_endpoint_refuses_reserved_and_escaping_keys_even_if_signed(
    store: LocalStore, clock: FakeClock, key: str
) -> None:
    before = snapshot(store)
    put = _forge(store, "PUT", key, clock)
    url = put.url.replace("/../", "/%2e%2e/")  # keep the client from normalising the path
    with httpx.Client(timeout=60) as http:
        resp = http.put(url, content=b"planted")
    assert 400 <= resp.status_code < 500
    assert resp.json()["error"]["code"] in {"invalid_key", "signature_invalid", "not_found"}
    assert snapshot(store) == before
    assert not (root_of(store).parent / "outside.bin").exists()


def test_internal_files_are_never_listed_or_served(store: LocalStore, clock: FakeClock) -> None:
    (root_of(store) / ".satchel" / "tmp" / "leftover").write_bytes(b"internal")
    store.put_bytes("visible.bin", b"v")
    assert [o.key for o in store.list_page("").objects] == ["visible.bin"]
    resp = send(_forge(store, "GET", ".satchel/tmp/leftover", clock))
    assert_error(resp, 400, "invalid_key")
    assert b"internal" not in resp.content


# --------------------------------------------------------------------------- downloads


@pytest.mark.parametrize(("name", "header"), [
    ("model.pt", "attachment; filename*=UTF-8''model.pt"),
    ("model weights ü.pt", "attachment; filename*=UTF-8''model%20weights%20%C3%BC.pt"),
    ('a"b;c.txt', "attachment; filename*=UTF-8''a%22b%3Bc.txt"),
])
def test_download_name_sets_content_disposition(store: LocalStore, name: str, header: str
                                                ) -> None:
    store.put_bytes("obj/1234", b"weights")
    got = send(store.presign_get("obj/1234", expires_in=60, download_name=name))
    assert got.status_code == 200
    assert got.content == b"weights"
    assert got.headers["content-disposition"] == header


def test_download_name_cannot_inject_headers(store: LocalStore) -> None:
    store.put_bytes("obj/1", b"weights")
    got = send(store.presign_get("obj/1", expires_in=60,
                                 download_name="x.pt\r\nX-Injected: yes"))
    assert got.status_code == 200
    assert "x-injected" not in got.headers
    assert "\r" not in got.headers["content-disposition"]
    assert "\n" not in got.headers["content-disposition"]


def test_plain_get_has_no_content_disposition(store: LocalStore) -> None:
    store.put_bytes("obj/2", b"weights")
    got = send(store.presign_get("obj/2", expires_in=60))
    assert got.status_code == 200
    assert "content-disposition" not in got.headers


# --------------------------------------------------------------------------- overwrite


def test_same_key_put_twice_replaces_atomically(store: LocalStore) -> None:
    v1, v2 = os.urandom(8 * MiB), os.urandom(3 * MiB)
    put1 = store.presign_put("model.bin", expires_in=60, size=len(v1), sha256=sha(v1))
    assert send(put1, v1).status_code == 200

    # A download already under way while the new version lands still gets the whole old file.
    with httpx.Client(timeout=60) as http, \
            http.stream("GET", store.presign_get("model.bin", expires_in=60).url) as reading:
        assert reading.status_code == 200
        chunks = reading.iter_bytes()
        first = next(chunks)
        put2 = store.presign_put("model.bin", expires_in=60, size=len(v2), sha256=sha(v2))
        assert send(put2, v2).status_code == 200
        old = first + b"".join(chunks)
    assert sha(old) == sha(v1)

    assert send(store.presign_get("model.bin", expires_in=60)).content == v2
    assert set(snapshot(store)) == {"model.bin"}
    assert temp_files(store) == []

    # A failed third upload leaves the second version in place.
    bad = store.presign_put("model.bin", expires_in=60, size=4, sha256=sha(b"good"))
    assert_error(send(bad, b"evil"), 400, "checksum_mismatch")
    assert store.get_bytes("model.bin") == v2
    assert temp_files(store) == []


def test_upload_creates_parent_directories_as_plain_files(store: LocalStore) -> None:
    data = b"by hand"
    put = store.presign_put("team/project/run/file.txt", expires_in=60, size=len(data))
    assert send(put, data).status_code == 200
    assert (root_of(store) / "team/project/run/file.txt").read_bytes() == data
