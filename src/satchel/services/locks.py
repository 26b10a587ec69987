"""The per-team artifact lock shared by logging and the garbage collector (issue 5).

Why: :func:`artifacts.create_version` answers "no upload needed" for a hash when the team's
``artifact_objects`` row exists, and :func:`artifacts.commit` trusts that row. The collector
frees a hash by deleting its row and then its bucket object, each after checking that no live
or pending version references it. Without a lock, on PostgreSQL (READ COMMITTED) the
collector's check cannot see a pending version that ``create_version`` has inserted but not yet
committed, so it could delete the row and the bytes the client was just told not to upload.
With this lock held by ``create_version``, ``commit``, ``restore_version`` and each of the
collector's delete steps for the rest of their transactions, every "check, then act" of one
side happens entirely before or entirely after the other's.

How, per database:

* PostgreSQL: ``pg_advisory_xact_lock(TEAM_LOCK_SPACE, team_id)``, released at commit or
  rollback; only the same team contends.
* SQLite: a write to the team row (``UPDATE teams SET id = id``), which makes the transaction
  take the database's single write lock first and hold it until commit (SQLite has one writer
  at a time, so this lock is in effect instance-wide; ``busy_timeout`` bounds the wait). The
  pysqlite driver begins transactions at the first write, so no older read snapshot is kept.

Take it as early as possible in the transaction and never while holding another artifact
lock (collection rows are locked after it), so the order is the same everywhere.
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

# First key of the two-key advisory lock space: "artifact objects of team <id>".
TEAM_LOCK_SPACE = 0x5A7C_0001 & 0x7FFF_FFFF

def sqlite_write_lock(s: Session, table: Literal["teams", "runs"], row_id: int) -> None:
    """SQLite has no row locks and pysqlite begins a transaction at its first write: a no-op
    write to one row takes the database's single write lock now and holds it until ``s``
    commits, so rows read after this cannot change before then. (PostgreSQL callers use
    ``SELECT ... FOR UPDATE`` or an advisory lock instead.)"""
    s.execute(_WRITE_LOCK[table], {"id": row_id})


_WRITE_LOCK = {"teams": text("UPDATE teams SET id = id WHERE id = :id"),
               "runs": text("UPDATE runs SET id = id WHERE id = :id")}


def lock_team(s: Session, team_id: int) -> None:
    """Wait for and take the team's artifact lock until ``s``'s transaction ends."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(:space, :id)"),
                  {"space": TEAM_LOCK_SPACE, "id": team_id})
    else:
        sqlite_write_lock(s, "teams", team_id)


def try_lock_team(s: Session, team_id: int) -> bool:
    """Take the team's artifact lock if it is free now; False (and nothing held) otherwise."""
    if s.get_bind().dialect.name == "postgresql":
        got = s.scalar(text("SELECT pg_try_advisory_xact_lock(:space, :id)"),
                       {"space": TEAM_LOCK_SPACE, "id": team_id})
        return bool(got)
    raw = s.connection().connection.dbapi_connection
    assert raw is not None
    (timeout,) = raw.execute("PRAGMA busy_timeout").fetchone()
    raw.execute("PRAGMA busy_timeout = 0")
    try:
        sqlite_write_lock(s, "teams", team_id)
        return True
    except OperationalError:
        return False
    finally:
        raw.execute(f"PRAGMA busy_timeout = {int(timeout)}")
