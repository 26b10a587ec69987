"""Artifacts: versioned, content-addressed, deduplicated within a team (issue 5, DESIGN §6).

Key layout, relative to the team's prefix (services/storage.py):

    artifacts/sha256/<aa>/<bb>/<sha256>                       file contents, one object per hash
    artifacts/manifests/<project>/<collection>/<digest>.json  a version's manifest

Flow: :func:`create_version` records a *pending* version from a manifest and answers which
objects the team's bucket still needs (presigned PUTs, or multipart part URLs for big files);
the client uploads straight to the bucket; :func:`commit` HEADs every object the database does
not already know, and only when all exist with the declared size (and SHA-256 where the store
reports one) gives the version its index, moves ``latest`` and makes it visible, in the one
request transaction. Every URL goes through :func:`files.issue_urls` or the same
:func:`require_url_access` gate and is audited.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from satchel.db.models import (
    ArtifactAlias,
    ArtifactCollection,
    ArtifactEntry,
    ArtifactObject,
    ArtifactVersion,
    Project,
    Run,
)
from satchel.errors import ArtifactExpired, ArtifactIncomplete, Conflict, InvalidInput, NotFound
from satchel.services import artifact_verify, audit, multipart, ttl
from satchel.services.authz import Principal, require_url_access
from satchel.services.files import MAX_URLS_PER_REQUEST, FileRequest, IssuedUrl, issue_urls
from satchel.services.locks import lock_team
from satchel.services.storage import StorageRegistry
from satchel.storage.keys import join_key, validate_key

if TYPE_CHECKING:
    from satchel.services.artifact_uploads import ResumeHint

MiB = 1024 * 1024
MAX_METADATA_BYTES = 100_000
LATEST = "latest"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SHA = re.compile(r"^[0-9a-f]{64}$")
_VERSION_REF = re.compile(r"^v(\d{1,9})$")


# ---------------------------------------------------------------------------- keys & digest


def object_key(_: Project, sha256: str) -> str:
    """Where a team keeps the bytes with this SHA-256 (relative to the team prefix)."""
    if not _SHA.match(sha256):
        raise InvalidInput("sha256 must be 64 lowercase hex characters")
    return join_key("artifacts", "sha256", sha256[:2], sha256[2:4], sha256)


def manifest_key(project: Project, collection: str, digest: str) -> str:
    return join_key("artifacts", "manifests", project.name, collection, f"{digest}.json")


@dataclass(frozen=True, slots=True)
class EntryIn:
    path: str
    size: int
    sha256: str | None = None
    ref: str | None = None


def manifest_digest(entries: Sequence[EntryIn]) -> str:
    """SHA-256 over the entries sorted by path: same files, same digest."""
    rows = [[e.path, e.sha256, e.size, e.ref] for e in sorted(entries, key=lambda e: e.path)]
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()


# ---------------------------------------------------------------------------- views


@dataclass(frozen=True, slots=True)
class CollectionView:
    name: str
    type: str
    description: str
    created_at: datetime
    versions: int
    deleted_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class VersionView:
    id: int
    name: str
    type: str
    version: str | None
    digest: str
    state: str
    aliases: list[str]
    description: str
    metadata: dict[str, Any]
    size: int
    file_count: int
    created_at: datetime
    committed_at: datetime | None
    deleted_at: datetime | None
    expires_at: datetime | None  # TTL (services/ttl.py); provisional while pending
    producing_run: str | None = None  # run id (same project) that logged it; services/lineage


@dataclass(frozen=True, slots=True)
class EntryView:
    path: str
    size: int
    sha256: str | None
    ref: str | None


@dataclass(frozen=True, slots=True)
class Upload:
    sha256: str
    size: int
    url: str
    method: str
    headers: dict[str, str]
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class MultipartInstructions:
    sha256: str
    size: int
    upload_id: str
    part_size: int
    parts: list[IssuedUrl]
    sequential: bool = False  # parts in order, one at a time (GCS resumable sessions)


@dataclass(frozen=True, slots=True)
class CreateResult:
    version: VersionView
    created: bool
    uploads: list[Upload] = field(default_factory=list)
    multipart: list[MultipartInstructions] = field(default_factory=list)
    resumed: bool = False  # an interrupted upload's pending version, continued


@dataclass(frozen=True, slots=True)
class DownloadEntry:
    path: str
    size: int
    sha256: str | None
    ref: str | None
    url: str | None
    method: str | None
    headers: dict[str, str]
    expires_at: datetime | None


# ---------------------------------------------------------------------------- helpers


def _check_name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise InvalidInput(
            f"invalid {what} {value[:80]!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit", details={"field": what})
    return value


def _aliases(db: Session, version: ArtifactVersion) -> list[str]:
    return sorted(db.scalars(select(ArtifactAlias.alias)
                             .where(ArtifactAlias.version_id == version.id)))


def _producer(db: Session, v: ArtifactVersion) -> str | None:
    """The producing run's id; None without one, or when that run is soft-deleted."""
    if v.producing_run_id is None:
        return None
    run = db.get(Run, v.producing_run_id)
    return run.run_id if run is not None and run.deleted_at is None else None


