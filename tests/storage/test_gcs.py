"""The GCS provider against fake-gcs-server behind the signature-verifying proxy.

Every test here runs with a socket guard: a connection to anything but the loopback interface
fails the test, so nothing (token refresh, metadata server, storage.googleapis.com) leaves the
machine.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from google.cloud.storage._signing import generate_signed_url_v4
from google.oauth2 import service_account

from satchel.errors import (
    InvalidInput,
    InvalidKey,
    InvalidStorageAddress,
    NotFound,
    PermissionDenied,
    StorageUnavailable,
)
from satchel.storage.base import CompletedPart, MultipartUpload
from satchel.storage.gcs import PART_SIZE, GcsStore
from satchel.storage.gcs_signing import (
    ServiceAccountKey,
    SignItem,
    V4Signer,
    parse_service_account,
)
from satchel.storage.registry import StoreContext, open_store
from tests.live import free_port
from tests.storage.conformance import StoreConformance
from tests.storage.servers.fakegcs import FakeGcsServer, ServiceAccount

CONTEXT = StoreContext(public_url="http://127.0.0.1:8080", instance_secret=b"s" * 32)
MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = str(address[0])
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                raise AssertionError(f"a GCS test tried to connect to {host}")
        real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(scope="module")
def bucket(fake_gcs: FakeGcsServer) -> str:
    return fake_gcs.create_bucket()


@pytest.fixture
def gcs(fake_gcs: FakeGcsServer, bucket: str) -> GcsStore:
    store = open_store(fake_gcs.address(bucket), CONTEXT)
    assert isinstance(store, GcsStore)
    return store


def _code(resp: httpx.Response) -> str:
    """The GCS error code of an XML or JSON error body."""
    match = re.search(r"<Code>([^<]+)</Code>", resp.text)
    if match:
        return match.group(1)
    try:
        return str(resp.json()["error"]["errors"][0]["reason"])
    except (ValueError, KeyError, IndexError):
        return ""


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324


class TestGcsConformance(StoreConformance):
    """All conformance tests run; none is skipped (GCS verifies MD5, so the wrong-checksum
    test uses Content-MD5; parts are sequential, so the multipart test sends them in order)."""

    expiry_wait = 2.5  # X-Goog-Date has one-second resolution

    @pytest.fixture
    def raw_store(self, fake_gcs: FakeGcsServer, bucket: str) -> GcsStore:
        store = open_store(fake_gcs.address(bucket), CONTEXT)
        assert isinstance(store, GcsStore)
        return store


# --------------------------------------------------------------------------- signing


def test_capabilities_match_what_gcs_enforces(gcs: GcsStore) -> None:
    caps = gcs.capabilities
    assert caps.verifies_md5 and not caps.verifies_sha256
    assert caps.sequential_parts and caps.multipart and caps.needs_cors
    assert caps.min_part_size == caps.max_part_size == PART_SIZE
    assert PART_SIZE % (256 * 1024) == 0  # resumable chunks must be 256 KiB multiples


def test_signed_urls_are_byte_identical_to_google_cloud_storage(
    fake_gcs: FakeGcsServer, bucket: str
) -> None:
    acct = fake_gcs.account
    sa = parse_service_account(acct.email, acct.pem)
    signer = V4Signer(acct.email, sa.sign, fake_gcs.url, bucket)
    creds = service_account.Credentials.from_service_account_info(json.loads(acct.key_json()))
    now = 1_800_000_000  # 2027-01-15T08:00:00Z
    cases = [
        ("GET", "plain/file.bin", {}, {}),
        ("GET", "dl/w.pt", {}, {"response-content-disposition": 'attachment; filename="a b.pt"'}),
        ("HEAD", "h/ü nicode ~key+1.txt", {}, {}),
        ("PUT", "up/x.bin", {"Content-Length": "12", "Content-MD5": _md5(b"x" * 12),
                             "Content-Type": "application/octet-stream"}, {}),
    ]
    for method, key, headers, query in cases:
        ours = signer.sign_many([SignItem(method, key, {}, query, dict(headers))], now=now,
                                expires_in=600)[0]
        reference = generate_signed_url_v4(
            creds, f"/{bucket}/{quote(key, safe='/~')}", timedelta(seconds=600),
            api_access_endpoint=fake_gcs.url, method=method, headers=dict(headers),
            query_parameters=dict(query), _request_timestamp="20270115T080000Z",
        )
        assert ours.url == reference, method
        assert ours.expires_at.timestamp() == now + 600


def test_proxy_accepts_urls_signed_by_the_google_sdk(fake_gcs: FakeGcsServer, bucket: str,
                                                     gcs: GcsStore) -> None:
    """The proxy is checked against Google's own signer, not only against ours."""
    gcs.put_bytes("sdk/obj.txt", b"from the sdk")
    creds = service_account.Credentials.from_service_account_info(
        json.loads(fake_gcs.account.key_json()))
    client_blob = gcs._bucket().blob("sdk/obj.txt")
    url = client_blob.generate_signed_url(version="v4", expiration=timedelta(minutes=5),
                                          api_access_endpoint=fake_gcs.url, credentials=creds)
    resp = httpx.get(url)
    assert resp.status_code == 200 and resp.content == b"from the sdk"
    intruder = ServiceAccount.generate(fake_gcs.account.email)  # same email, other key
    forged = client_blob.generate_signed_url(
        version="v4", expiration=timedelta(minutes=5), api_access_endpoint=fake_gcs.url,
        credentials=service_account.Credentials.from_service_account_info(
            json.loads(intruder.key_json())))
    resp = httpx.get(forged)
    assert resp.status_code == 403 and _code(resp) == "SignatureDoesNotMatch"


