"""Periodic background jobs of a server process, and the lease that lets one replica do a job.

A job is a ``tick()`` that does one round of work and returns how many seconds to wait before
the next one. :class:`PeriodicJob` runs it in a daemon thread that the app lifespan starts
and stops; ``stop()`` wakes the thread at once. Tests call ``tick()`` directly with an
injected clock, without threads or sleeps.

Jobs that must run on one replica at a time hold a database lease
(:mod:`satchel.services.leases`). :class:`LeaderLease` keeps one across ticks: the replica
that has it renews it every tick and keeps the job; the others find it taken and skip their
round; when the holder stops it releases the lease, and when it dies the lease expires and
another replica takes over. (The garbage collector takes its lease per run instead, because
a collection is one long job that renews while it works: services/gc.py.)
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from satchel.db.session import Database
from satchel.services import leases

log = logging.getLogger("satchel.background")

Clock = Callable[[], datetime]
RETRY_SECONDS = 60.0
MIN_WAIT_SECONDS = 0.05


def system_clock() -> datetime:
    return datetime.now(UTC)


def holder_name(job: str) -> str:
    """A lease holder name that says which process holds it."""
    return f"{job}@{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaderLease:
    """A named lease this process takes, renews every round, and gives up when it stops."""

    def __init__(self, db: Database, name: str, *, ttl_seconds: float,
                 holder: str | None = None) -> None:
        self.db = db
        self.name = name
        self.ttl_seconds = ttl_seconds
        self.holder = holder or holder_name(name)

    def hold(self, now: datetime) -> bool:
        """Take the lease or extend it; False while another holder's lease is unexpired."""
        return leases.acquire(self.db, self.name, self.holder, ttl_seconds=self.ttl_seconds,
                              now=now)

    def release(self) -> None:
        leases.release(self.db, self.name, self.holder)


class PeriodicJob:
    """Calls ``tick()`` in a daemon thread until stopped; ``tick`` returns the seconds to wait
    before it is called again. An exception from ``tick`` is logged (through the scrubbing
    filter) and the job retries ``retry_seconds`` later: a job never takes the server down."""

    def __init__(self, name: str, tick: Callable[[], float], *,
                 retry_seconds: float = RETRY_SECONDS) -> None:
        self.name = name
        self.tick = tick
        self.retry_seconds = retry_seconds
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self.tick()
            except Exception:
                log.exception("background job %s failed", self.name)
                wait = self.retry_seconds
            self._wake.wait(max(wait, MIN_WAIT_SECONDS))
            self._wake.clear()

    def wake(self) -> None:
        """Run the next round now instead of after the wait (e.g. a run just finished and
        its export is due); a round in progress finishes first."""
        self._wake.set()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the thread to stop and wait for it (a round in progress finishes first)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def stopping(self) -> bool:
        """For a long round to check between steps."""
        return self._stop.is_set()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
