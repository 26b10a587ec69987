"""Database tables (SQLAlchemy 2 declarative). Tables only: behaviour lives in services/.

Schema changes go through an Alembic migration in db/migrations/versions; a test compares
these models with the migrated schema so the two never drift.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class TZDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both SQLite (which drops the zone) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a TZDateTime column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)

    api_keys: Mapped[list[ApiKey]] = relationship(back_populates="user")


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    # SHA-256 of the whole key; the key itself is shown once and never stored.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(TZDateTime())

    user: Mapped[User] = relationship(back_populates="api_keys")


class WebSession(Base):
    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # SHA-256 of the cookie value.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(TZDateTime())


class Team(Base):
    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    # "internal" (instance bucket) or "external" (team bucket). Fixed at creation.
    storage_type: Mapped[str] = mapped_column(String(16), default="internal")
    # Encrypted storage address (external teams); never returned by the API.
    storage_address_enc: Mapped[str | None] = mapped_column(Text)
    # Redacted address and sub-path, for display and uniqueness checks.
    storage_display: Mapped[str | None] = mapped_column(String(1024))
    storage_path: Mapped[str] = mapped_column(String(512), default="")
    # Default time-to-live of new artifact versions (seconds; NULL = keep forever).
    artifact_ttl_seconds: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)

    memberships: Mapped[list[Membership]] = relationship(
        back_populates="team", cascade="all, delete-orphan"
    )
    projects: Mapped[list[Project]] = relationship(back_populates="team")


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("team_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))  # admin | member | viewer
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)

    team: Mapped[Team] = relationship(back_populates="memberships")
    user: Mapped[User] = relationship()


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("team_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    visibility: Mapped[str] = mapped_column(String(16), default="instance")  # team | instance
    description: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(TZDateTime())

    team: Mapped[Team] = relationship(back_populates="projects")


class InstanceSetting(Base):
    """Instance-wide values set at run time (instance bucket, organization id...)."""

    __tablename__ = "instance_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow, onupdate=utcnow)


class Lease(Base):
    """A database lease so only one replica runs a background job at a time."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(TZDateTime())


class GcRun(Base):
    """One garbage-collection run: who started it, what it freed, how it ended."""

    __tablename__ = "gc_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trigger: Mapped[str] = mapped_column(String(16))  # manual | scheduled
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    team: Mapped[str | None] = mapped_column(String(63))  # NULL = every team
    status: Mapped[str] = mapped_column(String(16), default="running")  # running|succeeded|failed
    started_by: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    objects_freed: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_freed: Mapped[int] = mapped_column(BigInteger, default=0)
    versions_expired: Mapped[int] = mapped_column(Integer, default=0)
    pending_dropped: Mapped[int] = mapped_column(Integer, default=0)
    multipart_aborted: Mapped[int] = mapped_column(Integer, default=0)
    rows_missing_object: Mapped[int] = mapped_column(Integer, default=0)
    report_json: Mapped[str] = mapped_column(Text, default="{}")  # per-team details
    error: Mapped[str | None] = mapped_column(Text)


