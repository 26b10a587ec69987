"""The object-store protocol every provider implements, and the dataclasses at its boundary.

A provider sees only bucket keys and byte metadata: never HTTP requests, run ids or local
paths. Keys it receives are already joined with the bucket's sub-path by
:func:`satchel.storage.keys.join_key` (through :class:`satchel.storage.scoped.ScopedStore`).

Optional abilities are advertised in :class:`Capabilities`; a provider without an ability
simply does not claim it (callers check ``capabilities`` first) instead of raising from stubs.

Large uploads are modelled after S3 multipart: ``create_multipart`` -> presigned part URLs ->
``complete_multipart`` / ``abort_multipart``. Azure (block list) and GCS (resumable session)
map onto the same calls; the ``UploadPart`` returned to the client says what to send.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

HttpMethod = Literal["GET", "PUT", "HEAD", "POST", "DELETE"]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a store can do; callers branch on these instead of catching NotImplementedError."""

    presign: bool = True
    multipart: bool = True
    # Store verifies a client-declared SHA-256 on PUT (rejects the upload on mismatch).
    verifies_sha256: bool = False
    # Store verifies a client-declared MD5 (Content-MD5) on PUT.
    verifies_md5: bool = False
    server_side_copy: bool = True
    batch_delete: bool = True
    # Browser uploads need CORS on the bucket (local store: served by Satchel itself).
    needs_cors: bool = True
    min_part_size: int = 5 * 1024 * 1024
    max_part_size: int = 5 * 1024 * 1024 * 1024
    max_parts: int = 10_000
    # Parts must be sent in order (GCS resumable sessions) rather than in parallel.
    sequential_parts: bool = False


@dataclass(frozen=True, slots=True)
class PresignedRequest:
    """One HTTP request the client makes directly against the store."""

    url: str
    method: HttpMethod
    headers: dict[str, str]
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    etag: str | None = None
    last_modified: datetime | None = None
    # SHA-256 (hex) the store verified and recorded, when it does so.
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class MultipartUpload:
    key: str
    upload_id: str
    initiated: datetime | None = None


@dataclass(frozen=True, slots=True)
class CompletedPart:
    number: int  # 1-based
    etag: str
    size: int | None = None


@dataclass(frozen=True, slots=True)
class ListPage:
    objects: list[ObjectInfo]
    next_token: str | None


@dataclass(slots=True)
class DeleteResult:
    deleted: list[str] = field(default_factory=list)
    # key -> error message
    failed: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class ObjectStore(Protocol):
    """A bucket (or container, or directory) addressed by full in-bucket keys."""

    scheme: str

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def bucket(self) -> str:
        """Bucket / container / root directory name, for display and doctor findings."""
        ...

    # --- presigned data path -------------------------------------------------------------
    def presign_get(
        self, key: str, *, expires_in: int, download_name: str | None = None
    ) -> PresignedRequest: ...

    def presign_head(self, key: str, *, expires_in: int) -> PresignedRequest: ...

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
        """A PUT URL. ``size``/``sha256``/``content_md5`` (base64) are bound into the request
        where the store can enforce them (see Capabilities.verifies_*); the returned headers
        must be sent as given."""
        ...

    def presign_put_many(
        self, keys: Sequence[tuple[str, int | None, str | None]], *, expires_in: int
    ) -> list[PresignedRequest]:
        """Batch signing of (key, size, sha256) triples; the hot path for big artifacts."""
        ...

    def presign_get_many(self, keys: Sequence[str], *, expires_in: int) -> list[PresignedRequest]:
        ...

    # --- multipart -----------------------------------------------------------------------
    def create_multipart(
        self, key: str, *, content_type: str | None = None
    ) -> MultipartUpload: ...

    def presign_part(
        self, upload: MultipartUpload, part_number: int, *, expires_in: int, size: int | None = None
    ) -> PresignedRequest: ...

    def complete_multipart(
        self, upload: MultipartUpload, parts: Sequence[CompletedPart]
    ) -> ObjectInfo: ...

    def abort_multipart(self, upload: MultipartUpload) -> None: ...

    def list_multipart_uploads(self, prefix: str) -> Iterator[MultipartUpload]: ...

    # --- server-side operations ----------------------------------------------------------
    def head(self, key: str) -> ObjectInfo | None:
        """Object metadata, or None when the key does not exist."""
        ...

    def list_page(
        self, prefix: str, *, page_size: int = 1000, token: str | None = None
    ) -> ListPage: ...

    def delete_many(self, keys: Sequence[str]) -> DeleteResult: ...

    def copy(self, src_key: str, dst_key: str) -> None: ...

    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> ObjectInfo:
        """Small server-side writes (manifests, doctor probes)."""
        ...

    def get_bytes(self, key: str) -> bytes: ...


def iter_objects(store: ObjectStore, prefix: str, *, page_size: int = 1000) -> Iterator[ObjectInfo]:
    """Every object under ``prefix``, following list pages."""
    token: str | None = None
    while True:
        page = store.list_page(prefix, page_size=page_size, token=token)
        yield from page.objects
        if page.next_token is None:
            return
        token = page.next_token


@dataclass(frozen=True, slots=True)
class BucketSettings:
    """Bucket-level state the doctor reports on; None means "could not be determined"."""

    versioning: bool | None = None
    soft_delete_days: int | None = None
    # Human-readable descriptions of lifecycle rules that expire or move current objects.
    expiring_rules: tuple[str, ...] = ()
    # Rules that only clean up (noncurrent versions, incomplete multipart uploads).
    cleanup_rules: tuple[str, ...] = ()
    # A rule expires noncurrent versions (what keeps a versioned bucket from growing forever).
    expires_noncurrent: bool | None = None


@runtime_checkable
class BucketInspector(Protocol):
    """Optional capability: read bucket configuration (versioning, lifecycle, soft delete)."""

    def bucket_settings(self) -> BucketSettings: ...


@runtime_checkable
class BucketCreator(Protocol):
    """Optional capability: create the bucket and apply CORS (multi-tenant "create for me")."""

    def create_bucket(self, *, cors_origins: Sequence[str]) -> None: ...
