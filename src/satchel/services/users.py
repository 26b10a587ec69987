"""Users, API keys, web sessions and the first-start admin."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from satchel.auth import passwords, tokens
from satchel.db.models import ApiKey, User, WebSession
from satchel.errors import AlreadyExists, InvalidInput, NotAuthenticated, NotFound
from satchel.services import names
from satchel.services.authz import Principal, require_instance_admin


@dataclass(frozen=True, slots=True)
class UserView:
    id: int
    username: str
    is_admin: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKeyView:
    id: int
    prefix: str
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewApiKey:
    """A freshly created key: ``key`` is shown once and never stored."""

    view: ApiKeyView
    key: str


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """What the first start created; secrets are None when they came from settings."""

    username: str
    password: str | None
    api_key: str | None


def _user_view(u: User) -> UserView:
    return UserView(u.id, u.username, u.is_admin, u.created_at)


def _key_view(k: ApiKey) -> ApiKeyView:
    return ApiKeyView(k.id, k.prefix, k.name, k.created_at, k.last_used_at, k.revoked_at)


def principal_of(user: User) -> Principal:
    return Principal(user.id, user.username, user.is_admin)


def get_user(db: Session, username: str) -> User:
    user = db.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"user '{username}' does not exist", details={"username": username})
    return user


def create_user(
    db: Session, username: str, *, password: str | None = None, is_admin: bool = False
) -> User:
    names.username(username)
    if password is not None and len(password) < passwords.MIN_PASSWORD_LENGTH:
        raise InvalidInput(
            f"password must have at least {passwords.MIN_PASSWORD_LENGTH} characters",
            details={"field": "password"},
        )
    if db.scalar(select(User.id).where(User.username == username)) is not None:
        raise AlreadyExists(f"user '{username}' already exists", details={"username": username})
    user = User(
        username=username,
        password_hash=passwords.hash_password(password) if password else None,
        is_admin=is_admin,
    )
    db.add(user)
    db.flush()
    return user


def admin_create_user(
    db: Session, who: Principal, username: str, *, password: str | None, is_admin: bool
) -> UserView:
    require_instance_admin(who)
    return _user_view(create_user(db, username, password=password, is_admin=is_admin))


def list_users(db: Session, who: Principal) -> list[UserView]:
    require_instance_admin(who)
    return [_user_view(u) for u in db.scalars(select(User).order_by(User.username))]


def issue_api_key(db: Session, user: User, *, name: str = "", key: str | None = None) -> NewApiKey:
    if len(name) > 100:
        raise InvalidInput("API key name must be at most 100 characters")
    key = key or tokens.generate_api_key()
    row = ApiKey(user_id=user.id, prefix=tokens.key_prefix(key), key_hash=tokens.hash_token(key),
                 name=name)
    db.add(row)
    db.flush()
    return NewApiKey(_key_view(row), key)


def create_api_key(db: Session, who: Principal, *, name: str = "") -> NewApiKey:
    return issue_api_key(db, db.get_one(User, who.user_id), name=name)


def list_api_keys(db: Session, who: Principal) -> list[ApiKeyView]:
    rows = db.scalars(select(ApiKey).where(ApiKey.user_id == who.user_id).order_by(ApiKey.id))
    return [_key_view(k) for k in rows]


def revoke_api_key(db: Session, who: Principal, key_id: int) -> ApiKeyView:
    row = db.get(ApiKey, key_id)
    if row is None or (row.user_id != who.user_id and not who.is_admin):
        raise NotFound(f"API key {key_id} does not exist", details={"id": key_id})
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
    return _key_view(row)


def authenticate_api_key(db: Session, key: str) -> Principal:
    if not tokens.looks_like_api_key(key):
        raise NotAuthenticated("the API key is malformed; expected sk_<prefix>_<secret>")
    row = db.scalar(select(ApiKey).where(ApiKey.key_hash == tokens.hash_token(key)))
    if row is None or row.revoked_at is not None or row.user.disabled:
        raise NotAuthenticated(
            "the API key is unknown or revoked; create a new one with 'satchel login'"
        )
    now = datetime.now(UTC)
    # Avoid a write on every request: record use at most once a minute.
    if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):
        row.last_used_at = now
    return principal_of(row.user)


def authenticate_password(db: Session, username: str, password: str) -> User:
    user = db.scalar(select(User).where(User.username == username))
    ok = passwords.verify_password(user.password_hash if user else None, password)
    if user is None or not ok or user.disabled:
        raise NotAuthenticated("wrong username or password")
    return user


# ----------------------------------------------------------------------- web sessions


@dataclass(frozen=True, slots=True)
class NewSession:
    token: str
    csrf_token: str
    expires_at: datetime


def start_session(db: Session, user: User, *, max_age_seconds: int) -> NewSession:
    token = tokens.generate_session_token()
    csrf = tokens.generate_session_token()
    expires = datetime.now(UTC) + timedelta(seconds=max_age_seconds)
    db.add(WebSession(token_hash=tokens.hash_token(token), user_id=user.id, csrf_token=csrf,
                      expires_at=expires))
    return NewSession(token, csrf, expires)


def resolve_session(db: Session, token: str) -> tuple[Principal, str]:
    """The principal and CSRF token of a live session cookie."""
    row = db.scalar(select(WebSession).where(WebSession.token_hash == tokens.hash_token(token)))
    if row is None or row.expires_at < datetime.now(UTC):
        raise NotAuthenticated("your session has expired; log in again")
    user = db.get_one(User, row.user_id)
    if user.disabled:
        raise NotAuthenticated("this account is disabled")
    return principal_of(user), row.csrf_token


def end_session(db: Session, token: str) -> None:
    row = db.scalar(select(WebSession).where(WebSession.token_hash == tokens.hash_token(token)))
    if row is not None:
        db.delete(row)


# ----------------------------------------------------------------------- first start


def bootstrap_admin(
    db: Session, *, username: str, password: str | None, api_key: str | None
) -> Bootstrap | None:
    """Create the first admin if there are no users yet; None when users already exist.

    Secrets given through settings are used as they are and not echoed back; generated ones are
    returned once so the caller can print them.
    """
    if db.scalar(select(func.count(User.id))) != 0:
        return None
    gen_password = None if password else passwords.generate_password()
    user = create_user(db, username, password=password or gen_password, is_admin=True)
    new_key = issue_api_key(db, user, name="bootstrap", key=api_key)
    return Bootstrap(username, gen_password, None if api_key else new_key.key)
