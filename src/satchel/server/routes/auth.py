from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from satchel.server.deps import DB, SESSION_COOKIE, Ctx, CurrentUser
from satchel.server.schemas import (
    ApiKeyOut,
    CreateApiKey,
    LoginRequest,
    LoginResponse,
    NewApiKeyOut,
    UserOut,
)
from satchel.services import users

router = APIRouter(tags=["auth"])


@router.post("/auth/login", response_model=LoginResponse)
def login(body: LoginRequest, response: Response, db: DB, ctx: Ctx) -> LoginResponse:
    """Password login: returns a new API key, or starts a web session (cookie + CSRF token)."""
    user = users.authenticate_password(db, body.username, body.password.get_secret_value())
    out = UserOut.model_validate(user)
    if body.create_api_key:
        new = users.issue_api_key(db, user, name=body.key_name or "login")
        return LoginResponse(user=out, api_key=new.key)
    session = users.start_session(db, user, max_age_seconds=ctx.settings.session_max_age_seconds)
    set_session_cookie(response, session.token, ctx)
    return LoginResponse(user=out, csrf_token=session.csrf_token)


def set_session_cookie(response: Response, token: str, ctx: Ctx) -> None:
    response.set_cookie(
        SESSION_COOKIE, token, max_age=ctx.settings.session_max_age_seconds, httponly=True,
        secure=ctx.settings.cookie_secure, samesite="lax", path="/",
    )


@router.post("/auth/logout", status_code=204)
def logout(request: Request, response: Response, db: DB, _: CurrentUser) -> Response:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        users.end_session(db, cookie)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.status_code = 204
    return response


@router.get("/me", response_model=UserOut)
def me(who: CurrentUser, db: DB) -> UserOut:
    return UserOut.model_validate(users.get_user(db, who.username))


@router.get("/api-keys", response_model=list[ApiKeyOut])
def list_keys(who: CurrentUser, db: DB) -> list[ApiKeyOut]:
    return [ApiKeyOut.model_validate(k) for k in users.list_api_keys(db, who)]


@router.post("/api-keys", response_model=NewApiKeyOut, status_code=201)
def create_key(body: CreateApiKey, who: CurrentUser, db: DB) -> NewApiKeyOut:
    new = users.create_api_key(db, who, name=body.name)
    return NewApiKeyOut(api_key=new.key, key=ApiKeyOut.model_validate(new.view))


@router.delete("/api-keys/{key_id}", response_model=ApiKeyOut)
def revoke_key(
    # Bounded to the id column (INTEGER): a larger number is bad input, not a database error.
    key_id: Annotated[int, Path(ge=1, le=2**31 - 1)], who: CurrentUser, db: DB
) -> ApiKeyOut:
    """Revoke a key: it stops working at once."""
    return ApiKeyOut.model_validate(users.revoke_api_key(db, who, key_id))
