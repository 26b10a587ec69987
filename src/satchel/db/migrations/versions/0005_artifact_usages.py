"""artifact usages: lineage consumers; index on artifact_versions.producing_run_id

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "artifact_usages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_artifact_usages_run_id_runs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["artifact_versions.id"],
            name=op.f("fk_artifact_usages_version_id_artifact_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifact_usages")),
        sa.UniqueConstraint(
            "version_id", "run_id", name=op.f("uq_artifact_usages_version_id_run_id")
        ),
    )
    with op.batch_alter_table("artifact_usages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_artifact_usages_run_id"), ["run_id"], unique=False)

    with op.batch_alter_table("artifact_versions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_artifact_versions_producing_run_id"), ["producing_run_id"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("artifact_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_artifact_versions_producing_run_id"))

    with op.batch_alter_table("artifact_usages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_artifact_usages_run_id"))

    op.drop_table("artifact_usages")
