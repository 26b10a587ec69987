"""Projects: belong to a team; visibility ``instance`` (default) or ``team``.

Deleting a project is a soft delete (``projects.deleted_at``): :func:`get_project`, the gate
every project-scoped route goes through, no longer finds it, so everything under it (files,
artifacts, and runs) is invisible at once; ``require_url_access`` refuses URLs for it too.
Team admins (or instance admins) delete and restore. A deleted project keeps its name: its
files live in the bucket under that name, so a new project of the same name would see them;
restore it or choose another name. Restoring checks its artifacts like a collection restore
(services/artifact_lifecycle.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from satchel.db.models import ArtifactCollection, Membership, Project, Team
from satchel.errors import AlreadyExists, InvalidInput, NotFound, PermissionDenied
from satchel.services import artifact_lifecycle as lifecycle
from satchel.services import audit, names
from satchel.services.artifacts import move_latest
from satchel.services.authz import (
    Principal,
    Role,
    has_team_role,
    require_read_project,
    require_team_admin,
    team_role,
)
from satchel.services.locks import lock_team
from satchel.services.teams import get_team

VISIBILITIES = ("instance", "team")


@dataclass(frozen=True, slots=True)
class ProjectView:
    team: str
    name: str
    visibility: str
    description: str
    created_at: datetime
    deleted_at: datetime | None = None


def _view(p: Project) -> ProjectView:
    return ProjectView(p.team.name, p.name, p.visibility, p.description, p.created_at,
                       p.deleted_at)


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
    exists = db.scalar(select(Project).where(Project.team_id == team.id, Project.name == name))
    if exists is not None and exists.deleted_at is not None:
        raise AlreadyExists(
            f"project '{team_name}/{name}' was deleted on {exists.deleted_at:%Y-%m-%d} and "
            "keeps its name (its files stay under it in the bucket); restore it with `satchel "
            "project restore` or choose another name",
            details={"project": f"{team_name}/{name}", "deleted": True})
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


def list_team_projects(db: Session, who: Principal, team_name: str, *, deleted: bool = False
                       ) -> list[ProjectView]:
    """A team's projects (or its soft-deleted ones), for its members and instance admins;
    others get 404 as for the team itself (``GET /projects?team=`` lists what they can read)."""
    team = get_team(db, team_name)
    if not who.is_admin and team_role(db, who, team) is None:
        raise NotFound(f"team '{team_name}' does not exist", details={"team": team_name})
    query = select(Project).where(Project.team_id == team.id).order_by(Project.name)
    query = query.where(Project.deleted_at.is_not(None) if deleted
                        else Project.deleted_at.is_(None))
    return [_view(p) for p in db.scalars(query)]


def delete_project(db: Session, who: Principal, team_name: str, name: str,
                   info: audit.RequestInfo) -> ProjectView:
    """Soft delete (team admins and instance admins): everything under it invisible at once."""
    project = get_project(db, who, team_name, name)
    require_team_admin(db, who, project.team)
    project.deleted_at = datetime.now(UTC)
    db.flush()
    audit.record(db, who, "project_delete", info, team=team_name, project=name)
    return _view(project)


def restore_project(db: Session, who: Principal, team_name: str, name: str,
                    info: audit.RequestInfo, *, retention_seconds: int | None = None
                    ) -> ProjectView:
    """Bring a soft-deleted project back, with the artifacts that were visible in it; refused
    (409 artifact_incomplete) when garbage collection freed objects of any of them."""
    project = db.scalar(
        select(Project).join(Team).where(Team.name == team_name, Project.name == name,
                                         Project.deleted_at.is_not(None)))
    if project is None:
        raise NotFound(f"no deleted project '{team_name}/{name}'",
                       details={"project": f"{team_name}/{name}"})
    require_read_project(db, who, project)
    require_team_admin(db, who, project.team)
    # Team lock first (services/locks.py), held until commit: the collector cannot free an
    # object between the check below and the restore; then the row, re-read.
    lock_team(db, project.team_id)
    db.refresh(project, with_for_update=True)
    if project.deleted_at is None:
        raise NotFound(f"no deleted project '{team_name}/{name}' (restored meanwhile)",
                       details={"project": f"{team_name}/{name}"})
    live = select(ArtifactCollection.id).where(ArtifactCollection.project_id == project.id,
                                               ArtifactCollection.deleted_at.is_(None))
    collections = {c.id: c for c in db.scalars(select(ArtifactCollection).where(
        ArtifactCollection.id.in_(live)))}
    names_by_id = {i: c.name for i, c in collections.items()}
    now = datetime.now(UTC)
    _, expired = lifecycle.check_restorable(db, project.team_id, live, names_by_id,
                                            f"project '{team_name}/{name}'", now,
                                            retention_seconds=retention_seconds,
                                            hint="Log those files again in another project")
    project.deleted_at = None
    lifecycle.expire(db, expired, now)
    for cid in sorted({v.collection_id for v in expired}):
        move_latest(db, collections[cid])
    audit.record(db, who, "project_restore", info, team=team_name, project=name)
    lifecycle.audit_expired(db, who, project, names_by_id, expired, info)
    return _view(project)
