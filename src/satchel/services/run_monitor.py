"""Crash detection: runs whose process stopped speaking are marked ``crashed`` (issue 6).

A run's process shows it is alive with every records batch and, when it has nothing to send,
a heartbeat (the SDK's ``SATCHEL_HEARTBEAT_SECONDS``). A killed process (SIGKILL, OOM killer,
a lost node) never sends its ``finish`` record; every ``run_monitor_interval_seconds`` the
monitor marks the runs still ``running`` with no sign of life for
``run_heartbeat_timeout_seconds`` as ``crashed`` (:func:`satchel.services.runs.mark_crashed`,
one UPDATE). A run marked crashed whose process speaks again (it was only cut off from the
server) goes back to ``running``.

A monitor only marks runs once it has itself been up for the timeout: after the server (or
every replica) was down, a run's silence is the server's, not the run's, and its process needs
a moment to reconnect (the SDK retries at least every 30 seconds) before its silence counts.

Every replica starts a monitor; the one that holds the ``run-monitor`` lease does the checks
(services/background.py), the others skip their rounds until it stops or dies.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from satchel.config import Settings
from satchel.db.session import Database
from satchel.services import runs
from satchel.services.background import Clock, LeaderLease, PeriodicJob, system_clock

log = logging.getLogger("satchel.runs")

LEASE_NAME = "run-monitor"
MIN_LEASE_TTL_SECONDS = 30.0


class RunMonitor:
    def __init__(self, db: Database, settings: Settings, *, clock: Clock = system_clock,
                 holder: str | None = None) -> None:
        if settings.run_monitor_interval_seconds <= 0:
            raise ValueError("the run monitor is disabled (interval 0)")
        self.db = db
        self.clock = clock
        self.interval = float(settings.run_monitor_interval_seconds)
        self.timeout = float(settings.run_heartbeat_timeout_seconds)
        self.listening_since = clock()
        # Renewed every round; outlives a few slow rounds, and frees up soon after the holder
        # dies so another replica takes over.
        self.lease = LeaderLease(db, LEASE_NAME, holder=holder,
                                 ttl_seconds=max(3 * self.interval, MIN_LEASE_TTL_SECONDS))
        self.job = PeriodicJob("satchel-run-monitor", self.tick, retry_seconds=self.interval)

    def check(self) -> int | None:
        """One round: the number of runs marked crashed, or None when another replica holds
        the lease (and does the checks)."""
        now = self.clock()
        if not self.lease.hold(now):
            return None
        if now - self.listening_since < timedelta(seconds=self.timeout):
            return 0  # not up long enough to tell a dead run from one that cannot reach us
        with self.db.session() as s:
            n = runs.mark_crashed(s, now=now, timeout_seconds=self.timeout)
        if n:
            log.info("marked %d run(s) crashed: no sign of life for %g seconds", n,
                     self.timeout)
        return n

    def tick(self) -> float:
        try:
            self.check()
        except Exception:
            log.exception("checking for crashed runs failed")
        return self.interval

    # ------------------------------------------------------------------ thread

    def start(self) -> None:
        self.job.start()

    def stop(self, timeout: float | None = None) -> None:
        self.job.stop(timeout)
        try:
            self.lease.release()  # another replica may take over at once
        except Exception:
            log.exception("releasing the run monitor's lease failed")

    @property
    def alive(self) -> bool:
        return self.job.alive
