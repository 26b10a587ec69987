from __future__ import annotations

from fastapi import APIRouter

from satchel.server.deps import DB, Ctx, CurrentUser, Info
from satchel.server.schemas import AddMember, CreateTeam, TeamOut, UpdateTeam
from satchel.services import teams
from satchel.services.team_storage import StorageSpec

router = APIRouter(tags=["teams"])


@router.get("/teams", response_model=list[TeamOut])
def list_teams(who: CurrentUser, db: DB) -> list[TeamOut]:
    """Teams you belong to (instance admins: all teams)."""
    return [TeamOut.model_validate(t) for t in teams.list_teams(db, who)]


@router.post("/teams", response_model=TeamOut, status_code=201)
def create_team(body: CreateTeam, who: CurrentUser, db: DB, ctx: Ctx) -> TeamOut:
    """Create a team; you become its admin. Its storage (the instance bucket, or an external
    bucket validated by the doctor) is fixed now and can never change."""
    spec = None
    if body.storage is not None:
        s = body.storage
        spec = StorageSpec(
            type=s.type, bucket=s.bucket.get_secret_value() if s.bucket else None, path=s.path,
            kms_key=s.kms_key, azure_tenant_id=s.azure_tenant_id,
            azure_client_id=s.azure_client_id, create_bucket=s.create_bucket,
        )
    view = teams.create_team(db, who, body.name, storage=ctx.storage, settings=ctx.settings,
                             spec=spec, artifact_ttl_seconds=body.artifact_ttl_seconds)
    return TeamOut.model_validate(view)


@router.patch("/teams/{team}", response_model=TeamOut)
def update_team(team: str, body: UpdateTeam, who: CurrentUser, db: DB, info: Info
                ) -> TeamOut:
    """Team settings: the default artifact TTL (team admins and instance admins). Storage
    cannot change after creation (409 team_storage_immutable)."""
    if body.storage is not None:
        teams.change_storage(db, who, team)
    if "artifact_ttl_seconds" in body.model_fields_set:  # null clears it; absent leaves it
        return TeamOut.model_validate(
            teams.set_artifact_ttl(db, who, team, body.artifact_ttl_seconds, info))
    return TeamOut.model_validate(teams.show_team(db, who, team))


@router.get("/teams/{team}", response_model=TeamOut)
def show_team(team: str, who: CurrentUser, db: DB) -> TeamOut:
    return TeamOut.model_validate(teams.show_team(db, who, team))


@router.post("/teams/{team}/members", response_model=TeamOut)
def add_member(team: str, body: AddMember, who: CurrentUser, db: DB) -> TeamOut:
    """Add a member or change their role (team admins and instance admins)."""
    return TeamOut.model_validate(teams.add_member(db, who, team, body.username, body.role))


@router.delete("/teams/{team}/members/{username}", response_model=TeamOut)
def remove_member(team: str, username: str, who: CurrentUser, db: DB) -> TeamOut:
    """Remove a member; their access ends with the next request."""
    return TeamOut.model_validate(teams.remove_member(db, who, team, username))