def _view(db: Session, c: ArtifactCollection, v: ArtifactVersion) -> VersionView:
    return VersionView(
        v.id, c.name, c.type, None if v.index is None else f"v{v.index}", v.digest, v.state,
        _aliases(db, v), v.description, json.loads(v.metadata_json), v.size, v.file_count,
        v.created_at, v.committed_at, v.deleted_at, v.expires_at, _producer(db, v))


def _collection(db: Session, project: Project, name: str, *, lock: bool = False
                ) -> ArtifactCollection:
    q = select(ArtifactCollection).where(ArtifactCollection.project_id == project.id,
                                         ArtifactCollection.name == name,
                                         ArtifactCollection.deleted_at.is_(None))
    c = db.scalar(q.with_for_update() if lock else q)
    if c is None:
        raise NotFound(f"artifact '{project.team.name}/{project.name}/{name}' does not exist",
                       details={"artifact": name})
    return c


def _resolve(db: Session, project: Project, c: ArtifactCollection, ref: str, *,
             deleted: bool = False) -> ArtifactVersion:
    """``vN`` or an alias -> a committed version (live, or soft-deleted when ``deleted``)."""
    m = _VERSION_REF.match(ref)
    if m:
        v = db.scalar(select(ArtifactVersion).where(
            ArtifactVersion.collection_id == c.id, ArtifactVersion.index == int(m.group(1))))
    else:
        v = db.scalar(select(ArtifactVersion).join(
            ArtifactAlias, ArtifactAlias.version_id == ArtifactVersion.id).where(
            ArtifactAlias.collection_id == c.id, ArtifactAlias.alias == ref))
    if v is None or v.state != "committed" or (v.deleted_at is not None) != deleted:
        state = "deleted " if deleted else ""
        raise NotFound(f"no {state}version '{c.name}:{ref}' in "
                       f"'{project.team.name}/{project.name}'",
                       details={"artifact": f"{c.name}:{ref}"})
    return v


def _set_alias(db: Session, c: ArtifactCollection, alias: str, v: ArtifactVersion) -> None:
    row = db.scalar(select(ArtifactAlias).where(ArtifactAlias.collection_id == c.id,
                                                ArtifactAlias.alias == alias))
    if row is None:
        db.add(ArtifactAlias(collection_id=c.id, alias=alias, version_id=v.id))
    else:  # an alias names one version per collection: setting it moves it
        row.version_id = v.id
    db.flush()


def move_latest(db: Session, c: ArtifactCollection) -> None:
    """``latest`` names the highest live committed version (or nothing)."""
    top = db.scalar(select(ArtifactVersion).where(
        ArtifactVersion.collection_id == c.id, ArtifactVersion.state == "committed",
        ArtifactVersion.deleted_at.is_(None)).order_by(ArtifactVersion.index.desc()).limit(1))
    if top is not None:
        _set_alias(db, c, LATEST, top)
        return
    row = db.scalar(select(ArtifactAlias).where(ArtifactAlias.collection_id == c.id,
                                                ArtifactAlias.alias == LATEST))
    if row is not None:
        db.delete(row)
        db.flush()


