"""Artifact lifecycle: soft delete and restore of whole collections, version TTL changes, and
the restore checks that projects share (issue 5, DESIGN §6).

Soft delete marks one row (``artifact_collections.deleted_at``, ``projects.deleted_at``): every
version under it is invisible at once, and the versions' own ``deleted_at`` is left alone, so a
restore brings back exactly the versions that were visible before, and a version deleted on its
own before stays deleted. The garbage collector keeps the objects of anything soft-deleted less
than the retention window ago (services/gc.py); after that it may free them.

Restore rules, shared by collections and projects (:func:`check_restorable`):

* A version comes back only whole. If garbage collection freed any object of a version that
  would become visible again (its ``artifact_objects`` row is gone; the collector deletes the
  row before the bytes), the restore is refused with ``409 artifact_incomplete``, listing each
  such version and how many objects it lost. Partly freed counts as freed: a version with one
  missing file cannot be downloaded.
* A version whose TTL ran out while it was deleted does not come back: it is soft-deleted at
  the restore (as the collector would have done), so ``latest`` never points at an expired
  version. ``restore_version`` refuses such a version with ``409 artifact_expired`` instead.

Logging a new version under the name of a soft-deleted collection (names are unique per
project) *reuses* the collection: its deletion moves onto the versions it hid (each gets the
collection's ``deleted_at``, which keeps the collector's retention clock), the collection
becomes live and empty, and the new version gets the next index (indexes are never reused).
The old versions stay restorable one by one while their objects exist. A soft-deleted project,
by contrast, keeps its name: project files live in the bucket under the project's name, so a
new project of the same name would see them (services/projects.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Select, exists, func, select
from sqlalchemy.orm import Session

from satchel.db.models import (
    ArtifactCollection,
    ArtifactEntry,
    ArtifactObject,
    ArtifactVersion,
    Project,
)
from satchel.errors import ArtifactIncomplete, NotFound
from satchel.services import audit, ttl
from satchel.services.artifacts import (
    CollectionView,
    VersionView,
    _collection,
    _resolve,
    _view,
    move_latest,
)
from satchel.services.authz import Principal, require_url_access
from satchel.services.locks import lock_team

MAX_LISTED = 100


@dataclass(frozen=True, slots=True)
class Freed:
    """A version that lost objects to garbage collection."""

    collection: str
    version: str
    objects: int


# ---------------------------------------------------------------------------- shared checks


def _returning_versions(collection_ids: Select[int]) -> Select[ArtifactVersion]:
    """Committed versions, not deleted on their own, of the given collections."""
    return select(ArtifactVersion).where(
        ArtifactVersion.collection_id.in_(collection_ids),
        ArtifactVersion.state == "committed", ArtifactVersion.deleted_at.is_(None))


def _freed(db: Session, team_id: int, versions: Sequence[ArtifactVersion],
           names: dict[int, str]) -> list[Freed]:
    """Versions among ``versions`` with objects whose ``artifact_objects`` row is gone."""
    if not versions:
        return []
    by_id = {v.id: v for v in versions}
    missing = ~exists().where(ArtifactObject.team_id == team_id,
                              ArtifactObject.sha256 == ArtifactEntry.sha256)
    out: list[Freed] = []
    ids = sorted(by_id)
    for start in range(0, len(ids), 1000):
        rows = db.execute(
            select(ArtifactEntry.version_id, func.count(func.distinct(ArtifactEntry.sha256)))
            .where(ArtifactEntry.version_id.in_(ids[start:start + 1000]),
                   ArtifactEntry.sha256.is_not(None), missing)
            .group_by(ArtifactEntry.version_id))
        for version_id, count in rows:
            v = by_id[version_id]
            out.append(Freed(names[v.collection_id], f"v{v.index}", int(count)))
    return sorted(out, key=lambda f: (f.collection, int(f.version[1:])))


def _window(seconds: int | None) -> str:
    if seconds is None:
        return "the retention window"
    if seconds % 86_400 == 0:
        return f"the retention window ({seconds // 86_400} days)"
    return f"the retention window ({seconds} seconds)"


def check_restorable(db: Session, team_id: int, collection_ids: Select[int],
                     names: dict[int, str], what: str, now: datetime, *, hint: str,
                     retention_seconds: int | None = None
                     ) -> tuple[list[ArtifactVersion], list[ArtifactVersion]]:
    """(versions that come back, versions that expired meanwhile); raises ArtifactIncomplete
    when garbage collection freed objects of a version that would come back."""
    returning = list(db.scalars(_returning_versions(collection_ids)))
    expired = [v for v in returning if ttl.is_expired(v, now)]
    visible = [v for v in returning if not ttl.is_expired(v, now)]
    freed = _freed(db, team_id, visible, names)
    if freed:
        listed = ", ".join(f"{f.collection}:{f.version}" for f in freed[:10])
        more = f" and {len(freed) - 10} more" if len(freed) > 10 else ""
        raise ArtifactIncomplete(
            f"cannot restore {what}: garbage collection freed objects of {len(freed)} of its "
            f"versions ({listed}{more}) after {_window(retention_seconds)}, and a version "
            f"comes back only whole. {hint}",
            details={"count": len(freed), "retention_seconds": retention_seconds,
                     "versions": [{"artifact": f.collection, "version": f.version,
                                   "freed_objects": f.objects} for f in freed[:MAX_LISTED]]})
    return visible, expired


def expire(db: Session, versions: Sequence[ArtifactVersion], now: datetime) -> None:
    """Soft-delete versions whose TTL ran out while their collection or project was deleted."""
    for v in versions:
        v.deleted_at = now
    db.flush()


def audit_expired(db: Session, who: Principal, project: Project, names: dict[int, str],
                  versions: Sequence[ArtifactVersion], info: audit.RequestInfo) -> None:
    if versions:
        audit.record(db, who, "artifact_expire", info, team=project.team.name,
                     project=project.name,
                     keys=[(f"{names[v.collection_id]}:v{v.index}", None) for v in versions])


# ---------------------------------------------------------------------------- collections


def _count(db: Session, c: ArtifactCollection) -> int:
    """Committed versions not deleted on their own: what the collection shows (or would show
    when restored)."""
    return db.scalar(select(func.count()).select_from(ArtifactVersion).where(
        ArtifactVersion.collection_id == c.id, ArtifactVersion.state == "committed",
        ArtifactVersion.deleted_at.is_(None))) or 0


def _collection_view(db: Session, c: ArtifactCollection) -> CollectionView:
    return CollectionView(c.name, c.type, c.description, c.created_at, _count(db, c),
                          c.deleted_at)


def _deleted_collection(db: Session, project: Project, name: str, *, lock: bool = False
                        ) -> ArtifactCollection:
    q = select(ArtifactCollection).where(ArtifactCollection.project_id == project.id,
                                         ArtifactCollection.name == name,
                                         ArtifactCollection.deleted_at.is_not(None))
    c = db.scalar(q.with_for_update() if lock else q)
    if c is None:
        raise NotFound(f"no deleted artifact '{project.team.name}/{project.name}/{name}'",
                       details={"artifact": name})
    return c


def get_collection(db: Session, who: Principal, project: Project, name: str, *,
                   deleted: bool = False) -> CollectionView:
    require_url_access(db, who, project, "GET")
    c = (_deleted_collection(db, project, name) if deleted
         else _collection(db, project, name))
    return _collection_view(db, c)


def list_deleted_collections(db: Session, who: Principal, project: Project
                             ) -> list[CollectionView]:
    require_url_access(db, who, project, "GET")
    rows = db.scalars(select(ArtifactCollection).where(
        ArtifactCollection.project_id == project.id, ArtifactCollection.deleted_at.is_not(None))
        .order_by(ArtifactCollection.name))
    return [_collection_view(db, c) for c in rows]


def delete_collection(db: Session, who: Principal, project: Project, name: str,
                      info: audit.RequestInfo) -> CollectionView:
    """Soft delete: every version invisible at once; restorable within the retention window."""
    require_url_access(db, who, project, "DELETE")
    lock_team(db, project.team_id)  # the lock order of services/locks.py: team, then rows
    c = _collection(db, project, name, lock=True)
    c.deleted_at = datetime.now(UTC)
    db.flush()
    audit.record(db, who, "artifact_collection_delete", info, team=project.team.name,
                 project=project.name, keys=[(c.name, None)])
    return _collection_view(db, c)


def restore_collection(db: Session, who: Principal, project: Project, name: str,
                       info: audit.RequestInfo, *, retention_seconds: int | None = None
                       ) -> CollectionView:
    require_url_access(db, who, project, "PUT")
    # Held until commit: the collector cannot free an object between the check and the
    # restore (services/locks.py).
    lock_team(db, project.team_id)
    c = _deleted_collection(db, project, name, lock=True)
    now = datetime.now(UTC)
    _, expired = check_restorable(db, project.team_id, select(ArtifactCollection.id).where(
        ArtifactCollection.id == c.id), {c.id: c.name}, f"'{name}'", now,
        retention_seconds=retention_seconds,
        hint=f"Log the files again under '{name}': the collection comes back with its intact "
             f"versions restorable one by one (`satchel artifact restore "
             f"{project.team.name}/{project.name}/{name}:vN`)")
    c.deleted_at = None
    expire(db, expired, now)
    move_latest(db, c)
    audit.record(db, who, "artifact_collection_restore", info, team=project.team.name,
                 project=project.name, keys=[(c.name, None)])
    audit_expired(db, who, project, {c.id: c.name}, expired, info)
    return _collection_view(db, c)


def reuse_deleted_collection(db: Session, who: Principal, project: Project,
                             c: ArtifactCollection, info: audit.RequestInfo) -> None:
    """A new version is being logged under a soft-deleted collection's name: the collection
    comes back empty, its hidden versions individually soft-deleted (see the module doc)."""
    db.refresh(c, with_for_update=True)
    if c.deleted_at is None:  # restored meanwhile
        return
    for v in db.scalars(_returning_versions(select(ArtifactCollection.id).where(
            ArtifactCollection.id == c.id))):
        v.deleted_at = c.deleted_at  # keeps the collector's retention clock
    c.deleted_at = None
    db.flush()
    move_latest(db, c)
    audit.record(db, who, "artifact_collection_reuse", info, team=project.team.name,
                 project=project.name, keys=[(c.name, None)])


# ---------------------------------------------------------------------------- TTL


def set_version_ttl(db: Session, who: Principal, project: Project, name: str, ref: str,
                    ttl_seconds: int, info: audit.RequestInfo) -> VersionView:
    """``expires_at = committed_at + ttl`` (0 = forever). Works on soft-deleted versions too,
    so an expired one can get a new TTL before it is restored."""
    require_url_access(db, who, project, "PUT")
    ttl.check_version_ttl(ttl_seconds)
    lock_team(db, project.team_id)  # the lock order of services/locks.py: team, then rows
    c = _collection(db, project, name, lock=True)
    try:
        v = _resolve(db, project, c, ref)
    except NotFound as live:
        try:
            v = _resolve(db, project, c, ref, deleted=True)
        except NotFound:
            raise live from None
    v.expires_at = ttl.expiry_from_commit(v, ttl_seconds)
    db.flush()
    audit.record(db, who, "artifact_ttl", info, team=project.team.name, project=project.name,
                 keys=[(f"{c.name}:v{v.index} ttl={ttl_seconds}", None)])
    return _view(db, c, v)
