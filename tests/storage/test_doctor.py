"""The bucket doctor against real buckets broken on purpose (Storage issue: "Every doctor check
has a test that breaks a real bucket on purpose").

Each broken case asserts the exact check that reports it, severity ``error`` (warnings for the
advisory checks: versioning, lifecycle, clock within 15 minutes), and that the message names
what is wrong and the fix names what to do; a healthy bucket passes with every relevant check
in ``passed``. Servers are the session fixtures of tests/storage/servers (SeaweedFS for S3 and
CoreWeave, Azurite, fake-gcs-server behind the verifying proxy); every address points at
127.0.0.1, and cases that must not touch the network (bad names) fail loudly if they try.

What these servers cannot model, and what is asserted instead, is said next to each case.
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from satchel.storage.address import StorageAddress
from satchel.storage.base import Capabilities, MultipartUpload, ObjectStore
from satchel.storage.doctor import (
    Doctor,
    DoctorOptions,
    DoctorReport,
    Finding,
    _check_checksum,
    _check_clock,
    run_doctor,
)
from satchel.storage.policy import PolicyRequest, generate_policy
from satchel.storage.registry import StoreContext, open_store
from satchel.storage.s3 import classify_lifecycle_rules
from satchel.storage.scoped import ScopedStore
from tests.conftest import Users
from tests.live import free_port
from tests.storage.servers.azurite import AzuriteServer
from tests.storage.servers.fakegcs import FakeGcsServer, ServiceAccount
from tests.storage.servers.seaweedfs import SeaweedFS, resolve_localhost_names

CONTEXT = StoreContext(public_url="http://127.0.0.1:1", instance_secret=b"d" * 32)
# The browser origin the CORS checks preflight from. It is only ever sent as an Origin header
# to the local servers; nothing connects to it.
ORIGIN = "http://satchel.test:8080"
ROUND_TRIP = {"write", "head", "read", "list", "multipart", "delete"}
STATIC = ["syntax", "deployment", "bucket-name"]


def doctor(address: str, **options: Any) -> DoctorReport:
    return run_doctor(address, CONTEXT, DoctorOptions(**options))


def the_error(report: DoctorReport, check: str) -> Finding:
    """The report has exactly one error, from ``check``; return it."""
    assert [(f.check, f.severity) for f in report.errors] == [(check, "error")], report.findings
    assert not report.ok
    return report.errors[0]


def assert_says(finding: Finding, *, message: tuple[str, ...], fix: tuple[str, ...]) -> None:
    """The message names what is wrong and the fix names what to do (case-sensitive)."""
    for text in message:
        assert text in finding.message, (text, finding)
    for text in fix:
        assert text in finding.fix, (text, finding)


def assert_secret_absent(report: DoctorReport, secret: str) -> None:
    assert secret not in json.dumps(report.to_dict())


# --------------------------------------------------------------------------- SeaweedFS helpers


def _keys(server: SeaweedFS, bucket: str) -> dict[str, bytes]:
    client = server.client()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def _uploads(server: SeaweedFS, bucket: str) -> list[str]:
    resp = server.client().list_multipart_uploads(Bucket=bucket)
    return [u["Key"] for u in resp.get("Uploads", [])]


def _empty(server: SeaweedFS, bucket: str) -> None:
    client = server.client()
    for key in _keys(server, bucket):
        client.delete_object(Bucket=bucket, Key=key)
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"],
                                      UploadId=upload["UploadId"])


def _satchel_cors(bucket: str) -> dict[str, Any]:
    """The CORS document `satchel storage policy` prints for this bucket and ORIGIN."""
    bundle = generate_policy(PolicyRequest(
        provider="s3", bucket=bucket, identity="arn:aws:iam::123456789012:role/satchel",
        organization_id="0b1c2d3e-org", origin=ORIGIN))
    cors: dict[str, Any] = json.loads(bundle.cors)
    return cors


@pytest.fixture
def bucket(seaweedfs: SeaweedFS) -> Iterator[str]:
    """A fresh SeaweedFS bucket (the admin's), with Satchel's CORS document applied.

    Scoped identities (no-list, read-only) only reach the fixture's bucket-a; their tests use
    that bucket and leave its CORS alone (other modules configure it)."""
    name = seaweedfs.create_bucket(f"doctor-{secrets.token_hex(4)}")
    seaweedfs.client().put_bucket_cors(Bucket=name, CORSConfiguration=_satchel_cors(name))
    yield name
    _empty(seaweedfs, name)


def _set_cors_rule(server: SeaweedFS, bucket: str, **changes: Any) -> None:
    rule = {**_satchel_cors(bucket)["CORSRules"][0], **changes}
    rule = {k: v for k, v in rule.items() if v is not None}
    server.client().put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [rule]})


# --------------------------------------------------------------------------- SeaweedFS: healthy


def test_healthy_bucket_passes_every_check(seaweedfs: SeaweedFS, bucket: str) -> None:
    report = doctor(seaweedfs.address(bucket), origin=ORIGIN)

    assert report.ok, report.findings
    assert report.findings == []
    assert {*STATIC, "reachability", "credentials", *ROUND_TRIP, "cors", "clock",
            "checksum-sha256", "bucket-settings"} <= set(report.passed)
    assert report.address.startswith("s3://") and "****" in report.address
    assert_secret_absent(report, seaweedfs.admin.secret_key)
    # The probe object, the CORS probe key and the multipart upload are all gone again.
    assert _keys(seaweedfs, bucket) == {}
    assert _uploads(seaweedfs, bucket) == []


# --------------------------------------------------------------------------- SeaweedFS: CORS


def test_bucket_without_cors_rule_falls_back_to_seaweedfs_server_default(
        seaweedfs: SeaweedFS, bucket: str) -> None:
    """"No CORS at all" cannot be produced on this SeaweedFS: a bucket without a CORS
    configuration is answered by the server-wide fallback (``-s3.allowedOrigins``, ``*`` by
    default, which the session server keeps), so browsers *are* allowed and the doctor, which
    checks what a browser sees, rightly passes it. The refusal a bucket without CORS gets on
    AWS (a 403 preflight without Access-Control-Allow-Origin) is what SeaweedFS answers for
    an origin no rule names: see test_cors_for_another_origin_is_an_error, and the Azurite
    test below, where clearing the CORS rules really leaves none."""
    client = seaweedfs.client()
    client.delete_bucket_cors(Bucket=bucket)
    with pytest.raises(client.exceptions.ClientError, match="NoSuchCORSConfiguration"):
        client.get_bucket_cors(Bucket=bucket)

    report = doctor(seaweedfs.address(bucket), origin=ORIGIN)

    assert report.ok, report.findings
    assert "cors" in report.passed


def test_cors_for_another_origin_is_an_error(seaweedfs: SeaweedFS, bucket: str) -> None:
    _set_cors_rule(seaweedfs, bucket, AllowedOrigins=["https://someone-else.test"])

    report = doctor(seaweedfs.address(bucket), origin=ORIGIN)

    finding = the_error(report, "cors")
    assert_says(finding, message=(f"no CORS rule for origin {ORIGIN}", "refused"),
                fix=("satchel storage policy --provider s3", f"allow origin {ORIGIN}"))
    assert set(report.passed) >= ROUND_TRIP  # only CORS is wrong, and only CORS is reported


def test_cors_without_put_is_an_error(seaweedfs: SeaweedFS, bucket: str) -> None:
    _set_cors_rule(seaweedfs, bucket, AllowedMethods=["GET", "HEAD"])

    report = doctor(seaweedfs.address(bucket), origin=ORIGIN)

    finding = the_error(report, "cors")
    assert_says(finding, message=("does not allow PUT", ORIGIN, "cannot upload"),
                fix=("methods GET, PUT and HEAD", "satchel storage policy"))
    assert "cors" not in report.passed


def test_cors_without_exposed_etag_is_an_error(seaweedfs: SeaweedFS, bucket: str) -> None:
    _set_cors_rule(seaweedfs, bucket, ExposeHeaders=None)

    report = doctor(seaweedfs.address(bucket), origin=ORIGIN)

    finding = the_error(report, "cors")
    assert_says(finding, message=("does not expose the ETag header", "multipart"),
                fix=("expose ETag",))


def test_cors_unchecked_without_an_origin_is_a_warning(seaweedfs: SeaweedFS,
                                                       bucket: str) -> None:
    report = doctor(seaweedfs.address(bucket))

    assert report.ok
    assert [(f.check, f.severity) for f in report.findings] == [("cors", "warning")]
    assert "--origin" in report.findings[0].fix


# --------------------------------------------------------------------------- SeaweedFS: rights


def test_credentials_that_cannot_list(seaweedfs: SeaweedFS) -> None:
    # ``no-list`` may read and write bucket-a but not list it.
    report = doctor(seaweedfs.address("bucket-a", "no-list"))

    finding = the_error(report, "list")
    assert_says(finding, message=("cannot list objects", "access denied"),
                fix=("s3:ListBucket", "satchel storage policy"))
    # Everything else works, and the report says so: the one missing right is pinpointed.
    assert ROUND_TRIP - {"list"} <= set(report.passed)
    assert "credentials" not in report.passed


def test_credentials_that_cannot_write_or_delete(seaweedfs: SeaweedFS) -> None:
    """``read-only`` (Read + List on bucket-a) cannot write, so the probe upload fails first
    and there is nothing to delete: the doctor reports ``write`` and never claims anything
    about delete. (SeaweedFS identity files have no separate delete action, ``Write`` covers
    it; write-but-not-delete is modelled with a bucket policy in the next test.)"""
    report = doctor(seaweedfs.address("bucket-a", "read-only"))

    finding = the_error(report, "write")
    assert_says(finding, message=("presigned PUT", "HTTP 403", "AccessDenied"),
                fix=("s3:PutObject",))
    assert "credentials" in report.passed  # listing is allowed
    assert "delete" not in report.passed
    assert not any(f.check == "delete" for f in report.findings)


def test_credentials_that_can_write_but_not_delete(seaweedfs: SeaweedFS) -> None:
    """A bucket policy denying s3:DeleteObject (SeaweedFS enforces bucket policies for
    non-admin identities) leaves write, read and list working and makes delete fail."""
    admin = seaweedfs.client()
    before = _keys(seaweedfs, "bucket-a")
    deny = {"Version": "2012-10-17", "Statement": [{
        "Sid": "DoctorTestNoDelete", "Effect": "Deny", "Principal": "*",
        "Action": ["s3:DeleteObject"], "Resource": ["arn:aws:s3:::bucket-a/*"]}]}
    admin.put_bucket_policy(Bucket="bucket-a", Policy=json.dumps(deny))
    try:
        report = doctor(seaweedfs.address("bucket-a", "bucket-a"))
    finally:
        admin.delete_bucket_policy(Bucket="bucket-a")

    finding = the_error(report, "delete")
    assert_says(finding, message=("cannot delete the probe object", "AccessDenied"),
                fix=("s3:DeleteObject", "garbage collector", "remove the probe object"))
    assert ROUND_TRIP - {"delete"} <= set(report.passed)
    # The object the fix tells the operator to remove by hand is really there (and only it).
    left = set(_keys(seaweedfs, "bucket-a")) - set(before)
    assert len(left) == 1
    probe = left.pop()
    assert probe.startswith("satchel-doctor/") and probe in finding.fix
    admin.delete_object(Bucket="bucket-a", Key=probe)


def test_wrong_secret_is_a_credentials_error_not_a_list_error(seaweedfs: SeaweedFS) -> None:
    secret = f"wrong-{secrets.token_urlsafe(12)}"
    address = (f"s3://{seaweedfs.admin.access_key}:{secret}@{seaweedfs.host}/bucket-a"
               f"?region={seaweedfs.region}")

    report = doctor(address, origin=ORIGIN)

    finding = the_error(report, "credentials")
    assert_says(finding, message=("rejected the credentials", "SignatureDoesNotMatch"),
                fix=("access key and secret",))
    # It stops there: no list/write findings repeating the same cause.
    assert report.passed == [*STATIC, "reachability"]
    assert_secret_absent(report, secret)


def test_unknown_access_key_is_a_credentials_error(seaweedfs: SeaweedFS) -> None:
    report = doctor(f"s3://NOSUCHKEY:secret@{seaweedfs.host}/bucket-a?region=us-east-1")

    finding = the_error(report, "credentials")
    assert_says(finding, message=("InvalidAccessKeyId",), fix=("access key",))


def test_nonexistent_bucket(seaweedfs: SeaweedFS) -> None:
    name = f"no-such-bucket-{secrets.token_hex(3)}"

    report = doctor(seaweedfs.address(name))

    finding = the_error(report, "bucket")
    assert_says(finding, message=(f"'{name}'", "does not exist"),
                fix=(f"create the bucket '{name}'",))
    assert report.passed == [*STATIC, "reachability"]


# --------------------------------------------------------------------------- static checks


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Callable[[StorageAddress, StoreContext],
                                                            ObjectStore]:
    """Fail the test if the doctor opens a connection or a store; returns an open_fn."""
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"the doctor went to the network: {args!r}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    return refuse


@pytest.mark.parametrize(("scheme", "name", "problem", "suggestion"), [
    ("s3", "my_bucket", "contains '_'", "my-bucket"),
    ("s3", "MyBucket", "contains uppercase letters", "mybucket"),
    ("cw", "cw-foo", "must not start with 'cw-' or 'vip-'", "foo"),
    ("cw", "team_a.models", "must be DNS-compliant", "team-a-models"),
])
def test_invalid_bucket_names_fail_before_any_network_call(
        no_network: Callable[[StorageAddress, StoreContext], ObjectStore],
        scheme: str, name: str, problem: str, suggestion: str) -> None:
    # The endpoint is a closed local port: even a leak would go nowhere but 127.0.0.1.
    query = "tls=true" if scheme == "cw" else "region=us-east-1"
    address = f"{scheme}://KEY:SECRET@127.0.0.1:{free_port()}/{name}?{query}"

    report = run_doctor(address, CONTEXT, DoctorOptions(origin=ORIGIN), open_fn=no_network)

    finding = the_error(report, "bucket-name")
    assert_says(finding, message=(f"'{name}'", problem),
                fix=("create a", f"'{suggestion}'"))
    assert report.passed == ["syntax", "deployment"]


def test_closed_port_is_a_reachability_error() -> None:
    port = free_port()  # bound and released: nothing listens there

    report = doctor(f"s3://KEY:SECRET@127.0.0.1:{port}/satchel-test?region=us-east-1",
                    timeout=2.0)

    finding = the_error(report, "reachability")
    assert_says(finding, message=(f"cannot connect to 127.0.0.1:{port}",),
                fix=("endpoint host and port", "object store is running"))
    assert report.passed == STATIC


def test_untrusted_tls_certificate_is_a_tls_error(seaweedfs: SeaweedFS, bucket: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # The CoreWeave path (virtual-hosted, TLS required) against SeaweedFS's TLS endpoint, whose
    # certificate comes from a per-session CA this host does not trust.
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with resolve_localhost_names():
        report = doctor(seaweedfs.cw_address(bucket), origin=ORIGIN)

    finding = the_error(report, "tls")
    assert_says(finding, message=(f"TLS handshake with {seaweedfs.tls_host}",
                                  "CERTIFICATE_VERIFY_FAILED"),
                fix=("certificate trusted by this host",))
    assert report.passed == STATIC


def test_coreweave_over_trusted_tls_passes(seaweedfs: SeaweedFS, bucket: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # Trust the session CA the way an operator would: SSL_CERT_FILE (the doctor's own TLS check
    # and the presigned requests) and AWS_CA_BUNDLE (boto3's server-side calls).
    monkeypatch.setenv("SSL_CERT_FILE", str(seaweedfs.ca_file))
    monkeypatch.setenv("AWS_CA_BUNDLE", str(seaweedfs.ca_file))
    with resolve_localhost_names():
        report = doctor(seaweedfs.cw_address(bucket), origin=ORIGIN)

    assert report.ok, report.findings
    assert report.findings == []
    assert report.address.startswith("cw://")
    assert {"reachability", "credentials", *ROUND_TRIP, "cors"} <= set(report.passed)
    assert _keys(seaweedfs, bucket) == {}


@pytest.mark.parametrize(("address", "problem"), [
    ("s3://KEY:hunter2-secret@127.0.0.1:9/bucket", "needs ?region="),
    ("KEY:hunter2-secret@127.0.0.1:9/bucket", "missing '<scheme>://'"),
    ("s3://KEY:hunter2-secret@127.0.0.1:9/bucket?region=us-east-1&path=../up", ".."),
])
def test_bad_address_is_a_syntax_error_without_echoing_the_secret(address: str,
                                                                  problem: str) -> None:
    report = doctor(address)

    finding = the_error(report, "syntax")
    assert problem in finding.message
    assert finding.fix
    assert report.passed == []
    assert_secret_absent(report, "hunter2-secret")


# --------------------------------------------------------------------------- sub-path


class RecordingStore:
    """The real store, recording every key, prefix and upload the doctor hands it."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.keys: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            for arg in args[:1]:
                if isinstance(arg, str):
                    self.keys.append(arg)
                elif isinstance(arg, MultipartUpload):
                    self.keys.append(arg.key)
                elif isinstance(arg, list | tuple):
                    self.keys.extend(k if isinstance(k, str) else k[0] for k in arg)
            return attr(*args, **kwargs)

        return call


def test_sub_path_round_trip_leaves_nothing_behind_and_touches_nothing_outside(
        seaweedfs: SeaweedFS, bucket: str) -> None:
    client = seaweedfs.client()
    outside = {
        "keep-at-root.txt": b"root",
        "satchel-doctor/not-ours.txt": b"a probe-like key at the bucket root",
        "teams/prod-old/keep.txt": b"shares a string prefix with the sub-path",
        "other/teams/prod/keep.txt": b"the same path under another prefix",
    }
    for key, body in outside.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    recorded: list[RecordingStore] = []

    def open_recording(addr: StorageAddress, context: StoreContext) -> ObjectStore:
        store = RecordingStore(open_store(addr, context))
        recorded.append(store)
        return store

    report = run_doctor(seaweedfs.address(bucket), CONTEXT,
                        DoctorOptions(path="teams/prod", origin=ORIGIN), open_fn=open_recording)

    assert report.ok, report.findings
    assert report.path == "teams/prod"
    assert ROUND_TRIP | {"cors", "checksum-sha256"} <= set(report.passed)
    # Every key the doctor used lies under <sub-path>/satchel-doctor/ ...
    (store,) = recorded
    assert store.keys
    assert all(k.startswith("teams/prod/satchel-doctor/") for k in store.keys), store.keys
    # ... none of them is left, and everything outside is exactly as it was.
    assert _keys(seaweedfs, bucket) == outside
    assert _uploads(seaweedfs, bucket) == []


# --------------------------------------------------------------------------- versioning/lifecycle


def test_versioning_without_noncurrent_expiry_is_a_warning(seaweedfs: SeaweedFS,
                                                           bucket: str) -> None:
    # Warnings, not errors, by design (DESIGN §8): versioning costs space, it does not break
    # Satchel, so it must not block saving the bucket.
    seaweedfs.client().put_bucket_versioning(
        Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})

    report = doctor(seaweedfs.address(bucket), origin=ORIGIN)

    assert report.ok
    assert [(f.check, f.severity) for f in report.findings] == [("versioning", "warning")]
    assert_says(report.findings[0], message=("versioning is enabled", "noncurrent"),
                fix=("NoncurrentVersionExpiration",))
    assert "bucket-settings" in report.passed


