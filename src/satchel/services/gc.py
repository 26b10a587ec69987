"""Artifact garbage collector (DESIGN §6, issue 5 "Delete + GC").

An object (``artifacts/sha256/<aa>/<bb>/<sha>`` under a team's prefix) is **live** when any
entry of one of these versions of the same team references it:

* committed and not deleted (nor its collection, nor its project);
* soft-deleted (version, collection or project) less than ``retention_seconds`` ago, so it can
  still be restored;
* pending: an upload is in progress (or was abandoned: pending versions are kept; dropping
  stale pending versions is a separate job).

Besides, nothing created less than ``grace_seconds`` ago is freed: rows by ``created_at``,
objects without rows by the bucket's ``last_modified`` (an upload may be on its way to a
version the database does not show yet).

Freeing order, per object: the ``ArtifactObject`` row is deleted first, in its own committed
transaction and only if no live version references the hash at that moment; then liveness is
checked again and the bucket object is deleted. Row first because :func:`artifacts.commit`
trusts a row and skips the HEAD: with the bucket first, a commit racing the collector could make
a version visible whose bytes are gone. Row first, a racing commit finds no row, HEADs, and
either sees the object (which the second check then keeps) or fails with "upload again". If the
bucket delete fails, the object is an orphan without a row and a later run frees it.

Also reported: orphans both ways (bucket objects with no row, freed once out of the grace
period; rows whose object is missing, reported only) and abandoned multipart uploads under
``artifacts/sha256/`` (aborted once older than the grace period). ``dry_run`` changes nothing
and reports what would be freed. A database lease (:mod:`satchel.services.leases`) keeps two
replicas from collecting at once.

Time is injected (``clock``); nothing here sleeps.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, delete, exists, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql.elements import ColumnElement

from satchel.db.models import (
    ArtifactCollection,
    ArtifactEntry,
    ArtifactObject,
    ArtifactVersion,
    Project,
    Team,
)
from satchel.db.session import Database
from satchel.errors import Conflict, NotFound
from satchel.services import leases
from satchel.services.storage import StorageRegistry
from satchel.storage.scoped import ScopedStore

LEASE_NAME = "artifact-gc"
OBJECT_PREFIX = "artifacts/sha256/"
DELETE_BATCH = 500

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class TeamReport:
    team: str
    objects_freed: int = 0  # rows + their objects (or would be, in a dry run)
    bytes_freed: int = 0
    orphan_objects_freed: int = 0  # bucket objects without a row
    orphan_bytes_freed: int = 0
    orphan_objects_kept: int = 0  # without a row but live or inside the grace period
    rows_missing_object: list[str] = field(default_factory=list)  # sha256, reported only
    multipart_aborted: int = 0
    skipped_now_live: int = 0  # became live between the scan and the delete
    delete_failures: int = 0
    error: str | None = None


@dataclass(slots=True)
class GcReport:
    dry_run: bool
    started_at: datetime
    finished_at: datetime | None = None
    teams: list[TeamReport] = field(default_factory=list)

    @property
    def objects_freed(self) -> int:
        return sum(t.objects_freed + t.orphan_objects_freed for t in self.teams)

    @property
    def bytes_freed(self) -> int:
        return sum(t.bytes_freed + t.orphan_bytes_freed for t in self.teams)

    @property
    def rows_missing_object(self) -> int:
        return sum(len(t.rows_missing_object) for t in self.teams)

    @property
    def multipart_aborted(self) -> int:
        return sum(t.multipart_aborted for t in self.teams)

    @property
    def errors(self) -> list[str]:
        return [f"{t.team}: {t.error}" for t in self.teams if t.error]


# ---------------------------------------------------------------------------- liveness


def _kept(column: InstrumentedAttribute[datetime | None], cutoff: datetime) -> ColumnElement[bool]:
    return or_(column.is_(None), column >= cutoff)


def _live_versions(team_id: int, cutoff: datetime) -> ColumnElement[bool]:
    """EXISTS-able condition: version belongs to the team and keeps its objects alive."""
    return and_(
        ArtifactCollection.team_id == team_id,
        or_(ArtifactVersion.state == "pending",
            and_(ArtifactVersion.state == "committed",
                 _kept(ArtifactVersion.deleted_at, cutoff),
                 _kept(ArtifactCollection.deleted_at, cutoff),
                 _kept(Project.deleted_at, cutoff))),
    )


def _live_query(team_id: int, cutoff: datetime):  # type: ignore[no-untyped-def]
    return (select(ArtifactEntry.sha256)
            .join(ArtifactVersion, ArtifactVersion.id == ArtifactEntry.version_id)
            .join(ArtifactCollection, ArtifactCollection.id == ArtifactVersion.collection_id)
            .join(Project, Project.id == ArtifactCollection.project_id)
            .where(ArtifactEntry.sha256.is_not(None), _live_versions(team_id, cutoff)))


def live_hashes(s: Session, team_id: int, cutoff: datetime,
                among: Sequence[str] | None = None) -> set[str]:
    """Hashes referenced by live versions of the team (restricted to ``among`` if given)."""
    if among is None:
        return {h for h in s.scalars(_live_query(team_id, cutoff).distinct()) if h}
    out: set[str] = set()
    for start in range(0, len(among), DELETE_BATCH):
        batch = list(among[start:start + DELETE_BATCH])
        out.update(h for h in s.scalars(
            _live_query(team_id, cutoff).where(ArtifactEntry.sha256.in_(batch)).distinct()) if h)
    return out


def _key(sha: str) -> str:
    return f"{OBJECT_PREFIX}{sha[:2]}/{sha[2:4]}/{sha}"


def _sha_of(key: str) -> str | None:
    if not key.startswith(OBJECT_PREFIX):
        return None
    parts = key[len(OBJECT_PREFIX):].split("/")
    if len(parts) != 3 or _key(parts[2]) != key or len(parts[2]) != 64:
        return None
    return parts[2]


# ---------------------------------------------------------------------------- collect


def collect(
    db: Database, storage: StorageRegistry, *, team: str | None = None, dry_run: bool = False,
    clock: Clock = system_clock, grace_seconds: float = 86_400,
    retention_seconds: float = 30 * 86_400, holder: str | None = None,
    lease_ttl_seconds: float = 3_600,
) -> GcReport:
    """Collect one team (by name) or all; raises :class:`Conflict` when another collector
    holds the lease."""
    holder = holder or f"gc-{uuid.uuid4().hex}"
    if not leases.acquire(db, LEASE_NAME, holder, ttl_seconds=lease_ttl_seconds, now=clock()):
        raise Conflict("another garbage collection is running; try again later",
                       details={"lease": LEASE_NAME})
    report = GcReport(dry_run=dry_run, started_at=clock())
    try:
        with db.session() as s:
            q = select(Team.id, Team.name).order_by(Team.id)
            if team is not None:
                q = q.where(Team.name == team)
            teams = [(int(r.id), str(r.name)) for r in s.execute(q)]
        if team is not None and not teams:
            raise NotFound(f"team '{team}' does not exist", details={"team": team})
        for team_id, name in teams:
            tr = TeamReport(name)
            report.teams.append(tr)
            try:
                _collect_team(db, storage, team_id, tr, dry_run=dry_run, clock=clock,
                              grace=timedelta(seconds=grace_seconds),
                              retention=timedelta(seconds=retention_seconds))
            except Exception as exc:  # one team's broken bucket must not stop the others
                tr.error = f"{type(exc).__name__}: {exc}"[:500]
            if not leases.renew(db, LEASE_NAME, holder, ttl_seconds=lease_ttl_seconds,
                                now=clock()):
                raise Conflict("the garbage collection lease was lost; stopped",
                               details={"lease": LEASE_NAME})
    finally:
        leases.release(db, LEASE_NAME, holder)
    report.finished_at = clock()
    return report


def _collect_team(db: Database, storage: StorageRegistry, team_id: int, tr: TeamReport, *,
                  dry_run: bool, clock: Clock, grace: timedelta, retention: timedelta) -> None:
    with db.session() as s:
        team = s.get(Team, team_id)
        assert team is not None
        store = storage.team_bucket(s, team).store
    # List the bucket before reading the database: an object that appears after the listing
    # is simply not considered this run.
    in_bucket = {}
    for info in store.iter_objects(OBJECT_PREFIX):
        sha = _sha_of(info.key)
        if sha is not None:
            in_bucket[sha] = info
    now = clock()
    cutoff, young = now - retention, now - grace
    with db.session() as s:
        rows = {r.sha256: (int(r.size), r.created_at) for r in s.execute(
            select(ArtifactObject.sha256, ArtifactObject.size, ArtifactObject.created_at)
            .where(ArtifactObject.team_id == team_id))}
        live = live_hashes(s, team_id, cutoff)

    tr.rows_missing_object = sorted(sha for sha in rows if sha not in in_bucket)
    candidates = sorted(sha for sha, (_, created) in rows.items()
                        if sha not in live and created < young and sha in in_bucket)
    orphans: list[str] = []
    for sha, info in sorted(in_bucket.items()):
        if sha in rows:
            continue
        modified = info.last_modified
        if sha in live or modified is None or modified >= young:
            tr.orphan_objects_kept += 1
        else:
            orphans.append(sha)

    if dry_run:
        tr.objects_freed = len(candidates)
        tr.bytes_freed = sum(in_bucket[sha].size for sha in candidates)
        tr.orphan_objects_freed = len(orphans)
        tr.orphan_bytes_freed = sum(in_bucket[sha].size for sha in orphans)
        tr.multipart_aborted = sum(1 for _ in _abandoned_uploads(store, young))
        return

    for start in range(0, len(candidates), DELETE_BATCH):
        batch = candidates[start:start + DELETE_BATCH]
        gone = _delete_rows(db, team_id, batch, cutoff, young)
        tr.skipped_now_live += len(batch) - len(gone)
        freed = _delete_objects(db, store, team_id, gone, cutoff, tr)
        tr.objects_freed += len(freed)
        tr.bytes_freed += sum(in_bucket[sha].size for sha in freed)
    for start in range(0, len(orphans), DELETE_BATCH):
        batch = orphans[start:start + DELETE_BATCH]
        freed = _delete_objects(db, store, team_id, batch, cutoff, tr)
        tr.orphan_objects_freed += len(freed)
        tr.orphan_bytes_freed += sum(in_bucket[sha].size for sha in freed)
    for up in _abandoned_uploads(store, young):
        store.abort_multipart(up)
        tr.multipart_aborted += 1


def _delete_rows(db: Database, team_id: int, batch: Sequence[str], cutoff: datetime,
                 young: datetime) -> list[str]:
    """Delete the rows of ``batch`` no live version references, in one statement (the check
    and the delete are atomic); returns the hashes whose rows are gone."""
    referenced = exists(_live_query(team_id, cutoff).where(
        ArtifactEntry.sha256 == ArtifactObject.sha256))
    with db.session() as s:
        s.execute(delete(ArtifactObject).where(
            ArtifactObject.team_id == team_id, ArtifactObject.sha256.in_(list(batch)),
            ArtifactObject.created_at < young, ~referenced).execution_options(
            synchronize_session=False))
    with db.session() as s:
        still = set(s.scalars(select(ArtifactObject.sha256).where(
            ArtifactObject.team_id == team_id, ArtifactObject.sha256.in_(list(batch)))))
    return [sha for sha in batch if sha not in still]


def _delete_objects(db: Database, store: ScopedStore, team_id: int, batch: Iterable[str],
                    cutoff: datetime, tr: TeamReport) -> list[str]:
    """Delete bucket objects that still have no row and no live reference."""
    batch = list(batch)
    if not batch:
        return []
    with db.session() as s:
        live = live_hashes(s, team_id, cutoff, batch)
        rowed = set(s.scalars(select(ArtifactObject.sha256).where(
            ArtifactObject.team_id == team_id, ArtifactObject.sha256.in_(batch))))
    go = [sha for sha in batch if sha not in live and sha not in rowed]
    tr.skipped_now_live += len(batch) - len(go)
    if not go:
        return []
    res = store.delete_many([_key(sha) for sha in go])
    failed = set(res.failed)
    tr.delete_failures += len(failed)
    return [sha for sha in go if _key(sha) not in failed]


def _abandoned_uploads(store: ScopedStore, young: datetime):  # type: ignore[no-untyped-def]
    for up in store.list_multipart_uploads(OBJECT_PREFIX):
        if up.initiated is not None and up.initiated < young:
            yield store.multipart_for(up.key, up.upload_id)
