"""The artifact lifecycle in the SDK: ``Artifact(ttl=)``, ``LoggedArtifact.expires_at`` and
``set_ttl``, ``Api().artifact_collection(...)`` delete / restore. Real HTTP to the app in a
thread with a local bucket; plus the TTL and duration parsers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from satchel import Api, Artifact
from satchel.cli.duration import format_ttl, parse_ttl
from satchel.config import Settings
from satchel.db.models import ArtifactVersion
from satchel.errors import ArtifactExpired, InvalidInput, NotFound, PermissionDenied
from satchel.sdk.lifecycle import ttl_seconds
from satchel.server.app import create_app
from satchel.server.deps import AppContext
from tests.conftest import ADMIN_KEY
from tests.live import free_port, serve_in_thread

API = "/api/v1"


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def settings(settings: Settings, port: int) -> Settings:
    return settings.model_copy(update={"base_url": f"http://127.0.0.1:{port}"})


@pytest.fixture
def live(client: TestClient, settings: Settings, ctx: AppContext, port: int, tmp_path: Path,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """kappa/p with ada (admin) and vic (viewer)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    keys = {}
    for name in ("ada", "vic"):
        r = client.post(f"{API}/users", json={"username": name, "create_api_key": True},
                        headers=admin)
        keys[name] = r.json()["api_key"]
    ada = {"Authorization": f"Bearer {keys['ada']}"}
    assert client.post(f"{API}/teams", json={"name": "kappa", "artifact_ttl_seconds": 3600},
                       headers=ada).status_code == 201
    assert client.post(f"{API}/teams/kappa/projects", json={"name": "p"},
                       headers=ada).status_code == 201
    assert client.post(f"{API}/teams/kappa/members", json={"username": "vic",
                                                           "role": "viewer"},
                       headers=ada).status_code == 200
    with serve_in_thread(create_app(settings, context=ctx), port) as url:
        yield {"url": url, **keys}


def test_ttl_and_collections_through_the_sdk(live: dict[str, str], tmp_path: Path,
                                             ctx: AppContext) -> None:
    src = tmp_path / "f.txt"
    src.write_text("zero")
    with Api(live["url"], live["ada"]) as api:
        art = Artifact("ds", "dataset", ttl=timedelta(days=2))
        art.add_file(src)
        v0 = api.log_artifact(art, "kappa/p")
        assert v0.expires_at is not None
        committed = api.client.artifact_version("kappa", "p", "ds", "v0")["version"]
        assert v0.expires_at == datetime.fromisoformat(committed["committed_at"]) + \
            timedelta(days=2)
        # Without a TTL the team default (1 h) applies; ttl=0 keeps forever.
        src.write_text("one")
        default = Artifact("ds", "dataset")
        default.add_file(src)
        v1 = api.log_artifact(default, "kappa/p")
        assert v1.expires_at is not None and v1.expires_at < v0.expires_at
        v1.set_ttl(0)
        assert v1.expires_at is None
        v1.set_ttl(timedelta(hours=5))
        assert api.artifact("kappa/p/ds:v1").expires_at == v1.expires_at

        coll = api.artifact_collection("kappa/p/ds")
        assert (coll.name, coll.type, coll.version_count, coll.deleted_at) == (
            "ds", "dataset", 2, None)
        assert [v.version for v in coll.versions()] == ["v0", "v1"]
        coll.delete()
        assert coll.deleted_at is not None
        with pytest.raises(NotFound):
            api.artifact("kappa/p/ds")
        with pytest.raises(NotFound):
            api.artifact_collection("kappa/p/ds")
        again = api.artifact_collection("kappa/p/ds", deleted=True)
        assert again.deleted_at == coll.deleted_at and "(deleted)" in repr(again)
        again.restore()
        assert again.deleted_at is None
        assert api.artifact("kappa/p/ds").version == "v1"
        with pytest.raises(InvalidInput):
            api.artifact_collection("kappa/p/ds:v0")

        # An expired deleted version needs a new TTL before it comes back. ("A day later":
        # the commit time is moved back instead of sleeping.)
        v1.delete()
        with ctx.db.session() as db:
            db.execute(update(ArtifactVersion).where(ArtifactVersion.index == 1).values(
                committed_at=datetime.now(UTC) - timedelta(days=1)))
        v1.set_ttl(3600)
        assert v1.expires_at is not None and v1.expires_at < datetime.now(UTC)
        with pytest.raises(ArtifactExpired):
            v1.restore()
        v1.set_ttl(0)
        v1.restore()
        assert api.artifact("kappa/p/ds").version == "v1"
    with Api(live["url"], live["vic"]) as api, pytest.raises(PermissionDenied):
        api.artifact_collection("kappa/p/ds").delete()


def test_ttl_values() -> None:
    assert ttl_seconds(timedelta(days=30)) == 30 * 86_400
    assert ttl_seconds(0) == 0
    for bad in (-1, timedelta(seconds=-5), timedelta(milliseconds=1500), 1.5, True, "30d"):
        with pytest.raises(InvalidInput):
            ttl_seconds(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        Artifact("ds", "dataset", ttl=-3)
    assert [parse_ttl(t) for t in ("30d", "12h", "90m", "45s", "600", "none", "Forever", "0")
            ] == [30 * 86_400, 12 * 3600, 90 * 60, 45, 600, 0, 0, 0]
    for bad in ("", "3w", "1.5d", "-1d", "d", "30 d x"):
        with pytest.raises(InvalidInput):
            parse_ttl(bad)
    assert [format_ttl(s) for s in (None, 0, 90 * 86_400, 36 * 3600, 90, 61)] == [
        "forever", "forever", "90d", "36h", "90s", "61s"]
