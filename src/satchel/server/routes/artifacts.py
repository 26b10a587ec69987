"""Artifacts: log (create pending -> upload to the bucket -> commit), read, alias, delete.

Thin: each route resolves the project and calls services/artifacts.py, which authorizes every
call through the same gate as file URLs and audits it.
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Response

from satchel.server.deps import DB, Ctx, CurrentUser, Info
from satchel.server.schemas import (
    ArtifactCollectionOut,
    ArtifactDownloadEntryOut,
    ArtifactDownloadIn,
    ArtifactDownloadOut,
    ArtifactEntryOut,
    ArtifactMultipartOut,
    ArtifactUploadOut,
    ArtifactVersionDetailOut,
    ArtifactVersionOut,
    CommitArtifactIn,
    CompleteMultipartIn,
    CreateArtifactVersion,
    CreateArtifactVersionOut,
    PendingUrlsIn,
    PendingUrlsOut,
    ResumeIn,
    SetAliasIn,
    part_urls_out,
)
from satchel.services import artifact_lifecycle, artifact_uploads, artifacts, projects

router = APIRouter(tags=["artifacts"])
BASE = "/teams/{team}/projects/{project}/artifacts"


@router.get(BASE, response_model=list[ArtifactCollectionOut])
def list_collections(team: str, project: str, who: CurrentUser, db: DB,
                     deleted: bool = Query(default=False,
                                           description="List soft-deleted collections.")
                     ) -> list[ArtifactCollectionOut]:
    """Artifact collections of a project that have at least one visible version (or, with
    ``deleted=true``, the soft-deleted collections)."""
    p = projects.get_project(db, who, team, project)
    found = (artifact_lifecycle.list_deleted_collections(db, who, p) if deleted
             else artifacts.list_collections(db, who, p))
    return [ArtifactCollectionOut.model_validate(c) for c in found]


@router.post(BASE + "/{name}/versions", response_model=CreateArtifactVersionOut, status_code=201)
def create_version(team: str, project: str, name: str, body: CreateArtifactVersion,
                   who: CurrentUser, db: DB, ctx: Ctx, info: Info) -> CreateArtifactVersionOut:
    """Start a version from a manifest; answers which objects the bucket still needs.

    When the manifest equals the latest version's, no version is created (``created`` false)."""
    p = projects.get_project(db, who, team, project)
    entries = [artifacts.EntryIn(e.path, e.size, e.sha256.lower() if e.sha256 else None, e.ref)
               for e in body.entries]
    res = artifacts.create_version(
        db, ctx.storage, who, p, name, type=body.type, entries=entries, info=info,
        expires_in=ctx.settings.presign_expiry_seconds, description=body.description,
        metadata=body.metadata, ttl_seconds=body.ttl_seconds, resume=_resume_hint(body.resume),
        run_id=body.run_id)
    return CreateArtifactVersionOut(
        version=ArtifactVersionOut.model_validate(res.version), created=res.created,
        uploads=[ArtifactUploadOut.model_validate(u) for u in res.uploads],
        multipart=[_multipart_out(m) for m in res.multipart], resumed=res.resumed)


def _resume_hint(body: ResumeIn | None) -> artifact_uploads.ResumeHint | None:
    if body is None:
        return None
    return artifact_uploads.ResumeHint(
        body.pending_id, frozenset(s.lower() for s in body.uploaded),
        {m.sha256.lower(): artifact_uploads.ResumeMultipart(m.upload_id, m.part_size,
                                                             frozenset(m.parts_done))
         for m in body.multipart})


def _multipart_out(m: artifacts.MultipartInstructions) -> ArtifactMultipartOut:
    return ArtifactMultipartOut(
        sha256=m.sha256, size=m.size, upload_id=m.upload_id, part_size=m.part_size,
        parts=part_urls_out(m.parts),
        sequential=m.sequential)


@router.post(BASE + "/{name}/pending/{pending_id}/urls", response_model=PendingUrlsOut)
def pending_urls(team: str, project: str, name: str, pending_id: int, body: PendingUrlsIn,
                 who: CurrentUser, db: DB, ctx: Ctx, info: Info) -> PendingUrlsOut:
    """Fresh upload URLs for objects and multipart parts of your pending version (presigned
    URLs expire; a long or resumed upload asks again). Authorized and audited like the rest."""
    p = projects.get_project(db, who, team, project)
    uploads, multipart = artifact_uploads.refresh_urls(
        db, ctx.storage, who, p, name, pending_id, objects=[s.lower() for s in body.objects],
        parts=[artifact_uploads.PartsRequest(x.sha256.lower(), x.upload_id, x.part_size,
                                             x.numbers) for x in body.parts],
        info=info, expires_in=ctx.settings.presign_expiry_seconds)
    return PendingUrlsOut(uploads=[ArtifactUploadOut.model_validate(u) for u in uploads],
                          multipart=[_multipart_out(m) for m in multipart])


