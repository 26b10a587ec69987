"""Artifact time-to-live (issue 5, DESIGN §6): per version, with a team default.

A version's TTL counts from its commit: ``expires_at = committed_at + ttl``. It is chosen when
the version is created: an explicit ``ttl_seconds`` (0 = keep forever, even when the team has a
default), or else the team's ``artifact_ttl_seconds`` at that moment (NULL = forever).

No column holds the TTL itself (no migration for it): between create and commit the pending
version carries a *provisional* ``expires_at = created_at + ttl`` and :func:`expiry_at_commit`
shifts it to ``committed_at + ttl``. A pending version's ``expires_at`` therefore means nothing
to readers; the garbage collector expires committed versions only.

This module only assigns and validates expiry times; the garbage collector
(services/gc.py) enforces them by soft-deleting committed versions whose ``expires_at`` passed.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from satchel.db.models import ArtifactVersion, Team
from satchel.errors import InvalidInput

# Fits the 32-bit ``teams.artifact_ttl_seconds`` column on PostgreSQL and keeps every expiry
# far inside what a datetime can hold.
MAX_TTL_SECONDS = 50 * 365 * 86_400  # 50 years
FOREVER = 0


def check_version_ttl(value: int) -> int:
    """A version TTL: 1..MAX seconds, or 0 for "keep forever"."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TTL_SECONDS:
        raise InvalidInput(
            f"ttl_seconds must be a whole number of seconds from 1 to {MAX_TTL_SECONDS} "
            f"(50 years), or 0 to keep the version forever; got {str(value)[:40]}",
            details={"field": "ttl_seconds"})
    return value


def check_team_ttl(value: int | None) -> int | None:
    """A team default: 1..MAX seconds, or None for "no default, keep forever"."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TTL_SECONDS:
        raise InvalidInput(
            f"artifact_ttl_seconds must be a whole number of seconds from 1 to "
            f"{MAX_TTL_SECONDS} (50 years), or null for no default (keep forever); got "
            f"{str(value)[:40]}", details={"field": "artifact_ttl_seconds"})
    return value


def chosen_ttl(team: Team, ttl_seconds: int | None) -> int:
    """The TTL a new version gets: explicit, else the team default; 0 means forever."""
    if ttl_seconds is not None:
        return check_version_ttl(ttl_seconds)
    return team.artifact_ttl_seconds or FOREVER


def provisional_expiry(ttl_seconds: int, created_at: datetime) -> datetime | None:
    """What a pending version stores until commit (see the module docstring)."""
    return None if ttl_seconds == FOREVER else created_at + timedelta(seconds=ttl_seconds)


def expiry_at_commit(v: ArtifactVersion, committed_at: datetime) -> datetime | None:
    """Shift the provisional expiry so the TTL counts from the commit."""
    if v.expires_at is None:
        return None
    return committed_at + (v.expires_at - v.created_at)


def expiry_from_commit(v: ArtifactVersion, ttl_seconds: int) -> datetime | None:
    """A committed version's expiry for a TTL set later (it still counts from the commit)."""
    check_version_ttl(ttl_seconds)
    assert v.committed_at is not None
    return None if ttl_seconds == FOREVER else v.committed_at + timedelta(seconds=ttl_seconds)


def is_expired(v: ArtifactVersion, now: datetime) -> bool:
    return v.expires_at is not None and v.expires_at <= now
