"""The ``az`` provider: Azure Blob Storage through azure-storage-blob.

Addresses (DESIGN §4)::

    az://:<urlEncodedAccountKey>@<account>/<container>   shared key: SAS signed with the key
    az://<account>/<container>                          ambient: DefaultAzureCredential + a
                                                        user delegation key signs the SAS
    ...?endpoint=http://127.0.0.1:10000/devstoreaccount1  blob service URL override (Azurite,
                                                        sovereign clouds, private endpoints)

Presigned requests are service SAS URLs scoped to one blob. A SAS binds the blob, permissions
and expiry, but no request headers, so the headers in :class:`PresignedRequest` are what the
client must send (``x-ms-blob-type: BlockBlob``; ``Content-MD5``, which Azure verifies on Put
Blob) and the size is enforced at commit time by the caller's ``head`` check.

"Multipart" maps onto block lists. Azure has no upload object, so the upload id is ours: 32 hex
characters (8 of creation time in seconds, 24 random), plus ``.<base64url content type>`` when
one was given. ``create_multipart`` stages a small marker block (part 0) so the upload is
visible before its first part. Part *n* is a Put Block whose block id is derived from the upload
id and *n* only (:func:`block_id`), so a re-sent part overwrites the same block; ``complete``
commits the parts' blocks in part order (Put Block List), which also discards every other
uncommitted block of the blob. Abort commits an empty list only if no committed blob exists
(``If-None-Match: *``) and deletes that empty blob again; on an existing blob nothing is
touched and Azure garbage-collects uncommitted blocks after 7 days. Limits of listing uploads
are described on :meth:`AzureStore.list_multipart_uploads`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import (
    BlobBlock,
    BlobServiceClient,
    BlockState,
    ContainerClient,
    ContentSettings,
    ExponentialRetry,
    UserDelegationKey,
    generate_blob_sas,
)

from satchel.errors import (
    InvalidInput,
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
from satchel.storage.keys import validate_key
from satchel.storage.registry import StoreContext

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

Clock = Callable[[], float]

MiB = 1024 * 1024
# Put Block: at most 4000 MiB per block and 50,000 committed blocks (API 2019-12-12 and later).
MAX_BLOCK_SIZE = 4000 * MiB
MAX_BLOCKS = 50_000
MAX_EXPIRES_IN = 7 * 24 * 3600  # user delegation SAS cap; applied to both modes for parity
_BATCH_DELETE = 256  # Blob Batch limit per request
_CONNECT_TIMEOUT = 5
_READ_TIMEOUT = 60
_COPY_DEADLINE = 600.0
_BLOCK_TAG = "sat1-"  # every block id of ours decodes to _BLOCK_TAG + upload core + 5 digits
_CORE_RE = re.compile(r"^[0-9a-f]{32}$")
_MARKER = b"satchel multipart upload marker"


def block_id(upload_id: str, part_number: int) -> str:
    """The wire (base64) block id of ``part_number`` (0 = the upload's marker).

    Deterministic, so a re-sent part overwrites its block, and of fixed length, because Azure
    requires every block id of one blob to have the same length: the 32-character upload core
    plus a zero-padded part number (42 bytes -> 56 base64 characters, no padding)."""
    return base64.b64encode(_raw_block_id(upload_id, part_number).encode()).decode()


def _raw_block_id(upload_id: str, part_number: int) -> str:
    # The SDK takes and returns block ids as text and base64-encodes them itself.
    core, _ = _split_upload_id(upload_id)
    if not 0 <= part_number <= MAX_BLOCKS:
        raise InvalidInput(f"part number must be between 1 and {MAX_BLOCKS}")
    return f"{_BLOCK_TAG}{core}{part_number:05d}"


def _core_of_block(raw: str) -> str | None:
    """The upload core of one of our block ids as the SDK lists them (decoded text)."""
    if len(raw) != 42 or not raw.startswith(_BLOCK_TAG):
        return None
    core = raw[len(_BLOCK_TAG):len(_BLOCK_TAG) + 32]
    return core if _CORE_RE.match(core) else None


def _split_upload_id(upload_id: str) -> tuple[str, str | None]:
    core, dot, encoded = upload_id.partition(".")
    if not _CORE_RE.match(core):
        raise NotFound("no such multipart upload (the upload id is not one Satchel issued)")
    if not dot:
        return core, None
    try:
        content_type = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise NotFound("no such multipart upload (malformed upload id)") from None
    return core, content_type


def _content_disposition(name: str) -> str:
    """RFC 6266 attachment header with an ASCII fallback and the exact UTF-8 name."""
    fallback = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\' else "_" for c in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _error_code(exc: AzureError) -> str:
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code) or "")


def _status(exc: AzureError) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


class _Signer:
    """Service SAS for one container, signed with the account key or a user delegation key."""

    def __init__(self, account: str, container: str, account_key: str | None,
                 service: BlobServiceClient, clock: Clock) -> None:
        self.account = account
        self.container = container
        self._account_key = account_key
        self._service = service
        self._clock = clock
        self._lock = threading.Lock()
        self._delegation: tuple[UserDelegationKey, datetime] | None = None

    def _delegation_key(self, expiry: datetime) -> UserDelegationKey:
        """A cached user delegation key valid until at least ``expiry`` (at most 7 days)."""
        with self._lock:
            if self._delegation is not None and self._delegation[1] >= expiry:
                return self._delegation[0]
            now = datetime.fromtimestamp(self._clock(), tz=UTC).replace(microsecond=0)
            # Start a few minutes back for clock skew; keep keys short-lived (a day, or as
            # long as the longest SAS asked for) so revoking the identity's role bites soon.
            key_expiry = min(max(expiry, now + timedelta(days=1)),
                             now + timedelta(seconds=MAX_EXPIRES_IN))
            key = self._service.get_user_delegation_key(now - timedelta(minutes=5), key_expiry)
            self._delegation = (key, key_expiry)
            return key

    def _signing(self, expiry: datetime) -> dict[str, Any]:
        if self._account_key is not None:
            return {"account_key": self._account_key}
        return {"user_delegation_key": self._delegation_key(expiry)}

    def sas(self, key: str, permission: str, expiry: datetime, *,
            content_disposition: str | None = None,
            sts_hook: Callable[[str], None] | None = None) -> str:
        return generate_blob_sas(
            self.account, self.container, key, permission=permission, expiry=expiry,
            content_disposition=content_disposition, sts_hook=sts_hook,
            **self._signing(expiry),
        )

    def sas_many(self, keys: Sequence[str], permission: str, expiry: datetime) -> list[str]:
        """SAS tokens for many blobs with the same permission and expiry.

        generate_blob_sas costs ~0.1-0.2 ms a call (query building and quoting), which adds up
        for 10^4-file artifacts. Tokens of one batch differ only in ``sig``, an HMAC over a
        string-to-sign whose only per-blob part is the canonical resource. So the SDK signs
        the first key (its ``sts_hook`` hands us the string-to-sign), we reuse that template
        with a copied HMAC state, and check the shortcut against the SDK on the second key,
        falling back to the SDK for every key if they ever disagree (new SAS version)."""
        if len(keys) < 3:
            return [self.sas(k, permission, expiry) for k in keys]
        captured: list[str] = []
        first = self.sas(keys[0], permission, expiry, sts_hook=captured.append)
        second = self.sas(keys[1], permission, expiry)
        fast = self._template(first, captured[0] if captured else "", keys[0], expiry)
        if fast is None or fast(keys[1]) != second:
            return [first, second, *(self.sas(k, permission, expiry) for k in keys[2:])]
        return [first, second, *map(fast, keys[2:])]

    def _template(self, token: str, sts: str, key: str, expiry: datetime
                  ) -> Callable[[str], str] | None:
        """A signer that re-uses ``token``/``sts`` (signed for ``key``) for other blobs."""
        resource = f"/blob/{self.account}/{self.container}/"
        marker = f"\n{resource}{key}\n"
        if sts.count(marker) != 1:
            return None
        head, tail = sts.split(marker)
        fields = token.split("&")
        sig_at = [i for i, f in enumerate(fields) if f.startswith("sig=")]
        if len(sig_at) != 1:
            return None
        before, after = fields[:sig_at[0]], fields[sig_at[0] + 1:]
        signing = self._signing(expiry)
        secret = signing.get("account_key") or signing["user_delegation_key"].value
        mac = hmac.new(base64.b64decode(secret), digestmod=hashlib.sha256)

        def sign(blob: str) -> str:
            m = mac.copy()
            m.update(f"{head}\n{resource}{blob}\n{tail}".encode())
            sig = quote(base64.b64encode(m.digest()).decode(), safe="/")
            return "&".join([*before, f"sig={sig}", *after])

        return sign


class AzureStore:
    """One container of one storage account."""

    scheme = "az"

    def __init__(
        self,
        *,
        account: str,
        container: str,
        account_url: str,
        account_key: str | None = None,
        credential: TokenCredential | None = None,
        clock: Clock = time.time,
    ) -> None:
        if (account_key is None) == (credential is None):
            raise ValueError("give exactly one of account_key and credential")
        self.account = account
        self.container = container
        self.account_url = account_url.rstrip("/")
        self._ambient = account_key is None
        self._clock = clock
        import requests
        from requests.adapters import HTTPAdapter

        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        # Short connect timeout and few retries: a closed port or wrong host fails in seconds
        # (the SDK default retries 10 times with a 15 s backoff).
        transport = RequestsTransport(session=session, session_owner=True,
                                      connection_timeout=_CONNECT_TIMEOUT,
                                      read_timeout=_READ_TIMEOUT)
        retry = ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=3,
                                 retry_connect=1, retry_read=1, random_jitter_range=1)
        cred: Any = credential if credential is not None else {
            "account_name": account, "account_key": account_key}
        try:
            self._service = BlobServiceClient(self.account_url, credential=cred,
                                              transport=transport, retry_policy=retry)
        except ValueError as exc:  # e.g. a token credential over http://
            raise InvalidStorageAddress(
                f"cannot use {self.account_url} for Azure Blob storage: {exc} (ambient "
                "credentials need an https endpoint; emulators take the account key)",
                details={"problem": str(exc)}) from exc
        self._container = self._service.get_container_client(container)
        self._signer = _Signer(account, container, account_key, self._service, clock)
        self._caps = Capabilities(
            presign=True, multipart=True, verifies_sha256=False, verifies_md5=True,
            server_side_copy=True, batch_delete=True, needs_cors=True, min_part_size=1,
            max_part_size=MAX_BLOCK_SIZE, max_parts=MAX_BLOCKS, sequential_parts=False,
        )

    # ----------------------------------------------------------------- properties

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    @property
    def bucket(self) -> str:
        return self.container

    @property
    def service_client(self) -> BlobServiceClient:
        """For account-level checks (CORS, soft delete) by the bucket doctor."""
        return self._service

    @property
    def container_client(self) -> ContainerClient:
        return self._container

    # ----------------------------------------------------------------- errors

    @contextlib.contextmanager
    def _errors(self, action: str, key: str | None = None) -> Iterator[None]:
        try:
            yield
        except SatchelError:
            raise
        except AzureError as exc:
            raise self._translate(exc, action, key) from exc

    def _translate(self, exc: AzureError, action: str, key: str | None) -> SatchelError:
        # Only status and error code go into messages: SDK messages quote server text
        # (string-to-sign, signatures) that has no place in logs or API answers.
        code, status = _error_code(exc), _status(exc)
        where = f"container '{self.container}' of storage account '{self.account}'"
        details: dict[str, Any] = {"provider": "az", "action": action, "azure_code": code or None}
        if isinstance(exc, ResourceNotFoundError) or status == 404:
            if code == "ContainerNotFound":
                return NotFound(f"{where} does not exist; create it or fix the address",
                                details=details)
            what = f"object '{key}'" if key else "the resource"
            return NotFound(f"{what} does not exist in {where}", details=details)
        if isinstance(exc, ClientAuthenticationError) or status in {401, 403}:
            return PermissionDenied(f"Azure refused {action} on {where} "
                                    f"({code or status}): {self._auth_hint(exc, code)}",
                                    details=details)
        if isinstance(exc, ServiceRequestError | ServiceResponseError):
            return StorageUnavailable(
                f"cannot reach Azure Blob storage at {self.account_url} ({action}): "
                f"{type(exc).__name__}; check the account name or ?endpoint=, DNS, firewall "
                "and private-endpoint rules", details=details)
        if status in {500, 503}:
            return StorageUnavailable(f"Azure Blob storage is unavailable ({action}: HTTP "
                                      f"{status} {code}); retry later", details=details)
        return StorageError(f"Azure Blob {action} failed on {where}: HTTP {status} {code}",
                            details=details)

    def _auth_hint(self, exc: AzureError, code: str) -> str:
        if type(exc).__name__ == "CredentialUnavailableError" or (
            self._ambient and isinstance(exc, ClientAuthenticationError) and not code
        ):
            return ("no usable ambient Azure credential; on Azure give the server a managed "
                    "identity (set its client id for a user-assigned one) or workload identity, "
                    "or put the account key in the address: az://:<key>@<account>/<container>")
        if not self._ambient:
            return ("the account key was not accepted; copy key1 or key2 from the storage "
                    "account's 'Access keys' page, URL-encode it into "
                    "az://:<key>@<account>/<container>, and check the server clock")
        return ("the managed identity lacks data-plane rights; grant it 'Storage Blob Data "
                "Contributor' on the container and 'Storage Blob Delegator' on the account "
                "(to sign URLs), and check the tenant id")

    # ----------------------------------------------------------------- presigning

    def _expiry(self, expires_in: int) -> datetime:
        if expires_in <= 0:
            raise InvalidInput("expires_in must be a positive number of seconds")
        if expires_in > MAX_EXPIRES_IN:
            raise InvalidInput(f"expires_in must be at most {MAX_EXPIRES_IN} s (7 days)")
        # SAS expiry has one-second resolution: report the expiry the URL really carries.
        return datetime.fromtimestamp(int(self._clock()) + expires_in, tz=UTC)

    def blob_url(self, key: str) -> str:
        return f"{self.account_url}/{self.container}/{quote(key, safe='/~')}"

    def _request(self, key: str, token: str, method: str, expiry: datetime,
                 headers: dict[str, str] | None = None, extra_query: str = "") -> PresignedRequest:
        return PresignedRequest(url=f"{self.blob_url(key)}?{extra_query}{token}",
                                method=method,  # type: ignore[arg-type]
                                headers=headers or {}, expires_at=expiry)

    def presign_get(
        self, key: str, *, expires_in: int, download_name: str | None = None
    ) -> PresignedRequest:
        validate_key(key)
        expiry = self._expiry(expires_in)
        disposition = _content_disposition(download_name) if download_name else None
        with self._errors("signing a download URL", key):
            token = self._signer.sas(key, "r", expiry, content_disposition=disposition)
        return self._request(key, token, "GET", expiry)

    def presign_head(self, key: str, *, expires_in: int) -> PresignedRequest:
        validate_key(key)
        expiry = self._expiry(expires_in)
        with self._errors("signing a HEAD URL", key):
            token = self._signer.sas(key, "r", expiry)
        return self._request(key, token, "HEAD", expiry)

    @staticmethod
    def _put_headers(content_md5: str | None, content_type: str | None) -> dict[str, str]:
        headers = {"x-ms-blob-type": "BlockBlob"}
        if content_md5 is not None:
            try:
                if len(base64.b64decode(content_md5, validate=True)) != 16:
                    raise ValueError
            except (binascii.Error, ValueError):
                raise InvalidInput("content_md5 must be the base64 of a 16-byte MD5") from None
            # Put Blob checks Content-MD5 against the body and rejects a mismatch (400).
            headers["Content-MD5"] = content_md5
        if content_type:
            headers["Content-Type"] = content_type
        return headers

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
        # size and sha256 cannot be bound by a SAS; Azure verifies no SHA-256 (capabilities say
        # so) and the size is checked with head() when the upload is committed.
        validate_key(key)
        if size is not None and size < 0:
            raise InvalidInput("size must be >= 0")
        headers = self._put_headers(content_md5, content_type)
        expiry = self._expiry(expires_in)
        with self._errors("signing an upload URL", key):
            token = self._signer.sas(key, "w", expiry)
        return self._request(key, token, "PUT", expiry, headers)

    def presign_put_many(
        self, keys: Sequence[tuple[str, int | None, str | None]], *, expires_in: int
    ) -> list[PresignedRequest]:
        names = [validate_key(k) for k, _, _ in keys]
        expiry = self._expiry(expires_in)
        with self._errors("signing upload URLs"):
            tokens = self._signer.sas_many(names, "w", expiry)
        headers = self._put_headers(None, None)
        return [self._request(k, t, "PUT", expiry, dict(headers)) for k, t in zip(names, tokens,
                                                                               strict=True)]

    def presign_get_many(self, keys: Sequence[str], *, expires_in: int) -> list[PresignedRequest]:
        names = [validate_key(k) for k in keys]
        expiry = self._expiry(expires_in)
        with self._errors("signing download URLs"):
            tokens = self._signer.sas_many(names, "r", expiry)
        return [self._request(k, t, "GET", expiry) for k, t in zip(names, tokens, strict=True)]

    # ----------------------------------------------------------------- multipart = block lists

    def create_multipart(self, key: str, *, content_type: str | None = None) -> MultipartUpload:
        validate_key(key)
        now = int(self._clock())
        upload_id = f"{now:08x}{secrets.token_hex(12)}"
        if content_type:
            upload_id += "." + base64.urlsafe_b64encode(content_type.encode()).decode().rstrip("=")
        with self._errors("starting a block-list upload", key):
            self._container.get_blob_client(key).stage_block(_raw_block_id(upload_id, 0), _MARKER)
        return MultipartUpload(key, upload_id, datetime.fromtimestamp(now, tz=UTC))

    def presign_part(
        self, upload: MultipartUpload, part_number: int, *, expires_in: int, size: int | None = None
    ) -> PresignedRequest:
        validate_key(upload.key)
        if not 1 <= part_number <= MAX_BLOCKS:
            raise InvalidInput(f"part number must be between 1 and {MAX_BLOCKS}")
        if size is not None and not 0 < size <= MAX_BLOCK_SIZE:
            raise InvalidInput(f"a block holds 1 byte to {MAX_BLOCK_SIZE} bytes")
        bid = block_id(upload.upload_id, part_number)
        expiry = self._expiry(expires_in)
        with self._errors("signing a block upload URL", upload.key):
            token = self._signer.sas(upload.key, "w", expiry)
        return self._request(upload.key, token, "PUT", expiry,
                             extra_query=f"comp=block&blockid={quote(bid, safe='')}&")

    def _uncommitted(self, key: str) -> dict[str, int]:
        """Uncommitted blocks of ``key``: text block id -> size (empty if no such blob)."""
        try:
            _, uncommitted = self._container.get_blob_client(key).get_block_list("uncommitted")
        except ResourceNotFoundError as exc:
            if _error_code(exc) == "ContainerNotFound":
                raise
            return {}
        return {str(b.id): int(b.size) for b in uncommitted}

    def complete_multipart(
        self, upload: MultipartUpload, parts: Sequence[CompletedPart]
    ) -> ObjectInfo:
        validate_key(upload.key)
        _, content_type = _split_upload_id(upload.upload_id)
        if not parts:
            raise InvalidInput("a multipart upload needs at least one part")
        numbers = [p.number for p in parts]
        if numbers != sorted(set(numbers)):
            raise InvalidInput("parts must be listed in ascending order without duplicates")
        with self._errors("completing a block-list upload", upload.key):
            staged = self._uncommitted(upload.key)
            if _raw_block_id(upload.upload_id, 0) not in staged:
                raise NotFound("no such multipart upload (it was completed or aborted, or its "
                               "blocks expired: Azure drops uncommitted blocks after 7 days)")
            blocks: list[BlobBlock] = []
            total = 0
            for part in parts:
                bid = _raw_block_id(upload.upload_id, part.number)
                if bid not in staged:
                    raise InvalidInput(f"part {part.number} was not uploaded")
                if part.size is not None and part.size != staged[bid]:
                    raise InvalidInput(f"part {part.number} has {staged[bid]} bytes in the store "
                                       f"but {part.size} were declared")
                total += staged[bid]
                blocks.append(BlobBlock(block_id=bid, state=BlockState.UNCOMMITTED))
            settings = ContentSettings(content_type=content_type) if content_type else None
            result = self._container.get_blob_client(upload.key).commit_block_list(
                blocks, content_settings=settings)
        return _info(upload.key, total, result)

    def abort_multipart(self, upload: MultipartUpload) -> None:
        validate_key(upload.key)
        try:
            core, _ = _split_upload_id(upload.upload_id)
        except NotFound:
            return
        blob = self._container.get_blob_client(upload.key)
        with self._errors("aborting a block-list upload", upload.key):
            cores = {_core_of_block(b) for b in self._uncommitted(upload.key)}
            if core not in cores or len(cores) > 1:
                # Not ours, or other uploads to the same key are in flight: Azure cannot drop
                # single uncommitted blocks, and they expire after 7 days anyway.
                return
            try:
                # An empty Put Block List discards the uncommitted blocks; If-None-Match: *
                # makes it a no-op when a committed blob exists (never clobber data).
                result = blob.commit_block_list([], match_condition=MatchConditions.IfMissing)
            except ResourceExistsError:
                return
            except HttpResponseError as exc:
                if _status(exc) == 412:
                    return
                raise
            with contextlib.suppress(ResourceNotFoundError, HttpResponseError):
                blob.delete_blob(etag=str(result["etag"]),
                                 match_condition=MatchConditions.IfNotModified)

    def list_multipart_uploads(self, prefix: str) -> Iterator[MultipartUpload]:
        """Uploads under ``prefix`` whose key has no committed blob yet.

        Azure lists such blobs with ``include=uncommittedblobs`` (size 0); their block ids
        name the uploads. Uploads that target a key which already has a committed, non-empty
        blob are invisible here (Azure would need a Get Block List per blob); they hold no
        visible data and Azure discards them after 7 days. Upload ids are listed without their
        content-type suffix (completing a listed upload is not a use case: GC aborts them)."""
        with self._errors("listing block-list uploads"):
            candidates = [b.name for b in self._container.list_blobs(
                name_starts_with=prefix or None, include=["uncommittedblobs"]) if b.size == 0]
            for name in candidates:
                cores = sorted({c for b in self._uncommitted(name) if (c := _core_of_block(b))})
                for core in cores:
                    initiated = datetime.fromtimestamp(int(core[:8], 16), tz=UTC)
                    yield MultipartUpload(name, core, initiated)

    # ----------------------------------------------------------------- server-side operations

    def head(self, key: str) -> ObjectInfo | None:
        validate_key(key)
        with self._errors("reading object properties", key):
            try:
                props = self._container.get_blob_client(key).get_blob_properties()
            except ResourceNotFoundError as exc:
                if _error_code(exc) == "ContainerNotFound":
                    raise
                return None
        return ObjectInfo(key=key, size=int(props.size), etag=props.etag,
                          last_modified=props.last_modified)

    def list_page(
        self, prefix: str, *, page_size: int = 1000, token: str | None = None
    ) -> ListPage:
        size = min(max(page_size, 1), 5000)  # List Blobs returns at most 5000 a page
        with self._errors("listing objects"):
            # by_page() is typed as a plain iterator; the pager also has continuation_token.
            pages: Any = self._container.list_blobs(
                name_starts_with=prefix or None, results_per_page=size
            ).by_page(continuation_token=token)
            page = next(pages, None)
            objects = [] if page is None else [
                ObjectInfo(key=b.name, size=int(b.size), etag=b.etag,
                           last_modified=b.last_modified) for b in page]
            next_token = pages.continuation_token or None
        return ListPage(objects, next_token)

    def delete_many(self, keys: Sequence[str]) -> DeleteResult:
        result = DeleteResult()
        valid: list[str] = []
        for key in dict.fromkeys(keys):
            try:
                valid.append(validate_key(key))
            except InvalidInput as exc:
                result.failed[key] = exc.message
        chunks = [valid[i:i + _BATCH_DELETE] for i in range(0, len(valid), _BATCH_DELETE)]
        with self._errors("deleting objects"), ThreadPoolExecutor(4) as pool:
            for chunk_result in pool.map(self._delete_chunk, chunks):
                result.deleted += chunk_result.deleted
                result.failed.update(chunk_result.failed)
        return result

    def _delete_chunk(self, keys: list[str]) -> DeleteResult:
        out = DeleteResult()
        try:
            responses = list(self._container.delete_blobs(
                *keys, delete_snapshots="include", raise_on_any_failure=False))
        except ClientAuthenticationError:
            raise
        except HttpResponseError as exc:
            if _status(exc) in {401, 403}:
                raise
            # Blob Batch is unavailable (some account kinds and emulators): one by one.
            with ThreadPoolExecutor(8) as pool:
                for key, err in zip(keys, pool.map(self._delete_one, keys), strict=True):
                    if err:
                        out.failed[key] = err
                    else:
                        out.deleted.append(key)
            return out
        for key, resp in zip(keys, responses, strict=True):
            code = resp.headers.get("x-ms-error-code", "")
            if resp.status_code == 202 or (resp.status_code == 404 and code == "BlobNotFound"):
                out.deleted.append(key)  # already absent counts as deleted (idempotent, as S3)
            else:
                out.failed[key] = f"HTTP {resp.status_code} {code}".strip()
        return out

    def _delete_one(self, key: str) -> str | None:
        try:
            self._container.get_blob_client(key).delete_blob(delete_snapshots="include")
        except ResourceNotFoundError as exc:
            if _error_code(exc) == "ContainerNotFound":
                return "HTTP 404 ContainerNotFound"
        except HttpResponseError as exc:
            return f"HTTP {_status(exc)} {_error_code(exc)}".strip()
        return None

    def copy(self, src_key: str, dst_key: str) -> None:
        validate_key(src_key)
        validate_key(dst_key)
        expiry = self._expiry(3600)
        dst = self._container.get_blob_client(dst_key)
        with self._errors("copying an object", src_key):
            # The source carries a read SAS so the copy works the same with a key or an
            # identity; within one account Copy Blob is usually synchronous.
            source = f"{self.blob_url(src_key)}?{self._signer.sas(src_key, 'r', expiry)}"
            try:
                status = dst.start_copy_from_url(source).get("copy_status")
            except ResourceNotFoundError as exc:
                if _error_code(exc) in {"CannotVerifyCopySource", "BlobNotFound"}:
                    raise NotFound(f"object '{src_key}' does not exist") from exc
                raise
            deadline = time.monotonic() + _COPY_DEADLINE
            while status == "pending":
                if time.monotonic() > deadline:
                    raise StorageError(f"server-side copy to '{dst_key}' is still pending after "
                                       f"{_COPY_DEADLINE:.0f} s")
                time.sleep(0.5)
                status = dst.get_blob_properties().copy.status
            if status != "success":
                raise StorageError(f"server-side copy to '{dst_key}' ended with status {status}")

    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> ObjectInfo:
        validate_key(key)
        settings = ContentSettings(content_type=content_type) if content_type else None
        with self._errors("writing an object", key):
            # validate_content sends Content-MD5, which Azure checks against the body.
            result = self._container.get_blob_client(key).upload_blob(
                data, overwrite=True, content_settings=settings, validate_content=True)
        return _info(key, len(data), result)

    def get_bytes(self, key: str) -> bytes:
        validate_key(key)
        with self._errors("reading an object", key):
            return self._container.get_blob_client(key).download_blob().readall()


def _info(key: str, size: int, result: dict[str, Any]) -> ObjectInfo:
    """ObjectInfo from the response dict of an upload or a block-list commit."""
    etag, modified = result.get("etag"), result.get("last_modified")
    return ObjectInfo(key=key, size=size, etag=etag if isinstance(etag, str) else None,
                      last_modified=modified if isinstance(modified, datetime) else None)


def _account_url(address: StorageAddress) -> str:
    if address.endpoint:
        return address.endpoint.rstrip("/")
    return f"https://{address.account}.blob.core.windows.net"


def _check_account_key(secret: str) -> str:
    try:
        raw = base64.b64decode(secret, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if not raw:
        raise InvalidStorageAddress(
            "the Azure account key is not valid base64; copy key1 or key2 from the storage "
            "account's 'Access keys' page and URL-encode it in the address (+ as %2B, / as %2F, "
            "= as %3D)", details={"problem": "account key is not base64"})
    return secret


def ambient_credential(*, tenant_id: str | None = None,
                       client_id: str | None = None) -> TokenCredential:
    """DefaultAzureCredential for a server: managed / workload identity, environment, CLI.

    ``client_id`` selects a user-assigned managed identity (and the workload-identity app);
    ``tenant_id`` pins the tenant for workload identity. Constructing it sends no traffic;
    tokens are fetched on first use."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(
        managed_identity_client_id=client_id,
        workload_identity_client_id=client_id,
        workload_identity_tenant_id=tenant_id,
        additionally_allowed_tenants=[tenant_id] if tenant_id else [],
        exclude_interactive_browser_credential=True,
    )


def open_azure(address: StorageAddress, context: StoreContext) -> AzureStore:
    if address.account is None:
        raise InvalidStorageAddress("an Azure address needs a storage account: "
                                    "az://<account>/<container>")
    url = _account_url(address)
    if address.secret is not None:
        key = _check_account_key(address.secret.get_secret_value())
        return AzureStore(account=address.account, container=address.bucket, account_url=url,
                          account_key=key)
    return AzureStore(account=address.account, container=address.bucket, account_url=url,
                      credential=ambient_credential(tenant_id=address.azure_tenant_id,
                                                    client_id=address.azure_client_id))
