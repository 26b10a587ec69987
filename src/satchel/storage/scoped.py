"""A bucket seen through its sub-path: callers use relative keys, the provider gets full ones.

This is how services reach storage. All joining goes through :mod:`satchel.storage.keys`, so
nothing is ever written above the sub-path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

from satchel.storage.base import (
    CompletedPart,
    DeleteResult,
    ListPage,
    MultipartUpload,
    ObjectInfo,
    ObjectStore,
    PresignedRequest,
)
from satchel.storage.keys import join_key, join_prefix, strip_sub_path, validate_sub_path


class ScopedStore:
    def __init__(self, store: ObjectStore, sub_path: str = "") -> None:
        self.store = store
        self.sub_path = validate_sub_path(sub_path)

    @property
    def capabilities(self):  # type: ignore[no-untyped-def]
        return self.store.capabilities

    def full_key(self, key: str) -> str:
        return join_key(self.sub_path, key)

    def _rel(self, info: ObjectInfo) -> ObjectInfo:
        return replace(info, key=strip_sub_path(self.sub_path, info.key))

    def presign_get(
        self, key: str, *, expires_in: int, download_name: str | None = None
    ) -> PresignedRequest:
        return self.store.presign_get(
            self.full_key(key), expires_in=expires_in, download_name=download_name
        )

    def presign_head(self, key: str, *, expires_in: int) -> PresignedRequest:
        return self.store.presign_head(self.full_key(key), expires_in=expires_in)

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
        return self.store.presign_put(
            self.full_key(key),
            expires_in=expires_in,
            size=size,
            sha256=sha256,
            content_md5=content_md5,
            content_type=content_type,
        )

    def presign_put_many(
        self, items: Sequence[tuple[str, int | None, str | None]], *, expires_in: int
    ) -> list[PresignedRequest]:
        full = [(self.full_key(k), size, sha) for k, size, sha in items]
        return self.store.presign_put_many(full, expires_in=expires_in)

    def presign_get_many(self, keys: Sequence[str], *, expires_in: int) -> list[PresignedRequest]:
        return self.store.presign_get_many([self.full_key(k) for k in keys], expires_in=expires_in)

    def create_multipart(self, key: str, *, content_type: str | None = None) -> MultipartUpload:
        return self.store.create_multipart(self.full_key(key), content_type=content_type)

    def presign_part(
        self, upload: MultipartUpload, part_number: int, *, expires_in: int, size: int | None = None
    ) -> PresignedRequest:
        self._check_upload(upload)
        return self.store.presign_part(upload, part_number, expires_in=expires_in, size=size)

    def complete_multipart(
        self, upload: MultipartUpload, parts: Sequence[CompletedPart]
    ) -> ObjectInfo:
        self._check_upload(upload)
        return self._rel(self.store.complete_multipart(upload, parts))

    def abort_multipart(self, upload: MultipartUpload) -> None:
        self._check_upload(upload)
        self.store.abort_multipart(upload)

    def list_multipart_uploads(self, prefix: str = "") -> Iterator[MultipartUpload]:
        for up in self.store.list_multipart_uploads(join_prefix(self.sub_path, prefix)):
            yield replace(up, key=strip_sub_path(self.sub_path, up.key))

    def multipart_for(self, key: str, upload_id: str) -> MultipartUpload:
        """Rebuild a handle for an upload the client reports (key relative to the sub-path)."""
        return MultipartUpload(key=self.full_key(key), upload_id=upload_id)

    def head(self, key: str) -> ObjectInfo | None:
        info = self.store.head(self.full_key(key))
        return None if info is None else self._rel(info)

    def list_page(self, prefix: str = "", *, page_size: int = 1000, token: str | None = None
                  ) -> ListPage:
        page = self.store.list_page(
            join_prefix(self.sub_path, prefix), page_size=page_size, token=token
        )
        return ListPage([self._rel(o) for o in page.objects], page.next_token)

    def iter_objects(self, prefix: str = "", *, page_size: int = 1000) -> Iterator[ObjectInfo]:
        token: str | None = None
        while True:
            page = self.list_page(prefix, page_size=page_size, token=token)
            yield from page.objects
            if page.next_token is None:
                return
            token = page.next_token

    def delete_many(self, keys: Sequence[str]) -> DeleteResult:
        full = {self.full_key(k): k for k in keys}
        res = self.store.delete_many(list(full))
        return DeleteResult(
            deleted=[full.get(k, k) for k in res.deleted],
            failed={full.get(k, k): v for k, v in res.failed.items()},
        )

    def copy(self, src_key: str, dst_key: str) -> None:
        self.store.copy(self.full_key(src_key), self.full_key(dst_key))

    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> ObjectInfo:
        return self._rel(self.store.put_bytes(self.full_key(key), data, content_type=content_type))

    def get_bytes(self, key: str) -> bytes:
        return self.store.get_bytes(self.full_key(key))

    def _check_upload(self, upload: MultipartUpload) -> None:
        # The handle's key is a full key; make sure it lies under our sub-path.
        strip_sub_path(self.sub_path, upload.key)
