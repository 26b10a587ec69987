"""Purging deleted runs: the garbage collector's part for runs (issue 5 "Delete + GC";
docs/gc.md, docs/runs.md).

Deleting a run (or its project) is a soft delete: restorable for the retention window
(``artifact_retention_seconds``, the same window as artifacts). After that, each collection
purges it, per team:

1. **Rows**, in one transaction holding the team lock (services/locks.py, which
   ``restore_project`` also takes), the project row and the run row: the run is checked again
   (still deleted, itself or through its project, longer than the window ago; not purged
   yet), marked ``purged_at``, given the project's ``deleted_at`` if only the project was
   deleted (so that restoring the project later does not bring back an empty run), and its
   history segments, console lines, run-file rows and artifact-use rows are deleted. The run
   row stays as a tombstone: its id is never reused, and ``restore_run`` answers
   ``409 run_purged``. Artifact versions the run produced are not touched (they have their
   own lifecycle); their lineage no longer names a readable run.
2. **Objects**: the team bucket's ``runs/`` prefix is listed once, and every object under
   ``runs/<project>/<run_id>/`` of a purged run is deleted (files, media, Parquet exports).
   Objects under the prefix of a run that does not exist are freed too once older than the
   grace period (``gc_grace_seconds``); those of live or still-restorable runs never are.
   Multipart uploads of run files (big files, services/run_files.py) started before the grace
   period are aborted: the file's next registration starts a new one.

Rows go first: a crash between the two steps leaves objects of a purged run, which the next
collection frees by the same rule. ``dry_run`` changes nothing and counts what would go.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from satchel.db.models import ArtifactUsage, ConsoleLine, HistorySegment, Project, Run, RunFile
from satchel.db.session import Database
from satchel.services import locks
from satchel.storage.base import ObjectInfo
from satchel.storage.scoped import ScopedStore

RUNS_PREFIX = "runs/"
DELETE_BATCH = 500
RENEW_EVERY_LISTED = 10_000
REPORT_LIST_LIMIT = 1_000


@dataclass(slots=True)
class RunPurge:
    """What one team's run purge did (or would do, in a dry run)."""

    runs_purged: int = 0
    run_objects_freed: int = 0
    run_bytes_freed: int = 0
    # "<project>/<run_id>" prefixes in the bucket with no run row (their objects are freed
    # once out of the grace period).
    unknown_run_prefixes: list[str] = field(default_factory=list)
    run_delete_failures: int = 0
    multipart_aborted: int = 0  # run files' uploads started before the grace period


def purge(db: Database, store: ScopedStore, team_id: int, *, now: datetime, cutoff: datetime,
          young: datetime, dry_run: bool, step: Callable[[], None]) -> RunPurge:
    """Purge the team's runs deleted before ``cutoff``; free their objects and those of
    unknown runs last modified before ``young``. ``step`` renews the collector's lease."""
    out = RunPurge()
    due = _due(db, team_id, cutoff)
    if dry_run:
        out.runs_purged = len(due)
    else:
        for run_pk in due:
            if _purge_rows(db, team_id, run_pk, cutoff, now):
                out.runs_purged += 1
            step()
    # List first, then read which runs exist: a run's row is created before its files.
    listed: list[tuple[tuple[str, str], ObjectInfo]] = []
    for n, info in enumerate(store.iter_objects(RUNS_PREFIX), 1):
        owner = _owner(info.key)
        if owner is not None:
            listed.append((owner, info))
        if n % RENEW_EVERY_LISTED == 0:
            step()
    with db.session() as s:
        known = {(p, r): purged is not None for p, r, purged in s.execute(
            select(Project.name, Run.run_id, Run.purged_at)
            .join(Project, Project.id == Run.project_id).where(Run.team_id == team_id))}
        if dry_run:  # what the real run would have purged by now
            known.update({owner: True for owner in _owners(s, due)})
    free: list[ObjectInfo] = []
    unknown: set[str] = set()
    for owner, info in listed:
        purged = known.get(owner)
        if purged is None:
            unknown.add("/".join(owner))
            if info.last_modified is not None and info.last_modified < young:
                free.append(info)
        elif purged:
            free.append(info)
    out.unknown_run_prefixes = sorted(unknown)[:REPORT_LIST_LIMIT]
    for up in store.list_multipart_uploads(RUNS_PREFIX):
        if up.initiated is None or up.initiated >= young:
            continue  # maybe still in progress
        if not dry_run:
            store.abort_multipart(store.multipart_for(up.key, up.upload_id))
        out.multipart_aborted += 1
    if dry_run:
        out.run_objects_freed = len(free)
        out.run_bytes_freed = sum(i.size for i in free)
        return out
    for start in range(0, len(free), DELETE_BATCH):
        batch = free[start:start + DELETE_BATCH]
        res = store.delete_many([i.key for i in batch])
        failed = set(res.failed)
        out.run_delete_failures += len(failed)
        gone = [i for i in batch if i.key not in failed]
        out.run_objects_freed += len(gone)
        out.run_bytes_freed += sum(i.size for i in gone)
        step()
    return out


def _deleted_before(cutoff: datetime) -> ColumnElement[bool]:
    return or_(and_(Run.deleted_at.is_not(None), Run.deleted_at < cutoff),
               and_(Project.deleted_at.is_not(None), Project.deleted_at < cutoff))


def _due(db: Database, team_id: int, cutoff: datetime) -> list[int]:
    with db.session() as s:
        return list(s.scalars(
            select(Run.id).join(Project, Project.id == Run.project_id)
            .where(Run.team_id == team_id, Run.purged_at.is_(None), _deleted_before(cutoff))
            .order_by(Run.id)))


def _owners(s: Session, run_pks: Sequence[int]) -> list[tuple[str, str]]:
    if not run_pks:
        return []
    return [(p, r) for p, r in s.execute(
        select(Project.name, Run.run_id).join(Project, Project.id == Run.project_id)
        .where(Run.id.in_(run_pks)))]


def _purge_rows(db: Database, team_id: int, run_pk: int, cutoff: datetime,
                now: datetime) -> bool:
    """Mark one run purged and delete its data rows, if it is still due; False otherwise
    (restored, or purged by someone else, meanwhile)."""
    with db.session() as s:
        locks.lock_team(s, team_id)  # the order restore_project uses: team, then project
        project_id = s.scalar(select(Run.project_id).where(Run.id == run_pk))
        if project_id is None:
            return False
        project = s.scalar(select(Project).where(Project.id == project_id).with_for_update())
        run = s.scalar(select(Run).where(Run.id == run_pk).with_for_update())
        if project is None or run is None or run.purged_at is not None:
            return False
        if not _is_due(run, project, cutoff):
            return False
        run.purged_at = now
        if run.deleted_at is None:
            run.deleted_at = project.deleted_at
        for model in (HistorySegment, ConsoleLine, RunFile, ArtifactUsage):
            s.execute(delete(model).where(model.run_id == run_pk))
        return True


def _is_due(run: Run, project: Project, cutoff: datetime) -> bool:
    return any(when is not None and when < cutoff for when in (run.deleted_at,
                                                               project.deleted_at))


def _owner(key: str) -> tuple[str, str] | None:
    """(project, run_id) of a key ``runs/<project>/<run_id>/<path>``; None for other keys."""
    parts = key.split("/", 3)
    if len(parts) != 4 or parts[0] != "runs" or not all(parts[1:]):
        return None
    return parts[1], parts[2]