def test_lifecycle_rule_expiring_live_data_is_a_warning(seaweedfs: SeaweedFS,
                                                        bucket: str) -> None:
    client = seaweedfs.client()
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
        {"ID": "expire-scratch", "Status": "Enabled", "Filter": {"Prefix": "scratch/"},
         "Expiration": {"Days": 30}},
        {"ID": "old-versions", "Status": "Enabled", "Filter": {"Prefix": ""},
         "NoncurrentVersionExpiration": {"NoncurrentDays": 7}},
        {"ID": "uploads", "Status": "Enabled", "Filter": {"Prefix": ""},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 3}},
    ]})

    report = doctor(seaweedfs.address(bucket), origin=ORIGIN)

    assert report.ok
    # The noncurrent-version rule satisfies the versioning check; the expiry rule is named.
    assert [(f.check, f.severity) for f in report.findings] == [("lifecycle", "warning")]
    assert_says(report.findings[0],
                message=("rule 'expire-scratch'", "under prefix 'scratch/'", "30 days"),
                fix=("remove the rule or scope it",))


def test_lifecycle_classification() -> None:
    expiring, cleanup, noncurrent = classify_lifecycle_rules([
        {"ID": "off", "Status": "Disabled", "Expiration": {"Days": 1}},
        {"ID": "legacy", "Status": "Enabled", "Prefix": "logs/", "Expiration": {"Days": 5}},
        {"ID": "cold", "Status": "Enabled", "Filter": {"Prefix": ""},
         "Transitions": [{"Days": 90, "StorageClass": "DEEP_ARCHIVE"}]},
        {"ID": "cheap", "Status": "Enabled", "Filter": {"Prefix": ""},
         "Transitions": [{"Days": 30, "StorageClass": "STANDARD_IA"}]},
        {"ID": "tagged", "Status": "Enabled",
         "Filter": {"And": {"Prefix": "tmp/", "Tags": [{"Key": "ttl", "Value": "short"}]}},
         "Expiration": {"Date": "2030-01-01T00:00:00Z"}},
        {"ID": "markers", "Status": "Enabled", "Filter": {},
         "Expiration": {"ExpiredObjectDeleteMarker": True}},
        {"ID": "mpu", "Status": "Enabled", "Filter": {},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 2}},
    ])

    assert expiring == (
        "rule 'legacy' deletes current objects under prefix 'logs/' 5 days after they are "
        "written",
        "rule 'cold' moves current objects in the whole bucket to DEEP_ARCHIVE after 90 days "
        "(unreadable until restored)",
        "rule 'tagged' deletes current objects under prefix 'tmp/' tagged ttl=short on "
        "2030-01-01T00:00:00Z",
    )
    assert cleanup == (
        "rule 'markers' removes expired delete markers in the whole bucket",
        "rule 'mpu' aborts incomplete multipart uploads in the whole bucket after 2 days",
    )
    # Aborting uploads does not clean up noncurrent versions.
    assert noncurrent is False
    assert classify_lifecycle_rules([{"Status": "Enabled", "Filter": {"Prefix": ""},
                                      "NoncurrentVersionExpiration": {"NoncurrentDays": 7}}]
                                    )[2] is True


