"""Artifact garbage collector (DESIGN §6, issue 5 "Delete + GC"; docs/gc.md).

Each run, per team, in this order:

1. **TTL expiry**: committed, not deleted versions whose ``expires_at`` has passed are
   soft-deleted (``deleted_at = now``, ``latest`` re-pointed, an ``artifact_expire`` audit
   row). From then on they are ordinary deleted versions: restorable for the retention window.
2. **Stale pending versions** (created more than ``pending_expiry_seconds`` ago and never
   committed) are dropped with their entries; their uploaded objects become orphans.
   **Deleted runs** (themselves or through their project) longer than ``retention_seconds``
   ago are purged, and the objects under their ``runs/<project>/<run_id>/`` prefixes freed
   (:mod:`satchel.services.run_purge`).
3. **Objects**: an object (``artifacts/sha256/<aa>/<bb>/<sha>`` under a team's prefix) is
   **live** when any entry of one of these versions of the same team references it:

   * committed and not deleted (nor its collection, nor its project);
   * soft-deleted (version, collection or project) less than ``retention_seconds`` ago, so it
     can still be restored;
   * pending: an upload is in progress.

   Besides, nothing created less than ``grace_seconds`` ago is freed: rows by ``created_at``,
   objects without rows by the bucket's ``last_modified`` (an upload may be on its way to a
   version the database does not show yet).

Freeing order, per batch of hashes, each step in its own transaction holding the team's
artifact lock (:mod:`satchel.services.locks`, also taken by ``create_version``, ``commit`` and
``restore_version``): first the ``ArtifactObject`` rows are deleted, only where no live version
references the hash, and committed; then, in a second locked transaction, liveness and rows are
checked again and the bucket objects are deleted. Row first because :func:`artifacts.commit`
trusts a row and skips the HEAD: a crash between the two steps leaves an orphan object (freed by
a later run), never a row whose bytes are gone. The lock makes each check-then-delete atomic
with respect to a client being told "this hash is already stored, do not upload it".

Also reported: orphans both ways (bucket objects with no row, freed once out of the grace
period; rows whose object is missing, reported only) and abandoned multipart uploads under
``artifacts/sha256/`` (aborted once older than the grace period). ``dry_run`` changes nothing
and reports what would be expired, dropped and freed. A database lease
(:mod:`satchel.services.leases`) keeps two replicas from collecting at once; it is renewed at
every step, and a run that loses it stops. Run history lives in :mod:`satchel.services.gc_runs`.

Time is injected (``clock``); nothing here sleeps.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, delete, exists, or_, select, update
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
from satchel.logs import scrub
from satchel.services import audit, leases, locks, run_purge
from satchel.services.artifacts import move_latest
from satchel.services.storage import StorageRegistry
from satchel.storage.base import MultipartUpload
from satchel.storage.scoped import ScopedStore

LEASE_NAME = "artifact-gc"
# Renewed at every step (after each team, listing page batch and delete batch), so a crashed
# collector's lease frees up this long after its last sign of life.
LEASE_TTL_SECONDS = 900.0
OBJECT_PREFIX = "artifacts/sha256/"
DELETE_BATCH = 500
RENEW_EVERY_LISTED = 10_000
REPORT_LIST_LIMIT = 1_000  # hashes listed per team in a report; counts are always complete

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class TeamReport:
    team: str
    versions_expired: int = 0  # soft-deleted by TTL (or would be, in a dry run)
    pending_dropped: int = 0  # stale pending versions dropped
    objects_freed: int = 0  # rows + their objects (or would be, in a dry run)
    bytes_freed: int = 0
    orphan_objects_freed: int = 0  # bucket objects without a row
    orphan_bytes_freed: int = 0
    orphan_objects_kept: int = 0  # without a row but live or inside the grace period
    # Objects without rows (freed or kept) and rows without objects (reported only), sha256.
    orphan_objects: list[str] = field(default_factory=list)
    rows_missing_object: list[str] = field(default_factory=list)
    multipart_aborted: int = 0
    skipped_now_live: int = 0  # became live between the scan and the delete
    delete_failures: int = 0
    # Deleted runs purged past the retention window (services/run_purge.py) and the objects
    # under their runs/<project>/<run_id>/ prefixes freed.
    runs_purged: int = 0
    run_objects_freed: int = 0
    run_bytes_freed: int = 0
    unknown_run_prefixes: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("orphan_objects", "rows_missing_object", "unknown_run_prefixes"):
            out[f"{name}_count"] = len(out[name])
            out[name] = out[name][:REPORT_LIST_LIMIT]
        return out


@dataclass(slots=True)
class GcReport:
    dry_run: bool
    started_at: datetime
    finished_at: datetime | None = None
    teams: list[TeamReport] = field(default_factory=list)
    # Why the run stopped early (lease lost, server shutting down); None when it completed.
    error: str | None = None

    @property
    def objects_freed(self) -> int:
        return sum(t.objects_freed + t.orphan_objects_freed + t.run_objects_freed
                   for t in self.teams)

    @property
    def bytes_freed(self) -> int:
        return sum(t.bytes_freed + t.orphan_bytes_freed + t.run_bytes_freed for t in self.teams)

    @property
    def runs_purged(self) -> int:
        return sum(t.runs_purged for t in self.teams)

    @property
    def versions_expired(self) -> int:
        return sum(t.versions_expired for t in self.teams)

    @property
    def pending_dropped(self) -> int:
        return sum(t.pending_dropped for t in self.teams)

    @property
    def rows_missing_object(self) -> int:
        return sum(len(t.rows_missing_object) for t in self.teams)

    @property
    def multipart_aborted(self) -> int:
        return sum(t.multipart_aborted for t in self.teams)

    @property
    def errors(self) -> list[str]:
        return [f"{t.team}: {t.error}" for t in self.teams if t.error]

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "error": self.error, "errors": self.errors,
                "teams": [t.to_dict() for t in self.teams]}


@dataclass(frozen=True, slots=True)
class Policy:
    """How long things are kept (Settings: gc_grace_seconds, artifact_retention_seconds,
    gc_pending_expiry_seconds). ``pending_expiry_seconds`` None keeps pending versions."""

    grace_seconds: float = 86_400
    retention_seconds: float = 30 * 86_400
    pending_expiry_seconds: float | None = None


class LeaseLost(Exception):
    """The run's lease expired and another collector took it: stop at once."""


