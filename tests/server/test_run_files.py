"""Run files through the REST API on local buckets (both databases): register -> PUT ->
commit, re-send and replace, commit checks, listing, download, limits, and who gets URLs
(viewer, outsider, team-bucket rule). The SDK end to end on SeaweedFS is in
tests/sdk/test_run_media.py."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from satchel.config import Settings
from satchel.db.models import Project, Run, RunFile, Team
from satchel.errors import InvalidInput
from satchel.server.deps import AppContext
from satchel.services import export, multipart, run_files
from satchel.storage.base import Capabilities
from tests.conftest import ADMIN_KEY, Users
from tests.errorshape import assert_error

API = "/api/v1"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"supported_file_stores": f"file://{tmp_path / 'omega'}"})


@pytest.fixture
def world(client: TestClient, users: Users, tmp_path: Path) -> dict[str, dict[str, str]]:
    """kappa (instance bucket; project p instance-visible, secret team-visible) by alice with
    viewer vic; omega (its own bucket) by bob; eve belongs to nothing. One run per project."""
    alice, bob, vic, eve = (users.create(n) for n in ("alice", "bob", "vic", "eve"))
    assert client.post(f"{API}/teams", json={"name": "kappa"}, headers=alice).status_code == 201
    r = client.post(f"{API}/teams", headers=bob, json={
        "name": "omega", "storage": {"type": "external", "bucket": f"file://{tmp_path / 'omega'}",
                                     "path": "sat"}})
    assert r.status_code == 201, r.text
    for h, team, project, vis in ((alice, "kappa", "p", "instance"),
                                  (alice, "kappa", "secret", "team"),
                                  (bob, "omega", "p", "instance")):
        assert client.post(f"{API}/teams/{team}/projects", json={
            "name": project, "visibility": vis}, headers=h).status_code == 201
        assert client.post(f"{API}/teams/{team}/projects/{project}/runs", json={
            "run_id": "r1"}, headers=h).status_code == 201
    r = client.post(f"{API}/teams/kappa/members", json={"username": "vic", "role": "viewer"},
                    headers=alice)
    assert r.status_code in (200, 201), r.text
    return {"alice": alice, "bob": bob, "vic": vic, "eve": eve}


def _base(team: str = "kappa", project: str = "p", run: str = "r1") -> str:
    return f"{API}/teams/{team}/projects/{project}/runs/{run}/files"


def _spec(path: str, data: bytes, kind: str = "file") -> dict[str, Any]:
    return {"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "kind": kind}


def _register(client: TestClient, h: dict[str, str], files: dict[str, bytes], *,
              kind: str = "file", base: str | None = None) -> dict[str, Any]:
    r = client.post(base or _base(), headers=h,
                    json={"files": [_spec(p, b, kind) for p, b in files.items()]})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def _send(client: TestClient, h: dict[str, str], files: dict[str, bytes], *,
          kind: str = "file", base: str | None = None) -> dict[str, Any]:
    """Register, PUT every URL answered, commit; returns the register answer."""
    out = _register(client, h, files, kind=kind, base=base)
    for u in out["uploads"]:
        resp = client.put(u["url"], content=files[u["path"]], headers=u["headers"])
        assert resp.status_code == 200, resp.text
    r = client.post((base or _base()) + "/commit", headers=h, json={"paths": list(files)})
    assert r.status_code == 200, r.text
    return out


def _listing(client: TestClient, h: dict[str, str], base: str | None = None, **params: Any
             ) -> dict[str, Any]:
    r = client.get(base or _base(), headers=h, params=params)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def _download(client: TestClient, h: dict[str, str], paths: list[str] | None = None,
              base: str | None = None) -> dict[str, bytes]:
    body = {"paths": paths} if paths is not None else None
    r = client.post((base or _base()) + "/download", headers=h, json=body)
    assert r.status_code == 200, r.text
    return {f["path"]: client.get(f["url"]).content for f in r.json()["files"]}


def test_register_upload_commit_list_download_and_key_layout(
        client: TestClient, world: dict[str, dict[str, str]], ctx: AppContext) -> None:
    a = world["alice"]
    files = {"model.pt": b"weights" * 100, "media/images/sample_0_abcdef01.png": b"\x89PNG..",
             "empty.txt": b""}
    out = _register(client, a, files)
    assert sorted(u["path"] for u in out["uploads"]) == sorted(files) and out["unchanged"] == []
    # Nothing is listed (nor downloadable) before the commit.
    assert _listing(client, a) == {"files": [], "total": 0}
    r = client.post(_base() + "/download", headers=a, json={"paths": ["model.pt"]})
    assert_error(r, 404, "not_found")
    for u in out["uploads"]:
        assert client.put(u["url"], content=files[u["path"]], headers=u["headers"]
                          ).status_code == 200
    r = client.post(_base() + "/commit", headers=a, json={"paths": list(files)})
    assert r.status_code == 200, r.text
    assert {f["path"] for f in r.json()["files"]} == set(files)
    listing = _listing(client, a)
    assert listing["total"] == 3
    assert [(f["path"], f["size"], f["sha256"]) for f in listing["files"]] == sorted(
        (p, len(b), hashlib.sha256(b).hexdigest()) for p, b in files.items())
    assert all(f["committed_at"] is not None for f in listing["files"])
    assert _download(client, a) == files
    assert _download(client, a, ["model.pt"]) == {"model.pt": files["model.pt"]}
    # Objects live under the run's prefix of the team's prefix in the instance bucket.
    root = Path(ctx.settings.home) / "bucket"
    keys = {p.relative_to(root).as_posix() for p in root.rglob("*")
            if p.is_file() and ".satchel" not in p.parts}
    for path in files:
        assert any(k.endswith(f"teams/kappa/runs/p/r1/files/{path}") for k in keys), keys
    # Every URL is audited with the user and method; the commit too.
    events = client.get(f"{API}/admin/audit", params={"action": "run_file_presign"},
                        headers=ADMIN).json()
    assert {(e["username"], e["method"]) for e in events} == {("alice", "PUT"), ("alice", "GET")}
    assert all("/runs/p/r1/files/" in e["object_key"] for e in events)
    commits = client.get(f"{API}/admin/audit", params={"action": "run_file_commit"},
                         headers=ADMIN).json()
    assert len(commits) == 3


def test_resend_is_a_noop_and_new_content_replaces(
        client: TestClient, world: dict[str, dict[str, str]]) -> None:
    a = world["alice"]
    _send(client, a, {"a.txt": b"one", "b.txt": b"two"})
    # The same content again: no URL, nothing changes.
    out = _register(client, a, {"a.txt": b"one", "b.txt": b"two"})
    assert out == {"uploads": [], "unchanged": ["a.txt", "b.txt"], "multipart": []}
    # Other content under a known path: a URL; the file is hidden until the new bytes commit.
    out = _register(client, a, {"a.txt": b"one, edited", "b.txt": b"two"})
    assert [u["path"] for u in out["uploads"]] == ["a.txt"] and out["unchanged"] == ["b.txt"]
    assert [f["path"] for f in _listing(client, a)["files"]] == ["b.txt"]
    # A commit before the new bytes arrived is refused: the bucket still has the old size.
    r = client.post(_base() + "/commit", headers=a, json={"paths": ["a.txt"]})
    err = assert_error(r, 409, "artifact_incomplete")
    assert err["details"]["problems"] == [{"path": "a.txt", "problem": "size", "expected": 11,
                                           "found": 3}]
    (u,) = out["uploads"]
    assert client.put(u["url"], content=b"one, edited", headers=u["headers"]).status_code == 200
    r = client.post(_base() + "/commit", headers=a, json={"paths": ["a.txt"]})
    assert r.status_code == 200, r.text
    # A retried commit (lost answer) is a no-op.
    r = client.post(_base() + "/commit", headers=a, json={"paths": ["a.txt"]})
    assert r.status_code == 200
    assert _download(client, a) == {"a.txt": b"one, edited", "b.txt": b"two"}


def test_commit_checks_the_bucket_all_or_nothing(
        client: TestClient, world: dict[str, dict[str, str]], ctx: AppContext) -> None:
    a = world["alice"]
    files = {"ok.bin": b"fine", "missing.bin": b"never sent", "wrong.bin": b"right bytes"}
    out = _register(client, a, files)
    urls = {u["path"]: u for u in out["uploads"]}
    assert client.put(urls["ok.bin"]["url"], content=b"fine",
                      headers=urls["ok.bin"]["headers"]).status_code == 200
    # The URL binds size and SHA-256: other bytes are refused by the store.
    bad = client.put(urls["wrong.bin"]["url"], content=b"wrong bytes",
                     headers=urls["wrong.bin"]["headers"])
    assert bad.status_code in (400, 403), bad.text
    # Bytes that reached the key some other way are checked at commit.
    with ctx.db.session() as db:
        team = db.query(Team).filter_by(name="kappa").one()
        bucket = ctx.storage.team_bucket(db, team)
        bucket.store.put_bytes("runs/p/r1/files/wrong.bin", b"longer wrong bytes")
    r = client.post(_base() + "/commit", headers=a,
                    json={"paths": ["ok.bin", "missing.bin", "wrong.bin", "unknown.bin"]})
    err = assert_error(r, 409, "artifact_incomplete")
    problems = {p["path"]: p["problem"] for p in err["details"]["problems"]}
    assert problems == {"missing.bin": "missing", "wrong.bin": "size",
                        "unknown.bin": "not_registered"}
    assert err["details"]["count"] == 3
    # All or nothing: the good file is not committed either.
    assert _listing(client, a)["total"] == 0
    r = client.post(_base() + "/commit", headers=a, json={"paths": ["ok.bin"]})
    assert r.status_code == 200
    assert [f["path"] for f in _listing(client, a)["files"]] == ["ok.bin"]


def test_listing_filters_and_pages(client: TestClient, world: dict[str, dict[str, str]]
                                   ) -> None:
    a = world["alice"]
    _send(client, a, {f"media/images/x_{i}_0000000{i}.png": b"png%d" % i for i in range(3)},
          kind="media")
    _send(client, a, {"config.yaml": b"lr: 1", "ckpt/last.pt": b"ckpt", "100%_done": b"x"})
    assert _listing(client, a)["total"] == 6
    media = _listing(client, a, kind="media")
    assert media["total"] == 3 and {f["kind"] for f in media["files"]} == {"media"}
    assert [f["path"] for f in _listing(client, a, prefix="ckpt/")["files"]] == ["ckpt/last.pt"]
    assert _listing(client, a, prefix="100%")["total"] == 1  # LIKE wildcards are escaped
    assert _listing(client, a, prefix="1%")["total"] == 0
    page = _listing(client, a, limit=2, offset=2)
    assert page["total"] == 6 and len(page["files"]) == 2
    everything = [f["path"] for f in _listing(client, a)["files"]]
    assert everything == sorted(everything)
    assert [f["path"] for f in page["files"]] == everything[2:4]
    assert_error(client.get(_base(), headers=a, params={"kind": "bogus"}), 400,
                 "invalid_input")


def test_server_exports_are_listed_downloadable_and_not_overwritable(
        client: TestClient, world: dict[str, dict[str, str]], ctx: AppContext) -> None:
    """Rows of kind "export" (Parquet the server writes, services/export.py) sit beside the
    run's files: listed, downloadable, but a client cannot register or commit their paths."""
    a = world["alice"]
    path, data = "export/history.parquet", b"PAR1 not really PAR1"
    with ctx.db.session() as db:
        team = db.query(Team).filter_by(name="kappa").one()
        project = db.query(Project).filter_by(team_id=team.id, name="p").one()
        run = db.query(Run).filter_by(project_id=project.id, run_id="r1").one()
        key = export.run_file_key(project, "r1", path)
        assert run_files.key_for(project, "r1", "export", path) == key
        ctx.storage.team_bucket(db, team).store.put_bytes(key, data)
        db.add(RunFile(run_id=run.id, path=path, kind="export", state="committed",
                       size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                       committed_at=datetime.now(UTC)))
    _send(client, a, {"notes.txt": b"n"})
    assert [(f["path"], f["kind"]) for f in _listing(client, a)["files"]] == [
        (path, "export"), ("notes.txt", "file")]
    assert _listing(client, a, kind="export")["total"] == 1
    assert _download(client, a) == {path: data, "notes.txt": b"n"}
    err = assert_error(client.post(_base(), headers=a, json={"files": [_spec(path, b"x")]}),
                       400, "invalid_input")
    assert "server-written" in err["message"]
    err = assert_error(client.post(_base() + "/commit", headers=a, json={"paths": [path]}),
                       409, "artifact_incomplete")
    assert err["details"]["problems"] == [{"path": path, "problem": "not_registered"}]