# --------------------------------------------------------------------------- clock skew

NOW = 1_790_000_000.0


def _clock_findings(store_date_offset: float) -> DoctorReport:
    report = DoctorReport(address="s3://…", path="")
    doc = Doctor(report, DoctorOptions(clock=lambda: NOW))
    resp = httpx.Response(200, headers={"Date": formatdate(NOW + store_date_offset,
                                                           usegmt=True)})
    _check_clock(doc, resp)
    return report


def test_clock_far_off_is_an_error() -> None:
    report = _clock_findings(-3600)

    finding = the_error(report, "clock")
    assert_says(finding, message=("3600 s behind", "refused"), fix=("NTP",))


def test_clock_a_few_minutes_off_is_a_warning() -> None:
    report = _clock_findings(180)

    assert report.ok
    assert [(f.check, f.severity) for f in report.findings] == [("clock", "warning")]
    assert_says(report.findings[0], message=("180 s ahead",), fix=("NTP",))


def test_clock_in_step_passes_and_missing_date_is_ignored() -> None:
    assert _clock_findings(20).passed == ["clock"]
    report = DoctorReport(address="s3://…", path="")
    _check_clock(Doctor(report, DoctorOptions(clock=lambda: NOW)), httpx.Response(200))
    assert report.findings == [] and report.passed == []


