"""Request dependencies: the app context, a database session, the authenticated principal."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from satchel.auth.tokens import tokens_equal
from satchel.config import Settings
from satchel.db.session import Database
from satchel.errors import CsrfFailed, NotAuthenticated
from satchel.logs import request_id_var
from satchel.server.middleware import REQUEST_ID_SCOPE_KEY
from satchel.services import users
from satchel.services.audit import RequestInfo
from satchel.services.authz import Principal
from satchel.services.storage import StorageRegistry
from satchel.storage.local import LocalStore

SESSION_COOKIE = "satchel_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


@dataclass
class AppContext:
    """Everything a request may need, built once by create_app."""

    settings: Settings
    db: Database
    instance_secret: bytes
    storage: StorageRegistry

    @property
    def local_stores(self) -> dict[str, LocalStore]:
        """Local buckets served by the blob endpoint, by store id."""
        return self.storage.local_stores


def get_ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


Ctx = Annotated[AppContext, Depends(get_ctx)]


def get_db(ctx: Ctx) -> Iterator[Session]:
    with ctx.db.session() as session:
        yield session


# scope="function": commit before the response is sent, so a 201 means the row is saved.
DB = Annotated[Session, Depends(get_db, scope="function")]


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    key = request.headers.get("x-api-key")
    return key.strip() if key else None


def current_principal(request: Request, db: DB) -> Principal:
    key = _bearer(request)
    if key is not None:
        return users.authenticate_api_key(db, key)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        principal, csrf = users.resolve_session(db, cookie)
        if request.method not in SAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "")
            if not sent or not tokens_equal(sent, csrf):
                raise CsrfFailed(
                    "cookie-authenticated requests that change state need the X-CSRF-Token "
                    "header from your session"
                )
        return principal
    raise NotAuthenticated(
        "authentication required: send 'Authorization: Bearer <API key>' (see 'satchel login')"
    )


CurrentUser = Annotated[Principal, Depends(current_principal)]


def request_info(request: Request) -> RequestInfo:
    """Who asked from where, for the audit log."""
    # The id the middleware accepted or generated, never the raw client header.
    rid = request.scope.get(REQUEST_ID_SCOPE_KEY) or request_id_var.get()
    return RequestInfo(client_ip=request.client.host if request.client else None,
                       request_id=rid if rid and rid != "-" else None)


Info = Annotated[RequestInfo, Depends(request_info)]