def _entries(db: Session, v: ArtifactVersion) -> list[ArtifactEntry]:
    return list(db.scalars(select(ArtifactEntry).where(ArtifactEntry.version_id == v.id)
                           .order_by(ArtifactEntry.path)))


def _validate_entries(entries: Sequence[EntryIn]) -> None:
    seen: set[str] = set()
    for e in entries:
        validate_key(e.path)
        if e.path in seen:
            raise InvalidInput(f"path {e.path[:200]!r} appears twice in the manifest",
                               details={"path": e.path})
        seen.add(e.path)
        if (e.sha256 is None) == (e.ref is None):
            raise InvalidInput(f"entry {e.path[:200]!r} needs either sha256 (a file) or ref "
                               "(a reference URI), not both", details={"path": e.path})
        if e.sha256 is not None and not _SHA.match(e.sha256):
            raise InvalidInput("sha256 must be 64 lowercase hex characters",
                               details={"path": e.path})


# ---------------------------------------------------------------------------- logging


def create_version(
    db: Session, storage: StorageRegistry, who: Principal, project: Project, name: str, *,
    type: str, entries: Sequence[EntryIn], info: audit.RequestInfo, expires_in: int,
    description: str = "", metadata: dict[str, Any] | None = None,
    ttl_seconds: int | None = None, resume: ResumeHint | None = None,
    run_id: str | None = None,
) -> CreateResult:
    """A pending version, plus what to upload; or the existing version when nothing changed.

    ``ttl_seconds``: None = the team default, 0 = keep forever (services/ttl.py). Logging
    under the name of a soft-deleted collection reuses it (services/artifact_lifecycle.py).
    ``run_id``: the run of this project that logs it (lineage, services/lineage.py); when
    nothing changed, that run is recorded as a user of the existing version instead."""
    from satchel.services import lineage

    require_url_access(db, who, project, "PUT")
    run = lineage.producing_run(db, who, project, run_id)
    lock_team(db, project.team_id)  # vs. the garbage collector: services/locks.py
    _check_name(name, "artifact name")
    _check_name(type, "artifact type")
    _validate_entries(entries)
    meta = json.dumps(metadata or {}, sort_keys=True)
    if len(meta) > MAX_METADATA_BYTES:
        raise InvalidInput(f"metadata is larger than {MAX_METADATA_BYTES} bytes as JSON")
    version_ttl = ttl.chosen_ttl(project.team, ttl_seconds)
    # Live or soft-deleted: (project, name) is unique, so a deleted collection holds its name.
    c = db.scalar(select(ArtifactCollection).where(ArtifactCollection.project_id == project.id,
                                                   ArtifactCollection.name == name))
    if c is None:
        c = ArtifactCollection(team_id=project.team_id, project_id=project.id, name=name,
                               type=type, description=description)
        db.add(c)
        db.flush()
    elif c.type != type:
        deleted = " (soft-deleted)" if c.deleted_at is not None else ""
        raise Conflict(f"artifact '{name}'{deleted} has type '{c.type}', not '{type}'; use "
                       "another name or the same type", details={"artifact": name, "type": c.type})
    if c.deleted_at is not None:
        from satchel.services.artifact_lifecycle import reuse_deleted_collection

        reuse_deleted_collection(db, who, project, c, info)
    digest = manifest_digest(entries)
    latest = db.scalar(select(ArtifactVersion).join(
        ArtifactAlias, ArtifactAlias.version_id == ArtifactVersion.id).where(
        ArtifactAlias.collection_id == c.id, ArtifactAlias.alias == LATEST))
    if latest is not None and latest.digest == digest and latest.deleted_at is None:
        if run is not None:
            lineage.unchanged_logged_by(db, who, project, c, latest, run, info)
        return CreateResult(_view(db, c, latest), created=False)
    if resume is not None:
        # An interrupted upload continues its pending version (docs/transfer.md).
        from satchel.services.artifact_uploads import resume_pending

        resumed = resume_pending(db, storage, who, project, c, digest, resume, info,
                                 expires_in=expires_in, description=description,
                                 metadata_json=meta,
                                 producing_run_id=run.id if run is not None else None)
        if resumed is not None:
            return resumed

    created_at = datetime.now(UTC)
    v = ArtifactVersion(collection_id=c.id, digest=digest, state="pending",
                        description=description, metadata_json=meta, created_by=who.user_id,
                        size=sum(e.size for e in entries), file_count=len(entries),
                        created_at=created_at,
                        expires_at=ttl.provisional_expiry(version_ttl, created_at),
                        producing_run_id=run.id if run is not None else None)
    db.add(v)
    db.flush()
    if entries:  # one bulk INSERT (ORM objects cost ~0.15 ms each for 2,000-file manifests)
        db.execute(insert(ArtifactEntry), [
            {"version_id": v.id, "path": e.path, "sha256": e.sha256, "size": e.size,
             "ref": e.ref} for e in entries])
    missing = _missing_objects(db, project, {e.sha256: e.size for e in entries if e.sha256})
    bucket = storage.team_bucket(db, project.team)
    caps = bucket.store.capabilities
    big = {s: n for s, n in missing.items() if multipart.wanted(n, caps)}
    small = [(s, n) for s, n in sorted(missing.items()) if s not in big]
    uploads: list[Upload] = []
    for start in range(0, len(small), MAX_URLS_PER_REQUEST):
        batch = small[start:start + MAX_URLS_PER_REQUEST]
        issued = issue_urls(db, storage, who, project,
                            [FileRequest(s, "PUT", n, s) for s, n in batch], info,
                            expires_in=expires_in, key_of=object_key, action="artifact_presign")
        uploads += [Upload(u.path, n, u.url, u.method, u.headers, u.expires_at)
                    for u, (_, n) in zip(issued, batch, strict=True)]
    parts = [start_multipart(db, storage, who, project, s, n, info, expires_in)
             for s, n in sorted(big.items())]
    return CreateResult(_view(db, c, v), created=True, uploads=uploads, multipart=parts)


