"""Parquet export on demand: one run, or every run of a project (docs/runs-export.md).

Thin: services/export.py builds and writes the files. An export uses its own database
sessions (and the run's lease), so the request's session is committed after authorization
(on SQLite an open write transaction would make the export wait for the request that waits
for it); the presigned GETs are issued afterwards, authorized and audited like every URL.
"""

from __future__ import annotations

from fastapi import APIRouter

from satchel.db.models import Project
from satchel.errors import SatchelError
from satchel.server.deps import DB, Ctx, CurrentUser, Info
from satchel.server.export_schemas import (
    ExportedFileOut,
    ExportFailureOut,
    ExportIn,
    ProjectExportOut,
    RunExportOut,
)
from satchel.services import export, files, projects, runs
from satchel.services.authz import require_url_access, require_write_project
from satchel.services.storage import StorageRegistry

router = APIRouter(tags=["runs"])


def _with_urls(db: DB, storage: StorageRegistry, who: CurrentUser, project: Project,
               result: export.RunExport, info: Info, expires_in: int) -> RunExportOut:
    issued = files.issue_urls(
        db, storage, who, project, [files.FileRequest(f.path, "GET") for f in result.files],
        info, expires_in=expires_in, action="run_export_presign",
        key_of=lambda p, path: export.run_file_key(p, result.run_id, path))
    return RunExportOut(
        team=result.team, project=result.project, run_id=result.run_id, state=result.state,
        written=result.written, exported_at=result.exported_at, record_hwm=result.record_hwm,
        files=[ExportedFileOut(path=f.path, key=f.key, bucket_key=f.bucket_key, size=f.size,
                               sha256=f.sha256, committed_at=f.committed_at, rows=f.rows,
                               columns=f.columns, url=u.url, method=u.method,
                               headers=u.headers, expires_at=u.expires_at)
               for f, u in zip(result.files, issued, strict=True)])


@router.post("/teams/{team}/projects/{project}/runs/{run_id}/export",
             response_model=RunExportOut,
             responses={409: {"description": "Another export of the run is in progress"}})
def export_run(team: str, project: str, run_id: str, who: CurrentUser, db: DB, ctx: Ctx,
               info: Info, body: ExportIn | None = None) -> RunExportOut:
    """Write the run's history, system metrics and console lines as Parquet into the team's
    bucket (``runs/<project>/<run_id>/export/``) and answer presigned GETs for the files.
    Needs write access. Without ``force`` an export that is already current is not written
    again."""
    p = projects.get_project(db, who, team, project)
    run = runs.get_run(db, who, p, run_id, write=True)
    require_url_access(db, who, p, "GET")
    pk = run.id
    db.commit()
    result = export.export_run(ctx.db, ctx.storage, pk, force=bool(body and body.force),
                               who=who, info=info)
    return _with_urls(db, ctx.storage, who, p, result, info, ctx.settings.presign_expiry_seconds)


@router.post("/teams/{team}/projects/{project}/export", response_model=ProjectExportOut)
def export_project(team: str, project: str, who: CurrentUser, db: DB, ctx: Ctx, info: Info,
                   body: ExportIn | None = None) -> ProjectExportOut:
    """Export every (not deleted) run of the project, one after the other; runs whose export
    is current are not written again unless ``force``. A run that cannot be exported is listed
    in ``failed`` and does not stop the others."""
    p = projects.get_project(db, who, team, project)
    require_write_project(db, who, p)
    require_url_access(db, who, p, "GET")
    todo = export.project_runs(db, p)
    db.commit()
    done: list[export.RunExport] = []
    failed: list[ExportFailureOut] = []
    for pk, run_id in todo:
        try:
            done.append(export.export_run(ctx.db, ctx.storage, pk,
                                          force=bool(body and body.force), who=who, info=info))
        except SatchelError as exc:
            failed.append(ExportFailureOut(run_id=run_id, code=exc.code, message=exc.message))
    out = [_with_urls(db, ctx.storage, who, p, r, info, ctx.settings.presign_expiry_seconds)
           for r in done]
    return ProjectExportOut(team=p.team.name, project=p.name, runs=out, failed=failed,
                            written=sum(1 for r in done if r.written),
                            current=sum(1 for r in done if not r.written))
