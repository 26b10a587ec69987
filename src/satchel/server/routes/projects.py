from __future__ import annotations

from fastapi import APIRouter, Query

from satchel.server.deps import DB, CurrentUser
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


@router.get("/teams/{team}/projects/{name}", response_model=ProjectOut)
def show_project(team: str, name: str, who: CurrentUser, db: DB) -> ProjectOut:
    return ProjectOut.model_validate(projects.show_project(db, who, team, name))
