"""Artifact garbage collection (instance admins only): run it, its history, its status.

Thin: services/gc_runs.py does the work. A run is synchronous; it uses its own database
sessions, so the request's session is committed first (on SQLite an open write transaction
would make the collector wait for the request that is waiting for it).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from satchel.server.deps import DB, Ctx, CurrentUser
from satchel.server.schemas import GcRunIn, GcRunOut, GcStatusOut
from satchel.services import gc_runs
from satchel.services.authz import require_instance_admin

router = APIRouter(tags=["gc"])


@router.post("/admin/gc", response_model=GcRunOut,
             responses={409: {"description": "Another collector holds the lease"}})
def run_gc(body: GcRunIn, ctx: Ctx, db: DB, who: CurrentUser) -> GcRunOut:
    """Run the garbage collector now and return the recorded run (409 ``conflict`` and
    nothing recorded when another collector is running; 404 for an unknown team)."""
    require_instance_admin(who)
    db.commit()
    view = gc_runs.run(ctx.db, ctx.storage, gc_runs.policy_of(ctx.settings),
                       trigger=gc_runs.MANUAL, started_by=who.username, team=body.team,
                       dry_run=body.dry_run)
    return GcRunOut.model_validate(view)


@router.get("/admin/gc/runs", response_model=list[GcRunOut])
def list_runs(ctx: Ctx, who: CurrentUser,
              limit: int = Query(default=20, ge=1, le=1000)) -> list[GcRunOut]:
    """Recorded runs, newest first."""
    return [GcRunOut.model_validate(v) for v in gc_runs.list_runs(ctx.db, who, limit=limit)]


@router.get("/admin/gc/runs/{run_id}", response_model=GcRunOut)
def get_run(run_id: Annotated[int, Path(ge=1, le=2**31 - 1)], ctx: Ctx, who: CurrentUser
            ) -> GcRunOut:
    """One run, with its per-team report."""
    return GcRunOut.model_validate(gc_runs.get_run(ctx.db, who, run_id))


@router.get("/admin/gc/status", response_model=GcStatusOut)
def status(request: Request, ctx: Ctx, who: CurrentUser) -> GcStatusOut:
    """Whether a collector is running now (holds the lease), when the next scheduled run is
    due, and the last run."""
    scheduler = getattr(request.app.state, "gc_scheduler", None)
    view = gc_runs.status(ctx.db, who, interval_seconds=ctx.settings.gc_interval_seconds,
                          first_due=scheduler.first_due if scheduler is not None else None)
    return GcStatusOut.model_validate(view)