def _missing_objects(db: Session, project: Project, wanted: dict[str, int]) -> dict[str, int]:
    """Hashes this team's bucket is not known to hold (dedup is per team, never across)."""
    known: set[str] = set()
    hashes = list(wanted)
    for start in range(0, len(hashes), 1000):
        known.update(db.scalars(select(ArtifactObject.sha256).where(
            ArtifactObject.team_id == project.team_id,
            ArtifactObject.sha256.in_(hashes[start:start + 1000]))))
    return {s: n for s, n in wanted.items() if s not in known}


def start_multipart(db: Session, storage: StorageRegistry, who: Principal, project: Project,
                    sha256: str, size: int, info: audit.RequestInfo, expires_in: int
                    ) -> MultipartInstructions:
    require_url_access(db, who, project, "PUT")  # the same gate as every other URL
    bucket = storage.team_bucket(db, project.team)
    key = object_key(project, sha256)
    started = multipart.start(bucket.store, key, size, expires_in=expires_in)
    audit.record(db, who, "artifact_presign", info, team=project.team.name,
                 project=project.name, keys=[(bucket.store.full_key(key), "PUT")])
    return MultipartInstructions(sha256, size, started.upload.upload_id, started.part_size,
                                 started.parts, sequential=started.sequential)


def _pending(db: Session, project: Project, name: str, pending_id: int
             ) -> tuple[ArtifactCollection, ArtifactVersion]:
    c = _collection(db, project, name, lock=True)
    v = db.get(ArtifactVersion, pending_id)
    if v is None or v.collection_id != c.id or v.state != "pending":
        raise NotFound(f"no pending version {pending_id} of artifact '{name}'",
                       details={"pending_id": pending_id})
    return c, v