@pytest.mark.parametrize(("spec", "status", "code"), [
    ({"path": "../escape", "size": 1, "sha256": "a" * 64}, 400, "invalid_key"),
    ({"path": "/abs", "size": 1, "sha256": "a" * 64}, 400, "invalid_key"),
    ({"path": "a//b", "size": 1, "sha256": "a" * 64}, 400, "invalid_key"),
    ({"path": "big", "size": run_files.MAX_FILE_BYTES + 1, "sha256": "a" * 64}, 400,
     "invalid_input"),
    ({"path": "x", "size": -1, "sha256": "a" * 64}, 422, "validation_failed"),
    ({"path": "x", "size": 1, "sha256": "nothex"}, 422, "validation_failed"),
    ({"path": "x", "size": 1, "sha256": "a" * 64, "kind": "export"}, 422, "validation_failed"),
    ({"path": "x", "size": 1}, 422, "validation_failed"),
])
def test_register_refuses_bad_files(client: TestClient, world: dict[str, dict[str, str]],
                                    spec: dict[str, Any], status: int, code: str) -> None:
    r = client.post(_base(), headers=world["alice"], json={"files": [spec]})
    assert_error(r, status, code)
    assert _listing(client, world["alice"])["total"] == 0


def test_register_limits_and_missing_run(client: TestClient, world: dict[str, dict[str, str]],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    a = world["alice"]
    twice = [_spec("same", b"1"), _spec("same", b"2")]
    err = assert_error(client.post(_base(), headers=a, json={"files": twice}), 400,
                       "invalid_input")
    assert "twice" in err["message"]
    assert_error(client.post(_base(run="nosuch"), headers=a, json={"files": [_spec("a", b"")]}),
                 404, "not_found")
    assert_error(client.post(_base(), headers=a, json={"files": []}), 422, "validation_failed")
    monkeypatch.setattr(run_files, "MAX_FILES_PER_RUN", 3)
    _send(client, a, {"1": b"1", "2": b"2"})
    err = assert_error(client.post(_base(), headers=a, json={
        "files": [_spec("3", b"3"), _spec("4", b"4")]}), 400, "invalid_input")
    assert err["details"]["max_files"] == 3
    # Replacing a known path does not count against the limit.
    _send(client, a, {"1": b"one", "3": b"3"})


def test_who_gets_urls(client: TestClient, world: dict[str, dict[str, str]]) -> None:
    alice, bob, vic, eve = (world[n] for n in ("alice", "bob", "vic", "eve"))
    _send(client, alice, {"k.txt": b"kappa"})
    omega = _base("omega")
    _send(client, bob, {"o.txt": b"omega"}, base=omega)
    # A viewer reads but does not write.
    assert _download(client, vic) == {"k.txt": b"kappa"}
    err = assert_error(client.post(_base(), headers=vic, json={"files": [_spec("v", b"v")]}),
                       403, "permission_denied")
    assert err["details"]["needed_role"] == "member"
    assert_error(client.post(_base() + "/commit", headers=vic, json={"paths": ["k.txt"]}),
                 403, "permission_denied")
    # Anyone on the instance reads an instance-visible project in the instance bucket...
    assert _download(client, eve) == {"k.txt": b"kappa"}
    assert _listing(client, eve)["total"] == 1
    # ...but a team-visible project does not even exist for outsiders.
    for resp in (client.get(_base(project="secret"), headers=eve),
                 client.post(_base(project="secret") + "/download", headers=eve)):
        assert_error(resp, 404, "not_found")
    # A team's own bucket: members only, whatever the project's visibility; admins too.
    for h in (eve, alice, ADMIN):
        for resp in (client.get(omega, headers=h),
                     client.post(omega + "/download", headers=h, json={"paths": ["o.txt"]})):
            err = assert_error(resp, 403, "permission_denied")
            assert err["details"]["rule"] == "team_bucket_members_only"
    assert_error(client.post(omega, headers=eve, json={"files": [_spec("e", b"e")]}), 403,
                 "permission_denied")
    assert _download(client, bob, base=omega) == {"o.txt": b"omega"}
    # Download names only committed files of this run.
    err = assert_error(client.post(_base() + "/download", headers=alice,
                                   json={"paths": ["k.txt", "nope", "nope2"]}), 404, "not_found")
    assert err["details"]["paths"] == ["nope", "nope2"]


def test_big_files_go_up_as_parts(client: TestClient, world: dict[str, dict[str, str]],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(multipart, "MULTIPART_THRESHOLD", 1000)
    monkeypatch.setattr(multipart, "PART_SIZE", 400)
    a = world["alice"]
    big, small = bytes(range(256)) * 10, b"small"  # 2,560 bytes: 7 parts of 400
    out = _register(client, a, {"big.bin": big, "s.txt": small})
    assert [u["path"] for u in out["uploads"]] == ["s.txt"]
    (mp,) = out["multipart"]
    assert (mp["path"], mp["size"], mp["part_size"]) == ("big.bin", len(big), 400)
    assert [p["number"] for p in mp["parts"]] == list(range(1, 8))
    # Nothing committed until the parts are assembled: the commit says what is missing.
    r = client.post(_base() + "/commit", headers=a, json={"paths": ["big.bin"]})
    assert assert_error(r, 409, "artifact_incomplete")["details"]["problems"][0]["path"] == \
        "big.bin"
    # Fresh URLs for some parts (an upload that outlived its URLs asks again).
    r = client.post(_base() + "/multipart/urls", headers=a, json={
        "path": "big.bin", "upload_id": mp["upload_id"], "part_size": 400, "numbers": [2, 3]})
    assert r.status_code == 200, r.text
    fresh = {p["number"]: p for p in r.json()["parts"]}
    assert sorted(fresh) == [2, 3]
    r = client.post(_base() + "/multipart/urls", headers=a, json={
        "path": "big.bin", "upload_id": mp["upload_id"], "part_size": 400, "numbers": [8]})
    assert_error(r, 400, "invalid_input")
    # The part size is the one the registration answered; one the store cannot take fails.
    r = client.post(_base() + "/multipart/urls", headers=a, json={
        "path": "big.bin", "upload_id": mp["upload_id"], "part_size": 6 * 1024**3, "numbers": [1]})
    assert "does not fit" in assert_error(r, 400, "invalid_input")["message"]
    etags = []
    for p in mp["parts"]:
        url = fresh.get(p["number"], p)
        chunk = big[(p["number"] - 1) * 400:p["number"] * 400]
        resp = client.put(url["url"], content=chunk, headers=url["headers"])
        assert resp.status_code == 200, resp.text
        etags.append({"number": p["number"], "etag": resp.headers["etag"].strip('"')})
    r = client.post(_base() + "/multipart", headers=a, json={
        "path": "big.bin", "upload_id": mp["upload_id"], "parts": etags})
    assert r.status_code == 204, r.text
    for u in out["uploads"]:
        assert client.put(u["url"], content=small, headers=u["headers"]).status_code == 200
    r = client.post(_base() + "/commit", headers=a, json={"paths": ["big.bin", "s.txt"]})
    assert r.status_code == 200, r.text
    assert _download(client, a) == {"big.bin": big, "s.txt": small}
    # Completing again, or a file that is not waiting for its parts: 404, one line.
    r = client.post(_base() + "/multipart", headers=a, json={
        "path": "big.bin", "upload_id": mp["upload_id"], "parts": etags})
    assert "register it again" in assert_error(r, 404, "not_found")["message"]
    # The viewer may not upload.
    r = client.post(_base() + "/multipart/urls", headers=world["vic"], json={
        "path": "big.bin", "upload_id": mp["upload_id"], "part_size": 400, "numbers": [1]})
    assert_error(r, 403, "permission_denied")


def test_a_file_too_big_for_the_store_is_refused_before_any_upload(
        client: TestClient, world: dict[str, dict[str, str]], ctx: AppContext,
        monkeypatch: pytest.MonkeyPatch) -> None:
    small_store = Capabilities(max_parts=4, max_part_size=1000, min_part_size=1)
    monkeypatch.setattr(multipart, "MULTIPART_THRESHOLD", 100)
    monkeypatch.setattr(multipart, "PART_SIZE", 100)
    assert multipart.part_size(350, small_store) == 100
    assert multipart.part_size(3000, small_store) == 800  # doubled until 4 parts hold it
    with pytest.raises(InvalidInput, match="more than this bucket's store takes"):
        multipart.part_size(4001, small_store)
    # GCS-like: every part exactly one size; the default part size is clamped to it.
    gcs_like = Capabilities(min_part_size=8 * 1024**2, max_part_size=8 * 1024**2,
                            max_parts=10_000)
    monkeypatch.setattr(multipart, "PART_SIZE", 16 * 1024**2)
    assert multipart.part_size(70 * 1024**2, gcs_like) == 8 * 1024**2