def test_presign_many_signs_each_key_like_presign_put(fake_gcs: FakeGcsServer, bucket: str
                                                      ) -> None:
    sa = parse_service_account(fake_gcs.account.email, fake_gcs.account.pem)
    fixed = time.time()
    store = GcsStore(bucket, service_account_key=sa, endpoint=fake_gcs.url, clock=lambda: fixed)
    items = [(f"many/{i}.bin", 3 + i, None) for i in range(3)]
    batch = store.presign_put_many(items, expires_in=300)
    assert [r.url for r in batch] == [
        store.presign_put(k, expires_in=300, size=s).url for k, s, _ in items
    ]
    for (key, size, _), req in zip(items, batch, strict=True):
        assert httpx.put(req.url, content=b"z" * size, headers=req.headers).status_code == 200
        assert store.get_bytes(key) == b"z" * size
    gets = store.presign_get_many([k for k, _, _ in items], expires_in=300)
    assert [httpx.get(g.url).content for g in gets] == [b"z" * s for _, s, _ in items]


# --------------------------------------------------------------------------- the proxy checks


@pytest.fixture
def kept(gcs: GcsStore) -> Iterator[str]:
    key = f"proxy/keep-{os.urandom(4).hex()}.bin"
    gcs.put_bytes(key, b"keep")
    yield key
    gcs.delete_many([key])


def _store(fake_gcs: FakeGcsServer, bucket: str, *, key: rsa.RSAPrivateKey | None = None,
           email: str | None = None, clock: Any = time.time) -> GcsStore:
    acct = fake_gcs.account
    sa = ServiceAccountKey(email or acct.email, key or acct.private_key)
    return GcsStore(bucket, service_account_key=sa, endpoint=fake_gcs.url, clock=clock)


def test_proxy_rejects_tampered_query_and_path(gcs: GcsStore, kept: str) -> None:
    good = gcs.presign_get(kept, expires_in=300)
    assert httpx.get(good.url).content == b"keep"  # the untouched URL works
    longer = good.url.replace("X-Goog-Expires=300", "X-Goog-Expires=3000")
    assert longer != good.url
    resp = httpx.get(longer)
    assert resp.status_code == 403 and _code(resp) == "SignatureDoesNotMatch"
    resp = httpx.get(good.url + "&generation=1")  # an added, unsigned parameter
    assert resp.status_code == 403 and _code(resp) == "SignatureDoesNotMatch"
    resp = httpx.get(good.url.replace("/proxy/keep-", "/proxy/Keep-"))
    assert resp.status_code == 403 and _code(resp) == "SignatureDoesNotMatch"


def test_proxy_accepts_only_the_exact_signature(gcs: GcsStore, kept: str) -> None:
    url = gcs.presign_get(kept, expires_in=300).url
    prefix, _, signature = url.rpartition("X-Goog-Signature=")
    assert re.fullmatch(r"[0-9a-f]{512}", signature)  # RSA-2048, lowercase hex
    assert httpx.get(url).status_code == 200
    for forged in (signature.upper(), signature[:-2], signature + "00",
                   signature[:100] + ("0" if signature[100] != "0" else "1") + signature[101:]):
        resp = httpx.get(prefix + "X-Goog-Signature=" + forged)
        assert resp.status_code == 403, forged[:8]