def complete_multipart(
    db: Session, storage: StorageRegistry, who: Principal, project: Project, name: str,
    pending_id: int, *, sha256: str, upload_id: str, parts: Sequence[tuple[int, str]],
    info: audit.RequestInfo,
) -> None:
    require_url_access(db, who, project, "PUT")
    _, v = _pending(db, project, name, pending_id)
    if db.scalar(select(ArtifactEntry.id).where(ArtifactEntry.version_id == v.id,
                                                ArtifactEntry.sha256 == sha256).limit(1)) is None:
        raise InvalidInput(f"sha256 {sha256[:64]} is not part of pending version {pending_id}")
    bucket = storage.team_bucket(db, project.team)
    handle = multipart.complete(bucket.store, object_key(project, sha256), upload_id, parts)
    audit.record(db, who, "artifact_multipart_complete", info, team=project.team.name,
                 project=project.name, keys=[(handle.key, "POST")])


def commit(
    db: Session, storage: StorageRegistry, who: Principal, project: Project, name: str,
    pending_id: int, *, aliases: Sequence[str], info: audit.RequestInfo,
) -> VersionView:
    """Verify every new object, then make the version visible (one transaction)."""
    require_url_access(db, who, project, "PUT")
    for alias in aliases:
        _check_custom_alias(alias)
    lock_team(db, project.team_id)  # vs. the garbage collector: services/locks.py
    c, v = _pending(db, project, name, pending_id)
    entries = _entries(db, v)
    files = {e.sha256: e.size for e in entries if e.sha256 is not None}
    missing = _missing_objects(db, project, files)
    bucket = storage.team_bucket(db, project.team)
    known = db.scalar(select(func.count()).select_from(ArtifactObject)
                      .where(ArtifactObject.team_id == project.team_id)) or 0
    problems = artifact_verify.verify(
        bucket.store, missing, known_objects=int(known),
        key_of=lambda sha: object_key(project, sha),
        multipart_threshold=multipart.MULTIPART_THRESHOLD)
    if problems:
        raise ArtifactIncomplete(
            f"cannot commit '{name}': {len(problems)} object(s) are missing from the bucket or "
            "differ from the manifest; upload them again and retry the commit",
            details={"problems": problems[:100], "count": len(problems)})
    manifest = {"format": 1, "collection": c.name, "type": c.type, "digest": v.digest,
                "entries": [{"path": e.path, "size": e.size, "sha256": e.sha256}
                            if e.ref is None else {"path": e.path, "size": e.size, "ref": e.ref}
                            for e in entries]}
    bucket.store.put_bytes(manifest_key(project, c.name, v.digest),
                           json.dumps(manifest, indent=1).encode(),
                           content_type="application/json")
    now = datetime.now(UTC)
    _record_objects(db, project.team_id, missing, now)
    top = db.scalar(select(func.max(ArtifactVersion.index))
                    .where(ArtifactVersion.collection_id == c.id))
    v.index = 0 if top is None else top + 1
    v.state = "committed"
    v.expires_at = ttl.expiry_at_commit(v, now)  # the TTL counts from the commit
    v.committed_at = now
    db.flush()
    _set_alias(db, c, LATEST, v)
    for alias in aliases:
        _set_alias(db, c, alias, v)
    audit.record(db, who, "artifact_commit", info, team=project.team.name,
                 project=project.name, keys=[(f"{c.name}:v{v.index}", None)])
    return _view(db, c, v)


# ---------------------------------------------------------------------------- reading


