"""Multipart uploads through presigned part URLs, shared by artifacts (services/artifacts.py,
artifact_uploads.py) and run files (services/run_files.py).

The store decides what a "part" is (S3 multipart upload, Azure block list, GCS resumable
session, local parts: storage/base.py); this module decides when to use it, how big the parts
are, and signs one URL per part. The client PUTs the parts in parallel (in order where
``sequential``) and asks the server to complete the upload with the parts' ETags.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from satchel.errors import InvalidInput
from satchel.services.files import IssuedUrl
from satchel.storage.base import Capabilities, CompletedPart, MultipartUpload
from satchel.storage.scoped import ScopedStore

MiB = 1024 * 1024
# Objects at least this large go up as parallel parts (module constants so tests can lower
# them; a setting once someone needs to tune them).
MULTIPART_THRESHOLD = 64 * MiB
PART_SIZE = 16 * MiB


@dataclass(frozen=True, slots=True)
class Started:
    upload: MultipartUpload
    part_size: int
    parts: list[IssuedUrl]  # path = the part number
    sequential: bool  # parts in order, one at a time (GCS resumable sessions)


def wanted(size: int, caps: Capabilities) -> bool:
    return caps.multipart and size >= MULTIPART_THRESHOLD


def part_size(size: int, caps: Capabilities) -> int:
    """:data:`PART_SIZE` within the store's limits, doubled until the parts fit
    ``caps.max_parts``; InvalidInput when no part size of this store can hold ``size``."""
    part = min(max(PART_SIZE, caps.min_part_size), caps.max_part_size)
    while -(-size // part) > caps.max_parts and part * 2 <= caps.max_part_size:
        part *= 2
    if -(-size // part) > caps.max_parts:
        limit = caps.max_parts * caps.max_part_size
        raise InvalidInput(f"{size} bytes is more than this bucket's store takes in one object "
                           f"({limit} bytes)", details={"size": size, "max_bytes": limit})
    return part


def part_count(size: int, part: int, caps: Capabilities) -> int | None:
    """Number of parts of ``part`` bytes for ``size``, or None when that part size is not
    valid for this object and store (a client names the part size it was given when it asks
    for fresh part URLs; the answer must not depend on settings that changed meanwhile)."""
    count = max(1, -(-size // part))
    if count > caps.max_parts or part > caps.max_part_size:
        return None
    if count > 1 and part < caps.min_part_size:
        return None
    return count


def sign_parts(store: ScopedStore, upload: MultipartUpload, size: int, part: int,
               numbers: Iterable[int], *, expires_in: int) -> list[IssuedUrl]:
    out = []
    for n in numbers:
        length = min(part, size - (n - 1) * part)
        s = store.presign_part(upload, n, expires_in=expires_in, size=length)
        out.append(IssuedUrl(str(n), s.method, s.url, dict(s.headers), s.expires_at))
    return out


def start(store: ScopedStore, key: str, size: int, *, expires_in: int) -> Started:
    """Open a multipart upload of ``size`` bytes at ``key`` and sign every part."""
    caps = store.capabilities
    part = part_size(size, caps)
    upload = store.create_multipart(key)
    count = max(1, -(-size // part))
    return Started(upload, part, sign_parts(store, upload, size, part, range(1, count + 1),
                                            expires_in=expires_in), caps.sequential_parts)


def complete(store: ScopedStore, key: str, upload_id: str,
             parts: Sequence[tuple[int, str]]) -> MultipartUpload:
    handle = store.multipart_for(key, upload_id)
    store.complete_multipart(handle, [CompletedPart(n, etag) for n, etag in parts])
    return handle