def test_clock_skew_is_read_from_the_real_store(seaweedfs: SeaweedFS, bucket: str) -> None:
    # The store's Date header is compared with the doctor's (injected) clock: a host an hour
    # ahead gets an error even though the store still accepted this upload.
    report = doctor(seaweedfs.address(bucket), origin=ORIGIN, clock=lambda: time.time() + 3600)

    finding = the_error(report, "clock")
    assert_says(finding, message=("behind this host's",), fix=("NTP",))
    assert "write" in report.passed


# --------------------------------------------------------------------------- checksum probe


class _AcceptsAnyChecksum:
    """A store that, like many S3-compatible ones, stores an upload whatever SHA-256 it
    declares. SeaweedFS verifies SHA-256 (the real-server tests above see
    'checksum-sha256' pass), so this branch needs a stand-in."""

    scheme = "s3"
    capabilities = Capabilities(verifies_md5=True)

    def __init__(self) -> None:
        self.probed: list[str] = []

    def probe_checksum_support(self, key: str) -> Capabilities:
        self.probed.append(key)
        return self.capabilities


def test_store_that_ignores_sha256_gets_a_warning_not_an_error() -> None:
    fake = _AcceptsAnyChecksum()
    report = DoctorReport(address="s3://…", path="team")
    report.passed += ["write", "delete"]
    scoped = ScopedStore(fake, "team")  # type: ignore[arg-type]

    _check_checksum(Doctor(report, DoctorOptions()), scoped)

    assert report.ok
    assert [(f.check, f.severity) for f in report.findings] == [("checksum", "warning")]
    assert_says(report.findings[0], message=("does not verify SHA-256", "Content-MD5"),
                fix=("nothing is required",))
    (key,) = fake.probed
    assert key.startswith("team/satchel-doctor/")