def list_collections(db: Session, who: Principal, project: Project) -> list[CollectionView]:
    require_url_access(db, who, project, "GET")
    live = (select(ArtifactVersion.collection_id, func.count().label("n"))
            .where(ArtifactVersion.state == "committed", ArtifactVersion.deleted_at.is_(None))
            .group_by(ArtifactVersion.collection_id).subquery())
    rows = db.execute(select(ArtifactCollection, live.c.n).join(
        live, live.c.collection_id == ArtifactCollection.id).where(
        ArtifactCollection.project_id == project.id, ArtifactCollection.deleted_at.is_(None))
        .order_by(ArtifactCollection.name))
    return [CollectionView(c.name, c.type, c.description, c.created_at, n) for c, n in rows]


def list_versions(db: Session, who: Principal, project: Project, name: str, *,
                  deleted: bool = False) -> list[VersionView]:
    require_url_access(db, who, project, "GET")
    c = _collection(db, project, name)
    q = select(ArtifactVersion).where(ArtifactVersion.collection_id == c.id,
                                      ArtifactVersion.state == "committed")
    q = q.where(ArtifactVersion.deleted_at.is_not(None) if deleted
                else ArtifactVersion.deleted_at.is_(None))
    return [_view(db, c, v) for v in db.scalars(q.order_by(ArtifactVersion.index))]


def get_version(db: Session, who: Principal, project: Project, name: str, ref: str
                ) -> tuple[VersionView, list[EntryView]]:
    require_url_access(db, who, project, "GET")
    c = _collection(db, project, name)
    v = _resolve(db, project, c, ref)
    return _view(db, c, v), [EntryView(e.path, e.size, e.sha256, e.ref) for e in _entries(db, v)]


def download_urls(db: Session, storage: StorageRegistry, who: Principal, project: Project,
                  name: str, ref: str, info: audit.RequestInfo, *, expires_in: int,
                  paths: Sequence[str] | None = None
                  ) -> tuple[VersionView, list[DownloadEntry]]:
    """URLs for every file of a version, or only for ``paths`` (the SDK's URL refresh)."""
    require_url_access(db, who, project, "GET")
    c = _collection(db, project, name)
    v = _resolve(db, project, c, ref)
    entries = _entries(db, v)
    if paths is not None:
        wanted = set(paths)
        entries = [e for e in entries if e.path in wanted]
    hashes = sorted({e.sha256 for e in entries if e.sha256 is not None})
    urls: dict[str, IssuedUrl] = {}
    for start in range(0, len(hashes), MAX_URLS_PER_REQUEST):
        batch = hashes[start:start + MAX_URLS_PER_REQUEST]
        for iu in issue_urls(db, storage, who, project, [FileRequest(s, "GET") for s in batch],
                            info, expires_in=expires_in, key_of=object_key,
                            action="artifact_presign"):
            urls[iu.path] = iu
    out = []
    for e in entries:
        u: IssuedUrl | None = urls.get(e.sha256) if e.sha256 else None
        out.append(DownloadEntry(e.path, e.size, e.sha256, e.ref, u.url if u else None,
                                 u.method if u else None,
                                 dict(u.headers) if u else {}, u.expires_at if u else None))
    return _view(db, c, v), out


# ---------------------------------------------------------------------------- aliases, delete


def _check_custom_alias(alias: str) -> None:
    _check_name(alias, "alias")
    if alias == LATEST or _VERSION_REF.match(alias):
        raise InvalidInput(f"alias {alias!r} is reserved ('latest' moves by itself; vN names "
                           "a version)", details={"alias": alias})


def set_alias(db: Session, who: Principal, project: Project, name: str, alias: str,
              ref: str, info: audit.RequestInfo) -> VersionView:
    require_url_access(db, who, project, "PUT")
    _check_custom_alias(alias)
    # Same lock order as the collector's TTL expiry (team, then collection): no deadlock.
    lock_team(db, project.team_id)
    c = _collection(db, project, name, lock=True)
    v = _resolve(db, project, c, ref)
    _set_alias(db, c, alias, v)
    audit.record(db, who, "artifact_alias", info, team=project.team.name, project=project.name,
                 keys=[(f"{c.name}:{alias}->v{v.index}", None)])
    return _view(db, c, v)


