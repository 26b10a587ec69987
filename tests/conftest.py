"""Shared fixtures: a migrated database (SQLite or PostgreSQL), settings, the app, users.

The database kind comes from SATCHEL_TEST_DB (``sqlite``, the default, or ``postgresql``);
the PostgreSQL server is the machine's own (SATCHEL_TEST_PG_URL, default
postgresql+psycopg://postgres@127.0.0.1:5432/test). Each test session gets its own PostgreSQL
database, migrated from empty, and every test starts from empty tables.
"""

from __future__ import annotations

import os
import secrets
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from satchel.auth.tokens import generate_api_key
from satchel.config import Settings
from satchel.db.migrate import upgrade
from satchel.db.models import Base
from satchel.db.session import make_engine
from satchel.server.app import build_context, create_app, run_bootstrap
from satchel.server.deps import AppContext

# Real storage servers (one per session and xdist worker, started only when a test asks).
from tests.storage.servers.azurite import azurite  # noqa: F401
from tests.storage.servers.fakegcs import fake_gcs  # noqa: F401
from tests.storage.servers.seaweedfs import seaweedfs  # noqa: F401

TEST_DB = os.environ.get("SATCHEL_TEST_DB", "sqlite")
PG_URL = os.environ.get("SATCHEL_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ADMIN_PASSWORD = "correct-horse-battery-staple-42"
ADMIN_KEY = generate_api_key()


def pytest_report_header(config: pytest.Config) -> str:
    return f"satchel test database: {TEST_DB}"


@pytest.fixture(scope="session")
def db_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database for the session: a SQLite file to copy, or a PostgreSQL URL."""
    if TEST_DB == "sqlite":
        path = tmp_path_factory.mktemp("dbtemplate") / "template.db"
        engine = make_engine(f"sqlite:///{path}")
        upgrade(engine)
        engine.dispose()
        yield str(path)
        return
    if TEST_DB != "postgresql":
        raise pytest.UsageError("SATCHEL_TEST_DB must be 'sqlite' or 'postgresql'")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"satchel_test_{worker}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def database_url(db_template: str, tmp_path: Path) -> Iterator[str]:
    if TEST_DB == "sqlite":
        path = tmp_path / "satchel.db"
        shutil.copyfile(db_template, path)
        yield f"sqlite:///{path}"
        return
    yield db_template
    engine = make_engine(db_template)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        home=tmp_path / "home",
        database_url=database_url,
        secret_key=secrets.token_urlsafe(32),
        admin_password=ADMIN_PASSWORD,
        admin_api_key=ADMIN_KEY,
        base_url="http://testserver",
    )


@pytest.fixture
def ctx(settings: Settings) -> Iterator[AppContext]:
    context = build_context(settings)
    run_bootstrap(context)
    yield context
    context.db.dispose()


@pytest.fixture
def client(settings: Settings, ctx: AppContext) -> Iterator[TestClient]:
    with TestClient(create_app(settings, context=ctx)) as c:
        yield c


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


class Users:
    """Create users through the API and hand back their auth headers."""

    def __init__(self, client: TestClient, admin_headers: dict[str, str]) -> None:
        self.client = client
        self.admin = admin_headers

    def create(self, username: str, *, password: str | None = None, is_admin: bool = False
               ) -> dict[str, str]:
        body: dict[str, object] = {"username": username, "create_api_key": True,
                                   "is_admin": is_admin}
        if password:
            body["password"] = password
        resp = self.client.post("/api/v1/users", json=body, headers=self.admin)
        assert resp.status_code == 201, resp.text
        return {"Authorization": f"Bearer {resp.json()['api_key']}"}


@pytest.fixture
def users(client: TestClient, admin_headers: dict[str, str]) -> Users:
    return Users(client, admin_headers)
