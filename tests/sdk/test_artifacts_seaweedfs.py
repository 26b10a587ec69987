"""Artifacts end to end: SDK + CLI -> real Satchel server over HTTP -> real SeaweedFS buckets.

Kappa uses the instance bucket (bucket-a), Omega its own (bucket-b), as in
tests/storage/test_scopes_seaweedfs.py. The server only signs; bytes go to SeaweedFS.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from satchel import Api, Artifact
from satchel.cli.main import main
from satchel.config import Settings
from satchel.errors import NotFound
from satchel.server.app import create_app
from satchel.server.deps import AppContext
from tests.conftest import ADMIN_KEY, Users
from tests.live import free_port, serve_in_thread
from tests.storage.servers.seaweedfs import SeaweedFS
from tests.storage.test_scopes_seaweedfs import _cors, _keys

API = "/api/v1"


@pytest.fixture
def paths() -> dict[str, str]:
    token = secrets.token_hex(4)
    return {"instance": f"art-inst-{token}", "omega": f"art-omega-{token}"}


@pytest.fixture
def settings(settings: Settings, seaweedfs: SeaweedFS) -> Settings:
    for bucket in ("bucket-a", "bucket-b"):
        _cors(seaweedfs, bucket)
    return settings.model_copy(update={
        "supported_file_stores": seaweedfs.address("bucket-b", "bucket-b")})


@pytest.fixture
def live(client: TestClient, settings: Settings, ctx: AppContext, users: Users,
         seaweedfs: SeaweedFS, paths: dict[str, str]) -> Iterator[dict[str, str]]:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    r = client.put(f"{API}/admin/storage", headers=admin, json={
        "address": seaweedfs.address("bucket-a", "bucket-a"), "path": paths["instance"]})
    assert r.status_code == 200, r.text
    keys = {}
    for name in ("kay", "olga"):
        r = client.post(f"{API}/users", json={"username": name, "create_api_key": True},
                        headers=admin)
        keys[name] = r.json()["api_key"]
    kay = {"Authorization": f"Bearer {keys['kay']}"}
    olga = {"Authorization": f"Bearer {keys['olga']}"}
    client.post(f"{API}/teams", json={"name": "kappa"}, headers=kay)
    r = client.post(f"{API}/teams", headers=olga, json={
        "name": "omega", "storage": {"type": "external", "bucket": "bucket-b",
                                     "path": paths["omega"]}})
    assert r.status_code == 201, r.text
    client.post(f"{API}/teams/kappa/projects", json={"name": "p"}, headers=kay)
    client.post(f"{API}/teams/omega/projects", json={"name": "p"}, headers=olga)
    with serve_in_thread(create_app(settings, context=ctx), free_port()) as url:
        yield {"url": url, **keys}


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_log_relog_change_download_and_team_isolation(
        live: dict[str, str], tmp_path: Path, seaweedfs: SeaweedFS, paths: dict[str, str]
) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(secrets.token_bytes(300_000))
    (src / "sub" / "b.txt").write_text("bravo")
    (src / "sub" / "c.txt").write_text("charlie")
    with Api(live["url"], live["kay"]) as api:
        art = Artifact("ds", "dataset", metadata={"rows": 3})
        art.add_dir(src)
        v0 = api.log_artifact(art, "kappa/p", aliases=["best"])
        assert (v0.version, v0.uploaded, sorted(v0.aliases)) == ("v0", 3, ["best", "latest"])
        # Unchanged directory: same version, nothing uploaded.
        again = Artifact("ds", "dataset")
        again.add_dir(src)
        same = api.log_artifact(again, "kappa/p")
        assert (same.version, same.uploaded) == ("v0", 0)
        # One file changed: only it is uploaded.
        (src / "sub" / "b.txt").write_text("bravo, edited")
        changed = Artifact("ds", "dataset")
        changed.add_dir(src)
        v1 = api.log_artifact(changed, "kappa/p")
        assert (v1.version, v1.uploaded) == ("v1", 1)
        # Download is byte-identical (SHA-256 verified by the SDK).
        got = api.artifact("kappa/p/ds:latest").download(tmp_path / "out")
        assert _tree(got) == _tree(src)
        assert api.artifact("kappa/p/ds:best").version == "v0"
        # Delete + restore.
        api.artifact("kappa/p/ds:v1").delete()
        assert api.artifact("kappa/p/ds").version == "v0"
        with pytest.raises(NotFound):
            api.artifact("kappa/p/ds:v1")
        api.client.restore_artifact_version("kappa", "p", "ds", "v1")
        assert api.artifact("kappa/p/ds").version == "v1"
    keys_a = _keys(seaweedfs, "bucket-a")
    assert any(k.startswith(f"{paths['instance']}/teams/kappa/artifacts/sha256/") for k in keys_a)
    assert any(k.startswith(f"{paths['instance']}/teams/kappa/artifacts/manifests/p/ds/")
               for k in keys_a)

    # Team Omega logs identical bytes: uploaded again, into Omega's own bucket and prefix.
    with Api(live["url"], live["olga"]) as api:
        art = Artifact("ds", "dataset")
        art.add_dir(src)
        assert api.log_artifact(art, "omega/p").uploaded == 3
    omega = {k for k in _keys(seaweedfs, "bucket-b") if k.startswith(paths["omega"] + "/")}
    assert len([k for k in omega if "/artifacts/sha256/" in k]) == 3
    assert all(k.startswith(f"{paths['omega']}/teams/omega/artifacts/") for k in omega)
    # Kay is not a member of Omega: 403 for its artifacts.
    with Api(live["url"], live["kay"]) as api, pytest.raises(Exception) as info:
        api.artifact("omega/p/ds")
    assert getattr(info.value, "code", "") == "permission_denied"


def test_cli_put_get_ls_rm_restore(live: dict[str, str], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SATCHEL_HOST", live["url"])
    monkeypatch.setenv("SATCHEL_API_KEY", live["kay"])
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    src = tmp_path / "model"
    src.mkdir()
    (src / "w.bin").write_bytes(b"weights" * 1000)
    assert main(["artifact", "put", str(src), "kappa/p/model", "--type", "model",
                 "--alias", "prod"]) == 0
    assert "model:v0" in capsys.readouterr().out
    assert main(["artifact", "get", "kappa/p/model:prod", "--root", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "w.bin").read_bytes() == b"weights" * 1000
    assert main(["artifact", "ls", "kappa/p", "--json"]) == 0
    assert '"model"' in capsys.readouterr().out
    assert main(["artifact", "rm", "kappa/p/model:v0"]) == 0
    assert main(["artifact", "get", "kappa/p/model:v0"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("NotFound: ") and "\n" not in err
    assert main(["artifact", "restore", "kappa/p/model:v0"]) == 0