def test_proxy_rejects_other_key_and_unknown_account(fake_gcs: FakeGcsServer, bucket: str,
                                                     kept: str) -> None:
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    resp = httpx.get(_store(fake_gcs, bucket, key=other_key).presign_get(kept, expires_in=60).url)
    assert resp.status_code == 403 and _code(resp) == "SignatureDoesNotMatch"
    stranger = _store(fake_gcs, bucket, email="nobody@elsewhere.iam.gserviceaccount.com")
    resp = httpx.get(stranger.presign_get(kept, expires_in=60).url)
    assert resp.status_code == 403 and _code(resp) == "AccessDenied"


def test_proxy_enforces_expiry_and_date_by_the_signing_clock(fake_gcs: FakeGcsServer,
                                                             bucket: str, kept: str) -> None:
    # Signed an hour ago for one minute: expired, without sleeping.
    past = _store(fake_gcs, bucket, clock=lambda: time.time() - 3600)
    resp = httpx.get(past.presign_get(kept, expires_in=60).url)
    assert resp.status_code == 403 and _code(resp) == "ExpiredToken"
    # Signed an hour ago for two hours: still valid.
    assert httpx.get(past.presign_get(kept, expires_in=7200).url).status_code == 200
    future = _store(fake_gcs, bucket, clock=lambda: time.time() + 3600)
    resp = httpx.get(future.presign_get(kept, expires_in=60).url)
    assert resp.status_code == 403 and _code(resp) == "RequestNotYetValid"


def test_proxy_binds_method_and_signed_headers(gcs: GcsStore, kept: str) -> None:
    get = gcs.presign_get(kept, expires_in=300)
    for method in ("PUT", "DELETE", "HEAD", "POST"):
        resp = httpx.request(method, get.url, content=b"evil" if method in {"PUT", "POST"}
                             else None)
        assert resp.status_code == 403, method
    assert gcs.get_bytes(kept) == b"keep"

    put = gcs.presign_put("proxy/new.bin", expires_in=300, size=4, content_type="text/plain")
    assert put.headers == {"Content-Type": "text/plain"}  # Content-Length: signed, implicit
    resp = httpx.put(put.url, content=b"12345", headers={"Content-Type": "text/plain"})
    assert resp.status_code == 403  # a different Content-Length than signed
    resp = httpx.put(put.url, content=b"1234", headers={"Content-Type": "text/html"})
    assert resp.status_code == 403  # a different Content-Type than signed
    resp = httpx.put(put.url, content=b"1234", headers={**put.headers, "x-goog-meta-a": "b"})
    assert resp.status_code == 400  # unsigned x-goog-* headers are refused
    assert gcs.head("proxy/new.bin") is None
    assert httpx.put(put.url, content=b"1234", headers=put.headers).status_code == 200
    assert gcs.get_bytes("proxy/new.bin") == b"1234"


def test_proxy_verifies_content_md5_like_gcs(gcs: GcsStore) -> None:
    put = gcs.presign_put("proxy/md5.bin", expires_in=300, size=3, content_md5=_md5(b"abc"))
    assert put.headers["Content-MD5"] == _md5(b"abc")
    resp = httpx.put(put.url, content=b"abd", headers=put.headers)
    assert resp.status_code == 400 and _code(resp) == "BadDigest"
    resp = httpx.put(put.url, content=b"abc")
    assert resp.status_code == 403  # dropping the signed MD5 header breaks the signature
    assert gcs.head("proxy/md5.bin") is None
    assert httpx.put(put.url, content=b"abc", headers=put.headers).status_code == 200


def test_proxy_requires_a_valid_jwt_on_api_calls(fake_gcs: FakeGcsServer, bucket: str,
                                                 kept: str) -> None:
    api = f"{fake_gcs.url}/storage/v1/b/{bucket}/o"
    assert httpx.get(api).status_code == 401
    assert httpx.get(f"{fake_gcs.url}/{bucket}/{kept}").status_code == 401
    # fake-gcs-server itself would have served both: the proxy is what protects them.
    host = fake_gcs.url.removeprefix("http://")
    direct = httpx.get(f"{fake_gcs.upstream_url}/{bucket}/{kept}", headers={"Host": host})
    assert direct.content == b"keep"
    assert httpx.get(api, headers={"Authorization": "Bearer not.a.jwt"}).status_code == 401


# --------------------------------------------------------------------------- error translation


