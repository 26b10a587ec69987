"""Authorization: the one place that decides who may do what.

Roles in a team: ``viewer`` reads, ``member`` also writes, ``admin`` also manages the team
(members). Instance admins manage every team. A project is readable by everyone on the
instance when its visibility is ``instance`` (the default) and only by team members when it is
``team``. The bucket-level rule of DESIGN §3 (team-bucket files only for members) is added by
the Scopes issue in :func:`may_get_url`; every URL the server issues goes through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from satchel.db.models import Membership, Project, Team
from satchel.errors import NotFound, PermissionDenied


class Role(StrEnum):
    VIEWER = "viewer"
    MEMBER = "member"
    ADMIN = "admin"


_RANK = {Role.VIEWER: 1, Role.MEMBER: 2, Role.ADMIN: 3}


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: int
    username: str
    is_admin: bool


def team_role(db: Session, who: Principal, team: Team) -> Role | None:
    role = db.scalar(
        select(Membership.role).where(
            Membership.team_id == team.id, Membership.user_id == who.user_id
        )
    )
    return Role(role) if role else None


def has_team_role(db: Session, who: Principal, team: Team, needed: Role) -> bool:
    role = team_role(db, who, team)
    return role is not None and _RANK[role] >= _RANK[needed]


def require_team_admin(db: Session, who: Principal, team: Team) -> None:
    if who.is_admin or has_team_role(db, who, team, Role.ADMIN):
        return
    raise PermissionDenied(
        f"only admins of team '{team.name}' (or instance admins) can do this",
        details={"team": team.name, "needed_role": "admin"},
    )


def can_read_project(db: Session, who: Principal, project: Project) -> bool:
    if project.visibility == "instance" or who.is_admin:
        return True
    return team_role(db, who, project.team) is not None


def can_write_project(db: Session, who: Principal, project: Project) -> bool:
    return has_team_role(db, who, project.team, Role.MEMBER)


def require_read_project(db: Session, who: Principal, project: Project) -> None:
    if not can_read_project(db, who, project):
        # Same answer as a missing project: a team-visible project's existence is not revealed.
        raise NotFound(f"project '{project.team.name}/{project.name}' does not exist")


def require_write_project(db: Session, who: Principal, project: Project) -> None:
    require_read_project(db, who, project)
    if not can_write_project(db, who, project):
        raise PermissionDenied(
            f"writing to '{project.team.name}/{project.name}' needs the member or admin role "
            f"in team '{project.team.name}'",
            details={"team": project.team.name, "needed_role": "member"},
        )


def require_instance_admin(who: Principal) -> None:
    if not who.is_admin:
        raise PermissionDenied("only instance admins can do this")
