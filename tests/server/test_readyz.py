"""Readiness follows the database: /readyz answers 503 database_unavailable once it is gone.

The database really goes away: the SQLite file's directory is deleted, or the PostgreSQL
database is dropped (its connections are terminated). Each test uses its own database so the
shared one is untouched.
"""

from __future__ import annotations

import secrets
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from satchel.config import Settings
from satchel.server.app import build_context, create_app, run_bootstrap
from tests.conftest import ADMIN_KEY, ADMIN_PASSWORD, PG_URL, TEST_DB
from tests.errorshape import assert_error


@pytest.fixture
def doomed(tmp_path: Path) -> Iterator[tuple[TestClient, Callable[[], None]]]:
    """A client on its own database, and a function that makes that database disappear."""
    if TEST_DB == "sqlite":
        db_dir = tmp_path / "db"
        url = f"sqlite:///{db_dir / 'satchel.db'}"
        drop_name = None
    else:
        drop_name = f"satchel_readyz_{uuid.uuid4().hex[:12]}"
        admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{drop_name}"'))
        url = PG_URL.rsplit("/", 1)[0] + f"/{drop_name}"
    settings = Settings(home=tmp_path / "home", database_url=url,
                        secret_key=secrets.token_urlsafe(32), admin_password=ADMIN_PASSWORD,
                        admin_api_key=ADMIN_KEY, base_url="http://testserver")
    ctx = build_context(settings)
    run_bootstrap(ctx)

    def vanish() -> None:
        if drop_name is None:
            ctx.db.dispose()  # close pooled connections, as after a restart of the volume
            shutil.rmtree(db_dir)
        else:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE "{drop_name}" WITH (FORCE)'))

    try:
        with TestClient(create_app(settings, context=ctx)) as client:
            yield client, vanish
    finally:
        ctx.db.dispose()
        if drop_name is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{drop_name}" WITH (FORCE)'))
            admin.dispose()


def test_readyz_is_503_when_the_database_is_gone(
    doomed: tuple[TestClient, Callable[[], None]]
) -> None:
    client, vanish = doomed
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "database": TEST_DB}
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    assert client.get("/api/v1/me", headers=headers).status_code == 200

    vanish()

    err = assert_error(client.get("/readyz"), 503, "database_unavailable")
    assert "database" in err["message"]
    # Liveness does not depend on the database: the process is fine, it is not ready.
    assert client.get("/healthz").json() == {"status": "ok"}
    # API calls fail the same way, not as a 500 or as a misleading 401.
    err = assert_error(client.get("/api/v1/me", headers=headers), 503, "database_unavailable")
    assert "SATCHEL_DATABASE_URL" in err["message"]
    assert_error(client.post("/api/v1/auth/login", json={
        "username": "admin", "password": ADMIN_PASSWORD}), 503, "database_unavailable")
