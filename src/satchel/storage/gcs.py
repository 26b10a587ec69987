"""The Google Cloud Storage provider (``gs://``), over google-cloud-storage.

Credentials: the address carries a service account (``gs://<email>:<key>@<bucket>``, where the
URL-encoded key is the PEM private key or the whole service-account JSON), or none, in which case
the ambient credentials (GOOGLE_APPLICATION_CREDENTIALS, the metadata server) are used, resolved
lazily on first use. With an explicit key the JSON API is called with *self-signed JWTs* (Google's
"JWT access" for service accounts), so the server never asks oauth2.googleapis.com for a token.

Data path: V4 signed URLs (GOOG4-RSA-SHA256) on the XML API, path style
``<endpoint>/<bucket>/<key>``. A PUT binds ``Content-Length`` and, when given, ``Content-MD5`` and
``Content-Type`` as signed headers: GCS refuses the request unless they are sent as signed, and it
answers ``BadDigest`` when the body does not match the MD5. GCS has no SHA-256 it verifies, so
``verifies_sha256`` is False. Batch signing parses the RSA key once and shares everything but the
per-URL part of the canonical request.

Large uploads use *resumable sessions* (GCS's XML multipart API is not available everywhere, e.g.
fake-gcs-server): ``create_multipart`` opens a session with the JSON API and returns the session
URI as ``upload_id``. Every part except the last is exactly :data:`PART_SIZE` bytes (advertised as
min = max part size), so part ``n`` always starts at ``(n - 1) * PART_SIZE`` and a part re-sent
after an interruption carries the same ``Content-Range`` as before; GCS accepts a chunk that
overlaps bytes it already persisted. ``complete_multipart`` finalises with ``bytes */<total>``
(which also reports how much the session has committed when parts are missing), ``abort``
DELETEs the session. GCS cannot list open sessions, so each one is recorded by a tiny marker
object next to its key (``<key>.satchel-upload-<id>``); markers are hidden from listings and
removed on complete/abort, which lets the collector find and abort abandoned uploads.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from email.message import Message
from email.parser import BytesParser
from typing import Any, NoReturn, cast
from urllib.parse import parse_qs, quote, urlsplit

import google.auth
import google.auth.credentials
import google.auth.exceptions
import google.auth.iam
import requests
from google.api_core import exceptions as api_exceptions
from google.api_core.client_options import ClientOptions
from google.auth.transport.requests import AuthorizedSession
from google.auth.transport.requests import Request as AuthRequest
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY
from google.oauth2 import service_account

from satchel.errors import (
    InvalidInput,
    InvalidKey,
    InvalidStorageAddress,
    NotFound,
    PermissionDenied,
    SatchelError,
    StorageError,
    StorageUnavailable,
)
from satchel.storage.address import StorageAddress
from satchel.storage.base import (
    Capabilities,
    CompletedPart,
    DeleteResult,
    ListPage,
    MultipartUpload,
    ObjectInfo,
    PresignedRequest,
)
from satchel.storage.gcs_signing import (
    SCOPES,
    ServiceAccountKey,
    SignItem,
    V4Signer,
    content_disposition,
    jwt_credentials,
    parse_service_account,
)
from satchel.storage.keys import validate_key
from satchel.storage.registry import StoreContext

DEFAULT_ENDPOINT = "https://storage.googleapis.com"
# Every part but the last; a multiple of 256 KiB as resumable sessions require, and GCS's
# recommended minimum chunk size for throughput.
PART_SIZE = 8 * 1024 * 1024
MAX_OBJECT_SIZE = 5 * 1024**4  # 5 TiB
MAX_EXPIRES = 7 * 24 * 3600  # V4 signed URLs live at most 7 days
SESSION_LIFETIME = timedelta(days=7)  # resumable session URIs expire a week after creation
_MARKER_INFIX = ".satchel-upload-"
_MARKER_RE = re.compile(r"\.satchel-upload-[0-9a-f]{16}$")
_BATCH_LIMIT = 100  # GCS accepts at most 100 calls per batch request
_RANGE_RE = re.compile(r"bytes=0-(\d+)")

Clock = Callable[[], float]


# --------------------------------------------------------------------------- the store


class GcsStore:
    scheme = "gs"

    def __init__(
        self,
        bucket: str,
        *,
        service_account_key: ServiceAccountKey | None = None,
        endpoint: str | None = None,
        browser_origin: str | None = None,
        clock: Clock = time.time,
        timeout: tuple[float, float] = (3.05, 30.0),
        retry_timeout: float = 20.0,
    ) -> None:
        self._bucket_name = bucket
        self._endpoint = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
        if urlsplit(self._endpoint).scheme not in {"http", "https"}:
            raise InvalidStorageAddress(
                "the GCS endpoint must be an http(s) URL such as https://storage.googleapis.com"
            )
        self._sa = service_account_key
        self._origin = browser_origin
        self._clock = clock
        self._timeout = timeout
        self._retry = DEFAULT_RETRY.with_timeout(retry_timeout).with_delay(
            initial=0.1, maximum=2.0, multiplier=2.0
        )
        self._retry_timeout = retry_timeout
        self._lock = threading.Lock()
        self._client_obj: Any = None
        self._signer_obj: V4Signer | None = None
        self._credentials_obj: google.auth.credentials.Credentials | None = None
        self._authed_obj: Any = None
        self._http = requests.Session()
        self._caps = Capabilities(
            presign=True, multipart=True, verifies_sha256=False, verifies_md5=True,
            server_side_copy=True, batch_delete=True, needs_cors=True,
            min_part_size=PART_SIZE, max_part_size=PART_SIZE,
            max_parts=MAX_OBJECT_SIZE // PART_SIZE, sequential_parts=True,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    @property
    def bucket(self) -> str:
        return self._bucket_name

    @property
    def identity(self) -> str:
        """The principal that must be granted on the bucket (for messages and the doctor)."""
        return self._sa.email if self._sa else "the ambient Google credentials"

    # ----------------------------------------------------------------- lazy clients

    def _credentials(self) -> google.auth.credentials.Credentials:
        if self._credentials_obj is None:
            if self._sa is not None:
                self._credentials_obj = jwt_credentials(self._sa)
            else:
                with self._errors("load the ambient Google credentials"):
                    creds, _ = google.auth.default(scopes=list(SCOPES))
                if isinstance(creds, service_account.Credentials):
                    creds = creds.with_always_use_jwt_access(True)  # type: ignore[no-untyped-call]
                self._credentials_obj = creds
        return self._credentials_obj

    @property
    def _client(self) -> Any:
        with self._lock:
            if self._client_obj is None:
                self._client_obj = self._new_client()
            return self._client_obj

    def _new_client(self) -> Any:
        project = self._sa.project_id if self._sa else None
        return storage.Client(
            project=project,
            credentials=self._credentials(),
            client_options=ClientOptions(api_endpoint=self._endpoint),
        )

    @property
    def _signer(self) -> V4Signer:
        with self._lock:
            if self._signer_obj is None:
                self._signer_obj = self._make_signer()
            return self._signer_obj

    def _make_signer(self) -> V4Signer:
        if self._sa is not None:
            return V4Signer(self._sa.email, self._sa.sign, self._endpoint, self._bucket_name)
        creds = self._credentials()
        if isinstance(creds, google.auth.credentials.Signing):
            return V4Signer(creds.signer_email, creds.sign_bytes, self._endpoint,
                            self._bucket_name)
        # Ambient credentials without a private key (GCE, Cloud Run, workload identity): sign
        # through the IAM signBlob API; needs roles/iam.serviceAccountTokenCreator on itself.
        with self._errors("find the ambient service account for URL signing"):
            request = AuthRequest()
            creds.refresh(request)  # type: ignore[no-untyped-call]
            email = str(getattr(creds, "service_account_email", "") or "")
        if not email or email == "default":
            raise PermissionDenied(
                "the ambient Google credentials cannot sign URLs (no service account); put a "
                "service-account key in the address: gs://<email>:<urlEncodedKey>@<bucket>"
            )
        iam_signer = google.auth.iam.Signer(request, creds, email)  # type: ignore[no-untyped-call]
        return V4Signer(email, iam_signer.sign, self._endpoint, self._bucket_name)

    def _bucket(self) -> Any:
        return self._client.bucket(self._bucket_name)

    # ----------------------------------------------------------------- errors

    @contextlib.contextmanager
    def _errors(self, action: str, key: str | None = None) -> Iterator[None]:
        try:
            yield
        except SatchelError:
            raise
        except Exception as exc:
            raise self._translate(exc, action, key) from exc

    def _translate(self, exc: BaseException, action: str, key: str | None) -> SatchelError:
        if isinstance(exc, api_exceptions.RetryError) and exc.cause is not None:
            exc = exc.cause
        where = f"gs://{self._bucket_name}"
        denied = (api_exceptions.Unauthorized, api_exceptions.Forbidden,
                  google.auth.exceptions.RefreshError)
        if isinstance(exc, denied):
            return PermissionDenied(
                f"GCS refused to {action} in {where} (HTTP {getattr(exc, 'code', 401)}); "
                f"grant {self.identity} the role roles/storage.objectAdmin on the bucket, and "
                "check that the key in the address is current (a deleted or wrong key is "
                "refused)",
                details={"bucket": self._bucket_name, "identity": self.identity},
            )
        if isinstance(exc, api_exceptions.NotFound):
            message = str(getattr(exc, "message", "")).lower()
            if key is None or ("bucket" in message and "not exist" in message):
                return NotFound(
                    f"bucket '{self._bucket_name}' does not exist (or {self.identity} cannot "
                    "see it); create it or fix the bucket name in the address",
                    details={"bucket": self._bucket_name},
                )
            return NotFound(f"object '{key}' does not exist in {where}")
        if _is_unavailable(exc):
            return StorageUnavailable(
                f"cannot reach GCS at {self._endpoint} to {action} ({type(exc).__name__}); "
                "check the endpoint, DNS and firewall, then retry",
                details={"endpoint": self._endpoint},
            )
        if isinstance(exc, google.auth.exceptions.DefaultCredentialsError):
            return PermissionDenied(
                "no ambient Google credentials were found; set GOOGLE_APPLICATION_CREDENTIALS "
                "or put a key in the address: gs://<email>:<urlEncodedKey>@<bucket>"
            )
        if isinstance(exc, api_exceptions.GoogleAPICallError):
            text = str(getattr(exc, "message", "") or "")[:200]
            return StorageError(f"GCS answered HTTP {exc.code} while trying to {action} in "
                                f"{where}: {text}")
        return StorageError(f"GCS client error while trying to {action} in {where}: "
                            f"{type(exc).__name__}")

    # ----------------------------------------------------------------- presigned data path

    def _expires(self, expires_in: int) -> int:
        if not 1 <= expires_in <= MAX_EXPIRES:
            raise InvalidInput(f"expires_in must be between 1 and {MAX_EXPIRES} seconds "
                               "(GCS V4 signed URLs live at most 7 days)")
        return int(expires_in)

    def _sign(self, items: Sequence[SignItem], expires_in: int) -> list[PresignedRequest]:
        expires = self._expires(expires_in)
        return self._signer.sign_many(items, now=self._clock(), expires_in=expires)

    def presign_get(
        self, key: str, *, expires_in: int, download_name: str | None = None
    ) -> PresignedRequest:
        query = {}
        if download_name:
            query["response-content-disposition"] = content_disposition(download_name)
        return self._sign([SignItem("GET", _check_key(key), {}, query)], expires_in)[0]

    def presign_head(self, key: str, *, expires_in: int) -> PresignedRequest:
        return self._sign([SignItem("HEAD", _check_key(key), {}, {})], expires_in)[0]

    def _put_item(self, key: str, size: int | None, content_md5: str | None,
                  content_type: str | None) -> SignItem:
        headers: dict[str, str] = {}
        signed_only: dict[str, str] = {}
        if size is not None:
            if size < 0 or size > MAX_OBJECT_SIZE:
                raise InvalidInput(f"size must be between 0 and {MAX_OBJECT_SIZE} bytes")
            # Signed, but not returned: every HTTP client sends it for a sized body, browsers
            # may not set it by hand, and it must not ride along on other methods.
            signed_only["Content-Length"] = str(size)
        if content_md5 is not None:
            headers["Content-MD5"] = _check_md5(content_md5)
        if content_type:
            headers["Content-Type"] = content_type
        return SignItem("PUT", _check_key(key), headers, {}, signed_only)

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
        # sha256 cannot be bound: GCS keeps and checks only MD5/CRC32C (see verifies_sha256).
        item = self._put_item(key, size, content_md5, content_type)
        return self._sign([item], expires_in)[0]

    def presign_put_many(
        self, keys: Sequence[tuple[str, int | None, str | None]], *, expires_in: int
    ) -> list[PresignedRequest]:
        items = [self._put_item(k, size, None, None) for k, size, _ in keys]
        return self._sign(items, expires_in)

    def presign_get_many(self, keys: Sequence[str], *, expires_in: int) -> list[PresignedRequest]:
        return self._sign([SignItem("GET", _check_key(k), {}, {}) for k in keys], expires_in)

    # ----------------------------------------------------------------- resumable sessions

    def _marker_key(self, upload: MultipartUpload) -> str:
        digest = hashlib.sha256(upload.upload_id.encode()).hexdigest()[:16]
        return f"{upload.key}{_MARKER_INFIX}{digest}"

    def _session_uri(self, upload: MultipartUpload) -> str:
        """The upload id is a session URI; accept only ours (it is fetched server-side)."""
        _check_key(upload.key)
        uri = upload.upload_id
        parts, base = urlsplit(uri), urlsplit(self._endpoint)
        path = f"/upload/storage/v1/b/{self._bucket_name}/o"
        query = parse_qs(parts.query)
        # Our endpoint, or GCS's global host (private endpoints may hand out either).
        hosts = {(base.scheme, base.netloc), ("https", "storage.googleapis.com")}
        if (
            (parts.scheme, parts.netloc) not in hosts
            or parts.path not in {path, base.path.rstrip("/") + path}
            or not query.get("upload_id")
            or query.get("name", [upload.key]) != [upload.key]
        ):
            raise NotFound("no such multipart upload: the upload id is not a resumable-session "
                           f"URI for '{upload.key}' in gs://{self._bucket_name}")
        return uri

    def create_multipart(self, key: str, *, content_type: str | None = None) -> MultipartUpload:
        _check_key(key)
        now = datetime.fromtimestamp(self._clock(), tz=UTC)
        # A 404 on a write can only mean the bucket is missing: no key for _errors.
        with self._errors("start a resumable upload"):
            uri = self._bucket().blob(key).create_resumable_upload_session(
                content_type=content_type or "application/octet-stream",
                origin=self._origin, timeout=self._timeout, checksum=None, retry=self._retry,
            )
        upload = MultipartUpload(key, str(uri), now)
        try:
            self._session_uri(upload)  # the server must hand back a URI we will accept later
        except NotFound:
            raise StorageError(f"GCS answered with a session URI on an unexpected host "
                               f"({urlsplit(upload.upload_id).netloc}); check the endpoint "
                               "in the address") from None
        marker = self._bucket().blob(self._marker_key(upload))
        marker.metadata = {"satchel-upload-key": key, "satchel-upload-id": upload.upload_id}
        try:
            with self._errors("record the resumable upload"):
                marker.upload_from_string(
                    json.dumps({"key": key, "upload_id": upload.upload_id}).encode(),
                    content_type="application/json", timeout=self._timeout, retry=self._retry,
                )
        except SatchelError:
            with contextlib.suppress(SatchelError):
                self._session_call("DELETE", upload, {}, "cancel the resumable upload")
            raise
        return upload

    def presign_part(
        self, upload: MultipartUpload, part_number: int, *, expires_in: int, size: int | None = None
    ) -> PresignedRequest:
        uri = self._session_uri(upload)
        expires = self._expires(expires_in)
        if not 1 <= part_number <= self._caps.max_parts:
            raise InvalidInput(f"part number must be between 1 and {self._caps.max_parts}")
        size = PART_SIZE if size is None else size
        if not 0 <= size <= PART_SIZE:
            raise InvalidInput(f"GCS parts are exactly {PART_SIZE} bytes except the last, "
                               f"which may be smaller; got {size}")
        start = (part_number - 1) * PART_SIZE
        if size == 0:
            if part_number != 1:
                raise InvalidInput("an empty part is only allowed for an empty object; "
                                   "complete the upload instead")
            content_range = "bytes */0"
        elif size < PART_SIZE:  # the last part: name the total so GCS finalises the object
            content_range = f"bytes {start}-{start + size - 1}/{start + size}"
        else:
            content_range = f"bytes {start}-{start + size - 1}/*"
        now = datetime.fromtimestamp(self._clock(), tz=UTC)
        expires_at = now + timedelta(seconds=expires)
        if upload.initiated is not None:
            expires_at = min(expires_at, upload.initiated + SESSION_LIFETIME)
        return PresignedRequest(
            url=uri, method="PUT",
            headers={"Content-Range": content_range},
            expires_at=expires_at,
        )

    def _session_call(self, method: str, upload: MultipartUpload, headers: dict[str, str],
                      action: str) -> requests.Response:
        """A request to the session URI (no credentials: the URI itself is the capability)."""
        uri = self._session_uri(upload)
        deadline = time.monotonic() + self._retry_timeout
        delay = 0.1
        while True:
            try:
                resp = self._http.request(method, uri, headers=headers, data=b"",
                                          timeout=self._timeout, allow_redirects=False)
            except requests.RequestException as exc:
                if time.monotonic() + delay > deadline:
                    # The URI is a bearer capability: do not let it reach the message.
                    raise StorageUnavailable(
                        f"cannot reach GCS at {self._endpoint} to {action} "
                        f"({type(exc).__name__}); retry later"
                    ) from None
            else:
                if resp.status_code not in {500, 502, 503, 504} or (
                    time.monotonic() + delay > deadline
                ):
                    return resp
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def complete_multipart(
        self, upload: MultipartUpload, parts: Sequence[CompletedPart]
    ) -> ObjectInfo:
        self._session_uri(upload)
        if not parts:
            raise InvalidInput("a multipart upload needs at least one part")
        numbers = [p.number for p in parts]
        if numbers != list(range(1, len(parts) + 1)):
            raise InvalidInput("GCS uploads are sequential: list parts 1..N without gaps")
        total: int | None = None
        if all(p.size is not None for p in parts):
            sizes = [cast(int, p.size) for p in parts]
            if any(s != PART_SIZE for s in sizes[:-1]) or sizes[-1] > PART_SIZE:
                raise InvalidInput(f"every GCS part but the last must be {PART_SIZE} bytes")
            total = sum(sizes)
        resp = self._session_call(
            "PUT", upload, {"Content-Range": f"bytes */{'*' if total is None else total}"},
            "finish the resumable upload",
        )
        if resp.status_code == 308 and total is None:
            # Unknown total: the status answer says how much is committed; finalise at that.
            match = _RANGE_RE.search(resp.headers.get("Range", ""))
            total = int(match.group(1)) + 1 if match else 0
            resp = self._session_call("PUT", upload, {"Content-Range": f"bytes */{total}"},
                                      "finish the resumable upload")
        if resp.status_code in {200, 201}:
            info = _info_from_json(upload.key, resp.json())
        elif resp.status_code == 308:
            match = _RANGE_RE.search(resp.headers.get("Range", ""))
            have = int(match.group(1)) + 1 if match else 0
            raise InvalidInput(
                f"the upload is incomplete: GCS has {have} of {total} bytes; re-send the "
                "missing parts, then complete again",
                details={"committed": have, "expected": total},
            )
        elif resp.status_code in {404, 410}:
            # The session is gone: finalised by its last part (and already forgotten), expired
            # or aborted. Only an object of the expected size counts as done.
            found = self.head(upload.key)
            if found is None or (total is not None and found.size != total):
                raise NotFound("no such multipart upload (it expired, was aborted, or the "
                               "object was never finished)")
            info = found
        else:
            self._raise_for_session(resp, "finish the resumable upload")
        if total is not None and info.size != total:
            raise StorageError(f"GCS stored {info.size} bytes but the parts add up to {total}")
        self._delete_marker(upload)
        return info

    def _raise_for_session(self, resp: requests.Response, action: str) -> NoReturn:
        code = resp.status_code
        if code in {401, 403}:
            raise PermissionDenied(f"GCS refused to {action} (HTTP {code})")
        if code >= 500:
            raise StorageUnavailable(f"GCS could not {action} (HTTP {code}); retry later")
        raise StorageError(f"GCS answered HTTP {code} while trying to {action}")

    def abort_multipart(self, upload: MultipartUpload) -> None:
        resp = self._session_call("DELETE", upload, {}, "cancel the resumable upload")
        # 499 is GCS's answer to a cancelled session; 404/410: already gone.
        if resp.status_code not in {200, 204, 404, 410, 499}:
            self._raise_for_session(resp, "cancel the resumable upload")
        self._delete_marker(upload)

    def _delete_marker(self, upload: MultipartUpload) -> None:
        with self._errors("forget the resumable upload", upload.key), \
                contextlib.suppress(api_exceptions.NotFound):
            self._bucket().delete_blob(self._marker_key(upload), timeout=self._timeout,
                                       retry=self._retry)

    def list_multipart_uploads(self, prefix: str) -> Iterator[MultipartUpload]:
        # Markers sit next to their keys, so this pages through everything under the prefix.
        token: str | None = None
        while True:
            blobs, token = self._blob_page(prefix, 1000, token, "list open uploads")
            for blob in blobs:
                if not _MARKER_RE.search(blob.name):
                    continue
                meta = blob.metadata or {}
                key, upload_id = meta.get("satchel-upload-key"), meta.get("satchel-upload-id")
                if key and upload_id and key.startswith(prefix):
                    yield MultipartUpload(key, upload_id, blob.time_created)
            if token is None:
                return

    # ----------------------------------------------------------------- server-side operations

    def head(self, key: str) -> ObjectInfo | None:
        blob = self._bucket().blob(_check_key(key))
        try:
            blob.reload(timeout=self._timeout, retry=self._retry)
        except api_exceptions.NotFound as exc:
            message = str(exc.message).lower()
            if "bucket" in message and "not exist" in message:
                raise self._translate(exc, "read object metadata", None) from exc
            return None
        except Exception as exc:
            raise self._translate(exc, "read object metadata", key) from exc
        return _info_from_blob(blob)

    def _blob_page(self, prefix: str, page_size: int, token: str | None, action: str
                   ) -> tuple[list[Any], str | None]:
        with self._errors(action):
            iterator = self._client.list_blobs(
                self._bucket_name, prefix=prefix or None, page_size=page_size,
                page_token=token, timeout=self._timeout, retry=self._retry,
            )
            page = next(iterator.pages, None)
            blobs = list(page) if page is not None else []
            return blobs, iterator.next_page_token or None

    def list_page(
        self, prefix: str, *, page_size: int = 1000, token: str | None = None
    ) -> ListPage:
        blobs, next_token = self._blob_page(prefix, page_size, token, "list objects")
        # Folder placeholders (console-made "dir/") and upload markers are not objects.
        objects = [
            _info_from_blob(b) for b in blobs
            if not b.name.endswith("/") and not _MARKER_RE.search(b.name)
        ]
        return ListPage(objects, next_token)

    def delete_many(self, keys: Sequence[str]) -> DeleteResult:
        result = DeleteResult()
        valid: list[str] = []
        for key in keys:
            try:
                valid.append(_check_key(key))
            except InvalidKey as exc:
                result.failed[key] = str(exc)
        for i in range(0, len(valid), _BATCH_LIMIT):
            chunk = valid[i:i + _BATCH_LIMIT]
            statuses = self._delete_batch(chunk)
            for key, status in zip(chunk, statuses, strict=True):
                # 404: already gone, which is what the caller wanted.
                if 200 <= status < 300 or status == 404:
                    result.deleted.append(key)
                else:
                    result.failed[key] = f"GCS answered HTTP {status}"
        return result

    def _delete_batch(self, keys: list[str]) -> list[int]:
        """One JSON-API batch request (GCS's documented multipart/mixed format, with a
        Content-ID per part). Written by hand rather than with the SDK's ``client.batch()``,
        which captures every call made through the client, from any thread, while it is open."""
        boundary = f"satchel-{secrets.token_hex(12)}"
        base = f"{self._endpoint}/storage/v1/b/{quote(self._bucket_name, safe='')}/o/"
        # Absolute request targets, as google-cloud-storage itself sends them.
        parts = [
            f"--{boundary}\r\nContent-Type: application/http\r\nContent-ID: <item{n}>\r\n\r\n"
            # The CRLF before the next boundary belongs to the boundary, hence three.
            f"DELETE {base}{quote(key, safe='')} HTTP/1.1\r\nContent-Length: 0\r\n\r\n\r\n"
            for n, key in enumerate(keys)
        ]
        body = ("".join(parts) + f"--{boundary}--\r\n").encode()
        headers = {"Content-Type": f"multipart/mixed; boundary={boundary}"}

        def post() -> Any:
            resp = self._authed().post(f"{self._endpoint}/batch/storage/v1", data=body,
                                       headers=headers, timeout=self._timeout)
            if resp.status_code >= 400:
                raise api_exceptions.from_http_response(resp)  # type: ignore[no-untyped-call]
            return resp

        with self._errors("delete objects"):
            resp = self._retry(post)()
        statuses = _batch_statuses(resp.headers.get("Content-Type", ""), resp.content)
        return [statuses.get(f"item{n}", 500) for n in range(len(keys))]

    def _authed(self) -> Any:
        with self._lock:
            if self._authed_obj is None:
                self._authed_obj = AuthorizedSession(self._credentials())  # type: ignore[no-untyped-call]
            return self._authed_obj

    def copy(self, src_key: str, dst_key: str) -> None:
        bucket = self._bucket()
        src, dst = bucket.blob(_check_key(src_key)), bucket.blob(_check_key(dst_key))
        token: str | None = None
        with self._errors("copy an object", src_key):
            while True:  # large objects are rewritten in several calls
                token, _, _ = dst.rewrite(src, token=token, timeout=self._timeout,
                                          retry=self._retry)
                if token is None:
                    return

    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> ObjectInfo:
        blob = self._bucket().blob(_check_key(key))
        with self._errors("write an object"):
            blob.upload_from_string(data, content_type=content_type or "application/octet-stream",
                                    timeout=self._timeout, retry=self._retry)
        return _info_from_blob(blob)

    def get_bytes(self, key: str) -> bytes:
        blob = self._bucket().blob(_check_key(key))
        with self._errors("read an object", key):
            return cast(bytes, blob.download_as_bytes(timeout=self._timeout, retry=self._retry))


# --------------------------------------------------------------------------- helpers


def _check_key(key: str) -> str:
    validate_key(key)
    if _MARKER_RE.search(key):
        raise InvalidKey(f"keys ending in '{_MARKER_INFIX}<id>' are reserved for upload markers")
    return key


def _check_md5(value: str) -> str:
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 16:
        raise InvalidInput("content_md5 must be the base64 of a 16-byte MD5 digest")
    return value


def _batch_statuses(content_type: str, body: bytes) -> dict[str, int]:
    """Content-ID (without the ``response-`` prefix) -> HTTP status of each batch answer."""
    message = BytesParser().parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    statuses: dict[str, int] = {}
    for part in message.get_payload() if message.is_multipart() else []:
        if not isinstance(part, Message):
            continue
        cid = str(part.get("Content-ID", "")).strip("<>").removeprefix("response-")
        payload = part.get_payload(decode=False)
        match = re.match(r"HTTP/1\.[01] (\d{3})", str(payload).lstrip())
        if cid and match:
            statuses[cid] = int(match.group(1))
    return statuses


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, google.auth.exceptions.TransportError):
        return True
    if isinstance(exc, (requests.ConnectionError, requests.Timeout, ConnectionError,
                        TimeoutError)):
        return True
    return isinstance(exc, (api_exceptions.ServiceUnavailable, api_exceptions.BadGateway,
                            api_exceptions.GatewayTimeout, api_exceptions.InternalServerError,
                            api_exceptions.TooManyRequests))


def _info_from_blob(blob: Any) -> ObjectInfo:
    return ObjectInfo(key=str(blob.name), size=int(blob.size or 0), etag=blob.etag,
                      last_modified=blob.updated)


def _info_from_json(key: str, data: Any) -> ObjectInfo:
    updated = data.get("updated") if isinstance(data, dict) else None
    return ObjectInfo(
        key=key, size=int(data.get("size", 0)) if isinstance(data, dict) else 0,
        etag=data.get("etag") if isinstance(data, dict) else None,
        last_modified=datetime.fromisoformat(updated) if isinstance(updated, str) else None,
    )


def _browser_origin(public_url: str) -> str | None:
    parts = urlsplit(public_url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


def open_gcs(address: StorageAddress, context: StoreContext) -> GcsStore:
    key = None
    if address.secret is not None:
        key = parse_service_account(address.access_key, address.secret.get_secret_value())
    return GcsStore(address.bucket, service_account_key=key, endpoint=address.endpoint,
                    browser_origin=_browser_origin(context.public_url))
