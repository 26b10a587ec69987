"""garbage-collection run history; team default artifact TTL

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gc_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("team", sa.String(length=63), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_by", sa.String(length=64), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("objects_freed", sa.BigInteger(), nullable=False),
        sa.Column("bytes_freed", sa.BigInteger(), nullable=False),
        sa.Column("versions_expired", sa.Integer(), nullable=False),
        sa.Column("pending_dropped", sa.Integer(), nullable=False),
        sa.Column("multipart_aborted", sa.Integer(), nullable=False),
        sa.Column("rows_missing_object", sa.Integer(), nullable=False),
        sa.Column("report_json", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gc_runs")),
    )
    op.create_index(op.f("ix_gc_runs_started_at"), "gc_runs", ["started_at"], unique=False)
    with op.batch_alter_table("teams") as batch:
        batch.add_column(sa.Column("artifact_ttl_seconds", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("teams") as batch:
        batch.drop_column("artifact_ttl_seconds")
    op.drop_index(op.f("ix_gc_runs_started_at"), table_name="gc_runs")
    op.drop_table("gc_runs")
