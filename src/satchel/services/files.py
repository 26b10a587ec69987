"""Presigned URLs for a project's files: authorized, batch-signed, audited.

Keys are relative to the team's prefix (see services/storage.py):
``projects/<project>/files/<path>``. Runs and artifacts reuse :func:`issue_urls` with their own
key layouts, so every URL the server hands out goes through the same gate and the same audit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy.orm import Session

from satchel.db.models import Project
from satchel.errors import InvalidInput
from satchel.services import audit
from satchel.services.authz import Principal, require_url_access
from satchel.services.storage import StorageRegistry
from satchel.storage.base import ObjectInfo, PresignedRequest
from satchel.storage.keys import join_key, validate_key

Method = Literal["GET", "HEAD", "PUT"]
MAX_URLS_PER_REQUEST = 10_000


@dataclass(frozen=True, slots=True)
class FileRequest:
    path: str
    method: Method
    size: int | None = None
    sha256: str | None = None
    download_name: str | None = None


@dataclass(frozen=True, slots=True)
class IssuedUrl:
    path: str
    method: str
    url: str
    headers: dict[str, str]
    expires_at: datetime


def project_file_key(project: Project, path: str) -> str:
    return join_key("projects", project.name, "files", validate_key(path))


def issue_urls(
    db: Session,
    storage: StorageRegistry,
    who: Principal,
    project: Project,
    requests: Sequence[FileRequest],
    info: audit.RequestInfo,
    *,
    expires_in: int,
    key_of: Callable[[Project, str], str] = project_file_key,
    action: str = "presign",
) -> list[IssuedUrl]:
    if not requests:
        return []
    if len(requests) > MAX_URLS_PER_REQUEST:
        raise InvalidInput(f"at most {MAX_URLS_PER_REQUEST} URLs per request; split the batch")
    for method in {r.method for r in requests}:
        require_url_access(db, who, project, method)
    keys = [key_of(project, r.path) for r in requests]
    bucket = storage.team_bucket(db, project.team)
    signed: list[PresignedRequest | None] = [None] * len(requests)
    puts = [i for i, r in enumerate(requests) if r.method == "PUT"]
    gets = [i for i, r in enumerate(requests) if r.method == "GET" and not r.download_name]
    for i, req in zip(puts, bucket.store.presign_put_many(
            [(keys[i], requests[i].size, requests[i].sha256) for i in puts],
            expires_in=expires_in), strict=True):
        signed[i] = req
    for i, req in zip(gets, bucket.store.presign_get_many([keys[i] for i in gets],
                                                          expires_in=expires_in), strict=True):
        signed[i] = req
    for i, r in enumerate(requests):
        if signed[i] is not None:
            continue
        if r.method == "HEAD":
            signed[i] = bucket.store.presign_head(keys[i], expires_in=expires_in)
        else:
            signed[i] = bucket.store.presign_get(keys[i], expires_in=expires_in,
                                                 download_name=r.download_name)
    audit.record(db, who, action, info, team=project.team.name, project=project.name,
                 keys=[(bucket.store.full_key(k), r.method) for k, r in zip(keys, requests,
                                                                           strict=True)])
    out = []
    for r, s in zip(requests, signed, strict=True):
        assert s is not None
        out.append(IssuedUrl(r.path, s.method, s.url, dict(s.headers), s.expires_at))
    return out


def list_files(db: Session, storage: StorageRegistry, who: Principal, project: Project,
               prefix: str = "", *, limit: int = 1000) -> list[ObjectInfo]:
    require_url_access(db, who, project, "GET")
    bucket = storage.team_bucket(db, project.team)
    base = join_key("projects", project.name, "files")
    if prefix:
        validate_key(prefix.rstrip("/"))
    full_prefix = f"{base}/{prefix}"
    out: list[ObjectInfo] = []
    for obj in bucket.store.iter_objects(full_prefix):
        out.append(ObjectInfo(obj.key[len(base) + 1:], obj.size, obj.etag, obj.last_modified,
                              obj.sha256))
        if len(out) >= limit:
            break
    return out