def test_checksum_probe_is_skipped_when_the_probe_could_not_be_deleted() -> None:
    fake = _AcceptsAnyChecksum()
    report = DoctorReport(address="s3://…", path="")
    report.passed += ["write"]  # delete failed: an accepted probe could not be removed
    scoped = ScopedStore(fake)  # type: ignore[arg-type]

    _check_checksum(Doctor(report, DoctorOptions()), scoped)

    assert fake.probed == [] and report.findings == []


# --------------------------------------------------------------------------- Azurite


@pytest.fixture
def azure_cors(azurite: AzuriteServer) -> Iterator[AzuriteServer]:
    """Azure CORS is per account and the Azurite session fixture is shared: put back whatever
    CORS rules the account had when the test is done."""
    service = azurite.service_client()
    saved = service.get_service_properties().get("cors") or []
    yield azurite
    service.set_service_properties(cors=saved)


def test_azure_healthy_container_passes(azure_cors: AzuriteServer) -> None:
    azure_cors.set_cors([ORIGIN])
    container = azure_cors.create_container()

    report = doctor(azure_cors.address(container, path="satchel"), origin=ORIGIN)

    assert report.ok, report.findings
    assert report.findings == []
    assert {*STATIC, "reachability", "credentials", *ROUND_TRIP, "cors", "clock"} <= \
        set(report.passed)
    blobs = list(azure_cors.service_client().get_container_client(container).list_blobs())
    assert blobs == []


