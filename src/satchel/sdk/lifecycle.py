"""Artifact lifecycle in the SDK: TTL values, and whole collections (delete / restore).

``ttl`` anywhere in the SDK is seconds (``int``) or a :class:`datetime.timedelta`; ``0`` keeps a
version forever even when its team has a default TTL. The server validates the range too.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from satchel.errors import InvalidInput
from satchel.sdk.client import JSON

if TYPE_CHECKING:
    from satchel.sdk.artifact import Api, LoggedArtifact

TTL = int | timedelta


def ttl_seconds(ttl: TTL) -> int:
    """Seconds from an int or a timedelta (whole seconds, not negative)."""
    if isinstance(ttl, timedelta):
        seconds = ttl.total_seconds()
        if seconds != int(seconds):
            raise InvalidInput(f"ttl must be whole seconds, got {ttl}")
        value = int(seconds)
    elif isinstance(ttl, int) and not isinstance(ttl, bool):
        value = ttl
    else:
        raise InvalidInput(f"ttl must be seconds (int) or a datetime.timedelta, got "
                           f"{type(ttl).__name__}")
    if value < 0:
        raise InvalidInput(f"ttl must not be negative, got {ttl}; use 0 to keep forever")
    return value


def parse_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


class ArtifactCollection:
    """A named collection of artifact versions (``Api().artifact_collection(...)``)."""

    def __init__(self, api: Api, team: str, project: str, data: JSON) -> None:
        self._api = api
        self.team = team
        self.project = project
        self._data = data

    name = property(lambda self: str(self._data["name"]))
    type = property(lambda self: str(self._data["type"]))
    description = property(lambda self: str(self._data["description"]))

    @property
    def version_count(self) -> int:
        """Visible versions (of a deleted collection: those a restore brings back)."""
        return int(self._data["versions"])

    @property
    def deleted_at(self) -> datetime | None:
        return parse_time(self._data.get("deleted_at"))

    def __repr__(self) -> str:
        state = " (deleted)" if self.deleted_at else ""
        return f"<ArtifactCollection {self.team}/{self.project}/{self.name}{state}>"

    def versions(self, *, deleted: bool = False) -> list[LoggedArtifact]:
        """Committed versions, oldest first (or the soft-deleted ones)."""
        from satchel.sdk.artifact import LoggedArtifact

        rows = self._api.client.artifact_versions(self.team, self.project, self.name,
                                                  deleted=deleted)
        return [LoggedArtifact(self._api, self.team, self.project, r) for r in rows]

    def delete(self) -> None:
        """Soft-delete the whole collection (restorable within the retention window)."""
        self._data = self._api.client.delete_artifact_collection(self.team, self.project,
                                                                 self.name)

    def restore(self) -> None:
        self._data = self._api.client.restore_artifact_collection(self.team, self.project,
                                                                  self.name)
