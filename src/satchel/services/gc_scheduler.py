"""The scheduled garbage collection: a daemon thread each server process runs (docs/gc.md).

Every replica (and every uvicorn worker) runs one :class:`GcScheduler` when
``gc_interval_seconds`` > 0. A run is due one interval after the last *scheduled* run of any
replica, as recorded in ``gc_runs`` (or one interval after this scheduler started, when there
is none), so N replicas together run about once per interval, not N times. When a run is due
the scheduler tries the collector's lease; if another collector holds it, it tries again
``retry_seconds`` later and records nothing.

The thread is a :class:`background.PeriodicJob`; it never takes the server down:
:meth:`GcScheduler.tick` catches everything, the run's row records the error and the log line
goes through the scrubbing filter. ``stop()`` wakes the thread at once; a run in progress stops
at its next step (the row says "interrupted").

:meth:`GcScheduler.tick` is the whole decision, with an injected clock, so tests drive it
without threads or sleeps.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from satchel.config import Settings
from satchel.db.session import Database
from satchel.errors import Conflict
from satchel.services import gc, gc_runs
from satchel.services.background import PeriodicJob
from satchel.services.storage import StorageRegistry

log = logging.getLogger("satchel.gc")

RETRY_SECONDS = 60.0
MIN_WAIT_SECONDS = 1.0


class GcScheduler:
    def __init__(self, db: Database, storage: StorageRegistry, settings: Settings, *,
                 clock: gc.Clock = gc.system_clock, retry_seconds: float = RETRY_SECONDS
                 ) -> None:
        if settings.gc_interval_seconds <= 0:
            raise ValueError("the garbage collection schedule is disabled (interval 0)")
        self.db, self.storage, self.clock = db, storage, clock
        self.interval = settings.gc_interval_seconds
        self.policy = gc_runs.policy_of(settings)
        self.retry_seconds = retry_seconds
        self.started_at = clock()
        self.first_due = self.started_at + timedelta(seconds=self.interval)
        self._job = PeriodicJob("satchel-gc-scheduler", self.tick, retry_seconds=retry_seconds)

    # ------------------------------------------------------------------ decision

    def next_due(self) -> datetime:
        due = gc_runs.next_due(self.db, self.interval, self.first_due)
        assert due is not None
        return due

    def tick(self) -> float:
        """Run a scheduled collection if one is due; return how many seconds to wait before
        the next tick. Never raises."""
        try:
            if self.next_due() <= self.clock():
                self._run()
            wait = (self.next_due() - self.clock()).total_seconds()
        except Conflict:
            log.info("scheduled garbage collection skipped: another collector holds the lease")
            return self.retry_seconds
        except Exception:
            # The run's row (if one was recorded) holds the error too. The logging filter
            # scrubs secrets from the message and traceback.
            log.exception("scheduled garbage collection failed")
            return self.retry_seconds
        return max(wait, MIN_WAIT_SECONDS)

    def _run(self) -> None:
        view = gc_runs.run(self.db, self.storage, self.policy, trigger=gc_runs.SCHEDULED,
                           started_by="scheduler", clock=self.clock,
                           should_stop=lambda: self._job.stopping)
        if view.status == "succeeded":
            log.info("scheduled garbage collection %d: freed %d object(s), %d byte(s); "
                     "expired %d version(s), dropped %d pending", view.id, view.objects_freed,
                     view.bytes_freed, view.versions_expired, view.pending_dropped)
        else:
            log.warning("scheduled garbage collection %d failed: %s", view.id, view.error)

    # ------------------------------------------------------------------ thread

    def start(self) -> None:
        self._job.start()

    def stop(self, timeout: float | None = None) -> None:
        """Wake the thread and wait for it (a run in progress stops at its next step)."""
        self._job.stop(timeout)

    @property
    def alive(self) -> bool:
        return self._job.alive