def test_azure_without_cors_is_an_error(azure_cors: AzuriteServer) -> None:
    azure_cors.clear_cors()
    container = azure_cors.create_container()

    report = doctor(azure_cors.address(container), origin=ORIGIN)

    finding = the_error(report, "cors")
    assert_says(finding, message=(f"no CORS rule for origin {ORIGIN}",),
                fix=("--provider azure", "storage account"))
    assert set(report.passed) >= ROUND_TRIP


def test_azure_wrong_key_is_a_credentials_error(azurite: AzuriteServer) -> None:
    container = azurite.create_container()
    wrong = base64.b64encode(secrets.token_bytes(64)).decode()

    report = doctor(azurite.address(container, key=wrong), origin=ORIGIN)

    finding = the_error(report, "credentials")
    assert_says(finding, message=("AuthorizationFailure", "account key was not accepted"),
                fix=("account key", "key1 or key2"))
    assert report.passed == [*STATIC, "reachability"]
    assert_secret_absent(report, wrong)


# --------------------------------------------------------------------------- fake-gcs

# CORS is not asserted against fake-gcs: the server ignores bucket CORS and answers preflights
# itself with '*', and the verifying proxy in front of it checks the V4 signature of preflights
# to signed URLs (real GCS does not), so a CORS check there can only ever pass or only ever
# fail, whatever the bucket says. The doctor runs without an origin: CORS is a warning.


