"""The scheduled garbage collection: tick decisions with an injected clock, and the thread the
app lifespan starts and stops (issue 5). No sleeps, no timing thresholds."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from satchel.config import Settings
from satchel.db.models import GcRun
from satchel.server.app import create_app
from satchel.server.deps import AppContext
from satchel.services import gc, gc_runs, leases
from satchel.services.gc_scheduler import GcScheduler

HOUR = 3_600
T0 = datetime(2031, 5, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"gc_interval_seconds": HOUR})


def _runs(ctx: AppContext) -> list[GcRun]:
    with ctx.db.session() as s:
        return list(s.scalars(select(GcRun).order_by(GcRun.id)))


def test_tick_runs_once_per_interval_across_replicas(ctx: AppContext) -> None:
    clock = Clock(T0)
    a = GcScheduler(ctx.db, ctx.storage, ctx.settings, clock=clock)
    assert a.tick() == HOUR  # first run is due one interval after start
    assert _runs(ctx) == []
    clock.advance(HOUR)
    assert a.tick() == HOUR  # ran; the next one is an interval later
    (first,) = _runs(ctx)
    assert (first.trigger, first.started_by, first.status, first.started_at) == (
        "scheduled", "scheduler", "succeeded", T0 + timedelta(seconds=HOUR))
    # A second replica started half an hour in: due by its own clock, but the history says the
    # last scheduled run was at T0+1h, so it waits until T0+2h.
    b = GcScheduler(ctx.db, ctx.storage, ctx.settings,
                    clock=lambda: T0 + timedelta(seconds=HOUR + 1800))
    assert b.first_due == T0 + timedelta(seconds=2 * HOUR + 1800)
    assert b.tick() == 1800
    assert len(_runs(ctx)) == 1
    clock.advance(HOUR)
    assert a.tick() == HOUR
    assert [r.started_at for r in _runs(ctx)] == [T0 + timedelta(seconds=HOUR),
                                                  T0 + timedelta(seconds=2 * HOUR)]


def test_tick_with_the_lease_busy_retries_later_and_records_nothing(ctx: AppContext) -> None:
    clock = Clock(T0 + timedelta(seconds=HOUR))
    s = GcScheduler(ctx.db, ctx.storage, ctx.settings, clock=lambda: T0, retry_seconds=42)
    s.clock = clock
    assert leases.acquire(ctx.db, gc.LEASE_NAME, "manual-run", ttl_seconds=600, now=clock())
    assert s.tick() == 42
    assert _runs(ctx) == []
    clock.advance(601)  # that lease expired
    assert s.tick() == HOUR
    assert [r.trigger for r in _runs(ctx)] == ["scheduled"]


def test_tick_never_raises_and_the_row_keeps_the_error(
        ctx: AppContext, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("collector fell over; token=abcdefghijkl")

    monkeypatch.setattr(gc, "run_with_lease", broken)
    clock = Clock(T0)
    s = GcScheduler(ctx.db, ctx.storage, ctx.settings, clock=clock, retry_seconds=7)
    clock.advance(HOUR)
    assert s.tick() == 7
    (row,) = _runs(ctx)
    assert row.status == "failed" and row.error is not None
    assert row.error.startswith("RuntimeError: collector fell over; token=****")
    assert "abcdefghijkl" not in row.error
    assert any(r.name == "satchel.gc" and r.levelname == "ERROR" for r in caplog.records)
    # The failed run counts as the interval's run: no retry storm against a broken bucket.
    monkeypatch.undo()
    assert s.tick() == HOUR
    # A broken database does not kill the thread either.
    monkeypatch.setattr(gc_runs, "next_due", broken)
    assert s.tick() == 7


def test_disabled_schedule_is_refused(settings: Settings, ctx: AppContext) -> None:
    with pytest.raises(ValueError, match="disabled"):
        GcScheduler(ctx.db, ctx.storage, settings.model_copy(update={"gc_interval_seconds": 0}))


# ---------------------------------------------------------------------------- lifespan


def test_lifespan_starts_and_stops_the_thread(settings: Settings, ctx: AppContext,
                                              admin_headers: dict[str, str]) -> None:
    app = create_app(settings, context=ctx)
    assert app.state.gc_scheduler is None
    with TestClient(app) as client:
        scheduler: GcScheduler = app.state.gc_scheduler
        assert scheduler is not None and scheduler.alive
        status = client.get("/api/v1/admin/gc/status", headers=admin_headers).json()
        assert status["interval_seconds"] == HOUR
        assert datetime.fromisoformat(status["next_run_at"]) == scheduler.first_due
    # Shutdown wakes the thread (it was waiting an hour) and joins it.
    assert not scheduler.alive


def test_lifespan_without_a_schedule(settings: Settings, ctx: AppContext,
                                     admin_headers: dict[str, str]) -> None:
    off = settings.model_copy(update={"gc_interval_seconds": 0})
    app = create_app(off, context=dataclasses.replace(ctx, settings=off))
    with TestClient(app) as client:
        assert app.state.gc_scheduler is None
        status = client.get("/api/v1/admin/gc/status", headers=admin_headers).json()
        assert (status["interval_seconds"], status["next_run_at"]) == (0, None)
    assert not any(t.name == "satchel-gc-scheduler" for t in threading.enumerate())


def test_lifespan_thread_runs_a_due_collection(
        settings: Settings, ctx: AppContext, monkeypatch: pytest.MonkeyPatch) -> None:
    """History says a scheduled run is overdue: the thread runs it at start-up."""
    with ctx.db.session() as s:
        s.add(GcRun(trigger="scheduled", status="succeeded", started_by="scheduler",
                    started_at=datetime.now(UTC) - timedelta(seconds=2 * HOUR)))
    ran = threading.Event()
    real = gc_runs.run

    def recording(*args: Any, **kwargs: Any) -> gc_runs.RunView:
        try:
            return real(*args, **kwargs)
        finally:
            ran.set()

    monkeypatch.setattr(gc_runs, "run", recording)
    with TestClient(create_app(settings, context=ctx)):
        assert ran.wait(120), "the scheduler thread did not run the overdue collection"
    runs = _runs(ctx)
    assert [(r.trigger, r.status) for r in runs] == [("scheduled", "succeeded")] * 2
