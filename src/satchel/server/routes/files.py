"""Presigned URLs for a project's files (every URL is authorized and audited)."""

from __future__ import annotations

from fastapi import APIRouter, Query

from satchel.server.deps import DB, Ctx, CurrentUser, Info
from satchel.server.schemas import FileOut, FileUrlOut, FileUrlsRequest
from satchel.services import files, projects

router = APIRouter(tags=["files"])


@router.post("/teams/{team}/projects/{project}/files/urls", response_model=list[FileUrlOut])
def file_urls(team: str, project: str, body: FileUrlsRequest, who: CurrentUser, db: DB,
              ctx: Ctx, info: Info) -> list[FileUrlOut]:
    """Presigned GET/HEAD/PUT URLs for files of a project; the client talks to the bucket."""
    p = projects.get_project(db, who, team, project)
    reqs = [files.FileRequest(f.path, f.method, f.size, f.sha256.lower() if f.sha256 else None,
                              f.download_name) for f in body.files]
    issued = files.issue_urls(db, ctx.storage, who, p, reqs, info,
                              expires_in=ctx.settings.presign_expiry_seconds)
    return [FileUrlOut.model_validate(u) for u in issued]


@router.get("/teams/{team}/projects/{project}/files", response_model=list[FileOut])
def list_files(team: str, project: str, who: CurrentUser, db: DB, ctx: Ctx,
               prefix: str = Query(default="", max_length=1024),
               limit: int = Query(default=1000, ge=1, le=10_000)) -> list[FileOut]:
    """Files stored for a project (listed from the bucket)."""
    p = projects.get_project(db, who, team, project)
    return [FileOut.model_validate(o)
            for o in files.list_files(db, ctx.storage, who, p, prefix, limit=limit)]
