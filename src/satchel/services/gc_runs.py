"""Garbage-collection runs: the one way a run is started, and its history (table ``gc_runs``).

:func:`run` resolves the team (404 for an unknown one), takes the collector's lease (409 when
another collector holds it: **nothing is recorded then**, so replicas whose scheduled tick
finds the lease busy do not fill the history), records a ``running`` row, collects, and
finishes the row as ``succeeded`` or ``failed`` (a team's error, a lost lease or a shutdown
fails the run; the per-team details are in ``report``).

A process that dies mid-run cannot finish its row. Two things make sure such a row does not
read "running" forever: readers show a ``running`` row whose collector no longer holds the
lease (it stops being renewed and expires after ``gc.LEASE_TTL_SECONDS``) as ``failed`` with an
"abandoned" error, and the next run, which holds the lease and so knows no other run is alive,
writes that into every ``running`` row it finds. The row keeps the holder of its lease in
``report_json`` for this check.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from satchel.config import Settings
from satchel.db.models import GcRun
from satchel.db.session import Database
from satchel.errors import NotFound
from satchel.logs import scrub
from satchel.services import gc, leases
from satchel.services.authz import Principal, require_instance_admin
from satchel.services.background import holder_name
from satchel.services.storage import StorageRegistry

MANUAL = "manual"
SCHEDULED = "scheduled"
ABANDONED = ("abandoned: the collector stopped without finishing (process killed or "
             "restarted) and its lease expired")


@dataclass(frozen=True, slots=True)
class RunView:
    id: int
    trigger: str
    dry_run: bool
    team: str | None
    status: str
    started_by: str | None
    started_at: datetime
    finished_at: datetime | None
    objects_freed: int
    bytes_freed: int
    versions_expired: int
    pending_dropped: int
    multipart_aborted: int
    rows_missing_object: int
    report: dict[str, Any]
    error: str | None


@dataclass(frozen=True, slots=True)
class StatusView:
    running: bool  # a collector holds the lease now
    lease_holder: str | None
    lease_expires_at: datetime | None
    interval_seconds: int  # 0: no scheduled runs
    next_run_at: datetime | None
    last_run: RunView | None


def policy_of(settings: Settings) -> gc.Policy:
    return gc.Policy(grace_seconds=settings.gc_grace_seconds,
                     retention_seconds=settings.artifact_retention_seconds,
                     pending_expiry_seconds=settings.gc_pending_expiry_seconds)


def new_holder(trigger: str) -> str:
    """A lease holder name that says which process holds it (shown by ``satchel gc status``)."""
    return holder_name(trigger)


def run(
    db: Database, storage: StorageRegistry, policy: gc.Policy, *, trigger: str,
    started_by: str | None, team: str | None = None, dry_run: bool = False,
    clock: gc.Clock = gc.system_clock, should_stop: Callable[[], bool] | None = None,
    holder: str | None = None,
) -> RunView:
    """Run the collector and record it; raises NotFound (unknown team) or Conflict (another
    collector holds the lease) before recording anything."""
    teams = gc.resolve_teams(db, team)
    holder = holder or new_holder(trigger)
    gc.acquire_lease(db, holder, now=clock())
    try:
        with db.session() as s:
            # We hold the lease, so no other run is alive: any "running" row is abandoned.
            s.execute(update(GcRun).where(GcRun.status == "running")
                      .values(status="failed", error=ABANDONED))
            row = GcRun(trigger=trigger, dry_run=dry_run, team=team, status="running",
                        started_by=started_by, started_at=clock(),
                        report_json=json.dumps({"holder": holder}))
            s.add(row)
            s.flush()
            run_id = row.id
        try:
            report = gc.run_with_lease(db, storage, teams, holder=holder, dry_run=dry_run,
                                       clock=clock, policy=policy, should_stop=should_stop)
        except Exception as exc:
            _finish_failed(db, run_id, holder, scrub(f"{type(exc).__name__}: {exc}")[:2000],
                           clock)
            raise
        _finish(db, run_id, holder, report)
    finally:
        leases.release(db, gc.LEASE_NAME, holder)
    with db.session() as s:
        done = s.get(GcRun, run_id)
        assert done is not None
        return _view(done, None)


def _finish(db: Database, run_id: int, holder: str, report: gc.GcReport) -> None:
    problems = ([report.error] if report.error else []) + report.errors
    error = None
    if problems:
        error = scrub("; ".join(problems))[:2000]
    with db.session() as s:
        row = s.get(GcRun, run_id)
        assert row is not None
        row.status = "failed" if problems else "succeeded"
        row.finished_at = report.finished_at
        row.objects_freed = report.objects_freed
        row.bytes_freed = report.bytes_freed
        row.versions_expired = report.versions_expired
        row.pending_dropped = report.pending_dropped
        row.multipart_aborted = report.multipart_aborted
        row.rows_missing_object = report.rows_missing_object
        row.report_json = json.dumps({"holder": holder, **report.to_dict()})
        row.error = error


def _finish_failed(db: Database, run_id: int, holder: str, error: str, clock: gc.Clock) -> None:
    with db.session() as s:
        row = s.get(GcRun, run_id)
        if row is not None:
            row.status = "failed"
            row.finished_at = clock()
            row.error = error
            row.report_json = json.dumps({"holder": holder, "error": error, "teams": []})


# ---------------------------------------------------------------------------- reading


def _view(row: GcRun, lease_holder: str | None) -> RunView:
    try:
        report: dict[str, Any] = json.loads(row.report_json or "{}")
    except ValueError:
        report = {}
    status, error = row.status, row.error
    if status == "running" and report.get("holder") != lease_holder:
        status, error = "failed", ABANDONED
    return RunView(row.id, row.trigger, row.dry_run, row.team, status, row.started_by,
                   row.started_at, row.finished_at, row.objects_freed, row.bytes_freed,
                   row.versions_expired, row.pending_dropped, row.multipart_aborted,
                   row.rows_missing_object, report, error)


def _lease_holder(db: Database, now: datetime) -> str | None:
    held = leases.current(db, gc.LEASE_NAME, now=now)
    return held[0] if held else None


def list_runs(db: Database, who: Principal, *, limit: int = 20,
              clock: gc.Clock = gc.system_clock) -> list[RunView]:
    """Runs, newest first (instance admins only)."""
    require_instance_admin(who)
    holder = _lease_holder(db, clock())
    with db.session() as s:
        rows = s.scalars(select(GcRun).order_by(GcRun.started_at.desc(), GcRun.id.desc())
                         .limit(max(1, min(limit, 1000))))
        return [_view(r, holder) for r in rows]


def get_run(db: Database, who: Principal, run_id: int, *,
            clock: gc.Clock = gc.system_clock) -> RunView:
    require_instance_admin(who)
    holder = _lease_holder(db, clock())
    with db.session() as s:
        row = s.get(GcRun, run_id)
        if row is None:
            raise NotFound(f"garbage collection run {run_id} does not exist",
                           details={"run_id": run_id})
        return _view(row, holder)


def last_scheduled_start(s: Session) -> datetime | None:
    return s.scalar(select(GcRun.started_at).where(GcRun.trigger == SCHEDULED)
                    .order_by(GcRun.started_at.desc()).limit(1))


def next_due(db: Database, interval_seconds: int, first_due: datetime | None
             ) -> datetime | None:
    """When the next scheduled run is due: one interval after the last scheduled run of any
    replica (whatever its outcome), else ``first_due`` (one interval after the scheduler
    started); None when scheduling is off."""
    if interval_seconds <= 0:
        return None
    with db.session() as s:
        last = last_scheduled_start(s)
    if last is None:
        return first_due
    return last + timedelta(seconds=interval_seconds)


def status(db: Database, who: Principal, *, interval_seconds: int,
           first_due: datetime | None, clock: gc.Clock = gc.system_clock) -> StatusView:
    """Is a collector running (holding the lease), when is the next scheduled run, the last
    run (instance admins only)."""
    require_instance_admin(who)
    now = clock()
    held = leases.current(db, gc.LEASE_NAME, now=now)
    with db.session() as s:
        last = s.scalar(select(GcRun).order_by(GcRun.started_at.desc(), GcRun.id.desc())
                        .limit(1))
        last_view = _view(last, held[0] if held else None) if last is not None else None
    return StatusView(
        running=held is not None, lease_holder=held[0] if held else None,
        lease_expires_at=held[1] if held else None, interval_seconds=interval_seconds,
        next_run_at=next_due(db, interval_seconds, first_due), last_run=last_view)
