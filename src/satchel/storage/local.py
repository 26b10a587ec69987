"""The local-filesystem provider: the embedded default bucket.

Objects are plain files under ``root`` (so an operator can find them by hand). Clients reach
them the same way they reach a cloud store: through presigned URLs served by Satchel's blob
endpoint (``/blob/<store id>/<key>``), which honours only HMAC-signed, expiring URLs bound to one
key and one method. A PUT URL carries the declared size and SHA-256; the endpoint verifies both
and only then moves the bytes into place atomically, so a failed or tampered upload writes
nothing visible.

Satchel's own bookkeeping (multipart parts, temp files) lives under ``root/.satchel``; keys whose
first segment is ``.satchel`` are therefore refused.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, urlencode

from satchel.auth.crypto import derive_key
from satchel.errors import (
    ChecksumMismatch,
    InvalidInput,
    InvalidKey,
    NotFound,
    SignatureInvalid,
    StorageError,
    UrlExpired,
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

INTERNAL_DIR = ".satchel"
_XATTR_SHA256 = "user.satchel.sha256"
_COPY_CHUNK = 1024 * 1024

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class SignedParams:
    """What a verified blob URL allows."""

    method: str
    key: str
    expires: int
    size: int | None = None
    sha256: str | None = None
    upload_id: str | None = None
    part_number: int | None = None
    filename: str | None = None


def store_id_for(root: Path) -> str:
    return hashlib.sha256(str(root).encode()).hexdigest()[:16]


class LocalStore:
    scheme = "file"

    def __init__(
        self, root: Path, *, public_url: str, instance_secret: bytes, clock: Clock = time.time
    ) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / INTERNAL_DIR / "tmp").mkdir(parents=True, exist_ok=True)
        (self.root / INTERNAL_DIR / "multipart").mkdir(parents=True, exist_ok=True)
        self.store_id = store_id_for(self.root)
        self._base = f"{public_url.rstrip('/')}/blob/{self.store_id}/"
        self._sign_key = derive_key(instance_secret, f"local-blob:{self.store_id}")
        self._clock = clock
        self._caps = Capabilities(
            verifies_sha256=True, needs_cors=False, min_part_size=1,
            max_part_size=5 * 1024**3, max_parts=10_000,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    @property
    def bucket(self) -> str:
        return str(self.root)

    # ----------------------------------------------------------------- signing

    @staticmethod
    def _canonical(p: SignedParams) -> bytes:
        fields = [
            p.method, p.key, str(p.expires), "" if p.size is None else str(p.size),
            p.sha256 or "", p.upload_id or "",
            "" if p.part_number is None else str(p.part_number), p.filename or "",
        ]
        return "\n".join(fields).encode()

    def _signature(self, p: SignedParams) -> str:
        mac = hmac.new(self._sign_key, self._canonical(p), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def _presign(self, p: SignedParams, headers: dict[str, str] | None = None) -> PresignedRequest:
        query: dict[str, str] = {"X-Satchel-Expires": str(p.expires)}
        if p.size is not None:
            query["X-Satchel-Size"] = str(p.size)
        if p.sha256 is not None:
            query["X-Satchel-Sha256"] = p.sha256
        if p.upload_id is not None:
            query["uploadId"] = p.upload_id
        if p.part_number is not None:
            query["partNumber"] = str(p.part_number)
        if p.filename is not None:
            query["filename"] = p.filename
        query["X-Satchel-Signature"] = self._signature(p)
        url = f"{self._base}{quote(p.key, safe='/')}?{urlencode(query)}"
        return PresignedRequest(
            url=url, method=p.method,  # type: ignore[arg-type]
            headers=headers or {},
            expires_at=datetime.fromtimestamp(p.expires, tz=UTC),
        )

    def _expiry(self, expires_in: int) -> int:
        if expires_in <= 0:
            raise InvalidInput("expires_in must be a positive number of seconds")
        return int(self._clock()) + expires_in

    def _check_key(self, key: str) -> str:
        validate_key(key)
        if key.split("/", 1)[0] == INTERNAL_DIR:
            raise InvalidKey(f"keys may not start with '{INTERNAL_DIR}/' in a local bucket")
        return key

    def verify(self, method: str, key: str, query: dict[str, str]) -> SignedParams:
        """Check a blob request against its signature; raise SignatureInvalid / UrlExpired."""
        try:
            expires = int(query["X-Satchel-Expires"])
            signature = query["X-Satchel-Signature"]
            size = int(query["X-Satchel-Size"]) if "X-Satchel-Size" in query else None
            part = int(query["partNumber"]) if "partNumber" in query else None
        except (KeyError, ValueError):
            raise SignatureInvalid(
                "this URL is not a valid Satchel presigned URL (signature parameters missing); "
                "ask the server for a new one"
            ) from None
        p = SignedParams(
            method=method, key=key, expires=expires, size=size,
            sha256=query.get("X-Satchel-Sha256"), upload_id=query.get("uploadId"),
            part_number=part, filename=query.get("filename"),
        )
        if not hmac.compare_digest(self._signature(p), signature):
            raise SignatureInvalid(
                "signature does not match: the URL was altered or is used for another key or "
                "method; ask the server for a new URL"
            )
        if self._clock() > expires:
            raise UrlExpired("this presigned URL has expired; ask the server for a new one")
        self._check_key(key)
        return p

    def presign_get(
        self, key: str, *, expires_in: int, download_name: str | None = None
    ) -> PresignedRequest:
        p = SignedParams("GET", self._check_key(key), self._expiry(expires_in),
                         filename=download_name)
        return self._presign(p)

    def presign_head(self, key: str, *, expires_in: int) -> PresignedRequest:
        return self._presign(SignedParams("HEAD", self._check_key(key), self._expiry(expires_in)))

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
        if sha256 is not None:
            sha256 = _check_sha256(sha256)
        if size is not None and size < 0:
            raise InvalidInput("size must be >= 0")
        p = SignedParams("PUT", self._check_key(key), self._expiry(expires_in), size=size,
                         sha256=sha256)
        headers = {"Content-Type": content_type} if content_type else {}
        return self._presign(p, headers)

    def presign_put_many(
        self, keys: Sequence[tuple[str, int | None, str | None]], *, expires_in: int
    ) -> list[PresignedRequest]:
        return [self.presign_put(k, expires_in=expires_in, size=s, sha256=h) for k, s, h in keys]

    def presign_get_many(self, keys: Sequence[str], *, expires_in: int) -> list[PresignedRequest]:
        return [self.presign_get(k, expires_in=expires_in) for k in keys]

    # ----------------------------------------------------------------- paths

    def path_for(self, key: str) -> Path:
        return self.root / self._check_key(key)

    def _tmp_path(self) -> Path:
        return self.root / INTERNAL_DIR / "tmp" / secrets.token_hex(12)

    def _mp_dir(self, upload_id: str) -> Path:
        if not upload_id.isalnum():
            raise NotFound("no such multipart upload")
        return self.root / INTERNAL_DIR / "multipart" / upload_id

    # ----------------------------------------------------------------- writes

    def open_writer(
        self, key: str, *, size: int | None, sha256: str | None
    ) -> LocalWriter:
        self._check_key(key)
        return LocalWriter(self, self.path_for(key), self._tmp_path(), size, sha256)

    def open_part_writer(self, upload_id: str, part_number: int, *, size: int | None,
                         key: str) -> LocalWriter:
        mp = self._mp_dir(upload_id)
        meta = _read_json(mp / "meta.json")
        if meta is None or meta.get("key") != key:
            raise NotFound("no such multipart upload (it was completed or aborted)")
        if not 1 <= part_number <= self._caps.max_parts:
            raise InvalidInput(f"partNumber must be between 1 and {self._caps.max_parts}")
        return LocalWriter(self, mp / f"{part_number:05d}", self._tmp_path(), size, None,
                           record_etag=True)

    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> ObjectInfo:
        w = self.open_writer(key, size=len(data), sha256=None)
        w.write(data)
        return w.commit()

    def get_bytes(self, key: str) -> bytes:
        path = self.path_for(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"object '{key}' does not exist") from None
        except IsADirectoryError:
            raise NotFound(f"object '{key}' does not exist") from None

    def head(self, key: str) -> ObjectInfo | None:
        path = self.path_for(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not path.is_file():
            return None
        sha = None
        with contextlib.suppress(OSError):
            sha = os.getxattr(path, _XATTR_SHA256).decode()
        return ObjectInfo(
            key=key, size=st.st_size, etag=_etag(st),
            last_modified=datetime.fromtimestamp(st.st_mtime, tz=UTC), sha256=sha,
        )

    def open_read(self, key: str) -> tuple[Path, ObjectInfo]:
        info = self.head(key)
        if info is None:
            raise NotFound(f"object '{key}' does not exist")
        return self.path_for(key), info

    # ----------------------------------------------------------------- listing

    def _all_keys(self, prefix: str) -> list[str]:
        # Walk only the directory that can contain the prefix.
        directory = prefix.rpartition("/")[0]
        start = self.root / directory if directory else self.root
        keys: list[str] = []
        if not start.is_dir():
            return keys
        for dirpath, dirnames, filenames in os.walk(start):
            rel_dir = os.path.relpath(dirpath, self.root)
            if rel_dir == ".":
                dirnames[:] = [d for d in dirnames if d != INTERNAL_DIR]
                rel_dir = ""
            for name in filenames:
                key = f"{rel_dir}/{name}" if rel_dir else name
                if key.startswith(prefix):
                    keys.append(key)
        keys.sort()
        return keys

    def list_page(
        self, prefix: str, *, page_size: int = 1000, token: str | None = None
    ) -> ListPage:
        keys = self._all_keys(prefix)
        if token:
            import bisect

            keys = keys[bisect.bisect_right(keys, token):]
        page, more = keys[:page_size], len(keys) > page_size
        objects = [info for k in page if (info := self.head(k)) is not None]
        return ListPage(objects, page[-1] if more and page else None)

    # ----------------------------------------------------------------- deletes/copies

    def delete_many(self, keys: Sequence[str]) -> DeleteResult:
        result = DeleteResult()
        for key in keys:
            try:
                path = self.path_for(key)
                path.unlink(missing_ok=True)
                self._prune_dirs(path.parent)
                result.deleted.append(key)
            except (OSError, InvalidKey) as exc:
                result.failed[key] = str(exc)
        return result

    def _prune_dirs(self, directory: Path) -> None:
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    def copy(self, src_key: str, dst_key: str) -> None:
        src = self.path_for(src_key)
        if not src.is_file():
            raise NotFound(f"object '{src_key}' does not exist")
        tmp = self._tmp_path()
        shutil.copyfile(src, tmp)
        sha = None
        with contextlib.suppress(OSError):
            sha = os.getxattr(src, _XATTR_SHA256)
        _publish(tmp, self.path_for(dst_key), sha.decode() if sha else None)

    # ----------------------------------------------------------------- multipart

    def create_multipart(self, key: str, *, content_type: str | None = None) -> MultipartUpload:
        self._check_key(key)
        upload_id = secrets.token_hex(16)
        mp = self._mp_dir(upload_id)
        mp.mkdir(parents=True)
        now = self._clock()
        (mp / "meta.json").write_text(json.dumps({"key": key, "initiated": now}))
        return MultipartUpload(key, upload_id, datetime.fromtimestamp(now, tz=UTC))

    def presign_part(
        self, upload: MultipartUpload, part_number: int, *, expires_in: int, size: int | None = None
    ) -> PresignedRequest:
        if not 1 <= part_number <= self._caps.max_parts:
            raise InvalidInput(f"part number must be between 1 and {self._caps.max_parts}")
        p = SignedParams("PUT", self._check_key(upload.key), self._expiry(expires_in), size=size,
                         upload_id=upload.upload_id, part_number=part_number)
        return self._presign(p)

    def complete_multipart(
        self, upload: MultipartUpload, parts: Sequence[CompletedPart]
    ) -> ObjectInfo:
        mp = self._mp_dir(upload.upload_id)
        meta = _read_json(mp / "meta.json")
        if meta is None or meta.get("key") != upload.key:
            raise NotFound("no such multipart upload (it was completed or aborted)")
        if not parts:
            raise InvalidInput("a multipart upload needs at least one part")
        numbers = [p.number for p in parts]
        if numbers != sorted(set(numbers)):
            raise InvalidInput("parts must be listed in ascending order without duplicates")
        tmp = self._tmp_path()
        digest = hashlib.sha256()
        with open(tmp, "wb") as out:
            for part in parts:
                part_path = mp / f"{part.number:05d}"
                etag = _read_text(part_path.with_suffix(".etag"))
                if etag is None or not part_path.exists():
                    tmp.unlink(missing_ok=True)
                    raise InvalidInput(f"part {part.number} was not uploaded")
                if etag != part.etag.strip('"'):
                    tmp.unlink(missing_ok=True)
                    raise InvalidInput(f"part {part.number}: ETag does not match the upload")
                with open(part_path, "rb") as src:
                    while chunk := src.read(_COPY_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        dest = self.path_for(upload.key)
        _publish(tmp, dest, digest.hexdigest())
        shutil.rmtree(mp, ignore_errors=True)
        info = self.head(upload.key)
        assert info is not None
        return info

    def abort_multipart(self, upload: MultipartUpload) -> None:
        mp = self._mp_dir(upload.upload_id)
        meta = _read_json(mp / "meta.json")
        if meta is None or meta.get("key") != upload.key:
            return
        shutil.rmtree(mp, ignore_errors=True)

    def list_multipart_uploads(self, prefix: str) -> Iterator[MultipartUpload]:
        base = self.root / INTERNAL_DIR / "multipart"
        for mp in sorted(base.iterdir()):
            meta = _read_json(mp / "meta.json")
            if meta and str(meta.get("key", "")).startswith(prefix):
                initiated = float(meta.get("initiated", 0))  # type: ignore[arg-type]
                yield MultipartUpload(
                    str(meta["key"]), mp.name, datetime.fromtimestamp(initiated, tz=UTC)
                )


class LocalWriter:
    """Streams an upload to a temp file, verifies size/SHA-256, then publishes atomically."""

    def __init__(self, store: LocalStore, dest: Path, tmp: Path, size: int | None,
                 sha256: str | None, *, record_etag: bool = False) -> None:
        self._dest = dest
        self._tmp = tmp
        self._size = size
        self._sha256 = sha256
        self._record_etag = record_etag
        self._store = store
        self._written = 0
        self._digest = hashlib.sha256()
        self._fh: BinaryIO | None = open(tmp, "wb")  # noqa: SIM115 - closed in commit/abort

    def write(self, chunk: bytes) -> None:
        assert self._fh is not None
        self._written += len(chunk)
        if self._size is not None and self._written > self._size:
            self.abort()
            raise ChecksumMismatch(
                f"body is larger than the declared size of {self._size} bytes; nothing was stored"
            )
        self._digest.update(chunk)
        self._fh.write(chunk)

    def commit(self) -> ObjectInfo:
        assert self._fh is not None
        sha = self._digest.hexdigest()
        if self._size is not None and self._written != self._size:
            self.abort()
            raise ChecksumMismatch(
                f"body has {self._written} bytes but the URL declares {self._size}; "
                "nothing was stored"
            )
        if self._sha256 is not None and sha != self._sha256:
            self.abort()
            raise ChecksumMismatch(
                "body SHA-256 does not match the SHA-256 declared in the URL; nothing was stored"
            )
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None
            _publish(self._tmp, self._dest, sha)
        except OSError as exc:
            self.abort()
            raise StorageError(f"local bucket write failed: {exc.strerror}") from exc
        if self._record_etag:
            (self._dest.with_suffix(".etag")).write_text(sha)
            return ObjectInfo(key=self._dest.name, size=self._written, etag=sha, sha256=sha)
        st = self._dest.stat()
        return ObjectInfo(key=str(self._dest.relative_to(self._store.root)), size=st.st_size,
                          etag=_etag(st), sha256=sha,
                          last_modified=datetime.fromtimestamp(st.st_mtime, tz=UTC))

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._tmp.unlink(missing_ok=True)


def _publish(tmp: Path, dest: Path, sha256: str | None) -> None:
    """Atomically move a fully written temp file into place."""
    if sha256:
        with contextlib.suppress(OSError):
            os.setxattr(tmp, _XATTR_SHA256, sha256.encode())
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, dest)
    with contextlib.suppress(OSError):
        fd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _etag(st: os.stat_result) -> str:
    return f'"{st.st_size:x}-{st.st_mtime_ns:x}"'


def _check_sha256(value: str) -> str:
    v = value.lower()
    if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        raise InvalidInput("sha256 must be 64 hex characters")
    return v


def _read_json(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def open_local(address: StorageAddress, context: StoreContext) -> LocalStore:
    try:
        return LocalStore(
            Path(address.bucket), public_url=context.public_url,
            instance_secret=context.instance_secret,
        )
    except OSError as exc:
        raise StorageError(
            f"cannot use {address.bucket} as a local bucket: {exc.strerror}; it must be a "
            "directory the Satchel server can create and write"
        ) from exc