class Stopped(Exception):
    """The caller asked the run to stop (server shutdown)."""


class _Keeper:
    """Renews the lease and honours stop requests at every step of a run."""

    def __init__(self, db: Database, holder: str, ttl: float, clock: Clock,
                 should_stop: Callable[[], bool] | None) -> None:
        self.db, self.holder, self.ttl, self.clock = db, holder, ttl, clock
        self.should_stop = should_stop

    def step(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Stopped
        if not leases.renew(self.db, LEASE_NAME, self.holder, ttl_seconds=self.ttl,
                            now=self.clock()):
            raise LeaseLost


# ---------------------------------------------------------------------------- liveness


def _kept(column: InstrumentedAttribute[datetime | None], cutoff: datetime) -> ColumnElement[bool]:
    return or_(column.is_(None), column >= cutoff)


def _live_versions(team_id: int, cutoff: datetime, pending_cutoff: datetime | None = None
                   ) -> ColumnElement[bool]:
    """Condition: the version belongs to the team and keeps its objects alive.

    ``pending_cutoff`` (dry runs only) leaves out pending versions the run would drop first."""
    pending: ColumnElement[bool] = ArtifactVersion.state == "pending"
    if pending_cutoff is not None:
        pending = and_(pending, ArtifactVersion.created_at >= pending_cutoff)
    return and_(
        ArtifactCollection.team_id == team_id,
        or_(pending,
            and_(ArtifactVersion.state == "committed",
                 _kept(ArtifactVersion.deleted_at, cutoff),
                 _kept(ArtifactCollection.deleted_at, cutoff),
                 _kept(Project.deleted_at, cutoff))),
    )


def _live_query(team_id: int, cutoff: datetime, pending_cutoff: datetime | None = None
                ) -> Select[Any]:
    return (select(ArtifactEntry.sha256)
            .join(ArtifactVersion, ArtifactVersion.id == ArtifactEntry.version_id)
            .join(ArtifactCollection, ArtifactCollection.id == ArtifactVersion.collection_id)
            .join(Project, Project.id == ArtifactCollection.project_id)
            .where(ArtifactEntry.sha256.is_not(None),
                   _live_versions(team_id, cutoff, pending_cutoff)))


def live_hashes(s: Session, team_id: int, cutoff: datetime,
                among: Sequence[str] | None = None, *,
                pending_cutoff: datetime | None = None) -> set[str]:
    """Hashes referenced by live versions of the team (restricted to ``among`` if given)."""
    query = _live_query(team_id, cutoff, pending_cutoff)
    if among is None:
        return {h for h in s.scalars(query.distinct()) if h}
    out: set[str] = set()
    for start in range(0, len(among), DELETE_BATCH):
        batch = list(among[start:start + DELETE_BATCH])
        out.update(h for h in s.scalars(
            query.where(ArtifactEntry.sha256.in_(batch)).distinct()) if h)
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


def _chunks(items: Sequence[Any], size: int = DELETE_BATCH) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


# ---------------------------------------------------------------------------- collect


def resolve_teams(db: Database, team: str | None) -> list[tuple[int, str]]:
    """(id, name) of one team by name, or of every team; NotFound for an unknown name."""
    with db.session() as s:
        q = select(Team.id, Team.name).order_by(Team.id)
        if team is not None:
            q = q.where(Team.name == team)
        teams = [(int(r.id), str(r.name)) for r in s.execute(q)]
    if team is not None and not teams:
        raise NotFound(f"team '{team}' does not exist", details={"team": team})
    return teams


def acquire_lease(db: Database, holder: str, *, now: datetime,
                  ttl_seconds: float = LEASE_TTL_SECONDS) -> None:
    """Take the collector's lease or raise :class:`Conflict` (409) naming the holder."""
    if not leases.acquire(db, LEASE_NAME, holder, ttl_seconds=ttl_seconds, now=now):
        raise Conflict("another garbage collection is running; try again later",
                       details={"lease": LEASE_NAME,
                                "holder": leases.holder_of(db, LEASE_NAME, now=now)})


def collect(
    db: Database, storage: StorageRegistry, *, team: str | None = None, dry_run: bool = False,
    clock: Clock = system_clock, grace_seconds: float = 86_400,
    retention_seconds: float = 30 * 86_400, pending_expiry_seconds: float | None = None,
    holder: str | None = None, lease_ttl_seconds: float = LEASE_TTL_SECONDS,
) -> GcReport:
    """Collect one team (by name) or all, without recording the run (gc_runs.run does).

    Raises :class:`NotFound` for an unknown team and :class:`Conflict` when another collector
    holds the lease."""
    teams = resolve_teams(db, team)
    holder = holder or f"gc-{uuid.uuid4().hex}"
    acquire_lease(db, holder, now=clock(), ttl_seconds=lease_ttl_seconds)
    try:
        return run_with_lease(
            db, storage, teams, holder=holder, dry_run=dry_run, clock=clock,
            policy=Policy(grace_seconds, retention_seconds, pending_expiry_seconds),
            lease_ttl_seconds=lease_ttl_seconds)
    finally:
        leases.release(db, LEASE_NAME, holder)


def run_with_lease(
    db: Database, storage: StorageRegistry, teams: Sequence[tuple[int, str]], *, holder: str,
    dry_run: bool, clock: Clock, policy: Policy,
    lease_ttl_seconds: float = LEASE_TTL_SECONDS, should_stop: Callable[[], bool] | None = None,
) -> GcReport:
    """The run itself; the caller holds the lease as ``holder`` (and releases it after).

    Never raises for one team's failure (recorded in its :class:`TeamReport`); a lost lease or
    a stop request ends the run early with ``report.error`` set."""
    keeper = _Keeper(db, holder, lease_ttl_seconds, clock, should_stop)
    report = GcReport(dry_run=dry_run, started_at=clock())
    try:
        for team_id, name in teams:
            keeper.step()
            tr = TeamReport(name)
            report.teams.append(tr)
            try:
                _collect_team(db, storage, team_id, tr, dry_run=dry_run, clock=clock,
                              policy=policy, keeper=keeper)
            except (LeaseLost, Stopped):
                raise
            except Exception as exc:  # one team's broken bucket must not stop the others
                tr.error = scrub(f"{type(exc).__name__}: {exc}")[:500]
        keeper.step()
    except LeaseLost:
        report.error = ("the garbage collection lease was lost (the run took longer than the "
                        "lease without renewing it); stopped")
    except Stopped:
        report.error = "interrupted: the server is shutting down"
    report.finished_at = clock()
    return report


def _collect_team(db: Database, storage: StorageRegistry, team_id: int, tr: TeamReport, *,
                  dry_run: bool, clock: Clock, policy: Policy, keeper: _Keeper) -> None:
    now = clock()
    tr.versions_expired = _expire_versions(db, team_id, tr.team, now, dry_run=dry_run)
    pending_cutoff = None
    if policy.pending_expiry_seconds is not None:
        pending_cutoff = now - timedelta(seconds=policy.pending_expiry_seconds)
        tr.pending_dropped = _drop_pending(db, team_id, pending_cutoff, dry_run=dry_run)
    keeper.step()
    with db.session() as s:
        team = s.get(Team, team_id)
        assert team is not None
        store = storage.team_bucket(s, team).store
    runs = run_purge.purge(
        db, store, team_id, now=now, cutoff=now - timedelta(seconds=policy.retention_seconds),
        young=now - timedelta(seconds=policy.grace_seconds), dry_run=dry_run, step=keeper.step)
    tr.runs_purged, tr.run_objects_freed = runs.runs_purged, runs.run_objects_freed
    tr.run_bytes_freed, tr.unknown_run_prefixes = runs.run_bytes_freed, runs.unknown_run_prefixes
    tr.delete_failures += runs.run_delete_failures
    tr.multipart_aborted += runs.multipart_aborted
    keeper.step()
    # List the bucket before reading the database: an object that appears after the listing
    # is simply not considered this run.
    in_bucket = {}
    for n, info in enumerate(store.iter_objects(OBJECT_PREFIX), 1):
        sha = _sha_of(info.key)
        if sha is not None:
            in_bucket[sha] = info
        if n % RENEW_EVERY_LISTED == 0:
            keeper.step()
    now = clock()
    cutoff = now - timedelta(seconds=policy.retention_seconds)
    young = now - timedelta(seconds=policy.grace_seconds)
    with db.session() as s:
        rows = {r.sha256: (int(r.size), r.created_at) for r in s.execute(
            select(ArtifactObject.sha256, ArtifactObject.size, ArtifactObject.created_at)
            .where(ArtifactObject.team_id == team_id))}
        # A dry run did not drop the stale pending versions; leave them out of liveness so it
        # reports what the real run would free.
        live = live_hashes(s, team_id, cutoff,
                           pending_cutoff=pending_cutoff if dry_run else None)

    tr.rows_missing_object = sorted(sha for sha in rows if sha not in in_bucket)
    candidates = sorted(sha for sha, (_, created) in rows.items()
                        if sha not in live and created < young and sha in in_bucket)
    orphans: list[str] = []
    for sha, info in sorted(in_bucket.items()):
        if sha in rows:
            continue
        tr.orphan_objects.append(sha)
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
        tr.multipart_aborted += sum(1 for _ in _abandoned_uploads(store, young))
        return

    for batch in _chunks(candidates):
        gone = _delete_rows(db, team_id, batch, cutoff, young)
        tr.skipped_now_live += len(batch) - len(gone)
        freed = _delete_objects(db, store, team_id, gone, cutoff, tr)
        tr.objects_freed += len(freed)
        tr.bytes_freed += sum(in_bucket[sha].size for sha in freed)
        keeper.step()
    for batch in _chunks(orphans):
        freed = _delete_objects(db, store, team_id, batch, cutoff, tr)
        tr.orphan_objects_freed += len(freed)
        tr.orphan_bytes_freed += sum(in_bucket[sha].size for sha in freed)
        keeper.step()
    for up in _abandoned_uploads(store, young):
        store.abort_multipart(up)
        tr.multipart_aborted += 1


# ---------------------------------------------------------------------------- expiry, pending


def _expire_versions(db: Database, team_id: int, team_name: str, now: datetime, *,
                     dry_run: bool) -> int:
    """Soft-delete committed live versions whose TTL has passed; re-point ``latest``."""
    q = (select(ArtifactVersion.id, ArtifactVersion.index, ArtifactVersion.collection_id,
                ArtifactCollection.name, Project.name.label("project"))
         .join(ArtifactCollection, ArtifactCollection.id == ArtifactVersion.collection_id)
         .join(Project, Project.id == ArtifactCollection.project_id)
         .where(ArtifactCollection.team_id == team_id, ArtifactVersion.state == "committed",
                ArtifactVersion.deleted_at.is_(None), ArtifactVersion.expires_at.is_not(None),
                ArtifactVersion.expires_at <= now)
         .order_by(ArtifactVersion.id))
    with db.session() as s:
        if dry_run:
            return len(s.execute(q).all())
        locks.lock_team(s, team_id)
        rows = s.execute(q).all()
        if not rows:
            return 0
        for ids in _chunks([r.id for r in rows]):
            s.execute(update(ArtifactVersion).where(ArtifactVersion.id.in_(ids))
                      .values(deleted_at=now).execution_options(synchronize_session=False))
        for cid in sorted({r.collection_id for r in rows}):
            c = s.scalar(select(ArtifactCollection).where(ArtifactCollection.id == cid)
                         .with_for_update())
            if c is not None:
                move_latest(s, c)
        for r in rows:
            audit.record(s, None, "artifact_expire", audit.RequestInfo(), team=team_name,
                         project=r.project, keys=[(f"{r.name}:v{r.index}", None)])
        return len(rows)


def _drop_pending(db: Database, team_id: int, older_than: datetime, *, dry_run: bool) -> int:
    """Drop pending versions created before ``older_than`` (abandoned uploads), entries and
    row; under the team lock, so a commit of one of them either happened before or fails."""
    q = (select(ArtifactVersion.id)
         .join(ArtifactCollection, ArtifactCollection.id == ArtifactVersion.collection_id)
         .where(ArtifactCollection.team_id == team_id, ArtifactVersion.state == "pending",
                ArtifactVersion.created_at < older_than))
    with db.session() as s:
        if dry_run:
            return len(s.scalars(q).all())
        locks.lock_team(s, team_id)
        ids = list(s.scalars(q))
        for batch in _chunks(ids):
            s.execute(delete(ArtifactEntry).where(ArtifactEntry.version_id.in_(batch))
                      .execution_options(synchronize_session=False))
            s.execute(delete(ArtifactVersion).where(ArtifactVersion.id.in_(batch),
                                                    ArtifactVersion.state == "pending")
                      .execution_options(synchronize_session=False))
        return len(ids)


# ---------------------------------------------------------------------------- freeing


def _delete_rows(db: Database, team_id: int, batch: Sequence[str], cutoff: datetime,
                 young: datetime) -> list[str]:
    """Delete the rows of ``batch`` no live version references (the check and the delete are
    one statement, under the team lock); returns the hashes whose rows are gone."""
    referenced = exists(_live_query(team_id, cutoff).where(
        ArtifactEntry.sha256 == ArtifactObject.sha256))
    with db.session() as s:
        locks.lock_team(s, team_id)
        s.execute(delete(ArtifactObject).where(
            ArtifactObject.team_id == team_id, ArtifactObject.sha256.in_(list(batch)),
            ArtifactObject.created_at < young, ~referenced).execution_options(
            synchronize_session=False))
        still = set(s.scalars(select(ArtifactObject.sha256).where(
            ArtifactObject.team_id == team_id, ArtifactObject.sha256.in_(list(batch)))))
    return [sha for sha in batch if sha not in still]


def _delete_objects(db: Database, store: ScopedStore, team_id: int, batch: Iterable[str],
                    cutoff: datetime, tr: TeamReport) -> list[str]:
    """Delete bucket objects that still have no row and no live reference; the check and the
    bucket delete happen under the team lock."""
    batch = list(batch)
    if not batch:
        return []
    with db.session() as s:
        locks.lock_team(s, team_id)
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


def _abandoned_uploads(store: ScopedStore, young: datetime) -> Iterator[MultipartUpload]:
    for up in store.list_multipart_uploads(OBJECT_PREFIX):
        if up.initiated is not None and up.initiated < young:
            yield store.multipart_for(up.key, up.upload_id)
