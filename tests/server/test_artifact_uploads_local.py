"""Resume and URL refresh through the REST API on the local bucket (services/artifact_uploads.py).

The SDK side, with a SIGKILLed process and SeaweedFS, is tests/sdk/test_resume_seaweedfs.py.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from fastapi.testclient import TestClient

from satchel.server.deps import AppContext
from satchel.services import multipart
from satchel.storage.base import Capabilities
from tests.conftest import ADMIN_KEY
from tests.server import test_artifacts_local as _local
from tests.server.test_artifacts_local import _base, _download

settings = _local.settings  # the fixtures: a second local bucket, four users and two teams
world = _local.world

W = dict[str, dict[str, str]]
MiB = 1024 * 1024
BIG = b"0123456789abcdefghij!"  # 21 bytes: 6 parts of 4 with the thresholds below
SMALL = {"s1.txt": b"small one", "s2.txt": b"small two"}


@pytest.fixture(autouse=True)
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(multipart, "MULTIPART_THRESHOLD", 16)
    monkeypatch.setattr(multipart, "PART_SIZE", 4)


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _entries(files: dict[str, bytes]) -> list[dict[str, Any]]:
    return [{"path": p, "size": len(b), "sha256": _sha(b)} for p, b in files.items()]


FILES = {**SMALL, "big.bin": BIG}


def _create(client: TestClient, h: dict[str, str], files: dict[str, bytes] = FILES,
            resume: dict[str, Any] | None = None, name: str = "ds") -> dict[str, Any]:
    body: dict[str, Any] = {"type": "dataset", "entries": _entries(files)}
    if resume is not None:
        body["resume"] = resume
    r = client.post(f"{_base('kappa')}/{name}/versions", headers=h, json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def _put(client: TestClient, u: dict[str, Any], data: bytes) -> str:
    r = client.put(u["url"], content=data, headers=u["headers"])
    assert r.status_code == 200, r.text
    return str(r.headers.get("etag", "")).strip('"')


def _part(data: bytes, number: int, size: int = 4) -> bytes:
    return data[(number - 1) * size:number * size]


def test_resume_continues_the_pending_version_with_only_what_is_missing(
        client: TestClient, world: W) -> None:
    a = world["alice"]
    first = _create(client, a)
    pending = first["version"]["id"]
    (mp,) = first["multipart"]
    assert (mp["part_size"], [p["number"] for p in mp["parts"]]) == (4, [1, 2, 3, 4, 5, 6])
    by_sha = {u["sha256"]: u for u in first["uploads"]}
    _put(client, by_sha[_sha(SMALL["s1.txt"])], SMALL["s1.txt"])  # one file ...
    etags = {n: _put(client, mp["parts"][n - 1], _part(BIG, n)) for n in (1, 2)}  # 2 parts

    hint = {"pending_id": pending, "uploaded": [_sha(SMALL["s1.txt"])],
            "multipart": [{"sha256": mp["sha256"], "upload_id": mp["upload_id"],
                           "part_size": 4, "parts_done": [1, 2]}]}
    again = _create(client, a, resume=hint)
    assert again["resumed"] is True and again["version"]["id"] == pending
    assert [u["sha256"] for u in again["uploads"]] == [_sha(SMALL["s2.txt"])]
    (mp2,) = again["multipart"]
    assert mp2["upload_id"] == mp["upload_id"]
    assert [p["number"] for p in mp2["parts"]] == [3, 4, 5, 6]
    _put(client, again["uploads"][0], SMALL["s2.txt"])
    for p in mp2["parts"]:
        etags[p["number"]] = _put(client, p, _part(BIG, p["number"]))
    r = client.post(f"{_base('kappa')}/ds/pending/{pending}/multipart", headers=a, json={
        "sha256": mp["sha256"], "upload_id": mp["upload_id"],
        "parts": [{"number": n, "etag": etags[n]} for n in sorted(etags)]})
    assert r.status_code == 204, r.text
    r = client.post(f"{_base('kappa')}/ds/pending/{pending}/commit", headers=a, json={})
    assert r.status_code == 200 and r.json()["version"] == "v0"
    assert _download(client, a, "kappa", "ds:v0") == FILES
    events = client.get("/api/v1/admin/audit", params={"action": "artifact_resume"},
                        headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()
    assert [(e["username"], e["object_key"]) for e in events] == [("alice",
                                                                  f"ds:pending/{pending}")]


def test_resume_does_not_continue_what_it_must_not(client: TestClient, world: W,
                                                   users: Any) -> None:
    a = world["alice"]
    first = _create(client, a)
    pending = first["version"]["id"]
    (mp,) = first["multipart"]
    hint = {"pending_id": pending, "multipart": [
        {"sha256": mp["sha256"], "upload_id": mp["upload_id"], "part_size": 4,
         "parts_done": [1]}]}
    # Another member of the team: never someone else's pending version.
    charlie = users.create("charlie")
    client.post("/api/v1/teams/kappa/members", json={"username": "charlie"}, headers=a)
    other = _create(client, charlie, resume=hint)
    assert other["resumed"] is False and other["version"]["id"] != pending
    # Other files (another digest): a new version.
    changed = _create(client, a, files={**FILES, "s3.txt": b"three"}, resume=hint)
    assert changed["resumed"] is False and changed["version"]["id"] != pending
    # The journal's part size is honoured (not the server's current default): 1-byte parts.
    mine = _create(client, a, resume={"pending_id": pending, "multipart": [
        {"sha256": mp["sha256"], "upload_id": mp["upload_id"], "part_size": 1,
         "parts_done": [1]}]})
    assert mine["resumed"] is True and mine["multipart"][0]["upload_id"] == mp["upload_id"]
    assert [p["number"] for p in mine["multipart"][0]["parts"]] == list(range(2, 22))


def test_part_sizes_a_store_refuses_are_not_continued() -> None:
    s3 = Capabilities(min_part_size=5 * MiB, max_part_size=5 * 1024 * MiB, max_parts=10_000)
    assert multipart.part_count(12 * MiB, 5 * MiB, s3) == 3
    assert multipart.part_count(12 * MiB, 1 * MiB, s3) is None  # parts below the store's minimum
    assert multipart.part_count(3 * MiB, 4 * MiB, s3) == 1  # one short part is fine
    assert multipart.part_count(10_001 * 5 * MiB, 5 * MiB, s3) is None  # too many parts


def test_resume_restarts_an_upload_the_store_no_longer_has(client: TestClient, world: W,
                                                           ctx: AppContext) -> None:
    a = world["alice"]
    first = _create(client, a)
    (mp,) = first["multipart"]
    # The garbage collector aborts abandoned multipart uploads.
    with ctx.db.session() as db:
        from satchel.db.models import Team

        bucket = ctx.storage.team_bucket(db, db.query(Team).filter_by(name="kappa").one())
        (up,) = list(bucket.store.list_multipart_uploads("artifacts/"))
        bucket.store.abort_multipart(bucket.store.multipart_for(up.key, up.upload_id))
    again = _create(client, a, resume={
        "pending_id": first["version"]["id"],
        "multipart": [{"sha256": mp["sha256"], "upload_id": mp["upload_id"], "part_size": 4,
                       "parts_done": [1, 2, 3]}]})
    assert again["resumed"] is True
    (mp2,) = again["multipart"]
    assert mp2["upload_id"] != mp["upload_id"]
    assert [p["number"] for p in mp2["parts"]] == [1, 2, 3, 4, 5, 6]


def test_fresh_urls_for_objects_and_parts(client: TestClient, world: W) -> None:
    a = world["alice"]
    first = _create(client, a)
    pending = first["version"]["id"]
    (mp,) = first["multipart"]
    urls = f"{_base('kappa')}/ds/pending/{pending}/urls"
    r = client.post(urls, headers=a, json={
        "objects": [_sha(SMALL["s2.txt"])],
        "parts": [{"sha256": mp["sha256"], "upload_id": mp["upload_id"], "part_size": 4,
                   "numbers": [6, 2]}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [(u["sha256"], u["size"]) for u in body["uploads"]] == [(_sha(SMALL["s2.txt"]), 9)]
    (parts,) = body["multipart"]
    assert [p["number"] for p in parts["parts"]] == [2, 6]
    _put(client, body["uploads"][0], SMALL["s2.txt"])
    _put(client, parts["parts"][1], _part(BIG, 6))  # the short last part: 1 byte
    events = client.get("/api/v1/admin/audit", params={"action": "artifact_presign"},
                        headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()
    # create_version: 2 objects + 1 multipart; refresh: 1 object + 1 multipart.
    assert len(events) == 5 and all(e["username"] == "alice" for e in events)


def test_fresh_urls_refused(client: TestClient, world: W, users: Any) -> None:
    a = world["alice"]
    first = _create(client, a)
    pending = first["version"]["id"]
    (mp,) = first["multipart"]
    urls = f"{_base('kappa')}/ds/pending/{pending}/urls"
    part = {"sha256": mp["sha256"], "upload_id": mp["upload_id"], "part_size": 4}
    cases = [
        ({"objects": ["f" * 64]}, 400, "invalid_input"),  # not in this version
        ({"parts": [{**part, "numbers": [7]}]}, 400, "invalid_input"),  # only 6 parts
        ({"objects": ["nothex"]}, 422, "validation_failed"),
    ]
    for body, status, code in cases:
        r = client.post(urls, headers=a, json=body)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), (body, r.text)
    # Someone else's pending version, a viewer, and a committed version: refused.
    charlie = users.create("charlie")
    client.post("/api/v1/teams/kappa/members", json={"username": "charlie"}, headers=a)
    r = client.post(urls, headers=charlie, json={"objects": [_sha(SMALL["s1.txt"])]})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = client.post(urls, headers=world["eve"], json={"objects": [_sha(SMALL["s1.txt"])]})
    assert r.status_code == 403
    small = _create(client, a, files={"x": b"x"}, name="other")
    other = small["version"]["id"]
    _put(client, small["uploads"][0], b"x")
    assert client.post(f"{_base('kappa')}/other/pending/{other}/commit", headers=a,
                       json={}).status_code == 200
    r = client.post(f"{_base('kappa')}/other/pending/{other}/urls", headers=a,
                    json={"objects": [_sha(b"x")]})
    assert r.status_code == 404


def test_download_urls_for_some_paths(client: TestClient, world: W) -> None:
    a = world["alice"]
    files = {"a.txt": b"a", "b/c.txt": b"c", "d.txt": b"a"}
    res = _create(client, a, files=files)
    for u in res["uploads"]:
        _put(client, u, b"a" if u["sha256"] == _sha(b"a") else b"c")
    client.post(f"{_base('kappa')}/ds/pending/{res['version']['id']}/commit", headers=a, json={})
    r = client.post(f"{_base('kappa')}/ds/versions/v0/download", headers=a,
                    json={"paths": ["b/c.txt", "nope"]})
    assert r.status_code == 200
    assert [(e["path"], client.get(e["url"]).content) for e in r.json()["entries"]] == \
        [("b/c.txt", b"c")]
    r = client.post(f"{_base('kappa')}/ds/versions/v0/download", headers=a)
    assert sorted(e["path"] for e in r.json()["entries"]) == sorted(files)
