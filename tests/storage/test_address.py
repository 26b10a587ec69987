"""Storage addresses: every DESIGN §4 form parses, formats back, and redacts its secret."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from satchel.config import load_settings
from satchel.errors import ConfigError, InvalidStorageAddress
from satchel.storage.address import parse_address
from satchel.storage.allowlist import parse_allow_list

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYzz"
PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"
AZKEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def test_coreweave() -> None:
    a = parse_address(f"cw://AKID1234:{quote(SECRET, safe='')}@cwobject.com/my-bucket?tls=true")
    assert (a.scheme, a.bucket, a.endpoint, a.access_key, a.tls) == (
        "cw", "my-bucket", "cwobject.com", "AKID1234", True)
    assert a.secret is not None and a.secret.get_secret_value() == SECRET
    assert a.style == "virtual"


def test_aws_s3() -> None:
    a = parse_address(f"s3://AKIAEXAMPLE:{quote(SECRET, safe='')}@s3.amazonaws.com/bkt"
                      "?region=eu-west-1&kms=arn:aws:kms:eu-west-1:1:key/abc&path=satchel/prod")
    assert a.is_aws and a.region == "eu-west-1" and a.path == "satchel/prod"
    assert a.kms_key == "arn:aws:kms:eu-west-1:1:key/abc"


def test_s3_compatible() -> None:
    a = parse_address(f"s3://minio:{SECRET.replace('/', '%2F').replace('+', '%2B')}"
                      "@minio.internal:9000/ml?region=us-east-1&tls=true")
    assert not a.is_aws and a.endpoint == "minio.internal:9000" and a.tls is True
    assert a.secret is not None and a.secret.get_secret_value() == SECRET


@pytest.mark.parametrize(("text", "scheme", "bucket"), [
    ("s3://bucket-only", "s3", "bucket-only"),
    ("gs://gcs-bucket", "gs", "gcs-bucket"),
    ("az://account1/container1", "az", "container1"),
])
def test_ambient_credential_forms(text: str, scheme: str, bucket: str) -> None:
    a = parse_address(text)
    assert (a.scheme, a.bucket, a.secret) == (scheme, bucket, None)
    assert parse_address(a.format(redact=False)) == a


def test_gcs_service_account() -> None:
    email = "satchel@proj.iam.gserviceaccount.com"
    a = parse_address(f"gs://{email}:{quote(PEM, safe='')}@bkt")
    assert a.access_key == email and a.secret is not None
    assert a.secret.get_secret_value() == PEM
    assert parse_address(a.format(redact=False)).secret == a.secret


def test_azure_key() -> None:
    a = parse_address(f"az://:{quote(AZKEY, safe='')}@acct/cont?path=p")
    assert (a.account, a.bucket, a.path) == ("acct", "cont", "p")
    assert a.secret is not None and a.secret.get_secret_value() == AZKEY


def test_file() -> None:
    a = parse_address("file:///var/lib/satchel/bucket?path=sub")
    assert (a.scheme, a.bucket, a.path) == ("file", "/var/lib/satchel/bucket", "sub")


@pytest.mark.parametrize("text", [
    f"cw://AKID1234:{quote(SECRET, safe='')}@cwobject.com/my-bucket?tls=true",
    f"s3://AKIAEXAMPLE:{quote(SECRET, safe='')}@s3.amazonaws.com/bkt?region=eu-west-1",
    f"s3://minio:{quote(SECRET, safe='')}@minio.internal:9000/ml?region=us-east-1&tls=true",
    f"gs://sa@p.iam.gserviceaccount.com:{quote(PEM, safe='')}@bkt",
    f"az://:{quote(AZKEY, safe='')}@acct/cont",
])
def test_redaction_never_shows_the_secret(text: str) -> None:
    a = parse_address(text)
    assert a.secret is not None
    secret = a.secret.get_secret_value()
    for shown in (a.format(), str(a), repr(a), f"{a}"):
        assert secret not in shown and quote(secret, safe="") not in shown
    assert "****" in a.format() and "****" in str(a)
    assert parse_address(a.format(redact=False)) == a


@pytest.mark.parametrize(("text", "problem"), [
    ("ftp://host/bucket", "unknown scheme 'ftp'"),
    ("no-scheme-here", "missing '<scheme>://'"),
    ("", "empty"),
    ("s3://AK:SECRETVALUE@minio.local/", "missing bucket name"),
    ("s3://AK:SECRETVALUE@minio.local/bkt", "needs ?region="),
    ("cw://AK:SECRETVALUE@cwobject.com/bkt", "requires tls=true"),
    ("cw://AK:SECRETVALUE@cwobject.com/bkt?tls=false", "requires tls=true"),
    ("cw://bkt", "needs credentials"),
    ("gs://sa@x.com:SECRET%ZZVALUE@bkt", "bad percent-encoding"),
    ("az://:SECRET%4VALUE@acct/cont", "bad percent-encoding"),
    ("az://acct", "missing container"),
    ("s3://AK:SECRETVALUE@minio.local/bkt?region=r&colour=red", "unknown parameter 'colour'"),
    ("file://relative/path", "must be absolute"),
    ("s3://AK:SECRETVALUE@minio.local/a/b?region=r", "use ?path="),
])
def test_malformed_addresses_name_the_problem_without_the_secret(text: str, problem: str
                                                                 ) -> None:
    with pytest.raises(InvalidStorageAddress) as info:
        parse_address(text)
    assert problem in info.value.message
    assert "expected" in info.value.message
    assert "SECRET" not in info.value.message and "VALUE" not in info.value.message


def test_allow_list_entries_and_coreweave_switch() -> None:
    allow = parse_allow_list(f" s3://AK:{SECRET.replace('/', '%2F').replace('+', '%2B')}"
                             "@minio.local/b1?region=r , cw:// ,gs://bkt2")
    assert allow.coreweave_enabled
    assert [e.bucket for e in allow.entries] == ["b1", "bkt2"]
    assert all(SECRET not in shown for shown in allow.display())
    assert allow.match(parse_address("s3://X:Y@minio.local/b1?region=r&path=team")) is not None
    assert allow.match(parse_address("gs://other")) is None


def test_malformed_allow_list_stops_start_up_with_redacted_entry(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GORILLA_SUPPORTED_FILE_STORES",
                       "gs://fine,s3://AKIAEXAMPLE:TOPSECRET@minio.local/bkt")
    with pytest.raises(ConfigError) as info:
        load_settings()
    (line,) = info.value.problems
    assert line.startswith("SATCHEL_SUPPORTED_FILE_STORES: entry 2 (s3://")
    assert "TOPSECRET" not in line and "needs ?region=" in line
