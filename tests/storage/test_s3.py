"""The S3 provider: conformance against a real SeaweedFS, the SigV4 signer against botocore,
error translation, addressing and SSE-KMS headers.

Two conformance runs:

* ``s3`` path-style over plain HTTP (an S3-compatible endpoint), with SHA-256 enforcement
  proven by :meth:`S3Store.probe_checksum_support`;
* the ``cw`` (CoreWeave) code path: virtual-hosted style over TLS. SeaweedFS serves TLS with a
  per-session CA for ``*.s3.localhost`` (see servers/seaweedfs.py); the test process resolves
  ``*.localhost`` to 127.0.0.1 (RFC 6761) and trusts that CA (``SSL_CERT_FILE`` for httpx,
  ``ca_bundle`` for boto3). Its capabilities stay at the default for unknown stores
  (Content-MD5 only), so this run exercises the MD5 path of the checksum test.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from unittest import mock
from urllib.parse import parse_qsl, urlsplit

import boto3
import httpx
import pytest
from botocore.config import Config

from satchel.errors import InvalidInput, NotFound, PermissionDenied, StorageUnavailable
from satchel.storage.address import parse_address
from satchel.storage.base import Capabilities, MultipartUpload, ObjectStore
from satchel.storage.registry import StoreContext, open_store
from satchel.storage.s3 import S3Store, content_disposition
from satchel.storage.sigv4 import Credentials, SigV4Presigner
from tests.live import free_port
from tests.storage.conformance import StoreConformance, send
from tests.storage.servers.seaweedfs import SeaweedFS, resolve_localhost_names

CONTEXT = StoreContext(public_url="http://127.0.0.1:1", instance_secret=b"x" * 32)
NOW = 1_790_000_000.0  # a fixed signing instant for comparisons with botocore


def s3_store(address: str, **kwargs: Any) -> S3Store:
    return S3Store.from_address(parse_address(address), **kwargs)


@pytest.fixture(scope="module")
def path_store(seaweedfs: SeaweedFS) -> S3Store:
    store = s3_store(seaweedfs.address("satchel-test"))
    store.probe_checksum_support(f"probe/{secrets.token_hex(4)}")
    return store


@pytest.fixture
def tls_env(seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Clients trust the session CA and resolve *.localhost to loopback (test-only)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(seaweedfs.ca_file))
    with resolve_localhost_names():
        yield


class TestS3PathStyleConformance(StoreConformance):
    expiry_wait = 2.5

    @pytest.fixture
    def raw_store(self, path_store: S3Store) -> S3Store:
        return path_store


class TestCoreWeaveConformance(StoreConformance):
    expiry_wait = 2.5

    @pytest.fixture
    def raw_store(self, seaweedfs: SeaweedFS, tls_env: None) -> S3Store:
        store = s3_store(seaweedfs.cw_address("satchel-cw"), ca_bundle=str(seaweedfs.ca_file))
        assert store.scheme == "cw"
        return store


# ----------------------------------------------------------------- addressing and capabilities


def test_cw_urls_are_virtual_hosted_https(seaweedfs: SeaweedFS) -> None:
    store = s3_store(seaweedfs.cw_address("satchel-cw"))
    url = urlsplit(store.presign_get("a/b.txt", expires_in=60).url)
    assert (url.scheme, url.netloc, url.path) == (
        "https", f"satchel-cw.{seaweedfs.tls_host}", "/a/b.txt")


def test_s3_compatible_defaults_to_path_style_and_plain_http() -> None:
    store = s3_store("s3://K:S@minio.internal:9000/bkt?region=eu-1")
    url = urlsplit(store.presign_get("k", expires_in=60).url)
    assert (url.scheme, url.netloc, url.path) == ("http", "minio.internal:9000", "/bkt/k")
    store = s3_store("s3://K:S@minio.internal:9000/bkt?region=eu-1&tls=true&style=virtual")
    url = urlsplit(store.presign_get("k", expires_in=60).url)
    assert (url.scheme, url.netloc, url.path) == ("https", "bkt.minio.internal:9000", "/k")


def test_aws_uses_regional_virtual_hosts_and_path_style_for_dotted_buckets() -> None:
    store = s3_store("s3://AKIAX:S@s3.amazonaws.com/my-bucket?region=eu-west-1")
    url = urlsplit(store.presign_get("k", expires_in=60).url)
    assert (url.scheme, url.netloc, url.path) == (
        "https", "my-bucket.s3.eu-west-1.amazonaws.com", "/k")
    dotted = s3_store("s3://AKIAX:S@s3.amazonaws.com/my.bucket?region=eu-west-1")
    url = urlsplit(dotted.presign_get("k", expires_in=60).url)
    assert (url.netloc, url.path) == ("s3.eu-west-1.amazonaws.com", "/my.bucket/k")


def test_capabilities_are_what_each_store_enforces(seaweedfs: SeaweedFS) -> None:
    aws = s3_store("s3://AKIAX:S@s3.amazonaws.com/b?region=us-east-1").capabilities
    assert aws.verifies_sha256 and aws.verifies_md5
    # Unknown S3-compatible stores: Content-MD5 only, until a probe proves more.
    store = s3_store(seaweedfs.address("satchel-test"))
    assert not store.capabilities.verifies_sha256 and store.capabilities.verifies_md5
    assert "x-amz-checksum-sha256" not in store.presign_put(
        "k", expires_in=60, sha256="0" * 64).headers
    probe_key = f"probe/{secrets.token_hex(4)}"
    assert store.probe_checksum_support(probe_key).verifies_sha256  # SeaweedFS enforces it
    assert store.head(probe_key) is None  # the rejected probe wrote nothing


def test_open_store_picks_the_s3_provider(seaweedfs: SeaweedFS) -> None:
    store = open_store(seaweedfs.address("satchel-test"), CONTEXT)
    assert isinstance(store, S3Store) and isinstance(store, ObjectStore)
    cw = open_store(seaweedfs.cw_address("satchel-cw"), CONTEXT)
    assert isinstance(cw, S3Store) and cw.scheme == "cw"


def test_expiry_bounds_are_enforced() -> None:
    store = s3_store("s3://K:S@127.0.0.1:9/b?region=us-east-1")
    with pytest.raises(InvalidInput):
        store.presign_get("k", expires_in=0)
    with pytest.raises(InvalidInput):
        store.presign_put_many([("k", 1, None)], expires_in=7 * 24 * 3600 + 1)


def test_temporary_credentials_cap_the_url_expiry() -> None:
    store = S3Store(bucket="b", region="us-east-1", endpoint="127.0.0.1:9", secure=False,
                    credentials=Credentials("ASIAX", "S", "TOKEN", expires_at=NOW + 600),
                    clock=lambda: NOW)
    req = store.presign_get("k", expires_in=3600)
    assert req.expires_at == datetime.fromtimestamp(NOW + 600, tz=UTC)
    assert dict(parse_qsl(urlsplit(req.url).query))["X-Amz-Security-Token"] == "TOKEN"


def test_ambient_credentials_sign_with_the_session_token(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIAAMBIENT")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "ambient-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "ambient-token")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    ambient = s3_store("s3://my-bucket?region=eu-west-1", clock=lambda: NOW)
    explicit = S3Store(bucket="my-bucket", region="eu-west-1", endpoint=None, virtual=True,
                       credentials=Credentials("ASIAAMBIENT", "ambient-secret",
                                               "ambient-token"), clock=lambda: NOW)
    url = ambient.presign_get("k", expires_in=60).url
    assert url == explicit.presign_get("k", expires_in=60).url
    assert "X-Amz-Security-Token=ambient-token" in url


def test_content_disposition_is_safe_for_any_name() -> None:
    value = content_disposition('../we"ird näme.pt')
    assert value.startswith('attachment; filename="we_ird n_me.pt"')
    assert value.endswith("filename*=UTF-8''we%22ird%20n%C3%A4me.pt")


# ----------------------------------------------------------------- signer vs botocore


def _boto_client(*, style: str, endpoint: str | None, region: str = "us-east-1",
                 token: str | None = None) -> Any:
    return boto3.client(
        "s3", region_name=region, endpoint_url=endpoint,
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCY",
        aws_session_token=token,
        config=Config(signature_version="s3v4", s3={"addressing_style": style},
                      request_checksum_calculation="when_required"),
    )


def _boto_url(client: Any, op: str, params: dict[str, Any], expires: int) -> str:
    frozen = datetime.fromtimestamp(NOW, tz=UTC).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", return_value=frozen):
        url: str = client.generate_presigned_url(op, Params=params, ExpiresIn=expires)
    return url


def _parts(url: str) -> tuple[str, str, str, dict[str, str]]:
    u = urlsplit(url)
    return u.scheme, u.netloc, u.path, dict(parse_qsl(u.query, keep_blank_values=True))


KEY = "team/проект/a b+c~(1)&x=y.bin"
SHA = hashlib.sha256(b"payload").hexdigest()
MD5 = base64.b64encode(hashlib.md5(b"payload").digest()).decode()  # noqa: S324
KMS = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.mark.parametrize(("style", "endpoint", "token", "kms"), [
    ("path", "http://127.0.0.1:8333", None, None),
    ("virtual", "https://s3.us-west-2.amazonaws.com", None, KMS),
    ("virtual", "https://cwobject.com", "SESSION/TOKEN+=", None),
])
def test_signatures_equal_botocore(style: str, endpoint: str, token: str | None,
                                   kms: str | None) -> None:
    region = "us-west-2" if "amazonaws" in endpoint else "us-east-1"
    client = _boto_client(style=style, endpoint=endpoint, region=region, token=token)
    store = S3Store(
        bucket="my-bucket", region=region, endpoint=urlsplit(endpoint).netloc,
        secure=endpoint.startswith("https"), virtual=style == "virtual",
        credentials=Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCY", token),
        kms_key=kms, capabilities=Capabilities(verifies_sha256=True, verifies_md5=True),
        clock=lambda: NOW,
    )
    sse = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms} if kms else {}
    b64sha = base64.b64encode(bytes.fromhex(SHA)).decode()
    cases = [
        (store.presign_get(KEY, expires_in=900),
         _boto_url(client, "get_object", {"Bucket": "my-bucket", "Key": KEY}, 900)),
        (store.presign_head(KEY, expires_in=60),
         _boto_url(client, "head_object", {"Bucket": "my-bucket", "Key": KEY}, 60)),
        (store.presign_get(KEY, expires_in=900, download_name="model weights.pt"),
         _boto_url(client, "get_object", {
             "Bucket": "my-bucket", "Key": KEY,
             "ResponseContentDisposition": content_disposition("model weights.pt")}, 900)),
        (store.presign_put(KEY, expires_in=3600, size=7, sha256=SHA, content_md5=MD5,
                           content_type="application/octet-stream"),
         _boto_url(client, "put_object", {
             "Bucket": "my-bucket", "Key": KEY, "ContentLength": 7, "ChecksumSHA256": b64sha,
             "ContentMD5": MD5, "ContentType": "application/octet-stream", **sse}, 3600)),
        (store.presign_put_many([(KEY, 7, SHA)], expires_in=3600)[0],
         _boto_url(client, "put_object", {
             "Bucket": "my-bucket", "Key": KEY, "ContentLength": 7, "ChecksumSHA256": b64sha,
             **sse}, 3600)),
        (store.presign_get_many([KEY], expires_in=900)[0],
         _boto_url(client, "get_object", {"Bucket": "my-bucket", "Key": KEY}, 900)),
    ]
    upload = MultipartUpload(KEY, "2~abc/DEF+ghi=")
    cases.append((
        store.presign_part(upload, 7, expires_in=600, size=5 * 1024 * 1024),
        _boto_url(client, "upload_part", {
            "Bucket": "my-bucket", "Key": KEY, "UploadId": upload.upload_id, "PartNumber": 7,
            "ContentLength": 5 * 1024 * 1024}, 600),
    ))
    for ours, theirs in cases:
        assert _parts(ours.url) == _parts(theirs)


def test_presigner_matches_the_aws_documented_example() -> None:
    # The GET example of AWS's "Authenticating Requests: Using Query Parameters" page.
    signer = SigV4Presigner(
        Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        "us-east-1")
    when = datetime(2013, 5, 24, tzinfo=UTC).timestamp()
    url = signer.batch(86400, now=when).sign(
        "GET", "https", "examplebucket.s3.amazonaws.com", "/test.txt")
    assert url.endswith(
        "X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")


# ----------------------------------------------------------------- batches, SSE, errors


def test_batch_urls_work_against_seaweedfs(path_store: S3Store) -> None:
    prefix = f"batch/{secrets.token_hex(4)}"
    bodies = {f"{prefix}/f{i}.bin": secrets.token_bytes(100 + i) for i in range(20)}
    puts = path_store.presign_put_many(
        [(k, len(v), hashlib.sha256(v).hexdigest()) for k, v in bodies.items()], expires_in=300)
    gets = path_store.presign_get_many(list(bodies), expires_in=300)
    key = f"{prefix}/bad.bin"
    (bad,) = path_store.presign_put_many([(key, 3, hashlib.sha256(b"abc").hexdigest())],
                                         expires_in=300)
    with httpx.Client() as http:
        for req, body in zip(puts, bodies.values(), strict=True):
            assert http.put(req.url, content=body, headers=req.headers).status_code == 200
        assert [http.get(g.url).content for g in gets] == list(bodies.values())
        # A body that does not match its signed SHA-256 (same length) is refused.
        assert http.put(bad.url, content=b"abd", headers=bad.headers).status_code == 400
        # So is a body of another length than the signed Content-Length.
        assert http.put(puts[0].url, content=b"x", headers=puts[0].headers).status_code == 403
    assert path_store.head(key) is None
    path_store.delete_many(list(bodies))


def test_presigned_put_carries_signed_sse_kms_headers(seaweedfs: SeaweedFS) -> None:
    # SeaweedFS does not talk to AWS KMS, so this checks the request shape and that the store
    # enforces the signature over the SSE headers, not that an object ends up KMS-encrypted.
    store = s3_store(seaweedfs.address("satchel-test") + f"&kms={KMS}")
    req = store.presign_put("kms/obj.bin", expires_in=300, size=4)
    assert req.headers["x-amz-server-side-encryption"] == "aws:kms"
    assert req.headers["x-amz-server-side-encryption-aws-kms-key-id"] == KMS
    signed = dict(parse_qsl(urlsplit(req.url).query))["X-Amz-SignedHeaders"].split(";")
    assert {"x-amz-server-side-encryption", "x-amz-server-side-encryption-aws-kms-key-id",
            "content-length", "host"} <= set(signed)
    with httpx.Client() as http:
        # A client that drops the SSE headers (to store unencrypted) breaks the signature.
        resp = http.put(req.url, content=b"data")
        assert resp.status_code == 403 and "SignatureDoesNotMatch" in resp.text
        # With them the signature verifies; SeaweedFS then fails for want of a KMS (500).
        resp = http.put(req.url, content=b"data", headers=req.headers)
        assert resp.status_code != 403 and "Signature" not in resp.text
    assert store.head("kms/obj.bin") is None
    # Parts inherit SSE from the multipart upload; they must not repeat the headers.
    upload = MultipartUpload("kms/big.bin", "upload-id")
    part_headers = store.presign_part(upload, 1, expires_in=60, size=5).headers
    assert "x-amz-server-side-encryption" not in part_headers


def test_wrong_secret_is_permission_denied_without_leaking_it(seaweedfs: SeaweedFS) -> None:
    bad_secret = "WRONG" + secrets.token_hex(16)
    store = s3_store(f"s3://{seaweedfs.admin.access_key}:{bad_secret}@{seaweedfs.host}/"
                     f"satchel-test?region={seaweedfs.region}")
    with pytest.raises(PermissionDenied) as info:
        store.list_page("")
    assert "credentials" in str(info.value)
    chain = f"{info.value!s} {info.value!r} {info.value.__cause__!s} {info.value.details}"
    assert bad_secret not in chain
    # Presigned URLs signed with the wrong secret are refused by the store too.
    resp = send(store.presign_get("anything", expires_in=60))
    assert resp.status_code == 403


def test_unknown_access_key_is_permission_denied(seaweedfs: SeaweedFS) -> None:
    store = s3_store(f"s3://NOSUCHKEY:secret@{seaweedfs.host}/satchel-test?region=us-east-1")
    with pytest.raises(PermissionDenied, match="check the access key"):
        store.put_bytes("x.txt", b"x")


def test_missing_bucket_is_not_found(seaweedfs: SeaweedFS) -> None:
    store = s3_store(seaweedfs.address(f"no-such-bucket-{secrets.token_hex(3)}"))
    with pytest.raises(NotFound, match="does not exist"):
        store.list_page("")
    with pytest.raises(NotFound):
        store.put_bytes("x.txt", b"x")


def test_scoped_identities_are_denied_outside_their_rights(seaweedfs: SeaweedFS) -> None:
    # bucket-a's keys cannot touch bucket-b.
    other = s3_store(seaweedfs.address("bucket-b", "bucket-a"))
    with pytest.raises(PermissionDenied):
        other.list_page("")
    with pytest.raises(PermissionDenied):
        other.put_bytes("x.txt", b"x")
    # Read/Write without List: objects work, listing is denied.
    no_list = s3_store(seaweedfs.address("bucket-a", "no-list"))
    no_list.put_bytes("nolist/x.txt", b"x")
    assert no_list.get_bytes("nolist/x.txt") == b"x"
    with pytest.raises(PermissionDenied):
        no_list.list_page("nolist/")
    # Read-only: cannot write or delete.
    read_only = s3_store(seaweedfs.address("bucket-a", "read-only"))
    assert read_only.get_bytes("nolist/x.txt") == b"x"
    with pytest.raises(PermissionDenied):
        read_only.put_bytes("nolist/y.txt", b"y")
    # DeleteObjects answers per key: the refusal is reported, nothing is deleted.
    result = read_only.delete_many(["nolist/x.txt"])
    assert result.deleted == [] and "AccessDenied" in result.failed["nolist/x.txt"]
    assert read_only.get_bytes("nolist/x.txt") == b"x"
    no_list.delete_many(["nolist/x.txt"])


def test_closed_port_is_storage_unavailable() -> None:
    port = free_port()  # nothing listens here
    store = s3_store(f"s3://K:S@127.0.0.1:{port}/b?region=us-east-1")
    with pytest.raises(StorageUnavailable, match="cannot reach"):
        store.head("x")
    with pytest.raises(StorageUnavailable):
        store.list_page("")
