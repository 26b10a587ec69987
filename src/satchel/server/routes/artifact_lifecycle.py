"""Artifact lifecycle routes: a whole collection's soft delete / restore, and version TTLs.

Thin, like routes/artifacts.py: resolve the project, call services/artifact_lifecycle.py
(authorized through ``require_url_access`` and audited there).
"""

from __future__ import annotations

from fastapi import APIRouter, Query

from satchel.server.deps import DB, Ctx, CurrentUser, Info
from satchel.server.routes.artifacts import BASE
from satchel.server.schemas import ArtifactCollectionOut, ArtifactVersionOut, SetTtlIn
from satchel.services import artifact_lifecycle, projects

router = APIRouter(tags=["artifacts"])


@router.get(BASE + "/{name}", response_model=ArtifactCollectionOut)
def get_collection(team: str, project: str, name: str, who: CurrentUser, db: DB,
                   deleted: bool = Query(default=False,
                                         description="The soft-deleted collection of this name.")
                   ) -> ArtifactCollectionOut:
    """One artifact collection (live, or soft-deleted with ``deleted=true``)."""
    p = projects.get_project(db, who, team, project)
    return ArtifactCollectionOut.model_validate(
        artifact_lifecycle.get_collection(db, who, p, name, deleted=deleted))


@router.delete(BASE + "/{name}", response_model=ArtifactCollectionOut)
def delete_collection(team: str, project: str, name: str, who: CurrentUser, db: DB,
                      info: Info) -> ArtifactCollectionOut:
    """Soft-delete a whole collection: all its versions invisible at once, restorable within
    the retention window (member role, like deleting a version)."""
    p = projects.get_project(db, who, team, project)
    return ArtifactCollectionOut.model_validate(
        artifact_lifecycle.delete_collection(db, who, p, name, info))


@router.post(BASE + "/{name}/restore", response_model=ArtifactCollectionOut)
def restore_collection(team: str, project: str, name: str, who: CurrentUser, db: DB,
                       ctx: Ctx, info: Info) -> ArtifactCollectionOut:
    """Bring a soft-deleted collection back with the versions it hid (409
    artifact_incomplete when garbage collection freed objects of any of them)."""
    p = projects.get_project(db, who, team, project)
    return ArtifactCollectionOut.model_validate(
        artifact_lifecycle.restore_collection(
            db, who, p, name, info, retention_seconds=ctx.settings.artifact_retention_seconds))


@router.put(BASE + "/{name}/versions/{ref}/ttl", response_model=ArtifactVersionOut)
def set_ttl(team: str, project: str, name: str, ref: str, body: SetTtlIn, who: CurrentUser,
            db: DB, info: Info) -> ArtifactVersionOut:
    """Change a version's TTL: expires ``ttl_seconds`` after its commit (0 = keep forever).
    Also for soft-deleted versions, so an expired one can be given a new TTL and restored."""
    p = projects.get_project(db, who, team, project)
    return ArtifactVersionOut.model_validate(artifact_lifecycle.set_version_ttl(
        db, who, p, name, ref, body.ttl_seconds, info))
