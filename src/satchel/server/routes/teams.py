from __future__ import annotations

from fastapi import APIRouter

from satchel.server.deps import DB, CurrentUser
from satchel.server.schemas import AddMember, CreateTeam, TeamOut
from satchel.services import teams

router = APIRouter(tags=["teams"])


@router.get("/teams", response_model=list[TeamOut])
def list_teams(who: CurrentUser, db: DB) -> list[TeamOut]:
    """Teams you belong to (instance admins: all teams)."""
    return [TeamOut.model_validate(t) for t in teams.list_teams(db, who)]


@router.post("/teams", response_model=TeamOut, status_code=201)
def create_team(body: CreateTeam, who: CurrentUser, db: DB) -> TeamOut:
    """Create a team; you become its admin."""
    return TeamOut.model_validate(teams.create_team(db, who, body.name))


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
