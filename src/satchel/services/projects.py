"""Projects: belong to a team; visibility ``instance`` (default) or ``team``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from satchel.db.models import Membership, Project, Team
from satchel.errors import AlreadyExists, InvalidInput, NotFound, PermissionDenied
from satchel.services import names
from satchel.services.authz import (
    Principal,
    Role,
    has_team_role,
    require_read_project,
    team_role,
)
from satchel.services.teams import get_team

VISIBILITIES = ("instance", "team")


@dataclass(frozen=True, slots=True)
class ProjectView:
    team: str
    name: str
    visibility: str
    description: str
    created_at: datetime


def _view(p: Project) -> ProjectView:
    return ProjectView(p.team.name, p.name, p.visibility, p.description, p.created_at)


def get_project(db: Session, who: Principal, team_name: str, name: str) -> Project:
    """The project if ``who`` may read it; NotFound otherwise (existence is not revealed)."""
    project = db.scalar(
        select(Project)
        .join(Team)
        .where(Team.name == team_name, Project.name == name, Project.deleted_at.is_(None))
    )
    if project is None:
        raise NotFound(f"project '{team_name}/{name}' does not exist",
                       details={"project": f"{team_name}/{name}"})
    require_read_project(db, who, project)
    return project


def create_project(
    db: Session, who: Principal, team_name: str, name: str, *, visibility: str = "instance",
    description: str = "",
) -> ProjectView:
    names.project_name(name)
    if visibility not in VISIBILITIES:
        raise InvalidInput(
            f"unknown visibility {visibility[:40]!r}; expected 'instance' or 'team'",
            details={"field": "visibility"},
        )
    team = get_team(db, team_name)
    if not who.is_admin and team_role(db, who, team) is None:
        raise NotFound(f"team '{team_name}' does not exist", details={"team": team_name})
    if not who.is_admin and not has_team_role(db, who, team, Role.MEMBER):
        raise PermissionDenied(
            f"creating projects in team '{team_name}' needs the member or admin role",
            details={"team": team_name, "needed_role": "member"},
        )
    exists = db.scalar(select(Project.id).where(Project.team_id == team.id, Project.name == name))
    if exists is not None:
        raise AlreadyExists(f"project '{team_name}/{name}' already exists",
                            details={"project": f"{team_name}/{name}"})
    project = Project(team=team, name=name, visibility=visibility, description=description,
                      created_by=who.user_id)
    db.add(project)
    db.flush()
    return _view(project)


def list_projects(db: Session, who: Principal, team_name: str | None = None) -> list[ProjectView]:
    """Projects ``who`` can read, optionally in one team."""
    query = (
        select(Project).join(Team).where(Project.deleted_at.is_(None))
        .order_by(Team.name, Project.name)
    )
    if team_name is not None:
        query = query.where(Team.name == team_name)
    if not who.is_admin:
        member_teams = select(Membership.team_id).where(Membership.user_id == who.user_id)
        query = query.where(
            (Project.visibility == "instance") | (Project.team_id.in_(member_teams))
        )
    return [_view(p) for p in db.scalars(query)]


def show_project(db: Session, who: Principal, team_name: str, name: str) -> ProjectView:
    return _view(get_project(db, who, team_name, name))