def test_gcs_healthy_round_trip(fake_gcs: FakeGcsServer) -> None:
    bucket = fake_gcs.create_bucket()

    report = doctor(fake_gcs.address(bucket, path="satchel"))

    assert report.ok, report.findings
    assert {*STATIC, "reachability", "credentials", *ROUND_TRIP} <= set(report.passed)
    assert [(f.check, f.severity) for f in report.findings] == [("cors", "warning")]
    store = open_store(fake_gcs.address(bucket), CONTEXT)
    assert store.list_page("").objects == []  # the probe is gone again


def test_gcs_wrong_private_key_is_a_credentials_error(fake_gcs: FakeGcsServer) -> None:
    bucket = fake_gcs.create_bucket()
    impostor = ServiceAccount.generate(fake_gcs.account.email)  # same email, another key

    report = doctor(fake_gcs.address(bucket, key=impostor.pem))

    finding = the_error(report, "credentials")
    assert_says(finding, message=("HTTP 401",), fix=("private key", "service-account email"))
    assert report.passed == [*STATIC, "reachability"]
    assert_secret_absent(report, impostor.pem)


# --------------------------------------------------------------------------- admin API


def test_admin_api_runs_the_doctor(client: TestClient, admin_headers: dict[str, str],
                                   users: Users, seaweedfs: SeaweedFS, bucket: str) -> None:
    secret = seaweedfs.admin.secret_key
    body = {"address": seaweedfs.address(bucket), "path": "api-check", "origin": ORIGIN}

    resp = client.post("/api/v1/admin/storage/doctor", json=body, headers=admin_headers)

    assert resp.status_code == 200, resp.text
    report = resp.json()
    assert report["ok"] is True and report["findings"] == []
    assert report["path"] == "api-check"
    assert {"credentials", *ROUND_TRIP, "cors"} <= set(report["passed"])
    assert secret not in resp.text and "****" in report["address"]

    bob = users.create("bob")
    resp = client.post("/api/v1/admin/storage/doctor", json=body, headers=bob)
    assert resp.status_code == 403
    assert resp.json()["error"]["code"] == "permission_denied"
    assert secret not in resp.text
    assert _keys(seaweedfs, bucket) == {}
