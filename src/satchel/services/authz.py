"""Authorization: the one place that decides who may do what.

Roles in a team: ``viewer`` reads, ``member`` also writes, ``admin`` also manages the team
(members). Instance admins manage every team. A project is readable by everyone on the
instance when its visibility is ``instance`` (the default) and only by team members when it is
``team``.

Files (DESIGN §3): a user gets a URL for a file iff they may read its project **and**, when the
owning team has its own bucket (storage type ``external``), they are a member of that team.
Writing needs the member role. Instance admins are *not* exempt from the team-bucket rule: to
read a team bucket's files an instance admin must be made a member, which is an explicit,
audited change (docs/security.md). :func:`require_url_access` is the only gate every issued URL
passes through.
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


READ_METHODS = frozenset({"GET", "HEAD"})
WRITE_METHODS = frozenset({"PUT", "POST", "DELETE"})


def require_url_access(db: Session, who: Principal, project: Project, method: str) -> None:
    """Raise unless ``who`` may get a presigned URL with ``method`` for a file of ``project``."""
    if project.deleted_at is not None:
        # A soft-deleted project's files are unreachable until it is restored, whichever
        # path handed us the row.
        raise NotFound(f"project '{project.team.name}/{project.name}' does not exist")
    require_read_project(db, who, project)
    team = project.team
    role = team_role(db, who, team)
    if team.storage_type == "external" and role is None:
        raise PermissionDenied(
            f"files of '{team.name}/{project.name}' live in team '{team.name}''s own bucket and "
            f"are readable only by members of '{team.name}'",
            details={"team": team.name, "rule": "team_bucket_members_only"},
        )
    if method in WRITE_METHODS and not has_team_role(db, who, team, Role.MEMBER):
        raise PermissionDenied(
            f"writing files to '{team.name}/{project.name}' needs the member or admin role in "
            f"team '{team.name}'",
            details={"team": team.name, "needed_role": "member"},
        )
    if method not in READ_METHODS | WRITE_METHODS:
        raise PermissionDenied(f"method {method!r} is not allowed for files")


def require_instance_admin(who: Principal) -> None:
    if not who.is_admin:
        raise PermissionDenied("only instance admins can do this")