def test_wrong_key_is_permission_denied_with_a_fix(fake_gcs: FakeGcsServer, bucket: str) -> None:
    wrong = ServiceAccount.generate(fake_gcs.account.email)
    store = open_store(fake_gcs.address(bucket, account=wrong), CONTEXT)
    with pytest.raises(PermissionDenied) as info:
        store.head("anything.bin")
    message = str(info.value)
    assert fake_gcs.account.email in message and "roles/storage.objectAdmin" in message
    assert "PRIVATE KEY" not in message and wrong.pem[40:80] not in message
    with pytest.raises(PermissionDenied):
        store.put_bytes("x.bin", b"x")


def test_account_without_access_to_the_bucket_is_permission_denied(
    fake_gcs: FakeGcsServer, bucket: str
) -> None:
    limited = ServiceAccount.generate()
    fake_gcs.add_account(limited, buckets={"some-other-bucket"})
    store = open_store(fake_gcs.address(bucket, account=limited), CONTEXT)
    with pytest.raises(PermissionDenied, match=limited.email):
        store.list_page("")


def test_missing_bucket_is_not_found_naming_the_bucket(fake_gcs: FakeGcsServer) -> None:
    store = open_store(fake_gcs.address("no-such-bucket-here"), CONTEXT)
    with pytest.raises(NotFound, match="bucket 'no-such-bucket-here' does not exist"):
        store.put_bytes("x.bin", b"x")
    with pytest.raises(NotFound, match="bucket 'no-such-bucket-here' does not exist"):
        store.create_multipart("x.bin")
    with pytest.raises(NotFound, match="bucket 'no-such-bucket-here' does not exist"):
        store.list_page("")


def test_closed_port_is_storage_unavailable(fake_gcs: FakeGcsServer, bucket: str) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    sa = parse_service_account(fake_gcs.account.email, fake_gcs.account.pem)
    store = GcsStore(bucket, service_account_key=sa, endpoint=endpoint, retry_timeout=0.3)
    with pytest.raises(StorageUnavailable, match=re.escape(endpoint)):
        store.head("x.bin")
    with pytest.raises(StorageUnavailable):
        store.put_bytes("x.bin", b"x")
    with pytest.raises(StorageUnavailable):
        store.delete_many(["x.bin"])
    session = f"{endpoint}/upload/storage/v1/b/{bucket}/o?uploadType=resumable&name=k&upload_id=s3"
    with pytest.raises(StorageUnavailable) as info:
        store.complete_multipart(MultipartUpload("k", session), [CompletedPart(1, "", 1)])
    assert "upload_id" not in str(info.value)  # the session URI is a bearer capability


def test_bad_key_in_address_is_reported_without_echoing_it(fake_gcs: FakeGcsServer) -> None:
    secret = "-----BEGIN PRIVATE KEY-----\nnot-really-a-key-9f8e7d\n-----END PRIVATE KEY-----\n"
    with pytest.raises(InvalidStorageAddress) as info:
        open_store(fake_gcs.address("b", key=secret), CONTEXT)
    assert "9f8e7d" not in str(info.value)
    with pytest.raises(InvalidStorageAddress, match="neither a PEM"):
        open_store(fake_gcs.address("b", key="c2VjcmV0"), CONTEXT)


def test_service_account_json_key_works_and_must_match_the_email(
    fake_gcs: FakeGcsServer, bucket: str
) -> None:
    store = open_store(fake_gcs.address(bucket, as_json=True), CONTEXT)
    store.put_bytes("json/key.txt", b"json key")
    assert httpx.get(store.presign_get("json/key.txt", expires_in=60).url).content == b"json key"
    other = ServiceAccount.generate()
    with pytest.raises(InvalidStorageAddress, match="belongs to"):
        parse_service_account(fake_gcs.account.email, other.key_json())


