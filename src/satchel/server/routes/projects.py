from __future__ import annotations

from fastapi import APIRouter, Query

from satchel.server.deps import DB, Ctx, CurrentUser, Info
from satchel.server.schemas import CreateProject, ProjectOut
from satchel.services import projects

router = APIRouter(tags=["projects"])


@router.get("/projects", response_model=list[ProjectOut])
def list_projects(
    who: CurrentUser, db: DB, team: str | None = Query(default=None, max_length=63)
) -> list[ProjectOut]:
    """Projects you can read, optionally in one team."""
    return [ProjectOut.model_validate(p) for p in projects.list_projects(db, who, team)]


@router.post("/teams/{team}/projects", response_model=ProjectOut, status_code=201)
def create_project(team: str, body: CreateProject, who: CurrentUser, db: DB) -> ProjectOut:
    return ProjectOut.model_validate(
        projects.create_project(db, who, team, body.name, visibility=body.visibility,
                                description=body.description)
    )


@router.get("/teams/{team}/projects", response_model=list[ProjectOut])
def list_team_projects(
    team: str, who: CurrentUser, db: DB,
    deleted: bool = Query(default=False, description="List soft-deleted projects."),
) -> list[ProjectOut]:
    """A team's projects, or its soft-deleted ones (members and instance admins)."""
    return [ProjectOut.model_validate(p)
            for p in projects.list_team_projects(db, who, team, deleted=deleted)]


@router.get("/teams/{team}/projects/{name}", response_model=ProjectOut)
def show_project(team: str, name: str, who: CurrentUser, db: DB) -> ProjectOut:
    return ProjectOut.model_validate(projects.show_project(db, who, team, name))


@router.delete("/teams/{team}/projects/{name}", response_model=ProjectOut)
def delete_project(team: str, name: str, who: CurrentUser, db: DB, info: Info) -> ProjectOut:
    """Soft delete (team admins and instance admins): the project and everything under it
    are invisible at once, restorable within the retention window. Its name stays taken."""
    return ProjectOut.model_validate(projects.delete_project(db, who, team, name, info))


@router.post("/teams/{team}/projects/{name}/restore", response_model=ProjectOut)
def restore_project(team: str, name: str, who: CurrentUser, db: DB, ctx: Ctx, info: Info
                    ) -> ProjectOut:
    """Bring a soft-deleted project back (409 artifact_incomplete when garbage collection
    freed objects of its artifacts)."""
    return ProjectOut.model_validate(projects.restore_project(
        db, who, team, name, info, retention_seconds=ctx.settings.artifact_retention_seconds))
