"""The audit log: every presigned URL issued, and security-relevant changes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from satchel.db.models import AuditEvent
from satchel.services.authz import Principal, require_instance_admin


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """Who asked, from where (filled in by the HTTP layer)."""

    client_ip: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class AuditView:
    id: int
    created_at: datetime
    username: str | None
    action: str
    team: str | None
    project: str | None
    object_key: str | None
    method: str | None
    client_ip: str | None
    request_id: str | None


def record(db: Session, who: Principal | None, action: str, info: RequestInfo, *,
           team: str | None = None, project: str | None = None,
           keys: Sequence[tuple[str, str | None]] = ()) -> None:
    """One row per (key, method); a single row without a key when ``keys`` is empty."""
    now = datetime.now(UTC)
    base = {
        "created_at": now, "user_id": who.user_id if who else None,
        "username": who.username if who else None, "action": action, "team": team,
        "project": project, "client_ip": info.client_ip, "request_id": info.request_id,
    }
    rows = [{**base, "object_key": k, "method": m} for k, m in keys] or \
        [{**base, "object_key": None, "method": None}]
    db.execute(insert(AuditEvent), rows)


def query(db: Session, who: Principal, *, username: str | None = None, team: str | None = None,
          project: str | None = None, action: str | None = None, since: datetime | None = None,
          limit: int = 100) -> list[AuditView]:
    require_instance_admin(who)
    q = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(max(1, min(limit, 10_000)))
    if username:
        q = q.where(AuditEvent.username == username)
    if team:
        q = q.where(AuditEvent.team == team)
    if project:
        q = q.where(AuditEvent.project == project)
    if action:
        q = q.where(AuditEvent.action == action)
    if since:
        q = q.where(AuditEvent.created_at >= since)
    return [AuditView(e.id, e.created_at, e.username, e.action, e.team, e.project, e.object_key,
                      e.method, e.client_ip, e.request_id) for e in db.scalars(q)]
