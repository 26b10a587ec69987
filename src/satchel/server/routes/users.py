from __future__ import annotations

from fastapi import APIRouter

from satchel.server.deps import DB, CurrentUser
from satchel.server.schemas import CreatedUser, CreateUser, UserOut
from satchel.services import users

router = APIRouter(tags=["users"])


@router.get("/users", response_model=list[UserOut])
def list_users(who: CurrentUser, db: DB) -> list[UserOut]:
    """All users (instance admins only)."""
    return [UserOut.model_validate(u) for u in users.list_users(db, who)]


@router.post("/users", response_model=CreatedUser, status_code=201)
def create_user(body: CreateUser, who: CurrentUser, db: DB) -> CreatedUser:
    """Create a user (instance admins only); optionally return an API key for it, once."""
    password = body.password.get_secret_value() if body.password else None
    view = users.admin_create_user(db, who, body.username, password=password,
                                   is_admin=body.is_admin)
    key = None
    if body.create_api_key:
        key = users.issue_api_key(db, users.get_user(db, view.username), name="created").key
    return CreatedUser(user=UserOut.model_validate(view), api_key=key)
