"""The server side of resumable artifact uploads and URL refresh (issue 5, docs/transfer.md).

* :func:`resume_pending` continues a pending version an interrupted client created, instead of
  starting another one, when the client's resume hint still fits: same collection, same
  manifest digest, same user, still pending. Objects the client reports as uploaded get no
  URLs; each multipart upload the client reports is continued (URLs for the parts it lacks
  only) if the store still has it open, else a new one is started.
* :func:`refresh_urls` signs fresh URLs for objects and parts of a pending version (presigned
  URLs expire; long uploads outlive them).

Nothing here is trusted for correctness: :func:`artifacts.commit` HEADs every object not yet
known before a version becomes visible, so a stale or forged hint can only make an upload
fail, never commit wrong bytes. Every URL passes :func:`require_url_access` (through
:func:`files.issue_urls` or explicitly for parts) and is audited.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from satchel.db.models import ArtifactCollection, ArtifactEntry, ArtifactVersion, Project
from satchel.errors import InvalidInput, NotFound
from satchel.services import artifacts, audit, multipart
from satchel.services.artifacts import CreateResult, MultipartInstructions, Upload, object_key
from satchel.services.authz import Principal, require_url_access
from satchel.services.files import MAX_URLS_PER_REQUEST, FileRequest, issue_urls
from satchel.services.storage import StorageRegistry, TeamBucket


@dataclass(frozen=True, slots=True)
class ResumeMultipart:
    upload_id: str
    part_size: int
    parts_done: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class ResumeHint:
    pending_id: int
    uploaded: frozenset[str] = frozenset()
    multipart: dict[str, ResumeMultipart] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PartsRequest:
    sha256: str
    upload_id: str
    part_size: int
    numbers: Sequence[int]


def _own_pending(db: Session, who: Principal, c: ArtifactCollection, pending_id: int
                 ) -> ArtifactVersion | None:
    v = db.get(ArtifactVersion, pending_id)
    if v is None or v.collection_id != c.id or v.state != "pending" or \
            v.created_by != who.user_id:
        return None
    return v


def _sizes(db: Session, v: ArtifactVersion) -> dict[str, int]:
    return {s: n for s, n in db.execute(
        select(ArtifactEntry.sha256, ArtifactEntry.size).where(
            ArtifactEntry.version_id == v.id, ArtifactEntry.sha256.is_not(None))) if s}


def _upload_is_open(bucket: TeamBucket, project: Project, sha256: str, upload_id: str
                    ) -> bool:
    return any(u.upload_id == upload_id
               for u in bucket.store.list_multipart_uploads(object_key(project, sha256)))


def _sign_uploads(db: Session, storage: StorageRegistry, who: Principal, project: Project,
                  objects: Sequence[tuple[str, int]], info: audit.RequestInfo, expires_in: int
                  ) -> list[Upload]:
    out: list[Upload] = []
    for start in range(0, len(objects), MAX_URLS_PER_REQUEST):
        batch = objects[start:start + MAX_URLS_PER_REQUEST]
        issued = issue_urls(db, storage, who, project,
                            [FileRequest(s, "PUT", n, s) for s, n in batch], info,
                            expires_in=expires_in, key_of=object_key,
                            action="artifact_presign")
        out += [Upload(u.path, n, u.url, u.method, u.headers, u.expires_at)
                for u, (_, n) in zip(issued, batch, strict=True)]
    return out


def _sign_parts(db: Session, bucket: TeamBucket, who: Principal, project: Project, sha256: str,
                size: int, upload_id: str, part_size: int, numbers: Sequence[int],
                info: audit.RequestInfo, expires_in: int) -> MultipartInstructions:
    require_url_access(db, who, project, "PUT")  # the same gate as every other URL
    key = object_key(project, sha256)
    handle = bucket.store.multipart_for(key, upload_id)
    parts = multipart.sign_parts(bucket.store, handle, size, part_size, numbers,
                                 expires_in=expires_in)
    audit.record(db, who, "artifact_presign", info, team=project.team.name,
                 project=project.name, keys=[(bucket.store.full_key(key), "PUT")])
    return MultipartInstructions(sha256, size, upload_id, part_size, parts,
                                 sequential=bucket.store.capabilities.sequential_parts)


def resume_pending(
    db: Session, storage: StorageRegistry, who: Principal, project: Project,
    c: ArtifactCollection, digest: str, hint: ResumeHint, info: audit.RequestInfo, *,
    expires_in: int, description: str, metadata_json: str, producing_run_id: int | None = None,
) -> CreateResult | None:
    """Continue the hinted pending version, or None when it cannot be (the caller then creates
    a new one, as without a hint)."""
    v = _own_pending(db, who, c, hint.pending_id)
    if v is None or v.digest != digest:
        return None
    # The digest covers the files only: description, metadata and the producing run (lineage)
    # are the latest call's.
    v.description = description
    v.metadata_json = metadata_json
    v.producing_run_id = producing_run_id
    db.flush()
    missing = artifacts._missing_objects(db, project, _sizes(db, v))
    missing = {s: n for s, n in missing.items() if s not in hint.uploaded}
    bucket = storage.team_bucket(db, project.team)
    caps = bucket.store.capabilities
    big = {s: n for s, n in missing.items() if multipart.wanted(n, caps)}
    small = [(s, n) for s, n in sorted(missing.items()) if s not in big]
    uploads = _sign_uploads(db, storage, who, project, small, info, expires_in)
    started: list[MultipartInstructions] = []
    for sha, size in sorted(big.items()):
        h = hint.multipart.get(sha)
        count = multipart.part_count(size, h.part_size, caps) if h is not None else None
        if h is not None and count is not None and \
                _upload_is_open(bucket, project, sha, h.upload_id):
            todo = [n for n in range(1, count + 1) if n not in h.parts_done]
            started.append(_sign_parts(db, bucket, who, project, sha, size, h.upload_id,
                                       h.part_size, todo, info, expires_in))
        else:  # dropped (aborted by GC, completed, expired at the store): start it again
            started.append(artifacts.start_multipart(db, storage, who, project, sha, size,
                                                     info, expires_in))
    audit.record(db, who, "artifact_resume", info, team=project.team.name,
                 project=project.name, keys=[(f"{c.name}:pending/{v.id}", None)])
    return CreateResult(artifacts._view(db, c, v), created=True, uploads=uploads,
                        multipart=started, resumed=True)


def refresh_urls(
    db: Session, storage: StorageRegistry, who: Principal, project: Project, name: str,
    pending_id: int, *, objects: Sequence[str], parts: Sequence[PartsRequest],
    info: audit.RequestInfo, expires_in: int,
) -> tuple[list[Upload], list[MultipartInstructions]]:
    """Fresh PUT URLs for whole objects and for parts of open multipart uploads of one of the
    caller's pending versions."""
    require_url_access(db, who, project, "PUT")
    c = db.scalar(select(ArtifactCollection).where(ArtifactCollection.project_id == project.id,
                                                   ArtifactCollection.name == name))
    v = _own_pending(db, who, c, pending_id) if c is not None else None
    if v is None:
        # Also the answer for someone else's pending version: the SDK then starts afresh.
        raise NotFound(f"no pending version {pending_id} of artifact '{name}' of yours (it "
                       "was committed, or dropped); log the artifact again",
                       details={"pending_id": pending_id})
    if len(objects) + sum(len(p.numbers) for p in parts) > MAX_URLS_PER_REQUEST:
        raise InvalidInput(f"at most {MAX_URLS_PER_REQUEST} URLs per request; split the batch")
    sizes = _sizes(db, v)
    for sha in [*objects, *(p.sha256 for p in parts)]:
        if sha not in sizes:
            raise InvalidInput(f"sha256 {sha[:64]} is not part of pending version {pending_id}",
                               details={"sha256": sha})
    uploads = _sign_uploads(db, storage, who, project,
                            [(s, sizes[s]) for s in dict.fromkeys(objects)], info, expires_in)
    bucket = storage.team_bucket(db, project.team)
    caps = bucket.store.capabilities
    signed: list[MultipartInstructions] = []
    for p in parts:
        size = sizes[p.sha256]
        count = multipart.part_count(size, p.part_size, caps)
        if count is None or not caps.multipart:
            raise InvalidInput(f"part size {p.part_size} does not fit object {p.sha256[:12]} "
                               f"of {size} bytes on this store", details={"sha256": p.sha256})
        bad = [n for n in p.numbers if not 1 <= n <= count]
        if bad:
            raise InvalidInput(f"object {p.sha256[:12]} has parts 1-{count}; got {bad[:5]}",
                               details={"sha256": p.sha256})
        signed.append(_sign_parts(db, bucket, who, project, p.sha256, size, p.upload_id,
                                  p.part_size, sorted(set(p.numbers)), info, expires_in))
    return uploads, signed
