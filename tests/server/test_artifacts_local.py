"""Artifacts on local buckets through the REST API: dedup, commit checks, visibility, aliases,
soft delete, authorization. The SDK end to end on SeaweedFS is in
tests/sdk/test_artifacts_seaweedfs.py."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from satchel.config import Settings
from satchel.server.deps import AppContext
from satchel.services import artifacts, multipart
from tests.conftest import Users

API = "/api/v1"


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"supported_file_stores": f"file://{tmp_path / 'omega'}"})


def _manifest(files: dict[str, bytes]) -> list[dict[str, Any]]:
    return [{"path": p, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()}
            for p, b in files.items()]


def _base(team: str, project: str = "p") -> str:
    return f"{API}/teams/{team}/projects/{project}/artifacts"


def _log(client: TestClient, h: dict[str, str], team: str, name: str, files: dict[str, bytes],
         *, aliases: list[str] | None = None, upload: bool = True) -> tuple[dict[str, Any], int]:
    """Log through the API; returns (committed or pending version, number of objects PUT)."""
    r = client.post(f"{_base(team)}/{name}/versions", headers=h,
                    json={"type": "dataset", "entries": _manifest(files)})
    assert r.status_code == 201, r.text
    body = r.json()
    if not body["created"]:
        return body["version"], 0
    by_sha = {hashlib.sha256(b).hexdigest(): b for b in files.values()}
    if upload:
        for u in body["uploads"]:
            resp = client.put(u["url"], content=by_sha[u["sha256"]], headers=u["headers"])
            assert resp.status_code == 200, resp.text
        for mp in body["multipart"]:
            data = by_sha[mp["sha256"]]
            parts = []
            for p in mp["parts"]:
                start = (p["number"] - 1) * mp["part_size"]
                resp = client.put(p["url"], content=data[start:start + mp["part_size"]],
                                  headers=p["headers"])
                assert resp.status_code == 200, resp.text
                parts.append({"number": p["number"], "etag": resp.headers["etag"].strip('"')})
            r = client.post(f"{_base(team)}/{name}/pending/{body['version']['id']}/multipart",
                            headers=h, json={"sha256": mp["sha256"],
                                             "upload_id": mp["upload_id"], "parts": parts})
            assert r.status_code == 204, r.text
    sent = len(body["uploads"]) + len(body["multipart"])
    if not upload:
        return body["version"], sent
    r = client.post(f"{_base(team)}/{name}/pending/{body['version']['id']}/commit", headers=h,
                    json={"aliases": aliases or []})
    assert r.status_code == 200, r.text
    return r.json(), sent


def _download(client: TestClient, h: dict[str, str], team: str, ref: str) -> dict[str, bytes]:
    r = client.post(f"{_base(team)}/{ref.replace(':', '/versions/')}/download", headers=h)
    assert r.status_code == 200, r.text
    return {e["path"]: client.get(e["url"]).content for e in r.json()["entries"]}


@pytest.fixture
def world(client: TestClient, users: Users, tmp_path: Path) -> dict[str, dict[str, str]]:
    alice, bob, vic, eve = (users.create(n) for n in ("alice", "bob", "vic", "eve"))
    assert client.post(f"{API}/teams", json={"name": "kappa"}, headers=alice).status_code == 201
    r = client.post(f"{API}/teams", headers=bob, json={
        "name": "omega", "storage": {"type": "external", "bucket": f"file://{tmp_path / 'omega'}",
                                     "path": "sat"}})
    assert r.status_code == 201, r.text
    for h, team in ((alice, "kappa"), (bob, "omega")):
        assert client.post(f"{API}/teams/{team}/projects", json={"name": "p"},
                           headers=h).status_code == 201
    client.post(f"{API}/teams/omega/members", json={"username": "vic", "role": "viewer"},
                headers=bob)
    return {"alice": alice, "bob": bob, "vic": vic, "eve": eve}


def test_dedup_unchanged_and_changed(client: TestClient, world: dict[str, dict[str, str]],
                                     ctx: AppContext) -> None:
    a = world["alice"]
    files = {"a.txt": b"alpha", "sub/b.txt": b"bravo", "sub/c.txt": b"alpha"}  # a == c
    v0, sent = _log(client, a, "kappa", "ds", files)
    assert (v0["version"], v0["aliases"], sent) == ("v0", ["latest"], 2)
    # Unchanged: no new version, nothing to upload.
    again, sent = _log(client, a, "kappa", "ds", files)
    assert (again["version"], again["id"], sent) == ("v0", v0["id"], 0)
    # One file changed: only it is uploaded.
    v1, sent = _log(client, a, "kappa", "ds", {**files, "sub/b.txt": b"bravo 2"})
    assert (v1["version"], sent) == ("v1", 1)
    assert _download(client, a, "kappa", "ds:v0") == files
    assert _download(client, a, "kappa", "ds:latest")["sub/b.txt"] == b"bravo 2"
    versions = client.get(f"{_base('kappa')}/ds/versions", headers=a).json()
    assert [(v["version"], v["aliases"]) for v in versions] == [("v0", []), ("v1", ["latest"])]
    # Objects live content-addressed under the team prefix, the manifest next to them.
    root = Path(ctx.settings.home) / "bucket"
    keys = {p.relative_to(root).as_posix() for p in root.rglob("*")
            if p.is_file() and ".satchel" not in p.parts}
    sha = hashlib.sha256(b"alpha").hexdigest()
    assert any(k.endswith(f"teams/kappa/artifacts/sha256/{sha[:2]}/{sha[2:4]}/{sha}")
               for k in keys), keys
    assert any(f"teams/kappa/artifacts/manifests/p/ds/{v1['digest']}.json" in k for k in keys)
    events = client.get(f"{API}/admin/audit", params={"action": "artifact_presign"},
                        headers=_admin(client)).json()
    assert {e["method"] for e in events} == {"PUT", "GET"} and \
        all(e["username"] == "alice" for e in events)


def _admin(client: TestClient) -> dict[str, str]:
    from tests.conftest import ADMIN_KEY

    return {"Authorization": f"Bearer {ADMIN_KEY}"}


def test_dedup_is_per_team(client: TestClient, world: dict[str, dict[str, str]],
                           tmp_path: Path) -> None:
    files = {"w.bin": b"same bytes in both teams"}
    _, sent = _log(client, world["alice"], "kappa", "m", files)
    assert sent == 1
    _, sent = _log(client, world["bob"], "omega", "m", files)
    assert sent == 1  # uploaded again into omega's own prefix
    sha = hashlib.sha256(files["w.bin"]).hexdigest()
    assert (tmp_path / "omega" / "sat/teams/omega/artifacts/sha256" / sha[:2] / sha[2:4] / sha
            ).read_bytes() == files["w.bin"]


def test_commit_refused_when_objects_missing_or_wrong(
        client: TestClient, world: dict[str, dict[str, str]], ctx: AppContext) -> None:
    a = world["alice"]
    files = {"x.bin": b"x" * 100}
    pending, sent = _log(client, a, "kappa", "ds", files, upload=False)
    assert sent == 1 and pending["state"] == "pending" and pending["version"] is None
    commit = f"{_base('kappa')}/ds/pending/{pending['id']}/commit"
    r = client.post(commit, headers=a, json={})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "artifact_incomplete"
    assert r.json()["error"]["details"]["problems"][0]["problem"] == "missing"
    # Wrong bytes at the key (written behind Satchel's back): refused on size.
    with ctx.db.session() as db:
        from satchel.db.models import Team

        team = db.query(Team).filter_by(name="kappa").one()
        sha = hashlib.sha256(files["x.bin"]).hexdigest()
        ctx.storage.team_bucket(db, team).store.put_bytes(
            artifacts.object_key(None, sha), b"short")  # type: ignore[arg-type]
    r = client.post(commit, headers=a, json={})
    assert r.status_code == 409
    assert r.json()["error"]["details"]["problems"][0]["problem"] == "size"
    # Nothing became visible; the pending version is neither listed nor resolvable.
    assert client.get(f"{_base('kappa')}/ds/versions", headers=a).json() == []
    assert client.get(f"{_base('kappa')}", headers=a).json() == []
    assert client.get(f"{_base('kappa')}/ds/versions/latest", headers=a).status_code == 404
    assert client.post(f"{_base('kappa')}/ds/versions/v0/download", headers=a
                       ).status_code == 404


def test_aliases_delete_restore(client: TestClient, world: dict[str, dict[str, str]]) -> None:
    a = world["alice"]
    _log(client, a, "kappa", "ds", {"f": b"0"}, aliases=["best"])
    _log(client, a, "kappa", "ds", {"f": b"1"})
    base = f"{_base('kappa')}/ds"
    # An alias names one version per collection: moving it takes it off v0.
    r = client.put(f"{base}/aliases/best", headers=a, json={"version": "v1"})
    assert r.status_code == 200 and r.json()["aliases"] == ["best", "latest"]
    assert client.get(f"{base}/versions/v0", headers=a).json()["version"]["aliases"] == []
    for bad in ("latest", "v7"):
        r = client.put(f"{base}/aliases/{bad}", headers=a, json={"version": "v0"})
        assert r.status_code == 400, r.text
    assert client.delete(f"{base}/aliases/best", headers=a).status_code == 204
    assert client.get(f"{base}/versions/best", headers=a).status_code == 404
    # Soft delete of the latest: invisible, latest falls back to v0; restore brings it back.
    assert client.delete(f"{base}/versions/v1", headers=a).status_code == 200
    assert [v["version"] for v in client.get(f"{base}/versions", headers=a).json()] == ["v0"]
    assert client.get(f"{base}/versions/v1", headers=a).status_code == 404
    assert client.post(f"{base}/versions/v1/download", headers=a).status_code == 404
    assert client.get(f"{base}/versions/latest", headers=a).json()["version"]["version"] == "v0"
    r = client.post(f"{base}/versions/v1/restore", headers=a)
    assert r.status_code == 200 and r.json()["aliases"] == ["latest"]
    assert _download(client, a, "kappa", "ds:latest") == {"f": b"1"}
    # The next commit gets a fresh index, never a reused one.
    v2, _ = _log(client, a, "kappa", "ds", {"f": b"2"})
    assert v2["version"] == "v2"


def test_authorization(client: TestClient, world: dict[str, dict[str, str]]) -> None:
    _log(client, world["bob"], "omega", "m", {"f": b"omega"})
    # A non-member of a team-bucket team gets 403 for metadata and URLs alike.
    for h in (world["alice"], world["eve"], _admin(client)):
        assert client.get(f"{_base('omega')}/m/versions/latest", headers=h).status_code == 403
        assert client.post(f"{_base('omega')}/m/versions/latest/download",
                           headers=h).status_code == 403
    # A viewer reads and downloads but cannot log, alias or delete.
    vic = world["vic"]
    assert _download(client, vic, "omega", "m:latest") == {"f": b"omega"}
    r = client.post(f"{_base('omega')}/m/versions", headers=vic,
                    json={"type": "dataset", "entries": _manifest({"g": b"g"})})
    assert r.status_code == 403
    assert client.delete(f"{_base('omega')}/m/versions/v0", headers=vic).status_code == 403
    assert client.put(f"{_base('omega')}/m/aliases/x", headers=vic,
                      json={"version": "v0"}).status_code == 403
    # Instance-bucket project: any instance user reads, only members write.
    _log(client, world["alice"], "kappa", "ds", {"f": b"k"})
    assert _download(client, world["eve"], "kappa", "ds:v0") == {"f": b"k"}
    r = client.post(f"{_base('kappa')}/ds/versions", headers=world["eve"],
                    json={"type": "dataset", "entries": _manifest({"g": b"g"})})
    assert r.status_code == 403


def test_bad_manifests(client: TestClient, world: dict[str, dict[str, str]]) -> None:
    a = world["alice"]
    url = f"{_base('kappa')}/ds/versions"
    sha = "0" * 64
    for entries in ([{"path": "../x", "size": 1, "sha256": sha}],
                    [{"path": "a", "size": 1, "sha256": sha}, {"path": "a", "size": 1,
                                                              "sha256": sha}],
                    [{"path": "a", "size": 1}]):
        r = client.post(url, headers=a, json={"type": "dataset", "entries": entries})
        assert r.status_code == 400, r.text
    _log(client, a, "kappa", "ds", {"f": b"1"})
    r = client.post(url, headers=a, json={"type": "model", "entries": _manifest({"f": b"1"})})
    assert r.status_code == 409


def test_references_and_multipart(client: TestClient, world: dict[str, dict[str, str]],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(multipart, "MULTIPART_THRESHOLD", 1000)
    monkeypatch.setattr(multipart, "PART_SIZE", 400)
    a = world["alice"]
    big = bytes(range(256)) * 10  # 2560 bytes -> 7 parts of 400
    r = client.post(f"{_base('kappa')}/ds/versions", headers=a, json={
        "type": "dataset", "entries": [*_manifest({"big.bin": big}),
                                       {"path": "ext", "size": 0, "ref": "s3://other/x"}]})
    assert r.status_code == 201
    (mp,) = r.json()["multipart"]
    assert len(mp["parts"]) == 7 and r.json()["uploads"] == []
    v, sent = _log(client, a, "kappa", "big", {"big.bin": big})
    assert sent == 1 and v["version"] == "v0"
    assert _download(client, a, "kappa", "big:v0") == {"big.bin": big}


def test_recording_objects_twice_is_not_an_error(ctx: AppContext) -> None:
    """Two commits in different collections may introduce the same bytes at once."""
    from datetime import UTC, datetime

    from sqlalchemy import func, select

    from satchel.db.models import ArtifactObject, Team
    from satchel.services.artifacts import _record_objects

    sha = "ab" * 32
    with ctx.db.session() as db:
        team = Team(name="race")
        db.add(team)
        db.flush()
        _record_objects(db, team.id, {sha: 5}, datetime.now(UTC))
        _record_objects(db, team.id, {sha: 5, "cd" * 32: 7}, datetime.now(UTC))
        count = db.scalar(select(func.count()).select_from(ArtifactObject)
                          .where(ArtifactObject.team_id == team.id))
    assert count == 2
