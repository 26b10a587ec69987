"""The background Parquet export: finished runs are exported without anyone asking.

Every server process (replica, uvicorn worker) runs one :class:`ExportScheduler` when
``SATCHEL_EXPORT_INTERVAL_SECONDS`` > 0, as a :class:`~satchel.services.background.PeriodicJob`.
Every interval it looks for runs that are due:

    state is not ``running`` (finished, failed or crashed), neither the run nor its project is
    deleted, and ``exported_at`` is NULL or older than ``heartbeat_at``

(every records batch refreshes ``heartbeat_at``, so a run that received records after its
export, e.g. a resumed run, is due again). When there are due runs it holds the ``run-export``
leader lease (services/background.py), so one replica sweeps at a time, and exports up to
``batch`` of them, each under the run's own lease (services/export.py), which it shares with
on-demand exports. A run whose export fails is retried with exponential backoff (per process,
up to an hour), so a bucket that is down does not make the job spin.

This is why finishing a run stays fast: the records request that applies ``["x", ...]`` only
marks the run finished; the export happens here, within one interval.

:meth:`ExportScheduler.tick` is the whole decision with an injected clock, so tests drive it
without threads or sleeps.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import or_, select

from satchel.config import Settings
from satchel.db.models import Project, Run
from satchel.db.session import Database
from satchel.errors import Conflict
from satchel.services import export
from satchel.services.background import Clock, LeaderLease, PeriodicJob, system_clock
from satchel.services.storage import StorageRegistry

log = logging.getLogger("satchel.export")

LEASE_NAME = "run-export"
# Renewed between runs; long enough for one big run's export.
MIN_LEASE_TTL_SECONDS = 900.0
BATCH = 20
MAX_BACKOFF_SECONDS = 3600.0
AGAIN_SOON_SECONDS = 0.5


def due_runs(db: Database, *, limit: int, exclude: Collection[int] = ()) -> list[int]:
    """Primary keys of runs whose export is missing or older than their last record."""
    with db.session() as s:
        q = (select(Run.id).join(Project, Project.id == Run.project_id)
             .where(Run.state != "running", Run.deleted_at.is_(None),
                    Project.deleted_at.is_(None),
                    or_(Run.exported_at.is_(None), Run.exported_at < Run.heartbeat_at)))
        if exclude:
            q = q.where(Run.id.notin_(sorted(exclude)))
        return [int(pk) for pk in s.scalars(q.order_by(Run.heartbeat_at, Run.id).limit(limit))]


@dataclass(slots=True)
class Sweep:
    exported: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    busy: list[int] = field(default_factory=list)  # an on-demand export held the run's lease
    lease_held_elsewhere: bool = False


class ExportScheduler:
    def __init__(self, db: Database, storage: StorageRegistry, settings: Settings, *,
                 clock: Clock = system_clock, batch: int = BATCH,
                 holder: str | None = None) -> None:
        if settings.export_interval_seconds <= 0:
            raise ValueError("the background export is disabled (interval 0)")
        self.db, self.storage, self.clock = db, storage, clock
        self.interval = float(settings.export_interval_seconds)
        self.batch = batch
        self.lease = LeaderLease(db, LEASE_NAME, holder=holder,
                                 ttl_seconds=max(3 * self.interval, MIN_LEASE_TTL_SECONDS))
        self.job = PeriodicJob("satchel-export", self.tick, retry_seconds=self.interval)
        # run pk -> (consecutive failures, not before)
        self._failures: dict[int, tuple[int, datetime]] = {}

    # ------------------------------------------------------------------ decision

    def sweep(self) -> Sweep:
        """Export the runs that are due now (one batch)."""
        now = self.clock()
        blocked = {pk for pk, (_, until) in self._failures.items() if until > now}
        due = due_runs(self.db, limit=self.batch, exclude=blocked)
        result = Sweep()
        if not due:
            return result
        if not self.lease.hold(now):
            result.lease_held_elsewhere = True
            return result
        for pk in due:
            if self.job.stopping:
                break
            self._one(pk, result)
            self.lease.hold(self.clock())  # renew between runs
        return result

    def _one(self, pk: int, result: Sweep) -> None:
        try:
            export.export_run(self.db, self.storage, pk, clock=self.clock,
                              holder=self.lease.holder)
        except Conflict as exc:
            if exc.details.get("lease"):
                result.busy.append(pk)  # an on-demand export has it and sets exported_at
                return
            self._failed(pk, exc, result)
            return
        except Exception as exc:
            self._failed(pk, exc, result)
            return
        self._failures.pop(pk, None)
        result.exported.append(pk)

    def _failed(self, pk: int, exc: Exception, result: Sweep) -> None:
        # The logging filter scrubs secrets from the message; the run stays due and is
        # retried after a backoff.
        n = self._failures.get(pk, (0, self.clock()))[0] + 1
        wait = min(self.interval * 2 ** (n - 1), MAX_BACKOFF_SECONDS)
        self._failures[pk] = (n, self.clock() + timedelta(seconds=wait))
        result.failed[pk] = f"{type(exc).__name__}: {exc}"
        log.warning("Parquet export of run %d failed (attempt %d; next in %.0f s): %s: %s",
                    pk, n, wait, type(exc).__name__, exc)

    def tick(self) -> float:
        """Sweep once; return how many seconds to wait before the next tick. Never raises."""
        try:
            result = self.sweep()
        except Exception:
            log.exception("the background Parquet export failed")
            return self.interval
        if result.exported:
            log.info("exported %d run(s) to Parquet", len(result.exported))
        done = len(result.exported) + len(result.failed) + len(result.busy)
        # A full batch: more runs may be due, go on at once.
        return AGAIN_SOON_SECONDS if done >= self.batch else self.interval

    # ------------------------------------------------------------------ thread

    def start(self) -> None:
        self.job.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread (an export in progress finishes its current run) and give the
        lease up so another replica can take over at once."""
        self.job.stop(timeout)
        try:
            self.lease.release()
        except Exception:
            log.exception("releasing the export job's lease failed")

    @property
    def alive(self) -> bool:
        return self.job.alive
