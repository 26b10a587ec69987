"""Server-rendered web UI. State-changing form posts carry a CSRF token.

Before login a double-submit token (cookie + hidden field) protects the login form against
login CSRF; after login every form carries the session's CSRF token, checked in constant time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from satchel.auth.tokens import generate_session_token, tokens_equal
from satchel.errors import CsrfFailed, NotAuthenticated, SatchelError
from satchel.server.deps import DB, SESSION_COOKIE, Ctx
from satchel.server.routes.auth import set_session_cookie
from satchel.services import projects, teams, users
from satchel.services.authz import Principal
from satchel.web import TEMPLATES_DIR

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
LOGIN_CSRF_COOKIE = "satchel_login_csrf"


def _session(request: Request, db: Session) -> tuple[Principal, str] | None:
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    try:
        return users.resolve_session(db, cookie)
    except NotAuthenticated:
        return None


def _check_csrf(sent: str, expected: str) -> None:
    if not sent or not expected or not tokens_equal(sent, expected):
        raise CsrfFailed("the form's CSRF token is missing or wrong; reload the page and retry")


def _login_page(request: Request, ctx: Ctx, error: str | None = None, status: int = 200,
                username: str = "") -> Response:
    token = generate_session_token()
    resp = templates.TemplateResponse(
        request, "login.html", {"csrf": token, "error": error, "username": username},
        status_code=status,
    )
    resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict",
                    secure=ctx.settings.cookie_secure, path="/login")
    return resp


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, ctx: Ctx) -> Response:
    return _login_page(request, ctx)


@router.post("/login")
def login_submit(
    request: Request,
    ctx: Ctx,
    db: DB,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
    csrf: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    try:
        _check_csrf(csrf, request.cookies.get(LOGIN_CSRF_COOKIE, ""))
    except CsrfFailed:
        # A stale form (e.g. /login opened again in another tab) lands here as well as a forged
        # post: refuse it, but show the person a fresh form rather than a JSON error body.
        return _login_page(request, ctx, status=403, username=username,
                           error="This login form has expired. Please log in again.")
    try:
        user = users.authenticate_password(db, username, password)
    except NotAuthenticated as exc:
        return _login_page(request, ctx, error=exc.message, status=401, username=username)
    session = users.start_session(db, user, max_age_seconds=ctx.settings.session_max_age_seconds)
    db.commit()  # before the redirect: see _form_action
    resp = RedirectResponse("/", status_code=303)
    set_session_cookie(resp, session.token, ctx)
    resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return resp


@router.post("/logout")
def logout(request: Request, db: DB, csrf: Annotated[str, Form(max_length=128)] = "") -> Response:
    found = _session(request, db)
    if found is not None:
        _check_csrf(csrf, found[1])
        users.end_session(db, request.cookies[SESSION_COOKIE])
        db.commit()  # before the redirect: see _form_action
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp


@router.get("/", response_class=HTMLResponse)
def home(request: Request, db: DB) -> Response:
    found = _session(request, db)
    if found is None:
        return RedirectResponse("/login", status_code=303)
    return _home_page(request, db, *found)


def _home_page(request: Request, db: Session, who: Principal, csrf: str,
               error: str | None = None, status: int = 200) -> Response:
    # The error comes only from a failed form action, never from the URL: a query parameter
    # would let any link print attacker-chosen text inside our page.
    return templates.TemplateResponse(
        request, "home.html",
        {"who": who, "csrf": csrf, "teams": teams.list_teams(db, who),
         "projects": projects.list_projects(db, who), "error": error},
        status_code=status,
    )


@router.post("/teams")
def create_team_form(
    request: Request, db: DB, name: Annotated[str, Form(max_length=63)],
    csrf: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    return _form_action(request, db, csrf, lambda who: teams.create_team(db, who, name))


@router.post("/projects")
def create_project_form(
    request: Request, db: DB, team: Annotated[str, Form(max_length=63)],
    name: Annotated[str, Form(max_length=128)],
    visibility: Annotated[str, Form(max_length=16)] = "instance",
    csrf: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    return _form_action(
        request, db, csrf,
        lambda who: projects.create_project(db, who, team, name, visibility=visibility),
    )


def _form_action(request: Request, db: Session, csrf: str,
                 action: Callable[[Principal], object]) -> Response:
    found = _session(request, db)
    if found is None:
        return RedirectResponse("/login", status_code=303)
    who, expected = found
    _check_csrf(csrf, expected)
    try:
        action(who)
    except SatchelError as exc:
        db.rollback()
        return _home_page(request, db, who, expected, error=exc.message, status=exc.http_status)
    # Commit before answering. The DB dependency's own commit runs only after the response has
    # been sent (FastAPI's default dependency scope), so the browser could follow the redirect
    # and render the page before the change exists: a new login bounced back to /login, a new
    # team missing from the list.
    db.commit()
    return RedirectResponse("/", status_code=303)
