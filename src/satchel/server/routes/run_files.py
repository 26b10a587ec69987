"""Run files (``run.save``, media): register -> PUT to the bucket -> commit; list; download.

Thin: rules, authorization and audit live in services/run_files.py.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from satchel.server.deps import DB, Ctx, CurrentUser, Info
from satchel.server.run_file_schemas import (
    CommitRunFilesIn,
    CommitRunFilesOut,
    CompleteRunFileMultipartIn,
    DownloadRunFilesIn,
    DownloadRunFilesOut,
    RegisterRunFilesIn,
    RegisterRunFilesOut,
    RunFileDownloadOut,
    RunFileMultipartOut,
    RunFileOut,
    RunFilePage,
    RunFilePartUrlsIn,
    RunFilePartUrlsOut,
    RunFileUploadOut,
)
from satchel.server.schemas import part_urls_out
from satchel.services import projects, run_files

router = APIRouter(tags=["runs"])
BASE = "/teams/{team}/projects/{project}/runs/{run_id}/files"


@router.post(BASE, response_model=RegisterRunFilesOut)
def register_files(team: str, project: str, run_id: str, body: RegisterRunFilesIn,
                   who: CurrentUser, db: DB, ctx: Ctx, info: Info) -> RegisterRunFilesOut:
    """Announce files (path, size, SHA-256); answers a presigned PUT for each file whose
    content the run does not hold yet. Different content under a known path replaces it."""
    p = projects.get_project(db, who, team, project)
    res = run_files.register(
        db, ctx.storage, who, p, run_id,
        [run_files.FileIn(f.path, f.size, f.sha256.lower(), f.kind) for f in body.files], info,
        expires_in=ctx.settings.presign_expiry_seconds)
    return RegisterRunFilesOut(
        uploads=[RunFileUploadOut.model_validate(u) for u in res.uploads],
        unchanged=res.unchanged,
        multipart=[RunFileMultipartOut(
            path=m.path, size=m.size, sha256=m.sha256, upload_id=m.upload_id,
            part_size=m.part_size, parts=part_urls_out(m.parts), sequential=m.sequential)
            for m in res.multipart])


@router.post(BASE + "/multipart", status_code=204)
def complete_multipart(team: str, project: str, run_id: str,
                       body: CompleteRunFileMultipartIn, who: CurrentUser, db: DB, ctx: Ctx,
                       info: Info) -> None:
    """Assemble a big file from its uploaded parts (then commit it like any other file)."""
    p = projects.get_project(db, who, team, project)
    run_files.complete_multipart(db, ctx.storage, who, p, run_id, body.path, body.upload_id,
                                 [(x.number, x.etag) for x in body.parts], info)


@router.post(BASE + "/multipart/urls", response_model=RunFilePartUrlsOut)
def part_urls(team: str, project: str, run_id: str, body: RunFilePartUrlsIn,
              who: CurrentUser, db: DB, ctx: Ctx, info: Info) -> RunFilePartUrlsOut:
    """Fresh URLs for parts of a big file's upload (presigned URLs expire)."""
    p = projects.get_project(db, who, team, project)
    urls = run_files.part_urls(db, ctx.storage, who, p, run_id, body.path, body.upload_id,
                               body.part_size, body.numbers, info,
                               expires_in=ctx.settings.presign_expiry_seconds)
    return RunFilePartUrlsOut(parts=part_urls_out(urls))


@router.post(BASE + "/commit", response_model=CommitRunFilesOut)
def commit_files(team: str, project: str, run_id: str, body: CommitRunFilesIn,
                 who: CurrentUser, db: DB, ctx: Ctx, info: Info) -> CommitRunFilesOut:
    """Check the uploaded files in the bucket (size, and SHA-256 where the store reports it)
    and make them visible; all or none (409 ``artifact_incomplete`` lists the problems)."""
    p = projects.get_project(db, who, team, project)
    views = run_files.commit(db, ctx.storage, who, p, run_id, body.paths, info)
    return CommitRunFilesOut(files=[RunFileOut.model_validate(v) for v in views])


@router.get(BASE, response_model=RunFilePage)
def list_files(team: str, project: str, run_id: str, who: CurrentUser, db: DB,
               prefix: Annotated[str, Query(max_length=1024)] = "",
               kind: Annotated[str | None, Query(max_length=16)] = None,
               limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
               offset: Annotated[int, Query(ge=0)] = 0) -> RunFilePage:
    """Committed files of the run, ordered by path."""
    p = projects.get_project(db, who, team, project)
    page, total = run_files.list_files(db, who, p, run_id, prefix=prefix, kind=kind,
                                       limit=limit, offset=offset)
    return RunFilePage(files=[RunFileOut.model_validate(v) for v in page], total=total)


@router.post(BASE + "/download", response_model=DownloadRunFilesOut)
def download_files(team: str, project: str, run_id: str, who: CurrentUser, db: DB, ctx: Ctx,
                   info: Info, body: DownloadRunFilesIn | None = None) -> DownloadRunFilesOut:
    """Presigned GETs for committed files (authorized and audited)."""
    p = projects.get_project(db, who, team, project)
    urls = run_files.download_urls(db, ctx.storage, who, p, run_id, info,
                                   expires_in=ctx.settings.presign_expiry_seconds,
                                   paths=body.paths if body is not None else None)
    return DownloadRunFilesOut(files=[RunFileDownloadOut.model_validate(u) for u in urls])
