"""Database leases: at most one holder per name until the lease expires (DESIGN §6, issue 5).

A background job (the garbage collector) takes a lease before it starts so that two replicas
never run it at once. :func:`acquire` is one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE``
statement, atomic on SQLite and PostgreSQL: it succeeds when there is no row, when the row has
expired, or when the caller already holds it (which is how :func:`renew` works). Each call
commits its own transaction, so other replicas see the lease at once.

Time is injected (``now``) so tests never sleep.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from satchel.db.models import Lease
from satchel.db.session import Database


def acquire(db: Database, name: str, holder: str, *, ttl_seconds: float, now: datetime) -> bool:
    """Take (or extend) the lease ``name`` for ``holder`` until ``now + ttl``; False if another
    holder has an unexpired lease."""
    expires = now + timedelta(seconds=ttl_seconds)
    with db.session() as s:
        dialect = s.get_bind().dialect.name
        ins = postgresql.insert(Lease) if dialect == "postgresql" else sqlite.insert(Lease)
        stmt = ins.values(name=name, holder=holder, expires_at=expires)
        stmt = stmt.on_conflict_do_update(
            index_elements=[Lease.name],
            set_={"holder": holder, "expires_at": expires},
            where=(Lease.expires_at < now) | (Lease.holder == holder),
        )
        s.execute(stmt)
        row = s.scalar(select(Lease.holder).where(Lease.name == name))
        return row == holder


def renew(db: Database, name: str, holder: str, *, ttl_seconds: float, now: datetime) -> bool:
    """Extend a lease the caller holds; False when it was lost (expired and taken by another)."""
    expires = now + timedelta(seconds=ttl_seconds)
    with db.session() as s:
        res = s.execute(update(Lease).where(Lease.name == name, Lease.holder == holder)
                        .values(expires_at=expires))
        return (res.rowcount or 0) == 1  # type: ignore[attr-defined]


def release(db: Database, name: str, holder: str) -> None:
    """Give the lease up (only if the caller still holds it)."""
    with db.session() as s:
        s.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))


def holder_of(db: Database, name: str, *, now: datetime) -> str | None:
    """Who holds an unexpired lease ``name`` now, if anyone."""
    with db.session() as s:
        row = s.execute(select(Lease.holder, Lease.expires_at).where(Lease.name == name)).first()
        if row is None or row.expires_at < now:
            return None
        return str(row.holder)


def current(db: Database, name: str, *, now: datetime) -> tuple[str, datetime] | None:
    """(holder, expires_at) of an unexpired lease ``name``, if anyone holds it now."""
    with db.session() as s:
        row = s.execute(select(Lease.holder, Lease.expires_at).where(Lease.name == name)).first()
        if row is None or row.expires_at < now:
            return None
        return str(row.holder), row.expires_at