def remove_alias(db: Session, who: Principal, project: Project, name: str, alias: str,
                 info: audit.RequestInfo) -> None:
    require_url_access(db, who, project, "PUT")
    _check_custom_alias(alias)
    # Same lock order as the collector's TTL expiry (team, then collection): no deadlock.
    lock_team(db, project.team_id)
    c = _collection(db, project, name, lock=True)
    row = db.scalar(select(ArtifactAlias).where(ArtifactAlias.collection_id == c.id,
                                                ArtifactAlias.alias == alias))
    if row is None:
        raise NotFound(f"artifact '{name}' has no alias '{alias}'", details={"alias": alias})
    db.delete(row)
    db.flush()
    audit.record(db, who, "artifact_unalias", info, team=project.team.name,
                 project=project.name, keys=[(f"{c.name}:{alias}", None)])


def delete_version(db: Session, who: Principal, project: Project, name: str, ref: str,
                   info: audit.RequestInfo) -> VersionView:
    """Soft delete: invisible at once, restorable; the bytes stay until GC (not built yet)."""
    require_url_access(db, who, project, "DELETE")
    # Same lock order as the collector's TTL expiry (team, then collection): no deadlock.
    lock_team(db, project.team_id)
    c = _collection(db, project, name, lock=True)
    v = _resolve(db, project, c, ref)
    v.deleted_at = datetime.now(UTC)
    db.flush()
    move_latest(db, c)
    audit.record(db, who, "artifact_delete", info, team=project.team.name,
                 project=project.name, keys=[(f"{c.name}:v{v.index}", None)])
    return _view(db, c, v)


def restore_version(db: Session, who: Principal, project: Project, name: str, ref: str,
                    info: audit.RequestInfo) -> VersionView:
    require_url_access(db, who, project, "PUT")
    lock_team(db, project.team_id)  # vs. the garbage collector: services/locks.py
    c = _collection(db, project, name, lock=True)
    v = _resolve(db, project, c, ref, deleted=True)
    if ttl.is_expired(v, datetime.now(UTC)):
        assert v.expires_at is not None
        raise ArtifactExpired(
            f"cannot restore '{name}:{ref}': its TTL ran out at {v.expires_at.isoformat()}, so "
            "the next garbage collection would delete it again; give it a new TTL first (PUT "
            f".../versions/{ref}/ttl, or `satchel artifact set-ttl`), then restore",
            details={"artifact": f"{name}:{ref}", "expires_at": v.expires_at.isoformat()})
    files = {e.sha256: e.size for e in _entries(db, v) if e.sha256 is not None}
    freed = _missing_objects(db, project, files)
    if freed:
        # The garbage collector deletes object rows before the bytes: a version whose objects
        # were freed after the retention window cannot come back.
        raise ArtifactIncomplete(
            f"cannot restore '{name}:{ref}': {len(freed)} of its objects were freed by garbage "
            "collection after the retention window; log the files again instead",
            details={"count": len(freed)})
    v.deleted_at = None
    db.flush()
    move_latest(db, c)
    audit.record(db, who, "artifact_restore", info, team=project.team.name,
                 project=project.name, keys=[(f"{c.name}:v{v.index}", None)])
    return _view(db, c, v)


def _record_objects(db: Session, team_id: int, sizes: dict[str, int], now: datetime) -> None:
    """Insert object rows, ignoring ones a concurrent commit (another collection logging the
    same bytes) inserted first: dedup must never turn a race into a 500."""
    if not sizes:
        return
    rows = [{"team_id": team_id, "sha256": s, "size": n, "created_at": now}
            for s, n in sizes.items()]
    from sqlalchemy.dialects import postgresql, sqlite

    if db.get_bind().dialect.name == "postgresql":
        db.execute(postgresql.insert(ArtifactObject).on_conflict_do_nothing(
            index_elements=["team_id", "sha256"]), rows)
    else:
        db.execute(sqlite.insert(ArtifactObject).on_conflict_do_nothing(
            index_elements=["team_id", "sha256"]), rows)
