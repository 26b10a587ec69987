from __future__ import annotations

from fastapi import APIRouter

from satchel.server.deps import Ctx
from satchel.server.schemas import Health, Ready

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Ready)
def readyz(ctx: Ctx) -> Ready:
    """Readiness: the database answers (503 database_unavailable otherwise)."""
    ctx.db.ping()
    return Ready(status="ok", database=ctx.db.dialect)
