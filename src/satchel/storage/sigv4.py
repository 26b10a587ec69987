"""AWS Signature Version 4 query-string signing ("presigned URLs") with hmac/hashlib only.

Signing is Satchel's hot path: a 100k-file artifact needs 100k URLs, and botocore's
``generate_presigned_url`` builds a whole request object, runs the event system and
re-derives the signing key for every URL (~2-3k URLs/s per core). This module does only the
arithmetic of the spec (https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html):

* the signing key (``HMAC(HMAC(HMAC(HMAC("AWS4"+secret, date), region), service),
  "aws4_request")``) is derived once per date and cached;
* a :class:`SigningBatch` fixes one timestamp and expiry for many URLs, so the credential
  scope, the ``X-Amz-*`` part of the canonical query and the string-to-sign prefix are built
  once per batch (and per set of signed header names);
* per URL only the canonical request is hashed and one HMAC is computed (``hmac.digest``, the
  C one-shot).

The URL's query is emitted in canonical (sorted) order, so the canonical query string is the
URL's own query and nothing is encoded twice. The payload is always ``UNSIGNED-PAYLOAD``, as
for every S3 presigned URL; integrity comes from signed checksum headers instead.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
# SigV4 presigned URLs live at most 7 days (X-Amz-Expires <= 604800).
MAX_EXPIRES = 7 * 24 * 3600

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Credentials:
    """One access key; ``token`` for temporary (STS) credentials, ``expires_at`` (epoch
    seconds) when those credentials stop working, which also ends every URL signed with them."""

    access_key: str
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)
    expires_at: float | None = None


def encode_query_value(value: str) -> str:
    """URI-encode a query key or value the way SigV4 requires (RFC 3986 unreserved only)."""
    return quote(value, safe="-_.~")


def encode_path(path: str) -> str:
    """URI-encode an object path for the canonical URI ('/' kept; S3 paths are not normalised)."""
    return quote(path, safe="/-_.~")


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.digest(key, msg.encode(), "sha256")


class SigV4Presigner:
    """Signs S3-style presigned URLs for one set of credentials, region and service."""

    def __init__(
        self, credentials: Credentials, region: str, *, service: str = "s3",
        clock: Clock = time.time,
    ) -> None:
        self.credentials = credentials
        self.region = region
        self.service = service
        self._clock = clock
        # (secret, datestamp) -> signing key; dates roll over at most once a day.
        self._keys: dict[tuple[str, str], bytes] = {}

    def signing_key(self, datestamp: str) -> bytes:
        cache_key = (self.credentials.secret_key, datestamp)
        key = self._keys.get(cache_key)
        if key is None:
            k = _hmac(f"AWS4{self.credentials.secret_key}".encode(), datestamp)
            k = _hmac(k, self.region)
            k = _hmac(k, self.service)
            key = _hmac(k, "aws4_request")
            if len(self._keys) > 4:
                self._keys.clear()
            self._keys[cache_key] = key
        return key

    def batch(self, expires_in: int, *, now: float | None = None) -> SigningBatch:
        """A signing context with one timestamp and expiry for any number of URLs."""
        if not 1 <= expires_in <= MAX_EXPIRES:
            raise ValueError(f"expires_in must be between 1 and {MAX_EXPIRES} seconds")
        return SigningBatch(self, self._clock() if now is None else now, expires_in)


class SigningBatch:
    """Everything that is constant for URLs signed at one instant with one expiry."""

    __slots__ = ("_auth_prefix", "_key", "_sts_prefix", "_token_param", "expires_at",
                 "signed_at")

    def __init__(self, presigner: SigV4Presigner, now: float, expires_in: int) -> None:
        signed_at = int(now)
        moment = datetime.fromtimestamp(signed_at, tz=UTC)
        amz_date = moment.strftime("%Y%m%dT%H%M%SZ")
        datestamp = amz_date[:8]
        creds = presigner.credentials
        scope = f"{datestamp}/{presigner.region}/{presigner.service}/aws4_request"
        self.signed_at = signed_at
        expiry = signed_at + expires_in
        if creds.expires_at is not None:
            # A URL stops working when the temporary credentials that signed it expire.
            expiry = min(expiry, int(creds.expires_at))
        self.expires_at = datetime.fromtimestamp(expiry, tz=UTC)
        self._key = presigner.signing_key(datestamp)
        self._sts_prefix = f"{ALGORITHM}\n{amz_date}\n{scope}\n"
        credential = encode_query_value(f"{creds.access_key}/{scope}")
        self._token_param = (
            f"X-Amz-Security-Token={encode_query_value(creds.token)}&" if creds.token else ""
        )
        # Canonical query parameters are sorted by name; the X-Amz-* ones always come in this
        # order, and everything Satchel adds (partNumber, uploadId, response-*) sorts after
        # them because lowercase letters sort after 'X'.
        self._auth_prefix = (
            f"X-Amz-Algorithm={ALGORITHM}&X-Amz-Credential={credential}"
            f"&X-Amz-Date={amz_date}&X-Amz-Expires={expires_in}&{self._token_param}"
            "X-Amz-SignedHeaders="
        )

    def sign(
        self,
        method: str,
        scheme: str,
        host: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """The presigned URL for ``method`` on ``scheme://host`` + ``path``.

        ``host`` is the Host header the client will send (no default port); ``path`` is the
        already-encoded canonical URI (see :func:`encode_path`). ``query`` holds extra,
        unencoded parameters; ``headers`` (lowercase names) are signed, so the client must send
        exactly these values.
        """
        if headers:
            items = sorted([("host", host), *headers.items()])
            signed = ";".join(name for name, _ in items)
            canonical_headers = "".join(
                f"{name}:{' '.join(value.split())}\n" for name, value in items
            )
        else:
            signed = "host"
            canonical_headers = f"host:{host}\n"
        canonical_query = self._auth_prefix + signed.replace(";", "%3B")
        if query:
            # Sorted by encoded name, then value (as the spec and botocore do).
            extra = sorted((encode_query_value(k), encode_query_value(v)) for k, v in query)
            if extra[0][0] <= "X-Amz-SignedHeaders":
                # A parameter that sorts among the X-Amz-* ones: sort everything.
                for pair in canonical_query.split("&"):
                    name, _, value = pair.partition("=")
                    extra.append((name, value))
                extra.sort()
                canonical_query = "&".join(f"{k}={v}" for k, v in extra)
            else:
                canonical_query += "".join(f"&{k}={v}" for k, v in extra)
        canonical_request = (
            f"{method}\n{path}\n{canonical_query}\n{canonical_headers}\n{signed}\n"
            f"{UNSIGNED_PAYLOAD}"
        )
        string_to_sign = (
            self._sts_prefix + hashlib.sha256(canonical_request.encode()).hexdigest()
        )
        signature = hmac.digest(self._key, string_to_sign.encode(), "sha256").hex()
        return f"{scheme}://{host}{path}?{canonical_query}&X-Amz-Signature={signature}"
