"""Credentials and V4 URL signing for the GCS provider (see :mod:`satchel.storage.gcs`).

A ``gs://`` address carries a service account: its email and, URL-encoded, either the PEM private
key or the whole service-account JSON key file. :func:`parse_service_account` accepts both and
never puts the key into an error message. :class:`V4Signer` makes GOOG4-RSA-SHA256 query-string
signed URLs exactly like google-cloud-storage's ``generate_signed_url(version="v4")`` (a test
pins the two byte for byte), but in batches: the key is parsed once per store, and the
timestamp, credential scope and common query parameters once per batch.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from google.auth import crypt
from google.oauth2 import service_account

from satchel.errors import InvalidStorageAddress
from satchel.storage.base import PresignedRequest

SCOPES = ("https://www.googleapis.com/auth/devstorage.full_control",)
ALGORITHM = "GOOG4-RSA-SHA256"

SignFn = Callable[[bytes], bytes]


@dataclass(frozen=True, slots=True)
class ServiceAccountKey:
    """A service account parsed from an address; ``__repr__`` never shows the key."""

    email: str
    private_key: rsa.RSAPrivateKey
    private_key_id: str | None = None
    project_id: str | None = None

    def __repr__(self) -> str:
        return f"ServiceAccountKey(email={self.email!r}, private_key=****)"

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())


def _bad_key(problem: str) -> InvalidStorageAddress:
    expected = "gs://<serviceAccountEmail>:<urlEncodedPrivateKey>@<bucket>"
    return InvalidStorageAddress(
        f"invalid GCS credentials: {problem}; expected the URL-encoded PEM private key or the "
        f"whole service-account JSON key file in {expected}",
        details={"problem": problem, "expected": expected},
    )


def parse_service_account(email: str | None, secret: str) -> ServiceAccountKey:
    """Parse the secret part of a ``gs://`` address (PEM key or service-account JSON)."""
    text = secret.strip()
    key_id = project = None
    if text.startswith("{"):
        try:
            info = json.loads(text)
        except ValueError:
            raise _bad_key("the key looks like JSON but does not parse") from None
        if not isinstance(info, dict) or not isinstance(info.get("private_key"), str):
            raise _bad_key("the JSON has no 'private_key'")
        if info.get("type", "service_account") != "service_account":
            raise _bad_key("the JSON is not a service-account key (type must be service_account)")
        json_email = info.get("client_email")
        if email and json_email and email != json_email:
            raise _bad_key(f"the address names {email} but the JSON key belongs to {json_email}")
        email = email or json_email
        key_id, project = info.get("private_key_id"), info.get("project_id")
        text = str(info["private_key"])
    if not email:
        raise _bad_key("the service-account email is missing")
    # Keys copied out of a JSON file often keep their escaped newlines.
    pem = text.replace("\\n", "\n").encode()
    if b"-----BEGIN" not in pem:
        raise _bad_key("the key is neither a PEM private key nor a service-account JSON")
    return ServiceAccountKey(email, _load_rsa_key(pem), key_id, project)


@functools.lru_cache(maxsize=32)
def _load_rsa_key(pem: bytes) -> rsa.RSAPrivateKey:
    """Load (and validate) a PEM key once: validation costs tens of milliseconds, and a store is
    opened for every request that needs one."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise _bad_key("the PEM private key does not load (damaged or encrypted)") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise _bad_key("GCS service-account keys are RSA keys")
    return key


def jwt_credentials(sa: ServiceAccountKey) -> service_account.Credentials:
    """Credentials that sign their own JWTs locally; they never call Google's token endpoint.

    Built from the already loaded key, so the key is not parsed (and validated) again."""
    signer = crypt.RSASigner(sa.private_key, key_id=sa.private_key_id)  # type: ignore[no-untyped-call]
    creds: service_account.Credentials = service_account.Credentials(  # type: ignore[no-untyped-call]
        signer, sa.email, "https://oauth2.googleapis.com/token", scopes=list(SCOPES),
        project_id=sa.project_id, always_use_jwt_access=True,
    )
    return creds


@dataclass(frozen=True, slots=True)
class SignItem:
    method: str
    key: str
    headers: dict[str, str]  # header name -> value: signed, and returned for the client to send
    query: dict[str, str]  # extra query parameters (response-content-disposition ...)
    signed_only: dict[str, str] = field(default_factory=dict)  # signed, sent implicitly


def _q(value: str) -> str:
    return quote(value, safe="~")


class V4Signer:
    """GOOG4-RSA-SHA256 query-string signing, batched.

    Matches google-cloud-storage's ``generate_signed_url(version="v4")`` byte for byte (a test
    pins that), but the timestamp, credential scope and common query parameters are computed
    once per batch and the RSA key is parsed once per store.
    """

    def __init__(self, email: str, sign: SignFn, endpoint: str, bucket: str) -> None:
        self.email = email
        self._sign = sign
        self._endpoint = endpoint.rstrip("/")
        self._host = urlsplit(self._endpoint).netloc
        self._bucket_path = f"/{quote(bucket, safe='~')}/"

    def sign_many(
        self, items: Sequence[SignItem], *, now: float, expires_in: int
    ) -> list[PresignedRequest]:
        stamp = datetime.fromtimestamp(int(now), tz=UTC)
        timestamp = stamp.strftime("%Y%m%dT%H%M%SZ")
        scope = f"{timestamp[:8]}/auto/storage/goog4_request"
        common = [
            f"X-Goog-Algorithm={ALGORITHM}",
            f"X-Goog-Credential={_q(f'{self.email}/{scope}')}",
            f"X-Goog-Date={timestamp}",
            f"X-Goog-Expires={expires_in}",
        ]
        prefix = f"{ALGORITHM}\n{timestamp}\n{scope}\n".encode()
        expires_at = stamp + timedelta(seconds=expires_in)
        host_line = f"host:{self._host}"
        out: list[PresignedRequest] = []
        for item in items:
            lowered = sorted(
                [(k.lower(), " ".join(v.split()))
                 for k, v in (*item.headers.items(), *item.signed_only.items())]
                + [("host", self._host)]
            )
            signed = ";".join(k for k, _ in lowered)
            canonical_headers = "\n".join(
                host_line if k == "host" else f"{k}:{v}" for k, v in lowered
            )
            params = [*common, f"X-Goog-SignedHeaders={_q(signed)}"]
            params += [f"{_q(k)}={_q(v)}" for k, v in item.query.items()]
            query = "&".join(sorted(params))
            resource = self._bucket_path + quote(item.key, safe="/~")
            canonical = (
                f"{item.method}\n{resource}\n{query}\n{canonical_headers}\n\n{signed}\n"
                "UNSIGNED-PAYLOAD"
            )
            digest = hashlib.sha256(canonical.encode()).hexdigest().encode()
            signature = self._sign(prefix + digest).hex()
            out.append(
                PresignedRequest(
                    url=f"{self._endpoint}{resource}?{query}&X-Goog-Signature={signature}",
                    method=item.method,  # type: ignore[arg-type]
                    headers=dict(item.headers),
                    expires_at=expires_at,
                )
            )
        return out


def content_disposition(name: str) -> str:
    """``attachment`` with an ASCII fallback and the RFC 6266 UTF-8 form."""
    safe = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\' else "_" for c in name)
    return f"attachment; filename=\"{safe or 'download'}\"; filename*=UTF-8''{quote(name, safe='')}"
