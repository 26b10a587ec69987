"""artifacts: collections, versions, aliases, manifest entries, content-addressed objects

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "artifact_objects",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_artifact_objects_team_id_teams"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifact_objects")),
        sa.UniqueConstraint("team_id", "sha256", name=op.f("uq_artifact_objects_team_id_sha256")),
    )
    op.create_index(
        op.f("ix_artifact_objects_team_id"), "artifact_objects", ["team_id"], unique=False
    )
    op.create_table(
        "artifact_collections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_artifact_collections_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_artifact_collections_team_id_teams"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifact_collections")),
        sa.UniqueConstraint(
            "project_id", "name", name=op.f("uq_artifact_collections_project_id_name")
        ),
    )
    op.create_index(
        op.f("ix_artifact_collections_project_id"),
        "artifact_collections",
        ["project_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_artifact_collections_team_id"), "artifact_collections", ["team_id"], unique=False
    )
    op.create_table(
        "artifact_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=True),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("metadata_json", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("file_count", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("committed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("producing_run_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["collection_id"],
            ["artifact_collections.id"],
            name=op.f("fk_artifact_versions_collection_id_artifact_collections"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_artifact_versions_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifact_versions")),
        sa.UniqueConstraint(
            "collection_id", "index", name=op.f("uq_artifact_versions_collection_id_index")
        ),
    )
    op.create_index(
        op.f("ix_artifact_versions_collection_id"),
        "artifact_versions",
        ["collection_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_artifact_versions_digest"), "artifact_versions", ["digest"], unique=False
    )
    op.create_table(
        "artifact_aliases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(length=128), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["collection_id"],
            ["artifact_collections.id"],
            name=op.f("fk_artifact_aliases_collection_id_artifact_collections"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["artifact_versions.id"],
            name=op.f("fk_artifact_aliases_version_id_artifact_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifact_aliases")),
        sa.UniqueConstraint(
            "collection_id", "alias", name=op.f("uq_artifact_aliases_collection_id_alias")
        ),
    )
    op.create_index(
        op.f("ix_artifact_aliases_collection_id"),
        "artifact_aliases",
        ["collection_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_artifact_aliases_version_id"), "artifact_aliases", ["version_id"], unique=False
    )
    op.create_table(
        "artifact_entries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("ref", sa.String(length=2048), nullable=True),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["artifact_versions.id"],
            name=op.f("fk_artifact_entries_version_id_artifact_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifact_entries")),
        sa.UniqueConstraint("version_id", "path", name=op.f("uq_artifact_entries_version_id_path")),
    )
    op.create_index(
        op.f("ix_artifact_entries_sha256"), "artifact_entries", ["sha256"], unique=False
    )
    op.create_index(
        op.f("ix_artifact_entries_version_id"), "artifact_entries", ["version_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_artifact_entries_version_id"), table_name="artifact_entries")
    op.drop_index(op.f("ix_artifact_entries_sha256"), table_name="artifact_entries")
    op.drop_table("artifact_entries")
    op.drop_index(op.f("ix_artifact_aliases_version_id"), table_name="artifact_aliases")
    op.drop_index(op.f("ix_artifact_aliases_collection_id"), table_name="artifact_aliases")
    op.drop_table("artifact_aliases")
    op.drop_index(op.f("ix_artifact_versions_digest"), table_name="artifact_versions")
    op.drop_index(op.f("ix_artifact_versions_collection_id"), table_name="artifact_versions")
    op.drop_table("artifact_versions")
    op.drop_index(op.f("ix_artifact_collections_team_id"), table_name="artifact_collections")
    op.drop_index(op.f("ix_artifact_collections_project_id"), table_name="artifact_collections")
    op.drop_table("artifact_collections")
    op.drop_index(op.f("ix_artifact_objects_team_id"), table_name="artifact_objects")
    op.drop_table("artifact_objects")