class AuditEvent(Base):
    """Every presigned URL issued, and other security-relevant actions."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_created_at", "created_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    user_id: Mapped[int | None] = mapped_column(Integer)
    username: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    team: Mapped[str | None] = mapped_column(String(63))
    project: Mapped[str | None] = mapped_column(String(128))
    object_key: Mapped[str | None] = mapped_column(String(1024))
    method: Mapped[str | None] = mapped_column(String(8))
    client_ip: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64))


# ---------------------------------------------------------------------------- artifacts
# Issue 5 / DESIGN §6. Versions are content-addressed: ``digest`` is the SHA-256 over the
# sorted manifest entries (services/artifacts.py:manifest_digest). A version is ``pending``
# until commit verified every new object in the bucket; only then does it get its index
# (v0, v1, ...) so abandoned uploads leave no gaps and are never listed.


class ArtifactCollection(Base):
    __tablename__ = "artifact_collections"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"),
                                            index=True)
    name: Mapped[str] = mapped_column(String(128))
    type: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(TZDateTime())


class ArtifactVersion(Base):
    __tablename__ = "artifact_versions"
    # NULL indexes (pending versions) do not collide on SQLite or PostgreSQL.
    __table_args__ = (UniqueConstraint("collection_id", "index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(
        ForeignKey("artifact_collections.id", ondelete="CASCADE"), index=True)
    index: Mapped[int | None] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending | committed
    description: Mapped[str] = mapped_column(Text, default="")
    metadata_json: Mapped[str] = mapped_column(Text, default="{}")
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    file_count: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    committed_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    # Lineage: ``runs.id`` of the run that logged it, always a run of the same project
    # (services/lineage.py validates it at write time). Deliberately no foreign key: adding one
    # would rebuild this table on SQLite, and none is needed: runs are never hard-deleted on
    # their own (soft delete; run ids are never reused) and the only hard delete of a run (its
    # team's) removes this version too. A missing row reads as "no producer".
    producing_run_id: Mapped[int | None] = mapped_column(Integer, index=True)


class ArtifactUsage(Base):
    """A run used (``run.use_artifact``) a committed version: lineage's consumers. One row per
    (version, run), however often the run asked; deleting either removes it."""

    __tablename__ = "artifact_usages"
    __table_args__ = (UniqueConstraint("version_id", "run_id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True)
    # The unique constraint's index serves lookups by version; this one lookups by run.
    version_id: Mapped[int] = mapped_column(
        ForeignKey("artifact_versions.id", ondelete="CASCADE"))
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class ArtifactAlias(Base):
    __tablename__ = "artifact_aliases"
    __table_args__ = (UniqueConstraint("collection_id", "alias"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(
        ForeignKey("artifact_collections.id", ondelete="CASCADE"), index=True)
    alias: Mapped[str] = mapped_column(String(128))
    version_id: Mapped[int] = mapped_column(
        ForeignKey("artifact_versions.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class ArtifactEntry(Base):
    """One manifest entry: a content-addressed file, or a reference (URI recorded, not copied)."""

    __tablename__ = "artifact_entries"
    __table_args__ = (UniqueConstraint("version_id", "path"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True)
    version_id: Mapped[int] = mapped_column(
        ForeignKey("artifact_versions.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    ref: Mapped[str | None] = mapped_column(String(2048))


class ArtifactObject(Base):
    """A content-addressed blob a team's bucket is known to hold (verified at commit)."""

    __tablename__ = "artifact_objects"
    __table_args__ = (UniqueConstraint("team_id", "sha256"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


# ------------------------------------------------------------------------------------ runs


class Run(Base):
    """One tracked execution. ``run_id`` is chosen by the SDK (so offline runs know it), unique
    per project and never reused; ``record_hwm`` counts the SDK's records applied so far, which
    makes replay idempotent (services/run_records.py)."""

    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("project_id", "run_id"),
                      Index("ix_runs_state_heartbeat_at", "state", "heartbeat_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"),
                                            index=True)
    run_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128), default="")
    # running | finished | failed | crashed
    state: Mapped[str] = mapped_column(String(16), default="running")
    config_json: Mapped[str] = mapped_column(Text, default="{}")
    summary_json: Mapped[str] = mapped_column(Text, default="{}")  # last logged values
    summary_user_json: Mapped[str] = mapped_column(Text, default="{}")  # set by the user, wins
    tags_json: Mapped[str] = mapped_column(Text, default="[]")
    notes: Mapped[str] = mapped_column(Text, default="")
    group: Mapped[str] = mapped_column(String(128), default="")
    job_type: Mapped[str] = mapped_column(String(64), default="")
    metadata_json: Mapped[str] = mapped_column(Text, default="{}")  # host, python, program...
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    exit_code: Mapped[int | None] = mapped_column(Integer)
    record_hwm: Mapped[int] = mapped_column(BigInteger, default=0)
    last_step: Mapped[int] = mapped_column(BigInteger, default=-1)
    history_rows: Mapped[int] = mapped_column(BigInteger, default=0)
    console_lines: Mapped[int] = mapped_column(BigInteger, default=0)
    resumed: Mapped[int] = mapped_column(Integer, default=0)
    exported_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    # Set by the garbage collector when it purged the run (deleted longer than the retention
    # window ago): its data and files are gone, the row stays so the id is never reused.
    purged_at: Mapped[datetime | None] = mapped_column(TZDateTime())


class HistorySegment(Base):
    """A column chunk of one key of a run's history (``stream`` "history") or system metrics
    (``stream`` "system", ``steps`` = sample time in milliseconds since the epoch).

    ``steps`` holds little-endian int64s; ``values`` little-endian float64s (``kind`` "f8") or a
    UTF-8 JSON list (``kind`` "json": strings, media references, anything non-numeric).
    Reading one key is a range scan on (run, stream, key); see services/history.py."""

    __tablename__ = "run_history_segments"
    __table_args__ = (Index("ix_run_history_segments_run_id_stream_key_step_min",
                            "run_id", "stream", "key", "step_min"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    stream: Mapped[str] = mapped_column(String(8))
    key: Mapped[str] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(8))
    step_min: Mapped[int] = mapped_column(BigInteger)
    step_max: Mapped[int] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(Integer)
    steps: Mapped[bytes] = mapped_column(LargeBinary)
    values: Mapped[bytes] = mapped_column(LargeBinary)


class ConsoleLine(Base):
    """One captured line of a run's stdout/stderr; ``line_no`` counts from 0 per run."""

    __tablename__ = "run_console_lines"
    __table_args__ = (UniqueConstraint("run_id", "line_no"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    line_no: Mapped[int] = mapped_column(BigInteger)
    stream: Mapped[str] = mapped_column(String(8))  # stdout | stderr
    created_at: Mapped[datetime] = mapped_column(TZDateTime())
    text: Mapped[str] = mapped_column(Text)


class RunFile(Base):
    """A file of a run in the bucket (``run.save``, media, Parquet exports), under
    ``runs/<project>/<run_id>/`` of the team prefix."""

    __tablename__ = "run_files"
    __table_args__ = (UniqueConstraint("run_id", "path"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(String(1024))
    kind: Mapped[str] = mapped_column(String(16))  # file | media | export
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending | committed
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    committed_at: Mapped[datetime | None] = mapped_column(TZDateTime())
