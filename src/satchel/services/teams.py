"""Teams and memberships."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from satchel.config import Settings
from satchel.db.models import Membership, Team, User
from satchel.errors import AlreadyExists, InvalidInput, NotFound, TeamStorageImmutable
from satchel.services import audit, names, ttl
from satchel.services.authz import Principal, Role, require_team_admin, team_role
from satchel.services.storage import StorageRegistry
from satchel.services.team_storage import StorageSpec, resolve_external
from satchel.services.users import get_user
from satchel.storage.doctor import Finding


@dataclass(frozen=True, slots=True)
class MemberView:
    username: str
    role: str


@dataclass(frozen=True, slots=True)
class TeamView:
    name: str
    storage_type: str
    storage: str | None  # redacted address, never the secret
    storage_path: str
    created_at: datetime
    members: list[MemberView]
    my_role: str | None
    warnings: list[dict[str, str]] = field(default_factory=list)
    # Default TTL of new artifact versions in seconds; None = keep forever (services/ttl.py).
    artifact_ttl_seconds: int | None = None


def parse_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise InvalidInput(
            f"unknown role {role[:40]!r}; expected one of admin, member, viewer",
            details={"field": "role"},
        ) from None


def get_team(db: Session, name: str) -> Team:
    team = db.scalar(select(Team).where(Team.name == name))
    if team is None:
        raise NotFound(f"team '{name}' does not exist", details={"team": name})
    return team


def team_view(db: Session, who: Principal, team: Team) -> TeamView:
    members = [
        MemberView(m.user.username, m.role)
        for m in sorted(team.memberships, key=lambda m: m.user.username)
    ]
    role = team_role(db, who, team)
    return TeamView(team.name, team.storage_type, team.storage_display, team.storage_path,
                    team.created_at, members, role.value if role else None,
                    artifact_ttl_seconds=team.artifact_ttl_seconds)


def create_team(
    db: Session, who: Principal, name: str, *, storage: StorageRegistry | None = None,
    settings: Settings | None = None, spec: StorageSpec | None = None,
    artifact_ttl_seconds: int | None = None,
) -> TeamView:
    """Create a team; you become its admin. Its storage is chosen now and never changes."""
    names.team_name(name)
    ttl.check_team_ttl(artifact_ttl_seconds)
    if db.scalar(select(Team.id).where(Team.name == name)) is not None:
        raise AlreadyExists(f"team '{name}' already exists", details={"team": name})
    team = Team(name=name, storage_type="internal", artifact_ttl_seconds=artifact_ttl_seconds)
    warnings: list[Finding] = []
    if spec is not None and spec.type != "internal":
        if storage is None or settings is None:
            raise InvalidInput("external storage needs the storage registry")
        resolved = resolve_external(db, storage, settings, name, spec)
        team.storage_type = "external"
        team.storage_address_enc = storage.box.encrypt(resolved.address.format(redact=False))
        team.storage_display = resolved.address.format(redact=True)
        team.storage_path = resolved.address.path
        warnings = resolved.warnings
    elif spec is not None and spec.type not in {"internal", "external"}:
        raise InvalidInput(f"unknown storage type {spec.type!r}; expected internal or external")
    team.memberships.append(Membership(user_id=who.user_id, role=Role.ADMIN.value))
    db.add(team)
    db.flush()
    view = team_view(db, who, team)
    return replace(view, warnings=[f.__dict__ for f in warnings])


def change_storage(db: Session, who: Principal, name: str) -> None:
    """Team storage is fixed at creation (DESIGN §3): every change is refused."""
    team = get_team(db, name)
    require_team_admin(db, who, team)
    raise TeamStorageImmutable(
        f"team '{name}' was created with {team.storage_type} storage"
        + (f" ({team.storage_display})" if team.storage_display else "")
        + "; a team's storage cannot be changed after creation. Create a new team to use "
        "another bucket.",
        details={"team": name, "storage_type": team.storage_type},
    )


def set_artifact_ttl(db: Session, who: Principal, name: str, seconds: int | None,
                     info: audit.RequestInfo) -> TeamView:
    """The team's default TTL for new artifact versions (None = keep forever). Existing
    versions keep their expiry; team admins and instance admins only."""
    team = get_team(db, name)
    require_team_admin(db, who, team)
    team.artifact_ttl_seconds = ttl.check_team_ttl(seconds)
    db.flush()
    audit.record(db, who, "team_artifact_ttl", info, team=name,
                 keys=[(f"artifact_ttl_seconds={seconds}", None)])
    return team_view(db, who, team)


def list_teams(db: Session, who: Principal) -> list[TeamView]:
    """Instance admins see every team; others the teams they belong to."""
    query = select(Team).order_by(Team.name)
    if not who.is_admin:
        query = query.join(Membership).where(Membership.user_id == who.user_id)
    return [team_view(db, who, t) for t in db.scalars(query)]


def show_team(db: Session, who: Principal, name: str) -> TeamView:
    team = get_team(db, name)
    if not who.is_admin and team_role(db, who, team) is None:
        raise NotFound(f"team '{name}' does not exist", details={"team": name})
    return team_view(db, who, team)


def add_member(db: Session, who: Principal, team_name: str, username: str, role: str) -> TeamView:
    team = get_team(db, team_name)
    require_team_admin(db, who, team)
    parsed = parse_role(role)
    user: User = get_user(db, username)
    existing = db.scalar(
        select(Membership).where(Membership.team_id == team.id, Membership.user_id == user.id)
    )
    if existing is not None:
        existing.role = parsed.value  # adding again changes the role
    else:
        team.memberships.append(Membership(user_id=user.id, role=parsed.value))
    db.flush()
    db.refresh(team)
    return team_view(db, who, team)


def remove_member(db: Session, who: Principal, team_name: str, username: str) -> TeamView:
    team = get_team(db, team_name)
    require_team_admin(db, who, team)
    user = get_user(db, username)
    row = db.scalar(
        select(Membership).where(Membership.team_id == team.id, Membership.user_id == user.id)
    )
    if row is None:
        raise NotFound(f"'{username}' is not a member of team '{team_name}'")
    if row.role == Role.ADMIN.value:
        admins = [m for m in team.memberships if m.role == Role.ADMIN.value]
        if len(admins) == 1:
            raise InvalidInput(
                f"'{username}' is the last admin of team '{team_name}'; make someone else admin "
                "first"
            )
    team.memberships.remove(row)
    db.flush()
    return team_view(db, who, team)
