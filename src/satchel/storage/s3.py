"""The S3 provider: AWS S3, S3-compatible stores (MinIO, Ceph, SeaweedFS, ...) and CoreWeave.

Addresses (DESIGN §4)::

    s3://<key>:<secret>@<endpoint>/<bucket>?region=<r>[&tls=true][&style=path|virtual][&kms=<arn>]
    s3://<bucket>                                   AWS, ambient credentials (boto3's chain)
    cw://<key>:<secret>@cwobject.com/<bucket>?tls=true  CoreWeave AI Object Storage

Presigned URLs are signed by Satchel's own SigV4 signer (:mod:`satchel.storage.sigv4`), which is
an order of magnitude faster than botocore's and gives identical signatures; boto3 is used
only for server-side calls (head, list, delete, copy, multipart bookkeeping, small writes).

Addressing: AWS uses virtual-hosted style (path style for bucket names with dots, whose TLS
certificates would not match); other S3-compatible endpoints default to path style
(``style=virtual`` to change it); CoreWeave requires virtual-hosted style and TLS.

Checksums: a presigned PUT binds ``Content-Length`` when the size is known, and a checksum the
store verifies: a signed ``x-amz-checksum-sha256`` where the store is known to enforce it
(AWS; any other store after :meth:`S3Store.probe_checksum_support` proved it), else the
``Content-MD5`` the caller passes (verified by every S3 implementation we know). Signed headers
must be sent exactly as returned, so a client cannot drop them.

SSE-KMS: with ``kms=<key id or ARN>`` every write (presigned PUT, multipart create, copy,
server-side put) asks for ``aws:kms`` with that key; a presigned PUT signs those headers and
returns them, because S3 only honours SSE headers that were signed.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import boto3
import botocore.exceptions as boto_exc
from botocore.config import Config

from satchel.errors import (
    ChecksumMismatch,
    Conflict,
    InvalidInput,
    InvalidStorageAddress,
    NotFound,
    PermissionDenied,
    SatchelError,
    StorageError,
    StorageUnavailable,
)
from satchel.storage.address import CW_ENDPOINT, StorageAddress
from satchel.storage.base import (
    BucketSettings,
    Capabilities,
    CompletedPart,
    DeleteResult,
    HttpMethod,
    ListPage,
    MultipartUpload,
    ObjectInfo,
    PresignedRequest,
)
from satchel.storage.keys import validate_key
from satchel.storage.registry import StoreContext
from satchel.storage.sigv4 import MAX_EXPIRES, Credentials, SigningBatch, SigV4Presigner

DELETE_BATCH = 1000  # DeleteObjects limit
MAX_COPY_OBJECT = 5 * 1024**3  # CopyObject limit; larger objects need a multipart copy
_CONNECT_TIMEOUT = 3.0
_READ_TIMEOUT = 60.0
_MAX_ATTEMPTS = 2  # first try + one retry: a dead endpoint fails within seconds

Clock = Callable[[], float]

_CREDENTIAL_CODES = {
    "SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken", "ExpiredToken",
    "InvalidClientTokenId", "TokenRefreshRequired",
}
_DENIED_CODES = {"AccessDenied", "AllAccessDisabled", "Forbidden", "403"}
_NOT_FOUND_CODES = {"NoSuchKey", "NotFound", "404"}
_UNAVAILABLE_CODES = {"SlowDown", "ServiceUnavailable", "503", "RequestTimeout",
                      "InternalError", "500"}
_CHECKSUM_CODES = {"BadDigest", "InvalidDigest", "XAmzContentChecksumMismatch",
                   "XAmzContentSHA256Mismatch"}
_REGION_CODES = {"AuthorizationHeaderMalformed", "PermanentRedirect",
                 "IllegalLocationConstraintException", "301"}


class S3Store:
    """One S3 bucket. Build it with :meth:`from_address` (or :func:`open_s3`)."""

    def __init__(
        self,
        *,
        bucket: str,
        region: str | None,
        endpoint: str | None,
        secure: bool = True,
        virtual: bool = False,
        credentials: Credentials | None = None,
        kms_key: str | None = None,
        scheme: str = "s3",
        capabilities: Capabilities | None = None,
        ca_bundle: str | None = None,
        clock: Clock = time.time,
    ) -> None:
        """``endpoint`` is ``host[:port]``; None means AWS (regional endpoint). ``credentials``
        None means boto3's ambient chain. ``ca_bundle`` is a PEM file for server-side calls to
        endpoints with a private CA (clients of presigned URLs must trust it themselves)."""
        self.scheme = scheme
        self._bucket = bucket
        self._region = region
        self._endpoint = endpoint
        self._secure = secure
        self._virtual = virtual
        self._static_credentials = credentials
        self._kms_key = kms_key
        self._ca_bundle = ca_bundle
        self._clock = clock
        self._caps = capabilities or Capabilities(verifies_md5=True)
        self._lock = threading.Lock()
        self._client_obj: Any = None
        self._session: Any = None
        self._presigner: SigV4Presigner | None = None
        self._sse_headers: dict[str, str] = (
            {"x-amz-server-side-encryption": "aws:kms",
             "x-amz-server-side-encryption-aws-kms-key-id": kms_key} if kms_key else {}
        )
        self._sse_params: dict[str, str] = (
            {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key} if kms_key else {}
        )

    # ----------------------------------------------------------------- construction

    @classmethod
    def from_address(
        cls, address: StorageAddress, *, ca_bundle: str | None = None, clock: Clock = time.time
    ) -> S3Store:
        if address.scheme not in {"s3", "cw"}:
            raise InvalidStorageAddress(f"not an S3 address: {address}")
        creds = None
        if address.secret is not None:
            creds = Credentials(address.access_key or "", address.secret.get_secret_value())
        common: dict[str, Any] = {
            "bucket": address.bucket, "credentials": creds, "kms_key": address.kms_key,
            "scheme": address.scheme, "ca_bundle": ca_bundle, "clock": clock,
        }
        if address.scheme == "cw":
            if address.tls is not True:
                raise InvalidStorageAddress("CoreWeave requires tls=true")
            # CoreWeave accepts only virtual-hosted-style requests over TLS.
            return cls(region=address.region or "us-east-1",
                       endpoint=address.endpoint or CW_ENDPOINT, secure=True, virtual=True,
                       **common)
        if address.is_aws:
            endpoint = address.endpoint
            if endpoint in {None, "s3.amazonaws.com"}:
                endpoint = None  # regional endpoint, chosen once the region is known
            return cls(
                region=address.region, endpoint=endpoint, secure=address.tls is not False,
                # Dotted bucket names break the *.s3.amazonaws.com certificate.
                virtual=address.style != "path" and "." not in address.bucket,
                # AWS verifies x-amz-checksum-sha256 and Content-MD5 (BadDigest otherwise).
                capabilities=Capabilities(verifies_sha256=True, verifies_md5=True),
                **common,
            )
        return cls(region=address.region, endpoint=address.endpoint,
                   secure=address.tls is True, virtual=address.style == "virtual", **common)

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def region(self) -> str:
        if self._region is None:
            with self._lock:
                if self._region is None:
                    self._region = self._discover_region()
        return self._region

    @property
    def endpoint_host(self) -> str:
        """host[:port] of the endpoint (without the bucket)."""
        if self._endpoint is not None:
            return self._endpoint
        return f"s3.{self.region}.amazonaws.com"

    @property
    def endpoint_url(self) -> str:
        return f"{'https' if self._secure else 'http'}://{self.endpoint_host}"

    def _discover_region(self) -> str:
        """AWS without ?region=: the session's region, else the bucket's own (HeadBucket
        answers with x-amz-bucket-region even when it redirects or denies)."""
        session = self._boto_session()
        try:
            resp = self._make_client(session, "us-east-1").head_bucket(Bucket=self._bucket)
            headers = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        except boto_exc.ClientError as exc:
            headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        except boto_exc.BotoCoreError as exc:
            raise _translate(exc, "find the bucket's region", self) from exc
        region = headers.get("x-amz-bucket-region") or session.region_name or "us-east-1"
        return str(region)

    def _boto_session(self) -> Any:
        if self._session is None:
            if self._static_credentials is not None:
                self._session = _shared_session()
            else:  # its own session: the ambient chain resolves (and refreshes) per store
                self._session = boto3.session.Session()
        return self._session

    def _make_client(self, session: Any, region: str) -> Any:
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "virtual" if self._virtual else "path"},
            connect_timeout=_CONNECT_TIMEOUT, read_timeout=_READ_TIMEOUT,
            retries={"max_attempts": _MAX_ATTEMPTS, "mode": "standard"},
            max_pool_connections=32,
            # Checksums only where S3 requires them (DeleteObjects): S3-compatible stores do not
            # all accept the aws-chunked trailers newer botocore sends by default.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        endpoint_url = None
        if self._endpoint is not None or self._region is not None:
            endpoint_url = f"{'https' if self._secure else 'http'}://" + (
                self._endpoint or f"s3.{region}.amazonaws.com"
            )
        creds = self._static_credentials
        keys: dict[str, Any] = {} if creds is None else {
            "aws_access_key_id": creds.access_key, "aws_secret_access_key": creds.secret_key,
            "aws_session_token": creds.token,
        }
        with _SESSION_LOCK:  # boto3 sessions are not thread-safe; clients are
            return session.client("s3", region_name=region, endpoint_url=endpoint_url,
                                  verify=self._ca_bundle, config=config, **keys)

    @property
    def _client(self) -> Any:
        if self._client_obj is None:
            region = self.region
            with self._lock:
                if self._client_obj is None:
                    self._client_obj = self._make_client(self._boto_session(), region)
        return self._client_obj

    # ----------------------------------------------------------------- signing

    def _batch(self, expires_in: int) -> SigningBatch:
        if not 1 <= expires_in <= MAX_EXPIRES:
            raise InvalidInput(
                f"expires_in must be between 1 and {MAX_EXPIRES} seconds (SigV4's 7-day limit)"
            )
        presigner = self._presigner
        if presigner is None or self._static_credentials is None:
            presigner = self._current_presigner()
        return presigner.batch(expires_in, now=self._clock())

    def _current_presigner(self) -> SigV4Presigner:
        creds = self._static_credentials
        if creds is None:
            creds = self._ambient_credentials()
        presigner = self._presigner
        if presigner is None or presigner.credentials != creds:
            presigner = SigV4Presigner(creds, self.region, clock=self._clock)
            self._presigner = presigner
        return presigner

    def _ambient_credentials(self) -> Credentials:
        try:
            found = self._boto_session().get_credentials()
            frozen = found.get_frozen_credentials() if found is not None else None
        except boto_exc.BotoCoreError as exc:  # e.g. the role's STS/IMDS endpoint failed
            raise _translate(exc, "load ambient credentials", self) from exc
        if found is None or frozen is None:
            raise PermissionDenied(
                f"no credentials for bucket '{self._bucket}': the address has none and none "
                "were found in the environment (AWS_ACCESS_KEY_ID, ~/.aws, instance or pod "
                "role); add '<accessKey>:<secret>@' to the address or grant a role"
            )
        expiry = getattr(found, "_expiry_time", None)  # RefreshableCredentials (STS, IMDS)
        return Credentials(
            frozen.access_key, frozen.secret_key, frozen.token,
            expiry.timestamp() if isinstance(expiry, datetime) else None,
        )

    def _url_parts(self) -> tuple[str, str, str]:
        """(scheme, host, path prefix) for object URLs."""
        scheme = "https" if self._secure else "http"
        host = self.endpoint_host
        if scheme == "https" and host.endswith(":443"):
            host = host[:-4]
        elif scheme == "http" and host.endswith(":80"):
            host = host[:-3]
        if self._virtual:
            return scheme, f"{self._bucket}.{host}", "/"
        return scheme, host, f"/{self._bucket}/"

    def _sign(
        self, batch: SigningBatch, method: HttpMethod, key: str, *,
        query: Sequence[tuple[str, str]] = (), headers: dict[str, str] | None = None,
        size: int | None = None,
    ) -> PresignedRequest:
        scheme, host, prefix = self._url_parts()
        url = batch.sign(method, scheme, host, prefix + _encode_key(key), query=query,
                         headers=_with_length(headers, size))
        return PresignedRequest(url=url, method=method, headers=headers or {},
                                expires_at=batch.expires_at)

    def _put_headers(
        self, size: int | None, sha256: str | None, content_md5: str | None,
        content_type: str | None,
    ) -> dict[str, str]:
        """The headers a client must send with a PUT (all of them signed). Content-Length is
        signed too (see _with_length) but not returned: every HTTP client derives it from a
        body of known length, and browsers refuse to set it."""
        headers: dict[str, str] = {}
        if size is not None and size < 0:
            raise InvalidInput("size must be >= 0")
        if sha256 is not None and self._caps.verifies_sha256:
            headers["x-amz-checksum-sha256"] = _sha256_b64(sha256)
        if content_md5 is not None and self._caps.verifies_md5:
            headers["content-md5"] = content_md5
        if content_type:
            headers["content-type"] = content_type
        if self._sse_headers:
            headers.update(self._sse_headers)
        return headers

    def presign_get(
        self, key: str, *, expires_in: int, download_name: str | None = None
    ) -> PresignedRequest:
        validate_key(key)
        query: tuple[tuple[str, str], ...] = ()
        if download_name:
            query = (("response-content-disposition", content_disposition(download_name)),)
        return self._sign(self._batch(expires_in), "GET", key, query=query)

    def presign_head(self, key: str, *, expires_in: int) -> PresignedRequest:
        validate_key(key)
        return self._sign(self._batch(expires_in), "HEAD", key)

    def presign_put(
        self,
        key: str,
        *,
        expires_in: int,
        size: int | None = None,
        sha256: str | None = None,
        content_md5: str | None = None,
        content_type: str | None = None,
    ) -> PresignedRequest:
        validate_key(key)
        headers = self._put_headers(size, sha256, content_md5, content_type)
        return self._sign(self._batch(expires_in), "PUT", key, headers=headers, size=size)

    def presign_put_many(
        self, keys: Sequence[tuple[str, int | None, str | None]], *, expires_in: int
    ) -> list[PresignedRequest]:
        batch = self._batch(expires_in)
        scheme, host, prefix = self._url_parts()
        expires_at = batch.expires_at
        sign = batch.sign
        out: list[PresignedRequest] = []
        append = out.append
        for key, size, sha256 in keys:
            validate_key(key)
            headers = self._put_headers(size, sha256, None, None)
            url = sign("PUT", scheme, host, prefix + _encode_key(key),
                       headers=_with_length(headers, size))
            append(PresignedRequest(url, "PUT", headers, expires_at))
        return out

    def presign_get_many(self, keys: Sequence[str], *, expires_in: int) -> list[PresignedRequest]:
        batch = self._batch(expires_in)
        scheme, host, prefix = self._url_parts()
        expires_at = batch.expires_at
        sign = batch.sign
        out: list[PresignedRequest] = []
        append = out.append
        for key in keys:
            validate_key(key)
            url = sign("GET", scheme, host, prefix + _encode_key(key))
            append(PresignedRequest(url, "GET", {}, expires_at))
        return out

    # ----------------------------------------------------------------- multipart

    def create_multipart(self, key: str, *, content_type: str | None = None) -> MultipartUpload:
        validate_key(key)
        params: dict[str, Any] = {"Bucket": self._bucket, "Key": key, **self._sse_params}
        if content_type:
            params["ContentType"] = content_type
        resp = self._call("start a multipart upload", self._client.create_multipart_upload,
                          **params)
        return MultipartUpload(key=key, upload_id=str(resp["UploadId"]),
                               initiated=datetime.fromtimestamp(self._clock(), tz=UTC))

    def presign_part(
        self, upload: MultipartUpload, part_number: int, *, expires_in: int, size: int | None = None
    ) -> PresignedRequest:
        validate_key(upload.key)
        if not 1 <= part_number <= self._caps.max_parts:
            raise InvalidInput(f"part number must be between 1 and {self._caps.max_parts}")
        if size is not None and not 0 <= size <= self._caps.max_part_size:
            raise InvalidInput(f"a part holds at most {self._caps.max_part_size} bytes")
        query = (("partNumber", str(part_number)), ("uploadId", upload.upload_id))
        return self._sign(self._batch(expires_in), "PUT", upload.key, query=query, size=size)

    def complete_multipart(
        self, upload: MultipartUpload, parts: Sequence[CompletedPart]
    ) -> ObjectInfo:
        if not parts:
            raise InvalidInput("a multipart upload needs at least one part")
        numbers = [p.number for p in parts]
        if numbers != sorted(set(numbers)):
            raise InvalidInput("parts must be listed in ascending order without duplicates")
        self._call(
            "complete the multipart upload", self._client.complete_multipart_upload,
            Bucket=self._bucket, Key=upload.key, UploadId=upload.upload_id,
            MultipartUpload={"Parts": [
                {"PartNumber": p.number, "ETag": f'"{p.etag.strip(chr(34))}"'} for p in parts
            ]},
        )
        info = self.head(upload.key)
        if info is None:
            raise StorageError(
                f"multipart upload of '{upload.key}' completed but the object is not visible"
            )
        return info

    def abort_multipart(self, upload: MultipartUpload) -> None:
        try:
            self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=upload.key, UploadId=upload.upload_id
            )
        except boto_exc.ClientError as exc:
            if _code(exc) in {"NoSuchUpload", "404"}:
                return  # already completed or aborted: aborting is idempotent
            raise _translate(exc, "abort the multipart upload", self) from exc
        except boto_exc.BotoCoreError as exc:
            raise _translate(exc, "abort the multipart upload", self) from exc

    def list_multipart_uploads(self, prefix: str) -> Iterator[MultipartUpload]:
        params: dict[str, Any] = {"Bucket": self._bucket, "Prefix": prefix}
        while True:
            resp = self._call("list multipart uploads", self._client.list_multipart_uploads,
                              **params)
            for up in resp.get("Uploads", []):
                yield MultipartUpload(key=str(up["Key"]), upload_id=str(up["UploadId"]),
                                      initiated=up.get("Initiated"))
            if not resp.get("IsTruncated"):
                return
            params["KeyMarker"] = resp.get("NextKeyMarker", "")
            params["UploadIdMarker"] = resp.get("NextUploadIdMarker", "")

    # ----------------------------------------------------------------- server-side operations

    def head(self, key: str) -> ObjectInfo | None:
        validate_key(key)
        try:
            resp = self._client.head_object(Bucket=self._bucket, Key=key, ChecksumMode="ENABLED")
        except boto_exc.ClientError as exc:
            if _code(exc) in _NOT_FOUND_CODES:
                return None
            raise _translate(exc, f"read metadata of '{key}'", self) from exc
        except boto_exc.BotoCoreError as exc:
            raise _translate(exc, f"read metadata of '{key}'", self) from exc
        return ObjectInfo(
            key=key, size=int(resp["ContentLength"]), etag=resp.get("ETag"),
            last_modified=resp.get("LastModified"),
            sha256=_full_object_sha256(resp.get("ChecksumSHA256"), resp.get("ChecksumType")),
        )

    def list_page(
        self, prefix: str, *, page_size: int = 1000, token: str | None = None
    ) -> ListPage:
        params: dict[str, Any] = {"Bucket": self._bucket, "Prefix": prefix,
                                  "MaxKeys": max(1, min(page_size, 1000))}
        if token:
            params["ContinuationToken"] = token
        resp = self._call("list objects", self._client.list_objects_v2, **params)
        objects = [
            ObjectInfo(key=str(o["Key"]), size=int(o["Size"]), etag=o.get("ETag"),
                       last_modified=o.get("LastModified"))
            for o in resp.get("Contents", [])
        ]
        next_token = resp.get("NextContinuationToken") if resp.get("IsTruncated") else None
        return ListPage(objects, str(next_token) if next_token else None)

    def delete_many(self, keys: Sequence[str]) -> DeleteResult:
        result = DeleteResult()
        for key in keys:
            validate_key(key)
        for start in range(0, len(keys), DELETE_BATCH):
            chunk = list(dict.fromkeys(keys[start:start + DELETE_BATCH]))
            resp = self._call(
                "delete objects", self._client.delete_objects, Bucket=self._bucket,
                Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
            )
            errors = {str(e.get("Key")): f"{e.get('Code')}: {e.get('Message', '')}".strip()
                      for e in resp.get("Errors", [])}
            result.failed.update(errors)
            result.deleted.extend(k for k in chunk if k not in errors)
        return result

    def copy(self, src_key: str, dst_key: str) -> None:
        validate_key(src_key)
        validate_key(dst_key)
        source = {"Bucket": self._bucket, "Key": src_key}
        info = self.head(src_key)
        if info is None:
            raise NotFound(f"object '{src_key}' does not exist in bucket '{self._bucket}'")
        if info.size <= MAX_COPY_OBJECT:
            self._call(f"copy '{src_key}'", self._client.copy_object, Bucket=self._bucket,
                       Key=dst_key, CopySource=source, **self._sse_params)
        else:  # boto3's managed copy does UploadPartCopy for objects over 5 GiB
            self._call(f"copy '{src_key}'", self._client.copy, source, self._bucket, dst_key,
                       ExtraArgs=dict(self._sse_params) or None)

    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> ObjectInfo:
        validate_key(key)
        sha = hashlib.sha256(data)
        params: dict[str, Any] = {
            "Bucket": self._bucket, "Key": key, "Body": data,
            "ContentMD5": base64.b64encode(hashlib.md5(data).digest()).decode(),  # noqa: S324
            **self._sse_params,
        }
        if self._caps.verifies_sha256:
            params["ChecksumSHA256"] = base64.b64encode(sha.digest()).decode()
        if content_type:
            params["ContentType"] = content_type
        resp = self._call(f"write '{key}'", self._client.put_object, **params)
        return ObjectInfo(key=key, size=len(data), etag=resp.get("ETag"),
                          sha256=sha.hexdigest() if self._caps.verifies_sha256 else None)

    def get_bytes(self, key: str) -> bytes:
        validate_key(key)
        resp = self._call(f"read '{key}'", self._client.get_object, Bucket=self._bucket, Key=key)
        try:
            body: bytes = resp["Body"].read()
        except boto_exc.BotoCoreError as exc:
            raise _translate(exc, f"read '{key}'", self) from exc
        return body

    def bucket_settings(self) -> BucketSettings:
        """BucketInspector: versioning, and lifecycle rules split into those that expire or
        archive current objects and those that only clean up (for the bucket doctor)."""
        versioning = self._call("read the bucket's versioning state",
                                self._client.get_bucket_versioning, Bucket=self._bucket)
        try:
            lifecycle = self._client.get_bucket_lifecycle_configuration(Bucket=self._bucket)
        except boto_exc.ClientError as exc:
            if _code(exc) != "NoSuchLifecycleConfiguration":
                raise _translate(exc, "read the bucket's lifecycle rules", self) from exc
            lifecycle = {}
        except boto_exc.BotoCoreError as exc:
            raise _translate(exc, "read the bucket's lifecycle rules", self) from exc
        expiring, cleanup, noncurrent = classify_lifecycle_rules(lifecycle.get("Rules", []))
        return BucketSettings(versioning=versioning.get("Status") == "Enabled",
                              expiring_rules=expiring, cleanup_rules=cleanup,
                              expires_noncurrent=noncurrent)

    def probe_checksum_support(self, key: str) -> Capabilities:
        """Find out whether this store enforces ``x-amz-checksum-sha256``: upload ``key`` with
        a deliberately wrong SHA-256. A store that rejects it verifies SHA-256 (capabilities
        are updated and returned); one that accepts it does not (the probe is deleted)."""
        validate_key(key)
        wrong = base64.b64encode(hashlib.sha256(b"not the body").digest()).decode()
        try:
            self._client.put_object(Bucket=self._bucket, Key=key, Body=b"satchel checksum probe",
                                    ChecksumSHA256=wrong, **self._sse_params)
        except boto_exc.ClientError as exc:
            if _code(exc) not in _CHECKSUM_CODES:
                raise _translate(exc, "probe checksum support", self) from exc
            verifies = True
        except boto_exc.BotoCoreError as exc:
            raise _translate(exc, "probe checksum support", self) from exc
        else:
            verifies = False
            self.delete_many([key])
        self._caps = replace(self._caps, verifies_sha256=verifies)
        return self._caps

    def create_bucket(self, *, cors_origins: Sequence[str]) -> None:
        """BucketCreator: create this bucket and apply Satchel's CORS rule (multi-tenant
        "create a new bucket for me", with the operator's credentials)."""
        params: dict[str, Any] = {"Bucket": self._bucket}
        if self._endpoint is None and self.region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self._client.create_bucket(**params)
        except boto_exc.ClientError as exc:
            if _code(exc) == "BucketAlreadyExists":
                raise Conflict(f"bucket name '{self._bucket}' is already taken; choose another "
                               "team name or bucket prefix") from exc
            if _code(exc) != "BucketAlreadyOwnedByYou":
                raise _translate(exc, f"create bucket '{self._bucket}'", self) from exc
        except boto_exc.BotoCoreError as exc:
            raise _translate(exc, f"create bucket '{self._bucket}'", self) from exc
        cors = {"CORSRules": [{
            "AllowedOrigins": list(cors_origins), "AllowedMethods": ["GET", "PUT", "HEAD"],
            "AllowedHeaders": ["*"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 3600,
        }]}
        self._call(f"apply CORS to '{self._bucket}'", self._client.put_bucket_cors,
                   Bucket=self._bucket, CORSConfiguration=cors)

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (boto_exc.ClientError, boto_exc.BotoCoreError) as exc:
            raise _translate(exc, what, self) from exc


# --------------------------------------------------------------------------- helpers

_SESSION_LOCK = threading.Lock()
_SHARED_SESSION: Any = None


def _shared_session() -> Any:
    """One boto3 session for every store with explicit keys: its loader keeps botocore's S3
    model, so opening another bucket costs milliseconds instead of re-reading the JSON."""
    global _SHARED_SESSION
    with _SESSION_LOCK:
        if _SHARED_SESSION is None:
            _SHARED_SESSION = boto3.session.Session()
        return _SHARED_SESSION



def _with_length(headers: dict[str, str] | None, size: int | None) -> dict[str, str] | None:
    """Headers to sign: binding Content-Length makes the store refuse any other body size."""
    if size is None:
        return headers
    return {**headers, "content-length": str(size)} if headers else {"content-length": str(size)}


def _encode_key(key: str) -> str:
    return quote(key, safe="/-_.~")


def _sha256_b64(hex_digest: str) -> str:
    try:
        raw = bytes.fromhex(hex_digest)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise InvalidInput("sha256 must be 64 hex characters")
    return base64.b64encode(raw).decode()


def _full_object_sha256(value: Any, checksum_type: Any) -> str | None:
    """The hex SHA-256 S3 recorded for the whole object (not a multipart composite)."""
    if not isinstance(value, str) or "-" in value or checksum_type == "COMPOSITE":
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        return None
    return raw.hex() if len(raw) == 32 else None


# Storage classes whose objects cannot be read until restored (GET answers InvalidObjectState).
_ARCHIVE_CLASSES = {"GLACIER", "DEEP_ARCHIVE"}


def classify_lifecycle_rules(
    rules: Sequence[dict[str, Any]],
) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    """(rules that delete or archive current objects, rules that only clean up, whether some
    rule expires noncurrent versions), each rule described for a person. Disabled rules are
    ignored; transitions to classes that stay readable (IA, Intelligent-Tiering, Glacier
    Instant Retrieval) only change the price and are not reported."""
    expiring: list[str] = []
    cleanup: list[str] = []
    noncurrent = False
    for rule in rules:
        if rule.get("Status") != "Enabled":
            continue
        name = f"rule '{rule.get('ID') or '(no id)'}'"
        where = _rule_scope(rule)
        expiration = rule.get("Expiration") or {}
        if "Days" in expiration:
            expiring.append(f"{name} deletes current objects {where} {expiration['Days']} days "
                            "after they are written")
        if "Date" in expiration:
            expiring.append(f"{name} deletes current objects {where} on {expiration['Date']}")
        if expiration.get("ExpiredObjectDeleteMarker"):
            cleanup.append(f"{name} removes expired delete markers {where}")
        for transition in rule.get("Transitions") or []:
            if transition.get("StorageClass") in _ARCHIVE_CLASSES:
                when = (f"after {transition['Days']} days" if "Days" in transition
                        else f"on {transition.get('Date')}")
                expiring.append(f"{name} moves current objects {where} to "
                                f"{transition['StorageClass']} {when} (unreadable until "
                                "restored)")
        if "NoncurrentVersionExpiration" in rule:
            days = rule["NoncurrentVersionExpiration"].get("NoncurrentDays")
            cleanup.append(f"{name} deletes noncurrent versions {where} after {days} days")
            noncurrent = True
        if "AbortIncompleteMultipartUpload" in rule:
            days = rule["AbortIncompleteMultipartUpload"].get("DaysAfterInitiation")
            cleanup.append(f"{name} aborts incomplete multipart uploads {where} after {days} "
                           "days")
    return tuple(expiring), tuple(cleanup), noncurrent


def _rule_scope(rule: dict[str, Any]) -> str:
    """'under prefix 'p/'', 'in the whole bucket', plus tag conditions, for messages."""
    flt = rule.get("Filter") or {}
    both = flt.get("And") or {}
    prefix = flt.get("Prefix", both.get("Prefix", rule.get("Prefix", "")))
    tags = [flt["Tag"]] if "Tag" in flt else list(both.get("Tags") or [])
    where = f"under prefix '{prefix}'" if prefix else "in the whole bucket"
    if tags:
        where += " tagged " + ", ".join(f"{t.get('Key')}={t.get('Value')}" for t in tags)
    return where


def content_disposition(name: str) -> str:
    """``attachment`` with an ASCII fallback and the RFC 5987 UTF-8 name."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1] or "download"
    fallback = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"%' else "_" for c in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _code(exc: boto_exc.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _translate(exc: Exception, what: str, store: S3Store) -> SatchelError:
    """A botocore error as a Satchel error that says what to fix; never includes secrets."""
    where = f"bucket '{store.bucket}' at {store._endpoint or 'AWS S3'}"
    if isinstance(exc, boto_exc.ClientError):
        code = _code(exc)
        message = str(exc.response.get("Error", {}).get("Message", ""))[:200]
        detail = f"{code}: {message}" if message else code
        details = {"code": code}
        if code == "NoSuchBucket":
            return NotFound(f"cannot {what}: {where} does not exist; check the bucket name in "
                            "the storage address", details=details)
        if code == "NoSuchUpload":
            return NotFound(f"cannot {what}: no such multipart upload (it was completed or "
                            "aborted)", details=details)
        if code in _NOT_FOUND_CODES:
            return NotFound(f"cannot {what}: the object does not exist in {where}",
                            details=details)
        if code in _CREDENTIAL_CODES:
            return PermissionDenied(
                f"cannot {what}: {where} rejected the credentials ({code}); an admin should "
                "check the access key and secret in the storage address (and the region)",
                details=details)
        if code.startswith("KMS.") or "kms" in message.lower():
            return PermissionDenied(
                f"cannot {what}: the KMS key of {where} is not usable ({detail}); check the "
                "key ARN and grant kms:GenerateDataKey and kms:Decrypt to the credentials",
                details=details)
        if code in _DENIED_CODES:
            return PermissionDenied(
                f"cannot {what}: access denied by {where}; grant these credentials the "
                "permission for this operation (satchel storage policy prints one)",
                details=details)
        if code in _CHECKSUM_CODES:
            return ChecksumMismatch(f"cannot {what}: the store rejected the checksum ({code})",
                                    details=details)
        if code in _REGION_CODES:
            return StorageError(f"cannot {what}: {where} is in another region ({detail}); "
                                "set ?region= in the storage address", details=details)
        if code == "RequestTimeTooSkewed":
            return StorageError(f"cannot {what}: this server's clock differs too much from the "
                                "store's; synchronise it (NTP)", details=details)
        if code in {"InvalidPart", "InvalidPartOrder", "EntityTooSmall", "InvalidArgument",
                    "InvalidRequest", "KeyTooLongError"}:
            return InvalidInput(f"cannot {what}: {detail}", details=details)
        if code in _UNAVAILABLE_CODES:
            return StorageUnavailable(f"cannot {what}: {where} is unavailable ({detail}); "
                                      "try again later", details=details)
        return StorageError(f"cannot {what}: {where} answered {detail}", details=details)
    if isinstance(exc, boto_exc.SSLError):
        return StorageUnavailable(
            f"cannot {what}: TLS connection to {where} failed; check tls= in the address and "
            "that the endpoint's certificate is trusted")
    if isinstance(exc, boto_exc.ConnectionError | boto_exc.HTTPClientError):
        return StorageUnavailable(
            f"cannot {what}: cannot reach {where} ({type(exc).__name__}); check the endpoint, "
            "the network and tls=")
    if isinstance(exc, boto_exc.NoCredentialsError | boto_exc.PartialCredentialsError):
        return PermissionDenied(f"cannot {what}: no usable credentials for {where}")
    if isinstance(exc, boto_exc.ParamValidationError):
        return InvalidInput(f"cannot {what}: {exc}")
    return StorageError(f"cannot {what}: {type(exc).__name__} talking to {where}")


def open_s3(address: StorageAddress, context: StoreContext) -> S3Store:
    return S3Store.from_address(address)
