"""create_app(settings): the one place the server is assembled."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from satchel import __version__
from satchel.config import Settings, load_settings
from satchel.db.migrate import upgrade
from satchel.db.session import Database
from satchel.server.deps import AppContext
from satchel.server.errors import install_error_handlers
from satchel.server.middleware import RequestIdMiddleware
from satchel.server.routes import (
    artifact_lifecycle,
    artifacts,
    auth,
    blob,
    files,
    gc,
    health,
    instance,
    lineage,
    projects,
    run_export,
    run_files,
    runs,
    teams,
    users,
    web,
)
from satchel.services.export_job import ExportScheduler
from satchel.services.gc_scheduler import GcScheduler
from satchel.services.run_monitor import RunMonitor
from satchel.services.storage import StorageRegistry
from satchel.services.users import Bootstrap, bootstrap_admin
from satchel.web import STATIC_DIR

log = logging.getLogger("satchel.server")
API_PREFIX = "/api/v1"


def build_context(settings: Settings) -> AppContext:
    """Open the database (migrated) and the instance's local bucket."""
    db = Database(settings.sqlalchemy_url)
    upgrade(db.engine)
    secret = settings.resolved_secret_key()
    ctx = AppContext(settings=settings, db=db, instance_secret=secret,
                     storage=StorageRegistry(settings, secret))
    with db.session() as session:
        ctx.storage.open(ctx.storage.instance_address(session))
    return ctx


def run_bootstrap(ctx: AppContext) -> Bootstrap | None:
    s = ctx.settings
    with ctx.db.session() as session:
        return bootstrap_admin(
            session,
            username=s.admin_username,
            password=s.admin_password.get_secret_value() if s.admin_password else None,
            api_key=s.admin_api_key.get_secret_value() if s.admin_api_key else None,
        )


def create_app(settings: Settings | None = None, *, context: AppContext | None = None) -> FastAPI:
    settings = settings or load_settings()
    ctx = context or build_context(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Scheduled garbage collection (docs/gc.md): a daemon thread, stopped before the
        # database is closed.
        scheduler = None
        if ctx.settings.gc_interval_seconds > 0:
            scheduler = GcScheduler(ctx.db, ctx.storage, ctx.settings)
            scheduler.start()
        app.state.gc_scheduler = scheduler
        # Crash detection of runs (services/run_monitor.py), the same way.
        monitor = None
        if ctx.settings.run_monitor_interval_seconds > 0:
            monitor = RunMonitor(ctx.db, ctx.settings)
            monitor.start()
        app.state.run_monitor = monitor
        # Parquet export of finished runs (services/export_job.py), the same way.
        exporter = None
        if ctx.settings.export_interval_seconds > 0:
            exporter = ExportScheduler(ctx.db, ctx.storage, ctx.settings)
            exporter.start()
        app.state.export_scheduler = exporter
        try:
            yield
        finally:
            if exporter is not None:
                exporter.stop(timeout=30)
            if monitor is not None:
                monitor.stop(timeout=30)
            if scheduler is not None:
                scheduler.stop(timeout=30)
            ctx.db.dispose()

    app = FastAPI(
        title="Satchel",
        version=__version__,
        description="Experiment tracking and artifacts whose files stay in your own bucket.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        lifespan=lifespan,
        responses={
            400: {"model": _error_model(), "description": "Invalid input"},
            401: {"model": _error_model(), "description": "Not authenticated"},
            403: {"model": _error_model(), "description": "Permission denied"},
            404: {"model": _error_model(), "description": "Not found"},
            422: {"model": _error_model(), "description": "Validation failed"},
        },
    )
    app.state.ctx = ctx
    app.state.gc_scheduler = None  # set by the lifespan when the schedule is on
    app.state.run_monitor = None  # likewise, when crash detection is on
    app.state.export_scheduler = None  # likewise, when the background export is on
    install_error_handlers(app)
    app.add_middleware(RequestIdMiddleware)
    app.include_router(health.router)
    for module in (auth, users, teams, projects, files, artifacts, artifact_lifecycle,
                   instance, runs, run_files, run_export, lineage, gc):
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(blob.router)
    app.include_router(web.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _error_model() -> type:
    from satchel.server.schemas import ErrorResponse

    return ErrorResponse