@router.post(BASE + "/{name}/pending/{pending_id}/multipart", status_code=204)
def complete_multipart(team: str, project: str, name: str, pending_id: int,
                       body: CompleteMultipartIn, who: CurrentUser, db: DB, ctx: Ctx,
                       info: Info) -> Response:
    """Finish a multipart upload of one object of a pending version."""
    p = projects.get_project(db, who, team, project)
    artifacts.complete_multipart(db, ctx.storage, who, p, name, pending_id,
                                 sha256=body.sha256.lower(), upload_id=body.upload_id,
                                 parts=[(x.number, x.etag) for x in body.parts], info=info)
    return Response(status_code=204)


@router.post(BASE + "/{name}/pending/{pending_id}/commit", response_model=ArtifactVersionOut)
def commit(team: str, project: str, name: str, pending_id: int, body: CommitArtifactIn,
           who: CurrentUser, db: DB, ctx: Ctx, info: Info) -> ArtifactVersionOut:
    """Verify every new object in the bucket, then make the version visible."""
    p = projects.get_project(db, who, team, project)
    return ArtifactVersionOut.model_validate(artifacts.commit(
        db, ctx.storage, who, p, name, pending_id, aliases=body.aliases, info=info))


@router.get(BASE + "/{name}/versions", response_model=list[ArtifactVersionOut])
def list_versions(team: str, project: str, name: str, who: CurrentUser, db: DB,
                  deleted: bool = Query(default=False, description="List deleted versions.")
                  ) -> list[ArtifactVersionOut]:
    """Committed versions, oldest first (pending versions are never listed)."""
    p = projects.get_project(db, who, team, project)
    return [ArtifactVersionOut.model_validate(v)
            for v in artifacts.list_versions(db, who, p, name, deleted=deleted)]


@router.get(BASE + "/{name}/versions/{ref}", response_model=ArtifactVersionDetailOut)
def get_version(team: str, project: str, name: str, ref: str, who: CurrentUser, db: DB
                ) -> ArtifactVersionDetailOut:
    """A version by ``vN`` or alias, with its manifest."""
    p = projects.get_project(db, who, team, project)
    v, entries = artifacts.get_version(db, who, p, name, ref)
    return ArtifactVersionDetailOut(version=ArtifactVersionOut.model_validate(v),
                                    entries=[ArtifactEntryOut.model_validate(e) for e in entries])


@router.post(BASE + "/{name}/versions/{ref}/download", response_model=ArtifactDownloadOut)
def download(team: str, project: str, name: str, ref: str, who: CurrentUser, db: DB, ctx: Ctx,
             info: Info, body: ArtifactDownloadIn | None = None) -> ArtifactDownloadOut:
    """Presigned GET URLs for every file of a version (authorized and audited); with
    ``paths``, only for those entries (the SDK refreshing expired URLs)."""
    p = projects.get_project(db, who, team, project)
    v, entries = artifacts.download_urls(db, ctx.storage, who, p, name, ref, info,
                                         expires_in=ctx.settings.presign_expiry_seconds,
                                         paths=body.paths if body is not None else None)
    return ArtifactDownloadOut(version=ArtifactVersionOut.model_validate(v),
                               entries=[ArtifactDownloadEntryOut.model_validate(e)
                                        for e in entries])


@router.delete(BASE + "/{name}/versions/{ref}", response_model=ArtifactVersionOut)
def delete_version(team: str, project: str, name: str, ref: str, who: CurrentUser, db: DB,
                   info: Info) -> ArtifactVersionOut:
    """Soft delete: invisible at once, restorable."""
    p = projects.get_project(db, who, team, project)
    return ArtifactVersionOut.model_validate(
        artifacts.delete_version(db, who, p, name, ref, info))


@router.post(BASE + "/{name}/versions/{ref}/restore", response_model=ArtifactVersionOut)
def restore_version(team: str, project: str, name: str, ref: str, who: CurrentUser, db: DB,
                    info: Info) -> ArtifactVersionOut:
    """Bring a soft-deleted version back."""
    p = projects.get_project(db, who, team, project)
    return ArtifactVersionOut.model_validate(
        artifacts.restore_version(db, who, p, name, ref, info))


@router.put(BASE + "/{name}/aliases/{alias}", response_model=ArtifactVersionOut)
def set_alias(team: str, project: str, name: str, alias: str, body: SetAliasIn,
              who: CurrentUser, db: DB, info: Info) -> ArtifactVersionOut:
    """Point a custom alias at a version (an alias names one version per collection)."""
    p = projects.get_project(db, who, team, project)
    return ArtifactVersionOut.model_validate(
        artifacts.set_alias(db, who, p, name, alias, body.version, info))


@router.delete(BASE + "/{name}/aliases/{alias}", status_code=204)
def remove_alias(team: str, project: str, name: str, alias: str, who: CurrentUser, db: DB,
                 info: Info) -> Response:
    p = projects.get_project(db, who, team, project)
    artifacts.remove_alias(db, who, p, name, alias, info)
    return Response(status_code=204)
