"""Artifact lifecycle through the REST API on local buckets: TTL per version and team default,
soft delete / restore of whole collections and projects, name reuse, roles, audit rows.

Time: nothing sleeps. Where a test needs "later", it moves the rows' timestamps back in the
database, or gives the real garbage collector a clock in the future.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from satchel.config import Settings
from satchel.db.models import ArtifactCollection, ArtifactVersion
from satchel.server.deps import AppContext
from satchel.services import gc
from satchel.services.ttl import MAX_TTL_SECONDS
from tests.conftest import ADMIN_KEY, Users
from tests.errorshape import assert_error
from tests.server.test_artifacts_local import _download, _log, _manifest

API = "/api/v1"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
DAY = 86_400


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"supported_file_stores": f"file://{tmp_path / 'omega'}"})


def art(team: str, project: str = "p") -> str:
    return f"{API}/teams/{team}/projects/{project}/artifacts"


@pytest.fixture
def world(client: TestClient, users: Users, tmp_path: Path) -> dict[str, dict[str, str]]:
    """kappa (instance bucket; alice admin, mel member, vic viewer) with projects p and the
    team-visible hidden; omega (own bucket; bob admin, vic viewer); eve belongs nowhere."""
    alice, bob, mel, vic, eve = (users.create(n) for n in ("alice", "bob", "mel", "vic", "eve"))
    assert client.post(f"{API}/teams", json={"name": "kappa"}, headers=alice).status_code == 201
    r = client.post(f"{API}/teams", headers=bob, json={
        "name": "omega", "storage": {"type": "external", "bucket": f"file://{tmp_path / 'omega'}",
                                     "path": "sat"}})
    assert r.status_code == 201, r.text
    for body in ({"name": "p"}, {"name": "hidden", "visibility": "team"}):
        assert client.post(f"{API}/teams/kappa/projects", json=body,
                           headers=alice).status_code == 201
    assert client.post(f"{API}/teams/omega/projects", json={"name": "p"},
                       headers=bob).status_code == 201
    for team, user, role, h in (("kappa", "mel", "member", alice),
                                ("kappa", "vic", "viewer", alice),
                                ("omega", "vic", "viewer", bob)):
        r = client.post(f"{API}/teams/{team}/members", json={"username": user, "role": role},
                        headers=h)
        assert r.status_code == 200, r.text
    return {"alice": alice, "bob": bob, "mel": mel, "vic": vic, "eve": eve}


def at(value: str | None) -> datetime:
    assert value is not None
    return datetime.fromisoformat(value)


def audit(client: TestClient, action: str) -> list[dict[str, Any]]:
    r = client.get(f"{API}/admin/audit", params={"action": action}, headers=ADMIN)
    assert r.status_code == 200, r.text
    return list(reversed(r.json()))


def backdate(ctx: AppContext, name: str, *, index: int, **values: datetime) -> None:
    """Set timestamps of version ``name:v<index>`` (a virtual "later" without sleeping)."""
    with ctx.db.session() as db:
        cid = db.query(ArtifactCollection.id).filter_by(name=name).scalar_subquery()
        db.execute(update(ArtifactVersion).where(ArtifactVersion.collection_id == cid,
                                                 ArtifactVersion.index == index).values(**values))


def collect(ctx: AppContext, team: str, *, days_later: int) -> gc.GcReport:
    """The real garbage collector, run as if ``days_later`` days had passed."""
    later = datetime.now(UTC) + timedelta(days=days_later)
    return gc.collect(ctx.db, ctx.storage, team=team, clock=lambda: later, grace_seconds=0,
                      retention_seconds=ctx.settings.artifact_retention_seconds)


# ---------------------------------------------------------------------------- TTL


def test_ttl_explicit_team_default_and_forever(client: TestClient,
                                               world: dict[str, dict[str, str]]) -> None:
    a = world["alice"]
    # No team default: kept forever.
    v, _ = _log(client, a, "kappa", "ds", {"f": b"0"})
    assert v["expires_at"] is None
    # Explicit TTL: counts from the commit, to the microsecond.
    r = client.post(f"{art('kappa')}/m/versions", headers=a, json={
        "type": "model", "entries": _manifest({"w": b"w0"}), "ttl_seconds": 3600})
    assert r.status_code == 201, r.text
    pending = r.json()["version"]
    assert at(pending["expires_at"]) == at(pending["created_at"]) + timedelta(hours=1)
    for u in r.json()["uploads"]:
        assert client.put(u["url"], content=b"w0", headers=u["headers"]).status_code == 200
    r = client.post(f"{art('kappa')}/m/pending/{pending['id']}/commit", headers=a, json={})
    assert r.status_code == 200, r.text
    v = r.json()
    assert at(v["expires_at"]) == at(v["committed_at"]) + timedelta(hours=1)
    # A team default applies to versions logged without a TTL; 0 overrides it.
    r = client.patch(f"{API}/teams/kappa", headers=a, json={"artifact_ttl_seconds": 7 * DAY})
    assert r.status_code == 200 and r.json()["artifact_ttl_seconds"] == 7 * DAY
    v1, _ = _log(client, a, "kappa", "ds", {"f": b"1"})
    assert at(v1["expires_at"]) == at(v1["committed_at"]) + timedelta(days=7)
    assert _log_to(client, a, "kappa", "p", "ds", {"f": b"2"}, ttl_seconds=0)[
        "expires_at"] is None
    # Listings and the version view show it; the older versions keep their expiry.
    listed = client.get(f"{art('kappa')}/ds/versions", headers=a).json()
    assert [(x["version"], x["expires_at"] is None) for x in listed] == [
        ("v0", True), ("v1", False), ("v2", True)]
    shown = client.get(f"{art('kappa')}/ds/versions/v1", headers=a).json()["version"]
    assert shown["expires_at"] == v1["expires_at"]


def test_ttl_validation(client: TestClient, world: dict[str, dict[str, str]]) -> None:
    a = world["alice"]
    url = f"{art('kappa')}/ds/versions"
    for bad in (-1, MAX_TTL_SECONDS + 1, 10**30):
        r = client.post(url, headers=a, json={"type": "dataset", "entries": [],
                                              "ttl_seconds": bad})
        err = assert_error(r, 400, "invalid_input")
        assert err["details"] == {"field": "ttl_seconds"} and "0 to keep" in err["message"]
    assert_error(client.post(url, headers=a, json={"type": "dataset", "entries": [],
                                                   "ttl_seconds": "soon"}),
                 422, "validation_failed")
    # Nothing was created by the refused calls.
    assert client.get(art("kappa"), headers=a).json() == []


def test_set_version_ttl_roles_and_errors(client: TestClient,
                                          world: dict[str, dict[str, str]]) -> None:
    bob, vic = world["bob"], world["vic"]
    v0, _ = _log(client, bob, "omega", "m", {"f": b"omega"})
    url = f"{art('omega')}/m/versions/v0/ttl"
    r = client.put(url, headers=bob, json={"ttl_seconds": 30 * DAY})
    assert r.status_code == 200, r.text
    assert at(r.json()["expires_at"]) == at(v0["committed_at"]) + timedelta(days=30)
    r = client.put(f"{art('omega')}/m/versions/latest/ttl", headers=bob, json={"ttl_seconds": 0})
    assert r.status_code == 200 and r.json()["expires_at"] is None
    # A viewer reads but cannot change it; a non-member of a team-bucket team gets 403.
    assert_error(client.put(url, headers=vic, json={"ttl_seconds": 60}), 403,
                 "permission_denied")
    for h in (world["alice"], world["eve"], ADMIN):
        assert_error(client.put(url, headers=h, json={"ttl_seconds": 60}), 403,
                     "permission_denied")
    err = assert_error(client.put(url, headers=bob, json={"ttl_seconds": -5}), 400,
                       "invalid_input")
    assert err["details"]["field"] == "ttl_seconds"
    assert_error(client.put(url, headers=bob, json={}), 422, "validation_failed")
    assert_error(client.put(f"{art('omega')}/m/versions/v9/ttl", headers=bob,
                            json={"ttl_seconds": 60}), 404, "not_found")
    rows = audit(client, "artifact_ttl")
    assert [(e["username"], e["object_key"]) for e in rows] == [
        ("bob", f"m:v0 ttl={30 * DAY}"), ("bob", "m:v0 ttl=0")]


def test_ttl_on_a_team_visible_project_is_hidden_from_non_members(
        client: TestClient, world: dict[str, dict[str, str]]) -> None:
    _log_to(client, world["alice"], "kappa", "hidden", "ds", {"f": b"h"})
    r = client.put(f"{art('kappa', 'hidden')}/ds/versions/v0/ttl", headers=world["eve"],
                   json={"ttl_seconds": 60})
    assert_error(r, 404, "not_found")
    r = client.put(f"{art('kappa', 'hidden')}/ds/versions/v0/ttl", headers=world["mel"],
                   json={"ttl_seconds": 60})
    assert r.status_code == 200, r.text


def _log_to(client: TestClient, h: dict[str, str], team: str, project: str, name: str,
            files: dict[str, bytes], **extra: Any) -> dict[str, Any]:
    """_log for any project, with extra body fields (``ttl_seconds``)."""
    r = client.post(f"{art(team, project)}/{name}/versions", headers=h,
                    json={"type": "dataset", "entries": _manifest(files), **extra})
    assert r.status_code == 201, r.text
    by_sha = {e["sha256"]: files[e["path"]] for e in _manifest(files)}
    for u in r.json()["uploads"]:
        assert client.put(u["url"], content=by_sha[u["sha256"]],
                          headers=u["headers"]).status_code == 200
    r = client.post(f"{art(team, project)}/{name}/pending/{r.json()['version']['id']}/commit",
                    headers=h, json={})
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_team_default_ttl_create_patch_roles_and_validation(
        client: TestClient, world: dict[str, dict[str, str]], users: Users) -> None:
    a = world["alice"]
    r = client.post(f"{API}/teams", headers=a, json={"name": "tau",
                                                     "artifact_ttl_seconds": 90 * DAY})
    assert r.status_code == 201 and r.json()["artifact_ttl_seconds"] == 90 * DAY
    assert client.get(f"{API}/teams/tau", headers=a).json()["artifact_ttl_seconds"] == 90 * DAY
    for bad in (0, -1, MAX_TTL_SECONDS + 1):
        err = assert_error(client.post(f"{API}/teams", headers=a, json={
            "name": "sigma", "artifact_ttl_seconds": bad}), 400, "invalid_input")
        assert err["details"] == {"field": "artifact_ttl_seconds"}, err
        err = assert_error(client.patch(f"{API}/teams/tau", headers=a, json={
            "artifact_ttl_seconds": bad}), 400, "invalid_input")
        assert "null for no default" in err["message"]
    assert client.get(f"{API}/teams/sigma", headers=ADMIN).status_code == 404
    # Members and non-members cannot change it; team admins and instance admins can.
    client.post(f"{API}/teams/tau/members", json={"username": "mel", "role": "member"},
                headers=a)
    for h in (world["mel"], world["eve"]):
        assert_error(client.patch(f"{API}/teams/tau", headers=h,
                                  json={"artifact_ttl_seconds": DAY}), 403, "permission_denied")
    r = client.patch(f"{API}/teams/tau", headers=ADMIN, json={"artifact_ttl_seconds": DAY})
    assert r.status_code == 200 and r.json()["artifact_ttl_seconds"] == DAY
    # Absent leaves it; null clears it (keep forever).
    assert client.patch(f"{API}/teams/tau", headers=a, json={}).json()[
        "artifact_ttl_seconds"] == DAY
    r = client.patch(f"{API}/teams/tau", headers=a, json={"artifact_ttl_seconds": None})
    assert r.status_code == 200 and r.json()["artifact_ttl_seconds"] is None
    rows = audit(client, "team_artifact_ttl")
    assert [(e["username"], e["team"], e["object_key"]) for e in rows] == [
        ("admin", "tau", f"artifact_ttl_seconds={DAY}"),
        ("alice", "tau", "artifact_ttl_seconds=None")]


def test_restoring_an_expired_version_needs_a_new_ttl_first(
        client: TestClient, world: dict[str, dict[str, str]], ctx: AppContext) -> None:
    a = world["alice"]
    _log(client, a, "kappa", "ds", {"f": b"0"})
    _log(client, a, "kappa", "ds", {"f": b"1"})
    base = f"{art('kappa')}/ds"
    assert client.put(f"{base}/versions/v1/ttl", headers=a,
                      json={"ttl_seconds": DAY}).status_code == 200
    assert client.delete(f"{base}/versions/v1", headers=a).status_code == 200
    # Two days "later": its TTL ran out while it was deleted.
    past = datetime.now(UTC) - timedelta(days=2)
    backdate(ctx, "ds", index=1, committed_at=past, expires_at=past + timedelta(days=1))
    err = assert_error(client.post(f"{base}/versions/v1/restore", headers=a), 409,
                       "artifact_expired")
    assert "new TTL" in err["message"] and err["details"]["artifact"] == "ds:v1"
    # The TTL of a deleted version can be changed; then it comes back.
    r = client.put(f"{base}/versions/v1/ttl", headers=a, json={"ttl_seconds": 0})
    assert r.status_code == 200 and r.json()["deleted_at"] is not None
    r = client.post(f"{base}/versions/v1/restore", headers=a)
    assert r.status_code == 200 and r.json()["aliases"] == ["latest"]


# ---------------------------------------------------------------------------- collections


def test_delete_and_restore_a_collection(client: TestClient,
                                         world: dict[str, dict[str, str]]) -> None:
    a = world["alice"]
    _log(client, a, "kappa", "ds", {"f": b"0"}, aliases=["best"])
    _log(client, a, "kappa", "ds", {"f": b"1"})
    _log(client, a, "kappa", "ds", {"f": b"2"})
    _log(client, a, "kappa", "other", {"g": b"g"})
    base = f"{art('kappa')}/ds"
    # v2 deleted on its own before the collection: it stays deleted after the restore.
    assert client.delete(f"{base}/versions/v2", headers=a).status_code == 200
    r = client.delete(base, headers=a)
    assert r.status_code == 200, r.text
    gone = r.json()
    assert (gone["name"], gone["versions"]) == ("ds", 2) and gone["deleted_at"]
    # Every version invisible at once, as is the collection.
    assert [c["name"] for c in client.get(art("kappa"), headers=a).json()] == ["other"]
    for url in (f"{base}/versions", f"{base}/versions/best", f"{base}/versions/v0", base):
        assert_error(client.get(url, headers=a), 404, "not_found")
    assert_error(client.post(f"{base}/versions/v0/download", headers=a), 404, "not_found")
    assert_error(client.delete(base, headers=a), 404, "not_found")
    deleted = client.get(art("kappa"), params={"deleted": "true"}, headers=a).json()
    assert [(c["name"], c["versions"]) for c in deleted] == [("ds", 2)]
    r = client.get(base, params={"deleted": "true"}, headers=a)
    assert r.status_code == 200 and r.json()["deleted_at"] == gone["deleted_at"]
    # Restore brings back exactly the versions that were visible, aliases and all.
    r = client.post(f"{base}/restore", headers=a)
    assert r.status_code == 200 and r.json()["deleted_at"] is None, r.text
    versions = client.get(f"{base}/versions", headers=a).json()
    assert [(v["version"], v["aliases"]) for v in versions] == [("v0", ["best"]),
                                                               ("v1", ["latest"])]
    assert _download(client, a, "kappa", "ds:best") == {"f": b"0"}
    assert_error(client.post(f"{base}/restore", headers=a), 404, "not_found")
    assert [e["object_key"] for e in audit(client, "artifact_collection_delete")] == ["ds"]
    assert [(e["username"], e["project"], e["object_key"])
            for e in audit(client, "artifact_collection_restore")] == [("alice", "p", "ds")]


def test_collection_delete_roles(client: TestClient, world: dict[str, dict[str, str]]) -> None:
    _log(client, world["bob"], "omega", "m", {"f": b"omega"})
    _log(client, world["alice"], "kappa", "ds", {"f": b"k"})
    m = f"{art('omega')}/m"
    # A viewer cannot delete or restore; a non-member of a team-bucket team gets 403.
    assert_error(client.delete(m, headers=world["vic"]), 403, "permission_denied")
    for h in (world["alice"], world["eve"], ADMIN):
        assert_error(client.delete(m, headers=h), 403, "permission_denied")
    # Instance-bucket team: a non-member reads, a member deletes.
    assert_error(client.delete(f"{art('kappa')}/ds", headers=world["eve"]), 403,
                 "permission_denied")
    assert client.delete(f"{art('kappa')}/ds", headers=world["mel"]).status_code == 200
    assert_error(client.post(f"{art('kappa')}/ds/restore", headers=world["vic"]), 403,
                 "permission_denied")
    assert client.get(art("kappa"), params={"deleted": True},
                      headers=world["eve"]).json()[0]["name"] == "ds"
    assert client.post(f"{art('kappa')}/ds/restore", headers=world["mel"]).status_code == 200
    # A team-visible project hides its collections from non-members.
    _log_to(client, world["alice"], "kappa", "hidden", "h", {"f": b"h"})
    assert_error(client.delete(f"{art('kappa', 'hidden')}/h", headers=world["eve"]), 404,
                 "not_found")
    assert_error(client.post(f"{art('kappa', 'hidden')}/h/restore", headers=world["eve"]), 404,
                 "not_found")


def test_commit_into_a_deleted_collection_is_refused(client: TestClient,
                                                     world: dict[str, dict[str, str]]) -> None:
    a = world["alice"]
    _log(client, a, "kappa", "ds", {"f": b"0"})
    pending, _ = _log(client, a, "kappa", "ds", {"f": b"1"}, upload=False)
    assert client.delete(f"{art('kappa')}/ds", headers=a).status_code == 200
    assert_error(client.post(f"{art('kappa')}/ds/pending/{pending['id']}/commit", headers=a,
                             json={}), 404, "not_found")


def test_logging_under_a_deleted_collections_name_reuses_it(
        client: TestClient, world: dict[str, dict[str, str]]) -> None:
    a = world["alice"]
    _log(client, a, "kappa", "ds", {"f": b"0"}, aliases=["best"])
    _log(client, a, "kappa", "ds", {"f": b"1"})
    base = f"{art('kappa')}/ds"
    gone = client.delete(base, headers=a).json()
    # Another type under the name is refused, as for a live collection.
    r = client.post(f"{base}/versions", headers=a,
                    json={"type": "model", "entries": _manifest({"f": b"1"})})
    err = assert_error(r, 409, "conflict")
    assert "soft-deleted" in err["message"]
    # Same files as the old latest: still a new version (the old ones are deleted), next index.
    v2, sent = _log(client, a, "kappa", "ds", {"f": b"1"})
    assert (v2["version"], v2["aliases"], sent) == ("v2", ["latest"], 0)
    assert [v["version"] for v in client.get(f"{base}/versions", headers=a).json()] == ["v2"]
    # The old versions are individually deleted, at the collection's deletion time (the
    # collector's retention clock does not restart), and restorable one by one.
    old = client.get(f"{base}/versions", params={"deleted": "true"}, headers=a).json()
    assert [(v["version"], v["deleted_at"]) for v in old] == [("v0", gone["deleted_at"]),
                                                              ("v1", gone["deleted_at"])]
    assert client.post(f"{base}/versions/v0/restore", headers=a).status_code == 200
    assert _download(client, a, "kappa", "ds:best") == {"f": b"0"}
    assert_error(client.post(f"{base}/restore", headers=a), 404, "not_found")
    assert [e["object_key"] for e in audit(client, "artifact_collection_reuse")] == ["ds"]


def test_restore_refused_once_gc_freed_objects(client: TestClient,
                                               world: dict[str, dict[str, str]],
                                               ctx: AppContext) -> None:
    a = world["alice"]
    # v0 only holds bytes that a live collection shares; v1 has bytes of its own.
    _log(client, a, "kappa", "ds", {"s": b"shared"})
    _log(client, a, "kappa", "ds", {"s": b"shared", "u": b"unique"})
    _log(client, a, "kappa", "keep", {"x": b"shared"})
    base = f"{art('kappa')}/ds"
    assert client.delete(base, headers=a).status_code == 200
    # Inside the retention window the collector keeps everything.
    assert collect(ctx, "kappa", days_later=1).objects_freed == 0
    # Past it, it frees what only the deleted collection referenced.
    report = collect(ctx, "kappa", days_later=60)
    assert report.objects_freed == 1, report
    err = assert_error(client.post(f"{base}/restore", headers=a), 409, "artifact_incomplete")
    assert err["details"]["versions"] == [{"artifact": "ds", "version": "v1",
                                           "freed_objects": 1}]
    assert err["details"]["count"] == 1
    assert err["details"]["retention_seconds"] == ctx.settings.artifact_retention_seconds
    assert "retention window (30 days)" in err["message"] and "ds:v1" in err["message"]
    # Still deleted; the intact v0 can come back through a new log under the name.
    assert_error(client.get(f"{base}/versions", headers=a), 404, "not_found")
    _log(client, a, "kappa", "ds", {"n": b"new"})
    assert client.post(f"{base}/versions/v0/restore", headers=a).status_code == 200
    assert_error(client.post(f"{base}/versions/v1/restore", headers=a), 409,
                 "artifact_incomplete")
    assert _download(client, a, "kappa", "ds:v0") == {"s": b"shared"}


def test_collection_restore_leaves_expired_versions_deleted(
        client: TestClient, world: dict[str, dict[str, str]], ctx: AppContext) -> None:
    a = world["alice"]
    _log(client, a, "kappa", "ds", {"f": b"0"})
    _log(client, a, "kappa", "ds", {"f": b"1"})
    base = f"{art('kappa')}/ds"
    assert client.delete(base, headers=a).status_code == 200
    past = datetime.now(UTC) - timedelta(days=2)
    backdate(ctx, "ds", index=1, expires_at=past)
    r = client.post(f"{base}/restore", headers=a)
    assert r.status_code == 200 and r.json()["versions"] == 1
    versions = client.get(f"{base}/versions", headers=a).json()
    assert [(v["version"], v["aliases"]) for v in versions] == [("v0", ["latest"])]
    assert [e["object_key"] for e in audit(client, "artifact_expire")] == ["ds:v1"]


# ---------------------------------------------------------------------------- projects


def test_delete_and_restore_a_project(client: TestClient, world: dict[str, dict[str, str]]
                                      ) -> None:
    a = world["alice"]
    _log(client, a, "kappa", "ds", {"f": b"0"}, aliases=["best"])
    r = client.post(f"{API}/teams/kappa/projects/p/files/urls", headers=a,
                    json={"files": [{"path": "notes.txt", "method": "PUT", "size": 2}]})
    assert client.put(r.json()[0]["url"], content=b"hi").status_code == 200
    r = client.delete(f"{API}/teams/kappa/projects/p", headers=a)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "p" and r.json()["deleted_at"]
    # Everything under it is invisible: the project, its artifacts, its files.
    p = f"{API}/teams/kappa/projects/p"
    for url in (p, art("kappa"), f"{art('kappa')}/ds/versions/best", f"{p}/files"):
        assert_error(client.get(url, headers=a), 404, "not_found")
    assert_error(client.post(f"{art('kappa')}/ds/versions/v0/download", headers=a), 404,
                 "not_found")
    assert_error(client.post(f"{p}/files/urls", headers=a,
                             json={"files": [{"path": "notes.txt"}]}), 404, "not_found")
    assert_error(client.post(f"{art('kappa')}/ds/versions", headers=a, json={
        "type": "dataset", "entries": _manifest({"f": b"x"})}), 404, "not_found")
    assert [x["name"] for x in client.get(f"{API}/projects", params={"team": "kappa"},
                                          headers=a).json()] == ["hidden"]
    assert [x["name"] for x in client.get(f"{API}/teams/kappa/projects",
                                          headers=a).json()] == ["hidden"]
    for h in (a, world["vic"], ADMIN):
        listed = client.get(f"{API}/teams/kappa/projects", params={"deleted": "true"},
                            headers=h).json()
        assert [x["name"] for x in listed] == ["p"]
    # The name stays taken.
    err = assert_error(client.post(f"{API}/teams/kappa/projects", headers=a,
                                   json={"name": "p"}), 409, "already_exists")
    assert err["details"]["deleted"] is True and "restore" in err["message"]
    # Restore: everything as it was.
    r = client.post(f"{p}/restore", headers=a)
    assert r.status_code == 200 and r.json()["deleted_at"] is None
    assert _download(client, a, "kappa", "ds:best") == {"f": b"0"}
    files = client.get(f"{p}/files", headers=a).json()
    assert [f["key"] for f in files] == ["notes.txt"]
    assert_error(client.post(f"{p}/restore", headers=a), 404, "not_found")
    assert [(e["username"], e["team"], e["project"]) for e in audit(client, "project_delete")
            ] == [("alice", "kappa", "p")]
    assert [e["username"] for e in audit(client, "project_restore")] == ["alice"]


def test_project_delete_roles(client: TestClient, world: dict[str, dict[str, str]]) -> None:
    # Members and viewers cannot; a non-member is refused (403 where the project is visible
    # to them, 404 where its existence is hidden); team admins and instance admins can.
    for who in ("mel", "vic", "eve"):
        err = assert_error(client.delete(f"{API}/teams/kappa/projects/p", headers=world[who]),
                           403, "permission_denied")
        assert err["details"]["needed_role"] == "admin"
    assert_error(client.delete(f"{API}/teams/kappa/projects/hidden", headers=world["eve"]),
                 404, "not_found")
    assert client.delete(f"{API}/teams/kappa/projects/hidden", headers=ADMIN).status_code == 200
    for who, status, code in (("mel", 403, "permission_denied"),
                              ("vic", 403, "permission_denied"), ("eve", 404, "not_found")):
        assert_error(client.post(f"{API}/teams/kappa/projects/hidden/restore",
                                 headers=world[who]), status, code)
        if who == "eve":
            assert_error(client.get(f"{API}/teams/kappa/projects", params={"deleted": "true"},
                                    headers=world[who]), 404, "not_found")
    assert client.post(f"{API}/teams/kappa/projects/hidden/restore",
                       headers=world["alice"]).status_code == 200
    assert_error(client.delete(f"{API}/teams/kappa/projects/nosuch", headers=ADMIN), 404,
                 "not_found")
    assert_error(client.get(f"{API}/teams/nosuch/projects", headers=ADMIN), 404, "not_found")


def test_project_restore_refused_once_gc_freed_objects(
        client: TestClient, world: dict[str, dict[str, str]], ctx: AppContext) -> None:
    a = world["alice"]
    _log(client, a, "kappa", "ds", {"u": b"only here"})
    _log(client, a, "kappa", "ds2", {"r": b"also only here"})
    assert client.delete(f"{API}/teams/kappa/projects/p", headers=a).status_code == 200
    assert collect(ctx, "kappa", days_later=60).objects_freed == 2
    err = assert_error(client.post(f"{API}/teams/kappa/projects/p/restore", headers=a), 409,
                       "artifact_incomplete")
    assert [(v["artifact"], v["version"]) for v in err["details"]["versions"]] == [
        ("ds", "v0"), ("ds2", "v0")]
    assert "project 'kappa/p'" in err["message"]
    assert_error(client.get(f"{API}/teams/kappa/projects/p", headers=a), 404, "not_found")


def test_project_restore_expires_versions_whose_ttl_ran_out(
        client: TestClient, world: dict[str, dict[str, str]], ctx: AppContext) -> None:
    a = world["alice"]
    _log(client, a, "kappa", "ds", {"f": b"0"})
    _log(client, a, "kappa", "ds", {"f": b"1"})
    assert client.delete(f"{API}/teams/kappa/projects/p", headers=a).status_code == 200
    backdate(ctx, "ds", index=1, expires_at=datetime.now(UTC) - timedelta(hours=1))
    assert client.post(f"{API}/teams/kappa/projects/p/restore", headers=a).status_code == 200
    latest = client.get(f"{art('kappa')}/ds/versions/latest", headers=a).json()["version"]
    assert latest["version"] == "v0"
    deleted = client.get(f"{art('kappa')}/ds/versions", params={"deleted": True},
                         headers=a).json()
    assert [v["version"] for v in deleted] == ["v1"]
