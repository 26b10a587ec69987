"""Migrations from empty on the configured database (SATCHEL_TEST_DB): up, compare, down, up.

Each test gets its own fresh database (a new SQLite file, or a uniquely named PostgreSQL
database created and dropped here), so the shared session database is never touched.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, inspect, text

from satchel.db.migrate import MIGRATIONS_DIR, current_revision, downgrade, upgrade
from satchel.db.models import Base
from satchel.db.session import make_engine
from tests.conftest import PG_URL, TEST_DB


@pytest.fixture
def empty_engine(tmp_path: Path) -> Iterator[Engine]:
    if TEST_DB == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
        yield engine
        engine.dispose()
        return
    name = f"satchel_migrations_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(PG_URL.rsplit("/", 1)[0] + f"/{name}")
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def schema_diff(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, Base.metadata))


def user_tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def head() -> str:
    heads = ScriptDirectory(str(MIGRATIONS_DIR)).get_heads()
    assert len(heads) == 1, f"migrations have several heads; merge them: {heads}"
    return heads[0]


def test_migrations_match_the_models_up_down_and_up_again(empty_engine: Engine) -> None:
    assert user_tables(empty_engine) == set()
    assert current_revision(empty_engine) is None

    upgrade(empty_engine)
    assert current_revision(empty_engine) == head()
    assert user_tables(empty_engine) == set(Base.metadata.tables)
    # The models and the migrated schema do not drift: no column, type, index, constraint
    # or table differs.
    assert schema_diff(empty_engine) == []

    downgrade(empty_engine, "base")
    assert user_tables(empty_engine) == set()
    assert current_revision(empty_engine) is None
    if empty_engine.dialect.name == "postgresql":
        # No orphaned sequences or types left behind either.
        with empty_engine.connect() as conn:
            left = conn.execute(text(
                "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND relname NOT LIKE 'alembic_version%'"
            )).scalars().all()
        assert left == []

    upgrade(empty_engine)
    assert current_revision(empty_engine) == head()
    assert schema_diff(empty_engine) == []


def test_every_revision_downgrades_to_its_parent(empty_engine: Engine) -> None:
    """Step through the history one revision at a time, up and back down."""
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    revisions = [r.revision for r in reversed(list(script.walk_revisions()))]
    assert revisions, "no migrations found"
    for rev in revisions:
        upgrade(empty_engine, rev)
        assert current_revision(empty_engine) == rev
    for rev in reversed(revisions):
        parent = script.get_revision(rev).down_revision
        downgrade(empty_engine, "-1")
        assert current_revision(empty_engine) == parent
    assert user_tables(empty_engine) == set()


def test_migrated_schema_round_trips_data(empty_engine: Engine) -> None:
    """A row written through the models reads back after a fresh upgrade (types line up)."""
    from datetime import UTC, datetime

    from sqlalchemy.orm import Session

    from satchel.db.models import Team

    upgrade(empty_engine)
    created = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with Session(empty_engine) as s:
        s.add(Team(name="kappa", created_at=created))
        s.commit()
    with Session(empty_engine) as s:
        team = s.query(Team).one()
        assert (team.name, team.storage_type, team.storage_path) == ("kappa", "internal", "")
        assert team.created_at == created and team.created_at.tzinfo is not None