def test_ambient_credentials_from_a_key_file(fake_gcs: FakeGcsServer, bucket: str,
                                             tmp_path: Any, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    key_file = tmp_path / "sa.json"
    key_file.write_text(fake_gcs.account.key_json())
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    store = open_store(f"gs://{bucket}?endpoint={fake_gcs.url}", CONTEXT)
    store.put_bytes("ambient/a.txt", b"ambient")
    assert store.get_bytes("ambient/a.txt") == b"ambient"
    assert httpx.get(store.presign_get("ambient/a.txt", expires_in=60).url).content == b"ambient"


# --------------------------------------------------------------------------- resumable sessions


def _put_part(store: GcsStore, upload: MultipartUpload, n: int, data: bytes) -> httpx.Response:
    req = store.presign_part(upload, n, expires_in=300, size=len(data))
    return httpx.put(req.url, content=data, headers=req.headers, timeout=60)


def test_part_ranges_are_fixed_so_a_resend_is_identical(gcs: GcsStore) -> None:
    upload = gcs.create_multipart("ranges/x.bin")
    try:
        first = gcs.presign_part(upload, 3, expires_in=60, size=10)
        again = gcs.presign_part(upload, 3, expires_in=60, size=10)
        assert first.headers == again.headers == {
            "Content-Range": f"bytes {2 * PART_SIZE}-{2 * PART_SIZE + 9}/{2 * PART_SIZE + 10}",
        }
        middle = gcs.presign_part(upload, 2, expires_in=60)
        assert middle.headers["Content-Range"] == f"bytes {PART_SIZE}-{2 * PART_SIZE - 1}/*"
        with pytest.raises(InvalidInput):
            gcs.presign_part(upload, 1, expires_in=60, size=PART_SIZE + 1)
    finally:
        gcs.abort_multipart(upload)


def test_part_resent_after_a_lost_response_is_not_stored_twice(gcs: GcsStore) -> None:
    data = os.urandom(PART_SIZE + 1000)
    upload = gcs.create_multipart("resend/x.bin")
    assert _put_part(gcs, upload, 1, data[:PART_SIZE]).status_code == 308
    assert _put_part(gcs, upload, 1, data[:PART_SIZE]).status_code == 308  # the client retried
    assert _put_part(gcs, upload, 2, data[PART_SIZE:]).status_code in {200, 201}
    info = gcs.complete_multipart(
        upload, [CompletedPart(1, "", PART_SIZE), CompletedPart(2, "", 1000)])
    assert info.size == len(data)
    assert gcs.get_bytes("resend/x.bin") == data
    assert list(gcs.list_multipart_uploads("resend/")) == []


def test_complete_with_a_missing_part_says_what_is_missing(gcs: GcsStore) -> None:
    data = os.urandom(PART_SIZE + 10)
    upload = gcs.create_multipart("missing/x.bin")
    parts = [CompletedPart(1, "", PART_SIZE), CompletedPart(2, "", 10)]
    assert _put_part(gcs, upload, 1, data[:PART_SIZE]).status_code == 308
    with pytest.raises(InvalidInput, match=f"GCS has {PART_SIZE} of {PART_SIZE + 10} bytes"):
        gcs.complete_multipart(upload, parts)
    assert gcs.head("missing/x.bin") is None
    assert _put_part(gcs, upload, 2, data[PART_SIZE:]).status_code in {200, 201}
    assert gcs.complete_multipart(upload, parts).size == len(data)
    assert gcs.get_bytes("missing/x.bin") == data


def test_abort_cancels_the_session(gcs: GcsStore) -> None:
    upload = gcs.create_multipart("cancel/x.bin")
    gcs.abort_multipart(upload)
    assert _put_part(gcs, upload, 1, b"late").status_code == 404
    assert gcs.head("cancel/x.bin") is None
    gcs.abort_multipart(upload)  # idempotent


def test_upload_markers_are_hidden_and_scoped_by_prefix(gcs: GcsStore) -> None:
    upload = gcs.create_multipart("markers/a/x.bin")
    try:
        gcs.put_bytes("markers/a/y.bin", b"y")
        assert [o.key for o in gcs.list_page("markers/").objects] == ["markers/a/y.bin"]
        assert [u.upload_id for u in gcs.list_multipart_uploads("markers/a/")] == [
            upload.upload_id]
        assert list(gcs.list_multipart_uploads("markers/b/")) == []
        with pytest.raises(InvalidKey):
            gcs.put_bytes("markers/a/x.bin.satchel-upload-0123456789abcdef", b"no")
    finally:
        gcs.abort_multipart(upload)
        gcs.delete_many(["markers/a/y.bin"])
    assert list(gcs.list_multipart_uploads("markers/")) == []


def test_forged_upload_ids_are_refused_without_a_request(gcs: GcsStore, bucket: str) -> None:
    forged = [
        "https://evil.example/upload/storage/v1/b/x/o?upload_id=1",
        f"{gcs._endpoint}/upload/storage/v1/b/other-bucket/o?upload_id=1",
        f"{gcs._endpoint}/upload/storage/v1/b/{bucket}/o?name=other.bin&upload_id=1",
        f"{gcs._endpoint}/storage/v1/b/{bucket}/o/k.bin?upload_id=1",
    ]
    for upload_id in forged:
        upload = MultipartUpload("k.bin", upload_id)
        with pytest.raises(NotFound):
            gcs.presign_part(upload, 1, expires_in=60)
        with pytest.raises(NotFound):
            gcs.abort_multipart(upload)
        with pytest.raises(NotFound):
            gcs.complete_multipart(upload, [CompletedPart(1, "", 1)])
